//! Outbound HTTP calls (callouts): fetch keys, ask an authorization service.
//!
//! [`call`] blocks the filter until the answer arrives; the proxy serves
//! other requests meanwhile, and the wait does not count against the
//! phase's deadline. The proxy allows only `http://` URLs whose `host:port`
//! is listed in the filter module's `allow_http` config.
//!
//! ```no_run
//! use weft_sdk::http::{self, HttpRequest};
//!
//! let request = HttpRequest::get("http://127.0.0.1:8081/jwks.json").header("accept", "application/json");
//! match http::call(&request) {
//!     Ok(response) if response.status == 200 => { /* use response.body */ }
//!     Ok(response) => weft_sdk::warn!("JWKS fetch answered {}", response.status),
//!     Err(e) => weft_sdk::warn!("JWKS fetch failed: {e}"),
//! }
//! ```

use crate::sys::host;

/// A callout request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HttpRequest {
    /// The method, e.g. `GET`.
    pub method: String,
    /// An absolute `http://host:port/path?query` URL.
    pub url: String,
    /// Headers to send, as (name, value).
    pub headers: Vec<(String, String)>,
    /// The body (empty for none).
    pub body: Vec<u8>,
    /// Time allowed for the whole exchange in milliseconds (0: 5000; at most 60000).
    pub timeout_ms: u32,
}

impl HttpRequest {
    /// A `GET` of `url` with no headers and the default timeout.
    pub fn get(url: impl Into<String>) -> HttpRequest {
        HttpRequest {
            method: "GET".into(),
            url: url.into(),
            headers: Vec::new(),
            body: Vec::new(),
            timeout_ms: 0,
        }
    }

    /// Adds a header.
    pub fn header(mut self, name: impl Into<String>, value: impl Into<String>) -> HttpRequest {
        self.headers.push((name.into(), value.into()));
        self
    }
}

/// A callout's answer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HttpResponse {
    /// The status code.
    pub status: u16,
    /// The headers, lower-case names.
    pub headers: Vec<(String, String)>,
    /// The whole body (at most 4 MiB).
    pub body: Vec<u8>,
}

impl HttpResponse {
    /// The first value of header `name` (any case).
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }
}

/// Sends `request` and waits for the whole response. `Err` says why there is
/// none: not allowed, invalid URL, cannot connect, timed out, too large.
pub fn call(request: &HttpRequest) -> Result<HttpResponse, String> {
    let headers: Vec<&(String, String)> = request.headers.iter().collect();
    let response = host::http_call(host::HttpRequest {
        method: &request.method,
        url: &request.url,
        headers: &headers,
        body: &request.body,
        timeout_ms: request.timeout_ms,
    })?;
    Ok(HttpResponse {
        status: response.status,
        headers: response.headers,
        body: response.body,
    })
}
