//! The accepted keys: SHA-256 digests and the consumer each belongs to.
//!
//! Keys are kept only as digests. A presented key is hashed and compared
//! with every digest in constant time, so neither the comparison nor the
//! position of a match shows in the timing.
//!
//! A key accepted once is remembered by a tag: SipHash-2-4 (128 bits) of
//! the key under a random key of the ring's own. Later requests with that
//! key skip SHA-256 and the scan. The memory holds tags, not keys; it holds
//! at most one tag per accepted key, since only the exact bytes of a key
//! match its digest. A key never accepted misses the tags (but for a chance
//! of 2^-128) and takes the constant-time path, so the timing tells only
//! what the response tells: whether the key is accepted.

use std::cell::RefCell;
use std::collections::BTreeMap;
use std::hash::Hasher as _;
use std::hint::black_box;

use sha2::{Digest as _, Sha256};
use siphasher::sip128::{Hasher128 as _, SipHasher24};

/// A SHA-256 digest.
pub type Digest = [u8; 32];

/// The SHA-256 digest of `key`.
pub fn sha256(key: &[u8]) -> Digest {
    Sha256::digest(key).into()
}

/// Parses a SHA-256 digest written as 64 hexadecimal digits (either case).
pub fn parse_hex_digest(text: &str) -> Result<Digest, String> {
    let count = text.chars().count();
    if count != 64 {
        return Err(format!(
            "expected 64 hexadecimal digits (a SHA-256 digest), got {count} characters"
        ));
    }
    let mut digest = [0u8; 32];
    let mut chars = text.chars().enumerate();
    for byte in &mut digest {
        let mut next = || {
            let (index, c) = chars.next().expect("64 characters");
            c.to_digit(16).ok_or_else(|| {
                format!("{c:?} (character {}) is not a hexadecimal digit", index + 1)
            })
        };
        let (high, low) = (next()?, next()?);
        *byte = (high * 16 + low) as u8;
    }
    Ok(digest)
}

/// One accepted key.
struct Entry {
    digest: Digest,
    consumer: String,
}

/// The accepted keys, by digest.
#[derive(Default)]
pub struct KeyRing {
    entries: Vec<Entry>,
    /// The key of the tags.
    tag_key: (u64, u64),
    /// The index in `entries` of each key accepted so far, by tag.
    accepted: RefCell<BTreeMap<u128, usize>>,
}

impl KeyRing {
    /// Adds a key by its digest. Fails with the consumer of the key already
    /// present when `digest` is a duplicate.
    pub fn insert(&mut self, digest: Digest, consumer: String) -> Result<(), &str> {
        // Configuration time: no need for constant time here.
        if let Some(index) = self.entries.iter().position(|e| e.digest == digest) {
            return Err(&self.entries[index].consumer);
        }
        self.entries.push(Entry { digest, consumer });
        Ok(())
    }

    /// How many keys there are.
    #[cfg(test)]
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// Sets the key under which accepted keys are tagged (random, chosen
    /// once per ring), forgetting the keys accepted so far.
    pub fn set_tag_key(&mut self, k0: u64, k1: u64) {
        self.tag_key = (k0, k1);
        self.accepted.get_mut().clear();
    }

    /// The consumer whose key is `key`, if any: from the tags of keys
    /// accepted before, or else by [`KeyRing::find`].
    pub fn consumer_of(&self, key: &[u8]) -> Option<&str> {
        let tag = self.tag(key);
        let remembered = self.accepted.borrow().get(&tag).copied();
        let index = match remembered {
            Some(index) => index,
            None => {
                let index = self.find(key)?;
                self.accepted.borrow_mut().insert(tag, index);
                index
            }
        };
        Some(&self.entries[index].consumer)
    }

    /// How many accepted keys are remembered.
    #[cfg(test)]
    pub fn remembered(&self) -> usize {
        self.accepted.borrow().len()
    }

    fn tag(&self, key: &[u8]) -> u128 {
        let mut hasher = SipHasher24::new_with_keys(self.tag_key.0, self.tag_key.1);
        hasher.write(key);
        hasher.finish128().as_u128()
    }

    /// The index of the entry whose key is `key`, if any.
    ///
    /// Every digest is compared, in constant time, whatever matches: the
    /// time taken depends only on the number of keys and the length of
    /// `key`.
    fn find(&self, key: &[u8]) -> Option<usize> {
        let digest = sha256(key);
        // Index + 1 of the match, 0 for none. Digests are unique, so at most
        // one entry matches and OR-ing the masked indices picks it.
        let mut found = 0usize;
        for (index, entry) in self.entries.iter().enumerate() {
            let mask = 0usize.wrapping_sub(usize::from(ct_eq(&digest, &entry.digest)));
            found |= (index + 1) & mask;
        }
        black_box(found).checked_sub(1)
    }
}

