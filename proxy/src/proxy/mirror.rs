//! Mirroring: a copy of the request goes to the route's shadow cluster as a
//! task of its own; its response is read and thrown away, and nothing about
//! it reaches the client's request.
//!
//! Only a request whose body the proxy already holds whole (a filter read
//! it, or a retrying chain kept it) or that has none is mirrored: a streamed
//! body goes once, to the main upstream, and is never buffered for a copy.
//! Each worker runs at most [`MIRRORS_PER_WORKER`] mirrors at once; past
//! that a copy is dropped. Every mirror is counted in
//! `weft_mirror_requests_total{route,outcome}`.

use std::cell::Cell;
use std::sync::Arc;
use std::time::Duration;

use http::request::Parts;
use http::{HeaderValue, Request, header};
use http_body::Body;
use http_body_util::BodyExt;

use super::outgoing::clone_request_head;
use crate::http::{ProxyBody, headers};
use crate::listener::Peer;
use crate::route::{Mirror, Route};
use crate::telemetry::Registry;
use crate::upstream::PickInput;

/// Mirrors in flight on one worker at most; a copy past it is dropped.
pub const MIRRORS_PER_WORKER: usize = 64;

thread_local! {
    /// Mirrors in flight on this worker (its runtime is single-threaded, so
    /// a mirror's task ends on the thread that started it).
    static IN_FLIGHT: Cell<usize> = const { Cell::new(0) };
}

/// One of this worker's mirror slots, given back when dropped.
struct Slot;

impl Slot {
    fn take() -> Option<Slot> {
        IN_FLIGHT.with(|n| {
            let now = n.get();
            (now < MIRRORS_PER_WORKER).then(|| {
                n.set(now + 1);
                Slot
            })
        })
    }
}

impl Drop for Slot {
    fn drop(&mut self) {
        IN_FLIGHT.with(|n| n.set(n.get().saturating_sub(1)));
    }
}

fn count(metrics: &Registry, route: &Route, outcome: &str) {
    let _ = metrics.counter_add(
        "weft_mirror_requests_total",
        vec![
            ("route".into(), route.name.to_string()),
            ("outcome".into(), outcome.into()),
        ],
        1,
    );
}

/// `Host` with `-shadow` after the host name (before any port), as the
/// shadow receives it.
fn shadow_host(host: &str) -> String {
    match host.rsplit_once(':') {
        Some((name, port)) if !port.contains(']') && port.bytes().all(|b| b.is_ascii_digit()) => {
            format!("{name}-shadow:{port}")
        }
        _ => format!("{host}-shadow"),
    }
}

/// Starts the copy of `head` and `body` (as about to be sent upstream) to
/// `mirror`'s cluster, or counts why not.
pub fn spawn(
    mirror: &Mirror,
    route: &Route,
    head: &Parts,
    body: &ProxyBody,
    peer: &Peer,
    timeout: Duration,
    metrics: &Arc<Registry>,
) {
    let body = match body {
        ProxyBody::Full(Some(bytes)) => ProxyBody::full(bytes.clone()),
        ProxyBody::Empty | ProxyBody::Full(None) => ProxyBody::Empty,
        body if body.is_end_stream() => ProxyBody::Empty,
        _ => return count(metrics, route, "skipped_body"),
    };
    let Some(slot) = Slot::take() else {
        return count(metrics, route, "dropped");
    };
    let mut head = clone_request_head(head);
    headers::remove_hop_by_hop(&mut head.headers);
    headers::add_forwarded(&mut head.headers, peer, head.version);
    head.headers.remove(header::EXPECT);
    head.headers.remove(header::TRAILER);
    if let Some(host) = head.headers.get(header::HOST).and_then(|h| h.to_str().ok())
        && let Ok(shadow) = HeaderValue::try_from(shadow_host(host))
    {
        head.headers.insert(header::HOST, shadow);
    }
    let cluster = mirror.cluster.clone();
    let metrics = metrics.clone();
    let route_name = route.name.clone();
    let client_ip = peer.addr.ip();
    tokio::spawn(async move {
        let _slot = slot;
        let picked = cluster.pick(&PickInput {
            headers: &head.headers,
            client_ip,
            avoid: None,
        });
        let request = Request::from_parts(head, body);
        let sent = match picked {
            Ok(i) => cluster.send(i, request, timeout).await,
            Err(e) => Err(e),
        };
        let outcome = match sent {
            Ok((response, _active)) => {
                // Read to the end, so the connection goes back to the pool.
                let mut body = response.into_body();
                let drained = tokio::time::timeout(timeout, async {
                    while let Some(frame) = body.frame().await {
                        if frame.is_err() {
                            break;
                        }
                    }
                });
                let _ = drained.await;
                "sent"
            }
            Err(e) => {
                tracing::debug!(
                    route = &*route_name,
                    cluster = &*cluster.name,
                    "mirror: {e}"
                );
                "failed"
            }
        };
        let _ = metrics.counter_add(
            "weft_mirror_requests_total",
            vec![
                ("route".into(), route_name.to_string()),
                ("outcome".into(), outcome.into()),
            ],
            1,
        );
    });
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_shadow_host_keeps_the_port() {
        assert_eq!(shadow_host("api.example:8080"), "api.example-shadow:8080");
        assert_eq!(shadow_host("api"), "api-shadow");
        assert_eq!(shadow_host("[::1]:80"), "[::1]-shadow:80");
    }

    #[test]
    fn a_worker_runs_a_bounded_number_of_mirrors() {
        let slots: Vec<Slot> = std::iter::from_fn(Slot::take).take(1000).collect();
        assert_eq!(slots.len(), MIRRORS_PER_WORKER);
        drop(slots);
        assert!(Slot::take().is_some());
    }
}
