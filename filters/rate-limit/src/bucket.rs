//! Token-bucket arithmetic, without host calls.
//!
//! A bucket holds up to `burst` tokens; it gains `rate` tokens per `per`
//! (continuously), and each request takes one. Tokens are kept in fixed
//! point ([`SCALE`] units per token) so that slow rates refill smoothly.
//! Time is the host's monotonic clock in nanoseconds.

/// Fixed-point units per token.
pub const SCALE: u64 = 1_000_000_000;
const NANOS_PER_SECOND: u64 = 1_000_000_000;

/// A bucket as stored in shared state.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Bucket {
    /// Tokens, in [`SCALE`] units, as of `last_ns`.
    pub tokens: u64,
    /// When `tokens` was computed (monotonic nanoseconds).
    pub last_ns: u64,
    /// When the bucket is full again if nothing takes from it, by the
    /// limits of the entry that wrote it. From then on it is equal to an
    /// absent bucket, and may be deleted to reclaim its key.
    pub full_at_ns: u64,
}

impl Bucket {
    /// The encoded size.
    pub const ENCODED_LEN: usize = 24;

    /// `tokens`, `last_ns`, `full_at_ns`: little-endian u64 each.
    pub fn encode(&self) -> [u8; Self::ENCODED_LEN] {
        let mut bytes = [0; Self::ENCODED_LEN];
        bytes[..8].copy_from_slice(&self.tokens.to_le_bytes());
        bytes[8..16].copy_from_slice(&self.last_ns.to_le_bytes());
        bytes[16..].copy_from_slice(&self.full_at_ns.to_le_bytes());
        bytes
    }

    /// The bucket in `bytes`; `None` when they are not an encoded bucket.
    pub fn decode(bytes: &[u8]) -> Option<Bucket> {
        let bytes: &[u8; Self::ENCODED_LEN] = bytes.try_into().ok()?;
        let word = |i: usize| u64::from_le_bytes(bytes[i..i + 8].try_into().expect("8 bytes"));
        Some(Bucket {
            tokens: word(0),
            last_ns: word(8),
            full_at_ns: word(16),
        })
    }

    /// Whether the bucket is full at `now_ns` (and so may be deleted: an
    /// absent bucket is a full one).
    pub fn is_full_at(&self, now_ns: u64) -> bool {
        now_ns >= self.full_at_ns
    }
}

/// The arithmetic of one policy: its capacity and refill speed.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Limits {
    /// `burst` in [`SCALE`] units.
    capacity: u64,
    /// Nanoseconds to gain one token.
    nanos_per_token: f64,
}

/// What taking a token from a bucket decided.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Take {
    /// A token was taken: store `bucket`.
    Allowed {
        /// The bucket to store.
        bucket: Bucket,
        /// Whole tokens left.
        remaining: u64,
        /// Seconds until the bucket is full again (rounded up).
        reset_secs: u64,
    },
    /// No whole token: refuse; nothing to store.
    Limited {
        /// Seconds until a token is there (rounded up, at least 1).
        retry_after_secs: u64,
        /// Seconds until the bucket is full again (rounded up).
        reset_secs: u64,
    },
}

impl Limits {
    /// The limits of `burst` tokens refilled at `rate` per `per_seconds`.
    /// `burst` must be at least 1 and `rate` positive and finite.
    pub fn new(burst: u64, rate: f64, per_seconds: u64) -> Limits {
        Limits {
            capacity: burst.saturating_mul(SCALE),
            nanos_per_token: per_seconds as f64 * NANOS_PER_SECOND as f64 / rate,
        }
    }

    /// A full bucket at `now_ns`: what an absent one stands for.
    pub fn full(&self, now_ns: u64) -> Bucket {
        Bucket {
            tokens: self.capacity,
            last_ns: now_ns,
            full_at_ns: now_ns,
        }
    }

    /// `bucket` brought forward to `now_ns`: refilled for the time passed,
    /// capped at the capacity. A bucket written with a later clock reading
    /// than `now_ns` (by a request that read the clock after this one) is
    /// not refilled, nor moved back in time.
    pub fn refill(&self, bucket: Bucket, now_ns: u64) -> Bucket {
        let now_ns = now_ns.max(bucket.last_ns);
        let elapsed = now_ns - bucket.last_ns;
        // A float-to-int `as` saturates: a long idle time gives u64::MAX.
        let gained = (elapsed as f64 * SCALE as f64 / self.nanos_per_token) as u64;
        let tokens = bucket.tokens.saturating_add(gained).min(self.capacity);
        Bucket {
            tokens,
            last_ns: now_ns,
            full_at_ns: now_ns.saturating_add(self.nanos_to_gain(self.capacity - tokens)),
        }
    }

