//! The configuration file's shape, exactly as users write it (YAML or JSON).
//!
//! Every struct rejects unknown fields, so a typo is an error that names its
//! path instead of a silently ignored key.

use std::collections::BTreeMap;
use std::path::PathBuf;

use serde::{Deserialize, Serialize};

/// The whole configuration file.
#[derive(Debug, Clone, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// The admin API.
    #[serde(default)]
    pub admin: Option<AdminConfig>,
    /// Filter modules this proxy knows, by name.
    #[serde(default)]
    pub filters: BTreeMap<String, FilterModuleConfig>,
    /// Sockets to accept requests on, each with its routes.
    pub listeners: Vec<ListenerConfig>,
    /// Upstream clusters, by name.
    #[serde(default)]
    pub clusters: BTreeMap<String, ClusterConfig>,
    /// Where compiled filter modules are kept between runs; absent means
    /// the default location.
    #[serde(default)]
    pub module_cache: Option<ModuleCacheConfig>,
    /// Time and space bounds of connections and bodies; the drain.
    #[serde(default)]
    pub limits: super::limits::LimitsConfig,
    /// The proxy's log output.
    #[serde(default)]
    pub log: LogConfig,
    /// Bounds on filters' metrics.
    #[serde(default)]
    pub metrics: MetricsConfig,
    /// Bounds on `{"$file": …}` references in filter configs.
    #[serde(default)]
    pub inline_files: InlineFilesConfig,
}

/// `log:` the proxy's log output (read at start; a reload keeps them).
#[derive(Debug, Clone, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct LogConfig {
    /// Longest log line; a longer one is cut and marked.
    pub max_line_bytes: usize,
    /// Lines waiting for stderr; past it new lines are dropped and counted.
    pub max_buffered_bytes: usize,
}

/// Default of `log.max_line_bytes`.
pub const DEFAULT_MAX_LINE_BYTES: usize = 16 * 1024;
/// The smallest `log.max_line_bytes`: room for a line's time, level,
/// target and the mark of a cut.
pub const MIN_LINE_BYTES: usize = 256;
/// Default of `log.max_buffered_bytes`.
pub const DEFAULT_MAX_BUFFERED_BYTES: usize = 1024 * 1024;

impl Default for LogConfig {
    fn default() -> Self {
        LogConfig {
            max_line_bytes: DEFAULT_MAX_LINE_BYTES,
            max_buffered_bytes: DEFAULT_MAX_BUFFERED_BYTES,
        }
    }
}

/// `metrics:` bounds on the series filters make (read at start).
#[derive(Debug, Clone, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct MetricsConfig {
    /// Series one filter may make in one of its families.
    pub max_series_per_family: usize,
    /// Metrics (names) one filter may make.
    pub max_families_per_filter: usize,
    /// Longest label value of a filter's series.
    pub max_label_value_bytes: usize,
}

impl Default for MetricsConfig {
    fn default() -> Self {
        MetricsConfig {
            max_series_per_family: crate::telemetry::DEFAULT_MAX_SERIES_PER_FAMILY,
            max_families_per_filter: crate::telemetry::DEFAULT_MAX_FAMILIES_PER_FILTER,
            max_label_value_bytes: crate::telemetry::DEFAULT_MAX_LABEL_VALUE_BYTES,
        }
    }
}

/// `inline_files:` bounds on files inlined into filter configs.
#[derive(Debug, Clone, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct InlineFilesConfig {
    /// Largest file a `$file` reference may name.
    pub max_bytes: u64,
}

/// Default of `inline_files.max_bytes`.
pub const DEFAULT_INLINE_FILE_MAX_BYTES: u64 = 1024 * 1024;

impl Default for InlineFilesConfig {
    fn default() -> Self {
        InlineFilesConfig {
            max_bytes: DEFAULT_INLINE_FILE_MAX_BYTES,
        }
    }
}

/// `module_cache:` the on-disk cache of compiled filter modules.
#[derive(Debug, Clone, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct ModuleCacheConfig {
    /// `false` compiles every module at every start and writes nothing.
    #[serde(default = "default_true")]
    pub enabled: bool,
    /// The directory, relative to the config file. Default:
    /// `$WEFT_MODULE_CACHE`, else `$XDG_CACHE_HOME/weft/modules`, else
    /// `$HOME/.cache/weft/modules`.
    #[serde(default)]
    pub dir: Option<PathBuf>,
}

fn default_true() -> bool {
    true
}

/// `admin:`
#[derive(Debug, Clone, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct AdminConfig {
    /// Address of the admin API.
    pub listen: String,
    /// A file holding the bearer token of the admin API's writes (its
    /// first line); else `WEFT_ADMIN_TOKEN`. Without one the admin API
    /// takes no writes, and it may listen on loopback only.
    #[serde(default)]
    pub token_file: Option<PathBuf>,
}

