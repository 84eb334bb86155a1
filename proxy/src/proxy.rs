//! The life of a request, as a list of phases:
//!
//! 1. take the current snapshot; set `x-request-id`; match a route (404 if none);
//! 2. run the chain's `on-request-headers`;
//! 3. if a filter wants it, buffer the body (bounded) and run `on-request-body`;
//! 4. send upstream (502 unreachable, 504 timeout), streaming the body;
//! 5. run `on-response-headers` and, if wanted, `on-response-body`;
//! 6. answer; `on-done` runs when the response body is finished.
//!
//! A filter's `respond` skips ahead to step 5 with its response; a filter
//! failure with `fail_closed` answers 500.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;

use arc_swap::ArcSwap;
use http::{HeaderValue, Request, Response, StatusCode, header};
use hyper::body::Incoming;

use crate::filter::chain::{ChainFailure, LocalReply};
use crate::filter::{ChainRun, Exchange, Phase, RequestProps, Step};
use crate::http::body::{BufferError, OnDrop, buffer};
use crate::http::{ProxyBody, headers, local};
use crate::route::Route;
use crate::snapshot::Snapshot;
use crate::telemetry::Registry;
use crate::upstream::UpstreamError;

/// What every connection shares: the current snapshot and the registry.
pub struct Proxy {
    /// The snapshot requests start on; replaced whole on reload.
    pub snapshot: ArcSwap<Snapshot>,
    /// Process metrics.
    pub metrics: Arc<Registry>,
}

impl Proxy {
    /// Serves one request that arrived on listener number `listener`.
    pub async fn handle(
        self: Arc<Self>,
        listener: usize,
        peer: SocketAddr,
        request: Request<Incoming>,
    ) -> Result<Response<ProxyBody>, Infallible> {
        let snapshot = self.snapshot.load_full();
        let (mut head, body) = request.into_parts();
        let request_id = headers::ensure_request_id(&mut head.headers);
        let Some(listener) = snapshot.listeners.get(listener) else {
            return Ok(local::error(
                StatusCode::SERVICE_UNAVAILABLE,
                "no_listener",
                "listener removed",
                &request_id,
            ));
        };
        let Some(route) = listener.routes.find(&head).cloned() else {
            let message = format!(
                "no route matches {} {}{}",
                head.method,
                crate::route::request_host(&head).unwrap_or_default(),
                head.uri.path()
            );
            return Ok(local::error(
                StatusCode::NOT_FOUND,
                "no_route",
                &message,
                &request_id,
            ));
        };
        let props = RequestProps {
            request_id,
            listener: listener.name.clone(),
            route: route.name.clone(),
            cluster: route.cluster.name.clone(),
            peer: Some(peer),
        };
        let body = ProxyBody::Streaming(body);
        if route.chain.is_empty() {
            let response = forward(&route, head, body, peer, &props.request_id).await;
            return Ok(response);
        }
        let mut run = ChainRun::new(route.chain.clone(), self.metrics.clone());
        let mut ex = Exchange {
            request: Some(head),
            props,
            ..Default::default()
        };
        let out = serve_with_chain(&route, &mut run, &mut ex, body, peer).await;
        Ok(out.into_response(run, ex))
    }
}

/// A response on its way out, before the `on-done` hook is attached.
struct Outgoing {
    head: http::response::Parts,
    body: ProxyBody,
}

impl Outgoing {
    fn from_response(r: Response<ProxyBody>) -> Self {
        let (head, body) = r.into_parts();
        Self { head, body }
    }

    fn local(reply: LocalReply) -> Self {
        Self {
            head: reply.head,
            body: ProxyBody::full(reply.body),
        }
    }

    /// Attaches `on-done` when the chain wants it.
    fn into_response(self, run: ChainRun, mut ex: Exchange) -> Response<ProxyBody> {
        let body = if run.chain().wants(Phase::Done) {
            ex.response = Some(clone_response_head(&self.head));
            ex.request_body = None;
            ex.response_body = None;
            ProxyBody::Guarded(Box::new(self.body), Box::new(DoneHook { run, ex }))
        } else {
            self.body
        };
        Response::from_parts(self.head, body)
    }
}

/// Runs `on-done` when the response body is dropped.
struct DoneHook {
    run: ChainRun,
    ex: Exchange,
}

impl OnDrop for DoneHook {}

impl Drop for DoneHook {
    fn drop(&mut self) {
        self.run.done(&mut self.ex);
    }
}

/// Steps 2–5.
async fn serve_with_chain(
    route: &Route,
    run: &mut ChainRun,
    ex: &mut Exchange,
    body: ProxyBody,
    peer: SocketAddr,
) -> Outgoing {
    let limit = route.max_body_bytes;
    // 2. request headers
    if let Some(answer) = request_phase(run, ex, Phase::RequestHeaders, limit).await {
        return answer;
    }
    // 3. request body, only when a filter asked for it
    let body = if run.chain().wants(Phase::RequestBody) {
        match buffer(body, limit).await {
            Ok(bytes) => ex.request_body = Some(bytes),
            Err(e) => return buffer_error(e, &ex.props.request_id),
        }
        if let Some(answer) = request_phase(run, ex, Phase::RequestBody, limit).await {
            return answer;
        }
        ProxyBody::full(ex.request_body.take().unwrap_or_default())
    } else {
        body
    };
    // 4. upstream; keep a copy of the request head only if a later phase reads it
    let head = ex
        .request
        .take()
        .expect("request head present during request phases");
    if run.chain().wants(Phase::ResponseHeaders)
        || run.chain().wants(Phase::ResponseBody)
        || run.chain().wants(Phase::Done)
    {
        ex.request = Some(clone_request_head(&head));
    }
    let response = forward(route, head, body, peer, &ex.props.request_id).await;
    // 5. response phases
    response_phases(run, ex, Outgoing::from_response(response), limit).await
}

