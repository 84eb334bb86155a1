//! A worker's keep-alive connections to upstream endpoints.
//!
//! Thread-local and lock-free: a worker's requests only use connections the
//! worker opened, whose connection tasks run on the same thread. A
//! connection goes back to the list as soon as its response head arrives;
//! HTTP/1 lets a connection carry one exchange at a time, and hyper reports
//! it ready again only once the response body has been read, so taking a
//! connection means taking the first ready one.
//!
//! A worker opens at most `max_connections_per_worker` connections to one
//! endpoint; past it a request waits (up to the connect timeout) for one to
//! become ready. [`sweep`], run by each worker every few seconds, drops
//! closed and expired connections and those to endpoints no longer in the
//! config, so the request path only looks at connections until it finds a
//! ready one.
//!
//! Connections are keyed by the endpoint as the config spells it for a
//! plaintext HTTP/1.1 cluster (the fast path), and by endpoint and cluster
//! transport otherwise ([`Transport::pool_key`]). HTTP/2 connections, shared
//! by many requests, are in [`h2`]; `Upgrade` tunnels get a connection of
//! their own ([`send_upgrade`]).

mod h2;

use std::cell::RefCell;
use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

use http::uri::Authority;
use http::{HeaderValue, Request, Response, header};
use hyper::body::Incoming;
use hyper::client::conn::http1::{self, SendRequest};
use hyper_util::rt::TokioIo;
use tokio::io::{AsyncRead, AsyncWrite};

use super::circuit::{Breakers, ConnectionSlot, Limit};
use super::transport::{Connected, Transport};
use crate::config::model::UpstreamProtocol;
use crate::http::ProxyBody;
use crate::http::body::BodyIdle;

pub use h2::StreamSlot;

/// What the pool needs to know of an endpoint's cluster.
pub struct PoolSettings {
    /// Time allowed to open a connection (and to wait for a busy one).
    pub connect_timeout: Duration,
    /// Connections one worker opens to one endpoint.
    pub max_connections: u32,
    /// An idle connection older than this is closed rather than reused.
    pub idle_timeout: Duration,
    /// The cluster's process-wide limits (connections, pending requests).
    pub breakers: Breakers,
}
/// Pooled connections tried for one request before opening a new one: a
/// connection the upstream closed while idle fails without sending.
const STALE_TRIES: usize = 4;

/// Connections by endpoint, keyed by the endpoint as the config spells it.
/// The endpoints come from the config, not from clients, so a fast hash
/// does (SipHash was 0.8% of a plain proxy's CPU: two lookups per request),
/// over the bytes at once: `Authority`'s own `Hash` and `Eq` ignore case
/// byte by byte, which cost more than the rest of a lookup.
type Endpoints = HashMap<Box<str>, Endpoint, foldhash::fast::RandomState>;

thread_local! {
    static POOL: RefCell<Endpoints> = RefCell::new(Endpoints::default());
}

/// One endpoint's connections on this worker.
#[derive(Default)]
struct Endpoint {
    /// Connections not waiting for a response head (ready or still
    /// streaming a response body).
    pooled: Vec<Pooled>,
    /// Counts this worker's open connections and wakes waiters.
    shared: Arc<Shared>,
    /// The idle timeout of its cluster (as of the last give-back).
    idle: Duration,
}

/// What an endpoint's connection tasks share with its requests.
#[derive(Default)]
struct Shared {
    /// Open connections (pooled or lent to a request).
    open: AtomicU32,
    /// Notified when a connection is given back or closes.
    freed: tokio::sync::Notify,
}

struct Pooled {
    sender: SendRequest<ProxyBody>,
    used: Instant,
}

