//! JSON Web Keys (RFC 7517, 7518 §6, RFC 8037) turned into verifying keys.
//!
//! Supported: `RSA` (2048 to 4096 bits) for RS256, `EC` on `P-256` for
//! ES256, `OKP` `Ed25519` for EdDSA, `oct` (at least 32 bytes) for HS256.

use std::fmt;

use rsa::{BigUint, RsaPublicKey, traits::PublicKeyParts};
use serde_json::{Map, Value};

use crate::alg::Alg;
use crate::b64;

/// Smallest accepted RSA modulus (RFC 7518 §3.3).
const RSA_MIN_BITS: usize = 2048;
/// Largest accepted RSA modulus: bounds the cost of one verification.
const RSA_MAX_BITS: usize = 4096;
/// Smallest HS256 secret (RFC 7518 §3.2: at least the hash's size).
const HMAC_MIN_BYTES: usize = 32;
/// JWK members that only private keys have.
const PRIVATE_MEMBERS: [&str; 7] = ["d", "p", "q", "dp", "dq", "qi", "oth"];

/// A key that verifies signatures of one algorithm.
pub enum Key {
    /// RS256.
    Rsa(RsaPublicKey),
    /// ES256.
    P256(p256::ecdsa::VerifyingKey),
    /// EdDSA (Ed25519).
    Ed25519(ed25519_dalek::VerifyingKey),
    /// HS256: the shared secret.
    Hmac(Vec<u8>),
}

impl Key {
    /// The one algorithm this key verifies.
    pub fn alg(&self) -> Alg {
        match self {
            Key::Rsa(_) => Alg::Rs256,
            Key::P256(_) => Alg::Es256,
            Key::Ed25519(_) => Alg::EdDsa,
            Key::Hmac(_) => Alg::Hs256,
        }
    }
}

// Never prints key material (an HMAC secret is one).
impl fmt::Debug for Key {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Key::Rsa(key) => write!(f, "Rsa({} bits)", key.size() * 8),
            other => write!(f, "{}", other.alg()),
        }
    }
}

/// One key of a set, with its `kid`.
#[derive(Debug)]
pub struct Jwk {
    /// The key id, if the JWK has one.
    pub kid: Option<String>,
    /// The key.
    pub key: Key,
}

/// Parses one JWK. The error says why the key cannot be used.
pub fn parse_jwk(value: &Value) -> Result<Jwk, String> {
    let Value::Object(jwk) = value else {
        return Err("a JWK must be a JSON object".into());
    };
    let kty = member(jwk, "kty")?.ok_or("`kty` is missing")?;
    let kid = member(jwk, "kid")?.map(str::to_string);
    if let Some(private) = PRIVATE_MEMBERS.iter().find(|m| jwk.contains_key(**m)) {
        return Err(format!(
            "it has `{private}`: this is a private key; give only the public key"
        ));
    }
    if let Some(usage) = member(jwk, "use")?
        && usage != "sig"
    {
        return Err(format!(
            "`use` is {usage:?}: only signature keys (\"sig\") verify tokens"
        ));
    }
    if let Some(ops) = jwk.get("key_ops") {
        let verifies = ops
            .as_array()
            .ok_or("`key_ops` must be a list")?
            .iter()
            .any(|op| op == "verify");
        if !verifies {
            return Err("`key_ops` does not include \"verify\"".into());
        }
    }
    let key = match kty {
        "RSA" => Key::Rsa(rsa_key(jwk)?),
        "EC" => Key::P256(ec_key(jwk)?),
        "OKP" => Key::Ed25519(okp_key(jwk)?),
        "oct" => Key::Hmac(oct_key(jwk)?),
        other => {
            return Err(format!(
                "`kty` {other:?} is not supported (supported: RSA, EC, OKP, oct)"
            ));
        }
    };
    if let Some(alg) = member(jwk, "alg")?
        && alg != key.alg().name()
    {
        return Err(format!(
            "`alg` is {alg:?}, but this filter verifies {kty} keys with {} only",
            key.alg()
        ));
    }
    Ok(Jwk { kid, key })
}

