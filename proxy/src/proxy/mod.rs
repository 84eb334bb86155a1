//! The life of a request, as a list of phases:
//!
//! 1. take the current snapshot; set `x-request-id`; settle the authority
//!    and the path (400 if either is bad); match a route (404 if none);
//!    pick its cluster (a weighted pick for a split; retries keep it);
//! 2. run the chain's `on-request-headers`;
//! 3. if a filter wants it, buffer the body (bounded) and run `on-request-body`;
//! 4. the route's action ([`dispatch`]): a redirect or direct response is
//!    the proxy's own answer; otherwise apply the route's rewrites (path,
//!    host; 500 if the path comes out invalid), start the mirror's copy, and
//!    send upstream (502 unreachable, 504 timeout), streaming the body — held
//!    back until the upstream's `100 Continue` when the client expects one —
//!    or, when a filter may retry, keeping it to send again;
//! 5. run `on-response-headers` (where a filter may ask for a retry: back to
//!    4) and, if wanted, `on-response-body`;
//! 6. answer; `on-done` runs when the response body is finished.
//!
//! A route's `max_stream_duration_ms` ([`stream_limit`]) bounds steps 2–6
//! from the request's headers: 504 before step 6, the response cut off
//! during it.
//!
//! A filter's `respond` skips ahead to step 5 with its response; a filter
//! failure with `fail_closed` answers 500; `continue-after` pauses the phase
//! without holding a thread.

mod dispatch;
mod forward;
mod mirror;
mod outgoing;
pub mod stream_limit;
pub mod upgrade;

use std::convert::Infallible;
use std::sync::Arc;
use std::time::{Duration, Instant};

use arc_swap::ArcSwap;
use http::{Request, Response, StatusCode};
use hyper::body::Incoming;

use crate::filter::{ChainRun, Exchange, Phase, RequestProps, Step};
use crate::http::body::{BufferError, buffer_message};
use crate::http::{ProxyBody, grpc, headers, local, target};
use crate::listener::{InFlight, Peer};
use crate::snapshot::Snapshot;
use crate::telemetry::Registry;
use crate::telemetry::http::{RouteMetrics, method_index};
use dispatch::Dispatch;
use forward::keep_for_resend;
use outgoing::{Outgoing, clone_request_head, empty_head};

/// The most upstream attempts one request makes, whatever filters ask.
pub const MAX_ATTEMPTS: u32 = 10;

/// What every connection shares: the current snapshot and the registry.
pub struct Proxy {
    /// The snapshot requests start on; replaced whole on reload.
    pub snapshot: ArcSwap<Snapshot>,
    /// Process metrics.
    pub metrics: Arc<Registry>,
}

impl Proxy {
    /// Serves one request that arrived on listener number `listener`,
    /// counted in flight on its connection until its handler returns. A
    /// gRPC call gets the proxy's own errors as gRPC statuses ([`grpc`]).
    pub async fn handle(
        self: Arc<Self>,
        listener: usize,
        peer: Arc<Peer>,
        request: Request<Incoming>,
        in_flight: InFlight,
    ) -> Result<Response<ProxyBody>, Infallible> {
        let is_grpc = grpc::is_grpc(request.headers());
        let response = self.serve(listener, peer, request, in_flight).await;
        if is_grpc {
            return response.map(grpc::answer);
        }
        response
    }

    async fn serve(
        self: Arc<Self>,
        listener: usize,
        peer: Arc<Peer>,
        request: Request<Incoming>,
        _in_flight: InFlight,
    ) -> Result<Response<ProxyBody>, Infallible> {
        let started = Instant::now();
        let method = method_index(request.method());
        let snapshot = self.snapshot.load_full();
        let (mut response, metrics) = self
            .respond(&snapshot, listener, peer, request, started)
            .await;
        if let Some(metrics) = metrics {
            response.body_mut().count_into(&metrics.response_bytes);
            metrics.record(method, response.status(), started.elapsed());
        }
        Ok(response)
    }

