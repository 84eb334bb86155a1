//! `clusters.<name>:` the shape of an upstream cluster: its endpoints and
//! weights, the balancing policy, active health checks, passive outlier
//! detection, circuit breakers and timeouts, with the checks of every key.

use std::path::PathBuf;

use serde::{Deserialize, Serialize};

use super::ConfigError;

/// `clusters.<name>:`
#[derive(Debug, Clone, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct ClusterConfig {
    /// The endpoints: `"host:port"` or `{address: "host:port", weight: N}`.
    pub endpoints: Vec<EndpointConfig>,
    /// Time allowed to open a connection to an endpoint.
    #[serde(default = "default_connect_timeout_ms")]
    pub connect_timeout_ms: u64,
    /// Connections one worker keeps open to one endpoint; a request that
    /// finds them all busy waits up to `connect_timeout_ms` for one.
    #[serde(default = "default_max_connections_per_worker")]
    pub max_connections_per_worker: u32,
    /// How an endpoint is chosen for a request.
    #[serde(default)]
    pub lb_policy: LbPolicy,
    /// What `maglev` hashes; only with `lb_policy: maglev`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub hash_on: Option<HashOn>,
    /// How often endpoints named by DNS are resolved again.
    #[serde(default = "default_dns_refresh_ms")]
    pub dns_refresh_ms: u64,
    /// A pooled connection unused this long is closed.
    #[serde(default = "default_idle_timeout_ms")]
    pub idle_timeout_ms: u64,
    /// Active health checks; absent: none.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub health_check: Option<HealthCheckConfig>,
    /// Passive outlier detection; absent: none.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub outlier_detection: Option<OutlierConfig>,
    /// Process-wide limits of the cluster's load.
    #[serde(default)]
    pub circuit_breakers: CircuitBreakersConfig,
    /// The HTTP version spoken to the endpoints.
    #[serde(default)]
    pub protocol: UpstreamProtocol,
    /// TLS to the endpoints; absent: plaintext.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tls: Option<UpstreamTlsConfig>,
}

/// `clusters.<name>.endpoints[k]:` an address, alone or with its weight.
#[derive(Debug, Clone, Deserialize, Serialize, PartialEq)]
#[serde(untagged)]
pub enum EndpointConfig {
    /// `"host:port"`, weight 1.
    Address(String),
    /// `{address: "host:port", weight: N}`.
    Weighted {
        /// `host:port`: an IP literal or a DNS name.
        address: String,
        /// Relative share of the requests (default 1).
        #[serde(default = "default_weight")]
        weight: u32,
    },
}

impl EndpointConfig {
    /// The `host:port`.
    pub fn address(&self) -> &str {
        match self {
            EndpointConfig::Address(a) | EndpointConfig::Weighted { address: a, .. } => a,
        }
    }

    /// The weight (1 unless given).
    pub fn weight(&self) -> u32 {
        match self {
            EndpointConfig::Address(_) => 1,
            EndpointConfig::Weighted { weight, .. } => *weight,
        }
    }
}

impl From<&str> for EndpointConfig {
    fn from(address: &str) -> Self {
        EndpointConfig::Address(address.to_string())
    }
}

/// `clusters.<name>.lb_policy:`
#[derive(Debug, Clone, Copy, Default, Deserialize, Serialize, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum LbPolicy {
    /// The less loaded of two random endpoints (active requests / weight).
    #[default]
    LeastRequest,
    /// In turn, weighted (smooth weighted round robin).
    RoundRobin,
    /// At random, weighted.
    Random,
    /// Consistent hashing of `hash_on` (Maglev).
    Maglev,
}

impl LbPolicy {
    /// The name as configured.
    pub fn name(self) -> &'static str {
        match self {
            LbPolicy::LeastRequest => "least_request",
            LbPolicy::RoundRobin => "round_robin",
            LbPolicy::Random => "random",
            LbPolicy::Maglev => "maglev",
        }
    }
}

