//! [`Response`]: the response going back to the client.

use std::fmt;

use crate::sys::response as wit;

/// The response being returned to the client: from the upstream, from a
/// filter's [`Action::Respond`](crate::Action::Respond), or an error the proxy
/// generated.
///
/// Like [`Request`](crate::Request), it lives in the proxy and each accessor
/// fetches only what it returns. In [`on_done`](crate::Filter::on_done) it is
/// read-only and a setter traps.
pub struct Response {
    // Handed out by the SDK only, for the phase call it is made in: the
    // host's functions act on that call's response.
    _call: (),
}

impl Response {
    /// The response of the phase call being made.
    pub(crate) fn current() -> Self {
        Response { _call: () }
    }

    /// The status code.
    pub fn status(&self) -> u16 {
        wit::status()
    }

    /// Replaces the status code. Traps if not in `100..=999`.
    pub fn set_status(&self, status: u16) {
        wit::set_status(status)
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

    /// Adds a value to header `name`, keeping the values it had.
    pub fn append_header(&self, name: &str, value: &str) {
        wit::append_header(name, value)
    }

    /// Removes every value of header `name`.
    pub fn remove_header(&self, name: &str) {
        wit::remove_header(name)
    }

    /// The whole body: only in [`on_response_body`](crate::Filter::on_response_body),
    /// where the proxy has buffered it; `None` in every other phase.
    pub fn body(&self) -> Option<Vec<u8>> {
        wit::body()
    }

    /// Replaces the body returned to the client. Only in
    /// [`on_response_body`](crate::Filter::on_response_body); traps elsewhere.
    pub fn set_body(&self, body: impl AsRef<[u8]>) {
        wit::set_body(body.as_ref())
    }
}

impl fmt::Debug for Response {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Response")
    }
}
