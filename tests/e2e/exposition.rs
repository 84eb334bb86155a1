//! The proxy's own metrics on `/metrics`: requests, bytes, connections,
//! filter calls, process and build info; checked by `promtool check
//! metrics`, and in OpenMetrics (parsed by `prometheus_client`'s parser)
//! when the scraper asks for it.
//!
//! `make test` sets `WEFT_REQUIRE_PROMTOOL=1` and
//! `WEFT_REQUIRE_OPENMETRICS_PARSER=1`: there a missing checker fails the
//! test; elsewhere it is skipped with a note.

use std::io::Write;
use std::process::{Command, Stdio};
use std::time::Duration;

use http::Request;
use http_body_util::Full;
use weft_test_harness::{Upstream, Weft, client, get, send};

use crate::{config, start, wasm};

const REQUESTS: usize = 24;

/// A proxy with a two-filter chain on route `chain` and none on `plain`.
async fn proxy(up: &Upstream) -> Weft {
    let filters = format!(
        "  telemetry: {{ path: {} }}\n  add-header: {{ path: {} }}",
        wasm("telemetry"),
        wasm("add_header")
    );
    let routes = "      - { name: chain, match: { path_prefix: /chain }, filters: [{ filter: add-header, config: { response: { x-b: c } } }, { filter: telemetry, config: { span_log: false } }], cluster: backend }
      - { name: plain, cluster: backend }";
    start(&format!(
        "admin: {{ listen: 127.0.0.1:0 }}\n{}",
        config(&filters, routes, up.addr)
    ))
}

/// Sends `REQUESTS` GETs through the chain and 3 POSTs with a 1000-byte
/// body to `plain`.
async fn traffic(weft: &Weft) {
    let url = weft.url("public");
    for _ in 0..REQUESTS {
        assert_eq!(get(&format!("{url}/chain/x")).await.status, 200);
    }
    let c = client(false);
    for _ in 0..3 {
        let req = Request::post(format!("{url}/plain"))
            .body(Full::from(vec![b'a'; 1000]))
            .unwrap();
        assert_eq!(send(&c, req).await.status, 200);
    }
}

/// The value of the one sample `line_start` begins (name and labels).
fn sample(text: &str, line_start: &str) -> Option<f64> {
    text.lines()
        .find_map(|l| l.strip_prefix(line_start))
        .and_then(|rest| rest.trim().parse().ok())
}

