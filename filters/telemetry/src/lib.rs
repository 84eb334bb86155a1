//! `telemetry`: request metrics, W3C Trace Context propagation, and span
//! and access log lines.
//!
//! Config (every key optional):
//!
//! ```json
//! {
//!   "trace": true,
//!   "metrics": true,
//!   "sample_percent": 100,
//!   "span_log": true,
//!   "trace_id_header": "x-trace-id",
//!   "span_id_header": "x-span-id",
//!   "access_log": { "enabled": true, "fields": ["time", "request_id", "method", "path", "status"] }
//! }
//! ```
//!
//! - `on_request_headers` (only with `trace`): reads the incoming
//!   `traceparent` (continuing its trace, or starting a new one when it is
//!   absent or invalid), and sets the outgoing `traceparent` with a new span
//!   id for this hop (and the configured id headers).
//! - `on_done`: with `metrics`, records `weft_user_http_requests_total` and
//!   `weft_user_http_request_duration_seconds` by route, method and status
//!   class; logs the span line (sampled requests) and the access log line,
//!   as JSON at info level.
//!
//! Timing comes from the proxy (properties `request.elapsed_ns` and
//! `request.start_unix_ns`), so without `trace` the filter is called once
//! per request, in `on_done`, and keeps no state between requests. `on_done`
//! reads everything its metrics and lines show (the request and response
//! too) with one `properties` call, from a list of names fixed at init. With
//! `trace`, the trace context lives in the instance between the two phases:
//! the proxy keeps one instance for one request from its first phase to its
//! last, and `on_request_headers` starts afresh.

mod config;
mod json;
mod record;
mod trace;

#[cfg(test)]
mod phase_tests;

use weft_sdk::log::{self, Level};
use weft_sdk::property::{PropertySet, PropertyValues};
use weft_sdk::{Action, Filter, Phases, Request, Response, metrics, random_u64};

use crate::config::{Config, ELAPSED, Field, METHOD, ROUTE, START, STATUS, Settings};
use crate::record::{Exchange, Lookup};
use crate::trace::Context;

/// Requests by route, method and status class (exported as
/// `weft_user_http_requests_total`).
const REQUESTS_METRIC: &str = "http_requests_total";
/// Request durations in seconds, same labels (exported as
/// `weft_user_http_request_duration_seconds`).
const DURATION_METRIC: &str = "http_request_duration_seconds";

struct Telemetry {
    settings: Settings,
    /// What `on_done` reads for the metrics alone, and for the log lines
    /// too.
    metric_reads: Reads,
    log_reads: Reads,
    /// `metric_reads.names` and `log_reads.names`, registered with the proxy.
    metric_set: PropertySet,
    log_set: PropertySet,
    /// This hop's trace context, from `on_request_headers` to `on_done`
    /// (with `trace`).
    trace: Option<Context>,
    /// The buffer of the log lines, kept from one request to the next.
    line: String,
}

#[weft_sdk::filter]
impl Filter for Telemetry {
    type Config = Config;

    fn new(config: Config) -> Result<Self, String> {
        let settings = config.validate()?;
        let metric_reads = Reads::new(METRIC_PROPERTIES.to_vec(), &[]);
        let log_reads = Reads::new(
            log_properties(&settings),
            settings.access_log.as_deref().unwrap_or_default(),
        );
        Ok(Telemetry {
            metric_set: PropertySet::new(&metric_reads.names),
            log_set: PropertySet::new(&log_reads.names),
            metric_reads,
            log_reads,
            settings,
            trace: None,
            line: String::new(),
        })
    }

    fn phases(&self) -> Phases {
        self.settings.phases()
    }

    fn on_request_headers(&mut self, req: &Request) -> Action {
        self.trace = self.settings.trace.then(|| self.trace_context(req));
        Action::Continue
    }

