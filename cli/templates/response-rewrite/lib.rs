//! `{{name}}`: rewrites the upstream's response headers on their way to
//! the client: sets some, removes others (e.g. headers that reveal the
//! server).
//!
//! Config (`config.json`, the chain entry's `config` in the proxy):
//!
//! ```json
//! { "set": { "x-frame-options": "DENY" }, "remove": ["server", "x-powered-by"] }
//! ```
//!
//! The rewrite plan is a plain function, [`plan`], so it is tested natively
//! (`cargo test`); the component around it is tested in the proxy with
//! `weft filter test` and `cases.yaml`.

use std::collections::BTreeMap;

use serde::Deserialize;
use weft_sdk::{Action, Filter, Request, Response};

/// The chain entry's `config`.
#[derive(Deserialize, Debug, Default)]
#[serde(deny_unknown_fields, default)]
pub struct Config {
    /// Headers set on every response (replacing the upstream's).
    pub set: BTreeMap<String, String>,
    /// Headers removed from every response.
    pub remove: Vec<String>,
}

/// One change to a response.
#[derive(Debug, PartialEq, Eq)]
pub enum Change {
    /// Set this header to this value.
    Set(String, String),
    /// Remove this header.
    Remove(String),
}

/// The changes a config asks for, names in lower case, removals first; an
/// error names a header that is not valid HTTP (setting it would trap).
pub fn plan(config: &Config) -> Result<Vec<Change>, String> {
    let mut changes = Vec::new();
    for name in &config.remove {
        changes.push(Change::Remove(valid_name(name)?));
    }
    for (name, value) in &config.set {
        if value.bytes().any(|b| (b < 0x20 && b != b'\t') || b == 0x7f) {
            return Err(format!("the value of {name:?} has control characters"));
        }
        changes.push(Change::Set(valid_name(name)?, value.clone()));
    }
    if changes.is_empty() {
        return Err("nothing to do: give `set` or `remove`".into());
    }
    Ok(changes)
}

fn valid_name(name: &str) -> Result<String, String> {
    let token = |b: u8| b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b);
    if name.is_empty() || !name.bytes().all(token) {
        return Err(format!("{name:?} is not a valid header name"));
    }
    Ok(name.to_ascii_lowercase())
}

struct ResponseRewrite {
    changes: Vec<Change>,
}

#[weft_sdk::filter]
impl Filter for ResponseRewrite {
    type Config = Config;

    /// Checks the config once, when the proxy loads it: a bad header name
    /// rejects it here rather than trapping on every response.
    fn new(config: Config) -> Result<Self, String> {
        Ok(ResponseRewrite {
            changes: plan(&config)?,
        })
    }

    /// Only this phase is implemented, so the proxy calls nothing else:
    /// response phases run in reverse chain order, after the upstream
    /// answered (or a filter answered for it).
    fn on_response_headers(&mut self, _req: &Request, resp: &Response) -> Action {
        for change in &self.changes {
            match change {
                Change::Set(name, value) => resp.set_header(name, value),
                Change::Remove(name) => resp.remove_header(name),
            }
        }
        Action::Continue
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_shipped_config_removes_then_sets() {
        let config: Config = serde_json::from_str(include_str!("../config.json")).unwrap();
        let changes = plan(&config).unwrap();
        assert_eq!(changes[0], Change::Remove("server".into()));
        assert!(changes.contains(&Change::Set("x-frame-options".into(), "DENY".into())));
    }

    #[test]
    fn invalid_headers_and_empty_configs_are_refused() {
        let bad: Config = serde_json::from_str(r#"{"remove": ["bad name"]}"#).unwrap();
        assert!(plan(&bad).unwrap_err().contains("not a valid header name"));
        assert!(plan(&Config::default()).unwrap_err().contains("nothing to do"));
    }
}
