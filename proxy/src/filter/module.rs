//! Loading a filter module — a component of our contract, or a proxy-wasm
//! core module — checking it and compiling it once per content hash (or
//! loading its build from the disk cache).

use std::collections::HashMap;
use std::path::Path;
use std::sync::{Arc, Mutex, Weak};
use std::time::Instant;

use wasmtime::Engine;
use wasmtime::component::{Component, Linker};

use super::bindings::{HttpFilter, HttpFilterPre};
use super::disk_cache::DiskCache;
use super::host::HostState;
use super::proxy_wasm::{self, LinkError, LinkedModule};
use crate::telemetry::Registry;

/// The contract version this proxy serves (`package weft:filter@…` in `wit/`).
pub const CONTRACT_VERSION: &str = "0.4.0";
/// The proxy-wasm ABI this proxy serves, as it advertises it to the control
/// plane: it runs modules of ABI 0.2.1 and 0.2.0 alike.
pub const PROXY_WASM_ABI: &str = "proxy-wasm@0.2.1";
const CONTRACT_NAMESPACE: &str = "weft:filter/";
const FILTER_EXPORT: &str = "weft:filter/filter";

/// Why a module cannot be used as a filter.
#[derive(Debug, thiserror::Error)]
pub enum ModuleError {
    /// The file could not be read.
    #[error("cannot read: {0}")]
    Read(std::io::Error),
    /// The bytes are not WebAssembly at all.
    #[error("not a WebAssembly file (no \\0asm header)")]
    NotWasm,
    /// A core module, neither a component nor a proxy-wasm filter.
    #[error("{}", LinkError::NoAbi)]
    CoreModule,
    /// The component does not export the filter interface.
    #[error(
        "not a component of the weft:filter world: it exports {exports:?}, not {FILTER_EXPORT}@{CONTRACT_VERSION}"
    )]
    NotAFilter {
        /// What it exports instead.
        exports: Vec<String>,
    },
    /// Built against another version of the contract.
    #[error(
        "built for contract weft:filter@{found}, but this proxy serves weft:filter@{CONTRACT_VERSION}"
    )]
    WrongVersion {
        /// The version the component was built for.
        found: String,
    },
    /// Compilation or linking failed.
    #[error("invalid component: {0}")]
    Invalid(String),
    /// A core module that is not a proxy-wasm filter this proxy can run.
    #[error("{0}")]
    ProxyWasm(#[from] LinkError),
    /// A proxy-wasm module that does not compile.
    #[error("invalid proxy-wasm module: {0}")]
    InvalidCore(String),
}

/// A compiled filter, ready to instantiate.
pub struct CompiledModule {
    /// Hex sha256 of the module bytes.
    pub sha256: String,
    /// Which kind of filter it is.
    pub kind: ModuleKind,
}

/// The two kinds of filter module.
pub enum ModuleKind {
    /// A component of the `weft:filter` world, pre-linked: instantiation
    /// skips import resolution.
    Component(HttpFilterPre<HostState>),
    /// A core module of the proxy-wasm ABI.
    ProxyWasm(Arc<LinkedModule>),
}

impl CompiledModule {
    /// The compiled component of a Weft filter.
    pub fn component(&self) -> Option<&HttpFilterPre<HostState>> {
        match &self.kind {
            ModuleKind::Component(pre) => Some(pre),
            ModuleKind::ProxyWasm(_) => None,
        }
    }

    /// Writes its build to `disk`.
    fn store(&self, disk: &DiskCache) {
        match &self.kind {
            ModuleKind::Component(pre) => disk.store(&self.sha256, pre.instance_pre().component()),
            ModuleKind::ProxyWasm(linked) => disk.store_core(&self.sha256, linked.pre.module()),
        }
    }
}

/// A build, loaded from the disk cache or compiled.
enum Artifact {
    Component(Component),
    Core(wasmtime::Module),
}

/// Compiled modules by content hash: the same bytes are compiled once, across
/// routes and config reloads, and across restarts when a [`DiskCache`] is
/// given.
pub struct ModuleCache {
    modules: Mutex<HashMap<String, Arc<CompiledModule>>>,
    writes: Mutex<Writes>,
    metrics: Arc<Registry>,
}

/// Whether compiled modules may be written to disk yet, and those compiled
/// before they could.
#[derive(Default)]
struct Writes {
    allowed: bool,
    pending: Vec<(Arc<DiskCache>, Weak<CompiledModule>)>,
}

