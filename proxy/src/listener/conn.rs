//! The bounds of a worker's client connections: the cap, the timers and the
//! drain.

use std::convert::Infallible;
use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::OnceLock;
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering};
use std::task::{Context, Poll, Wake, Waker};
use std::time::{Duration, Instant};

use atomic_waker::AtomicWaker;
use http::{Request, Response};
use hyper::body::Incoming;
use hyper::rt::{Read, ReadBufCursor, Write};
use hyper::service::Service;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use rustls::ServerConfig;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{Semaphore, TryAcquireError, watch};
use tokio::time::Sleep;

use super::Peer;
use crate::tls::TlsPeer;

use crate::config::limits::LimitsConfig;
use crate::http::ProxyBody;
use crate::telemetry::Registry;

/// Largest HTTP/1 read buffer (bounds a request head).
const MAX_BUF_SIZE: usize = 64 * 1024;
/// Idle connections are checked this many times per idle timeout: one is
/// closed between 1 and 1 + 1/`IDLE_CHECKS` idle timeouts after its last
/// request.
const IDLE_CHECKS: u32 = 4;
/// At most one log line per this interval about a full cap or failed accepts.
const LOG_EVERY: Duration = Duration::from_secs(10);
/// Longest pause after a failed `accept` (doubling from 10 ms).
const MAX_ACCEPT_BACKOFF: Duration = Duration::from_secs(1);

/// The start of shutdown, shared by every accept loop and connection.
pub struct Drain {
    started: watch::Sender<bool>,
}

impl Default for Drain {
    fn default() -> Self {
        Self {
            started: watch::Sender::new(false),
        }
    }
}

impl Drain {
    /// Stops the accept loops and shuts every connection down gracefully.
    pub fn start(&self) {
        self.started.send_replace(true);
    }

    /// Whether the drain has started.
    pub fn started(&self) -> bool {
        *self.started.borrow()
    }

    fn watch(&self) -> watch::Receiver<bool> {
        self.started.subscribe()
    }
}

/// What one worker's connections of one kind (proxy or admin) share: the
/// HTTP settings, the limits, the cap and the drain.
pub struct Connections {
    /// HTTP/1.1 or HTTP/2 by the client's first bytes (plaintext, or TLS
    /// without ALPN).
    builder: auto::Builder<TokioExecutor>,
    /// HTTP/1.1 only: TLS with ALPN `http/1.1`.
    http1: auto::Builder<TokioExecutor>,
    /// HTTP/2 only: TLS with ALPN `h2`.
    http2: auto::Builder<TokioExecutor>,
    first_bytes: Duration,
    idle_check: Duration,
    write_idle: Duration,
    slots: Arc<Semaphore>,
    cap: u32,
    drain: watch::Receiver<bool>,
    kind: &'static str,
    metrics: Arc<Registry>,
    /// `weft_active_connections{kind}`.
    active: prometheus::IntGauge,
}

impl Connections {
    /// At most `cap` connections at once under `limits`; `kind` names them
    /// in logs and metrics (`proxy`, `admin`).
    pub fn new(
        limits: &LimitsConfig,
        cap: u32,
        drain: &Drain,
        kind: &'static str,
        metrics: Arc<Registry>,
    ) -> Self {
        let mut builder = auto::Builder::new(TokioExecutor::new());
        builder
            .http1()
            .timer(TokioTimer::new())
            .header_read_timeout(limits.header_read_timeout())
            .max_buf_size(MAX_BUF_SIZE);
        builder
            .http2()
            .timer(TokioTimer::new())
            .max_concurrent_streams(limits.http2_max_concurrent_streams)
            .keep_alive_interval(Duration::from_millis(limits.http2_keepalive_interval_ms))
            .keep_alive_timeout(Duration::from_millis(limits.http2_keepalive_timeout_ms));
        Self {
            http1: builder.clone().http1_only(),
            http2: builder.clone().http2_only(),
            builder,
            first_bytes: limits.first_bytes_timeout(),
            idle_check: limits.idle_timeout() / IDLE_CHECKS,
            write_idle: limits.body_idle_timeout(),
            slots: Arc::new(Semaphore::new(cap as usize)),
            cap,
            drain: drain.watch(),
            kind,
            active: metrics.http.connections(kind),
            metrics,
        }
    }

    /// Resolves when every connection has closed (after the drain started,
    /// nothing opens new ones).
    pub async fn closed(&self) {
        let _ = self.slots.acquire_many(self.cap).await;
    }

    /// Connections open now, plus one per accept loop waiting to accept
    /// (it holds the permit of the next connection).
    pub fn open(&self) -> usize {
        self.cap as usize - self.slots.available_permits()
    }

