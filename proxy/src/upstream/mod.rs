//! Upstream clusters and sending requests to them: an endpoint is chosen
//! by the cluster's balancer ([`balance`]) among those health checks
//! ([`health`]) and outlier detection ([`outlier`]) leave usable, under the
//! cluster's circuit breakers ([`circuit`]); keep-alive connections
//! ([`pool`], one per worker thread, a cap per endpoint); a timeout per
//! route for the response headers that starts once the request has been
//! sent.

pub mod balance;
pub mod circuit;
pub mod dns;
pub mod endpoint;
pub mod health;
pub mod metrics;
pub mod outlier;
mod pool;
pub mod transport;

use std::net::IpAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

pub use endpoint::{ActiveRequest, EndpointState, Health};
pub use pool::{StreamSlot, sweep};
pub use transport::Transport;

use http::uri::{Authority, PathAndQuery};
use http::{HeaderMap, Request, Response, Version};
use hyper::body::Incoming;

use crate::config::{HashOn, LbPolicy};
use crate::http::ProxyBody;
use balance::{Balancer, Endpoints};
use circuit::{Breakers, Limit};
use health::HealthSettings;
use outlier::{Outcome, Outlier, OutlierSettings};
use pool::PoolSettings;

/// One endpoint of a cluster build.
pub struct Endpoint {
    /// `host:port`.
    pub authority: Authority,
    /// Its weight.
    pub weight: u32,
    /// Its live state, shared across workers and reloads.
    pub state: Arc<EndpointState>,
}

/// Everything a cluster is built from (checked config).
pub struct ClusterSettings {
    /// Endpoints with their weights.
    pub endpoints: Vec<(Authority, u32)>,
    /// The balancing policy.
    pub lb_policy: LbPolicy,
    /// The hash key of `maglev`.
    pub hash_on: Option<HashOn>,
    /// Connect timeout.
    pub connect_timeout: Duration,
    /// Connections per endpoint per worker.
    pub max_connections_per_worker: u32,
    /// Pooled connections' idle timeout.
    pub idle_timeout: Duration,
    /// DNS refresh interval.
    pub dns_refresh: Duration,
    /// Circuit breaker limits: connections, pending, requests.
    pub limits: (u32, u32, u32),
    /// Active health checks.
    pub health_check: Option<HealthSettings>,
    /// Outlier detection.
    pub outlier: Option<OutlierSettings>,
}

/// A named set of endpoints.
pub struct Cluster {
    /// The cluster's name.
    pub name: Arc<str>,
    endpoints: Vec<Endpoint>,
    states: Vec<Arc<EndpointState>>,
    balancer: Balancer,
    hash_on: Option<HashOn>,
    pool: PoolSettings,
    dns_refresh: Duration,
    health_check: Option<Arc<HealthSettings>>,
    outlier: Option<Outlier>,
    /// The background tasks (health checks, DNS), aborted on drop.
    tasks: Mutex<Vec<tokio::task::AbortHandle>>,
    /// How connections are opened: protocol, TLS.
    transport: Transport,
    /// Each endpoint's key in the pool, when not the endpoint itself.
    keys: Vec<Box<str>>,
}

/// What a request offers the balancer.
pub struct PickInput<'a> {
    /// The request's headers (for `hash_on` header and cookie).
    pub headers: &'a HeaderMap,
    /// The client's IP (for `hash_on: client_ip`).
    pub client_ip: IpAddr,
    /// The previous attempt's endpoint, avoided when another is usable.
    pub avoid: Option<&'a Authority>,
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
    /// A circuit breaker of the cluster refused the request.
    #[error("cluster {cluster} overloaded: {} ({max}) reached", limit.name())]
    Overloaded {
        /// The cluster.
        cluster: Arc<str>,
        /// The limit reached.
        limit: Limit,
        /// Its value.
        max: u32,
    },
    /// Every endpoint is unhealthy or ejected.
    #[error("cluster {cluster} has no healthy endpoint")]
    NoHealthyEndpoint {
        /// The cluster.
        cluster: Arc<str>,
    },
}

impl UpstreamError {
    /// The failure's name, as filters see it in `upstream.failure`.
    pub fn kind(&self) -> &'static str {
        match self {
            UpstreamError::Timeout { .. } => "timeout",
            UpstreamError::Connect { .. } => "connect-failure",
            UpstreamError::Overflow { .. } | UpstreamError::Overloaded { .. } => "overflow",
            UpstreamError::NoHealthyEndpoint { .. } => "no-healthy-endpoint",
            UpstreamError::Reset { .. } | UpstreamError::ClientBody { .. } => "reset",
        }
    }
}

