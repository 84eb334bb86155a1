//! `Upgrade` tunnels over HTTP/1.1 (WebSocket and other protocols a route
//! allows with `upgrades:`).
//!
//! An upgrade request goes to the upstream on an HTTP/1.1 connection of its
//! own with its `Upgrade` header and `Connection: upgrade`; when the
//! upstream answers `101 Switching Protocols`, both connections are taken
//! from hyper and bytes are copied both ways until either side closes or
//! no byte moves for the body idle timeout (`limits.body_idle_timeout_ms`).
//! A protocol the route does not allow is answered 403 `upgrade_refused`.

use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use http::{HeaderValue, Request, Response, StatusCode, Version, header};
use hyper::upgrade::OnUpgrade;
use hyper_util::rt::TokioIo;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

use crate::filter::RequestProps;
use crate::http::{ProxyBody, headers, local};
use crate::listener::Peer;
use crate::route::Route;
use crate::upstream::{Cluster, PickInput, UpstreamError};

/// A route's allowed `Upgrade` protocols.
#[derive(Debug, Clone, Default)]
pub struct Upgrades {
    /// Lower-case protocol names (without version).
    allowed: Box<[Box<str>]>,
    /// The config path of the list, for messages.
    at: Box<str>,
}

impl Upgrades {
    /// The list `tokens` of the route at config path `at`; a token that is
    /// not a protocol name is reported through `error(path, message)`.
    pub fn build(tokens: &[String], at: &str, error: &mut dyn FnMut(String, String)) -> Self {
        let at = format!("{at}.upgrades");
        let mut allowed = Vec::new();
        for (i, t) in tokens.iter().enumerate() {
            let ok = !t.is_empty()
                && t.bytes()
                    .all(|c| c.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&c));
            if !ok {
                error(
                    format!("{at}[{i}]"),
                    format!("{t:?} is not a protocol name (e.g. websocket)"),
                );
            } else if t.eq_ignore_ascii_case("h2c") {
                error(
                    format!("{at}[{i}]"),
                    "h2c is not tunnelled: clients speak HTTP/2 to the proxy directly".into(),
                );
            } else {
                allowed.push(t.to_ascii_lowercase().into_boxed_str());
            }
        }
        Self {
            allowed: allowed.into(),
            at: at.into(),
        }
    }

    /// Whether every protocol in an `Upgrade` value is allowed.
    fn allows(&self, value: &str) -> Result<(), String> {
        for proto in value.split(',').map(str::trim).filter(|p| !p.is_empty()) {
            let name = proto.split('/').next().unwrap_or(proto);
            if !self.allowed.iter().any(|a| a.eq_ignore_ascii_case(name)) {
                return Err(name.to_string());
            }
        }
        Ok(())
    }
}

/// Whether `head` asks to switch protocols: HTTP/1.1 with `Upgrade` and
/// `Connection: upgrade`.
pub fn requested(head: &http::request::Parts) -> bool {
    head.headers.contains_key(header::UPGRADE)
        && head.version == Version::HTTP_11
        && head.headers.get_all(header::CONNECTION).iter().any(|v| {
            v.to_str()
                .unwrap_or("")
                .split(',')
                .any(|t| t.trim().eq_ignore_ascii_case("upgrade"))
        })
}

