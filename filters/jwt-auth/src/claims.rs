//! Claim checks (RFC 7519 §4.1): time window, issuer, audience, required
//! claims. Run only on tokens whose signature verified.

use serde_json::{Map, Value};

/// What the claims must satisfy.
#[derive(Debug, Default)]
pub struct ClaimRules {
    /// Accepted `iss` values; empty: `iss` is not checked.
    pub issuers: Vec<String>,
    /// Accepted audiences: the token's `aud` must name one; empty: `aud`
    /// is not checked.
    pub audiences: Vec<String>,
    /// Claims that must be present (and not null).
    pub required: Vec<String>,
    /// Clock skew tolerated on `exp` and `nbf`, in seconds.
    pub leeway_s: u64,
}

/// Why the claims are refused. The message goes to the client.
#[derive(Debug, PartialEq, Eq, Clone)]
pub enum ClaimError {
    /// `exp` is past (beyond the leeway).
    Expired,
    /// `nbf` is ahead (beyond the leeway).
    NotYetValid,
    /// `iss` is missing or not accepted.
    Issuer,
    /// `aud` is missing or names no accepted audience.
    Audience,
    /// A required claim is missing.
    Missing(String),
    /// A registered claim has the wrong type, e.g. `exp` is not a number.
    Type {
        /// The claim.
        claim: &'static str,
        /// What it should be.
        expected: &'static str,
    },
}

impl ClaimError {
    /// The message sent to the client.
    pub fn message(&self) -> String {
        match self {
            ClaimError::Expired => "the token has expired".into(),
            ClaimError::NotYetValid => "the token is not valid yet (nbf)".into(),
            ClaimError::Issuer => "the token's issuer (iss) is not accepted".into(),
            ClaimError::Audience => "the token's audience (aud) is not accepted".into(),
            ClaimError::Missing(claim) => format!("the token has no {claim} claim"),
            ClaimError::Type { claim, expected } => {
                format!("the token's {claim} claim is not {expected}")
            }
        }
    }
}

/// Checks `claims` against `rules` at `now_unix_nanos`.
pub fn check(
    claims: &Map<String, Value>,
    rules: &ClaimRules,
    now_unix_nanos: u64,
) -> Result<(), ClaimError> {
    let now = now_unix_nanos as f64 / 1e9;
    let leeway = rules.leeway_s as f64;
    if let Some(exp) = numeric_date(claims, "exp")?
        && now >= exp + leeway
    {
        return Err(ClaimError::Expired);
    }
    if let Some(nbf) = numeric_date(claims, "nbf")?
        && now + leeway < nbf
    {
        return Err(ClaimError::NotYetValid);
    }
    if !rules.issuers.is_empty() {
        match claims.get("iss") {
            Some(Value::String(iss)) if rules.issuers.contains(iss) => {}
            _ => return Err(ClaimError::Issuer),
        }
    }
    if !rules.audiences.is_empty() {
        let accepted = |aud: &Value| {
            aud.as_str()
                .is_some_and(|aud| rules.audiences.iter().any(|a| a == aud))
        };
        let ok = match claims.get("aud") {
            Some(aud @ Value::String(_)) => accepted(aud),
            Some(Value::Array(auds)) => auds.iter().any(accepted),
            _ => false,
        };
        if !ok {
            return Err(ClaimError::Audience);
        }
    }
    if let Some(missing) = rules
        .required
        .iter()
        .find(|name| claims.get(*name).is_none_or(Value::is_null))
    {
        return Err(ClaimError::Missing(missing.clone()));
    }
    Ok(())
}

