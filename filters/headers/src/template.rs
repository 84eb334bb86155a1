//! Header value templates: literal text with `%VAR%` substitutions, parsed
//! when the config loads and rendered per request against a lookup.

use std::fmt;

/// Which message an operation changes; decides which variables it may use.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Side {
    /// The request sent upstream.
    Request,
    /// The response sent to the client.
    Response,
}

impl Side {
    /// The config section of this side.
    pub fn section(self) -> &'static str {
        match self {
            Side::Request => "request",
            Side::Response => "response",
        }
    }
}

/// A variable a template refers to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Var {
    /// `%REQUEST_ID%`: the request's `x-request-id`.
    RequestId,
    /// `%PEER_ADDR%`: the client's `ip:port`.
    PeerAddr,
    /// `%PEER_IP%`: the client's IP address.
    PeerIp,
    /// `%ROUTE%`: the route's name.
    Route,
    /// `%CLUSTER%`: the route's cluster.
    Cluster,
    /// `%LISTENER%`: the listener's name.
    Listener,
    /// `%METHOD%`: the request method.
    Method,
    /// `%PATH%`: the request path with its query.
    Path,
    /// `%AUTHORITY%`: the request's authority (`Host`).
    Authority,
    /// `%START_TIME%`: when the request reached the filter, RFC 3339 UTC.
    StartTime,
    /// `%REQ(name)%`: a request header (lower-case name).
    Req(String),
    /// `%RESP(name)%`: a response header (lower-case name); response only.
    Resp(String),
    /// `%STATUS%`: the response status; response only.
    Status,
}

/// The variables without an argument, by name.
const SIMPLE: [(&str, Var); 11] = [
    ("REQUEST_ID", Var::RequestId),
    ("PEER_ADDR", Var::PeerAddr),
    ("PEER_IP", Var::PeerIp),
    ("ROUTE", Var::Route),
    ("CLUSTER", Var::Cluster),
    ("LISTENER", Var::Listener),
    ("METHOD", Var::Method),
    ("PATH", Var::Path),
    ("AUTHORITY", Var::Authority),
    ("START_TIME", Var::StartTime),
    ("STATUS", Var::Status),
];

/// The list of known variables, for error messages.
const KNOWN: &str = "%REQUEST_ID%, %PEER_ADDR%, %PEER_IP%, %ROUTE%, %CLUSTER%, %LISTENER%, \
                     %METHOD%, %PATH%, %AUTHORITY%, %START_TIME%, %REQ(header)%, \
                     and in `response` operations %RESP(header)% and %STATUS%";

impl Var {
    /// Whether the variable is only known once there is a response.
    fn response_only(&self) -> bool {
        matches!(self, Var::Resp(_) | Var::Status)
    }
}

impl fmt::Display for Var {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Var::Req(name) => write!(f, "%REQ({name})%"),
            Var::Resp(name) => write!(f, "%RESP({name})%"),
            simple => {
                let name = SIMPLE
                    .iter()
                    .find(|(_, var)| var == simple)
                    .map_or("?", |(name, _)| name);
                write!(f, "%{name}%")
            }
        }
    }
}

/// One piece of a template.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Part {
    Literal(String),
    Var(Var),
}

/// A parsed template.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Template {
    parts: Vec<Part>,
}

impl Template {
    /// Parses `text` for an operation on `side`. `%%` is a literal `%`;
    /// every other `%` starts a variable that ends at the next `%`.
    pub fn parse(text: &str, side: Side) -> Result<Template, String> {
        let mut parts = Vec::new();
        let mut literal = String::new();
        let mut rest = text;
        while let Some(start) = rest.find('%') {
            literal.push_str(&rest[..start]);
            let after = &rest[start + 1..];
            let Some(end) = after.find('%') else {
                return Err(format!(
                    "unterminated variable `%{after}`: a literal percent sign is written `%%`"
                ));
            };
            let name = &after[..end];
            rest = &after[end + 1..];
            if name.is_empty() {
                literal.push('%');
                continue;
            }
            let var = parse_var(name)?;
            if var.response_only() && side == Side::Request {
                return Err(format!("{var} is only available in `response` operations"));
            }
            if !literal.is_empty() {
                parts.push(Part::Literal(std::mem::take(&mut literal)));
            }
            parts.push(Part::Var(var));
        }
        literal.push_str(rest);
        for part in &parts {
            if let Part::Literal(text) = part {
                check_literal(text)?;
            }
        }
        check_literal(&literal)?;
        if !literal.is_empty() {
            parts.push(Part::Literal(literal));
        }
        Ok(Template { parts })
    }

