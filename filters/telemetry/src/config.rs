//! The filter's config and its validation.

use serde::Deserialize;
use weft_sdk::Phases;

use crate::json::json_key;

/// Nanoseconds since the proxy had the request's headers.
pub const ELAPSED: &str = "request.elapsed_ns";
/// When that was, in nanoseconds since the Unix epoch.
pub const START: &str = "request.start_unix_ns";
/// The route's name.
pub const ROUTE: &str = "route.name";
/// The request method.
pub const METHOD: &str = "request.method";
/// The response status.
pub const STATUS: &str = "response.status";

/// The config as written.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// Whether the filter takes part in W3C Trace Context (reads and sends
    /// `traceparent`, sets the id headers, logs spans).
    #[serde(default = "default_true")]
    pub trace: bool,
    /// Whether the request metrics are recorded.
    #[serde(default = "default_true")]
    pub metrics: bool,
    /// Percentage of new traces (requests without a valid `traceparent`)
    /// marked sampled, 0 to 100.
    #[serde(default = "default_sample_percent")]
    pub sample_percent: f64,
    /// Whether a span line is logged for sampled requests (default: when
    /// `trace` is on).
    #[serde(default)]
    pub span_log: Option<bool>,
    /// A request header set to the trace id, for later filters and the
    /// upstream.
    #[serde(default)]
    pub trace_id_header: Option<String>,
    /// A request header set to this hop's span id.
    #[serde(default)]
    pub span_id_header: Option<String>,
    /// The access log; off when absent.
    #[serde(default)]
    pub access_log: Option<AccessLogConfig>,
}

/// `access_log`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AccessLogConfig {
    /// Whether a line is logged per request.
    #[serde(default = "default_true")]
    pub enabled: bool,
    /// The fields of each line, in order.
    #[serde(default)]
    pub fields: Option<Vec<String>>,
}

fn default_sample_percent() -> f64 {
    100.0
}

fn default_true() -> bool {
    true
}

/// A field of an access log line. Each is computed from what the filter
/// contract exposes: the request and response heads, request properties
/// (timing included) and the filter's trace context.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Field {
    /// When the proxy had the request's headers, RFC 3339 UTC with
    /// milliseconds.
    Time,
    /// When the proxy had the request's headers, milliseconds since the
    /// Unix epoch.
    StartUnixMs,
    /// Time from the request's headers to the end of the exchange,
    /// milliseconds.
    DurationMs,
    /// Property `request.id` (the `x-request-id`).
    RequestId,
    /// The request method.
    Method,
    /// The path and query as sent upstream (after the chain's changes: a
    /// key that api-key strips from the query is not logged).
    Path,
    /// The request's authority (`Host` or `:authority`).
    Host,
    /// The response status.
    Status,
    /// Property `peer.address`.
    Peer,
    /// Property `listener.name`.
    Listener,
    /// Property `route.name`.
    Route,
    /// Property `cluster.name`.
    Cluster,
    /// Property `upstream.endpoint`.
    Upstream,
    /// Property `request.attempt`, as a number.
    Attempts,
    /// Property `upstream.failure`.
    UpstreamFailure,
    /// Request header `user-agent`.
    UserAgent,
    /// Request header `referer`.
    Referer,
    /// Request header `content-length`, as a number.
    RequestContentLength,
    /// Response header `content-length`, as a number.
    ResponseContentLength,
    /// The `traceparent` sent upstream.
    Traceparent,
    /// The trace id.
    TraceId,
    /// This hop's span id.
    SpanId,
    /// The caller's span id.
    ParentSpanId,
}

