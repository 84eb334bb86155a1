//! [`TestFilter`] and [`TestExchange`]: a filter instance, and one request
//! through it, phase by phase.

use std::time::Duration;

use super::TestHost;
use super::current::{self, Call, ExchangeState, Instance, Phase};
use super::message::{Message, SentRequest, SentResponse, TestRequest, TestResponse};
use crate::{Action, Filter, Phases, Request, Response};

/// An instance of filter `F`, built by [`TestHost::init`]: what the proxy
/// holds in one instance's store. Send requests through it with
/// [`request`](TestFilter::request).
pub struct TestFilter<F: Filter> {
    host: TestHost,
    filter: F,
    phases: Phases,
    /// Taken by a running call, then put back.
    instance: Option<Instance>,
}

impl<F: Filter> std::fmt::Debug for TestFilter<F> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TestFilter")
            .field("phases", &self.phases)
            .finish_non_exhaustive()
    }
}

impl<F: Filter> TestFilter<F> {
    pub(crate) fn new(host: TestHost, filter: F, phases: Phases, instance: Instance) -> Self {
        TestFilter {
            host,
            filter,
            phases,
            instance: Some(instance),
        }
    }

    /// The phases the filter answered after `init`: the proxy calls only
    /// these (and a [`TestExchange`] refuses to call the others).
    pub fn phases(&self) -> Phases {
        self.phases
    }

    /// The filter itself, to look at its fields.
    pub fn inner(&self) -> &F {
        &self.filter
    }

    /// The host the filter was built on.
    pub fn host(&self) -> &TestHost {
        &self.host
    }

    /// Starts an exchange: `request` arrives at this filter. Call its phases
    /// in the proxy's order: request phases, then (after
    /// [`upstream`](TestExchange::upstream)) response phases, then `on_done`.
    pub fn request(&mut self, request: TestRequest) -> TestExchange<'_, F> {
        let number = self.host.next_request();
        let TestRequest {
            message,
            mut props,
            attempt,
            retryable,
        } = request;
        props
            .entry("request.id".into())
            .or_insert_with(|| format!("req-{number}"));
        let exchange = ExchangeState {
            request: message,
            timeout_ms: None,
            response: None,
            props,
            attempt,
            retryable,
            started: self.host.clocks(),
        };
        TestExchange {
            filter: self,
            exchange: Some(exchange),
        }
    }

    /// Runs `phase` of the filter with `call` as the host's current call.
    fn run<R>(
        &mut self,
        phase: Phase,
        exchange: ExchangeState,
        run: impl FnOnce(&mut F) -> R,
    ) -> (R, ExchangeState) {
        let call = Call {
            host: self.host.state.clone(),
            instance: self
                .instance
                .take()
                .expect("an earlier phase call of this instance panicked"),
            exchange: Some(exchange),
            phase,
        };
        let filter = &mut self.filter;
        let (answer, call) = current::enter(call, || run(filter));
        self.instance = Some(call.instance);
        (
            answer,
            call.exchange.expect("the exchange stays in the call"),
        )
    }
}

/// One request through a [`TestFilter`], made by
/// [`TestFilter::request`]. Each `on_…` method runs that phase of the filter
/// as the proxy would, and panics where the proxy would trap or refuse:
/// a setter the phase does not allow, an invalid header, a phase the
/// filter's [`phases`](TestFilter::phases) leave out, a `Retry` outside
/// `on_response_headers` or without [`Phases::RETRY`], an invalid local
/// response.
pub struct TestExchange<'f, F: Filter> {
    filter: &'f mut TestFilter<F>,
    /// Taken by a running phase, then put back.
    exchange: Option<ExchangeState>,
}

impl<F: Filter> std::fmt::Debug for TestExchange<'_, F> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TestExchange")
            .field("request", &self.request())
            .field("response", &self.response())
            .finish()
    }
}

