//! Checks a pushed module before it is stored: WebAssembly, and either a
//! component of the `weft:filter` world or a proxy-wasm filter (a core
//! module exporting `proxy_abi_version_0_2_1` or `_0_2_0`), built for a
//! contract version the mesh serves. Light: wasmparser validates the bytes
//! and reads their exports; nothing is compiled.
//!
//! A contract version is recorded as a string: a bare semver (`0.4.0`) is
//! a version of `weft:filter`, `proxy-wasm@0.2.1` is the proxy-wasm ABI.
//! [`contract_label`] renders either for humans.

use std::fmt;

use wasmparser::{Encoding, ExternalKind, Parser, Payload, Validator, WasmFeatures};

/// The proxy-wasm ABI a proxy advertises when it runs proxy-wasm filters
/// (it runs modules of ABI 0.2.0 and 0.2.1 alike).
pub const PROXY_WASM_ABI: &str = "proxy-wasm@0.2.1";

/// The filter contract versions a mesh serves by default: the version of
/// `wit/filter.wit` (`package weft:filter@0.4.0`) and the proxy-wasm ABI.
/// The CLI passes the proxy's own `CONTRACT_VERSION` and `PROXY_WASM_ABI`
/// instead.
pub const DEFAULT_CONTRACT_VERSIONS: &[&str] = &["0.4.0", PROXY_WASM_ABI];

const FILTER_EXPORT: &str = "weft:filter/filter";
const CONTRACT_NAMESPACE: &str = "weft:filter/";
const WEFT_CONTRACT: &str = "weft:filter";
/// The proxy-wasm ABI exports, in order of preference, and the contract
/// version each is recorded as.
const PROXY_WASM_EXPORTS: [(&str, &str); 2] = [
    ("proxy_abi_version_0_2_1", PROXY_WASM_ABI),
    ("proxy_abi_version_0_2_0", "proxy-wasm@0.2.0"),
];

/// Why pushed bytes are not a module the mesh can run. The messages are the
/// proxy's own (`ModuleError`), so a push and a `weft run` say the same.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ModuleCheckError {
    /// The bytes are not WebAssembly at all.
    #[error("not a WebAssembly file (no \\0asm header)")]
    NotWasm,
    /// A core module, neither a component nor a proxy-wasm filter.
    #[error(
        "a core WebAssembly module, not a component, and not a proxy-wasm filter either (it \
         exports neither proxy_abi_version_0_2_1 nor proxy_abi_version_0_2_0): build a Weft \
         filter with `cargo build --target wasm32-wasip2`"
    )]
    CoreModule,
    /// Malformed or invalid WebAssembly.
    #[error("invalid component: {0}")]
    Invalid(String),
    /// A malformed or invalid core module.
    #[error("invalid core WebAssembly module: {0}")]
    InvalidCore(String),
    /// The component does not export the filter interface.
    #[error(
        "not a component of the weft:filter world: it exports {exports:?}, not {FILTER_EXPORT}"
    )]
    NotAFilter {
        /// What it exports instead.
        exports: Vec<String>,
    },
    /// Built against a contract version the mesh does not serve.
    #[error("built for contract {}, but the mesh serves {}", contract_label(.found), served_list(.served))]
    UnservedContract {
        /// The version the component was built for.
        found: String,
        /// The versions the mesh serves.
        served: Vec<String>,
    },
}

/// A contract version as people read it: `weft:filter@0.4.0` for a bare
/// version of Weft's contract, `proxy-wasm@0.2.1` as it is.
pub fn contract_label(version: &str) -> ContractLabel<'_> {
    ContractLabel(version)
}

/// A contract version rendered for humans: see [`contract_label`].
#[derive(Debug, Clone, Copy)]
pub struct ContractLabel<'a>(&'a str);

impl fmt::Display for ContractLabel<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.0.contains('@') {
            f.write_str(self.0)
        } else {
            write!(f, "{WEFT_CONTRACT}@{}", self.0)
        }
    }
}

/// `versions` rendered with [`contract_label`], comma-separated.
pub fn contract_labels(versions: &[String]) -> String {
    let names: Vec<String> = versions
        .iter()
        .map(|v| contract_label(v).to_string())
        .collect();
    names.join(", ")
}

fn served_list(served: &[String]) -> String {
    contract_labels(served)
}

