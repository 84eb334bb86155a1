//! Step 4: sending the request upstream, and keeping its body when a filter
//! may ask to send it again.

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http::{HeaderValue, Method, Request, Response, StatusCode, Version, header};
use http_body::Body;

use crate::filter::RequestProps;
use crate::http::body::{BufferError, buffer};
use crate::http::expect::{self, ContinueGate, Gated, RefuseOnDrop};
use crate::http::{ProxyBody, headers, local};
use crate::listener::Peer;
use crate::route::Route;
use crate::upstream::{Cluster, PickInput, StreamSlot, UpstreamError};

use super::outgoing::Outgoing;

/// Names the circuit-breaker limit that refused a request.
const OVERLOADED: http::HeaderName = http::HeaderName::from_static("x-weft-overloaded");

/// Prepares `head` for the upstream, sends it to `cluster`'s next
/// endpoint, and records the endpoint and any failure in `props`. A failure
/// becomes the proxy's own 502, 503 (the endpoint's connection cap) or 504,
/// or 400/408 when the client's body broke or stalled on the way.
pub async fn forward(
    route: &Route,
    cluster: &Cluster,
    mut head: http::request::Parts,
    body: ProxyBody,
    peer: &Peer,
    timeout: Duration,
    props: &mut RequestProps,
) -> Response<ProxyBody> {
    if head.headers.contains_key(header::UPGRADE) && super::upgrade::requested(&head) {
        // Boxed: rare, and its future would make every request's larger.
        return Box::pin(super::upgrade::forward(
            route, cluster, head, body, peer, timeout, props,
        ))
        .await;
    }
    headers::remove_hop_by_hop(&mut head.headers);
    headers::add_forwarded(&mut head.headers, peer, head.version);
    frame_request_body(&mut head, &body);
    let mut request = Request::from_parts(head, body);
    let gate = expect::expects_continue(request.headers())
        .then(|| await_continue(&mut request))
        .flatten();
    let picked = cluster.pick(&PickInput {
        headers: request.headers(),
        client_ip: peer.addr.ip(),
        // A retry goes elsewhere when it can.
        avoid: props
            .upstream_endpoint
            .as_ref()
            .filter(|_| props.attempt > 1),
    });
    let sent = match picked {
        Ok(i) => {
            props.upstream_endpoint = Some(cluster.endpoints()[i].authority.clone());
            // Boxed: its 2.6 KB would be part of every future that awaits
            // this one, up to the connection's, and moved with them.
            Box::pin(cluster.send(i, request, timeout)).await
        }
        Err(e) => Err(e),
    };
    // A final answer (or a failure) before the upstream asked for the body:
    // the body is not sent once the answer has been passed on.
    let refuse = gate.filter(|gate| gate.answered()).map(RefuseOnDrop);
    match sent {
        Ok((response, active)) => {
            props.upstream_failure = None;
            let (mut head, body) = response.into_parts();
            // An HTTP/2 stream's slot, held until its body is done.
            let slot = head.extensions.remove::<StreamSlot>();
            let body = match slot {
                None => ProxyBody::Upstream(body, active),
                Some(slot) => {
                    ProxyBody::Guarded(Box::new(ProxyBody::Upstream(body, active)), Box::new(slot))
                }
            };
            headers::remove_hop_by_hop(&mut head.headers);
            head.headers.append(header::VIA, headers::via(head.version));
            // The proxy answers with its own version (RFC 9110 §6.2).
            head.version = Version::HTTP_11;
            let body = match refuse {
                None => body,
                Some(refuse) => ProxyBody::Guarded(Box::new(body), Box::new(refuse)),
            };
            Response::from_parts(head, body)
        }
        Err(e) => {
            if let UpstreamError::ClientBody { reason, idle } = e {
                props.upstream_failure = None;
                let failure = match idle {
                    Some(stalled) => BufferError::Idle(stalled),
                    None => BufferError::Stream(reason.into()),
                };
                let out = Outgoing::buffer_error(failure, &props.request_id);
                return Response::from_parts(out.head, out.body);
            }
            tracing::warn!(
                route = &*route.name,
                cluster = &*cluster.name,
                request_id = props.request_id,
                attempt = props.attempt,
                "{e}"
            );
            props.upstream_failure = Some(e.kind());
            error_response(&e, &props.request_id)
        }
    }
}

