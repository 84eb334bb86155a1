//! Secrets out of what the admin API shows: `/config` runs every filter's
//! config through [`redact`] first.
//!
//! A value is a secret when
//! - the config marks it: `{"$secret": value}` (the filter receives
//!   `value`; see `config::files`), or
//! - its key names one: a key containing `secret`, `password`, `passwd`,
//!   `token`, `private`, `credential`, `hmac` or `api_key`/`apikey`, or a
//!   key that is `key`, `keys` or ends in `_key`/`_keys` (any case, `-`
//!   read as `_`).
//!
//! `{"$file": path}` references are shown as written: the file's content
//! is never read for `/config`. A redacted value becomes the string
//! [`REDACTED`], whatever its type.

use serde_json::Value;

use crate::config::files::{FILE_KEY, SECRET_KEY};

/// What a redacted value is replaced by.
pub const REDACTED: &str = "<redacted>";

/// Words that make a key name a secret's.
const SECRET_WORDS: &[&str] = &[
    "secret",
    "password",
    "passwd",
    "token",
    "private",
    "credential",
    "hmac",
    "api_key",
    "apikey",
];

/// Replaces every secret in `value` by [`REDACTED`].
pub fn redact(value: &mut Value) {
    match value {
        Value::Object(map) if map.len() == 1 && map.contains_key(SECRET_KEY) => {
            *value = Value::String(REDACTED.into());
        }
        Value::Object(map) if map.len() == 1 && map.contains_key(FILE_KEY) => {}
        Value::Object(map) => {
            for (key, item) in map.iter_mut() {
                if is_secret_key(key) && !is_file_reference(item) {
                    *item = Value::String(REDACTED.into());
                } else {
                    redact(item);
                }
            }
        }
        Value::Array(items) => items.iter_mut().for_each(redact),
        _ => {}
    }
}

/// Whether a key's name says its value is a secret.
pub fn is_secret_key(key: &str) -> bool {
    let key = key.to_ascii_lowercase().replace('-', "_");
    SECRET_WORDS.iter().any(|w| key.contains(w))
        || key == "key"
        || key == "keys"
        || key.ends_with("_key")
        || key.ends_with("_keys")
}

fn is_file_reference(value: &Value) -> bool {
    matches!(value, Value::Object(map) if map.len() == 1 && map.contains_key(FILE_KEY))
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn marked_and_named_secrets_are_redacted_and_the_rest_kept() {
        let mut config = json!({
            "header": "x-api-key",
            "keys": [{"consumer": "a", "sha256": "abc"}],
            "hmac_secret": "s3cr3t",
            "Client-Token": 42,
            "signing_key": {"kty": "oct"},
            "nested": {"password": "p", "plain": "kept", "opaque": {"$secret": "x"}},
            "jwks": {"$file": "jwks.json"},
            "issuer": "https://issuer",
        });
        redact(&mut config);
        let text = config.to_string();
        for secret in ["abc", "s3cr3t", "42", "oct", "\"p\"", "\"x\""] {
            assert!(!text.contains(secret), "{secret} shown in {text}");
        }
        assert_eq!(config["header"], "x-api-key");
        assert_eq!(config["nested"]["plain"], "kept");
        assert_eq!(config["nested"]["opaque"], REDACTED);
        assert_eq!(config["jwks"], json!({"$file": "jwks.json"}));
        assert_eq!(config["issuer"], "https://issuer");
    }

    #[test]
    fn a_file_reference_under_a_secret_key_is_shown_as_written() {
        let mut config = json!({"secret": {"$file": "secret.txt"}});
        redact(&mut config);
        assert_eq!(config["secret"], json!({"$file": "secret.txt"}));
    }
}
