//! What the operator's commands (`push`, `apply`, `status`, `modules`)
//! share: the connection to the control plane, the bearer token on writes,
//! and how their errors are printed.

use std::future::Future;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::Context;
use tonic::transport::{Channel, Endpoint};
use weft_api::AUTHORIZATION;
use weft_api::v1::control_client::ControlClient;

/// How long connecting to the control plane may take.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
/// How long one call may take (a push of a large module included).
const CALL_TIMEOUT: Duration = Duration::from_secs(300);

/// Runs a command's future on a runtime of its own; prints its error.
pub fn main(command: impl Future<Output = anyhow::Result<ExitCode>>) -> ExitCode {
    let result = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("cannot start the async runtime")
        .and_then(|runtime| runtime.block_on(command));
    match result {
        Ok(code) => code,
        Err(e) => {
            eprintln!("weft: {e:#}");
            ExitCode::from(1)
        }
    }
}

/// A client of the control plane at `url`.
pub async fn connect(url: &str) -> anyhow::Result<ControlClient<Channel>> {
    let channel = Endpoint::from_shared(url.to_string())
        .with_context(|| format!("--control {url:?} is not a URL"))?
        .connect_timeout(CONNECT_TIMEOUT)
        .timeout(CALL_TIMEOUT)
        .connect()
        .await
        .map_err(|e| {
            anyhow::anyhow!(
                "cannot reach the control plane at {url}: {}",
                weft::control_client::error_chain(&e)
            )
        })?;
    Ok(ControlClient::new(channel)
        .max_decoding_message_size(64 << 20)
        .max_encoding_message_size(64 << 20))
}

/// `request` carrying the bearer token, when there is one.
pub fn authorized<T>(request: T, token: Option<&str>) -> anyhow::Result<tonic::Request<T>> {
    let mut request = tonic::Request::new(request);
    if let Some(token) = token {
        let value = format!("Bearer {token}")
            .parse()
            .context("the token is not a valid header value")?;
        request.metadata_mut().insert(AUTHORIZATION, value);
    }
    Ok(request)
}

/// A refused call as an error naming what was done.
pub fn refused(what: &str, status: tonic::Status) -> anyhow::Error {
    let reason = match status.code() {
        tonic::Code::Unauthenticated | tonic::Code::PermissionDenied => {
            format!(
                "{} (give the token with --token-file or WEFT_TOKEN)",
                status.message()
            )
        }
        tonic::Code::Unavailable => {
            format!("the control plane is unavailable: {}", status.message())
        }
        _ => status.message().to_string(),
    };
    anyhow::anyhow!("{what}: {reason}")
}

/// How long ago `unix_ms` was, for people: `3s ago`, `2m ago`, `5h ago`.
pub fn ago(unix_ms: u64) -> String {
    if unix_ms == 0 {
        return "-".into();
    }
    let now = weft_control::store::unix_ms();
    let s = now.saturating_sub(unix_ms) / 1000;
    match s {
        0..60 => format!("{s}s ago"),
        60..3600 => format!("{}m ago", s / 60),
        3600..86400 => format!("{}h ago", s / 3600),
        _ => format!("{}d ago", s / 86400),
    }
}
