//! One proxy's `Subscribe` stream: its `Hello`, the group snapshots sent to
//! it (only when they differ from what it serves), its ACKs, NACKs and
//! progress, and heartbeats both ways.

use std::sync::Arc;

use tokio::sync::mpsc;
use tokio::time::{Instant, MissedTickBehavior, timeout, timeout_at};
use tokio_stream::StreamExt;
use tonic::{Status, Streaming};
use weft_api::v1::control_message::Kind as Out;
use weft_api::v1::proxy_message::Kind as In;
use weft_api::v1::{
    ControlMessage, Heartbeat, Hello, ModuleRef, NackRecord, Phase, ProxyMessage, Refusal,
    SnapshotUpdate,
};

use crate::module_check::{contract_label, contract_labels, contract_served};
use crate::proxies::StreamId;
use crate::service::Inner;
use crate::store::{ConfigFormat, GroupState, unix_ms};

type Outbox = mpsc::Sender<Result<ControlMessage, Status>>;

/// Serves one subscription until the proxy goes away, falls silent for
/// `missed_heartbeats` intervals, or is replaced by a newer stream.
pub(crate) async fn run(inner: Arc<Inner>, mut inbound: Streaming<ProxyMessage>, tx: Outbox) {
    let interval = inner.options.heartbeat_interval;
    let silence_limit = interval * inner.options.missed_heartbeats.max(1);
    let hello = match timeout(silence_limit, inbound.next()).await {
        Ok(Some(Ok(ProxyMessage {
            kind: Some(In::Hello(hello)),
        }))) if !hello.node.is_empty() && !hello.group.is_empty() => hello,
        Ok(Some(Ok(_))) => {
            let message =
                "the first message of a subscription must be a Hello with a node and a group";
            let _ = tx.send(Err(Status::invalid_argument(message))).await;
            return;
        }
        Ok(_) => return,
        Err(_) => {
            let message = format!("no Hello within {silence_limit:?}");
            let _ = tx.send(Err(Status::deadline_exceeded(message))).await;
            return;
        }
    };
    let mut group = match inner.group_watch(&hello.group).await {
        Ok(group) => group,
        Err(status) => {
            let _ = tx.send(Err(status)).await;
            return;
        }
    };
    let current = group.borrow_and_update().clone();
    let running = match &current {
        Some(state) if state.version == hello.snapshot_version => module_hashes(state),
        _ => Vec::new(),
    };
    let stream = inner.proxies.connect(&hello, running);
    tracing::info!(node = %hello.node, group = %hello.group, serving = hello.snapshot_version, "proxy subscribed");
    let mut session = Session {
        inner: inner.clone(),
        node: hello.node.clone(),
        stream,
        serving: hello.snapshot_version,
        hello,
        tx,
        sent: None,
    };
    let mut tick = tokio::time::interval_at(Instant::now() + interval, interval);
    tick.set_missed_tick_behavior(MissedTickBehavior::Delay);
    let mut last_heard = Instant::now();
    let mut stopping = inner.stopping.subscribe();
    let mut open = !*stopping.borrow_and_update() && session.offer(current).await;
    while open {
        tokio::select! {
            _ = stopping.changed() => open = false,
            changed = group.changed() => {
                let state = group.borrow_and_update().clone();
                open = changed.is_ok() && session.offer(state).await;
            }
            message = timeout_at(last_heard + silence_limit, inbound.next()) => match message {
                Ok(Some(Ok(message))) => {
                    last_heard = Instant::now();
                    session.receive(message);
                }
                Ok(_) => open = false,
                Err(_) => {
                    tracing::warn!(node = %session.node, "proxy missed its heartbeats: marked gone");
                    open = false;
                }
            },
            _ = tick.tick() => {
                open = inner.proxies.is_current(&session.node, stream)
                    && session.send(Out::Heartbeat(Heartbeat {})).await;
            }
        }
    }
    inner.proxies.gone(&session.node, stream);
    tracing::info!(node = %session.node, "proxy stream ended");
}

/// A snapshot sent on this stream and not superseded.
struct Sent {
    version: u64,
    nonce: String,
    modules: Vec<String>,
}

struct Session {
    inner: Arc<Inner>,
    node: String,
    stream: StreamId,
    hello: Hello,
    tx: Outbox,
    sent: Option<Sent>,
    /// The version the proxy serves, as last reported.
    serving: u64,
}

impl Session {
    async fn send(&self, kind: Out) -> bool {
        let message = ControlMessage { kind: Some(kind) };
        self.tx.send(Ok(message)).await.is_ok()
    }

