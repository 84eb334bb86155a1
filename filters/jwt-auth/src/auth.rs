//! The decision, without host calls: find the token, check it against a key
//! set and the claim rules, and compute the headers sent upstream.

use serde_json::{Map, Value};

use crate::alg::Alg;
use crate::claims::{self, ClaimError};
use crate::config::Settings;
use crate::jwk::{KeySet, NoKey};
use crate::jwt::{self, Token};
use crate::verify;

/// Where the token stands in the request's headers.
#[derive(Debug, PartialEq, Eq)]
pub enum Extracted<'a> {
    /// The token, without the prefix.
    Token(&'a str),
    /// No token: no header, an empty one, or another scheme (e.g. `Basic`).
    Missing,
    /// The header appears more than once: refused rather than guessing.
    Several,
}

/// Finds the token in the values of the token header.
pub fn extract<'a>(settings: &Settings, values: &'a [String]) -> Extracted<'a> {
    let value = match values {
        [] => return Extracted::Missing,
        [value] => value.as_str(),
        _ => return Extracted::Several,
    };
    let prefix = settings.prefix.as_str();
    // The auth scheme is case-insensitive (RFC 9110 §11.1).
    let rest = match value.get(..prefix.len()) {
        Some(start) if start.eq_ignore_ascii_case(prefix) => &value[prefix.len()..],
        _ => return Extracted::Missing,
    };
    match rest.trim_matches([' ', '\t']) {
        "" => Extracted::Missing,
        token => Extracted::Token(token),
    }
}

/// Why a presented token is refused.
#[derive(Debug, PartialEq, Eq, Clone)]
pub enum Invalid {
    /// The token header appears more than once.
    Several,
    /// The token is not a well-formed JWS.
    Malformed(String),
    /// Its `alg` is not one of the configured `algorithms`.
    AlgNotAccepted(String),
    /// No key has its `kid` (or, without `kid`, verifies its `alg`).
    UnknownKey(Option<String>),
    /// The key named by its `kid` is of another type than its `alg`.
    WrongKeyType {
        /// The token's `kid`.
        kid: String,
        /// The token's `alg`.
        alg: Alg,
    },
    /// The signature does not verify.
    BadSignature,
    /// A claim check failed.
    Claims(ClaimError),
    /// A forwarded claim cannot be sent in a header (control characters).
    Unforwardable(String),
}

impl Invalid {
    /// The message sent to the client (JSON `message` and the challenge's
    /// `error_description`): printable ASCII without `"` or `\`.
    pub fn message(&self) -> String {
        let text = match self {
            Invalid::Several => "the request carries more than one token header".to_string(),
            Invalid::Malformed(why) => format!("malformed token: {why}"),
            Invalid::AlgNotAccepted(alg) => {
                format!("the token's algorithm {} is not accepted", shown(alg))
            }
            Invalid::UnknownKey(Some(kid)) => format!("no key has the token's kid {}", shown(kid)),
            Invalid::UnknownKey(None) => {
                "the token has no kid and no key verifies its algorithm".to_string()
            }
            Invalid::WrongKeyType { kid, alg } => format!(
                "the key {} is not a key for the token's algorithm {alg}",
                shown(kid)
            ),
            Invalid::BadSignature => "the token's signature is not valid".to_string(),
            Invalid::Claims(error) => error.message(),
            Invalid::Unforwardable(claim) => format!(
                "the token's {} claim cannot be sent in a header",
                shown(claim)
            ),
        };
        quotable(&text)
    }

    /// Whether a newer key set could accept the token (a key rotation).
    pub fn newer_keys_may_help(&self) -> bool {
        matches!(self, Invalid::UnknownKey(_))
    }
}

/// Attacker-chosen text in a message: at most 40 characters.
fn shown(text: &str) -> String {
    const MAX: usize = 40;
    if text.chars().count() <= MAX {
        text.to_string()
    } else {
        let mut cut: String = text.chars().take(MAX).collect();
        cut.push_str("...");
        cut
    }
}

