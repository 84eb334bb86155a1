//! State shared by every instance of one filter, with compare-and-swap
//! writes: what rate limits and other cross-request counters are built on.
//! It outlives config reloads that keep the filter's name and module (see
//! `FilterRuntime::identity`).
//!
//! Bounded: a key's length, a value's size, the keys and the bytes (keys and
//! values) of one filter, and the bytes of all filters together. The counts
//! are atomics checked before they are added to, so racing writers may pass
//! a limit by a few entries.

use std::collections::HashMap;
use std::collections::hash_map::Entry;
use std::hash::BuildHasher;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use bytes::Bytes;

use super::bindings::weft::filter::host::SharedError;

const SHARDS: usize = 16;
/// Longest key.
pub const MAX_KEY_BYTES: usize = 1024;
/// Largest value one key may hold.
pub const MAX_VALUE_BYTES: usize = 64 * 1024;
/// Most keys one filter may hold.
pub const MAX_KEYS: usize = 100_000;
/// Most bytes (keys and values) one filter may hold.
pub const MAX_FILTER_BYTES: usize = 64 << 20;
/// Most bytes (keys and values) all filters together may hold.
pub const MAX_TOTAL_BYTES: usize = 256 << 20;

/// The bytes held by the shared state of every filter.
pub struct SharedBytes {
    used: AtomicUsize,
    limit: usize,
}

impl Default for SharedBytes {
    fn default() -> Self {
        Self::with_limit(MAX_TOTAL_BYTES)
    }
}

impl SharedBytes {
    /// A budget of `limit` bytes.
    pub fn with_limit(limit: usize) -> Self {
        Self {
            used: AtomicUsize::new(0),
            limit,
        }
    }
}

/// The limits of one filter's state.
#[derive(Debug, Clone, Copy)]
struct Limits {
    keys: usize,
    bytes: usize,
}

/// Keys are hashed with a per-process random seed (foldhash, as the
/// metrics' series are): filters may key on what clients send, and SipHash
/// cost a rate limit's write 750 instructions in hashing alone.
type Hasher = foldhash::fast::RandomState;

/// One shard: key → (value, version).
type Shard = HashMap<String, (Bytes, u64), Hasher>;

/// Key → (value, version), sharded to keep unrelated keys off each other's lock.
pub struct SharedState {
    shards: [Mutex<Shard>; SHARDS],
    hasher: Hasher,
    keys: AtomicU64,
    bytes: AtomicUsize,
    total: Arc<SharedBytes>,
    limits: Limits,
    versions: AtomicU64,
}

impl Drop for SharedState {
    fn drop(&mut self) {
        self.total
            .used
            .fetch_sub(*self.bytes.get_mut(), Ordering::Relaxed);
    }
}

impl SharedState {
    /// An empty state whose bytes count against `total`.
    pub fn new(total: Arc<SharedBytes>) -> Self {
        Self::with_limits(
            total,
            Limits {
                keys: MAX_KEYS,
                bytes: MAX_FILTER_BYTES,
            },
        )
    }

    fn with_limits(total: Arc<SharedBytes>, limits: Limits) -> Self {
        Self {
            shards: std::array::from_fn(|_| Mutex::new(Shard::default())),
            hasher: Hasher::default(),
            keys: AtomicU64::new(0),
            bytes: AtomicUsize::new(0),
            total,
            limits,
            versions: AtomicU64::new(1),
        }
    }

    fn shard(&self, key: &str) -> &Mutex<Shard> {
        &self.shards[self.hasher.hash_one(key) as usize % SHARDS]
    }

    /// The value under `key` and its version.
    pub fn get(&self, key: &str) -> Option<(Bytes, u64)> {
        self.shard(key).lock().unwrap().get(key).cloned()
    }

