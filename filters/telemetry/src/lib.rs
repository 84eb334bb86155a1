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
//! - `on_request_headers`: takes the start time and, with `trace`, reads the
//!   incoming `traceparent` (continuing its trace, or starting a new one when
//!   it is absent or invalid), and sets the outgoing `traceparent` with a new
//!   span id for this hop (and the configured id headers).
//! - `on_done`: with `metrics`, records `weft_filter_http_requests_total` and
//!   `weft_filter_http_request_duration_seconds` by route, method and status
//!   class; logs the span line (sampled requests) and the access log line,
//!   as JSON at info level.
//!
//! The per-request state lives in the instance between the two phases: the
//! proxy keeps one instance for one request from its first phase to its
//! last, and `on_request_headers` starts afresh.

mod config;
mod record;
mod trace;

use weft_sdk::log::{self, Level};
use weft_sdk::{Action, Filter, Request, Response, metrics, property, random_u64, time};

use crate::config::{Config, Settings};
use crate::record::{Exchange, Lookup};
use crate::trace::Context;

/// Requests by route, method and status class (exported as
/// `weft_filter_http_requests_total`).
const REQUESTS_METRIC: &str = "http_requests_total";
/// Request durations in seconds, same labels (exported as
/// `weft_filter_http_request_duration_seconds`).
const DURATION_METRIC: &str = "http_request_duration_seconds";

struct Telemetry {
    settings: Settings,
    /// The request this instance is serving, from `on_request_headers` to
    /// `on_done`.
    current: Option<InFlight>,
}

/// What `on_request_headers` keeps for `on_done`.
struct InFlight {
    start_monotonic_nanos: u64,
    start_unix_nanos: u64,
    /// This hop's trace context, when `trace` is on.
    trace: Option<Context>,
    /// The path as it arrived, when the access log shows it.
    path: Option<String>,
}

#[weft_sdk::filter]
impl Filter for Telemetry {
    type Config = Config;

    fn new(config: Config) -> Result<Self, String> {
        Ok(Telemetry {
            settings: config.validate()?,
            current: None,
        })
    }

    fn on_request_headers(&mut self, req: &Request) -> Action {
        let start_monotonic_nanos = time::monotonic_nanos();
        let start_unix_nanos = time::now_unix_nanos();
        let trace = self.settings.trace.then(|| self.trace_context(req));
        self.current = Some(InFlight {
            start_monotonic_nanos,
            start_unix_nanos,
            trace,
            path: self.settings.logs_path().then(|| req.path()),
        });
        Action::Continue
    }

    fn on_done(&mut self, req: &Request, resp: &Response) {
        // Without a start (the request phase did not run for this request)
        // there is nothing to measure.
        let Some(flight) = self.current.take() else {
            return;
        };
        let duration_nanos = time::monotonic_nanos().saturating_sub(flight.start_monotonic_nanos);
        let span = self.settings.span_log && flight.trace.as_ref().is_some_and(|t| t.sampled);
        let access = self.settings.access_log.as_deref();
        let log = (span || access.is_some()) && log::enabled(Level::Info);
        if !(self.settings.metrics || log) {
            return;
        }
        let method = req.method();
        let status = resp.status();
        let route = property::route_name();
        if self.settings.metrics {
            let labels = [
                ("route", route.as_deref().unwrap_or("")),
                ("method", record::method_label(&method)),
                ("status_class", record::status_class(status)),
            ];
            metrics::counter_add(REQUESTS_METRIC, &labels, 1);
            metrics::histogram_observe(DURATION_METRIC, &labels, duration_nanos as f64 / 1e9);
        }
        if !log {
            return;
        }
        let exchange = Exchange {
            method: &method,
            status,
            route: route.as_deref(),
            path: flight.path.as_deref(),
            start_unix_nanos: flight.start_unix_nanos,
            duration_nanos,
            trace: flight.trace.as_ref(),
        };
        if span && let Some(trace) = &flight.trace {
            log::log(Level::Info, &record::span_line(&exchange, trace));
        }
        if let Some(fields) = access {
            let host = Host { req, resp };
            log::log(Level::Info, &record::access_line(fields, &exchange, &host));
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

/// The access log's view of the host.
struct Host<'a> {
    req: &'a Request,
    resp: &'a Response,
}

impl Lookup for Host<'_> {
    fn property(&self, name: &str) -> Option<String> {
        property::get(name)
    }

    fn request_header(&self, name: &str) -> Option<String> {
        self.req.header(name)
    }

    fn response_header(&self, name: &str) -> Option<String> {
        self.resp.header(name)
    }

    fn authority(&self) -> Option<String> {
        self.req.authority()
    }
}