impl Cluster {
    /// A cluster from `settings` (endpoints non-empty), its endpoints'
    /// state shared with any live build of the cluster of the same name.
    pub fn new(name: &str, settings: ClusterSettings) -> Self {
        let counters = endpoint::cluster_counters(name);
        let endpoints: Vec<Endpoint> = settings
            .endpoints
            .into_iter()
            .map(|(authority, weight)| {
                let state = EndpointState::shared(name, authority.as_str(), &counters);
                if settings.health_check.is_none() {
                    state.reset_health();
                }
                Endpoint {
                    authority,
                    weight,
                    state,
                }
            })
            .collect();
        let addresses: Vec<&str> = endpoints.iter().map(|e| e.authority.as_str()).collect();
        let weights: Vec<u32> = endpoints.iter().map(|e| e.weight).collect();
        let balancer = Balancer::new(settings.lb_policy, &addresses, &weights);
        let (max_connections, max_pending, max_requests) = settings.limits;
        Self {
            name: name.into(),
            states: endpoints.iter().map(|e| e.state.clone()).collect(),
            endpoints,
            balancer,
            hash_on: settings.hash_on,
            pool: PoolSettings {
                connect_timeout: settings.connect_timeout.max(Duration::from_millis(1)),
                max_connections: settings.max_connections_per_worker.max(1),
                idle_timeout: settings.idle_timeout,
                breakers: Breakers {
                    max_connections,
                    max_pending,
                    max_requests,
                    counters,
                },
            },
            dns_refresh: settings.dns_refresh,
            health_check: settings.health_check.map(Arc::new),
            outlier: settings.outlier.map(Outlier::new),
            tasks: Mutex::new(Vec::new()),
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
                .map(|e| transport.pool_key(&e.authority))
                .collect()
        };
        self.transport = transport;
        self
    }

    /// Where endpoint `endpoint`'s requests go in a worker's pool.
    fn target<'a>(&'a self, endpoint: &'a Authority) -> pool::Target<'a> {
        let key = match self.keys.is_empty() {
            true => endpoint.as_str(),
            false => self
                .endpoints
                .iter()
                .position(|e| e.authority == *endpoint)
                .map_or(endpoint.as_str(), |i| &self.keys[i]),
        };
        pool::Target {
            endpoint,
            key,
            transport: &self.transport,
            connect_timeout: self.pool.connect_timeout,
            max_connections: self.pool.max_connections,
            idle_timeout: self.pool.idle_timeout,
            breakers: &self.pool.breakers,
        }
    }

    /// Sends an `Upgrade` request (origin-form URI) to endpoint `i` on a
    /// new HTTP/1.1 connection of its own, and waits up to `timeout` for
    /// the response headers (`101` or a refusal).
    pub async fn send_upgrade(
        &self,
        i: usize,
        request: Request<ProxyBody>,
        timeout: Duration,
    ) -> Result<Response<Incoming>, UpstreamError> {
        let endpoint = &self.endpoints[i].authority;
        let target = self.target(endpoint);
        match tokio::time::timeout(timeout, pool::send_upgrade(&target, request)).await {
            Ok(result) => result.map_err(|e| self.error(endpoint, e)),
            Err(_) => Err(self.timeout(endpoint, timeout)),
        }
    }

    /// Starts the cluster's background tasks on the current runtime:
    /// health checks, and DNS refresh of endpoints named by DNS. Once; they
    /// stop when the cluster is dropped.
    pub fn start(&self) {
        let mut tasks = self.tasks.lock().unwrap_or_else(|e| e.into_inner());
        if !tasks.is_empty() {
            return;
        }
        let names: Vec<String> = self
            .endpoints
            .iter()
            .map(|e| e.authority.as_str())
            .filter(|a| dns::is_dns_name(a))
            .map(str::to_string)
            .collect();
        if !names.is_empty() {
            let task = tokio::spawn(dns::refresh(self.name.clone(), names, self.dns_refresh));
            tasks.push(task.abort_handle());
        }
        if let Some(hc) = &self.health_check {
            let task = tokio::spawn(health::run(
                self.name.clone(),
                self.states.clone(),
                hc.clone(),
                self.transport.clone(),
            ));
            tasks.push(task.abort_handle());
        }
    }

    /// The endpoints.
    pub fn endpoints(&self) -> &[Endpoint] {
        &self.endpoints
    }

    /// The process-wide counts of the circuit breakers: (connections,
    /// pending requests, requests).
    pub fn load(&self) -> (u32, u32, u32) {
        use std::sync::atomic::Ordering::Relaxed;
        let c = &self.pool.breakers.counters;
        (
            c.connections.load(Relaxed),
            c.pending.load(Relaxed),
            c.requests.load(Relaxed),
        )
    }

    /// Whether endpoint `i` is ejected by outlier detection now.
    pub fn ejected(&self, i: usize) -> bool {
        self.endpoints[i].state.ejected(endpoint::now_ms())
    }

    /// The endpoint (index) for a request, or 503's error when none is
    /// usable.
    pub fn pick(&self, input: &PickInput<'_>) -> Result<usize, UpstreamError> {
        let key = match &self.hash_on {
            None => None,
            Some(on) => hash_key(on, input),
        };
        let avoid = input
            .avoid
            .and_then(|a| self.endpoints.iter().position(|e| e.authority == *a));
        self.balancer
            .pick(self, key, avoid)
            .ok_or_else(|| UpstreamError::NoHealthyEndpoint {
                cluster: self.name.clone(),
            })
    }

