//! Time and space bounds of client connections and bodies (`limits:`): the
//! first-bytes and idle timeouts, the body idle timeout, the connection cap
//! per worker and the budget of buffered bodies.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::Request;
use http_body_util::Full;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use weft_test_harness::{Upstream, client, get, send};

use crate::{config, start, start_workers, wasm};

/// `config` with a `limits:` section (YAML flow mapping).
fn with_limits(filters: &str, routes: &str, upstream: SocketAddr, limits: &str) -> String {
    format!("{}limits: {limits}\n", config(filters, routes, upstream))
}

fn inspect() -> String {
    format!("  inspect: {{ path: {} }}", wasm("inspect_filter"))
}

/// Reads until the peer closes (EOF or reset); panics if it does not within
/// `bound`. Returns what was read.
async fn read_until_closed(stream: &mut TcpStream, bound: Duration) -> Vec<u8> {
    let mut seen = Vec::new();
    let mut buf = [0u8; 4096];
    let deadline = tokio::time::Instant::now() + bound;
    loop {
        match tokio::time::timeout_at(deadline, stream.read(&mut buf)).await {
            Err(_) => panic!(
                "connection still open after {bound:?}; read {:?}",
                String::from_utf8_lossy(&seen)
            ),
            Ok(Ok(0)) | Ok(Err(_)) => return seen,
            Ok(Ok(n)) => seen.extend_from_slice(&buf[..n]),
        }
    }
}

/// Reads one whole HTTP/1.1 response with a Content-Length (within 10 s)
/// and returns its status line.
async fn read_response(stream: &mut TcpStream) -> String {
    let mut seen = Vec::new();
    let mut buf = [0u8; 4096];
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    loop {
        let text = String::from_utf8_lossy(&seen).to_string();
        if let Some(end) = text.find("\r\n\r\n") {
            let length: usize = text[..end]
                .lines()
                .find_map(|l| {
                    l.to_ascii_lowercase()
                        .strip_prefix("content-length:")
                        .map(|v| v.trim().parse().unwrap())
                })
                .unwrap_or(0);
            if seen.len() >= end + 4 + length {
                return text.lines().next().unwrap_or_default().to_string();
            }
        }
        let n = tokio::time::timeout_at(deadline, stream.read(&mut buf))
            .await
            .expect("a response within 10 s")
            .expect("read response");
        assert!(n > 0, "closed mid-response: {text:?}");
        seen.extend_from_slice(&buf[..n]);
    }
}