    /// Writes `value` if `key`'s version is `cas` (0: the key must be absent).
    pub fn set(&self, key: String, value: Vec<u8>, cas: u64) -> Result<u64, SharedError> {
        if value.len() > MAX_VALUE_BYTES || key.len() > MAX_KEY_BYTES {
            return Err(SharedError::TooLarge);
        }
        let mut shard = self.shard(&key).lock().unwrap();
        let key_len = key.len();
        let entry = shard.entry(key);
        let (current, old_bytes) = match &entry {
            Entry::Occupied(e) => (e.get().1, key_len + e.get().0.len()),
            Entry::Vacant(_) => (0, 0),
        };
        if current != cas {
            return Err(SharedError::CasMismatch);
        }
        if current == 0 && self.keys.load(Ordering::Relaxed) >= self.limits.keys as u64 {
            return Err(SharedError::TooLarge);
        }
        let new_bytes = key_len + value.len();
        if new_bytes > old_bytes {
            let grow = new_bytes - old_bytes;
            if self.bytes.load(Ordering::Relaxed) + grow > self.limits.bytes
                || self.total.used.load(Ordering::Relaxed) + grow > self.total.limit
            {
                return Err(SharedError::TooLarge);
            }
        }
        self.account(old_bytes, new_bytes);
        if current == 0 {
            self.keys.fetch_add(1, Ordering::Relaxed);
        }
        let version = self.versions.fetch_add(1, Ordering::Relaxed);
        let value = (Bytes::from(value), version);
        match entry {
            Entry::Occupied(mut e) => *e.get_mut() = value,
            Entry::Vacant(e) => {
                e.insert(value);
            }
        }
        Ok(version)
    }

    /// Removes `key` if its version is `cas` (0: whatever is there).
    pub fn delete(&self, key: &str, cas: u64) -> Result<(), SharedError> {
        let mut shard = self.shard(key).lock().unwrap();
        match shard.get(key) {
            Some((_, v)) if cas != 0 && *v != cas => Err(SharedError::CasMismatch),
            Some((value, _)) => {
                self.account(key.len() + value.len(), 0);
                shard.remove(key);
                self.keys.fetch_sub(1, Ordering::Relaxed);
                Ok(())
            }
            None if cas == 0 => Ok(()),
            None => Err(SharedError::CasMismatch),
        }
    }

    /// Moves this filter's and the process's byte counts from `old` to `new`.
    fn account(&self, old: usize, new: usize) {
        if new >= old {
            self.bytes.fetch_add(new - old, Ordering::Relaxed);
            self.total.used.fetch_add(new - old, Ordering::Relaxed);
        } else {
            self.bytes.fetch_sub(old - new, Ordering::Relaxed);
            self.total.used.fetch_sub(old - new, Ordering::Relaxed);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn compare_and_swap() {
        let s = SharedState::new(Arc::default());
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
        let s = SharedState::new(Arc::default());
        let big = vec![0; MAX_VALUE_BYTES + 1];
        assert!(matches!(
            s.set("k".into(), big, 0),
            Err(SharedError::TooLarge)
        ));
    }

    #[test]
    fn refuses_oversized_keys() {
        let s = SharedState::new(Arc::default());
        let long = "k".repeat(MAX_KEY_BYTES + 1);
        assert!(matches!(
            s.set(long, b"1".to_vec(), 0),
            Err(SharedError::TooLarge)
        ));
        s.set("k".repeat(MAX_KEY_BYTES), b"1".to_vec(), 0).unwrap();
    }

    #[test]
    fn a_filter_holds_at_most_its_bytes_and_gets_them_back_on_delete() {
        let total = Arc::new(SharedBytes::default());
        let limits = Limits {
            keys: 100,
            bytes: 100,
        };
        let s = SharedState::with_limits(total.clone(), limits);
        // 1 + 59 bytes, then 1 + 39: 100 in all.
        let a = s.set("a".into(), vec![0; 59], 0).unwrap();
        s.set("b".into(), vec![0; 39], 0).unwrap();
        assert!(matches!(
            s.set("c".into(), vec![], 0),
            Err(SharedError::TooLarge)
        ));
        // Growing a value counts its growth only; shrinking gives back.
        assert!(matches!(
            s.set("a".into(), vec![0; 60], a),
            Err(SharedError::TooLarge)
        ));
        let a = s.set("a".into(), vec![0; 9], a).unwrap();
        s.set("c".into(), vec![0; 49], 0).unwrap();
        assert_eq!(total.used.load(Ordering::Relaxed), 100);
        s.delete("a", a).unwrap();
        s.delete("c", 0).unwrap();
        assert_eq!(total.used.load(Ordering::Relaxed), 40);
        drop(s);
        assert_eq!(total.used.load(Ordering::Relaxed), 0);
    }

    #[test]
    fn all_filters_together_hold_at_most_the_total() {
        let total = Arc::new(SharedBytes::with_limit(100));
        let one = SharedState::new(total.clone());
        let two = SharedState::new(total.clone());
        one.set("a".into(), vec![0; 79], 0).unwrap();
        assert!(matches!(
            two.set("b".into(), vec![0; 20], 0),
            Err(SharedError::TooLarge)
        ));
        two.set("b".into(), vec![0; 19], 0).unwrap();
        drop(one);
        two.set("c".into(), vec![0; 79], 0).unwrap();
    }
}
