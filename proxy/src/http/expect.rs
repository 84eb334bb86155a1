//! `Expect: 100-continue` left to the upstream.
//!
//! hyper's server writes `100 Continue` the first time a request body is
//! polled, and its client writes the body right after the head. So a
//! request that expects 100 goes upstream with its body behind a
//! [`ContinueGate`]: the body is not polled (the client hears nothing)
//! until the upstream answers `100 Continue`, or [`CONTINUE_WAIT`] passes
//! with no answer (RFC 9110 §10.1.1). An upstream that gives its final
//! answer first gets no body: the gate stays shut, and once that answer
//! has been passed on (its body dropped) the gated body fails, which closes
//! the upstream connection; hyper's server, whose request body was never
//! read, sends no 100 and closes the client's connection after the answer.

use std::pin::Pin;
use std::sync::atomic::{AtomicU8, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll, Waker};
use std::time::Duration;

use bytes::Bytes;
use http::{HeaderMap, StatusCode, header};
use http_body::{Body, Frame};
use tokio::time::Sleep;

use super::ProxyBody;
use super::body::{BoxError, OnDrop};

/// How long a request that expects 100 waits for the upstream's `100
/// Continue` before its body is sent anyway (curl waits 1 s too).
pub const CONTINUE_WAIT: Duration = Duration::from_secs(1);

/// Whether `headers` ask for `100 Continue` (one lookup; no allocation).
pub fn expects_continue(headers: &HeaderMap) -> bool {
    headers
        .get(header::EXPECT)
        .is_some_and(|v| v.as_bytes().eq_ignore_ascii_case(b"100-continue"))
}

/// Not yet decided: neither a 100 nor a final answer, and the wait runs.
const WAITING: u8 = 0;
/// The upstream sent 100 (or the wait passed): the body flows.
const OPEN: u8 = 1;
/// The final answer came first; it is being passed on.
const ANSWERED: u8 = 2;
/// The final answer has been passed on: the body is not sent.
const REFUSED: u8 = 3;

/// What the upstream said about a gated body, shared by the body (inside
/// hyper's client connection) and the request that waits for the answer.
#[derive(Default)]
pub struct ContinueGate {
    state: AtomicU8,
    waker: Mutex<Option<Waker>>,
}

impl ContinueGate {
    /// The upstream sent an informational response: `100` opens the gate.
    pub fn informational(&self, status: StatusCode) {
        if status == StatusCode::CONTINUE {
            self.advance(WAITING, OPEN);
        }
    }

    /// The final answer's head arrived. True when it came before the body
    /// was let through: the caller then calls [`ContinueGate::refuse`] once
    /// the answer has been passed on (see [`RefuseOnDrop`]).
    pub fn answered(&self) -> bool {
        self.advance(WAITING, ANSWERED)
    }

    /// The final answer has been passed on: the gated body fails.
    fn refuse(&self) {
        self.advance(ANSWERED, REFUSED);
    }

    fn advance(&self, from: u8, to: u8) -> bool {
        let moved = self
            .state
            .compare_exchange(from, to, Ordering::AcqRel, Ordering::Acquire)
            .is_ok();
        if moved && let Some(waker) = self.waker.lock().unwrap_or_else(|p| p.into_inner()).take() {
            waker.wake();
        }
        moved
    }
}

/// Refuses the gated body when dropped: hung on the early answer's body.
pub struct RefuseOnDrop(pub Arc<ContinueGate>);

impl OnDrop for RefuseOnDrop {}

impl Drop for RefuseOnDrop {
    fn drop(&mut self) {
        self.0.refuse();
    }
}

/// A request body held back until its [`ContinueGate`] opens.
pub struct Gated {
    /// The body once let through.
    pub(super) body: ProxyBody,
    gate: Arc<ContinueGate>,
    wait: Pin<Box<Sleep>>,
}

impl Gated {
    /// `body` behind a new gate, whose wait starts now.
    pub fn new(body: ProxyBody) -> (Self, Arc<ContinueGate>) {
        let gate = Arc::new(ContinueGate::default());
        let gated = Self {
            body,
            gate: gate.clone(),
            wait: Box::pin(tokio::time::sleep(CONTINUE_WAIT)),
        };
        (gated, gate)
    }

    pub(super) fn poll_frame(
        &mut self,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        loop {
            match self.gate.state.load(Ordering::Acquire) {
                OPEN => return Pin::new(&mut self.body).poll_frame(cx),
                REFUSED => return Poll::Ready(Some(Err(Box::new(AnsweredFirst)))),
                state => {
                    *self.gate.waker.lock().unwrap_or_else(|p| p.into_inner()) =
                        Some(cx.waker().clone());
                    // The state may have moved before the waker was stored.
                    if self.gate.state.load(Ordering::Acquire) != state {
                        continue;
                    }
                    if state == WAITING && self.wait.as_mut().poll(cx).is_ready() {
                        self.gate.advance(WAITING, OPEN);
                        continue;
                    }
                    return Poll::Pending;
                }
            }
        }
    }
}

/// The upstream gave its final answer before asking for the body.
#[derive(Debug, thiserror::Error)]
#[error("the upstream answered before 100 Continue; the request body is not sent")]
pub struct AnsweredFirst;
