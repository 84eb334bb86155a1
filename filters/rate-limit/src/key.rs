//! Which bucket a request takes from: the policy's identity and the
//! request's key parts, hashed into a fixed-size shared-state key.
//!
//! The identity of a policy is its `name` and its `key` list (not `burst`,
//! `rate` or `per`): chain entries of this filter with the same name and key
//! list share buckets, and so does a policy across a reload that changes only
//! its numbers. The hash input is length-prefixed, so distinct (name, key
//! list, values) never produce the same input.
//!
//! Hashing costs about a microsecond per request in a filter, so an
//! instance remembers the buckets of recent key values ([`RecentBuckets`]),
//! by a 128-bit SipHash tag of the values rather than the values, which may
//! be credentials.

use std::collections::BTreeMap;
use std::hash::Hasher as _;

use sha2::{Digest, Sha256};
use siphasher::sip128::{Hasher128 as _, SipHasher24};

/// One part of a policy's key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum KeyPart {
    /// The client's IP address.
    PeerIp,
    /// The listener and route the request matched.
    Route,
    /// The first value of a request header (lower-case name); absent or
    /// empty: `-`.
    Header(String),
    /// A fixed text: the same for every request.
    Const(String),
}

impl KeyPart {
    /// The part as written in the config.
    pub fn describe(&self) -> String {
        match self {
            KeyPart::PeerIp => "\"peer_ip\"".into(),
            KeyPart::Route => "\"route\"".into(),
            KeyPart::Header(name) => format!("{{\"header\": {name:?}}}"),
            KeyPart::Const(text) => format!("{{\"const\": {text:?}}}"),
        }
    }

    /// The part in the hash input: a tag and its argument.
    fn identity(&self) -> (&'static [u8], &[u8]) {
        match self {
            KeyPart::PeerIp => (b"peer_ip", b""),
            KeyPart::Route => (b"route", b""),
            KeyPart::Header(name) => (b"header", name.as_bytes()),
            KeyPart::Const(text) => (b"const", text.as_bytes()),
        }
    }
}

/// The value of one key part for one request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PartValue {
    /// No value: a missing header (or a property the proxy did not give).
    Absent,
    /// One text.
    Text(String),
    /// The route: (listener name, route name).
    Route(String, String),
}

impl PartValue {
    /// A header or property value; empty counts as absent.
    pub fn text(value: Option<String>) -> PartValue {
        match value {
            Some(value) if !value.is_empty() => PartValue::Text(value),
            _ => PartValue::Absent,
        }
    }
}

/// The identity of a bucket: 16 bytes of a SHA-256 digest.
pub type BucketId = [u8; 16];

/// The hash of a policy's identity, to which each request adds its key
/// values.
#[derive(Clone)]
pub struct PolicyHasher(Sha256);

impl PolicyHasher {
    /// The hasher for the policy `name` with key parts `parts`.
    pub fn new(name: &str, parts: &[KeyPart]) -> PolicyHasher {
        let mut hasher = Sha256::new();
        field(&mut hasher, b"weft-rate-limit/1");
        field(&mut hasher, name.as_bytes());
        hasher.update((parts.len() as u32).to_le_bytes());
        for part in parts {
            let (tag, argument) = part.identity();
            field(&mut hasher, tag);
            field(&mut hasher, argument);
        }
        PolicyHasher(hasher)
    }

    /// The bucket of a request whose key parts have `values` (one per part,
    /// in order).
    pub fn bucket(&self, values: &[PartValue]) -> BucketId {
        let mut hasher = self.0.clone();
        encode_values(values, &mut |bytes| hasher.update(bytes));
        let digest = hasher.finalize();
        digest[..16]
            .try_into()
            .expect("a SHA-256 digest has 32 bytes")
    }
}

/// Feeds `values` to `write` unambiguously: a tag per value, and each text
/// with its length first.
fn encode_values(values: &[PartValue], write: &mut dyn FnMut(&[u8])) {
    let mut field = |tag: u8, texts: &[&str]| {
        write(&[tag]);
        for text in texts {
            write(&(text.len() as u64).to_le_bytes());
            write(text.as_bytes());
        }
    };
    for value in values {
        match value {
            PartValue::Absent => field(0, &[]),
            PartValue::Text(text) => field(1, &[text]),
            PartValue::Route(listener, route) => field(2, &[listener, route]),
        }
    }
}

/// At most this many buckets are remembered; past it, all are forgotten.
pub const RECENT_BUCKETS: usize = 1024;

/// The buckets of recent key values, by tag.
pub struct RecentBuckets {
    /// The key of the tags (random, one per instance).
    tag_key: (u64, u64),
    ids: BTreeMap<u128, BucketId>,
}

