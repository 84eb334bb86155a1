//! Choosing an endpoint: least request (power of two choices), weighted
//! round robin, weighted random, and Maglev consistent hashing.
//!
//! A balancer is built once per cluster and snapshot; a pick reads the
//! endpoints' live state (usable or not, requests in flight) and touches
//! at most one shared atomic (round robin's position).

use std::sync::atomic::{AtomicUsize, Ordering};

use crate::config::LbPolicy;

/// Size of a Maglev table: a prime, far above any cluster's endpoint count.
pub const MAGLEV_TABLE_SIZE: usize = 65_537;
/// Longest smooth round-robin schedule; larger weight sums are scaled down.
const MAX_SCHEDULE: u64 = 65_536;
/// Entries of a schedule or table tried before scanning the endpoints.
const PROBES: usize = 64;

/// What a balancer reads of a cluster's endpoints.
pub trait Endpoints {
    /// How many.
    fn count(&self) -> usize;
    /// Whether endpoint `i` may take requests.
    fn usable(&self, i: usize) -> bool;
    /// Endpoint `i`'s requests in flight.
    fn active(&self, i: usize) -> u32;
    /// Endpoint `i`'s weight.
    fn weight(&self, i: usize) -> u32;
}

/// A cluster's balancer.
pub enum Balancer {
    /// Power of two choices on active requests (weighted random on
    /// weight / (active + 1) when weights differ).
    LeastRequest {
        /// All weights are equal.
        equal: bool,
    },
    /// Smooth weighted round robin over a precomputed schedule.
    RoundRobin {
        /// Endpoint indices in their turn.
        schedule: Box<[u32]>,
        /// The next turn.
        next: AtomicUsize,
    },
    /// Weighted random.
    Random(Weighted),
    /// Maglev lookup table; requests without a key go at random.
    Maglev {
        /// `MAGLEV_TABLE_SIZE` endpoint indices.
        table: Box<[u32]>,
        /// For requests without a key.
        random: Weighted,
    },
}

/// Cumulative weights, for weighted random picks.
pub struct Weighted(Box<[u64]>);

impl Weighted {
    fn new(weights: &[u32]) -> Self {
        let mut sum = 0;
        Weighted(
            weights
                .iter()
                .map(|w| {
                    sum += u64::from(*w);
                    sum
                })
                .collect(),
        )
    }

    fn pick(&self) -> usize {
        let total = self.0.last().copied().unwrap_or(1).max(1);
        let r = fastrand::u64(0..total);
        self.0.partition_point(|c| *c <= r)
    }
}

impl Balancer {
    /// The balancer of `policy` over endpoints with `addresses` and
    /// `weights` (non-empty, same length).
    pub fn new(policy: LbPolicy, addresses: &[&str], weights: &[u32]) -> Self {
        match policy {
            LbPolicy::LeastRequest => Balancer::LeastRequest {
                equal: weights.windows(2).all(|w| w[0] == w[1]),
            },
            LbPolicy::RoundRobin => Balancer::RoundRobin {
                schedule: smooth_schedule(weights),
                next: AtomicUsize::new(0),
            },
            LbPolicy::Random => Balancer::Random(Weighted::new(weights)),
            LbPolicy::Maglev => Balancer::Maglev {
                table: maglev_table(addresses, weights),
                random: Weighted::new(weights),
            },
        }
    }

    /// An endpoint for a request with hash `key` (Maglev only), not `avoid`
    /// (the endpoint of the previous attempt) unless it is the only usable
    /// one; `None` when no endpoint is usable.
    pub fn pick<E: Endpoints>(
        &self,
        e: &E,
        key: Option<u64>,
        avoid: Option<usize>,
    ) -> Option<usize> {
        if let Some(avoid) = avoid.filter(|_| e.count() > 1) {
            let view = Avoiding(e, avoid);
            if let Some(i) = self.pick_from(&view, key) {
                return Some(i);
            }
        }
        self.pick_from(e, key)
    }

