//! Compact JWS parsing (RFC 7515 §7.1): `header.payload.signature`, each
//! base64url without padding, header and payload JSON objects.
//!
//! Parsing checks only the form. The signature is checked by
//! [`crate::verify`], the claims by [`crate::claims`].

use serde_json::{Map, Value};

use crate::b64;

/// Longest token accepted, in bytes: bounds the work on a hostile header.
pub const MAX_TOKEN_BYTES: usize = 16 * 1024;

/// A token whose parts decoded.
#[derive(Debug)]
pub struct Token<'a> {
    /// The header's `alg`, as written.
    pub alg: String,
    /// The header's `kid`, if any.
    pub kid: Option<String>,
    /// The payload's claims.
    pub claims: Map<String, Value>,
    /// What the signature covers: `header.payload` as sent.
    pub signing_input: &'a str,
    /// The decoded signature.
    pub signature: Vec<u8>,
}

/// Why a token is malformed. The message goes to the client.
#[derive(Debug, PartialEq, Eq, Clone)]
pub struct Malformed(pub String);

impl Malformed {
    fn new(message: impl Into<String>) -> Malformed {
        Malformed(message.into())
    }
}

/// Parses a compact JWS.
pub fn parse(token: &str) -> Result<Token<'_>, Malformed> {
    if token.len() > MAX_TOKEN_BYTES {
        return Err(Malformed::new(format!(
            "the token is longer than {MAX_TOKEN_BYTES} bytes"
        )));
    }
    let parts: Vec<&str> = token.split('.').collect();
    let [header, payload, signature] = parts.as_slice() else {
        return Err(Malformed::new(if parts.len() == 5 {
            "the token is encrypted (JWE); only signed tokens (JWS) are accepted".to_string()
        } else {
            format!(
                "a JWT has 3 parts separated by dots, this token has {}",
                parts.len()
            )
        }));
    };
    let signing_input = &token[..header.len() + 1 + payload.len()];
    let header_json = decode_part(header, "header")?;
    let header = json_object(&header_json, "header")?;
    let payload_json = decode_part(payload, "payload")?;
    let claims = json_object(&payload_json, "payload")?;
    let signature = decode_part(signature, "signature")?;

    let alg = match header.get("alg") {
        Some(Value::String(alg)) => alg.clone(),
        Some(_) => return Err(Malformed::new("the header's alg is not a string")),
        None => return Err(Malformed::new("the header has no alg")),
    };
    let kid = match header.get("kid") {
        None => None,
        Some(Value::String(kid)) => Some(kid.clone()),
        Some(_) => return Err(Malformed::new("the header's kid is not a string")),
    };
    // RFC 7515 §4.1.11: extensions marked critical must be understood, and
    // this filter understands none (e.g. b64=false, RFC 7797).
    if header.contains_key("crit") {
        return Err(Malformed::new(
            "the header lists critical extensions (crit), which are not supported",
        ));
    }
    Ok(Token {
        alg,
        kid,
        claims,
        signing_input,
        signature,
    })
}

fn decode_part(text: &str, what: &str) -> Result<Vec<u8>, Malformed> {
    if text.is_empty() {
        return Err(Malformed::new(format!("the token's {what} is empty")));
    }
    b64::decode_strict(text)
        .map_err(|_| Malformed::new(format!("the token's {what} is not base64url")))
}

fn json_object(bytes: &[u8], what: &str) -> Result<Map<String, Value>, Malformed> {
    match serde_json::from_slice(bytes) {
        Ok(Value::Object(map)) => Ok(map),
        Ok(_) => Err(Malformed::new(format!(
            "the token's {what} is not a JSON object"
        ))),
        Err(_) => Err(Malformed::new(format!("the token's {what} is not JSON"))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testkeys::{b64, mint, mint_with_header};
    use serde_json::json;

    fn err(token: &str) -> String {
        parse(token).unwrap_err().0
    }

    #[test]
    fn a_minted_token_parses_into_its_parts() {
        let token = mint("ES256", "k1", &json!({"sub": "alice", "n": 7}));
        let parsed = parse(&token).unwrap();
        assert_eq!(parsed.alg, "ES256");
        assert_eq!(parsed.kid.as_deref(), Some("k1"));
        assert_eq!(parsed.claims["sub"], "alice");
        assert_eq!(parsed.claims["n"], 7);
        assert_eq!(parsed.signature.len(), 64);
        let last_dot = token.rfind('.').unwrap();
        assert_eq!(parsed.signing_input, &token[..last_dot]);
    }

    #[test]
    fn kid_is_optional() {
        let token = mint_with_header(&json!({"alg": "HS256"}), &json!({}));
        let parsed = parse(&token).unwrap();
        assert_eq!(parsed.kid, None);
        assert_eq!(parsed.alg, "HS256");
    }

    #[test]
    fn the_form_is_checked() {
        let h = b64(br#"{"alg":"ES256"}"#);
        let p = b64(br#"{"sub":"a"}"#);
        let s = b64(&[1; 64]);
        assert_eq!(
            err("abc"),
            "a JWT has 3 parts separated by dots, this token has 1"
        );
        assert_eq!(
            err("a.b.c.d"),
            "a JWT has 3 parts separated by dots, this token has 4"
        );
        assert_eq!(
            err("a.b.c.d.e"),
            "the token is encrypted (JWE); only signed tokens (JWS) are accepted"
        );
        assert_eq!(err(&format!("{h}.{p}.")), "the token's signature is empty");
        assert_eq!(err(&format!(".{p}.{s}")), "the token's header is empty");
        assert_eq!(err(&format!("{h}..{s}")), "the token's payload is empty");
        assert_eq!(
            err(&format!("{h}=.{p}.{s}")),
            "the token's header is not base64url"
        );
        assert_eq!(
            err(&format!("{h}.{p}.{s}+")),
            "the token's signature is not base64url"
        );
        assert_eq!(
            err(&format!("{}.{p}.{s}", b64(b"{nope"))),
            "the token's header is not JSON"
        );
        assert_eq!(
            err(&format!("{h}.{}.{s}", b64(b"[1]"))),
            "the token's payload is not a JSON object"
        );
        assert_eq!(
            err(&format!("{}.{p}.{s}", b64(br#"{"typ":"JWT"}"#))),
            "the header has no alg"
        );
        assert_eq!(
            err(&format!("{}.{p}.{s}", b64(br#"{"alg":1}"#))),
            "the header's alg is not a string"
        );
        assert_eq!(
            err(&format!("{}.{p}.{s}", b64(br#"{"alg":"ES256","kid":3}"#))),
            "the header's kid is not a string"
        );
        assert_eq!(
            err(&format!(
                "{}.{p}.{s}",
                b64(br#"{"alg":"ES256","crit":["b64"],"b64":false}"#)
            )),
            "the header lists critical extensions (crit), which are not supported"
        );
        assert!(parse(&format!("{h}.{p}.{s}")).is_ok());
    }

    #[test]
    fn garbage_never_panics() {
        let long = "a".repeat(MAX_TOKEN_BYTES + 1);
        for token in [
            "",
            ".",
            "..",
            "...",
            "é.é.é",
            "\u{0}.\u{0}.\u{0}",
            "Bearer",
            "a.b.c",
            &long,
        ] {
            assert!(parse(token).is_err(), "{token:?}");
        }
        assert_eq!(
            err(&long),
            format!("the token is longer than {MAX_TOKEN_BYTES} bytes")
        );
    }
}
