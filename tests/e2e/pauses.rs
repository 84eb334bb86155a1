//! A request always ends: its pauses (`continue-after`, 0 ms counting as
//! 1 ms) and retry delays share one budget, and a client cannot ask the
//! fault filter for a delay longer than its cap.

use std::time::{Duration, Instant};

use weft_test_harness::{Upstream, get};

use crate::{config, start, wasm};

fn misbehaving(filter_config: &str, upstream: std::net::SocketAddr) -> String {
    let filters = format!("  misbehave: {{ path: {} }}", wasm("misbehave_filter"));
    let routes = format!(
        "      - {{ name: all, filters: [{{ filter: misbehave, config: {filter_config} }}], cluster: backend }}"
    );
    config(&filters, &routes, upstream)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn continue_after_zero_for_ever_ends_at_the_pause_limit() {
    let up = Upstream::start().await;
    let weft = start(&misbehaving("{ pause_ms: 0 }", up.addr));
    let started = Instant::now();
    let r = get(&format!("{}/x", weft.url("public"))).await;
    assert_eq!(r.status, 500, "{:?}", r.body);
    let body = r.json();
    assert_eq!(body["error"], "filter_failed");
    let message = body["message"].as_str().unwrap();
    assert!(
        message.contains("continue-after") && message.contains("the limit of 1000 per request"),
        "{message}"
    );
    // 1000 pauses of 1 ms, give or take the timer's rounding.
    assert!(
        started.elapsed() < Duration::from_secs(10),
        "{:?}",
        started.elapsed()
    );
    assert_eq!(up.hits(), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_retry_delay_counts_against_the_pause_budget() {
    let up = Upstream::start().await;
    // 400 s before the retry: more than the 300 s a request may pause.
    let weft = start(&misbehaving("{ retry_ms: 400000 }", up.addr));
    let started = Instant::now();
    let r = get(&format!("{}/x", weft.url("public"))).await;
    assert_eq!(r.status, 500, "{:?}", r.body);
    let message = r.json()["message"].as_str().unwrap().to_string();
    assert!(
        message.contains("retry: the request's pauses and retries would exceed 300 s in all"),
        "{message}"
    );
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "{:?}",
        started.elapsed()
    );
    assert_eq!(up.hits(), 1, "no second attempt");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_fault_delay_asked_for_by_a_header_is_cut_to_the_cap() {
    let up = Upstream::start().await;
    let filters = format!("  fault: {{ path: {} }}", wasm("fault"));
    let routes = "      - { name: all, filters: [{ filter: fault, config: { header_trigger: true } }], cluster: backend }";
    let weft = start(&config(&filters, routes, up.addr));
    let c = weft_test_harness::client(false);
    let req = http::Request::get(format!("{}/x", weft.url("public")))
        .header("x-weft-fault-delay", "60000")
        .body(http_body_util::Full::default())
        .unwrap();
    let started = Instant::now();
    // Held for the default cap, 10 s, not the minute asked for.
    let r = weft_test_harness::send(&c, req).await;
    let held = started.elapsed();
    assert_eq!(r.status, 200, "{:?}", r.body);
    assert!(
        held >= Duration::from_secs(10) && held < Duration::from_secs(20),
        "{held:?}"
    );
}