    /// The variables the template uses, in order.
    pub fn vars(&self) -> impl Iterator<Item = &Var> {
        self.parts.iter().filter_map(|part| match part {
            Part::Var(var) => Some(var),
            Part::Literal(_) => None,
        })
    }

    /// The text, when the template has no variable: the same for every
    /// request, and checked when the config loaded.
    pub fn literal(&self) -> Option<&str> {
        match self.parts.as_slice() {
            [] => Some(""),
            [Part::Literal(text)] => Some(text),
            _ => None,
        }
    }

    /// The text with every variable replaced by what `lookup` returns for it.
    pub fn render(&self, mut lookup: impl FnMut(&Var) -> String) -> String {
        let mut out = String::new();
        for part in &self.parts {
            match part {
                Part::Literal(text) => out.push_str(text),
                Part::Var(var) => out.push_str(&lookup(var)),
            }
        }
        out
    }
}

/// Parses the name between two `%`.
fn parse_var(name: &str) -> Result<Var, String> {
    if let Some((_, var)) = SIMPLE.iter().find(|(known, _)| *known == name) {
        return Ok(var.clone());
    }
    for (prefix, make) in [
        ("REQ(", Var::Req as fn(String) -> Var),
        ("RESP(", Var::Resp as fn(String) -> Var),
    ] {
        if let Some(arg) = name.strip_prefix(prefix) {
            let Some(header) = arg.strip_suffix(')') else {
                return Err(format!("`%{name}%`: missing `)`"));
            };
            if header.is_empty() {
                return Err(format!("`%{name}%` needs a header name"));
            }
            if let Some(bad) = header.chars().find(|&c| !is_token_char(c)) {
                return Err(format!(
                    "`%{name}%`: {bad:?} is not allowed in a header name"
                ));
            }
            return Ok(make(header.to_ascii_lowercase()));
        }
    }
    Err(format!("unknown variable `%{name}%` (known: {KNOWN})"))
}

/// Checks literal text of a template: it must be valid in a header value.
fn check_literal(text: &str) -> Result<(), String> {
    match invalid_value_char(text) {
        Some(bad) => Err(format!(
            "the value contains the control character {bad:?}, which is not allowed in a header"
        )),
        None => Ok(()),
    }
}

pub use weft_sdk::header::{invalid_value_char, is_token_char};

#[cfg(test)]
mod tests {
    use super::*;

    fn req(text: &str) -> Result<Template, String> {
        Template::parse(text, Side::Request)
    }

    fn resp(text: &str) -> Result<Template, String> {
        Template::parse(text, Side::Response)
    }

    /// Renders with every variable shown as `<its name>`.
    fn show(template: &Template) -> String {
        template.render(|var| format!("<{var}>"))
    }

    #[test]
    fn literal_text_renders_as_is() {
        let t = req("plain value, with spaces\tand tab").unwrap();
        assert_eq!(t.vars().count(), 0);
        assert_eq!(show(&t), "plain value, with spaces\tand tab");
        assert_eq!(show(&req("").unwrap()), "");
        assert_eq!(show(&req("héllo ✓").unwrap()), "héllo ✓");
    }

    #[test]
    fn every_variable_parses() {
        let all = "%REQUEST_ID% %PEER_ADDR% %PEER_IP% %ROUTE% %CLUSTER% %LISTENER% %METHOD% \
                   %PATH% %AUTHORITY% %START_TIME% %REQ(X-In)%";
        let t = req(all).unwrap();
        let vars: Vec<Var> = t.vars().cloned().collect();
        assert_eq!(
            vars,
            [
                Var::RequestId,
                Var::PeerAddr,
                Var::PeerIp,
                Var::Route,
                Var::Cluster,
                Var::Listener,
                Var::Method,
                Var::Path,
                Var::Authority,
                Var::StartTime,
                Var::Req("x-in".into()),
            ]
        );
        // Header names are lower-cased; rendering shows them so.
        assert!(
            show(&t).ends_with("<%START_TIME%> <%REQ(x-in)%>"),
            "{}",
            show(&t)
        );
        let t = resp("%STATUS% %RESP(Server)% %REQ(a)%").unwrap();
        assert_eq!(
            t.vars().cloned().collect::<Vec<_>>(),
            [
                Var::Status,
                Var::Resp("server".into()),
                Var::Req("a".into())
            ]
        );
    }

