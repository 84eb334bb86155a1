//! End-to-end test support for Weft: start the real `weft` binary on a
//! config, real upstream servers and clients on loopback, and find the
//! filter components built from `filters/` and `examples/`.

pub mod client;
pub mod components;
pub mod control;
pub mod filters;
pub mod grpc;
pub mod jwt;
pub mod origin;
pub mod process;
pub mod raw;
pub mod tls;
pub mod upstream;
pub mod websocket;

pub use client::{Reply, client, get, raw_status, send};
pub use control::Control;
pub use filters::{component, proxy_wasm_filter};
pub use process::Weft;
pub use raw::{RawConn, RawReply};
pub use upstream::Upstream;

/// The gRPC library of the gRPC tests' clients.
pub use tonic;