    /// Takes one token at `now_ns` from `stored` (`None`: no bucket yet,
    /// i.e. a full one).
    pub fn take(&self, stored: Option<Bucket>, now_ns: u64) -> Take {
        let bucket = match stored {
            Some(bucket) => self.refill(bucket, now_ns),
            None => self.full(now_ns),
        };
        // Seconds are counted from the bucket's time, which is `now_ns` or
        // (see `refill`) a little later.
        if bucket.tokens >= SCALE {
            let tokens = bucket.tokens - SCALE;
            let to_full = self.nanos_to_gain(self.capacity - tokens);
            Take::Allowed {
                bucket: Bucket {
                    tokens,
                    last_ns: bucket.last_ns,
                    full_at_ns: bucket.last_ns.saturating_add(to_full),
                },
                remaining: tokens / SCALE,
                reset_secs: ceil_secs(to_full),
            }
        } else {
            Take::Limited {
                retry_after_secs: ceil_secs(self.nanos_to_gain(SCALE - bucket.tokens)).max(1),
                reset_secs: ceil_secs(bucket.full_at_ns - bucket.last_ns),
            }
        }
    }

    /// Nanoseconds until `units` are gained (rounded up; saturating).
    fn nanos_to_gain(&self, units: u64) -> u64 {
        if units == 0 {
            return 0;
        }
        (units as f64 * self.nanos_per_token / SCALE as f64).ceil() as u64
    }
}

/// Nanoseconds as whole seconds, rounded up.
fn ceil_secs(nanos: u64) -> u64 {
    nanos.div_ceil(NANOS_PER_SECOND)
}

/// The policy's window in seconds: the time an empty bucket takes to fill,
/// i.e. the `w` in which `burst` requests are allowed on average (rounded
/// up, at least 1).
pub fn window_secs(burst: u64, rate: f64, per_seconds: u64) -> u64 {
    let secs = (burst as f64 * per_seconds as f64 / rate).ceil();
    // Saturates for absurdly slow rates.
    (secs as u64).max(1)
}

#[cfg(test)]
mod tests {
    use super::*;

    const MS: u64 = 1_000_000;
    const S: u64 = 1_000 * MS;

    fn allowed(take: Take) -> (Bucket, u64, u64) {
        match take {
            Take::Allowed {
                bucket,
                remaining,
                reset_secs,
            } => (bucket, remaining, reset_secs),
            other => panic!("expected allowed, got {other:?}"),
        }
    }

    fn limited(take: Take) -> (u64, u64) {
        match take {
            Take::Limited {
                retry_after_secs,
                reset_secs,
            } => (retry_after_secs, reset_secs),
            other => panic!("expected limited, got {other:?}"),
        }
    }

    #[test]
    fn encoding_round_trips_and_rejects_other_sizes() {
        let bucket = Bucket {
            tokens: 7 * SCALE + 3,
            last_ns: u64::MAX - 1,
            full_at_ns: 42,
        };
        let bytes = bucket.encode();
        assert_eq!(bytes.len(), 24);
        assert_eq!(bytes[..8], (7 * SCALE + 3).to_le_bytes());
        assert_eq!(Bucket::decode(&bytes), Some(bucket));
        assert_eq!(Bucket::decode(&bytes[..23]), None);
        assert_eq!(Bucket::decode(&[0; 25]), None);
        assert_eq!(Bucket::decode(&[]), None);
    }

    #[test]
    fn a_full_bucket_allows_exactly_burst_requests_at_once() {
        let limits = Limits::new(20, 1.0, 3600);
        let now = 5 * S;
        let mut stored = None;
        for expected_remaining in (0..20).rev() {
            let (bucket, remaining, _) = allowed(limits.take(stored, now));
            assert_eq!(remaining, expected_remaining);
            stored = Some(bucket);
        }
        let (retry_after, reset) = limited(limits.take(stored, now));
        assert_eq!(retry_after, 3600, "one token per hour");
        assert_eq!(reset, 20 * 3600, "the whole burst takes 20 hours");
        // Refused requests take nothing: the bucket is unchanged.
        assert_eq!(limited(limits.take(stored, now)), (3600, 20 * 3600));
    }

