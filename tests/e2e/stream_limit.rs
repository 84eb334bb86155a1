//! A route's `max_stream_duration_ms`: a response whose headers come too
//! late is the proxy's 504 (a gRPC call's DEADLINE_EXCEEDED); a response
//! still streaming when it passes is cut off (HTTP/1: no last chunk and the
//! connection closed; HTTP/2: the stream reset); without it the same
//! stream completes.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::{Request, Response};
use http_body_util::{BodyExt, Full};
use hyper::body::{Body, Frame};
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use weft_test_harness::grpc::{GrpcEcho, client as grpc_client, echo};
use weft_test_harness::process::validate;
use weft_test_harness::tonic::Code;
use weft_test_harness::{Weft, client, get};

use crate::{bin, start};

/// `n` one-byte chunks, one every `every`.
struct Drip {
    left: u32,
    every: Duration,
    sleep: Pin<Box<tokio::time::Sleep>>,
}

impl Body for Drip {
    type Data = Bytes;
    type Error = Infallible;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Infallible>>> {
        if self.left == 0 {
            return Poll::Ready(None);
        }
        if self.sleep.as_mut().poll(cx).is_pending() {
            return Poll::Pending;
        }
        self.left -= 1;
        let next = tokio::time::Instant::now() + self.every;
        self.sleep.as_mut().reset(next);
        Poll::Ready(Some(Ok(Frame::data(Bytes::from_static(b"x")))))
    }
}

/// An upstream (HTTP/1.1 and h2c) whose paths end in `drip/<n>/<ms>`
/// (headers at once, then `n` bytes one every `<ms>`) or `head/<ms>`
/// (headers after `<ms>`, then `ok`).
async fn dripping_upstream() -> SocketAddr {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        loop {
            let Ok((stream, _)) = listener.accept().await else {
                continue;
            };
            tokio::spawn(async move {
                let service = service_fn(|req: Request<hyper::body::Incoming>| async move {
                    let path = req.uri().path().to_string();
                    let numbers: Vec<u64> = path
                        .rsplit('/')
                        .take(2)
                        .filter_map(|s| s.parse().ok())
                        .collect();
                    let body = if path.contains("/drip/") {
                        let (ms, n) = (numbers[0], numbers[1]);
                        Drip {
                            left: n as u32,
                            every: Duration::from_millis(ms),
                            sleep: Box::pin(tokio::time::sleep(Duration::ZERO)),
                        }
                        .boxed()
                    } else {
                        tokio::time::sleep(Duration::from_millis(numbers[0])).await;
                        Full::new(Bytes::from_static(b"ok")).boxed()
                    };
                    Ok::<_, Infallible>(Response::new(body))
                });
                let _ = auto::Builder::new(TokioExecutor::new())
                    .serve_connection(TokioIo::new(stream), service)
                    .await;
            });
        }
    });
    addr
}

/// Routes `/limited/…` (300 ms limit) and `/free/…` (none) to `upstream`
/// over `protocol`; the admin listener for the metrics.
fn config(upstream: SocketAddr, protocol: &str) -> String {
    format!(
        r#"admin: {{ listen: 127.0.0.1:0 }}
listeners:
  - name: public
    listen: 127.0.0.1:0
    routes:
      - {{ name: limited, match: {{ path_prefix: /limited/ }}, cluster: up, max_stream_duration_ms: 300 }}
      - {{ name: free, match: {{ path_prefix: /free/ }}, cluster: up }}
clusters:
  up: {{ endpoints: ["{upstream}"], protocol: {protocol} }}
"#
    )
}

/// Sends `GET path` on a new HTTP/1.1 connection (`Connection: close`) and
/// reads until the proxy closes it: (raw bytes, time taken).
async fn raw_get(addr: SocketAddr, path: &str) -> (String, Duration) {
    let started = Instant::now();
    let mut conn = tokio::net::TcpStream::connect(addr).await.unwrap();
    let request = format!("GET {path} HTTP/1.1\r\nhost: a\r\nconnection: close\r\n\r\n");
    conn.write_all(request.as_bytes()).await.unwrap();
    let mut read = Vec::new();
    tokio::time::timeout(Duration::from_secs(10), conn.read_to_end(&mut read))
        .await
        .expect("the proxy ends the response within 10 s")
        .unwrap();
    (
        String::from_utf8_lossy(&read).into_owned(),
        started.elapsed(),
    )
}

