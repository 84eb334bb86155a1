//! What a filter sees of one request: the request and response heads, the
//! buffered bodies while a body phase runs, and the request's properties.
//!
//! The proxy owns a boxed `Exchange` for the whole request; for each phase
//! call the box is swapped into the filter instance's store and back
//! afterwards (two pointer swaps: the struct is over a kilobyte), so no
//! header map is ever copied to make it visible to a filter.

use std::borrow::Cow;
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
    /// The client: its address, and its TLS and certificate on a TLS
    /// listener.
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
    /// The value of property `name`, if known: borrowed where the value is
    /// kept as text, so a read that copies it out allocates nothing.
    pub fn get(&self, name: &str) -> Option<Cow<'_, str>> {
        match name {
            "request.id" => Some(Cow::Borrowed(&self.request_id)),
            "request.start_unix_ns" => self.started.map(|started| {
                let now = SystemTime::now()
                    .duration_since(UNIX_EPOCH)
                    .unwrap_or_default();
                Cow::Owned(now.saturating_sub(started.elapsed()).as_nanos().to_string())
            }),
            "request.elapsed_ns" => self
                .started
                .map(|started| Cow::Owned(started.elapsed().as_nanos().to_string())),
            "listener.name" => Some(Cow::Borrowed(&self.listener)),
            "route.name" => Some(Cow::Borrowed(&self.route)),
            "cluster.name" => Some(Cow::Borrowed(&self.cluster)),
            "peer.address" => self
                .peer
                .as_ref()
                .map(|p| Cow::Borrowed(p.address.as_str())),
            "peer.ip" => self.peer.as_ref().map(|p| Cow::Borrowed(p.ip.as_str())),
            "peer.certificate_present" => {
                let tls = self.peer.as_ref()?.tls.as_ref()?;
                Some(Cow::Borrowed(if tls.cert.is_some() {
                    "true"
                } else {
                    "false"
                }))
            }
            "peer.identity" | "peer.subject" | "peer.uri_sans" | "peer.dns_sans" => {
                let cert = self.peer.as_ref()?.tls.as_ref()?.cert.as_ref()?;
                Some(Cow::Borrowed(match name {
                    "peer.identity" => &cert.identity,
                    "peer.subject" => &cert.subject,
                    "peer.uri_sans" => &cert.uri_sans,
                    _ => &cert.dns_sans,
                }))
            }
            "tls.version" => Some(Cow::Borrowed(self.peer.as_ref()?.tls.as_ref()?.version)),
            "tls.sni" => self
                .peer
                .as_ref()?
                .tls
                .as_ref()?
                .sni
                .as_deref()
                .map(Cow::Borrowed),
            "request.attempt" if self.attempt > 0 => Some(Cow::Owned(self.attempt.to_string())),
            "request.retryable" if self.attempt > 0 => Some(Cow::Owned(self.retryable.to_string())),
            "upstream.endpoint" => self
                .upstream_endpoint
                .as_ref()
                .map(|a| Cow::Borrowed(a.as_str())),
            "upstream.failure" => self.upstream_failure.map(Cow::Borrowed),
            _ => None,
        }
    }
}

/// The first value of header `name` (any case), lossily as UTF-8.
pub fn first_header<'a>(map: &'a http::HeaderMap, name: &str) -> Option<Cow<'a, str>> {
    map.get(name).map(lossy)
}

/// A header value as text: invalid UTF-8 becomes U+FFFD.
pub fn lossy(value: &http::HeaderValue) -> Cow<'_, str> {
    String::from_utf8_lossy(value.as_bytes())
}

/// The path and query as sent upstream.
pub fn path_of(request: &request::Parts) -> &str {
    request.uri.path_and_query().map_or("/", |p| p.as_str())
}

/// The authority: the `Host` line, which the proxy settled before routing
/// as the request's one authority (the target's, HTTP/2 `:authority` or the
/// single `Host`), and which the upstream receives.
pub fn authority_of(request: &request::Parts) -> Option<Cow<'_, str>> {
    request.headers.get(http::header::HOST).map(lossy)
}

