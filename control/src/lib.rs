//! The Weft control plane: a registry of filter modules, each group's
//! applied configuration, and the gRPC service through which proxies
//! subscribe to them and operators push and apply.
//!
//! - [`store`]: what is kept, durably (`Store`, `RedbStore`).
//! - [`module_check`]: what a pushed module must be.
//! - [`apply`]: checking and resolving a configuration before it is applied
//!   (`ConfigValidator` is where the proxy's own checks plug in).
//! - [`service`]: the `Control` gRPC service (`ControlService`).
//! - [`server`]: `serve`, what `weft control` runs.

pub mod apply;
pub mod module_check;
pub mod proxies;
pub mod server;
pub mod service;
pub mod store;
mod subscription;

pub use weft_api::v1 as api;
