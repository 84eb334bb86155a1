//! The process-wide filter runtime: one wasmtime `Engine` (pooling
//! allocator, epoch interruption), the module cache, and the state each
//! filter shares across its instances.

use std::collections::HashMap;
use std::path::Path;
use std::sync::atomic::AtomicUsize;
use std::sync::{Arc, Mutex, Weak};
use std::time::Instant;

use wasmtime::{
    Config, Engine, InstanceAllocationStrategy, PoolingAllocationConfig, ProfilingStrategy,
    WasmBacktraceDetails,
};

use super::callout::Callouts;
use super::deadline::DeadlineWatchdog;
use super::disk_cache::DiskCache;
use super::host::FilterIdentity;
use super::instance::InstanceCounts;
use super::module::{CompiledModule, ModuleCache, ModuleError};
use super::shared::{SharedBytes, SharedState};
use crate::config::ModuleCacheConfig;
use crate::telemetry::Registry;

/// The largest memory cap a filter may be given, in MiB.
pub const MAX_MEMORY_MIB: u64 = 256;
/// Component instances the engine can hold at once (every pool, every
/// snapshot). Each reserves a 4 GiB memory slot of address space.
pub const ENGINE_INSTANCES: usize = 1000;
/// Instances kept back from serving for building snapshots: the first
/// instance of each chain entry of a reload is created from these, so a
/// reload builds however busy the pools are. A config has at most this
/// many chain entries.
pub const BUILD_RESERVE: usize = 200;
/// Instances requests may hold at once, in all pools together; a
/// snapshot's `max_instances` must add up to at most this.
pub const SERVING_INSTANCES: usize = ENGINE_INSTANCES - BUILD_RESERVE;

/// One per process: compiles, caches and instantiates filters.
pub struct FilterRuntime {
    engine: Engine,
    watchdog: Arc<DeadlineWatchdog>,
    modules: ModuleCache,
    /// Shared state by filter name and module hash, alive while some
    /// snapshot's chain uses it.
    shared: Mutex<HashMap<(String, String), Weak<SharedState>>>,
    shared_bytes: Arc<SharedBytes>,
    instances: InstanceCounts,
    metrics: Arc<Registry>,
    started: Instant,
}

impl FilterRuntime {
    /// Creates the engine and starts its deadline watchdog.
    pub fn new(metrics: Arc<Registry>) -> wasmtime::Result<Arc<Self>> {
        let mut pooling = PoolingAllocationConfig::default();
        pooling
            .total_component_instances(ENGINE_INSTANCES as u32)
            .total_core_instances(4 * ENGINE_INSTANCES as u32)
            .total_memories(ENGINE_INSTANCES as u32)
            .total_tables(4 * ENGINE_INSTANCES as u32)
            .max_memory_size((MAX_MEMORY_MIB << 20) as usize);
        let mut config = Config::new();
        config
            .epoch_interruption(true)
            .concurrency_support(false)
            // Captured on traps only. A panic's frames in the guest's std
            // come first: room for them and the filter's own (a report
            // keeps 16 of those, see `backtrace`).
            .wasm_backtrace_max_frames(std::num::NonZeroUsize::new(48))
            // File and line in trap reports when a module carries DWARF
            // (docs/architecture.md, "Trap reports": no measurable compile
            // time, ~1.7 MiB more memory for a 1 MB debug build, nothing
            // for a module without DWARF).
            .wasm_backtrace_details(WasmBacktraceDetails::Enable)
            .allocation_strategy(InstanceAllocationStrategy::Pooling(pooling));
        // `WEFT_WASM_ALLOCATOR=on-demand` allocates each instance's memory
        // when it is created instead of from the pool's reservation, which
        // valgrind cannot map: for counting instructions with callgrind
        // (bench/README.md). Weft's own instance caps still apply; the
        // engine's memory slots and guard pages do not.
        if std::env::var_os("WEFT_WASM_ALLOCATOR").is_some_and(|v| v == "on-demand") {
            config.allocation_strategy(InstanceAllocationStrategy::OnDemand);
        }
        // `WEFT_WASM_PROFILER=perfmap` writes /tmp/perf-PID.map so `perf`
        // names the filters' compiled functions (bench/README.md).
        if std::env::var_os("WEFT_WASM_PROFILER").is_some_and(|v| v == "perfmap") {
            config.profiler(ProfilingStrategy::PerfMap);
        }
        let engine = Engine::new(&config)?;
        let watchdog = DeadlineWatchdog::start(&engine)
            .map_err(|e| wasmtime::format_err!("cannot start the deadline thread: {e}"))?;
        Ok(Arc::new(Self {
            engine,
            watchdog,
            modules: ModuleCache::new(metrics.clone()),
            shared: Mutex::new(HashMap::new()),
            shared_bytes: Arc::default(),
            instances: InstanceCounts {
                engine: Arc::new(AtomicUsize::new(0)),
                serving_cap: SERVING_INSTANCES,
            },
            metrics,
            started: Instant::now(),
        }))
    }

