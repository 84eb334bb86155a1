//! The one body type the proxy sends both ways: streamed through untouched,
//! or a buffer a filter produced or read.
//!
//! Two process-wide bounds live here, set once at start from `limits:`
//! ([`configure`]): the idle timeout of a streamed body (a timer reset by
//! each frame) and the budget of bytes held by buffered bodies.

use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, OnceLock};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::HeaderMap;
use http_body::{Body, Frame, SizeHint};
use hyper::body::Incoming;
use prometheus::IntCounter;
use tokio::time::Sleep;

use super::expect::Gated;
use crate::config::limits::{
    DEFAULT_BODY_IDLE_TIMEOUT_MS, DEFAULT_MAX_BUFFERED_BODY_BYTES, LimitsConfig,
};

/// `limits.body_idle_timeout_ms`.
static IDLE_TIMEOUT_MS: AtomicU64 = AtomicU64::new(DEFAULT_BODY_IDLE_TIMEOUT_MS);
/// `limits.max_buffered_body_bytes`.
static BUFFERED_LIMIT: AtomicU64 = AtomicU64::new(DEFAULT_MAX_BUFFERED_BODY_BYTES);
/// Bytes held by buffered bodies now, across the process.
static BUFFERED_HELD: AtomicU64 = AtomicU64::new(0);

/// Applies the body bounds of `limits` to every body from now on.
pub fn configure(limits: &LimitsConfig) {
    IDLE_TIMEOUT_MS.store(limits.body_idle_timeout_ms, Ordering::Relaxed);
    BUFFERED_LIMIT.store(limits.max_buffered_body_bytes, Ordering::Relaxed);
}

/// `limits.body_idle_timeout_ms`, read when a body has to wait (the value
/// is set once at start), so a streamed body does not carry it.
pub(crate) fn idle_timeout() -> Duration {
    Duration::from_millis(IDLE_TIMEOUT_MS.load(Ordering::Relaxed))
}

/// Bytes held by buffered bodies now, across the process.
pub fn buffered_bytes() -> u64 {
    BUFFERED_HELD.load(Ordering::Relaxed)
}

/// Errors of a streamed body.
pub type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// Something to run when the body has been sent (or dropped).
pub trait OnDrop: Send + Sync {}

/// A request or response body.
pub enum ProxyBody {
    /// No body.
    Empty,
    /// A buffered body, sent in one frame.
    Full(Option<Bytes>),
    /// A buffered body and the trailers that came after it: the data in
    /// one frame, then the trailers. Its length is not announced, so that
    /// HTTP/1.1 frames it chunked, where trailers can follow.
    Trailed(Box<Trailed>),
    /// A body streamed from the other side, frame by frame, as hyper gives
    /// it; [`ProxyBody::idle_bounded`] puts it under the idle timeout.
    Streaming(Incoming),
    /// An upstream's response body, counted in flight to its endpoint
    /// until dropped.
    Upstream(Incoming, crate::upstream::ActiveRequest),
    /// A streamed body that fails when no frame comes for the idle timeout.
    IdleBounded(IdleBounded),
    /// A body whose end triggers a hook (e.g. the filters' `on-done`): the
    /// hook runs when this value is dropped, which hyper does once it has
    /// taken the last frame (before writing the last bytes) or the
    /// connection is gone.
    Guarded(Box<ProxyBody>, Box<dyn OnDrop>),
    /// A request body held back until the upstream asks for it
    /// (`Expect: 100-continue`, [`super::expect`]).
    AwaitingContinue(Box<Gated>),
}

impl ProxyBody {
    /// A buffered body (empty buffers become `Empty`).
    pub fn full(bytes: Bytes) -> Self {
        if bytes.is_empty() {
            ProxyBody::Empty
        } else {
            ProxyBody::Full(Some(bytes))
        }
    }

    /// A buffered body followed by `trailers`, when there are some.
    pub fn full_with_trailers(bytes: Bytes, trailers: Option<HeaderMap>) -> Self {
        match trailers {
            None => Self::full(bytes),
            Some(trailers) => ProxyBody::Trailed(Box::new(Trailed {
                data: (!bytes.is_empty()).then_some(bytes),
                trailers: Some(trailers),
            })),
        }
    }

    /// A body streamed from a peer, under the idle timeout.
    pub fn streamed(incoming: Incoming) -> Self {
        ProxyBody::IdleBounded(IdleBounded::new(incoming))
    }

