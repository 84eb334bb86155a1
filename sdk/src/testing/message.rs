//! Requests and responses: what a test gives ([`TestRequest`],
//! [`TestResponse`]) and what it gets back ([`SentRequest`],
//! [`SentResponse`]), and the headers in between, checked as the proxy
//! checks them.

use std::collections::BTreeMap;
use std::net::SocketAddr;

use http::header::{HeaderMap, HeaderName, HeaderValue};

/// Headers as the proxy keeps them (an `http::HeaderMap`), with the checks
/// its setters make.
#[derive(Debug, Clone, Default)]
pub(crate) struct Headers(HeaderMap);

/// `content-length` and the hop-by-hop headers: the proxy frames the
/// message with them, and a filter may not set or remove them.
const MANAGED: [&str; 7] = [
    "content-length",
    "connection",
    "te",
    "transfer-encoding",
    "upgrade",
    "keep-alive",
    "proxy-connection",
];

impl Headers {
    pub(crate) fn first(&self, name: &str) -> Option<String> {
        self.0.get(name).map(lossy)
    }

    pub(crate) fn all(&self, name: &str) -> Vec<String> {
        self.0.get_all(name).iter().map(lossy).collect()
    }

    pub(crate) fn names(&self) -> Vec<String> {
        self.0.keys().map(|k| k.as_str().to_string()).collect()
    }

    fn pairs(&self) -> Vec<(String, String)> {
        self.0
            .iter()
            .map(|(n, v)| (n.as_str().to_string(), lossy(v)))
            .collect()
    }

    pub(crate) fn set(&mut self, what: &str, name: &str, value: &str) {
        let (n, v) = parse(what, name, value);
        self.0.insert(n, v);
    }

    pub(crate) fn append(&mut self, what: &str, name: &str, value: &str) {
        let (n, v) = parse(what, name, value);
        self.0.append(n, v);
    }

    pub(crate) fn remove(&mut self, what: &str, name: &str) {
        // An invalid name cannot be present: nothing to remove.
        if let Ok(n) = HeaderName::from_bytes(name.as_bytes()) {
            refuse_managed(what, &n);
            self.0.remove(n);
        }
    }

    /// Adds a header the test (not the filter) gives: any valid one.
    fn add_given(&mut self, name: &str, value: &str) {
        let n = HeaderName::from_bytes(name.as_bytes())
            .unwrap_or_else(|_| panic!("weft_sdk::testing: invalid header name {name:?}"));
        let v = HeaderValue::from_str(value).unwrap_or_else(|_| {
            panic!("weft_sdk::testing: invalid value for header {name:?}: {value:?}")
        });
        self.0.append(n, v);
    }

    fn set_content_length(&mut self, len: usize) {
        self.0.remove(http::header::TRANSFER_ENCODING);
        self.0
            .insert(http::header::CONTENT_LENGTH, HeaderValue::from(len));
    }
}

fn lossy(value: &HeaderValue) -> String {
    String::from_utf8_lossy(value.as_bytes()).into_owned()
}

fn refuse_managed(what: &str, name: &HeaderName) {
    if MANAGED.contains(&name.as_str()) {
        panic!(
            "{what}: {:?} is managed by the proxy, which frames the message \
             (set-body sets content-length)",
            name.as_str()
        );
    }
}

fn parse(what: &str, name: &str, value: &str) -> (HeaderName, HeaderValue) {
    let Ok(n) = HeaderName::from_bytes(name.as_bytes()) else {
        panic!("{what}: invalid header name {name:?}")
    };
    refuse_managed(what, &n);
    let Ok(v) = HeaderValue::from_str(value) else {
        panic!("{what}: invalid value for header {name:?}: {value:?}")
    };
    (n, v)
}

/// A request or response inside the host.
#[derive(Debug, Clone, Default)]
pub(crate) struct Message {
    pub method: String,
    pub path: String,
    pub status: u16,
    pub headers: Headers,
    pub body: Vec<u8>,
}

impl Message {
    /// Replaces the body and sets `content-length` to match, as `set-body`.
    pub(crate) fn replace_body(&mut self, body: &[u8]) {
        self.headers.set_content_length(body.len());
        self.body = body.to_vec();
    }

    /// A filter's local response as the proxy sends it, or why it cannot.
    pub(crate) fn from_local(local: &crate::LocalResponse) -> Result<Message, String> {
        if !(100..=999).contains(&local.status) {
            return Err(format!("invalid status {}", local.status));
        }
        let mut headers = Headers::default();
        for (name, value) in &local.headers {
            let n = HeaderName::from_bytes(name.as_bytes())
                .map_err(|_| format!("invalid header name {name:?}"))?;
            let v = HeaderValue::from_str(value)
                .map_err(|_| format!("invalid value for header {name:?}"))?;
            headers.0.append(n, v);
        }
        headers.set_content_length(local.body.len());
        Ok(Message {
            status: local.status,
            headers,
            body: local.body.clone(),
            ..Message::default()
        })
    }
}