    /// The engine.
    pub fn engine(&self) -> &Engine {
        &self.engine
    }

    /// The engine's instance counts, for pools.
    pub fn instance_counts(&self) -> &InstanceCounts {
        &self.instances
    }

    /// The watchdog that enforces call deadlines.
    pub fn watchdog(&self) -> &Arc<DeadlineWatchdog> {
        &self.watchdog
    }

    /// The process metrics registry.
    pub fn metrics(&self) -> &Arc<Registry> {
        &self.metrics
    }

    /// The on-disk module cache a config asks for (see [`DiskCache::resolve`]).
    pub fn disk_cache(
        &self,
        config: Option<&ModuleCacheConfig>,
        base_dir: &Path,
    ) -> Option<Arc<DiskCache>> {
        DiskCache::resolve(config, base_dir, &self.engine).map(Arc::new)
    }

    /// Loads (or finds cached, in memory or in `disk`) the component at
    /// `path`.
    pub fn load(
        &self,
        path: &Path,
        disk: Option<&Arc<DiskCache>>,
    ) -> Result<Arc<CompiledModule>, ModuleError> {
        self.modules.load(&self.engine, path, disk)
    }

    /// Lets compiled modules be written to their disk cache, and writes
    /// those compiled so far. A serving process calls this once it is up;
    /// `weft validate` never does, so it only reads the cache.
    pub fn allow_module_cache_writes(&self) {
        self.modules.allow_writes();
    }

    /// Gives back to the system the heap that compiling freed (~6 MiB with
    /// four filters). Called after snapshot builds.
    pub fn release_freed_memory(&self) {
        if !crate::allocator::release_freed_memory() {
            tracing::debug!("the allocator did not release freed memory");
        }
    }

    /// Drops compiled modules that no snapshot uses any more.
    pub fn evict_unused(&self) {
        self.modules.evict_unused();
    }

    /// The identity of filter `name` running module `sha256`, logging to
    /// `log_file` if it has one. Its shared
    /// state lives across reloads that keep both; a name pointed at another
    /// module starts with empty state (and the old state goes with the last
    /// snapshot that uses it).
    pub fn identity(
        &self,
        name: &str,
        sha256: &str,
        callouts: Arc<Callouts>,
        log_file: Option<&'static crate::logging::files::LogFile>,
    ) -> Arc<FilterIdentity> {
        let shared = {
            let mut states = self.shared.lock().unwrap();
            states.retain(|_, state| state.strong_count() > 0);
            let key = (name.to_string(), sha256.to_string());
            match states.get(&key).and_then(Weak::upgrade) {
                Some(state) => state,
                None => {
                    let state = Arc::new(SharedState::new(self.shared_bytes.clone()));
                    states.insert(key, Arc::downgrade(&state));
                    state
                }
            }
        };
        Arc::new(FilterIdentity {
            name: name.into(),
            shared,
            metrics: self.metrics.clone(),
            epoch: self.started,
            callouts,
            log_file,
        })
    }
}

/// The instances a snapshot's chain entries may hold: each entry's
/// `max_instances` must fit, all together, in what the engine serves with,
/// and the entries' first instances in what it keeps for building.
#[derive(Default)]
pub struct InstanceBudget {
    entries: usize,
    max_instances: usize,
}

impl InstanceBudget {
    /// Counts one chain entry with its `max_instances`; the error says
    /// which limit it passes.
    pub fn add(&mut self, max_instances: usize, filter: &str) -> Result<(), String> {
        self.entries += 1;
        self.max_instances += max_instances;
        if self.entries > BUILD_RESERVE {
            return Err(format!(
                "more than {BUILD_RESERVE} chain entries in the config (each keeps instances of its own)"
            ));
        }
        if self.max_instances > SERVING_INSTANCES {
            return Err(format!(
                "the max_instances of the chain entries up to this one add up to {}, more than \
                 the {SERVING_INSTANCES} filter instances the proxy serves with: lower \
                 filters.{filter}.max_instances (or another filter's)",
                self.max_instances
            ));
        }
        Ok(())
    }
}
