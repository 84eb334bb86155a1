//! proxy-wasm filters: core modules written against the proxy-wasm ABI
//! (v0.2.1, and v0.2.0), the ABI of Envoy, Istio, Kong and APISIX filters,
//! run unmodified in the same chains as Weft's own filters.
//!
//! - [`link`]: tells such a module apart (it exports
//!   `proxy_abi_version_0_2_1` or `_0_2_0`) and links it to the host
//!   functions: [`imports`] (`env.proxy_*`) and [`wasi`] (the WASI
//!   preview1 subset the spec allows).
//! - [`plugin`]: a chain entry's VMs and one request's stream context;
//!   [`vm`]: one VM and its callbacks; [`ticks`]: `proxy_on_tick`.
//! - [`headers`] and [`properties`]: the request as the ABI shows it.
//!
//! docs/proxy-wasm.md says what is provided and how it maps to Weft.

pub mod abi;
pub mod headers;
pub mod imports;
pub mod plugin;
pub mod properties;
pub mod state;
pub mod ticks;
pub mod vm;
pub mod wasi;

use wasmtime::{Engine, ExternType, InstancePre, Linker, Module};

pub use plugin::{Plugin, Stream};
pub use state::{PluginShared, VmState};

/// The ABI versions served, as the export that declares them.
const ABI_EXPORTS: [&str; 2] = ["proxy_abi_version_0_2_1", "proxy_abi_version_0_2_0"];

/// A compiled proxy-wasm module, linked to the host functions.
pub struct LinkedModule {
    /// Hex sha256 of the module bytes.
    pub sha256: String,
    /// The ABI version it declares (`0.2.1` or `0.2.0`).
    pub abi: &'static str,
    /// Pre-linked: instantiation skips import resolution.
    pub pre: InstancePre<VmState>,
}

/// Why a core module cannot run as a proxy-wasm filter.
#[derive(Debug, thiserror::Error)]
pub enum LinkError {
    /// Not a proxy-wasm module at all.
    #[error(
        "a core WebAssembly module, not a component, and not a proxy-wasm filter either (it \
         exports neither proxy_abi_version_0_2_1 nor proxy_abi_version_0_2_0): build a Weft \
         filter with `cargo build --target wasm32-wasip2`"
    )]
    NoAbi,
    /// It imports what this host does not provide.
    #[error("imports {0}, which this proxy does not provide (see docs/proxy-wasm.md)")]
    MissingImport(String),
    /// Linking failed otherwise (a signature that does not match, …).
    #[error("cannot link: {0}")]
    Link(String),
}

/// Whether `module` declares the proxy-wasm ABI.
pub fn declares_abi(module: &Module) -> Option<&'static str> {
    ABI_EXPORTS
        .iter()
        .find(|name| module.get_export(name).is_some())
        .map(|name| {
            if name.ends_with("0_2_1") {
                "0.2.1"
            } else {
                "0.2.0"
            }
        })
}

/// Checks that `module` is a proxy-wasm filter this host can run and links
/// it.
pub fn link(engine: &Engine, module: Module, sha256: String) -> Result<LinkedModule, LinkError> {
    let abi = declares_abi(&module).ok_or(LinkError::NoAbi)?;
    let provided = imports::provided();
    for import in module.imports() {
        let known = match import.module() {
            "env" => provided.contains(&import.name()),
            wasi::MODULE => true,
            _ => false,
        };
        if !known || !matches!(import.ty(), ExternType::Func(_)) {
            return Err(LinkError::MissingImport(format!(
                "{}.{}",
                import.module(),
                import.name()
            )));
        }
    }
    let mut linker = Linker::<VmState>::new(engine);
    imports::add_to_linker(&mut linker).map_err(|e| LinkError::Link(format!("{e:#}")))?;
    wasi::add_to_linker(&mut linker, &module).map_err(|e| LinkError::Link(format!("{e:#}")))?;
    let pre = linker
        .instantiate_pre(&module)
        .map_err(|e| LinkError::Link(format!("{e:#}")))?;
    Ok(LinkedModule { sha256, abi, pre })
}