/// `clusters.<name>.hash_on:` the key of a request for `maglev`.
#[derive(Debug, Clone, Deserialize, Serialize, PartialEq, Eq)]
#[serde(try_from = "HashOnForm", into = "HashOnForm")]
pub enum HashOn {
    /// `{header: NAME}`: the value of a request header.
    Header(String),
    /// `{cookie: NAME}`: the value of a cookie.
    Cookie(String),
    /// `client_ip`: the client's IP address.
    ClientIp,
}

/// How `hash_on` is written: `client_ip`, `{header: NAME}` or
/// `{cookie: NAME}`.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(untagged)]
enum HashOnForm {
    Name(String),
    Header(HeaderKey),
    Cookie(CookieKey),
}

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
struct HeaderKey {
    header: String,
}

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
struct CookieKey {
    cookie: String,
}

impl TryFrom<HashOnForm> for HashOn {
    type Error = String;

    fn try_from(form: HashOnForm) -> Result<Self, String> {
        match form {
            HashOnForm::Name(n) if n == "client_ip" => Ok(HashOn::ClientIp),
            HashOnForm::Name(n) => Err(format!(
                "unknown hash_on {n:?}: expected client_ip, {{header: NAME}} or {{cookie: NAME}}"
            )),
            HashOnForm::Header(h) => Ok(HashOn::Header(h.header)),
            HashOnForm::Cookie(c) => Ok(HashOn::Cookie(c.cookie)),
        }
    }
}

impl From<HashOn> for HashOnForm {
    fn from(on: HashOn) -> Self {
        match on {
            HashOn::ClientIp => HashOnForm::Name("client_ip".into()),
            HashOn::Header(header) => HashOnForm::Header(HeaderKey { header }),
            HashOn::Cookie(cookie) => HashOnForm::Cookie(CookieKey { cookie }),
        }
    }
}

/// `clusters.<name>.health_check:`
#[derive(Debug, Clone, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct HealthCheckConfig {
    /// Path (and query) of the `GET` sent to each endpoint.
    pub path: String,
    /// Statuses that pass: codes (`204`) or inclusive ranges (`"200-299"`).
    #[serde(default = "default_expected_statuses")]
    pub expected_statuses: Vec<StatusRange>,
    /// Time between two checks of an endpoint.
    #[serde(default = "default_hc_interval_ms")]
    pub interval_ms: u64,
    /// Time allowed for a check's connection and response headers.
    #[serde(default = "default_hc_timeout_ms")]
    pub timeout_ms: u64,
    /// Passing checks in a row that make an unhealthy endpoint healthy.
    #[serde(default = "default_healthy_threshold")]
    pub healthy_threshold: u32,
    /// Failing checks in a row that make a healthy endpoint unhealthy.
    #[serde(default = "default_unhealthy_threshold")]
    pub unhealthy_threshold: u32,
    /// The `Host` header of a check; default: the endpoint's `host:port`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub host: Option<String>,
}

/// One entry of `expected_statuses`: a code or a `"low-high"` range.
#[derive(Debug, Clone, Deserialize, Serialize, PartialEq, Eq)]
#[serde(untagged)]
pub enum StatusRange {
    /// One code.
    Code(u16),
    /// `"200-299"` (or `"204"`).
    Range(String),
}

impl StatusRange {
    /// The inclusive bounds, or why it is not a status range.
    pub fn bounds(&self) -> Result<(u16, u16), String> {
        let (low, high) = match self {
            StatusRange::Code(c) => (*c, *c),
            StatusRange::Range(s) => {
                let parse = |t: &str| {
                    t.trim()
                        .parse::<u16>()
                        .map_err(|_| format!("invalid status range {s:?}: expected \"200-299\""))
                };
                match s.split_once('-') {
                    Some((a, b)) => (parse(a)?, parse(b)?),
                    None => {
                        let c = parse(s)?;
                        (c, c)
                    }
                }
            }
        };
        if !(100..=599).contains(&low) || !(100..=599).contains(&high) || low > high {
            return Err(format!(
                "invalid status range {low}-{high}: statuses are 100..=599, low first"
            ));
        }
        Ok((low, high))
    }
}

