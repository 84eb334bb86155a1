//! The filter's phases, called natively through `weft_sdk::testing`.

use std::time::Duration;

use serde_json::Value;
use weft_sdk::log::Level;
use weft_sdk::testing::{TestHost, TestRequest, TestResponse};
use weft_sdk::{Action, Phases};

use crate::{DURATION_METRIC, REQUESTS_METRIC, Telemetry};

const PARENT: &str = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01";

#[test]
fn a_request_is_counted_timed_traced_and_logged() {
    let host = TestHost::new();
    let mut filter = host
        .init::<Telemetry>(
            r#"{"trace_id_header": "x-trace-id",
                "access_log": {"fields": ["request_id", "method", "path", "status", "duration_ms", "trace_id"]}}"#,
        )
        .unwrap();
    assert_eq!(filter.phases(), Phases::REQUEST_HEADERS | Phases::DONE);
    let mut exchange = filter.request(
        TestRequest::get("/orders?page=2")
            .header("traceparent", PARENT)
            .route("orders")
            .request_id("r-1"),
    );
    assert_eq!(exchange.on_request_headers(), Action::Continue);
    let upstream = exchange.request();
    // The trace goes on with a new span id for this hop.
    let traceparent = upstream.header("traceparent").unwrap().to_string();
    assert!(
        traceparent.starts_with("00-0af7651916cd43dd8448eb211c80319c-"),
        "{traceparent}"
    );
    assert_ne!(traceparent, PARENT);
    assert_eq!(
        upstream.header("x-trace-id"),
        Some("0af7651916cd43dd8448eb211c80319c")
    );

    exchange.advance(Duration::from_millis(12));
    exchange.upstream(TestResponse::new(503));
    exchange.on_done();

    let labels = [
        ("route", "orders"),
        ("method", "GET"),
        ("status_class", "5xx"),
    ];
    assert_eq!(host.counter(REQUESTS_METRIC, &labels), 1);
    assert_eq!(host.histogram(DURATION_METRIC, &labels), [0.012]);

    let lines: Vec<Value> = host
        .logs()
        .iter()
        .filter(|line| line.level == Level::Info)
        .map(|line| serde_json::from_str(&line.message).unwrap())
        .collect();
    assert_eq!(lines.len(), 2, "a span line and an access line: {lines:?}");
    assert_eq!(lines[0]["type"], "span");
    assert_eq!(lines[0]["parent_span_id"], "b7ad6b7169203331");
    assert_eq!(lines[0]["duration_ms"], 12.0);
    assert_eq!(
        lines[1],
        serde_json::json!({"type": "access", "request_id": "r-1", "method": "GET",
            "path": "/orders?page=2", "status": 503, "duration_ms": 12.0,
            "trace_id": "0af7651916cd43dd8448eb211c80319c"})
    );
}

#[test]
fn without_trace_only_on_done_runs_and_nothing_is_logged_below_the_level() {
    let host = TestHost::new();
    host.set_log_level(Level::Warn);
    let mut filter = host
        .init::<Telemetry>(r#"{"trace": false, "access_log": {}}"#)
        .unwrap();
    assert_eq!(filter.phases(), Phases::DONE);
    let mut exchange = filter.request(TestRequest::new("PROPFIND", "/"));
    exchange.local_response(TestResponse::new(404));
    exchange.on_done();
    let labels = [
        ("route", "route"),
        ("method", "OTHER"),
        ("status_class", "4xx"),
    ];
    assert_eq!(host.counter(REQUESTS_METRIC, &labels), 1);
    assert!(host.logs().is_empty());
}

#[test]
fn an_invalid_traceparent_starts_a_new_trace_without_its_tracestate() {
    let host = TestHost::new();
    let mut filter = host.init::<Telemetry>("null").unwrap();
    let mut exchange = filter.request(
        TestRequest::get("/")
            .header("traceparent", "garbage")
            .header("tracestate", "vendor=1"),
    );
    exchange.on_request_headers();
    let upstream = exchange.request();
    assert_eq!(upstream.header("tracestate"), None);
    assert_eq!(upstream.header("traceparent").map(str::len), Some(55));
    assert!(host.logged(
        Level::Debug,
        "starting a new trace: invalid incoming traceparent"
    ));
}

#[test]
fn an_access_line_has_every_field_in_order() {
    let host = TestHost::new();
    host.set_unix_nanos(1_767_225_600_123_456_789);
    let fields: Vec<&str> = crate::config::Field::ALL.iter().map(|f| f.name()).collect();
    let config = serde_json::json!({"span_log": false, "access_log": {"fields": fields}});
    let mut filter = host.init_json::<Telemetry>(config).unwrap();
    let mut exchange = filter.request(
        TestRequest::get("/items?q=%22x%22")
            .authority("example.test:8080")
            .header(
                "traceparent",
                &format!("00-{}-{}-01", "ab".repeat(16), "02".repeat(8)),
            )
            .header("user-agent", "curl/8 \"x\" \\")
            .header("content-length", "42")
            .peer("127.0.0.1:5555")
            .listener("public")
            .route("api")
            .cluster("backend")
            .request_id("req-1"),
    );
    exchange.on_request_headers();
    let span_id = exchange.request().header("traceparent").unwrap()[36..52].to_string();
    exchange.advance(Duration::from_nanos(12_345_678));
    // Two attempts: the first failed, the second answered.
    exchange.upstream(TestResponse::new(502).failure("reset"));
    exchange.upstream(TestResponse::new(503).header("content-length", "not a number"));
    exchange.on_done();

    let logs = host.logs();
    let line = &logs
        .iter()
        .find(|l| l.level == Level::Info)
        .unwrap()
        .message;
    // The keys are in the configured order, after "type".
    let mut at = line.find("\"type\":").unwrap();
    for field in &fields {
        let next = line
            .find(&format!("\"{field}\":"))
            .unwrap_or_else(|| panic!("{field} missing: {line}"));
        assert!(next > at, "{field} out of order: {line}");
        at = next;
    }
    let value: Value = serde_json::from_str(line).unwrap();
    let expected = serde_json::json!({
        "type": "access",
        "time": "2026-01-01T00:00:00.123Z",
        "start_unix_ms": 1767225600123u64,
        "duration_ms": 12.345,
        "request_id": "req-1",
        "method": "GET",
        "path": "/items?q=%22x%22",
        "host": "example.test:8080",
        "status": 503,
        "peer": "127.0.0.1:5555",
        "listener": "public",
        "route": "api",
        "cluster": "backend",
        "upstream": "127.0.0.1:9000",
        "attempts": 2,
        "upstream_failure": null,
        "user_agent": "curl/8 \"x\" \\",
        "referer": null,
        "request_content_length": 42,
        "response_content_length": null,
        "traceparent": format!("00-{}-{span_id}-01", "ab".repeat(16)),
        "trace_id": "ab".repeat(16),
        "span_id": span_id,
        "parent_span_id": "02".repeat(8),
    });
    assert_eq!(value, expected, "{line}");
}
