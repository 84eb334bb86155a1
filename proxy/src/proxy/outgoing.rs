//! A response on its way out: the proxy's own error answers, and the
//! `on-done` hook attached to the body.

use bytes::Bytes;
use http::{HeaderValue, Request, Response, StatusCode, header};

use crate::filter::chain::{ChainFailure, LocalReply};
use crate::filter::instance::FilterFailure;
use crate::filter::{ChainRun, Exchange, Phase};
use crate::http::body::{BufferError, OnDrop};
use crate::http::{ProxyBody, headers, local};

/// A response on its way out, before the `on-done` hook is attached.
pub struct Outgoing {
    /// The head.
    pub head: http::response::Parts,
    /// The body.
    pub body: ProxyBody,
}

impl Outgoing {
    /// Splits a response.
    pub fn from_response(r: Response<ProxyBody>) -> Self {
        let (head, body) = r.into_parts();
        Self { head, body }
    }

    /// A filter's local response. Its `Content-Length` is the body's; the
    /// hop-by-hop headers a filter gave it are dropped.
    pub fn local(mut reply: LocalReply) -> Self {
        headers::remove_hop_by_hop(&mut reply.head.headers);
        Self {
            head: reply.head,
            body: ProxyBody::full(reply.body),
        }
    }

    /// Replaces the body with `bytes`, which the proxy read whole, and the
    /// trailers that ended it. Without trailers, a non-empty body's length
    /// becomes `Content-Length` (an empty one keeps the upstream's, which
    /// for HEAD and 304 describes a body not sent), and an announcement of
    /// trailers goes; with them, the length is not announced, so that
    /// HTTP/1.1 frames the body chunked and the trailers follow it.
    pub fn set_buffered_body(&mut self, bytes: Bytes, trailers: Option<http::HeaderMap>) {
        let headers = &mut self.head.headers;
        if trailers.is_some() {
            headers.remove(header::CONTENT_LENGTH);
            self.body = ProxyBody::full_with_trailers(bytes, trailers);
            return;
        }
        headers.remove(header::TRAILER);
        let len = bytes.len() as u64;
        let announced = headers
            .get(header::CONTENT_LENGTH)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.parse::<u64>().ok());
        if len > 0 && announced != Some(len) {
            headers.insert(header::CONTENT_LENGTH, HeaderValue::from(len));
        }
        self.body = ProxyBody::full(bytes);
    }

    /// 500 for a fail-closed filter that failed; 503 when a filter had no
    /// instance to spare (overload, whatever its `on_error`).
    pub fn failure(f: ChainFailure, ex: &Exchange) -> Self {
        if let FilterFailure::Overloaded(why) = &f.failure {
            return Self::from_response(local::error(
                StatusCode::SERVICE_UNAVAILABLE,
                "overloaded",
                why,
                &ex.props.request_id,
            ));
        }
        let message = format!(
            "filter {:?} failed in {}: {}",
            &*f.filter,
            f.phase.name(),
            f.failure
        );
        if !f.details {
            return Self::from_response(local::error(
                StatusCode::INTERNAL_SERVER_ERROR,
                "filter_failed",
                &message,
                &ex.props.request_id,
            ));
        }
        let (kind, cause) = match &f.failure {
            FilterFailure::Trap { message, .. } => ("trap", message.clone()),
            FilterFailure::Deadline(_) => ("deadline", f.failure.to_string()),
            FilterFailure::Memory(_) => ("memory", f.failure.to_string()),
            FilterFailure::Instantiate(_) => ("instantiate", f.failure.to_string()),
            FilterFailure::Overloaded(_) => ("overloaded", f.failure.to_string()),
        };
        let backtrace = f.failure.backtrace();
        let details = serde_json::json!({
            "filter": &*f.filter,
            "phase": f.phase.name(),
            "kind": kind,
            "message": cause,
            "backtrace": backtrace.map(|b| b.frames.as_slice()).unwrap_or_default(),
            "frames_skipped": backtrace.map_or(0, |b| b.skipped),
            "frames_omitted": backtrace.map_or(0, |b| b.omitted),
        });
        Self::from_response(local::error_with_details(
            StatusCode::INTERNAL_SERVER_ERROR,
            "filter_failed",
            &message,
            &ex.props.request_id,
            details,
        ))
    }

    /// 413, 408, 503 or 400 for a request body that could not be buffered.
    pub fn buffer_error(e: BufferError, request_id: &str) -> Self {
        let (status, code) = match e {
            BufferError::TooLarge(_) => (StatusCode::PAYLOAD_TOO_LARGE, "body_too_large"),
            BufferError::Idle(_) => (StatusCode::REQUEST_TIMEOUT, "body_timeout"),
            BufferError::Overloaded(_) => (StatusCode::SERVICE_UNAVAILABLE, "overloaded"),
            BufferError::Stream(_) => (StatusCode::BAD_REQUEST, "body_read_failed"),
        };
        Self::from_response(local::error(
            status,
            code,
            &format!("request {e}"),
            request_id,
        ))
    }

    /// Attaches `on-done` when the chain wants it.
    pub fn into_response(self, run: ChainRun, mut ex: Box<Exchange>) -> Response<ProxyBody> {
        let body = if run.chain().wants(Phase::Done) {
            ex.response = Some(clone_response_head(&self.head));
            ex.request_body = None;
            ex.response_body = None;
            ProxyBody::Guarded(Box::new(self.body), Box::new(DoneHook(Some((run, ex)))))
        } else {
            self.body
        };
        Response::from_parts(self.head, body)
    }
}

