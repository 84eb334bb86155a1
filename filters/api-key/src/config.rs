//! The filter's config and its validation.

use serde::Deserialize;

use crate::keys::{self, KeyRing};

/// The config as written.
// No `Debug`: it holds plaintext keys.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// The accepted keys.
    pub keys: Vec<KeyConfig>,
    /// The request header carrying the key.
    #[serde(default = "default_header")]
    pub header: String,
    /// A query parameter that may carry the key instead of the header.
    #[serde(default)]
    pub query: Option<String>,
    /// The request header that names the consumer to the upstream.
    #[serde(default = "default_consumer_header")]
    pub consumer_header: String,
    /// Whether the key is removed from the request sent upstream.
    #[serde(default = "default_strip")]
    pub strip: bool,
}

/// One accepted key: the key itself, or its SHA-256 digest.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct KeyConfig {
    /// Who the key belongs to.
    pub consumer: String,
    /// The key in plain text (hashed when the config loads).
    #[serde(default)]
    pub key: Option<String>,
    /// The SHA-256 digest of the key, in hex.
    #[serde(default)]
    pub sha256: Option<String>,
}

fn default_header() -> String {
    "x-api-key".into()
}

fn default_consumer_header() -> String {
    "x-consumer".into()
}

fn default_strip() -> bool {
    true
}

/// The validated config.
pub struct Settings {
    /// The accepted keys, as digests.
    pub keys: KeyRing,
    /// The key header, lower case.
    pub header: String,
    /// The key query parameter, if any.
    pub query: Option<String>,
    /// The consumer header, lower case.
    pub consumer_header: String,
    /// Whether to remove the key from the request sent upstream.
    pub strip: bool,
}

/// Headers the proxy derives from the message framing, or that route the
/// request: the filter must not set or remove them.
const RESERVED_HEADERS: [&str; 3] = ["content-length", "transfer-encoding", "host"];

impl Config {
    /// Checks the config, hashes the plaintext keys and returns the settings.
    pub fn validate(self) -> Result<Settings, String> {
        if self.keys.is_empty() {
            return Err("api-key needs at least one entry under `keys`, e.g. \
                 {\"keys\": [{\"consumer\": \"alice\", \"sha256\": \"<hex digest of the key>\"}]}"
                .into());
        }
        let header = header_name("header", &self.header)?;
        let consumer_header = header_name("consumer_header", &self.consumer_header)?;
        if header == consumer_header {
            return Err(format!(
                "`header` and `consumer_header` are both `{header}`: the consumer header \
                 must be another header"
            ));
        }
        let query = match self.query {
            Some(name) => Some(query_name(name)?),
            None => None,
        };
        let mut ring = KeyRing::default();
        for (index, entry) in self.keys.into_iter().enumerate() {
            let consumer = entry.consumer;
            check_consumer(&consumer).map_err(|e| format!("keys[{index}].consumer: {e}"))?;
            let digest = match (entry.key, entry.sha256) {
                (Some(key), None) if key.is_empty() => {
                    return Err(format!("keys[{index}].key: the key is empty"));
                }
                (Some(key), None) => keys::sha256(key.as_bytes()),
                (None, Some(hex)) => keys::parse_hex_digest(&hex)
                    .map_err(|e| format!("keys[{index}].sha256: {e}"))?,
                (Some(_), Some(_)) => {
                    return Err(format!(
                        "keys[{index}] (consumer {consumer:?}): give either `key` or `sha256`, \
                         not both"
                    ));
                }
                (None, None) => {
                    return Err(format!(
                        "keys[{index}] (consumer {consumer:?}): needs `key` (the key) or \
                         `sha256` (the hex SHA-256 digest of the key)"
                    ));
                }
            };
            if let Err(owner) = ring.insert(digest, consumer.clone()) {
                return Err(format!(
                    "keys[{index}] (consumer {consumer:?}): the same key is already listed \
                     for consumer {owner:?}; each key must be listed once"
                ));
            }
        }
        Ok(Settings {
            keys: ring,
            header,
            query,
            consumer_header,
            strip: self.strip,
        })
    }
}