/// `filters.<name>:` one Wasm component and the limits its calls run under.
#[derive(Debug, Clone, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct FilterModuleConfig {
    /// Path of the `.wasm` component, relative to the config file.
    pub path: PathBuf,
    /// Deadline of one phase call, in milliseconds.
    #[serde(default = "default_deadline_ms")]
    pub deadline_ms: u64,
    /// Linear-memory cap of one instance, in MiB.
    #[serde(default = "default_max_memory_mib")]
    pub max_memory_mib: u64,
    /// `host:port` authorities the filter may call with `http-call`.
    #[serde(default)]
    pub allow_http: Vec<String>,
    /// Most instances of one chain entry alive at once; a request that needs
    /// one more gets 503 `overloaded`. Absent: an equal share of what the
    /// configured ones leave, at most [`DEFAULT_MAX_INSTANCES`].
    #[serde(default)]
    pub max_instances: Option<usize>,
    /// An idle instance unused this long is dropped (one is always kept).
    #[serde(default = "default_instance_idle_timeout_ms")]
    pub instance_idle_timeout_ms: u64,
    /// Longest total wait on callouts in one phase call.
    #[serde(default = "default_callout_phase_budget_ms")]
    pub callout_phase_budget_ms: u64,
    /// Longest total wait on this filter's callouts in one request.
    #[serde(default = "default_callout_request_budget_ms")]
    pub callout_request_budget_ms: u64,
    /// A file (relative to the config file) that takes this filter's log
    /// lines instead of the proxy's log: an access log of its own, reopened
    /// on SIGUSR1.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub log_file: Option<PathBuf>,
    /// proxy-wasm filters only: the VM configuration
    /// (`proxy_on_vm_start`); a string is passed as its bytes, anything
    /// else as JSON.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub vm_config: Option<serde_json::Value>,
    /// proxy-wasm filters only: the bodies the filter is given, buffered
    /// (default both). A filter that never reads a body streams faster
    /// with `[]`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub bodies: Option<Vec<BodyKind>>,
}

/// A body a proxy-wasm filter is given (`filters.<name>.bodies`).
#[derive(Debug, Clone, Copy, Deserialize, Serialize, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum BodyKind {
    /// The request body (`proxy_on_request_body`).
    Request,
    /// The response body (`proxy_on_response_body`).
    Response,
}

/// Default deadline of one phase call.
pub const DEFAULT_DEADLINE_MS: u64 = 10;
/// Default memory cap of one instance.
pub const DEFAULT_MAX_MEMORY_MIB: u64 = 16;
/// Most instances of one chain entry whose filter sets no `max_instances`.
pub const DEFAULT_MAX_INSTANCES: usize = 64;
/// Default idle time after which an instance is dropped.
pub const DEFAULT_INSTANCE_IDLE_TIMEOUT_MS: u64 = 60_000;
/// Default callout wait budget of one phase call.
pub const DEFAULT_CALLOUT_PHASE_BUDGET_MS: u64 = 2_000;
/// Default callout wait budget of one request.
pub const DEFAULT_CALLOUT_REQUEST_BUDGET_MS: u64 = 5_000;

fn default_deadline_ms() -> u64 {
    DEFAULT_DEADLINE_MS
}
fn default_max_memory_mib() -> u64 {
    DEFAULT_MAX_MEMORY_MIB
}
fn default_instance_idle_timeout_ms() -> u64 {
    DEFAULT_INSTANCE_IDLE_TIMEOUT_MS
}
fn default_callout_phase_budget_ms() -> u64 {
    DEFAULT_CALLOUT_PHASE_BUDGET_MS
}
fn default_callout_request_budget_ms() -> u64 {
    DEFAULT_CALLOUT_REQUEST_BUDGET_MS
}

/// `listeners[i]:`
#[derive(Debug, Clone, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct ListenerConfig {
    /// Unique name, used in logs and request properties.
    pub name: String,
    /// `ip:port` to bind; port 0 picks a free port (logged at start).
    pub listen: String,
    /// Routes, tried in order: the first match wins.
    #[serde(default)]
    pub routes: Vec<RouteConfig>,
    /// How request paths are normalised before routing.
    #[serde(default)]
    pub paths: PathsConfig,
    /// TLS termination; absent: plaintext HTTP/1.1 and HTTP/2 (h2c).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tls: Option<super::tls::TlsConfig>,
}

/// `listeners[i].paths:` path normalisation. Dot-segments are always
/// removed and escapes of unreserved characters always decoded; these are
/// the choices that can break an application.
#[derive(Debug, Clone, Copy, Deserialize, Serialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct PathsConfig {
    /// Merge runs of slashes (`//a` is `/a`).
    #[serde(default = "default_merge_slashes")]
    pub merge_slashes: bool,
    /// What to do with `%2F` and `%5C` in a path.
    #[serde(default)]
    pub escaped_slashes: EscapedSlashes,
}

/// Default of `paths.merge_slashes`.
pub const DEFAULT_MERGE_SLASHES: bool = true;
/// Default of `paths.escaped_slashes`.
pub const DEFAULT_ESCAPED_SLASHES: EscapedSlashes = EscapedSlashes::Reject;

fn default_merge_slashes() -> bool {
    DEFAULT_MERGE_SLASHES
}

