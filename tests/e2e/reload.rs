//! Hot reload: swapping chains under traffic loses no request; an invalid
//! config is refused and the old one keeps serving.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use http::Request;
use http_body_util::Full;
use weft_test_harness::{Upstream, client, get, send};

use crate::{config, start, wasm};

fn versioned(version: usize, upstream: std::net::SocketAddr) -> String {
    let filters = format!("  add-header: {{ path: {} }}", wasm("add_header"));
    let routes = format!(
        "      - {{ name: all, filters: [{{ filter: add-header, config: {{ request: {{ x-version: \"{version}\" }}, response: {{ x-version: \"{version}\" }} }} }}], cluster: backend }}"
    );
    config(&filters, &routes, upstream)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn swapping_the_chain_20_times_under_traffic_loses_no_request() {
    let up = Upstream::start().await;
    let weft = start(&versioned(0, up.addr));
    let url = weft.url("public");
    let stop = Arc::new(AtomicBool::new(false));
    let mut clients = Vec::new();
    for _ in 0..4 {
        let (url, stop) = (url.clone(), stop.clone());
        clients.push(tokio::spawn(async move {
            let c = client(false);
            let (mut ok, mut versions) = (0usize, Vec::new());
            let deadline = Instant::now() + Duration::from_secs(120);
            // Bounded: stops when told, after 200k requests, or after 2 minutes.
            while !stop.load(Ordering::Relaxed) && ok < 200_000 && Instant::now() < deadline {
                let r = send(
                    &c,
                    Request::get(format!("{url}/x"))
                        .body(Full::default())
                        .unwrap(),
                )
                .await;
                assert_eq!(r.status, 200, "request lost during reload: {:?}", r.body);
                let v: usize = r.header("x-version").unwrap().parse().unwrap();
                let upstream_saw: usize = r.echoed_header("x-version").unwrap().parse().unwrap();
                assert_eq!(v, upstream_saw, "a request saw two snapshots");
                versions.push(v);
                ok += 1;
            }
            (ok, versions)
        }));
    }
    for version in 1..=20 {
        let outcome = tokio::task::block_in_place(|| weft.reload(&versioned(version, up.addr)));
        assert!(outcome.contains("config reloaded"), "{outcome}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    stop.store(true, Ordering::Relaxed);
    let mut total = 0;
    for c in clients {
        let (ok, versions) = c.await.unwrap();
        total += ok;
        assert!(
            versions.windows(2).all(|w| w[0] <= w[1]),
            "versions went back: {versions:?}"
        );
    }
    assert!(
        total > 40,
        "traffic flowed during the reloads ({total} requests)"
    );
    let last = get(&format!("{url}/x")).await;
    assert_eq!(last.header("x-version"), Some("20"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_invalid_reload_is_refused_and_the_old_config_keeps_serving() {
    let up = Upstream::start().await;
    let weft = start(&versioned(1, up.addr));
    let url = weft.url("public");
    let broken = versioned(2, up.addr).replace("filter: add-header", "filter: add-headr");
    let outcome = tokio::task::block_in_place(|| weft.reload(&broken));
    assert!(outcome.contains("config rejected"), "{outcome}");
    assert!(
        outcome.contains(r#"listeners[0].routes[0].filters[0].filter: unknown filter "add-headr""#),
        "{outcome}"
    );
    let r = get(&format!("{url}/x")).await;
    assert_eq!(r.status, 200);
    assert_eq!(r.header("x-version"), Some("1"));
    let outcome = tokio::task::block_in_place(|| weft.reload(&versioned(3, up.addr)));
    assert!(outcome.contains("config reloaded"), "{outcome}");
    assert_eq!(
        get(&format!("{url}/x")).await.header("x-version"),
        Some("3")
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn watch_reloads_when_the_file_changes() {
    let up = Upstream::start().await;
    let weft = tokio::task::block_in_place(|| {
        weft_test_harness::Weft::start_with(crate::bin(), &versioned(1, up.addr), &["--watch"])
    });
    let url = weft.url("public");
    assert_eq!(
        get(&format!("{url}/x")).await.header("x-version"),
        Some("1")
    );
    // Make sure the new file differs in size as well as in time.
    std::fs::write(&weft.config_path, versioned(12345, up.addr)).unwrap();
    tokio::task::block_in_place(|| weft.wait_for_log("config reloaded", 1));
    assert_eq!(
        get(&format!("{url}/x")).await.header("x-version"),
        Some("12345")
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_filter_message_cannot_forge_log_lines_or_send_terminal_escapes() {
    let up = Upstream::start().await;
    let weft = start(&versioned(1, up.addr));
    // `init` rejects the config with the filter's own text, which the proxy
    // logs: a line break and an escape sequence in it stay on one line,
    // escaped.
    let filters = format!("  misbehave: {{ path: {} }}", wasm("misbehave_filter"));
    let routes = "      - { name: all, filters: [{ filter: misbehave, config: { init_error: \"bad\\nFORGED INFO weft: owned \\u001b[2J\" } }], cluster: backend }";
    let outcome = tokio::task::block_in_place(|| weft.reload(&config(&filters, routes, up.addr)));
    assert!(outcome.contains("config rejected"), "{outcome}");
    assert!(
        outcome.contains(r"init rejected the config: bad\nFORGED INFO weft: owned \x1b[2J"),
        "{outcome}"
    );
    let log = weft.log_text();
    assert!(
        !log.lines().any(|l| l.starts_with("FORGED")),
        "a forged line:\n{log}"
    );
    assert!(!log.contains('\u{1b}'), "a raw escape:\n{log}");
    // The old config keeps serving.
    let r = get(&format!("{}/x", weft.url("public"))).await;
    assert_eq!(r.header("x-version"), Some("1"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reload_that_changes_the_limits_says_they_wait_for_a_restart() {
    let up = Upstream::start().await;
    let weft = start(&versioned(0, up.addr));
    let changed = format!(
        "{}limits: {{ idle_timeout_ms: 1234 }}\n",
        versioned(1, up.addr)
    );
    let outcome = tokio::task::block_in_place(|| weft.reload(&changed));
    assert!(outcome.contains("config reloaded"), "{outcome}");
    assert_eq!(
        weft.log_count("the limits: section changed; it is read at start"),
        1,
        "{}",
        weft.log_text()
    );
    // The rest of the config did reload.
    let r = get(&format!("{}/x", weft.url("public"))).await;
    assert_eq!(r.header("x-version"), Some("1"));
}
