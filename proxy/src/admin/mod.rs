//! The admin API, on its own listener (`admin.listen`): what on-call needs
//! to see and steer one proxy. Every endpoint is in [`ENDPOINTS`] (and in
//! `docs/admin-openapi.json`, which a test checks against the server).
//!
//! - reads ([`views`]): `/ready`, `/healthz`, `/metrics`, `/config` (secrets
//!   redacted by [`redact`]), `/routes`, `/clusters`, `/filters`;
//! - writes ([`writes`]): `PUT /filters/{name}`, `POST /reload`,
//!   `POST /drain`, `PUT /log-level` — only with `Authorization: Bearer
//!   <token>`. A write that changes serving state builds a whole new
//!   snapshot off the request path and swaps it in, as a reload does.
//!
//! On a listener that is not loopback, reads other than `/ready`,
//! `/healthz` and `/metrics` need the token too. Errors are JSON
//! `{"error": code, "message": text}`.

pub mod redact;
mod views;
mod writes;

use std::convert::Infallible;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http::{HeaderValue, Method, Request, Response, StatusCode, header};
use hyper::body::Incoming;
use hyper::service::service_fn;
use tokio::net::TcpListener;

use crate::filter::FilterRuntime;
use crate::http::ProxyBody;
use crate::listener::{Connections, Drain};
use crate::proxy::Proxy;
use crate::reload::Reloader;
use crate::telemetry::Format;

/// Every endpoint: method, path (`{name}` is one path segment), whether it
/// writes, and whether it answers without the token on any listener.
pub const ENDPOINTS: &[Endpoint] = &[
    Endpoint::read(Method::GET, "/ready").open(),
    Endpoint::read(Method::GET, "/healthz").open(),
    Endpoint::read(Method::GET, "/metrics").open(),
    Endpoint::read(Method::GET, "/config"),
    Endpoint::read(Method::GET, "/routes"),
    Endpoint::read(Method::GET, "/clusters"),
    Endpoint::read(Method::GET, "/filters"),
    Endpoint::write(Method::PUT, "/filters/{name}"),
    Endpoint::write(Method::POST, "/reload"),
    Endpoint::write(Method::POST, "/drain"),
    Endpoint::write(Method::PUT, "/log-level"),
];

/// One admin endpoint.
#[derive(Debug, Clone)]
pub struct Endpoint {
    /// Its method.
    pub method: Method,
    /// Its path; `{name}` stands for one segment.
    pub path: &'static str,
    /// It changes the proxy: the token is always needed.
    pub writes: bool,
    /// It answers without the token even off loopback (probes, scrapers).
    pub open: bool,
}

impl Endpoint {
    const fn read(method: Method, path: &'static str) -> Self {
        Self {
            method,
            path,
            writes: false,
            open: false,
        }
    }

    const fn write(method: Method, path: &'static str) -> Self {
        Self {
            method,
            path,
            writes: true,
            open: false,
        }
    }

    const fn open(mut self) -> Self {
        self.open = true;
        self
    }

    /// The `{name}` segment when `path` is this endpoint's path.
    fn matches<'p>(&self, path: &'p str) -> Option<Option<&'p str>> {
        match self.path.strip_suffix("{name}") {
            None => (self.path == path).then_some(None),
            Some(prefix) => path
                .strip_prefix(prefix)
                .filter(|name| !name.is_empty() && !name.contains('/'))
                .map(Some),
        }
    }
}

/// Where the serving snapshot's config comes from: what `POST /reload` and
/// `PUT /filters/{name}` act on.
pub enum ConfigSource {
    /// A config file, reloaded by this reloader.
    File(Arc<Reloader>),
    /// A control plane: the admin API does not change the configuration.
    ControlPlane {
        /// The control plane's URL.
        url: String,
    },
}

/// The traffic listeners' drain (`POST /drain`, SIGTERM): the admin API's
/// own connections have a drain of their own, so it answers while traffic
/// drains.
pub struct TrafficDrain {
    /// Started by `POST /drain` and on SIGTERM.
    pub drain: Arc<Drain>,
    /// The traffic connections of every worker.
    pub connections: Vec<Arc<Connections>>,
    /// How long `POST /drain` waits for them (`limits.drain_timeout_ms`).
    pub timeout: Duration,
}

/// What the admin API serves from and acts on.
pub struct AdminApi {
    /// The proxy: its snapshot and metrics.
    pub proxy: Arc<Proxy>,
    /// The filter runtime snapshots are built with.
    pub runtime: Arc<FilterRuntime>,
    /// Where the configuration comes from.
    pub source: ConfigSource,
    /// The traffic drain.
    pub traffic: TrafficDrain,
    /// The bearer token of writes (and of reads off loopback); `None`:
    /// writes are refused.
    pub token: Option<String>,
    /// The admin listener is on a loopback address.
    pub loopback: bool,
}

/// Serves the admin API on `listener` until its drain starts, with the
/// timers and the (small) cap of `conns`.
pub async fn serve(listener: TcpListener, api: Arc<AdminApi>, conns: Arc<Connections>) {
    conns
        .accept_loop(
            listener,
            || None,
            move |_, activity| {
                let api = api.clone();
                service_fn(move |req| {
                    let api = api.clone();
                    let in_flight = activity.begin();
                    async move {
                        let response = answer(&api, req).await;
                        drop(in_flight);
                        Ok::<_, Infallible>(response)
                    }
                })
            },
        )
        .await;
}

