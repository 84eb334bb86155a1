//! What the limiter needs from the host: shared state with compare-and-swap
//! writes, and the monotonic clock. The filter implements it with
//! `weft_sdk`; the tests with an in-memory copy of the host's semantics.

/// Why a write did not happen.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StoreError {
    /// The key's version is not the one given: read again and retry.
    Conflict,
    /// The state is full (its key limit is reached) or the value too large.
    Full,
}

/// Shared state and the clock.
pub trait Store {
    /// The value under `key` and its version.
    fn get(&self, key: &str) -> Option<(Vec<u8>, u64)>;
    /// Writes `value` if `key`'s version is `cas` (0: only if absent).
    fn set(&self, key: &str, value: &[u8], cas: u64) -> Result<u64, StoreError>;
    /// Removes `key` if its version is `cas`.
    fn delete(&self, key: &str, cas: u64) -> Result<(), StoreError>;
    /// Monotonic nanoseconds.
    fn now_ns(&self) -> u64;
}

#[cfg(test)]
pub mod memory {
    //! An in-memory [`Store`] with the host's semantics (see
    //! `proxy/src/filter/shared.rs`), a settable clock, a key limit, and
    //! injectable conflicts.

    use std::collections::HashMap;
    use std::sync::Mutex;
    use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};

    use super::{Store, StoreError};

    /// Shared state in a mutex.
    pub struct MemoryStore {
        entries: Mutex<HashMap<String, (Vec<u8>, u64)>>,
        versions: AtomicU64,
        max_keys: usize,
        /// The clock, in nanoseconds.
        pub now: AtomicU64,
        /// This many next writes fail with a conflict.
        pub conflicts: AtomicUsize,
        /// Writes attempted (including refused ones).
        pub writes: AtomicUsize,
        /// Reads.
        pub reads: AtomicUsize,
    }

    impl MemoryStore {
        /// An empty store holding at most `max_keys` keys.
        pub fn new(max_keys: usize) -> MemoryStore {
            MemoryStore {
                entries: Mutex::new(HashMap::new()),
                versions: AtomicU64::new(1),
                max_keys,
                now: AtomicU64::new(0),
                conflicts: AtomicUsize::new(0),
                writes: AtomicUsize::new(0),
                reads: AtomicUsize::new(0),
            }
        }

        /// Sets the clock.
        pub fn set_now(&self, ns: u64) {
            self.now.store(ns, Ordering::SeqCst);
        }

        /// The number of keys.
        pub fn len(&self) -> usize {
            self.entries.lock().unwrap().len()
        }

        /// Whether `key` is there.
        pub fn contains(&self, key: &str) -> bool {
            self.entries.lock().unwrap().contains_key(key)
        }

        /// Writes `value` under `key` whatever is there.
        pub fn put(&self, key: &str, value: &[u8]) {
            let version = self.versions.fetch_add(1, Ordering::SeqCst);
            self.entries
                .lock()
                .unwrap()
                .insert(key.to_string(), (value.to_vec(), version));
        }
    }

    impl Store for MemoryStore {
        fn get(&self, key: &str) -> Option<(Vec<u8>, u64)> {
            self.reads.fetch_add(1, Ordering::SeqCst);
            self.entries.lock().unwrap().get(key).cloned()
        }

        fn set(&self, key: &str, value: &[u8], cas: u64) -> Result<u64, StoreError> {
            self.writes.fetch_add(1, Ordering::SeqCst);
            if self
                .conflicts
                .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1))
                .is_ok()
            {
                return Err(StoreError::Conflict);
            }
            let mut entries = self.entries.lock().unwrap();
            let current = entries.get(key).map_or(0, |(_, v)| *v);
            if current != cas {
                return Err(StoreError::Conflict);
            }
            if current == 0 && entries.len() >= self.max_keys {
                return Err(StoreError::Full);
            }
            let version = self.versions.fetch_add(1, Ordering::SeqCst);
            entries.insert(key.to_string(), (value.to_vec(), version));
            Ok(version)
        }

        fn delete(&self, key: &str, cas: u64) -> Result<(), StoreError> {
            let mut entries = self.entries.lock().unwrap();
            match entries.get(key) {
                Some((_, v)) if cas != 0 && *v != cas => Err(StoreError::Conflict),
                Some(_) => {
                    entries.remove(key);
                    Ok(())
                }
                None if cas == 0 => Ok(()),
                None => Err(StoreError::Conflict),
            }
        }

        fn now_ns(&self) -> u64 {
            self.now.load(Ordering::SeqCst)
        }
    }
}