    /// Steps 1–6; the route's metrics (the listener's for a request no
    /// route took) to count the answer in.
    async fn respond<'s>(
        &self,
        snapshot: &'s Snapshot,
        listener: usize,
        peer: Arc<Peer>,
        request: Request<Incoming>,
        started: Instant,
    ) -> (Response<ProxyBody>, Option<&'s RouteMetrics>) {
        let (mut head, body) = request.into_parts();
        let request_id = headers::ensure_request_id(&mut head.headers);
        let Some(listener) = snapshot.listeners.get(listener) else {
            let response = local::error(
                StatusCode::SERVICE_UNAVAILABLE,
                "no_listener",
                "listener removed",
                &request_id,
            );
            return (response, None);
        };
        if let Err(e) = target::settle(&mut head, &listener.paths) {
            let message = e.to_string();
            let response = local::error(StatusCode::BAD_REQUEST, e.code(), &message, &request_id);
            return (response, Some(&listener.unmatched));
        }
        let Some(found) = listener.routes.find(&head) else {
            let message = format!(
                "no route matches {} {}{}",
                head.method,
                target::route_host(&head).unwrap_or_default(),
                head.uri.path()
            );
            let response = local::error(StatusCode::NOT_FOUND, "no_route", &message, &request_id);
            return (response, Some(&listener.unmatched));
        };
        let metrics = &found.metrics;
        let route = found.clone();
        let mut props = RequestProps {
            request_id,
            started: Some(started),
            listener: listener.name.clone(),
            route: route.name.clone(),
            peer: Some(peer.clone()),
            ..Default::default()
        };
        let dispatch = Dispatch::new(&route, &peer, &self.metrics, &mut props);
        let mut body = ProxyBody::streamed(body);
        body.count_into(&metrics.request_bytes);
        let limit = route.stream_limit.as_ref();
        if route.chain.is_empty() {
            props.attempt = 1;
            let sent = dispatch.send(head, body, route.timeout, &mut props);
            let response = match limit {
                None => sent.await,
                // Boxed, both: the exchange's future is moved once, and the
                // timer stays out of every other request's future.
                Some(limit) => match Box::pin(limit.within(started, Box::pin(sent))).await {
                    Some(response) => response,
                    None => limit.expired(&props.request_id),
                },
            };
            let mut response = response.map(ProxyBody::idle_bounded);
            if let Some(limit) = limit {
                limit.bound(started, &props.request_id, response.body_mut());
            }
            return (response, Some(metrics));
        }
        let mut run = ChainRun::new(route.chain.clone(), self.metrics.clone());
        let mut ex = Box::new(Exchange {
            request: Some(head),
            props,
            ..Default::default()
        });
        // Boxed, so that a request without filters moves a smaller future.
        let serving = Box::pin(serve_with_chain(&dispatch, &mut run, &mut ex, body));
        let mut out = match limit {
            None => serving.await,
            Some(limit) => match Box::pin(limit.within(started, serving)).await {
                Some(out) => out,
                None => Outgoing::from_response(limit.expired(&ex.props.request_id)),
            },
        };
        if let Some(limit) = limit {
            limit.bound(started, &ex.props.request_id, &mut out.body);
        }
        let response = out.into_response(run, ex).map(ProxyBody::idle_bounded);
        (response, Some(metrics))
    }
}

/// What the response phases decided.
enum Answer {
    /// Send this.
    Send(Outgoing),
    /// Send the request upstream again after this delay.
    Retry(Duration),
}

/// Steps 2–5.
async fn serve_with_chain(
    dispatch: &Dispatch<'_>,
    run: &mut ChainRun,
    ex: &mut Box<Exchange>,
    body: ProxyBody,
) -> Outgoing {
    let route = dispatch.route;
    let limit = route.max_body_bytes;
    // 2. request headers
    if let Some(answer) = request_phase(run, ex, Phase::RequestHeaders, limit).await {
        return answer;
    }
    // 3. request body, only when a filter asked for it
    let body = if run.chain().wants(Phase::RequestBody) {
        match buffer_message(body, limit).await {
            Ok((bytes, trailers)) => {
                (ex.request_body, ex.request_trailers) = (Some(bytes), trailers)
            }
            Err(e) => return Outgoing::buffer_error(e, &ex.props.request_id),
        }
        if let Some(answer) = request_phase(run, ex, Phase::RequestBody, limit).await {
            return answer;
        }
        let bytes = ex.request_body.take().unwrap_or_default();
        if ex.request_trailers.is_some()
            && let Some(head) = ex.request.as_mut()
        {
            // Unannounced length: chunked on HTTP/1.1, where trailers follow.
            head.headers.remove(http::header::CONTENT_LENGTH);
        }
        ProxyBody::full_with_trailers(bytes, ex.request_trailers.take())
    } else {
        body
    };
    // 4. upstream; keep a copy of the head (and body) only if a later phase
    // reads it or a retry resends it
    let head = ex
        .request
        .take()
        .expect("request head present during request phases");
    let chain = run.chain();
    // The route's own answers are not retried.
    let may_retry = chain.may_retry() && dispatch.upstream();
    if may_retry
        || chain.wants(Phase::ResponseHeaders)
        || chain.wants(Phase::ResponseBody)
        || chain.wants(Phase::Done)
    {
        ex.request = Some(clone_request_head(&head));
    }
    let (body, resend) = if may_retry {
        match keep_for_resend(body, limit).await {
            Ok(kept) => kept,
            Err(e) => return Outgoing::buffer_error(e, &ex.props.request_id),
        }
    } else {
        (body, None)
    };
    ex.props.retryable = resend.is_some();
    let (mut head, mut body) = (Some(head), Some(body));
    loop {
        let attempt_head = match head.take() {
            Some(first) => first,
            None => clone_request_head(ex.request.as_ref().expect("head kept for retries")),
        };
        let attempt_body = body
            .take()
            .unwrap_or_else(|| ProxyBody::full(resend.clone().unwrap_or_default()));
        ex.props.attempt += 1;
        let timeout = ex.upstream_timeout.unwrap_or(route.timeout);
        let response = dispatch
            .send(attempt_head, attempt_body, timeout, &mut ex.props)
            .await;
        // 5. response phases
        let can_retry = ex.props.retryable && ex.props.attempt < MAX_ATTEMPTS;
        let out = Outgoing::from_response(response);
        match response_phases(run, ex, out, limit, can_retry).await {
            Answer::Send(out) => return out,
            Answer::Retry(delay) => {
                run.restart_phases();
                tokio::time::sleep(delay).await;
            }
        }
    }
}

