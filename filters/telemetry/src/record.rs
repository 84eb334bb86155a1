//! What the filter records when an exchange is over, without host calls:
//! metric labels, the span line and the access log line.

use std::fmt::Write;

use crate::config::Field;
use crate::trace::{self, Context};

/// The label value of a status: `1xx` to `5xx`, or `other`.
pub fn status_class(status: u16) -> &'static str {
    match status {
        100..=199 => "1xx",
        200..=299 => "2xx",
        300..=399 => "3xx",
        400..=499 => "4xx",
        500..=599 => "5xx",
        _ => "other",
    }
}

/// The label value of a method: one of the methods of RFC 9110 and PATCH
/// (RFC 5789) as sent, or `OTHER` — so that clients cannot create series
/// at will.
pub fn method_label(method: &str) -> &'static str {
    const STANDARD: [&str; 9] = [
        "GET", "HEAD", "POST", "PUT", "DELETE", "CONNECT", "OPTIONS", "TRACE", "PATCH",
    ];
    STANDARD
        .into_iter()
        .find(|standard| *standard == method)
        .unwrap_or("OTHER")
}

/// What the filter knows about an exchange when it is over.
#[derive(Debug, Clone)]
pub struct Exchange<'a> {
    /// The request method.
    pub method: &'a str,
    /// The response status.
    pub status: u16,
    /// The route's name.
    pub route: Option<&'a str>,
    /// When the proxy had the request's headers, nanoseconds since the
    /// Unix epoch (when the line shows it and the proxy told).
    pub start_unix_nanos: Option<u64>,
    /// Time from the request's headers to the end, in nanoseconds (when
    /// the proxy told).
    pub duration_nanos: Option<u64>,
    /// The trace context of this hop, when the filter traces.
    pub trace: Option<&'a Context>,
}

/// Where the access log finds the values of its fields: the properties
/// read from the host.
pub trait Lookup {
    /// The value of the property behind the field at `position` in the
    /// configured list (`None` for fields without one, and absent values).
    fn field(&self, position: usize) -> Option<&str>;
}

/// The span line: `{"type":"span","trace_id":...}`.
pub fn span_line(exchange: &Exchange<'_>, trace: &Context) -> String {
    let mut line = JsonLine::new("span");
    line.string("trace_id", &trace::hex(&trace.trace_id));
    line.string("span_id", &trace::hex(&trace.span_id));
    line.opt_string(
        "parent_span_id",
        trace.parent_id.map(|id| trace::hex(&id)).as_deref(),
    );
    line.opt_string("route", exchange.route);
    line.string("method", exchange.method);
    line.number("status", exchange.status);
    line.millis("duration_ms", exchange.duration_nanos);
    line.opt_number(
        "start_unix_ms",
        exchange.start_unix_nanos.map(|n| n / 1_000_000),
    );
    line.finish()
}

/// The access log line: `{"type":"access", <fields in order>}`. A value
/// that is not known is `null`.
pub fn access_line(fields: &[Field], exchange: &Exchange<'_>, host: &dyn Lookup) -> String {
    let mut line = JsonLine::new("access");
    for (position, &field) in fields.iter().enumerate() {
        let key = field.name();
        let value = || host.field(position);
        match field {
            Field::Time => line.opt_string(
                key,
                exchange
                    .start_unix_nanos
                    .map(weft_sdk::time::rfc3339_millis)
                    .as_deref(),
            ),
            Field::StartUnixMs => {
                line.opt_number(key, exchange.start_unix_nanos.map(|n| n / 1_000_000))
            }
            Field::DurationMs => line.millis(key, exchange.duration_nanos),
            Field::Method => line.string(key, exchange.method),
            Field::Status => line.number(key, exchange.status),
            Field::Route => line.opt_string(key, exchange.route),
            Field::Attempts => line.opt_number(key, value().and_then(|n| n.parse::<u32>().ok())),
            Field::RequestContentLength | Field::ResponseContentLength => {
                line.opt_number(key, value().and_then(|n| n.trim().parse::<u64>().ok()))
            }
            Field::RequestId
            | Field::Path
            | Field::Host
            | Field::Peer
            | Field::Listener
            | Field::Cluster
            | Field::Upstream
            | Field::UpstreamFailure
            | Field::UserAgent
            | Field::Referer => line.opt_string(key, value()),
            Field::Traceparent => {
                line.opt_string(key, exchange.trace.map(Context::traceparent).as_deref())
            }
            Field::TraceId => line.opt_string(
                key,
                exchange.trace.map(|t| trace::hex(&t.trace_id)).as_deref(),
            ),
            Field::SpanId => line.opt_string(
                key,
                exchange.trace.map(|t| trace::hex(&t.span_id)).as_deref(),
            ),
            Field::ParentSpanId => line.opt_string(
                key,
                exchange
                    .trace
                    .and_then(|t| t.parent_id)
                    .map(|id| trace::hex(&id))
                    .as_deref(),
            ),
        }
    }
    line.finish()
}

