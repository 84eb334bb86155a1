//! Reclaiming the shared-state keys of full buckets.
//!
//! Shared state holds at most 100 000 keys per filter and has no expiry, so
//! a bucket per client would fill it for good. But a full bucket is the
//! same as no bucket (an absent one is read as full), so a bucket may be
//! deleted once it is full again — which its `full_at_ns` tells, whatever
//! the policy that wrote it.
//!
//! Shared state cannot be listed, so every bucket is tracked in an index:
//! 256 shards, keys `i00`..`iff`, each a list of 16-byte bucket ids. A
//! request that creates a bucket adds its id to its shard; now and then a
//! request sweeps a slice of a shard, deleting the full buckets (by
//! compare-and-swap, so a bucket written meanwhile stays) and dropping their
//! ids.
//!
//! The creator always rewrites the shard (even when the id is already
//! there), and the sweeper writes its shard back by compare-and-swap: so a
//! bucket re-created while a sweep deleted it is never dropped from the
//! index.

use crate::bucket::Bucket;
use crate::key::{BucketId, bucket_key, push_hex};
use crate::limiter::{Failure, MAX_ATTEMPTS};
use crate::store::{Store, StoreError};

const ID_LEN: usize = 16;

/// The index shard of bucket `id`.
pub fn shard_of(id: &BucketId) -> u8 {
    id[0]
}

/// The shared-state key of index shard `shard`: `i` and two hex digits.
pub fn index_key(shard: u8) -> String {
    let mut key = String::with_capacity(3);
    key.push('i');
    push_hex(&mut key, &[shard]);
    key
}

/// The ids in a shard's value (a trailing partial id is ignored).
fn decode(bytes: &[u8]) -> Vec<BucketId> {
    bytes
        .chunks_exact(ID_LEN)
        .map(|chunk| chunk.try_into().expect("16 bytes"))
        .collect()
}

fn encode(ids: &[BucketId]) -> Vec<u8> {
    ids.concat()
}

/// Adds bucket `id`, just created, to its index shard.
pub fn track(store: &impl Store, id: &BucketId) -> Result<(), Failure> {
    let key = index_key(shard_of(id));
    for _ in 0..MAX_ATTEMPTS {
        let (mut ids, cas) = match store.get(&key) {
            Some((value, cas)) => (decode(&value), cas),
            None => (Vec::new(), 0),
        };
        if !ids.contains(id) {
            ids.push(*id);
        }
        match store.set(&key, &encode(&ids), cas) {
            Ok(_) => return Ok(()),
            Err(StoreError::Conflict) => continue,
            Err(StoreError::Full) => return Err(Failure::Full),
        }
    }
    Err(Failure::Contention)
}

/// What one sweep did.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Swept {
    /// Ids looked at.
    pub checked: usize,
    /// Buckets deleted.
    pub deleted: usize,
    /// Whether the shard was written back without the dropped ids (false
    /// when nothing was dropped, or another request changed it meanwhile:
    /// the next sweep drops them).
    pub saved: bool,
}

/// Looks at up to `max` ids of shard `shard`, from position `start`
/// (wrapping), and deletes the buckets that are full.
pub fn sweep(store: &impl Store, shard: u8, start: usize, max: usize) -> Swept {
    let key = index_key(shard);
    let Some((value, cas)) = store.get(&key) else {
        return Swept::default();
    };
    let ids = decode(&value);
    let mut swept = Swept::default();
    if ids.is_empty() {
        swept.saved = store.delete(&key, cas).is_ok();
        return swept;
    }
    let now = store.now_ns();
    let mut drop = vec![false; ids.len()];
    for offset in 0..max.min(ids.len()) {
        let position = (start % ids.len() + offset) % ids.len();
        let bucket_key = bucket_key(&ids[position]);
        swept.checked += 1;
        drop[position] = match store.get(&bucket_key) {
            // Deleted by an earlier sweep whose index write lost a race.
            None => true,
            Some((value, version)) => match Bucket::decode(&value) {
                Some(bucket) if bucket.is_full_at(now) => {
                    let deleted = store.delete(&bucket_key, version).is_ok();
                    swept.deleted += usize::from(deleted);
                    deleted
                }
                Some(_) => false,
                // Not a bucket: not ours to delete, nor to track.
                None => true,
            },
        };
    }
    if !drop.contains(&true) {
        return swept;
    }
    let kept: Vec<BucketId> = ids
        .iter()
        .zip(&drop)
        .filter(|(_, dropped)| !**dropped)
        .map(|(id, _)| *id)
        .collect();
    swept.saved = if kept.is_empty() {
        store.delete(&key, cas).is_ok()
    } else {
        store.set(&key, &encode(&kept), cas).is_ok()
    };
    swept
}

