//! The filter's config and its validation into [`Ops`].

use std::collections::BTreeMap;

use serde::Deserialize;

use crate::ops::Ops;
use crate::template::{Side, Template};

/// The config as written: the operations on the request and the response.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// Operations on the request sent upstream.
    #[serde(default)]
    pub request: OpsConfig,
    /// Operations on the response sent to the client.
    #[serde(default)]
    pub response: OpsConfig,
}

/// The operations of one section, as written.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct OpsConfig {
    /// Header → template: set, replacing any values.
    #[serde(default)]
    pub set: BTreeMap<String, String>,
    /// Header → template: one more value.
    #[serde(default)]
    pub add: BTreeMap<String, String>,
    /// Headers to remove.
    #[serde(default)]
    pub remove: Vec<String>,
    /// From → to.
    #[serde(default)]
    pub rename: BTreeMap<String, String>,
    /// Header → template: set only when the header is absent.
    #[serde(default)]
    pub set_if_absent: BTreeMap<String, String>,
}

impl Config {
    /// Checks every name and template; returns the (request, response)
    /// operations.
    pub fn validate(self) -> Result<(Ops, Ops), String> {
        let request = section(Side::Request, self.request)?;
        let response = section(Side::Response, self.response)?;
        if request.is_empty() && response.is_empty() {
            return Err(
                "headers needs at least one operation under `request` or `response`, \
                 e.g. {\"request\": {\"set\": {\"x-env\": \"prod\"}}}"
                    .into(),
            );
        }
        Ok((request, response))
    }
}

/// Checks one section.
fn section(side: Side, config: OpsConfig) -> Result<Ops, String> {
    let s = side.section();

    let mut remove: Vec<String> = Vec::with_capacity(config.remove.len());
    for (i, name) in config.remove.iter().enumerate() {
        let lower = checked_name(name).map_err(|e| format!("{s}.remove[{i}]: {e}"))?;
        if remove.contains(&lower) {
            return Err(format!(
                "{s}.remove[{i}]: `{name}` is listed twice (header names ignore case)"
            ));
        }
        remove.push(lower);
    }
    remove.sort_unstable();

    let mut rename: Vec<(String, String)> = Vec::with_capacity(config.rename.len());
    for (from, to) in &config.rename {
        let at = format!("{s}.rename.{from}");
        let from = checked_name(from).map_err(|e| format!("{at}: {e}"))?;
        let to = checked_name(to).map_err(|e| format!("{at}: target: {e}"))?;
        if from == to {
            return Err(format!("{at}: renames the header to itself"));
        }
        if rename.iter().any(|(seen, _)| *seen == from) {
            return Err(format!(
                "{at}: `{from}` is listed twice (header names ignore case)"
            ));
        }
        if remove.contains(&from) {
            return Err(format!(
                "{at}: `{from}` is also in `remove`, which runs first: there would be nothing to rename"
            ));
        }
        rename.push((from, to));
    }
    rename.sort_unstable();
    for (from, to) in &rename {
        if rename.iter().any(|(other, _)| other == to) {
            return Err(format!(
                "{s}.rename.{from}: the target `{to}` is itself renamed; rename `{from}` \
                 straight to the final name (renames do not chain)"
            ));
        }
        if let Some((other, _)) = rename.iter().find(|(other, t)| t == to && other != from) {
            return Err(format!(
                "{s}.rename: `{from}` and `{other}` are both renamed to `{to}`"
            ));
        }
    }

    let set = templated(side, "set", config.set)?;
    let set_if_absent = templated(side, "set_if_absent", config.set_if_absent)?;
    let add = templated(side, "add", config.add)?;
    if let Some((name, _)) = set_if_absent
        .iter()
        .find(|(name, _)| set.iter().any(|(n, _)| n == name))
    {
        return Err(format!(
            "{s}.set_if_absent.{name}: `{name}` is also in `set`, which runs first: \
             set_if_absent would never apply"
        ));
    }

    Ok(Ops {
        remove,
        rename,
        set,
        set_if_absent,
        add,
    })
}

/// Checks the names and parses the templates of `set`, `set_if_absent` or
/// `add`; the result is in name order.
fn templated(
    side: Side,
    op: &str,
    map: BTreeMap<String, String>,
) -> Result<Vec<(String, Template)>, String> {
    let s = side.section();
    let mut checked: Vec<(String, Template)> = Vec::with_capacity(map.len());
    for (name, text) in map {
        let at = format!("{s}.{op}.{name}");
        let lower = checked_name(&name).map_err(|e| format!("{at}: {e}"))?;
        if checked.iter().any(|(seen, _)| *seen == lower) {
            return Err(format!(
                "{at}: `{name}` is listed twice (header names ignore case)"
            ));
        }
        let template = Template::parse(&text, side).map_err(|e| format!("{at}: {e}"))?;
        checked.push((lower, template));
    }
    checked.sort_unstable_by(|a, b| a.0.cmp(&b.0));
    Ok(checked)
}