/// 1 when `a == b`, else 0, without branching on the contents.
fn ct_eq(a: &Digest, b: &Digest) -> u8 {
    let mut diff = 0u8;
    for (x, y) in a.iter().zip(b) {
        diff |= x ^ y;
    }
    let diff = black_box(diff);
    // (diff - 1) borrows into bit 8 exactly when diff is 0.
    ((u16::from(diff).wrapping_sub(1) >> 8) & 1) as u8
}

#[cfg(test)]
mod tests {
    use super::*;

    /// SHA-256 of "s3cret".
    const S3CRET: &str = "1ec1c26b50d5d3c58d9583181af8076655fe00756bf7285940ba3670f99fcba0";

    #[test]
    fn sha256_matches_the_known_digest() {
        assert_eq!(sha256(b"s3cret"), parse_hex_digest(S3CRET).unwrap());
        // The empty input, as every SHA-256 implementation knows it.
        assert_eq!(
            sha256(b""),
            parse_hex_digest("e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855")
                .unwrap()
        );
    }

    #[test]
    fn hex_digests_accept_either_case() {
        assert_eq!(
            parse_hex_digest(&S3CRET.to_uppercase()).unwrap(),
            parse_hex_digest(S3CRET).unwrap()
        );
    }

    #[test]
    fn bad_hex_digests_are_explained() {
        assert_eq!(
            parse_hex_digest("abcd").unwrap_err(),
            "expected 64 hexadecimal digits (a SHA-256 digest), got 4 characters"
        );
        assert_eq!(
            parse_hex_digest(&format!("{S3CRET}00")).unwrap_err(),
            "expected 64 hexadecimal digits (a SHA-256 digest), got 66 characters"
        );
        let mut bad = S3CRET.to_string();
        bad.replace_range(9..10, "g");
        assert_eq!(
            parse_hex_digest(&bad).unwrap_err(),
            "'g' (character 10) is not a hexadecimal digit"
        );
        // 64 characters, but not all ASCII.
        let accented = format!("é{}", &S3CRET[1..]);
        assert_eq!(
            parse_hex_digest(&accented).unwrap_err(),
            "'é' (character 1) is not a hexadecimal digit"
        );
    }

    #[test]
    fn ct_eq_tells_equal_from_different() {
        let a = sha256(b"a");
        let mut b = a;
        assert_eq!(ct_eq(&a, &b), 1);
        for index in [0, 17, 31] {
            b = a;
            b[index] ^= 0x80;
            assert_eq!(ct_eq(&a, &b), 0, "byte {index}");
        }
    }

    #[test]
    fn the_ring_finds_each_consumer_and_nobody_else() {
        let mut ring = KeyRing::default();
        ring.insert(sha256(b"k1"), "alice".into()).unwrap();
        ring.insert(sha256(b"k2"), "bob".into()).unwrap();
        ring.insert(sha256(b"k3"), "alice".into()).unwrap();
        assert_eq!(ring.len(), 3);
        assert_eq!(ring.consumer_of(b"k1"), Some("alice"));
        assert_eq!(ring.consumer_of(b"k2"), Some("bob"));
        assert_eq!(ring.consumer_of(b"k3"), Some("alice"));
        assert_eq!(ring.consumer_of(b"k4"), None);
        assert_eq!(ring.consumer_of(b""), None);
        assert_eq!(KeyRing::default().consumer_of(b"k1"), None);
    }

    #[test]
    fn accepted_keys_are_remembered_by_tag_and_refused_ones_are_not() {
        let mut ring = KeyRing::default();
        ring.insert(sha256(b"k1"), "alice".into()).unwrap();
        ring.insert(sha256(b"k2"), "bob".into()).unwrap();
        ring.set_tag_key(7, 11);
        for _ in 0..3 {
            assert_eq!(ring.consumer_of(b"k1"), Some("alice"));
            assert_eq!(ring.consumer_of(b"k2"), Some("bob"));
            assert_eq!(ring.consumer_of(b"k1x"), None);
            assert_eq!(ring.consumer_of(b"k"), None);
        }
        // One tag per accepted key, however often it comes.
        assert_eq!(ring.remembered(), 2);
        // The tags depend on the ring's key.
        let tag = ring.tag(b"k1");
        ring.set_tag_key(7, 12);
        assert_ne!(ring.tag(b"k1"), tag);
        assert_eq!(ring.remembered(), 0);
        assert_eq!(ring.consumer_of(b"k2"), Some("bob"));
    }

    #[test]
    fn the_ring_refuses_a_duplicate_digest() {
        let mut ring = KeyRing::default();
        ring.insert(sha256(b"k1"), "alice".into()).unwrap();
        assert_eq!(ring.insert(sha256(b"k1"), "bob".into()), Err("alice"));
        assert_eq!(ring.len(), 1);
    }
}