impl Field {
    /// The property the field is read from; `None` for the trace fields,
    /// which are the filter's own.
    pub fn property(self) -> Option<&'static str> {
        Some(match self {
            Field::Time | Field::StartUnixMs => START,
            Field::DurationMs => ELAPSED,
            Field::RequestId => "request.id",
            Field::Method => METHOD,
            Field::Path => "request.path",
            Field::Host => "request.authority",
            Field::Status => STATUS,
            Field::Peer => "peer.address",
            Field::Listener => "listener.name",
            Field::Route => ROUTE,
            Field::Cluster => "cluster.name",
            Field::Upstream => "upstream.endpoint",
            Field::Attempts => "request.attempt",
            Field::UpstreamFailure => "upstream.failure",
            Field::UserAgent => "request.header.user-agent",
            Field::Referer => "request.header.referer",
            Field::RequestContentLength => "request.header.content-length",
            Field::ResponseContentLength => "response.header.content-length",
            Field::Traceparent | Field::TraceId | Field::SpanId | Field::ParentSpanId => {
                return None;
            }
        })
    }

    /// Every field, in the order of the documentation.
    pub const ALL: [Field; 23] = [
        Field::Time,
        Field::StartUnixMs,
        Field::DurationMs,
        Field::RequestId,
        Field::Method,
        Field::Path,
        Field::Host,
        Field::Status,
        Field::Peer,
        Field::Listener,
        Field::Route,
        Field::Cluster,
        Field::Upstream,
        Field::Attempts,
        Field::UpstreamFailure,
        Field::UserAgent,
        Field::Referer,
        Field::RequestContentLength,
        Field::ResponseContentLength,
        Field::Traceparent,
        Field::TraceId,
        Field::SpanId,
        Field::ParentSpanId,
    ];

    /// Whether the field comes from the trace context (`trace: true` only).
    pub fn is_trace(self) -> bool {
        matches!(
            self,
            Field::Traceparent | Field::TraceId | Field::SpanId | Field::ParentSpanId
        )
    }

    /// The fields of a line when the config names none (without `trace_id`
    /// when `trace` is off).
    pub const DEFAULT: [Field; 11] = [
        Field::Time,
        Field::RequestId,
        Field::Method,
        Field::Path,
        Field::Status,
        Field::DurationMs,
        Field::Peer,
        Field::Route,
        Field::Upstream,
        Field::UserAgent,
        Field::TraceId,
    ];

    /// The name in the config, which is also the key in the line.
    pub fn name(self) -> &'static str {
        let key = self.json_key();
        &key[2..key.len() - 2]
    }

    /// The field's key in the line with the comma before it, `,"<name>":`,
    /// written with one copy.
    pub fn json_key(self) -> &'static str {
        match self {
            Field::Time => json_key!("time"),
            Field::StartUnixMs => json_key!("start_unix_ms"),
            Field::DurationMs => json_key!("duration_ms"),
            Field::RequestId => json_key!("request_id"),
            Field::Method => json_key!("method"),
            Field::Path => json_key!("path"),
            Field::Host => json_key!("host"),
            Field::Status => json_key!("status"),
            Field::Peer => json_key!("peer"),
            Field::Listener => json_key!("listener"),
            Field::Route => json_key!("route"),
            Field::Cluster => json_key!("cluster"),
            Field::Upstream => json_key!("upstream"),
            Field::Attempts => json_key!("attempts"),
            Field::UpstreamFailure => json_key!("upstream_failure"),
            Field::UserAgent => json_key!("user_agent"),
            Field::Referer => json_key!("referer"),
            Field::RequestContentLength => json_key!("request_content_length"),
            Field::ResponseContentLength => json_key!("response_content_length"),
            Field::Traceparent => json_key!("traceparent"),
            Field::TraceId => json_key!("trace_id"),
            Field::SpanId => json_key!("span_id"),
            Field::ParentSpanId => json_key!("parent_span_id"),
        }
    }

    /// The field called `name`.
    pub fn from_name(name: &str) -> Option<Field> {
        Field::ALL.into_iter().find(|field| field.name() == name)
    }
}

/// The validated config.
#[derive(Debug, Clone, PartialEq)]
pub struct Settings {
    /// Whether the filter takes part in trace context.
    pub trace: bool,
    /// Whether the request metrics are recorded.
    pub metrics: bool,
    /// Percentage of new traces sampled.
    pub sample_percent: f64,
    /// Whether sampled requests get a span line.
    pub span_log: bool,
    /// The trace id header, lower case, if any.
    pub trace_id_header: Option<String>,
    /// The span id header, lower case, if any.
    pub span_id_header: Option<String>,
    /// The access log's fields; `None` when it is off.
    pub access_log: Option<Vec<Field>>,
}

impl Settings {
    /// The phases the filter needs: `on-done`, and the request headers only
    /// to take part in trace context (timing comes from the proxy).
    pub fn phases(&self) -> Phases {
        if self.trace {
            Phases::REQUEST_HEADERS | Phases::DONE
        } else {
            Phases::DONE
        }
    }
}

/// Headers the filter manages itself, or that the proxy derives from the
/// message: a configured id header must be another one.
const RESERVED_HEADERS: [&str; 6] = [
    "traceparent",
    "tracestate",
    "x-request-id",
    "host",
    "content-length",
    "transfer-encoding",
];

