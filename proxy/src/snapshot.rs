//! Building a `Snapshot` — everything a request needs, immutable — from a
//! config. Building compiles and initialises every filter, so whatever is
//! wrong is found here, off the request path, with the path of the field.
//! `weft validate`, start-up and reload all run this same build.
//! [`Snapshot::check`] runs it without any filter code, for the control
//! plane's checks of a group's configuration.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use http::uri::Authority;
use http::{HeaderName, Method};

use crate::config::files::InlineFiles;
use crate::config::{
    BodyKind, ChainEntryConfig, ClusterConfig, Config, ConfigError, ConfigErrors,
    DEFAULT_MAX_INSTANCES, FilterModuleConfig, MatchConfig, PathsConfig,
};
use crate::filter::callout::Callouts;
use crate::filter::chain::FilterPool;
use crate::filter::disk_cache::DiskCache;
use crate::filter::instance::{InstancePool, Limits};
use crate::filter::module::{CompiledModule, ModuleKind};
use crate::filter::proxy_wasm::{Plugin, PluginShared};
use crate::filter::runtime::{InstanceBudget, MAX_MEMORY_MIB, SERVING_INSTANCES};
use crate::filter::{ChainEntry, FilterChain, FilterRuntime};
use crate::route::build::{self, ClusterNames};
use crate::route::{HeaderCondition, HostMatch, Route, RouteMatch, RouteTable};
use crate::telemetry::http::RouteMetrics;
use crate::upstream::health::HealthSettings;
use crate::upstream::outlier::OutlierSettings;
use crate::upstream::{Cluster, ClusterSettings, Transport};

/// One listener's part of a snapshot.
pub struct ListenerSnapshot {
    /// The listener's name.
    pub name: Arc<str>,
    /// The address to bind.
    pub addr: SocketAddr,
    /// Its routes.
    pub routes: RouteTable,
    /// How its request paths are normalised.
    pub paths: PathsConfig,
    /// Its TLS termination, when it has a `tls:` block.
    pub tls: Option<Arc<crate::tls::ListenerTls>>,
    /// Counts requests no route matched (`route=""`).
    pub unmatched: RouteMetrics,
}

/// The immutable state requests are served from. Replaced whole on reload.
pub struct Snapshot {
    /// Listeners in config order.
    pub listeners: Vec<ListenerSnapshot>,
    /// Clusters by name.
    pub clusters: BTreeMap<String, Arc<Cluster>>,
    /// The config it was built from.
    pub config: Config,
    /// Where that config came from (set by whoever swaps it in).
    pub origin: Origin,
}

/// Where a snapshot's config came from, and when it was built: what the
/// admin API's `/config` reports.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct Origin {
    /// 1 for the first snapshot of the process, then one more per swap;
    /// under a control plane, the group's version.
    pub version: u64,
    /// What supplied the config.
    pub source: Source,
    /// When the snapshot was built, Unix milliseconds.
    pub built_at_unix_ms: u64,
}

/// What supplied a snapshot's config.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Source {
    /// Built and not served (`weft validate`, a check).
    Unserved,
    /// A config file.
    File {
        /// Its path.
        path: String,
    },
    /// A group's configuration from a control plane.
    ControlPlane {
        /// The control plane.
        url: String,
        /// The group.
        group: String,
    },
    /// A config file, with one filter's module replaced through the admin
    /// API (`PUT /filters/{name}`).
    AdminUpload {
        /// The config file.
        path: String,
        /// The filter whose module was replaced.
        filter: String,
        /// Hex sha256 of the uploaded module.
        sha256: String,
    },
}

impl Origin {
    /// Version `version` from `source`, built now.
    pub fn new(version: u64, source: Source) -> Self {
        let built_at_unix_ms = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_millis() as u64);
        Self {
            version,
            source,
            built_at_unix_ms,
        }
    }
}