    /// Sends `request` (whose URI holds only the path and query) to
    /// endpoint `i` and waits up to `timeout` for the response headers,
    /// counted from when the request has been sent: a streamed request body
    /// is bounded by the body idle timeout instead, however long it takes.
    /// The response comes with the guard that counts it in flight until
    /// dropped; the outcome goes to outlier detection.
    pub async fn send(
        &self,
        i: usize,
        mut request: Request<ProxyBody>,
        timeout: Duration,
    ) -> Result<(Response<Incoming>, ActiveRequest), UpstreamError> {
        let breakers = &self.pool.breakers;
        breakers.request().map_err(|limit| self.overloaded(limit))?;
        let endpoint = &self.endpoints[i];
        let active = endpoint.state.start();
        let path = request
            .uri()
            .path_and_query()
            .cloned()
            .unwrap_or_else(|| PathAndQuery::from_static("/"));
        *request.uri_mut() = path.into();
        *request.version_mut() = Version::HTTP_11;
        let result = self.exchange(&endpoint.authority, request, timeout).await;
        let outcome = match &result {
            Ok(response) if response.status().is_server_error() => {
                endpoint.state.count_5xx();
                Some(Outcome::Status(response.status().as_u16()))
            }
            Ok(_) => Some(Outcome::Success),
            Err(UpstreamError::Connect { .. }) => {
                endpoint.state.count_connect_failure();
                Some(Outcome::ConnectFailure)
            }
            Err(UpstreamError::Timeout { .. }) => {
                endpoint.state.count_timeout();
                Some(Outcome::GatewayFailure)
            }
            Err(UpstreamError::Reset { .. }) => Some(Outcome::GatewayFailure),
            Err(_) => None,
        };
        if let (Some(outlier), Some(outcome)) = (&self.outlier, outcome) {
            outlier.report(&self.name, &self.states, i, outcome);
        }
        result.map(|response| (response, active))
    }

    fn overloaded(&self, limit: Limit) -> UpstreamError {
        let b = &self.pool.breakers;
        UpstreamError::Overloaded {
            cluster: self.name.clone(),
            limit,
            max: match limit {
                Limit::MaxConnections => b.max_connections,
                Limit::MaxPendingRequests => b.max_pending,
                Limit::MaxRequests => b.max_requests,
            },
        }
    }

    async fn exchange(
        &self,
        endpoint: &Authority,
        mut request: Request<ProxyBody>,
        timeout: Duration,
    ) -> Result<Response<Incoming>, UpstreamError> {
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
                max: self.pool.max_connections,
                wait_ms: self.pool.connect_timeout.as_millis() as u64,
            },
            pool::SendError::Overloaded(limit) => self.overloaded(limit),
        }
    }

    fn timeout(&self, endpoint: &Authority, timeout: Duration) -> UpstreamError {
        UpstreamError::Timeout {
            endpoint: endpoint.to_string(),
            timeout_ms: timeout.as_millis(),
        }
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        for task in self
            .tasks
            .get_mut()
            .unwrap_or_else(|e| e.into_inner())
            .drain(..)
        {
            task.abort();
        }
    }
}

impl Endpoints for Cluster {
    fn count(&self) -> usize {
        self.endpoints.len()
    }
    #[inline]
    fn usable(&self, i: usize) -> bool {
        self.endpoints[i].state.usable()
    }
    fn active(&self, i: usize) -> u32 {
        self.endpoints[i].state.active()
    }
    fn weight(&self, i: usize) -> u32 {
        self.endpoints[i].weight
    }
}

/// The hash of a request's `hash_on` key; `None` without one.
fn hash_key(on: &HashOn, input: &PickInput<'_>) -> Option<u64> {
    let key: &[u8] = match on {
        HashOn::Header(name) => input.headers.get(name.as_str())?.as_bytes(),
        HashOn::Cookie(name) => {
            return cookie(input.headers, name).map(|v| balance::stable_hash(v, 0));
        }
        HashOn::ClientIp => {
            return Some(match input.client_ip {
                IpAddr::V4(ip) => balance::stable_hash(&ip.octets(), 0),
                IpAddr::V6(ip) => balance::stable_hash(&ip.octets(), 0),
            });
        }
    };
    Some(balance::stable_hash(key, 0))
}

/// The value of cookie `name` in the request's `Cookie` headers.
fn cookie<'a>(headers: &'a HeaderMap, name: &str) -> Option<&'a [u8]> {
    headers
        .get_all(http::header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .find_map(|pair| {
            let (k, v) = pair.trim().split_once('=')?;
            (k == name).then_some(v.as_bytes())
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cookie_is_found_among_others() {
        let mut h = HeaderMap::new();
        h.append(http::header::COOKIE, "a=1; sid=xyz".parse().unwrap());
        h.append(http::header::COOKIE, "b=2".parse().unwrap());
        assert_eq!(cookie(&h, "sid"), Some(&b"xyz"[..]));
        assert_eq!(cookie(&h, "b"), Some(&b"2"[..]));
        assert_eq!(cookie(&h, "c"), None);
    }
}
