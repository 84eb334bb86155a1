//! Message framing is the proxy's: what a filter sets cannot desynchronise a
//! connection, a GET's body is not lost, the proxy answers with its own HTTP
//! version, and a client's broken body is the client's error.

use tokio::io::AsyncWriteExt;
use weft_test_harness::{RawConn, Upstream};

use crate::authority::raw;
use crate::{config, start, wasm};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_filter_setting_content_length_cannot_desync_the_next_response() {
    let up = Upstream::start().await;
    let filters = format!("  misbehave: {{ path: {} }}", wasm("misbehave_filter"));
    let routes = "      - { name: all, filters: [{ filter: misbehave, config: { do: set_content_length, phase: response_headers } }], cluster: backend }";
    let weft = start(&config(&filters, routes, up.addr));
    let mut conn = RawConn::connect(weft.addr("public")).await;
    conn.send(b"GET /first HTTP/1.1\r\nhost: x\r\n\r\n").await;
    let first = conn.reply().await;
    // The next response on the connection starts where the first one ended.
    conn.send(b"GET /second HTTP/1.1\r\nhost: x\r\n\r\n").await;
    let second = conn.reply().await;
    assert!(
        second.status_line.starts_with("HTTP/1.1 "),
        "{first:?} then {second:?}"
    );
    // The filter's call was refused: it failed (closed), and said why.
    assert_eq!(first.status(), 500, "{first:?}");
    let message = first.json()["message"].as_str().unwrap().to_string();
    assert!(message.contains("content-length"), "{message}");
    assert_eq!(second.json()["error"], "filter_failed");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_http_1_0_upstream_is_answered_as_http_1_1_with_keep_alive() {
    // Answers every request as HTTP/1.0, body delimited by closing.
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let upstream = listener.local_addr().unwrap();
    tokio::spawn(async move {
        while let Ok((mut stream, _)) = listener.accept().await {
            tokio::spawn(async move {
                let mut head = Vec::new();
                if weft_test_harness::raw::read_head(&mut stream, &mut head)
                    .await
                    .is_none()
                {
                    return;
                }
                let _ = stream
                    .write_all(b"HTTP/1.0 200 OK\r\ncontent-type: text/plain\r\n\r\nhello from 1.0")
                    .await;
            });
        }
    });
    let weft = start(&config(
        "  {}",
        "      - { name: all, cluster: backend }",
        upstream,
    ));
    let mut conn = RawConn::connect(weft.addr("public")).await;
    for round in 1..=2 {
        conn.send(b"GET /old HTTP/1.1\r\nhost: x\r\n\r\n").await;
        let r = conn.reply().await;
        assert_eq!(r.status_line, "HTTP/1.1 200 OK", "round {round}: {r:?}");
        assert_eq!(r.body, b"hello from 1.0", "round {round}");
        assert_eq!(r.header("via"), Some("1.0 weft"), "round {round}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_get_body_without_length_reaches_the_upstream() {
    let up = Upstream::start().await;
    let weft = start(&config(
        "  {}",
        "      - { name: all, cluster: backend }",
        up.addr,
    ));
    let addr = weft.addr("public");
    let r = raw(
        addr,
        "GET /search HTTP/1.1\r\nhost: x\r\ntransfer-encoding: chunked\r\n\r\n5\r\nhello\r\n6\r\n world\r\n0\r\n\r\n",
    )
    .await;
    assert_eq!(r.status(), 200, "{r:?}");
    assert_eq!(r.json()["body_bytes"], 11, "the GET's body is sent on");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_malformed_chunked_body_is_the_clients_error() {
    let up = Upstream::start().await;
    let weft = start(&config(
        "  {}",
        "      - { name: all, cluster: backend }",
        up.addr,
    ));
    let r = raw(
        weft.addr("public"),
        "POST /upload HTTP/1.1\r\nhost: x\r\ntransfer-encoding: chunked\r\n\r\n5\r\nhello\r\nzz\r\n\r\n",
    )
    .await;
    assert_eq!(r.status(), 400, "{r:?}");
    assert_eq!(r.json()["error"], "body_read_failed");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_body_read_whole_goes_on_with_its_trailers() {
    let up = Upstream::start().await;
    let filters = format!("  inspect: {{ path: {} }}", wasm("inspect_filter"));
    let routes = "      - { name: all, filters: [{ filter: inspect, config: { phases: [request_body] } }], cluster: backend }";
    let weft = start(&config(&filters, routes, up.addr));
    let r = raw(
        weft.addr("public"),
        "POST /t HTTP/1.1\r\nhost: x\r\ntransfer-encoding: chunked\r\ntrailer: x-digest\r\n\r\n5\r\nhello\r\n0\r\nx-digest: abc\r\n\r\n",
    )
    .await;
    assert_eq!(r.status(), 200, "{r:?}");
    let echo = r.json();
    assert_eq!(echo["body_bytes"], 5, "{echo}");
    assert_eq!(echo["headers"]["trailer"], "x-digest", "{echo}");
    assert_eq!(
        echo["trailers"]["x-digest"], "abc",
        "the trailers read with the body follow it: {echo}"
    );
}