/// The value of `weft_stream_timeouts_total` for `phase` of route `limited`.
async fn stream_timeouts(weft: &Weft, phase: &str) -> u64 {
    let text = get(&format!("{}/metrics", weft.url("admin"))).await.body;
    let series = format!(
        "weft_stream_timeouts_total{{listener=\"public\",phase=\"{phase}\",route=\"limited\"}} "
    );
    String::from_utf8_lossy(&text)
        .lines()
        .find_map(|l| l.strip_prefix(&series))
        .map_or(0, |v| v.trim().parse().unwrap())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_http1_stream_is_cut_at_the_limit_and_completes_without_it() {
    let upstream = dripping_upstream().await;
    let weft = start(&config(upstream, "http1"));
    let addr = weft.addr("public");
    // 20 bytes over 2 s: the limit of 300 ms cuts it.
    let (limited, took) = raw_get(addr, "/limited/drip/20/100").await;
    assert!(limited.starts_with("HTTP/1.1 200"), "{limited:?}");
    assert!(took < Duration::from_millis(1500), "cut after {took:?}");
    let body = &limited[limited.find("\r\n\r\n").unwrap() + 4..];
    assert!(!body.ends_with("0\r\n\r\n"), "a complete body: {body:?}");
    assert!(body.matches('x').count() < 20, "{body:?}");
    assert_eq!(stream_timeouts(&weft, "body").await, 1);

    let (free, took) = raw_get(addr, "/free/drip/20/50").await;
    assert!(free.starts_with("HTTP/1.1 200"), "{free:?}");
    assert!(took >= Duration::from_millis(900), "ended after {took:?}");
    assert!(free.ends_with("0\r\n\r\n"), "{free:?}");
    assert_eq!(free.matches('x').count(), 20, "{free:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_http2_stream_to_an_h2c_upstream_is_reset_at_the_limit() {
    let upstream = dripping_upstream().await;
    let weft = start(&config(upstream, "http2"));
    let c = client(true);
    let url = weft.url("public");
    let started = Instant::now();
    let request = |path: &str| {
        Request::get(format!("{url}{path}"))
            .body(Full::<Bytes>::default())
            .unwrap()
    };
    let response = tokio::time::timeout(
        Duration::from_secs(10),
        c.request(request("/limited/drip/20/100")),
    )
    .await
    .expect("headers within 10 s")
    .expect("a response");
    assert_eq!(response.status(), 200);
    let body = tokio::time::timeout(Duration::from_secs(10), response.into_body().collect())
        .await
        .expect("the body ends within 10 s");
    assert!(body.is_err(), "the stream was not reset");
    assert!(started.elapsed() < Duration::from_millis(1500));
    assert_eq!(stream_timeouts(&weft, "body").await, 1);

    // The connection still serves; an unlimited stream completes.
    let response = c.request(request("/free/drip/10/20")).await.unwrap();
    let body = response.into_body().collect().await.expect("a whole body");
    assert_eq!(body.to_bytes(), "x".repeat(10));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn headers_later_than_the_limit_get_504_and_a_grpc_call_deadline_exceeded() {
    let upstream = dripping_upstream().await;
    let weft = start(&config(upstream, "http1"));
    let started = Instant::now();
    let r = get(&format!("{}/limited/head/3000", weft.url("public"))).await;
    assert_eq!(r.status, 504);
    assert_eq!(r.json()["error"], "stream_timeout");
    assert!(started.elapsed() < Duration::from_millis(2000));
    assert_eq!(stream_timeouts(&weft, "head").await, 1);
    // Headers in time, body within the limit: untouched.
    let r = get(&format!("{}/limited/head/10", weft.url("public"))).await;
    assert_eq!((r.status.as_u16(), &r.body[..]), (200, &b"ok"[..]));

    let server = GrpcEcho::start().await;
    let grpc = start(&format!(
        r#"listeners:
  - name: public
    listen: 127.0.0.1:0
    routes:
      - {{ name: grpc, cluster: grpc, max_stream_duration_ms: 300 }}
clusters:
  grpc: {{ endpoints: ["{}"], protocol: http2 }}
"#,
        server.addr
    ));
    let mut c = grpc_client(&grpc.url("public")).await;
    let status = c
        .unary(echo("late", 3000))
        .await
        .expect_err("the call outlives the limit");
    assert_eq!(status.code(), Code::DeadlineExceeded, "{status:?}");
    assert!(
        status.message().contains("max_stream_duration_ms"),
        "{status:?}"
    );
}

#[test]
fn weft_validate_names_a_stream_limit_out_of_range() {
    let text = "listeners:\n  - name: public\n    listen: 127.0.0.1:0\n    routes:\n      - { name: r, cluster: c, max_stream_duration_ms: 99999999999 }\nclusters:\n  c: { endpoints: [\"127.0.0.1:1\"] }\n";
    let (ok, out) = validate(bin(), text, "weft.yaml", &[]);
    assert!(!ok, "{out}");
    assert!(
        out.contains("listeners[0].routes[0].max_stream_duration_ms: must be at most 2592000000"),
        "{out}"
    );
}
