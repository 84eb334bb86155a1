//! gRPC through the proxy: a tonic client speaking HTTP/2 cleartext to
//! weft, a tonic server behind a `protocol: http2` cluster; and the
//! proxy's own failures as gRPC statuses.

use std::time::Duration;

use weft_test_harness::grpc::{GrpcEcho, client, echo, expect_asked_to_fail};
use weft_test_harness::tonic::{Code, Request};

use crate::start;

/// A listener whose requests go by `x-target`: `down` to a closed port,
/// `slow` to the server with a 300 ms timeout, anything else to the server;
/// `x-target: none` matches no route.
fn grpc_config(server: std::net::SocketAddr, closed: std::net::SocketAddr) -> String {
    format!(
        r#"listeners:
  - name: public
    listen: 127.0.0.1:0
    routes:
      - {{ name: down, match: {{ headers: [{{ name: x-target, exact: down }}] }}, cluster: down }}
      - {{ name: slow, match: {{ headers: [{{ name: x-target, exact: slow }}] }}, cluster: grpc, timeout_ms: 300 }}
      - {{ name: grpc, match: {{ headers: [{{ name: x-target, present: false }}] }}, cluster: grpc }}
clusters:
  grpc: {{ endpoints: ["{server}"], protocol: http2 }}
  down: {{ endpoints: ["{closed}"], protocol: http2, connect_timeout_ms: 500 }}
"#
    )
}

async fn closed_port() -> std::net::SocketAddr {
    let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    l.local_addr().unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn grpc_unary_and_bidi_streaming_pass_through_with_trailers() {
    let server = GrpcEcho::start().await;
    let weft = start(&grpc_config(server.addr, closed_port().await));
    let mut c = client(&weft.url("public")).await;

    let reply = c.unary(echo("hello", 0)).await.expect("unary call");
    assert_eq!(reply.get_ref().message, "hello");
    // `te: trailers` reached the server.
    assert_eq!(server.te_seen(), ["trailers"]);

    // Bidirectional: each message is echoed while the call stays open,
    // then the server ends it with a status and a custom trailer.
    let (tx, rx) = tokio::sync::mpsc::channel(4);
    let outbound = tokio_stream::wrappers::ReceiverStream::new(rx);
    let mut inbound = c.chat(outbound).await.expect("chat call").into_inner();
    for word in ["one", "two", "three"] {
        tx.send(echo(word, 0)).await.unwrap();
        let got = tokio::time::timeout(Duration::from_secs(10), inbound.message())
            .await
            .expect("an echo within 10 s")
            .expect("a message")
            .expect("not the end");
        assert_eq!(got.message, word);
    }
    tx.send(echo("fail", 0)).await.unwrap();
    expect_asked_to_fail(&mut inbound).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_proxys_own_failures_are_grpc_statuses() {
    let server = GrpcEcho::start().await;
    let weft = start(&grpc_config(server.addr, closed_port().await));
    let mut c = client(&weft.url("public")).await;
    let call = |target: &'static str, delay_ms| {
        let mut request = Request::new(echo("x", delay_ms));
        request
            .metadata_mut()
            .insert("x-target", target.parse().unwrap());
        request
    };

    let no_route = c.unary(call("none", 0)).await.expect_err("no route");
    assert_eq!(no_route.code(), Code::Unimplemented, "{no_route:?}");
    assert!(
        no_route.message().contains("no route matches"),
        "{no_route:?}"
    );

    let down = c.unary(call("down", 0)).await.expect_err("upstream down");
    assert_eq!(down.code(), Code::Unavailable, "{down:?}");
    assert!(down.message().contains("unavailable"), "{down:?}");

    let slow = c.unary(call("slow", 3_000)).await.expect_err("timeout");
    assert_eq!(slow.code(), Code::DeadlineExceeded, "{slow:?}");
    assert!(
        slow.message().contains("did not answer within 300 ms"),
        "{slow:?}"
    );

    // The same client still gets through afterwards.
    let ok = c.unary(echo("after", 0)).await.expect("unary call");
    assert_eq!(ok.get_ref().message, "after");
}