impl Config {
    /// Checks the config and returns the settings.
    pub fn validate(self) -> Result<Settings, String> {
        if !(0.0..=100.0).contains(&self.sample_percent) {
            return Err(format!(
                "sample_percent: must be between 0 and 100, got {}",
                self.sample_percent
            ));
        }
        if !self.trace {
            let needs_trace = [
                ("span_log", self.span_log == Some(true)),
                ("trace_id_header", self.trace_id_header.is_some()),
                ("span_id_header", self.span_id_header.is_some()),
            ];
            if let Some((key, _)) = needs_trace.iter().find(|(_, set)| *set) {
                return Err(format!(
                    "{key}: needs the trace context, which `trace: false` turns off"
                ));
            }
        }
        let trace_id_header = self
            .trace_id_header
            .map(|name| header_name("trace_id_header", &name))
            .transpose()?;
        let span_id_header = self
            .span_id_header
            .map(|name| header_name("span_id_header", &name))
            .transpose()?;
        if let (Some(trace), Some(span)) = (&trace_id_header, &span_id_header)
            && trace == span
        {
            return Err(format!(
                "trace_id_header and span_id_header are both `{trace}`: give two different headers"
            ));
        }
        let access_log = match self.access_log {
            None
            | Some(AccessLogConfig {
                enabled: false,
                fields: _,
            }) => None,
            Some(AccessLogConfig {
                enabled: true,
                fields: None,
            }) => Some(
                Field::DEFAULT
                    .into_iter()
                    .filter(|f| self.trace || !f.is_trace())
                    .collect(),
            ),
            Some(AccessLogConfig {
                enabled: true,
                fields: Some(names),
            }) => Some(fields(&names, self.trace)?),
        };
        Ok(Settings {
            trace: self.trace,
            metrics: self.metrics,
            sample_percent: self.sample_percent,
            span_log: self.span_log.unwrap_or(self.trace),
            trace_id_header,
            span_id_header,
            access_log,
        })
    }
}

/// Parses `access_log.fields`: known names, each once, at least one; trace
/// fields only with `trace`.
fn fields(names: &[String], trace: bool) -> Result<Vec<Field>, String> {
    if names.is_empty() {
        return Err(
            "access_log.fields: the list is empty; name at least one field, \
             or set `enabled: false`"
                .into(),
        );
    }
    let mut fields = Vec::with_capacity(names.len());
    for (index, name) in names.iter().enumerate() {
        let Some(field) = Field::from_name(name) else {
            let hint = match name.as_str() {
                "bytes_in" | "bytes_out" | "bytes_sent" | "bytes_received" => {
                    " (body sizes are not visible to a filter that does not buffer bodies; \
                     request_content_length and response_content_length give the declared \
                     lengths)"
                }
                _ => "",
            };
            let known: Vec<&str> = Field::ALL.iter().map(|f| f.name()).collect();
            return Err(format!(
                "access_log.fields[{index}]: unknown field {name:?}{hint}; known fields: {}",
                known.join(", ")
            ));
        };
        if fields.contains(&field) {
            return Err(format!(
                "access_log.fields[{index}]: {name:?} is listed twice"
            ));
        }
        if field.is_trace() && !trace {
            return Err(format!(
                "access_log.fields[{index}]: {name:?} needs the trace context, \
                 which `trace: false` turns off"
            ));
        }
        fields.push(field);
    }
    Ok(fields)
}

