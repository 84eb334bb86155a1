//! The request path's families: requests, their duration, body bytes and
//! connections. Handles are resolved when a snapshot is built
//! ([`RouteMetrics`], one per route); a request only picks among them and
//! adds to atomics.

use std::sync::{Arc, OnceLock};
use std::time::Duration;

use http::{Method, StatusCode};
use prometheus::core::{Collector, Desc};
use prometheus::proto::MetricFamily;
use prometheus::{
    Histogram, HistogramOpts, HistogramVec, IntCounter, IntCounterVec, IntGauge, IntGaugeVec, Opts,
};

/// Upper bounds of `weft_request_duration_seconds`' buckets.
pub const DURATION_BUCKETS: [f64; 16] = [
    0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5,
    5.0, 10.0,
];

/// The `method` label's values: the standard methods, then `other`.
pub const METHODS: [&str; 10] = [
    "GET", "HEAD", "POST", "PUT", "DELETE", "CONNECT", "OPTIONS", "TRACE", "PATCH", "other",
];

/// The `status_class` label's values.
pub const STATUS_CLASSES: [&str; 5] = ["1xx", "2xx", "3xx", "4xx", "5xx"];

/// The families, shared by every snapshot's routes.
#[derive(Clone)]
pub struct HttpMetrics {
    requests: IntCounterVec,
    duration: HistogramVec,
    request_bytes: IntCounterVec,
    response_bytes: IntCounterVec,
    connections: IntGaugeVec,
    stream_timeouts: IntCounterVec,
}

impl HttpMetrics {
    pub(super) fn new() -> Self {
        let counter = |name: &str, help: &str, labels: &[&str]| {
            IntCounterVec::new(Opts::new(name, help), labels).expect("valid family")
        };
        HttpMetrics {
            requests: counter(
                "weft_requests_total",
                "Requests answered, by listener, route (empty: none matched), method (standard methods, else other) and status class.",
                &["listener", "route", "method", "status_class"],
            ),
            duration: HistogramVec::new(
                HistogramOpts::new(
                    "weft_request_duration_seconds",
                    "Time from a request's headers to its response's headers, by listener and route.",
                )
                .buckets(DURATION_BUCKETS.to_vec()),
                &["listener", "route"],
            )
            .expect("valid family"),
            request_bytes: counter(
                "weft_request_body_bytes_total",
                "Request body bytes received from clients, by listener.",
                &["listener"],
            ),
            response_bytes: counter(
                "weft_response_body_bytes_total",
                "Response body bytes sent to clients, by listener.",
                &["listener"],
            ),
            connections: IntGaugeVec::new(
                Opts::new(
                    "weft_active_connections",
                    "Client connections open now, by kind (proxy, admin).",
                ),
                &["kind"],
            )
            .expect("valid family"),
            stream_timeouts: counter(
                "weft_stream_timeouts_total",
                "Exchanges that outlived their route's max_stream_duration_ms, by listener, route and phase (head: answered 504; body: response cut off). Routes with the limit only.",
                &["listener", "route", "phase"],
            ),
        }
    }

    /// The counter of `route`'s exchanges on `listener` that outlived its
    /// `max_stream_duration_ms` in `phase` (`head`, `body`).
    pub fn stream_timeouts(&self, listener: &str, route: &str, phase: &str) -> IntCounter {
        self.stream_timeouts
            .with_label_values(&[listener, route, phase])
    }

    /// The gauge of open connections of `kind` (`proxy`, `admin`).
    pub fn connections(&self, kind: &str) -> IntGauge {
        self.connections.with_label_values(&[kind])
    }
}

impl Collector for HttpMetrics {
    fn desc(&self) -> Vec<&Desc> {
        let mut all = self.requests.desc();
        all.extend(self.duration.desc());
        all.extend(self.request_bytes.desc());
        all.extend(self.response_bytes.desc());
        all.extend(self.connections.desc());
        all.extend(self.stream_timeouts.desc());
        all
    }

    fn collect(&self) -> Vec<MetricFamily> {
        let mut all = self.requests.collect();
        all.extend(self.duration.collect());
        all.extend(self.request_bytes.collect());
        all.extend(self.response_bytes.collect());
        all.extend(self.connections.collect());
        all.extend(self.stream_timeouts.collect());
        all
    }
}

/// One route's handles (or a listener's, for requests no route matched).
pub struct RouteMetrics {
    listener: Arc<str>,
    route: Arc<str>,
    family: IntCounterVec,
    /// By method, then status class; a series is made on its first request.
    requests: [[OnceLock<IntCounter>; STATUS_CLASSES.len()]; METHODS.len()],
    duration: Histogram,
    /// Request body bytes of the listener.
    pub request_bytes: IntCounter,
    /// Response body bytes of the listener.
    pub response_bytes: IntCounter,
}

impl RouteMetrics {
    /// Resolves the handles of `route` on `listener`.
    pub fn new(http: &HttpMetrics, listener: &Arc<str>, route: &Arc<str>) -> Self {
        RouteMetrics {
            listener: listener.clone(),
            route: route.clone(),
            family: http.requests.clone(),
            requests: std::array::from_fn(|_| std::array::from_fn(|_| OnceLock::new())),
            duration: http.duration.with_label_values(&[&**listener, &**route]),
            request_bytes: http.request_bytes.with_label_values(&[&**listener]),
            response_bytes: http.response_bytes.with_label_values(&[&**listener]),
        }
    }

    /// Counts one answered request (its method by [`method_index`]) and
    /// its time to the response's headers.
    pub fn record(&self, m: usize, status: StatusCode, elapsed: Duration) {
        let c = (status.as_u16() / 100).clamp(1, 5) as usize - 1;
        self.requests[m][c]
            .get_or_init(|| {
                self.family.with_label_values(&[
                    &*self.listener,
                    &*self.route,
                    METHODS[m],
                    STATUS_CLASSES[c],
                ])
            })
            .inc();
        self.duration.observe(elapsed.as_secs_f64());
    }
}

/// `method`'s place in [`METHODS`] (`other` for a method not listed).
pub fn method_index(method: &Method) -> usize {
    const STANDARD: [Method; 9] = [
        Method::GET,
        Method::HEAD,
        Method::POST,
        Method::PUT,
        Method::DELETE,
        Method::CONNECT,
        Method::OPTIONS,
        Method::TRACE,
        Method::PATCH,
    ];
    STANDARD
        .iter()
        .position(|m| m == method)
        .unwrap_or(STANDARD.len())
}