/// A loaded filter module, its limits and its callout grants.
struct FilterModule {
    module: Arc<CompiledModule>,
    /// Its limits; `max_instances` is the configured one, or 0 for the
    /// default share ([`default_max_instances`]).
    limits: Limits,
    callouts: Arc<Callouts>,
    /// proxy-wasm only: the VM configuration and which bodies it is given.
    vm_config: bytes::Bytes,
    bodies: (bool, bool),
}

/// The bytes a proxy-wasm filter gets for a configuration value: a string
/// as it is, nothing for none, anything else as JSON.
fn proxy_wasm_config(value: Option<&serde_json::Value>) -> bytes::Bytes {
    match value {
        None | Some(serde_json::Value::Null) => bytes::Bytes::new(),
        Some(serde_json::Value::String(s)) => bytes::Bytes::from(s.clone()),
        Some(other) => bytes::Bytes::from(other.to_string()),
    }
}

/// Collects errors while building.
#[derive(Default)]
struct Errors(Vec<ConfigError>);

impl Errors {
    fn push(&mut self, path: impl Into<String>, message: impl Into<String>) {
        self.0.push(ConfigError::new(path, message));
    }
}

/// How far a build goes with the filters.
#[derive(Clone, Copy, PartialEq, Eq)]
enum FilterSetup {
    /// Compile each module and `init` each chain entry with its config:
    /// what serving needs.
    Init,
    /// Compile each module, but run no filter code and leave `$file`
    /// references unread: what can be checked away from the proxies.
    CompileOnly,
}

impl Snapshot {
    /// Starts the background tasks of the snapshot's clusters (health
    /// checks, DNS refresh) on the current runtime: done for a snapshot
    /// about to serve, not for one only built to be checked. They stop
    /// when the snapshot (and the requests still on it) are gone.
    pub fn start(&self) {
        for cluster in self.clusters.values() {
            cluster.start();
        }
    }

    /// Builds a snapshot, or returns every error found.
    pub fn build(
        config: &Config,
        base_dir: &Path,
        runtime: &FilterRuntime,
    ) -> Result<Snapshot, ConfigErrors> {
        Self::build_with(config, base_dir, runtime, FilterSetup::Init)
    }

    /// Checks `config` as [`Snapshot::build`] does — every field, every
    /// reference, every module compiled — except what depends on the proxy
    /// that will serve it: no filter's `init` runs (a filter may read its
    /// environment) and `{"$file": …}` references in filter configs are
    /// not read (they name files on each proxy's machine). Those are
    /// checked by each proxy when it builds the snapshot.
    pub fn check(
        config: &Config,
        base_dir: &Path,
        runtime: &FilterRuntime,
    ) -> Result<(), ConfigErrors> {
        Self::build_with(config, base_dir, runtime, FilterSetup::CompileOnly).map(drop)
    }