    /// Accepts connections on `listener` until the drain starts, serving
    /// each with the service `make_service` builds for the [`Peer`] and the
    /// connection's [`Activity`]. A connection is TLS when `tls` gives a
    /// config for it (asked once per connection); its handshake must end
    /// within the first-bytes timeout, and its ALPN protocol picks HTTP/2
    /// or HTTP/1.1. The listening socket is closed on return.
    pub async fn accept_loop<T, F, S>(
        self: Arc<Self>,
        listener: TcpListener,
        mut tls: T,
        make_service: F,
    ) where
        T: FnMut() -> Option<Arc<ServerConfig>>,
        F: Fn(Arc<Peer>, Arc<Activity>) -> S + Clone + Send + 'static,
        S: Service<Request<Incoming>, Response = Response<ProxyBody>, Error = Infallible>
            + Send
            + 'static,
        S::Future: Send + 'static,
    {
        let mut drain = self.drain.clone();
        let mut backoff = Duration::ZERO;
        let mut last_log: Option<Instant> = None;
        loop {
            let permit = match self.slots.clone().try_acquire_owned() {
                Ok(permit) => permit,
                Err(TryAcquireError::Closed) => return,
                Err(TryAcquireError::NoPermits) => {
                    let _ = self.metrics.counter_add(
                        "weft_connections_capped_total",
                        vec![("kind".into(), self.kind.into())],
                        1,
                    );
                    if last_log.is_none_or(|at| at.elapsed() >= LOG_EVERY) {
                        last_log = Some(Instant::now());
                        tracing::warn!(
                            kind = self.kind,
                            cap = self.cap,
                            "connection cap reached: not accepting until a connection closes"
                        );
                    }
                    tokio::select! {
                        permit = self.slots.clone().acquire_owned() => match permit {
                            Ok(permit) => permit,
                            Err(_) => return,
                        },
                        _ = drain.wait_for(|started| *started) => return,
                    }
                }
            };
            let accepted = tokio::select! {
                accepted = listener.accept() => accepted,
                _ = drain.wait_for(|started| *started) => return,
            };
            let (stream, addr) = match accepted {
                Ok(accepted) => accepted,
                Err(e) => {
                    // Out of file descriptors and the like: back off, keep serving.
                    backoff = (backoff * 2).clamp(Duration::from_millis(10), MAX_ACCEPT_BACKOFF);
                    if last_log.is_none_or(|at| at.elapsed() >= LOG_EVERY) {
                        last_log = Some(Instant::now());
                        tracing::warn!(kind = self.kind, "accept failed: {e}");
                    }
                    drop(permit);
                    tokio::select! {
                        () = tokio::time::sleep(backoff) => continue,
                        _ = drain.wait_for(|started| *started) => return,
                    }
                }
            };
            backoff = Duration::ZERO;
            let _ = stream.set_nodelay(true);
            let tls = tls();
            let make_service = make_service.clone();
            let conns = self.clone();
            tokio::spawn(async move {
                conns.active.inc();
                conns.serve_accepted(stream, addr, tls, make_service).await;
                conns.active.dec();
                drop(permit);
            });
        }
    }

    /// Serves an accepted connection: plaintext, or TLS with `tls`.
    async fn serve_accepted<F, S>(
        &self,
        stream: TcpStream,
        addr: SocketAddr,
        tls: Option<Arc<ServerConfig>>,
        make_service: F,
    ) where
        F: Fn(Arc<Peer>, Arc<Activity>) -> S,
        S: Service<Request<Incoming>, Response = Response<ProxyBody>, Error = Infallible>
            + Send
            + 'static,
        S::Future: Send + 'static,
    {
        // The first-bytes timeout covers the TLS handshake and the first
        // request's first bytes.
        let first_bytes_by = tokio::time::Instant::now() + self.first_bytes;
        let activity = Arc::new(Activity::default());
        let Some(tls) = tls else {
            let service = make_service(Arc::new(Peer::new(addr)), activity.clone());
            let io = WriteBounded::new(TokioIo::new(stream), self.write_idle);
            return self
                .serve(io, &self.builder, addr, service, &activity, first_bytes_by)
                .await;
        };
        let Some(stream) = self.handshake(stream, addr, tls, first_bytes_by).await else {
            return;
        };
        let session = stream.get_ref().1;
        let builder = match session.alpn_protocol() {
            Some(b"h2") => &self.http2,
            Some(_) => &self.http1,
            None => &self.builder,
        };
        let peer = Arc::new(Peer::with_tls(addr, TlsPeer::of(session)));
        let service = make_service(peer, activity.clone());
        let io = WriteBounded::new(TokioIo::new(stream), self.write_idle);
        self.serve(io, builder, addr, service, &activity, first_bytes_by)
            .await;
    }

