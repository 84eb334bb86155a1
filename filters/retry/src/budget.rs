//! The retry budget: retries may be at most a share of the requests seen
//! over the last window, with a floor of `min_retries` per window.
//!
//! The counts live in shared state (one entry per route), so every
//! instance of the filter draws from the same budget. The window slides:
//! the counts of the current fixed window are added to those of the
//! previous one, weighted by how much of the previous window still falls
//! inside the last `window` of time (the usual sliding-window estimate).
//! A retry is allowed when the estimated retries, this one included, stay
//! within `max(min_retries, ratio × estimated requests)`.

use crate::config::Budget;

/// The encoded size of a [`Window`].
pub const ENCODED_LEN: usize = 40;

/// Writes tried before giving up under contention.
const MAX_WRITES: usize = 32;

/// The counts of the current and the previous window.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Window {
    /// When the current window started (monotonic nanoseconds).
    pub start_ns: u64,
    /// Requests seen in the current window.
    pub requests: u64,
    /// Retries made in the current window.
    pub retries: u64,
    /// Requests seen in the previous window.
    pub prev_requests: u64,
    /// Retries made in the previous window.
    pub prev_retries: u64,
}

impl Window {
    /// An empty window starting at `now_ns`.
    pub fn starting(now_ns: u64) -> Window {
        Window {
            start_ns: now_ns,
            ..Window::default()
        }
    }

    /// Reads an encoded window; `None` if `bytes` is not one.
    pub fn decode(bytes: &[u8]) -> Option<Window> {
        if bytes.len() != ENCODED_LEN {
            return None;
        }
        let field = |i: usize| {
            let mut word = [0u8; 8];
            word.copy_from_slice(&bytes[i * 8..i * 8 + 8]);
            u64::from_le_bytes(word)
        };
        Some(Window {
            start_ns: field(0),
            requests: field(1),
            retries: field(2),
            prev_requests: field(3),
            prev_retries: field(4),
        })
    }

    /// The bytes stored in shared state.
    pub fn encode(&self) -> [u8; ENCODED_LEN] {
        let mut bytes = [0u8; ENCODED_LEN];
        let fields = [
            self.start_ns,
            self.requests,
            self.retries,
            self.prev_requests,
            self.prev_retries,
        ];
        for (chunk, value) in bytes.chunks_exact_mut(8).zip(fields) {
            chunk.copy_from_slice(&value.to_le_bytes());
        }
        bytes
    }

    /// This window as of `now_ns`: when the current window is over it
    /// becomes the previous one; after two windows or more, both are empty.
    pub fn rolled(self, now_ns: u64, window_ns: u64) -> Window {
        let elapsed = now_ns.saturating_sub(self.start_ns);
        if elapsed < window_ns {
            self
        } else if elapsed < window_ns.saturating_mul(2) {
            Window {
                start_ns: self.start_ns + window_ns,
                requests: 0,
                retries: 0,
                prev_requests: self.requests,
                prev_retries: self.retries,
            }
        } else {
            Window::starting(now_ns)
        }
    }

    /// Estimated (requests, retries) over the last `window_ns` up to
    /// `now_ns`, for a rolled window.
    pub fn estimate(&self, now_ns: u64, window_ns: u64) -> (f64, f64) {
        let elapsed = now_ns.saturating_sub(self.start_ns).min(window_ns);
        let weight = 1.0 - elapsed as f64 / window_ns as f64;
        (
            self.prev_requests as f64 * weight + self.requests as f64,
            self.prev_retries as f64 * weight + self.retries as f64,
        )
    }
}

/// `window` (or a new one) with one more request.
pub fn count_request(window: Option<Window>, now_ns: u64, budget: &Budget) -> Window {
    let mut w = window
        .unwrap_or_else(|| Window::starting(now_ns))
        .rolled(now_ns, budget.window_ns);
    w.requests = w.requests.saturating_add(1);
    w
}

/// `window` with one more retry, or `None` when the budget has no room.
pub fn take_retry(window: Option<Window>, now_ns: u64, budget: &Budget) -> Option<Window> {
    let mut w = window
        .unwrap_or_else(|| Window::starting(now_ns))
        .rolled(now_ns, budget.window_ns);
    let (requests, retries) = w.estimate(now_ns, budget.window_ns);
    let limit = (budget.ratio * requests).max(f64::from(budget.min_retries));
    // A little slack for the float products (0.29 × 100 is not quite 29).
    if retries + 1.0 > limit + 1e-9 {
        return None;
    }
    w.retries = w.retries.saturating_add(1);
    Some(w)
}

/// Why a shared-state write did not happen.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StoreError {
    /// The entry changed since it was read.
    Conflict,
    /// The state is full or the value too large.
    Full,
}