const GET: &[u8] = b"GET /x HTTP/1.1\r\nhost: a\r\n\r\n";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_connection_that_sends_nothing_or_half_a_preface_is_closed_after_the_first_bytes_timeout()
{
    let up = Upstream::start().await;
    let routes = "      - { name: all, cluster: backend }";
    let weft = start(&with_limits(
        "",
        routes,
        up.addr,
        "{ first_bytes_timeout_ms: 300 }",
    ));
    let addr = weft.addr("public");

    let started = Instant::now();
    let mut silent = TcpStream::connect(addr).await.unwrap();
    let mut partial = TcpStream::connect(addr).await.unwrap();
    partial.write_all(b"PRI * HTTP/2.0\r\n").await.unwrap();
    assert!(
        read_until_closed(&mut silent, Duration::from_secs(10))
            .await
            .is_empty()
    );
    assert!(
        read_until_closed(&mut partial, Duration::from_secs(10))
            .await
            .is_empty()
    );
    assert!(
        started.elapsed() >= Duration::from_millis(300),
        "closed before the timeout"
    );
    // A connection that sends its request in time is served.
    assert_eq!(get(&format!("{}/x", weft.url("public"))).await.status, 200);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_idle_keep_alive_connection_is_closed_after_the_idle_timeout() {
    let up = Upstream::start().await;
    let routes = "      - { name: all, cluster: backend }";
    let weft = start(&with_limits(
        "",
        routes,
        up.addr,
        "{ idle_timeout_ms: 400 }",
    ));

    let mut stream = TcpStream::connect(weft.addr("public")).await.unwrap();
    stream.write_all(GET).await.unwrap();
    assert_eq!(read_response(&mut stream).await, "HTTP/1.1 200 OK");
    let idle_from = Instant::now();
    assert!(
        read_until_closed(&mut stream, Duration::from_secs(10))
            .await
            .is_empty()
    );
    assert!(
        idle_from.elapsed() >= Duration::from_millis(400),
        "closed before the idle timeout"
    );
}

/// Sends `head` and then one byte per second (at most 20) until the task is
/// dropped.
fn trickle(
    mut stream: tokio::net::tcp::OwnedWriteHalf,
    head: &'static [u8],
) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        stream.write_all(head).await.unwrap();
        for _ in 0..20 {
            if stream.write_all(b"x").await.is_err() {
                return;
            }
            tokio::time::sleep(Duration::from_secs(1)).await;
        }
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_upload_of_one_byte_a_second_is_cut_off_by_the_body_timeout_while_others_succeed() {
    let up = Upstream::start().await;
    let routes = "      - { name: buffered, match: { path_prefix: /buffered }, filters: [{ filter: inspect }], cluster: backend, timeout_ms: 60000 }
      - { name: streamed, cluster: backend, timeout_ms: 60000 }";
    let weft = start(&with_limits(
        &inspect(),
        routes,
        up.addr,
        "{ body_idle_timeout_ms: 500 }",
    ));
    let addr = weft.addr("public");

    // Buffered for a body phase: the proxy still owns the answer → 408.
    let (mut read, write) = TcpStream::connect(addr).await.unwrap().into_split();
    let buffered = trickle(
        write,
        b"POST /buffered HTTP/1.1\r\nhost: a\r\ncontent-length: 100\r\n\r\n",
    );
    // Streamed to the upstream: the upload is cut off, the client answered
    // 408 too (the client stalled, not the upstream).
    let (mut read2, write2) = TcpStream::connect(addr).await.unwrap().into_split();
    let streamed = trickle(
        write2,
        b"POST /streamed HTTP/1.1\r\nhost: a\r\ncontent-length: 100\r\n\r\n",
    );

    // Meanwhile other requests are served.
    assert_eq!(get(&format!("{}/x", weft.url("public"))).await.status, 200);

    let mut answer = [0u8; 64];
    let n = tokio::time::timeout(Duration::from_secs(10), read.read(&mut answer))
        .await
        .expect("the buffered upload is answered within 10 s")
        .unwrap();
    let status = String::from_utf8_lossy(&answer[..n]).to_string();
    assert!(status.starts_with("HTTP/1.1 408"), "{status:?}");
    let n = tokio::time::timeout(Duration::from_secs(10), read2.read(&mut answer))
        .await
        .expect("the streamed upload is cut off within 10 s")
        .unwrap();
    let status = String::from_utf8_lossy(&answer[..n]).to_string();
    assert!(status.starts_with("HTTP/1.1 408"), "{status:?}");
    buffered.abort();
    streamed.abort();
    assert_eq!(get(&format!("{}/x", weft.url("public"))).await.status, 200);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn past_the_connection_cap_a_worker_stops_accepting_until_one_closes() {
    let up = Upstream::start().await;
    let routes = "      - { name: all, cluster: backend }";
    let yaml = with_limits("", routes, up.addr, "{ max_connections_per_worker: 2 }");
    let weft = start_workers(&yaml, 1);
    let addr = weft.addr("public");

    let mut first = TcpStream::connect(addr).await.unwrap();
    let mut second = TcpStream::connect(addr).await.unwrap();
    for held in [&mut first, &mut second] {
        held.write_all(GET).await.unwrap();
        assert_eq!(read_response(held).await, "HTTP/1.1 200 OK");
    }
    // The kernel queues the third connection, but no one serves it.
    let mut third = TcpStream::connect(addr).await.unwrap();
    third.write_all(GET).await.unwrap();
    let mut byte = [0u8; 1];
    let early = tokio::time::timeout(Duration::from_secs(1), third.peek(&mut byte)).await;
    assert!(
        early.is_err(),
        "a third connection was served past the cap of 2"
    );
    drop(first);
    assert_eq!(read_response(&mut third).await, "HTTP/1.1 200 OK");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bodies_past_the_buffered_bytes_budget_get_503_and_the_budget_is_given_back() {
    let up = Upstream::start().await;
    let routes = "      - { name: all, filters: [{ filter: inspect }], cluster: backend }";
    let weft = start(&with_limits(
        &inspect(),
        routes,
        up.addr,
        "{ max_buffered_body_bytes: 4096 }",
    ));
    let url = format!("{}/echo", weft.url("public"));
    let post = |len: usize| {
        Request::post(&url)
            .body(Full::new(Bytes::from(vec![b'a'; len])))
            .unwrap()
    };

    let r = send(&client(false), post(8000)).await;
    assert_eq!(r.status, 503, "{:?}", r.body);
    assert_eq!(r.json()["error"], "overloaded");
    // Below the budget, one after the other: each gives its bytes back.
    for _ in 0..3 {
        let r = send(&client(false), post(1500)).await;
        assert_eq!(r.status, 200, "{:?}", r.body);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_route_timeout_starts_once_a_slow_upload_has_been_sent() {
    let up = Upstream::start().await;
    let routes = "      - { name: all, cluster: backend, timeout_ms: 500 }";
    let weft = start(&config("", routes, up.addr));

    // Three bytes 400 ms apart: the upload takes longer than timeout_ms,
    // the upstream answers at once.
    let mut stream = TcpStream::connect(weft.addr("public")).await.unwrap();
    stream
        .write_all(b"POST /x HTTP/1.1\r\nhost: a\r\ncontent-length: 3\r\n\r\na")
        .await
        .unwrap();
    for byte in [b"b", b"c"] {
        tokio::time::sleep(Duration::from_millis(400)).await;
        stream.write_all(byte).await.unwrap();
    }
    assert_eq!(read_response(&mut stream).await, "HTTP/1.1 200 OK");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn past_an_endpoints_connection_cap_a_request_waits_then_gets_503() {
    let up = Upstream::start().await;
    let routes = "      - { name: all, cluster: backend }";
    let yaml = format!(
        "filters: {{}}\nlisteners:\n  - name: public\n    listen: 127.0.0.1:0\n    routes:\n{routes}\nclusters:\n  backend: {{ endpoints: [\"{}\"], connect_timeout_ms: 300, max_connections_per_worker: 1 }}\n",
        up.addr
    );
    let weft = start_workers(&yaml, 1);
    let slow = format!("{}/delay/2000", weft.url("public"));
    let busy = tokio::spawn(async move { get(&slow).await });
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while up.hits() < 1 {
        assert!(
            tokio::time::Instant::now() < deadline,
            "the slow request did not reach the upstream"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    // The one connection waits for its response head: the next request
    // waits connect_timeout_ms for it, then gets 503 overloaded.
    let r = get(&format!("{}/x", weft.url("public"))).await;
    assert_eq!(r.status, 503, "{:?}", r.body);
    assert_eq!(r.json()["error"], "overloaded", "{:?}", r.body);
    let message = r.json()["message"].as_str().unwrap_or_default().to_string();
    assert!(message.contains("max_connections_per_worker"), "{message}");
    assert_eq!(up.hits(), 1, "a second connection was opened past the cap");
    assert_eq!(busy.await.unwrap().status, 200);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_idle_http2_connection_is_closed_after_the_idle_timeout() {
    let up = Upstream::start().await;
    let routes = "      - { name: all, cluster: backend }";
    let weft = start(&with_limits(
        "",
        routes,
        up.addr,
        "{ idle_timeout_ms: 400 }",
    ));
    let stream = TcpStream::connect(weft.addr("public")).await.unwrap();
    let (mut sender, conn) = hyper::client::conn::http2::handshake(
        hyper_util::rt::TokioExecutor::new(),
        hyper_util::rt::TokioIo::new(stream),
    )
    .await
    .unwrap();
    let ended = tokio::spawn(conn);
    let request = Request::get(format!("{}/x", weft.url("public")))
        .body(Full::<Bytes>::default())
        .unwrap();
    let response = sender.send_request(request).await.unwrap();
    assert_eq!(response.status(), 200);
    drop(response);
    let idle_from = Instant::now();
    // The proxy sends GOAWAY and closes: the client's connection ends.
    let _ = tokio::time::timeout(Duration::from_secs(10), ended)
        .await
        .expect("the idle HTTP/2 connection is still open after 10 s");
    assert!(
        idle_from.elapsed() >= Duration::from_millis(400),
        "closed before the idle timeout"
    );
    assert!(sender.is_closed());
}
