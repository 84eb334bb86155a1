//! A filter's shared state follows its name and its module: a reload that
//! keeps both keeps the state; pointing the name at another module starts
//! it empty.

use std::path::Path;
use std::time::{Duration, Instant};

use weft_test_harness::{Upstream, get};

use crate::{config, start, wasm};

fn counting(module: &str, route: &str, upstream: std::net::SocketAddr) -> String {
    let filters = format!("  inspect: {{ path: {module} }}");
    let routes = format!(
        "      - {{ name: {route}, filters: [{{ filter: inspect, config: {{ phases: [request_headers, done] }} }}], cluster: backend }}"
    );
    config(&filters, &routes, upstream)
}

/// inspect-filter's `on-done` counter, as the next request sees it.
async fn done_count(url: &str) -> u64 {
    let r = get(&format!("{url}/x")).await;
    assert_eq!(r.status, 200, "{:?}", r.body);
    r.echoed_header("x-done-count").unwrap().parse().unwrap()
}

/// Polls until the counter reaches `n` (each look adds one).
async fn wait_for_count(url: &str, n: u64) -> u64 {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let seen = done_count(url).await;
        if seen >= n || Instant::now() > deadline {
            return seen;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// A copy of component `from` with a custom section appended: the same
/// code, another module (another sha256).
fn other_module(from: &str) -> String {
    let mut bytes = std::fs::read(from).unwrap();
    let name = b"weft-test";
    let payload = b"another build";
    bytes.push(0); // custom section
    bytes.push((1 + name.len() + payload.len()) as u8);
    bytes.push(name.len() as u8);
    bytes.extend_from_slice(name);
    bytes.extend_from_slice(payload);
    let dir = weft_test_harness::process::temp_dir("other-module");
    let path = Path::new(&dir).join("inspect-copy.wasm");
    std::fs::write(&path, bytes).unwrap();
    path.display().to_string()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_name_pointed_at_another_module_does_not_see_the_old_state() {
    let up = Upstream::start().await;
    let module = wasm("inspect_filter");
    let weft = start(&counting(&module, "one", up.addr));
    let url = weft.url("public");
    assert!(wait_for_count(&url, 3).await >= 3);
    // Same name, same module: the state stays.
    let outcome = tokio::task::block_in_place(|| weft.reload(&counting(&module, "two", up.addr)));
    assert!(outcome.contains("config reloaded"), "{outcome}");
    assert!(done_count(&url).await >= 3);
    // Same name, another module: it starts empty.
    let copy = other_module(&module);
    let outcome = tokio::task::block_in_place(|| weft.reload(&counting(&copy, "three", up.addr)));
    assert!(outcome.contains("config reloaded"), "{outcome}");
    assert_eq!(done_count(&url).await, 0);
}
