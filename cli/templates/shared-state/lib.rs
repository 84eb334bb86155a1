//! `{{name}}`: counts each client's requests in state shared by every
//! instance of the filter (across requests and worker threads), tells the
//! upstream the count (`x-request-count`), and refuses (429) a client past
//! its limit.
//!
//! Config (`config.json`, the chain entry's `config` in the proxy):
//!
//! ```json
//! { "limit": 3 }
//! ```
//!
//! Shared state is compare-and-swap: read an entry and its version, write
//! with that version, retry when another instance wrote in between. The
//! count's encoding is a plain function pair, [`encode`] / [`decode`],
//! tested natively (`cargo test`) with the limit check, [`allowed`].

use serde::Deserialize;
use weft_sdk::shared::{self, SharedError};
use weft_sdk::{Action, Filter, LocalResponse, Request, property};

/// The chain entry's `config`.
#[derive(Deserialize, Debug)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// Requests one client may make (counted since the filter loaded).
    pub limit: u64,
}

/// The stored form of a count.
pub fn encode(count: u64) -> [u8; 8] {
    count.to_le_bytes()
}

/// A stored count (0 for anything else).
pub fn decode(bytes: &[u8]) -> u64 {
    bytes.try_into().map(u64::from_le_bytes).unwrap_or(0)
}

/// Whether the `count`th request (counting from 1) is within `limit`.
pub fn allowed(count: u64, limit: u64) -> bool {
    count <= limit
}

/// Adds one to `key`'s count; returns the new count.
fn increment(key: &str) -> Result<u64, SharedError> {
    loop {
        let (count, cas) = match shared::get(key) {
            Some(entry) => (decode(&entry.value), entry.cas),
            None => (0, 0),
        };
        match shared::set(key, encode(count + 1), cas) {
            Ok(_) => return Ok(count + 1),
            Err(SharedError::CasMismatch) => continue,
            Err(err) => return Err(err),
        }
    }
}

struct Counter {
    limit: u64,
}

#[weft_sdk::filter]
impl Filter for Counter {
    type Config = Config;

    fn new(config: Config) -> Result<Self, String> {
        Ok(Counter {
            limit: config.limit,
        })
    }

    fn on_request_headers(&mut self, req: &Request) -> Action {
        let client = property::peer_ip().unwrap_or_default();
        let count = match increment(&format!("count:{client}")) {
            Ok(count) => count,
            Err(err) => {
                // Fail open: a full state must not stop traffic.
                weft_sdk::warn!("cannot count: {err}");
                return Action::Continue;
            }
        };
        if !allowed(count, self.limit) {
            return LocalResponse::error(429, "too_many_requests", "request limit reached").into();
        }
        req.set_header("x-request-count", &count.to_string());
        Action::Continue
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_round_trip_and_the_limit_is_inclusive() {
        assert_eq!(decode(&encode(41)), 41);
        assert_eq!(decode(b"junk"), 0);
        let config: Config = serde_json::from_str(include_str!("../config.json")).unwrap();
        assert!(allowed(config.limit, config.limit));
        assert!(!allowed(config.limit + 1, config.limit));
    }
}