/// Why no response came back.
#[derive(Debug, thiserror::Error)]
pub enum SendError {
    /// No connection could be opened.
    #[error("{0}")]
    Connect(String),
    /// The connection failed after the request was (maybe) sent.
    #[error("{0}")]
    Exchange(String),
    /// The client's body, being sent, failed (or stalled: `idle`).
    #[error("{reason}")]
    ClientBody {
        /// What failed.
        reason: String,
        /// Set when the body stalled for the body idle timeout.
        idle: Option<BodyIdle>,
    },
    /// The endpoint's connection cap was reached and none became free in
    /// time.
    #[error("connection cap reached")]
    Overflow,
    /// A limit of the cluster's circuit breakers was reached.
    #[error("{0:?} reached")]
    Overloaded(Limit),
}

/// Where a request goes: the endpoint, its key in the pool, and how
/// connections to it are opened.
pub struct Target<'a> {
    /// The endpoint.
    pub endpoint: &'a Authority,
    /// Its connections' key ([`Transport::pool_key`]).
    pub key: &'a str,
    /// The cluster's transport.
    pub transport: &'a Transport,
    /// Time allowed to open a connection (or wait for a free one).
    pub connect_timeout: Duration,
    /// Connections a worker may open to the endpoint.
    pub max_connections: u32,
    /// An idle connection older than this is closed rather than reused.
    pub idle_timeout: Duration,
    /// The cluster's process-wide limits.
    pub breakers: &'a Breakers,
}

/// Sends `request` (origin-form URI) to `endpoint` on a pooled connection,
/// or on a new one opened within `connect_timeout` when fewer than
/// `max_connections` are open; otherwise waits as long for one to be free.
/// HTTP/2 clusters (and `auto` ones whose endpoint chose `h2`) share
/// connections instead ([`h2`]).
pub async fn send(
    target: &Target<'_>,
    mut request: Request<ProxyBody>,
) -> Result<Response<Incoming>, SendError> {
    if !request.headers().contains_key(header::HOST)
        && let Ok(host) = HeaderValue::from_str(target.endpoint.as_str())
    {
        request.headers_mut().insert(header::HOST, host);
    }
    if !target.transport.is_plain_http1() {
        match target.transport.protocol {
            UpstreamProtocol::Http2 => return Box::pin(h2::send(target, request)).await,
            UpstreamProtocol::Auto if h2::has_connections(target.key) => {
                return Box::pin(h2::send(target, request)).await;
            }
            _ => {}
        }
    }
    let key = target.key;
    for _ in 0..STALE_TRIES {
        let Some(mut sender) = take_ready(key, target.idle_timeout) else {
            break;
        };
        match sender.try_send_request(request).await {
            Ok(response) => {
                give_back(key, sender, target.idle_timeout);
                return Ok(response);
            }
            Err(mut failed) => match failed.take_message() {
                // Not sent: the connection was closing; try another.
                Some(unsent) => request = unsent,
                None => return Err(exchange_error(failed.error())),
            },
        }
    }
    // Boxed: opening or waiting for a connection is rare, and its future
    // would otherwise make every request's future larger to move around.
    Box::pin(send_fresh(target, request)).await
}

/// Sends `request` on a connection that is opened or freed for it.
async fn send_fresh(
    target: &Target<'_>,
    request: Request<ProxyBody>,
) -> Result<Response<Incoming>, SendError> {
    let pending = target.breakers.pending().map_err(SendError::Overloaded)?;
    let conn = acquire(target).await;
    drop(pending);
    let mut sender = match conn? {
        Conn::Http1(sender) => sender,
        // An `auto` endpoint chose HTTP/2.
        Conn::Http2(conn) => return h2::send_on(conn, target, request).await,
    };
    let response = sender
        .send_request(request)
        .await
        .map_err(|e| exchange_error(&e))?;
    give_back(target.key, sender, target.idle_timeout);
    Ok(response)
}