    /// The TLS handshake on `stream`, unless it fails, does not end by
    /// `by` or the drain starts first.
    async fn handshake(
        &self,
        stream: TcpStream,
        addr: SocketAddr,
        tls: Arc<ServerConfig>,
        by: tokio::time::Instant,
    ) -> Option<tokio_rustls::server::TlsStream<TcpStream>> {
        let accept = tokio_rustls::TlsAcceptor::from(tls).accept(stream);
        let mut drain = self.drain.clone();
        let failure = tokio::select! {
            done = tokio::time::timeout_at(by, accept) => match done {
                Ok(Ok(stream)) => return Some(stream),
                Ok(Err(e)) => {
                    tracing::debug!(peer = %addr, kind = self.kind, "TLS handshake failed: {e}");
                    "error"
                }
                Err(_) => {
                    tracing::debug!(peer = %addr, kind = self.kind, "no TLS handshake within the first-bytes timeout: closed");
                    "timeout"
                }
            },
            _ = drain.wait_for(|started| *started) => return None,
        };
        let _ = self.metrics.counter_add(
            "weft_tls_handshake_failures_total",
            vec![("reason".into(), failure.into())],
            1,
        );
        None
    }

    /// Serves one connection until it ends, a timer closes it or the drain
    /// has shut it down.
    async fn serve<I, S>(
        &self,
        io: WriteBounded<I>,
        builder: &auto::Builder<TokioExecutor>,
        addr: SocketAddr,
        service: S,
        activity: &Activity,
        first_bytes_by: tokio::time::Instant,
    ) where
        I: AsyncRead + AsyncWrite + Unpin + Send + 'static,
        S: Service<Request<Incoming>, Response = Response<ProxyBody>, Error = Infallible>
            + Send
            + 'static,
        S::Future: Send + 'static,
    {
        let conn = builder.serve_connection_with_upgrades(io, service);
        let mut conn = std::pin::pin!(conn);
        let mut drain = self.drain.clone();
        let drain = drain.wait_for(|started| *started);
        let mut drain = std::pin::pin!(drain);
        let mut draining = false;
        let check = tokio::time::sleep_until(
            first_bytes_by.min(tokio::time::Instant::now() + self.idle_check),
        );
        let mut check = std::pin::pin!(check);
        let mut checking = true;
        let side = SideWake::new();
        // Requests started when last checked, and checks since one started.
        let mut seen = 0;
        let mut quiet = 0;
        loop {
            // The connection is polled on every wake-up; the drain and the
            // timer only when they woke the task (they rarely do), so a
            // request does not pay for polling them on each of its wake-ups.
            let event = std::future::poll_fn(|cx| {
                if let Poll::Ready(ended) = conn.as_mut().poll(cx) {
                    return Poll::Ready(Event::Ended(ended));
                }
                let Some(mut side_cx) = side.woken(cx) else {
                    return Poll::Pending;
                };
                if !draining && drain.as_mut().poll(&mut side_cx).is_ready() {
                    return Poll::Ready(Event::Drain);
                }
                if checking && check.as_mut().poll(&mut side_cx).is_ready() {
                    return Poll::Ready(Event::Check);
                }
                Poll::Pending
            })
            .await;
            match event {
                Event::Ended(ended) => {
                    if let Err(e) = ended {
                        tracing::debug!(peer = %addr, kind = self.kind, "connection ended: {e}");
                    }
                    return;
                }
                Event::Drain => {
                    draining = true;
                    conn.as_mut().graceful_shutdown();
                }
                Event::Check => {
                    let now = tokio::time::Instant::now();
                    let started = activity.started.load(Ordering::Relaxed);
                    if started == 0 {
                        if now >= first_bytes_by {
                            tracing::debug!(peer = %addr, kind = self.kind, "no request within the first-bytes timeout: closed");
                            return;
                        }
                        check
                            .as_mut()
                            .reset(first_bytes_by.min(now + self.idle_check));
                        continue;
                    }
                    let busy = activity.in_flight.load(Ordering::Relaxed) > 0;
                    quiet = if busy || seen != started {
                        0
                    } else {
                        quiet + 1
                    };
                    seen = started;
                    if quiet >= IDLE_CHECKS {
                        checking = false;
                        conn.as_mut().graceful_shutdown();
                    } else {
                        check.as_mut().reset(now + self.idle_check);
                    }
                }
            }
            // A reset timer, or a shutdown begun, is polled again at once.
            side.wake_by_ref();
        }
    }
}

