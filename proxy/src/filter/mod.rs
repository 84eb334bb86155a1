//! The filter runtime: Wasm components of the `weft:filter` world (and
//! proxy-wasm modules), compiled once, instantiated ahead of requests, and
//! run per request under a deadline and a memory cap.
//!
//! - [`runtime`]: the engine and module cache (one per process).
//! - [`module`]: loading and checking a module; [`disk_cache`]: its
//!   compiled build kept on disk between runs.
//! - [`instance`]: instances and their pools.
//! - [`chain`]: a route's chain and one request's run through it.
//! - [`host`]: the host functions filters import; [`accessors`]: those of
//!   the request and response they act on.
//! - [`proxy_wasm`]: filters of the proxy-wasm ABI, in the same chains.

pub mod accessors;
pub mod backtrace;
pub mod callout;
pub mod chain;
pub mod deadline;
pub mod disk_cache;
pub mod exchange;
pub mod host;
pub mod instance;
pub mod module;
pub mod proxy_wasm;
pub mod runtime;
pub mod shared;

/// Bindings generated from `wit/` for the host side.
pub mod bindings {
    wasmtime::component::bindgen!({
        path: "../wit",
        world: "http-filter",
        imports: { default: trappable },
    });
}

pub use chain::{ChainEntry, ChainRun, FilterChain, Step};
pub use exchange::{Exchange, Phase, RequestProps};
pub use runtime::FilterRuntime;
