//! The case file of `weft filter test`: requests, the upstream's answers,
//! and what is expected. The format is documented in docs/filter-guide.md
//! ("Test the component: weft filter test"); unknown keys are errors.

use std::collections::BTreeMap;
use std::net::IpAddr;

use serde::Deserialize;

/// The whole file.
#[derive(Deserialize, Debug)]
#[serde(deny_unknown_fields)]
pub struct CaseFile {
    /// The cases, run in order against one proxy.
    pub cases: Vec<Case>,
}

/// One request and what should come of it.
#[derive(Deserialize, Debug)]
#[serde(deny_unknown_fields)]
pub struct Case {
    /// Printed on its line.
    pub name: String,
    /// What the client sends.
    pub request: CaseRequest,
    /// What the upstream answers: one response for every attempt, or one
    /// per attempt (the last repeated).
    #[serde(default)]
    pub upstream: Upstream,
    /// What should happen.
    #[serde(default)]
    pub expect: Expect,
}

/// Header values: one string, or several (sent as several lines).
#[derive(Deserialize, Debug, Clone)]
#[serde(untagged)]
pub enum Values {
    One(String),
    Many(Vec<String>),
}

impl Values {
    pub fn all(&self) -> Vec<&str> {
        match self {
            Values::One(v) => vec![v.as_str()],
            Values::Many(v) => v.iter().map(String::as_str).collect(),
        }
    }
}

/// `request:`
#[derive(Deserialize, Debug)]
#[serde(deny_unknown_fields)]
pub struct CaseRequest {
    #[serde(default = "get")]
    pub method: String,
    /// Path and query.
    pub path: String,
    #[serde(default)]
    pub headers: BTreeMap<String, Values>,
    #[serde(default)]
    pub body: Option<String>,
    /// The client's address: a loopback IP (`127.0.0.2`) the request is
    /// sent from, so the filter's `peer_ip` is this.
    #[serde(default)]
    pub client: Option<IpAddr>,
}

fn get() -> String {
    "GET".into()
}

/// `upstream:` one response or a list, one per attempt.
#[derive(Deserialize, Debug)]
#[serde(untagged)]
pub enum Upstream {
    One(UpstreamResponse),
    PerAttempt(Vec<UpstreamResponse>),
}

impl Default for Upstream {
    fn default() -> Self {
        Upstream::One(UpstreamResponse::default())
    }
}

impl Upstream {
    /// The answer to attempt `n` (from 0).
    pub fn response(&self, n: usize) -> &UpstreamResponse {
        match self {
            Upstream::One(r) => r,
            Upstream::PerAttempt(list) => list.get(n).or(list.last()).unwrap_or(&DEFAULT_RESPONSE),
        }
    }
}

static DEFAULT_RESPONSE: UpstreamResponse = UpstreamResponse {
    status: 200,
    headers: BTreeMap::new(),
    body: String::new(),
};

/// What the upstream answers.
#[derive(Deserialize, Debug, Clone)]
#[serde(deny_unknown_fields)]
pub struct UpstreamResponse {
    #[serde(default = "ok")]
    pub status: u16,
    #[serde(default)]
    pub headers: BTreeMap<String, Values>,
    #[serde(default)]
    pub body: String,
}

fn ok() -> u16 {
    200
}

impl Default for UpstreamResponse {
    fn default() -> Self {
        DEFAULT_RESPONSE.clone()
    }
}

/// `expect:` every key given is checked; none given checks nothing.
#[derive(Deserialize, Debug, Default)]
#[serde(deny_unknown_fields)]
pub struct Expect {
    /// Whether the request reached the upstream (`false`: a filter
    /// answered, or failed).
    pub upstream: Option<bool>,
    /// The status the client got.
    pub status: Option<u16>,
    /// Headers the client got, with these values (all of them, in order,
    /// for a list).
    #[serde(default)]
    pub headers: BTreeMap<String, Values>,
    /// Headers the client did not get.
    #[serde(default)]
    pub headers_absent: Vec<String>,
    /// The body the client got, exactly.
    pub body: Option<String>,
    /// Text the client's body contains.
    pub body_contains: Option<String>,
    /// Headers the upstream received (in its last attempt).
    #[serde(default)]
    pub upstream_headers: BTreeMap<String, Values>,
    /// Headers the upstream did not receive.
    #[serde(default)]
    pub upstream_headers_absent: Vec<String>,
    /// The path (and query) the upstream received.
    pub upstream_path: Option<String>,
    /// The method the upstream received.
    pub upstream_method: Option<String>,
    /// The body the upstream received.
    pub upstream_body: Option<String>,
    /// How many times the request was sent upstream (retries count).
    pub attempts: Option<usize>,
    /// `true`: a filter failed (the 500 `filter_failed`); text: it failed
    /// and its report (message and backtrace) contains this text. Absent
    /// or `false`: a filter failure fails the case.
    pub failure: Option<FailureExpect>,
}