    fn on_done(&mut self, _req: &Request, _resp: &Response) {
        let trace = self.trace.take();
        let span = self.settings.span_log && trace.as_ref().is_some_and(|t| t.sampled);
        let access = self.settings.access_log.as_deref();
        let log = (span || access.is_some()) && log::enabled(Level::Info);
        if !(self.settings.metrics || log) {
            return;
        }
        let (reads, set) = if log {
            (&self.log_reads, &self.log_set)
        } else {
            (&self.metric_reads, &self.metric_set)
        };
        let values = Values {
            reads,
            values: set.values(),
        };
        let exchange = Exchange {
            method: values.at(reads.method).unwrap_or_default(),
            status: values
                .at(reads.status)
                .and_then(|s| s.parse().ok())
                .unwrap_or(0),
            route: values.at(reads.route),
            start_unix_nanos: values.number(reads.start),
            duration_nanos: values.number(reads.elapsed),
            trace: trace.as_ref(),
        };
        if self.settings.metrics {
            let labels = [
                ("route", exchange.route.unwrap_or("")),
                ("method", record::method_label(exchange.method)),
                ("status_class", record::status_class(exchange.status)),
            ];
            metrics::counter_add(REQUESTS_METRIC, &labels, 1);
            if let Some(nanos) = exchange.duration_nanos {
                metrics::histogram_observe(DURATION_METRIC, &labels, nanos as f64 / 1e9);
            }
        }
        if !log {
            return;
        }
        if span && let Some(trace) = &trace {
            self.line.clear();
            record::span_line(&mut self.line, &exchange, trace);
            log::log(Level::Info, &self.line);
        }
        if let Some(fields) = access {
            self.line.clear();
            record::access_line(&mut self.line, fields, &exchange, &values);
            log::log(Level::Info, &self.line);
        }
    }
}

impl Telemetry {
    /// Continues the incoming trace or starts one, and sends this hop's
    /// context upstream.
    fn trace_context(&self, req: &Request) -> Context {
        let parent = match trace::parse_header(&req.header_all("traceparent")) {
            Ok(parent) => parent,
            Err(why) => {
                weft_sdk::debug!("starting a new trace: invalid incoming traceparent: {why}");
                None
            }
        };
        if parent.is_none() {
            // A tracestate without a valid traceparent belongs to no trace:
            // the specification has it discarded.
            req.remove_header("tracestate");
        }
        let sample_percent = self.settings.sample_percent;
        let context = Context::for_request(
            parent,
            || trace::sampled(sample_percent, random_u64()),
            random_u64,
        );
        req.set_header("traceparent", &context.traceparent());
        if let Some(name) = &self.settings.trace_id_header {
            req.set_header(name, &trace::hex(&context.trace_id));
        }
        if let Some(name) = &self.settings.span_id_header {
            req.set_header(name, &trace::hex(&context.span_id));
        }
        context
    }
}

/// What the metrics are made of: the duration, route, method and status.
const METRIC_PROPERTIES: [&str; 4] = [ELAPSED, ROUTE, METHOD, STATUS];

/// The properties `on_done` reads when it logs: the metrics', the span
/// line's (the same and the start) and those of the access log's fields,
/// each once.
fn log_properties(settings: &Settings) -> Vec<&'static str> {
    let mut names = Vec::new();
    let mut add = |name| {
        if !names.contains(&name) {
            names.push(name);
        }
    };
    if settings.metrics || settings.span_log {
        METRIC_PROPERTIES.into_iter().for_each(&mut add);
    }
    if settings.span_log {
        add(START);
    }
    let fields = settings.access_log.as_deref().unwrap_or_default();
    fields.iter().filter_map(|f| f.property()).for_each(add);
    names
}

/// The properties `on_done` reads for one kind of output, in the order it
/// asks the host for them, and where each value it uses sits in the answer:
/// found once at init, so a request compares no names.
struct Reads {
    names: Vec<&'static str>,
    method: Option<usize>,
    status: Option<usize>,
    route: Option<usize>,
    start: Option<usize>,
    elapsed: Option<usize>,
    /// For each access log field, in the configured order.
    fields: Vec<Option<usize>>,
}

impl Reads {
    fn new(names: Vec<&'static str>, fields: &[Field]) -> Reads {
        let at = |name: &str| names.iter().position(|n| *n == name);
        Reads {
            method: at(METHOD),
            status: at(STATUS),
            route: at(ROUTE),
            start: at(START),
            elapsed: at(ELAPSED),
            fields: fields.iter().map(|f| f.property().and_then(at)).collect(),
            names,
        }
    }
}

