//! Fixed test keys and a token minter, for the unit tests only: the same
//! crates' signing side, with keys written here (no randomness).

use rsa::pkcs8::DecodePrivateKey;
use rsa::signature::{SignatureEncoding, Signer as _};
use rsa::traits::PublicKeyParts;
use serde_json::{Value, json};
use sha2::Sha256;

/// A 2048-bit RSA key made with `openssl genpkey` for these tests only.
const RSA_PEM: &str = "\
-----BEGIN PRIVATE KEY-----\n\
MIIEvgIBADANBgkqhkiG9w0BAQEFAASCBKgwggSkAgEAAoIBAQDGCxE67kxYWzzr\n\
L3M7hCtxtwpt2NKRK2o2jMz6cNz/ZoYApCnkD+b2Yk4frFXH8JSmRaNRxPZnV8Yw\n\
N6Br/1pW1rwk0xXe9n2pMxoG2gInQtJ7C9tBCuPfmwyiaFJjY5kkjbAnT6+Nppb4\n\
OJ2Jbdrjwo4J8drRvdAL3DdjqTsl6ti4TQHIHuY/nDvQvSHMTaawJwwOjtAZwks7\n\
k1Kco1GEKWgD9I/UrzulIK7oCuJAarK/FgAVuatufRcbm8sOv+H0fQp77jhXXr8O\n\
rYczVtn/DM1f+adcWhuPRyhwx7ZUPmXvGfRMpFyHY6LOOmSviSvxX4ealsHYgMDM\n\
SO+TFF3JAgMBAAECggEAAtTe+i29R2aXe9WL9eEy8ND/gNMgrVPouviRbJCC+TBQ\n\
yVR18gChEdxzQe7oGfABfa8rChm0YEEMZvK3l0/4Yr3DeC8/99pGdV8iBZSwnI7+\n\
E1AziLNRxsf8hF//O4/rgYiBJKxYPok2TXhXfPHQ90Bz6XljUVsVFX8ghwKSITUl\n\
zSxgWK62R1wDg0YVwsbuXD/8bA0NtHxYiU421MjbyyWfJp0SOICzCJTCieaT8fk0\n\
biArPcFrD9JHzhhmPWf4jN5Ue63W2GcmPB891lxYXJ32M9KezOz6z81EEfgOwVlQ\n\
FgDW56HtgLaZwTD9mcschOxX2W0bS6ewwsfvmL+PDQKBgQD2UjUX0gc4Nm8vdisU\n\
mA7JeXu8sVreuQMeAfxFcR9baZ6HpM+h4ckH3BQ8EvLh4QJyNhlGcILgyP0vHWmj\n\
jw3XBpZmrd6tLjmMgHXfLjbCA3AXtpV1fUmD+lyNMsEiMqRRQWt0oPn6PV2vu3LY\n\
RdbDoIJDmRkVjSvsRLZ5g7xBXQKBgQDN0zkd7EcJi573FVz0DnxmAAUB06d1OxW7\n\
XF1aiJh0DQO50Sb8xd1V/eEwmp9wzmp+9rwjjC5bv/UT4+4rr72aKBz50TlL9NBY\n\
3Mxf0LFInpxFj02OylHyYM7m1qCUP3Q2u+GovvDI0A7UEjBW4dmp+MrgjrunQBoQ\n\
PzNIIi4rXQKBgQDwoIJJUN3IpjSbst6G8byQSWL9hGx241oOOHZPCCFP1bAOZoyH\n\
YeBXE0GZJhGrY3pWRE8QptzT5sSfACawpxEoG8FVcUj0+REzFlMPwT+w7FbWc4Ey\n\
E0B781nyfcB6PeqTjksA1jkdolEhWQbqC9+vn99hVfBRQ2XDG6T+tBh16QKBgQCw\n\
Fwblr9CyvO36jB9jecU56shd4LuC01LrYcFIhFaR6tSGNAc7+Pg86qCvWYoRE7gO\n\
+X7KltLOkjLVmoqYe5kl+y2XGUYA0ukxLW34h241J+WgqVJ8WGG1kNdSrMrjKkp9\n\
zU3pdbpAw6f8DbenjUAQaBcB+XtYQsJJphh0nTGMzQKBgB4DmECDmSlbH2nYHlYS\n\
ISHfpe81epRcuZWPtUJCBz9S3vA2MznjVsSEZW05jZU0VdYTnYc4MUYD/4fqacLW\n\
lvtgzpWmpArizxfFYVciTs6OfdpJbEI3/y2YovVAGLppELRjZytNEwvtIxgd6ecA\n\
ONHPRVFCNSVlhoEM9ZDVF5Kb\n\
-----END PRIVATE KEY-----\n";

