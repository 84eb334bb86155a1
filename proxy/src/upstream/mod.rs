//! Upstream clusters and sending requests to them: round robin over
//! endpoints, keep-alive connections ([`pool`], one per worker thread, a cap
//! per endpoint), a timeout per route for the response headers that starts
//! once the request has been sent.

mod pool;
pub mod transport;

use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

pub use pool::{StreamSlot, sweep};
pub use transport::Transport;

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
    max_connections: u32,
    transport: Transport,
    /// Each endpoint's key in the pool, when not the endpoint itself.
    keys: Vec<Box<str>>,
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
    /// Every connection to the endpoint this worker may open was busy for
    /// the whole connect timeout.
    #[error(
        "upstream {endpoint} overloaded: its {max} connections (max_connections_per_worker) stayed busy for {wait_ms} ms"
    )]
    Overflow {
        /// The endpoint tried.
        endpoint: String,
        /// The cap.
        max: u32,
        /// How long the request waited.
        wait_ms: u64,
    },
    /// The client's body failed while it was being sent: the client's
    /// fault, not the upstream's.
    #[error("{reason}")]
    ClientBody {
        /// What failed.
        reason: String,
        /// Set when the body stalled for the body idle timeout.
        idle: Option<crate::http::body::BodyIdle>,
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
            UpstreamError::Overflow { .. } => "overflow",
            UpstreamError::Reset { .. } | UpstreamError::ClientBody { .. } => "reset",
        }
    }
}

impl Cluster {
    /// A cluster over `endpoints` (non-empty) whose connections open within
    /// `connect_timeout`, at most `max_connections` per endpoint per worker.
    pub fn new(
        name: &str,
        endpoints: Vec<Authority>,
        connect_timeout: Duration,
        max_connections: u32,
    ) -> Self {
        Self {
            name: name.into(),
            endpoints,
            next: AtomicUsize::new(0),
            connect_timeout_ms: connect_timeout.as_millis().max(1) as u64,
            max_connections: max_connections.max(1),
            transport: Transport::plain(),
            keys: Vec::new(),
        }
    }

    /// This cluster with its connections opened by `transport` (protocol,
    /// TLS).
    pub fn with_transport(mut self, transport: Transport) -> Self {
        self.keys = if transport.is_plain_http1() {
            Vec::new()
        } else {
            self.endpoints
                .iter()
                .map(|e| transport.pool_key(e))
                .collect()
        };
        self.transport = transport;
        self
    }

    /// The key of `endpoint`'s connections in a worker's pool.
    fn pool_key<'a>(&'a self, endpoint: &'a Authority) -> &'a str {
        if self.keys.is_empty() {
            return endpoint.as_str();
        }
        self.endpoints
            .iter()
            .position(|e| e.as_str() == endpoint.as_str())
            .map_or(endpoint.as_str(), |i| &self.keys[i])
    }

    fn target<'a>(&'a self, endpoint: &'a Authority) -> pool::Target<'a> {
        pool::Target {
            endpoint,
            key: self.pool_key(endpoint),
            transport: &self.transport,
            connect_timeout: Duration::from_millis(self.connect_timeout_ms),
            max_connections: self.max_connections,
        }
    }

    /// Sends an `Upgrade` request (origin-form URI) to `endpoint` on a new
    /// HTTP/1.1 connection of its own, and waits up to `timeout` for the
    /// response headers (`101` or a refusal).
    pub async fn send_upgrade(
        &self,
        endpoint: &Authority,
        request: Request<ProxyBody>,
        timeout: Duration,
    ) -> Result<Response<Incoming>, UpstreamError> {
        let target = self.target(endpoint);
        match tokio::time::timeout(timeout, pool::send_upgrade(&target, request)).await {
            Ok(result) => result.map_err(|e| self.error(endpoint, e)),
            Err(_) => Err(self.timeout(endpoint, timeout)),
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
    /// `endpoint` and waits up to `timeout` for the response headers, counted
    /// from when the request has been sent: a streamed request body is
    /// bounded by the body idle timeout instead, however long it takes.
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
        let sent = request.body_mut().watch_end();
        let target = self.target(endpoint);
        let exchange = pool::send(&target, request);
        let mut exchange = std::pin::pin!(exchange);
        let deadline = tokio::time::sleep(timeout);
        let mut deadline = std::pin::pin!(deadline);
        let result = loop {
            tokio::select! {
                // The exchange first: no random pick per poll.
                biased;
                result = &mut exchange => break result,
                () = &mut deadline => {
                    // Still sending the body: the timeout starts when it ends.
                    let Some(sent) = &sent else {
                        return Err(self.timeout(endpoint, timeout));
                    };
                    let now = tokio::time::Instant::now();
                    let next = match sent.get() {
                        Some(at) => tokio::time::Instant::from_std(*at) + timeout,
                        None => now + timeout,
                    };
                    if next <= now {
                        return Err(self.timeout(endpoint, timeout));
                    }
                    deadline.as_mut().reset(next);
                }
            }
        };
        result.map_err(|e| self.error(endpoint, e))
    }

    fn error(&self, endpoint: &Authority, e: pool::SendError) -> UpstreamError {
        match e {
            pool::SendError::Connect(reason) => UpstreamError::Connect {
                endpoint: endpoint.to_string(),
                reason,
            },
            pool::SendError::Exchange(reason) => UpstreamError::Reset {
                endpoint: endpoint.to_string(),
                reason,
            },
            pool::SendError::ClientBody { reason, idle } => {
                UpstreamError::ClientBody { reason, idle }
            }
            pool::SendError::Overflow => UpstreamError::Overflow {
                endpoint: endpoint.to_string(),
                max: self.max_connections,
                wait_ms: self.connect_timeout_ms,
            },
        }
    }

    fn timeout(&self, endpoint: &Authority, timeout: Duration) -> UpstreamError {
        UpstreamError::Timeout {
            endpoint: endpoint.to_string(),
            timeout_ms: timeout.as_millis(),
        }
    }
}
