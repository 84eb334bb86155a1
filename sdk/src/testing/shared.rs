//! Shared state with the semantics of the proxy's (`proxy/src/filter/shared.rs`):
//! compare-and-swap on a version that changes on every write (never 0), and
//! the same limits on a key, a value, the keys and the bytes.

use std::collections::BTreeMap;

use crate::sys::host::SharedError;

/// Longest key.
const MAX_KEY_BYTES: usize = 1024;
/// Largest value one key may hold.
const MAX_VALUE_BYTES: usize = 64 * 1024;
/// Most keys one filter may hold.
pub(crate) const MAX_KEYS: usize = 100_000;
/// Most bytes (keys and values) one filter may hold.
const MAX_FILTER_BYTES: usize = 64 << 20;

/// Key → (value, version).
#[derive(Debug)]
pub(crate) struct Shared {
    entries: BTreeMap<String, (Vec<u8>, u64)>,
    bytes: usize,
    /// The next version.
    versions: u64,
    /// Most keys (settable, to test a full state).
    pub max_keys: usize,
}

impl Default for Shared {
    fn default() -> Shared {
        Shared {
            entries: BTreeMap::new(),
            bytes: 0,
            versions: 1,
            max_keys: MAX_KEYS,
        }
    }
}

impl Shared {
    pub(crate) fn get(&self, key: &str) -> Option<(Vec<u8>, u64)> {
        self.entries.get(key).cloned()
    }

    pub(crate) fn keys(&self) -> Vec<String> {
        self.entries.keys().cloned().collect()
    }

    /// Writes `value` if `key`'s version is `cas` (0: the key must be absent).
    pub(crate) fn set(&mut self, key: &str, value: &[u8], cas: u64) -> Result<u64, SharedError> {
        if value.len() > MAX_VALUE_BYTES || key.len() > MAX_KEY_BYTES {
            return Err(SharedError::TooLarge);
        }
        let (current, old_bytes) = self
            .entries
            .get(key)
            .map_or((0, 0), |(v, version)| (*version, key.len() + v.len()));
        if current != cas {
            return Err(SharedError::CasMismatch);
        }
        if current == 0 && self.entries.len() >= self.max_keys {
            return Err(SharedError::TooLarge);
        }
        let new_bytes = key.len() + value.len();
        if self.bytes - old_bytes + new_bytes > MAX_FILTER_BYTES {
            return Err(SharedError::TooLarge);
        }
        Ok(self.put(key, value))
    }

    /// Writes `value` whatever is there (for a test to seed the state).
    pub(crate) fn put(&mut self, key: &str, value: &[u8]) -> u64 {
        let version = self.versions;
        self.versions += 1;
        if let Some((old, _)) = self
            .entries
            .insert(key.to_string(), (value.to_vec(), version))
        {
            self.bytes -= key.len() + old.len();
        }
        self.bytes += key.len() + value.len();
        version
    }

    /// Removes `key` if its version is `cas` (0: whatever is there).
    pub(crate) fn delete(&mut self, key: &str, cas: u64) -> Result<(), SharedError> {
        match self.entries.get(key) {
            Some((_, v)) if cas != 0 && *v != cas => Err(SharedError::CasMismatch),
            Some((value, _)) => {
                self.bytes -= key.len() + value.len();
                self.entries.remove(key);
                Ok(())
            }
            None if cas == 0 => Ok(()),
            None => Err(SharedError::CasMismatch),
        }
    }
}