    /// This body with its stream (if any, also under a hook) under the idle
    /// timeout. Allocates nothing.
    pub fn idle_bounded(self) -> Self {
        match self {
            ProxyBody::Streaming(incoming) => Self::streamed(incoming),
            ProxyBody::Upstream(incoming, active) => {
                let mut bounded = IdleBounded::new(incoming);
                bounded.active = Some(active);
                ProxyBody::IdleBounded(bounded)
            }
            ProxyBody::Guarded(mut inner, hook) => {
                let body = std::mem::replace(inner.as_mut(), ProxyBody::Empty);
                *inner = body.idle_bounded();
                ProxyBody::Guarded(inner, hook)
            }
            body => body,
        }
    }

    /// Counts this body's data bytes in `counter` as they pass (a buffered
    /// body's at once): the listener's body bytes. One handle clone for a
    /// streamed body, nothing per frame but the add.
    pub fn count_into(&mut self, counter: &IntCounter) {
        match self {
            ProxyBody::Empty | ProxyBody::Full(None) => {}
            ProxyBody::Full(Some(bytes)) => counter.inc_by(bytes.len() as u64),
            ProxyBody::Trailed(t) => counter.inc_by(t.data.as_ref().map_or(0, |b| b.len() as u64)),
            ProxyBody::Streaming(_) | ProxyBody::Upstream(..) => {
                *self = std::mem::replace(self, ProxyBody::Empty).idle_bounded();
                self.count_into(counter);
            }
            ProxyBody::IdleBounded(b) => b.counted = Some(counter.clone()),
            ProxyBody::Guarded(inner, _) => inner.count_into(counter),
            ProxyBody::AwaitingContinue(gated) => gated.body.count_into(counter),
        }
    }

    /// Puts this body's stream (if any, also under a hook) under a whole-
    /// stream deadline made by `deadline` (called only for a stream): past
    /// it the body fails with [`StreamExpired`].
    pub fn limit_stream(&mut self, deadline: impl FnOnce() -> Box<StreamDeadline>) {
        match self {
            ProxyBody::IdleBounded(b) => b.deadline = Some(deadline()),
            ProxyBody::Streaming(_) | ProxyBody::Upstream(..) => {
                *self = std::mem::replace(self, ProxyBody::Empty).idle_bounded();
                self.limit_stream(deadline);
            }
            ProxyBody::Guarded(inner, _) => inner.limit_stream(deadline),
            _ => {}
        }
    }

    /// When this body streams and has not ended: a cell that receives the
    /// instant its last frame was taken (for timeouts that start once a
    /// request has been sent).
    pub fn watch_end(&mut self) -> Option<Arc<OnceLock<Instant>>> {
        match self {
            ProxyBody::IdleBounded(b) if !b.incoming.is_end_stream() => {
                let end = Arc::new(OnceLock::new());
                b.ended = Some(end.clone());
                Some(end)
            }
            ProxyBody::AwaitingContinue(gated) => gated.body.watch_end(),
            _ => None,
        }
    }
}

impl Body for ProxyBody {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        match self.get_mut() {
            ProxyBody::Empty => Poll::Ready(None),
            ProxyBody::Full(bytes) => Poll::Ready(bytes.take().map(|b| Ok(Frame::data(b)))),
            ProxyBody::Trailed(t) => Poll::Ready(match t.data.take() {
                Some(data) => Some(Ok(Frame::data(data))),
                None => t.trailers.take().map(|h| Ok(Frame::trailers(h))),
            }),
            ProxyBody::Streaming(incoming) => Pin::new(incoming)
                .poll_frame(cx)
                .map(|f| f.map(|r| r.map_err(Into::into))),
            ProxyBody::IdleBounded(bounded) => bounded.poll_frame(cx),
            ProxyBody::Upstream(incoming, _) => Pin::new(incoming)
                .poll_frame(cx)
                .map(|f| f.map(|r| r.map_err(Into::into))),
            ProxyBody::Guarded(inner, _) => Pin::new(inner.as_mut()).poll_frame(cx),
            ProxyBody::AwaitingContinue(gated) => gated.poll_frame(cx),
        }
    }

    fn is_end_stream(&self) -> bool {
        match self {
            ProxyBody::Empty => true,
            ProxyBody::Full(bytes) => bytes.is_none(),
            ProxyBody::Trailed(t) => t.data.is_none() && t.trailers.is_none(),
            ProxyBody::Streaming(incoming) | ProxyBody::Upstream(incoming, _) => {
                incoming.is_end_stream()
            }
            ProxyBody::IdleBounded(bounded) => bounded.incoming.is_end_stream(),
            ProxyBody::Guarded(inner, _) => inner.is_end_stream(),
            ProxyBody::AwaitingContinue(gated) => gated.body.is_end_stream(),
        }
    }

    fn size_hint(&self) -> SizeHint {
        match self {
            ProxyBody::Empty => SizeHint::with_exact(0),
            ProxyBody::Full(bytes) => {
                SizeHint::with_exact(bytes.as_ref().map_or(0, |b| b.len() as u64))
            }
            ProxyBody::Trailed(_) => SizeHint::default(),
            ProxyBody::Streaming(incoming) | ProxyBody::Upstream(incoming, _) => {
                incoming.size_hint()
            }
            ProxyBody::IdleBounded(bounded) => bounded.incoming.size_hint(),
            ProxyBody::Guarded(inner, _) => inner.size_hint(),
            ProxyBody::AwaitingContinue(gated) => gated.body.size_hint(),
        }
    }
}

