//! Test JWTs: fixed keys for HS256, ES256, EdDSA and RS256, their JWKS, and
//! tokens signed with them (for the `jwt-auth` filter's tests). The keys are
//! made for tests and written here; nothing is random.
//!
//! ```
//! use weft_test_harness::jwt::{self, Alg};
//!
//! let key = jwt::key(Alg::Es256, "k1");
//! let token = key.sign(&serde_json::json!({"sub": "alice", "exp": jwt::now() + 300}));
//! let jwks = jwt::jwks(&[&key]);
//! assert_eq!(jwks["keys"][0]["kid"], "k1");
//! assert_eq!(token.split('.').count(), 3);
//! ```

use std::time::{SystemTime, UNIX_EPOCH};

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use hmac::Mac;
use rsa::pkcs8::DecodePrivateKey;
use rsa::signature::{SignatureEncoding, Signer};
use rsa::traits::PublicKeyParts;
use serde_json::{Value, json};
use sha2::Sha256;

/// A signature algorithm.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Alg {
    /// HMAC SHA-256 with a shared secret.
    Hs256,
    /// ECDSA P-256 SHA-256.
    Es256,
    /// Ed25519.
    EdDsa,
    /// RSASSA-PKCS1-v1_5 SHA-256.
    Rs256,
}

impl Alg {
    /// Every algorithm.
    pub const ALL: [Alg; 4] = [Alg::Hs256, Alg::Es256, Alg::EdDsa, Alg::Rs256];

    /// The JOSE name, as in a token's `alg`.
    pub fn name(self) -> &'static str {
        match self {
            Alg::Hs256 => "HS256",
            Alg::Es256 => "ES256",
            Alg::EdDsa => "EdDSA",
            Alg::Rs256 => "RS256",
        }
    }
}

/// A 2048-bit RSA key made with `openssl genpkey` for these tests only.
const RSA_PEM_1: &str = "\
-----BEGIN PRIVATE KEY-----\n\
MIIEvAIBADANBgkqhkiG9w0BAQEFAASCBKYwggSiAgEAAoIBAQDAnRcHBi+9gVFr\n\
kHKkjDyUMF9pa9ZQEVEXK1g3VywYqjl2Zq/svqZG1c4xHcIeWWyoE5g9eZXCNg2g\n\
O/3Bo/kcHzJXKCVOtztOpEKsQoUzy4E1eSCpksy5RA5y8ZGp2b9xMPhVis77gWRO\n\
hEmPhsKilAFk2Mww4ZAEg0JCQLYgD6A5gU6KAldCVgGSgUXL6+bc6BrkaQriaa97\n\
Q5UaiAAjJRck3DD8ACuS+j0/t0gwvfJ4sjo+aR6eLOQILLME4bBlvaqLgfLFkcY4\n\
xRd7SA3TqRKhGEXowtVR/qvduB5zFMtSzU66LsucplHNimGCFK8nBkEtyP3hglgE\n\
PG/aaGCnAgMBAAECggEACuMWNnRtZbXAh2bubp8/8VRb9ZZ90krC8vSlPi40NN9c\n\
83SnGaebuGyaBKwHmTWOxF/50/JiZPbZ2vu+bR/lPbyvA2l71QYwWP1EiNNoZLQV\n\
BT5nz+NB+nApV5U7RDF69l1BPCc7adCM0zn7pRwwi4X4H4jNidnGDSs/fIUx23/4\n\
DHp4zGBmVMa5Q5ZAPgIdIx4bqu/mbQ56f4UaXCMnH8NQeRrDBHUGPHP+Suyc/1sJ\n\
uZ6v4a1HtOFkEyHzBLQ7Ek5Blrfmz7j2aPOj0khdE5PLwkoA59NXCgtL8XH0Z8Ka\n\
/MYURslwI+/vA8nilJN83lgvuF0npV81RNLhC3XeGQKBgQD1GLA9iWSN6mkmi5WL\n\
2hHywqwlZOHV8SUu5Iq7whPCxE+4icFXRWoECm8M/iVLP8hSoinYYoHOeN9+8Avi\n\
SSlsCE1Cyt3CL/WOJG6NOrzAXFgmyAR5a+KDsL78ABQcOC9H5w7k2aSeh5TGuv4v\n\
AcmGLT0rPwIdNPWf3dsaDddAdQKBgQDJLrHJjhE3rJQ7pFY75Xq8Pzx7CQOrMI3n\n\
KyXo/lMSnw0CJ/ozK5V8CvVJiEwrzH2rfrDSbyl+BcJaKXkClZPuftd/wgM/Agie\n\
Ip3xzf73Ce0yp65tMwdUC49kiFhYc2c/OxwqvpTM/vLisqfE3RQG6r03ti+TcZZf\n\
jQq0nXy5KwKBgHjUbAZaVpVUK/SRue8RWenZKS7iNifX02Hzz6VSv5U0XKz4VLWm\n\
heZqEmdQX6hiUGrUgVao8Z+NnXkh9GnhcadNzHESPBNAu4kQ0uOTQnx+ygKMdxA5\n\
LJmJqA3qJ//lfwGumnweA/cXljQG+crI0cXxRYetb2hgtHrUz/BfRHAFAoGAYj6P\n\
S6I4/jsk2EtUYUObQDqRSnQIepznbzA+/xzTbJCHRbpIEJ0EDuM7DYGl0O23oPvp\n\
VZo7ZPNjCayfD4gECb+fdSBFfYt8sdytzNuP2wvZ7Za9M05sEbrjd3Ct0+PnU5WG\n\
F8mh2MnXyqT8EML1eLtBU+eALDyX9mlmBPWzZqkCgYBzLm1IR91qCigHPz0Kcfqd\n\
oj6h2xbl5YKg5nRiDQ8/QvOjEs8l2XI/CRgKm+VwS/frg/ZrD8t6gLcVfx3HhNjS\n\
NQPVb4ia+JIGCXUbqGKyw5zmqZPRqX7UbRxR+J+oN57S7LdSzjH7E9QHfwvzrfSL\n\
e01L0V+T2zmSRS9dlyk3wQ==\n\
-----END PRIVATE KEY-----\n";

