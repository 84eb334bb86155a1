//! The proxy's side of the control plane (`weft run --control`): one
//! `Subscribe` stream to `weft control`, the modules it names fetched into
//! a local cache, each new group snapshot handed to the caller to build and
//! swap, and the answer (ACK or NACK) sent back.
//!
//! - [`Client`] keeps the stream up: `Hello`, heartbeats, and reconnection
//!   with exponential backoff and full jitter whenever the stream ends,
//!   fails or falls silent.
//! - [`SnapshotSink`] is what the caller implements: merge the group's
//!   configuration with the local one ([`merge_config`]), build a
//!   `Snapshot` off the request path and swap it in, as a reload does.
//! - [`cache`]: the modules, content-addressed, and the last snapshot that
//!   was ACKed ([`load_cached`]), so a proxy restarted while the control
//!   plane is away starts from it.
//!
//! This module speaks the protocol of `weft-api` only; it does not link the
//! control plane. Nothing here runs on the request path.

pub mod cache;
mod fetch;
pub mod merge;
mod session;

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::config::{ConfigError, ConfigErrors};

pub use cache::{CachedModule, load_cached};
pub use merge::{group_config_alone, merge_config};
pub use session::{Client, ClientError, error_chain};

/// Default interval between heartbeats on the stream (the control plane's
/// own default): 5 s.
pub const DEFAULT_HEARTBEAT_INTERVAL_MS: u64 = 5_000;
/// Default number of heartbeat intervals without a word from the control
/// plane after which the stream is dropped and opened again: 3.
pub const DEFAULT_MISSED_HEARTBEATS: u32 = 3;
/// Default first reconnection delay bound: 200 ms.
pub const DEFAULT_BACKOFF_MIN_MS: u64 = 200;
/// Default largest reconnection delay bound: 30 s.
pub const DEFAULT_BACKOFF_MAX_MS: u64 = 30_000;
/// Default cap on one fetched module: 64 MiB (the control plane's push cap).
pub const DEFAULT_MAX_MODULE_MIB: u64 = 64;

/// How the proxy reaches its control plane: the `control:` settings.
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct ClientOptions {
    /// The control plane, e.g. `http://127.0.0.1:7070`.
    pub url: String,
    /// This proxy's node name, unique in the mesh.
    pub node: String,
    /// The group whose configuration it serves.
    pub group: String,
    /// Where fetched modules and the last ACKed snapshot are kept; absent:
    /// [`default_cache_dir`].
    #[serde(default)]
    pub cache_dir: Option<PathBuf>,
    /// Interval between heartbeats sent on the stream.
    #[serde(default = "default_heartbeat_interval_ms")]
    pub heartbeat_interval_ms: u64,
    /// Intervals without a word from the control plane before reconnecting.
    #[serde(default = "default_missed_heartbeats")]
    pub missed_heartbeats: u32,
    /// Bound of the first reconnection delay; it doubles per failed attempt.
    #[serde(default = "default_backoff_min_ms")]
    pub backoff_min_ms: u64,
    /// Largest bound of a reconnection delay.
    #[serde(default = "default_backoff_max_ms")]
    pub backoff_max_ms: u64,
    /// The largest module fetched, in MiB.
    #[serde(default = "default_max_module_mib")]
    pub max_module_mib: u64,
}

fn default_heartbeat_interval_ms() -> u64 {
    DEFAULT_HEARTBEAT_INTERVAL_MS
}
fn default_missed_heartbeats() -> u32 {
    DEFAULT_MISSED_HEARTBEATS
}
fn default_backoff_min_ms() -> u64 {
    DEFAULT_BACKOFF_MIN_MS
}
fn default_backoff_max_ms() -> u64 {
    DEFAULT_BACKOFF_MAX_MS
}
fn default_max_module_mib() -> u64 {
    DEFAULT_MAX_MODULE_MIB
}