/// Counters of how modules not in memory were obtained.
const COMPILED_TOTAL: &str = "weft_filter_modules_compiled_total";
const CACHE_HITS_TOTAL: &str = "weft_filter_module_cache_hits_total";

impl ModuleCache {
    /// An empty cache that counts compilations and disk hits in `metrics`.
    /// Nothing is written to disk until [`ModuleCache::allow_writes`].
    pub fn new(metrics: Arc<Registry>) -> Self {
        for name in [COMPILED_TOTAL, CACHE_HITS_TOTAL] {
            let _ = metrics.counter_add(name, vec![], 0);
        }
        Self {
            modules: Mutex::default(),
            writes: Mutex::default(),
            metrics,
        }
    }

    /// Reads and checks the filter module at `path` (a component or a
    /// proxy-wasm module), and returns the build of
    /// its bytes in memory, else the one in `disk`, else a new one (written
    /// to `disk` once writes are allowed).
    pub fn load(
        &self,
        engine: &Engine,
        path: &Path,
        disk: Option<&Arc<DiskCache>>,
    ) -> Result<Arc<CompiledModule>, ModuleError> {
        let bytes = std::fs::read(path).map_err(ModuleError::Read)?;
        let sha256 = weft_api::sha256_hex(&bytes);
        if let Some(found) = self.modules.lock().unwrap().get(&sha256) {
            return Ok(found.clone());
        }
        let header = check_header(&bytes)?;
        let load = |disk: &DiskCache| match header {
            Header::Component => disk.load(engine, &sha256).map(Artifact::Component),
            Header::Core => disk.load_core(engine, &sha256).map(Artifact::Core),
        };
        let mut cached = disk.and_then(|d| Some((load(d)?, d.path(&sha256))));
        // Not in the disk cache: when this process writes there, compile
        // under the machine-wide lock of that module, so that proxies
        // sharing the cache compile it once; one that waited loads what the
        // other wrote.
        let mut _compile_lock = None;
        if cached.is_none()
            && let Some(disk) = disk.filter(|_| self.writes.lock().unwrap().allowed)
        {
            _compile_lock = disk.compile_lock(&sha256);
            cached = load(disk).map(|c| (c, disk.path(&sha256)));
            if cached.is_some() {
                _compile_lock = None; // compiled by another: let the next waiter load too
            }
        }
        let (artifact, compiled) = match cached {
            Some((artifact, file)) => {
                let _ = self.metrics.counter_add(CACHE_HITS_TOTAL, vec![], 1);
                tracing::info!(
                    module = %path.display(),
                    path = %file.display(),
                    "loaded compiled filter from cache"
                );
                (artifact, false)
            }
            None => {
                let started = Instant::now();
                let artifact = match header {
                    Header::Component => Component::new(engine, &bytes)
                        .map(Artifact::Component)
                        .map_err(|e| ModuleError::Invalid(format!("{e:#}")))?,
                    Header::Core => wasmtime::Module::new(engine, &bytes)
                        .map(Artifact::Core)
                        .map_err(|e| ModuleError::InvalidCore(format!("{e:#}")))?,
                };
                let _ = self.metrics.counter_add(COMPILED_TOTAL, vec![], 1);
                tracing::info!(
                    module = %path.display(),
                    elapsed_ms = started.elapsed().as_millis() as u64,
                    "compiled filter"
                );
                (artifact, true)
            }
        };
        // Built or loaded, the module goes through the same checks.
        let module = Arc::new(match artifact {
            Artifact::Component(component) => link(engine, component, sha256.clone())?,
            Artifact::Core(module) => link_core(engine, module, sha256.clone())?,
        });
        if compiled && let Some(disk) = disk {
            self.persist(disk, &module);
        }
        self.modules.lock().unwrap().insert(sha256, module.clone());
        Ok(module)
    }

    /// From now on, compiled modules are written to their disk cache; those
    /// compiled before (and still in use) are written now. `weft validate`
    /// never calls this, so it writes nothing.
    pub fn allow_writes(&self) {
        let pending = {
            let mut writes = self.writes.lock().unwrap();
            writes.allowed = true;
            std::mem::take(&mut writes.pending)
        };
        for (disk, module) in pending {
            if let Some(module) = module.upgrade() {
                module.store(&disk);
            }
        }
    }

    fn persist(&self, disk: &Arc<DiskCache>, module: &Arc<CompiledModule>) {
        {
            let mut writes = self.writes.lock().unwrap();
            if !writes.allowed {
                writes.pending.push((disk.clone(), Arc::downgrade(module)));
                return;
            }
        }
        module.store(disk);
    }