/// Shared state with compare-and-swap writes: the host's in the filter, a
/// map in the tests.
pub trait Store {
    /// The value under `key` and its version.
    fn get(&self, key: &str) -> Option<(Vec<u8>, u64)>;
    /// Writes `value` if `key`'s version is still `cas` (0: only if absent);
    /// returns the new version.
    fn set(&self, key: &str, value: &[u8], cas: u64) -> Result<u64, StoreError>;
}

/// What [`update`] did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Update {
    /// The changed window is stored.
    Written,
    /// `change` declined: nothing was written.
    Declined,
    /// The write failed: the state is full, or it kept changing under us.
    Failed(StoreError),
}

/// Reads the window under `key`, applies `change` and writes the result
/// with compare-and-swap, reading again when another instance wrote first.
/// An entry that is not a window is replaced as if absent.
pub fn update(
    store: &impl Store,
    key: &str,
    mut change: impl FnMut(Option<Window>) -> Option<Window>,
) -> Update {
    for _ in 0..MAX_WRITES {
        let (current, cas) = match store.get(key) {
            Some((bytes, cas)) => (Window::decode(&bytes), cas),
            None => (None, 0),
        };
        let Some(changed) = change(current) else {
            return Update::Declined;
        };
        match store.set(key, &changed.encode(), cas) {
            Ok(_) => return Update::Written,
            Err(StoreError::Conflict) => continue,
            Err(e) => return Update::Failed(e),
        }
    }
    Update::Failed(StoreError::Conflict)
}

#[cfg(test)]
mod tests {
    use std::cell::{Cell, RefCell};
    use std::collections::HashMap;

    use super::*;

    const SECOND: u64 = 1_000_000_000;

    fn budget(percent: f64, window_s: u64, min_retries: u32) -> Budget {
        Budget {
            ratio: percent / 100.0,
            window_ns: window_s * SECOND,
            min_retries,
        }
    }

    /// Shared state with the host's compare-and-swap semantics, and
    /// injectable conflicts.
    #[derive(Default)]
    struct Memory {
        entries: RefCell<HashMap<String, (Vec<u8>, u64)>>,
        version: Cell<u64>,
        conflicts: Cell<usize>,
        full: Cell<bool>,
    }

    impl Store for Memory {
        fn get(&self, key: &str) -> Option<(Vec<u8>, u64)> {
            self.entries.borrow().get(key).cloned()
        }

        fn set(&self, key: &str, value: &[u8], cas: u64) -> Result<u64, StoreError> {
            if self.full.get() {
                return Err(StoreError::Full);
            }
            if self.conflicts.get() > 0 {
                self.conflicts.set(self.conflicts.get() - 1);
                return Err(StoreError::Conflict);
            }
            let mut entries = self.entries.borrow_mut();
            let current = entries.get(key).map_or(0, |(_, v)| *v);
            if current != cas {
                return Err(StoreError::Conflict);
            }
            self.version.set(self.version.get() + 1);
            entries.insert(key.into(), (value.to_vec(), self.version.get()));
            Ok(self.version.get())
        }
    }

    impl Memory {
        fn window(&self, key: &str) -> Window {
            Window::decode(&self.get(key).unwrap().0).unwrap()
        }
    }

    #[test]
    fn encoding_round_trips() {
        let w = Window {
            start_ns: 1,
            requests: 2,
            retries: 3,
            prev_requests: u64::MAX,
            prev_retries: 5,
        };
        assert_eq!(Window::decode(&w.encode()), Some(w));
        assert_eq!(Window::decode(&[0; 39]), None);
        assert_eq!(Window::decode(&[]), None);
    }

    #[test]
    fn windows_roll() {
        let w = Window {
            start_ns: 100 * SECOND,
            requests: 10,
            retries: 2,
            prev_requests: 7,
            prev_retries: 1,
        };
        assert_eq!(w.rolled(109 * SECOND, 10 * SECOND), w);
        assert_eq!(
            w.rolled(50 * SECOND, 10 * SECOND),
            w,
            "a clock behind the start"
        );
        assert_eq!(
            w.rolled(110 * SECOND, 10 * SECOND),
            Window {
                start_ns: 110 * SECOND,
                requests: 0,
                retries: 0,
                prev_requests: 10,
                prev_retries: 2
            }
        );
        assert_eq!(
            w.rolled(119 * SECOND, 10 * SECOND).start_ns,
            110 * SECOND,
            "window boundaries stay aligned"
        );
        assert_eq!(
            w.rolled(120 * SECOND, 10 * SECOND),
            Window::starting(120 * SECOND)
        );
    }

    #[test]
    fn the_previous_window_fades_out() {
        let w = Window {
            start_ns: 0,
            requests: 4,
            retries: 1,
            prev_requests: 100,
            prev_retries: 10,
        };
        assert_eq!(w.estimate(0, 10 * SECOND), (104.0, 11.0));
        assert_eq!(w.estimate(5 * SECOND, 10 * SECOND), (54.0, 6.0));
        assert_eq!(w.estimate(10 * SECOND, 10 * SECOND), (4.0, 1.0));
    }