/// Scrapes until `done` holds for the text (on-done and the last body
/// bytes are counted after the response is sent), at most 10 s.
async fn scrape_until(weft: &Weft, done: impl Fn(&str) -> bool) -> String {
    let url = format!("{}/metrics", weft.url("admin"));
    let mut text = String::new();
    for _ in 0..200 {
        let r = get(&url).await;
        assert_eq!(r.status, 200);
        text = String::from_utf8_lossy(&r.body).into_owned();
        if done(&text) {
            return text;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("metrics never settled:\n{text}");
}

/// Runs `program args` with `input` on stdin: `None` when it is not
/// installed, else its exit status and output.
fn run_with_input(program: &str, args: &[&str], input: &str) -> Option<(bool, String)> {
    let mut child = match Command::new(program)
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
    {
        Ok(child) => child,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return None,
        Err(e) => panic!("cannot run {program}: {e}"),
    };
    child
        .stdin
        .take()
        .unwrap()
        .write_all(input.as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    Some((out.status.success(), text))
}

/// Whether a missing checker fails the test (`make test`) or skips it.
fn required(var: &str, what: &str) -> bool {
    if std::env::var(var).is_ok_and(|v| v == "1") {
        panic!("{what} is not installed, and {var}=1 requires it");
    }
    eprintln!("note: {what} is not installed: check skipped ({var}=1 makes it required)");
    false
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_scrape_after_traffic_through_a_chain_counts_it_and_passes_promtool() {
    let up = Upstream::start().await;
    let weft = proxy(&up).await;
    traffic(&weft).await;
    let chain_2xx =
        r#"weft_requests_total{listener="public",method="GET",route="chain",status_class="2xx"} "#;
    let text = scrape_until(&weft, |t| {
        sample(t, chain_2xx) == Some(REQUESTS as f64)
            && sample(
                t,
                r#"weft_filter_calls_total{filter="telemetry",phase="on-done"} "#,
            ) == Some(REQUESTS as f64)
    })
    .await;
    let expect = |line_start: &str, value: f64| {
        assert_eq!(
            sample(&text, line_start),
            Some(value),
            "{line_start}\n{text}"
        );
    };
    expect(
        r#"weft_requests_total{listener="public",method="POST",route="plain",status_class="2xx"} "#,
        3.0,
    );
    expect(
        r#"weft_request_duration_seconds_count{listener="public",route="chain"} "#,
        REQUESTS as f64,
    );
    expect(
        r#"weft_filter_calls_total{filter="add-header",phase="on-response-headers"} "#,
        REQUESTS as f64,
    );
    // The request bodies; the upstream echoes nothing bigger than them.
    let received = sample(
        &text,
        r#"weft_request_body_bytes_total{listener="public"} "#,
    );
    assert_eq!(received, Some(3000.0), "{text}");
    let sent = sample(
        &text,
        r#"weft_response_body_bytes_total{listener="public"} "#,
    );
    assert!(sent.is_some_and(|n| n > 0.0), "{text}");
    // The scrape's own connection is open.
    let admin = sample(&text, r#"weft_active_connections{kind="admin"} "#);
    assert!(admin.is_some_and(|n| n >= 1.0), "{text}");
    expect("weft_snapshot_version ", 1.0);
    // Per endpoint, from the cluster's own counters.
    let endpoint = format!(r#"cluster="backend",endpoint="{}""#, up.addr);
    expect(
        &format!("weft_upstream_requests_total{{{endpoint}}} "),
        (REQUESTS + 3) as f64,
    );
    expect(
        &format!("weft_upstream_responses_5xx_total{{{endpoint}}} "),
        0.0,
    );
    expect(
        &format!("weft_upstream_endpoint_healthy{{{endpoint}}} "),
        1.0,
    );
    expect(&format!("weft_upstream_timeouts_total{{{endpoint}}} "), 0.0);
    assert!(
        text.contains(&format!(
            "weft_build_info{{contract_versions=\"0.4.0\",version=\"{}\",wasmtime_version=\"48.0.8\"}} 1\n",
            env!("CARGO_PKG_VERSION")
        )),
        "{text}"
    );
    let rss = sample(&text, "process_resident_memory_bytes ");
    assert!(rss.is_some_and(|n| n > 1e6), "{text}");
    assert!(
        sample(&text, "process_open_fds ").is_some_and(|n| n > 3.0),
        "{text}"
    );
    assert!(
        text.contains("# HELP weft_requests_total "),
        "families have help:\n{text}"
    );
    // The telemetry filter's own families, beside the proxy's.
    assert!(
        text.contains("# TYPE weft_user_http_requests_total counter\n"),
        "{text}"
    );

    let Some((ok, out)) =
        tokio::task::block_in_place(|| run_with_input("promtool", &["check", "metrics"], &text))
    else {
        required("WEFT_REQUIRE_PROMTOOL", "promtool");
        return;
    };
    assert!(
        ok,
        "promtool check metrics failed:\n{out}\n--- the scrape:\n{text}"
    );
}

/// Parses OpenMetrics text with the reference parser and prints each
/// family's name and type.
const PARSE_OPENMETRICS: &str = "
import sys
from prometheus_client.openmetrics.parser import text_string_to_metric_families
for f in text_string_to_metric_families(sys.stdin.read()):
    print(f.name, f.type, len(f.samples))
";

/// Debian's python3, where its `python3-prometheus-client` is (a `python3`
/// earlier in `PATH` may be another), else whichever `python3` there is.
fn python() -> &'static str {
    if std::path::Path::new("/usr/bin/python3").exists() {
        "/usr/bin/python3"
    } else {
        "python3"
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn openmetrics_is_served_when_the_scraper_asks_for_it() {
    let up = Upstream::start().await;
    let weft = proxy(&up).await;
    traffic(&weft).await;
    let req = Request::get(format!("{}/metrics", weft.url("admin")))
        .header(
            "accept",
            "application/openmetrics-text;version=1.0.0,text/plain;version=0.0.4;q=0.5",
        )
        .body(Full::default())
        .unwrap();
    let r = send(&client(false), req).await;
    assert_eq!(r.status, 200);
    assert_eq!(
        r.headers["content-type"],
        "application/openmetrics-text; version=1.0.0; charset=utf-8"
    );
    let text = String::from_utf8_lossy(&r.body).into_owned();
    assert!(text.ends_with("\n# EOF\n"), "{text}");
    assert!(text.contains("# TYPE weft_requests counter\n"), "{text}");
    assert!(
        text.contains(r#"weft_requests_total{listener="public",method="GET",route="chain",status_class="2xx"} "#),
        "{text}"
    );
    assert!(!text.contains("# TYPE weft_requests_total"), "{text}");

    // Plain Prometheus text otherwise.
    let plain = get(&format!("{}/metrics", weft.url("admin"))).await;
    assert_eq!(
        plain.headers["content-type"],
        "text/plain; version=0.0.4; charset=utf-8"
    );
    assert!(!String::from_utf8_lossy(&plain.body).contains("# EOF"));

    let Some((ok, out)) =
        tokio::task::block_in_place(|| run_with_input(python(), &["-c", PARSE_OPENMETRICS], &text))
    else {
        required("WEFT_REQUIRE_OPENMETRICS_PARSER", "python3");
        return;
    };
    if !ok && out.contains("No module named 'prometheus_client'") {
        required(
            "WEFT_REQUIRE_OPENMETRICS_PARSER",
            "python3-prometheus-client",
        );
        return;
    }
    assert!(
        ok,
        "the OpenMetrics parser refused the scrape:\n{out}\n--- the scrape:\n{text}"
    );
    assert!(out.contains("weft_requests counter"), "{out}");
    assert!(
        out.contains("weft_filter_call_duration_seconds histogram"),
        "{out}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_filters_view_shows_calls_and_time_per_phase() {
    let up = Upstream::start().await;
    let weft = proxy(&up).await;
    traffic(&weft).await;
    let url = format!("{}/filters", weft.url("admin"));
    // on-done runs after the response: poll until all are counted.
    let mut view = serde_json::Value::Null;
    for _ in 0..200 {
        let r = get(&url).await;
        assert_eq!(r.status, 200);
        view = serde_json::from_slice(&r.body).unwrap();
        let done = view["filters"]
            .as_array()
            .unwrap()
            .iter()
            .find(|f| f["name"] == "telemetry")
            .and_then(|f| f["phases"].as_array())
            .and_then(|p| p.iter().find(|p| p["phase"] == "on-done"))
            .is_some_and(|p| p["calls"] == REQUESTS);
        if done {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let filter = |name: &str| {
        view["filters"]
            .as_array()
            .unwrap()
            .iter()
            .find(|f| f["name"] == name)
            .unwrap_or_else(|| panic!("{name} in {view}"))
            .clone()
    };
    let add_header = filter("add-header");
    let phases = add_header["phases"].as_array().unwrap();
    let names: Vec<&str> = phases
        .iter()
        .map(|p| p["phase"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["on-response-headers"], "{add_header}");
    assert_eq!(phases[0]["calls"], REQUESTS, "{add_header}");
    // One call in 8 of each filter and phase is timed: 3 of the 24.
    let p50 = phases[0]["p50_us"]
        .as_f64()
        .unwrap_or_else(|| panic!("{add_header}"));
    let p99 = phases[0]["p99_us"].as_f64().unwrap();
    assert!(p50 > 0.0 && p50 <= p99 && p99 < 100_000.0, "{add_header}");
    let telemetry = filter("telemetry");
    let done = telemetry["phases"]
        .as_array()
        .unwrap()
        .iter()
        .find(|p| p["phase"] == "on-done")
        .unwrap_or_else(|| panic!("{telemetry}"))
        .clone();
    assert_eq!(done["calls"], REQUESTS, "{telemetry}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_upstream_timeout_is_counted_for_its_endpoint() {
    let up = Upstream::start().await;
    let routes = "      - { name: slow, timeout_ms: 200, cluster: backend }";
    let weft = start(&format!(
        "admin: {{ listen: 127.0.0.1:0 }}\n{}",
        config("  {}", routes, up.addr)
    ));
    let r = get(&format!("{}/delay/2000", weft.url("public"))).await;
    assert_eq!(r.status, 504);
    let endpoint = format!(r#"cluster="backend",endpoint="{}""#, up.addr);
    let timeouts = format!("weft_upstream_timeouts_total{{{endpoint}}} ");
    let requests = format!("weft_upstream_requests_total{{{endpoint}}} ");
    let text = scrape_until(&weft, |t| sample(t, &timeouts) == Some(1.0)).await;
    assert_eq!(sample(&text, &requests), Some(1.0), "{text}");
    assert_eq!(
        sample(
            &text,
            &format!("weft_upstream_responses_5xx_total{{{endpoint}}} ")
        ),
        Some(0.0),
        "a timeout is not a 5xx from the endpoint:\n{text}"
    );
}
