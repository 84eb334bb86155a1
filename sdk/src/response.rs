//! [`Response`]: the response going back to the client.

use std::fmt;
use std::mem::ManuallyDrop;

use crate::bindings::weft::filter::types as wit;

/// The response being returned to the client: from the upstream, from a
/// filter's [`Action::Respond`](crate::Action::Respond), or an error the proxy
/// generated.
///
/// Like [`Request`](crate::Request), it lives in the proxy and each accessor
/// fetches only what it returns. In [`on_done`](crate::Filter::on_done) it is
/// read-only and a setter traps.
pub struct Response {
    // See `Request::inner`: a lent handle, never dropped.
    inner: ManuallyDrop<wit::Response>,
}

impl Response {
    /// Wraps a response the host lends for the current call.
    pub(crate) fn borrowed(response: &wit::Response) -> Self {
        // SAFETY: as for `Request::borrowed`.
        let inner = unsafe { wit::Response::from_handle(response.handle()) };
        Response {
            inner: ManuallyDrop::new(inner),
        }
    }

    /// The status code.
    pub fn status(&self) -> u16 {
        self.inner.status()
    }

    /// Replaces the status code. Traps if not in `100..=999`.
    pub fn set_status(&self, status: u16) {
        self.inner.set_status(status)
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

    /// Adds a value to header `name`, keeping the values it had.
    pub fn append_header(&self, name: &str, value: &str) {
        self.inner.append_header(name, value)
    }

    /// Removes every value of header `name`.
    pub fn remove_header(&self, name: &str) {
        self.inner.remove_header(name)
    }

    /// The whole body: only in [`on_response_body`](crate::Filter::on_response_body),
    /// where the proxy has buffered it; `None` in every other phase.
    pub fn body(&self) -> Option<Vec<u8>> {
        self.inner.body()
    }

    /// Replaces the body returned to the client. Only in
    /// [`on_response_body`](crate::Filter::on_response_body); traps elsewhere.
    pub fn set_body(&self, body: impl AsRef<[u8]>) {
        self.inner.set_body(body.as_ref())
    }
}

impl fmt::Debug for Response {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Response")
            .field("handle", &self.inner.handle())
            .finish_non_exhaustive()
    }
}
