//! proxy-wasm filters failing: a trap, a loop past the deadline and memory
//! past the cap answer 500 with `fail_closed` and are skipped with
//! `fail_open`, and a fresh instance serves the next request; bad modules
//! and plugins that refuse to start are named by `weft validate`.

use std::time::{Duration, Instant};

use weft_test_harness::filters::core_module_without_proxy_abi;
use weft_test_harness::process::validate;
use weft_test_harness::{Reply, Upstream, get};

use super::pw;
use crate::{bin, config, start};

/// Routes `/closed/` and `/open/` run `pw_inspect` (defined with
/// `limits`) with `fail_closed` and `fail_open`.
fn inspect_config(limits: &str, upstream: std::net::SocketAddr) -> String {
    let filters = format!("  inspect: {{ path: {}{limits} }}", pw("pw_inspect"));
    let routes = "      - { name: closed, match: { path_prefix: /closed/ }, filters: [{ filter: inspect, on_error: fail_closed }], cluster: backend }
      - { name: open, match: { path_prefix: /open/ }, filters: [{ filter: inspect, on_error: fail_open }], cluster: backend }";
    config(&filters, routes, upstream)
}

/// Checks both failure policies for the misbehaviour at `action` (the
/// path's last segment), and that fresh instances serve the requests after
/// it. Returns the `fail_closed` 500 and how long it took.
async fn check_failure_policy(action: &str, limits: &str) -> (Reply, Duration) {
    let up = Upstream::start().await;
    let weft = start(&inspect_config(limits, up.addr));
    let url = weft.url("public");

    let started = Instant::now();
    let closed = get(&format!("{url}/closed/{action}")).await;
    let took = started.elapsed();
    assert_eq!(closed.status, 500, "{action}: {:?}", closed.body);
    assert_eq!(closed.json()["error"], "filter_failed", "{action}");
    assert_eq!(
        up.hits(),
        0,
        "{action}: fail_closed must not reach the upstream"
    );

    // The next request on the same route is served by a fresh instance.
    let r = get(&format!("{url}/closed/after")).await;
    assert_eq!(r.status, 200, "{action}: {:?}", r.body);
    assert_eq!(r.header("x-pw-path"), Some("/closed/after"), "{action}");
    assert!(r.echoed_header("x-pw-count").is_some(), "{action}");

    // fail_open skips the filter: the request reaches the upstream unmarked.
    let open = get(&format!("{url}/open/{action}")).await;
    assert_eq!(
        open.status, 200,
        "{action}: fail_open passes through: {:?}",
        open.body
    );
    assert_eq!(open.json()["path"], format!("/open/{action}"));
    assert_eq!(open.echoed_header("x-pw-count"), None, "{action}: skipped");
    assert_eq!(open.header("x-pw-path"), None, "{action}: skipped");

    for i in 0..3 {
        let r = get(&format!("{url}/open/fine{i}")).await;
        assert_eq!(r.status, 200, "{action}");
        assert_eq!(
            r.header("x-pw-path"),
            Some(format!("/open/fine{i}").as_str())
        );
    }
    (closed, took)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_trap_answers_500_and_a_fresh_instance_serves_the_next_request() {
    let (closed, _) = check_failure_policy("trap", "").await;
    let message = closed.json()["message"]
        .as_str()
        .unwrap_or_default()
        .to_string();
    assert!(message.contains("inspect"), "names the filter: {message}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_panic_message_reaches_the_log() {
    let up = Upstream::start().await;
    let weft = start(&inspect_config("", up.addr));
    let r = get(&format!("{}/closed/trap", weft.url("public"))).await;
    assert_eq!(r.status, 500);
    // The SDK's panic hook logs the panic through proxy_log before the trap.
    tokio::task::block_in_place(|| weft.wait_for_log("pw-inspect: trap requested by the path", 1));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_filter_looping_in_a_header_callback_is_stopped_at_its_deadline() {
    let (closed, took) = check_failure_policy("loop", ", deadline_ms: 50").await;
    assert!(
        took >= Duration::from_millis(50),
        "stopped before its deadline: {took:?}"
    );
    let message = closed.json()["message"]
        .as_str()
        .unwrap_or_default()
        .to_string();
    assert!(message.contains("deadline of 50 ms exceeded"), "{message}");
}

/// The deadline is generous so that the memory cap, not the clock, stops
/// the filter even on a loaded machine.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_filter_growing_memory_past_its_cap_is_stopped() {
    let (closed, _) = check_failure_policy("oom", ", max_memory_mib: 8, deadline_ms: 5000").await;
    let message = closed.json()["message"]
        .as_str()
        .unwrap_or_default()
        .to_string();
    assert!(
        message.contains("memory cap of 8 MiB exceeded"),
        "{message}"
    );
}

/// A config with one route running `filter` with the chain entry `entry`.
fn one_filter(filter_def: &str, entry: &str) -> String {
    format!(
        "filters:\n{filter_def}\nlisteners:\n  - name: public\n    listen: 127.0.0.1:8080\n    routes:\n      - {{ name: all, filters: [{entry}], cluster: backend }}\nclusters:\n  backend: {{ endpoints: [\"127.0.0.1:9000\"] }}\n"
    )
}

#[test]
fn a_proxy_wasm_filter_passes_validate() {
    let yaml = one_filter(
        &format!(
            "  pw-config: {{ path: {}, vm_config: vm }}",
            pw("http_config")
        ),
        "{ filter: pw-config, config: { header: x-a, value: b } }",
    );
    let (ok, out) = validate(bin(), &yaml, "weft.yaml", &[]);
    assert!(ok, "{out}");
}

#[test]
fn a_plugin_whose_configure_fails_is_named_by_validate() {
    for (def, entry) in [
        (
            format!("  inspect: {{ path: {} }}", pw("pw_inspect")),
            "{ filter: inspect, config: { reject: true } }",
        ),
        // http_config refuses an empty plugin configuration.
        (
            format!("  inspect: {{ path: {} }}", pw("http_config")),
            "{ filter: inspect }",
        ),
    ] {
        let (ok, out) = validate(bin(), &one_filter(&def, entry), "weft.yaml", &[]);
        assert!(!ok, "{entry}: {out}");
        assert!(
            out.contains("listeners[0].routes[0].filters[0]"),
            "names the chain entry: {out}"
        );
        assert!(out.contains("inspect"), "names the filter: {out}");
        assert!(
            out.contains("on_configure"),
            "says the plugin start failed: {out}"
        );
    }
}

#[test]
fn a_vm_that_traps_on_start_is_named_by_validate() {
    let def = format!(
        "  inspect: {{ path: {}, vm_config: trap }}",
        pw("pw_inspect")
    );
    let (ok, out) = validate(
        bin(),
        &one_filter(&def, "{ filter: inspect }"),
        "weft.yaml",
        &[],
    );
    assert!(!ok, "{out}");
    assert!(out.contains("filters.inspect"), "{out}");
    assert!(out.contains("on_vm_start"), "{out}");
}

#[test]
fn a_core_module_without_the_proxy_abi_export_is_refused() {
    let module = core_module_without_proxy_abi();
    let yaml = one_filter("  bad: { path: core.wasm }", "{ filter: bad }");
    let (ok, out) = validate(bin(), &yaml, "weft.yaml", &[("core.wasm", &module)]);
    assert!(!ok, "{out}");
    assert!(out.contains("filters.bad.path: "), "{out}");
    assert!(
        out.contains("proxy_abi_version_0_2_1"),
        "says what is missing: {out}"
    );
}

#[test]
fn a_module_importing_an_unknown_proxy_function_is_refused() {
    let def = format!("  odd: {{ path: {} }}", pw("unknown_import"));
    let (ok, out) = validate(
        bin(),
        &one_filter(&def, "{ filter: odd }"),
        "weft.yaml",
        &[],
    );
    assert!(!ok, "{out}");
    assert!(out.contains("filters.odd"), "{out}");
    assert!(
        out.contains("proxy_no_such_function"),
        "names the import: {out}"
    );
}

#[test]
fn proxy_wasm_keys_on_a_weft_filter_are_config_errors() {
    let yaml = one_filter(
        &format!(
            "  hdr: {{ path: {}, vm_config: x, bodies: [request] }}",
            crate::wasm("headers")
        ),
        "{ filter: hdr, config: { response: { set: { x-a: b } } } }",
    );
    let (ok, out) = validate(bin(), &yaml, "weft.yaml", &[]);
    assert!(!ok, "{out}");
    for key in ["vm_config", "bodies"] {
        assert!(
            out.contains(&format!(
                "filters.hdr.{key}: only for proxy-wasm filters: this module is a Weft filter component"
            )),
            "{key}: {out}"
        );
    }
}