    fn build_with(
        config: &Config,
        base_dir: &Path,
        runtime: &FilterRuntime,
        setup: FilterSetup,
    ) -> Result<Snapshot, ConfigErrors> {
        let mut errors = Errors::default();
        if let Some(admin) = &config.admin
            && let Err(e) = admin.listen.parse::<SocketAddr>()
        {
            errors.push(
                "admin.listen",
                format!("invalid socket address {:?}: {e}", admin.listen),
            );
        }
        errors.0.extend(config.limits.check());
        let clusters = build_clusters(&config.clusters, base_dir, &mut errors);
        // Resolved on every build: a changed `module_cache` applies to
        // modules compiled from this build on.
        let disk = if config.filters.is_empty() {
            None
        } else {
            runtime.disk_cache(config.module_cache.as_ref(), base_dir)
        };
        let modules = load_modules(
            &config.filters,
            base_dir,
            runtime,
            disk.as_ref(),
            &mut errors,
        );
        refuse_grants_to_self(config, &mut errors);
        let files = InlineFiles::new(base_dir, &config.inline_files);
        let mut chains = ChainBuilder {
            base_dir,
            files: &files,
            defined: &config.filters,
            modules: &modules,
            runtime,
            setup,
            instances: InstanceBudget::default(),
            default_max_instances: default_max_instances(config),
        };
        if config.listeners.is_empty() {
            errors.push("listeners", "at least one listener is required");
        }
        errors.0.extend(crate::config::limit_errors(config));
        let mut names = HashSet::new();
        let mut listeners = Vec::new();
        for (i, l) in config.listeners.iter().enumerate() {
            let at = format!("listeners[{i}]");
            if l.name.is_empty() || !names.insert(l.name.as_str()) {
                errors.push(
                    format!("{at}.name"),
                    format!("listener name {:?} is empty or used twice", l.name),
                );
            }
            let addr = match l.listen.parse::<SocketAddr>() {
                Ok(a) => Some(a),
                Err(e) => {
                    errors.push(
                        format!("{at}.listen"),
                        format!("invalid socket address {:?}: {e}", l.listen),
                    );
                    None
                }
            };
            let tls = l.tls.as_ref().and_then(|tls| {
                crate::tls::ListenerTls::build(tls, base_dir, &format!("{at}.tls"))
                    .map_err(|e| errors.0.extend(e))
                    .ok()
                    .map(Arc::new)
            });
            let listener_name: Arc<str> = l.name.as_str().into();
            let mut route_names = HashSet::new();
            let mut routes = Vec::new();
            for (j, r) in l.routes.iter().enumerate() {
                let at = format!("{at}.routes[{j}]");
                if r.name.is_empty() || !route_names.insert(r.name.as_str()) {
                    errors.push(
                        format!("{at}.name"),
                        format!(
                            "route name {:?} is empty or used twice in this listener",
                            r.name
                        ),
                    );
                }
                let matcher = build_match(&r.matcher, &format!("{at}.match"), &mut errors);
                let mut chain = chains.build(&r.filters, &format!("{at}.filters"), &mut errors);
                chain.error_details = r.error_details;
                let names = ClusterNames {
                    built: &clusters,
                    defined: &config.clusters,
                };
                let Some(parts) = build::route_parts(r, &at, &names, &mut errors.0) else {
                    continue;
                };
                if r.timeout_ms == 0 {
                    errors.push(format!("{at}.timeout_ms"), "must be greater than 0");
                }
                if r.max_stream_duration_ms > crate::proxy::stream_limit::MAX_STREAM_DURATION_MS {
                    errors.push(
                        format!("{at}.max_stream_duration_ms"),
                        format!(
                            "must be at most {} (30 days); 0 is no limit",
                            crate::proxy::stream_limit::MAX_STREAM_DURATION_MS
                        ),
                    );
                }
                let name: Arc<str> = r.name.as_str().into();
                let metrics = RouteMetrics::new(&runtime.metrics().http, &listener_name, &name);
                let stream_limit = crate::proxy::stream_limit::StreamLimit::build(
                    r.max_stream_duration_ms,
                    &runtime.metrics().http,
                    &listener_name,
                    &name,
                );
                routes.push(Arc::new(Route {
                    name,
                    metrics,
                    matcher,
                    chain: Arc::new(chain),
                    action: parts.action,
                    rewrite: parts.rewrite,
                    mirror: parts.mirror,
                    timeout: Duration::from_millis(r.timeout_ms),
                    max_body_bytes: r.max_body_bytes,
                    stream_limit,
                    upgrades: crate::proxy::upgrade::Upgrades::build(
                        &r.upgrades,
                        &at,
                        &mut |path, message| errors.push(path, message),
                    ),
                }));
            }
            if let Some(addr) = addr {
                listeners.push(ListenerSnapshot {
                    unmatched: RouteMetrics::new(
                        &runtime.metrics().http,
                        &listener_name,
                        &"".into(),
                    ),
                    name: listener_name.clone(),
                    addr,
                    routes: RouteTable::new(routes),
                    paths: l.paths,
                    tls,
                });
            }
        }
        if errors.0.is_empty() {
            Ok(Snapshot {
                listeners,
                clusters: clusters.into_iter().collect(),
                config: config.clone(),
                origin: Origin::new(0, Source::Unserved),
            })
        } else {
            Err(ConfigErrors(errors.0))
        }
    }
}

