//! A worker's HTTP/2 connections to upstream endpoints, shared by many
//! requests at once.
//!
//! A request takes the first connection with a free stream: fewer streams
//! in flight than the peer's `SETTINGS_MAX_CONCURRENT_STREAMS`. When every
//! connection is full, one more is opened (up to `max_connections_per_worker`;
//! requests arriving meanwhile wait for it rather than open their own);
//! past the cap, the least loaded connection takes the request and HTTP/2
//! queues it until a stream frees. A new connection is offered to requests
//! once the server's first `SETTINGS` have been read, so its limit is known.
//! A stream counts as in flight until its response body is finished or
//! dropped ([`StreamSlot`], carried in the response's extensions).

use std::cell::RefCell;
use std::collections::{HashMap, HashSet};
use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use atomic_waker::AtomicWaker;
use http::uri::{Authority, PathAndQuery, Scheme};
use http::{Request, Response, Uri, Version, header};
use hyper::body::Incoming;
use hyper::client::conn::http2::{self, SendRequest};
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::sync::Notify;

use super::{OpenConnection, SendError, Target, error_chain, exchange_error};
use crate::http::ProxyBody;
use crate::http::body::OnDrop;

type Endpoints = HashMap<Box<str>, Endpoint, foldhash::fast::RandomState>;

thread_local! {
    static POOL: RefCell<Endpoints> = RefCell::new(Endpoints::default());
}

/// One endpoint's HTTP/2 connections on this worker.
#[derive(Default)]
struct Endpoint {
    conns: Vec<Pooled>,
    /// Connections being opened.
    connecting: u32,
    /// Notified when a connection has been opened (or failed to).
    opened: Arc<Notify>,
    /// The idle timeout of its cluster (as of the last connection opened).
    idle: Duration,
}

struct Pooled {
    conn: H2Conn,
    used: Instant,
}

/// A shared HTTP/2 connection.
#[derive(Clone)]
pub(super) struct H2Conn {
    sender: SendRequest<ProxyBody>,
    state: Arc<State>,
    scheme: Scheme,
}

/// What a connection's task shares with its requests.
#[derive(Default)]
struct State {
    /// Streams in flight.
    in_flight: AtomicU32,
    /// The peer's stream limit; 0 until its first `SETTINGS` were read.
    max_streams: AtomicU32,
    /// Set once the server sent its first bytes.
    heard: AtomicBool,
    /// Reads that woke the connection's task (its first few).
    reads: AtomicU32,
    /// The connection's task: hyper reads the socket in a task of its own,
    /// so ours is woken to look at the peer's settings after a read.
    task: AtomicWaker,
    /// Notified when `max_streams` is known or the connection ended.
    settled: Notify,
    /// Why the connection ended, when it did.
    ended: Mutex<Option<String>>,
}

impl State {
    fn has_room(&self) -> bool {
        self.in_flight.load(Ordering::Relaxed) < self.max_streams.load(Ordering::Relaxed)
    }
}

