//! Matching a request to a route: host, path, path prefix, methods and
//! headers; routes are tried in order and the first match wins.

use std::sync::Arc;

use http::request::Parts;
use http::{HeaderName, Method};

use crate::filter::FilterChain;
use crate::upstream::Cluster;

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
    /// Whether `request` (whose host, lower-case and without port, is
    /// `host`) satisfies every condition.
    pub fn matches(&self, request: &Parts, host: Option<&str>) -> bool {
        if let Some(want) = &self.host {
            let Some(host) = host else { return false };
            let ok = match want {
                HostMatch::Exact(h) => host == h,
                HostMatch::Suffix(s) => host.len() > s.len() && host.ends_with(s.as_str()),
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
    /// Where requests go.
    pub cluster: Arc<Cluster>,
    /// Time allowed for the upstream's response headers.
    pub timeout: std::time::Duration,
    /// Largest body buffered for a body phase.
    pub max_body_bytes: u64,
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

    /// The first route matching `request`.
    pub fn find(&self, request: &Parts) -> Option<&Arc<Route>> {
        let host = request_host(request);
        self.routes
            .iter()
            .find(|r| r.matcher.matches(request, host.as_deref()))
    }

    /// The routes.
    pub fn routes(&self) -> &[Arc<Route>] {
        &self.routes
    }
}

/// The request's host: `:authority` or `Host`, lower-case, port removed.
pub fn request_host(request: &Parts) -> Option<String> {
    let raw = match request.uri.host() {
        Some(h) => h,
        None => request.headers.get(http::header::HOST)?.to_str().ok()?,
    };
    let host = match raw.rsplit_once(':') {
        // Keep IPv6 literals ("[::1]") whole; strip a trailing ":port".
        Some((h, port)) if !port.contains(']') && port.bytes().all(|b| b.is_ascii_digit()) => h,
        _ => raw,
    };
    Some(host.to_ascii_lowercase())
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
        assert!(exact.matches(&r, request_host(&r).as_deref()));
        let suffix = RouteMatch {
            host: Some(HostMatch::Suffix(".example.com".into())),
            ..Default::default()
        };
        assert!(suffix.matches(&r, request_host(&r).as_deref()));
        let bare = req("GET", "/", &[("host", "example.com")]);
        assert!(!suffix.matches(&bare, request_host(&bare).as_deref()));
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

    #[test]
    fn ipv6_host_keeps_brackets() {
        let r = req("GET", "/", &[("host", "[::1]:8080")]);
        assert_eq!(request_host(&r).as_deref(), Some("[::1]"));
    }
}
