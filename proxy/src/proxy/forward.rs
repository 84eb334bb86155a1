//! Step 4: sending the request upstream, and keeping its body when a filter
//! may ask to send it again.

use std::time::Duration;

use bytes::Bytes;
use http::{HeaderValue, Request, Response, StatusCode, header};
use http_body::Body;

use crate::filter::RequestProps;
use crate::http::body::{BufferError, buffer};
use crate::http::{ProxyBody, headers, local};
use crate::listener::Peer;
use crate::route::Route;
use crate::upstream::UpstreamError;

/// Prepares `head` for the upstream, sends it to the cluster's next
/// endpoint, and records the endpoint and any failure in `props`. A failure
/// becomes the proxy's own 502 or 504.
pub async fn forward(
    route: &Route,
    mut head: http::request::Parts,
    body: ProxyBody,
    peer: &Peer,
    timeout: Duration,
    props: &mut RequestProps,
) -> Response<ProxyBody> {
    if !head.headers.contains_key(header::HOST)
        && let Some(authority) = head.uri.authority()
        && let Ok(v) = HeaderValue::from_str(authority.as_str())
    {
        head.headers.insert(header::HOST, v);
    }
    headers::remove_hop_by_hop(&mut head.headers);
    headers::add_forwarded(&mut head.headers, peer);
    let endpoint = route.cluster.pick().clone();
    let sent = route
        .cluster
        .send(&endpoint, Request::from_parts(head, body), timeout)
        .await;
    props.upstream_endpoint = Some(endpoint);
    match sent {
        Ok(response) => {
            props.upstream_failure = None;
            let (mut head, body) = response.into_parts();
            headers::remove_hop_by_hop(&mut head.headers);
            Response::from_parts(head, ProxyBody::Streaming(body))
        }
        Err(e) => {
            tracing::warn!(
                route = &*route.name,
                cluster = &*route.cluster.name,
                request_id = props.request_id,
                attempt = props.attempt,
                "{e}"
            );
            props.upstream_failure = Some(e.kind());
            let (status, code) = match e {
                UpstreamError::Timeout { .. } => (StatusCode::GATEWAY_TIMEOUT, "upstream_timeout"),
                _ => (StatusCode::BAD_GATEWAY, "upstream_unavailable"),
            };
            local::error(status, code, &e.to_string(), &props.request_id)
        }
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
