//! The subscription: one stream at a time to the control plane, opened
//! again with backoff whenever it ends, and the snapshots it brings taken
//! in one at a time.

use std::future::Future;
use std::path::Path;
use std::pin::Pin;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use tokio::sync::mpsc;
use tokio::time::{Instant, MissedTickBehavior, timeout_at};
use tokio_stream::wrappers::ReceiverStream;
use tonic::transport::{Channel, Endpoint};
use weft_api::v1::control_client::ControlClient as Api;
use weft_api::v1::control_message::Kind as In;
use weft_api::v1::proxy_message::Kind as Out;
use weft_api::v1::{Ack, Heartbeat, Hello, Nack, Phase, Progress, ProxyMessage, SnapshotUpdate};

use super::cache::{Cache, CachedModule};
use super::fetch::{FetchFailure, fetch_missing};
use super::{ClientOptions, ConfigFormat, GroupSnapshot, SharedSink};
use crate::filter::module::{CONTRACT_VERSION, PROXY_WASM_ABI};

/// Time allowed to open the connection to the control plane.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);

/// Why the client cannot start.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    /// No cache directory was given and none can be derived.
    #[error("control.cache_dir: no cache directory: set control.cache_dir, XDG_CACHE_HOME or HOME")]
    NoCacheDir,
    /// The cache directory cannot be created or read.
    #[error("control.cache_dir: cannot open {dir}: {source}")]
    Cache {
        /// The directory.
        dir: String,
        /// The system's error.
        source: std::io::Error,
    },
    /// The URL is not one a channel can be made of.
    #[error("control.url: {url:?}: {message}")]
    Url {
        /// The URL.
        url: String,
        /// What is wrong with it.
        message: String,
    },
}

/// The proxy's control-plane client. [`Client::run`] keeps it subscribed
/// until its shutdown future completes.
pub struct Client {
    options: ClientOptions,
    endpoint: Endpoint,
    cache: Cache,
    sink: SharedSink,
    /// What the proxy serves and refused; updated by the blocking task
    /// that applies a snapshot, which outlives a stream that ends while it
    /// runs.
    taken: Arc<Mutex<Taken>>,
    /// Held while the sink applies: one snapshot at a time, even across a
    /// reconnection.
    applying: Arc<Mutex<()>>,
}

#[derive(Debug)]
struct Taken {
    /// The version the proxy serves (0 for none).
    serving: u64,
    /// The last version refused, and why: answered with the same NACK if it
    /// is sent again, never built again.
    nacked: Option<(u64, String)>,
}

/// An error with its sources, `a: b: c`: tonic's transport error says only
/// "transport error" by itself.
pub fn error_chain(error: &(dyn std::error::Error + 'static)) -> String {
    let mut text = error.to_string();
    let mut last = text.clone();
    let mut source = error.source();
    while let Some(e) = source {
        let part = e.to_string();
        if part != last {
            text.push_str(": ");
            text.push_str(&part);
            last = part;
        }
        source = e.source();
    }
    text
}

fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
}

/// A snapshot being taken: fetching, then building in the sink.
type Work = Pin<Box<dyn Future<Output = Outcome> + Send>>;

struct Outcome {
    version: u64,
    nonce: String,
    result: Result<(), FetchFailure>,
}

impl Client {
    /// A client for `options`, handing snapshots to `sink`, while the proxy
    /// serves `serving_version` (the version of the [`load_cached`]
    /// snapshot it started from, or 0). Opens the cache directory.
    ///
    /// [`load_cached`]: super::load_cached
    pub fn new(
        options: ClientOptions,
        sink: SharedSink,
        serving_version: u64,
    ) -> Result<Client, ClientError> {
        let endpoint = Endpoint::from_shared(options.url.clone())
            .map_err(|e| ClientError::Url {
                url: options.url.clone(),
                message: e.to_string(),
            })?
            .connect_timeout(CONNECT_TIMEOUT)
            .tcp_nodelay(true);
        let dir = options.cache_dir().ok_or(ClientError::NoCacheDir)?;
        let cache = Cache::open(&dir).map_err(|source| ClientError::Cache {
            dir: dir.display().to_string(),
            source,
        })?;
        Ok(Client {
            options,
            endpoint,
            cache,
            sink,
            taken: Arc::new(Mutex::new(Taken {
                serving: serving_version,
                nacked: None,
            })),
            applying: Arc::default(),
        })
    }

    /// The cache directory (absolute).
    pub fn cache_dir(&self) -> &Path {
        self.cache.dir()
    }

