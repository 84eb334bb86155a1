//! Signature verification (RFC 7518 §3): one function per key type.

use hmac::{Hmac, Mac};
use rsa::Pkcs1v15Sign;
use rsa::traits::PublicKeyParts;
use sha2::{Digest, Sha256};

use crate::jwk::Key;

/// Whether `signature` is a valid signature of `input` by `key`, under the
/// key's one algorithm. The caller has checked that the token's `alg` is
/// that algorithm. Signatures of the wrong length are invalid.
pub fn verify(key: &Key, input: &[u8], signature: &[u8]) -> bool {
    match key {
        Key::Rsa(public) => {
            // RFC 7518 §3.3 / RFC 8017 §8.2.2: exactly the modulus' length.
            signature.len() == public.size()
                && public
                    .verify(
                        Pkcs1v15Sign::new::<Sha256>(),
                        &Sha256::digest(input),
                        signature,
                    )
                    .is_ok()
        }
        Key::P256(public) => {
            use p256::ecdsa::signature::Verifier;
            // JWS carries R || S (64 bytes), not DER (RFC 7518 §3.4).
            signature.len() == 64
                && p256::ecdsa::Signature::from_slice(signature)
                    .is_ok_and(|sig| public.verify(input, &sig).is_ok())
        }
        Key::Ed25519(public) => ed25519_dalek::Signature::from_slice(signature)
            .is_ok_and(|sig| public.verify_strict(input, &sig).is_ok()),
        Key::Hmac(secret) => {
            let Ok(mut mac) = Hmac::<Sha256>::new_from_slice(secret) else {
                return false;
            };
            mac.update(input);
            // Constant-time comparison; the length must be exactly 32.
            mac.verify_slice(signature).is_ok()
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::jwk::parse_jwk;
    use crate::testkeys;

    fn key(jwk: serde_json::Value) -> Key {
        parse_jwk(&jwk).unwrap().key
    }

    fn all_keys() -> [(&'static str, Key); 4] {
        [
            ("RS256", key(testkeys::rsa_jwk("k"))),
            ("ES256", key(testkeys::ec_jwk("k"))),
            ("EdDSA", key(testkeys::ed_jwk("k"))),
            ("HS256", key(testkeys::oct_jwk("k"))),
        ]
    }

    #[test]
    fn each_algorithm_verifies_its_own_signatures() {
        let input = b"eyJhbGciOiJ0ZXN0In0.eyJzdWIiOiJhbGljZSJ9";
        for (alg, key) in all_keys() {
            let signature = testkeys::sign(alg, input);
            assert!(verify(&key, input, &signature), "{alg}");
        }
    }

    #[test]
    fn a_changed_input_or_signature_fails() {
        let input = b"header.payload";
        for (alg, key) in all_keys() {
            let signature = testkeys::sign(alg, input);
            assert!(!verify(&key, b"header.payloaD", &signature), "{alg}: input");
            let mut flipped = signature.clone();
            flipped[5] ^= 0x01;
            assert!(!verify(&key, input, &flipped), "{alg}: flipped bit");
            assert!(
                !verify(&key, input, &signature[..signature.len() - 1]),
                "{alg}: truncated"
            );
            let mut longer = signature.clone();
            longer.push(0);
            assert!(!verify(&key, input, &longer), "{alg}: extended");
            assert!(!verify(&key, input, &[]), "{alg}: empty");
        }
    }

    #[test]
    fn a_signature_by_another_algorithm_or_key_fails() {
        let input = b"header.payload";
        let keys = all_keys();
        for (signer, _) in &keys {
            let signature = testkeys::sign(signer, input);
            for (alg, key) in &keys {
                if alg != signer {
                    assert!(
                        !verify(key, input, &signature),
                        "{signer} signature, {alg} key"
                    );
                }
            }
        }
        // Same algorithm, other key.
        let other_ec = key(testkeys::ec_jwk_of(&testkeys::ec_signing(2), "k"));
        assert!(!verify(&other_ec, input, &testkeys::sign("ES256", input)));
    }

    #[test]
    fn an_hmac_keyed_with_the_rsa_public_key_fails() {
        // The classic confusion: HS256 signed with the RSA key's public bytes.
        use rsa::traits::PublicKeyParts;
        let public = testkeys::rsa_private().to_public_key();
        let mut mac = Hmac::<Sha256>::new_from_slice(&public.n().to_bytes_be()).unwrap();
        mac.update(b"x.y");
        let forged = mac.finalize().into_bytes();
        assert!(!verify(&key(testkeys::rsa_jwk("k")), b"x.y", &forged));
    }

    #[test]
    fn known_vector_rfc_7515_a_1_hs256() {
        // RFC 7515 Appendix A.1: the HS256 example, verbatim.
        let jwk = serde_json::json!({"kty": "oct",
            "k": "AyM1SysPpbyDfgZld3umj1qzKObwVMkoqQ-EstJQLr_T-1qS0gZH75aKtMN3Yj0iPS4hcgUuTwjAzZr1Z9CAow"});
        let input = "eyJ0eXAiOiJKV1QiLA0KICJhbGciOiJIUzI1NiJ9.eyJpc3MiOiJqb2UiLA0KICJleHAiOjEzMDA4MTkzODAsDQogImh0dHA6Ly9leGFtcGxlLmNvbS9pc19yb290Ijp0cnVlfQ";
        let signature =
            crate::b64::decode_strict("dBjftJeZ4CVP-mB92K27uhbUJU1p1r_wW1gFWFOEjXk").unwrap();
        assert!(verify(&key(jwk.clone()), input.as_bytes(), &signature));
        assert!(!verify(&key(jwk), &input.as_bytes()[1..], &signature));
    }

    /// The signing input of RFC 7515's examples A.2 and A.3.
    const RFC7515_PAYLOAD: &str = "eyJpc3MiOiJqb2UiLA0KICJleHAiOjEzMDA4MTkzODAsDQogImh0dHA6Ly9leGFtcGxlLmNvbS9pc19yb290Ijp0cnVlfQ";

    #[test]
    fn known_vector_rfc_7515_a_2_rs256() {
        let jwk = serde_json::json!({"kty": "RSA", "e": "AQAB",
            "n": "ofgWCuLjybRlzo0tZWJjNiuSfb4p4fAkd_wWJcyQoTbji9k0l8W26mPddxHmfHQp-Vaw-4qPCJrcS2mJPMEzP1Pt0Bm4d4QlL-yRT-SFd2lZS-pCgNMsD1W_YpRPEwOWvG6b32690r2jZ47soMZo9wGzjb_7OMg0LOL-bSf63kpaSHSXndS5z5rexMdbBYUsLA9e-KXBdQOS-UTo7WTBEMa2R2CapHg665xsmtdVMTBQY4uDZlxvb3qCo5ZwKh9kG4LT6_I5IhlJH7aGhyxXFvUK-DWNmoudF8NAco9_h9iaGNj8q2ethFkMLs91kzk2PAcDTW9gb54h4FRWyuXpoQ"});
        let input = format!("eyJhbGciOiJSUzI1NiJ9.{RFC7515_PAYLOAD}");
        let signature = crate::b64::decode_strict(
            "cC4hiUPoj9Eetdgtv3hF80EGrhuB__dzERat0XF9g2VtQgr9PJbu3XOiZj5RZmh7AAuHIm4Bh-0Qc_lF5YKt_O8W2Fp5jujGbds9uJdbF9CUAr7t1dnZcAcQjbKBYNX4BAynRFdiuB--f_nZLgrnbyTyWzO75vRK5h6xBArLIARNPvkSjtQBMHlb1L07Qe7K0GarZRmB_eSN9383LcOLn6_dO--xi12jzDwusC-eOkHWEsqtFZESc6BfI7noOPqvhJ1phCnvWh6IeYI2w9QOYEUipUTI8np6LbgGY9Fs98rqVt5AXLIhWkWywlVmtVrBp0igcN_IoypGlUPQGe77Rw",
        )
        .unwrap();
        let key = key(jwk);
        assert!(verify(&key, input.as_bytes(), &signature));
        assert!(!verify(&key, &input.as_bytes()[1..], &signature));
    }

    #[test]
    fn known_vector_rfc_7515_a_3_es256() {
        let jwk = serde_json::json!({"kty": "EC", "crv": "P-256",
            "x": "f83OJ3D2xF1Bg8vub9tLe1gHMzV76e8Tus9uPHvRVEU",
            "y": "x_FEzRu9m36HLN_tue659LNpXW6pCyStikYjKIWI5a0"});
        let input = format!("eyJhbGciOiJFUzI1NiJ9.{RFC7515_PAYLOAD}");
        let signature = crate::b64::decode_strict(
            "DtEhU3ljbEg8L38VWAfUAqOyKAM6-Xx-F4GawxaepmXFCgfTjDxw5djxLa8ISlSApmWQxfKTUJqPP3-Kg6NU1Q",
        )
        .unwrap();
        let key = key(jwk);
        assert!(verify(&key, input.as_bytes(), &signature));
        assert!(!verify(&key, &input.as_bytes()[1..], &signature));
    }

    #[test]
    fn known_vector_rfc_8037_a_4_ed25519() {
        // RFC 8037 Appendix A.4: the Ed25519 example, verbatim.
        let jwk = serde_json::json!({"kty": "OKP", "crv": "Ed25519",
            "x": "11qYAYKxCrfVS_7TyWQHOg7hcvPapiMlrwIaaPcHURo"});
        let input = "eyJhbGciOiJFZERTQSJ9.RXhhbXBsZSBvZiBFZDI1NTE5IHNpZ25pbmc";
        let signature = crate::b64::decode_strict(
            "hgyY0il_MGCjP0JzlnLWG1PPOt7-09PGcvMg3AIbQR6dWbhijcNR4ki4iylGjg5BhVsPt9g7sVvpAr_MuM0KAg",
        )
        .unwrap();
        assert!(verify(&key(jwk.clone()), input.as_bytes(), &signature));
        assert!(!verify(&key(jwk), b"eyJhbGciOiJFZERTQSJ9.x", &signature));
    }
}
