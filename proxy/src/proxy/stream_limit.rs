//! A route's `max_stream_duration_ms`: a bound on the whole exchange,
//! counted from the request's headers. Before the response's headers it is
//! the proxy's own 504 (`stream_timeout`; a gRPC call's `DEADLINE_EXCEEDED`);
//! after them the response body is cut off ([`crate::http::body`]): HTTP/1
//! closes the connection without the body's end, HTTP/2 resets the stream,
//! and the upstream's stream is dropped.
//!
//! A route without the limit pays nothing: no timer, no clock read.

use std::future::Future;
use std::sync::Arc;
use std::time::{Duration, Instant};

use http::{Response, StatusCode};
use prometheus::IntCounter;

use crate::http::body::StreamDeadline;
use crate::http::{ProxyBody, local};
use crate::telemetry::http::HttpMetrics;

/// The largest `max_stream_duration_ms` (30 days).
pub const MAX_STREAM_DURATION_MS: u64 = 30 * 24 * 3600 * 1000;

/// The error code of the 504 answered when the limit passes before the
/// response's headers.
pub const CODE: &str = "stream_timeout";

/// One route's limit and where its expiries are counted.
pub struct StreamLimit {
    /// The limit.
    pub duration: Duration,
    route: Arc<str>,
    /// Expiries before the response's headers.
    head: IntCounter,
    /// Expiries while the response body streamed.
    body: IntCounter,
}

impl StreamLimit {
    /// The limit of route `route` on `listener` (`None` for 0: no limit).
    pub fn build(ms: u64, http: &HttpMetrics, listener: &str, route: &Arc<str>) -> Option<Self> {
        (ms > 0).then(|| StreamLimit {
            duration: Duration::from_millis(ms),
            route: route.clone(),
            head: http.stream_timeouts(listener, route, "head"),
            body: http.stream_timeouts(listener, route, "body"),
        })
    }

    /// Runs `work` (the exchange up to the response's headers) until the
    /// limit, counted from `started`; `None` when the limit passed first
    /// (`work` is then dropped, and with it the upstream's request).
    pub async fn within<T>(&self, started: Instant, work: impl Future<Output = T>) -> Option<T> {
        let deadline = tokio::time::Instant::from_std(started + self.duration);
        tokio::time::timeout_at(deadline, work).await.ok()
    }

    /// The proxy's 504 when the limit passed before the response's headers;
    /// counted and logged at debug.
    pub fn expired(&self, request_id: &str) -> Response<ProxyBody> {
        self.head.inc();
        tracing::debug!(
            route = &*self.route,
            request_id,
            limit_ms = self.duration.as_millis() as u64,
            "stream duration limit passed before the response headers"
        );
        let message = format!(
            "no response within the route's max_stream_duration_ms ({} ms)",
            self.duration.as_millis()
        );
        local::error(StatusCode::GATEWAY_TIMEOUT, CODE, &message, request_id)
    }

    /// Puts `body` (a response about to be sent) under the limit counted
    /// from `started`: a streamed body fails once it passes. One allocation,
    /// only for a streamed body.
    pub fn bound(&self, started: Instant, request_id: &str, body: &mut ProxyBody) {
        body.limit_stream(|| {
            Box::new(StreamDeadline {
                at: tokio::time::Instant::from_std(started + self.duration),
                limit: self.duration,
                expired: self.body.clone(),
                route: self.route.clone(),
                request_id: request_id.into(),
            })
        });
    }
}