    fn pick_from<E: Endpoints>(&self, e: &E, key: Option<u64>) -> Option<usize> {
        let n = e.count();
        let first = match self {
            Balancer::LeastRequest { equal } => {
                if n == 1 {
                    0
                } else if *equal {
                    let a = fastrand::usize(0..n);
                    let mut b = fastrand::usize(0..n - 1);
                    if b >= a {
                        b += 1;
                    }
                    match (e.usable(a), e.usable(b)) {
                        (true, true) if e.active(b) < e.active(a) => return Some(b),
                        (true, _) => return Some(a),
                        (false, true) => return Some(b),
                        (false, false) => a,
                    }
                } else {
                    return least_loaded_weighted(e);
                }
            }
            Balancer::RoundRobin { schedule, next } => {
                let start = next.fetch_add(1, Ordering::Relaxed);
                for k in 0..schedule.len().min(PROBES) {
                    let i = schedule[(start + k) % schedule.len()] as usize;
                    if e.usable(i) {
                        return Some(i);
                    }
                }
                schedule[start % schedule.len()] as usize
            }
            Balancer::Random(w) => w.pick(),
            Balancer::Maglev { table, random } => match key {
                None => random.pick(),
                Some(h) => {
                    let at = (h % table.len() as u64) as usize;
                    for k in 0..PROBES {
                        let i = table[(at + k) % table.len()] as usize;
                        if e.usable(i) {
                            return Some(i);
                        }
                    }
                    table[at] as usize
                }
            },
        };
        (0..n).map(|k| (first + k) % n).find(|&i| e.usable(i))
    }
}

/// Endpoints with one of them unusable.
struct Avoiding<'a, E>(&'a E, usize);

impl<E: Endpoints> Endpoints for Avoiding<'_, E> {
    fn count(&self) -> usize {
        self.0.count()
    }
    fn usable(&self, i: usize) -> bool {
        i != self.1 && self.0.usable(i)
    }
    fn active(&self, i: usize) -> u32 {
        self.0.active(i)
    }
    fn weight(&self, i: usize) -> u32 {
        self.0.weight(i)
    }
}

/// Weighted random over the usable endpoints, each weighing
/// weight / (active + 1).
fn least_loaded_weighted<E: Endpoints>(e: &E) -> Option<usize> {
    let share = |i| {
        if e.usable(i) {
            f64::from(e.weight(i)) / f64::from(e.active(i).saturating_add(1))
        } else {
            0.0
        }
    };
    let total: f64 = (0..e.count()).map(share).sum();
    if total <= 0.0 {
        return None;
    }
    let mut r = fastrand::f64() * total;
    let mut last = None;
    for i in 0..e.count() {
        let s = share(i);
        if s > 0.0 {
            last = Some(i);
            if r < s {
                return Some(i);
            }
            r -= s;
        }
    }
    last
}

fn gcd(a: u64, b: u64) -> u64 {
    if b == 0 { a } else { gcd(b, a % b) }
}

/// The turns of smooth weighted round robin (nginx's): each endpoint gets
/// its share, spread evenly rather than in runs.
pub fn smooth_schedule(weights: &[u32]) -> Box<[u32]> {
    let g = weights.iter().fold(0, |g, w| gcd(g, u64::from(*w))).max(1);
    let mut w: Vec<i64> = weights.iter().map(|w| (u64::from(*w) / g) as i64).collect();
    let sum: i64 = w.iter().sum();
    if sum as u64 > MAX_SCHEDULE {
        for x in &mut w {
            *x = ((*x as u64 * MAX_SCHEDULE / sum as u64).max(1)) as i64;
        }
    }
    let total: i64 = w.iter().sum();
    let mut current = vec![0i64; w.len()];
    let mut out = Vec::with_capacity(total as usize);
    for _ in 0..total {
        let mut best = 0;
        for i in 0..w.len() {
            current[i] += w[i];
            if current[i] > current[best] {
                best = i;
            }
        }
        current[best] -= total;
        out.push(best as u32);
    }
    out.into_boxed_slice()
}

