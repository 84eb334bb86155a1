//! What a route does with a request it matched: send it to a cluster (one,
//! or one picked by weight), or answer it itself with a redirect or a fixed
//! response; and whether a copy goes to a shadow cluster.

use std::sync::Arc;

use bytes::Bytes;
use http::request::Parts;
use http::uri::Authority;
use http::{HeaderValue, Response, StatusCode, header};

use crate::http::ProxyBody;
use crate::upstream::Cluster;

/// Where a route's requests go.
pub enum RouteAction {
    /// To one cluster.
    Cluster(Arc<Cluster>),
    /// To one cluster of a weighted split, picked per request.
    Split(WeightedClusters),
    /// Nowhere: the proxy answers with a redirect.
    Redirect(Redirect),
    /// Nowhere: the proxy answers with a fixed response.
    Direct(DirectResponse),
}

impl RouteAction {
    /// The cluster this request goes to (a weighted pick for a split), or
    /// `None` when the proxy answers itself.
    pub fn pick(&self) -> Option<&Arc<Cluster>> {
        match self {
            RouteAction::Cluster(c) => Some(c),
            RouteAction::Split(split) => Some(split.pick()),
            RouteAction::Redirect(_) | RouteAction::Direct(_) => None,
        }
    }

    /// The proxy's own answer to `head`, for a redirect or direct response.
    pub fn local_response(&self, head: &Parts, tls: bool) -> Option<Response<ProxyBody>> {
        match self {
            RouteAction::Redirect(r) => Some(r.response(head, tls)),
            RouteAction::Direct(d) => Some(d.response()),
            RouteAction::Cluster(_) | RouteAction::Split(_) => None,
        }
    }

    /// Every cluster requests may be sent to.
    pub fn clusters(&self) -> impl Iterator<Item = &Arc<Cluster>> {
        let (one, split) = match self {
            RouteAction::Cluster(c) => (Some(c), None),
            RouteAction::Split(s) => (None, Some(s.clusters.iter().map(|(_, c)| c))),
            _ => (None, None),
        };
        one.into_iter().chain(split.into_iter().flatten())
    }
}

/// Clusters with weights; a request goes to one with probability
/// weight / total.
pub struct WeightedClusters {
    /// Each cluster with the end of its range in `0..total`.
    clusters: Vec<(u64, Arc<Cluster>)>,
    total: u64,
}

impl WeightedClusters {
    /// A split over `(weight, cluster)`; `None` when the weights sum to 0.
    pub fn new(weighted: Vec<(u32, Arc<Cluster>)>) -> Option<Self> {
        let mut total = 0u64;
        let clusters: Vec<(u64, Arc<Cluster>)> = weighted
            .into_iter()
            .map(|(weight, cluster)| {
                total += u64::from(weight);
                (total, cluster)
            })
            .collect();
        (total > 0).then_some(Self { clusters, total })
    }

    /// A cluster, picked by weight: one random number and a scan of the
    /// cumulative weights.
    pub fn pick(&self) -> &Arc<Cluster> {
        let r = fastrand::u64(0..self.total);
        let (_, cluster) = self
            .clusters
            .iter()
            .find(|(end, _)| r < *end)
            .unwrap_or_else(|| self.clusters.last().expect("a split has clusters"));
        cluster
    }
}

/// How a redirect's path is made.
#[derive(Debug, Clone, PartialEq)]
pub enum RedirectPath {
    /// The request's path.
    Keep,
    /// This path.
    Replace(String),
    /// The request's path with the matched prefix replaced.
    Prefix {
        /// The route's `match.path_prefix` (or `match.path`).
        matched: String,
        /// What replaces it.
        replacement: String,
    },
}

/// A redirect the proxy answers with.
#[derive(Debug, Clone)]
pub struct Redirect {
    /// 301, 302, 303, 307 or 308.
    pub status: StatusCode,
    /// The scheme, when it changes.
    pub scheme: Option<String>,
    /// The host, when it changes.
    pub host: Option<String>,
    /// The port, when it changes.
    pub port: Option<u16>,
    /// The path.
    pub path: RedirectPath,
    /// Whether the query is dropped.
    pub strip_query: bool,
}

