//! The signature algorithms this filter verifies (RFC 7518 names).

use std::fmt;

/// A JWS algorithm. Each key type verifies exactly one of them, so a key
/// never serves two algorithms (no RS256/HS256 confusion).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Alg {
    /// RSASSA-PKCS1-v1_5 with SHA-256, RSA keys (`kty: RSA`).
    Rs256,
    /// ECDSA on P-256 with SHA-256, EC keys (`kty: EC`, `crv: P-256`).
    Es256,
    /// Ed25519, OKP keys (`kty: OKP`, `crv: Ed25519`).
    EdDsa,
    /// HMAC with SHA-256, shared secrets (`kty: oct`).
    Hs256,
}

impl Alg {
    /// Every algorithm, in the order they are listed in messages.
    pub const ALL: [Alg; 4] = [Alg::Rs256, Alg::Es256, Alg::EdDsa, Alg::Hs256];

    /// The algorithms accepted when the config does not list any: the
    /// asymmetric ones. HS256 must be asked for.
    pub const DEFAULT: [Alg; 3] = [Alg::Rs256, Alg::Es256, Alg::EdDsa];

    /// The JOSE name, as in a token's `alg` header.
    pub fn name(self) -> &'static str {
        match self {
            Alg::Rs256 => "RS256",
            Alg::Es256 => "ES256",
            Alg::EdDsa => "EdDSA",
            Alg::Hs256 => "HS256",
        }
    }

    /// The algorithm named `name` (case-sensitive, as JOSE names are).
    pub fn from_name(name: &str) -> Option<Alg> {
        Alg::ALL.into_iter().find(|alg| alg.name() == name)
    }

    /// `RS256, ES256, EdDSA, HS256`: for messages.
    pub fn supported_list() -> String {
        Alg::ALL.map(Alg::name).join(", ")
    }
}

impl fmt::Display for Alg {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_round_trip_and_are_case_sensitive() {
        for alg in Alg::ALL {
            assert_eq!(Alg::from_name(alg.name()), Some(alg));
        }
        assert_eq!(Alg::from_name("rs256"), None);
        assert_eq!(Alg::from_name("none"), None);
        assert_eq!(Alg::from_name("RS384"), None);
        assert_eq!(Alg::supported_list(), "RS256, ES256, EdDSA, HS256");
    }
}