    /// Stays subscribed until `shutdown` completes: after each stream ends
    /// or fails, waits a random delay up to a bound that starts at
    /// `backoff_min_ms` and doubles per failed attempt up to
    /// `backoff_max_ms` (full jitter), then subscribes again. A stream that
    /// heard from the control plane resets the bound.
    pub async fn run(mut self, shutdown: impl Future<Output = ()>) {
        tokio::pin!(shutdown);
        let mut failures: u32 = 0;
        loop {
            let (heard, reason) = tokio::select! {
                _ = &mut shutdown => return,
                end = self.subscribe() => end,
            };
            if heard {
                failures = 0;
            }
            let delay = backoff_delay(&self.options, failures);
            failures = failures.saturating_add(1);
            tracing::warn!(url = %self.options.url, ?delay, "control plane stream ended: {reason}; reconnecting");
            tokio::select! {
                _ = &mut shutdown => return,
                _ = tokio::time::sleep(delay) => {}
            }
        }
    }

    /// One stream, until it ends: whether anything was heard on it, and why
    /// it ended.
    async fn subscribe(&mut self) -> (bool, String) {
        let channel = match self.endpoint.connect().await {
            Ok(channel) => channel,
            Err(e) => return (false, format!("cannot connect: {}", error_chain(&e))),
        };
        let mut api = Api::new(channel);
        let (tx, rx) = mpsc::channel(16);
        let hello_version = lock(&self.taken).serving;
        let hello = Hello {
            node: self.options.node.clone(),
            group: self.options.group.clone(),
            weft_version: env!("CARGO_PKG_VERSION").into(),
            contract_versions: vec![CONTRACT_VERSION.into(), PROXY_WASM_ABI.into()],
            snapshot_version: hello_version,
            module_sha256s: self.cache.module_hashes(),
        };
        let _ = tx.try_send(message(Out::Hello(hello)));
        let mut inbound = match api.subscribe(ReceiverStream::new(rx)).await {
            Ok(response) => response.into_inner(),
            Err(status) => return (false, format!("Subscribe refused: {}", status.message())),
        };
        tracing::info!(url = %self.options.url, serving = hello_version, "subscribed to the control plane");
        let interval = self.options.heartbeat_interval();
        let silence = interval * self.options.missed_heartbeats.max(1);
        let mut tick = tokio::time::interval_at(Instant::now() + interval, interval);
        tick.set_missed_tick_behavior(MissedTickBehavior::Delay);
        let mut last_heard = Instant::now();
        let mut heard = false;
        let mut work: Option<Work> = None;
        let mut next: Option<SnapshotUpdate> = None;
        loop {
            tokio::select! {
                received = timeout_at(last_heard + silence, inbound.message()) => match received {
                    Ok(Ok(Some(received))) => {
                        (last_heard, heard) = (Instant::now(), true);
                        match received.kind {
                            Some(In::Snapshot(update)) if work.is_some() => next = Some(update),
                            Some(In::Snapshot(update)) => {
                                work = self.start(update, &api, &tx).await;
                            }
                            Some(In::Refusal(refusal)) => tracing::warn!(
                                version = refusal.version,
                                "the control plane will not send this proxy its group's snapshot: {}",
                                refusal.error
                            ),
                            Some(In::Heartbeat(_)) | None => {}
                        }
                    }
                    Ok(Ok(None)) => return (heard, "the control plane ended it".into()),
                    Ok(Err(status)) => return (heard, status.message().to_string()),
                    Err(_) => return (heard, format!("nothing heard for {silence:?}")),
                },
                _ = tick.tick() => {
                    if tx.send(message(Out::Heartbeat(Heartbeat {}))).await.is_err() {
                        return (heard, "the stream closed".into());
                    }
                }
                outcome = async { work.as_mut().expect("guarded").await }, if work.is_some() => {
                    work = None;
                    if let Err(reason) = self.answer(outcome, &tx).await {
                        return (heard, reason);
                    }
                    if let Some(update) = next.take() {
                        work = self.start(update, &api, &tx).await;
                    }
                }
            }
        }
    }

