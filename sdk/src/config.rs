//! Turning the config JSON the proxy passes to `init` into `Filter::Config`.

use serde::de::DeserializeOwned;

/// Deserialises a filter's config from `json`, the chain entry's `config`
/// (`null` when it has none).
///
/// When `json` is `null` and `C` does not accept null, `C` is built from `{}`
/// instead, so that a struct whose fields are all optional needs no config.
/// Errors carry serde_json's message, with a line and column where they
/// help.
pub(crate) fn parse<C: DeserializeOwned>(json: &str) -> Result<C, String> {
    let err = match serde_json::from_str(json) {
        Ok(config) => return Ok(config),
        Err(err) => err,
    };
    if json.trim() != "null" {
        return Err(format!("invalid config: {err}"));
    }
    match serde_json::from_str("{}") {
        Ok(config) => Ok(config),
        Err(err) => {
            let message = err.to_string();
            // The position in the stand-in `{}` means nothing to the user.
            let position = format!(" at line {} column {}", err.line(), err.column());
            let message = message.strip_suffix(&position).unwrap_or(&message);
            Err(format!(
                "this filter needs a config, but none was given ({message})"
            ))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::parse;
    use serde::Deserialize;

    #[derive(Debug, Deserialize, PartialEq)]
    struct Optional {
        greeting: Option<String>,
    }

    #[derive(Debug, Deserialize, PartialEq)]
    struct Required {
        #[allow(dead_code)]
        keys: Vec<String>,
    }

    #[test]
    fn unit_and_option_accept_null() {
        assert_eq!(parse::<()>("null"), Ok(()));
        assert_eq!(parse::<Option<Optional>>("null"), Ok(None));
    }

    #[test]
    fn struct_with_optional_fields_accepts_null() {
        assert_eq!(parse::<Optional>("null"), Ok(Optional { greeting: None }));
        assert_eq!(
            parse::<Optional>(r#"{"greeting":"hi"}"#),
            Ok(Optional {
                greeting: Some("hi".into())
            })
        );
    }

    #[test]
    fn missing_required_config_names_the_field() {
        assert_eq!(
            parse::<Required>("null").unwrap_err(),
            "this filter needs a config, but none was given (missing field `keys`)"
        );
    }

    #[test]
    fn bad_config_reports_serde_message_with_position() {
        let err = parse::<Optional>("{\n  \"greeting\": 7\n}").unwrap_err();
        assert_eq!(
            err,
            "invalid config: invalid type: integer `7`, expected a string at line 2 column 15"
        );
        let err = parse::<Optional>("{\"greeting\": ").unwrap_err();
        assert!(
            err.starts_with("invalid config: EOF while parsing"),
            "{err}"
        );
    }
}