/// `clusters.<name>.outlier_detection:`
#[derive(Debug, Clone, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct OutlierConfig {
    /// 5xx responses in a row that eject an endpoint.
    #[serde(default = "default_consecutive")]
    pub consecutive_5xx: u32,
    /// Gateway failures in a row (connect failure, reset, timeout, 502, 503,
    /// 504) that eject an endpoint.
    #[serde(default = "default_consecutive")]
    pub consecutive_gateway_failures: u32,
    /// The first ejection's length; the n-th lasts n times as long.
    #[serde(default = "default_base_ejection_ms")]
    pub base_ejection_ms: u64,
    /// The longest ejection.
    #[serde(default = "default_max_ejection_ms")]
    pub max_ejection_ms: u64,
    /// Most endpoints ejected at once, in percent of the cluster's (one is
    /// always kept).
    #[serde(default = "default_max_ejected_percent")]
    pub max_ejected_percent: u32,
}

/// `clusters.<name>.circuit_breakers:` process-wide limits.
#[derive(Debug, Clone, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct CircuitBreakersConfig {
    /// Connections open to the cluster's endpoints, all workers together.
    pub max_connections: u32,
    /// Requests waiting for a connection.
    pub max_pending_requests: u32,
    /// Requests in flight (until their response body ends).
    pub max_requests: u32,
}

/// Default of every `circuit_breakers` limit.
pub const DEFAULT_CIRCUIT_LIMIT: u32 = 1024;

impl Default for CircuitBreakersConfig {
    fn default() -> Self {
        Self {
            max_connections: DEFAULT_CIRCUIT_LIMIT,
            max_pending_requests: DEFAULT_CIRCUIT_LIMIT,
            max_requests: DEFAULT_CIRCUIT_LIMIT,
        }
    }
}

/// Default connect timeout.
pub const DEFAULT_CONNECT_TIMEOUT_MS: u64 = 1_000;
/// Default cap of connections per endpoint per worker.
pub const DEFAULT_MAX_UPSTREAM_CONNECTIONS_PER_WORKER: u32 = 1024;
/// Default DNS refresh interval.
pub const DEFAULT_DNS_REFRESH_MS: u64 = 5_000;
/// Default idle timeout of a pooled upstream connection.
pub const DEFAULT_IDLE_TIMEOUT_MS: u64 = 90_000;
/// Largest endpoint weight.
pub const MAX_WEIGHT: u32 = 10_000;

fn default_connect_timeout_ms() -> u64 {
    DEFAULT_CONNECT_TIMEOUT_MS
}
fn default_max_connections_per_worker() -> u32 {
    DEFAULT_MAX_UPSTREAM_CONNECTIONS_PER_WORKER
}
fn default_dns_refresh_ms() -> u64 {
    DEFAULT_DNS_REFRESH_MS
}
fn default_idle_timeout_ms() -> u64 {
    DEFAULT_IDLE_TIMEOUT_MS
}
fn default_weight() -> u32 {
    1
}
fn default_expected_statuses() -> Vec<StatusRange> {
    vec![StatusRange::Range("200-299".into())]
}
fn default_hc_interval_ms() -> u64 {
    5_000
}
fn default_hc_timeout_ms() -> u64 {
    1_000
}
fn default_healthy_threshold() -> u32 {
    2
}
fn default_unhealthy_threshold() -> u32 {
    3
}
fn default_consecutive() -> u32 {
    5
}
fn default_base_ejection_ms() -> u64 {
    30_000
}
fn default_max_ejection_ms() -> u64 {
    300_000
}
fn default_max_ejected_percent() -> u32 {
    50
}