/// Checks a header name from field `field` and lower-cases it.
fn header_name(field: &str, name: &str) -> Result<String, String> {
    let lower = weft_sdk::header::check_name(name).map_err(|e| format!("{field}: {e}"))?;
    if RESERVED_HEADERS.contains(&lower.as_str()) {
        return Err(format!(
            "{field}: {name:?} is managed by the proxy or this filter and cannot be used here"
        ));
    }
    Ok(lower)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn settings(json: &str) -> Result<Settings, String> {
        serde_json::from_str::<Config>(json)
            .map_err(|e| e.to_string())?
            .validate()
    }

    #[test]
    fn defaults() {
        let s = settings("{}").unwrap();
        assert_eq!(
            s,
            Settings {
                trace: true,
                metrics: true,
                sample_percent: 100.0,
                span_log: true,
                trace_id_header: None,
                span_id_header: None,
                access_log: None,
            }
        );
        assert_eq!(s.phases(), Phases::REQUEST_HEADERS | Phases::DONE);
    }

    #[test]
    fn a_full_config() {
        let s = settings(
            r#"{"sample_percent": 12.5, "span_log": false,
                "trace_id_header": "X-Trace-Id", "span_id_header": "x-span-id",
                "access_log": {"enabled": true, "fields": ["status", "path", "traceparent"]}}"#,
        )
        .unwrap();
        assert_eq!(s.sample_percent, 12.5);
        assert!(!s.span_log);
        assert_eq!(s.trace_id_header.as_deref(), Some("x-trace-id"));
        assert_eq!(s.span_id_header.as_deref(), Some("x-span-id"));
        assert_eq!(
            s.access_log,
            Some(vec![Field::Status, Field::Path, Field::Traceparent])
        );
    }

    #[test]
    fn the_access_log_is_on_with_its_object_and_default_fields() {
        let s = settings(r#"{"access_log": {}}"#).unwrap();
        assert_eq!(s.access_log, Some(Field::DEFAULT.to_vec()));
        let s = settings(r#"{"access_log": {"enabled": false, "fields": ["status"]}}"#).unwrap();
        assert_eq!(s.access_log, None);
        let s = settings(r#"{"access_log": {"fields": ["status"]}}"#).unwrap();
        assert_eq!(s.access_log, Some(vec![Field::Status]));
    }

    #[test]
    fn trace_and_metrics_can_be_turned_off() {
        let s = settings(r#"{"trace": false, "metrics": false, "access_log": {}}"#).unwrap();
        assert!(!s.trace && !s.metrics && !s.span_log);
        assert_eq!(s.phases(), Phases::DONE);
        let fields = s.access_log.unwrap();
        assert!(!fields.contains(&Field::TraceId), "{fields:?}");
        assert_eq!(fields.len(), Field::DEFAULT.len() - 1);
        assert!(settings(r#"{"trace": false, "span_log": false}"#).is_ok());
        for (json, err) in [
            (
                r#"{"trace": false, "span_log": true}"#,
                "span_log: needs the trace context, which `trace: false` turns off",
            ),
            (
                r#"{"trace": false, "trace_id_header": "x-trace"}"#,
                "trace_id_header: needs the trace context, which `trace: false` turns off",
            ),
            (
                r#"{"trace": false, "access_log": {"fields": ["status", "span_id"]}}"#,
                "access_log.fields[1]: \"span_id\" needs the trace context, which `trace: false` turns off",
            ),
        ] {
            assert_eq!(settings(json).unwrap_err(), err, "{json}");
        }
        let s = settings(r#"{"metrics": false}"#).unwrap();
        assert!(s.trace && s.span_log && !s.metrics);
    }

    #[test]
    fn sample_percent_is_a_percentage() {
        for ok in ["0", "100", "0.01", "50"] {
            settings(&format!(r#"{{"sample_percent": {ok}}}"#)).unwrap();
        }
        assert_eq!(
            settings(r#"{"sample_percent": 150}"#).unwrap_err(),
            "sample_percent: must be between 0 and 100, got 150"
        );
        assert_eq!(
            settings(r#"{"sample_percent": -1}"#).unwrap_err(),
            "sample_percent: must be between 0 and 100, got -1"
        );
        assert!(settings(r#"{"sample_percent": "all"}"#).is_err());
    }

    #[test]
    fn unknown_and_repeated_fields_are_rejected() {
        let err = settings(r#"{"access_log": {"fields": ["status", "colour"]}}"#).unwrap_err();
        assert!(
            err.starts_with(
                "access_log.fields[1]: unknown field \"colour\"; known fields: time, start_unix_ms,"
            ),
            "{err}"
        );
        let err = settings(r#"{"access_log": {"fields": ["bytes_in"]}}"#).unwrap_err();
        assert!(
            err.starts_with("access_log.fields[0]: unknown field \"bytes_in\" (body sizes"),
            "{err}"
        );
        assert_eq!(
            settings(r#"{"access_log": {"fields": ["status", "route", "status"]}}"#).unwrap_err(),
            "access_log.fields[2]: \"status\" is listed twice"
        );
        assert!(
            settings(r#"{"access_log": {"fields": []}}"#)
                .unwrap_err()
                .starts_with("access_log.fields: the list is empty")
        );
    }

    #[test]
    fn every_field_name_is_found_again() {
        for field in Field::ALL {
            assert_eq!(Field::from_name(field.name()), Some(field));
        }
        for field in Field::DEFAULT {
            assert!(Field::ALL.contains(&field));
        }
        assert_eq!(Field::from_name("Status"), None, "names are exact");
    }

    #[test]
    fn id_headers_are_checked() {
        assert_eq!(
            settings(r#"{"trace_id_header": ""}"#).unwrap_err(),
            "trace_id_header: the header name is empty"
        );
        assert!(
            settings(r#"{"span_id_header": "x span"}"#)
                .unwrap_err()
                .starts_with("span_id_header: invalid header name `x span`")
        );
        assert!(
            settings(r#"{"trace_id_header": "TraceParent"}"#)
                .unwrap_err()
                .starts_with("trace_id_header: \"TraceParent\" is managed")
        );
        assert_eq!(
            settings(r#"{"trace_id_header": "x-id", "span_id_header": "X-ID"}"#).unwrap_err(),
            "trace_id_header and span_id_header are both `x-id`: give two different headers"
        );
    }

    #[test]
    fn unknown_keys_are_rejected() {
        assert!(
            settings(r#"{"sample_rate": 1}"#)
                .unwrap_err()
                .contains("unknown field `sample_rate`")
        );
        assert!(
            settings(r#"{"access_log": {"format": "json"}}"#)
                .unwrap_err()
                .contains("unknown field `format`")
        );
    }
}
