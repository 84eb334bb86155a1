//! gRPC answers for the proxy's own errors.
//!
//! A gRPC client reads the outcome of a call from `grpc-status`, not from
//! the HTTP status. When the request was gRPC (`content-type:
//! application/grpc…`), the proxy's own error answers ([`super::local`],
//! marked with [`ProxyError`]) become a *trailers-only* gRPC response: HTTP
//! 200, `content-type: application/grpc`, `grpc-status` and a
//! percent-encoded `grpc-message`, and no body. The code follows the
//! HTTP-to-gRPC mapping of the gRPC spec (and Envoy), except that the
//! route's timeouts (`timeout_ms`, `max_stream_duration_ms`) are
//! `DEADLINE_EXCEEDED`.

use http::{HeaderMap, HeaderValue, Response, StatusCode, header};

use super::ProxyBody;

/// Marks a response the proxy made itself (an extension): its message.
#[derive(Debug, Clone)]
pub struct ProxyError {
    /// The error's stable code (`no_route`, `upstream_timeout`, …).
    pub code: Box<str>,
    /// The message of the JSON body.
    pub message: Box<str>,
}

/// gRPC status codes the proxy answers with.
pub mod code {
    /// 2 UNKNOWN.
    pub const UNKNOWN: u8 = 2;
    /// 4 DEADLINE_EXCEEDED.
    pub const DEADLINE_EXCEEDED: u8 = 4;
    /// 7 PERMISSION_DENIED.
    pub const PERMISSION_DENIED: u8 = 7;
    /// 12 UNIMPLEMENTED.
    pub const UNIMPLEMENTED: u8 = 12;
    /// 13 INTERNAL.
    pub const INTERNAL: u8 = 13;
    /// 14 UNAVAILABLE.
    pub const UNAVAILABLE: u8 = 14;
    /// 16 UNAUTHENTICATED.
    pub const UNAUTHENTICATED: u8 = 16;
}

/// Whether a request is a gRPC call (`content-type: application/grpc`,
/// `application/grpc+proto`, …).
pub fn is_grpc(headers: &HeaderMap) -> bool {
    headers
        .get(header::CONTENT_TYPE)
        .is_some_and(|v| v.as_bytes().starts_with(b"application/grpc"))
}

/// The gRPC status for the proxy's own HTTP status `status` (error `code`).
pub fn status_for(status: StatusCode, code: &str) -> u8 {
    if code == "upstream_timeout" || code == "stream_timeout" {
        return code::DEADLINE_EXCEEDED;
    }
    match status.as_u16() {
        400 => code::INTERNAL,
        401 => code::UNAUTHENTICATED,
        403 => code::PERMISSION_DENIED,
        404 => code::UNIMPLEMENTED,
        429 | 502 | 503 | 504 => code::UNAVAILABLE,
        _ => code::UNKNOWN,
    }
}

/// `response` as a trailers-only gRPC answer when the proxy made it
/// ([`ProxyError`]); any other response unchanged.
pub fn answer(response: Response<ProxyBody>) -> Response<ProxyBody> {
    let Some(error) = response.extensions().get::<ProxyError>() else {
        return response;
    };
    let grpc_status = status_for(response.status(), &error.code);
    let message = percent_encode(&error.message);
    let mut out = Response::new(ProxyBody::Empty);
    let h = out.headers_mut();
    h.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/grpc"),
    );
    h.insert("grpc-status", HeaderValue::from(u16::from(grpc_status)));
    if let Ok(message) = HeaderValue::from_str(&message) {
        h.insert("grpc-message", message);
    }
    for name in [super::headers::X_REQUEST_ID.clone(), header::RETRY_AFTER] {
        if let Some(v) = response.headers().get(&name) {
            h.insert(name, v.clone());
        }
    }
    out
}

/// `grpc-message` encoding: bytes outside printable ASCII, and `%`, as
/// `%XX`.
fn percent_encode(message: &str) -> String {
    let mut out = String::with_capacity(message.len());
    for &b in message.as_bytes() {
        if (0x20..=0x7e).contains(&b) && b != b'%' {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn statuses_map_like_envoy_with_timeouts_as_deadlines() {
        let s = |n| StatusCode::from_u16(n).unwrap();
        assert_eq!(status_for(s(404), "no_route"), 12);
        assert_eq!(status_for(s(502), "upstream_unavailable"), 14);
        assert_eq!(status_for(s(503), "overloaded"), 14);
        assert_eq!(status_for(s(504), "upstream_timeout"), 4);
        assert_eq!(status_for(s(400), "bad_path"), 13);
        assert_eq!(status_for(s(403), "upgrade_refused"), 7);
        assert_eq!(status_for(s(500), "filter_failed"), 2);
    }

    #[test]
    fn messages_are_percent_encoded() {
        assert_eq!(percent_encode("a b%c\né"), "a b%25c%0A%C3%A9");
    }

    #[test]
    fn only_the_proxys_own_errors_become_grpc() {
        let plain = Response::new(ProxyBody::Empty);
        assert!(answer(plain).headers().get("grpc-status").is_none());
        let mut own = super::super::local::error(StatusCode::NOT_FOUND, "no_route", "none", "id-1");
        own.headers_mut()
            .insert("x-request-id", HeaderValue::from_static("id-1"));
        let out = answer(own);
        assert_eq!(out.status(), StatusCode::OK);
        assert_eq!(out.headers()["grpc-status"], "12");
        assert_eq!(out.headers()["grpc-message"], "none");
        assert_eq!(out.headers()["content-type"], "application/grpc");
        assert_eq!(out.headers()["x-request-id"], "id-1");
    }
}