/// What ended a wait of [`Connections::serve`].
enum Event<E> {
    /// The connection ended.
    Ended(Result<(), E>),
    /// The drain started.
    Drain,
    /// The connection's timer fired.
    Check,
}

/// The waker of a connection's side futures (its drain and its timer):
/// it marks them woken, then wakes the connection's task.
struct SideWake {
    woken: AtomicBool,
    task: AtomicWaker,
    waker: OnceLock<Waker>,
}

impl SideWake {
    /// Starts woken, so the side futures are polled (and register) once.
    fn new() -> Arc<Self> {
        let side = Arc::new(Self {
            woken: AtomicBool::new(true),
            task: AtomicWaker::new(),
            waker: OnceLock::new(),
        });
        let _ = side.waker.set(Waker::from(side.clone()));
        side
    }

    /// When a side future woke the task since it was last asked: a context
    /// to poll the side futures with. Records the task's waker either way.
    fn woken(&self, cx: &Context<'_>) -> Option<Context<'_>> {
        self.task.register(cx.waker());
        if !self.woken.swap(false, Ordering::AcqRel) {
            return None;
        }
        Some(Context::from_waker(self.waker.get().expect("set in new")))
    }
}

impl Wake for SideWake {
    fn wake(self: Arc<Self>) {
        self.wake_by_ref();
    }

    fn wake_by_ref(self: &Arc<Self>) {
        self.woken.store(true, Ordering::Release);
        self.task.wake();
    }
}

/// What a connection's requests tell its timers: how many started and how
/// many are in flight. A few uncontended atomics per request.
#[derive(Default)]
pub struct Activity {
    started: AtomicU64,
    in_flight: AtomicU32,
}

impl Activity {
    /// Counts a request as started and in flight until the guard drops.
    pub fn begin(self: &Arc<Self>) -> InFlight {
        self.started.fetch_add(1, Ordering::Relaxed);
        self.in_flight.fetch_add(1, Ordering::Relaxed);
        InFlight(self.clone())
    }
}

/// A request in flight on its connection.
pub struct InFlight(Arc<Activity>);

impl Drop for InFlight {
    fn drop(&mut self) {
        self.0.in_flight.fetch_sub(1, Ordering::Relaxed);
    }
}

/// A connection's socket whose writes must make progress within the idle
/// timeout: a peer that does not read makes the write fail, and hyper
/// closes the connection. The timer is armed only when a write has to wait.
pub struct WriteBounded<I = TcpStream> {
    io: TokioIo<I>,
    idle: Duration,
    timer: Option<Pin<Box<Sleep>>>,
    armed: bool,
}

impl<I: AsyncRead + AsyncWrite + Unpin> WriteBounded<I> {
    fn new(io: TokioIo<I>, idle: Duration) -> Self {
        Self {
            io,
            idle,
            timer: None,
            armed: false,
        }
    }

    /// Maps a write's outcome: progress disarms the timer, a wait arms it.
    fn bound<T>(
        &mut self,
        cx: &mut Context<'_>,
        polled: Poll<io::Result<T>>,
    ) -> Poll<io::Result<T>> {
        if polled.is_ready() {
            self.armed = false;
            return polled;
        }
        if !self.armed {
            let deadline = tokio::time::Instant::now() + self.idle;
            match &mut self.timer {
                Some(timer) => timer.as_mut().reset(deadline),
                None => self.timer = Some(Box::pin(tokio::time::sleep_until(deadline))),
            }
            self.armed = true;
        }
        let timer = self.timer.as_mut().expect("armed above");
        match timer.as_mut().poll(cx) {
            Poll::Ready(()) => Poll::Ready(Err(io::Error::new(
                io::ErrorKind::TimedOut,
                format!(
                    "the client read nothing for {} ms (limits.body_idle_timeout_ms)",
                    self.idle.as_millis()
                ),
            ))),
            Poll::Pending => Poll::Pending,
        }
    }
}

impl<I: AsyncRead + AsyncWrite + Unpin> Read for WriteBounded<I> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: ReadBufCursor<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().io).poll_read(cx, buf)
    }
}

impl<I: AsyncRead + AsyncWrite + Unpin> Write for WriteBounded<I> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        let polled = Pin::new(&mut this.io).poll_write(cx, buf);
        this.bound(cx, polled)
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        let polled = Pin::new(&mut this.io).poll_write_vectored(cx, bufs);
        this.bound(cx, polled)
    }

    fn is_write_vectored(&self) -> bool {
        self.io.is_write_vectored()
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        let polled = Pin::new(&mut this.io).poll_flush(cx);
        this.bound(cx, polled)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().io).poll_shutdown(cx)
    }
}
