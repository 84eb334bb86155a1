//! The filter's config and its validation.

use std::collections::BTreeMap;

use serde::Deserialize;

/// Headers to set, as (lower-case name, value), in name order.
pub type Headers = Vec<(String, String)>;

/// The config as written: header maps for the request and the response.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// Headers to set on the request sent upstream.
    #[serde(default)]
    pub request: BTreeMap<String, String>,
    /// Headers to set on the response sent to the client.
    #[serde(default)]
    pub response: BTreeMap<String, String>,
}

/// Headers the proxy derives from the message framing: setting them would
/// corrupt it.
const FRAMING_HEADERS: [&str; 2] = ["content-length", "transfer-encoding"];

impl Config {
    /// Checks every header and returns the (request, response) headers to
    /// set, names lower-cased.
    pub fn validate(self) -> Result<(Headers, Headers), String> {
        if self.request.is_empty() && self.response.is_empty() {
            return Err(
                "add-header needs at least one header under `request` or `response`, \
                 e.g. {\"request\": {\"x-env\": \"prod\"}}"
                    .into(),
            );
        }
        Ok((
            section("request", self.request)?,
            section("response", self.response)?,
        ))
    }
}

/// Validates the headers of one section (`request` or `response`).
fn section(which: &str, headers: BTreeMap<String, String>) -> Result<Headers, String> {
    let mut checked: Headers = Vec::with_capacity(headers.len());
    for (name, value) in headers {
        let lower = name.to_ascii_lowercase();
        if let Err(problem) = check_name(&lower).and_then(|()| check_value(&value)) {
            return Err(format!("{which} header `{name}`: {problem}"));
        }
        if checked.iter().any(|(seen, _)| *seen == lower) {
            return Err(format!(
                "{which} header `{name}` is listed twice (header names ignore case)"
            ));
        }
        checked.push((lower, value));
    }
    checked.sort_unstable();
    Ok(checked)
}

/// Checks a lower-case header name: an HTTP token, not a framing header.
fn check_name(name: &str) -> Result<(), String> {
    if name.is_empty() {
        return Err("the name is empty".into());
    }
    if let Some(bad) = name.chars().find(|&c| !weft_sdk::header::is_token_char(c)) {
        return Err(format!(
            "invalid name: {bad:?} is not allowed (names are letters, digits and !#$%&'*+-.^_`|~)"
        ));
    }
    if FRAMING_HEADERS.contains(&name) {
        return Err("the proxy manages this header (it frames the message)".into());
    }
    Ok(())
}

/// Checks a header value: no control characters other than tab.
fn check_value(value: &str) -> Result<(), String> {
    match value.chars().find(|&c| c.is_control() && c != '\t') {
        Some(bad) => Err(format!(
            "invalid value: it contains the control character {bad:?}"
        )),
        None => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(json: &str) -> Result<(Headers, Headers), String> {
        let config: Config = serde_json::from_str(json).map_err(|e| e.to_string())?;
        config.validate()
    }

    fn headers(pairs: &[(&str, &str)]) -> Headers {
        pairs
            .iter()
            .map(|(n, v)| (n.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn valid_config_is_lower_cased_and_sorted() {
        let (request, response) =
            parse(r#"{"request": {"X-Env": "prod", "a": "1"}, "response": {"x-b": "two words\tand tab"}}"#)
                .unwrap();
        assert_eq!(request, headers(&[("a", "1"), ("x-env", "prod")]));
        assert_eq!(response, headers(&[("x-b", "two words\tand tab")]));
    }

    #[test]
    fn one_section_is_enough() {
        let (request, response) = parse(r#"{"response": {"x-a": ""}}"#).unwrap();
        assert!(request.is_empty());
        assert_eq!(response, headers(&[("x-a", "")]));
    }

    #[test]
    fn empty_config_is_refused() {
        for json in ["{}", r#"{"request": {}, "response": {}}"#] {
            let err = parse(json).unwrap_err();
            assert!(
                err.starts_with("add-header needs at least one header"),
                "{err}"
            );
        }
    }

    #[test]
    fn bad_names_are_named() {
        let err = parse(r#"{"request": {"bad name": "x"}}"#).unwrap_err();
        assert_eq!(
            err,
            "request header `bad name`: invalid name: ' ' is not allowed \
             (names are letters, digits and !#$%&'*+-.^_`|~)"
        );
        let err = parse(r#"{"response": {"": "x"}}"#).unwrap_err();
        assert_eq!(err, "response header ``: the name is empty");
        let err = parse(r#"{"request": {":path": "/x"}}"#).unwrap_err();
        assert!(
            err.starts_with("request header `:path`: invalid name"),
            "{err}"
        );
        let err = parse(r#"{"response": {"Content-Length": "3"}}"#).unwrap_err();
        assert_eq!(
            err,
            "response header `Content-Length`: the proxy manages this header (it frames the message)"
        );
    }

    #[test]
    fn bad_values_are_named() {
        let err = parse(r#"{"response": {"x-a": "line\nbreak"}}"#).unwrap_err();
        assert_eq!(
            err,
            "response header `x-a`: invalid value: it contains the control character '\\n'"
        );
    }

    #[test]
    fn duplicate_names_in_a_section_are_refused() {
        let err = parse(r#"{"request": {"X-A": "1", "x-a": "2"}}"#).unwrap_err();
        assert!(err.contains("is listed twice"), "{err}");
    }

    #[test]
    fn unknown_sections_are_refused() {
        let err = parse(r#"{"requests": {"x-a": "1"}}"#).unwrap_err();
        assert!(err.starts_with("unknown field `requests`"), "{err}");
    }
}
