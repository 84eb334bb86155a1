//! Checks a pushed module before it is stored: WebAssembly, a component, of
//! the `weft:filter` world, built for a contract version the mesh serves.
//! Light: wasmparser reads the component's exports; nothing is compiled.

use wasmparser::{Encoding, Parser, Payload, Validator, WasmFeatures};

/// The filter contract versions a mesh serves by default: the version of
/// `wit/filter.wit` (`package weft:filter@0.4.0`). The CLI passes the
/// proxy's own `CONTRACT_VERSION` instead.
pub const DEFAULT_CONTRACT_VERSIONS: &[&str] = &["0.4.0"];

const FILTER_EXPORT: &str = "weft:filter/filter";
const CONTRACT_NAMESPACE: &str = "weft:filter/";

/// Why pushed bytes are not a module the mesh can run. The messages are the
/// proxy's own (`ModuleError`), so a push and a `weft run` say the same.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ModuleCheckError {
    /// The bytes are not WebAssembly at all.
    #[error("not a WebAssembly file (no \\0asm header)")]
    NotWasm,
    /// A core module, not a component.
    #[error(
        "a core WebAssembly module, not a component: build it with `cargo build --target wasm32-wasip2`"
    )]
    CoreModule,
    /// Malformed or invalid WebAssembly.
    #[error("invalid component: {0}")]
    Invalid(String),
    /// The component does not export the filter interface.
    #[error(
        "not a component of the weft:filter world: it exports {exports:?}, not {FILTER_EXPORT}"
    )]
    NotAFilter {
        /// What it exports instead.
        exports: Vec<String>,
    },
    /// Built against a contract version the mesh does not serve.
    #[error("built for contract weft:filter@{found}, but the mesh serves {}", served_list(.served))]
    UnservedContract {
        /// The version the component was built for.
        found: String,
        /// The versions the mesh serves.
        served: Vec<String>,
    },
}

fn served_list(served: &[String]) -> String {
    let names: Vec<String> = served.iter().map(|v| format!("weft:filter@{v}")).collect();
    names.join(", ")
}

/// Checks `bytes` and returns the contract version the component was built
/// for (e.g. `0.4.0`).
pub fn check_module(bytes: &[u8], served: &[String]) -> Result<String, ModuleCheckError> {
    if bytes.len() < 8 || &bytes[..4] != b"\0asm" {
        return Err(ModuleCheckError::NotWasm);
    }
    if !Parser::is_component(bytes) {
        return Err(ModuleCheckError::CoreModule);
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
/// major.minor (pre-1.0), as the proxy decides.
pub fn contract_served(version: &str, served: &[String]) -> bool {
    served
        .iter()
        .any(|s| major_minor(s) == major_minor(version))
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