/// Runs a request phase. `Some` is the early answer: a filter's local reply
/// (after the response phases of the filters before it) or a failure.
async fn request_phase(
    run: &mut ChainRun,
    ex: &mut Exchange,
    phase: Phase,
    limit: u64,
) -> Option<Outgoing> {
    match run.request_phase(ex, phase) {
        Step::Continue => None,
        Step::Respond(reply) => Some(response_phases(run, ex, Outgoing::local(reply), limit).await),
        Step::Failed(f) => Some(failure(f, ex)),
    }
}

/// Runs `on-response-headers` over `out`. Returns `false` when a filter
/// failed and `out` became the error to send as it is.
fn header_phase(run: &mut ChainRun, ex: &mut Exchange, out: &mut Outgoing) -> bool {
    if !run.chain().wants(Phase::ResponseHeaders) {
        return true;
    }
    ex.response = Some(std::mem::replace(&mut out.head, empty_head()));
    let step = run.response_phase(ex, Phase::ResponseHeaders);
    out.head = ex.response.take().expect("response head present");
    match step {
        Step::Continue => true,
        Step::Respond(reply) => {
            *out = Outgoing::local(reply);
            true
        }
        Step::Failed(f) => {
            *out = failure(f, ex);
            false
        }
    }
}

async fn response_phases(
    run: &mut ChainRun,
    ex: &mut Exchange,
    mut out: Outgoing,
    limit: u64,
) -> Outgoing {
    if !header_phase(run, ex, &mut out) {
        return out;
    }
    if !run.chain().wants(Phase::ResponseBody) {
        return out;
    }
    let body = std::mem::replace(&mut out.body, ProxyBody::Empty);
    match buffer(body, limit).await {
        Ok(bytes) => ex.response_body = Some(bytes),
        Err(e) => {
            let message = format!("response {e}");
            return Outgoing::from_response(local::error(
                StatusCode::BAD_GATEWAY,
                "response_body",
                &message,
                &ex.props.request_id,
            ));
        }
    }
    ex.response = Some(std::mem::replace(&mut out.head, empty_head()));
    let step = run.response_phase(ex, Phase::ResponseBody);
    out.head = ex.response.take().expect("response head present");
    out.body = ProxyBody::full(ex.response_body.take().unwrap_or_default());
    match step {
        Step::Continue => out,
        Step::Respond(reply) => Outgoing::local(reply),
        Step::Failed(f) => failure(f, ex),
    }
}

fn failure(f: ChainFailure, ex: &Exchange) -> Outgoing {
    let message = format!(
        "filter {:?} failed in {}: {}",
        &*f.filter,
        f.phase.name(),
        f.failure
    );
    Outgoing::from_response(local::error(
        StatusCode::INTERNAL_SERVER_ERROR,
        "filter_failed",
        &message,
        &ex.props.request_id,
    ))
}

fn buffer_error(e: BufferError, request_id: &str) -> Outgoing {
    let (status, code) = match e {
        BufferError::TooLarge(_) => (StatusCode::PAYLOAD_TOO_LARGE, "body_too_large"),
        BufferError::Stream(_) => (StatusCode::BAD_REQUEST, "body_read_failed"),
    };
    Outgoing::from_response(local::error(
        status,
        code,
        &format!("request {e}"),
        request_id,
    ))
}

/// Step 4: prepare the head for the upstream and send.
async fn forward(
    route: &Route,
    mut head: http::request::Parts,
    body: ProxyBody,
    peer: SocketAddr,
    request_id: &str,
) -> Response<ProxyBody> {
    if !head.headers.contains_key(header::HOST)
        && let Some(authority) = head.uri.authority()
        && let Ok(v) = HeaderValue::from_str(authority.as_str())
    {
        head.headers.insert(header::HOST, v);
    }
    headers::remove_hop_by_hop(&mut head.headers);
    headers::add_forwarded(&mut head.headers, peer);
    match route
        .cluster
        .send(Request::from_parts(head, body), route.timeout)
        .await
    {
        Ok(response) => {
            let (mut head, body) = response.into_parts();
            headers::remove_hop_by_hop(&mut head.headers);
            Response::from_parts(head, ProxyBody::Streaming(body))
        }
        Err(e) => {
            tracing::warn!(
                route = &*route.name,
                cluster = &*route.cluster.name,
                request_id,
                "{e}"
            );
            let (status, code) = match e {
                UpstreamError::Timeout { .. } => (StatusCode::GATEWAY_TIMEOUT, "upstream_timeout"),
                UpstreamError::Unavailable { .. } => {
                    (StatusCode::BAD_GATEWAY, "upstream_unavailable")
                }
            };
            local::error(status, code, &e.to_string(), request_id)
        }
    }
}

fn empty_head() -> http::response::Parts {
    Response::new(()).into_parts().0
}

fn clone_response_head(head: &http::response::Parts) -> http::response::Parts {
    let mut r = Response::new(());
    *r.status_mut() = head.status;
    *r.version_mut() = head.version;
    *r.headers_mut() = head.headers.clone();
    r.into_parts().0
}

fn clone_request_head(head: &http::request::Parts) -> http::request::Parts {
    let mut r = Request::new(());
    *r.method_mut() = head.method.clone();
    *r.uri_mut() = head.uri.clone();
    *r.version_mut() = head.version;
    *r.headers_mut() = head.headers.clone();
    r.into_parts().0
}