/// `text` with every character an RFC 6750 `error_description` may not
/// hold (outside %x20-21 / %x23-5B / %x5D-7E) replaced by `?`.
fn quotable(text: &str) -> String {
    text.chars()
        .map(|c| {
            if (' '..='~').contains(&c) && c != '"' && c != '\\' {
                c
            } else {
                '?'
            }
        })
        .collect()
}

/// Parses the token and checks its `alg` against the accepted ones: done
/// before any key is looked up (or fetched).
pub fn parse<'a>(settings: &Settings, token: &'a str) -> Result<(Token<'a>, Alg), Invalid> {
    let token = jwt::parse(token).map_err(|m| Invalid::Malformed(m.0))?;
    match Alg::from_name(&token.alg) {
        Some(alg) if settings.algorithms.contains(&alg) => Ok((token, alg)),
        _ => Err(Invalid::AlgNotAccepted(token.alg)),
    }
}

/// Verifies the token's signature with `keys`, then its claims at `now`.
pub fn verify(
    settings: &Settings,
    keys: &KeySet,
    token: &Token<'_>,
    alg: Alg,
    now_unix_nanos: u64,
) -> Result<(), Invalid> {
    let candidates = keys
        .candidates(alg, token.kid.as_deref())
        .map_err(|why| match why {
            NoKey::Unknown => Invalid::UnknownKey(token.kid.clone()),
            NoKey::WrongType => Invalid::WrongKeyType {
                kid: token.kid.clone().unwrap_or_default(),
                alg,
            },
        })?;
    let input = token.signing_input.as_bytes();
    if !candidates
        .iter()
        .any(|key| verify::verify(key, input, &token.signature))
    {
        return Err(Invalid::BadSignature);
    }
    claims::check(&token.claims, &settings.rules, now_unix_nanos).map_err(Invalid::Claims)
}

/// The (header, value) pairs to set on the request from the claims, for
/// the claims present (and not null).
pub fn forwarded_headers(
    settings: &Settings,
    claims: &Map<String, Value>,
) -> Result<Vec<(String, String)>, Invalid> {
    let mut headers = Vec::new();
    for (claim, header) in &settings.forward {
        let Some(value) = claims.get(claim).and_then(header_value) else {
            continue;
        };
        if value
            .chars()
            .any(|c| (c.is_control() && c != '\t') || c == '\u{7f}')
        {
            return Err(Invalid::Unforwardable(claim.clone()));
        }
        headers.push((header.clone(), value));
    }
    Ok(headers)
}

/// A claim as a header value: strings as they are, numbers and booleans
/// as JSON writes them, arrays and objects as compact JSON; null: none.
pub fn header_value(value: &Value) -> Option<String> {
    match value {
        Value::Null => None,
        Value::String(text) => Some(text.clone()),
        other => Some(other.to_string()),
    }
}

/// The `www-authenticate` challenge: `Bearer` with the realm, and the error
/// when a token was presented (RFC 6750 §3).
pub fn challenge(settings: &Settings, invalid: Option<&Invalid>) -> String {
    let mut params = Vec::new();
    if let Some(realm) = &settings.realm {
        params.push(format!("realm=\"{realm}\""));
    }
    if let Some(invalid) = invalid {
        params.push("error=\"invalid_token\"".to_string());
        params.push(format!("error_description=\"{}\"", invalid.message()));
    }
    let scheme = settings.prefix.trim();
    let scheme = if scheme.is_empty() { "Bearer" } else { scheme };
    if params.is_empty() {
        scheme.to_string()
    } else {
        format!("{scheme} {}", params.join(", "))
    }
}

