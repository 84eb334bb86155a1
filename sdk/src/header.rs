//! Checks for header names and values, for validating a filter's config in
//! [`Filter::new`](crate::Filter::new): at run time the proxy traps on a
//! header it cannot send.

/// Whether `c` may appear in a header name (RFC 9110 `tchar`).
pub fn is_token_char(c: char) -> bool {
    c.is_ascii_alphanumeric() || "!#$%&'*+-.^_`|~".contains(c)
}

/// `name` lower-cased, or why it is not a valid header name.
///
/// ```
/// assert_eq!(weft_sdk::header::check_name("X-Team"), Ok("x-team".to_string()));
/// assert!(weft_sdk::header::check_name("bad name").is_err());
/// ```
pub fn check_name(name: &str) -> Result<String, String> {
    if name.is_empty() {
        return Err("the header name is empty".into());
    }
    if let Some(bad) = name.chars().find(|&c| !is_token_char(c)) {
        return Err(format!(
            "invalid header name `{name}`: {bad:?} is not allowed \
             (names are letters, digits and !#$%&'*+-.^_`|~)"
        ));
    }
    Ok(name.to_ascii_lowercase())
}

/// The first character that may not appear in a header value (a control
/// character other than tab), if any.
pub fn invalid_value_char(value: &str) -> Option<char> {
    value.chars().find(|&c| c.is_ascii_control() && c != '\t')
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names() {
        assert_eq!(check_name("X-Api-Key"), Ok("x-api-key".into()));
        assert_eq!(check_name(""), Err("the header name is empty".into()));
        let err = check_name("a b").unwrap_err();
        assert!(
            err.starts_with("invalid header name `a b`: ' ' is not allowed"),
            "{err}"
        );
    }

    #[test]
    fn values() {
        assert_eq!(invalid_value_char("ok\tvalue"), None);
        assert_eq!(invalid_value_char("no\r\nsplit"), Some('\r'));
    }
}
