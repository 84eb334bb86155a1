//! A test fixture that makes the host's behaviour observable: which phases
//! it calls, in which order and on which instance, what the bodies are, and
//! how often `on-done` runs. Config:
//!
//! ```json
//! { "phases": ["request_headers", "request_body", "response_headers", "response_body", "done"] }
//! ```
//!
//! With `"callout": "http://host:port/path"`, `request_headers` also makes
//! that `http-call` and sends its outcome upstream in the request header
//! `x-callout` (`status=200 bytes=12` or `error=…`).
//!
//! With `"properties": ["peer.uri_sans", …]`, `request_headers` also sends
//! each property upstream in the request header `x-property-<name>` (dots
//! as dashes: `x-property-peer-uri_sans`), `(none)` when absent.
//!
//! `phases` (default: all five) is exactly what `phases()` reports, so the
//! host must call those phases and no other. In each phase the filter:
//!
//! - `request_headers`: starts a fresh list of seen phases and records its
//!   own; sets the request header `x-done-count` to the shared-state counter
//!   `done` (`0` when absent);
//! - `request_body`: records; sets the request header `x-request-body-bytes`
//!   to the body's length and replaces the body with it upper-cased (ASCII);
//! - `response_headers`: records; sets the response header `x-seen` to the
//!   phases seen so far, comma-separated;
//! - `response_body`: records; appends `\n-- inspected\n` to the body and
//!   sets the response header `x-seen-body` to the phases seen so far;
//! - `done`: adds one to the shared counter `done` (compare-and-swap).
//!
//! The list of seen phases lives in the instance, so `x-seen` shows that
//! one instance served every phase of the request. It is only reset in
//! `request_headers`: without that phase it keeps growing across requests.

mod counter;

use serde::Deserialize;
use weft_sdk::{Action, Filter, Phases, Request, Response};

/// The config.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Config {
    /// The phases to implement; all when absent.
    #[serde(default)]
    phases: Option<Vec<Phase>>,
    /// A URL to call (`http-call`) in `request_headers`; the outcome goes
    /// upstream in the request header `x-callout`.
    #[serde(default)]
    callout: Option<String>,
    /// Properties to send upstream as `x-property-<name>` headers.
    #[serde(default)]
    properties: Vec<String>,
}

/// A phase, as named in the config.
#[derive(Deserialize, Clone, Copy, Debug, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
enum Phase {
    RequestHeaders,
    RequestBody,
    ResponseHeaders,
    ResponseBody,
    Done,
}

impl Phase {
    fn flag(self) -> Phases {
        match self {
            Phase::RequestHeaders => Phases::REQUEST_HEADERS,
            Phase::RequestBody => Phases::REQUEST_BODY,
            Phase::ResponseHeaders => Phases::RESPONSE_HEADERS,
            Phase::ResponseBody => Phases::RESPONSE_BODY,
            Phase::Done => Phases::DONE,
        }
    }
}

/// The five phases (not the `retry` flag: this filter never retries).
const EVERY_PHASE: Phases = Phases::REQUEST_HEADERS
    .union(Phases::REQUEST_BODY)
    .union(Phases::RESPONSE_HEADERS)
    .union(Phases::RESPONSE_BODY)
    .union(Phases::DONE);

/// The shared-state key of the `on-done` counter.
const DONE_KEY: &str = "done";
/// What `on-response-body` appends.
const BODY_SUFFIX: &[u8] = b"\n-- inspected\n";

struct Inspect {
    phases: Phases,
    callout: Option<String>,
    properties: Vec<String>,
    /// The phases seen by this instance since the last `request_headers`.
    seen: Vec<String>,
}

impl Inspect {
    fn record(&mut self, phase: &str) {
        self.seen.push(phase.to_string());
    }

    fn seen(&self) -> String {
        self.seen.join(",")
    }
}

#[weft_sdk::filter]
impl Filter for Inspect {
    type Config = Config;

    fn new(config: Config) -> Result<Self, String> {
        let phases = match config.phases {
            None => EVERY_PHASE,
            Some(list) => list
                .into_iter()
                .fold(Phases::empty(), |all, phase| all | phase.flag()),
        };
        Ok(Inspect {
            phases,
            callout: config.callout,
            properties: config.properties,
            seen: Vec::new(),
        })
    }