impl ClusterConfig {
    /// The errors of every key but the endpoints' addresses (parsed where
    /// the cluster is built), each at its path under `at`
    /// (`clusters.<name>`).
    pub fn check(&self, at: &str) -> Vec<ConfigError> {
        let mut errors = Vec::new();
        let mut err = |key: String, message: String| errors.push(ConfigError::new(key, message));
        if self.endpoints.is_empty() {
            err(
                format!("{at}.endpoints"),
                "at least one endpoint is required".into(),
            );
        }
        for (k, e) in self.endpoints.iter().enumerate() {
            let w = e.weight();
            if w == 0 || w > MAX_WEIGHT {
                err(
                    format!("{at}.endpoints[{k}].weight"),
                    format!("must be between 1 and {MAX_WEIGHT}, not {w}"),
                );
            }
        }
        let positive = [
            ("connect_timeout_ms", self.connect_timeout_ms),
            (
                "max_connections_per_worker",
                self.max_connections_per_worker.into(),
            ),
            ("dns_refresh_ms", self.dns_refresh_ms),
            ("idle_timeout_ms", self.idle_timeout_ms),
            (
                "circuit_breakers.max_connections",
                self.circuit_breakers.max_connections.into(),
            ),
            (
                "circuit_breakers.max_pending_requests",
                self.circuit_breakers.max_pending_requests.into(),
            ),
            (
                "circuit_breakers.max_requests",
                self.circuit_breakers.max_requests.into(),
            ),
        ];
        for (key, value) in positive {
            if value == 0 {
                err(format!("{at}.{key}"), "must be greater than 0".into());
            }
        }
        match (&self.hash_on, self.lb_policy) {
            (Some(_), p) if p != LbPolicy::Maglev => err(
                format!("{at}.hash_on"),
                format!(
                    "hash_on needs lb_policy: maglev (lb_policy is {})",
                    p.name()
                ),
            ),
            (None, LbPolicy::Maglev) => err(
                format!("{at}.hash_on"),
                "lb_policy maglev needs hash_on: {header: NAME}, {cookie: NAME} or client_ip"
                    .into(),
            ),
            (Some(HashOn::Header(h)), _) if http::HeaderName::try_from(h.as_str()).is_err() => err(
                format!("{at}.hash_on.header"),
                format!("invalid header name {h:?}"),
            ),
            (Some(HashOn::Cookie(c)), _) if c.is_empty() => err(
                format!("{at}.hash_on.cookie"),
                "the cookie name is empty".into(),
            ),
            _ => {}
        }
        if let Some(hc) = &self.health_check {
            let at = format!("{at}.health_check");
            if !hc.path.starts_with('/') || hc.path.parse::<http::uri::PathAndQuery>().is_err() {
                err(
                    format!("{at}.path"),
                    format!("invalid path {:?}: expected /path", hc.path),
                );
            }
            if hc.expected_statuses.is_empty() {
                err(
                    format!("{at}.expected_statuses"),
                    "at least one status is required".into(),
                );
            }
            for (k, s) in hc.expected_statuses.iter().enumerate() {
                if let Err(e) = s.bounds() {
                    err(format!("{at}.expected_statuses[{k}]"), e);
                }
            }
            for (key, value) in [
                ("interval_ms", hc.interval_ms),
                ("timeout_ms", hc.timeout_ms),
                ("healthy_threshold", hc.healthy_threshold.into()),
                ("unhealthy_threshold", hc.unhealthy_threshold.into()),
            ] {
                if value == 0 {
                    err(format!("{at}.{key}"), "must be greater than 0".into());
                }
            }
            if let Some(host) = &hc.host
                && http::HeaderValue::from_str(host).is_err()
            {
                err(format!("{at}.host"), format!("invalid host {host:?}"));
            }
        }
        if let Some(od) = &self.outlier_detection {
            let at = format!("{at}.outlier_detection");
            for (key, value) in [
                ("consecutive_5xx", od.consecutive_5xx.into()),
                (
                    "consecutive_gateway_failures",
                    od.consecutive_gateway_failures.into(),
                ),
                ("base_ejection_ms", od.base_ejection_ms),
                ("max_ejection_ms", od.max_ejection_ms),
            ] {
                if value == 0 {
                    err(format!("{at}.{key}"), "must be greater than 0".into());
                }
            }
            if od.max_ejection_ms < od.base_ejection_ms {
                err(
                    format!("{at}.max_ejection_ms"),
                    format!(
                        "must be at least base_ejection_ms ({})",
                        od.base_ejection_ms
                    ),
                );
            }
            if od.max_ejected_percent > 100 {
                err(
                    format!("{at}.max_ejected_percent"),
                    format!("must be at most 100, not {}", od.max_ejected_percent),
                );
            }
        }
        errors
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(yaml: &str) -> ClusterConfig {
        serde_yaml::from_str(yaml).unwrap()
    }

    #[test]
    fn old_and_weighted_endpoints_parse() {
        let c = parse("endpoints: ['127.0.0.1:1', {address: 'b:2', weight: 3}, {address: 'c:3'}]");
        let got: Vec<_> = c
            .endpoints
            .iter()
            .map(|e| (e.address(), e.weight()))
            .collect();
        assert_eq!(got, [("127.0.0.1:1", 1), ("b:2", 3), ("c:3", 1)]);
        assert_eq!(c.lb_policy, LbPolicy::LeastRequest);
        assert!(c.check("clusters.a").is_empty());
    }

    #[test]
    fn hash_on_forms_parse() {
        for (yaml, want) in [
            ("{header: x-user}", HashOn::Header("x-user".into())),
            ("{cookie: sid}", HashOn::Cookie("sid".into())),
            ("client_ip", HashOn::ClientIp),
        ] {
            let c = parse(&format!(
                "{{endpoints: ['a:1'], lb_policy: maglev, hash_on: {yaml}}}"
            ));
            assert_eq!(c.hash_on, Some(want));
            assert!(c.check("clusters.a").is_empty());
        }
    }

    #[test]
    fn bad_keys_are_named() {
        let c = parse(
            "{endpoints: [{address: 'a:1', weight: 0}], hash_on: client_ip, dns_refresh_ms: 0,
              health_check: {path: /h, interval_ms: 0, unhealthy_threshold: 0, expected_statuses: ['300-200']},
              outlier_detection: {max_ejected_percent: 101},
              circuit_breakers: {max_requests: 0}}",
        );
        let errors: Vec<String> = c
            .check("clusters.a")
            .iter()
            .map(|e| e.path.clone())
            .collect();
        for path in [
            "clusters.a.endpoints[0].weight",
            "clusters.a.hash_on",
            "clusters.a.dns_refresh_ms",
            "clusters.a.health_check.interval_ms",
            "clusters.a.health_check.unhealthy_threshold",
            "clusters.a.health_check.expected_statuses[0]",
            "clusters.a.outlier_detection.max_ejected_percent",
            "clusters.a.circuit_breakers.max_requests",
        ] {
            assert!(errors.iter().any(|e| e == path), "{path} not in {errors:?}");
        }
    }
}