/// Checks a header name from field `field` and lower-cases it.
fn header_name(field: &str, name: &str) -> Result<String, String> {
    let lower = weft_sdk::header::check_name(name).map_err(|e| format!("{field}: {e}"))?;
    if RESERVED_HEADERS.contains(&lower.as_str()) {
        return Err(format!(
            "{field}: `{name}` is managed by the proxy and cannot be used here"
        ));
    }
    Ok(lower)
}

/// Checks the query parameter name.
fn query_name(name: String) -> Result<String, String> {
    if name.is_empty() {
        return Err("query: the parameter name is empty".into());
    }
    if let Some(bad) = name
        .chars()
        .find(|&c| c.is_control() || c.is_whitespace() || "&=#?%+".contains(c))
    {
        return Err(format!(
            "query: invalid parameter name {name:?}: {bad:?} is not allowed (give the name \
             as it reads after decoding, without &, =, #, ?, %, +, spaces or control characters)"
        ));
    }
    Ok(name)
}

/// Checks a consumer name: it becomes a header value.
fn check_consumer(consumer: &str) -> Result<(), String> {
    if consumer.is_empty() {
        return Err("the consumer name is empty".into());
    }
    if let Some(bad) = consumer.chars().find(|&c| !(' '..='~').contains(&c)) {
        return Err(format!(
            "{consumer:?}: {bad:?} is not allowed (consumer names are sent in a header: \
             printable ASCII only)"
        ));
    }
    if consumer.starts_with(' ') || consumer.ends_with(' ') {
        return Err(format!(
            "{consumer:?}: leading or trailing spaces would be lost in the header"
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// SHA-256 of "s3cret".
    const S3CRET: &str = "1ec1c26b50d5d3c58d9583181af8076655fe00756bf7285940ba3670f99fcba0";

    fn parse(json: &str) -> Result<Settings, String> {
        let config: Config = serde_json::from_str(json).map_err(|e| e.to_string())?;
        config.validate()
    }

    fn err(json: &str) -> String {
        match parse(json) {
            Ok(_) => panic!("accepted: {json}"),
            Err(e) => e,
        }
    }

    #[test]
    fn defaults() {
        let settings = parse(r#"{"keys": [{"consumer": "ci", "key": "s3cret"}]}"#).unwrap();
        assert_eq!(settings.header, "x-api-key");
        assert_eq!(settings.query, None);
        assert_eq!(settings.consumer_header, "x-consumer");
        assert!(settings.strip);
        assert_eq!(settings.keys.consumer_of(b"s3cret"), Some("ci"));
    }

    #[test]
    fn everything_set() {
        let settings = parse(&format!(
            r#"{{"keys": [{{"consumer": "alice", "sha256": "{S3CRET}"}},
                          {{"consumer": "ci bot", "key": "other"}}],
                "header": "X-Key", "query": "api_key", "consumer_header": "X-Who",
                "strip": false}}"#
        ))
        .unwrap();
        assert_eq!(settings.header, "x-key", "header names are lower-cased");
        assert_eq!(settings.query.as_deref(), Some("api_key"));
        assert_eq!(settings.consumer_header, "x-who");
        assert!(!settings.strip);
        assert_eq!(settings.keys.len(), 2);
        assert_eq!(settings.keys.consumer_of(b"s3cret"), Some("alice"));
        assert_eq!(settings.keys.consumer_of(b"other"), Some("ci bot"));
    }

    #[test]
    fn plaintext_and_digest_of_the_same_key_are_the_same_key() {
        let e = err(&format!(
            r#"{{"keys": [{{"consumer": "a", "key": "s3cret"}},
                          {{"consumer": "b", "sha256": "{}"}}]}}"#,
            S3CRET.to_uppercase()
        ));
        assert_eq!(
            e,
            "keys[1] (consumer \"b\"): the same key is already listed for consumer \"a\"; \
             each key must be listed once"
        );
    }

    #[test]
    fn no_keys() {
        assert!(
            err(r#"{"keys": []}"#).starts_with("api-key needs at least one entry under `keys`")
        );
        assert!(err("{}").starts_with("missing field `keys`"));
    }

    #[test]
    fn a_key_needs_exactly_one_of_key_and_sha256() {
        assert_eq!(
            err(r#"{"keys": [{"consumer": "a"}]}"#),
            "keys[0] (consumer \"a\"): needs `key` (the key) or `sha256` (the hex SHA-256 \
             digest of the key)"
        );
        assert_eq!(
            err(&format!(
                r#"{{"keys": [{{"consumer": "a", "key": "k", "sha256": "{S3CRET}"}}]}}"#
            )),
            "keys[0] (consumer \"a\"): give either `key` or `sha256`, not both"
        );
    }

    #[test]
    fn empty_keys_and_bad_digests() {
        assert_eq!(
            err(r#"{"keys": [{"consumer": "a", "key": "k"}, {"consumer": "b", "key": ""}]}"#),
            "keys[1].key: the key is empty"
        );
        assert_eq!(
            err(r#"{"keys": [{"consumer": "a", "sha256": "abc"}]}"#),
            "keys[0].sha256: expected 64 hexadecimal digits (a SHA-256 digest), got 3 characters"
        );
        let bad = format!("{}x", &S3CRET[..63]);
        assert_eq!(
            err(&format!(
                r#"{{"keys": [{{"consumer": "a", "sha256": "{bad}"}}]}}"#
            )),
            "keys[0].sha256: 'x' (character 64) is not a hexadecimal digit"
        );
    }

    #[test]
    fn consumers_must_be_non_empty_printable_ascii() {
        assert_eq!(
            err(r#"{"keys": [{"consumer": "", "key": "k"}]}"#),
            "keys[0].consumer: the consumer name is empty"
        );
        assert!(
            err(r#"{"keys": [{"consumer": "a\nb", "key": "k"}]}"#)
                .starts_with("keys[0].consumer: \"a\\nb\": '\\n' is not allowed")
        );
        assert!(
            err(r#"{"keys": [{"consumer": "zoë", "key": "k"}]}"#)
                .starts_with("keys[0].consumer: \"zoë\": 'ë' is not allowed")
        );
        assert!(err(r#"{"keys": [{"consumer": "a ", "key": "k"}]}"#).contains("trailing spaces"));
    }

    #[test]
    fn the_same_consumer_may_have_several_keys() {
        let settings = parse(
            r#"{"keys": [{"consumer": "a", "key": "old"}, {"consumer": "a", "key": "new"}]}"#,
        )
        .unwrap();
        assert_eq!(settings.keys.consumer_of(b"old"), Some("a"));
        assert_eq!(settings.keys.consumer_of(b"new"), Some("a"));
    }

    #[test]
    fn header_names_are_checked() {
        let keys = r#""keys": [{"consumer": "a", "key": "k"}]"#;
        assert_eq!(
            err(&format!(r#"{{{keys}, "header": "x api key"}}"#)),
            "header: invalid header name `x api key`: ' ' is not allowed \
             (names are letters, digits and !#$%&'*+-.^_`|~)"
        );
        assert_eq!(
            err(&format!(r#"{{{keys}, "header": ""}}"#)),
            "header: the header name is empty"
        );
        assert!(
            err(&format!(r#"{{{keys}, "consumer_header": ":authority"}}"#))
                .starts_with("consumer_header: invalid header name `:authority`")
        );
        assert_eq!(
            err(&format!(
                r#"{{{keys}, "consumer_header": "Content-Length"}}"#
            )),
            "consumer_header: `Content-Length` is managed by the proxy and cannot be used here"
        );
        assert_eq!(
            err(&format!(
                r#"{{{keys}, "header": "X-Key", "consumer_header": "x-key"}}"#
            )),
            "`header` and `consumer_header` are both `x-key`: the consumer header must be \
             another header"
        );
    }

    #[test]
    fn query_names_are_checked() {
        let keys = r#""keys": [{"consumer": "a", "key": "k"}]"#;
        assert_eq!(
            err(&format!(r#"{{{keys}, "query": ""}}"#)),
            "query: the parameter name is empty"
        );
        for bad in ["a&b", "a=b", "a b", "a%20b"] {
            let e = err(&format!(r#"{{{keys}, "query": "{bad}"}}"#));
            assert!(e.starts_with("query: invalid parameter name"), "{e}");
        }
    }

    #[test]
    fn unknown_fields_are_refused() {
        assert!(
            err(r#"{"keys": [{"consumer": "a", "key": "k"}], "headers": "x"}"#)
                .starts_with("unknown field `headers`")
        );
        assert!(
            err(r#"{"keys": [{"consumer": "a", "keys": "k"}]}"#)
                .starts_with("unknown field `keys`")
        );
    }
}
