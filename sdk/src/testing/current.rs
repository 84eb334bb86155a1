//! The phase call running on this thread: what the native host functions
//! (`sys::native`) act on. A call moves the exchange and the instance's
//! state in for its duration and back out afterwards, as the proxy swaps an
//! exchange into an instance's store.

use std::cell::RefCell;
use std::rc::Rc;

use super::host::HostState;
use super::message::{Headers, Message};

thread_local! {
    static CURRENT: RefCell<Option<Call>> = const { RefCell::new(None) };
}

/// Which call is running: decides what the filter may read and change.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Phase {
    /// `init` (the filter's `new` and `phases`).
    Init,
    /// `on-request-headers`.
    RequestHeaders,
    /// `on-request-body`.
    RequestBody,
    /// `on-response-headers`.
    ResponseHeaders,
    /// `on-response-body`.
    ResponseBody,
    /// `on-done`.
    Done,
}

impl Phase {
    /// The phase's name as in the WIT contract.
    pub(crate) fn name(self) -> &'static str {
        match self {
            Phase::Init => "init",
            Phase::RequestHeaders => "on-request-headers",
            Phase::RequestBody => "on-request-body",
            Phase::ResponseHeaders => "on-response-headers",
            Phase::ResponseBody => "on-response-body",
            Phase::Done => "on-done",
        }
    }

    fn request_writable(self) -> bool {
        matches!(self, Phase::RequestHeaders | Phase::RequestBody)
    }

    pub(crate) fn has_response(self) -> bool {
        matches!(
            self,
            Phase::ResponseHeaders | Phase::ResponseBody | Phase::Done
        )
    }
}

/// One instance's own state in the host (the proxy keeps it in the
/// instance's store).
#[derive(Debug, Default)]
pub(crate) struct Instance {
    /// The property sets it registered, by id.
    pub property_sets: Vec<Vec<String>>,
    /// Its random generator's state (0: not seeded yet).
    pub random_state: u64,
}

/// The request of one exchange and, from the response phases, its
/// response, with the request's properties.
#[derive(Debug)]
pub(crate) struct ExchangeState {
    /// The request as it goes upstream.
    pub request: Message,
    /// The per-attempt timeout a filter set.
    pub timeout_ms: Option<u32>,
    /// The response as it goes to the client, once there is one.
    pub response: Option<Message>,
    /// The request's properties by name (`request.id`, `route.name`, …);
    /// the computed ones are in [`Call::property`].
    pub props: std::collections::BTreeMap<String, String>,
    /// Upstream attempts made (0 before the first).
    pub attempt: u32,
    /// Whether the proxy could send the request again.
    pub retryable: bool,
    /// When the exchange started: wall-clock and monotonic nanoseconds.
    pub started: (u64, u64),
}

/// A phase call (or `init`) in progress.
pub(crate) struct Call {
    pub host: Rc<RefCell<HostState>>,
    pub instance: Instance,
    pub exchange: Option<ExchangeState>,
    pub phase: Phase,
}

/// Clears the thread's call if the filter panics, so that the next call
/// (after `catch_unwind`, say) starts clean.
struct Running;

impl Drop for Running {
    fn drop(&mut self) {
        if std::thread::panicking() {
            let _ = CURRENT.try_with(|current| current.borrow_mut().take());
        }
    }
}

/// Runs `run` as the thread's current call, then hands back the call's state.
pub(crate) fn enter<R>(call: Call, run: impl FnOnce() -> R) -> (R, Call) {
    let saved = crate::random::swap_state(call.instance.random_state);
    CURRENT.with(|current| {
        let mut current = current.borrow_mut();
        assert!(
            current.is_none(),
            "weft_sdk::testing: a phase call was made while another runs on this thread \
             (a filter's phase cannot call another filter)"
        );
        *current = Some(call);
    });
    let guard = Running;
    let answer = run();
    drop(guard);
    let mut call = CURRENT
        .with(|current| current.borrow_mut().take())
        .expect("the call is still there");
    call.instance.random_state = crate::random::swap_state(saved);
    (answer, call)
}

/// Runs `f` on the current call; `what` (`request.method`, …) names the
/// host function for the panic when there is none.
pub(crate) fn with<R>(what: &str, f: impl FnOnce(&mut Call) -> R) -> R {
    CURRENT.with(|current| {
        let mut current = current.borrow_mut();
        let Some(call) = current.as_mut() else {
            panic!(
                "weft_sdk: {what} called outside a filter call: natively, the host functions \
                 answer only inside a phase (or `new`) run by weft_sdk::testing \
                 (TestHost::init, TestExchange::on_request_headers, …)"
            )
        };
        f(call)
    })
}