impl Redirect {
    /// The `Location` for `head`: a path (with the query, unless stripped)
    /// when neither scheme, host nor port changes; else an absolute URL
    /// whose unchanged parts are the request's (scheme `http` unless the
    /// request carried one; the port is dropped when the scheme changes,
    /// and when it is the scheme's default).
    pub fn location(&self, head: &Parts, tls: bool) -> String {
        let path = head.uri.path();
        let mut out = String::with_capacity(64);
        let absolute = self.scheme.is_some() || self.host.is_some() || self.port.is_some();
        if absolute {
            let listener_scheme = if tls { "https" } else { "http" };
            let request_scheme = head.uri.scheme_str().unwrap_or(listener_scheme);
            let scheme = self.scheme.as_deref().unwrap_or(request_scheme);
            let authority: Option<Authority> = head
                .headers
                .get(header::HOST)
                .and_then(|h| h.to_str().ok())
                .and_then(|h| h.parse().ok());
            let host = self
                .host
                .as_deref()
                .or(authority.as_ref().map(Authority::host))
                .unwrap_or("localhost");
            let port = self.port.or_else(|| {
                let same_scheme = self.scheme.as_deref().is_none_or(|s| s == request_scheme);
                authority
                    .as_ref()
                    .and_then(Authority::port_u16)
                    .filter(|_| same_scheme)
            });
            out.push_str(scheme);
            out.push_str("://");
            out.push_str(host);
            match (scheme, port) {
                (_, None) | ("http", Some(80)) | ("https", Some(443)) => {}
                (_, Some(port)) => {
                    out.push(':');
                    out.push_str(&port.to_string());
                }
            }
        }
        match &self.path {
            RedirectPath::Keep => out.push_str(path),
            RedirectPath::Replace(p) => out.push_str(p),
            RedirectPath::Prefix {
                matched,
                replacement,
            } => match path.strip_prefix(matched.as_str()) {
                Some(rest) => {
                    out.push_str(replacement);
                    out.push_str(rest);
                }
                None => out.push_str(path),
            },
        }
        if !self.strip_query
            && let Some(query) = head.uri.query()
        {
            out.push('?');
            out.push_str(query);
        }
        out
    }

    /// The redirect for `head`, with an empty body.
    pub fn response(&self, head: &Parts, tls: bool) -> Response<ProxyBody> {
        let mut response = Response::new(ProxyBody::Empty);
        *response.status_mut() = self.status;
        let headers = response.headers_mut();
        // Every part is checked at build time; the request's parts are
        // header-safe already.
        if let Ok(location) = HeaderValue::try_from(self.location(head, tls)) {
            headers.insert(header::LOCATION, location);
        }
        headers.insert(header::CONTENT_LENGTH, HeaderValue::from_static("0"));
        response
    }
}

/// A fixed response the proxy answers with.
#[derive(Debug, Clone)]
pub struct DirectResponse {
    /// Its status.
    pub status: StatusCode,
    /// Its body.
    pub body: Bytes,
    /// Its `Content-Type`, sent with a body.
    pub content_type: HeaderValue,
}

impl DirectResponse {
    /// The response: the body is shared, not copied.
    pub fn response(&self) -> Response<ProxyBody> {
        let mut response = Response::new(if self.body.is_empty() {
            ProxyBody::Empty
        } else {
            ProxyBody::full(self.body.clone())
        });
        *response.status_mut() = self.status;
        let headers = response.headers_mut();
        if !self.body.is_empty() {
            headers.insert(header::CONTENT_TYPE, self.content_type.clone());
        }
        headers.insert(header::CONTENT_LENGTH, HeaderValue::from(self.body.len()));
        response
    }
}

