//! The admin API, on its own listener (`admin.listen`): readiness and
//! Prometheus metrics. Read-only; it never changes serving state.

use std::convert::Infallible;
use std::sync::Arc;

use bytes::Bytes;
use http::{HeaderValue, Method, Request, Response, StatusCode, header};
use hyper::body::Incoming;
use hyper::service::service_fn;
use tokio::net::TcpListener;

use crate::http::{ProxyBody, local};
use crate::listener::Connections;
use crate::proxy::Proxy;

/// Serves the admin API on `listener` until the drain starts, with the
/// timers and the (small) cap of `conns`.
pub async fn serve(listener: TcpListener, proxy: Arc<Proxy>, conns: Arc<Connections>) {
    conns
        .accept_loop(listener, move |_, activity| {
            let proxy = proxy.clone();
            service_fn(move |req| {
                let in_flight = activity.begin();
                let response = answer(&proxy, req);
                drop(in_flight);
                std::future::ready(Ok::<_, Infallible>(response))
            })
        })
        .await;
}

fn answer(proxy: &Proxy, req: Request<Incoming>) -> Response<ProxyBody> {
    match (req.method(), req.uri().path()) {
        (&Method::GET, "/ready") => text(StatusCode::OK, "text/plain", "ready\n".into()),
        (&Method::GET, "/metrics") => text(
            StatusCode::OK,
            "text/plain; version=0.0.4",
            proxy.metrics.render(),
        ),
        (_, path) => local::error(
            StatusCode::NOT_FOUND,
            "not_found",
            &format!("no admin endpoint {path} (try /ready, /metrics)"),
            "",
        ),
    }
}

fn text(status: StatusCode, content_type: &'static str, body: String) -> Response<ProxyBody> {
    let mut resp = Response::new(ProxyBody::full(Bytes::from(body)));
    *resp.status_mut() = status;
    resp.headers_mut()
        .insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
    resp
}