/// Another one, for "signed by another key".
const RSA_PEM_2: &str = "\
-----BEGIN PRIVATE KEY-----\n\
MIIEvQIBADANBgkqhkiG9w0BAQEFAASCBKcwggSjAgEAAoIBAQDCcE8scQw5AHbh\n\
Kl9Q/ROq+DSHqC8zdnxrKgrctM0MljXyOwEQ13dyzWkWawAEuCYIHO6hGQHVd96L\n\
TonjdGlfbqA5cTvuJzBMW7cFO8p2yJQR7FY6Uq/Ag5XV0aCwhhyyD0l0oUjGvd66\n\
aOP4FXiCFX0nCsTPjYKS4wuHyZ/+Zrd3oYZuwCE35vQq3xqhc5czh29Ylc4ARmZb\n\
b9hRcx9QY8XuS7vVZBOmQhrGzqddfUIQNC9tAiSwx03d12sps4yQoHvFPgdVjKkm\n\
qHnsTaX/u/+fucr/RVGsPyCagEJD7Wjd9PNtreytz9cwxx+wTDKrryzDgPYQ29EX\n\
DSSTvqrXAgMBAAECggEABE1hbcPBQrPZJm73QEllteZpnOu0UI35YwRPsBsrJsaz\n\
pcPpIVlE8FiUwa/lhoqKWHIOG2/8U5/dCqBIlskMvSrWBzLoxVfpwHM5Sn6wFEeo\n\
j/j2pUBkPLXsp19M10Iwaz7dyqq/XykRBj456KjOS3qQsHjMMdBgUyW3K7WqD56f\n\
KCyA2naLK8qZZJLy5I9DIFZdpVSOLTnKZBYVPM+MKFVPpjI+s2rOT+PjiaG0q5k/\n\
ZP9hHQPU9souUbK3jSepgICRrt0jHZ7dsBzse+wfd6kZ6oPdw3p0NEt1blkaMyr/\n\
MTTL0X/ABKWhnpNcK7Jax50xu8T7xCee8a8pKzWbKQKBgQD80MTmtHN2g1oKy6Z8\n\
cKd0WK+98cDl28j5mlaY3qnpQgarwbPFuyjvi7NtihW9v0oseVDETqBW2yYH9iK0\n\
Mr4WC670mOK+s7OkVAOlHpYxgX6rAzsVuFgvfVisNQBTSDgNvtAYmOkvb5YuHcfd\n\
p0DS8JyPKAmMvBpOdXd/lvbPQwKBgQDE40xAB8TWExQCXt3aji2pCSVfbIYZ0+Bp\n\
qD2i0aUBvk8joyXbfDfkuKkuE7j1FBUsEIYbtHgDKC9d+ZGyTJncaWQWlUqOMRoW\n\
XNgAGisO2Gi3SRHuVgzyYr6G6IO9gTwRyIFHLGhbkSRyzRx4hEsFJw9RWWSfmhs2\n\
pXMqwfRq3QKBgCR8NI5e6HLoDeyU61f2IhSGYAZ3hzElAOIUxf6V08uX/cJ31+vn\n\
UMcRUDm0veJ+YsP8Vg2ek0E1q01m1idPU2N3GC6wibif0oMapNQFkANg/tjLRJGj\n\
4wYnfs6Lb5qVR5GkQf/qwWxZHEFXhuqUIqTOmKmIS6iF1P4Rscc2EDRlAoGAJDgM\n\
FttXAmqQC7+X4FS3YZklHuC/6pBngAhLDmCykheIR24D0NSRE6pEtQ07wRnoqyp/\n\
ASm5yhriW89FVh9xTnK0ztK33GB8BBEgSySFNz3oRY9TlRyPVSeFFRxA3+OeQUc5\n\
QPaSXAXfRp8k1abAhjohPz3KnPGkf/D/tqXnaKECgYEA9PLaLQmorDDr8BpCLwBS\n\
TV2Bh71l+5zr24Gvd25maxU8CV8tOPlPF5zMxM2qdYm0DY0pA99pT8nnMpq/fFvK\n\
Lixsap7+JSL8Exuxnpx39I24NdLXhsxRGVVbbFr4xdwT0IYh1l+SVmfJMa+n1luY\n\
AXBpRwE5Zdhwu3ucyeflQhY=\n\
-----END PRIVATE KEY-----\n";

