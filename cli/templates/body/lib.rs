//! `{{name}}`: reads the whole request body and refuses (400) one that
//! contains a denied word; other requests go on upstream unchanged.
//!
//! Config (`config.json`, the chain entry's `config` in the proxy):
//!
//! ```json
//! { "deny": ["DROP TABLE", "<script"], "max_bytes": 65536 }
//! ```
//!
//! Implementing `on_request_body` makes the proxy buffer the body (up to
//! the route's `max_body_bytes`, 413 above it) before the filter sees it;
//! routes without this filter keep streaming. The check is a plain
//! function, [`denied_word`], so it is tested natively (`cargo test`).

use serde::Deserialize;
use weft_sdk::{Action, Filter, LocalResponse, Request};

/// The chain entry's `config`.
#[derive(Deserialize, Debug)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// Words refused anywhere in a body (case-sensitive).
    pub deny: Vec<String>,
    /// Only the first this many bytes are looked at.
    #[serde(default = "default_max_bytes")]
    pub max_bytes: usize,
}

fn default_max_bytes() -> usize {
    64 * 1024
}

/// The first denied word found in `body`'s first `max_bytes`, if any.
pub fn denied_word<'c>(config: &'c Config, body: &[u8]) -> Option<&'c str> {
    let body = &body[..body.len().min(config.max_bytes)];
    config
        .deny
        .iter()
        .find(|word| {
            let word = word.as_bytes();
            !word.is_empty() && body.windows(word.len()).any(|w| w == word)
        })
        .map(String::as_str)
}

struct BodyCheck {
    config: Config,
}

#[weft_sdk::filter]
impl Filter for BodyCheck {
    type Config = Config;

    fn new(config: Config) -> Result<Self, String> {
        if config.deny.iter().any(String::is_empty) {
            return Err("`deny` must not hold an empty word".into());
        }
        Ok(BodyCheck { config })
    }

    /// Called once the whole body is buffered (`req.body()` is `None` or
    /// empty for a request without one).
    fn on_request_body(&mut self, req: &Request) -> Action {
        let body = req.body().unwrap_or_default();
        match denied_word(&self.config, &body) {
            Some(word) => {
                weft_sdk::info!("refused a body containing {word:?}");
                LocalResponse::error(400, "denied_content", "the body holds denied content")
                    .into()
            }
            None => Action::Continue,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_shipped_config_finds_denied_words() {
        let config: Config = serde_json::from_str(include_str!("../config.json")).unwrap();
        assert_eq!(denied_word(&config, b"a'; DROP TABLE x"), Some("DROP TABLE"));
        assert_eq!(denied_word(&config, b"<script>alert(1)"), Some("<script"));
        assert_eq!(denied_word(&config, b"nice post"), None);
        assert_eq!(denied_word(&config, b""), None);
    }

    #[test]
    fn only_the_first_max_bytes_are_looked_at() {
        let config = Config {
            deny: vec!["bad".into()],
            max_bytes: 4,
        };
        assert_eq!(denied_word(&config, b"ok, bad"), None);
        assert_eq!(denied_word(&config, b"bad!"), Some("bad"));
    }
}