impl RecentBuckets {
    /// An empty memory whose tags are keyed with `k0` and `k1`.
    pub fn new(k0: u64, k1: u64) -> Self {
        RecentBuckets {
            tag_key: (k0, k1),
            ids: BTreeMap::new(),
        }
    }

    /// [`PolicyHasher::bucket`] of `values`, remembered.
    pub fn bucket(&mut self, policy: &PolicyHasher, values: &[PartValue]) -> BucketId {
        let mut tagger = SipHasher24::new_with_keys(self.tag_key.0, self.tag_key.1);
        encode_values(values, &mut |bytes| tagger.write(bytes));
        let tag = tagger.finish128().as_u128();
        if let Some(id) = self.ids.get(&tag) {
            return *id;
        }
        let id = policy.bucket(values);
        if self.ids.len() >= RECENT_BUCKETS {
            self.ids.clear();
        }
        self.ids.insert(tag, id);
        id
    }

    /// How many buckets are remembered.
    #[cfg(test)]
    pub fn len(&self) -> usize {
        self.ids.len()
    }
}

/// Adds `bytes` to the hash with its length first.
fn field(hasher: &mut Sha256, bytes: &[u8]) {
    hasher.update((bytes.len() as u64).to_le_bytes());
    hasher.update(bytes);
}

/// The shared-state key of bucket `id`: `b` and 32 hex digits.
pub fn bucket_key(id: &BucketId) -> String {
    let mut key = String::with_capacity(33);
    key.push('b');
    push_hex(&mut key, id);
    key
}

/// Lower-case hex of `bytes`, appended to `out`.
pub fn push_hex(out: &mut String, bytes: &[u8]) {
    // Four bytes at a time into a buffer, and into `out` with one copy: a
    // `String::push` per digit checks the capacity and encodes a `char`
    // each time, and a loop per byte costs more than the arithmetic below.
    for bytes in bytes.chunks(16) {
        let mut hex = [0u8; 32];
        for (digits, four) in hex.chunks_exact_mut(8).zip(bytes.chunks(4)) {
            // Not `copy_from_slice` into a `[u8; 4]`: in a filter a copy
            // whose length is known only at run time is a call out of the
            // module.
            let word = match <[u8; 4]>::try_from(four) {
                Ok(four) => u32::from_le_bytes(four),
                Err(_) => four
                    .iter()
                    .rev()
                    .fold(0, |word, &b| word << 8 | u32::from(b)),
            };
            digits.copy_from_slice(&hex_digits(word).to_le_bytes());
        }
        out.push_str(std::str::from_utf8(&hex[..2 * bytes.len()]).expect("hex digits are ASCII"));
    }
}

/// The 8 hex digits of the 4 bytes of `word` (little-endian), in their
/// order, as the bytes of a little-endian u64.
fn hex_digits(word: u32) -> u64 {
    const LOW_NIBBLES: u64 = 0x000f_000f_000f_000f;
    // Byte i of `word` to the low byte of 16-bit lane i, in two steps.
    let x = u64::from(word);
    let x = (x | x << 16) & 0x0000_ffff_0000_ffff;
    let x = (x | x << 8) & 0x00ff_00ff_00ff_00ff;
    // In each lane, the high nibble first (the lower byte), then the low.
    let nibbles = (x >> 4 & LOW_NIBBLES) | (x & LOW_NIBBLES) << 8;
    // '0' + n, and 'a' - '0' - 10 = 39 more from 10 up (n + 6 reaches 16).
    let letters = (nibbles + 0x0606_0606_0606_0606) >> 4 & 0x0101_0101_0101_0101;
    nibbles + 0x3030_3030_3030_3030 + letters * 39
}

#[cfg(test)]
mod tests {
    use super::*;

    fn text(value: &str) -> PartValue {
        PartValue::Text(value.into())
    }

    #[test]
    fn the_same_policy_and_values_give_the_same_bucket() {
        let parts = [KeyPart::PeerIp, KeyPart::Header("x-user".into())];
        let a = PolicyHasher::new("api", &parts);
        let b = PolicyHasher::new("api", &parts);
        let values = [text("10.0.0.1"), text("alice")];
        assert_eq!(a.bucket(&values), b.bucket(&values));
        assert_ne!(
            a.bucket(&values),
            a.bucket(&[text("10.0.0.1"), text("bob")])
        );
        assert_ne!(
            a.bucket(&values),
            a.bucket(&[text("10.0.0.2"), text("alice")])
        );
    }

