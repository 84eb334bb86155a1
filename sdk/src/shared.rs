//! State shared by every instance of this filter in the proxy: across
//! requests, workers and config reloads.
//!
//! Writes are compare-and-swap on a version (`cas`): read the entry, compute
//! the new value, write it with the version you read, and retry on
//! [`SharedError::CasMismatch`].
//!
//! ```
//! use weft_sdk::shared::{self, SharedError};
//!
//! /// Adds one to the counter under `key`; returns the new count.
//! fn increment(key: &str) -> Result<u64, SharedError> {
//!     loop {
//!         let (count, cas) = match shared::get(key) {
//!             Some(entry) => (decode(&entry.value), entry.cas),
//!             None => (0, 0),
//!         };
//!         match shared::set(key, (count + 1).to_le_bytes(), cas) {
//!             Ok(_) => return Ok(count + 1),
//!             Err(SharedError::CasMismatch) => continue,
//!             Err(err) => return Err(err),
//!         }
//!     }
//! }
//!
//! fn decode(bytes: &[u8]) -> u64 {
//!     bytes.try_into().map(u64::from_le_bytes).unwrap_or(0)
//! }
//! ```

use std::fmt;

use crate::sys::host;

/// A stored value and its version.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Entry {
    /// The stored bytes.
    pub value: Vec<u8>,
    /// The version; changes on every successful write. Pass it to
    /// [`set`] or [`delete`] to change this exact version.
    pub cas: u64,
}

/// Why a shared-state write did not happen.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum SharedError {
    /// The key's version is not the one given: read it again and retry.
    CasMismatch,
    /// The state is full or the value too large.
    TooLarge,
}

impl SharedError {
    fn from_wit(err: host::SharedError) -> SharedError {
        match err {
            host::SharedError::CasMismatch => SharedError::CasMismatch,
            host::SharedError::TooLarge => SharedError::TooLarge,
        }
    }
}

impl fmt::Display for SharedError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            SharedError::CasMismatch => "the shared entry changed since it was read",
            SharedError::TooLarge => "the shared state is full or the value is too large",
        })
    }
}

impl std::error::Error for SharedError {}

/// Reads `key`.
pub fn get(key: &str) -> Option<Entry> {
    host::shared_get(key).map(|entry| Entry {
        value: entry.value,
        cas: entry.cas,
    })
}

/// Writes `value` under `key` if its version is still `cas` (`0`: only if
/// the key does not exist yet). Returns the new version.
pub fn set(key: &str, value: impl AsRef<[u8]>, cas: u64) -> Result<u64, SharedError> {
    host::shared_set(key, value.as_ref(), cas).map_err(SharedError::from_wit)
}

/// Removes `key` if its version is still `cas` (`0`: whatever is there).
pub fn delete(key: &str, cas: u64) -> Result<(), SharedError> {
    host::shared_delete(key, cas).map_err(SharedError::from_wit)
}