/// The host's answer for one request.
struct Values<'a> {
    reads: &'a Reads,
    values: PropertyValues,
}

impl Values<'_> {
    #[inline]
    fn at(&self, index: Option<usize>) -> Option<&str> {
        self.values.get(index?)
    }

    fn number(&self, index: Option<usize>) -> Option<u64> {
        json::parse_u64(self.at(index)?)
    }
}

impl Lookup for Values<'_> {
    fn field(&self, position: usize) -> Option<&str> {
        self.at(*self.reads.fields.get(position)?)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn names(json: &str) -> Vec<&'static str> {
        let settings = serde_json::from_str::<Config>(json)
            .unwrap()
            .validate()
            .unwrap();
        log_properties(&settings)
    }

    #[test]
    fn on_done_reads_only_the_properties_it_shows() {
        // The bench's config: an access log with the native proxies' fields,
        // each read from its property, in the fields' order.
        assert_eq!(
            names(
                r#"{"trace": false, "metrics": false, "access_log": {"fields":
                    ["time", "request_id", "method", "path", "status", "duration_ms",
                     "peer", "route", "upstream", "user_agent"]}}"#
            ),
            [
                START,
                "request.id",
                METHOD,
                "request.path",
                STATUS,
                ELAPSED,
                "peer.address",
                ROUTE,
                "upstream.endpoint",
                "request.header.user-agent"
            ]
        );
        // Nothing timed, no route, no method.
        assert_eq!(
            names(
                r#"{"trace": false, "metrics": false, "access_log": {"fields": ["status", "attempts"]}}"#
            ),
            [STATUS, "request.attempt"]
        );
        // Metrics need the duration, route, method and status; the span
        // line the start too; a field already read is not read again.
        assert_eq!(
            names(r#"{"access_log": {"fields": ["status", "time", "start_unix_ms"]}}"#),
            [ELAPSED, ROUTE, METHOD, STATUS, START]
        );
        assert_eq!(
            names(
                r#"{"span_log": false, "access_log": {"fields": ["listener", "cluster", "upstream_failure", "response_content_length"]}}"#
            ),
            [
                ELAPSED,
                ROUTE,
                METHOD,
                STATUS,
                "listener.name",
                "cluster.name",
                "upstream.failure",
                "response.header.content-length"
            ]
        );
    }

    #[test]
    fn each_field_reads_the_answer_at_the_position_of_its_property() {
        let settings = serde_json::from_str::<Config>(
            r#"{"span_log": false, "access_log": {"fields":
                ["user_agent", "status", "trace_id", "time", "start_unix_ms"]}}"#,
        )
        .unwrap()
        .validate()
        .unwrap();
        let fields = settings.access_log.clone().unwrap();
        let reads = Reads::new(log_properties(&settings), &fields);
        // The metrics' four, then the fields' not already there.
        assert_eq!(
            reads.names,
            [
                ELAPSED,
                ROUTE,
                METHOD,
                STATUS,
                "request.header.user-agent",
                START
            ]
        );
        assert_eq!(
            (
                reads.elapsed,
                reads.route,
                reads.method,
                reads.status,
                reads.start
            ),
            (Some(0), Some(1), Some(2), Some(3), Some(5))
        );
        // trace_id is the filter's own; time and start_unix_ms share START.
        assert_eq!(reads.fields, [Some(4), Some(3), None, Some(5), Some(5)]);
        let values = Values {
            reads: &reads,
            values: [
                Some("1500000"),
                Some("api"),
                Some("GET"),
                Some("204"),
                None,
                Some("1767225600123456789"),
            ]
            .into_iter()
            .collect(),
        };
        assert_eq!(values.field(0), None);
        assert_eq!(values.field(1), Some("204"));
        assert_eq!(values.field(2), None);
        assert_eq!(values.field(4), Some("1767225600123456789"));
        assert_eq!(values.field(5), None, "past the configured fields");
        assert_eq!(values.number(reads.elapsed), Some(1_500_000));
    }
}