/// A shadow cluster that receives a copy of a share of a route's requests.
pub struct Mirror {
    /// The shadow cluster.
    pub cluster: Arc<Cluster>,
    /// The share mirrored, 0–100.
    pub percent: f64,
}

impl Mirror {
    /// Whether this request is mirrored: no random number at 100%.
    pub fn sampled(&self) -> bool {
        self.percent >= 100.0 || (self.percent > 0.0 && fastrand::f64() * 100.0 < self.percent)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn head(uri: &str, host: &str) -> Parts {
        http::Request::get(uri)
            .header("host", host)
            .body(())
            .unwrap()
            .into_parts()
            .0
    }

    impl Redirect {
        fn location_http(&self, head: &Parts) -> String {
            self.location(head, false)
        }
    }

    fn redirect() -> Redirect {
        Redirect {
            status: StatusCode::MOVED_PERMANENTLY,
            scheme: None,
            host: None,
            port: None,
            path: RedirectPath::Keep,
            strip_query: false,
        }
    }

    #[test]
    fn a_redirect_of_the_path_alone_is_relative() {
        let r = Redirect {
            path: RedirectPath::Prefix {
                matched: "/old/".into(),
                replacement: "/new/".into(),
            },
            ..redirect()
        };
        assert_eq!(
            r.location_http(&head("/old/a/b?x=1", "h:8080")),
            "/new/a/b?x=1"
        );
        let r = Redirect {
            strip_query: true,
            path: RedirectPath::Replace("/there".into()),
            ..redirect()
        };
        assert_eq!(r.location_http(&head("/here?x=1", "h")), "/there");
    }

    #[test]
    fn a_redirect_to_another_scheme_or_host_is_absolute() {
        // The scheme of a request without one is the listener's.
        let host = Redirect {
            host: Some("new.example".into()),
            ..redirect()
        };
        assert_eq!(
            host.location(&head("/a", "old.example"), true),
            "https://new.example/a"
        );
        let https = Redirect {
            scheme: Some("https".into()),
            ..redirect()
        };
        // The port goes with the scheme it belonged to.
        assert_eq!(
            https.location_http(&head("/a?q", "example.com:8080")),
            "https://example.com/a?q"
        );
        let host = Redirect {
            host: Some("new.example".into()),
            ..redirect()
        };
        assert_eq!(
            host.location_http(&head("/a", "old.example:8080")),
            "http://new.example:8080/a"
        );
        let port = Redirect {
            scheme: Some("https".into()),
            port: Some(443),
            ..redirect()
        };
        assert_eq!(port.location_http(&head("/", "h:80")), "https://h/");
        let ipv6 = Redirect {
            port: Some(9000),
            ..redirect()
        };
        assert_eq!(
            ipv6.location_http(&head("/", "[::1]:80")),
            "http://[::1]:9000/"
        );
    }

    #[test]
    fn a_split_picks_by_weight() {
        let c = |name: &str| {
            let settings = crate::upstream::ClusterSettings {
                endpoints: vec![("127.0.0.1:1".parse().unwrap(), 1)],
                lb_policy: Default::default(),
                hash_on: None,
                connect_timeout: std::time::Duration::from_secs(1),
                max_connections_per_worker: 1,
                idle_timeout: std::time::Duration::from_secs(90),
                dns_refresh: std::time::Duration::from_secs(5),
                limits: (1, 1, 1),
                health_check: None,
                outlier: None,
            };
            Arc::new(Cluster::new(name, settings))
        };
        assert!(WeightedClusters::new(vec![(0, c("a"))]).is_none());
        let split = WeightedClusters::new(vec![(0, c("never")), (3, c("a")), (1, c("b"))]).unwrap();
        let mut a = 0;
        for _ in 0..4000 {
            match &*split.pick().name {
                "a" => a += 1,
                "b" => {}
                other => panic!("picked {other}"),
            }
        }
        assert!((2700..3300).contains(&a), "{a}");
    }
}
