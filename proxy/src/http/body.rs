//! The one body type the proxy sends both ways: streamed through untouched,
//! or a buffer a filter produced or read.

use std::pin::Pin;
use std::task::{Context, Poll};

use bytes::Bytes;
use http_body::{Body, Frame, SizeHint};
use hyper::body::Incoming;

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
    /// A body streamed from the other side, frame by frame.
    Streaming(Incoming),
    /// A body whose end triggers a hook (e.g. the filters' `on-done`): the
    /// hook runs when this value is dropped, which hyper does once it has
    /// taken the last frame (before writing the last bytes) or the
    /// connection is gone.
    Guarded(Box<ProxyBody>, Box<dyn OnDrop>),
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
            ProxyBody::Streaming(incoming) => Pin::new(incoming)
                .poll_frame(cx)
                .map(|f| f.map(|r| r.map_err(Into::into))),
            ProxyBody::Guarded(inner, _) => Pin::new(inner.as_mut()).poll_frame(cx),
        }
    }

    fn is_end_stream(&self) -> bool {
        match self {
            ProxyBody::Empty => true,
            ProxyBody::Full(bytes) => bytes.is_none(),
            ProxyBody::Streaming(incoming) => incoming.is_end_stream(),
            ProxyBody::Guarded(inner, _) => inner.is_end_stream(),
        }
    }

    fn size_hint(&self) -> SizeHint {
        match self {
            ProxyBody::Empty => SizeHint::with_exact(0),
            ProxyBody::Full(bytes) => {
                SizeHint::with_exact(bytes.as_ref().map_or(0, |b| b.len() as u64))
            }
            ProxyBody::Streaming(incoming) => incoming.size_hint(),
            ProxyBody::Guarded(inner, _) => inner.size_hint(),
        }
    }
}

/// Why buffering a body failed.
#[derive(Debug, thiserror::Error)]
pub enum BufferError {
    /// Larger than allowed.
    #[error("body larger than {0} bytes")]
    TooLarge(u64),
    /// The stream failed.
    #[error("body stream failed: {0}")]
    Stream(BoxError),
}

/// Reads a whole body into memory, refusing one larger than `limit`.
pub async fn buffer(body: ProxyBody, limit: u64) -> Result<Bytes, BufferError> {
    use http_body_util::BodyExt;
    if body.size_hint().lower() > limit {
        return Err(BufferError::TooLarge(limit));
    }
    let limited = http_body_util::Limited::new(body, limit as usize);
    match limited.collect().await {
        Ok(collected) => Ok(collected.to_bytes()),
        Err(e) if e.is::<http_body_util::LengthLimitError>() => Err(BufferError::TooLarge(limit)),
        Err(e) => Err(BufferError::Stream(e)),
    }
}
