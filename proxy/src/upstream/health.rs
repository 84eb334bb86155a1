//! Active health checks: one task per cluster (per process, not per
//! worker) that sends `GET <path>` to every endpoint each interval on a
//! fresh connection and records the verdicts in the endpoints' shared
//! state. A check speaks HTTP/1.1 over the cluster's transport: TLS (ALPN
//! `http/1.1`) when the cluster has `tls`. The cluster aborts the task when
//! it is dropped.

use std::sync::Arc;
use std::time::Duration;

use http::{HeaderValue, Request, header};
use http_body_util::Empty;
use hyper::client::conn::http1;
use hyper_util::rt::TokioIo;

use super::endpoint::{EndpointState, Health};
use super::transport::{Connected, Transport};

/// A cluster's checks, as configured.
#[derive(Debug, Clone)]
pub struct HealthSettings {
    /// Path and query of the check.
    pub path: String,
    /// Inclusive status ranges that pass.
    pub expected: Vec<(u16, u16)>,
    /// Time between checks.
    pub interval: Duration,
    /// Time allowed for one check.
    pub timeout: Duration,
    /// Passes in a row that make an endpoint healthy.
    pub healthy_threshold: u32,
    /// Failures in a row that make an endpoint unhealthy.
    pub unhealthy_threshold: u32,
    /// `Host` of the checks; default the endpoint's address.
    pub host: Option<String>,
}

/// Checks `endpoints` of `cluster` forever.
pub async fn run(
    cluster: Arc<str>,
    endpoints: Vec<Arc<EndpointState>>,
    s: Arc<HealthSettings>,
    transport: Transport,
) {
    let transport = Arc::new(transport);
    loop {
        let mut round = tokio::task::JoinSet::new();
        for e in &endpoints {
            let (e, s, transport) = (e.clone(), s.clone(), transport.clone());
            round.spawn(async move {
                let checked = check(&e.address, &s, &transport);
                let verdict = match tokio::time::timeout(s.timeout, checked).await {
                    Ok(verdict) => verdict,
                    Err(_) => Err(format!("no answer within {} ms", s.timeout.as_millis())),
                };
                (e, verdict)
            });
        }
        while let Some(Ok((e, verdict))) = round.join_next().await {
            let changed =
                e.record_check(verdict.is_ok(), s.healthy_threshold, s.unhealthy_threshold);
            match (changed, verdict) {
                (Some(Health::Unhealthy), Err(why)) => tracing::warn!(
                    cluster = &*cluster,
                    endpoint = &*e.address,
                    "endpoint unhealthy: health check failed: {why}"
                ),
                (Some(Health::Healthy), _) => tracing::info!(
                    cluster = &*cluster,
                    endpoint = &*e.address,
                    "endpoint healthy: health check passed"
                ),
                _ => {}
            }
        }
        tokio::time::sleep(s.interval).await;
    }
}

/// One check: `Ok` when the status is expected, else why not.
async fn check(address: &str, s: &HealthSettings, transport: &Transport) -> Result<(), String> {
    let authority: http::uri::Authority = address.parse().map_err(|e| format!("{e}"))?;
    // ALPN `http/1.1` only: a check is one HTTP/1.1 request.
    let connected = transport.connect(&authority, s.timeout, true).await?;
    let (mut sender, connection) = match connected {
        Connected::Plain(stream) => handshake(stream).await?,
        Connected::Tls(stream) => handshake(stream).await?,
    };
    let host = s.host.as_deref().unwrap_or(address);
    let request = Request::get(s.path.as_str())
        .header(
            header::HOST,
            HeaderValue::from_str(host).map_err(|e| e.to_string())?,
        )
        .header(header::USER_AGENT, "weft-health-check")
        .header(header::CONNECTION, "close")
        .body(Empty::<bytes::Bytes>::new())
        .map_err(|e| e.to_string())?;
    let response = sender
        .send_request(request)
        .await
        .map_err(|e| e.to_string());
    connection.abort();
    let status = response?.status().as_u16();
    if s.expected
        .iter()
        .any(|(lo, hi)| (*lo..=*hi).contains(&status))
    {
        Ok(())
    } else {
        Err(format!("status {status}"))
    }
}

/// An HTTP/1.1 client connection over `stream`, driven by a task of its own.
async fn handshake<S>(
    stream: S,
) -> Result<
    (
        http1::SendRequest<Empty<bytes::Bytes>>,
        tokio::task::JoinHandle<Result<(), hyper::Error>>,
    ),
    String,
>
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Send + Unpin + 'static,
{
    let (sender, connection) = http1::handshake(TokioIo::new(stream))
        .await
        .map_err(|e| e.to_string())?;
    Ok((sender, tokio::spawn(connection)))
}
