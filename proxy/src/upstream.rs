//! Upstream clusters and the client that sends requests to them: keep-alive
//! connection pools, round-robin over endpoints, a timeout per route.
//!
//! Each worker thread has its own pools (one client per connect timeout):
//! a connection is driven by the worker that opened it and only its requests
//! use it, so no request waits on another thread. Pools outlive snapshots.

use std::cell::RefCell;
use std::collections::HashMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use http::uri::{Authority, PathAndQuery, Scheme};
use http::{Request, Response, Uri, Version};
use hyper::body::Incoming;
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::{TokioExecutor, TokioTimer};

use crate::http::ProxyBody;

/// A pooled HTTP/1.1 client.
pub type UpstreamClient = Client<HttpConnector, ProxyBody>;

/// Creates a client whose connections open within `connect_timeout`.
pub fn client(connect_timeout: Duration) -> UpstreamClient {
    let mut connector = HttpConnector::new();
    connector.set_nodelay(true);
    connector.set_connect_timeout(Some(connect_timeout));
    Client::builder(TokioExecutor::new())
        .pool_idle_timeout(Duration::from_secs(90))
        .pool_max_idle_per_host(1024)
        .pool_timer(TokioTimer::new())
        .timer(TokioTimer::new())
        .build(connector)
}

thread_local! {
    /// This worker's clients, by connect timeout in milliseconds.
    static CLIENTS: RefCell<HashMap<u64, UpstreamClient>> = RefCell::new(HashMap::new());
}

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
        let mut uri = http::uri::Parts::default();
        uri.scheme = Some(Scheme::HTTP);
        uri.authority = Some(endpoint.clone());
        uri.path_and_query = Some(path);
        *request.uri_mut() = Uri::from_parts(uri).expect("scheme, authority and path make a URI");
        *request.version_mut() = Version::HTTP_11;
        let sent = CLIENTS.with_borrow_mut(|clients| {
            let ms = self.connect_timeout_ms;
            clients
                .entry(ms)
                .or_insert_with(|| client(Duration::from_millis(ms)))
                .request(request)
        });
        match tokio::time::timeout(timeout, sent).await {
            Err(_) => Err(UpstreamError::Timeout {
                endpoint: endpoint.to_string(),
                timeout_ms: timeout.as_millis(),
            }),
            Ok(Err(e)) if e.is_connect() => Err(UpstreamError::Connect {
                endpoint: endpoint.to_string(),
                reason: error_chain(&e),
            }),
            Ok(Err(e)) => Err(UpstreamError::Reset {
                endpoint: endpoint.to_string(),
                reason: error_chain(&e),
            }),
            Ok(Ok(response)) => Ok(response),
        }
    }
}

fn error_chain(e: &dyn std::error::Error) -> String {
    let mut out = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        out.push_str(": ");
        out.push_str(&s.to_string());
        source = s.source();
    }
    out
}
