//! What a filter sees of one request: the request and response heads, the
//! buffered bodies while a body phase runs, and the request's properties.
//!
//! The proxy owns a boxed `Exchange` for the whole request; for each phase
//! call the box is swapped into the filter instance's store and back
//! afterwards (two pointer swaps: the struct is over a kilobyte), so no
//! header map is ever copied to make it visible to a filter.

use std::sync::Arc;
use std::time::{Instant, SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use http::{request, response};

use crate::listener::Peer;

/// The request's properties, readable by filters with `property(name)`.
#[derive(Debug, Clone, Default)]
pub struct RequestProps {
    /// The `x-request-id` sent upstream.
    pub request_id: String,
    /// When the proxy had the request's headers.
    pub started: Option<Instant>,
    /// The listener that accepted the request.
    pub listener: Arc<str>,
    /// The route that matched.
    pub route: Arc<str>,
    /// The route's cluster.
    pub cluster: Arc<str>,
    /// The client's address.
    pub peer: Option<Arc<Peer>>,
    /// Upstream attempts made so far (0 before the first).
    pub attempt: u32,
    /// Whether the request can be sent again (its body is kept).
    pub retryable: bool,
    /// The last attempt's endpoint.
    pub upstream_endpoint: Option<http::uri::Authority>,
    /// Why the proxy answered for a failed upstream: `connect-failure`,
    /// `reset` or `timeout`.
    pub upstream_failure: Option<&'static str>,
}

impl RequestProps {
    /// The value of property `name`, if known.
    pub fn get(&self, name: &str) -> Option<String> {
        match name {
            "request.id" => Some(self.request_id.clone()),
            "request.start_unix_ns" => self.started.map(|started| {
                let now = SystemTime::now()
                    .duration_since(UNIX_EPOCH)
                    .unwrap_or_default();
                now.saturating_sub(started.elapsed()).as_nanos().to_string()
            }),
            "request.elapsed_ns" => self
                .started
                .map(|started| started.elapsed().as_nanos().to_string()),
            "listener.name" => Some(self.listener.to_string()),
            "route.name" => Some(self.route.to_string()),
            "cluster.name" => Some(self.cluster.to_string()),
            "peer.address" => self.peer.as_ref().map(|p| p.address.clone()),
            "peer.ip" => self.peer.as_ref().map(|p| p.ip.clone()),
            "request.attempt" if self.attempt > 0 => Some(self.attempt.to_string()),
            "request.retryable" if self.attempt > 0 => Some(self.retryable.to_string()),
            "upstream.endpoint" => self.upstream_endpoint.as_ref().map(|a| a.to_string()),
            "upstream.failure" => self.upstream_failure.map(str::to_string),
            _ => None,
        }
    }
}

/// Which phase is running: decides what a filter may read and change.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum Phase {
    /// `on-request-headers`.
    #[default]
    RequestHeaders,
    /// `on-request-body`.
    RequestBody,
    /// `on-response-headers`.
    ResponseHeaders,
    /// `on-response-body`.
    ResponseBody,
    /// `on-done`.
    Done,
}

impl Phase {
    /// The phase's name as in the WIT contract.
    pub fn name(self) -> &'static str {
        match self {
            Phase::RequestHeaders => "on-request-headers",
            Phase::RequestBody => "on-request-body",
            Phase::ResponseHeaders => "on-response-headers",
            Phase::ResponseBody => "on-response-body",
            Phase::Done => "on-done",
        }
    }

    /// Whether the request may be changed in this phase.
    pub fn request_writable(self) -> bool {
        matches!(self, Phase::RequestHeaders | Phase::RequestBody)
    }
}

/// One request/response as the filters see it.
#[derive(Debug, Default)]
pub struct Exchange {
    /// The request head (always present while a chain runs).
    pub request: Option<request::Parts>,
    /// The response head (response phases and `on-done`).
    pub response: Option<response::Parts>,
    /// The buffered request body (only during `on-request-body`).
    pub request_body: Option<Bytes>,
    /// The buffered response body (only during `on-response-body`).
    pub response_body: Option<Bytes>,
    /// The request's properties.
    pub props: RequestProps,
    /// The phase being run.
    pub phase: Phase,
    /// A filter's override of the route's per-attempt timeout.
    pub upstream_timeout: Option<std::time::Duration>,
}