/// A NumericDate claim (seconds since the epoch, maybe fractional), if
/// present. Null counts as absent.
fn numeric_date(
    claims: &Map<String, Value>,
    claim: &'static str,
) -> Result<Option<f64>, ClaimError> {
    match claims.get(claim) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::Number(n)) => n.as_f64().map(Some).ok_or(ClaimError::Type {
            claim,
            expected: "a number",
        }),
        Some(_) => Err(ClaimError::Type {
            claim,
            expected: "a number",
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    /// 2026-01-01T00:00:00Z, in seconds.
    const NOW_S: u64 = 1_767_225_600;
    const NOW: u64 = NOW_S * 1_000_000_000;

    fn claims(value: Value) -> Map<String, Value> {
        value.as_object().unwrap().clone()
    }

    fn rules() -> ClaimRules {
        ClaimRules {
            leeway_s: 30,
            ..ClaimRules::default()
        }
    }

    #[test]
    fn no_rules_and_no_claims_pass() {
        assert_eq!(check(&claims(json!({})), &rules(), NOW), Ok(()));
    }

    #[test]
    fn exp_with_leeway() {
        let r = rules();
        let at = |exp: Value| check(&claims(json!({ "exp": exp })), &r, NOW);
        assert_eq!(at(json!(NOW_S + 1)), Ok(()));
        assert_eq!(at(json!(NOW_S - 29)), Ok(()), "within the leeway");
        assert_eq!(
            at(json!(NOW_S - 30)),
            Err(ClaimError::Expired),
            "exp + leeway is now"
        );
        assert_eq!(at(json!(NOW_S - 3600)), Err(ClaimError::Expired));
        assert_eq!(at(json!(NOW_S as f64 + 0.5)), Ok(()), "fractional seconds");
        assert_eq!(at(json!(-1)), Err(ClaimError::Expired));
        assert_eq!(at(json!(null)), Ok(()), "null is absent");
        assert_eq!(
            at(json!("2030-01-01")),
            Err(ClaimError::Type {
                claim: "exp",
                expected: "a number"
            })
        );
        let strict = ClaimRules::default();
        assert_eq!(
            check(&claims(json!({"exp": NOW_S - 1})), &strict, NOW),
            Err(ClaimError::Expired),
            "no leeway"
        );
        assert_eq!(
            check(&claims(json!({"exp": NOW_S})), &strict, NOW),
            Err(ClaimError::Expired),
            "exp is the first instant the token is invalid"
        );
    }

    #[test]
    fn nbf_with_leeway() {
        let r = rules();
        let at = |nbf: Value| check(&claims(json!({ "nbf": nbf })), &r, NOW);
        assert_eq!(at(json!(NOW_S)), Ok(()));
        assert_eq!(at(json!(NOW_S + 30)), Ok(()), "within the leeway");
        assert_eq!(at(json!(NOW_S + 31)), Err(ClaimError::NotYetValid));
        assert_eq!(
            at(json!(true)),
            Err(ClaimError::Type {
                claim: "nbf",
                expected: "a number"
            })
        );
    }

    #[test]
    fn issuer_must_be_one_of_the_accepted() {
        let r = ClaimRules {
            issuers: vec!["https://a".into(), "https://b".into()],
            ..rules()
        };
        for ok in ["https://a", "https://b"] {
            assert_eq!(check(&claims(json!({ "iss": ok })), &r, NOW), Ok(()));
        }
        for bad in [
            json!({"iss": "https://c"}),
            json!({}),
            json!({"iss": ["https://a"]}),
            json!({"iss": "HTTPS://A"}),
        ] {
            assert_eq!(
                check(&claims(bad.clone()), &r, NOW),
                Err(ClaimError::Issuer),
                "{bad}"
            );
        }
    }

    #[test]
    fn audience_may_be_a_string_or_a_list() {
        let r = ClaimRules {
            audiences: vec!["api".into(), "admin".into()],
            ..rules()
        };
        for ok in [json!({"aud": "api"}), json!({"aud": ["other", "admin"]})] {
            assert_eq!(check(&claims(ok.clone()), &r, NOW), Ok(()), "{ok}");
        }
        for bad in [
            json!({"aud": "other"}),
            json!({"aud": []}),
            json!({}),
            json!({"aud": [1, "x"]}),
            json!({"aud": {"api": true}}),
        ] {
            assert_eq!(
                check(&claims(bad.clone()), &r, NOW),
                Err(ClaimError::Audience),
                "{bad}"
            );
        }
    }

    #[test]
    fn required_claims_must_be_present_and_not_null() {
        let r = ClaimRules {
            required: vec!["sub".into(), "exp".into()],
            ..rules()
        };
        assert_eq!(
            check(&claims(json!({"sub": "a", "exp": NOW_S + 60})), &r, NOW),
            Ok(())
        );
        assert_eq!(
            check(&claims(json!({"sub": "a"})), &r, NOW),
            Err(ClaimError::Missing("exp".into()))
        );
        assert_eq!(
            check(&claims(json!({"sub": null, "exp": NOW_S + 60})), &r, NOW),
            Err(ClaimError::Missing("sub".into()))
        );
        assert_eq!(
            ClaimError::Missing("sub".into()).message(),
            "the token has no sub claim"
        );
    }

    #[test]
    fn time_is_checked_before_issuer_and_audience() {
        let r = ClaimRules {
            issuers: vec!["i".into()],
            audiences: vec!["a".into()],
            ..rules()
        };
        assert_eq!(
            check(&claims(json!({"exp": 1})), &r, NOW),
            Err(ClaimError::Expired)
        );
    }
}
