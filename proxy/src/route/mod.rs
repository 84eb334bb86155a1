//! Matching a request to a route: host, path, path prefix, methods and
//! headers; routes are tried in order and the first match wins. What the
//! route then does is its [`RouteAction`] ([`action`]), with its
//! [`Rewrite`] ([`rewrite`]) and [`Mirror`]; [`build`] makes them from the
//! config.

pub mod action;
pub mod build;
pub mod rewrite;

use std::sync::Arc;

use http::request::Parts;
use http::{HeaderName, Method};

use crate::filter::FilterChain;
use crate::http::target::route_host;
use crate::upstream::Cluster;
pub use action::{Mirror, RouteAction};
pub use rewrite::Rewrite;

/// How a route's `host` condition matches.
#[derive(Debug, Clone, PartialEq)]
pub enum HostMatch {
    /// The host equals this (lower-case, no port).
    Exact(String),
    /// The host ends with this suffix, which starts with `.` (`*.example.com`).
    Suffix(String),
}

/// How one header condition matches.
#[derive(Debug, Clone, PartialEq)]
pub enum HeaderCondition {
    /// The value equals this.
    Exact(String),
    /// The value starts with this.
    Prefix(String),
    /// The header is present (`true`) or absent (`false`).
    Present(bool),
}

/// A route's conditions; each one given must hold.
#[derive(Debug, Clone, Default)]
pub struct RouteMatch {
    /// Host condition.
    pub host: Option<HostMatch>,
    /// Exact path.
    pub path: Option<String>,
    /// Path prefix.
    pub path_prefix: Option<String>,
    /// Allowed methods.
    pub methods: Option<Vec<Method>>,
    /// Header conditions.
    pub headers: Vec<(HeaderName, HeaderCondition)>,
}

impl RouteMatch {
    /// Whether `request` (whose host, without port or trailing dot, is
    /// `host`; any case) satisfies every condition.
    pub fn matches(&self, request: &Parts, host: Option<&str>) -> bool {
        if let Some(want) = &self.host {
            let Some(host) = host else { return false };
            let ok = match want {
                HostMatch::Exact(h) => host.eq_ignore_ascii_case(h),
                HostMatch::Suffix(s) => {
                    host.len() > s.len()
                        && host.as_bytes()[host.len() - s.len()..]
                            .eq_ignore_ascii_case(s.as_bytes())
                }
            };
            if !ok {
                return false;
            }
        }
        let path = request.uri.path();
        if self.path.as_deref().is_some_and(|p| p != path) {
            return false;
        }
        if self
            .path_prefix
            .as_deref()
            .is_some_and(|p| !path.starts_with(p))
        {
            return false;
        }
        if self
            .methods
            .as_ref()
            .is_some_and(|m| !m.contains(&request.method))
        {
            return false;
        }
        self.headers.iter().all(|(name, cond)| {
            let value = request.headers.get(name);
            match cond {
                HeaderCondition::Present(want) => value.is_some() == *want,
                HeaderCondition::Exact(v) => value.is_some_and(|x| x.as_bytes() == v.as_bytes()),
                HeaderCondition::Prefix(v) => {
                    value.is_some_and(|x| x.as_bytes().starts_with(v.as_bytes()))
                }
            }
        })
    }
}

/// A route: where matching requests go and what runs on them.
pub struct Route {
    /// The route's name.
    pub name: Arc<str>,
    /// Its conditions.
    pub matcher: RouteMatch,
    /// Its filter chain.
    pub chain: Arc<FilterChain>,
    /// Where requests go: a cluster, a weighted split, or the proxy's own
    /// redirect or direct response.
    pub action: RouteAction,
    /// Rewrites of the path and host as the request goes upstream.
    pub rewrite: Option<Rewrite>,
    /// Where a copy of the request goes.
    pub mirror: Option<Mirror>,
    /// Time allowed for the upstream's response headers.
    pub timeout: std::time::Duration,
    /// Largest body buffered for a body phase.
    pub max_body_bytes: u64,
    /// Bound on the whole exchange (`max_stream_duration_ms`), if any.
    pub stream_limit: Option<crate::proxy::stream_limit::StreamLimit>,
    /// `Upgrade` protocols allowed (lower case), and the route's config
    /// path, for the refusal's message.
    pub upgrades: crate::proxy::upgrade::Upgrades,
    /// Its request counters and duration histogram, resolved at build.
    pub metrics: crate::telemetry::http::RouteMetrics,
}

impl Route {
    /// Every cluster the route sends to, its mirror's included.
    pub fn clusters(&self) -> impl Iterator<Item = &Arc<Cluster>> {
        self.action
            .clusters()
            .chain(self.mirror.iter().map(|m| &m.cluster))
    }
}

/// A listener's routes, in order.
#[derive(Default)]
pub struct RouteTable {
    routes: Vec<Arc<Route>>,
}

impl RouteTable {
    /// Builds a table from routes in priority order.
    pub fn new(routes: Vec<Arc<Route>>) -> Self {
        Self { routes }
    }

    /// The first route matching `request`, whose target is settled
    /// ([`crate::http::target::settle`]).
    pub fn find(&self, request: &Parts) -> Option<&Arc<Route>> {
        let host = route_host(request);
        self.routes
            .iter()
            .find(|r| r.matcher.matches(request, host))
    }

    /// The routes.
    pub fn routes(&self) -> &[Arc<Route>] {
        &self.routes
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn req(method: &str, uri: &str, headers: &[(&str, &str)]) -> Parts {
        let mut b = http::Request::builder().method(method).uri(uri);
        for (k, v) in headers {
            b = b.header(*k, *v);
        }
        b.body(()).unwrap().into_parts().0
    }

    #[test]
    fn host_exact_and_suffix() {
        let exact = RouteMatch {
            host: Some(HostMatch::Exact("api.example.com".into())),
            ..Default::default()
        };
        let r = req("GET", "/", &[("host", "API.example.com:8080")]);
        assert!(exact.matches(&r, route_host(&r)));
        let suffix = RouteMatch {
            host: Some(HostMatch::Suffix(".example.com".into())),
            ..Default::default()
        };
        assert!(suffix.matches(&r, route_host(&r)));
        let bare = req("GET", "/", &[("host", "example.com")]);
        assert!(!suffix.matches(&bare, route_host(&bare)));
    }

    #[test]
    fn path_methods_headers() {
        let m = RouteMatch {
            path_prefix: Some("/api/".into()),
            methods: Some(vec![Method::POST]),
            headers: vec![
                (
                    HeaderName::from_static("x-env"),
                    HeaderCondition::Exact("canary".into()),
                ),
                (
                    HeaderName::from_static("x-debug"),
                    HeaderCondition::Present(false),
                ),
            ],
            ..Default::default()
        };
        let ok = req("POST", "/api/x?q=1", &[("x-env", "canary")]);
        assert!(m.matches(&ok, None));
        assert!(!m.matches(&req("GET", "/api/x", &[("x-env", "canary")]), None));
        assert!(!m.matches(&req("POST", "/other", &[("x-env", "canary")]), None));
        assert!(!m.matches(&req("POST", "/api/x", &[("x-env", "prod")]), None));
        let debug = req("POST", "/api/x", &[("x-env", "canary"), ("x-debug", "1")]);
        assert!(!m.matches(&debug, None));
    }
}