/// `expect.failure:`
#[derive(Deserialize, Debug)]
#[serde(untagged)]
pub enum FailureExpect {
    Flag(bool),
    Contains(String),
}

/// What the upstream received, one per attempt.
#[derive(Debug, Clone)]
pub struct Received {
    pub method: String,
    pub path: String,
    pub headers: http::HeaderMap,
    pub body: Vec<u8>,
}

/// What came back to the client.
pub struct Outcome {
    pub status: u16,
    pub headers: http::HeaderMap,
    pub body: Vec<u8>,
    /// The upstream's requests, in order.
    pub received: Vec<Received>,
    /// The failure report when a filter failed (from the 500's details).
    pub failure: Option<String>,
}

/// The first difference between `expect` and `got`, as `expected …, got …`.
pub fn check(expect: &Expect, got: &Outcome) -> Result<(), String> {
    let differ =
        |what: &str, want: String, have: String| Err(format!("expected {what} {want}, got {have}"));
    match &expect.failure {
        // Absent is `false`: a failure the case does not expect fails it.
        Some(FailureExpect::Flag(false)) | None => {
            if let Some(report) = &got.failure {
                return Err(match expect.status {
                    Some(status) if status != got.status => format!(
                        "expected status {status}, got {} because the filter failed: {report}",
                        got.status
                    ),
                    _ => format!("expected no filter failure, got {report}"),
                });
            }
        }
        Some(FailureExpect::Flag(true)) if got.failure.is_none() => {
            return Err(format!(
                "expected a filter failure, got status {}",
                got.status
            ));
        }
        Some(FailureExpect::Contains(text)) => match &got.failure {
            None => {
                return Err(format!(
                    "expected a filter failure containing {text:?}, got status {}",
                    got.status
                ));
            }
            Some(report) if !report.contains(text.as_str()) => {
                return Err(format!(
                    "expected a filter failure containing {text:?}, got {report}"
                ));
            }
            Some(_) => {}
        },
        Some(FailureExpect::Flag(true)) => {}
    }
    if let Some(want) = expect.upstream {
        let reached = !got.received.is_empty();
        if want != reached {
            let say = |r: bool| if r { "reached" } else { "not reached" };
            return differ(
                "the upstream",
                say(want).into(),
                format!("{} (status {})", say(reached), got.status),
            );
        }
    }
    if let Some(status) = expect.status
        && status != got.status
    {
        return differ("status", status.to_string(), got.status.to_string());
    }
    check_headers("response header", &expect.headers, &got.headers)?;
    check_absent("response header", &expect.headers_absent, &got.headers)?;
    if let Some(body) = &expect.body
        && body.as_bytes() != got.body.as_slice()
    {
        return differ("body", format!("{body:?}"), show(&got.body));
    }
    if let Some(text) = &expect.body_contains
        && !String::from_utf8_lossy(&got.body).contains(text.as_str())
    {
        return differ("a body containing", format!("{text:?}"), show(&got.body));
    }
    if let Some(n) = expect.attempts
        && n != got.received.len()
    {
        return differ(
            "upstream attempts",
            n.to_string(),
            got.received.len().to_string(),
        );
    }
    let wants_upstream = !expect.upstream_headers.is_empty()
        || !expect.upstream_headers_absent.is_empty()
        || expect.upstream_path.is_some()
        || expect.upstream_method.is_some()
        || expect.upstream_body.is_some();
    if !wants_upstream {
        return Ok(());
    }
    let Some(last) = got.received.last() else {
        return Err(format!(
            "expected the upstream to receive the request, got no upstream request (status {})",
            got.status
        ));
    };
    check_headers("upstream header", &expect.upstream_headers, &last.headers)?;
    check_absent(
        "upstream header",
        &expect.upstream_headers_absent,
        &last.headers,
    )?;
    if let Some(path) = &expect.upstream_path
        && *path != last.path
    {
        return differ(
            "upstream path",
            format!("{path:?}"),
            format!("{:?}", last.path),
        );
    }
    if let Some(method) = &expect.upstream_method
        && !method.eq_ignore_ascii_case(&last.method)
    {
        return differ("upstream method", method.clone(), last.method.clone());
    }
    if let Some(body) = &expect.upstream_body
        && body.as_bytes() != last.body.as_slice()
    {
        return differ("upstream body", format!("{body:?}"), show(&last.body));
    }
    Ok(())
}

