//! Upstream clusters and sending requests to them: round robin over
//! endpoints, keep-alive connections ([`pool`], one per worker thread), a
//! timeout per route.

mod pool;

use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use http::uri::{Authority, PathAndQuery};
use http::{Request, Response, Version};
use hyper::body::Incoming;

use crate::http::ProxyBody;

/// A named set of endpoints.
pub struct Cluster {
    /// The cluster's name.
    pub name: std::sync::Arc<str>,
    endpoints: Vec<Authority>,
    next: AtomicUsize,
    connect_timeout_ms: u64,
}

/// Why the upstream gave no response.
#[derive(Debug, thiserror::Error)]
pub enum UpstreamError {
    /// No response headers within the timeout.
    #[error("upstream {endpoint} did not answer within {timeout_ms} ms")]
    Timeout {
        /// The endpoint tried.
        endpoint: String,
        /// The timeout.
        timeout_ms: u128,
    },
    /// Could not connect.
    #[error("upstream {endpoint} unavailable: {reason}")]
    Connect {
        /// The endpoint tried.
        endpoint: String,
        /// What failed.
        reason: String,
    },
    /// The connection failed before a response.
    #[error("upstream {endpoint} unavailable: {reason}")]
    Reset {
        /// The endpoint tried.
        endpoint: String,
        /// What failed.
        reason: String,
    },
}

impl UpstreamError {
    /// The failure's name, as filters see it in `upstream.failure`.
    pub fn kind(&self) -> &'static str {
        match self {
            UpstreamError::Timeout { .. } => "timeout",
            UpstreamError::Connect { .. } => "connect-failure",
            UpstreamError::Reset { .. } => "reset",
        }
    }
}

impl Cluster {
    /// A cluster over `endpoints` (non-empty) whose connections open within
    /// `connect_timeout`.
    pub fn new(name: &str, endpoints: Vec<Authority>, connect_timeout: Duration) -> Self {
        Self {
            name: name.into(),
            endpoints,
            next: AtomicUsize::new(0),
            connect_timeout_ms: connect_timeout.as_millis().max(1) as u64,
        }
    }

    /// The endpoints.
    pub fn endpoints(&self) -> &[Authority] {
        &self.endpoints
    }

    /// The next endpoint, round robin.
    pub fn pick(&self) -> &Authority {
        let i = self.next.fetch_add(1, Ordering::Relaxed);
        &self.endpoints[i % self.endpoints.len()]
    }

    /// Sends `request` (whose URI holds only the path and query) to
    /// `endpoint` and waits up to `timeout` for the response headers.
    pub async fn send(
        &self,
        endpoint: &Authority,
        mut request: Request<ProxyBody>,
        timeout: Duration,
    ) -> Result<Response<Incoming>, UpstreamError> {
        let path = request
            .uri()
            .path_and_query()
            .cloned()
            .unwrap_or_else(|| PathAndQuery::from_static("/"));
        *request.uri_mut() = path.into();
        *request.version_mut() = Version::HTTP_11;
        let connect_timeout = Duration::from_millis(self.connect_timeout_ms);
        match tokio::time::timeout(timeout, pool::send(endpoint, connect_timeout, request)).await {
            Err(_) => Err(UpstreamError::Timeout {
                endpoint: endpoint.to_string(),
                timeout_ms: timeout.as_millis(),
            }),
            Ok(Err(pool::SendError::Connect(reason))) => Err(UpstreamError::Connect {
                endpoint: endpoint.to_string(),
                reason,
            }),
            Ok(Err(pool::SendError::Exchange(reason))) => Err(UpstreamError::Reset {
                endpoint: endpoint.to_string(),
                reason,
            }),
            Ok(Ok(response)) => Ok(response),
        }
    }
}