/// Runs `on-done` once the response body is dropped.
///
/// hyper drops a body when it has taken the last frame, before it writes the
/// response's last bytes to the socket. So, on a worker, `on-done` runs as a
/// task of its own, after the connection's task has written them: the
/// client's latency does not include it (nginx too logs after sending), and
/// the filters' view of the request's duration includes the last write.
/// Outside a runtime it runs at once.
struct DoneHook(Option<(ChainRun, Box<Exchange>)>);

impl OnDrop for DoneHook {}

impl Drop for DoneHook {
    fn drop(&mut self) {
        let Some((mut run, mut ex)) = self.0.take() else {
            return;
        };
        match tokio::runtime::Handle::try_current() {
            Ok(worker) => {
                worker.spawn(async move { run.done(&mut ex) });
            }
            Err(_) => run.done(&mut ex),
        }
    }
}

/// A head with no status, headers or extensions set.
pub fn empty_head() -> http::response::Parts {
    Response::new(()).into_parts().0
}

fn clone_response_head(head: &http::response::Parts) -> http::response::Parts {
    let mut r = Response::new(());
    *r.status_mut() = head.status;
    *r.version_mut() = head.version;
    *r.headers_mut() = head.headers.clone();
    r.into_parts().0
}

/// A copy of a request head (without extensions).
pub fn clone_request_head(head: &http::request::Parts) -> http::request::Parts {
    let mut r = Request::new(());
    *r.method_mut() = head.method.clone();
    *r.uri_mut() = head.uri.clone();
    *r.version_mut() = head.version;
    *r.headers_mut() = head.headers.clone();
    r.into_parts().0
}

#[cfg(test)]
mod tests {
    use super::*;

    fn with_headers(headers: &[(&str, &str)]) -> Outgoing {
        let mut r = Response::builder();
        for (k, v) in headers {
            r = r.header(*k, *v);
        }
        Outgoing::from_response(r.body(ProxyBody::Empty).unwrap())
    }

    #[test]
    fn a_buffered_body_is_framed_by_its_length_without_trailers() {
        let mut out = with_headers(&[("content-length", "100"), ("trailer", "x-digest")]);
        out.set_buffered_body(Bytes::from_static(b"hello"), None);
        assert_eq!(out.head.headers.get("content-length").unwrap(), "5");
        assert!(!out.head.headers.contains_key("trailer"));
        // Empty: a HEAD or 304 answer keeps the length of the body not sent.
        let mut out = with_headers(&[("content-length", "100")]);
        out.set_buffered_body(Bytes::new(), None);
        assert_eq!(out.head.headers.get("content-length").unwrap(), "100");
    }
}