/// Checks `bytes` and returns the contract version the module was built
/// for: `0.4.0` for a component of `weft:filter@0.4.0`, `proxy-wasm@0.2.1`
/// (or `@0.2.0`) for a proxy-wasm filter.
pub fn check_module(bytes: &[u8], served: &[String]) -> Result<String, ModuleCheckError> {
    if bytes.len() < 8 || &bytes[..4] != b"\0asm" {
        return Err(ModuleCheckError::NotWasm);
    }
    if !Parser::is_component(bytes) {
        let found = proxy_wasm_abi(bytes)?;
        check_served(found, served)?;
        return Ok(found.to_string());
    }
    Validator::new_with_features(WasmFeatures::all())
        .validate_all(bytes)
        .map_err(|e| ModuleCheckError::Invalid(e.to_string()))?;
    let (exports, contract_imports) = top_level_names(bytes)?;
    let Some(export) = exports.iter().find(|n| n.starts_with(FILTER_EXPORT)) else {
        return Err(ModuleCheckError::NotAFilter { exports });
    };
    let found = version_of(export);
    check_served(found, served)?;
    for import in &contract_imports {
        check_served(version_of(import), served)?;
    }
    Ok(found.to_string())
}

/// Whether contract `version` is served by one of `served`: the same
/// contract (`weft:filter`, or `proxy-wasm`) and the same major.minor
/// (pre-1.0), as the proxy decides. A proxy that serves `proxy-wasm@0.2.1`
/// runs `proxy-wasm@0.2.0` modules too.
pub fn contract_served(version: &str, served: &[String]) -> bool {
    let (contract, version) = split_contract(version);
    served.iter().any(|s| {
        let (served_contract, served_version) = split_contract(s);
        served_contract == contract && major_minor(served_version) == major_minor(version)
    })
}

/// The contract and the version of a recorded contract version: `0.4.0`
/// and `weft:filter@0.4.0` are `("weft:filter", "0.4.0")`,
/// `proxy-wasm@0.2.1` is `("proxy-wasm", "0.2.1")`.
fn split_contract(version: &str) -> (&str, &str) {
    match version.split_once('@') {
        Some((contract, v)) => (contract, v),
        None => (WEFT_CONTRACT, version),
    }
}

/// The contract version of a core module: the proxy-wasm ABI it declares
/// (its export section holds a `proxy_abi_version_*` function), once the
/// module is valid WebAssembly.
fn proxy_wasm_abi(bytes: &[u8]) -> Result<&'static str, ModuleCheckError> {
    Validator::new_with_features(WasmFeatures::all())
        .validate_all(bytes)
        .map_err(|e| ModuleCheckError::InvalidCore(e.to_string()))?;
    let mut exported = Vec::new();
    for payload in Parser::new(0).parse_all(bytes) {
        let payload = payload.map_err(|e| ModuleCheckError::InvalidCore(e.to_string()))?;
        if let Payload::ExportSection(reader) = payload {
            for export in reader {
                let export = export.map_err(|e| ModuleCheckError::InvalidCore(e.to_string()))?;
                if export.kind == ExternalKind::Func {
                    exported.push(export.name.to_string());
                }
            }
        }
    }
    PROXY_WASM_EXPORTS
        .iter()
        .find(|(name, _)| exported.iter().any(|e| e == name))
        .map(|(_, contract)| *contract)
        .ok_or(ModuleCheckError::CoreModule)
}

fn check_served(found: &str, served: &[String]) -> Result<(), ModuleCheckError> {
    if contract_served(found, served) {
        Ok(())
    } else {
        Err(ModuleCheckError::UnservedContract {
            found: found.to_string(),
            served: served.to_vec(),
        })
    }
}

fn version_of(name: &str) -> &str {
    name.split_once('@')
        .map(|(_, v)| v)
        .unwrap_or("(unversioned)")
}

fn major_minor(v: &str) -> (Option<&str>, Option<&str>) {
    let mut parts = v.split('.');
    (parts.next(), parts.next())
}

/// The outer component's export names and its imports of the contract's
/// namespace (nested components and modules are skipped).
fn top_level_names(bytes: &[u8]) -> Result<(Vec<String>, Vec<String>), ModuleCheckError> {
    let mut exports = Vec::new();
    let mut imports = Vec::new();
    let mut depth = 0usize;
    for payload in Parser::new(0).parse_all(bytes) {
        let payload = payload.map_err(|e| ModuleCheckError::Invalid(e.to_string()))?;
        match payload {
            Payload::Version { encoding, .. } => {
                depth += 1;
                if depth == 1 && encoding != Encoding::Component {
                    return Err(ModuleCheckError::CoreModule);
                }
            }
            Payload::End(_) => depth = depth.saturating_sub(1),
            Payload::ComponentExportSection(reader) if depth == 1 => {
                for export in reader {
                    let export = export.map_err(|e| ModuleCheckError::Invalid(e.to_string()))?;
                    exports.push(export.name.full_name().into_owned());
                }
            }
            Payload::ComponentImportSection(reader) if depth == 1 => {
                for import in reader {
                    let import = import.map_err(|e| ModuleCheckError::Invalid(e.to_string()))?;
                    if import.name.name.starts_with(CONTRACT_NAMESPACE) {
                        imports.push(import.name.full_name().into_owned());
                    }
                }
            }
            _ => {}
        }
    }
    Ok((exports, imports))
}