/// The ids in shard `shard`.
#[cfg(test)]
pub fn tracked(store: &impl Store, shard: u8) -> Vec<BucketId> {
    store
        .get(&index_key(shard))
        .map_or_else(Vec::new, |(value, _)| decode(&value))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::bucket::Limits;
    use crate::limiter::{Verdict, check};
    use crate::store::memory::MemoryStore;

    const S: u64 = 1_000_000_000;

    fn id(shard: u8, n: u8) -> BucketId {
        let mut id = [n; 16];
        id[0] = shard;
        id
    }

    #[test]
    fn index_keys() {
        assert_eq!(index_key(0), "i00");
        assert_eq!(index_key(0xab), "iab");
        assert_eq!(shard_of(&id(0x42, 1)), 0x42);
    }

    #[test]
    fn tracking_adds_each_id_once_per_shard() {
        let store = MemoryStore::new(100);
        for n in [1, 2, 1, 3] {
            track(&store, &id(5, n)).unwrap();
        }
        track(&store, &id(6, 1)).unwrap();
        assert_eq!(tracked(&store, 5), [id(5, 1), id(5, 2), id(5, 3)]);
        assert_eq!(tracked(&store, 6), [id(6, 1)]);
    }

    #[test]
    fn tracking_rewrites_the_shard_even_when_the_id_is_there() {
        let store = MemoryStore::new(100);
        track(&store, &id(5, 1)).unwrap();
        let (_, before) = store.get(&index_key(5)).unwrap();
        track(&store, &id(5, 1)).unwrap();
        let (_, after) = store.get(&index_key(5)).unwrap();
        assert_ne!(before, after);
    }

    #[test]
    fn a_sweep_deletes_full_buckets_only() {
        let store = MemoryStore::new(100);
        // Burst 1, one per second: a bucket is full one second after a request.
        let limits = Limits::new(1, 1.0, 1);
        store.set_now(10 * S);
        let old = id(3, 1);
        assert!(matches!(
            check(&store, &limits, &old, &mut None).verdict,
            Verdict::Allowed { .. }
        ));
        store.set_now(10 * S + S / 2);
        let young = id(3, 2);
        check(&store, &limits, &young, &mut None);
        assert_eq!(tracked(&store, 3), [old, young]);

        store.set_now(11 * S);
        let swept = sweep(&store, 3, 0, 64);
        assert_eq!(
            swept,
            Swept {
                checked: 2,
                deleted: 1,
                saved: true
            }
        );
        assert!(!store.contains(&bucket_key(&old)));
        assert!(store.contains(&bucket_key(&young)));
        assert_eq!(tracked(&store, 3), [young]);

        // Nothing to do: nothing written.
        assert!(!sweep(&store, 3, 0, 64).saved);
        store.set_now(12 * S);
        assert_eq!(sweep(&store, 3, 7, 64).deleted, 1);
        assert!(!store.contains(&bucket_key(&young)));
        assert!(!store.contains(&index_key(3)), "an empty shard is deleted");
        assert_eq!(store.len(), 0);
        // A deleted bucket is a full one again.
        assert!(matches!(
            check(&store, &limits, &old, &mut None).verdict,
            Verdict::Allowed { remaining: 0, .. }
        ));
        assert_eq!(tracked(&store, 3), [old]);
    }

    #[test]
    fn a_sweep_looks_at_a_bounded_slice_and_wraps() {
        let store = MemoryStore::new(100);
        for n in 0..10 {
            track(&store, &id(1, n)).unwrap();
        }
        // No bucket exists for these ids: dropped as already deleted.
        let swept = sweep(&store, 1, 8, 4);
        assert_eq!(swept.checked, 4);
        assert!(swept.saved);
        assert_eq!(
            tracked(&store, 1),
            (2..8).map(|n| id(1, n)).collect::<Vec<_>>(),
            "positions 8, 9, 0 and 1"
        );
        assert_eq!(sweep(&store, 9, 0, 4), Swept::default(), "no shard");
    }

    #[test]
    fn a_bucket_re_created_during_a_sweep_stays_tracked() {
        let store = MemoryStore::new(100);
        let limits = Limits::new(1, 1.0, 1);
        let bucket = id(2, 1);
        check(&store, &limits, &bucket, &mut None);
        store.set_now(5 * S);
        // The sweep deletes the full bucket; a request re-creates it and
        // touches the shard before the sweep writes the shard back.
        struct Racing<'a> {
            store: &'a MemoryStore,
            limits: Limits,
            raced: std::cell::Cell<bool>,
        }
        impl Store for Racing<'_> {
            fn get(&self, key: &str) -> Option<(Vec<u8>, u64)> {
                self.store.get(key)
            }
            fn set(&self, key: &str, value: &[u8], cas: u64) -> Result<u64, StoreError> {
                if key.starts_with('i') && !self.raced.replace(true) {
                    check(self.store, &self.limits, &id(2, 1), &mut None);
                }
                self.store.set(key, value, cas)
            }
            fn delete(&self, key: &str, cas: u64) -> Result<(), StoreError> {
                if key.starts_with('i') && !self.raced.replace(true) {
                    check(self.store, &self.limits, &id(2, 1), &mut None);
                }
                self.store.delete(key, cas)
            }
            fn now_ns(&self) -> u64 {
                self.store.now_ns()
            }
        }
        let racing = Racing {
            store: &store,
            limits,
            raced: false.into(),
        };
        let swept = sweep(&racing, 2, 0, 64);
        assert_eq!(swept.deleted, 1);
        assert!(!swept.saved, "the shard changed meanwhile");
        assert!(store.contains(&bucket_key(&bucket)), "re-created");
        assert_eq!(tracked(&store, 2), [bucket], "and still tracked");
    }

    #[test]
    fn a_bucket_written_after_the_sweep_read_it_is_not_deleted() {
        let store = MemoryStore::new(100);
        let limits = Limits::new(1, 1.0, 1);
        let bucket = id(4, 1);
        check(&store, &limits, &bucket, &mut None);
        store.set_now(5 * S);
        // A request takes the token between the sweep's read of the (full)
        // bucket and its delete: the delete's compare-and-swap fails.
        struct Racing<'a> {
            store: &'a MemoryStore,
            limits: Limits,
        }
        impl Store for Racing<'_> {
            fn get(&self, key: &str) -> Option<(Vec<u8>, u64)> {
                self.store.get(key)
            }
            fn set(&self, key: &str, value: &[u8], cas: u64) -> Result<u64, StoreError> {
                self.store.set(key, value, cas)
            }
            fn delete(&self, key: &str, cas: u64) -> Result<(), StoreError> {
                if key.starts_with('b') {
                    let taken = check(self.store, &self.limits, &id(4, 1), &mut None).verdict;
                    assert!(matches!(taken, Verdict::Allowed { .. }), "{taken:?}");
                }
                self.store.delete(key, cas)
            }
            fn now_ns(&self) -> u64 {
                self.store.now_ns()
            }
        }
        let swept = sweep(
            &Racing {
                store: &store,
                limits,
            },
            4,
            0,
            64,
        );
        assert_eq!((swept.checked, swept.deleted, swept.saved), (1, 0, false));
        assert!(store.contains(&bucket_key(&bucket)));
        assert_eq!(tracked(&store, 4), [bucket]);
        assert!(matches!(
            check(&store, &limits, &bucket, &mut None).verdict,
            Verdict::Limited { .. }
        ));
    }

    #[test]
    fn values_that_are_not_buckets_are_left_alone_and_untracked() {
        let store = MemoryStore::new(100);
        let foreign = id(7, 1);
        store.put(&bucket_key(&foreign), b"not a bucket");
        track(&store, &foreign).unwrap();
        let swept = sweep(&store, 7, 0, 64);
        assert_eq!((swept.deleted, swept.saved), (0, true));
        assert!(store.contains(&bucket_key(&foreign)));
        assert_eq!(tracked(&store, 7), Vec::<BucketId>::new());
    }

    #[test]
    fn a_partial_trailing_id_is_ignored() {
        let mut bytes = encode(&[id(1, 1), id(1, 2)]);
        bytes.extend_from_slice(&[9; 5]);
        assert_eq!(decode(&bytes), [id(1, 1), id(1, 2)]);
    }
}