/// A streamed body whose frames must come within the idle timeout of each
/// other: a peer that stalls mid-body makes it fail with [`BodyIdle`].
///
/// The timer is armed only when a poll finds no frame ready (one clock read
/// then); a body whose frames are ready when asked for costs no timer.
pub struct IdleBounded {
    incoming: Incoming,
    timer: Option<Pin<Box<Sleep>>>,
    armed: bool,
    ended: Option<Arc<OnceLock<Instant>>>,
    /// The upstream request this body answers, in flight until dropped.
    active: Option<crate::upstream::ActiveRequest>,
    /// Where its data bytes are counted, if anywhere.
    counted: Option<IntCounter>,
    /// The route's whole-stream deadline, if it has one.
    deadline: Option<Box<StreamDeadline>>,
}

/// A deadline on a whole response stream (a route's
/// `max_stream_duration_ms`) and where its expiry is counted.
pub struct StreamDeadline {
    /// When the stream must have ended.
    pub at: tokio::time::Instant,
    /// The route's limit, for the error.
    pub limit: Duration,
    /// Counts expiries.
    pub expired: IntCounter,
    /// The route, for the log.
    pub route: Arc<str>,
    /// The request, for the log.
    pub request_id: Box<str>,
}

impl StreamDeadline {
    /// Counts and logs the expiry; the error that cuts the stream.
    fn expire(&self) -> BoxError {
        self.expired.inc();
        tracing::debug!(
            route = &*self.route,
            request_id = &*self.request_id,
            limit_ms = self.limit.as_millis() as u64,
            "stream duration limit passed: response cut off"
        );
        Box::new(StreamExpired(self.limit))
    }
}

impl IdleBounded {
    fn new(incoming: Incoming) -> Self {
        Self {
            incoming,
            timer: None,
            armed: false,
            ended: None,
            active: None,
            counted: None,
            deadline: None,
        }
    }

    fn poll_frame(&mut self, cx: &mut Context<'_>) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        match Pin::new(&mut self.incoming).poll_frame(cx) {
            Poll::Ready(frame) => {
                self.armed = false;
                // A stream whose frames are always ready never arms the
                // timer: its deadline is checked here (limited routes only).
                if let (Some(deadline), Some(_)) = (&self.deadline, &frame)
                    && tokio::time::Instant::now() >= deadline.at
                {
                    return Poll::Ready(Some(Err(deadline.expire())));
                }
                if frame.is_none() || self.incoming.is_end_stream() {
                    if let Some(ended) = self.ended.take() {
                        let _ = ended.set(Instant::now());
                    }
                    // The upstream's answer is complete.
                    self.active = None;
                }
                if let (Some(counter), Some(Ok(frame))) = (&self.counted, &frame)
                    && let Some(data) = frame.data_ref()
                {
                    counter.inc_by(data.len() as u64);
                }
                Poll::Ready(frame.map(|r| r.map_err(Into::into)))
            }
            Poll::Pending => {
                if !self.armed {
                    let mut deadline = tokio::time::Instant::now() + idle_timeout();
                    if let Some(limit) = &self.deadline {
                        deadline = deadline.min(limit.at);
                    }
                    match &mut self.timer {
                        Some(timer) => timer.as_mut().reset(deadline),
                        None => self.timer = Some(Box::pin(tokio::time::sleep_until(deadline))),
                    }
                    self.armed = true;
                }
                let timer = self.timer.as_mut().expect("armed above");
                match timer.as_mut().poll(cx) {
                    Poll::Ready(()) => match &self.deadline {
                        Some(limit) if timer.deadline() >= limit.at => {
                            Poll::Ready(Some(Err(limit.expire())))
                        }
                        _ => Poll::Ready(Some(Err(Box::new(BodyIdle(idle_timeout()))))),
                    },
                    Poll::Pending => Poll::Pending,
                }
            }
        }
    }
}

