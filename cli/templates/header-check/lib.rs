//! `{{name}}`: refuses requests whose header is missing (401) or holds a
//! value that is not allowed (403); the others go on upstream with the
//! header `x-checked-by: {{name}}`.
//!
//! Config (`config.json`, the chain entry's `config` in the proxy):
//!
//! ```json
//! { "header": "x-api-key", "allowed": ["key-1", "key-2"] }
//! ```
//!
//! The decision is a plain function, [`decide`], so it is tested natively
//! (`cargo test`); the component around it is tested in the proxy with
//! `weft filter test` and `cases.yaml`.

use serde::Deserialize;
use weft_sdk::{Action, Filter, LocalResponse, Request};

/// The chain entry's `config`. Unknown fields are refused, so a typo is an
/// error when the proxy loads the config, not a silently ignored key.
#[derive(Deserialize, Debug)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// The header to check (any case).
    pub header: String,
    /// The values let through.
    pub allowed: Vec<String>,
}

/// What to do with a request.
#[derive(Debug, PartialEq, Eq)]
pub enum Decision {
    /// Let it through.
    Pass,
    /// Answer with this status and message.
    Refuse(u16, &'static str),
}

/// Decides on the header's value (`None`: the request has no such header).
pub fn decide(config: &Config, value: Option<&str>) -> Decision {
    match value {
        None => Decision::Refuse(401, "missing header"),
        Some(v) if config.allowed.iter().any(|a| a == v) => Decision::Pass,
        Some(_) => Decision::Refuse(403, "value not allowed"),
    }
}

/// One filter instance. The proxy keeps several, each serving one request
/// at a time, from its first phase to its last.
struct HeaderCheck {
    config: Config,
}

#[weft_sdk::filter]
impl Filter for HeaderCheck {
    type Config = Config;

    /// Runs once per chain entry when the proxy loads the config: an `Err`
    /// rejects the config (the proxy keeps serving the previous one).
    fn new(config: Config) -> Result<Self, String> {
        if config.header.is_empty() {
            return Err("`header` must not be empty".into());
        }
        Ok(HeaderCheck { config })
    }

    /// Only the phases implemented here are called: this filter never sees
    /// bodies or responses, and the proxy never buffers them for it.
    fn on_request_headers(&mut self, req: &Request) -> Action {
        let value = req.header(&self.config.header);
        match decide(&self.config, value.as_deref()) {
            Decision::Pass => {
                req.set_header("x-checked-by", "{{name}}");
                Action::Continue
            }
            Decision::Refuse(status, message) => {
                weft_sdk::debug!("refused {} {}: {message}", req.method(), req.path());
                // The proxy's own JSON error shape: {"error", "message", "request_id"}.
                LocalResponse::error(status, "header_check", message).into()
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config() -> Config {
        serde_json::from_str(include_str!("../config.json")).expect("config.json parses")
    }

    #[test]
    fn the_shipped_config_lets_allowed_values_through_only() {
        let config = config();
        assert_eq!(decide(&config, Some("key-1")), Decision::Pass);
        assert_eq!(decide(&config, None), Decision::Refuse(401, "missing header"));
        assert_eq!(
            decide(&config, Some("other")),
            Decision::Refuse(403, "value not allowed")
        );
    }

    #[test]
    fn unknown_config_fields_are_refused() {
        let err = serde_json::from_str::<Config>(r#"{"header": "x", "allowed": [], "alowed": []}"#)
            .unwrap_err();
        assert!(err.to_string().contains("unknown field `alowed`"), "{err}");
    }
}
