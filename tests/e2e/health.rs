//! Endpoint health: a killed endpoint costs (almost) no request with health
//! checks, outlier detection and the `retry` filter, and serves again once
//! back and healthy; a cluster whose endpoints all fail their checks gets
//! 503 at once.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use http::Request;
use http_body_util::Full;
use weft_test_harness::{Upstream, client, get, send};

use crate::{start, wasm};

fn yaml(filters: &str, chain: &str, cluster: &str) -> String {
    let filters = if filters.is_empty() { " {}" } else { filters };
    format!(
        "admin: {{ listen: 127.0.0.1:0 }}\nfilters:{filters}\nlisteners:\n  - name: public\n    listen: 127.0.0.1:0\n    routes:\n      - {{ name: all, filters: [{chain}], cluster: backend }}\nclusters:\n  backend:\n{cluster}"
    )
}

/// Polls `admin`'s `/clusters` until endpoint `i` of the first cluster has
/// `health`.
async fn wait_health(admin: &str, i: usize, health: &str) {
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        let c = get(&format!("{admin}/clusters")).await.json();
        if c["clusters"][0]["endpoints"][i]["health"] == health {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "endpoint {i} never {health}: {c}"
        );
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_killed_endpoint_costs_almost_no_request_and_serves_again_once_healthy() {
    let a = Upstream::start().await;
    let b = Upstream::start().await;
    let c = Upstream::start().await;
    let b_addr = b.addr;
    let cluster = format!(
        "    endpoints: [\"{}\", \"{}\", \"{}\"]\n    health_check: {{ path: /health, interval_ms: 100, timeout_ms: 500, healthy_threshold: 1, unhealthy_threshold: 1 }}\n    outlier_detection: {{ consecutive_gateway_failures: 2, base_ejection_ms: 300, max_ejection_ms: 1000 }}\n",
        a.addr, b.addr, c.addr
    );
    let filters = format!("\n  retry: {{ path: {} }}", wasm("retry"));
    let chain =
        "{ filter: retry, config: { max_attempts: 3, backoff: { base_ms: 1, max_ms: 5 } } }";
    let weft = start(&yaml(&filters, chain, &cluster));
    let (base, admin) = (weft.url("public"), weft.url("admin"));
    // Traffic counted apart from health checks: `/flaky/t/0/200` always
    // answers 200, counted under key `t`.
    let sent = Arc::new(AtomicUsize::new(0));
    let failed = Arc::new(AtomicUsize::new(0));
    let started = Instant::now();
    let mut clients = Vec::new();
    for _ in 0..4 {
        let (base, sent, failed) = (base.clone(), sent.clone(), failed.clone());
        clients.push(tokio::spawn(async move {
            let client = client(false);
            for _ in 0..500 {
                if started.elapsed() > Duration::from_secs(10) {
                    break;
                }
                let req = Request::get(format!("{base}/flaky/t/0/200"))
                    .body(Full::default())
                    .unwrap();
                let r = send(&client, req).await;
                sent.fetch_add(1, Ordering::SeqCst);
                if r.status != 200 {
                    failed.fetch_add(1, Ordering::SeqCst);
                }
            }
        }));
    }
    // Kill b once traffic flows to it.
    let deadline = Instant::now() + Duration::from_secs(10);
    while b.seen("t") < 50 {
        assert!(Instant::now() < deadline, "no traffic reached b");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    b.kill();
    wait_health(&admin, 1, "unhealthy").await;
    for t in clients {
        t.await.unwrap();
    }
    let (sent, failed) = (sent.load(Ordering::SeqCst), failed.load(Ordering::SeqCst));
    assert!(sent >= 1000, "only {sent} requests sent");
    assert!(failed * 1000 < sent, "{failed} of {sent} failed");
    // Back on the same port: healthy again, then served again.
    let b = Upstream::start_on(b_addr).await;
    wait_health(&admin, 1, "healthy").await;
    let deadline = Instant::now() + Duration::from_secs(15);
    while b.seen("t") == 0 {
        assert!(Instant::now() < deadline, "b never served again");
        let r = get(&format!("{base}/flaky/t/0/200")).await;
        assert_eq!(r.status, 200);
    }
    // The endpoint kept its counters across its absence. (Whether a request
    // met the dead port before a check failed it is a race: its connect
    // failures are not asserted here.)
    let state = get(&format!("{admin}/clusters")).await.json();
    let ep = &state["clusters"][0]["endpoints"][1];
    assert_eq!(ep["health"], "healthy", "{ep}");
    assert!(
        ep["requests_total"].as_u64().unwrap() > 50,
        "its requests before and after the kill: {ep}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn endpoints_all_failing_checks_get_503_at_once_naming_the_cluster() {
    let a = Upstream::start().await;
    let b = Upstream::start().await;
    let cluster = format!(
        "    endpoints: [\"{}\", \"{}\"]\n    health_check: {{ path: /status/503, interval_ms: 100, unhealthy_threshold: 1 }}\n",
        a.addr, b.addr
    );
    let weft = start(&yaml("", "", &cluster));
    let (base, admin) = (weft.url("public"), weft.url("admin"));
    wait_health(&admin, 0, "unhealthy").await;
    wait_health(&admin, 1, "unhealthy").await;
    let sent = Instant::now();
    let r = get(&format!("{base}/traffic")).await;
    assert!(
        sent.elapsed() < Duration::from_millis(500),
        "{:?}",
        sent.elapsed()
    );
    assert_eq!(r.status, 503);
    let body = r.json();
    assert_eq!(body["error"], "no_healthy_endpoint");
    assert_eq!(body["message"], "cluster backend has no healthy endpoint");
    let state = get(&format!("{admin}/clusters")).await.json();
    assert_eq!(state["clusters"][0]["endpoints"][0]["requests_total"], 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refused_connection_is_counted_for_its_endpoint() {
    // A port nothing listens on: every connect is refused.
    let closed = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap();
    let cluster = format!("    endpoints: [\"{closed}\"]\n");
    let weft = start(&yaml("", "", &cluster));
    for _ in 0..2 {
        let r = get(&format!("{}/x", weft.url("public"))).await;
        assert_eq!(r.status, 502, "{:?}", r.body);
    }
    let admin = weft.url("admin");
    let state = get(&format!("{admin}/clusters")).await.json();
    let ep = &state["clusters"][0]["endpoints"][0];
    assert_eq!(ep["connect_failures_total"], 2, "{ep}");
    let metrics = String::from_utf8_lossy(&get(&format!("{admin}/metrics")).await.body).to_string();
    let line = format!(
        "weft_upstream_connect_failures_total{{cluster=\"backend\",endpoint=\"{closed}\"}} 2"
    );
    assert!(metrics.contains(&line), "no {line} in\n{metrics}");
}