/// Sends the upgrade request upstream and, on `101`, starts the tunnel;
/// any other answer goes back as a response.
pub async fn forward(
    route: &Route,
    cluster: &Cluster,
    mut head: http::request::Parts,
    body: ProxyBody,
    peer: &Peer,
    timeout: Duration,
    props: &mut RequestProps,
) -> Response<ProxyBody> {
    let upgrade = head
        .headers
        .get(header::UPGRADE)
        .cloned()
        .unwrap_or_else(|| HeaderValue::from_static(""));
    if let Err(protocol) = route.upgrades.allows(upgrade.to_str().unwrap_or("")) {
        let message = format!(
            "route {:?} does not allow upgrading to {protocol:?} (add it to {})",
            &*route.name, route.upgrades.at
        );
        return local::error(
            StatusCode::FORBIDDEN,
            "upgrade_refused",
            &message,
            &props.request_id,
        );
    }
    let client = head.extensions.remove::<OnUpgrade>();
    headers::remove_hop_by_hop(&mut head.headers);
    headers::add_forwarded(&mut head.headers, peer, head.version);
    head.headers.insert(header::UPGRADE, upgrade);
    head.headers
        .insert(header::CONNECTION, HeaderValue::from_static("upgrade"));
    let mut request = Request::from_parts(head, body);
    *request.version_mut() = Version::HTTP_11;
    let picked = cluster.pick(&PickInput {
        headers: request.headers(),
        client_ip: peer.addr.ip(),
        avoid: None,
    });
    let sent = match picked {
        Ok(i) => {
            props.upstream_endpoint = Some(cluster.endpoints()[i].authority.clone());
            cluster.send_upgrade(i, request, timeout).await
        }
        Err(e) => Err(e),
    };
    let mut response = match sent {
        Ok(response) => response,
        Err(e) => return failed(route, cluster, e, props),
    };
    props.upstream_failure = None;
    let switching = response.status() == StatusCode::SWITCHING_PROTOCOLS;
    let upstream = switching.then(|| hyper::upgrade::on(&mut response));
    let (mut head, body) = response.into_parts();
    let protocol = head.headers.get(header::UPGRADE).cloned();
    headers::remove_hop_by_hop(&mut head.headers);
    head.headers.append(header::VIA, headers::via(head.version));
    head.version = Version::HTTP_11;
    match (upstream, client, protocol) {
        (Some(upstream), Some(client), Some(protocol)) => {
            head.headers.insert(header::UPGRADE, protocol);
            head.headers
                .insert(header::CONNECTION, HeaderValue::from_static("upgrade"));
            let route = route.name.clone();
            let request_id = props.request_id.clone();
            tokio::spawn(async move {
                if let Err(e) = tunnel(client, upstream).await {
                    tracing::debug!(route = &*route, request_id, "upgrade tunnel ended: {e}");
                }
            });
            Response::from_parts(head, ProxyBody::Empty)
        }
        (Some(_), _, _) => local::error(
            StatusCode::BAD_GATEWAY,
            "upstream_unavailable",
            "upstream answered 101 without an Upgrade protocol, or the client connection cannot be upgraded",
            &props.request_id,
        ),
        _ => Response::from_parts(head, ProxyBody::Streaming(body)),
    }
}

fn failed(
    route: &Route,
    cluster: &Cluster,
    e: UpstreamError,
    props: &mut RequestProps,
) -> Response<ProxyBody> {
    tracing::warn!(
        route = &*route.name,
        cluster = &*cluster.name,
        request_id = props.request_id,
        "{e}"
    );
    props.upstream_failure = Some(e.kind());
    super::forward::error_response(&e, &props.request_id)
}

/// Copies bytes both ways between the upgraded connections until either
/// side closes, or none moves for the body idle timeout.
async fn tunnel(client: OnUpgrade, upstream: OnUpgrade) -> std::io::Result<()> {
    let (client, upstream) = tokio::try_join!(client, upstream).map_err(std::io::Error::other)?;
    let start = Instant::now();
    let last = Arc::new(AtomicU64::new(0));
    let mut client = Active {
        inner: TokioIo::new(client),
        start,
        last: last.clone(),
    };
    let mut upstream = Active {
        inner: TokioIo::new(upstream),
        start,
        last: last.clone(),
    };
    let idle = crate::http::body::idle_timeout();
    let copy = tokio::io::copy_bidirectional(&mut client, &mut upstream);
    let watchdog = async {
        loop {
            let moved = Duration::from_millis(last.load(Ordering::Relaxed));
            let due = start + moved + idle;
            if Instant::now() >= due {
                return;
            }
            tokio::time::sleep_until(due.into()).await;
        }
    };
    tokio::select! {
        copied = copy => copied.map(drop),
        () = watchdog => Err(std::io::Error::new(
            std::io::ErrorKind::TimedOut,
            format!("no bytes either way for {} ms", idle.as_millis()),
        )),
    }
}

/// A stream that notes when bytes last came in.
struct Active<S> {
    inner: S,
    start: Instant,
    last: Arc<AtomicU64>,
}

impl<S: AsyncRead + Unpin> AsyncRead for Active<S> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        let before = buf.filled().len();
        let polled = Pin::new(&mut self.inner).poll_read(cx, buf);
        if buf.filled().len() > before {
            let at = self.start.elapsed().as_millis() as u64;
            self.last.store(at, Ordering::Relaxed);
        }
        polled
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for Active<S> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write(cx, buf)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}
