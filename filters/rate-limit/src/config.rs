//! The filter's config and its validation.

use serde::Deserialize;
use serde_json::Value;

use crate::bucket::Limits;
use crate::key::KeyPart;

/// The largest `burst`: the bucket's fixed-point token count must fit a u64.
pub const MAX_BURST: u64 = 1_000_000_000;
/// The longest policy `name`, in bytes.
pub const MAX_NAME_LEN: usize = 64;
/// The most parts a `key` may have.
pub const MAX_KEY_PARTS: usize = 8;
/// The longest `const` key part, in bytes.
pub const MAX_CONST_LEN: usize = 256;

/// The config as written.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// The bucket size: requests allowed at once from a full bucket.
    pub burst: u64,
    /// Tokens added per `per`.
    pub rate: f64,
    /// The unit of `rate`.
    #[serde(default)]
    pub per: Per,
    /// What the requests sharing a bucket have in common. Checked by
    /// [`Config::validate`] rather than by serde, for clearer messages.
    #[serde(default)]
    pub key: Option<Vec<Value>>,
    /// The policy's name, in the `ratelimit` headers and the metric.
    #[serde(default = "default_name")]
    pub name: String,
    /// Whether allowed responses get the `ratelimit` headers too.
    #[serde(default = "default_headers")]
    pub headers: bool,
    /// The status of a refusal.
    #[serde(default = "default_status")]
    pub status: u16,
}

/// The unit of `rate`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Per {
    /// Tokens per second.
    #[default]
    Second,
    /// Tokens per minute.
    Minute,
    /// Tokens per hour.
    Hour,
}

impl Per {
    /// The unit in seconds.
    pub fn seconds(self) -> u64 {
        match self {
            Per::Second => 1,
            Per::Minute => 60,
            Per::Hour => 3600,
        }
    }

    /// The unit's name, as in the config.
    pub fn name(self) -> &'static str {
        match self {
            Per::Second => "second",
            Per::Minute => "minute",
            Per::Hour => "hour",
        }
    }
}

fn default_name() -> String {
    "default".into()
}

fn default_headers() -> bool {
    true
}

fn default_status() -> u16 {
    429
}

/// The validated config.
#[derive(Debug, Clone, PartialEq)]
pub struct Settings {
    /// The policy name (printable ASCII).
    pub name: String,
    /// The bucket size in tokens.
    pub burst: u64,
    /// Tokens added per `per`.
    pub rate: f64,
    /// The unit of `rate`.
    pub per: Per,
    /// The bucket arithmetic for `burst`, `rate` and `per`.
    pub limits: Limits,
    /// The key parts, in order.
    pub key: Vec<KeyPart>,
    /// Whether allowed responses get the `ratelimit` headers.
    pub headers: bool,
    /// The status of a refusal.
    pub status: u16,
}

impl Config {
    /// Checks every field and returns the settings.
    pub fn validate(self) -> Result<Settings, String> {
        if self.burst == 0 {
            return Err(
                "burst: must be at least 1 (the number of requests a full bucket \
                        allows at once)"
                    .into(),
            );
        }
        if self.burst > MAX_BURST {
            return Err(format!(
                "burst: {} is too large (at most {MAX_BURST})",
                self.burst
            ));
        }
        if !self.rate.is_finite() || self.rate <= 0.0 {
            return Err(format!(
                "rate: must be a number greater than 0 (tokens added per `per`), got {}",
                self.rate
            ));
        }
        check_name(&self.name).map_err(|e| format!("name: {e}"))?;
        if !(400..=599).contains(&self.status) {
            return Err(format!(
                "status: {} is not an error status (give 400..=599, e.g. 429 or 503)",
                self.status
            ));
        }
        let key = match self.key {
            None => vec![KeyPart::PeerIp],
            Some(parts) => key_parts(&parts)?,
        };
        Ok(Settings {
            limits: Limits::new(self.burst, self.rate, self.per.seconds()),
            name: self.name,
            burst: self.burst,
            rate: self.rate,
            per: self.per,
            key,
            headers: self.headers,
            status: self.status,
        })
    }
}

/// The policy name goes into a structured-field string: printable ASCII.
fn check_name(name: &str) -> Result<(), String> {
    if name.is_empty() {
        return Err("the policy name is empty".into());
    }
    if name.len() > MAX_NAME_LEN {
        return Err(format!(
            "the policy name is {} bytes long (at most {MAX_NAME_LEN})",
            name.len()
        ));
    }
    if let Some(bad) = name.chars().find(|c| !(' '..='~').contains(c)) {
        return Err(format!(
            "invalid policy name {name:?}: {bad:?} is not allowed (printable ASCII only)"
        ));
    }
    Ok(())
}