async fn answer(api: &Arc<AdminApi>, req: Request<Incoming>) -> Response<ProxyBody> {
    let path = req.uri().path().to_string();
    let mut allowed = Vec::new();
    let mut found = None;
    for endpoint in ENDPOINTS {
        if let Some(name) = endpoint.matches(&path) {
            if endpoint.method == req.method() {
                found = Some((endpoint, name.map(str::to_string)));
                break;
            }
            allowed.push(endpoint.method.as_str());
        }
    }
    let Some((endpoint, name)) = found else {
        if allowed.is_empty() {
            return error(
                StatusCode::NOT_FOUND,
                "not_found",
                &format!("no admin endpoint {path} (see docs/admin.md)"),
            );
        }
        let mut resp = error(
            StatusCode::METHOD_NOT_ALLOWED,
            "method_not_allowed",
            &format!("{path} answers {}", allowed.join(", ")),
        );
        if let Ok(allow) = HeaderValue::from_str(&allowed.join(", ")) {
            resp.headers_mut().insert(header::ALLOW, allow);
        }
        return resp;
    };
    if let Err(resp) = authorize(api, endpoint, &req) {
        return *resp;
    }
    match (endpoint.path, name) {
        ("/ready", _) => views::ready(api),
        ("/healthz", _) => text(StatusCode::OK, "text/plain", "ok\n".into()),
        ("/metrics", _) => metrics(api, &req),
        ("/config", _) => views::config(api),
        ("/routes", _) => views::routes(api),
        ("/clusters", _) => views::clusters(api),
        ("/filters", _) => views::filters(api),
        ("/filters/{name}", Some(name)) => writes::put_filter(api, &name, req).await,
        ("/reload", _) => writes::reload(api).await,
        ("/drain", _) => writes::drain(api).await,
        ("/log-level", _) => writes::log_level(req).await,
        _ => error(StatusCode::NOT_FOUND, "not_found", "no such endpoint"),
    }
}

/// `GET /metrics`: the registry in the Prometheus text format, or in
/// OpenMetrics when the scraper's `Accept` asks for it; the gauges read from
/// the serving snapshot are set first.
fn metrics(api: &AdminApi, req: &Request<Incoming>) -> Response<ProxyBody> {
    let accept = req
        .headers()
        .get(header::ACCEPT)
        .and_then(|v| v.to_str().ok());
    let format = Format::from_accept(accept);
    let registry = &api.proxy.metrics;
    let snapshot = api.proxy.snapshot.load();
    let scraped = &registry.scraped;
    scraped
        .snapshot_version
        .set(i64::try_from(snapshot.origin.version).unwrap_or(i64::MAX));
    let mut instances: std::collections::BTreeMap<&str, usize> = snapshot
        .config
        .filters
        .keys()
        .map(|name| (name.as_str(), 0))
        .collect();
    for listener in &snapshot.listeners {
        for route in listener.routes.routes() {
            for entry in &route.chain.entries {
                *instances.entry(&entry.name).or_default() += entry.pool.live();
            }
        }
    }
    scraped.filter_instances.reset();
    for (name, live) in instances {
        scraped
            .filter_instances
            .with_label_values(&[name])
            .set(i64::try_from(live).unwrap_or(i64::MAX));
    }
    text(
        StatusCode::OK,
        format.content_type(),
        registry.render_as(format),
    )
}

/// Writes need the token; reads off loopback too, but for the open ones.
fn authorize(
    api: &AdminApi,
    endpoint: &Endpoint,
    req: &Request<Incoming>,
) -> Result<(), Box<Response<ProxyBody>>> {
    if !endpoint.writes && (endpoint.open || api.loopback) {
        return Ok(());
    }
    let Some(token) = &api.token else {
        return Err(Box::new(error(
            StatusCode::FORBIDDEN,
            "writes_disabled",
            "this proxy has no admin token (admin.token_file or WEFT_ADMIN_TOKEN), so the admin API takes no writes",
        )));
    };
    let presented = req
        .headers()
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "));
    match presented {
        None => Err(Box::new(error(
            StatusCode::UNAUTHORIZED,
            "unauthorized",
            "this endpoint needs `Authorization: Bearer <token>` (the proxy's admin token)",
        ))),
        Some(p) if weft_api::token_matches(p, token) => Ok(()),
        Some(_) => Err(Box::new(error(
            StatusCode::UNAUTHORIZED,
            "unauthorized",
            "the bearer token is not this proxy's admin token",
        ))),
    }
}

/// A JSON error: `{"error": code, "message": message}`.
pub(crate) fn error(status: StatusCode, code: &str, message: &str) -> Response<ProxyBody> {
    json(
        status,
        &serde_json::json!({ "error": code, "message": message }),
    )
}

/// A JSON answer.
pub(crate) fn json(status: StatusCode, value: &serde_json::Value) -> Response<ProxyBody> {
    let mut body = value.to_string();
    body.push('\n');
    text(status, "application/json", body)
}

fn text(status: StatusCode, content_type: &'static str, body: String) -> Response<ProxyBody> {
    let mut resp = Response::new(ProxyBody::full(Bytes::from(body)));
    *resp.status_mut() = status;
    resp.headers_mut()
        .insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
    resp
}
