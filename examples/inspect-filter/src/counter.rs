//! A counter in shared state, stored as decimal text and incremented with
//! compare-and-swap.

use weft_sdk::shared::{self, SharedError};

/// The counter under `key`; 0 when absent.
pub fn read(key: &str) -> u64 {
    shared::get(key).map_or(0, |entry| decode(&entry.value))
}

/// Adds one to the counter under `key`, retrying while other instances
/// write it concurrently. Returns the new value.
pub fn increment(key: &str) -> Result<u64, SharedError> {
    loop {
        let (count, cas) = match shared::get(key) {
            Some(entry) => (decode(&entry.value), entry.cas),
            None => (0, 0),
        };
        let next = count + 1;
        match shared::set(key, encode(next), cas) {
            Ok(_) => return Ok(next),
            Err(SharedError::CasMismatch) => continue,
            Err(err) => return Err(err),
        }
    }
}

/// Decimal text to a number; anything else reads as 0.
fn decode(value: &[u8]) -> u64 {
    std::str::from_utf8(value)
        .ok()
        .and_then(|text| text.parse().ok())
        .unwrap_or(0)
}

fn encode(count: u64) -> Vec<u8> {
    count.to_string().into_bytes()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_are_decimal_text() {
        assert_eq!(encode(0), b"0");
        assert_eq!(encode(1234), b"1234");
        assert_eq!(decode(b"1234"), 1234);
        assert_eq!(decode(&encode(u64::MAX)), u64::MAX);
    }

    #[test]
    fn garbage_reads_as_zero() {
        assert_eq!(decode(b""), 0);
        assert_eq!(decode(b"-1"), 0);
        assert_eq!(decode(b"12a"), 0);
        assert_eq!(decode(&[0xff]), 0);
    }
}