impl Exchange {
    /// The value of property `name`: the request's properties, and the
    /// request and response as their accessors return them.
    pub fn property(&self, name: &str) -> Option<Cow<'_, str>> {
        if let Some(field) = name.strip_prefix("request.") {
            let request = self.request.as_ref();
            match field.strip_prefix("header.") {
                Some(header) => return first_header(&request?.headers, header),
                None => match field {
                    "method" => return Some(Cow::Borrowed(request?.method.as_str())),
                    "path" => return request.map(|r| Cow::Borrowed(path_of(r))),
                    "authority" => return authority_of(request?),
                    _ => {}
                },
            }
        } else if let Some(field) = name.strip_prefix("response.") {
            let response = self.response.as_ref()?;
            return match field.strip_prefix("header.") {
                Some(header) => first_header(&response.headers, header),
                None if field == "status" => Some(Cow::Borrowed(response.status.as_str())),
                None => None,
            };
        }
        self.props.get(name)
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
    /// The trailers that ended the buffered request body, if any (only
    /// during `on-request-body`; kept and sent on).
    pub request_trailers: Option<http::HeaderMap>,
    /// The trailers that ended the buffered response body, if any (only
    /// during `on-response-body`; kept and sent on).
    pub response_trailers: Option<http::HeaderMap>,
    /// The request's properties.
    pub props: RequestProps,
    /// The phase being run.
    pub phase: Phase,
    /// A filter's override of the route's per-attempt timeout.
    pub upstream_timeout: Option<std::time::Duration>,
}

#[cfg(test)]
mod tests {
    use super::*;

    fn exchange() -> Exchange {
        let (request, ()) = http::Request::post("/items?page=2")
            .header("host", "example.test")
            .header("user-agent", "curl/8")
            .header("x-multi", "one")
            .header("x-multi", "two")
            .body(())
            .unwrap()
            .into_parts();
        Exchange {
            request: Some(request),
            props: RequestProps {
                request_id: "req-1".into(),
                route: "api".into(),
                ..RequestProps::default()
            },
            ..Exchange::default()
        }
    }

    #[test]
    fn the_request_and_response_are_properties_too() {
        let mut exchange = exchange();
        let get = |exchange: &Exchange, name: &str| exchange.property(name).map(Cow::into_owned);
        assert_eq!(get(&exchange, "request.method").as_deref(), Some("POST"));
        assert_eq!(
            get(&exchange, "request.path").as_deref(),
            Some("/items?page=2")
        );
        assert_eq!(
            get(&exchange, "request.authority").as_deref(),
            Some("example.test")
        );
        // Any case; the first of several values.
        assert_eq!(
            get(&exchange, "request.header.User-Agent").as_deref(),
            Some("curl/8")
        );
        assert_eq!(
            get(&exchange, "request.header.x-multi").as_deref(),
            Some("one")
        );
        assert_eq!(get(&exchange, "request.header.absent"), None);
        // The request's own properties are still found by their names.
        assert_eq!(get(&exchange, "request.id").as_deref(), Some("req-1"));
        assert_eq!(get(&exchange, "route.name").as_deref(), Some("api"));
        // No response before the response phases.
        assert_eq!(get(&exchange, "response.status"), None);
        assert_eq!(get(&exchange, "response.header.content-length"), None);
        let (response, ()) = http::Response::builder()
            .status(503)
            .header("content-length", "12")
            .body(())
            .unwrap()
            .into_parts();
        exchange.response = Some(response);
        assert_eq!(get(&exchange, "response.status").as_deref(), Some("503"));
        assert_eq!(
            get(&exchange, "response.header.content-length").as_deref(),
            Some("12")
        );
        for unknown in ["request.nope", "response.nope", "request.", "nope", ""] {
            assert_eq!(get(&exchange, unknown), None, "{unknown}");
        }
    }
}
