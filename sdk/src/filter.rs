//! The [`Filter`] trait.

use serde::de::DeserializeOwned;

use crate::{Action, Phases, Request, Response};

/// An HTTP filter: built once per chain entry from its config, then called at
/// each phase of every request routed through the chain.
///
/// Implement the phase methods you need and put
/// [`#[weft_sdk::filter]`](macro@crate::filter) on the impl block; the proxy
/// then calls only those phases. The proxy may run several instances of a
/// filter, each with its own state: use [`shared`](crate::shared) for state
/// that every instance sees.
///
/// A phase that panics is logged at error level and traps; the proxy answers
/// that request with an error.
pub trait Filter: Sized + 'static {
    /// The config, deserialised with `serde_json` from the chain entry's
    /// `config`. Use `()` for a filter without config.
    type Config: DeserializeOwned;

    /// The phases the proxy calls. [`#[weft_sdk::filter]`](macro@crate::filter)
    /// sets it to the phases whose methods the impl block defines; the
    /// default is every phase (without [`Phases::RETRY`], which a filter
    /// that answers [`Action::Retry`](crate::Action::Retry) adds in
    /// [`phases`](Filter::phases)).
    const PHASES: Phases = Phases::REQUEST_HEADERS
        .union(Phases::REQUEST_BODY)
        .union(Phases::RESPONSE_HEADERS)
        .union(Phases::RESPONSE_BODY)
        .union(Phases::DONE);

    /// Builds the filter from its config. An `Err` rejects the config: the
    /// proxy logs the message with the chain entry's name and keeps the
    /// previous config.
    fn new(config: Self::Config) -> Result<Self, String>;

    /// The phases the proxy calls for this instance; asked once, after
    /// [`new`](Filter::new). Override it when the config decides, e.g. to
    /// skip a body phase (and its buffering) when the config does not need
    /// it. Defaults to [`PHASES`](Filter::PHASES).
    fn phases(&self) -> Phases {
        Self::PHASES
    }

    /// The request's headers have arrived: read or change its path and
    /// headers, or answer it without the upstream.
    fn on_request_headers(&mut self, req: &Request) -> Action {
        let _ = req;
        Action::Continue
    }

    /// The whole request body is buffered: [`Request::body`] returns it and
    /// [`Request::set_body`] replaces it.
    fn on_request_body(&mut self, req: &Request) -> Action {
        let _ = req;
        Action::Continue
    }

    /// The response's headers are ready to go to the client. The request
    /// is read-only here. Response phases run in the reverse order of the
    /// chain.
    fn on_response_headers(&mut self, req: &Request, resp: &Response) -> Action {
        let _ = (req, resp);
        Action::Continue
    }

    /// The whole response body is buffered: [`Response::body`] returns it
    /// and [`Response::set_body`] replaces it. The request is read-only.
    fn on_response_body(&mut self, req: &Request, resp: &Response) -> Action {
        let _ = (req, resp);
        Action::Continue
    }

    /// The exchange is over (the response was sent or the client went away):
    /// for logs and metrics. Request and response are read-only.
    fn on_done(&mut self, req: &Request, resp: &Response) {
        let _ = (req, resp);
    }
}