fn known<'a>(names: impl Iterator<Item = &'a String>) -> String {
    let names: Vec<&str> = names.map(String::as_str).collect();
    if names.is_empty() {
        " (none are defined)".to_string()
    } else {
        format!(" (known: {})", names.join(", "))
    }
}

fn build_clusters(
    clusters: &BTreeMap<String, ClusterConfig>,
    base_dir: &Path,
    errors: &mut Errors,
) -> HashMap<String, Arc<Cluster>> {
    let mut out = HashMap::new();
    for (name, c) in clusters {
        let at = format!("clusters.{name}");
        let found = c.check(&at);
        let valid = found.is_empty();
        errors.0.extend(found);
        let mut endpoints = Vec::new();
        let mut seen = HashSet::new();
        for (k, e) in c.endpoints.iter().enumerate() {
            let address = e.address();
            let at = match e {
                crate::config::EndpointConfig::Address(_) => format!("{at}.endpoints[{k}]"),
                _ => format!("{at}.endpoints[{k}].address"),
            };
            match address.parse::<Authority>() {
                Ok(a) if a.port_u16().is_some() && !a.host().is_empty() => {
                    if !seen.insert(a.as_str().to_ascii_lowercase()) {
                        errors.push(at, format!("endpoint {address:?} is listed twice"));
                    } else {
                        endpoints.push((a, e.weight()));
                    }
                }
                _ => errors.push(
                    at,
                    format!("invalid endpoint {address:?}: expected host:port"),
                ),
            }
        }
        let authorities: Vec<Authority> = endpoints.iter().map(|(a, _)| a.clone()).collect();
        let transport = match Transport::build(c, &authorities, &at, base_dir) {
            Ok(transport) => Some(transport),
            Err(e) => {
                for (path, message) in e {
                    errors.push(path, message);
                }
                None
            }
        };
        if let Some(transport) = transport
            && valid
            && endpoints.len() == c.endpoints.len()
        {
            let cluster =
                Cluster::new(name, cluster_settings(c, endpoints)).with_transport(transport);
            out.insert(name.clone(), Arc::new(cluster));
        }
    }
    out
}

/// The settings of a checked cluster config.
fn cluster_settings(c: &ClusterConfig, endpoints: Vec<(Authority, u32)>) -> ClusterSettings {
    let ms = Duration::from_millis;
    let b = &c.circuit_breakers;
    ClusterSettings {
        endpoints,
        lb_policy: c.lb_policy,
        hash_on: c.hash_on.clone(),
        connect_timeout: ms(c.connect_timeout_ms),
        max_connections_per_worker: c.max_connections_per_worker,
        idle_timeout: ms(c.idle_timeout_ms),
        dns_refresh: ms(c.dns_refresh_ms),
        limits: (b.max_connections, b.max_pending_requests, b.max_requests),
        health_check: c.health_check.as_ref().map(|h| HealthSettings {
            path: h.path.clone(),
            expected: h
                .expected_statuses
                .iter()
                .filter_map(|s| s.bounds().ok())
                .collect(),
            interval: ms(h.interval_ms),
            timeout: ms(h.timeout_ms),
            healthy_threshold: h.healthy_threshold,
            unhealthy_threshold: h.unhealthy_threshold,
            host: h.host.clone(),
        }),
        outlier: c.outlier_detection.as_ref().map(|o| OutlierSettings {
            consecutive_5xx: o.consecutive_5xx,
            consecutive_gateway: o.consecutive_gateway_failures,
            base_ms: o.base_ejection_ms,
            max_ms: o.max_ejection_ms,
            max_ejected_percent: o.max_ejected_percent,
            health_checked: c.health_check.is_some(),
        }),
    }
}

