//! Responses the proxy generates itself: JSON errors with a stable code,
//! marked with [`ProxyError`] (so that a gRPC call gets them as a gRPC
//! status, [`super::grpc`]).

use bytes::Bytes;
use http::{HeaderValue, Response, StatusCode, header};

use super::ProxyBody;
use super::grpc::ProxyError;

/// A JSON error response: `{"error": code, "message": …, "request_id": …}`.
pub fn error(
    status: StatusCode,
    code: &str,
    message: &str,
    request_id: &str,
) -> Response<ProxyBody> {
    let body = serde_json::json!({
        "error": code,
        "message": message,
        "request_id": request_id,
    });
    json_response(status, body, code, message)
}

/// [`error`] with a `details` member (a route's `error_details`).
pub fn error_with_details(
    status: StatusCode,
    code: &str,
    message: &str,
    request_id: &str,
    details: serde_json::Value,
) -> Response<ProxyBody> {
    let body = serde_json::json!({
        "error": code,
        "message": message,
        "request_id": request_id,
        "details": details,
    });
    json_response(status, body, code, message)
}

fn json_response(
    status: StatusCode,
    body: serde_json::Value,
    code: &str,
    message: &str,
) -> Response<ProxyBody> {
    let bytes = Bytes::from(body.to_string());
    let mut resp = Response::new(ProxyBody::full(bytes.clone()));
    *resp.status_mut() = status;
    let h = resp.headers_mut();
    h.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    h.insert(header::CONTENT_LENGTH, HeaderValue::from(bytes.len()));
    resp.extensions_mut().insert(ProxyError {
        code: code.into(),
        message: message.into(),
    });
    resp
}
