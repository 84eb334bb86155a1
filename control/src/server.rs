//! `weft control`: the control plane's gRPC server over a local store.

use std::future::Future;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use tokio::net::TcpListener;
use tokio_stream::wrappers::TcpListenerStream;

use crate::apply::ConfigValidator;
use crate::service::{ControlService, ServiceOptions};
use crate::store::{RedbStore, StoreError};

/// The address `weft control` listens on by default.
pub const DEFAULT_LISTEN: &str = "127.0.0.1:7070";

/// Why the control plane cannot start or stopped.
#[derive(Debug, thiserror::Error)]
pub enum ServeError {
    /// A non-loopback address without a token: anyone who can reach it
    /// could push modules that every proxy runs.
    #[error(
        "refusing to listen on {0} without a token: writes would be open to the network (give a token, or listen on 127.0.0.1)"
    )]
    TokenRequired(SocketAddr),
    /// An empty token was given.
    #[error("the token is empty")]
    EmptyToken,
    /// The store could not be opened.
    #[error("cannot open the store in {dir}: {source}")]
    Store {
        /// The data directory.
        dir: String,
        /// What went wrong.
        source: StoreError,
    },
    /// The address could not be bound.
    #[error("cannot listen on {addr}: {source}")]
    Bind {
        /// The address.
        addr: SocketAddr,
        /// The system's error.
        source: std::io::Error,
    },
    /// The gRPC server failed.
    #[error("control plane server: {0}")]
    Server(#[from] tonic::transport::Error),
}

/// The data directory used when none is given: `$XDG_DATA_HOME/weft/control`,
/// else `$HOME/.local/share/weft/control`, else `./weft-control`.
pub fn default_data_dir() -> PathBuf {
    let from_env = |key: &str| {
        std::env::var_os(key)
            .filter(|v| !v.is_empty())
            .map(PathBuf::from)
    };
    if let Some(data) = from_env("XDG_DATA_HOME") {
        return data.join("weft").join("control");
    }
    if let Some(home) = from_env("HOME") {
        return home.join(".local/share/weft/control");
    }
    PathBuf::from("weft-control")
}

/// A control plane bound to its address, with its store open.
pub struct ControlPlane {
    listener: TcpListener,
    service: ControlService,
}

impl ControlPlane {
    /// Opens the store in `data_dir` (creating it), checks the token rule
    /// and binds `listen` (port 0 picks a free port: see `local_addr`).
    pub async fn bind(
        listen: SocketAddr,
        data_dir: &Path,
        options: ServiceOptions,
        validator: Arc<dyn ConfigValidator>,
    ) -> Result<Self, ServeError> {
        match &options.token {
            Some(token) if token.is_empty() => return Err(ServeError::EmptyToken),
            None if !listen.ip().is_loopback() => return Err(ServeError::TokenRequired(listen)),
            _ => {}
        }
        let dir = data_dir.to_path_buf();
        let store = tokio::task::spawn_blocking(move || RedbStore::open(&dir))
            .await
            .expect("store open task")
            .map_err(|source| ServeError::Store {
                dir: data_dir.display().to_string(),
                source,
            })?;
        let listener = TcpListener::bind(listen)
            .await
            .map_err(|source| ServeError::Bind {
                addr: listen,
                source,
            })?;
        let service = ControlService::new(Arc::new(store), validator, options);
        Ok(Self { listener, service })
    }

    /// The address it listens on.
    pub fn local_addr(&self) -> SocketAddr {
        self.listener
            .local_addr()
            .expect("a bound listener has an address")
    }

    /// Serves until `shutdown` completes.
    pub async fn run(self, shutdown: impl Future<Output = ()> + Send) -> Result<(), ServeError> {
        tracing::info!(addr = %self.local_addr(), "control plane listening");
        let service = self.service.clone();
        let shutdown = async move {
            shutdown.await;
            service.stop_subscriptions();
        };
        tonic::transport::Server::builder()
            .add_service(self.service.into_server())
            .serve_with_incoming_shutdown(incoming(self.listener), shutdown)
            .await?;
        Ok(())
    }
}

/// The accepted connections, with `TCP_NODELAY`: an answer is one small
/// write, and Nagle's algorithm held it back until the client's delayed
/// ACK (about 40 ms per call).
fn incoming(
    listener: TcpListener,
) -> impl tokio_stream::Stream<Item = std::io::Result<tokio::net::TcpStream>> {
    use tokio_stream::StreamExt;
    TcpListenerStream::new(listener).map(|accepted| {
        let stream = accepted?;
        stream.set_nodelay(true)?;
        Ok(stream)
    })
}

/// Runs the control plane on `listen` over the store in `data_dir` until
/// `shutdown` completes: `ControlPlane::bind` then `run`.
pub async fn serve(
    listen: SocketAddr,
    data_dir: &Path,
    options: ServiceOptions,
    validator: Arc<dyn ConfigValidator>,
    shutdown: impl Future<Output = ()> + Send,
) -> Result<(), ServeError> {
    ControlPlane::bind(listen, data_dir, options, validator)
        .await?
        .run(shutdown)
        .await
}