/// Sends an `Upgrade` request on a new HTTP/1.1 connection of its own (not
/// pooled: after `101` it is the tunnel's), opened within the connect
/// timeout.
pub async fn send_upgrade(
    target: &Target<'_>,
    request: Request<ProxyBody>,
) -> Result<Response<Incoming>, SendError> {
    let connected = target
        .transport
        .connect(target.endpoint, target.connect_timeout, true)
        .await
        .map_err(SendError::Connect)?;
    let mut sender = match connected {
        Connected::Plain(s) => handshake_http1(s, target.endpoint, None).await?,
        Connected::Tls(s) => handshake_http1(s, target.endpoint, None).await?,
    };
    sender
        .send_request(request)
        .await
        .map_err(|e| exchange_error(&e))
}

/// Tells the client's body failing mid-send (hyper's user-body error: a
/// malformed chunk, a stalled upload) from the upstream failing.
pub(super) fn exchange_error(e: &hyper::Error) -> SendError {
    use std::error::Error;
    if e.is_user()
        && let Some(cause) = e.source()
    {
        let mut idle = None;
        let mut at = Some(cause);
        while let Some(err) = at {
            if let Some(stalled) = err.downcast_ref::<BodyIdle>() {
                idle = Some(BodyIdle(stalled.0));
            }
            at = err.source();
        }
        return SendError::ClientBody {
            reason: error_chain(cause),
            idle,
        };
    }
    SendError::Exchange(error_chain(e))
}

/// A connection just opened or freed.
enum Conn {
    Http1(SendRequest<ProxyBody>),
    Http2(h2::H2Conn),
}

/// A new connection when the cap allows, else the first pooled one to
/// become ready within the connect timeout.
async fn acquire(target: &Target<'_>) -> Result<Conn, SendError> {
    let key = target.key;
    let deadline = tokio::time::Instant::now() + target.connect_timeout;
    loop {
        let shared = shared(key);
        if shared.open.load(Ordering::Relaxed) < target.max_connections {
            let slot = target
                .breakers
                .connection()
                .map_err(SendError::Overloaded)?;
            return connect(target, shared, slot).await;
        }
        if let Some(sender) = take_ready(key, target.idle_timeout) {
            return Ok(Conn::Http1(sender));
        }
        match take_busy(key) {
            Some(mut busy) => match tokio::time::timeout_at(deadline, busy.ready()).await {
                Ok(Ok(())) => return Ok(Conn::Http1(busy)),
                Ok(Err(_)) => continue,
                Err(_) => {
                    give_back(key, busy, target.idle_timeout);
                    return Err(SendError::Overflow);
                }
            },
            // Every connection waits for a response head.
            None => {
                if tokio::time::timeout_at(deadline, shared.freed.notified())
                    .await
                    .is_err()
                {
                    return Err(SendError::Overflow);
                }
            }
        }
    }
}

/// The first ready connection under `key`; closed and expired ones met on
/// the way are dropped.
fn take_ready(key: &str, idle: Duration) -> Option<SendRequest<ProxyBody>> {
    POOL.with_borrow_mut(|pool| {
        let list = &mut pool.get_mut(key)?.pooled;
        let now = Instant::now();
        let mut i = 0;
        while i < list.len() {
            let c = &list[i];
            if c.sender.is_closed() || now.duration_since(c.used) >= idle {
                list.swap_remove(i);
            } else if c.sender.is_ready() {
                return Some(list.swap_remove(i).sender);
            } else {
                i += 1;
            }
        }
        None
    })
}

/// A pooled connection still busy with a response body.
fn take_busy(key: &str) -> Option<SendRequest<ProxyBody>> {
    POOL.with_borrow_mut(|pool| pool.get_mut(key)?.pooled.pop().map(|c| c.sender))
}

fn shared(key: &str) -> Arc<Shared> {
    POOL.with_borrow_mut(|pool| {
        if let Some(e) = pool.get(key) {
            return e.shared.clone();
        }
        let e = pool.entry(key.into()).or_default();
        e.shared.clone()
    })
}

