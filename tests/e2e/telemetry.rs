//! The `telemetry` filter: request metrics on `/metrics`, W3C Trace Context
//! propagation to the upstream, span and access log lines in the proxy's
//! log, and its config checks.

use std::collections::BTreeMap;
use std::time::Duration;

use http::{Method, Request};
use http_body_util::Full;
use serde_json::Value;
use weft_test_harness::process::validate;
use weft_test_harness::{Reply, Upstream, Weft, client, get, send};

use crate::{bin, config, start, wasm};

/// Polls of `/metrics` or the log before giving up; with `POLL_PAUSE`
/// between them, a generous bound (on_done runs after the response is sent).
const POLLS: usize = 600;
const POLL_PAUSE: Duration = Duration::from_millis(50);

const TRACE_ID: &str = "4bf92f3577b34da6a3ce929d0e0e4736";
const PARENT_ID: &str = "00f067aa0ba902b7";
const TRACESTATE: &str = "rojo=00f067aa0ba902b7,congo=t61rcWkgMzE";

fn filters() -> String {
    format!("  telemetry: {{ path: {} }}", wasm("telemetry"))
}

/// A config with the admin API and the given routes.
fn config_with_admin(routes: &str, up: &Upstream) -> String {
    format!(
        "admin: {{ listen: 127.0.0.1:0 }}\n{}",
        config(&filters(), routes, up.addr)
    )
}

/// Sends `method url` with the given request headers.
async fn send_with(method: Method, url: &str, headers: &[(&str, &str)]) -> Reply {
    let mut req = Request::builder().method(method).uri(url);
    for (name, value) in headers {
        req = req.header(*name, *value);
    }
    send(&client(false), req.body(Full::default()).unwrap()).await
}

async fn get_with(url: &str, headers: &[(&str, &str)]) -> Reply {
    send_with(Method::GET, url, headers).await
}

/// The series of metric `name` in a Prometheus text: labels → value.
fn series(metrics: &str, name: &str) -> BTreeMap<String, String> {
    metrics
        .lines()
        .filter_map(|line| line.strip_prefix(name)?.strip_prefix('{'))
        .filter_map(|rest| {
            let (labels, value) = rest.rsplit_once("} ")?;
            Some((labels.to_string(), value.to_string()))
        })
        .collect()
}

/// The messages of filters' lines in the proxy's log (`msg="…"`, last on
/// the line, quoted as Rust's `Debug` quotes), unquoted, in order.
fn filter_messages(weft: &Weft) -> Vec<String> {
    weft.log_text()
        .lines()
        .filter(|line| line.contains(" weft::filter: "))
        .filter_map(|line| {
            let quoted = &line[line.find(" msg=\"")? + 6..];
            let mut message = String::new();
            let mut chars = quoted.chars();
            while let Some(c) = chars.next() {
                match c {
                    '"' => return Some(message),
                    '\\' => match chars.next()? {
                        'n' => message.push('\n'),
                        'r' => message.push('\r'),
                        't' => message.push('\t'),
                        '0' => message.push('\0'),
                        'u' => {
                            let hex: String =
                                chars.by_ref().skip(1).take_while(|&c| c != '}').collect();
                            message.push(char::from_u32(u32::from_str_radix(&hex, 16).ok()?)?);
                        }
                        other => message.push(other),
                    },
                    c => message.push(c),
                }
            }
            panic!("an unterminated message: {line}")
        })
        .collect()
}

/// The JSON log lines of `kind` (`"span"`, `"access"`) in the proxy's log,
/// in order.
fn json_lines(weft: &Weft, kind: &str) -> Vec<Value> {
    let marker = format!("{{\"type\":\"{kind}\"");
    filter_messages(weft)
        .into_iter()
        .filter_map(|line| {
            let start = line.find(&marker)?;
            // The JSON object, then whatever the log format appends.
            let mut values =
                serde_json::Deserializer::from_str(&line[start..]).into_iter::<Value>();
            Some(
                values
                    .next()
                    .expect("a JSON value")
                    .unwrap_or_else(|e| panic!("not JSON ({e}): {line}")),
            )
        })
        .collect()
}

