//! Binding the admin API: its address and its token.

use std::net::SocketAddr;

use anyhow::{Context, bail};
use tokio::net::TcpListener;
use weft::config::AdminConfig;

/// The environment variable holding the admin token when
/// `admin.token_file` is not set.
pub const ADMIN_TOKEN_ENV: &str = "WEFT_ADMIN_TOKEN";

/// The admin API's listener, bound, and its token.
pub struct BoundAdmin {
    pub listener: TcpListener,
    pub token: Option<String>,
}

/// Reads the token and binds `admin.listen`. An address off loopback
/// without a token is refused: anyone who reaches it could read the
/// configuration and (with writes) replace the filters.
pub async fn bind(admin: &AdminConfig) -> anyhow::Result<BoundAdmin> {
    let addr: SocketAddr = admin
        .listen
        .parse()
        .with_context(|| format!("admin.listen: {:?} is not an ip:port", admin.listen))?;
    let token = match &admin.token_file {
        Some(path) => {
            let text = std::fs::read_to_string(path)
                .with_context(|| format!("admin.token_file: cannot read {}", path.display()))?;
            Some(text.lines().next().unwrap_or("").trim().to_string())
        }
        None => std::env::var(ADMIN_TOKEN_ENV)
            .ok()
            .map(|t| t.trim().to_string()),
    };
    if token.as_deref() == Some("") {
        bail!("the admin token is empty (admin.token_file or {ADMIN_TOKEN_ENV})");
    }
    if token.is_none() && !addr.ip().is_loopback() {
        bail!(
            "admin.listen: refusing to serve the admin API on {addr} without a token: set admin.token_file or {ADMIN_TOKEN_ENV}, or listen on 127.0.0.1"
        );
    }
    let listener = TcpListener::bind(addr)
        .await
        .with_context(|| format!("admin API: cannot bind {addr}"))?;
    tracing::info!(addr = %listener.local_addr()?, writes = token.is_some(), "admin API listening");
    Ok(BoundAdmin { listener, token })
}