/// Runs `phase` over the chain, sleeping through pauses; a retry that cannot
/// be honoured goes on as `continue`.
async fn run_phase(
    run: &mut ChainRun,
    ex: &mut Box<Exchange>,
    phase: Phase,
    can_retry: bool,
) -> Step {
    let request = matches!(phase, Phase::RequestHeaders | Phase::RequestBody);
    loop {
        let step = if request {
            run.request_phase(ex, phase)
        } else {
            run.response_phase(ex, phase)
        };
        match step {
            Step::Pause(pause) => tokio::time::sleep(pause).await,
            Step::Retry(delay) if can_retry => return Step::Retry(delay),
            Step::Retry(_) => tracing::debug!(
                request_id = ex.props.request_id,
                attempt = ex.props.attempt,
                retryable = ex.props.retryable,
                "retry declined"
            ),
            other => return other,
        }
    }
}

/// Runs a request phase. `Some` is the early answer: a filter's local reply
/// (after the response phases of the filters before it) or a failure.
async fn request_phase(
    run: &mut ChainRun,
    ex: &mut Box<Exchange>,
    phase: Phase,
    limit: u64,
) -> Option<Outgoing> {
    match run_phase(run, ex, phase, false).await {
        Step::Respond(reply) => {
            let Answer::Send(out) =
                response_phases(run, ex, Outgoing::local(reply), limit, false).await
            else {
                unreachable!("retries are declined when not allowed");
            };
            Some(out)
        }
        Step::Failed(f) => Some(Outgoing::failure(f, ex)),
        _ => None,
    }
}

/// Runs one response phase with `out`'s head visible to filters.
async fn response_phase(
    run: &mut ChainRun,
    ex: &mut Box<Exchange>,
    phase: Phase,
    out: &mut Outgoing,
    can_retry: bool,
) -> Step {
    ex.response = Some(std::mem::replace(&mut out.head, empty_head()));
    let step = run_phase(run, ex, phase, can_retry).await;
    out.head = ex.response.take().expect("response head present");
    step
}

async fn response_phases(
    run: &mut ChainRun,
    ex: &mut Box<Exchange>,
    mut out: Outgoing,
    limit: u64,
    can_retry: bool,
) -> Answer {
    if run.chain().wants(Phase::ResponseHeaders) {
        match response_phase(run, ex, Phase::ResponseHeaders, &mut out, can_retry).await {
            Step::Respond(reply) => out = Outgoing::local(reply),
            Step::Failed(f) => return Answer::Send(Outgoing::failure(f, ex)),
            Step::Retry(delay) => return Answer::Retry(delay),
            _ => {}
        }
    }
    if !run.chain().wants(Phase::ResponseBody) {
        return Answer::Send(out);
    }
    let body = std::mem::replace(&mut out.body, ProxyBody::Empty);
    match buffer_message(body, limit).await {
        Ok((bytes, trailers)) => (ex.response_body, ex.response_trailers) = (Some(bytes), trailers),
        Err(e) => {
            let (status, code) = match e {
                BufferError::Overloaded(_) => (StatusCode::SERVICE_UNAVAILABLE, "overloaded"),
                _ => (StatusCode::BAD_GATEWAY, "response_body"),
            };
            let message = format!("response {e}");
            return Answer::Send(Outgoing::from_response(local::error(
                status,
                code,
                &message,
                &ex.props.request_id,
            )));
        }
    }
    let step = response_phase(run, ex, Phase::ResponseBody, &mut out, false).await;
    out.set_buffered_body(
        ex.response_body.take().unwrap_or_default(),
        ex.response_trailers.take(),
    );
    Answer::Send(match step {
        Step::Respond(reply) => Outgoing::local(reply),
        Step::Failed(f) => Outgoing::failure(f, ex),
        _ => out,
    })
}
