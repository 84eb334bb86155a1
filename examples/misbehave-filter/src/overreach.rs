//! Misbehaviours that answer rather than fail: pausing or retrying for
//! ever, and callouts that reach for more than they are granted.

use std::time::Duration;

use serde::Deserialize;
use weft_sdk::http::{self, HttpRequest};
use weft_sdk::{Action, Request};

/// `callout`: the calls made in `request_headers`.
#[derive(Deserialize, Clone, Debug, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct Callouts {
    /// The URL called.
    pub url: String,
    /// A `Host` header to send (a virtual host the grant does not name).
    #[serde(default)]
    pub host: Option<String>,
    /// How many calls, one after the other.
    #[serde(default = "one")]
    pub times: u32,
    /// Each call's timeout (0: the proxy's default).
    #[serde(default)]
    pub timeout_ms: u32,
}

fn one() -> u32 {
    1
}

/// Pauses again whenever called: `continue-after(ms)` for ever.
pub fn pause_forever(ms: u64) -> Action {
    Action::ContinueAfter(Duration::from_millis(ms))
}

/// Asks for a retry after `ms` whenever called.
pub fn retry_forever(ms: u64) -> Action {
    Action::Retry {
        delay: Duration::from_millis(ms),
    }
}

/// Makes the calls and sends their outcomes upstream in the request header
/// `x-callouts`, `;`-separated: `status=200` or `error=…`; and the last
/// answer's body (its first 4000 bytes) in `x-callout-body`.
pub fn call_out(callouts: &Callouts, req: &Request) {
    let mut request = HttpRequest::get(callouts.url.as_str());
    request.timeout_ms = callouts.timeout_ms;
    if let Some(host) = &callouts.host {
        request = request.header("host", host.as_str());
    }
    let mut body = Vec::new();
    let outcomes: Vec<String> = (0..callouts.times)
        .map(|_| match http::call(&request) {
            Ok(response) => {
                body = response.body;
                format!("status={}", response.status)
            }
            Err(e) => format!("error={e}"),
        })
        .collect();
    req.set_header("x-callouts", &printable(&outcomes.join(";")));
    let body = String::from_utf8_lossy(&body[..body.len().min(4000)]).into_owned();
    req.set_header("x-callout-body", &printable(&body));
}

/// `text` with what a header value cannot hold replaced by `?`.
fn printable(text: &str) -> String {
    text.chars()
        .map(|c| {
            if c.is_ascii_graphic() || c == ' ' {
                c
            } else {
                '?'
            }
        })
        .collect()
}
