//! [`Action`] and [`LocalResponse`]: what a phase answers.

use std::time::Duration;

use serde::Serialize;

use crate::bindings::weft::filter::types as wit;

/// What a phase asks the proxy to do next.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum Action {
    /// Go on: to the next filter, then to the upstream (request phases) or
    /// the client (response phases).
    Continue,
    /// Stop the chain and answer with this response. In a request phase the
    /// upstream is not contacted, and the filters that already ran still see
    /// the response in their response phases. In a response phase it
    /// replaces the upstream's response.
    Respond(LocalResponse),
    /// Pause the request for this long without holding a thread, then call
    /// this phase of this filter again (on the same instance, so `self`
    /// remembers why it paused); answer [`Action::Continue`] then to go on.
    /// The pauses of one request may add up to 5 minutes. Not in `on_done`.
    ContinueAfter(Duration),
    /// Only in `on_response_headers`, from a filter whose
    /// [`phases`](crate::Filter::phases) include [`Phases::RETRY`](crate::Phases::RETRY):
    /// discard this response and send the request upstream again after
    /// `delay`, to the cluster's next endpoint. The response phases then run
    /// again on the new response; [`property::attempt`](crate::property::attempt)
    /// counts the attempts. When the proxy cannot resend the request (see
    /// [`property::retryable`](crate::property::retryable)), it acts as
    /// [`Action::Continue`].
    Retry {
        /// How long to wait before sending again.
        delay: Duration,
    },
}

impl Action {
    /// Answers with `status` and `body`, without headers.
    pub fn respond(status: u16, body: impl Into<Vec<u8>>) -> Action {
        Action::Respond(LocalResponse::new(status).body(body))
    }

    pub(crate) fn into_wit(self) -> wit::Action {
        match self {
            Action::Continue => wit::Action::Continue,
            Action::Respond(response) => wit::Action::Respond(wit::LocalResponse {
                status: response.status,
                headers: response.headers,
                body: response.body,
            }),
            Action::ContinueAfter(pause) => wit::Action::ContinueAfter(millis(pause)),
            Action::Retry { delay } => wit::Action::Retry(wit::RetryRequest {
                delay_ms: millis(delay),
            }),
        }
    }
}

/// Whole milliseconds, saturating at `u32::MAX`.
fn millis(d: Duration) -> u32 {
    u32::try_from(d.as_millis()).unwrap_or(u32::MAX)
}

impl From<LocalResponse> for Action {
    fn from(response: LocalResponse) -> Action {
        Action::Respond(response)
    }
}

/// A response a filter produces itself, without the upstream.
///
/// ```
/// # use weft_sdk::{Action, LocalResponse};
/// let action: Action = LocalResponse::new(403)
///     .header("content-type", "text/plain")
///     .body("forbidden\n")
///     .into();
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LocalResponse {
    /// The status code, in `100..=999`.
    pub status: u16,
    /// The headers to send, in order, as (name, value).
    pub headers: Vec<(String, String)>,
    /// The body to send.
    pub body: Vec<u8>,
}

impl LocalResponse {
    /// A response with `status`, no headers and an empty body.
    pub fn new(status: u16) -> LocalResponse {
        LocalResponse {
            status,
            headers: Vec::new(),
            body: Vec::new(),
        }
    }

    /// A response with `status` whose body is `value` as JSON, with
    /// `content-type: application/json`.
    ///
    /// If `value` cannot be serialised (a map with non-string keys, a failing
    /// `Serialize` impl), the error is logged and the response is a 500
    /// without the value.
    pub fn json(status: u16, value: &impl Serialize) -> LocalResponse {
        match serde_json::to_vec(value) {
            Ok(body) => LocalResponse::new(status)
                .header("content-type", "application/json")
                .body(body),
            Err(err) => {
                crate::error!("LocalResponse::json: cannot serialise the body: {err}");
                LocalResponse::new(500)
                    .header("content-type", "text/plain")
                    .body("filter error: cannot serialise the response body\n")
            }
        }
    }

    /// Adds a header (keeping any already added under that name).
    pub fn header(mut self, name: impl Into<String>, value: impl Into<String>) -> LocalResponse {
        self.headers.push((name.into(), value.into()));
        self
    }

    /// A JSON error in the proxy's own shape, `{"error": code, "message":
    /// …, "request_id": …}` with `content-type: application/json`: clients
    /// see one error format whether the proxy or a filter answers.
    pub fn error(status: u16, code: &str, message: &str) -> LocalResponse {
        #[derive(Serialize)]
        struct ErrorBody<'a> {
            error: &'a str,
            message: &'a str,
            #[serde(skip_serializing_if = "Option::is_none")]
            request_id: Option<String>,
        }
        let body = ErrorBody {
            error: code,
            message,
            request_id: crate::property::request_id(),
        };
        LocalResponse::json(status, &body)
    }

    /// Sets the body.
    pub fn body(mut self, body: impl Into<Vec<u8>>) -> LocalResponse {
        self.body = body.into();
        self
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn builder_keeps_header_order_and_body() {
        let response = LocalResponse::new(404)
            .header("a", "1")
            .header("b", "2")
            .header("a", "3")
            .body("gone");
        assert_eq!(response.status, 404);
        assert_eq!(
            response.headers,
            [("a", "1"), ("b", "2"), ("a", "3")].map(|(n, v)| (n.to_string(), v.to_string()))
        );
        assert_eq!(response.body, b"gone");
    }

    #[test]
    fn json_sets_content_type() {
        let response = LocalResponse::json(201, &serde_json::json!({"ok": true}));
        assert_eq!(response.status, 201);
        assert_eq!(
            response.headers,
            [("content-type".to_string(), "application/json".to_string())]
        );
        assert_eq!(response.body, br#"{"ok":true}"#);
    }

    #[test]
    fn respond_is_a_local_response() {
        assert_eq!(
            Action::respond(503, "busy"),
            Action::Respond(LocalResponse::new(503).body("busy"))
        );
    }
}