/// The message of a 401 without token.
pub fn missing_message(settings: &Settings) -> String {
    let prefix = settings.prefix.trim();
    if prefix.is_empty() {
        format!(
            "this route needs a token in the `{}` header",
            settings.header
        )
    } else {
        format!(
            "this route needs a token in the `{}` header: `{} <token>`",
            settings.header, prefix
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Config;
    use crate::testkeys::{self, mint, mint_with_header};
    use serde_json::json;

    /// 2026-01-01T00:00:00Z.
    const NOW_S: u64 = 1_767_225_600;
    const NOW: u64 = NOW_S * 1_000_000_000;

    fn settings(extra: Value) -> Settings {
        let mut config = json!({"jwks": testkeys::jwks(),
                                "algorithms": ["RS256", "ES256", "EdDSA", "HS256"]});
        for (k, v) in extra.as_object().unwrap() {
            config[k] = v.clone();
        }
        let config: Config = serde_json::from_value(config).unwrap();
        config.validate().unwrap()
    }

    fn keys(settings: &Settings) -> &KeySet {
        match &settings.source {
            crate::config::KeySource::Inline(set) => set,
            crate::config::KeySource::Remote(_) => panic!("remote"),
        }
    }

    /// The whole check of `token` under `settings`.
    fn decide(settings: &Settings, token: &str) -> Result<(), Invalid> {
        let (parsed, alg) = parse(settings, token)?;
        verify(settings, keys(settings), &parsed, alg, NOW)
    }

    fn values(values: &[&str]) -> Vec<String> {
        values.iter().map(|v| v.to_string()).collect()
    }

    #[test]
    fn extraction() {
        let s = settings(json!({}));
        assert_eq!(
            extract(&s, &values(&["Bearer abc"])),
            Extracted::Token("abc")
        );
        assert_eq!(
            extract(&s, &values(&["bearer abc"])),
            Extracted::Token("abc")
        );
        assert_eq!(
            extract(&s, &values(&["BEARER   abc  "])),
            Extracted::Token("abc")
        );
        assert_eq!(extract(&s, &[]), Extracted::Missing);
        assert_eq!(extract(&s, &values(&[""])), Extracted::Missing);
        assert_eq!(extract(&s, &values(&["Bearer"])), Extracted::Missing);
        assert_eq!(extract(&s, &values(&["Bearer  "])), Extracted::Missing);
        assert_eq!(extract(&s, &values(&["Basic YTpi"])), Extracted::Missing);
        assert_eq!(extract(&s, &values(&["Bearerabc"])), Extracted::Missing);
        assert_eq!(
            extract(&s, &values(&["Bé"])),
            Extracted::Missing,
            "no panic on UTF-8"
        );
        assert_eq!(
            extract(&s, &values(&["Bearer a", "Bearer b"])),
            Extracted::Several
        );
        let raw = settings(json!({"header": "x-token", "prefix": ""}));
        assert_eq!(extract(&raw, &values(&[" abc"])), Extracted::Token("abc"));
    }

    #[test]
    fn a_valid_token_of_each_algorithm_passes() {
        let s = settings(json!({}));
        for (alg, kid) in [
            ("RS256", "rsa"),
            ("ES256", "ec"),
            ("EdDSA", "ed"),
            ("HS256", "hmac"),
        ] {
            let token = mint(alg, kid, &json!({"sub": "alice", "exp": NOW_S + 60}));
            assert_eq!(decide(&s, &token), Ok(()), "{alg}");
        }
    }

    #[test]
    fn a_token_without_kid_is_tried_against_the_keys_of_its_algorithm() {
        let s = settings(json!({}));
        let token = mint_with_header(&json!({"alg": "EdDSA"}), &json!({"sub": "a"}));
        assert_eq!(decide(&s, &token), Ok(()));
    }

    #[test]
    fn algorithms_not_configured_are_refused_before_any_key() {
        let s = settings(
            json!({"algorithms": ["ES256"], "jwks": {"keys": [testkeys::ec_jwk("ec"), testkeys::rsa_jwk("rsa")]}}),
        );
        let token = mint("RS256", "rsa", &json!({}));
        assert_eq!(
            decide(&s, &token),
            Err(Invalid::AlgNotAccepted("RS256".into()))
        );
        // `none`, and unknown names, never pass.
        let unsigned = format!(
            "{}.{}.{}",
            testkeys::b64(br#"{"alg":"none"}"#),
            testkeys::b64(b"{}"),
            testkeys::b64(b"x")
        );
        assert_eq!(
            decide(&s, &unsigned),
            Err(Invalid::AlgNotAccepted("none".into()))
        );
        let unsigned_empty = format!(
            "{}.{}.",
            testkeys::b64(br#"{"alg":"none"}"#),
            testkeys::b64(b"{}")
        );
        assert!(matches!(
            decide(&s, &unsigned_empty),
            Err(Invalid::Malformed(_))
        ));
    }

    #[test]
    fn the_key_type_must_match_the_algorithm() {
        let s = settings(json!({}));
        // HS256 token naming the RSA key, signed with the RSA key's modulus as
        // the HMAC secret: the alg-confusion attack.
        let header = json!({"alg": "HS256", "kid": "rsa"});
        let input = format!(
            "{}.{}",
            testkeys::b64(header.to_string().as_bytes()),
            testkeys::b64(b"{\"sub\":\"admin\"}")
        );
        use hmac::Mac;
        use rsa::traits::PublicKeyParts;
        let modulus = testkeys::rsa_private().to_public_key().n().to_bytes_be();
        let mut mac = hmac::Hmac::<sha2::Sha256>::new_from_slice(&modulus).unwrap();
        mac.update(input.as_bytes());
        let forged = format!("{input}.{}", testkeys::b64(&mac.finalize().into_bytes()));
        assert_eq!(
            decide(&s, &forged),
            Err(Invalid::WrongKeyType {
                kid: "rsa".into(),
                alg: Alg::Hs256
            })
        );
        assert_eq!(
            Invalid::WrongKeyType {
                kid: "rsa".into(),
                alg: Alg::Hs256
            }
            .message(),
            "the key rsa is not a key for the token's algorithm HS256"
        );
    }

    #[test]
    fn unknown_kid_and_bad_signatures() {
        let s = settings(json!({}));
        let token = mint("ES256", "nope", &json!({}));
        let refused = decide(&s, &token).unwrap_err();
        assert_eq!(refused, Invalid::UnknownKey(Some("nope".into())));
        assert!(refused.newer_keys_may_help());

        // Signed by another EC key under the known kid.
        let header = json!({"alg": "ES256", "kid": "ec"});
        let input = format!(
            "{}.{}",
            testkeys::b64(header.to_string().as_bytes()),
            testkeys::b64(b"{}")
        );
        use p256::ecdsa::signature::Signer;
        let other: p256::ecdsa::Signature = testkeys::ec_signing(9).sign(input.as_bytes());
        let token = format!("{input}.{}", testkeys::b64(&other.to_bytes()));
        assert_eq!(decide(&s, &token), Err(Invalid::BadSignature));
        assert!(!Invalid::BadSignature.newer_keys_may_help());

        // A changed payload under a valid signature.
        let token = mint("RS256", "rsa", &json!({"sub": "alice"}));
        let parts: Vec<&str> = token.split('.').collect();
        let tampered = format!(
            "{}.{}.{}",
            parts[0],
            testkeys::b64(br#"{"sub":"admin"}"#),
            parts[2]
        );
        assert_eq!(decide(&s, &tampered), Err(Invalid::BadSignature));
    }

    #[test]
    fn claims_are_checked_after_the_signature() {
        let s = settings(json!({"issuer": "https://idp", "audiences": ["api"]}));
        let good = json!({"iss": "https://idp", "aud": "api", "exp": NOW_S + 60});
        assert_eq!(decide(&s, &mint("EdDSA", "ed", &good)), Ok(()));
        let mut expired = good.clone();
        expired["exp"] = json!(NOW_S - 31);
        assert_eq!(
            decide(&s, &mint("EdDSA", "ed", &expired)),
            Err(Invalid::Claims(ClaimError::Expired))
        );
        let mut wrong_iss = good.clone();
        wrong_iss["iss"] = json!("https://evil");
        assert_eq!(
            decide(&s, &mint("EdDSA", "ed", &wrong_iss)),
            Err(Invalid::Claims(ClaimError::Issuer))
        );
        let mut wrong_aud = good.clone();
        wrong_aud["aud"] = json!(["web"]);
        assert_eq!(
            decide(&s, &mint("EdDSA", "ed", &wrong_aud)),
            Err(Invalid::Claims(ClaimError::Audience))
        );
        // An expired token with a bad signature is refused for the signature.
        let parts: Vec<String> = mint("EdDSA", "ed", &expired)
            .split('.')
            .map(String::from)
            .collect();
        let bad = format!("{}.{}.{}", parts[0], parts[1], testkeys::b64(&[0; 64]));
        assert_eq!(decide(&s, &bad), Err(Invalid::BadSignature));
    }

    #[test]
    fn forwarded_claims_become_header_values() {
        let s = settings(json!({"forward_claims": {
            "sub": "x-user", "scope": "x-scope", "admin": "x-admin", "n": "x-n",
            "roles": "x-roles", "gone": "x-gone", "nil": "x-nil"}}));
        let claims = json!({"sub": "alice", "scope": "read write", "admin": false, "n": 42.5,
                            "roles": ["a", "b"], "nil": null});
        let headers = forwarded_headers(&s, claims.as_object().unwrap()).unwrap();
        let got: Vec<(&str, &str)> = headers
            .iter()
            .map(|(h, v)| (h.as_str(), v.as_str()))
            .collect();
        assert_eq!(
            got,
            [
                ("x-admin", "false"),
                ("x-n", "42.5"),
                ("x-roles", r#"["a","b"]"#),
                ("x-scope", "read write"),
                ("x-user", "alice"),
            ]
        );
        let bad = json!({"sub": "alice\r\nx-admin: true"});
        assert_eq!(
            forwarded_headers(&s, bad.as_object().unwrap()),
            Err(Invalid::Unforwardable("sub".into()))
        );
        let unicode = json!({"sub": "zoë\tx"});
        assert_eq!(
            forwarded_headers(&s, unicode.as_object().unwrap()).unwrap(),
            [("x-user".to_string(), "zoë\tx".to_string())]
        );
    }

    #[test]
    fn challenges() {
        let s = settings(json!({}));
        assert_eq!(challenge(&s, None), "Bearer");
        assert_eq!(
            challenge(&s, Some(&Invalid::BadSignature)),
            r#"Bearer error="invalid_token", error_description="the token's signature is not valid""#
        );
        let s = settings(json!({"realm": "api"}));
        assert_eq!(challenge(&s, None), r#"Bearer realm="api""#);
        assert_eq!(
            challenge(&s, Some(&Invalid::Claims(ClaimError::Expired))),
            r#"Bearer realm="api", error="invalid_token", error_description="the token has expired""#
        );
        assert_eq!(
            missing_message(&s),
            "this route needs a token in the `authorization` header: `Bearer <token>`"
        );
    }

    #[test]
    fn messages_with_attacker_text_are_quotable_and_short() {
        let invalid = Invalid::AlgNotAccepted("a\"b\\c\ré".into());
        assert_eq!(
            invalid.message(),
            "the token's algorithm a?b?c?? is not accepted"
        );
        let invalid = Invalid::UnknownKey(Some("k".repeat(100)));
        assert_eq!(
            invalid.message(),
            format!("no key has the token's kid {}...", "k".repeat(40))
        );
    }
}