fn load_modules(
    filters: &BTreeMap<String, FilterModuleConfig>,
    base_dir: &Path,
    runtime: &FilterRuntime,
    disk: Option<&Arc<DiskCache>>,
    errors: &mut Errors,
) -> HashMap<String, FilterModule> {
    let mut out = HashMap::new();
    for (name, f) in filters {
        let at = format!("filters.{name}");
        if !(1..=60_000).contains(&f.deadline_ms) {
            errors.push(
                format!("{at}.deadline_ms"),
                format!("{} is out of range 1..=60000", f.deadline_ms),
            );
        }
        if !(1..=MAX_MEMORY_MIB).contains(&f.max_memory_mib) {
            errors.push(
                format!("{at}.max_memory_mib"),
                format!("{} is out of range 1..={MAX_MEMORY_MIB}", f.max_memory_mib),
            );
        }
        if let Some(n) = f.max_instances
            && !(1..=SERVING_INSTANCES).contains(&n)
        {
            errors.push(
                format!("{at}.max_instances"),
                format!("{n} is out of range 1..={SERVING_INSTANCES}"),
            );
        }
        for (key, ms) in [
            ("instance_idle_timeout_ms", f.instance_idle_timeout_ms),
            ("callout_phase_budget_ms", f.callout_phase_budget_ms),
            ("callout_request_budget_ms", f.callout_request_budget_ms),
        ] {
            if !(1..=3_600_000).contains(&ms) {
                errors.push(
                    format!("{at}.{key}"),
                    format!("{ms} is out of range 1..=3600000"),
                );
            }
        }
        let mut allowed = Vec::new();
        for (k, a) in f.allow_http.iter().enumerate() {
            match a.parse::<Authority>() {
                Ok(authority) if authority.port_u16().is_some() => allowed.push(authority),
                _ => errors.push(
                    format!("{at}.allow_http[{k}]"),
                    format!("invalid authority {a:?}: expected host:port"),
                ),
            }
        }
        let path = base_dir.join(&f.path);
        match runtime.load(&path, disk) {
            Ok(module) => {
                let limits = Limits {
                    deadline_ms: f.deadline_ms.max(1),
                    memory_bytes: (f.max_memory_mib.clamp(1, MAX_MEMORY_MIB) << 20) as usize,
                    max_instances: f.max_instances.map_or(0, |n| n.clamp(1, SERVING_INSTANCES)),
                    idle_timeout: Duration::from_millis(f.instance_idle_timeout_ms),
                    callout_phase_budget: Duration::from_millis(f.callout_phase_budget_ms),
                    callout_request_budget: Duration::from_millis(f.callout_request_budget_ms),
                };
                let callouts = Arc::new(Callouts::new(allowed));
                let proxy_wasm = matches!(module.kind, ModuleKind::ProxyWasm(_));
                for (key, set) in [
                    ("vm_config", f.vm_config.is_some()),
                    ("bodies", f.bodies.is_some()),
                ] {
                    if set && !proxy_wasm {
                        errors.push(
                            format!("{at}.{key}"),
                            "only for proxy-wasm filters: this module is a Weft filter component"
                                .to_string(),
                        );
                    }
                }
                let bodies = f.bodies.as_deref().map_or((true, true), |b| {
                    (
                        b.contains(&BodyKind::Request),
                        b.contains(&BodyKind::Response),
                    )
                });
                out.insert(
                    name.clone(),
                    FilterModule {
                        module,
                        limits,
                        callouts,
                        vm_config: proxy_wasm_config(f.vm_config.as_ref()),
                        bodies,
                    },
                );
            }
            Err(e) => errors.push(format!("{at}.path"), format!("{}: {e}", path.display())),
        }
    }
    out
}

