//! Randomness for sampling, jitter and ids.

use std::cell::Cell;

use crate::sys::host;

thread_local! {
    /// The generator's state; 0 until seeded from the proxy.
    static STATE: Cell<u64> = const { Cell::new(0) };
}

/// A random 64-bit number: for sampling, jitter and ids, not for keys or
/// tokens.
///
/// Numbers come from a generator (SplitMix64) in the filter's instance,
/// seeded from the proxy's generator on first use, so a call costs a few
/// instructions rather than a call into the proxy. Instances are seeded
/// separately: two instances do not repeat each other's numbers.
pub fn random_u64() -> u64 {
    STATE.with(|state| {
        let mut s = state.get();
        if s == 0 {
            s = host::random_u64() | 1;
        }
        s = s.wrapping_add(0x9e37_79b9_7f4a_7c15);
        state.set(s);
        split_mix(s)
    })
}

/// Puts `state` in place of the generator's state and returns the one it
/// replaces: natively every test filter shares the thread, so
/// [`testing`](crate::testing) gives each instance its own generator.
#[cfg(all(feature = "testing", not(target_arch = "wasm32")))]
pub(crate) fn swap_state(state: u64) -> u64 {
    STATE.with(|s| s.replace(state))
}

/// SplitMix64's output function (Steele, Lea and Flood, 2014).
pub(crate) fn split_mix(state: u64) -> u64 {
    let mut z = state;
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

#[cfg(test)]
mod tests {
    use super::split_mix;

    #[test]
    fn split_mix_matches_the_reference_sequence() {
        // The reference implementation's first outputs for seed 1234567.
        let mut state: u64 = 1_234_567;
        let mut next = || {
            state = state.wrapping_add(0x9e37_79b9_7f4a_7c15);
            split_mix(state)
        };
        assert_eq!(next(), 6_457_827_717_110_365_317);
        assert_eq!(next(), 3_203_168_211_198_807_973);
        assert_eq!(next(), 9_817_491_932_198_370_423);
    }

    #[test]
    fn outputs_spread_over_all_bits() {
        let mut state: u64 = 1;
        let mut ones = [0u32; 64];
        for _ in 0..4096 {
            state = state.wrapping_add(0x9e37_79b9_7f4a_7c15);
            let n = split_mix(state);
            for (bit, count) in ones.iter_mut().enumerate() {
                *count += ((n >> bit) & 1) as u32;
            }
        }
        assert!(ones.iter().all(|&c| (1800..2300).contains(&c)), "{ones:?}");
    }
}
