//! Filter instances are limited per chain entry: a client holding many
//! paused requests is refused with 503 `overloaded` past its route's limit,
//! and cannot take the instances other routes need, nor turn their
//! `fail_open` filters (auth or one that holds its instance across the
//! upstream wait) into skipped ones.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use http::Request;
use http_body_util::Full;
use weft_test_harness::{Reply, Upstream, client, send};

use crate::{config, start, wasm};

/// Paused streams opened by the abusive client, spread over connections so
/// that the listener's stream limit does not matter.
const STREAMS: usize = 1000;
const CONNECTIONS: usize = 10;
/// The default `filters.<name>.max_instances`.
const MAX_INSTANCES: usize = 64;
const KEY: &str = "alice-key-1";

fn yaml(upstream: std::net::SocketAddr) -> String {
    let filters = format!(
        "  fault: {{ path: {} }}\n  api-key: {{ path: {} }}\n  inspect: {{ path: {} }}",
        wasm("fault"),
        wasm("api_key"),
        wasm("inspect_filter")
    );
    let routes = format!(
        r#"      - name: slow
        match: {{ path_prefix: /slow/ }}
        filters: [{{ filter: fault, config: {{ header_trigger: true }} }}]
        cluster: backend
      - name: api
        match: {{ path_prefix: /api/ }}
        filters: [{{ filter: api-key, on_error: fail_open, config: {{ keys: [{{ consumer: alice, key: {KEY} }}] }} }}]
        cluster: backend
      - name: held
        match: {{ path_prefix: /delay/ }}
        filters: [{{ filter: inspect, on_error: fail_open, config: {{ phases: [request_headers, response_headers] }} }}]
        cluster: backend"#
    );
    config(&filters, &routes, upstream)
}