/// Builds chains, counting their instances against what the proxy serves.
struct ChainBuilder<'a> {
    base_dir: &'a Path,
    files: &'a InlineFiles,
    defined: &'a BTreeMap<String, FilterModuleConfig>,
    modules: &'a HashMap<String, FilterModule>,
    runtime: &'a FilterRuntime,
    setup: FilterSetup,
    instances: InstanceBudget,
    /// `max_instances` of the entries whose filter sets none.
    default_max_instances: usize,
}

/// The `max_instances` of a chain entry whose filter sets none: an equal
/// share of the serving instances the configured ones leave, at most
/// [`DEFAULT_MAX_INSTANCES`] and at least 1, so that a config with many
/// chain entries builds with the defaults and no entry can take another's
/// instances.
fn default_max_instances(config: &Config) -> usize {
    let (mut defaults, mut configured) = (0usize, 0usize);
    let entries = config
        .listeners
        .iter()
        .flat_map(|l| &l.routes)
        .flat_map(|r| &r.filters);
    for entry in entries {
        match config.filters.get(&entry.filter).map(|f| f.max_instances) {
            Some(Some(n)) => configured = configured.saturating_add(n),
            Some(None) => defaults += 1,
            None => {}
        }
    }
    (SERVING_INSTANCES.saturating_sub(configured) / defaults.max(1)).clamp(1, DEFAULT_MAX_INSTANCES)
}

impl ChainBuilder<'_> {
    fn build(
        &mut self,
        entries: &[ChainEntryConfig],
        at: &str,
        errors: &mut Errors,
    ) -> FilterChain {
        let (files, defined, modules, runtime) =
            (self.files, self.defined, self.modules, self.runtime);
        let mut chain = Vec::new();
        for (k, entry) in entries.iter().enumerate() {
            let at = format!("{at}[{k}]");
            let Some(module) = modules.get(&entry.filter) else {
                // A defined module that failed to load was reported already.
                if !defined.contains_key(&entry.filter) {
                    errors.push(
                        format!("{at}.filter"),
                        format!("unknown filter {:?}{}", entry.filter, known(defined.keys())),
                    );
                }
                continue;
            };
            let mut limits = module.limits;
            if limits.max_instances == 0 {
                limits.max_instances = self.default_max_instances;
            }
            if let Err(e) = self.instances.add(limits.max_instances, &entry.filter) {
                errors.push(at, e);
                continue;
            }
            if self.setup == FilterSetup::CompileOnly {
                continue;
            }
            let config = match files.inline(&entry.config, &format!("{at}.config")) {
                Ok(config) => config,
                Err(file_errors) => {
                    errors.0.extend(file_errors);
                    continue;
                }
            };
            let log_file = match &defined[&entry.filter].log_file {
                None => None,
                Some(path) => {
                    let path = self.base_dir.join(path);
                    match crate::logging::files::open(&path) {
                        Ok(file) => Some(file),
                        Err(e) => {
                            errors.push(
                                format!("filters.{}.log_file", entry.filter),
                                format!("{}: cannot open: {e}", path.display()),
                            );
                            continue;
                        }
                    }
                }
            };
            let identity = runtime.identity(
                &entry.filter,
                &module.module.sha256,
                module.callouts.clone(),
                log_file,
            );
            let pool = match &module.module.kind {
                ModuleKind::Component(_) => InstancePool::new(
                    runtime.engine(),
                    runtime.watchdog().clone(),
                    module.module.clone(),
                    identity,
                    config.to_string(),
                    limits,
                    runtime.instance_counts(),
                )
                .map(FilterPool::Component)
                .map_err(|e| (format!("{at}.config"), e)),
                ModuleKind::ProxyWasm(linked) => Plugin::new(
                    runtime.engine(),
                    runtime.watchdog().clone(),
                    linked.clone(),
                    identity,
                    PluginShared {
                        plugin_config: proxy_wasm_config(Some(&config)),
                        vm_config: module.vm_config.clone(),
                        metric_values: Default::default(),
                    },
                    limits,
                    runtime.instance_counts(),
                    module.bodies,
                )
                .map(FilterPool::ProxyWasm)
                .map_err(|e| match e.vm {
                    // Its VM configuration is the filter's, not the entry's.
                    true => (format!("filters.{}.vm_config", entry.filter), e.message),
                    false => (format!("{at}.config"), e.message),
                }),
            };
            match pool {
                Ok(pool) => chain.push(ChainEntry::new(
                    entry.filter.as_str().into(),
                    pool,
                    entry.on_error,
                )),
                Err((path, e)) => errors.push(path, e),
            }
        }
        FilterChain::new(chain)
    }
}

