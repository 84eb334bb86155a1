//! The admin API: readiness and metrics, including what filters record.

use http::Request;
use http_body_util::Full;
use weft_test_harness::{Upstream, client, get, send};

use crate::{config, start, wasm};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ready_and_metrics_show_filter_failures_and_reloads() {
    let up = Upstream::start().await;
    let filters = format!("  misbehave: {{ path: {} }}", wasm("misbehave_filter"));
    let routes = "      - { name: all, filters: [{ filter: misbehave, config: { do: trap, when_header: x-boom } }], cluster: backend }";
    let yaml = format!(
        "admin: {{ listen: 127.0.0.1:0 }}\n{}",
        config(&filters, routes, up.addr)
    );
    let weft = start(&yaml);
    let admin = weft.url("admin");

    let ready = get(&format!("{admin}/ready")).await;
    assert_eq!(ready.status, 200);
    assert_eq!(&ready.body[..], b"ready\n");

    for _ in 0..3 {
        let boom = Request::get(format!("{}/x", weft.url("public")))
            .header("x-boom", "1")
            .body(Full::default())
            .unwrap();
        assert_eq!(send(&client(false), boom).await.status, 500);
    }
    let outcome = tokio::task::block_in_place(|| weft.reload(&yaml));
    assert!(outcome.contains("config reloaded"), "{outcome}");

    let metrics = get(&format!("{admin}/metrics")).await;
    assert_eq!(metrics.status, 200);
    let text = String::from_utf8_lossy(&metrics.body);
    assert!(
        text.contains(r#"weft_filter_failures_total{filter="misbehave",kind="trap"} 3"#),
        "{text}"
    );
    assert!(
        text.contains(r#"weft_config_reloads_total{result="ok"} 1"#),
        "{text}"
    );

    let missing = get(&format!("{admin}/nope")).await;
    assert_eq!(missing.status, 404);
    assert_eq!(missing.json()["error"], "not_found");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn instances_are_reused_across_requests() {
    let up = Upstream::start().await;
    let filters = format!("  add-header: {{ path: {} }}", wasm("add_header"));
    let routes = "      - { name: all, filters: [{ filter: add-header, config: { request: { x-a: b }, response: { x-b: c } } }], cluster: backend }";
    let yaml = format!(
        "admin: {{ listen: 127.0.0.1:0 }}\n{}",
        config(&filters, routes, up.addr)
    );
    let weft = start(&yaml);
    let c = client(false);
    for i in 0..50 {
        let req = Request::get(format!("{}/r/{i}", weft.url("public")))
            .body(Full::default())
            .unwrap();
        let r = send(&c, req).await;
        assert_eq!(r.header("x-b"), Some("c"));
    }
    let metrics = get(&format!("{}/metrics", weft.url("admin"))).await;
    let text = String::from_utf8_lossy(&metrics.body);
    assert!(
        text.contains(r#"weft_filter_instances_created_total{filter="add-header"} 1"#),
        "one instance, created at load, serves 50 sequential requests:\n{text}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reload_that_moves_the_admin_api_is_refused() {
    let up = Upstream::start().await;
    let body = config("  {}", "      - { name: all, cluster: backend }", up.addr);
    let weft = start(&format!("admin: {{ listen: 127.0.0.1:0 }}\n{body}"));
    let moved = format!("admin: {{ listen: 127.0.0.1:1 }}\n{body}");
    let outcome = tokio::task::block_in_place(|| weft.reload(&moved));
    assert!(
        outcome.contains("config rejected")
            && outcome.contains("admin: changing the admin API's address needs a restart"),
        "{outcome}"
    );
    assert_eq!(
        get(&format!("{}/ready", weft.url("admin"))).await.status,
        200
    );
}
