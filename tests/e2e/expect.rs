//! `Expect: 100-continue` is the upstream's to answer: the client gets
//! `100 Continue` only once the upstream has sent one, and an upstream that
//! answers at once (401 without reading the body) is heard before any body
//! is uploaded. A body the proxy reads for a filter goes upstream whole,
//! without the expectation.

use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::oneshot;
use tokio::time::Instant;

use crate::{config, start, wasm};

/// How long one read may wait.
const READ_LIMIT: Duration = Duration::from_secs(10);

/// Reads a whole head into `buf`; returns its length. Panics if the peer
/// closes first.
async fn read_head(stream: &mut TcpStream, buf: &mut Vec<u8>) -> usize {
    weft_test_harness::raw::read_head(stream, buf)
        .await
        .unwrap_or_else(|| panic!("closed before a whole head: {buf:?}"))
}

/// The value of header `name` (lower-case) in `head`.
fn header<'a>(head: &'a str, name: &str) -> Option<&'a str> {
    head.lines().find_map(|line| {
        let (n, v) = line.split_once(':')?;
        n.trim().eq_ignore_ascii_case(name).then(|| v.trim())
    })
}

/// What the raw upstream does once it has a request head.
#[derive(Clone, Copy)]
enum Upstream {
    /// Answers 401 without reading the body, and closes.
    Refuses,
    /// Waits a moment, answers `100 Continue` (reporting when), reads the
    /// body and answers 200 with its length.
    Continues,
    /// Reads the body without a `100 Continue`, answers 200 with its length.
    Silent,
}

/// Starts a raw upstream serving one connection as `mode` says; the
/// receiver gets the instant it wrote `100 Continue`.
async fn upstream(mode: Upstream) -> (std::net::SocketAddr, oneshot::Receiver<Instant>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let (sent_100, when) = oneshot::channel();
    tokio::spawn(async move {
        let (mut stream, _) = listener.accept().await.unwrap();
        let mut buf = Vec::new();
        let head_len = read_head(&mut stream, &mut buf).await;
        let head = String::from_utf8_lossy(&buf[..head_len]).into_owned();
        assert_eq!(header(&head, "expect"), Some("100-continue"), "{head}");
        match mode {
            Upstream::Refuses => {
                let _ = stream
                    .write_all(b"HTTP/1.1 401 Unauthorized\r\ncontent-length: 0\r\nconnection: close\r\n\r\n")
                    .await;
            }
            Upstream::Continues | Upstream::Silent => {
                if let Upstream::Continues = mode {
                    // Late enough that a 100 the proxy made up would come first.
                    tokio::time::sleep(Duration::from_millis(300)).await;
                    stream
                        .write_all(b"HTTP/1.1 100 Continue\r\n\r\n")
                        .await
                        .unwrap();
                    let _ = sent_100.send(Instant::now());
                }
                let len: usize = header(&head, "content-length").unwrap().parse().unwrap();
                let mut body = buf[head_len..].to_vec();
                let mut chunk = [0u8; 4096];
                while body.len() < len {
                    let n = tokio::time::timeout(READ_LIMIT, stream.read(&mut chunk))
                        .await
                        .expect("body within 10 s")
                        .unwrap();
                    assert!(n > 0, "closed mid-body");
                    body.extend_from_slice(&chunk[..n]);
                }
                let answer = body.len().to_string();
                let reply = format!(
                    "HTTP/1.1 200 OK\r\ncontent-length: {}\r\n\r\n{answer}",
                    answer.len()
                );
                stream.write_all(reply.as_bytes()).await.unwrap();
            }
        }
    });
    (addr, when)
}