    /// Answers at once a snapshot already served or already refused;
    /// otherwise starts taking it in.
    async fn start(
        &self,
        update: SnapshotUpdate,
        api: &Api<Channel>,
        tx: &mpsc::Sender<ProxyMessage>,
    ) -> Option<Work> {
        let (version, nonce) = (update.version, update.nonce.clone());
        let early = {
            let taken = lock(&self.taken);
            if version == taken.serving {
                Some(Out::Ack(Ack {
                    version,
                    nonce: nonce.clone(),
                }))
            } else {
                taken
                    .nacked
                    .as_ref()
                    .filter(|(refused, _)| *refused == version)
                    .map(|(_, error)| {
                        tracing::info!(version, "snapshot refused before: NACKed again");
                        Out::Nack(Nack {
                            version_kept: taken.serving,
                            nonce: nonce.clone(),
                            error: error.clone(),
                        })
                    })
            }
        };
        if let Some(answer) = early {
            let _ = tx.send(message(answer)).await;
            return None;
        }
        tracing::info!(version, modules = update.modules.len(), "new snapshot");
        let (mut api, tx) = (api.clone(), tx.clone());
        let (cache, sink) = (self.cache.clone(), self.sink.clone());
        let (taken, applying) = (self.taken.clone(), self.applying.clone());
        let group = self.options.group.clone();
        let max_bytes = self.options.max_module_mib.saturating_mul(1 << 20);
        Some(Box::pin(async move {
            let progress = |phase: Phase| {
                message(Out::Progress(Progress {
                    version,
                    phase: phase as i32,
                }))
            };
            let result = async move {
                if update.modules.iter().any(|m| !cache.has_module(&m.sha256)) {
                    let _ = tx.send(progress(Phase::Fetching)).await;
                    fetch_missing(&mut api, &cache, &update.modules, max_bytes).await?;
                }
                let _ = tx.send(progress(Phase::Compiling)).await;
                let snapshot = group_snapshot(group, update, &cache)?;
                tokio::task::spawn_blocking(move || -> Result<(), String> {
                    let _one_at_a_time = lock(&applying);
                    {
                        // Taken in by the task of a stream that ended meanwhile.
                        let taken = lock(&taken);
                        if taken.serving == version {
                            return Ok(());
                        }
                        if let Some((refused, error)) = &taken.nacked
                            && *refused == version
                        {
                            return Err(error.clone());
                        }
                    }
                    let applied = sink.apply(&snapshot);
                    match &applied {
                        Ok(()) => {
                            if let Err(e) = cache.save_snapshot(&snapshot) {
                                tracing::warn!(version, "cannot cache the snapshot: {e}");
                            }
                            lock(&taken).serving = version;
                        }
                        Err(error) => lock(&taken).nacked = Some((version, error.clone())),
                    }
                    applied
                })
                .await
                .unwrap_or_else(|e| Err(format!("applying the snapshot panicked: {e}")))
                .map_err(FetchFailure::Refused)
            }
            .await;
            Outcome {
                version,
                nonce,
                result,
            }
        }))
    }

    /// ACKs or NACKs a snapshot taken in; a failed connection ends the
    /// stream instead (the snapshot is sent again on the next one).
    async fn answer(
        &self,
        outcome: Outcome,
        tx: &mpsc::Sender<ProxyMessage>,
    ) -> Result<(), String> {
        let Outcome {
            version,
            nonce,
            result,
        } = outcome;
        let answer = match result {
            Ok(()) => {
                tracing::info!(version, "snapshot applied: ACK");
                Out::Ack(Ack { version, nonce })
            }
            Err(FetchFailure::Refused(error)) => {
                let mut taken = lock(&self.taken);
                let kept = taken.serving;
                tracing::warn!(version, kept, "snapshot refused: NACK: {error}");
                taken.nacked = Some((version, error.clone()));
                Out::Nack(Nack {
                    version_kept: kept,
                    nonce,
                    error,
                })
            }
            Err(FetchFailure::Disconnected(error)) => return Err(error),
        };
        tx.send(message(answer))
            .await
            .map_err(|_| "the stream closed".to_string())
    }
}

/// The update as the sink sees it: config text and module files.
fn group_snapshot(
    group: String,
    update: SnapshotUpdate,
    cache: &Cache,
) -> Result<GroupSnapshot, FetchFailure> {
    let config = String::from_utf8(update.config)
        .map_err(|_| FetchFailure::Refused("the group's config is not UTF-8".into()))?;
    let format = match weft_api::v1::ConfigFormat::try_from(update.format) {
        Ok(weft_api::v1::ConfigFormat::Json) => ConfigFormat::Json,
        _ => ConfigFormat::Yaml,
    };
    let modules = update
        .modules
        .into_iter()
        .map(|m| CachedModule {
            path: cache.module_path(&m.sha256),
            reference: m.reference,
            name: m.name,
            version: m.version,
            sha256: m.sha256,
            size: m.size,
            contract_version: m.contract_version,
        })
        .collect();
    Ok(GroupSnapshot {
        group,
        version: update.version,
        config,
        format,
        modules,
    })
}

fn message(kind: Out) -> ProxyMessage {
    ProxyMessage { kind: Some(kind) }
}

/// The delay before reconnecting after `failures` failed attempts in a
/// row: uniform in [0, min(backoff_max, backoff_min × 2^failures)].
fn backoff_delay(options: &ClientOptions, failures: u32) -> Duration {
    let bound = options
        .backoff_min_ms
        .saturating_mul(1u64 << failures.min(32))
        .min(options.backoff_max_ms);
    Duration::from_millis(fastrand::u64(0..=bound))
}
