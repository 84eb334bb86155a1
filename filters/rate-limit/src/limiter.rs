//! Taking a token from a bucket in shared state: read, compute, write with
//! compare-and-swap, retry when another request wrote in between.
//!
//! An instance remembers what it last wrote to its recent buckets
//! ([`KnownBuckets`]) and starts from that instead of reading: when no other
//! instance wrote in between (one worker, or a bucket one client keeps to
//! itself), a request costs one write to shared state instead of a read and
//! a write. A stale memory costs nothing but the attempt: the write's
//! compare-and-swap refuses it, and the bucket is read as before. A refusal
//! is never decided from memory alone.

use std::collections::BTreeMap;

use crate::bucket::{Bucket, Limits, Take};
use crate::key::{BucketId, RECENT_BUCKETS, bucket_key};
use crate::reclaim;
use crate::store::{Store, StoreError};

/// Attempts before giving up on a bucket that keeps changing under us.
pub const MAX_ATTEMPTS: usize = 64;

/// What the limiter decided.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    /// A token was taken.
    Allowed {
        /// Whole tokens left.
        remaining: u64,
        /// Seconds until the bucket is full again.
        reset_secs: u64,
    },
    /// No token: refuse.
    Limited {
        /// Seconds until a token is there (at least 1).
        retry_after_secs: u64,
        /// Seconds until the bucket is full again.
        reset_secs: u64,
    },
    /// Undecided: the request is let through (fail open).
    FailOpen(Failure),
}

/// Why the limiter could not decide, or could not track a new bucket.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Failure {
    /// [`MAX_ATTEMPTS`] writes in a row lost the race.
    Contention,
    /// Shared state refused the write: its key limit is reached.
    Full,
}

impl Failure {
    /// The metric label.
    pub fn label(self) -> &'static str {
        match self {
            Failure::Contention => "contention",
            Failure::Full => "full",
        }
    }
}

/// The verdict, and whether a bucket created for it could not be put in the
/// reclaim index (it then stays in shared state until the process ends).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Checked {
    /// The decision.
    pub verdict: Verdict,
    /// Set when a new bucket could not be tracked.
    pub untracked: Option<Failure>,
}

/// A bucket as this instance last wrote it, and the version that write made.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Known {
    bucket: Bucket,
    cas: u64,
}

/// What this instance last wrote to its most recent buckets: at most
/// [`RECENT_BUCKETS`], all forgotten at once when full. (A `BTreeMap`: a
/// `HashMap`'s random seed would need WASI, which filters are not given.)
#[derive(Debug, Default)]
pub struct KnownBuckets(BTreeMap<BucketId, Known>);

impl KnownBuckets {
    /// [`check`], starting from what this instance last wrote to `id`.
    pub fn check(&mut self, store: &impl Store, limits: &Limits, id: &BucketId) -> Checked {
        let mut known = self.0.remove(id);
        let checked = check(store, limits, id, &mut known);
        if let Some(known) = known {
            if self.0.len() >= RECENT_BUCKETS {
                self.0.clear();
            }
            self.0.insert(*id, known);
        }
        checked
    }
}