/// What a key part may be, for messages.
const KEY_PART_FORMS: &str =
    r#""peer_ip", "route", {"header": "<header name>"} or {"const": "<text>"}"#;

fn key_parts(parts: &[Value]) -> Result<Vec<KeyPart>, String> {
    if parts.is_empty() {
        return Err(format!(
            "key: the list is empty; give one or more of {KEY_PART_FORMS} (default [\"peer_ip\"])"
        ));
    }
    if parts.len() > MAX_KEY_PARTS {
        return Err(format!(
            "key: {} parts, at most {MAX_KEY_PARTS} are allowed",
            parts.len()
        ));
    }
    let mut checked: Vec<KeyPart> = Vec::with_capacity(parts.len());
    for (index, part) in parts.iter().enumerate() {
        let part = key_part(part).map_err(|e| format!("key[{index}]: {e}"))?;
        if checked.contains(&part) {
            return Err(format!("key[{index}]: {} is listed twice", part.describe()));
        }
        checked.push(part);
    }
    Ok(checked)
}

fn key_part(part: &Value) -> Result<KeyPart, String> {
    match part {
        Value::String(name) => match name.as_str() {
            "peer_ip" => Ok(KeyPart::PeerIp),
            "route" => Ok(KeyPart::Route),
            other => Err(format!(
                "unknown key part {other:?}: expected {KEY_PART_FORMS}"
            )),
        },
        Value::Object(map) if map.len() == 1 => {
            let (kind, value) = map.iter().next().expect("one entry");
            let Value::String(value) = value else {
                return Err(format!(
                    "the value of {kind:?} must be a string, got {value}"
                ));
            };
            match kind.as_str() {
                "header" => weft_sdk::header::check_name(value).map(KeyPart::Header),
                "const" => {
                    if value.len() > MAX_CONST_LEN {
                        Err(format!(
                            "the const text is {} bytes long (at most {MAX_CONST_LEN})",
                            value.len()
                        ))
                    } else {
                        Ok(KeyPart::Const(value.clone()))
                    }
                }
                other => Err(format!(
                    "unknown key part {{{other:?}: …}}: expected {KEY_PART_FORMS}"
                )),
            }
        }
        other => Err(format!(
            "unknown key part {other}: expected {KEY_PART_FORMS}"
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(json: &str) -> Result<Settings, String> {
        let config: Config = serde_json::from_str(json).map_err(|e| format!("serde: {e}"))?;
        config.validate()
    }

    #[test]
    fn defaults() {
        let s = parse(r#"{"burst": 10, "rate": 5}"#).unwrap();
        assert_eq!(s.name, "default");
        assert_eq!(s.per, Per::Second);
        assert_eq!(s.key, [KeyPart::PeerIp]);
        assert!(s.headers);
        assert_eq!(s.status, 429);
        assert_eq!(s.burst, 10);
        assert_eq!(s.rate, 5.0);
    }

    #[test]
    fn everything_given() {
        let s = parse(
            r#"{"burst": 100, "rate": 0.5, "per": "minute", "name": "api \"v2\"",
                "key": ["route", {"header": "X-User"}, {"const": "global"}, "peer_ip"],
                "headers": false, "status": 503}"#,
        )
        .unwrap();
        assert_eq!(s.name, "api \"v2\"");
        assert_eq!(s.per, Per::Minute);
        assert_eq!(s.rate, 0.5);
        assert_eq!(
            s.key,
            [
                KeyPart::Route,
                KeyPart::Header("x-user".into()),
                KeyPart::Const("global".into()),
                KeyPart::PeerIp,
            ]
        );
        assert!(!s.headers);
        assert_eq!(s.status, 503);
    }

    #[test]
    fn per_units() {
        for (per, seconds) in [("second", 1), ("minute", 60), ("hour", 3600)] {
            let s = parse(&format!(r#"{{"burst": 1, "rate": 1, "per": "{per}"}}"#)).unwrap();
            assert_eq!(s.per.seconds(), seconds);
            assert_eq!(s.per.name(), per);
        }
        let err = parse(r#"{"burst": 1, "rate": 1, "per": "day"}"#).unwrap_err();
        assert!(err.contains("unknown variant `day`"), "{err}");
    }

    #[test]
    fn bad_numbers_are_rejected() {
        let cases = [
            (r#"{"burst": 0, "rate": 1}"#, "burst: must be at least 1"),
            (
                r#"{"burst": 1000000001, "rate": 1}"#,
                "burst: 1000000001 is too large (at most 1000000000)",
            ),
            (
                r#"{"burst": 1, "rate": 0}"#,
                "rate: must be a number greater than 0",
            ),
            (r#"{"burst": 1, "rate": -2.5}"#, "got -2.5"),
            (
                r#"{"burst": 1, "rate": 1, "status": 200}"#,
                "status: 200 is not an error status",
            ),
            (
                r#"{"burst": 1, "rate": 1, "status": 600}"#,
                "status: 600 is not an error status",
            ),
        ];
        for (json, expected) in cases {
            let err = parse(json).unwrap_err();
            assert!(err.contains(expected), "{json}: {err}");
        }
    }

    #[test]
    fn serde_rejects_wrong_types_and_unknown_fields() {
        for (json, expected) in [
            (r#"{"rate": 1}"#, "missing field `burst`"),
            (r#"{"burst": 1}"#, "missing field `rate`"),
            (r#"{"burst": -1, "rate": 1}"#, "invalid value: integer `-1`"),
            (
                r#"{"burst": 2.5, "rate": 1}"#,
                "invalid type: floating point `2.5`",
            ),
            (
                r#"{"burst": 1, "rate": "fast"}"#,
                "invalid type: string \"fast\"",
            ),
            (
                r#"{"burst": 1, "rate": 1, "limit": 3}"#,
                "unknown field `limit`",
            ),
        ] {
            let err = parse(json).unwrap_err();
            assert!(err.contains(expected), "{json}: {err}");
        }
    }

    #[test]
    fn bad_names_are_rejected() {
        for (name, expected) in [
            ("", "name: the policy name is empty"),
            (
                "caf\u{e9}",
                "name: invalid policy name \"café\": 'é' is not allowed",
            ),
            ("a\tb", "is not allowed (printable ASCII only)"),
        ] {
            let json = serde_json::json!({"burst": 1, "rate": 1, "name": name}).to_string();
            let err = parse(&json).unwrap_err();
            assert!(err.contains(expected), "{name:?}: {err}");
        }
        let long = "n".repeat(MAX_NAME_LEN + 1);
        let json = serde_json::json!({"burst": 1, "rate": 1, "name": long}).to_string();
        assert!(parse(&json).unwrap_err().contains("at most 64"));
        let ok = "n".repeat(MAX_NAME_LEN);
        let json = serde_json::json!({"burst": 1, "rate": 1, "name": ok}).to_string();
        assert!(parse(&json).is_ok());
    }

    #[test]
    fn bad_keys_are_rejected_with_their_index() {
        let cases = [
            (r#"[]"#, "key: the list is empty"),
            (
                r#"["peer_ip", "user"]"#,
                "key[1]: unknown key part \"user\": expected \"peer_ip\"",
            ),
            (
                r#"[{"header": "x user"}]"#,
                "key[0]: invalid header name `x user`: ' '",
            ),
            (r#"[{"header": ""}]"#, "key[0]: the header name is empty"),
            (
                r#"[{"header": 7}]"#,
                "key[0]: the value of \"header\" must be a string, got 7",
            ),
            (
                r#"[{"cookie": "a"}]"#,
                "key[0]: unknown key part {\"cookie\": …}",
            ),
            (
                r#"[{"header": "a", "const": "b"}]"#,
                "key[0]: unknown key part {",
            ),
            (r#"[3]"#, "key[0]: unknown key part 3"),
            (r#"["route", "route"]"#, "key[1]: \"route\" is listed twice"),
            (
                r#"[{"header": "X-User"}, {"header": "x-user"}]"#,
                "key[1]: {\"header\": \"x-user\"} is listed twice",
            ),
            (
                r#"["peer_ip","route",{"const":"1"},{"const":"2"},{"const":"3"},{"const":"4"},{"const":"5"},{"const":"6"},{"const":"7"}]"#,
                "key: 9 parts, at most 8 are allowed",
            ),
        ];
        for (key, expected) in cases {
            let err = parse(&format!(r#"{{"burst": 1, "rate": 1, "key": {key}}}"#)).unwrap_err();
            assert!(err.contains(expected), "{key}: {err}");
        }
        let long = "c".repeat(MAX_CONST_LEN + 1);
        let json = serde_json::json!({"burst": 1, "rate": 1, "key": [{"const": long}]});
        assert!(
            parse(&json.to_string())
                .unwrap_err()
                .contains("key[0]: the const text is 257 bytes long")
        );
    }
}
