//! What the control plane knows of each proxy that ever subscribed: the
//! source of `Status` and of `ListModules`' "running on". Kept in memory: a
//! restarted control plane learns it again from the proxies' `Hello`s.

use std::collections::{BTreeMap, HashMap};
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};

use weft_api::v1::{Hello, NackRecord, Phase, ProxyStatus};

use crate::store::unix_ms;

/// Identifies one subscription stream: a proxy that reconnects (or a second
/// proxy using the same node name) gets a new one, and the older stream's
/// reports are ignored from then on.
pub type StreamId = u64;

/// The registry of proxies.
#[derive(Default)]
pub struct Proxies {
    by_node: Mutex<BTreeMap<String, ProxyEntry>>,
    next_stream: AtomicU64,
}

/// One proxy's state.
#[derive(Debug, Clone)]
pub struct ProxyEntry {
    /// Its group.
    pub group: String,
    /// Its `weft --version`.
    pub weft_version: String,
    /// The filter contract versions it serves.
    pub contract_versions: Vec<String>,
    /// Its current stream.
    pub stream: StreamId,
    /// Its stream is open and its heartbeats on time.
    pub connected: bool,
    /// When it stopped being connected (Unix ms), 0 while connected.
    pub gone_since_unix_ms: u64,
    /// The version it serves.
    pub serving_version: u64,
    /// The sha256s of the modules of the snapshot it serves, when known.
    pub running: Vec<String>,
    /// A version sent and not yet answered, and its phase.
    pub pending: Option<(u64, Phase)>,
    /// Its last NACK, or the control plane's last refusal to send it one.
    pub last_nack: Option<NackRecord>,
    /// When anything was last heard from it (Unix ms).
    pub last_seen_unix_ms: u64,
}

impl Proxies {
    /// Records a new stream from the proxy that sent `hello`, which serves
    /// the modules `running` (when known).
    pub fn connect(&self, hello: &Hello, running: Vec<String>) -> StreamId {
        let stream = self.next_stream.fetch_add(1, Ordering::Relaxed) + 1;
        let mut by_node = self.by_node.lock().expect("proxies lock");
        let last_nack = by_node.get(&hello.node).and_then(|e| e.last_nack.clone());
        by_node.insert(
            hello.node.clone(),
            ProxyEntry {
                group: hello.group.clone(),
                weft_version: hello.weft_version.clone(),
                contract_versions: hello.contract_versions.clone(),
                stream,
                connected: true,
                gone_since_unix_ms: 0,
                serving_version: hello.snapshot_version,
                running,
                pending: None,
                last_nack,
                last_seen_unix_ms: unix_ms(),
            },
        );
        stream
    }

    /// Applies `change` to `node`'s entry if `stream` is still its current
    /// stream (and marks it seen now if it was `heard`). Returns whether it
    /// was.
    pub fn update(
        &self,
        node: &str,
        stream: StreamId,
        heard: bool,
        change: impl FnOnce(&mut ProxyEntry),
    ) -> bool {
        let mut by_node = self.by_node.lock().expect("proxies lock");
        match by_node.get_mut(node) {
            Some(entry) if entry.stream == stream => {
                if heard {
                    entry.last_seen_unix_ms = unix_ms();
                }
                change(entry);
                true
            }
            _ => false,
        }
    }

    /// Whether `stream` is still `node`'s current stream.
    pub fn is_current(&self, node: &str, stream: StreamId) -> bool {
        let by_node = self.by_node.lock().expect("proxies lock");
        by_node.get(node).is_some_and(|e| e.stream == stream)
    }

    /// Marks `node` gone (its stream ended or its heartbeats stopped), if
    /// `stream` is still its current stream.
    pub fn gone(&self, node: &str, stream: StreamId) {
        let mut by_node = self.by_node.lock().expect("proxies lock");
        if let Some(entry) = by_node.get_mut(node)
            && entry.stream == stream
            && entry.connected
        {
            entry.connected = false;
            entry.gone_since_unix_ms = unix_ms();
            entry.pending = None;
        }
    }

    /// Every proxy, by node name.
    pub fn statuses(&self) -> Vec<ProxyStatus> {
        let by_node = self.by_node.lock().expect("proxies lock");
        by_node
            .iter()
            .map(|(node, e)| {
                let (pending_version, phase) = e.pending.unwrap_or((0, Phase::Unspecified));
                ProxyStatus {
                    node: node.clone(),
                    group: e.group.clone(),
                    weft_version: e.weft_version.clone(),
                    connected: e.connected,
                    gone_since_unix_ms: e.gone_since_unix_ms,
                    serving_version: e.serving_version,
                    pending_version,
                    pending_phase: phase as i32,
                    last_nack: e.last_nack.clone(),
                    last_seen_unix_ms: e.last_seen_unix_ms,
                }
            })
            .collect()
    }

    /// For each module sha256, the connected nodes whose serving snapshot
    /// uses it.
    pub fn running_on(&self) -> HashMap<String, Vec<String>> {
        let by_node = self.by_node.lock().expect("proxies lock");
        let mut out: HashMap<String, Vec<String>> = HashMap::new();
        for (node, entry) in by_node.iter().filter(|(_, e)| e.connected) {
            for sha in &entry.running {
                out.entry(sha.clone()).or_default().push(node.clone());
            }
        }
        out
    }
}