/// Refuses callout grants that point at one of the proxy's own listeners
/// or its admin endpoint (see [`Callouts::points_at`]).
fn refuse_grants_to_self(config: &Config, errors: &mut Errors) {
    let own: Vec<SocketAddr> = config
        .listeners
        .iter()
        .map(|l| &l.listen)
        .chain(config.admin.iter().map(|a| &a.listen))
        .filter_map(|listen| listen.parse().ok())
        .collect();
    for (name, f) in &config.filters {
        for (k, grant) in f.allow_http.iter().enumerate() {
            if let Ok(authority) = grant.parse::<Authority>()
                && Callouts::points_at(&authority, &own)
            {
                errors.push(
                    format!("filters.{name}.allow_http[{k}]"),
                    format!(
                        "{grant:?} is one of this proxy's own listeners: a filter may not call the proxy itself"
                    ),
                );
            }
        }
    }
}

fn build_match(m: &MatchConfig, at: &str, errors: &mut Errors) -> RouteMatch {
    let host = m.host.as_ref().map(|h| {
        let h = h.to_ascii_lowercase();
        match h.strip_prefix('*') {
            Some(suffix) if suffix.starts_with('.') && suffix.len() > 1 => {
                HostMatch::Suffix(suffix.to_string())
            }
            Some(_) => {
                errors.push(
                    format!("{at}.host"),
                    format!("invalid host pattern {h:?}: a wildcard must be `*.suffix`"),
                );
                HostMatch::Exact(h)
            }
            None => HostMatch::Exact(h),
        }
    });
    for (key, p) in [("path", &m.path), ("path_prefix", &m.path_prefix)] {
        if let Some(p) = p
            && !p.starts_with('/')
        {
            errors.push(format!("{at}.{key}"), format!("{p:?} must start with '/'"));
        }
    }
    let methods = m.methods.as_ref().map(|ms| {
        ms.iter()
            .enumerate()
            .filter_map(
                |(i, s)| match Method::from_bytes(s.to_ascii_uppercase().as_bytes()) {
                    Ok(m) => Some(m),
                    Err(_) => {
                        errors.push(
                            format!("{at}.methods[{i}]"),
                            format!("invalid method {s:?}"),
                        );
                        None
                    }
                },
            )
            .collect()
    });
    let mut headers = Vec::new();
    for (i, h) in m.headers.iter().enumerate() {
        let at = format!("{at}.headers[{i}]");
        let Ok(name) = HeaderName::from_bytes(h.name.as_bytes()) else {
            errors.push(
                format!("{at}.name"),
                format!("invalid header name {:?}", h.name),
            );
            continue;
        };
        let cond = match (&h.exact, &h.prefix, h.present) {
            (Some(v), None, None) => HeaderCondition::Exact(v.clone()),
            (None, Some(v), None) => HeaderCondition::Prefix(v.clone()),
            (None, None, Some(p)) => HeaderCondition::Present(p),
            _ => {
                errors.push(at, "give exactly one of `exact`, `prefix`, `present`");
                continue;
            }
        };
        headers.push((name, cond));
    }
    RouteMatch {
        host,
        path: m.path.clone(),
        path_prefix: m.path_prefix.clone(),
        methods,
        headers,
    }
}