impl ClientOptions {
    /// Options for `node` of `group` at `url`, every other setting at its
    /// default.
    pub fn new(url: impl Into<String>, node: impl Into<String>, group: impl Into<String>) -> Self {
        Self {
            url: url.into(),
            node: node.into(),
            group: group.into(),
            cache_dir: None,
            heartbeat_interval_ms: DEFAULT_HEARTBEAT_INTERVAL_MS,
            missed_heartbeats: DEFAULT_MISSED_HEARTBEATS,
            backoff_min_ms: DEFAULT_BACKOFF_MIN_MS,
            backoff_max_ms: DEFAULT_BACKOFF_MAX_MS,
            max_module_mib: DEFAULT_MAX_MODULE_MIB,
        }
    }

    /// Checks the settings; `at` is their path in the config (`control`).
    pub fn validate(&self, at: &str) -> Result<(), ConfigErrors> {
        let mut errors = Vec::new();
        let mut bad = |field: &str, message: String| {
            errors.push(ConfigError::new(format!("{at}.{field}"), message));
        };
        if !(self.url.starts_with("http://") || self.url.starts_with("https://")) {
            bad("url", format!("{:?} is not an http:// URL", self.url));
        }
        for (field, value) in [("node", &self.node), ("group", &self.group)] {
            if value.is_empty() {
                bad(field, "must not be empty".into());
            }
        }
        if self.heartbeat_interval_ms == 0 {
            bad("heartbeat_interval_ms", "must be at least 1".into());
        }
        if self.missed_heartbeats == 0 {
            bad("missed_heartbeats", "must be at least 1".into());
        }
        if self.backoff_min_ms == 0 || self.backoff_min_ms > self.backoff_max_ms {
            bad(
                "backoff_min_ms",
                format!(
                    "must be at least 1 and at most backoff_max_ms ({})",
                    self.backoff_max_ms
                ),
            );
        }
        if self.max_module_mib == 0 {
            bad("max_module_mib", "must be at least 1".into());
        }
        if errors.is_empty() {
            Ok(())
        } else {
            Err(ConfigErrors(errors))
        }
    }

    /// The cache directory: `cache_dir`, else [`default_cache_dir`].
    pub fn cache_dir(&self) -> Option<PathBuf> {
        self.cache_dir
            .clone()
            .or_else(|| default_cache_dir(&self.node))
    }

    pub(crate) fn heartbeat_interval(&self) -> Duration {
        Duration::from_millis(self.heartbeat_interval_ms.max(1))
    }
}

/// The default cache directory of `node`: `$XDG_CACHE_HOME/weft/control/<node>`,
/// else `$HOME/.cache/weft/control/<node>`; `None` when neither is set.
pub fn default_cache_dir(node: &str) -> Option<PathBuf> {
    let from_env = |key: &str| {
        std::env::var_os(key)
            .filter(|v| !v.is_empty())
            .map(PathBuf::from)
    };
    let base = from_env("XDG_CACHE_HOME").or_else(|| from_env("HOME").map(|h| h.join(".cache")))?;
    Some(base.join("weft").join("control").join(node))
}

/// How a group's configuration is written.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ConfigFormat {
    /// YAML.
    Yaml,
    /// JSON.
    Json,
}

/// A group's configuration at one version, with its modules on local disk:
/// what the caller builds a snapshot from.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct GroupSnapshot {
    /// The group.
    pub group: String,
    /// Its version (one more per `weft apply`).
    pub version: u64,
    /// The configuration as applied: `filters.<name>.module` references and
    /// listeners without `listen` (see [`merge_config`]).
    pub config: String,
    /// How `config` is written.
    pub format: ConfigFormat,
    /// The modules it references, each a verified file in the cache.
    pub modules: Vec<CachedModule>,
}

/// What the proxy does with a new group snapshot: build it (merged with the
/// local configuration) off the request path and swap it in, as a reload
/// does. Called on a blocking thread, one snapshot at a time.
pub trait SnapshotSink: Send + Sync + 'static {
    /// Serves `snapshot`, or says why not (the NACK's error, shown by
    /// `weft status`); on an error the snapshot served before stays.
    fn apply(&self, snapshot: &GroupSnapshot) -> Result<(), String>;
}

impl<F> SnapshotSink for F
where
    F: Fn(&GroupSnapshot) -> Result<(), String> + Send + Sync + 'static,
{
    fn apply(&self, snapshot: &GroupSnapshot) -> Result<(), String> {
        self(snapshot)
    }
}

/// A shared sink.
pub type SharedSink = Arc<dyn SnapshotSink>;
