//! Filters' log lines in the JSON log format (`--log-format json`), as
//! tracing-subscriber's JSON formatter writes the same event.

use super::clock::LogClock;

/// One JSON object per line: `timestamp`, `level`, `fields` (`filter`,
/// `request_id`, `msg`) and `target`, in tracing's order.
pub fn format_filter_line(
    out: &mut Vec<u8>,
    level: tracing::Level,
    filter: &str,
    request_id: &str,
    message: &str,
) {
    let mut time = [0; 27];
    LogClock::now(&mut time);
    out.extend_from_slice(b"{\"timestamp\":\"");
    out.extend_from_slice(&time);
    out.extend_from_slice(b"\",\"level\":\"");
    out.extend_from_slice(level.as_str().as_bytes());
    out.extend_from_slice(b"\",\"fields\":{\"filter\":");
    push_json_str(out, filter);
    out.extend_from_slice(b",\"request_id\":");
    push_json_str(out, request_id);
    out.extend_from_slice(b",\"msg\":");
    push_json_str(out, message);
    out.extend_from_slice(b"},\"target\":\"weft::filter\"}\n");
}

/// `text` as a JSON string.
fn push_json_str(out: &mut Vec<u8>, text: &str) {
    // Writing into a Vec cannot fail.
    let _ = serde_json::to_writer(&mut *out, text);
}

#[cfg(test)]
mod tests {
    use crate::logging::Captured;
    use crate::logging::clock::LogClock;

    #[test]
    fn filter_lines_are_what_tracing_writes_as_json() {
        let captured = Captured::default();
        let subscriber = || {
            let writer = captured.clone();
            tracing_subscriber::fmt()
                .json()
                .with_timer(LogClock)
                .with_max_level(tracing::Level::TRACE)
                .with_writer(move || writer.clone())
                .finish()
        };
        let cases = [
            (
                "telemetry",
                "3d52",
                "{\"type\":\"access\",\"path\":\"/a b\"}",
            ),
            ("x", "é\u{1b}", "line\nbreak \u{85} \u{7f}"),
            ("", "", ""),
        ];
        for (filter, request_id, message) in cases {
            for level in [
                tracing::Level::DEBUG,
                tracing::Level::INFO,
                tracing::Level::ERROR,
            ] {
                captured.0.lock().unwrap().clear();
                tracing::subscriber::with_default(subscriber(), || {
                    crate::logging::filter_event_json(level, filter, request_id, message)
                });
                let theirs = String::from_utf8(captured.0.lock().unwrap().clone()).unwrap();
                let mut ours = Vec::new();
                super::format_filter_line(&mut ours, level, filter, request_id, message);
                let ours = String::from_utf8(ours).unwrap();
                let parse = |s: &str| {
                    let mut v: serde_json::Value = serde_json::from_str(s).unwrap();
                    v.as_object_mut().unwrap().remove("timestamp");
                    v
                };
                assert_eq!(parse(&ours), parse(&theirs), "{ours} vs {theirs}");
                assert_eq!(ours.find("\"level\""), theirs.find("\"level\""));
            }
        }
    }
}