    #[test]
    fn the_policy_name_and_key_list_separate_buckets() {
        let values = [text("10.0.0.1")];
        let api = PolicyHasher::new("api", &[KeyPart::PeerIp]).bucket(&values);
        let login = PolicyHasher::new("login", &[KeyPart::PeerIp]).bucket(&values);
        let by_header = PolicyHasher::new("api", &[KeyPart::Header("x".into())]).bucket(&values);
        let by_const = PolicyHasher::new("api", &[KeyPart::Const("x".into())]).bucket(&values);
        let other_header = PolicyHasher::new("api", &[KeyPart::Header("y".into())]).bucket(&values);
        let all = [api, login, by_header, by_const, other_header];
        for (i, a) in all.iter().enumerate() {
            for b in &all[i + 1..] {
                assert_ne!(a, b);
            }
        }
    }

    #[test]
    fn absent_values_share_a_bucket_distinct_from_a_dash() {
        let policy = PolicyHasher::new("p", &[KeyPart::Header("x-user".into())]);
        let absent = policy.bucket(&[PartValue::text(None)]);
        assert_eq!(
            absent,
            policy.bucket(&[PartValue::text(Some(String::new()))])
        );
        assert_ne!(absent, policy.bucket(&[text("-")]));
        assert_ne!(absent, policy.bucket(&[text("")]));
    }

    #[test]
    fn boundaries_between_values_matter() {
        let parts = [KeyPart::Header("a".into()), KeyPart::Header("b".into())];
        let policy = PolicyHasher::new("p", &parts);
        assert_ne!(
            policy.bucket(&[text("ab"), text("c")]),
            policy.bucket(&[text("a"), text("bc")])
        );
        let route = PolicyHasher::new("p", &[KeyPart::Route]);
        assert_ne!(
            route.bucket(&[PartValue::Route("a".into(), "b/c".into())]),
            route.bucket(&[PartValue::Route("a/b".into(), "c".into())])
        );
        // The name and the key list are delimited too.
        assert_ne!(
            PolicyHasher::new("pconst", &[KeyPart::Const("x".into())]).bucket(&[]),
            PolicyHasher::new("p", &[KeyPart::Const("constx".into())]).bucket(&[])
        );
    }

    #[test]
    fn remembered_buckets_are_the_hashed_ones_and_stay_bounded() {
        let policy = PolicyHasher::new("p", &[KeyPart::PeerIp, KeyPart::Route]);
        let mut recent = RecentBuckets::new(3, 5);
        let values = |i: usize| {
            [
                text(&format!("10.0.0.{i}")),
                PartValue::Route("l".into(), "r".into()),
            ]
        };
        for round in 0..2 {
            for i in 0..10 {
                assert_eq!(
                    recent.bucket(&policy, &values(i)),
                    policy.bucket(&values(i)),
                    "round {round}, value {i}"
                );
            }
        }
        assert_eq!(recent.len(), 10);
        // Values that differ only in where one ends are told apart here too.
        let split = PolicyHasher::new(
            "p",
            &[KeyPart::Header("a".into()), KeyPart::Header("b".into())],
        );
        assert_eq!(
            recent.bucket(&split, &[text("ab"), text("c")]),
            split.bucket(&[text("ab"), text("c")])
        );
        assert_eq!(
            recent.bucket(&split, &[text("a"), text("bc")]),
            split.bucket(&[text("a"), text("bc")])
        );
        assert_eq!(
            recent.bucket(&split, &[PartValue::Absent, text("")]),
            split.bucket(&[PartValue::Absent, text("")])
        );
        for i in 0..3 * RECENT_BUCKETS {
            recent.bucket(&policy, &values(i));
            assert!(recent.len() <= RECENT_BUCKETS);
        }
        assert_eq!(
            recent.bucket(&policy, &values(5)),
            policy.bucket(&values(5))
        );
    }

    #[test]
    fn hex_is_two_lower_case_digits_per_byte() {
        let bytes: Vec<u8> = (0..=255).chain((0..=255).rev()).collect();
        for len in (0..40).chain([255, 256, 257, bytes.len()]) {
            let mut out = String::from("x");
            push_hex(&mut out, &bytes[..len]);
            let expected: String = bytes[..len].iter().map(|b| format!("{b:02x}")).collect();
            assert_eq!(out, format!("x{expected}"));
        }
    }

    #[test]
    fn bucket_keys_are_fixed_size_hex() {
        let id: BucketId = [0, 1, 0xab, 0xff, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0x10];
        assert_eq!(bucket_key(&id), "b0001abff000000000000000000000010");
        let long = "x".repeat(10_000);
        let policy = PolicyHasher::new("p", &[KeyPart::Header("x".into())]);
        assert_eq!(bucket_key(&policy.bucket(&[text(&long)])).len(), 33);
    }
}