/// A string member of the JWK, if present.
fn member<'a>(jwk: &'a Map<String, Value>, name: &str) -> Result<Option<&'a str>, String> {
    match jwk.get(name) {
        None => Ok(None),
        Some(Value::String(text)) => Ok(Some(text)),
        Some(_) => Err(format!("`{name}` must be a string")),
    }
}

/// The bytes of a required base64url member.
fn bytes(jwk: &Map<String, Value>, name: &str) -> Result<Vec<u8>, String> {
    let text = member(jwk, name)?.ok_or_else(|| format!("`{name}` is missing"))?;
    b64::decode_lenient(text).map_err(|e| format!("`{name}` is not base64url: {e}"))
}

fn rsa_key(jwk: &Map<String, Value>) -> Result<RsaPublicKey, String> {
    let n = BigUint::from_bytes_be(&bytes(jwk, "n")?);
    let e = BigUint::from_bytes_be(&bytes(jwk, "e")?);
    let bits = n.bits();
    if !(RSA_MIN_BITS..=RSA_MAX_BITS).contains(&bits) {
        return Err(format!(
            "the RSA modulus `n` has {bits} bits; {RSA_MIN_BITS} to {RSA_MAX_BITS} are accepted"
        ));
    }
    RsaPublicKey::new_with_max_size(n, e, RSA_MAX_BITS)
        .map_err(|err| format!("not a valid RSA public key: {err}"))
}

fn ec_key(jwk: &Map<String, Value>) -> Result<p256::ecdsa::VerifyingKey, String> {
    match member(jwk, "crv")? {
        Some("P-256") => {}
        Some(other) => {
            return Err(format!(
                "`crv` {other:?} is not supported for EC keys (supported: P-256)"
            ));
        }
        None => return Err("`crv` is missing".into()),
    }
    let x = bytes(jwk, "x")?;
    let y = bytes(jwk, "y")?;
    if x.len() != 32 || y.len() != 32 {
        return Err(format!(
            "`x` and `y` of a P-256 key must be 32 bytes each, not {} and {}",
            x.len(),
            y.len()
        ));
    }
    let mut sec1 = Vec::with_capacity(65);
    sec1.push(0x04);
    sec1.extend_from_slice(&x);
    sec1.extend_from_slice(&y);
    p256::ecdsa::VerifyingKey::from_sec1_bytes(&sec1)
        .map_err(|_| "`x`, `y` is not a point of the P-256 curve".into())
}

fn okp_key(jwk: &Map<String, Value>) -> Result<ed25519_dalek::VerifyingKey, String> {
    match member(jwk, "crv")? {
        Some("Ed25519") => {}
        Some(other) => {
            return Err(format!(
                "`crv` {other:?} is not supported for OKP keys (supported: Ed25519)"
            ));
        }
        None => return Err("`crv` is missing".into()),
    }
    let x = bytes(jwk, "x")?;
    let x: [u8; 32] = x
        .as_slice()
        .try_into()
        .map_err(|_| format!("`x` of an Ed25519 key must be 32 bytes, not {}", x.len()))?;
    let key = ed25519_dalek::VerifyingKey::from_bytes(&x)
        .map_err(|_| "`x` is not a valid Ed25519 public key")?;
    if key.is_weak() {
        return Err("`x` is a weak (small-order) Ed25519 key".into());
    }
    Ok(key)
}

fn oct_key(jwk: &Map<String, Value>) -> Result<Vec<u8>, String> {
    let k = bytes(jwk, "k")?;
    if k.len() < HMAC_MIN_BYTES {
        return Err(format!(
            "the HS256 secret `k` is {} bytes; at least {HMAC_MIN_BYTES} are needed",
            k.len()
        ));
    }
    Ok(k)
}