/// Headers no operation may touch, with the reason.
const PROTECTED: [(&str, &str); 8] = [
    (
        "content-length",
        "the proxy manages this header (it frames the message)",
    ),
    (
        "transfer-encoding",
        "the proxy manages this header (it frames the message)",
    ),
    (
        "host",
        "the proxy forwards `host` as the client sent it; this filter does not change it",
    ),
    ("connection", HOP_BY_HOP),
    ("keep-alive", HOP_BY_HOP),
    ("proxy-connection", HOP_BY_HOP),
    ("te", HOP_BY_HOP),
    ("upgrade", HOP_BY_HOP),
];

const HOP_BY_HOP: &str = "a hop-by-hop header: the proxy removes it in both directions";

/// Checks a header name as written; returns it lower-cased.
fn checked_name(name: &str) -> Result<String, String> {
    let lower = weft_sdk::header::check_name(name)?;
    if let Some((_, why)) = PROTECTED.iter().find(|(protected, _)| *protected == lower) {
        return Err(format!("`{lower}` cannot be changed: {why}"));
    }
    Ok(lower)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::template::Var;

    fn parse(json: &str) -> Result<(Ops, Ops), String> {
        let config: Config = serde_json::from_str(json).map_err(|e| e.to_string())?;
        config.validate()
    }

    fn err(json: &str) -> String {
        parse(json).expect_err(json)
    }

    fn t(text: &str, side: Side) -> Template {
        Template::parse(text, side).unwrap()
    }

    #[test]
    fn a_full_config_is_checked_lower_cased_and_sorted() {
        let (request, response) = parse(
            r#"{
              "request": {
                "remove": ["X-Internal", "cookie"],
                "rename": {"X-Old": "X-New"},
                "set": {"X-Route": "%ROUTE%", "a": "1"},
                "set_if_absent": {"x-request-start": "%START_TIME%"},
                "add": {"Via": "weft"}
              },
              "response": {"set": {"x-status": "%STATUS%"}, "remove": ["server"]}
            }"#,
        )
        .unwrap();
        let rq = Side::Request;
        assert_eq!(
            request,
            Ops {
                remove: vec!["cookie".into(), "x-internal".into()],
                rename: vec![("x-old".into(), "x-new".into())],
                set: vec![
                    ("a".into(), t("1", rq)),
                    ("x-route".into(), t("%ROUTE%", rq))
                ],
                set_if_absent: vec![("x-request-start".into(), t("%START_TIME%", rq))],
                add: vec![("via".into(), t("weft", rq))],
            }
        );
        assert_eq!(response.remove, ["server"]);
        assert_eq!(
            response.vars().collect::<Vec<_>>(),
            [&Var::Status],
            "{response:?}"
        );
    }

    #[test]
    fn one_operation_is_enough() {
        let (request, response) = parse(r#"{"response": {"remove": ["server"]}}"#).unwrap();
        assert!(request.is_empty());
        assert!(!response.is_empty());
    }

    #[test]
    fn nothing_to_do_is_refused() {
        for json in [
            "{}",
            r#"{"request": {}}"#,
            r#"{"request": {"set": {}, "remove": []}, "response": {"rename": {}}}"#,
        ] {
            assert!(
                err(json).starts_with("headers needs at least one operation"),
                "{json}"
            );
        }
    }

    #[test]
    fn unknown_fields_are_refused() {
        assert!(err(r#"{"requests": {}}"#).starts_with("unknown field `requests`"));
        assert!(err(r#"{"request": {"append": {}}}"#).starts_with("unknown field `append`"));
    }

    #[test]
    fn bad_names_are_refused_with_their_path() {
        assert_eq!(
            err(r#"{"request": {"set": {"bad name": "x"}}}"#),
            "request.set.bad name: invalid header name `bad name`: ' ' is not allowed \
             (names are letters, digits and !#$%&'*+-.^_`|~)"
        );
        assert_eq!(
            err(r#"{"response": {"add": {"": "x"}}}"#),
            "response.add.: the header name is empty"
        );
        assert!(
            err(r#"{"request": {"remove": ["ok", ":path"]}}"#)
                .starts_with("request.remove[1]: invalid header name `:path`")
        );
        assert!(
            err(r#"{"request": {"rename": {"a": "b c"}}}"#)
                .starts_with("request.rename.a: target: invalid header name `b c`")
        );
    }

    #[test]
    fn protected_headers_are_refused_in_every_operation() {
        assert_eq!(
            err(r#"{"request": {"set": {"Content-Length": "1"}}}"#),
            "request.set.Content-Length: `content-length` cannot be changed: \
             the proxy manages this header (it frames the message)"
        );
        assert_eq!(
            err(r#"{"request": {"add": {"host": "example.com"}}}"#),
            "request.add.host: `host` cannot be changed: the proxy forwards `host` as the \
             client sent it; this filter does not change it"
        );
        assert_eq!(
            err(r#"{"response": {"set_if_absent": {"connection": "close"}}}"#),
            "response.set_if_absent.connection: `connection` cannot be changed: \
             a hop-by-hop header: the proxy removes it in both directions"
        );
        assert!(
            err(r#"{"request": {"rename": {"x-host": "Host"}}}"#)
                .starts_with("request.rename.x-host: target: `host` cannot be changed")
        );
        assert!(
            err(r#"{"request": {"rename": {"host": "x-host"}}}"#)
                .starts_with("request.rename.host: `host` cannot be changed")
        );
        assert!(
            err(r#"{"request": {"remove": ["transfer-encoding"]}}"#)
                .starts_with("request.remove[0]: `transfer-encoding` cannot be changed")
        );
        for name in ["keep-alive", "proxy-connection", "te", "upgrade"] {
            let json = format!(r#"{{"response": {{"set": {{"{name}": "x"}}}}}}"#);
            assert!(err(&json).contains("hop-by-hop"), "{name}");
        }
    }

    #[test]
    fn bad_templates_are_refused_with_their_path() {
        assert!(
            err(r#"{"request": {"set": {"x-a": "%NOPE%"}}}"#)
                .starts_with("request.set.x-a: unknown variable `%NOPE%` (known: %REQUEST_ID%,")
        );
        assert_eq!(
            err(r#"{"request": {"add": {"x-a": "%STATUS%"}}}"#),
            "request.add.x-a: %STATUS% is only available in `response` operations"
        );
        assert_eq!(
            err(r#"{"response": {"set_if_absent": {"x-a": "line\nbreak"}}}"#),
            "response.set_if_absent.x-a: the value contains the control character '\\n', \
             which is not allowed in a header"
        );
        assert!(
            err(r#"{"response": {"set": {"x-a": "100%"}}}"#)
                .starts_with("response.set.x-a: unterminated variable")
        );
        // The response side knows the response variables.
        assert!(parse(r#"{"response": {"set": {"x-a": "%STATUS% %RESP(server)%"}}}"#).is_ok());
    }

    #[test]
    fn names_listed_twice_are_refused() {
        assert_eq!(
            err(r#"{"request": {"set": {"X-A": "1", "x-a": "2"}}}"#),
            "request.set.x-a: `x-a` is listed twice (header names ignore case)"
        );
        assert_eq!(
            err(r#"{"request": {"remove": ["a", "A"]}}"#),
            "request.remove[1]: `A` is listed twice (header names ignore case)"
        );
        assert!(err(r#"{"request": {"rename": {"A": "b", "a": "c"}}}"#).contains("listed twice"));
    }

    #[test]
    fn contradictory_operations_are_refused() {
        assert_eq!(
            err(r#"{"request": {"set": {"x-a": "1"}, "set_if_absent": {"X-A": "2"}}}"#),
            "request.set_if_absent.x-a: `x-a` is also in `set`, which runs first: \
             set_if_absent would never apply"
        );
        assert_eq!(
            err(r#"{"request": {"remove": ["x-a"], "rename": {"x-a": "x-b"}}}"#),
            "request.rename.x-a: `x-a` is also in `remove`, which runs first: \
             there would be nothing to rename"
        );
        assert_eq!(
            err(r#"{"response": {"rename": {"a": "a"}}}"#),
            "response.rename.a: renames the header to itself"
        );
        assert_eq!(
            err(r#"{"request": {"rename": {"a": "b", "b": "c"}}}"#),
            "request.rename.a: the target `b` is itself renamed; rename `a` straight to the \
             final name (renames do not chain)"
        );
        assert_eq!(
            err(r#"{"request": {"rename": {"a": "c", "b": "c"}}}"#),
            "request.rename: `a` and `b` are both renamed to `c`"
        );
    }

    #[test]
    fn combinations_that_make_sense_are_accepted() {
        // set and add of one header: two values. remove and set: a reset.
        // remove of a rename target: the rename replaces it anyway.
        parse(
            r#"{"request": {"set": {"x-a": "1"}, "add": {"x-a": "2"}, "remove": ["x-a", "x-c"],
                            "rename": {"x-b": "x-c"}}}"#,
        )
        .unwrap();
    }
}
