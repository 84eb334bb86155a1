//! [`Request`]: the request being proxied.

use std::fmt;
use std::mem::ManuallyDrop;

use crate::bindings::weft::filter::types as wit;

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
    // A handle the host lends for one call: never dropped (dropping would
    // release a borrow the guest does not own).
    inner: ManuallyDrop<wit::Request>,
}

impl Request {
    /// Wraps a request the host lends for the current call.
    pub(crate) fn borrowed(request: &wit::Request) -> Self {
        // SAFETY: the handle is valid for the call it was lent for; the
        // `Request` is only handed out by reference for that call, and
        // `ManuallyDrop` keeps it from being released.
        let inner = unsafe { wit::Request::from_handle(request.handle()) };
        Request {
            inner: ManuallyDrop::new(inner),
        }
    }

    /// The method in upper case, e.g. `GET`.
    pub fn method(&self) -> String {
        self.inner.method()
    }

    /// The path with its query, as sent upstream, e.g. `/api/items?id=7`.
    pub fn path(&self) -> String {
        self.inner.path()
    }

    /// Replaces the path (and query) sent upstream. Traps if `path` does not
    /// start with `/` or is not a valid request target.
    pub fn set_path(&self, path: &str) {
        self.inner.set_path(path)
    }

    /// The authority (`Host` header or HTTP/2 `:authority`), if any.
    pub fn authority(&self) -> Option<String> {
        self.inner.authority()
    }

    /// The first value of header `name`, if present.
    pub fn header(&self, name: &str) -> Option<String> {
        self.inner.header(name)
    }

    /// Every value of header `name`, in order.
    pub fn header_all(&self, name: &str) -> Vec<String> {
        self.inner.header_all(name)
    }

    /// The distinct header names present, lower-case, in order.
    pub fn header_names(&self) -> Vec<String> {
        self.inner.header_names()
    }

    /// Sets header `name` to `value`, replacing any values it had. Traps if
    /// the name or value is not valid HTTP.
    pub fn set_header(&self, name: &str, value: &str) {
        self.inner.set_header(name, value)
    }

    /// Adds a value to header `name`, keeping the values it had. Traps if
    /// the name or value is not valid HTTP.
    pub fn append_header(&self, name: &str, value: &str) {
        self.inner.append_header(name, value)
    }

    /// Removes every value of header `name`.
    pub fn remove_header(&self, name: &str) {
        self.inner.remove_header(name)
    }

    /// The whole body: only in [`on_request_body`](crate::Filter::on_request_body),
    /// where the proxy has buffered it; `None` in every other phase.
    pub fn body(&self) -> Option<Vec<u8>> {
        self.inner.body()
    }

    /// Replaces the body sent upstream and updates `content-length`. Only in
    /// [`on_request_body`](crate::Filter::on_request_body); traps elsewhere.
    pub fn set_body(&self, body: impl AsRef<[u8]>) {
        self.inner.set_body(body.as_ref())
    }

    /// Sets the time each upstream attempt has to send its response headers
    /// (default: the route's `timeout_ms`), saturating at `u32::MAX` ms.
    /// Request phases only; traps elsewhere.
    pub fn set_timeout(&self, timeout: std::time::Duration) {
        self.inner
            .set_timeout_ms(u32::try_from(timeout.as_millis()).unwrap_or(u32::MAX))
    }
}

impl fmt::Debug for Request {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Request")
            .field("handle", &self.inner.handle())
            .finish_non_exhaustive()
    }
}
