//! What the host calls, and when, seen through the `inspect` fixture
//! (`examples/inspect-filter`): only the phases a filter asks for, in
//! order, on one instance per request; bodies buffered only when a filter
//! wants them, and within `max_body_bytes`; `on-done` once per request.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::Request;
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use weft_test_harness::{Reply, Upstream, client, get, raw_status, send};

use crate::{config, start, wasm};

/// What `on-response-body` appends.
const SUFFIX: &str = "\n-- inspected\n";

fn inspect() -> String {
    format!("  inspect: {{ path: {} }}", wasm("inspect_filter"))
}

/// POSTs `body` to `url`.
async fn post(url: &str, body: &'static [u8]) -> Reply {
    let req = Request::post(url)
        .body(Full::new(Bytes::from_static(body)))
        .unwrap();
    send(&client(false), req).await
}

/// The `x-done-count` the upstream saw for a GET of `url`.
async fn done_count(url: &str) -> u64 {
    let r = get(url).await;
    assert_eq!(r.status, 200, "{:?}", r.body);
    r.echoed_header("x-done-count")
        .expect("inspect sets x-done-count")
        .parse()
        .expect("a number")
}

/// Polls `probe` until the upstream sees `x-done-count: expected` (on-done
/// runs after the body is sent, so it may lag a little); then checks that
/// the count stays there.
async fn assert_done_count_settles_at(probe: &str, expected: u64) {
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let count = done_count(probe).await;
        if count == expected {
            break;
        }
        assert!(
            count < expected,
            "on-done ran {count} times, expected {expected}"
        );
        assert!(
            Instant::now() < deadline,
            "on-done ran {count} times, expected {expected}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert_eq!(
        done_count(probe).await,
        expected,
        "on-done ran more than once for some request"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn only_the_configured_phases_run_and_the_body_is_left_alone() {
    let up = Upstream::start().await;
    let routes = "      - { name: heads, filters: [{ filter: inspect, config: { phases: [request_headers, response_headers] } }], cluster: backend }";
    let weft = start(&config(&inspect(), routes, up.addr));
    let url = weft.url("public");

    for _ in 0..3 {
        let r = post(&format!("{url}/x"), b"hello").await;
        assert_eq!(r.status, 200, "{:?}", r.body);
        // No response-body phase: the body is the upstream's JSON, unchanged.
        let echo = r.json();
        assert_eq!(echo["body_bytes"], 5);
        assert_eq!(echo["headers"].get("x-request-body-bytes"), None);
        assert_eq!(r.header("x-seen"), Some("request_headers,response_headers"));
        assert_eq!(r.header("x-seen-body"), None);
        // No done phase: the shared counter never moves.
        assert_eq!(echo["headers"]["x-done-count"], "0");
    }
    assert_eq!(up.hits(), 3);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_phase_runs_in_order_on_one_instance_and_bodies_are_rewritten() {
    let up = Upstream::start().await;
    let routes = "      - { name: all, filters: [{ filter: inspect }], cluster: backend }";
    let weft = start(&config(&inspect(), routes, up.addr));
    let url = weft.url("public");

    for _ in 0..3 {
        let r = post(&format!("{url}/echo"), b"hello").await;
        assert_eq!(r.status, 200, "{:?}", r.body);
        let text = std::str::from_utf8(&r.body).expect("UTF-8 body");
        let json = text
            .strip_suffix(SUFFIX)
            .unwrap_or_else(|| panic!("no {SUFFIX:?} at the end of {text:?}"));
        let echo: serde_json::Value = serde_json::from_str(json).expect("the upstream's JSON");
        assert_eq!(echo["body_bytes"], 5);
        assert_eq!(echo["headers"]["x-request-body-bytes"], "5");
        assert_eq!(echo["headers"]["content-length"], "5");
        assert_eq!(
            r.header("x-seen"),
            Some("request_headers,request_body,response_headers")
        );
        assert_eq!(
            r.header("x-seen-body"),
            Some("request_headers,request_body,response_headers,response_body")
        );
        assert_eq!(
            r.header("content-length"),
            Some(r.body.len().to_string().as_str()),
            "content-length matches the rewritten body"
        );
        assert_eq!(r.header("x-upstream"), Some("test"));
    }
    assert_eq!(up.hits(), 3);
}

/// An upstream that answers every request with the body it received.
async fn body_echo_upstream() -> (SocketAddr, tokio::task::JoinHandle<()>) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let task = tokio::spawn(async move {
        while let Ok((stream, _)) = listener.accept().await {
            tokio::spawn(async move {
                let service = service_fn(|req: http::Request<Incoming>| async move {
                    let body = req.into_body().collect().await.unwrap().to_bytes();
                    Ok::<_, Infallible>(http::Response::new(Full::new(body)))
                });
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(TokioIo::new(stream), service)
                    .await;
            });
        }
    });
    (addr, task)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_upstream_receives_the_body_the_filter_wrote_or_the_clients_untouched() {
    let (addr, task) = body_echo_upstream().await;
    let routes = r#"      - { name: all, match: { path_prefix: /all/ }, filters: [{ filter: inspect }], cluster: backend }
      - { name: heads, match: { path_prefix: /heads/ }, filters: [{ filter: inspect, config: { phases: [request_headers, response_headers] } }], cluster: backend }"#;
    let weft = start(&config(&inspect(), routes, addr));
    let url = weft.url("public");

    let r = post(&format!("{url}/all/x"), b"hello, Weft!").await;
    assert_eq!(r.status, 200);
    assert_eq!(
        std::str::from_utf8(&r.body).unwrap(),
        format!("HELLO, WEFT!{SUFFIX}")
    );

    let r = post(&format!("{url}/heads/x"), b"hello, Weft!").await;
    assert_eq!(r.status, 200);
    assert_eq!(&r.body[..], b"hello, Weft!");
    task.abort();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn on_done_runs_once_per_request() {
    let up = Upstream::start().await;
    // Both routes use the filter `inspect`, so they share its state; the
    // probe has no done phase and only reads the counter.
    let routes = r#"      - { name: counted, match: { path_prefix: /counted/ }, filters: [{ filter: inspect, config: { phases: [request_headers, done] } }], cluster: backend }
      - { name: probe, match: { path_prefix: /probe/ }, filters: [{ filter: inspect, config: { phases: [request_headers] } }], cluster: backend }"#;
    let weft = start(&config(&inspect(), routes, up.addr));
    let url = weft.url("public");
    let probe = format!("{url}/probe/");

    assert_eq!(done_count(&probe).await, 0);
    // Some one after the other, then some at once: concurrent on-done calls
    // on several instances update the counter with compare-and-swap.
    for _ in 0..5 {
        let r = get(&format!("{url}/counted/x")).await;
        assert_eq!(r.status, 200);
    }
    assert_done_count_settles_at(&probe, 5).await;
    let c = client(false);
    let requests: Vec<_> = (0..20)
        .map(|i| {
            let c = c.clone();
            let url = format!("{url}/counted/{i}");
            tokio::spawn(
                async move { send(&c, Request::get(url).body(Full::default()).unwrap()).await },
            )
        })
        .collect();
    for request in requests {
        assert_eq!(request.await.unwrap().status, 200);
    }
    assert_done_count_settles_at(&probe, 25).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bodies_are_buffered_within_max_body_bytes_only_when_a_filter_asks() {
    let up = Upstream::start().await;
    let filters = format!(
        "{}\n  add-header: {{ path: {} }}",
        inspect(),
        wasm("add_header")
    );
    let routes = r#"      - name: buffered
        match: { path_prefix: /buffered/ }
        filters: [{ filter: inspect, config: { phases: [request_body] } }]
        max_body_bytes: 16
        cluster: backend
      - name: streamed
        match: { path_prefix: /streamed/ }
        filters: [{ filter: add-header, config: { request: { x-added: "yes" } } }]
        max_body_bytes: 16
        cluster: backend
      - name: small-response
        match: { path_prefix: /small-response/ }
        filters: [{ filter: inspect, config: { phases: [response_body] } }]
        max_body_bytes: 16
        cluster: backend"#;
    let weft = start(&config(&filters, routes, up.addr));
    let url = weft.url("public");
    let big: &'static [u8] = &[b'x'; 64];

    let r = post(&format!("{url}/buffered/x"), big).await;
    assert_eq!(r.status, 413, "{:?}", r.body);
    assert_eq!(r.json()["error"], "body_too_large");
    assert_eq!(up.hits(), 0, "a refused body must not reach the upstream");

    // Without a content-length the limit holds too.
    let chunked = format!(
        "POST /buffered/x HTTP/1.1\r\nhost: x\r\ntransfer-encoding: chunked\r\n\r\n40\r\n{}\r\n0\r\n\r\n",
        "x".repeat(64)
    );
    let status = raw_status(weft.addr("public"), chunked.as_bytes()).await;
    assert!(status.starts_with("HTTP/1.1 413"), "{status}");
    assert_eq!(up.hits(), 0);

    // Exactly at the limit is fine.
    let r = post(&format!("{url}/buffered/x"), &[b'y'; 16]).await;
    assert_eq!(r.status, 200, "{:?}", r.body);
    assert_eq!(
        r.echoed_header("x-request-body-bytes").as_deref(),
        Some("16")
    );
    assert_eq!(r.json()["body_bytes"], 16);

    // Nobody asks for the body: it streams through whatever its size.
    let r = post(&format!("{url}/streamed/x"), big).await;
    assert_eq!(r.status, 200, "{:?}", r.body);
    assert_eq!(r.json()["body_bytes"], 64);
    assert_eq!(r.echoed_header("x-added").as_deref(), Some("yes"));

    // A response body larger than the limit, for a filter that wants it.
    let r = get(&format!("{url}/small-response/x")).await;
    assert_eq!(r.status, 502, "{:?}", r.body);
    assert_eq!(r.json()["error"], "response_body");
    assert_eq!(up.hits(), 3);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn filters_before_a_local_responder_see_its_response() {
    let up = Upstream::start().await;
    let filters = format!(
        "{}\n  hello: {{ path: {} }}",
        inspect(),
        wasm("hello_filter")
    );
    let routes = r#"      - name: hello
        match: { path_prefix: /hello }
        filters: [{ filter: inspect }, { filter: hello }]
        cluster: backend
      - name: probe
        match: { path_prefix: /probe/ }
        filters: [{ filter: inspect, config: { phases: [request_headers] } }]
        cluster: backend"#;
    let weft = start(&config(&filters, routes, up.addr));
    let url = weft.url("public");

    for _ in 0..3 {
        let r = post(&format!("{url}/hello"), b"ignored").await;
        assert_eq!(r.status, 200, "{:?}", r.body);
        assert_eq!(r.header("content-type"), Some("text/plain"));
        // The body phase did not run: hello answered from the header phase.
        assert_eq!(r.header("x-seen"), Some("request_headers,response_headers"));
        assert_eq!(
            r.header("x-seen-body"),
            Some("request_headers,response_headers,response_body")
        );
        assert_eq!(
            std::str::from_utf8(&r.body).unwrap(),
            format!("hello from weft\n{SUFFIX}")
        );
        assert_eq!(
            r.header("content-length"),
            Some(r.body.len().to_string().as_str())
        );
    }
    assert_eq!(up.hits(), 0, "answered locally");
    // on-done ran for each local response.
    assert_done_count_settles_at(&format!("{url}/probe/"), 3).await;
}
