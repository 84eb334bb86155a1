//! What the proxy-wasm host gives a filter, seen through `pw_inspect`:
//! properties, header maps, shared data with compare-and-swap across
//! requests, and metrics on `/metrics`.

use http::Request;
use http_body_util::Full;
use weft_test_harness::{Upstream, Weft, client, get, send};

use super::pw;
use crate::{config, start};

async fn metrics(weft: &Weft) -> String {
    let r = get(&format!("{}/metrics", weft.url("admin"))).await;
    assert_eq!(r.status, 200);
    String::from_utf8_lossy(&r.body).to_string()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn properties_shared_data_and_metrics_reach_a_proxy_wasm_filter() {
    let up = Upstream::start().await;
    let filters = format!("  inspect: {{ path: {} }}", pw("pw_inspect"));
    let routes = "      - { name: all, filters: [{ filter: inspect, config: { note: any } }], cluster: backend }";
    let weft = start(&format!(
        "admin: {{ listen: 127.0.0.1:0 }}\n{}",
        config(&filters, routes, up.addr)
    ));
    let url = weft.url("public");
    let client = client(false);

    let mut request_ids = Vec::new();
    for n in 1..=3 {
        let req = Request::get(format!("{url}/props/{n}"))
            .header("x-pw-remove-me", "gone")
            .header("x-kept", "kept")
            .body(Full::default())
            .unwrap();
        let r = send(&client, req).await;
        assert_eq!(r.status, 200, "{:?}", r.body);
        // Properties.
        assert_eq!(r.header("x-pw-path"), Some(format!("/props/{n}").as_str()));
        assert_eq!(r.header("x-pw-method"), Some("GET"));
        let source = r.header("x-pw-source").unwrap_or_default();
        assert!(source.starts_with("127.0.0.1:"), "source.address: {source}");
        assert_eq!(r.header("x-pw-plugin-name"), Some("inspect"));
        let id = r.header("x-pw-request-id").unwrap_or_default().to_string();
        assert!(!id.is_empty() && id != "-", "request.id: {id:?}");
        request_ids.push(id);
        // The shared count, kept with CAS, goes up by one per request.
        assert_eq!(r.header("x-pw-count"), Some(n.to_string().as_str()));
        assert_eq!(r.echoed_header("x-pw-count"), Some(n.to_string()));
        // The request's header map: one header removed, the others kept.
        assert_eq!(r.echoed_header("x-pw-remove-me"), None);
        assert_eq!(r.echoed_header("x-kept").as_deref(), Some("kept"));
        let counted: usize = r
            .header("x-pw-request-headers")
            .and_then(|v| v.parse().ok())
            .unwrap_or_default();
        assert!(counted >= 2, "the request's headers: {counted}");
        let counted: usize = r
            .header("x-pw-response-headers")
            .and_then(|v| v.parse().ok())
            .unwrap_or_default();
        assert!(counted >= 1, "the upstream's response headers: {counted}");
    }
    request_ids.sort();
    request_ids.dedup();
    assert_eq!(request_ids.len(), 3, "one id per request");

    // The filter's metrics, in the filters' namespace with its name.
    let text = metrics(&weft).await;
    for line in [
        "weft_user_pw_inspect_requests_total{filter=\"inspect\"} 3\n",
        "weft_user_pw_inspect_last_count{filter=\"inspect\"} 3\n",
        "weft_user_pw_inspect_request_headers_count{filter=\"inspect\"} 3\n",
    ] {
        assert!(text.contains(line), "no {line:?} in\n{text}");
    }
    for kind in ["counter", "gauge", "histogram"] {
        let name = match kind {
            "counter" => "pw_inspect_requests_total",
            "gauge" => "pw_inspect_last_count",
            _ => "pw_inspect_request_headers",
        };
        assert!(
            text.contains(&format!("# TYPE weft_user_{name} {kind}\n")),
            "{name} is a {kind}:\n{text}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_shared_count_survives_a_trap_that_replaced_the_instance() {
    let up = Upstream::start().await;
    let filters = format!("  inspect: {{ path: {} }}", pw("pw_inspect"));
    let routes = "      - { name: all, filters: [{ filter: inspect }], cluster: backend }";
    let weft = start(&config(&filters, routes, up.addr));
    let url = weft.url("public");
    for n in 1..=2 {
        let r = get(&format!("{url}/a")).await;
        assert_eq!(r.header("x-pw-count"), Some(n.to_string().as_str()));
    }
    assert_eq!(get(&format!("{url}/trap")).await.status, 500);
    // Shared data belongs to the host, not to the instance that trapped.
    let r = get(&format!("{url}/b")).await;
    assert_eq!(r.status, 200, "{:?}", r.body);
    assert_eq!(r.header("x-pw-count"), Some("3"));
}
