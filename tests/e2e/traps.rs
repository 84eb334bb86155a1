//! Trap reports: a filter that panics deep in a helper is named with that
//! helper — in the log of `weft run`, in the 500's details when the route
//! asks for them (and not otherwise), and in `weft filter test`'s output.

use std::time::Duration;

use weft_test_harness::process::temp_dir;
use weft_test_harness::{Upstream, get};

use crate::filter_test::filter_test;
use crate::{config, start, wasm};

/// The helper `misbehave-filter` panics in with `do: panic_deep`.
const HELPER: &str = "misbehave_filter::misbehaviour::nested::parse_the_doomed_header";
const PANIC: &str = "misbehave-filter: panicked 3 calls deep";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_deep_panic_is_reported_with_its_function_in_the_log_and_the_500() {
    let up = Upstream::start().await;
    let filters = format!("  misbehave: {{ path: {} }}", wasm("misbehave_filter"));
    let routes = "      - { name: details, match: { path_prefix: /details/ }, error_details: true, filters: [{ filter: misbehave, config: { do: panic_deep } }], cluster: backend }
      - { name: plain, filters: [{ filter: misbehave, config: { do: panic_deep } }], cluster: backend }";
    let weft = start(&config(&filters, routes, up.addr));
    let url = weft.url("public");

    let r = get(&format!("{url}/details/x")).await;
    assert_eq!(r.status, 500);
    let body = r.json();
    assert_eq!(body["error"], "filter_failed");
    let details = &body["details"];
    assert_eq!(details["filter"], "misbehave");
    assert_eq!(details["phase"], "on-request-headers");
    assert_eq!(details["kind"], "trap");
    let message = details["message"].as_str().unwrap();
    assert!(message.contains(PANIC), "{message}");
    let frames: Vec<&str> = details["backtrace"]
        .as_array()
        .unwrap()
        .iter()
        .map(|f| f.as_str().unwrap())
        .collect();
    // The panic machinery of std is skipped: the helper is on top.
    assert!(frames[0].starts_with(HELPER), "{frames:?}");
    assert!(
        frames
            .iter()
            .any(|f| f.starts_with("misbehave_filter::misbehaviour::nested::check_the_headers")),
        "{frames:?}"
    );
    assert!(frames.len() <= 16, "{frames:?}");
    assert!(details["frames_skipped"].as_u64().unwrap() > 0, "{details}");

    // Without `error_details`, the 500 has the message only.
    let r = get(&format!("{url}/plain")).await;
    assert_eq!(r.status, 500);
    let body = r.json();
    assert!(body.get("details").is_none(), "{body}");
    assert!(body["message"].as_str().unwrap().contains(PANIC), "{body}");

    // The log names the filter, the phase, the panic and the helper.
    tokio::task::block_in_place(|| weft.wait_for_log("filter failed", 2));
    let log = weft.log_text();
    let line = log
        .lines()
        .find(|l| l.contains("filter failed") && l.contains("route=\"plain\""))
        .unwrap_or_else(|| panic!("no failure line in\n{log}"));
    assert!(line.contains("filter=\"misbehave\""), "{line}");
    assert!(line.contains("phase=\"on-request-headers\""), "{line}");
    assert!(line.contains(PANIC), "{line}");
    assert!(line.contains("backtrace=("), "{line}");
    assert!(line.contains(&format!("#0 {HELPER}")), "{line}");
}

#[test]
fn weft_filter_test_prints_the_trap_report_of_a_failing_case() {
    let dir = temp_dir("traps");
    let config = dir.join("config.json");
    std::fs::write(
        &config,
        r#"{ "do": "panic_deep", "when_header": "x-boom" }"#,
    )
    .unwrap();
    let cases = dir.join("cases.yaml");
    std::fs::write(
        &cases,
        format!(
            r#"cases:
  - name: spared
    request: {{ path: /, headers: {{ }} }}
    expect: {{ status: 200, upstream_headers: {{ x-misbehave: spared }} }}
  - name: an expected failure
    request: {{ path: /, headers: {{ x-boom: "1" }} }}
    expect: {{ failure: "{HELPER}" }}
  - name: boom
    request: {{ path: /, headers: {{ x-boom: "1" }} }}
    expect: {{ status: 200 }}
"#
        ),
    )
    .unwrap();
    let started = std::time::Instant::now();
    let (code, stdout, output) = filter_test(&wasm("misbehave_filter"), Some(&config), &cases);
    assert!(started.elapsed() < Duration::from_secs(60));
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(code, 1, "{stdout}\n{stderr}");
    let lines: Vec<&str> = stdout.lines().collect();
    assert_eq!(lines[0], "ok  spared", "{stdout}");
    assert_eq!(lines[1], "ok  an expected failure", "{stdout}");
    assert!(
        lines[2].starts_with(
            "FAIL boom: expected status 200, got 500 because the filter failed: filter \"misbehave_filter\" failed in on-request-headers: trapped: filter panicked at"
        ),
        "{stdout}"
    );
    assert!(lines[2].contains(PANIC), "{stdout}");
    assert!(lines[3].starts_with("    backtrace ("), "{stdout}");
    assert_eq!(lines[4], format!("      #0 {HELPER}"), "{stdout}");
    assert_eq!(lines.last(), Some(&"2 passed, 1 failed"), "{stdout}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_module_with_debug_info_reports_file_and_line() {
    let up = Upstream::start().await;
    let debug = std::path::Path::new(weft_test_harness::filters::WASM_DEBUG_DIR)
        .join("misbehave_filter.wasm");
    let filters = format!(
        "  misbehave: {{ path: {}, deadline_ms: 5000 }}",
        debug.display()
    );
    let routes = "      - { name: details, error_details: true, filters: [{ filter: misbehave, config: { do: panic_deep } }], cluster: backend }";
    let weft = start(&config(&filters, routes, up.addr));
    let r = get(&format!("{}/x", weft.url("public"))).await;
    assert_eq!(r.status, 500);
    let body = r.json();
    let top = body["details"]["backtrace"][0].as_str().unwrap_or_default();
    assert!(top.starts_with(HELPER), "{body}");
    assert!(
        top.contains("misbehaviour.rs:"),
        "the top frame names its file and line: {body}"
    );
}