    fn phases(&self) -> Phases {
        self.phases
    }

    fn on_request_headers(&mut self, req: &Request) -> Action {
        self.seen.clear();
        self.record("request_headers");
        let done = counter::read(DONE_KEY);
        req.set_header("x-done-count", &done.to_string());
        if let Some(url) = &self.callout {
            let outcome = match weft_sdk::http::call(&weft_sdk::http::HttpRequest::get(url)) {
                Ok(r) => format!("status={} bytes={}", r.status, r.body.len()),
                Err(e) => format!("error={e}"),
            };
            let printable: String = outcome
                .chars()
                .map(|c| if c.is_ascii_graphic() { c } else { ' ' })
                .collect();
            req.set_header("x-callout", &printable);
        }
        for name in &self.properties {
            let value = weft_sdk::property::get(name).unwrap_or_else(|| "(none)".into());
            req.set_header(&format!("x-property-{}", name.replace('.', "-")), &value);
        }
        Action::Continue
    }

    fn on_request_body(&mut self, req: &Request) -> Action {
        self.record("request_body");
        let body = req.body().unwrap_or_default();
        req.set_header("x-request-body-bytes", &body.len().to_string());
        req.set_body(body.to_ascii_uppercase());
        Action::Continue
    }

    fn on_response_headers(&mut self, _req: &Request, resp: &Response) -> Action {
        self.record("response_headers");
        resp.set_header("x-seen", &self.seen());
        Action::Continue
    }

    fn on_response_body(&mut self, _req: &Request, resp: &Response) -> Action {
        self.record("response_body");
        let mut body = resp.body().unwrap_or_default();
        body.extend_from_slice(BODY_SUFFIX);
        resp.set_body(body);
        resp.set_header("x-seen-body", &self.seen());
        Action::Continue
    }

    fn on_done(&mut self, _req: &Request, _resp: &Response) {
        if let Err(err) = counter::increment(DONE_KEY) {
            weft_sdk::error!("inspect-filter: cannot count on-done: {err}");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn phases(json: &str) -> Result<Phases, String> {
        let config: Config = serde_json::from_str(json).map_err(|e| e.to_string())?;
        Inspect::new(config).map(|filter| filter.phases())
    }

    #[test]
    fn every_phase_by_default() {
        assert_eq!(phases("{}"), Ok(EVERY_PHASE));
        assert_eq!(phases(r#"{"phases": null}"#), Ok(EVERY_PHASE));
        assert!(!EVERY_PHASE.contains(Phases::RETRY));
    }

    #[test]
    fn exactly_the_configured_phases() {
        assert_eq!(
            phases(r#"{"phases": ["request_headers", "response_headers"]}"#),
            Ok(Phases::REQUEST_HEADERS | Phases::RESPONSE_HEADERS)
        );
        assert_eq!(
            phases(r#"{"phases": ["done", "request_body", "done"]}"#),
            Ok(Phases::DONE | Phases::REQUEST_BODY)
        );
        assert_eq!(phases(r#"{"phases": []}"#), Ok(Phases::empty()));
        assert_eq!(
            phases(
                r#"{"phases": ["request_headers", "request_body", "response_headers",
                               "response_body", "done"]}"#
            ),
            Ok(EVERY_PHASE)
        );
    }

    #[test]
    fn unknown_phases_and_fields_are_refused() {
        let err = phases(r#"{"phases": ["on_done"]}"#).unwrap_err();
        assert!(err.starts_with("unknown variant `on_done`"), "{err}");
        let err = phases(r#"{"phase": ["done"]}"#).unwrap_err();
        assert!(err.starts_with("unknown field `phase`"), "{err}");
    }

    #[test]
    fn seen_phases_join_in_order() {
        let mut filter = Inspect {
            phases: Phases::all(),
            callout: None,
            properties: Vec::new(),
            seen: Vec::new(),
        };
        assert_eq!(filter.seen(), "");
        filter.record("request_headers");
        filter.record("response_headers");
        assert_eq!(filter.seen(), "request_headers,response_headers");
    }
}