/// A streamed body stalled: no frame for this long.
#[derive(Debug, thiserror::Error)]
#[error("no body data for {} ms", .0.as_millis())]
pub struct BodyIdle(pub Duration);

/// A streamed response outlived its route's `max_stream_duration_ms`.
#[derive(Debug, thiserror::Error)]
#[error("stream cut off after the route's max_stream_duration_ms ({} ms)", .0.as_millis())]
pub struct StreamExpired(pub Duration);

/// Why buffering a body failed.
#[derive(Debug, thiserror::Error)]
pub enum BufferError {
    /// Larger than allowed.
    #[error("body larger than {0} bytes")]
    TooLarge(u64),
    /// The peer stalled mid-body.
    #[error("body stalled: {0}")]
    Idle(BodyIdle),
    /// Buffered bodies already hold the process's budget.
    #[error(
        "body not buffered: buffered bodies already hold the limit of {0} bytes (limits.max_buffered_body_bytes)"
    )]
    Overloaded(u64),
    /// The stream failed.
    #[error("body stream failed: {0}")]
    Stream(BoxError),
}

/// The data and trailers of a [`ProxyBody::Trailed`], each sent once.
pub struct Trailed {
    data: Option<Bytes>,
    trailers: Option<HeaderMap>,
}

/// Reads a whole body into memory, as [`buffer_message`] does, and drops
/// its trailers.
pub async fn buffer(body: ProxyBody, limit: u64) -> Result<Bytes, BufferError> {
    buffer_message(body, limit).await.map(|(bytes, _)| bytes)
}

/// Reads a whole body into memory, with the trailers that end it, refusing
/// one larger than `limit` or one that does not fit in the process's budget
/// of buffered bytes. The bytes count against the budget until the last
/// clone of the result is dropped.
pub async fn buffer_message(
    body: ProxyBody,
    limit: u64,
) -> Result<(Bytes, Option<HeaderMap>), BufferError> {
    use http_body_util::BodyExt;
    let mut body = body.idle_bounded();
    if body.size_hint().lower() > limit {
        return Err(BufferError::TooLarge(limit));
    }
    let mut held = Reservation(0);
    let mut chunks: Vec<Bytes> = Vec::new();
    let mut trailers: Option<HeaderMap> = None;
    while let Some(frame) = body.frame().await {
        let frame = frame.map_err(|e| match e.downcast::<BodyIdle>() {
            Ok(idle) => BufferError::Idle(*idle),
            Err(e) => BufferError::Stream(e),
        })?;
        let data = match frame.into_data() {
            Ok(data) => data,
            Err(frame) => {
                if let Ok(more) = frame.into_trailers() {
                    trailers.get_or_insert_with(HeaderMap::new).extend(more);
                }
                continue;
            }
        };
        let len = data.len() as u64;
        if held.0 + len > limit {
            return Err(BufferError::TooLarge(limit));
        }
        held.grow(len)?;
        chunks.push(data);
    }
    let bytes = match chunks.len() {
        0 => return Ok((Bytes::new(), trailers)),
        1 => chunks.pop().expect("one chunk"),
        _ => Bytes::from(chunks.concat()),
    };
    Ok((Bytes::from_owner(Held { bytes, _held: held }), trailers))
}

/// Bytes counted against the buffered-body budget, given back on drop.
struct Reservation(u64);

impl Reservation {
    fn grow(&mut self, len: u64) -> Result<(), BufferError> {
        let limit = BUFFERED_LIMIT.load(Ordering::Relaxed);
        let before = BUFFERED_HELD.fetch_add(len, Ordering::Relaxed);
        if before + len > limit {
            BUFFERED_HELD.fetch_sub(len, Ordering::Relaxed);
            return Err(BufferError::Overloaded(limit));
        }
        self.0 += len;
        Ok(())
    }
}

impl Drop for Reservation {
    fn drop(&mut self) {
        BUFFERED_HELD.fetch_sub(self.0, Ordering::Relaxed);
    }
}

/// A buffered body and its reservation: the owner of the `Bytes` that
/// [`buffer`] returns.
struct Held {
    bytes: Bytes,
    _held: Reservation,
}

impl AsRef<[u8]> for Held {
    fn as_ref(&self) -> &[u8] {
        &self.bytes
    }
}