impl<F: Filter> TestExchange<'_, F> {
    fn state(&self) -> &ExchangeState {
        self.exchange
            .as_ref()
            .expect("an earlier phase call of this exchange panicked")
    }

    fn state_mut(&mut self) -> &mut ExchangeState {
        self.exchange
            .as_mut()
            .expect("an earlier phase call of this exchange panicked")
    }

    /// Runs `phase`, then applies its action as the proxy does.
    fn phase(
        &mut self,
        phase: Phase,
        flag: Phases,
        run: impl FnOnce(&mut F, &Request, &Response) -> Action,
    ) -> Action {
        if !self.filter.phases.contains(flag) {
            panic!(
                "the proxy does not call {} of this filter: its phases() are {:?}",
                phase.name(),
                self.filter.phases
            );
        }
        if phase != Phase::RequestHeaders
            && phase != Phase::RequestBody
            && self.state().response.is_none()
        {
            panic!(
                "weft_sdk::testing: {} needs a response: give one with upstream() or \
                 local_response() first",
                phase.name()
            );
        }
        let exchange = self.exchange.take().expect("no phase call is running");
        let (action, exchange) = self.filter.run(phase, exchange, |filter| {
            run(filter, &Request::current(), &Response::current())
        });
        self.exchange = Some(exchange);
        self.apply(phase, &action);
        action
    }

    /// What the proxy does with `action`, or its refusal.
    fn apply(&mut self, phase: Phase, action: &Action) {
        match action {
            Action::Respond(local) => match Message::from_local(local) {
                Ok(response) => self.state_mut().response = Some(response),
                Err(why) => panic!("{}: respond: {why}", phase.name()),
            },
            Action::Retry { .. } if phase != Phase::ResponseHeaders => {
                panic!(
                    "{}: retry is only allowed in on-response-headers",
                    phase.name()
                )
            }
            Action::Retry { .. } if !self.filter.phases.contains(Phases::RETRY) => panic!(
                "{}: retry from a filter whose phases do not include `retry`",
                phase.name()
            ),
            // The response is discarded; the next comes from upstream().
            Action::Retry { .. } => self.state_mut().response = None,
            Action::Continue | Action::ContinueAfter(_) => {}
        }
    }

    /// Runs `on_request_headers`.
    pub fn on_request_headers(&mut self) -> Action {
        self.phase(
            Phase::RequestHeaders,
            Phases::REQUEST_HEADERS,
            |f, req, _| f.on_request_headers(req),
        )
    }

    /// Runs `on_request_body`, with the request's whole body readable.
    pub fn on_request_body(&mut self) -> Action {
        self.phase(Phase::RequestBody, Phases::REQUEST_BODY, |f, req, _| {
            f.on_request_body(req)
        })
    }

    /// Runs `on_response_headers` on the response given last.
    pub fn on_response_headers(&mut self) -> Action {
        self.phase(
            Phase::ResponseHeaders,
            Phases::RESPONSE_HEADERS,
            |f, req, resp| f.on_response_headers(req, resp),
        )
    }

    /// Runs `on_response_body`, with the response's whole body readable.
    pub fn on_response_body(&mut self) -> Action {
        self.phase(
            Phase::ResponseBody,
            Phases::RESPONSE_BODY,
            |f, req, resp| f.on_response_body(req, resp),
        )
    }

    /// Runs `on_done`: the response was sent.
    pub fn on_done(&mut self) {
        self.phase(Phase::Done, Phases::DONE, |f, req, resp| {
            f.on_done(req, resp);
            Action::Continue
        });
    }

    /// The upstream answers `response`: one more attempt
    /// (`request.attempt`), made to its endpoint. After a `Retry`, give the
    /// next attempt's response the same way.
    pub fn upstream(&mut self, response: TestResponse) -> &mut Self {
        let state = self.state_mut();
        state.attempt += 1;
        state
            .props
            .insert("upstream.endpoint".into(), response.endpoint);
        match response.failure {
            Some(kind) => state.props.insert("upstream.failure".into(), kind),
            None => state.props.remove("upstream.failure"),
        };
        state.response = Some(response.message);
        self
    }

    /// The response comes from the proxy or a later filter, without an
    /// upstream attempt (a local response of another filter, say).
    pub fn local_response(&mut self, response: TestResponse) -> &mut Self {
        self.state_mut().response = Some(response.message);
        self
    }

    /// Moves the host's clocks forward by `by` (as
    /// [`TestHost::advance`]): for `request.elapsed_ns` and pauses.
    pub fn advance(&mut self, by: Duration) -> &mut Self {
        self.filter.host.advance(by);
        self
    }

    /// The request as it would go upstream now.
    pub fn request(&self) -> SentRequest {
        let state = self.state();
        SentRequest::of(&state.request, state.timeout_ms)
    }

    /// The response as it would go to the client now: the one given, or
    /// the filter's local response, as changed by the phases; `None`
    /// before there is one (and after a `Retry`).
    pub fn response(&self) -> Option<SentResponse> {
        self.state().response.as_ref().map(SentResponse::of)
    }
}
