//! The fetched JWK Set as every instance of the filter shares it, and when
//! a new fetch may start. No host calls here: `remote` does those.
//!
//! One entry per URL in the filter's shared state holds the last JWK Set
//! fetched and when, and when the last fetch started and whether it failed.
//! An instance adopts a newer set from there before fetching, and a fetch
//! for a stale set or an unknown `kid` starts only when no other fetch has
//! started within `jwks_min_refresh_s`; the instance claims that slot with a
//! compare-and-swap on the entry, so instances do not fetch together.

/// The shared-state key of the entry for `url`.
pub fn shared_key(url: &str) -> String {
    format!("jwks {url}")
}

/// The shared entry.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Entry {
    /// When `jwks` was fetched (Unix nanoseconds); 0: never.
    pub fetched_at: u64,
    /// When the last fetch started (Unix nanoseconds); 0: never.
    pub attempt_at: u64,
    /// Whether the last fetch failed.
    pub failed: bool,
    /// The body of the last successful fetch; `None` when it did not fit
    /// in shared state (each instance then keeps its own copy).
    pub jwks: Option<Vec<u8>>,
}

const FLAG_FAILED: u8 = 1;
const FLAG_HAS_JWKS: u8 = 2;
const HEADER_BYTES: usize = 17;

impl Entry {
    /// The stored form: `fetched_at`, `attempt_at` (little-endian), flags,
    /// then the JWK Set's bytes.
    pub fn encode(&self) -> Vec<u8> {
        let jwks = self.jwks.as_deref().unwrap_or_default();
        let mut bytes = Vec::with_capacity(HEADER_BYTES + jwks.len());
        bytes.extend_from_slice(&self.fetched_at.to_le_bytes());
        bytes.extend_from_slice(&self.attempt_at.to_le_bytes());
        let mut flags = 0;
        if self.failed {
            flags |= FLAG_FAILED;
        }
        if self.jwks.is_some() {
            flags |= FLAG_HAS_JWKS;
        }
        bytes.push(flags);
        bytes.extend_from_slice(jwks);
        bytes
    }

    /// Reads the stored form; `None` if it is not one.
    pub fn decode(bytes: &[u8]) -> Option<Entry> {
        if bytes.len() < HEADER_BYTES {
            return None;
        }
        let fetched_at = u64::from_le_bytes(bytes[0..8].try_into().ok()?);
        let attempt_at = u64::from_le_bytes(bytes[8..16].try_into().ok()?);
        let flags = bytes[16];
        Some(Entry {
            fetched_at,
            attempt_at,
            failed: flags & FLAG_FAILED != 0,
            jwks: (flags & FLAG_HAS_JWKS != 0).then(|| bytes[HEADER_BYTES..].to_vec()),
        })
    }

    /// The same entry without its JWK Set (when it is too large to share).
    pub fn without_jwks(&self) -> Entry {
        Entry {
            jwks: None,
            ..self.clone()
        }
    }
}

/// Nanoseconds from `then` to `now`. A clock that went back (`then` is
/// ahead) counts as long ago, so that nothing waits for the clock.
pub fn elapsed(now: u64, then: u64) -> u64 {
    now.checked_sub(then).unwrap_or(u64::MAX)
}

/// Why an instance wants a newer JWK Set.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Need {
    /// It has none yet.
    First,
    /// Its set is older than `jwks_ttl_s`.
    Stale,
    /// A token names a key its set does not have.
    UnknownKey,
}

/// Whether an instance that needs a set for `need` may start a fetch now,
/// given the shared `entry` (absent: no instance ever fetched).
///
/// - `First`: yes, unless the last fetch failed less than `min_refresh`
///   ago. A fetch in flight elsewhere does not stop it: it cannot wait.
/// - `Stale`, `UnknownKey`: only if no fetch started in the last
///   `min_refresh`, whatever its outcome.
pub fn may_fetch(need: Need, entry: Option<&Entry>, now: u64, min_refresh_ns: u64) -> bool {
    let Some(entry) = entry else {
        return true;
    };
    if entry.attempt_at == 0 {
        return true;
    }
    let recent = elapsed(now, entry.attempt_at) < min_refresh_ns;
    match need {
        Need::First => !(recent && entry.failed),
        Need::Stale | Need::UnknownKey => !recent,
    }
}

