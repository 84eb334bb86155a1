//! The proxy's log: a stderr that stops reading never stops requests (lines
//! are dropped and counted instead), and a filter's text cannot pass for
//! the proxy's fields.

use std::time::{Duration, Instant};

use weft_test_harness::{Upstream, Weft, get};

use crate::{config, start, wasm};

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
