//! `weft run --control`: the configuration comes from a control plane.
//!
//! The local file gives what belongs to this proxy (its listeners'
//! addresses, admin API, module cache, limits); the group's configuration
//! gives routes, filters and clusters (`control_client::merge_config`).
//! The first snapshot is the last good one in the cache when there is one,
//! else the first the control plane sends; after that, each snapshot the
//! client takes is built off the request path and swapped in whole, as a
//! reload does.

use std::sync::mpsc as blocking;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use anyhow::{Context, bail};
use tokio::sync::oneshot;
use weft::config::{self, ConfigErrors, LoadedConfig};
use weft::control_client::{Client, ClientOptions, GroupSnapshot, SnapshotSink, load_cached};
use weft::filter::FilterRuntime;
use weft::proxy::Proxy;
use weft::snapshot::{Origin, Snapshot, Source};

use super::RunArgs;
use crate::validate::print_errors;

/// How long the first connection may take when there is no cached
/// snapshot to serve from.
const FIRST_CONNECT_TIMEOUT: Duration = Duration::from_secs(5);

/// A proxy configured by a control plane, between its first snapshot and
/// serving.
pub struct FromControl {
    sink: Arc<ControlSink>,
    first: Option<Snapshot>,
    /// Answers the client's first `apply` once the proxy serves.
    first_served: Option<blocking::Sender<()>>,
    /// Not started yet when the first snapshot came from the cache.
    client: Option<Client>,
}

/// Reads the local config, then finds the first snapshot: the cached one,
/// else the first the control plane sends. `None` when the proxy is told
/// to stop while it waits.
pub async fn start(
    args: &RunArgs,
    url: &str,
    runtime: Arc<FilterRuntime>,
) -> anyhow::Result<Option<FromControl>> {
    let local = config::load(&args.config).map_err(|errors| {
        print_errors(&errors);
        anyhow::anyhow!("{}: invalid config", args.config.display())
    })?;
    let mut options = ClientOptions::new(
        url,
        args.node.clone().unwrap_or_default(),
        args.group.clone().unwrap_or_default(),
    );
    options.cache_dir = args
        .cache
        .as_deref()
        .map(|dir| std::path::absolute(dir).unwrap_or_else(|_| dir.to_path_buf()));
    options.validate("--control").map_err(|errors| {
        print_errors(&errors);
        anyhow::anyhow!("invalid control-plane settings")
    })?;
    let sink = Arc::new(ControlSink {
        url: url.to_string(),
        local,
        runtime,
        state: Mutex::new(State::Waiting(None)),
    });
    let cache_dir = options
        .cache_dir()
        .context("no cache directory: give --cache, or set XDG_CACHE_HOME or HOME")?;
    let cached = load_cached(&cache_dir).and_then(|group| match sink.build(&group) {
        Ok(snapshot) => Some((snapshot, group.version)),
        Err(error) => {
            tracing::warn!(
                cache = %cache_dir.display(),
                version = group.version,
                "the cached snapshot does not build with this local config, waiting for the control plane: {error}"
            );
            None
        }
    });
    let serving_version = cached.as_ref().map_or(0, |(_, version)| *version);
    let client = Client::new(options, sink.clone(), serving_version)?;
    if let Some((snapshot, version)) = cached {
        tracing::info!(
            version,
            cache = %cache_dir.display(),
            "starting from the cached snapshot; the control plane's newer one follows when it answers"
        );
        return Ok(Some(FromControl {
            sink,
            first: Some(snapshot),
            first_served: None,
            client: Some(client),
        }));
    }
    let endpoint = tonic::transport::Endpoint::from_shared(url.to_string())
        .with_context(|| format!("--control {url}"))?
        .connect_timeout(FIRST_CONNECT_TIMEOUT);
    if let Err(e) = endpoint.connect().await {
        bail!(
            "the control plane at {url} cannot be reached ({}) and the cache {} holds no snapshot to start from: start `weft control`, or check --control",
            weft::control_client::error_chain(&e),
            cache_dir.display()
        );
    }
    let (first_tx, first_rx) = oneshot::channel();
    *lock(&sink.state) = State::Waiting(Some(first_tx));
    tracing::info!(
        url,
        group = args.group.as_deref().unwrap_or_default(),
        "waiting for the group's first configuration from the control plane"
    );
    tokio::spawn(client.run(std::future::pending()));
    tokio::select! {
        first = first_rx => {
            let (snapshot, served) = first.context("the control-plane client stopped")?;
            Ok(Some(FromControl {
                sink,
                first: Some(snapshot),
                first_served: Some(served),
                client: None,
            }))
        }
        _ = super::shutdown_signal() => Ok(None),
    }
}

