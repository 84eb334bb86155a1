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

/// Whether a presented bearer token is `token`, compared in constant time
/// (no early exit on the first differing byte).
pub fn token_matches(presented: &str, token: &str) -> bool {
    let (a, b) = (presented.as_bytes(), token.as_bytes());
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// Lower-case hex of `bytes`: how a module's sha256 is written on the wire,
/// in the control plane's store and in the proxies' caches.
pub fn hex(bytes: &[u8]) -> String {
    use std::fmt::Write;
    bytes
        .iter()
        .fold(String::with_capacity(bytes.len() * 2), |mut s, b| {
            let _ = write!(s, "{b:02x}");
            s
        })
}

/// The hex sha256 of `bytes`: a module's name in the registry.
pub fn sha256_hex(bytes: &[u8]) -> String {
    use sha2::Digest;
    hex(&sha2::Sha256::digest(bytes))
}

pub use chunks::{ModuleAssembler, ModuleFetchError, push_chunks};
