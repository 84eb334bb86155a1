//! Trailers survive a body that a filter is given whole: gRPC through a
//! proxy-wasm filter that buffers both bodies keeps its status and its
//! trailing metadata.

use std::time::Duration;

use weft_test_harness::grpc::{GrpcEcho, client, echo, expect_asked_to_fail};

use super::pw;
use crate::start;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn grpc_trailers_pass_a_filter_given_whole_bodies() {
    let server = GrpcEcho::start().await;
    let weft = start(&format!(
        r#"filters:
  body: {{ path: {} }}
listeners:
  - name: public
    listen: 127.0.0.1:0
    routes:
      - {{ name: grpc, filters: [{{ filter: body }}], cluster: grpc }}
clusters:
  grpc: {{ endpoints: ["{}"], protocol: http2 }}
"#,
        pw("http_body"),
        server.addr
    ));
    let mut c = client(&weft.url("public")).await;

    // The response's `grpc-status: 0` is a trailer: without it the call
    // would fail.
    let reply = c.unary(echo("hello", 0)).await.expect("unary call");
    assert_eq!(reply.get_ref().message, "hello");

    // A stream ended by the server's error status and a custom trailer,
    // delivered whole once the request (also given whole) has ended.
    let outbound = tokio_stream::iter([echo("one", 0), echo("fail", 0)]);
    let mut inbound = c.chat(outbound).await.expect("chat call").into_inner();
    let first = tokio::time::timeout(Duration::from_secs(10), inbound.message())
        .await
        .expect("an echo within 10 s")
        .expect("a message")
        .expect("not the end");
    assert_eq!(first.message, "one");
    expect_asked_to_fail(&mut inbound).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_proxy_wasm_filter_reads_and_adds_response_trailers() {
    let server = GrpcEcho::start().await;
    let weft = start(&format!(
        r#"filters:
  inspect: {{ path: {} }}
listeners:
  - name: public
    listen: 127.0.0.1:0
    routes:
      - {{ name: grpc, filters: [{{ filter: inspect, config: {{}} }}], cluster: grpc }}
clusters:
  grpc: {{ endpoints: ["{}"], protocol: http2 }}
"#,
        pw("pw_inspect"),
        server.addr
    ));
    let mut c = client(&weft.url("public")).await;
    // The stream ends with the server's error status and its trailer, and
    // the filter's own trailer, which saw the server's.
    let outbound = tokio_stream::iter([echo("fail", 0)]);
    let mut inbound = c.chat(outbound).await.expect("chat call").into_inner();
    let status = expect_asked_to_fail(&mut inbound).await;
    let seen = status
        .metadata()
        .get("x-pw-trailers")
        .map(|v| v.to_str().unwrap().to_string())
        .expect("the filter's trailer");
    assert!(seen.ends_with("grpc-status 10"), "{seen}");
}