/// A 64-bit hash that is the same in every process (FNV-1a, then
/// SplitMix64's finaliser for the low bits).
pub fn stable_hash(bytes: &[u8], seed: u64) -> u64 {
    let mut h = 0xcbf2_9ce4_8422_2325 ^ seed;
    for b in bytes {
        h ^= u64::from(*b);
        h = h.wrapping_mul(0x0000_0100_0000_01b3);
    }
    h ^= h >> 30;
    h = h.wrapping_mul(0xbf58_476d_1ce4_e5b9);
    h ^= h >> 27;
    h = h.wrapping_mul(0x94d0_49bb_1331_11eb);
    h ^ (h >> 31)
}

/// Maglev's lookup table (Eisenbud et al., 2016): each endpoint fills the
/// table along its own permutation (from its address), in turns weighted by
/// its weight, so that a change of endpoints moves few entries.
pub fn maglev_table(addresses: &[&str], weights: &[u32]) -> Box<[u32]> {
    const EMPTY: u32 = u32::MAX;
    let m = MAGLEV_TABLE_SIZE as u64;
    let n = addresses.len();
    let offset: Vec<u64> = addresses
        .iter()
        .map(|a| stable_hash(a.as_bytes(), 1) % m)
        .collect();
    let skip: Vec<u64> = addresses
        .iter()
        .map(|a| stable_hash(a.as_bytes(), 2) % (m - 1) + 1)
        .collect();
    let max_w = u64::from(weights.iter().copied().max().unwrap_or(1).max(1));
    let mut credit = vec![0u64; n];
    let mut next = vec![0u64; n];
    let mut table = vec![EMPTY; MAGLEV_TABLE_SIZE];
    let mut filled = 0;
    while filled < MAGLEV_TABLE_SIZE {
        for i in 0..n {
            credit[i] += u64::from(weights[i]);
            if credit[i] < max_w {
                continue;
            }
            credit[i] -= max_w;
            loop {
                let c = ((offset[i] + next[i] * skip[i]) % m) as usize;
                next[i] += 1;
                if table[c] == EMPTY {
                    table[c] = i as u32;
                    filled += 1;
                    break;
                }
            }
            if filled == MAGLEV_TABLE_SIZE {
                break;
            }
        }
    }
    table.into_boxed_slice()
}

#[cfg(test)]
mod tests {
    use super::*;

    struct Fake {
        weights: Vec<u32>,
        active: Vec<u32>,
        down: Vec<bool>,
    }

    impl Fake {
        fn new(weights: &[u32]) -> Self {
            Fake {
                weights: weights.to_vec(),
                active: vec![0; weights.len()],
                down: vec![false; weights.len()],
            }
        }
    }

    impl Endpoints for Fake {
        fn count(&self) -> usize {
            self.weights.len()
        }
        fn usable(&self, i: usize) -> bool {
            !self.down[i]
        }
        fn active(&self, i: usize) -> u32 {
            self.active[i]
        }
        fn weight(&self, i: usize) -> u32 {
            self.weights[i]
        }
    }

    fn counts(b: &Balancer, e: &Fake, n: usize) -> Vec<usize> {
        let mut out = vec![0; e.count()];
        for _ in 0..n {
            out[b.pick(e, None, None).unwrap()] += 1;
        }
        out
    }

    const ADDRS: [&str; 4] = ["10.0.0.1:80", "10.0.0.2:80", "10.0.0.3:80", "10.0.0.4:80"];

    #[test]
    fn round_robin_is_exactly_weighted_and_spread() {
        assert_eq!(&*smooth_schedule(&[1, 3]), &[1, 0, 1, 1]);
        assert_eq!(&*smooth_schedule(&[2, 2]), &[0, 1]);
        let e = Fake::new(&[1, 3]);
        let b = Balancer::new(LbPolicy::RoundRobin, &ADDRS[..2], &e.weights);
        assert_eq!(counts(&b, &e, 400), [100, 300]);
    }

