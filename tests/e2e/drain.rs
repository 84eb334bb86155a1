//! SIGTERM drains: the listening sockets close, requests in flight finish,
//! then the process exits by itself.

use std::time::Duration;

use http::Request;
use http_body_util::Full;
use weft_test_harness::{Upstream, client, send};

use crate::{config, start};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_refuses_new_connections_finishes_slow_requests_and_exits() {
    let up = Upstream::start().await;
    let routes = "      - { name: all, cluster: backend }";
    let mut weft = start(&config("", routes, up.addr));
    let addr = weft.addr("public");
    let url = format!("{}/delay/1500", weft.url("public"));

    // Two HTTP/1.1 requests and one HTTP/2 request, each on its own connection.
    let in_flight: Vec<_> = [false, false, true]
        .into_iter()
        .map(|http2| {
            let req = Request::get(&url).body(Full::default()).unwrap();
            tokio::spawn(async move { send(&client(http2), req).await })
        })
        .collect();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while up.hits() < 3 {
        assert!(
            tokio::time::Instant::now() < deadline,
            "requests did not reach the upstream"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }

    weft.signal("TERM");
    // New connections are refused once the listening sockets are closed.
    loop {
        if tokio::net::TcpStream::connect(addr).await.is_err() {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "still accepting after SIGTERM"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    for request in in_flight {
        let reply = request.await.expect("request task");
        assert_eq!(reply.status, 200, "{:?}", reply.body);
    }
    let status = tokio::task::block_in_place(|| weft.wait_exit(Duration::from_secs(10)));
    let status = status.expect("weft exits by itself after the drain");
    assert!(status.success(), "{status}");
    tokio::task::block_in_place(|| weft.wait_for_log("drained: every connection closed", 1));
}