/// The request a test sends through a filter: method, path, headers and
/// body, and the properties the proxy would know of it.
///
/// By default it comes from `127.0.0.1:40000` on listener `listener`,
/// route `route`, cluster `cluster`, with a request id the host numbers
/// (`req-1`, `req-2`, …).
///
/// ```
/// # use weft_sdk::testing::TestRequest;
/// let request = TestRequest::post("/orders?page=2")
///     .authority("api.example.test")
///     .header("content-type", "application/json")
///     .body(r#"{"item": 7}"#)
///     .peer("192.0.2.7:51000")
///     .route("orders");
/// ```
#[derive(Debug, Clone)]
pub struct TestRequest {
    pub(crate) message: Message,
    pub(crate) props: BTreeMap<String, String>,
    pub(crate) attempt: u32,
    pub(crate) retryable: bool,
}

impl TestRequest {
    /// A request with `method` (any case; sent in upper case) for `path`
    /// (with its query). Panics if either is not valid HTTP.
    pub fn new(method: &str, path: &str) -> TestRequest {
        let method = method.to_ascii_uppercase();
        if http::Method::from_bytes(method.as_bytes()).is_err() {
            panic!("weft_sdk::testing: invalid method {method:?}");
        }
        if !path.starts_with('/') || path.parse::<http::uri::PathAndQuery>().is_err() {
            panic!(
                "weft_sdk::testing: invalid path {path:?}: not a request target starting with '/'"
            );
        }
        let mut request = TestRequest {
            message: Message {
                method,
                path: path.to_string(),
                ..Message::default()
            },
            props: BTreeMap::new(),
            attempt: 0,
            retryable: true,
        };
        for (name, value) in [
            ("listener.name", "listener"),
            ("route.name", "route"),
            ("cluster.name", "cluster"),
        ] {
            request.props.insert(name.into(), value.into());
        }
        request.peer("127.0.0.1:40000")
    }

    /// A `GET` of `path`.
    pub fn get(path: &str) -> TestRequest {
        TestRequest::new("GET", path)
    }

    /// A `POST` to `path`.
    pub fn post(path: &str) -> TestRequest {
        TestRequest::new("POST", path)
    }

    /// Adds a header (keeping the values it has).
    pub fn header(mut self, name: &str, value: &str) -> TestRequest {
        self.message.headers.add_given(name, value);
        self
    }

    /// Sets the authority: the `host` header, as the proxy settles it.
    pub fn authority(mut self, authority: &str) -> TestRequest {
        self.message.headers.0.remove(http::header::HOST);
        self.header("host", authority)
    }

    /// Sets the body (and `content-length`): what `on_request_body` reads.
    pub fn body(mut self, body: impl Into<Vec<u8>>) -> TestRequest {
        let body = body.into();
        self.message.replace_body(&body);
        self
    }

    /// Sets the client's address (`peer.address`, and `peer.ip` from it).
    /// Panics if `address` is not `ip:port`.
    pub fn peer(self, address: &str) -> TestRequest {
        let Ok(parsed) = address.parse::<SocketAddr>() else {
            panic!("weft_sdk::testing: the peer address {address:?} is not ip:port")
        };
        self.property("peer.address", address)
            .property("peer.ip", &parsed.ip().to_string())
    }

    /// Sets the route's name (`route.name`).
    pub fn route(self, name: &str) -> TestRequest {
        self.property("route.name", name)
    }

    /// Sets the listener's name (`listener.name`).
    pub fn listener(self, name: &str) -> TestRequest {
        self.property("listener.name", name)
    }

    /// Sets the cluster's name (`cluster.name`).
    pub fn cluster(self, name: &str) -> TestRequest {
        self.property("cluster.name", name)
    }

    /// Sets the request's id (`request.id`).
    pub fn request_id(self, id: &str) -> TestRequest {
        self.property("request.id", id)
    }

    /// Sets any other property the proxy knows (`peer.identity`, …). The
    /// request's and response's own (`request.header.<name>`, …), the
    /// attempt and the timing come from the exchange and cannot be set.
    pub fn property(mut self, name: &str, value: &str) -> TestRequest {
        self.props.insert(name.to_string(), value.to_string());
        self
    }

    /// Makes the request one the proxy could not send again
    /// (`request.retryable` is `false`: a body too large to keep).
    pub fn not_retryable(mut self) -> TestRequest {
        self.retryable = false;
        self
    }
}