/// A JSON object on one line, written key by key in order.
struct JsonLine(String);

impl JsonLine {
    /// `{"type":"<kind>"`.
    fn new(kind: &str) -> JsonLine {
        let mut line = JsonLine(String::with_capacity(256));
        line.0.push('{');
        line.key("type");
        push_json_string(&mut line.0, kind);
        line
    }

    /// `key` is one of the filter's own names (lower case ASCII letters and
    /// underscores), so it is written without an escaping pass.
    fn key(&mut self, key: &str) {
        debug_assert!(key.bytes().all(|b| b.is_ascii_lowercase() || b == b'_'));
        if self.0.len() > 1 {
            self.0.push(',');
        }
        self.0.push('"');
        self.0.push_str(key);
        self.0.push_str("\":");
    }

    fn string(&mut self, key: &str, value: &str) {
        self.key(key);
        push_json_string(&mut self.0, value);
    }

    fn opt_string(&mut self, key: &str, value: Option<&str>) {
        match value {
            Some(value) => self.string(key, value),
            None => {
                self.key(key);
                self.0.push_str("null");
            }
        }
    }

    fn number(&mut self, key: &str, value: impl Into<u64>) {
        self.key(key);
        push_decimal(&mut self.0, value.into(), 1);
    }

    fn opt_number(&mut self, key: &str, value: Option<impl Into<u64>>) {
        match value {
            Some(value) => self.number(key, value),
            None => {
                self.key(key);
                self.0.push_str("null");
            }
        }
    }

    /// `nanos` as milliseconds with three decimals (microsecond precision).
    fn millis(&mut self, key: &str, nanos: Option<u64>) {
        self.key(key);
        let Some(nanos) = nanos else {
            self.0.push_str("null");
            return;
        };
        let micros = nanos / 1_000;
        push_decimal(&mut self.0, micros / 1_000, 1);
        self.0.push('.');
        push_decimal(&mut self.0, micros % 1_000, 3);
    }

    fn finish(mut self) -> String {
        self.0.push('}');
        self.0
    }
}

/// Appends `value` in decimal, zero-padded to at least `width` digits
/// (`core::fmt` costs several times more in a filter).
fn push_decimal(out: &mut String, mut value: u64, width: usize) {
    let mut digits = [b'0'; 20];
    let mut start = digits.len();
    while value > 0 || digits.len() - start < width {
        start -= 1;
        digits[start] = b'0' + (value % 10) as u8;
        value /= 10;
    }
    out.push_str(std::str::from_utf8(&digits[start..]).expect("digits are ASCII"));
}

/// Appends `text` as a JSON string: quotes, backslashes and control
/// characters escaped; everything else as is (the line is UTF-8). Runs of
/// plain ASCII are found with one scan and copied whole.
fn push_json_string(out: &mut String, text: &str) {
    out.push('"');
    let mut rest = text;
    while let Some(at) = rest
        .bytes()
        .position(|b| !(0x20..0x7f).contains(&b) || b == b'"' || b == b'\\')
    {
        out.push_str(&rest[..at]);
        let c = rest[at..]
            .chars()
            .next()
            .expect("a character starts where a byte does");
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            // U+2028 and U+2029 end lines in some JSON readers.
            c if u32::from(c) < 0x20 || c == '\u{7f}' || c == '\u{2028}' || c == '\u{2029}' => {
                let _ = write!(out, "\\u{:04x}", u32::from(c));
            }
            c => out.push(c),
        }
        rest = &rest[at + c.len_utf8()..];
    }
    out.push_str(rest);
    out.push('"');
}

#[cfg(test)]
mod tests {

    use super::*;

    #[test]
    fn status_classes() {
        assert_eq!(status_class(100), "1xx");
        assert_eq!(status_class(200), "2xx");
        assert_eq!(status_class(204), "2xx");
        assert_eq!(status_class(301), "3xx");
        assert_eq!(status_class(404), "4xx");
        assert_eq!(status_class(499), "4xx");
        assert_eq!(status_class(503), "5xx");
        assert_eq!(status_class(599), "5xx");
        assert_eq!(status_class(600), "other");
        assert_eq!(status_class(99), "other");
    }

    #[test]
    fn methods_are_normalised() {
        for method in [
            "GET", "HEAD", "POST", "PUT", "DELETE", "CONNECT", "OPTIONS", "TRACE", "PATCH",
        ] {
            assert_eq!(method_label(method), method);
        }
        assert_eq!(method_label("get"), "OTHER", "methods are case-sensitive");
        assert_eq!(method_label("PROPFIND"), "OTHER");
        assert_eq!(method_label(""), "OTHER");
    }

