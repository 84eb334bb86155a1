//! The response headers of draft-ietf-httpapi-ratelimit-headers (-09, in
//! structured-field form) and `retry-after`.
//!
//! ```text
//! ratelimit-policy: "api";q=20;w=72000
//! ratelimit: "api";r=0;t=72000
//! retry-after: 3600
//! ```

/// The largest structured-field integer (RFC 9651: at most 15 digits).
const MAX_SF_INTEGER: u64 = 999_999_999_999_999;

/// The `ratelimit-policy` value: the policy allows `quota` requests per
/// `window_secs`.
pub fn policy(name: &str, quota: u64, window_secs: u64) -> String {
    format!(
        "{};q={};w={}",
        sf_string(name),
        sf_integer(quota),
        sf_integer(window_secs)
    )
}

/// The `ratelimit` value: `remaining` requests now, full quota again in
/// `reset_secs`.
pub fn ratelimit(name: &str, remaining: u64, reset_secs: u64) -> String {
    format!(
        "{};r={};t={}",
        sf_string(name),
        sf_integer(remaining),
        sf_integer(reset_secs)
    )
}

/// The `retry-after` value (RFC 9110 delay-seconds): at least 1.
pub fn retry_after(secs: u64) -> String {
    secs.clamp(1, MAX_SF_INTEGER).to_string()
}

/// A structured-field integer: `n`, clamped to the largest one.
fn sf_integer(n: u64) -> u64 {
    n.min(MAX_SF_INTEGER)
}

/// A structured-field string (RFC 9651 §3.3.3): `"`, the text with `"` and
/// `\` escaped, `"`. The text must be printable ASCII (the config checks).
pub fn sf_string(text: &str) -> String {
    let mut out = String::with_capacity(text.len() + 2);
    out.push('"');
    for c in text.chars() {
        if c == '"' || c == '\\' {
            out.push('\\');
        }
        out.push(c);
    }
    out.push('"');
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn header_values() {
        assert_eq!(policy("default", 20, 72_000), r#""default";q=20;w=72000"#);
        assert_eq!(ratelimit("default", 0, 3600), r#""default";r=0;t=3600"#);
        assert_eq!(ratelimit("api", 19, 1), r#""api";r=19;t=1"#);
    }

    #[test]
    fn names_are_escaped() {
        assert_eq!(sf_string("plain name"), r#""plain name""#);
        assert_eq!(sf_string(r#"a"b\c"#), r#""a\"b\\c""#);
        assert_eq!(policy(r#"x"y"#, 1, 1), r#""x\"y";q=1;w=1"#);
    }

    #[test]
    fn integers_are_clamped_to_fifteen_digits() {
        assert_eq!(
            ratelimit("p", u64::MAX, u64::MAX),
            r#""p";r=999999999999999;t=999999999999999"#
        );
        assert_eq!(retry_after(u64::MAX), "999999999999999");
    }

    #[test]
    fn retry_after_is_at_least_one_second() {
        assert_eq!(retry_after(0), "1");
        assert_eq!(retry_after(1), "1");
        assert_eq!(retry_after(3600), "3600");
    }
}
