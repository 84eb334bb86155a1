//! State shared by every instance of one filter, with compare-and-swap
//! writes: what rate limits and other cross-request counters are built on.
//! It outlives config reloads (it is keyed by the filter's name).

use std::collections::HashMap;
use std::hash::{BuildHasher, RandomState};
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};

use bytes::Bytes;

use super::bindings::weft::filter::host::SharedError;

const SHARDS: usize = 16;
/// Largest value one key may hold.
pub const MAX_VALUE_BYTES: usize = 64 * 1024;
/// Most keys one filter may hold.
pub const MAX_KEYS: usize = 100_000;

/// Key → (value, version), sharded to keep unrelated keys off each other's lock.
pub struct SharedState {
    shards: [Mutex<HashMap<String, (Bytes, u64)>>; SHARDS],
    hasher: RandomState,
    keys: AtomicU64,
    versions: AtomicU64,
}

impl Default for SharedState {
    fn default() -> Self {
        Self {
            shards: std::array::from_fn(|_| Mutex::new(HashMap::new())),
            hasher: RandomState::new(),
            keys: AtomicU64::new(0),
            versions: AtomicU64::new(1),
        }
    }
}

impl SharedState {
    fn shard(&self, key: &str) -> &Mutex<HashMap<String, (Bytes, u64)>> {
        &self.shards[self.hasher.hash_one(key) as usize % SHARDS]
    }

    /// The value under `key` and its version.
    pub fn get(&self, key: &str) -> Option<(Bytes, u64)> {
        self.shard(key).lock().unwrap().get(key).cloned()
    }

    /// Writes `value` if `key`'s version is `cas` (0: the key must be absent).
    pub fn set(&self, key: String, value: Vec<u8>, cas: u64) -> Result<u64, SharedError> {
        if value.len() > MAX_VALUE_BYTES {
            return Err(SharedError::TooLarge);
        }
        let mut shard = self.shard(&key).lock().unwrap();
        let current = shard.get(&key).map(|(_, v)| *v).unwrap_or(0);
        if current != cas {
            return Err(SharedError::CasMismatch);
        }
        if current == 0 {
            if self.keys.load(Ordering::Relaxed) >= MAX_KEYS as u64 {
                return Err(SharedError::TooLarge);
            }
            self.keys.fetch_add(1, Ordering::Relaxed);
        }
        let version = self.versions.fetch_add(1, Ordering::Relaxed);
        shard.insert(key, (Bytes::from(value), version));
        Ok(version)
    }

    /// Removes `key` if its version is `cas` (0: whatever is there).
    pub fn delete(&self, key: &str, cas: u64) -> Result<(), SharedError> {
        let mut shard = self.shard(key).lock().unwrap();
        match shard.get(key) {
            Some((_, v)) if cas != 0 && *v != cas => Err(SharedError::CasMismatch),
            Some(_) => {
                shard.remove(key);
                self.keys.fetch_sub(1, Ordering::Relaxed);
                Ok(())
            }
            None if cas == 0 => Ok(()),
            None => Err(SharedError::CasMismatch),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn compare_and_swap() {
        let s = SharedState::default();
        let v1 = s.set("k".into(), b"1".to_vec(), 0).unwrap();
        assert!(matches!(
            s.set("k".into(), b"x".to_vec(), 0),
            Err(SharedError::CasMismatch)
        ));
        let v2 = s.set("k".into(), b"2".to_vec(), v1).unwrap();
        assert_ne!(v1, v2);
        assert!(matches!(
            s.set("k".into(), b"3".to_vec(), v1),
            Err(SharedError::CasMismatch)
        ));
        assert_eq!(s.get("k").unwrap(), (Bytes::from_static(b"2"), v2));
        assert!(matches!(s.delete("k", v1), Err(SharedError::CasMismatch)));
        s.delete("k", v2).unwrap();
        assert!(s.get("k").is_none());
    }

    #[test]
    fn refuses_oversized_values() {
        let s = SharedState::default();
        let big = vec![0; MAX_VALUE_BYTES + 1];
        assert!(matches!(
            s.set("k".into(), big, 0),
            Err(SharedError::TooLarge)
        ));
    }
}
