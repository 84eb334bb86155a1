//! Randomness from the proxy.

use crate::bindings::weft::filter::host;

/// A random 64-bit number from the proxy's generator: for sampling and
/// jitter, not for keys or tokens.
pub fn random_u64() -> u64 {
    host::random_u64()
}
