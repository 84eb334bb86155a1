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

use super::circuit::{ConnectionSlot, Limit};
use crate::http::ProxyBody;
use crate::http::body::BodyIdle;

/// What the pool needs to know of an endpoint's cluster.
pub struct PoolSettings {
    /// Time allowed to open a connection (and to wait for a busy one).
    pub connect_timeout: Duration,
    /// Connections one worker opens to one endpoint.
    pub max_connections: u32,
    /// An idle connection older than this is closed rather than reused.
    pub idle_timeout: Duration,
    /// The cluster's process-wide limits (connections, pending requests).
    pub breakers: super::circuit::Breakers,
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

/// Sends `request` (origin-form URI) to `endpoint` on a pooled connection,
/// or on a new one opened within `connect_timeout` when fewer than
/// `max_connections` are open; otherwise waits as long for one to be free.
pub async fn send(
    endpoint: &Authority,
    settings: &PoolSettings,
    mut request: Request<ProxyBody>,
) -> Result<Response<Incoming>, SendError> {
    if !request.headers().contains_key(header::HOST)
        && let Ok(host) = HeaderValue::from_str(endpoint.as_str())
    {
        request.headers_mut().insert(header::HOST, host);
    }
    for _ in 0..STALE_TRIES {
        let Some(mut sender) = take_ready(endpoint, settings.idle_timeout) else {
            break;
        };
        match sender.try_send_request(request).await {
            Ok(response) => {
                give_back(endpoint, sender, settings.idle_timeout);
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
    Box::pin(send_fresh(endpoint, settings, request)).await
}

/// Sends `request` on a connection that is opened or freed for it.
async fn send_fresh(
    endpoint: &Authority,
    settings: &PoolSettings,
    request: Request<ProxyBody>,
) -> Result<Response<Incoming>, SendError> {
    let pending = settings.breakers.pending().map_err(SendError::Overloaded)?;
    let mut sender = acquire(endpoint, settings).await?;
    drop(pending);
    let response = sender
        .send_request(request)
        .await
        .map_err(|e| exchange_error(&e))?;
    give_back(endpoint, sender, settings.idle_timeout);
    Ok(response)
}

/// Tells the client's body failing mid-send (hyper's user-body error: a
/// malformed chunk, a stalled upload) from the upstream failing.
fn exchange_error(e: &hyper::Error) -> SendError {
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

/// A new connection when the cap allows, else the first pooled one to
/// become ready within `timeout`.
async fn acquire(
    endpoint: &Authority,
    settings: &PoolSettings,
) -> Result<SendRequest<ProxyBody>, SendError> {
    let timeout = settings.connect_timeout;
    let deadline = tokio::time::Instant::now() + timeout;
    loop {
        let shared = shared(endpoint);
        if shared.open.load(Ordering::Relaxed) < settings.max_connections {
            let slot = settings
                .breakers
                .connection()
                .map_err(SendError::Overloaded)?;
            return connect(endpoint, timeout, shared, slot).await;
        }
        if let Some(sender) = take_ready(endpoint, settings.idle_timeout) {
            return Ok(sender);
        }
        match take_busy(endpoint) {
            Some(mut busy) => match tokio::time::timeout_at(deadline, busy.ready()).await {
                Ok(Ok(())) => return Ok(busy),
                Ok(Err(_)) => continue,
                Err(_) => {
                    give_back(endpoint, busy, settings.idle_timeout);
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

/// The first ready connection to `endpoint`; closed and expired ones met on
/// the way are dropped.
fn take_ready(endpoint: &Authority, idle: Duration) -> Option<SendRequest<ProxyBody>> {
    POOL.with_borrow_mut(|pool| {
        let list = &mut pool.get_mut(endpoint.as_str())?.pooled;
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
fn take_busy(endpoint: &Authority) -> Option<SendRequest<ProxyBody>> {
    POOL.with_borrow_mut(|pool| {
        pool.get_mut(endpoint.as_str())?
            .pooled
            .pop()
            .map(|c| c.sender)
    })
}

fn shared(endpoint: &Authority) -> Arc<Shared> {
    POOL.with_borrow_mut(|pool| {
        if let Some(e) = pool.get(endpoint.as_str()) {
            return e.shared.clone();
        }
        let e = pool.entry(endpoint.as_str().into()).or_default();
        e.shared.clone()
    })
}

fn give_back(endpoint: &Authority, sender: SendRequest<ProxyBody>, idle: Duration) {
    let pooled = Pooled {
        sender,
        used: Instant::now(),
    };
    POOL.with_borrow_mut(|pool| {
        let e = match pool.get_mut(endpoint.as_str()) {
            Some(e) => e,
            None => pool.entry(endpoint.as_str().into()).or_default(),
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
    POOL.with_borrow_mut(|pool| {
        pool.retain(|endpoint, _| live.contains(&**endpoint));
        for e in pool.values_mut() {
            let idle = e.idle;
            e.pooled
                .retain(|c| !c.sender.is_closed() && now.duration_since(c.used) < idle);
        }
    });
}

/// Opens a connection, counted in `shared.open` while it lives.
async fn connect(
    endpoint: &Authority,
    timeout: Duration,
    shared: Arc<Shared>,
    slot: ConnectionSlot,
) -> Result<SendRequest<ProxyBody>, SendError> {
    shared.open.fetch_add(1, Ordering::Relaxed);
    let open = OpenConnection(shared, slot);
    let stream = match tokio::time::timeout(timeout, super::dns::connect(endpoint.as_str())).await {
        Ok(Ok(stream)) => stream,
        Ok(Err(e)) => return Err(SendError::Connect(format!("tcp connect error: {e}"))),
        Err(_) => {
            return Err(SendError::Connect(format!(
                "tcp connect timed out after {} ms",
                timeout.as_millis()
            )));
        }
    };
    let _ = stream.set_nodelay(true);
    let (sender, connection) = http1::Builder::new()
        .handshake(TokioIo::new(stream))
        .await
        .map_err(|e| SendError::Connect(error_chain(&e)))?;
    let endpoint = endpoint.clone();
    tokio::spawn(async move {
        if let Err(e) = connection.await {
            tracing::debug!(%endpoint, "upstream connection ended: {e}");
        }
        drop(open);
    });
    Ok(sender)
}

/// One open connection in its endpoint's count (and its cluster's), until
/// dropped.
struct OpenConnection(Arc<Shared>, #[allow(dead_code)] ConnectionSlot);

impl Drop for OpenConnection {
    fn drop(&mut self) {
        self.0.open.fetch_sub(1, Ordering::Relaxed);
        self.0.freed.notify_one();
    }
}

/// `e` and its sources, `: `-separated.
fn error_chain(e: &dyn std::error::Error) -> String {
    let mut out = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        out.push_str(": ");
        out.push_str(&s.to_string());
        source = s.source();
    }
    out
}