/// The proxy's own answer to an upstream failure: 504, 503 (with
/// `x-weft-overloaded` naming a circuit breaker's limit) or 502.
pub(super) fn error_response(e: &UpstreamError, request_id: &str) -> Response<ProxyBody> {
    let (status, code) = match e {
        UpstreamError::Timeout { .. } => (StatusCode::GATEWAY_TIMEOUT, "upstream_timeout"),
        UpstreamError::Overflow { .. } | UpstreamError::Overloaded { .. } => {
            (StatusCode::SERVICE_UNAVAILABLE, "overloaded")
        }
        UpstreamError::NoHealthyEndpoint { .. } => {
            (StatusCode::SERVICE_UNAVAILABLE, "no_healthy_endpoint")
        }
        _ => (StatusCode::BAD_GATEWAY, "upstream_unavailable"),
    };
    let mut response = local::error(status, code, &e.to_string(), request_id);
    if let UpstreamError::Overloaded { limit, .. } = e {
        response
            .headers_mut()
            .insert(OVERLOADED, HeaderValue::from_static(limit.name()));
    }
    response
}

/// Leaves `Expect: 100-continue` to the upstream ([`expect`]): a body still
/// to come waits behind a gate the upstream's `100` opens; the returned gate
/// learns of the final answer. A body the proxy already holds whole (a
/// filter or a resend read it, and hyper told the client 100) goes whole,
/// without the expectation.
fn await_continue(request: &mut Request<ProxyBody>) -> Option<Arc<ContinueGate>> {
    let body = request.body_mut();
    if matches!(body, ProxyBody::Full(_) | ProxyBody::Empty) || body.is_end_stream() {
        request.headers_mut().remove(header::EXPECT);
        return None;
    }
    let (gated, gate) = Gated::new(std::mem::replace(body, ProxyBody::Empty));
    *body = ProxyBody::AwaitingContinue(Box::new(gated));
    let informed = gate.clone();
    hyper::ext::on_informational(request, move |response| {
        informed.informational(response.status());
    });
    Some(gate)
}

/// Frames the request body for the upstream. hyper sends no body at all for
/// a GET, HEAD or CONNECT whose length it does not know (a chunked one, or
/// HTTP/2 DATA without `content-length`): such a body goes chunked. A body
/// the proxy holds whole has lost its trailers, and so their announcement.
fn frame_request_body(head: &mut http::request::Parts, body: &ProxyBody) {
    match body {
        ProxyBody::Full(_) | ProxyBody::Empty => {
            head.headers.remove(header::TRAILER);
        }
        body if matches!(head.method, Method::GET | Method::HEAD | Method::CONNECT)
            && !body.is_end_stream()
            && body.size_hint().exact().is_none() =>
        {
            head.headers.insert(
                header::TRANSFER_ENCODING,
                HeaderValue::from_static("chunked"),
            );
        }
        _ => {}
    }
}

/// Makes `body` resendable when it fits in `limit`: returns the body to send
/// first and, if it can be sent again, the bytes to resend. A body streamed
/// without a known length, or longer than `limit`, streams once.
pub async fn keep_for_resend(
    body: ProxyBody,
    limit: u64,
) -> Result<(ProxyBody, Option<Bytes>), BufferError> {
    match body {
        ProxyBody::Full(Some(bytes)) => Ok((ProxyBody::full(bytes.clone()), Some(bytes))),
        body if body.is_end_stream() => Ok((ProxyBody::Empty, Some(Bytes::new()))),
        body => match body.size_hint().exact() {
            Some(len) if len <= limit => {
                let bytes = buffer(body, limit).await?;
                Ok((ProxyBody::full(bytes.clone()), Some(bytes)))
            }
            _ => Ok((body, None)),
        },
    }
}
