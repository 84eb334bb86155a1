//! The proxy's log: a stderr that stops reading never stops requests (lines
//! are dropped and counted instead), a filter's text cannot pass for the
//! proxy's fields, lines in JSON, and a filter's own log file reopened on
//! SIGUSR1.

use std::time::{Duration, Instant};

use weft_test_harness::process::validate;
use weft_test_harness::{Upstream, Weft, get};

use crate::{bin, config, start, wasm};

/// A counter's value in `/metrics` (0 when the series is absent).
pub async fn metric(weft: &Weft, series: &str) -> u64 {
    let text = get(&format!("{}/metrics", weft.url("admin"))).await;
    String::from_utf8_lossy(&text.body)
        .lines()
        .find_map(|l| l.strip_prefix(series)?.strip_prefix(' ')?.parse().ok())
        .unwrap_or(0)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_blocked_stderr_does_not_stop_requests() {
    let up = Upstream::start().await;
    let filters = format!("  telemetry: {{ path: {} }}", wasm("telemetry"));
    let routes = "      - { name: all, filters: [{ filter: telemetry, config: { trace: false, metrics: false, access_log: { fields: [request_id, path] } } }], cluster: backend }";
    let weft = start(&format!(
        "admin: {{ listen: 127.0.0.1:0 }}\n{}",
        config(&filters, routes, up.addr)
    ));
    weft.pause_log_reading();
    // Access lines of ~8 KiB: 200 of them are more than the pipe and the
    // proxy's log buffer hold together.
    let path = format!("/{}", "p".repeat(8 * 1024));
    let url = format!("{}{path}", weft.url("public"));
    let started = Instant::now();
    let answered = tokio::time::timeout(Duration::from_secs(30), async {
        let mut answered = 0;
        for _ in 0..200 {
            assert_eq!(get(&url).await.status, 200);
            answered += 1;
        }
        answered
    })
    .await;
    assert_eq!(
        answered,
        Ok(200),
        "requests stalled behind a blocked stderr after {:?}",
        started.elapsed()
    );
    let dropped = metric(&weft, "weft_log_lines_dropped_total").await;
    assert!(dropped > 0, "no line was dropped");

    weft.resume_log_reading();
    tokio::task::block_in_place(|| weft.wait_for_log("log lines dropped", 1));
    let line = weft
        .log_text()
        .lines()
        .find(|l| l.contains("log lines dropped"))
        .unwrap()
        .to_string();
    assert!(line.contains("WARN"), "{line}");
    assert!(line.contains(" lines="), "{line}");
    // Logging goes on once stderr reads again.
    assert_eq!(
        get(&format!("{}/after", weft.url("public"))).await.status,
        200
    );
    tokio::task::block_in_place(|| weft.wait_for_log("\\\"path\\\":\\\"/after\\\"", 1));
}

/// The `key=value` pairs of a line's fields (after `target: `), values
/// quoted with `\`-escapes or bare up to a space.
fn logfmt_keys(fields: &str) -> Vec<String> {
    let mut keys = Vec::new();
    let mut rest = fields.trim_start();
    while let Some((key, after)) = rest.split_once('=') {
        keys.push(key.to_string());
        let end = if let Some(quoted) = after.strip_prefix('"') {
            let mut escaped = false;
            let close = quoted
                .char_indices()
                .find(|&(_, c)| {
                    let close = c == '"' && !escaped;
                    escaped = c == '\\' && !escaped;
                    close
                })
                .map(|(i, _)| i)
                .expect("an unterminated quoted value");
            close + 2
        } else {
            after.find(' ').unwrap_or(after.len())
        };
        rest = after[end..].trim_start();
    }
    keys
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_filter_message_cannot_forge_the_proxys_fields() {
    let up = Upstream::start().await;
    let filters = format!("  misbehave: {{ path: {} }}", wasm("misbehave_filter"));
    let forged = r#"forged\" filter=\"api-key\" request_id=\"r-1\" \\\" x=1\t"#;
    let routes = format!(
        "      - {{ name: all, filters: [{{ filter: misbehave, config: {{ log: \"{forged}\" }} }}], cluster: backend }}"
    );
    let weft = start(&config(&filters, &routes, up.addr));
    let r = get(&format!("{}/x", weft.url("public"))).await;
    assert_eq!(r.status, 200);
    // The filter's line (not those of the proxy's `weft::filter::…` modules).
    tokio::task::block_in_place(|| weft.wait_for_log(" weft::filter: ", 1));
    let log = weft.log_text();
    let line = log.lines().find(|l| l.contains(" weft::filter: ")).unwrap();
    let fields = line.split_once("weft::filter: ").unwrap().1;
    assert_eq!(
        logfmt_keys(fields),
        ["filter", "request_id", "msg"],
        "the filter's text reads as fields: {line}"
    );
    assert!(
        fields.starts_with(r#"filter="misbehave" request_id=""#),
        "{line}"
    );
    assert!(
        fields.ends_with(r#"msg="forged\" filter=\"api-key\" request_id=\"r-1\" \\\" x=1\t""#),
        "{line}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_log_format_json_every_line_is_one_json_object() {
    let up = Upstream::start().await;
    let filters = format!("  misbehave: {{ path: {} }}", wasm("misbehave_filter"));
    // A line break, an escape and quotes: one JSON string all the same.
    let routes = r#"      - { name: all, filters: [{ filter: misbehave, config: { log: "two\nlines \e[31m \"quoted\" filter=x" } }], cluster: backend }"#;
    let yaml = config(&filters, routes, up.addr);
    let weft =
        tokio::task::block_in_place(|| Weft::start_with(bin(), &yaml, &["--log-format", "json"]));
    let r = get(&format!("{}/x", weft.url("public"))).await;
    assert_eq!(r.status, 200);
    tokio::task::block_in_place(|| weft.wait_for_log(r#""target":"weft::filter""#, 1));
    let log = weft.log_text();
    let lines: Vec<serde_json::Value> = log
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("not JSON ({e}): {l}")))
        .collect();
    let listening = lines
        .iter()
        .find(|l| l["fields"]["message"] == "listening")
        .expect("a listening line");
    assert_eq!(listening["level"], "INFO");
    assert_eq!(listening["fields"]["listener"], "public");
    let filter = lines
        .iter()
        .find(|l| l["target"] == "weft::filter")
        .expect("the filter's line");
    assert_eq!(filter["fields"]["filter"], "misbehave");
    assert_eq!(
        filter["fields"]["msg"],
        "two\nlines \u{1b}[31m \"quoted\" filter=x"
    );
    assert_eq!(
        filter["fields"]["request_id"].as_str().map(str::len),
        Some(36)
    );
}

/// The lines of `path`, waiting up to 10 s until there are `n`.
fn wait_lines(path: &std::path::Path, n: usize) -> Vec<String> {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let text = std::fs::read_to_string(path).unwrap_or_default();
        let lines: Vec<String> = text.lines().map(str::to_owned).collect();
        if lines.len() >= n || Instant::now() > deadline {
            return lines;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_filters_log_file_takes_its_access_log_and_is_reopened_on_sigusr1() {
    let up = Upstream::start().await;
    let filters = format!(
        "  telemetry: {{ path: {}, log_file: access.log }}",
        wasm("telemetry")
    );
    let routes = "      - { name: all, filters: [{ filter: telemetry, config: { span_log: false, metrics: false, access_log: { fields: [request_id, path, status] } } }], cluster: backend }";
    let weft = start(&config(&filters, routes, up.addr));
    let dir = weft.config_path.parent().unwrap().to_path_buf();
    let access = dir.join("access.log");
    let url = weft.url("public");
    for i in 0..3 {
        assert_eq!(get(&format!("{url}/before/{i}")).await.status, 200);
    }
    let lines = tokio::task::block_in_place(|| wait_lines(&access, 3));
    assert_eq!(lines.len(), 3, "{lines:?}");
    // `on-done` runs after each response: lines come in any order.
    let mut paths: Vec<String> = lines
        .iter()
        .map(|line| {
            let line: serde_json::Value = serde_json::from_str(line).expect("a JSON access line");
            assert_eq!(line["status"], 200, "{line}");
            line["path"].as_str().unwrap().to_string()
        })
        .collect();
    paths.sort();
    assert_eq!(paths, ["/before/0", "/before/1", "/before/2"]);
    // Not in the proxy's log.
    assert!(!weft.log_text().contains("/before/"), "{}", weft.log_text());

    // logrotate: move the file away, then SIGUSR1.
    let rotated = dir.join("access.log.1");
    std::fs::rename(&access, &rotated).unwrap();
    weft.signal("USR1");
    tokio::task::block_in_place(|| weft.wait_for_log("filter log files reopened", 1));
    for i in 0..2 {
        assert_eq!(get(&format!("{url}/after/{i}")).await.status, 200);
    }
    let lines = tokio::task::block_in_place(|| wait_lines(&access, 2));
    assert_eq!(lines.len(), 2, "{lines:?}");
    assert!(lines.iter().all(|l| l.contains("/after/")), "{lines:?}");
    let old = std::fs::read_to_string(&rotated).unwrap();
    assert_eq!(old.lines().count(), 3, "{old}");
    assert!(!old.contains("/after/"), "{old}");
}

#[test]
fn a_log_file_that_cannot_be_opened_is_a_config_error_naming_it() {
    let filters = format!(
        "  telemetry: {{ path: {}, log_file: no/such/dir/access.log }}",
        wasm("telemetry")
    );
    let routes = "      - { name: all, filters: [{ filter: telemetry }], cluster: backend }";
    let yaml = config(&filters, routes, "127.0.0.1:9".parse().unwrap());
    let (ok, out) = validate(bin(), &yaml, "weft.yaml", &[]);
    assert!(!ok, "{out}");
    assert!(out.contains("filters.telemetry.log_file"), "{out}");
    assert!(out.contains("no/such/dir/access.log"), "{out}");
}
