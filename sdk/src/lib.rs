//! Write filters for the Weft proxy in Rust.
//!
//! A filter is a WebAssembly component that the proxy calls at each phase of
//! an HTTP exchange. With this crate you write a type, implement [`Filter`] on
//! it with the methods for the phases you need, and put
//! [`#[weft_sdk::filter]`](macro@filter) on that impl block. The attribute
//! exports the type as the component's filter and tells the proxy which
//! phases it implements, so the proxy calls (and buffers bodies for) only
//! those.
//!
//! # Example
//!
//! A filter that rejects requests without an API key, and tags responses:
//!
//! ```
//! use serde::Deserialize;
//! use weft_sdk::{Action, Filter, LocalResponse, Request, Response};
//!
//! /// The filter's config, from the chain entry's `config` (JSON).
//! #[derive(Deserialize)]
//! #[serde(deny_unknown_fields)]
//! struct Config {
//!     /// The header carrying the key.
//!     header: String,
//!     /// The accepted keys.
//!     keys: Vec<String>,
//! }
//!
//! struct ApiKey {
//!     config: Config,
//! }
//!
//! #[weft_sdk::filter]
//! impl Filter for ApiKey {
//!     type Config = Config;
//!
//!     fn new(config: Config) -> Result<Self, String> {
//!         if config.keys.is_empty() {
//!             return Err("`keys` must not be empty".into());
//!         }
//!         Ok(ApiKey { config })
//!     }
//!
//!     fn on_request_headers(&mut self, req: &Request) -> Action {
//!         match req.header(&self.config.header) {
//!             Some(key) if self.config.keys.contains(&key) => Action::Continue,
//!             _ => {
//!                 weft_sdk::info!("rejected {} {}", req.method(), req.path());
//!                 weft_sdk::metrics::counter_add("api_key_rejected_total", &[], 1);
//!                 LocalResponse::new(401)
//!                     .header("content-type", "text/plain")
//!                     .body("missing or unknown API key\n")
//!                     .into()
//!             }
//!         }
//!     }
//!
//!     fn on_response_headers(&mut self, _req: &Request, resp: &Response) -> Action {
//!         resp.set_header("x-api-key-checked", "1");
//!         Action::Continue
//!     }
//! }
//! # fn main() {}
//! ```
//!
//! Build it as a `cdylib` for `wasm32-wasip2`; rustc emits the component
//! directly:
//!
//! ```toml
//! [lib]
//! crate-type = ["cdylib"]
//!
//! [dependencies]
//! weft-sdk = { path = "../sdk" }
//! serde = { version = "1", features = ["derive"] }
//! ```
//!
//! ```text
//! cargo build --target wasm32-wasip2 --release
//! ```
//!
//! # Config
//!
//! The proxy hands [`Filter::new`] the chain entry's `config`, deserialised
//! into [`Filter::Config`] with `serde_json`. A config that does not fit is
//! refused with serde's message (with its line and column), and the proxy
//! keeps the previous config. Without a `config`, a `()` or `Option<_>` config
//! gets `()` or `None`, and a struct whose fields are all optional (or
//! `#[serde(default)]`) is built as if from `{}`.
//!
//! # What the proxy provides
//!
//! A filter runs without WASI: the standard library's clocks, randomness,
//! environment, files and stdio trap. Use this crate's helpers instead:
//! [`log`] (and the [`info!`], [`warn!`], [`error!`], [`debug!`], [`trace!`]
//! macros), [`time`], [`random_u64`], [`metrics`], [`shared`] state,
//! request [`property`] values and outbound [`http`] calls. A panic is logged through [`log`] at error
//! level, then the call traps; the proxy answers that request with an error.
//!
//! # Testing
//!
//! With feature `testing` (enable it in `[dev-dependencies]` only), the
//! `weft_sdk::testing` module runs a filter's phases natively in `cargo
//! test`, against an in-memory host: see its documentation and
//! `docs/filter-guide.md`.

#![warn(missing_docs)]

mod action;
mod config;
mod export;
mod filter;
mod panic_hook;
mod random;
mod request;
mod response;
mod sys;

pub mod header;
pub mod http;
pub mod log;
pub mod metrics;
pub mod property;
pub mod shared;
pub mod time;

#[cfg(all(feature = "testing", not(target_arch = "wasm32")))]
pub mod testing;

/// What the export glue refers to; not part of the API.
#[doc(hidden)]
pub mod __private {
    pub use crate::export::*;
}

/// Bindings generated from `wit/filter.wit`. Not part of the API: the SDK's
/// types wrap them.
#[doc(hidden)]
#[allow(missing_docs, clippy::all)]
pub mod bindings {
    wit_bindgen::generate!({
        path: "../wit",
        world: "http-filter",
        ownership: Borrowing { duplicate_if_necessary: false },
        pub_export_macro: true,
        export_macro_name: "__export_http_filter",
        default_bindings_module: "weft_sdk::bindings",
    });
}

pub use action::{Action, LocalResponse};
pub use filter::Filter;
pub use random::random_u64;
pub use request::Request;
pub use response::Response;

/// Which phases a filter implements: a set of flags.
///
/// [`#[weft_sdk::filter]`](macro@filter) computes it from the methods an
/// impl defines; override [`Filter::phases`] to choose at run time.
#[doc(inline)]
pub use bindings::weft::filter::types::Phases;

/// Exports a [`Filter`] implementation as the component's filter.
///
/// Put it on the `impl Filter for YourType` block, once per crate:
///
/// ```
/// # use weft_sdk::{Action, Filter, Request};
/// struct Noop;
///
/// #[weft_sdk::filter]
/// impl Filter for Noop {
///     type Config = ();
///
///     fn new(_config: ()) -> Result<Self, String> {
///         Ok(Noop)
///     }
///
///     fn on_request_headers(&mut self, _req: &Request) -> Action {
///         Action::Continue
///     }
/// }
/// # fn main() {}
/// ```
///
/// It keeps the impl as written, adds `const PHASES` with the phases whose
/// methods the block defines (unless the block defines `PHASES` itself), and
/// generates the component's exports for the type.
pub use weft_sdk_macros::filter;
