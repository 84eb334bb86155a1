//! Native unit tests of a filter's phases: `cargo test` calls the phases
//! directly, against an in-memory host, with no Wasm and no proxy.
//!
//! Enable the feature in the filter's dev-dependencies only, so that the
//! component built for the proxy does not have it:
//!
//! ```toml
//! [dev-dependencies]
//! weft-sdk = { path = "../sdk", features = ["testing"] }
//! ```
//!
//! A [`TestHost`] is the proxy's side of one filter: shared state, metrics,
//! the log, clocks, randomness and HTTP callouts, all in memory and
//! readable by the test. [`TestHost::init`] builds a [`TestFilter`] through
//! the same `init` as the proxy (the config as JSON text, parsed into the
//! filter's `Config`); [`TestFilter::request`] sends a [`TestRequest`]
//! through it as a [`TestExchange`], whose `on_…` methods run the phases
//! and return their [`Action`](crate::Action). The exchange then shows the
//! request as it would go upstream ([`SentRequest`]) and the response as it
//! would go to the client ([`SentResponse`]).
//!
//! What the proxy refuses panics here with the proxy's message: a request
//! setter in a response phase, `set_body` outside a body phase, an invalid
//! or proxy-managed header, a metric used as two kinds, a `Retry` from a
//! filter without [`Phases::RETRY`](crate::Phases::RETRY), a phase the
//! filter's `phases()` leave out. So a test fails where the proxy would.
//!
//! # Example
//!
//! ```
//! use weft_sdk::testing::{TestHost, TestRequest, TestResponse};
//! use weft_sdk::{Action, Filter, LocalResponse, Request, Response};
//!
//! #[derive(serde::Deserialize)]
//! struct Config {
//!     key: String,
//! }
//!
//! struct Guard(Config);
//!
//! #[weft_sdk::filter]
//! impl Filter for Guard {
//!     type Config = Config;
//!
//!     fn new(config: Config) -> Result<Self, String> {
//!         Ok(Guard(config))
//!     }
//!
//!     fn on_request_headers(&mut self, req: &Request) -> Action {
//!         if req.header("x-key").as_deref() != Some(self.0.key.as_str()) {
//!             weft_sdk::metrics::counter_add("refused_total", &[], 1);
//!             return LocalResponse::new(401).body("no\n").into();
//!         }
//!         req.remove_header("x-key");
//!         Action::Continue
//!     }
//!
//!     fn on_response_headers(&mut self, _req: &Request, resp: &Response) -> Action {
//!         resp.set_header("x-guarded", "1");
//!         Action::Continue
//!     }
//! }
//!
//! let host = TestHost::new();
//! let mut filter = host.init::<Guard>(r#"{"key": "s3cret"}"#).unwrap();
//!
//! let mut exchange = filter.request(TestRequest::get("/"));
//! let action = exchange.on_request_headers();
//! assert!(matches!(action, Action::Respond(ref r) if r.status == 401));
//! assert_eq!(exchange.response().unwrap().body_text(), "no\n");
//! assert_eq!(host.counter("refused_total", &[]), 1);
//!
//! let mut exchange = filter.request(TestRequest::get("/").header("x-key", "s3cret"));
//! assert_eq!(exchange.on_request_headers(), Action::Continue);
//! assert_eq!(exchange.request().header("x-key"), None);
//! exchange.upstream(TestResponse::new(200));
//! exchange.on_response_headers();
//! assert_eq!(exchange.response().unwrap().header("x-guarded"), Some("1"));
//! ```

pub(crate) mod current;
mod filter;
mod host;
mod message;
mod metrics;
mod shared;
#[cfg(test)]
mod tests;

pub use crate::http::{HttpRequest, HttpResponse};
pub use filter::{TestExchange, TestFilter};
pub use host::{LogLine, TestHost};
pub use message::{SentRequest, SentResponse, TestRequest, TestResponse};
