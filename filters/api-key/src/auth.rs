//! The decision, without host calls: which key the request presents, and
//! whose it is.

use crate::config::Settings;
use crate::query;

/// What the filter decides about a request.
#[derive(Debug, PartialEq, Eq)]
pub enum Outcome<'a> {
    /// The key belongs to this consumer.
    Allowed {
        /// The consumer's name.
        consumer: &'a str,
    },
    /// The request presents no key (or an empty one).
    Missing,
    /// The key is not accepted.
    Invalid(Invalid),
}

/// Why a presented key is not accepted.
#[derive(Debug, PartialEq, Eq, Clone, Copy)]
pub enum Invalid {
    /// No consumer has this key.
    Unknown,
    /// The request presents more than one key in the same place: refused
    /// rather than guessing which one counts.
    Several,
}

impl Invalid {
    /// The message sent to the client.
    pub fn message(self) -> &'static str {
        match self {
            Invalid::Unknown => "the API key is not valid",
            Invalid::Several => "the request carries more than one API key",
        }
    }
}

/// Decides on a request whose key header has the values `header_values`,
/// and whose target (path and query) is `target`; `target` is only read
/// when the config names a query parameter.
///
/// The header is looked at first; the query parameter only when the header
/// is absent or empty. Empty values count as absent.
pub fn authenticate<'a>(
    settings: &'a Settings,
    header_values: &[String],
    target: Option<&str>,
) -> Outcome<'a> {
    let from_header: Vec<&[u8]> = header_values
        .iter()
        .map(String::as_bytes)
        .filter(|value| !value.is_empty())
        .collect();
    let from_query: Vec<Vec<u8>> = if from_header.is_empty() {
        match (&settings.query, target.and_then(query::query_of)) {
            (Some(name), Some(query)) => query::values(query, name),
            _ => Vec::new(),
        }
    } else {
        Vec::new()
    };
    let presented: Vec<&[u8]> = if from_header.is_empty() {
        from_query
            .iter()
            .map(Vec::as_slice)
            .filter(|value| !value.is_empty())
            .collect()
    } else {
        from_header
    };
    match presented.as_slice() {
        [] => Outcome::Missing,
        [key] => match settings.keys.consumer_of(key) {
            Some(consumer) => Outcome::Allowed { consumer },
            None => Outcome::Invalid(Invalid::Unknown),
        },
        _ => Outcome::Invalid(Invalid::Several),
    }
}

/// The target to send upstream for an allowed request, when it changes:
/// without the key's query parameter, if `strip` is on and it is there.
pub fn upstream_target(settings: &Settings, target: &str) -> Option<String> {
    match &settings.query {
        Some(name) if settings.strip => query::without(target, name),
        _ => None,
    }
}

/// The `www-authenticate` challenge of a 401: where the key goes.
pub fn challenge(settings: &Settings) -> String {
    match &settings.query {
        Some(name) => format!(
            "ApiKey header=\"{}\", query=\"{}\"",
            settings.header,
            escape_quoted(name)
        ),
        None => format!("ApiKey header=\"{}\"", settings.header),
    }
}

/// The message of a 401.
pub fn missing_message(settings: &Settings) -> String {
    match &settings.query {
        Some(name) => format!(
            "this route needs an API key, in the `{}` header or the `{name}` query parameter",
            settings.header
        ),
        None => format!(
            "this route needs an API key in the `{}` header",
            settings.header
        ),
    }
}