/// A private key and its key id.
#[derive(Clone)]
pub struct Key {
    alg: Alg,
    kid: String,
    secret: Secret,
}

#[derive(Clone)]
enum Secret {
    Hmac(Vec<u8>),
    Ec(p256::ecdsa::SigningKey),
    Ed(ed25519_dalek::SigningKey),
    Rsa(Box<rsa::RsaPrivateKey>),
}

/// The test key of `alg`, with key id `kid`.
pub fn key(alg: Alg, kid: &str) -> Key {
    variant(alg, kid, 1)
}

/// Another fixed key of `alg` (not the one [`key`] returns), with key id
/// `kid`: its signatures do not verify with [`key`]'s JWK.
pub fn other_key(alg: Alg, kid: &str) -> Key {
    variant(alg, kid, 2)
}

fn variant(alg: Alg, kid: &str, n: u8) -> Key {
    let secret = match alg {
        Alg::Hs256 => Secret::Hmac(format!("weft-test-hmac-secret-{n}-of-32-bytes!!").into_bytes()),
        Alg::Es256 => Secret::Ec(
            p256::ecdsa::SigningKey::from_slice(&[0x40 + n; 32]).expect("a valid P-256 scalar"),
        ),
        Alg::EdDsa => Secret::Ed(ed25519_dalek::SigningKey::from_bytes(&[0x50 + n; 32])),
        Alg::Rs256 => Secret::Rsa(Box::new(
            rsa::RsaPrivateKey::from_pkcs8_pem(if n == 1 { RSA_PEM_1 } else { RSA_PEM_2 })
                .expect("the test RSA key parses"),
        )),
    };
    Key {
        alg,
        kid: kid.to_string(),
        secret,
    }
}

impl Key {
    /// Its algorithm.
    pub fn alg(&self) -> Alg {
        self.alg
    }

    /// Its key id.
    pub fn kid(&self) -> &str {
        &self.kid
    }

    /// The same key under another key id.
    pub fn with_kid(&self, kid: &str) -> Key {
        Key {
            kid: kid.to_string(),
            ..self.clone()
        }
    }

    /// The JWK that verifies its signatures: the public key, or for HS256
    /// the shared secret (`kty: oct`).
    pub fn jwk(&self) -> Value {
        let kid = &self.kid;
        match &self.secret {
            Secret::Hmac(secret) => json!({"kty": "oct", "kid": kid, "k": b64(secret)}),
            Secret::Ec(key) => {
                let point = key.verifying_key().to_encoded_point(false);
                json!({"kty": "EC", "crv": "P-256", "kid": kid, "use": "sig",
                       "x": b64(point.x().expect("uncompressed")),
                       "y": b64(point.y().expect("uncompressed"))})
            }
            Secret::Ed(key) => json!({"kty": "OKP", "crv": "Ed25519", "kid": kid,
                                     "x": b64(key.verifying_key().as_bytes())}),
            Secret::Rsa(key) => {
                let public = key.to_public_key();
                json!({"kty": "RSA", "kid": kid, "alg": "RS256",
                       "n": b64(&public.n().to_bytes_be()), "e": b64(&public.e().to_bytes_be())})
            }
        }
    }

