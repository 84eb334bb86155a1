//! The Weft control-plane protocol, shared by the control plane
//! (`weft-control`) and the proxy's client: one definition of the wire.
//!
//! The messages and the `Control` service are generated at build time from
//! `proto/weft/control/v1/control.proto`; `docs/control-plane.md` describes
//! the exchanges.

/// Version 1 of the protocol (`weft.control.v1`).
#[allow(missing_docs, clippy::all)]
pub mod v1 {
    tonic::include_proto!("weft.control.v1");
}

/// The largest piece of a module sent in one message (`ModuleChunk`,
/// `PushChunk`): well under tonic's 4 MiB default message limit.
pub const CHUNK_SIZE: usize = 1 << 20;

/// The metadata key carrying the bearer token of a write.
pub const AUTHORIZATION: &str = "authorization";

mod chunks;

pub use chunks::{ModuleAssembler, ModuleFetchError, push_chunks};