fn give_back(key: &str, sender: SendRequest<ProxyBody>, idle: Duration) {
    let pooled = Pooled {
        sender,
        used: Instant::now(),
    };
    POOL.with_borrow_mut(|pool| {
        let e = match pool.get_mut(key) {
            Some(e) => e,
            None => pool.entry(key.into()).or_default(),
        };
        e.idle = idle;
        e.pooled.push(pooled);
        e.shared.freed.notify_one();
    });
}

/// Drops this worker's closed and expired connections, and every pooled
/// connection to an endpoint not in `live` (as the config spells them;
/// dropping the sender closes the connection once its exchange is done).
pub fn sweep(live: &HashSet<&str>) {
    let now = Instant::now();
    h2::sweep(live, now);
    POOL.with_borrow_mut(|pool| {
        pool.retain(|key, _| live.contains(endpoint_of(key)));
        for e in pool.values_mut() {
            let idle = e.idle;
            e.pooled
                .retain(|c| !c.sender.is_closed() && now.duration_since(c.used) < idle);
        }
    });
}

/// The endpoint part of a pool key.
fn endpoint_of(key: &str) -> &str {
    key.split_once('#').map_or(key, |(endpoint, _)| endpoint)
}

/// Opens a connection, counted in `shared.open` while it lives.
async fn connect(
    target: &Target<'_>,
    shared: Arc<Shared>,
    slot: ConnectionSlot,
) -> Result<Conn, SendError> {
    shared.open.fetch_add(1, Ordering::Relaxed);
    let open = OpenConnection(shared, slot);
    let connected = target
        .transport
        .connect(target.endpoint, target.connect_timeout, false)
        .await
        .map_err(SendError::Connect)?;
    if target.transport.speaks_h2(&connected) {
        let conn = match connected {
            Connected::Plain(s) => h2::handshake(s, target, open).await?,
            Connected::Tls(s) => h2::handshake(s, target, open).await?,
        };
        return Ok(Conn::Http2(conn));
    }
    let sender = match connected {
        Connected::Plain(s) => handshake_http1(s, target.endpoint, Some(open)).await?,
        Connected::Tls(s) => handshake_http1(s, target.endpoint, Some(open)).await?,
    };
    Ok(Conn::Http1(sender))
}

/// Opens an HTTP/1.1 connection over `stream`. A pooled one's task holds
/// `open`, its place in the counts; without one it is an `Upgrade`
/// request's connection of its own, which becomes the tunnel after `101`.
async fn handshake_http1<S>(
    stream: S,
    endpoint: &Authority,
    open: Option<OpenConnection>,
) -> Result<SendRequest<ProxyBody>, SendError>
where
    S: AsyncRead + AsyncWrite + Send + Unpin + 'static,
{
    let (sender, connection) = http1::Builder::new()
        .handshake(TokioIo::new(stream))
        .await
        .map_err(|e| SendError::Connect(error_chain(&e)))?;
    let endpoint = endpoint.clone();
    tokio::spawn(async move {
        let ended = match open {
            Some(open) => {
                let ended = connection.await;
                drop(open);
                ended
            }
            None => connection.with_upgrades().await,
        };
        if let Err(e) = ended {
            tracing::debug!(%endpoint, "upstream connection ended: {e}");
        }
    });
    Ok(sender)
}

/// One open connection in its endpoint's count (and its cluster's), until
/// dropped.
pub(super) struct OpenConnection(Arc<Shared>, #[allow(dead_code)] ConnectionSlot);

impl Drop for OpenConnection {
    fn drop(&mut self) {
        self.0.open.fetch_sub(1, Ordering::Relaxed);
        self.0.freed.notify_one();
    }
}

/// `e` and its sources, `: `-separated.
pub(super) fn error_chain(e: &dyn std::error::Error) -> String {
    let mut out = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        out.push_str(": ");
        out.push_str(&s.to_string());
        source = s.source();
    }
    out
}