    /// Sends the group's configuration if the proxy does not serve it and
    /// was not sent it on this stream, or refuses it if the proxy cannot
    /// serve one of its modules. Returns whether the stream is still open.
    async fn offer(&mut self, state: Option<Arc<GroupState>>) -> bool {
        let Some(state) = state else { return true };
        let version = state.version;
        if version == self.serving || self.sent.as_ref().is_some_and(|s| s.version == version) {
            return true;
        }
        let proxies = &self.inner.proxies;
        if let Some(error) = unservable(&state, &self.hello.contract_versions) {
            tracing::warn!(node = %self.node, version, %error, "snapshot refused for this proxy");
            self.sent = Some(Sent {
                version,
                nonce: String::new(),
                modules: Vec::new(),
            });
            proxies.update(&self.node, self.stream, false, |e| {
                e.pending = None;
                e.last_nack = Some(NackRecord {
                    version,
                    error: error.clone(),
                    by_control_plane: true,
                    at_unix_ms: unix_ms(),
                });
            });
            return self.send(Out::Refusal(Refusal { version, error })).await;
        }
        let nonce = self.inner.nonce(version);
        proxies.update(&self.node, self.stream, false, |e| {
            e.pending = Some((version, Phase::Unspecified));
        });
        self.sent = Some(Sent {
            version,
            nonce: nonce.clone(),
            modules: module_hashes(&state),
        });
        self.send(Out::Snapshot(snapshot_update(&state, nonce)))
            .await
    }

    /// Takes in what the proxy reports.
    fn receive(&mut self, message: ProxyMessage) {
        let proxies = &self.inner.proxies;
        let sent = self.sent.as_ref();
        let (node, stream) = (self.node.as_str(), self.stream);
        match message.kind {
            Some(In::Ack(ack)) => match sent.filter(|s| s.nonce == ack.nonce) {
                Some(sent) => {
                    tracing::info!(node, version = ack.version, "ACK");
                    self.serving = sent.version;
                    proxies.update(node, stream, true, |e| {
                        e.serving_version = sent.version;
                        e.running = sent.modules.clone();
                        e.pending = None;
                    });
                }
                None => stale(proxies, node, stream, &ack.nonce),
            },
            Some(In::Nack(nack)) => match sent.filter(|s| s.nonce == nack.nonce) {
                Some(sent) => {
                    tracing::warn!(node, version = sent.version, error = %nack.error, "NACK");
                    self.serving = nack.version_kept;
                    proxies.update(node, stream, true, |e| {
                        e.serving_version = nack.version_kept;
                        e.pending = None;
                        e.last_nack = Some(NackRecord {
                            version: sent.version,
                            error: nack.error,
                            by_control_plane: false,
                            at_unix_ms: unix_ms(),
                        });
                    });
                }
                None => stale(proxies, node, stream, &nack.nonce),
            },
            Some(In::Progress(progress)) => {
                let phase = Phase::try_from(progress.phase).unwrap_or(Phase::Unspecified);
                proxies.update(node, stream, true, |e| {
                    if let Some((version, _)) = e.pending
                        && version == progress.version
                    {
                        e.pending = Some((version, phase));
                    }
                });
            }
            Some(In::Heartbeat(_)) | Some(In::Hello(_)) | None => {
                proxies.update(node, stream, true, |_| {});
            }
        }
    }
}

/// An answer to a sending that is no longer this stream's latest: it is
/// heard, and otherwise ignored.
fn stale(proxies: &crate::proxies::Proxies, node: &str, stream: StreamId, nonce: &str) {
    tracing::debug!(node, nonce, "answer to an earlier sending ignored");
    proxies.update(node, stream, true, |_| {});
}

/// Why a proxy serving `contracts` cannot serve `state`, if it cannot.
fn unservable(state: &GroupState, contracts: &[String]) -> Option<String> {
    let bad: Vec<String> = state
        .modules
        .iter()
        .filter(|r| !contract_served(&r.module.contract_version, contracts))
        .map(|r| {
            format!(
                "{}@{} ({})",
                r.module.name,
                r.module.version,
                contract_label(&r.module.contract_version)
            )
        })
        .collect();
    if bad.is_empty() {
        return None;
    }
    Some(format!(
        "version {} of group {} names {}, but this proxy serves {}: not sent",
        state.version,
        state.group,
        bad.join(", "),
        contract_labels(contracts)
    ))
}

fn module_hashes(state: &GroupState) -> Vec<String> {
    state
        .modules
        .iter()
        .map(|r| r.module.sha256.clone())
        .collect()
}

fn snapshot_update(state: &GroupState, nonce: String) -> SnapshotUpdate {
    SnapshotUpdate {
        version: state.version,
        nonce,
        config: state.config.clone().into_bytes(),
        format: match state.format {
            ConfigFormat::Yaml => weft_api::v1::ConfigFormat::Yaml,
            ConfigFormat::Json => weft_api::v1::ConfigFormat::Json,
        } as i32,
        modules: state
            .modules
            .iter()
            .map(|r| ModuleRef {
                reference: r.reference.clone(),
                name: r.module.name.clone(),
                version: r.module.version,
                sha256: r.module.sha256.clone(),
                size: r.module.size,
                contract_version: r.module.contract_version.clone(),
            })
            .collect(),
    }
}
