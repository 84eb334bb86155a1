//! The admin API's writes. Each answers once it is done: a module upload
//! or a reload once the new snapshot serves (or was refused, changing
//! nothing), a drain once the traffic connections closed or the drain
//! timeout passed.

use std::path::PathBuf;
use std::sync::Arc;

use bytes::Bytes;
use http::{Request, Response, StatusCode};
use http_body_util::{BodyExt, Limited};
use hyper::body::Incoming;
use serde_json::json;

use super::{AdminApi, ConfigSource, error, json};
use crate::config::ConfigErrors;
use crate::http::ProxyBody;
use crate::reload::Reloader;

/// The largest module `PUT /filters/{name}` takes: 64 MiB.
pub const MAX_MODULE_BYTES: usize = 64 << 20;
/// The largest `PUT /log-level` body.
const MAX_LEVEL_BYTES: usize = 4 << 10;

/// `PUT /filters/{name}`: the body is a component that replaces filter
/// `name`'s module; validated and swapped exactly as a reload would.
pub async fn put_filter(
    api: &Arc<AdminApi>,
    name: &str,
    req: Request<Incoming>,
) -> Response<ProxyBody> {
    let reloader = match file_source(api) {
        Ok(reloader) => reloader,
        Err(resp) => return *resp,
    };
    if !api.proxy.snapshot.load().config.filters.contains_key(name) {
        let known: Vec<String> = api
            .proxy
            .snapshot
            .load()
            .config
            .filters
            .keys()
            .cloned()
            .collect();
        return error(
            StatusCode::NOT_FOUND,
            "unknown_filter",
            &format!("no filter {name:?} in the serving config (known: {known:?})"),
        );
    }
    let bytes = match read_body(req, MAX_MODULE_BYTES).await {
        Ok(bytes) => bytes,
        Err(resp) => return *resp,
    };
    let sha256 = weft_api::sha256_hex(&bytes);
    let path = match write_upload(&sha256, &bytes) {
        Ok(path) => path,
        Err(e) => {
            return error(
                StatusCode::INTERNAL_SERVER_ERROR,
                "internal",
                &format!("cannot keep the uploaded module: {e}"),
            );
        }
    };
    match reloader.replace_module(name, path, &sha256).await {
        Ok(version) => {
            tracing::info!(filter = name, %sha256, version, "filter module replaced through the admin API");
            json(
                StatusCode::OK,
                &json!({ "filter": name, "sha256": sha256, "version": version }),
            )
        }
        Err(errors) => refused("invalid_module", &errors),
    }
}

/// `POST /reload`: rebuilds the snapshot from the config file.
pub async fn reload(api: &Arc<AdminApi>) -> Response<ProxyBody> {
    let reloader = match file_source(api) {
        Ok(reloader) => reloader,
        Err(resp) => return *resp,
    };
    let result = reloader.reload().await;
    let outcome = if result.is_ok() { "ok" } else { "rejected" };
    let _ = api.proxy.metrics.counter_add(
        "weft_config_reloads_total",
        vec![("result".into(), outcome.into())],
        1,
    );
    match result {
        Ok(version) => {
            tracing::info!(version, "config reloaded through the admin API");
            json(StatusCode::OK, &json!({ "version": version }))
        }
        Err(errors) => refused("invalid_config", &errors),
    }
}

/// `POST /drain`: stops accepting traffic, lets the requests in flight
/// finish, and answers when every traffic connection closed or the drain
/// timeout passed. `/ready` answers 503 from the start; the admin API
/// keeps answering.
pub async fn drain(api: &Arc<AdminApi>) -> Response<ProxyBody> {
    let traffic = &api.traffic;
    let open = || traffic.connections.iter().map(|c| c.open()).sum::<usize>();
    tracing::info!(
        connections = open(),
        "draining through the admin API: accepting no new connections"
    );
    traffic.drain.start();
    let closed = async {
        for conns in &traffic.connections {
            conns.closed().await;
        }
    };
    let drained = tokio::time::timeout(traffic.timeout, closed).await.is_ok();
    json(
        StatusCode::OK,
        &json!({ "drained": drained, "open_connections": if drained { 0 } else { open() } }),
    )
}

/// `PUT /log-level`: the body is a log filter (`info`, `weft=debug`, …).
pub async fn log_level(req: Request<Incoming>) -> Response<ProxyBody> {
    let body = match read_body(req, MAX_LEVEL_BYTES).await {
        Ok(body) => body,
        Err(resp) => return *resp,
    };
    let Ok(level) = std::str::from_utf8(&body) else {
        return error(
            StatusCode::BAD_REQUEST,
            "bad_level",
            "the body must be a UTF-8 log filter such as `info` or `weft=debug`",
        );
    };
    match crate::logging::set_level(level.trim()) {
        Ok(level) => {
            tracing::info!(%level, "log level set through the admin API");
            json(StatusCode::OK, &json!({ "level": level }))
        }
        Err(e) => error(StatusCode::BAD_REQUEST, "bad_level", &e),
    }
}

fn file_source(api: &AdminApi) -> Result<&Arc<Reloader>, Box<Response<ProxyBody>>> {
    match &api.source {
        ConfigSource::File(reloader) => Ok(reloader),
        ConfigSource::ControlPlane { url } => Err(Box::new(error(
            StatusCode::CONFLICT,
            "managed_by_control_plane",
            &format!(
                "this proxy's configuration and modules come from the control plane at {url}: use `weft push` and `weft apply`"
            ),
        ))),
    }
}

/// A refused build: 400 with every error, one `path: message` each.
fn refused(code: &str, errors: &ConfigErrors) -> Response<ProxyBody> {
    let lines: Vec<String> = errors.0.iter().map(ToString::to_string).collect();
    json(
        StatusCode::BAD_REQUEST,
        &json!({ "error": code, "message": lines.join("; "), "errors": lines }),
    )
}

async fn read_body(req: Request<Incoming>, max: usize) -> Result<Bytes, Box<Response<ProxyBody>>> {
    match Limited::new(req.into_body(), max).collect().await {
        Ok(body) => Ok(body.to_bytes()),
        Err(e) if e.is::<http_body_util::LengthLimitError>() => Err(Box::new(error(
            StatusCode::PAYLOAD_TOO_LARGE,
            "too_large",
            &format!("the body is larger than {max} bytes"),
        ))),
        Err(e) => Err(Box::new(error(
            StatusCode::BAD_REQUEST,
            "bad_body",
            &format!("cannot read the body: {e}"),
        ))),
    }
}

/// Keeps an uploaded module as `<tmp>/weft-admin-<pid>/<sha256>.wasm`,
/// written atomically.
fn write_upload(sha256: &str, bytes: &[u8]) -> std::io::Result<PathBuf> {
    let dir = std::env::temp_dir().join(format!("weft-admin-{}", std::process::id()));
    std::fs::create_dir_all(&dir)?;
    let path = dir.join(format!("{sha256}.wasm"));
    let tmp = dir.join(format!(".tmp-{sha256}"));
    std::fs::write(&tmp, bytes)?;
    std::fs::rename(&tmp, &path)?;
    Ok(path)
}
