//! [`Request`]: the request being proxied.

use std::fmt;

use crate::sys::request as wit;

/// The request being proxied.
///
/// It lives in the proxy: each accessor fetches only what it returns, so
/// reading one header costs one header. Header names are case-insensitive.
///
/// The setters work in [`on_request_headers`](crate::Filter::on_request_headers)
/// and [`on_request_body`](crate::Filter::on_request_body); in the response
/// phases and [`on_done`](crate::Filter::on_done) the request is read-only and
/// a setter traps.
pub struct Request {
    // Handed out by the SDK only, for the phase call it is made in: the
    // host's functions act on that call's request.
    _call: (),
}

impl Request {
    /// The request of the phase call being made.
    pub(crate) fn current() -> Self {
        Request { _call: () }
    }

    /// The method in upper case, e.g. `GET`.
    pub fn method(&self) -> String {
        wit::method()
    }

    /// The path with its query, as sent upstream, e.g. `/api/items?id=7`.
    pub fn path(&self) -> String {
        wit::path()
    }

    /// Replaces the path (and query) sent upstream. Traps if `path` does not
    /// start with `/` or is not a valid request target.
    pub fn set_path(&self, path: &str) {
        wit::set_path(path)
    }

    /// The authority (`Host` header or HTTP/2 `:authority`), if any.
    pub fn authority(&self) -> Option<String> {
        wit::authority()
    }

    /// The first value of header `name`, if present.
    pub fn header(&self, name: &str) -> Option<String> {
        wit::header(name)
    }

    /// Every value of header `name`, in order.
    pub fn header_all(&self, name: &str) -> Vec<String> {
        wit::header_all(name)
    }

    /// The distinct header names present, lower-case, in order.
    pub fn header_names(&self) -> Vec<String> {
        wit::header_names()
    }

    /// Sets header `name` to `value`, replacing any values it had. Traps if
    /// the name or value is not valid HTTP.
    pub fn set_header(&self, name: &str, value: &str) {
        wit::set_header(name, value)
    }

    /// Adds a value to header `name`, keeping the values it had. Traps if
    /// the name or value is not valid HTTP.
    pub fn append_header(&self, name: &str, value: &str) {
        wit::append_header(name, value)
    }

    /// Removes every value of header `name`.
    pub fn remove_header(&self, name: &str) {
        wit::remove_header(name)
    }

    /// The whole body: only in [`on_request_body`](crate::Filter::on_request_body),
    /// where the proxy has buffered it; `None` in every other phase.
    pub fn body(&self) -> Option<Vec<u8>> {
        wit::body()
    }

    /// Replaces the body sent upstream and updates `content-length`. Only in
    /// [`on_request_body`](crate::Filter::on_request_body); traps elsewhere.
    pub fn set_body(&self, body: impl AsRef<[u8]>) {
        wit::set_body(body.as_ref())
    }

    /// Sets the time each upstream attempt has to send its response headers
    /// (default: the route's `timeout_ms`), saturating at `u32::MAX` ms.
    /// Request phases only; traps elsewhere.
    pub fn set_timeout(&self, timeout: std::time::Duration) {
        wit::set_timeout_ms(u32::try_from(timeout.as_millis()).unwrap_or(u32::MAX))
    }
}

impl fmt::Debug for Request {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Request")
    }
}