    #[test]
    fn tokens_come_back_at_the_rate() {
        // Burst 1, 20 per second: a token every 50 ms.
        let limits = Limits::new(1, 20.0, 1);
        let (bucket, remaining, reset) = allowed(limits.take(None, 0));
        assert_eq!((remaining, reset), (0, 1), "50 ms round up to 1 s");
        assert_eq!(bucket.full_at_ns, 50 * MS);
        assert_eq!(limited(limits.take(Some(bucket), 49 * MS)), (1, 1));
        let (bucket, ..) = allowed(limits.take(Some(bucket), 50 * MS));
        assert_eq!(bucket.last_ns, 50 * MS);
        assert_eq!(bucket.full_at_ns, 100 * MS);
        limited(limits.take(Some(bucket), 60 * MS));
        allowed(limits.take(Some(bucket), 100 * MS));
    }

    #[test]
    fn fractional_rates_refill_smoothly() {
        // 1.5 tokens per minute: one token every 40 s.
        let limits = Limits::new(3, 1.5, 60);
        let mut stored = None;
        for _ in 0..3 {
            stored = Some(allowed(limits.take(stored, 0)).0);
        }
        let (retry_after, reset) = limited(limits.take(stored, 0));
        assert_eq!((retry_after, reset), (40, 120));
        let (retry_after, _) = limited(limits.take(stored, 39 * S));
        assert_eq!(retry_after, 1);
        let (bucket, remaining, reset) = allowed(limits.take(stored, 40 * S));
        assert_eq!((remaining, reset), (0, 120));
        // Half a token after 20 more seconds, not enough.
        let (retry_after, reset) = limited(limits.take(Some(bucket), 60 * S));
        assert_eq!((retry_after, reset), (20, 100));
    }

    #[test]
    fn refill_is_capped_at_the_burst() {
        let limits = Limits::new(5, 1.0, 1);
        let (bucket, ..) = allowed(limits.take(None, 0));
        // A day later: full, not 86400 tokens.
        let refilled = limits.refill(bucket, 86_400 * S);
        assert_eq!(refilled.tokens, 5 * SCALE);
        assert_eq!(refilled.full_at_ns, 86_400 * S);
        // A bucket written by an entry with a larger burst is capped too.
        let big = Bucket {
            tokens: 50 * SCALE,
            last_ns: 0,
            full_at_ns: 0,
        };
        let (_, remaining, _) = allowed(limits.take(Some(big), S));
        assert_eq!(remaining, 4);
    }

    #[test]
    fn a_bucket_from_a_later_clock_reading_is_not_moved_back() {
        let limits = Limits::new(2, 1.0, 1);
        let written = Bucket {
            tokens: SCALE,
            last_ns: 10 * S,
            full_at_ns: 11 * S,
        };
        // This request read the clock at 9 s, before the writer did.
        let (bucket, remaining, reset) = allowed(limits.take(Some(written), 9 * S));
        assert_eq!(remaining, 0);
        assert_eq!(bucket.last_ns, 10 * S);
        assert_eq!(bucket.full_at_ns, 12 * S);
        assert_eq!(reset, 2);
    }

    #[test]
    fn long_idle_times_and_extreme_rates_saturate_without_panicking() {
        let slow = Limits::new(1, 1e-300, 3600);
        let (bucket, remaining, reset) = allowed(slow.take(None, 0));
        assert_eq!(remaining, 0);
        assert_eq!(bucket.full_at_ns, u64::MAX);
        assert_eq!(reset, u64::MAX.div_ceil(S));
        let (retry_after, _) = limited(slow.take(Some(bucket), u64::MAX));
        assert_eq!(retry_after, u64::MAX.div_ceil(S));

        let fast = Limits::new(1_000_000_000, 1e300, 1);
        let (bucket, ..) = allowed(fast.take(None, 0));
        assert_eq!(fast.refill(bucket, 1).tokens, 1_000_000_000 * SCALE);
        let (bucket, ..) = allowed(fast.take(Some(bucket), u64::MAX));
        assert_eq!(bucket.tokens, 999_999_999 * SCALE);
    }

    #[test]
    fn full_buckets_may_be_reclaimed() {
        let limits = Limits::new(2, 1.0, 1);
        let (bucket, ..) = allowed(limits.take(None, 0));
        assert!(!bucket.is_full_at(S - 1));
        assert!(bucket.is_full_at(S));
        assert!(limits.full(3).is_full_at(3));
    }

    #[test]
    fn window_is_the_time_to_fill_an_empty_bucket() {
        assert_eq!(window_secs(10, 10.0, 1), 1);
        assert_eq!(window_secs(20, 1.0, 3600), 72_000);
        assert_eq!(window_secs(100, 60.0, 60), 100);
        assert_eq!(window_secs(1, 3.0, 1), 1, "at least one second");
        assert_eq!(window_secs(3, 2.0, 1), 2, "rounded up");
        assert_eq!(window_secs(1, 1e-300, 1), u64::MAX);
    }
}