    #[test]
    fn random_and_weighted_least_request_follow_weights() {
        let e = Fake::new(&[1, 3]);
        for policy in [LbPolicy::Random, LbPolicy::LeastRequest] {
            let b = Balancer::new(policy, &ADDRS[..2], &e.weights);
            let c = counts(&b, &e, 8000);
            assert!((1600..2400).contains(&c[0]), "{policy:?}: {c:?}");
        }
    }

    #[test]
    fn least_request_prefers_the_less_loaded() {
        let mut e = Fake::new(&[1, 1, 1]);
        e.active = vec![10, 0, 0];
        let b = Balancer::new(LbPolicy::LeastRequest, &ADDRS[..3], &e.weights);
        let c = counts(&b, &e, 3000);
        // Endpoint 0 wins no pair: it is always the busier one.
        assert_eq!(c[0], 0, "{c:?}");
        assert!(c[1] > 1200 && c[2] > 1200, "{c:?}");
    }

    #[test]
    fn unusable_endpoints_are_skipped_and_none_when_all_are() {
        for policy in [
            LbPolicy::LeastRequest,
            LbPolicy::RoundRobin,
            LbPolicy::Random,
        ] {
            let mut e = Fake::new(&[1, 1, 1]);
            e.down[1] = true;
            let b = Balancer::new(policy, &ADDRS[..3], &e.weights);
            assert_eq!(counts(&b, &e, 300)[1], 0, "{policy:?}");
            e.down = vec![true; 3];
            assert_eq!(b.pick(&e, None, None), None, "{policy:?}");
        }
    }

    #[test]
    fn avoid_is_honoured_unless_alone() {
        let mut e = Fake::new(&[1, 1]);
        let b = Balancer::new(LbPolicy::Random, &ADDRS[..2], &e.weights);
        for _ in 0..100 {
            assert_eq!(b.pick(&e, None, Some(0)), Some(1));
        }
        e.down[1] = true;
        assert_eq!(b.pick(&e, None, Some(0)), Some(0));
    }

    #[test]
    fn maglev_is_even_and_stable_when_an_endpoint_is_added() {
        let three = maglev_table(&ADDRS[..3], &[1, 1, 1]);
        let mut per = [0usize; 3];
        for i in three.iter() {
            per[*i as usize] += 1;
        }
        for p in per {
            assert!((20_000..24_000).contains(&p), "{per:?}");
        }
        let four = maglev_table(&ADDRS, &[1, 1, 1, 1]);
        let moved = three
            .iter()
            .zip(four.iter())
            .filter(|(a, b)| a != b)
            .count();
        // Ideally a quarter moves to the new endpoint; Maglev moves a bit more.
        assert!(moved < MAGLEV_TABLE_SIZE * 35 / 100, "moved {moved}");
        let weighted = maglev_table(&ADDRS[..2], &[1, 3]);
        let first = weighted.iter().filter(|i| **i == 0).count();
        assert!((14_000..19_000).contains(&first), "{first}");
    }

    #[test]
    fn maglev_key_sticks_and_falls_over_when_unusable() {
        let mut e = Fake::new(&[1, 1, 1]);
        let b = Balancer::new(LbPolicy::Maglev, &ADDRS[..3], &e.weights);
        let key = stable_hash(b"user-42", 0);
        let home = b.pick(&e, Some(key), None).unwrap();
        for _ in 0..50 {
            assert_eq!(b.pick(&e, Some(key), None), Some(home));
        }
        e.down[home] = true;
        let other = b.pick(&e, Some(key), None).unwrap();
        assert_ne!(other, home);
        assert_eq!(b.pick(&e, Some(key), None), Some(other));
    }
}
