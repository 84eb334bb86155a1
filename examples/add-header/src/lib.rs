//! `add-header`: sets (replaces) configured headers on the request and/or the
//! response.
//!
//! Config:
//!
//! ```json
//! {
//!   "request": { "x-env": "prod" },
//!   "response": { "x-served-by": "weft", "cache-control": "no-store" }
//! }
//! ```
//!
//! Both sections are optional, but at least one header is required. Names
//! and values are checked when the config loads; the filter only runs the
//! phases its config needs.

mod config;

use weft_sdk::{Action, Filter, Phases, Request, Response};

use crate::config::{Config, Headers};

struct AddHeader {
    request: Headers,
    response: Headers,
}

#[weft_sdk::filter]
impl Filter for AddHeader {
    type Config = Config;

    fn new(config: Config) -> Result<Self, String> {
        let (request, response) = config.validate()?;
        Ok(AddHeader { request, response })
    }

    fn phases(&self) -> Phases {
        let mut phases = Phases::empty();
        phases.set(Phases::REQUEST_HEADERS, !self.request.is_empty());
        phases.set(Phases::RESPONSE_HEADERS, !self.response.is_empty());
        phases
    }

    fn on_request_headers(&mut self, req: &Request) -> Action {
        for (name, value) in &self.request {
            req.set_header(name, value);
        }
        Action::Continue
    }

    fn on_response_headers(&mut self, _req: &Request, resp: &Response) -> Action {
        for (name, value) in &self.response {
            resp.set_header(name, value);
        }
        Action::Continue
    }
}
