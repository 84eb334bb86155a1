//! Trailers survive a body that a filter is given whole: gRPC through a
//! proxy-wasm filter that buffers both bodies keeps its status and its
//! trailing metadata.

use std::time::Duration;

use weft_test_harness::grpc::proto::EchoRequest;
use weft_test_harness::grpc::{GrpcEcho, client};
use weft_test_harness::tonic::Code;

use super::pw;
use crate::start;

fn echo(message: &str) -> EchoRequest {
    EchoRequest {
        message: message.into(),
        delay_ms: 0,
    }
}

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
    let reply = c.unary(echo("hello")).await.expect("unary call");
    assert_eq!(reply.get_ref().message, "hello");

    // A stream ended by the server's error status and a custom trailer,
    // delivered whole once the request (also given whole) has ended.
    let outbound = tokio_stream::iter([echo("one"), echo("fail")]);
    let mut inbound = c.chat(outbound).await.expect("chat call").into_inner();
    let first = tokio::time::timeout(Duration::from_secs(10), inbound.message())
        .await
        .expect("an echo within 10 s")
        .expect("a message")
        .expect("not the end");
    assert_eq!(first.message, "one");
    let status = tokio::time::timeout(Duration::from_secs(10), inbound.message())
        .await
        .expect("the end within 10 s")
        .expect_err("the call ends with the server's status");
    assert_eq!(status.code(), Code::Aborted, "{status:?}");
    assert_eq!(status.message(), "asked to fail");
    assert_eq!(
        status
            .metadata()
            .get("x-echo-trailer")
            .map(|v| v.to_str().unwrap()),
        Some("done")
    );
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
    let outbound = tokio_stream::iter([echo("fail")]);
    let mut inbound = c.chat(outbound).await.expect("chat call").into_inner();
    let status = tokio::time::timeout(Duration::from_secs(10), inbound.message())
        .await
        .expect("the end within 10 s")
        .expect_err("the call ends with the server's status");
    assert_eq!(status.code(), Code::Aborted, "{status:?}");
    let trailer = |name: &str| {
        status
            .metadata()
            .get(name)
            .map(|v| v.to_str().unwrap().to_string())
    };
    assert_eq!(trailer("x-echo-trailer").as_deref(), Some("done"));
    let seen = trailer("x-pw-trailers").expect("the filter's trailer");
    assert!(seen.ends_with("grpc-status 10"), "{seen}");
}