impl FromControl {
    /// The snapshot to start serving.
    pub fn take_first(&mut self) -> anyhow::Result<Snapshot> {
        self.first
            .take()
            .context("the first snapshot was taken already")
    }

    /// The control plane's URL.
    pub fn url(&self) -> &str {
        &self.sink.url
    }

    /// The proxy serves: from now on each snapshot is swapped into `proxy`.
    pub fn serving(self, proxy: Arc<Proxy>) {
        *lock(&self.sink.state) = State::Serving(proxy);
        if let Some(served) = self.first_served {
            let _ = served.send(());
        }
        if let Some(client) = self.client {
            tokio::spawn(client.run(std::future::pending()));
        }
        tokio::spawn(async {
            use tokio::signal::unix::{SignalKind, signal};
            let Ok(mut hup) = signal(SignalKind::hangup()) else {
                return;
            };
            while hup.recv().await.is_some() {
                tracing::warn!(
                    "SIGHUP ignored: under --control the configuration comes from the control plane (restart to re-read the local config)"
                );
            }
        });
    }
}

/// What the sink does with a snapshot it built.
enum State {
    /// Hand the first one to `start`, and answer once it is served.
    Waiting(Option<oneshot::Sender<(Snapshot, blocking::Sender<()>)>>),
    /// Swap it in.
    Serving(Arc<Proxy>),
}

/// Builds each group snapshot with the local config, off the request path.
struct ControlSink {
    url: String,
    local: LoadedConfig,
    runtime: Arc<FilterRuntime>,
    state: Mutex<State>,
}

impl ControlSink {
    fn build(&self, group: &GroupSnapshot) -> Result<Snapshot, String> {
        let merged = weft::control_client::merge_config(group, &self.local.config)
            .map_err(|errors| one_line(&errors))?;
        let built = Snapshot::build(&merged, &self.local.base_dir, &self.runtime);
        self.runtime.release_freed_memory();
        let mut built = built.map_err(|errors| one_line(&errors))?;
        let source = Source::ControlPlane {
            url: self.url.clone(),
            group: group.group.clone(),
        };
        built.origin = Origin::new(group.version, source);
        Ok(built)
    }
}

impl SnapshotSink for ControlSink {
    fn apply(&self, group: &GroupSnapshot) -> Result<(), String> {
        let built = self.build(group);
        let mut state = lock(&self.state);
        let result = match (&mut *state, built) {
            (State::Serving(proxy), built) => {
                let swapped = built.and_then(|built| {
                    weft::reload::swap(proxy, &self.runtime, built).map_err(|e| one_line(&e))
                });
                let outcome = if swapped.is_ok() { "ok" } else { "rejected" };
                let _ = proxy.metrics.counter_add(
                    "weft_config_reloads_total",
                    vec![("result".into(), outcome.into())],
                    1,
                );
                swapped
            }
            (State::Waiting(_), Err(e)) => Err(e),
            (State::Waiting(first), Ok(built)) => {
                let Some(first) = first.take() else {
                    return Err("the proxy is stopping".into());
                };
                let (served_tx, served_rx) = blocking::channel();
                if first.send((built, served_tx)).is_err() {
                    return Err("the proxy is stopping".into());
                }
                drop(state);
                served_rx
                    .recv()
                    .map_err(|_| "the proxy stopped before serving it".to_string())
            }
        };
        match &result {
            Ok(()) => tracing::info!(
                group = %group.group,
                version = group.version,
                "configuration from the control plane serving"
            ),
            Err(error) => tracing::error!(
                group = %group.group,
                version = group.version,
                "configuration from the control plane refused, the previous one keeps serving: {error}"
            ),
        }
        result
    }
}

/// Errors as one line, for a NACK.
fn one_line(errors: &ConfigErrors) -> String {
    let lines: Vec<String> = errors.0.iter().map(ToString::to_string).collect();
    lines.join("; ")
}

fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
}