fn check_headers(
    what: &str,
    want: &BTreeMap<String, Values>,
    got: &http::HeaderMap,
) -> Result<(), String> {
    for (name, values) in want {
        let have: Vec<String> = got
            .get_all(name.as_str())
            .iter()
            .map(|v| String::from_utf8_lossy(v.as_bytes()).into_owned())
            .collect();
        let want = values.all();
        if have != want {
            let show = |v: &[&str]| match v {
                [] => "none".to_string(),
                [one] => format!("{one:?}"),
                many => format!("{many:?}"),
            };
            let have: Vec<&str> = have.iter().map(String::as_str).collect();
            return Err(format!(
                "expected {what} {name}: {}, got {}",
                show(&want),
                show(&have)
            ));
        }
    }
    Ok(())
}

fn check_absent(what: &str, names: &[String], got: &http::HeaderMap) -> Result<(), String> {
    for name in names {
        if let Some(v) = got.get(name.as_str()) {
            return Err(format!(
                "expected no {what} {name}, got {:?}",
                String::from_utf8_lossy(v.as_bytes())
            ));
        }
    }
    Ok(())
}

/// A body for a message: text, cut at 200 bytes.
fn show(body: &[u8]) -> String {
    let text = String::from_utf8_lossy(&body[..body.len().min(200)]).into_owned();
    if body.len() > 200 {
        format!("{text:?}… ({} bytes)", body.len())
    } else {
        format!("{text:?}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn outcome(status: u16) -> Outcome {
        Outcome {
            status,
            headers: http::HeaderMap::new(),
            body: b"hi".to_vec(),
            received: Vec::new(),
            failure: None,
        }
    }

    fn expect(yaml: &str) -> Expect {
        serde_yaml::from_str(yaml).unwrap()
    }

    #[test]
    fn each_difference_says_what_was_expected_and_what_came() {
        let got = outcome(401);
        assert_eq!(
            check(&expect("status: 200"), &got).unwrap_err(),
            "expected status 200, got 401"
        );
        assert_eq!(
            check(&expect("upstream: true"), &got).unwrap_err(),
            "expected the upstream reached, got not reached (status 401)"
        );
        assert_eq!(
            check(&expect("headers: { x-a: b }"), &got).unwrap_err(),
            "expected response header x-a: \"b\", got none"
        );
        assert_eq!(
            check(&expect("upstream_headers: { x-a: b }"), &got).unwrap_err(),
            "expected the upstream to receive the request, got no upstream request (status 401)"
        );
        assert_eq!(
            check(&expect("body: yo"), &got).unwrap_err(),
            "expected body \"yo\", got \"hi\""
        );
        assert!(check(&expect("{ status: 401, upstream: false, body: hi }"), &got).is_ok());
    }

    #[test]
    fn failures_are_expected_or_reported() {
        let mut got = outcome(500);
        got.failure = Some("trapped: boom; #0 my::helper".into());
        assert!(check(&expect("failure: true"), &got).is_ok());
        assert!(check(&expect("failure: my::helper"), &got).is_ok());
        assert_eq!(
            check(&expect("status: 200"), &got).unwrap_err(),
            "expected status 200, got 500 because the filter failed: trapped: boom; #0 my::helper"
        );
        assert_eq!(
            check(&expect("{}"), &got).unwrap_err(),
            "expected no filter failure, got trapped: boom; #0 my::helper"
        );
        assert_eq!(
            check(&expect("failure: true"), &outcome(200)).unwrap_err(),
            "expected a filter failure, got status 200"
        );
    }

    #[test]
    fn unknown_keys_are_refused() {
        let err = serde_yaml::from_str::<CaseFile>(
            "cases: [{ name: a, request: { path: / }, expect: { stauts: 200 } }]",
        )
        .unwrap_err();
        assert!(err.to_string().contains("unknown field `stauts`"), "{err}");
    }
}