    #[test]
    fn literals_and_variables_mix() {
        let t = req("id=%REQUEST_ID%;route=%ROUTE%!").unwrap();
        let out = t.render(|var| match var {
            Var::RequestId => "abc".into(),
            Var::Route => "api".into(),
            other => panic!("unexpected {other:?}"),
        });
        assert_eq!(out, "id=abc;route=api!");
        // Adjacent variables.
        let t = req("%METHOD%%PATH%").unwrap();
        assert_eq!(show(&t), "<%METHOD%><%PATH%>");
    }

    #[test]
    fn double_percent_is_a_literal_percent() {
        assert_eq!(show(&req("100%%").unwrap()), "100%");
        assert_eq!(show(&req("%%%ROUTE%%%").unwrap()), "%<%ROUTE%>%");
        assert_eq!(show(&req("%%%%").unwrap()), "%%");
        assert_eq!(req("50%% off").unwrap().vars().count(), 0);
    }

    #[test]
    fn lookups_run_once_per_use_and_may_be_empty() {
        let t = req("[%REQ(a)%][%REQ(a)%]").unwrap();
        let mut calls = 0;
        let out = t.render(|_| {
            calls += 1;
            String::new()
        });
        assert_eq!(out, "[][]");
        assert_eq!(calls, 2);
    }

    #[test]
    fn unknown_variables_are_refused_with_the_list() {
        let err = req("%FOO%").unwrap_err();
        assert!(
            err.starts_with("unknown variable `%FOO%` (known: %REQUEST_ID%,"),
            "{err}"
        );
        assert!(err.contains("%RESP(header)% and %STATUS%"), "{err}");
        // Names are case-sensitive.
        assert!(
            req("%route%")
                .unwrap_err()
                .starts_with("unknown variable `%route%`")
        );
        assert!(req("% ROUTE%").is_err());
    }

    #[test]
    fn a_lone_percent_is_refused() {
        let err = req("50% off").unwrap_err();
        assert_eq!(
            err,
            "unterminated variable `% off`: a literal percent sign is written `%%`"
        );
        assert!(req("%ROUTE").is_err());
        assert!(req("%ROUTE%%").is_err());
    }

    #[test]
    fn header_variables_need_a_valid_name() {
        assert_eq!(req("%REQ()%").unwrap_err(), "`%REQ()%` needs a header name");
        assert_eq!(req("%REQ(x-a%").unwrap_err(), "`%REQ(x-a%`: missing `)`");
        assert_eq!(
            req("%REQ(x a)%").unwrap_err(),
            "`%REQ(x a)%`: ' ' is not allowed in a header name"
        );
        assert!(req("%REQ(:path)%").is_err());
        assert!(resp("%RESP()%").is_err());
    }

    #[test]
    fn response_variables_are_refused_in_request_operations() {
        assert_eq!(
            req("%STATUS%").unwrap_err(),
            "%STATUS% is only available in `response` operations"
        );
        assert_eq!(
            req("x %RESP(server)%").unwrap_err(),
            "%RESP(server)% is only available in `response` operations"
        );
    }

    #[test]
    fn control_characters_in_literals_are_refused() {
        let err = req("a\nb").unwrap_err();
        assert_eq!(
            err,
            "the value contains the control character '\\n', which is not allowed in a header"
        );
        assert!(req("%ROUTE%\r").is_err());
        assert!(req("\u{7f}%ROUTE%").is_err());
        assert!(req("x\0").is_err());
    }

    #[test]
    fn only_a_template_without_variables_is_literal() {
        assert_eq!(req("").unwrap().literal(), Some(""));
        assert_eq!(req("weft").unwrap().literal(), Some("weft"));
        assert_eq!(req("100%%").unwrap().literal(), Some("100%"));
        assert_eq!(req("%ROUTE%").unwrap().literal(), None);
        assert_eq!(req("a %ROUTE% b").unwrap().literal(), None);
    }

    #[test]
    fn invalid_value_characters() {
        assert_eq!(invalid_value_char("ok\tvalue ✓"), None);
        assert_eq!(invalid_value_char("a\r\nb"), Some('\r'));
        assert_eq!(invalid_value_char("\u{7f}"), Some('\u{7f}'));
    }
}