    /// A token of `claims` with header `{"alg", "kid", "typ": "JWT"}`.
    pub fn sign(&self, claims: &Value) -> String {
        let header = json!({"alg": self.alg.name(), "kid": self.kid, "typ": "JWT"});
        self.sign_with_header(&header, claims)
    }

    /// A token of `claims` with exactly `header`, signed by this key
    /// whatever the header says.
    pub fn sign_with_header(&self, header: &Value, claims: &Value) -> String {
        let input = format!(
            "{}.{}",
            b64(header.to_string().as_bytes()),
            b64(claims.to_string().as_bytes())
        );
        let signature = self.signature(input.as_bytes());
        format!("{input}.{}", b64(&signature))
    }

    /// The raw JWS signature of `input`.
    pub fn signature(&self, input: &[u8]) -> Vec<u8> {
        match &self.secret {
            Secret::Hmac(secret) => hmac_sha256(secret, input),
            Secret::Ec(key) => {
                let signature: p256::ecdsa::Signature = key.sign(input);
                signature.to_bytes().to_vec()
            }
            Secret::Ed(key) => key.sign(input).to_bytes().to_vec(),
            Secret::Rsa(key) => rsa::pkcs1v15::SigningKey::<Sha256>::new((**key).clone())
                .sign(input)
                .to_vec(),
        }
    }

    /// For RSA keys, the modulus' bytes (what an attacker would use as the
    /// HMAC secret in an algorithm-confusion attack).
    pub fn rsa_modulus(&self) -> Option<Vec<u8>> {
        match &self.secret {
            Secret::Rsa(key) => Some(key.n().to_bytes_be()),
            _ => None,
        }
    }
}

/// HMAC-SHA-256 of `input` keyed with `secret`.
pub fn hmac_sha256(secret: &[u8], input: &[u8]) -> Vec<u8> {
    let mut mac = hmac::Hmac::<Sha256>::new_from_slice(secret).expect("any key length");
    mac.update(input);
    mac.finalize().into_bytes().to_vec()
}

/// The JWK Set `{"keys": [...]}` of `keys`.
pub fn jwks(keys: &[&Key]) -> Value {
    json!({ "keys": keys.iter().map(|k| k.jwk()).collect::<Vec<_>>() })
}

/// A token of `claims` signed with the test key of `alg` (key id `kid`),
/// and the JWK Set that verifies it.
pub fn mint(alg: Alg, kid: &str, claims: &Value) -> (String, Value) {
    let key = key(alg, kid);
    (key.sign(claims), jwks(&[&key]))
}

/// base64url without padding.
pub fn b64(bytes: &[u8]) -> String {
    URL_SAFE_NO_PAD.encode(bytes)
}

/// Now, in seconds since the Unix epoch (for `exp`, `nbf`, `iat`).
pub fn now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .expect("the clock is after 1970")
        .as_secs()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_are_fixed_and_distinct() {
        for alg in Alg::ALL {
            assert_eq!(key(alg, "a").jwk(), key(alg, "a").jwk(), "{alg:?} is fixed");
            let mut other = other_key(alg, "a").jwk();
            assert_ne!(key(alg, "a").jwk(), other, "{alg:?}");
            other["kid"] = json!("b");
            assert_eq!(other["kid"], "b");
        }
    }

    #[test]
    fn tokens_have_three_parts_and_the_header_given() {
        let (token, jwks) = mint(Alg::EdDsa, "k", &json!({"sub": "a"}));
        let parts: Vec<&str> = token.split('.').collect();
        assert_eq!(parts.len(), 3);
        let header: Value =
            serde_json::from_slice(&URL_SAFE_NO_PAD.decode(parts[0]).unwrap()).unwrap();
        assert_eq!(header, json!({"alg": "EdDSA", "kid": "k", "typ": "JWT"}));
        assert_eq!(jwks["keys"][0]["crv"], "Ed25519");
        // Deterministic signatures (Ed25519, RFC 6979 ECDSA, PKCS#1 v1.5, HMAC).
        for alg in Alg::ALL {
            let k = key(alg, "k");
            assert_eq!(k.sign(&json!({})), k.sign(&json!({})), "{alg:?}");
        }
    }
}