/// Takes a token from bucket `id` under `limits`. The first attempt starts
/// from `known` when given (what this instance last wrote); afterwards
/// `known` is what this call wrote, if it wrote.
pub fn check(
    store: &impl Store,
    limits: &Limits,
    id: &BucketId,
    known: &mut Option<Known>,
) -> Checked {
    let key = bucket_key(id);
    let mut remembered = known.take();
    for _ in 0..MAX_ATTEMPTS {
        // The clock is read after the bucket, so that `now` is not older
        // than any write we read (`Limits::refill` copes if it is).
        let (stored, cas, from_memory) = match remembered.take() {
            Some(Known { bucket, cas }) => (Some(bucket), cas, true),
            None => match store.get(&key) {
                Some((value, cas)) => (Bucket::decode(&value), cas, false),
                None => (None, 0, false),
            },
        };
        let now = store.now_ns();
        match limits.take(stored, now) {
            // The bucket may have been reclaimed and started afresh since:
            // read it before refusing.
            Take::Limited { .. } if from_memory => continue,
            Take::Limited {
                retry_after_secs,
                reset_secs,
            } => {
                return Checked {
                    verdict: Verdict::Limited {
                        retry_after_secs,
                        reset_secs,
                    },
                    untracked: None,
                };
            }
            Take::Allowed {
                bucket,
                remaining,
                reset_secs,
            } => match store.set(&key, &bucket.encode(), cas) {
                Ok(version) => {
                    *known = Some(Known {
                        bucket,
                        cas: version,
                    });
                    let untracked = if cas == 0 {
                        reclaim::track(store, id).err()
                    } else {
                        None
                    };
                    return Checked {
                        verdict: Verdict::Allowed {
                            remaining,
                            reset_secs,
                        },
                        untracked,
                    };
                }
                Err(StoreError::Conflict) => continue,
                Err(StoreError::Full) => {
                    return Checked {
                        verdict: Verdict::FailOpen(Failure::Full),
                        untracked: None,
                    };
                }
            },
        }
    }
    Checked {
        verdict: Verdict::FailOpen(Failure::Contention),
        untracked: None,
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;
    use std::sync::atomic::Ordering;

    use super::*;
    use crate::bucket::SCALE;
    use crate::store::memory::MemoryStore;

    const S: u64 = 1_000_000_000;
    const ID: BucketId = [7; 16];

    fn verdict(store: &MemoryStore, limits: &Limits) -> Verdict {
        let checked = check(store, limits, &ID, &mut None);
        assert_eq!(checked.untracked, None);
        checked.verdict
    }

    fn remaining(checked: Checked) -> u64 {
        match checked.verdict {
            Verdict::Allowed { remaining, .. } => remaining,
            other => panic!("not allowed: {other:?}"),
        }
    }

    #[test]
    fn a_bucket_this_instance_wrote_last_is_written_without_reading_it() {
        let store = MemoryStore::new(100);
        store.set_now(S);
        let limits = Limits::new(10, 1.0, 3600);
        let mut instance = KnownBuckets::default();
        // The first check reads the bucket (and the reclaim index: new).
        assert_eq!(remaining(instance.check(&store, &limits, &ID)), 9);
        let (reads, writes) = (
            store.reads.load(Ordering::SeqCst),
            store.writes.load(Ordering::SeqCst),
        );
        for left in (5..9).rev() {
            assert_eq!(remaining(instance.check(&store, &limits, &ID)), left);
        }
        assert_eq!(
            store.reads.load(Ordering::SeqCst),
            reads,
            "no read after the first"
        );
        assert_eq!(store.writes.load(Ordering::SeqCst), writes + 4);
    }

    #[test]
    fn a_memory_made_stale_by_another_instance_is_refused_by_the_write() {
        let store = MemoryStore::new(100);
        store.set_now(S);
        let limits = Limits::new(10, 1.0, 3600);
        let (mut a, mut b) = (KnownBuckets::default(), KnownBuckets::default());
        assert_eq!(remaining(a.check(&store, &limits, &ID)), 9);
        assert_eq!(remaining(b.check(&store, &limits, &ID)), 8);
        let (reads, writes) = (
            store.reads.load(Ordering::SeqCst),
            store.writes.load(Ordering::SeqCst),
        );
        // a remembers 9 left, but b took one since: the write says so.
        assert_eq!(remaining(a.check(&store, &limits, &ID)), 7);
        assert_eq!(remaining(a.check(&store, &limits, &ID)), 6);
        // a's stale write was refused and the bucket read again, once.
        assert_eq!(store.writes.load(Ordering::SeqCst), writes + 3);
        assert_eq!(store.reads.load(Ordering::SeqCst), reads + 1);
    }

    #[test]
    fn a_refusal_is_never_decided_from_memory() {
        let store = MemoryStore::new(100);
        store.set_now(S);
        let limits = Limits::new(1, 1.0, 3600);
        let mut instance = KnownBuckets::default();
        assert_eq!(remaining(instance.check(&store, &limits, &ID)), 0);
        // Reclaimed (or started afresh by another proxy process): full again.
        store.delete(&bucket_key(&ID), 0).unwrap();
        assert_eq!(remaining(instance.check(&store, &limits, &ID)), 0);
        // Now it is empty in shared state too.
        assert!(matches!(
            instance.check(&store, &limits, &ID).verdict,
            Verdict::Limited { .. }
        ));
    }

    #[test]
    fn exactly_burst_requests_pass_then_refusals() {
        let store = MemoryStore::new(100);
        store.set_now(S);
        let limits = Limits::new(3, 1.0, 3600);
        for remaining in [2, 1, 0] {
            assert_eq!(
                verdict(&store, &limits),
                Verdict::Allowed {
                    remaining,
                    reset_secs: (3 - remaining) * 3600
                }
            );
        }
        let writes = store.writes.load(Ordering::SeqCst);
        assert_eq!(
            verdict(&store, &limits),
            Verdict::Limited {
                retry_after_secs: 3600,
                reset_secs: 3 * 3600
            }
        );
        assert_eq!(
            store.writes.load(Ordering::SeqCst),
            writes,
            "a refusal writes nothing"
        );
        // An hour later, one more.
        store.set_now(S + 3600 * S);
        assert!(matches!(
            verdict(&store, &limits),
            Verdict::Allowed { remaining: 0, .. }
        ));
    }

    #[test]
    fn conflicts_are_retried() {
        let store = MemoryStore::new(100);
        let limits = Limits::new(2, 1.0, 1);
        store.conflicts.store(MAX_ATTEMPTS - 1, Ordering::SeqCst);
        assert!(matches!(
            verdict(&store, &limits),
            Verdict::Allowed { remaining: 1, .. }
        ));
    }

    #[test]
    fn endless_conflicts_fail_open_after_a_bounded_number_of_attempts() {
        let store = MemoryStore::new(100);
        let limits = Limits::new(2, 1.0, 1);
        store.conflicts.store(usize::MAX, Ordering::SeqCst);
        assert_eq!(
            verdict(&store, &limits),
            Verdict::FailOpen(Failure::Contention)
        );
        assert_eq!(store.writes.load(Ordering::SeqCst), MAX_ATTEMPTS);
        assert_eq!(store.len(), 0);
    }

    #[test]
    fn a_full_store_fails_open() {
        let store = MemoryStore::new(1);
        store.put("someone else", b"x");
        let limits = Limits::new(1, 1.0, 3600);
        for _ in 0..3 {
            assert_eq!(verdict(&store, &limits), Verdict::FailOpen(Failure::Full));
        }
    }

    #[test]
    fn a_new_bucket_is_tracked_for_reclaiming() {
        let store = MemoryStore::new(100);
        let limits = Limits::new(2, 1.0, 1);
        verdict(&store, &limits);
        assert!(store.contains(&bucket_key(&ID)));
        assert_eq!(reclaim::tracked(&store, reclaim::shard_of(&ID)), [ID]);
        // Not tracked twice.
        verdict(&store, &limits);
        assert_eq!(reclaim::tracked(&store, reclaim::shard_of(&ID)), [ID]);
    }

    #[test]
    fn a_bucket_that_cannot_be_tracked_still_counts() {
        // Room for the bucket, not for its index entry.
        let store = MemoryStore::new(1);
        let limits = Limits::new(2, 1.0, 3600);
        let checked = check(&store, &limits, &ID, &mut None);
        assert_eq!(
            checked,
            Checked {
                verdict: Verdict::Allowed {
                    remaining: 1,
                    reset_secs: 3600
                },
                untracked: Some(Failure::Full),
            }
        );
        assert!(matches!(
            check(&store, &limits, &ID, &mut None).verdict,
            Verdict::Allowed { remaining: 0, .. }
        ));
        assert!(matches!(
            check(&store, &limits, &ID, &mut None).verdict,
            Verdict::Limited { .. }
        ));
    }

    #[test]
    fn a_value_that_is_not_a_bucket_is_replaced_by_a_full_one() {
        let store = MemoryStore::new(100);
        store.put(&bucket_key(&ID), b"garbage");
        let limits = Limits::new(2, 1.0, 1);
        assert!(matches!(
            verdict(&store, &limits),
            Verdict::Allowed { remaining: 1, .. }
        ));
        let (value, _) = store.get(&bucket_key(&ID)).unwrap();
        assert_eq!(Bucket::decode(&value).unwrap().tokens, SCALE);
    }

    #[test]
    fn concurrent_requests_take_exactly_the_burst() {
        let store = Arc::new(MemoryStore::new(100));
        store.set_now(S);
        let limits = Limits::new(50, 1.0, 3600);
        let threads: Vec<_> = (0..4)
            .map(|_| {
                let store = store.clone();
                std::thread::spawn(move || {
                    let mut allowed = 0;
                    for _ in 0..100 {
                        match check(&*store, &limits, &ID, &mut None).verdict {
                            Verdict::Allowed { .. } => allowed += 1,
                            Verdict::Limited { .. } => {}
                            other => panic!("{other:?}"),
                        }
                    }
                    allowed
                })
            })
            .collect();
        let allowed: usize = threads.into_iter().map(|t| t.join().unwrap()).sum();
        assert_eq!(allowed, 50);
    }
}