/// The HS256 secret (32 bytes), base64url.
pub const HMAC_SECRET_B64: &str = "dGVzdC1zZWNyZXQtb2YtdGhpcnR5LXR3by1ieXRlcyE";

/// The test RSA private key.
pub fn rsa_private() -> rsa::RsaPrivateKey {
    rsa::RsaPrivateKey::from_pkcs8_pem(RSA_PEM).expect("the test key parses")
}

/// The ES256 key; `seed` picks one of several fixed keys.
pub fn ec_signing(seed: u8) -> p256::ecdsa::SigningKey {
    p256::ecdsa::SigningKey::from_slice(&[seed; 32]).expect("a valid scalar")
}

/// The Ed25519 key; `seed` picks one of several fixed keys.
pub fn ed_signing(seed: u8) -> ed25519_dalek::SigningKey {
    ed25519_dalek::SigningKey::from_bytes(&[seed; 32])
}

/// The HS256 secret.
pub fn hmac_secret() -> Vec<u8> {
    crate::b64::decode_strict(HMAC_SECRET_B64).unwrap()
}

/// base64url without padding.
pub fn b64(bytes: &[u8]) -> String {
    use base64::Engine;
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes)
}

/// The public JWK of the RSA key.
pub fn rsa_jwk(kid: &str) -> Value {
    let public = rsa_private().to_public_key();
    json!({"kty": "RSA", "kid": kid, "n": b64(&public.n().to_bytes_be()),
           "e": b64(&public.e().to_bytes_be())})
}

/// The public JWK of `ec_signing(1)`.
pub fn ec_jwk(kid: &str) -> Value {
    ec_jwk_of(&ec_signing(1), kid)
}

/// The public JWK of an ES256 key.
pub fn ec_jwk_of(key: &p256::ecdsa::SigningKey, kid: &str) -> Value {
    let point = key.verifying_key().to_encoded_point(false);
    json!({"kty": "EC", "crv": "P-256", "kid": kid, "x": b64(point.x().unwrap()),
           "y": b64(point.y().unwrap())})
}

/// The public JWK of `ed_signing(1)`.
pub fn ed_jwk(kid: &str) -> Value {
    let key = ed_signing(1);
    json!({"kty": "OKP", "crv": "Ed25519", "kid": kid,
           "x": b64(key.verifying_key().as_bytes())})
}

/// The HS256 JWK.
pub fn oct_jwk(kid: &str) -> Value {
    json!({"kty": "oct", "kid": kid, "k": HMAC_SECRET_B64})
}

/// A JWK Set of the four test keys, with kids `rsa`, `ec`, `ed`, `hmac`.
pub fn jwks() -> Value {
    json!({"keys": [rsa_jwk("rsa"), ec_jwk("ec"), ed_jwk("ed"), oct_jwk("hmac")]})
}

/// Signs `input` with the test key of algorithm `alg` (a JOSE name).
pub fn sign(alg: &str, input: &[u8]) -> Vec<u8> {
    match alg {
        "RS256" => rsa::pkcs1v15::SigningKey::<Sha256>::new(rsa_private())
            .sign(input)
            .to_vec(),
        "ES256" => {
            let signature: p256::ecdsa::Signature = ec_signing(1).sign(input);
            signature.to_bytes().to_vec()
        }
        "EdDSA" => ed_signing(1).sign(input).to_bytes().to_vec(),
        "HS256" => {
            use hmac::Mac;
            let mut mac = hmac::Hmac::<Sha256>::new_from_slice(&hmac_secret()).unwrap();
            mac.update(input);
            mac.finalize().into_bytes().to_vec()
        }
        other => panic!("no test key for {other}"),
    }
}

/// A compact JWS of `claims` with `header`, signed by the test key of
/// `header.alg`.
pub fn mint_with_header(header: &Value, claims: &Value) -> String {
    let input = format!(
        "{}.{}",
        b64(header.to_string().as_bytes()),
        b64(claims.to_string().as_bytes())
    );
    let alg = header["alg"].as_str().expect("the header has alg");
    let signature = sign(alg, input.as_bytes());
    format!("{input}.{}", b64(&signature))
}

/// A compact JWS of `claims`, `{"alg": alg, "kid": kid}`, signed by the
/// test key of `alg`.
pub fn mint(alg: &str, kid: &str, claims: &Value) -> String {
    mint_with_header(&json!({"alg": alg, "kid": kid, "typ": "JWT"}), claims)
}