const REQUEST: &[u8] =
    b"PUT /upload HTTP/1.1\r\nhost: x\r\nexpect: 100-continue\r\ncontent-length: 11\r\n\r\n";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_upstream_refusing_at_once_is_heard_before_any_100_continue() {
    let (addr, _) = upstream(Upstream::Refuses).await;
    let weft = start(&config(
        "  {}",
        "      - { name: all, cluster: backend }",
        addr,
    ));
    let mut client = TcpStream::connect(weft.addr("public")).await.unwrap();
    client.write_all(REQUEST).await.unwrap();
    let mut buf = Vec::new();
    let len = read_head(&mut client, &mut buf).await;
    let head = String::from_utf8_lossy(&buf[..len]);
    assert!(head.starts_with("HTTP/1.1 401 "), "{head}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_client_gets_100_continue_only_after_the_upstream_sent_it() {
    let (addr, sent_100) = upstream(Upstream::Continues).await;
    let weft = start(&config(
        "  {}",
        "      - { name: all, cluster: backend }",
        addr,
    ));
    let mut client = TcpStream::connect(weft.addr("public")).await.unwrap();
    client.write_all(REQUEST).await.unwrap();
    let mut buf = Vec::new();
    let len = read_head(&mut client, &mut buf).await;
    let got_100 = Instant::now();
    let head = String::from_utf8_lossy(&buf[..len]).into_owned();
    assert!(head.starts_with("HTTP/1.1 100 "), "{head}");
    let upstream_sent = sent_100.await.expect("the upstream sent 100 Continue");
    assert!(
        got_100 >= upstream_sent,
        "the proxy sent 100 Continue {:?} before the upstream did",
        upstream_sent - got_100
    );
    buf.drain(..len);
    client.write_all(b"hello world").await.unwrap();
    let (head, body) = read_reply(&mut client, buf).await;
    assert!(head.starts_with("HTTP/1.1 200 "), "{head}");
    assert_eq!(body, b"11");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_upstream_that_never_sends_100_gets_the_body_after_the_wait() {
    let (addr, _) = upstream(Upstream::Silent).await;
    let weft = start(&config(
        "  {}",
        "      - { name: all, cluster: backend }",
        addr,
    ));
    let mut client = TcpStream::connect(weft.addr("public")).await.unwrap();
    let sent = Instant::now();
    client.write_all(REQUEST).await.unwrap();
    let mut buf = Vec::new();
    let len = read_head(&mut client, &mut buf).await;
    let waited = sent.elapsed();
    let head = String::from_utf8_lossy(&buf[..len]).into_owned();
    assert!(head.starts_with("HTTP/1.1 100 "), "{head}");
    // The proxy's wait for the upstream's 100 is 1 s.
    assert!(waited >= Duration::from_millis(900), "100 after {waited:?}");
    buf.drain(..len);
    client.write_all(b"hello world").await.unwrap();
    let (head, body) = read_reply(&mut client, buf).await;
    assert!(head.starts_with("HTTP/1.1 200 "), "{head}");
    assert_eq!(body, b"11");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_body_a_filter_reads_goes_upstream_whole_without_the_expectation() {
    let up = weft_test_harness::Upstream::start().await;
    let filters = format!("  inspect: {{ path: {} }}", wasm("inspect_filter"));
    let routes = "      - { name: all, filters: [{ filter: inspect, config: { phases: [request_body] } }], cluster: backend }";
    let weft = start(&config(&filters, routes, up.addr));
    let mut client = TcpStream::connect(weft.addr("public")).await.unwrap();
    client.write_all(REQUEST).await.unwrap();
    // The proxy reads the body for the filter: it asks for it itself.
    let mut buf = Vec::new();
    let len = read_head(&mut client, &mut buf).await;
    let head = String::from_utf8_lossy(&buf[..len]).into_owned();
    assert!(head.starts_with("HTTP/1.1 100 "), "{head}");
    buf.drain(..len);
    client.write_all(b"hello world").await.unwrap();
    let (head, body) = read_reply(&mut client, buf).await;
    assert!(head.starts_with("HTTP/1.1 200 "), "{head}");
    let echo: serde_json::Value = serde_json::from_slice(&body).unwrap();
    assert_eq!(echo["body_bytes"], 11, "{echo}");
    assert!(echo["headers"].get("expect").is_none(), "{echo}");
}

/// Reads one response with a `content-length` (`buf` holds bytes already
/// read): its head and body.
async fn read_reply(stream: &mut TcpStream, mut buf: Vec<u8>) -> (String, Vec<u8>) {
    let len = read_head(stream, &mut buf).await;
    let head = String::from_utf8_lossy(&buf[..len]).into_owned();
    let body_len: usize = header(&head, "content-length").unwrap().parse().unwrap();
    let mut chunk = [0u8; 4096];
    while buf.len() < len + body_len {
        let n = tokio::time::timeout(READ_LIMIT, stream.read(&mut chunk))
            .await
            .expect("bytes within 10 s")
            .unwrap();
        assert!(n > 0, "closed mid-body");
        buf.extend_from_slice(&chunk[..n]);
    }
    (head, buf[len..len + body_len].to_vec())
}
