//! The process-wide filter runtime: one wasmtime `Engine` (pooling
//! allocator, epoch interruption), the module cache, and the state each
//! filter shares across its instances.

use std::collections::HashMap;
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::Instant;

use wasmtime::{
    Config, Engine, InstanceAllocationStrategy, PoolingAllocationConfig, ProfilingStrategy,
};

use super::callout::Callouts;
use super::deadline::DeadlineWatchdog;
use super::disk_cache::DiskCache;
use super::host::FilterIdentity;
use super::module::{CompiledModule, ModuleCache, ModuleError};
use super::shared::SharedState;
use crate::config::ModuleCacheConfig;
use crate::telemetry::Registry;

/// The largest memory cap a filter may be given, in MiB.
pub const MAX_MEMORY_MIB: u64 = 256;

/// One per process: compiles, caches and instantiates filters.
pub struct FilterRuntime {
    engine: Engine,
    watchdog: Arc<DeadlineWatchdog>,
    modules: ModuleCache,
    shared: Mutex<HashMap<String, Arc<SharedState>>>,
    metrics: Arc<Registry>,
    started: Instant,
}

impl FilterRuntime {
    /// Creates the engine and starts its deadline watchdog.
    pub fn new(metrics: Arc<Registry>) -> wasmtime::Result<Arc<Self>> {
        let mut pooling = PoolingAllocationConfig::default();
        pooling
            .total_component_instances(1000)
            .total_core_instances(4000)
            .total_memories(1000)
            .total_tables(4000)
            .max_memory_size((MAX_MEMORY_MIB << 20) as usize);
        let mut config = Config::new();
        config
            .epoch_interruption(true)
            .concurrency_support(false)
            .allocation_strategy(InstanceAllocationStrategy::Pooling(pooling));
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
            metrics,
            started: Instant::now(),
        }))
    }

    /// The engine.
    pub fn engine(&self) -> &Engine {
        &self.engine
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

    /// The identity of filter `name`: its shared state lives as long as the
    /// process, across reloads.
    pub fn identity(&self, name: &str, callouts: Arc<Callouts>) -> Arc<FilterIdentity> {
        let shared = self
            .shared
            .lock()
            .unwrap()
            .entry(name.to_string())
            .or_default()
            .clone();
        Arc::new(FilterIdentity {
            name: name.into(),
            shared,
            metrics: self.metrics.clone(),
            epoch: self.started,
            callouts,
        })
    }
}