/// Parses a JWK Set document (`{"keys": [...]}`) strictly: every key must
/// be usable, or the error names the first that is not (`keys[i]: why`).
pub fn parse_jwks_strict(value: &Value) -> Result<KeySet, String> {
    let keys = keys_array(value)?;
    let mut set = KeySet::default();
    for (index, jwk) in keys.iter().enumerate() {
        set.keys
            .push(parse_jwk(jwk).map_err(|e| format!("keys[{index}]: {e}"))?);
    }
    Ok(set)
}

/// Parses a fetched JWK Set leniently: keys that cannot be used here (other
/// key types, encryption keys, …) and shared secrets (`oct`, accepted only
/// in the config) are skipped, and why is returned for the log. Fails only
/// when the document is not a JWK Set.
pub fn parse_jwks_lenient(value: &Value) -> Result<(KeySet, Vec<String>), String> {
    let keys = keys_array(value)?;
    let mut set = KeySet::default();
    let mut skipped = Vec::new();
    for (index, jwk) in keys.iter().enumerate() {
        let kid = jwk.get("kid").and_then(Value::as_str).unwrap_or("");
        match parse_jwk(jwk) {
            Ok(Jwk {
                key: Key::Hmac(_), ..
            }) => skipped.push(format!(
                "keys[{index}] (kid {kid:?}): shared secrets (oct) are only accepted in the \
                 inline `jwks`, never from a URL"
            )),
            Ok(parsed) => set.keys.push(parsed),
            Err(why) => skipped.push(format!("keys[{index}] (kid {kid:?}): {why}")),
        }
    }
    Ok((set, skipped))
}

fn keys_array(value: &Value) -> Result<&Vec<Value>, String> {
    match value.get("keys") {
        Some(Value::Array(keys)) => Ok(keys),
        Some(_) => Err("`keys` must be a list of JWKs".into()),
        None if value.is_object() => {
            Err("`keys` is missing: a JWK Set is {\"keys\": [...]}".into())
        }
        None => Err("a JWK Set must be a JSON object {\"keys\": [...]}".into()),
    }
}

/// The keys a token can be verified with.
#[derive(Debug, Default)]
pub struct KeySet {
    keys: Vec<Jwk>,
}

/// Why no key of the set fits a token.
#[derive(Debug, PartialEq, Eq, Clone, Copy)]
pub enum NoKey {
    /// No key has the token's `kid`, or, for a token without `kid`, no key
    /// verifies its algorithm. A newer key set might have it.
    Unknown,
    /// Keys with the token's `kid` exist, but none verifies the token's
    /// algorithm.
    WrongType,
}

impl KeySet {
    /// How many keys the set has.
    pub fn len(&self) -> usize {
        self.keys.len()
    }

    /// Whether the set has no key.
    pub fn is_empty(&self) -> bool {
        self.keys.is_empty()
    }

    /// Whether some key verifies `alg`.
    pub fn has_alg(&self, alg: Alg) -> bool {
        self.keys.iter().any(|jwk| jwk.key.alg() == alg)
    }

