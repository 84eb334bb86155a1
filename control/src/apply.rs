//! Checking a configuration before it is applied to a group, and resolving
//! the modules it names.
//!
//! An applied configuration has the schema of `weft run --config`, except
//! that `filters.<name>` names a registry module with `module:` (`api-key`
//! for the newest version, `api-key@3`, or a sha256) where a local file
//! has `path:`, listeners carry no `listen:` address (each proxy binds
//! its own), and there is no `admin:` or `module_cache:` (each proxy's
//! own, from its local config; the proxy's `control_client::merge_config`
//! makes the same checks). The control plane does not link the proxy: it checks what it
//! can here (the file parses, every module exists and serves a contract the
//! mesh serves) and then asks a [`ConfigValidator`], through which the
//! `weft` binary plugs in the proxy's own `weft validate` checks so that
//! `weft apply` prints the same messages.

use serde_json::Value;

use crate::module_check::{contract_label, contract_served};
use crate::store::{ConfigFormat, ModuleSelector, ResolvedModule, Store};

/// What a [`ConfigValidator`] is asked to check.
pub struct ApplyCheck<'a> {
    /// The group the configuration is applied to.
    pub group: &'a str,
    /// The configuration text.
    pub config: &'a str,
    /// How it is written.
    pub format: ConfigFormat,
    /// The modules it names, resolved (their bytes: `store.open_module`).
    pub modules: &'a [ResolvedModule],
    /// The registry, to read module bytes.
    pub store: &'a dyn Store,
}

/// Further checks of a configuration before it is applied. Returns every
/// problem found, one line each, as `path: message` (the format of
/// `weft validate`); none means it may be applied.
pub trait ConfigValidator: Send + Sync + 'static {
    /// Checks `check.config`.
    fn validate(&self, check: &ApplyCheck<'_>) -> Vec<String>;
}

impl<F> ConfigValidator for F
where
    F: Fn(&ApplyCheck<'_>) -> Vec<String> + Send + Sync + 'static,
{
    fn validate(&self, check: &ApplyCheck<'_>) -> Vec<String> {
        self(check)
    }
}

/// The validator that adds nothing to the control plane's own checks.
pub struct NoFurtherChecks;

impl ConfigValidator for NoFurtherChecks {
    fn validate(&self, _: &ApplyCheck<'_>) -> Vec<String> {
        Vec::new()
    }
}

/// Parses `config`, checks what the control plane can check, and resolves
/// each `filters.<name>.module` against the registry. `served` are the
/// contract versions the mesh serves. The errors are `path: message` lines.
pub fn check_and_resolve(
    config: &str,
    format: ConfigFormat,
    store: &dyn Store,
    served: &[String],
) -> Result<Vec<ResolvedModule>, Vec<String>> {
    let value: Value = match format {
        ConfigFormat::Json => serde_json::from_str(config).map_err(|e| vec![e.to_string()])?,
        ConfigFormat::Yaml => serde_yaml::from_str(config).map_err(|e| vec![e.to_string()])?,
    };
    let Value::Object(top) = &value else {
        return Err(vec![
            "the configuration must be a mapping (listeners, clusters, filters)".into(),
        ]);
    };
    let mut errors = Vec::new();
    for key in ["admin", "module_cache"] {
        if top.contains_key(key) {
            errors.push(format!(
                "{key}: belongs to each proxy's local config, not to a group's"
            ));
        }
    }
    if let Some(Value::Array(listeners)) = top.get("listeners") {
        for (i, listener) in listeners.iter().enumerate() {
            if listener.get("listen").is_some() {
                errors.push(format!(
                    "listeners[{i}].listen: a group's listener is named without an address; each proxy binds its own in its local config"
                ));
            }
        }
    }
    let mut resolved: Vec<ResolvedModule> = Vec::new();
    match top.get("filters") {
        None => {}
        Some(Value::Object(filters)) => {
            for (name, filter) in filters {
                match resolve_filter(name, filter, store, served) {
                    Ok(module) => resolved.push(module),
                    Err(e) => errors.push(e),
                }
            }
        }
        Some(_) => errors.push("filters: must be a mapping of filter names".into()),
    }
    if !errors.is_empty() {
        return Err(errors);
    }
    resolved.sort_by(|a, b| a.reference.cmp(&b.reference));
    resolved.dedup_by(|a, b| a.reference == b.reference);
    Ok(resolved)
}

/// Resolves `filters.<name>.module` to a registry module the mesh serves.
fn resolve_filter(
    name: &str,
    filter: &Value,
    store: &dyn Store,
    served: &[String],
) -> Result<ResolvedModule, String> {
    let path = format!("filters.{name}");
    if filter.get("path").is_some() {
        return Err(format!(
            "{path}.path: a group's filter names a pushed module with `module:` (e.g. `module: {name}`), not a file"
        ));
    }
    let reference = match filter.get("module") {
        Some(Value::String(r)) => r.as_str(),
        Some(_) => return Err(format!("{path}.module: must be a string")),
        None => {
            return Err(format!(
                "{path}.module: missing: name a pushed module (`name`, `name@N` or a sha256)"
            ));
        }
    };
    let selector = ModuleSelector::parse(reference);
    let module = store
        .module(&selector)
        .map_err(|e| format!("{path}.module: {e}"))?
        .ok_or_else(|| format!("{path}.module: no module {reference:?} in the registry"))?;
    if !contract_served(&module.contract_version, served) {
        return Err(format!(
            "{path}.module: {}@{} is built for contract {}, which the mesh does not serve",
            module.name,
            module.version,
            contract_label(&module.contract_version)
        ));
    }
    Ok(ResolvedModule {
        reference: reference.to_string(),
        module,
    })
}