/// `clusters.<name>.protocol:` the HTTP version spoken to the endpoints.
#[derive(Debug, Clone, Copy, Default, Deserialize, Serialize, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum UpstreamProtocol {
    /// HTTP/1.1, a request per connection at a time.
    #[default]
    Http1,
    /// HTTP/2 with prior knowledge (h2c on plaintext, `h2` by ALPN over
    /// TLS); a connection carries many requests at once.
    Http2,
    /// Over TLS, whatever the server picks by ALPN (`h2` or `http/1.1`);
    /// on plaintext, HTTP/1.1.
    Auto,
}

/// `clusters.<name>.tls:` TLS to the endpoints (TLS 1.2 and 1.3).
#[derive(Debug, Clone, Default, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct UpstreamTlsConfig {
    /// The server name sent (SNI) and verified. Default: the endpoint's
    /// host; an IP address endpoint is then verified against the IP
    /// addresses its certificate names, without SNI.
    #[serde(default)]
    pub sni: Option<String>,
    /// PEM bundle of the CAs trusted to sign the endpoints' certificates,
    /// relative to the config file. Default: the system's roots.
    #[serde(default)]
    pub ca_file: Option<PathBuf>,
    /// PEM certificate chain presented to the endpoints (needs `key_file`).
    #[serde(default)]
    pub cert_file: Option<PathBuf>,
    /// PEM private key of `cert_file`.
    #[serde(default)]
    pub key_file: Option<PathBuf>,
}
