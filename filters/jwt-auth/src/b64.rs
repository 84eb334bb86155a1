//! base64url (RFC 4648 §5) decoding.

use base64::Engine;
use base64::alphabet::URL_SAFE;
use base64::engine::{DecodePaddingMode, GeneralPurpose, GeneralPurposeConfig};

/// Tokens: no padding, canonical trailing bits (RFC 7515 §2), so that a
/// token has exactly one encoding.
const STRICT: GeneralPurpose = GeneralPurpose::new(
    &URL_SAFE,
    GeneralPurposeConfig::new().with_decode_padding_mode(DecodePaddingMode::RequireNone),
);

/// Key material in a JWK: padding tolerated, as some key servers add it.
const LENIENT: GeneralPurpose = GeneralPurpose::new(
    &URL_SAFE,
    GeneralPurposeConfig::new().with_decode_padding_mode(DecodePaddingMode::Indifferent),
);

/// Decodes one part of a compact token.
pub fn decode_strict(text: &str) -> Result<Vec<u8>, base64::DecodeError> {
    STRICT.decode(text)
}

/// Decodes a JWK member such as `n`, `x` or `k`.
pub fn decode_lenient(text: &str) -> Result<Vec<u8>, base64::DecodeError> {
    LENIENT.decode(text)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn strict_refuses_padding_standard_alphabet_and_loose_bits() {
        assert_eq!(decode_strict("aGk").unwrap(), b"hi");
        assert!(decode_strict("aGk=").is_err(), "padding");
        assert_eq!(decode_strict("-_8").unwrap(), [0xfb, 0xff]);
        assert!(decode_strict("+/8").is_err(), "standard alphabet");
        // "aGl" would put a 1 in the unused low bits of the last character.
        assert!(decode_strict("aGl").is_err(), "non-canonical trailing bits");
        assert!(decode_strict("a").is_err());
        assert_eq!(decode_strict("").unwrap(), b"");
    }

    #[test]
    fn lenient_accepts_padding() {
        assert_eq!(decode_lenient("aGk=").unwrap(), b"hi");
        assert_eq!(decode_lenient("aGk").unwrap(), b"hi");
        assert!(decode_lenient("a+k").is_err());
    }
}
