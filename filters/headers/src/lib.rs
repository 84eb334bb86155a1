//! `headers`: removes, renames, sets and adds request and response headers,
//! with values templated from the request (`%REQUEST_ID%`, `%REQ(name)%`,
//! …) and the response (`%STATUS%`, `%RESP(name)%`).
//!
//! Config:
//!
//! ```json
//! {
//!   "request": {
//!     "remove": ["x-debug"],
//!     "rename": {"x-user": "x-client-user"},
//!     "set": {"x-route": "%ROUTE%", "x-client-ip": "%PEER_IP%"},
//!     "set_if_absent": {"x-request-start": "%START_TIME%"},
//!     "add": {"via": "1.1 weft"}
//!   },
//!   "response": {
//!     "remove": ["server"],
//!     "set": {"x-request-id": "%REQUEST_ID%", "x-upstream-status": "%STATUS%"}
//!   }
//! }
//! ```
//!
//! Each section applies its operations in the order remove, rename, set,
//! set_if_absent, add; templates are rendered before the first of them, so
//! variables see the message as it reached the filter. Names and templates
//! are checked when the config loads; the filter only runs the phases its
//! config needs. See `docs/filters/headers.md`.

mod config;
mod ops;
mod template;

#[cfg(test)]
mod phase_tests;

use weft_sdk::{Action, Filter, Phases, Request, Response, property, time};

use crate::config::Config;
use crate::ops::{Headers, Ops, Skipped};
use crate::template::{Side, Var};

struct HeadersFilter {
    request: Ops,
    response: Ops,
    /// Whether a response operation uses `%START_TIME%`: the time is then
    /// taken in `on-request-headers`, when the request reached the filter.
    response_needs_start: bool,
    /// `%START_TIME%` of the current request, once rendered.
    start_time: Option<String>,
}

#[weft_sdk::filter]
impl Filter for HeadersFilter {
    type Config = Config;

    fn new(config: Config) -> Result<Self, String> {
        let (request, response) = config.validate()?;
        let response_needs_start = response.vars().any(|var| *var == Var::StartTime);
        Ok(HeadersFilter {
            request,
            response,
            response_needs_start,
            start_time: None,
        })
    }

    fn phases(&self) -> Phases {
        let mut phases = Phases::empty();
        phases.set(
            Phases::REQUEST_HEADERS,
            !self.request.is_empty() || self.response_needs_start,
        );
        phases.set(Phases::RESPONSE_HEADERS, !self.response.is_empty());
        phases
    }

    fn on_request_headers(&mut self, req: &Request) -> Action {
        // Instances serve many requests: start afresh.
        self.start_time = None;
        if self.response_needs_start {
            self.start_time = Some(now());
        }
        let skipped = self.request.apply(&RequestHeaders(req), |var| {
            lookup(var, req, None, &mut self.start_time)
        });
        report(Side::Request, &skipped);
        Action::Continue
    }

    fn on_response_headers(&mut self, req: &Request, resp: &Response) -> Action {
        if !self.phases().contains(Phases::REQUEST_HEADERS) {
            self.start_time = None;
        }
        let skipped = self.response.apply(&ResponseHeaders(resp), |var| {
            lookup(var, req, Some(resp), &mut self.start_time)
        });
        report(Side::Response, &skipped);
        Action::Continue
    }
}

/// The value of a variable for this request; empty when absent.
fn lookup(var: &Var, req: &Request, resp: Option<&Response>, start: &mut Option<String>) -> String {
    let value = match var {
        Var::RequestId => property::request_id(),
        Var::PeerAddr => property::peer_address(),
        Var::PeerIp => property::peer_ip(),
        Var::Route => property::route_name(),
        Var::Cluster => property::cluster_name(),
        Var::Listener => property::listener_name(),
        Var::Method => Some(req.method()),
        Var::Path => Some(req.path()),
        Var::Authority => req.authority(),
        Var::StartTime => Some(start.get_or_insert_with(now).clone()),
        Var::Req(name) => Some(req.header_all(name).join(", ")),
        Var::Resp(name) => resp.map(|resp| resp.header_all(name).join(", ")),
        Var::Status => resp.map(|resp| resp.status().to_string()),
    };
    value.unwrap_or_default()
}

fn now() -> String {
    time::rfc3339_millis(time::now_unix_nanos())
}

/// Logs the operations skipped for this request.
fn report(side: Side, skipped: &[Skipped]) {
    for Skipped { op, name, bad } in skipped {
        weft_sdk::warn!(
            "{}.{op}.{name}: skipped for this request: the rendered value contains the \
             control character {bad:?}, which is not allowed in a header",
            side.section()
        );
    }
}

struct RequestHeaders<'a>(&'a Request);

impl Headers for RequestHeaders<'_> {
    fn get_all(&self, name: &str) -> Vec<String> {
        self.0.header_all(name)
    }

    fn contains(&self, name: &str) -> bool {
        self.0.header(name).is_some()
    }

    fn set(&self, name: &str, value: &str) {
        self.0.set_header(name, value)
    }

    fn append(&self, name: &str, value: &str) {
        self.0.append_header(name, value)
    }

    fn remove(&self, name: &str) {
        self.0.remove_header(name)
    }
}

struct ResponseHeaders<'a>(&'a Response);

impl Headers for ResponseHeaders<'_> {
    fn get_all(&self, name: &str) -> Vec<String> {
        self.0.header_all(name)
    }

    fn contains(&self, name: &str) -> bool {
        self.0.header(name).is_some()
    }

    fn set(&self, name: &str, value: &str) {
        self.0.set_header(name, value)
    }

    fn append(&self, name: &str, value: &str) {
        self.0.append_header(name, value)
    }

    fn remove(&self, name: &str) {
        self.0.remove_header(name)
    }
}