/// A response for a filter's response phases: from the upstream
/// ([`TestExchange::upstream`](super::TestExchange::upstream)), or made by
/// the proxy or a later filter
/// ([`TestExchange::local_response`](super::TestExchange::local_response)).
///
/// ```
/// # use weft_sdk::testing::TestResponse;
/// let response = TestResponse::new(503).header("retry-after", "2").body("busy");
/// ```
#[derive(Debug, Clone)]
pub struct TestResponse {
    pub(crate) message: Message,
    pub(crate) endpoint: String,
    pub(crate) failure: Option<String>,
}

impl TestResponse {
    /// A response with `status`, no headers and no body. Panics if
    /// `status` is not in `100..=999`.
    pub fn new(status: u16) -> TestResponse {
        assert!(
            (100..=999).contains(&status),
            "weft_sdk::testing: invalid status {status}"
        );
        TestResponse {
            message: Message {
                status,
                ..Message::default()
            },
            endpoint: "127.0.0.1:9000".into(),
            failure: None,
        }
    }

    /// Adds a header (keeping the values it has).
    pub fn header(mut self, name: &str, value: &str) -> TestResponse {
        self.message.headers.add_given(name, value);
        self
    }

    /// Sets the body (and `content-length`): what `on_response_body` reads.
    pub fn body(mut self, body: impl Into<Vec<u8>>) -> TestResponse {
        let body = body.into();
        self.message.replace_body(&body);
        self
    }

    /// Sets the endpoint that answered (`upstream.endpoint`; default
    /// `127.0.0.1:9000`).
    pub fn endpoint(mut self, endpoint: &str) -> TestResponse {
        self.endpoint = endpoint.to_string();
        self
    }

    /// Makes it the proxy's answer to a failed upstream attempt
    /// (`upstream.failure`): `connect-failure`, `reset` or `timeout`.
    pub fn failure(mut self, kind: &str) -> TestResponse {
        self.failure = Some(kind.to_string());
        self
    }
}

/// The request as it would go upstream, after the phases run so far.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SentRequest {
    /// The method, upper case.
    pub method: String,
    /// The path with its query.
    pub path: String,
    /// The headers, lower-case names, grouped by name.
    pub headers: Vec<(String, String)>,
    /// The body.
    pub body: Vec<u8>,
    /// The per-attempt timeout a filter set with
    /// [`Request::set_timeout`](crate::Request::set_timeout), in ms.
    pub timeout_ms: Option<u32>,
}

/// The response as it would go to the client, after the phases run so far.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SentResponse {
    /// The status code.
    pub status: u16,
    /// The headers, lower-case names, grouped by name.
    pub headers: Vec<(String, String)>,
    /// The body.
    pub body: Vec<u8>,
}

/// The first value of `name` (any case) among `headers`.
fn first<'a>(headers: &'a [(String, String)], name: &str) -> Option<&'a str> {
    all(headers, name).into_iter().next()
}

/// Every value of `name` (any case) among `headers`.
fn all<'a>(headers: &'a [(String, String)], name: &str) -> Vec<&'a str> {
    headers
        .iter()
        .filter(|(n, _)| n.eq_ignore_ascii_case(name))
        .map(|(_, v)| v.as_str())
        .collect()
}

impl SentRequest {
    pub(crate) fn of(message: &Message, timeout_ms: Option<u32>) -> SentRequest {
        SentRequest {
            method: message.method.clone(),
            path: message.path.clone(),
            headers: message.headers.pairs(),
            body: message.body.clone(),
            timeout_ms,
        }
    }

    /// The first value of header `name` (any case).
    pub fn header(&self, name: &str) -> Option<&str> {
        first(&self.headers, name)
    }

    /// Every value of header `name` (any case), in order.
    pub fn header_all(&self, name: &str) -> Vec<&str> {
        all(&self.headers, name)
    }
}

impl SentResponse {
    pub(crate) fn of(message: &Message) -> SentResponse {
        SentResponse {
            status: message.status,
            headers: message.headers.pairs(),
            body: message.body.clone(),
        }
    }

    /// The first value of header `name` (any case).
    pub fn header(&self, name: &str) -> Option<&str> {
        first(&self.headers, name)
    }

    /// Every value of header `name` (any case), in order.
    pub fn header_all(&self, name: &str) -> Vec<&str> {
        all(&self.headers, name)
    }

    /// The body as text (lossy UTF-8).
    pub fn body_text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }

    /// The body as JSON. Panics if it is not JSON.
    pub fn body_json(&self) -> serde_json::Value {
        serde_json::from_slice(&self.body)
            .unwrap_or_else(|e| panic!("the body is not JSON ({e}): {}", self.body_text()))
    }
}
