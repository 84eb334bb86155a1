//! What the filter records when an exchange is over, without host calls:
//! metric labels, the span line and the access log line.

use crate::config::Field;
use crate::json::{JsonLine, json_key, parse_u64};
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

/// Appends the span line: `{"type":"span","trace_id":...}`.
pub fn span_line(out: &mut String, exchange: &Exchange<'_>, trace: &Context) {
    let mut line = JsonLine::new(out, r#"{"type":"span""#);
    line.string(json_key!("trace_id"), &trace::hex(&trace.trace_id));
    line.string(json_key!("span_id"), &trace::hex(&trace.span_id));
    line.opt_string(
        json_key!("parent_span_id"),
        trace.parent_id.map(|id| trace::hex(&id)).as_deref(),
    );
    line.opt_string(json_key!("route"), exchange.route);
    line.string(json_key!("method"), exchange.method);
    line.number(json_key!("status"), exchange.status);
    line.millis(json_key!("duration_ms"), exchange.duration_nanos);
    line.opt_number(
        json_key!("start_unix_ms"),
        exchange.start_unix_nanos.map(|n| n / 1_000_000),
    );
    line.finish();
}

/// Appends the access log line: `{"type":"access", <fields in order>}`. A
/// value that is not known is `null`.
pub fn access_line(out: &mut String, fields: &[Field], exchange: &Exchange<'_>, host: &dyn Lookup) {
    let mut line = JsonLine::new(out, r#"{"type":"access""#);
    for (position, &field) in fields.iter().enumerate() {
        let key = field.json_key();
        let value = || host.field(position);
        match field {
            Field::Time => line.time(key, exchange.start_unix_nanos),
            Field::StartUnixMs => {
                line.opt_number(key, exchange.start_unix_nanos.map(|n| n / 1_000_000))
            }
            Field::DurationMs => line.millis(key, exchange.duration_nanos),
            Field::Method => line.string(key, exchange.method),
            Field::Status => line.number(key, exchange.status),
            Field::Route => line.opt_string(key, exchange.route),
            Field::Attempts => line.opt_number(key, value().and_then(|n| n.parse::<u32>().ok())),
            Field::RequestContentLength | Field::ResponseContentLength => {
                line.opt_number(key, value().and_then(|n| parse_u64(n.trim())))
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
    line.finish();
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
        let line = span(&exchange(&trace), &trace);
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
        let value: serde_json::Value = serde_json::from_str(&span(&ex, &root)).unwrap();
        assert_eq!(value["parent_span_id"], serde_json::Value::Null);
        assert_eq!(value["route"], serde_json::Value::Null);
    }

    fn span(exchange: &Exchange<'_>, trace: &Context) -> String {
        let mut out = String::new();
        span_line(&mut out, exchange, trace);
        out
    }

    fn access(fields: &[Field], exchange: &Exchange<'_>, host: &dyn Lookup) -> String {
        let mut out = String::new();
        access_line(&mut out, fields, exchange, host);
        out
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
        let line = access(&fields, &exchange(&trace), &NoProperties);
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
        let line = access(&fields, &ex, &NoProperties);
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
            access(&fields, &ex, &NoProperties),
            r#"{"type":"access","time":null,"start_unix_ms":null,"duration_ms":null}"#
        );
    }
}
