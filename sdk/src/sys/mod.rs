//! The one seam between the SDK's wrappers and the host: every call the SDK
//! makes into the proxy goes through `sys::{host, request, response}`.
//!
//! - On `wasm32` these are the wit-bindgen imports themselves (a re-export:
//!   no wrapper, no indirection, the same code as calling them directly).
//! - On other targets with feature `testing`, they are answered by the
//!   in-memory host of [`testing`](crate::testing) for the phase call it is
//!   running.
//! - On other targets without it, every call panics and says to enable the
//!   feature.

#[cfg(target_arch = "wasm32")]
pub(crate) use crate::bindings::weft::filter::{host, request, response};

#[cfg(not(target_arch = "wasm32"))]
mod native;
#[cfg(not(target_arch = "wasm32"))]
pub(crate) use native::{host, request, response};