    /// The keys to try for a token with algorithm `alg` and key id `kid`:
    /// those with that `kid` (when the token names one) that verify `alg`.
    pub fn candidates(&self, alg: Alg, kid: Option<&str>) -> Result<Vec<&Key>, NoKey> {
        let named: Vec<&Jwk> = match kid {
            Some(kid) => self
                .keys
                .iter()
                .filter(|jwk| jwk.kid.as_deref() == Some(kid))
                .collect(),
            None => self.keys.iter().collect(),
        };
        if named.is_empty() {
            return Err(NoKey::Unknown);
        }
        let fitting: Vec<&Key> = named
            .iter()
            .map(|jwk| &jwk.key)
            .filter(|key| key.alg() == alg)
            .collect();
        match (fitting.is_empty(), kid) {
            (false, _) => Ok(fitting),
            (true, Some(_)) => Err(NoKey::WrongType),
            (true, None) => Err(NoKey::Unknown),
        }
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::testkeys;
    use serde_json::json;

    #[test]
    fn every_supported_key_type_parses() {
        for (jwk, alg) in [
            (testkeys::rsa_jwk("r"), Alg::Rs256),
            (testkeys::ec_jwk("e"), Alg::Es256),
            (testkeys::ed_jwk("d"), Alg::EdDsa),
            (testkeys::oct_jwk("h"), Alg::Hs256),
        ] {
            let parsed = parse_jwk(&jwk).unwrap_or_else(|e| panic!("{jwk}: {e}"));
            assert_eq!(parsed.key.alg(), alg);
            assert_eq!(parsed.kid.as_deref(), jwk["kid"].as_str());
        }
    }

    #[test]
    fn matching_alg_and_use_are_accepted_others_refused() {
        let mut jwk = testkeys::ec_jwk("e");
        jwk["alg"] = json!("ES256");
        jwk["use"] = json!("sig");
        jwk["key_ops"] = json!(["verify"]);
        assert!(parse_jwk(&jwk).is_ok());

        jwk["alg"] = json!("ES384");
        assert_eq!(
            parse_jwk(&jwk).unwrap_err(),
            "`alg` is \"ES384\", but this filter verifies EC keys with ES256 only"
        );
        let mut jwk = testkeys::rsa_jwk("r");
        jwk["alg"] = json!("HS256");
        assert!(
            parse_jwk(&jwk)
                .unwrap_err()
                .starts_with("`alg` is \"HS256\"")
        );
        let mut jwk = testkeys::rsa_jwk("r");
        jwk["use"] = json!("enc");
        assert_eq!(
            parse_jwk(&jwk).unwrap_err(),
            "`use` is \"enc\": only signature keys (\"sig\") verify tokens"
        );
        let mut jwk = testkeys::rsa_jwk("r");
        jwk["key_ops"] = json!(["sign"]);
        assert_eq!(
            parse_jwk(&jwk).unwrap_err(),
            "`key_ops` does not include \"verify\""
        );
    }

    #[test]
    fn malformed_and_unsupported_keys_say_why() {
        let cases = [
            (json!("x"), "a JWK must be a JSON object"),
            (json!({}), "`kty` is missing"),
            (json!({"kty": 1}), "`kty` must be a string"),
            (
                json!({"kty": "EC", "crv": "P-384", "x": "AA", "y": "AA"}),
                "`crv` \"P-384\" is not supported for EC keys (supported: P-256)",
            ),
            (
                json!({"kty": "OKP", "crv": "X25519", "x": "AA"}),
                "`crv` \"X25519\" is not supported for OKP keys (supported: Ed25519)",
            ),
            (
                json!({"kty": "OKP", "crv": "Ed25519", "x": "AAAA"}),
                "`x` of an Ed25519 key must be 32 bytes, not 3",
            ),
            (
                json!({"kty": "EC", "crv": "P-256", "x": "AA", "y": "AA"}),
                "`x` and `y` of a P-256 key must be 32 bytes each, not 1 and 1",
            ),
            (
                json!({"kty": "oct", "k": "c2hvcnQ"}),
                "the HS256 secret `k` is 5 bytes; at least 32 are needed",
            ),
            (json!({"kty": "oct"}), "`k` is missing"),
            (
                json!({"kty": "RSA", "n": "AQAB", "e": "AQAB"}),
                "the RSA modulus `n` has 17 bits; 2048 to 4096 are accepted",
            ),
            (
                json!({"kty": "oct", "k": "!!"}),
                "`k` is not base64url: Invalid symbol 33, offset 0.",
            ),
            (
                json!({"kty": "PQC"}),
                "`kty` \"PQC\" is not supported (supported: RSA, EC, OKP, oct)",
            ),
        ];
        for (jwk, expected) in cases {
            assert_eq!(parse_jwk(&jwk).unwrap_err(), expected, "{jwk}");
        }
    }

    #[test]
    fn points_off_the_curve_and_weak_ed25519_keys_are_refused() {
        let mut jwk = testkeys::ec_jwk("e");
        // Flip the last bit of y: no longer on the curve.
        let mut y = b64::decode_lenient(jwk["y"].as_str().unwrap()).unwrap();
        y[31] ^= 1;
        jwk["y"] = json!(testkeys::b64(&y));
        assert_eq!(
            parse_jwk(&jwk).unwrap_err(),
            "`x`, `y` is not a point of the P-256 curve"
        );
        // The identity point (small order).
        let mut identity = [0u8; 32];
        identity[0] = 1;
        let jwk = json!({"kty": "OKP", "crv": "Ed25519", "x": testkeys::b64(&identity)});
        assert_eq!(
            parse_jwk(&jwk).unwrap_err(),
            "`x` is a weak (small-order) Ed25519 key"
        );
    }

    #[test]
    fn private_keys_are_refused() {
        let mut jwk = testkeys::ec_jwk("e");
        jwk["d"] = json!("AAAA");
        assert_eq!(
            parse_jwk(&jwk).unwrap_err(),
            "it has `d`: this is a private key; give only the public key"
        );
    }

    #[test]
    fn strict_sets_name_the_bad_key_lenient_sets_skip_it() {
        let doc = json!({"keys": [testkeys::ec_jwk("good"), {"kty": "EC", "kid": "bad"},
                                  testkeys::oct_jwk("secret")]});
        assert_eq!(
            parse_jwks_strict(&doc).unwrap_err(),
            "keys[1]: `crv` is missing"
        );
        let (set, skipped) = parse_jwks_lenient(&doc).unwrap();
        assert_eq!(set.len(), 1);
        assert_eq!(
            skipped,
            [
                "keys[1] (kid \"bad\"): `crv` is missing",
                "keys[2] (kid \"secret\"): shared secrets (oct) are only accepted in the inline \
                 `jwks`, never from a URL"
            ]
        );
        for bad in [json!([]), json!({}), json!({"keys": {}})] {
            assert!(parse_jwks_lenient(&bad).is_err(), "{bad}");
            assert!(parse_jwks_strict(&bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn candidates_by_kid_and_algorithm() {
        let doc = json!({"keys": [testkeys::rsa_jwk("a"), testkeys::ec_jwk("b"),
                                  testkeys::ed_jwk("b"), testkeys::oct_jwk("c")]});
        let set = parse_jwks_strict(&doc).unwrap();
        assert_eq!(set.candidates(Alg::Rs256, Some("a")).unwrap().len(), 1);
        // Two keys share kid "b": the one of the right type is chosen.
        let keys = set.candidates(Alg::EdDsa, Some("b")).unwrap();
        assert_eq!(keys.len(), 1);
        assert_eq!(keys[0].alg(), Alg::EdDsa);
        assert_eq!(
            set.candidates(Alg::Rs256, Some("zz")).unwrap_err(),
            NoKey::Unknown
        );
        assert_eq!(
            set.candidates(Alg::Hs256, Some("a")).unwrap_err(),
            NoKey::WrongType,
            "an HS256 token naming an RSA key"
        );
        // Without kid: every key of the algorithm.
        assert_eq!(set.candidates(Alg::Es256, None).unwrap().len(), 1);
        let rsa_only = parse_jwks_strict(&json!({"keys": [testkeys::rsa_jwk("a")]})).unwrap();
        assert_eq!(
            rsa_only.candidates(Alg::Es256, None).unwrap_err(),
            NoKey::Unknown
        );
        assert!(rsa_only.has_alg(Alg::Rs256));
        assert!(!rsa_only.has_alg(Alg::Hs256));
    }

    #[test]
    fn debug_never_shows_secrets() {
        let set = parse_jwks_strict(&json!({"keys": [testkeys::oct_jwk("h")]})).unwrap();
        let printed = format!("{set:?}");
        assert!(printed.contains("HS256"), "{printed}");
        assert!(!printed.contains(testkeys::HMAC_SECRET_B64), "{printed}");
    }
}
