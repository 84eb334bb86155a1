//! HTTP plumbing shared by the listener and the upstream side.

pub mod body;
pub mod expect;
pub mod grpc;
pub mod headers;
pub mod local;
pub mod target;

pub use body::ProxyBody;