/// Whether the shared entry holds a set newer than the instance's, fetched
/// at `mine` (0: it has none).
pub fn has_newer(entry: &Entry, mine: u64) -> bool {
    entry.jwks.is_some() && entry.fetched_at > mine
}

#[cfg(test)]
mod tests {
    use super::*;

    const S: u64 = 1_000_000_000;
    const T0: u64 = 1_767_225_600 * S;

    fn entry(attempt_at: u64, failed: bool) -> Entry {
        Entry {
            fetched_at: if failed { 0 } else { attempt_at },
            attempt_at,
            failed,
            jwks: (!failed).then(|| b"{\"keys\":[]}".to_vec()),
        }
    }

    #[test]
    fn entries_round_trip() {
        for e in [
            Entry::default(),
            entry(T0, false),
            entry(T0, true),
            Entry {
                fetched_at: 1,
                attempt_at: u64::MAX,
                failed: true,
                jwks: Some(vec![1, 2, 3]),
            },
            Entry {
                jwks: Some(Vec::new()),
                ..Entry::default()
            },
        ] {
            assert_eq!(Entry::decode(&e.encode()), Some(e.clone()), "{e:?}");
        }
        assert_eq!(Entry::decode(&[0; 16]), None);
        assert_eq!(entry(T0, false).without_jwks().jwks, None);
    }

    #[test]
    fn the_first_fetch_is_free_unless_one_just_failed() {
        let min = 30 * S;
        assert!(may_fetch(Need::First, None, T0, min));
        assert!(may_fetch(Need::First, Some(&Entry::default()), T0, min));
        // Another instance's fetch is in flight: do not wait for it.
        let in_flight = Entry {
            attempt_at: T0,
            ..Entry::default()
        };
        assert!(may_fetch(Need::First, Some(&in_flight), T0 + S, min));
        // It failed a second ago: do not hammer the key server.
        assert!(!may_fetch(Need::First, Some(&entry(T0, true)), T0 + S, min));
        assert!(may_fetch(
            Need::First,
            Some(&entry(T0, true)),
            T0 + 30 * S,
            min
        ));
    }

    #[test]
    fn refreshes_wait_for_the_min_refresh_interval() {
        let min = 30 * S;
        for need in [Need::Stale, Need::UnknownKey] {
            for failed in [false, true] {
                let e = entry(T0, failed);
                assert!(!may_fetch(need, Some(&e), T0, min), "{need:?}");
                assert!(!may_fetch(need, Some(&e), T0 + 29 * S, min), "{need:?}");
                assert!(may_fetch(need, Some(&e), T0 + 30 * S, min), "{need:?}");
            }
            assert!(may_fetch(need, None, T0, min));
        }
    }

    #[test]
    fn a_clock_that_went_back_does_not_block_fetches() {
        assert_eq!(elapsed(T0, T0 + S), u64::MAX);
        assert_eq!(elapsed(T0 + S, T0), S);
        assert!(may_fetch(
            Need::UnknownKey,
            Some(&entry(T0 + 60 * S, false)),
            T0,
            30 * S
        ));
    }

    #[test]
    fn newer_means_fetched_later_with_a_set_to_adopt() {
        let e = entry(T0, false);
        assert!(has_newer(&e, 0));
        assert!(has_newer(&e, T0 - 1));
        assert!(!has_newer(&e, T0));
        assert!(!has_newer(&e.without_jwks(), 0), "nothing to adopt");
        assert!(!has_newer(&entry(T0, true), 0));
    }

    #[test]
    fn keys_are_per_url() {
        assert_eq!(shared_key("http://a/k"), "jwks http://a/k");
        assert_ne!(shared_key("http://a/k"), shared_key("http://b/k"));
    }
}