impl Default for PathsConfig {
    fn default() -> Self {
        Self {
            merge_slashes: DEFAULT_MERGE_SLASHES,
            escaped_slashes: DEFAULT_ESCAPED_SLASHES,
        }
    }
}

/// `paths.escaped_slashes:` what an encoded slash or backslash (`%2F`,
/// `%5C`) in a path does.
#[derive(Debug, Clone, Copy, Deserialize, Serialize, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum EscapedSlashes {
    /// Passed on as sent, part of its segment.
    Keep,
    /// Decoded to `/` before dot-segments are removed.
    Decode,
    /// The request is answered 400 `bad_path`.
    Reject,
}

impl Default for EscapedSlashes {
    fn default() -> Self {
        DEFAULT_ESCAPED_SLASHES
    }
}

/// `listeners[i].routes[j]:`
#[derive(Debug, Clone, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct RouteConfig {
    /// Unique name within the listener.
    pub name: String,
    /// What a request must look like to take this route; empty matches all.
    #[serde(default, rename = "match")]
    pub matcher: MatchConfig,
    /// The route's filter chain, in order.
    #[serde(default)]
    pub filters: Vec<ChainEntryConfig>,
    /// The cluster requests are sent to. Exactly one of `cluster`,
    /// `clusters`, `redirect` and `direct_response` is given.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cluster: Option<String>,
    /// A weighted split: each request goes to one of these clusters.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub clusters: Option<Vec<super::route::WeightedClusterConfig>>,
    /// The proxy answers with a redirect.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub redirect: Option<super::route::RedirectConfig>,
    /// The proxy answers with a fixed response.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub direct_response: Option<super::route::DirectResponseConfig>,
    /// Path and host rewrites applied as the request goes upstream.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rewrite: Option<super::route::RewriteConfig>,
    /// A copy of each request sent to a shadow cluster.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mirror: Option<super::route::MirrorConfig>,
    /// Time allowed for the upstream's response headers (504 after it).
    #[serde(default = "default_timeout_ms")]
    pub timeout_ms: u64,
    /// Time allowed for the whole exchange, from the request's headers to
    /// the response's last byte: 504 before the response's headers, the
    /// response cut off after. 0 (the default) is no limit.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub max_stream_duration_ms: u64,
    /// Largest body buffered for a filter's body phase (413 above it).
    #[serde(default = "default_max_body_bytes")]
    pub max_body_bytes: u64,
    /// Whether the 500 of a fail-closed filter's failure carries its
    /// details: the trap message and the filter's Wasm backtrace.
    #[serde(default)]
    pub error_details: bool,
    /// Protocols (`Upgrade` tokens, any case, e.g. `websocket`) a request
    /// may switch its connection to; other upgrade requests get 403.
    #[serde(default)]
    pub upgrades: Vec<String>,
}

/// Default route timeout.
pub const DEFAULT_TIMEOUT_MS: u64 = 15_000;
/// Default bound of a buffered body.
pub const DEFAULT_MAX_BODY_BYTES: u64 = 1024 * 1024;

fn default_timeout_ms() -> u64 {
    DEFAULT_TIMEOUT_MS
}
fn is_zero(v: &u64) -> bool {
    *v == 0
}
fn default_max_body_bytes() -> u64 {
    DEFAULT_MAX_BODY_BYTES
}

/// `match:` every condition given must hold.
#[derive(Debug, Clone, Default, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct MatchConfig {
    /// Exact host (`api.example.com`) or suffix wildcard (`*.example.com`).
    pub host: Option<String>,
    /// Exact path (without query).
    pub path: Option<String>,
    /// Path prefix.
    pub path_prefix: Option<String>,
    /// Allowed methods.
    pub methods: Option<Vec<String>>,
    /// Header conditions.
    #[serde(default)]
    pub headers: Vec<HeaderMatchConfig>,
}

/// `match.headers[k]:` one header condition: `exact`, `prefix` or `present`.
#[derive(Debug, Clone, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct HeaderMatchConfig {
    /// Header name (any case).
    pub name: String,
    /// The value must equal this.
    pub exact: Option<String>,
    /// The value must start with this.
    pub prefix: Option<String>,
    /// The header must be present (`true`) or absent (`false`).
    pub present: Option<bool>,
}

/// `filters[k]:` one entry of a route's chain.
#[derive(Debug, Clone, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct ChainEntryConfig {
    /// Name of a module under the top-level `filters:`.
    pub filter: String,
    /// The filter's own config, passed to its `init` as JSON.
    #[serde(default)]
    pub config: serde_json::Value,
    /// What a failure of this filter does to the request.
    #[serde(default)]
    pub on_error: OnError,
}

/// What happens to a request when its filter traps, overruns its deadline or
/// memory cap.
#[derive(Debug, Clone, Copy, Default, Deserialize, Serialize, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum OnError {
    /// Answer 500.
    #[default]
    FailClosed,
    /// Skip the filter and go on.
    FailOpen,
}

pub use super::cluster::*;