    /// Forgets modules no longer referenced outside the cache.
    pub fn evict_unused(&self) {
        self.modules
            .lock()
            .unwrap()
            .retain(|_, m| Arc::strong_count(m) > 1);
    }
}

/// Checks that `component` serves the contract and pre-links it.
fn link(
    engine: &Engine,
    component: Component,
    sha256: String,
) -> Result<CompiledModule, ModuleError> {
    check_contract(engine, &component)?;
    let mut linker = Linker::<HostState>::new(engine);
    HttpFilter::add_to_linker::<_, wasmtime::component::HasSelf<HostState>>(&mut linker, |s| s)
        .map_err(|e| ModuleError::Invalid(format!("{e:#}")))?;
    // WASI and anything else not in the contract: present, but trapping if
    // called. A std Rust guest imports WASI even when it never uses it.
    linker
        .define_unknown_imports_as_traps(&component)
        .map_err(|e| ModuleError::Invalid(format!("{e:#}")))?;
    let pre = linker
        .instantiate_pre(&component)
        .and_then(HttpFilterPre::new)
        .map_err(|e| ModuleError::Invalid(format!("{e:#}")))?;
    Ok(CompiledModule {
        sha256,
        kind: ModuleKind::Component(pre),
    })
}

/// Checks that a core module is a proxy-wasm filter and links it.
fn link_core(
    engine: &Engine,
    module: wasmtime::Module,
    sha256: String,
) -> Result<CompiledModule, ModuleError> {
    if proxy_wasm::declares_abi(&module).is_none() {
        return Err(ModuleError::CoreModule);
    }
    let linked = proxy_wasm::link(engine, module, sha256.clone())?;
    Ok(CompiledModule {
        sha256,
        kind: ModuleKind::ProxyWasm(Arc::new(linked)),
    })
}

/// What the preamble says a file is.
#[derive(Debug, PartialEq, Eq)]
enum Header {
    Component,
    Core,
}

/// Tells a core module or a stray file from a component by the preamble.
fn check_header(bytes: &[u8]) -> Result<Header, ModuleError> {
    if bytes.len() < 8 || &bytes[..4] != b"\0asm" {
        return Err(ModuleError::NotWasm);
    }
    // Core modules have version 1 with layer 0; components have layer 1.
    if bytes[4..8] == [1, 0, 0, 0] {
        return Ok(Header::Core);
    }
    Ok(Header::Component)
}

/// Checks that the component exports the filter interface of a version this
/// proxy serves, and imports no contract interface of another version.
fn check_contract(engine: &Engine, component: &Component) -> Result<(), ModuleError> {
    let ty = component.component_type();
    let exports: Vec<String> = ty
        .exports(engine)
        .map(|(name, _)| name.to_string())
        .collect();
    let Some(export) = exports.iter().find(|n| n.starts_with(FILTER_EXPORT)) else {
        return Err(ModuleError::NotAFilter { exports });
    };
    check_version(export)?;
    for (name, _) in ty.imports(engine) {
        if name.starts_with(CONTRACT_NAMESPACE) {
            check_version(name)?;
        }
    }
    Ok(())
}

/// `weft:filter/x@0.4.2` is served by 0.4.0 (same major.minor pre-1.0).
fn check_version(name: &str) -> Result<(), ModuleError> {
    let found = name
        .split_once('@')
        .map(|(_, v)| v)
        .unwrap_or("(unversioned)");
    fn major_minor(v: &str) -> (Option<&str>, Option<&str>) {
        let mut parts = v.split('.');
        (parts.next(), parts.next())
    }
    if major_minor(found) == major_minor(CONTRACT_VERSION) {
        Ok(())
    } else {
        Err(ModuleError::WrongVersion {
            found: found.to_string(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn header_tells_core_modules_and_junk_apart() {
        assert!(matches!(check_header(b"hello"), Err(ModuleError::NotWasm)));
        assert_eq!(check_header(b"\0asm\x01\0\0\0").unwrap(), Header::Core);
        assert_eq!(
            check_header(b"\0asm\x0d\0\x01\0").unwrap(),
            Header::Component
        );
    }

    #[test]
    fn versions_compatible_within_minor() {
        assert!(check_version("weft:filter/filter@0.4.0").is_ok());
        assert!(check_version("weft:filter/filter@0.4.7").is_ok());
        let err = check_version("weft:filter/filter@0.3.0").unwrap_err();
        assert_eq!(
            err.to_string(),
            "built for contract weft:filter@0.3.0, but this proxy serves weft:filter@0.4.0"
        );
    }
}