// ---- the `request` and `response` interfaces, with the proxy's rules ----

impl Call {
    fn request(&self, what: &str) -> &ExchangeState {
        match &self.exchange {
            Some(exchange) => exchange,
            None => panic!("request.{what} called outside a phase: there is no request in init"),
        }
    }

    fn request_mut(&mut self, what: &str) -> &mut ExchangeState {
        self.request(what);
        if !self.phase.request_writable() {
            panic!(
                "request.{what} called in {}: the request is read-only in response phases",
                self.phase.name()
            );
        }
        self.exchange.as_mut().expect("checked above")
    }

    fn response(&self, what: &str) -> &Message {
        let Some(exchange) = &self.exchange else {
            panic!("response.{what} called outside a phase: there is no response in init")
        };
        match (&exchange.response, self.phase.has_response()) {
            (Some(response), true) => response,
            _ => panic!(
                "response.{what} called in {}: there is no response before the response phases",
                self.phase.name()
            ),
        }
    }

    fn response_mut(&mut self, what: &str) -> &mut Message {
        if self.phase == Phase::Done {
            panic!("response.{what} called in on-done: the response is already sent");
        }
        self.response(what);
        let exchange = self.exchange.as_mut().expect("checked above");
        exchange.response.as_mut().expect("checked above")
    }

    pub(crate) fn request_method(&self) -> String {
        self.request("method").request.method.clone()
    }

    pub(crate) fn request_path(&self) -> String {
        self.request("path").request.path.clone()
    }

    pub(crate) fn request_set_path(&mut self, path: &str) {
        let exchange = self.request_mut("set-path");
        if !path.starts_with('/') {
            panic!("set-path: {path:?} does not start with '/'");
        }
        if path.parse::<http::uri::PathAndQuery>().is_err() {
            panic!("set-path: {path:?} is not a valid path");
        }
        exchange.request.path = path.to_string();
    }

    pub(crate) fn request_authority(&self) -> Option<String> {
        self.request("authority").request.headers.first("host")
    }

    pub(crate) fn request_headers(&self, what: &str) -> &Headers {
        &self.request(what).request.headers
    }

    pub(crate) fn request_headers_mut(&mut self, what: &str) -> &mut Headers {
        &mut self.request_mut(what).request.headers
    }

    pub(crate) fn request_body(&self) -> Option<Vec<u8>> {
        let exchange = self.request("body");
        (self.phase == Phase::RequestBody).then(|| exchange.request.body.clone())
    }

    pub(crate) fn request_set_body(&mut self, body: &[u8]) {
        self.request("set-body");
        if self.phase != Phase::RequestBody {
            panic!(
                "request.set-body called in {}: only allowed in on-request-body",
                self.phase.name()
            );
        }
        let exchange = self.exchange.as_mut().expect("checked above");
        exchange.request.replace_body(body);
    }

    pub(crate) fn request_set_timeout_ms(&mut self, ms: u32) {
        let exchange = self.request_mut("set-timeout-ms");
        if ms == 0 {
            panic!("set-timeout-ms: the timeout must be at least 1 ms");
        }
        exchange.timeout_ms = Some(ms);
    }

    pub(crate) fn response_status(&self) -> u16 {
        self.response("status").status
    }

    pub(crate) fn response_set_status(&mut self, status: u16) {
        let response = self.response_mut("set-status");
        if !(100..=999).contains(&status) {
            panic!("set-status: {status} is not a valid status code");
        }
        response.status = status;
    }

    pub(crate) fn response_headers(&self, what: &str) -> &Headers {
        &self.response(what).headers
    }

    pub(crate) fn response_headers_mut(&mut self, what: &str) -> &mut Headers {
        &mut self.response_mut(what).headers
    }

    pub(crate) fn response_body(&self) -> Option<Vec<u8>> {
        let response = self.response("body");
        (self.phase == Phase::ResponseBody).then(|| response.body.clone())
    }

    pub(crate) fn response_set_body(&mut self, body: &[u8]) {
        self.response("set-body");
        if self.phase != Phase::ResponseBody {
            panic!(
                "response.set-body called in {}: only allowed in on-response-body",
                self.phase.name()
            );
        }
        self.response_mut("set-body").replace_body(body);
    }
}