    #[test]
    fn min_retries_are_always_allowed() {
        let b = budget(0.0, 60, 1);
        let w = count_request(None, 0, &b);
        let w = take_retry(Some(w), SECOND, &b).expect("the first retry is in the floor");
        assert_eq!(w.retries, 1);
        assert_eq!(take_retry(Some(w), 2 * SECOND, &b), None, "the floor is 1");
        let none = budget(0.0, 60, 0);
        assert_eq!(
            take_retry(Some(count_request(None, 0, &none)), 0, &none),
            None
        );
    }

    #[test]
    fn retries_are_a_share_of_the_requests() {
        let b = budget(20.0, 10, 0);
        let mut w = None;
        for _ in 0..10 {
            w = Some(count_request(w, 0, &b));
        }
        let w = take_retry(w, 0, &b).unwrap();
        let w = take_retry(Some(w), 0, &b).unwrap();
        assert_eq!(take_retry(Some(w), 0, &b), None, "20 % of 10 is 2");
        // The floor counts when the share is smaller.
        let b = budget(20.0, 10, 3);
        let w = count_request(None, 0, &b);
        let w = take_retry(Some(w), 0, &b).unwrap();
        let w = take_retry(Some(w), 0, &b).unwrap();
        let w = take_retry(Some(w), 0, &b).unwrap();
        assert_eq!(take_retry(Some(w), 0, &b), None);
        // 29 % of 100 is 29, although 0.29 × 100 is 28.999999999999996.
        let b = budget(29.0, 10, 0);
        let mut w = None;
        for _ in 0..100 {
            w = Some(count_request(w, 0, &b));
        }
        for _ in 0..29 {
            w = Some(take_retry(w, 0, &b).unwrap());
        }
        assert_eq!(take_retry(w, 0, &b), None);
    }

    #[test]
    fn room_comes_back_as_the_window_slides() {
        let b = budget(0.0, 10, 1);
        let w = take_retry(Some(count_request(None, 0, &b)), 0, &b).unwrap();
        // Next window, just started: the previous retry still weighs ~1.
        assert_eq!(take_retry(Some(w), 10 * SECOND + 1, &b), None);
        assert_eq!(take_retry(Some(w), 15 * SECOND, &b), None);
        // Two windows later, nothing is left of it.
        let w = take_retry(Some(w), 20 * SECOND, &b).unwrap();
        assert_eq!(w.start_ns, 20 * SECOND);
        assert_eq!(w.retries, 1);
        // With a share, the previous window's requests still count.
        let b = budget(50.0, 10, 0);
        let mut w = None;
        for _ in 0..4 {
            w = Some(count_request(w, 0, &b));
        }
        // Half-way through the next window: 4 × 0.5 = 2 requests, 1 retry.
        let w = take_retry(w, 15 * SECOND, &b).unwrap();
        assert_eq!(take_retry(Some(w), 15 * SECOND, &b), None);
    }

    #[test]
    fn update_writes_with_compare_and_swap() {
        let store = Memory::default();
        let b = budget(0.0, 10, 1);
        assert_eq!(
            update(&store, "k", |w| Some(count_request(w, 0, &b))),
            Update::Written
        );
        assert_eq!(
            update(&store, "k", |w| Some(count_request(w, 0, &b))),
            Update::Written
        );
        assert_eq!(store.window("k").requests, 2);
        assert_eq!(
            update(&store, "k", |w| take_retry(w, 0, &b)),
            Update::Written
        );
        assert_eq!(
            update(&store, "k", |w| take_retry(w, 0, &b)),
            Update::Declined
        );
        assert_eq!(store.window("k").retries, 1);
    }

    #[test]
    fn update_reads_again_after_a_conflict() {
        let store = Memory::default();
        let b = budget(0.0, 10, 1);
        store.conflicts.set(5);
        let mut calls = 0;
        let result = update(&store, "k", |w| {
            calls += 1;
            Some(count_request(w, 0, &b))
        });
        assert_eq!(result, Update::Written);
        assert_eq!(calls, 6);
        assert_eq!(store.window("k").requests, 1, "counted once");
        store.conflicts.set(usize::MAX);
        assert_eq!(
            update(&store, "k", |w| Some(count_request(w, 0, &b))),
            Update::Failed(StoreError::Conflict),
            "bounded"
        );
        store.conflicts.set(0);
        store.full.set(true);
        assert_eq!(
            update(&store, "k", |w| Some(count_request(w, 0, &b))),
            Update::Failed(StoreError::Full)
        );
    }

    #[test]
    fn a_foreign_entry_is_replaced() {
        let store = Memory::default();
        store.set("k", b"junk", 0).unwrap();
        let b = budget(0.0, 10, 1);
        assert_eq!(
            update(&store, "k", |w| Some(count_request(w, 7, &b))),
            Update::Written
        );
        assert_eq!(
            store.window("k"),
            Window {
                start_ns: 7,
                requests: 1,
                ..Window::default()
            }
        );
    }
}