/// Waits (bounded) until the log holds at least `n` lines of `kind`, then
/// returns them all.
async fn wait_json_lines(weft: &Weft, kind: &str, n: usize) -> Vec<Value> {
    for _ in 0..POLLS {
        let lines = json_lines(weft, kind);
        if lines.len() >= n {
            return lines;
        }
        tokio::time::sleep(POLL_PAUSE).await;
    }
    panic!(
        "fewer than {n} {kind} lines in the log:\n{}",
        weft.log_text()
    );
}

/// Checks that `value` is a version-00 traceparent; returns (trace id,
/// span id, flags).
fn parse_traceparent(value: &str) -> (String, String, String) {
    let parts: Vec<&str> = value.split('-').collect();
    assert_eq!(parts.len(), 4, "{value}");
    assert_eq!(parts[0], "00", "{value}");
    for (part, len) in parts.iter().zip([2, 32, 16, 2]) {
        assert_eq!(part.len(), len, "{value}");
        assert!(
            part.bytes()
                .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b)),
            "not lower-case hex: {value}"
        );
    }
    assert_ne!(parts[1], "0".repeat(32), "{value}");
    assert_ne!(parts[2], "0".repeat(16), "{value}");
    (
        parts[1].to_string(),
        parts[2].to_string(),
        parts[3].to_string(),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_count_requests_by_route_method_and_status_class() {
    let up = Upstream::start().await;
    let routes = r#"      - name: alpha
        match: { headers: [{ name: x-route, exact: alpha }] }
        filters: [{ filter: telemetry }]
        cluster: backend
      - name: beta
        filters: [{ filter: telemetry, config: { span_log: false } }]
        cluster: backend"#;
    let weft = start(&config_with_admin(routes, &up));
    let url = weft.url("public");
    let alpha = [("x-route", "alpha")];

    let mut sent = 0;
    for (method, path, headers, status) in [
        (Method::GET, "/status/200", &alpha[..], 200),
        (Method::GET, "/x", &alpha[..], 200),
        (Method::GET, "/status/204", &alpha[..], 204),
        (Method::GET, "/status/404", &alpha[..], 404),
        (Method::GET, "/status/429", &alpha[..], 429),
        (Method::POST, "/status/503", &alpha[..], 503),
        (Method::GET, "/status/200", &[][..], 200),
        (Method::GET, "/y", &[][..], 200),
        (Method::GET, "/status/201", &[][..], 201),
        (Method::GET, "/status/302", &[][..], 302),
        (Method::GET, "/status/500", &[][..], 500),
        (Method::from_bytes(b"PURGE").unwrap(), "/z", &[][..], 200),
    ] {
        let r = send_with(method.clone(), &format!("{url}{path}"), headers).await;
        assert_eq!(r.status, status, "{method} {path}: {:?}", r.body);
        sent += 1;
    }
    assert_eq!(up.hits(), sent);

    let expected: BTreeMap<String, String> = [
        (
            r#"filter="telemetry",route="alpha",method="GET",status_class="2xx""#,
            "3",
        ),
        (
            r#"filter="telemetry",route="alpha",method="GET",status_class="4xx""#,
            "2",
        ),
        (
            r#"filter="telemetry",route="alpha",method="POST",status_class="5xx""#,
            "1",
        ),
        (
            r#"filter="telemetry",route="beta",method="GET",status_class="2xx""#,
            "3",
        ),
        (
            r#"filter="telemetry",route="beta",method="GET",status_class="3xx""#,
            "1",
        ),
        (
            r#"filter="telemetry",route="beta",method="GET",status_class="5xx""#,
            "1",
        ),
        (
            r#"filter="telemetry",route="beta",method="OTHER",status_class="2xx""#,
            "1",
        ),
    ]
    .into_iter()
    .map(|(labels, n)| (labels.to_string(), n.to_string()))
    .collect();

    // on_done runs once the response has been sent: poll until every
    // request is counted (or give up), then compare exactly.
    let admin = weft.url("admin");
    let mut text = String::new();
    for _ in 0..POLLS {
        let metrics = get(&format!("{admin}/metrics")).await;
        assert_eq!(metrics.status, 200);
        text = String::from_utf8_lossy(&metrics.body).into_owned();
        let counted: u64 = series(&text, "weft_user_http_requests_total")
            .values()
            .map(|v| v.parse::<u64>().unwrap())
            .sum();
        let observed: u64 = series(&text, "weft_user_http_request_duration_seconds_count")
            .values()
            .map(|v| v.parse::<u64>().unwrap())
            .sum();
        if counted >= sent as u64 && observed >= sent as u64 {
            break;
        }
        tokio::time::sleep(POLL_PAUSE).await;
    }

    assert!(
        text.contains("# TYPE weft_user_http_requests_total counter\n"),
        "{text}"
    );
    assert!(
        text.contains("# TYPE weft_user_http_request_duration_seconds histogram\n"),
        "{text}"
    );
    assert_eq!(
        series(&text, "weft_user_http_requests_total"),
        expected,
        "{text}"
    );
    // The histogram has one observation per request, in the same series.
    assert_eq!(
        series(&text, "weft_user_http_request_duration_seconds_count"),
        expected,
        "{text}"
    );
    let infinite: BTreeMap<String, String> =
        series(&text, "weft_user_http_request_duration_seconds_bucket")
            .into_iter()
            .filter_map(|(labels, n)| Some((labels.strip_suffix(r#",le="+Inf""#)?.to_string(), n)))
            .collect();
    assert_eq!(infinite, expected, "{text}");
    for (labels, sum) in series(&text, "weft_user_http_request_duration_seconds_sum") {
        let sum: f64 = sum.parse().unwrap();
        assert!(sum > 0.0 && sum < 60.0, "{labels}: sum {sum}");
    }
}

/// Routes for the trace tests: `traced` exposes the ids in headers and logs
/// spans, `unsampled` starts unsampled traces.
fn trace_routes() -> String {
    r#"      - name: unsampled
        match: { path_prefix: /unsampled/ }
        filters: [{ filter: telemetry, config: { sample_percent: 0, access_log: { fields: [request_id, traceparent] } } }]
        cluster: backend
      - name: traced
        filters:
          - filter: telemetry
            config:
              trace_id_header: x-trace-id
              span_id_header: X-Span-Id
              access_log: { fields: [request_id, traceparent] }
        cluster: backend"#
        .to_string()
}

/// The span line of the request whose trace id is `trace_id`, if any.
fn span_of(spans: &[Value], trace_id: &str) -> Vec<Value> {
    spans
        .iter()
        .filter(|s| s["trace_id"] == trace_id)
        .cloned()
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_incoming_traceparent_is_continued_with_a_new_span_and_logged() {
    let up = Upstream::start().await;
    let weft = start(&config(&filters(), &trace_routes(), up.addr));
    let url = weft.url("public");
    let incoming = format!("00-{TRACE_ID}-{PARENT_ID}-01");

    let r = get_with(
        &format!("{url}/status/201"),
        &[
            ("traceparent", &incoming),
            ("tracestate", TRACESTATE),
            ("x-trace-id", "spoofed"),
            ("x-request-id", "continued-1"),
        ],
    )
    .await;
    assert_eq!(r.status, 201, "{:?}", r.body);
    let upstream_traceparent = r
        .echoed_header("traceparent")
        .expect("traceparent upstream");
    let (trace_id, span_id, flags) = parse_traceparent(&upstream_traceparent);
    assert_eq!(trace_id, TRACE_ID, "the trace goes on");
    assert_ne!(span_id, PARENT_ID, "this hop has its own span");
    assert_eq!(flags, "01", "the caller's sampled flag is kept");
    assert_eq!(
        r.echoed_header("tracestate").as_deref(),
        Some(TRACESTATE),
        "tracestate passes through untouched"
    );
    assert_eq!(
        r.echoed_header("x-trace-id").as_deref(),
        Some(TRACE_ID),
        "the configured header carries the trace id (the client's value is replaced)"
    );
    assert_eq!(r.echoed_header("x-span-id"), Some(span_id.clone()));

    // The same caller span, unsampled: the flag stays 00 and no span line is
    // written for it.
    let unsampled = format!("00-{TRACE_ID}-{PARENT_ID}-00");
    let r = get_with(
        &format!("{url}/x"),
        &[
            ("traceparent", &unsampled),
            ("x-request-id", "continued-unsampled"),
        ],
    )
    .await;
    assert_eq!(r.status, 200, "{:?}", r.body);
    let (trace_id, unsampled_span, flags) =
        parse_traceparent(&r.echoed_header("traceparent").unwrap());
    assert_eq!(trace_id, TRACE_ID);
    assert_ne!(unsampled_span, PARENT_ID);
    assert_ne!(unsampled_span, span_id);
    assert_eq!(flags, "00");

    // A caller's sampled flag wins over the route's sample_percent of 0.
    let r = get_with(
        &format!("{url}/unsampled/x"),
        &[("traceparent", &incoming), ("x-request-id", "continued-2")],
    )
    .await;
    let (trace_id, third_span, flags) = parse_traceparent(&r.echoed_header("traceparent").unwrap());
    assert_eq!((trace_id.as_str(), flags.as_str()), (TRACE_ID, "01"));

    // Access lines are written after span lines in the same on_done: once
    // all three are there, so are the spans.
    let access = wait_json_lines(&weft, "access", 3).await;
    assert_eq!(access.len(), 3, "{access:?}");
    let spans = json_lines(&weft, "span");
    assert_eq!(spans.len(), 2, "one per sampled request: {spans:?}");
    // on_done runs after each response is sent: find the lines by span id
    // rather than by order.
    let by_span = |id: &str| {
        spans
            .iter()
            .find(|s| s["span_id"] == id)
            .unwrap_or_else(|| panic!("no span line for {id}: {spans:?}"))
    };
    let span = by_span(&span_id);
    assert_eq!(span["trace_id"], TRACE_ID, "{span}");
    assert_eq!(span["span_id"], span_id.as_str(), "{span}");
    assert_eq!(span["parent_span_id"], PARENT_ID, "{span}");
    assert_eq!(span["route"], "traced", "{span}");
    assert_eq!(span["method"], "GET", "{span}");
    assert_eq!(span["status"], 201, "{span}");
    assert!(span["duration_ms"].as_f64().unwrap() >= 0.0, "{span}");
    let start_ms = span["start_unix_ms"].as_u64().unwrap();
    let now_ms = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as u64;
    assert!(
        start_ms <= now_ms && now_ms - start_ms < 3_600_000,
        "{span}"
    );
    let third = by_span(&third_span);
    assert_eq!(third["route"], "unsampled", "{third}");
    assert_eq!(third["parent_span_id"], PARENT_ID, "{third}");
    assert!(
        spans
            .iter()
            .all(|s| s["span_id"] != unsampled_span.as_str()),
        "an unsampled request has no span line: {spans:?}"
    );
    // The span line is tagged with the filter and the request in the log.
    let log = weft.log_text();
    let span_log_line = log
        .lines()
        .find(|l| l.contains(&format!(r#"\"span_id\":\"{span_id}\""#)))
        .unwrap();
    assert!(span_log_line.contains("INFO"), "{span_log_line}");
    assert!(
        span_log_line.contains(r#" weft::filter: filter="telemetry" request_id="#),
        "{span_log_line}"
    );
    assert!(span_log_line.contains("continued-1"), "{span_log_line}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_missing_or_invalid_traceparent_starts_a_new_trace() {
    let up = Upstream::start().await;
    let weft = start(&config(&filters(), &trace_routes(), up.addr));
    let url = weft.url("public");

    // None: a fresh, sampled trace; a lone tracestate is dropped.
    let r = get_with(&format!("{url}/x"), &[("tracestate", TRACESTATE)]).await;
    assert_eq!(r.status, 200, "{:?}", r.body);
    let (first_trace, first_span, flags) =
        parse_traceparent(&r.echoed_header("traceparent").unwrap());
    assert_eq!(flags, "01", "sample_percent defaults to 100");
    assert_eq!(r.echoed_header("tracestate"), None);
    assert_eq!(r.echoed_header("x-trace-id"), Some(first_trace.clone()));
    assert_eq!(r.echoed_header("x-span-id"), Some(first_span.clone()));

    let r = get(&format!("{url}/x")).await;
    let (second_trace, _, _) = parse_traceparent(&r.echoed_header("traceparent").unwrap());
    assert_ne!(second_trace, first_trace, "every new trace has its own id");

    // Invalid ones are replaced by a new trace, and their tracestate dropped.
    let invalid = [
        format!("00-{}-{PARENT_ID}-01", TRACE_ID.to_uppercase()),
        format!("00-{}-{PARENT_ID}-01", "0".repeat(32)),
        format!("00-{TRACE_ID}-{}-01", "0".repeat(16)),
        format!("ff-{TRACE_ID}-{PARENT_ID}-01"),
        format!("00-{TRACE_ID}-{PARENT_ID}-01-extra"),
        format!("00-{TRACE_ID}-{PARENT_ID}"),
        "garbage".to_string(),
    ];
    let mut new_traces = vec![first_trace, second_trace];
    for bad in &invalid {
        let r = get_with(
            &format!("{url}/x"),
            &[("traceparent", bad), ("tracestate", TRACESTATE)],
        )
        .await;
        assert_eq!(r.status, 200, "{bad}: {:?}", r.body);
        let upstream = r.echoed_header("traceparent").unwrap();
        assert_ne!(&upstream, bad);
        let (trace_id, span_id, flags) = parse_traceparent(&upstream);
        assert_ne!(trace_id, TRACE_ID, "{bad} was used");
        assert_ne!(span_id, PARENT_ID, "{bad}");
        assert_eq!(flags, "01", "{bad}");
        assert_eq!(r.echoed_header("tracestate"), None, "{bad}");
        new_traces.push(trace_id);
    }
    // Two traceparent headers: which one would count? Neither.
    let valid = format!("00-{TRACE_ID}-{PARENT_ID}-01");
    let r = get_with(
        &format!("{url}/x"),
        &[("traceparent", &valid), ("traceparent", &valid)],
    )
    .await;
    let (trace_id, _, _) = parse_traceparent(&r.echoed_header("traceparent").unwrap());
    assert_ne!(trace_id, TRACE_ID);
    new_traces.push(trace_id);

    // With sample_percent 0 a new trace is not sampled.
    let r = get(&format!("{url}/unsampled/x")).await;
    let (unsampled_trace, _, flags) = parse_traceparent(&r.echoed_header("traceparent").unwrap());
    assert_eq!(flags, "00");

    let requests = new_traces.len() + 1;
    let access = wait_json_lines(&weft, "access", requests).await;
    assert_eq!(access.len(), requests);
    let spans = json_lines(&weft, "span");
    assert_eq!(spans.len(), new_traces.len(), "{spans:?}");
    for trace_id in &new_traces {
        let span = span_of(&spans, trace_id);
        assert_eq!(span.len(), 1, "{trace_id}: {spans:?}");
        assert_eq!(
            span[0]["parent_span_id"],
            Value::Null,
            "a root span: {span:?}"
        );
        assert_eq!(span[0]["route"], "traced");
    }
    assert!(span_of(&spans, &unsampled_trace).is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_access_log_has_one_line_per_request_with_the_configured_fields() {
    let up = Upstream::start().await;
    let fields = [
        "time",
        "request_id",
        "method",
        "path",
        "status",
        "duration_ms",
        "peer",
        "route",
        "cluster",
        "upstream",
        "attempts",
        "user_agent",
        "referer",
        "host",
        "response_content_length",
        "traceparent",
    ];
    let routes = format!(
        r#"      - name: logged
        match: {{ headers: [{{ name: x-log, exact: "yes" }}] }}
        filters: [{{ filter: telemetry, config: {{ span_log: false, access_log: {{ enabled: true, fields: [{}] }} }} }}]
        cluster: backend
      - name: quiet
        filters: [{{ filter: telemetry, config: {{ span_log: false }} }}]
        cluster: backend"#,
        fields.join(", ")
    );
    let weft = start(&config(&filters(), &routes, up.addr));
    let url = weft.url("public");

    // (path, status, method): statuses from the upstream.
    let requests = [
        ("/status/200", 200, Method::GET),
        ("/items?page=2", 200, Method::GET),
        ("/status/404", 404, Method::GET),
        ("/status/503", 503, Method::POST),
        ("/status/201", 201, Method::PUT),
    ];
    // What the upstream saw of each request, by the request id the proxy
    // generated.
    let mut seen = BTreeMap::new();
    for (path, status, method) in &requests {
        let r = send_with(
            method.clone(),
            &format!("{url}{path}"),
            &[
                ("user-agent", "telemetry-e2e/1.0"),
                ("Referer", "https://example.test/from"),
                ("x-log", "yes"),
            ],
        )
        .await;
        assert_eq!(r.status, *status, "{path}: {:?}", r.body);
        let content_length: u64 = r.header("content-length").unwrap().parse().unwrap();
        assert_eq!(content_length, r.body.len() as u64);
        let echo = r.json();
        let request_id = echo["headers"]["x-request-id"]
            .as_str()
            .unwrap()
            .to_string();
        let traceparent = echo["headers"]["traceparent"].as_str().unwrap().to_string();
        seen.insert(
            request_id,
            (*path, *status, method.clone(), traceparent, content_length),
        );
    }
    // The route without an access log writes none.
    for _ in 0..3 {
        assert_eq!(get(&format!("{url}/quiet")).await.status, 200);
    }
    // One more, with an id the client chose.
    let r = get_with(
        &format!("{url}/last"),
        &[("x-request-id", "the-last-one"), ("x-log", "yes")],
    )
    .await;
    assert_eq!(r.status, 200);

    let lines = wait_json_lines(&weft, "access", requests.len() + 1).await;
    assert_eq!(
        lines.len(),
        requests.len() + 1,
        "one line per logged request:\n{lines:#?}"
    );
    let last: Vec<&Value> = lines
        .iter()
        .filter(|l| l["request_id"] == "the-last-one")
        .collect();
    assert_eq!(last.len(), 1, "{lines:#?}");
    assert_eq!(last[0]["path"], "/last");

    let messages = filter_messages(&weft);
    for line in lines.iter().filter(|l| l["request_id"] != "the-last-one") {
        let request_id = line["request_id"].as_str().expect("request_id");
        let (path, status, method, traceparent, content_length) = seen
            .get(request_id)
            .unwrap_or_else(|| panic!("{request_id} is not an id the upstream saw: {line}"));
        // Exactly the configured fields, in order, after "type".
        let object = line.as_object().unwrap();
        assert_eq!(object.len(), fields.len() + 1, "{line}");
        let raw = messages
            .iter()
            .find(|l| l.contains("\"type\":\"access\"") && l.contains(request_id))
            .unwrap();
        let mut at = raw.find("{\"type\":\"access\"").unwrap();
        for field in fields {
            let next = raw
                .find(&format!("\"{field}\":"))
                .unwrap_or_else(|| panic!("{field} missing: {raw}"));
            assert!(next > at, "{field} out of order: {raw}");
            at = next;
        }
        assert_eq!(line["method"], method.as_str(), "{line}");
        assert_eq!(line["path"], *path, "{line}");
        assert_eq!(line["status"], *status, "{line}");
        assert_eq!(line["route"], "logged", "{line}");
        assert_eq!(line["cluster"], "backend", "{line}");
        assert_eq!(line["upstream"], up.addr.to_string(), "{line}");
        assert_eq!(line["attempts"], 1, "{line}");
        assert_eq!(line["user_agent"], "telemetry-e2e/1.0", "{line}");
        assert_eq!(line["referer"], "https://example.test/from", "{line}");
        assert_eq!(line["host"], weft.addr("public").to_string(), "{line}");
        assert_eq!(line["response_content_length"], *content_length, "{line}");
        assert_eq!(line["traceparent"], traceparent.as_str(), "{line}");
        let peer = line["peer"].as_str().unwrap();
        assert!(peer.starts_with("127.0.0.1:"), "{line}");
        let duration = line["duration_ms"].as_f64().unwrap();
        assert!((0.0..60_000.0).contains(&duration), "{line}");
        let time = line["time"].as_str().unwrap();
        assert_eq!(time.len(), "2026-01-01T00:00:00.000Z".len(), "{line}");
        assert!(time.ends_with('Z') && time.as_bytes()[10] == b'T', "{line}");
    }
    let logged: Vec<&str> = lines
        .iter()
        .filter_map(|l| l["request_id"].as_str())
        .filter(|id| *id != "the-last-one")
        .collect();
    let mut distinct = logged.clone();
    distinct.sort();
    distinct.dedup();
    assert_eq!(
        distinct.len(),
        logged.len(),
        "one line per request: {logged:?}"
    );
    assert_eq!(
        distinct,
        seen.keys().map(String::as_str).collect::<Vec<_>>(),
        "every request has its line"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_trace_and_metrics_off_only_the_access_log_is_written() {
    let up = Upstream::start().await;
    // `timed`: telemetry before api-key, which strips the key from the
    // query; the log shows the path as sent upstream.
    let routes = r#"      - name: timed
        match: { headers: [{ name: x-route, exact: timed }] }
        filters:
          - { filter: telemetry, config: { trace: false, metrics: false, access_log: { fields: [start_unix_ms, duration_ms, path] } } }
          - { filter: api-key, config: { keys: [{ consumer: ci, key: k-123 }], query: api_key } }
        cluster: backend
      - name: logs-only
        filters: [{ filter: telemetry, config: { trace: false, metrics: false, access_log: {} } }]
        cluster: backend"#;
    let filters = format!("{}\n  api-key: {{ path: {} }}", filters(), wasm("api_key"));
    let yaml = format!(
        "admin: {{ listen: 127.0.0.1:0 }}\n{}",
        config(&filters, routes, up.addr)
    );
    let weft = start(&yaml);
    let url = weft.url("public");
    let incoming = format!("00-{TRACE_ID}-{PARENT_ID}-01");

    // The trace headers pass through untouched; none is added.
    let r = get_with(
        &format!("{url}/traced"),
        &[("traceparent", &incoming), ("tracestate", TRACESTATE)],
    )
    .await;
    assert_eq!(r.status, 200);
    assert_eq!(r.echoed_header("traceparent"), Some(incoming.clone()));
    assert_eq!(r.echoed_header("tracestate"), Some(TRACESTATE.to_string()));
    let r = get(&format!("{url}/untraced")).await;
    assert_eq!(r.status, 200);
    assert_eq!(r.echoed_header("traceparent"), None);

    // The proxy times the exchange: a 150 ms upstream shows in the line
    // of a filter that has no request phase to start a clock in.
    let unix_ms = || {
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_millis() as u64
    };
    let before = unix_ms();
    let r = get_with(
        &format!("{url}/delay/150?api_key=k-123&page=2"),
        &[("x-route", "timed")],
    )
    .await;
    let after = unix_ms();
    assert_eq!(r.status, 200, "{:?}", r.body);
    assert_eq!(r.json()["path"], "/delay/150?page=2");

    let lines = wait_json_lines(&weft, "access", 3).await;
    let paths: Vec<&str> = lines.iter().filter_map(|l| l["path"].as_str()).collect();
    assert_eq!(
        paths,
        ["/traced", "/untraced", "/delay/150?page=2"],
        "{lines:#?}"
    );
    let timed = &lines[2];
    assert_eq!(timed.as_object().unwrap().len(), 4, "{timed}");
    let duration = timed["duration_ms"].as_f64().unwrap();
    assert!(duration >= 150.0, "{timed}");
    let start = timed["start_unix_ms"].as_u64().unwrap();
    assert!(
        before <= start && start + duration as u64 <= after + 1,
        "{before}..{after}: {timed}"
    );
    for line in &lines[..2] {
        let mut keys: Vec<&str> = line
            .as_object()
            .unwrap()
            .keys()
            .map(String::as_str)
            .collect();
        keys.sort_unstable();
        assert_eq!(
            keys,
            [
                "duration_ms",
                "method",
                "path",
                "peer",
                "request_id",
                "route",
                "status",
                "time",
                "type",
                "upstream",
                "user_agent"
            ],
            "{line}"
        );
        assert_eq!(line["status"], 200, "{line}");
    }
    assert!(json_lines(&weft, "span").is_empty(), "{}", weft.log_text());

    // No request metrics.
    let metrics = get(&format!("{}/metrics", weft.url("admin"))).await;
    let text = String::from_utf8_lossy(&metrics.body);
    assert!(!text.contains("weft_user_http_request"), "{text}");
}

#[test]
fn a_bad_telemetry_config_is_rejected_with_its_path() {
    let yaml = |telemetry_config: &str| {
        config(
            &filters(),
            &format!(
                "      - {{ name: ok, match: {{ path: /ok }}, filters: [{{ filter: telemetry }}], cluster: backend }}\n      - {{ name: api, filters: [{{ filter: telemetry, config: {telemetry_config} }}], cluster: backend }}"
            ),
            "127.0.0.1:9000".parse().unwrap(),
        )
    };
    let cases = [
        (
            "{ access_log: { fields: [status, bytes_in] } }",
            "access_log.fields[1]: unknown field \"bytes_in\"",
        ),
        (
            "{ access_log: { fields: [time, colour] } }",
            "access_log.fields[1]: unknown field \"colour\"; known fields: time, start_unix_ms",
        ),
        (
            "{ sample_percent: 150 }",
            "sample_percent: must be between 0 and 100, got 150",
        ),
        (
            "{ trace_id_header: traceparent }",
            "trace_id_header: \"traceparent\" is managed",
        ),
        (
            "{ sample_rate: 1 }",
            "invalid config: unknown field `sample_rate`",
        ),
        (
            "{ trace: false, access_log: { fields: [status, trace_id] } }",
            "access_log.fields[1]: \"trace_id\" needs the trace context, which `trace: false` turns off",
        ),
    ];
    for (telemetry_config, expected) in cases {
        let (ok, out) = validate(bin(), &yaml(telemetry_config), "weft.yaml", &[]);
        assert!(!ok, "{telemetry_config} was accepted:\n{out}");
        assert!(
            out.contains(&format!(
                "listeners[0].routes[1].filters[0].config: init rejected the config: {expected}"
            )),
            "{telemetry_config}:\n{out}"
        );
        assert!(!out.contains("routes[0]"), "{telemetry_config}:\n{out}");
    }
    let (ok, out) = validate(
        bin(),
        &yaml("{ sample_percent: 0.5, access_log: { enabled: false, fields: [status] } }"),
        "weft.yaml",
        &[],
    );
    assert!(ok, "{out}");
}