/// One stream in flight on an HTTP/2 connection, until its last clone is
/// dropped: kept with the response body (`Clone` to ride in extensions).
#[derive(Clone)]
pub struct StreamSlot(#[allow(dead_code)] Arc<Slot>);

impl OnDrop for StreamSlot {}

/// Counted in its connection's streams until dropped.
struct Slot(Arc<State>);

impl Drop for Slot {
    fn drop(&mut self) {
        self.0.in_flight.fetch_sub(1, Ordering::Relaxed);
    }
}

/// Whether this worker has an HTTP/2 connection under `key` (an `auto`
/// endpoint that chose `h2`).
pub(super) fn has_connections(key: &str) -> bool {
    POOL.with_borrow(|pool| pool.get(key).is_some_and(|e| !e.conns.is_empty()))
}

/// Sends `request` over a shared connection to the target.
pub(super) async fn send(
    target: &Target<'_>,
    request: Request<ProxyBody>,
) -> Result<Response<Incoming>, SendError> {
    let conn = match take(target.key) {
        Some(conn) => conn,
        None => open_or_wait(target).await?,
    };
    send_on(conn, target, request).await
}

/// Sends `request` on `conn`, whose stream is already counted.
pub(super) async fn send_on(
    conn: H2Conn,
    target: &Target<'_>,
    mut request: Request<ProxyBody>,
) -> Result<Response<Incoming>, SendError> {
    let slot = StreamSlot(Arc::new(Slot(conn.state.clone())));
    absolute_uri(&mut request, &conn.scheme, target.endpoint);
    let mut sender = conn.sender;
    let mut response = sender
        .send_request(request)
        .await
        .map_err(|e| exchange_error(&e))?;
    response.extensions_mut().insert(slot);
    Ok(response)
}

/// HTTP/2 carries the target as `:scheme`, `:authority` and `:path`: the
/// `Host` header (or the endpoint) becomes the authority.
fn absolute_uri(request: &mut Request<ProxyBody>, scheme: &Scheme, endpoint: &Authority) {
    let authority = request
        .headers_mut()
        .remove(header::HOST)
        .and_then(|host| Authority::try_from(host.as_bytes()).ok())
        .unwrap_or_else(|| endpoint.clone());
    let path = request
        .uri()
        .path_and_query()
        .cloned()
        .unwrap_or_else(|| PathAndQuery::from_static("/"));
    let mut parts = http::uri::Parts::default();
    parts.scheme = Some(scheme.clone());
    parts.authority = Some(authority);
    parts.path_and_query = Some(path);
    if let Ok(uri) = Uri::from_parts(parts) {
        *request.uri_mut() = uri;
    }
    *request.version_mut() = Version::HTTP_2;
}

/// The first open connection under `key` with a free stream, counted.
fn take(key: &str) -> Option<H2Conn> {
    POOL.with_borrow_mut(|pool| {
        let e = pool.get_mut(key)?;
        let now = Instant::now();
        e.conns.retain(|c| !c.conn.sender.is_closed());
        let c = e.conns.iter_mut().find(|c| c.conn.state.has_room())?;
        c.conn.state.in_flight.fetch_add(1, Ordering::Relaxed);
        c.used = now;
        Some(c.conn.clone())
    })
}

/// The least loaded open connection under `key`, counted: HTTP/2 queues
/// the stream until the peer allows it.
fn take_least_loaded(key: &str) -> Option<H2Conn> {
    POOL.with_borrow_mut(|pool| {
        let e = pool.get_mut(key)?;
        let c = e
            .conns
            .iter_mut()
            .filter(|c| !c.conn.sender.is_closed())
            .min_by_key(|c| c.conn.state.in_flight.load(Ordering::Relaxed))?;
        c.conn.state.in_flight.fetch_add(1, Ordering::Relaxed);
        c.used = Instant::now();
        Some(c.conn.clone())
    })
}

/// Opens a connection when none is being opened and the cap allows;
/// otherwise waits for the one being opened.
async fn open_or_wait(target: &Target<'_>) -> Result<H2Conn, SendError> {
    let deadline = tokio::time::Instant::now() + target.connect_timeout;
    loop {
        if let Some(conn) = take(target.key) {
            return Ok(conn);
        }
        let (connecting, open, opened) = POOL.with_borrow_mut(|pool| {
            let e = pool.entry(target.key.into()).or_default();
            (e.connecting, e.conns.len() as u32, e.opened.clone())
        });
        if connecting > 0 {
            let notified = opened.notified();
            if tokio::time::timeout_at(deadline, notified).await.is_err() {
                return Err(SendError::Overflow);
            }
            continue;
        }
        if open + connecting >= target.max_connections {
            return take_least_loaded(target.key).ok_or(SendError::Overflow);
        }
        // Counted in the h1 pool's endpoint count too, as any connection.
        let shared = super::shared(target.key);
        shared.open.fetch_add(1, Ordering::Relaxed);
        let slot = target
            .breakers
            .connection()
            .map_err(SendError::Overloaded)?;
        let guard = OpenConnection(shared, slot);
        set_connecting(target.key, 1);
        let connected = target
            .transport
            .connect(target.endpoint, target.connect_timeout, false)
            .await;
        let conn = match connected {
            Ok(super::Connected::Plain(s)) => handshake(s, target, guard).await,
            Ok(super::Connected::Tls(s)) => handshake(s, target, guard).await,
            Err(e) => Err(SendError::Connect(e)),
        };
        set_connecting(target.key, -1);
        opened.notify_waiters();
        return conn;
    }
}

fn set_connecting(key: &str, delta: i32) {
    POOL.with_borrow_mut(|pool| {
        let e = pool.entry(key.into()).or_default();
        e.connecting = e.connecting.saturating_add_signed(delta);
    });
}

/// Opens an HTTP/2 connection over `stream` and waits (within the connect
/// timeout) for the server's first `SETTINGS`; the connection joins the
/// pool with one stream counted for the caller. Its task holds `open`.
pub(super) async fn handshake<S>(
    stream: S,
    target: &Target<'_>,
    open: OpenConnection,
) -> Result<H2Conn, SendError>
where
    S: AsyncRead + AsyncWrite + Send + Unpin + 'static,
{
    let state = Arc::new(State::default());
    let io = Heard {
        inner: stream,
        state: state.clone(),
    };
    let mut builder = http2::Builder::new(TokioExecutor::new());
    builder.timer(TokioTimer::new());
    let (sender, connection) = builder
        .handshake(TokioIo::new(io))
        .await
        .map_err(|e| SendError::Connect(error_chain(&e)))?;
    let endpoint = target.endpoint.clone();
    let task_state = state.clone();
    tokio::spawn(async move {
        let mut connection = std::pin::pin!(connection);
        let ended = std::future::poll_fn(|cx| {
            let state = &task_state;
            state.task.register(cx.waker());
            let polled = connection.as_mut().poll(cx);
            if state.heard.load(Ordering::Relaxed) {
                let max = connection.current_max_send_streams().min(u32::MAX as usize) as u32;
                if state.max_streams.swap(max.max(1), Ordering::Relaxed) == 0 {
                    state.settled.notify_waiters();
                }
            }
            polled
        })
        .await;
        let why = match ended {
            Ok(()) => "closed".to_string(),
            Err(e) => error_chain(&e),
        };
        tracing::debug!(%endpoint, "upstream HTTP/2 connection ended: {why}");
        *task_state.ended.lock().expect("not poisoned") = Some(why);
        task_state.settled.notify_waiters();
        drop(open);
    });
    let deadline = tokio::time::Instant::now() + target.connect_timeout;
    loop {
        let settled = state.settled.notified();
        let mut settled = std::pin::pin!(settled);
        settled.as_mut().enable();
        if let Some(why) = state.ended.lock().expect("not poisoned").clone() {
            return Err(SendError::Connect(format!(
                "HTTP/2 connection failed before the server's SETTINGS: {why}"
            )));
        }
        if state.max_streams.load(Ordering::Relaxed) > 0 {
            break;
        }
        if tokio::time::timeout_at(deadline, settled).await.is_err() {
            return Err(SendError::Connect(format!(
                "no HTTP/2 SETTINGS from the server within {} ms (does it speak HTTP/2?)",
                target.connect_timeout.as_millis()
            )));
        }
    }
    state.in_flight.store(1, Ordering::Relaxed);
    let conn = H2Conn {
        sender,
        state,
        scheme: if target.transport.is_tls() {
            Scheme::HTTPS
        } else {
            Scheme::HTTP
        },
    };
    POOL.with_borrow_mut(|pool| {
        let e = pool.entry(target.key.into()).or_default();
        e.idle = target.idle_timeout;
        e.conns.push(Pooled {
            conn: conn.clone(),
            used: Instant::now(),
        });
    });
    Ok(conn)
}

/// Drops closed connections, idle ones unused for the idle timeout, and
/// those to endpoints not in `live`.
pub(super) fn sweep(live: &HashSet<&str>, now: Instant) {
    POOL.with_borrow_mut(|pool| {
        pool.retain(|key, e| live.contains(super::endpoint_of(key)) || e.connecting > 0);
        for e in pool.values_mut() {
            let idle = e.idle;
            e.conns.retain(|c| {
                !c.conn.sender.is_closed()
                    && (c.conn.state.in_flight.load(Ordering::Relaxed) > 0
                        || now.duration_since(c.used) < idle)
            });
        }
    });
}

/// Reads after which the connection's task looks at the peer's settings:
/// the server's first bytes are its `SETTINGS` (later changes are seen when
/// the task next runs, at the next request).
const WAKING_READS: u32 = 4;

/// A connection's stream that notes when the server first sent bytes (its
/// `SETTINGS` come first).
struct Heard<S> {
    inner: S,
    state: Arc<State>,
}

impl<S: AsyncRead + Unpin> AsyncRead for Heard<S> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        let before = buf.filled().len();
        let polled = Pin::new(&mut self.inner).poll_read(cx, buf);
        if buf.filled().len() > before && self.state.reads.load(Ordering::Relaxed) < WAKING_READS {
            self.state.reads.fetch_add(1, Ordering::Relaxed);
            self.state.heard.store(true, Ordering::Relaxed);
            self.state.task.wake();
        }
        polled
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for Heard<S> {
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

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[std::io::IoSlice<'_>],
    ) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }
}