/// `n` concurrent requests to `url`, with the API key or without.
async fn round(url: &str, n: usize, key: bool) -> Vec<Reply> {
    let c = client(false);
    let tasks: Vec<_> = (0..n)
        .map(|_| {
            let mut req = Request::get(url);
            if key {
                req = req.header("x-api-key", KEY);
            }
            let (c, req) = (c.clone(), req.body(Full::default()).unwrap());
            tokio::spawn(async move { send(&c, req).await })
        })
        .collect();
    let mut replies = Vec::new();
    for task in tasks {
        replies.push(task.await.expect("request task"));
    }
    replies
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn paused_streams_past_the_limit_get_503_and_other_routes_keep_their_auth() {
    let up = Upstream::start().await;
    let weft = start(&yaml(up.addr));
    let url = weft.url("public");
    let (refused, other) = (Arc::new(AtomicUsize::new(0)), Arc::new(AtomicUsize::new(0)));
    let mut abusive = Vec::new();
    for _ in 0..CONNECTIONS {
        // One client per connection: HTTP/2 with prior knowledge.
        let c = client(true);
        for i in 0..STREAMS / CONNECTIONS {
            let (c, url) = (c.clone(), url.clone());
            let (refused, other) = (refused.clone(), other.clone());
            abusive.push(tokio::spawn(async move {
                let req = Request::get(format!("{url}/slow/{i}"))
                    .header("x-weft-fault-delay", "10000")
                    .body(Full::default())
                    .unwrap();
                let Ok(resp) = c.request(req).await else {
                    return;
                };
                let status = resp.status();
                let body = http_body_util::BodyExt::collect(resp.into_body())
                    .await
                    .map(|b| b.to_bytes())
                    .unwrap_or_default();
                let overloaded = status == 503
                    && serde_json::from_slice::<serde_json::Value>(&body)
                        .is_ok_and(|v| v["error"] == "overloaded");
                if overloaded {
                    refused.fetch_add(1, Ordering::SeqCst);
                } else {
                    other.fetch_add(1, Ordering::SeqCst);
                }
            }));
        }
    }
    // The streams past the limit are refused at once; the others are held.
    let expected = STREAMS - MAX_INSTANCES;
    let deadline = Instant::now() + Duration::from_secs(20);
    while refused.load(Ordering::SeqCst) < expected && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(
        refused.load(Ordering::SeqCst),
        expected,
        "streams refused with 503 overloaded ({} answered otherwise)",
        other.load(Ordering::SeqCst)
    );
    // Meanwhile, concurrent requests on the authenticated route get the
    // right answer: the fail_open filter is never skipped.
    for _ in 0..5 {
        for r in round(&format!("{url}/api/x"), 8, false).await {
            assert_eq!(r.status, 401, "{:?}", r.body);
        }
        for r in round(&format!("{url}/api/x"), 8, true).await {
            assert_eq!(r.status, 200, "{:?}", r.body);
            assert_eq!(r.echoed_header("x-api-key"), None);
        }
    }
    // A filter that holds its instance across a 200 ms upstream wait needs
    // one per request in flight: it still gets them, and is not skipped.
    for r in round(&format!("{url}/delay/200"), 8, false).await {
        assert_eq!(r.status, 200, "{:?}", r.body);
        assert_eq!(r.header("x-seen"), Some("request_headers,response_headers"));
    }
    assert_eq!(
        other.load(Ordering::SeqCst),
        0,
        "the held streams were still held during the checks"
    );
    assert_eq!(
        weft.log_count("filter failed"),
        0,
        "overload is not a filter failure:\n{}",
        weft.log_text()
    );
    for task in abusive {
        task.abort();
    }
}

/// `weft_filter_instances_created_total` of filter `inspect`.
async fn created(admin: &str) -> u64 {
    let metrics = weft_test_harness::get(&format!("{admin}/metrics")).await;
    assert_eq!(metrics.status, 200);
    let text = String::from_utf8_lossy(&metrics.body);
    text.lines()
        .find_map(|line| {
            line.strip_prefix("weft_filter_instances_created_total{filter=\"inspect\"} ")
        })
        .map_or(0, |value| value.parse().unwrap())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idle_instances_are_dropped_after_the_idle_timeout() {
    let up = Upstream::start().await;
    let filters = format!(
        "  inspect: {{ path: {}, instance_idle_timeout_ms: 100 }}",
        wasm("inspect_filter")
    );
    // The filter holds its instance across the upstream's 300 ms.
    let routes = "      - { name: all, filters: [{ filter: inspect, config: { phases: [request_headers, response_headers] } }], cluster: backend }";
    let weft = start(&format!(
        "admin: {{ listen: 127.0.0.1:0 }}\n{}",
        config(&filters, routes, up.addr)
    ));
    let (url, admin) = (weft.url("public"), weft.url("admin"));
    let burst = || async {
        for r in round(&format!("{url}/delay/300"), 8, false).await {
            assert_eq!(r.status, 200, "{:?}", r.body);
        }
    };
    burst().await;
    let after_first = created(&admin).await;
    assert!(
        after_first >= 8,
        "{after_first} instances for 8 requests at once"
    );
    // The idle timeout is what is waited for here.
    tokio::time::sleep(Duration::from_millis(300)).await;
    // Each instance given back drops the oldest idle one past the timeout.
    for _ in 0..8 {
        let r = weft_test_harness::get(&format!("{url}/x")).await;
        assert_eq!(r.status, 200);
    }
    assert_eq!(
        created(&admin).await,
        after_first,
        "the idle ones served these"
    );
    // The burst needs new instances again: the idle ones were dropped.
    burst().await;
    let again = created(&admin).await - after_first;
    assert!(again >= 6, "{again} instances created for the second burst");
}

#[test]
fn max_instances_that_add_up_past_what_the_proxy_serves_are_refused() {
    let filters = format!("  fault: {{ path: {}, max_instances: 500 }}", wasm("fault"));
    let routes = "      - { name: a, match: { path_prefix: /a/ }, filters: [{ filter: fault, config: { header_trigger: true } }], cluster: backend }\n      - { name: b, filters: [{ filter: fault, config: { header_trigger: true } }], cluster: backend }";
    let yaml = config(&filters, routes, "127.0.0.1:9".parse().unwrap());
    let (ok, out) = weft_test_harness::process::validate(crate::bin(), &yaml, "weft.yaml", &[]);
    assert!(!ok, "{out}");
    assert!(
        out.contains("listeners[0].routes[1].filters[0]: the max_instances of the chain entries up to this one add up to 1000, more than the 800 filter instances the proxy serves with: lower filters.fault.max_instances"),
        "{out}"
    );
}

#[test]
fn chain_entries_without_max_instances_share_what_the_configured_ones_leave() {
    // One entry takes 700; the 40 others, with no max_instances of their
    // own, share the 100 left (2 each) instead of asking 64 each.
    let filters = format!(
        "  fault: {{ path: {} }}\n  big: {{ path: {}, max_instances: 700 }}",
        wasm("fault"),
        wasm("fault")
    );
    let mut routes = String::from(
        "      - { name: big, match: { path_prefix: /big/ }, filters: [{ filter: big, config: { header_trigger: true } }], cluster: backend }\n",
    );
    for i in 0..40 {
        routes.push_str(&format!(
            "      - {{ name: r{i}, match: {{ path_prefix: /r{i}/ }}, filters: [{{ filter: fault, config: {{ header_trigger: true }} }}], cluster: backend }}\n"
        ));
    }
    let yaml = config(&filters, routes.trim_end(), "127.0.0.1:9".parse().unwrap());
    let (ok, out) = weft_test_harness::process::validate(crate::bin(), &yaml, "weft.yaml", &[]);
    assert!(ok, "{out}");
    assert!(out.contains("41 routes"), "{out}");
}

/// The address space `pid` has mapped, in KiB (`VmSize`).
fn mapped_kib(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmSize:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .expect("VmSize in /proc/PID/status")
}

/// `WEFT_WASM_ALLOCATOR=on-demand` (for running the proxy under valgrind,
/// `bench/instructions.sh`) serves filters without the instance pool's
/// reservation of address space; without it the pool reserves terabytes.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn filters_run_without_the_pool_when_allocated_on_demand() {
    const TIB_IN_KIB: u64 = 1 << 30;
    let up = Upstream::start().await;
    let filters = format!("  add-header: {{ path: {} }}", wasm("add_header"));
    let routes = "      - { name: all, filters: [{ filter: add-header, config: { request: { x-a: b } } }], cluster: backend }";
    let yaml = config(&filters, routes, up.addr);
    let pooled = start(&yaml);
    let on_demand = weft_test_harness::Weft::start_with_env(
        crate::bin(),
        &yaml,
        &[("WEFT_WASM_ALLOCATOR", "on-demand")],
    );
    for weft in [&pooled, &on_demand] {
        let reply = weft_test_harness::get(&format!("{}/x", weft.url("public"))).await;
        assert_eq!(reply.status, 200, "{}", weft.log_text());
        assert_eq!(reply.json()["headers"]["x-a"], "b");
    }
    assert!(
        mapped_kib(pooled.pid()) > TIB_IN_KIB,
        "the pool is reserved"
    );
    assert!(
        mapped_kib(on_demand.pid()) < TIB_IN_KIB,
        "on demand, {} KiB mapped",
        mapped_kib(on_demand.pid())
    );
}
