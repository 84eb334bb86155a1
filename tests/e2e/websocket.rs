//! WebSocket (HTTP/1.1 `Upgrade`) tunnels through the proxy, allowed per
//! route with `upgrades:`.

use weft_test_harness::websocket::{WsEcho, roundtrip};

use crate::start;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn websocket_echo_through_a_route_that_allows_it() {
    let server = WsEcho::start().await;
    let config = format!(
        "listeners:\n  - name: public\n    listen: 127.0.0.1:0\n    routes:\n      - {{ name: ws, match: {{ path_prefix: /ws }}, cluster: backend, upgrades: [websocket] }}\n      - {{ name: plain, cluster: backend }}\nclusters:\n  backend: {{ endpoints: [\"{}\"] }}\n",
        server.addr
    );
    let weft = start(&config);
    let base = format!("ws://{}", weft.addr("public"));

    let echoes = roundtrip(&format!("{base}/ws/chat"), &["hello", "world", "third"])
        .await
        .expect("the upgrade is allowed");
    assert_eq!(echoes, ["hello", "world", "third"]);

    // A route without `upgrades` refuses, naming itself.
    let (status, body) = roundtrip(&format!("{base}/other"), &["x"])
        .await
        .expect_err("the upgrade is refused");
    assert_eq!(status, 403, "{body}");
    let body: serde_json::Value = serde_json::from_str(&body).expect("a JSON body");
    assert_eq!(body["error"], "upgrade_refused");
    let message = body["message"].as_str().unwrap();
    assert!(
        message.contains("route \"plain\" does not allow upgrading to \"websocket\""),
        "{message}"
    );
    assert!(
        message.contains("listeners[0].routes[1].upgrades"),
        "{message}"
    );

    // The allowed route still tunnels after the refusal.
    let echoes = roundtrip(&format!("{base}/ws/again"), &["again"])
        .await
        .expect("the upgrade is allowed");
    assert_eq!(echoes, ["again"]);
}