    fn context(parent: bool) -> Context {
        Context {
            trace_id: [0xab; 16],
            span_id: [0x01; 8],
            parent_id: parent.then_some([0x02; 8]),
            sampled: true,
        }
    }

    fn exchange(trace: &Context) -> Exchange<'_> {
        Exchange {
            method: "GET",
            status: 503,
            route: Some("api"),
            start_unix_nanos: Some(1_767_225_600_123_456_789),
            duration_nanos: Some(12_345_678),
            trace: Some(trace),
        }
    }

    #[test]
    fn a_span_line() {
        let trace = context(true);
        let line = span_line(&exchange(&trace), &trace);
        assert_eq!(
            line,
            concat!(
                r#"{"type":"span","trace_id":"abababababababababababababababab","#,
                r#""span_id":"0101010101010101","parent_span_id":"0202020202020202","#,
                r#""route":"api","method":"GET","status":503,"duration_ms":12.345,"#,
                r#""start_unix_ms":1767225600123}"#
            )
        );
        serde_json::from_str::<serde_json::Value>(&line).unwrap();

        let root = context(false);
        let mut ex = exchange(&root);
        ex.route = None;
        let value: serde_json::Value = serde_json::from_str(&span_line(&ex, &root)).unwrap();
        assert_eq!(value["parent_span_id"], serde_json::Value::Null);
        assert_eq!(value["route"], serde_json::Value::Null);
    }

    /// A host that knows no property. The lines with the proxy's values
    /// are tested through the filter's phases, in `phase_tests`.
    struct NoProperties;

    impl Lookup for NoProperties {
        fn field(&self, _position: usize) -> Option<&str> {
            None
        }
    }

    #[test]
    fn an_access_line_has_only_the_configured_fields() {
        let trace = context(false);
        let fields = [Field::Status, Field::RequestId, Field::Referer];
        let line = access_line(&fields, &exchange(&trace), &NoProperties);
        assert_eq!(
            line,
            r#"{"type":"access","status":503,"request_id":null,"referer":null}"#
        );
    }

    #[test]
    fn trace_fields_are_null_without_a_trace_context() {
        let trace = context(true);
        let mut ex = exchange(&trace);
        ex.trace = None;
        let fields = [
            Field::Status,
            Field::Traceparent,
            Field::TraceId,
            Field::SpanId,
            Field::ParentSpanId,
        ];
        let line = access_line(&fields, &ex, &NoProperties);
        assert_eq!(
            line,
            r#"{"type":"access","status":503,"traceparent":null,"trace_id":null,"span_id":null,"parent_span_id":null}"#
        );
    }

    #[test]
    fn timing_fields_are_null_when_the_proxy_does_not_tell() {
        let trace = context(false);
        let mut ex = exchange(&trace);
        ex.start_unix_nanos = None;
        ex.duration_nanos = None;
        let fields = [Field::Time, Field::StartUnixMs, Field::DurationMs];
        assert_eq!(
            access_line(&fields, &ex, &NoProperties),
            r#"{"type":"access","time":null,"start_unix_ms":null,"duration_ms":null}"#
        );
    }

    #[test]
    fn json_strings_are_escaped() {
        let mut out = String::new();
        push_json_string(&mut out, "a\"b\\c\nd\te\u{0}f\u{1f}g\u{7f}h\u{2028}é€");
        assert_eq!(
            out,
            "\"a\\\"b\\\\c\\nd\\te\\u0000f\\u001fg\\u007fh\\u2028é€\""
        );
        let back: String = serde_json::from_str(&out).unwrap();
        assert_eq!(back, "a\"b\\c\nd\te\u{0}f\u{1f}g\u{7f}h\u{2028}é€");
    }

    #[test]
    fn decimals() {
        for (value, width, text) in [
            (0, 1, "0"),
            (7, 1, "7"),
            (7, 3, "007"),
            (1234, 3, "1234"),
            (u64::MAX, 1, "18446744073709551615"),
        ] {
            let mut out = String::new();
            push_decimal(&mut out, value, width);
            assert_eq!(out, text);
        }
    }

    #[test]
    fn durations_are_milliseconds_with_three_decimals() {
        let mut line = JsonLine::new("t");
        line.millis("a", Some(0));
        line.millis("b", Some(999));
        line.millis("c", Some(1_000));
        line.millis("d", Some(1_234_567_890));
        line.millis("e", None);
        assert_eq!(
            line.finish(),
            r#"{"type":"t","a":0.000,"b":0.000,"c":0.001,"d":1234.567,"e":null}"#
        );
    }
}