/// Escapes `"` and `\` for an RFC 9110 quoted string.
fn escape_quoted(text: &str) -> String {
    let mut escaped = String::with_capacity(text.len());
    for c in text.chars() {
        if c == '"' || c == '\\' {
            escaped.push('\\');
        }
        escaped.push(c);
    }
    escaped
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Config;

    fn settings(extra: &str) -> Settings {
        let json = format!(
            r#"{{"keys": [{{"consumer": "alice", "key": "a-key"}},
                          {{"consumer": "bob", "key": "b+key="}}]{extra}}}"#
        );
        let config: Config = serde_json::from_str(&json).unwrap();
        config.validate().unwrap()
    }

    fn values(values: &[&str]) -> Vec<String> {
        values.iter().map(|v| v.to_string()).collect()
    }

    #[test]
    fn a_known_header_key_names_its_consumer() {
        let s = settings("");
        assert_eq!(
            authenticate(&s, &values(&["a-key"]), None),
            Outcome::Allowed { consumer: "alice" }
        );
        assert_eq!(
            authenticate(&s, &values(&["b+key="]), None),
            Outcome::Allowed { consumer: "bob" }
        );
    }

    #[test]
    fn missing_empty_unknown_and_several_keys() {
        let s = settings("");
        assert_eq!(authenticate(&s, &[], None), Outcome::Missing);
        assert_eq!(authenticate(&s, &values(&[""]), None), Outcome::Missing);
        assert_eq!(
            authenticate(&s, &values(&["A-KEY"]), None),
            Outcome::Invalid(Invalid::Unknown),
            "keys are case-sensitive"
        );
        assert_eq!(
            authenticate(&s, &values(&["a-key", "a-key"]), None),
            Outcome::Invalid(Invalid::Several)
        );
    }

    #[test]
    fn the_query_is_ignored_unless_configured() {
        let s = settings("");
        assert_eq!(
            authenticate(&s, &[], Some("/p?api_key=a-key")),
            Outcome::Missing
        );
    }

    #[test]
    fn a_key_in_the_query_is_percent_decoded() {
        let s = settings(r#", "query": "api_key""#);
        assert_eq!(
            authenticate(&s, &[], Some("/p?x=1&api_key=a-key")),
            Outcome::Allowed { consumer: "alice" }
        );
        assert_eq!(
            authenticate(&s, &[], Some("/p?api_key=b%2Bkey%3D")),
            Outcome::Allowed { consumer: "bob" }
        );
        assert_eq!(
            authenticate(&s, &[], Some("/p?api_key=b+key=")),
            Outcome::Allowed { consumer: "bob" },
            "+ is not a space"
        );
        assert_eq!(authenticate(&s, &[], Some("/p?api_key=")), Outcome::Missing);
        assert_eq!(authenticate(&s, &[], Some("/p")), Outcome::Missing);
        assert_eq!(
            authenticate(&s, &[], Some("/p?api_key=nope")),
            Outcome::Invalid(Invalid::Unknown)
        );
        assert_eq!(
            authenticate(&s, &[], Some("/p?api_key=a-key&api_key=b%2Bkey%3D")),
            Outcome::Invalid(Invalid::Several)
        );
    }

    #[test]
    fn the_header_wins_over_the_query() {
        let s = settings(r#", "query": "api_key""#);
        assert_eq!(
            authenticate(&s, &values(&["a-key"]), Some("/p?api_key=nope")),
            Outcome::Allowed { consumer: "alice" }
        );
        assert_eq!(
            authenticate(&s, &values(&["nope"]), Some("/p?api_key=a-key")),
            Outcome::Invalid(Invalid::Unknown)
        );
        assert_eq!(
            authenticate(&s, &values(&[""]), Some("/p?api_key=a-key")),
            Outcome::Allowed { consumer: "alice" },
            "an empty header counts as absent"
        );
    }

    #[test]
    fn the_query_parameter_is_stripped_only_when_asked() {
        let s = settings(r#", "query": "api_key""#);
        assert_eq!(
            upstream_target(&s, "/p?a=1&api_key=a-key&b=2").as_deref(),
            Some("/p?a=1&b=2")
        );
        assert_eq!(
            upstream_target(&s, "/p?api_key=a-key").as_deref(),
            Some("/p")
        );
        assert_eq!(upstream_target(&s, "/p?a=1"), None);
        let keep = settings(r#", "query": "api_key", "strip": false"#);
        assert_eq!(upstream_target(&keep, "/p?api_key=a-key"), None);
        assert_eq!(upstream_target(&settings(""), "/p?api_key=a-key"), None);
    }

    #[test]
    fn challenges_and_messages_name_where_the_key_goes() {
        let s = settings("");
        assert_eq!(challenge(&s), r#"ApiKey header="x-api-key""#);
        assert_eq!(
            missing_message(&s),
            "this route needs an API key in the `x-api-key` header"
        );
        let s = settings(r#", "header": "X-Token", "query": "key""#);
        assert_eq!(challenge(&s), r#"ApiKey header="x-token", query="key""#);
        assert_eq!(
            missing_message(&s),
            "this route needs an API key, in the `x-token` header or the `key` query parameter"
        );
        let s = settings(r#", "query": "a\"b\\c""#);
        assert_eq!(
            challenge(&s),
            r#"ApiKey header="x-api-key", query="a\"b\\c""#
        );
    }
}
