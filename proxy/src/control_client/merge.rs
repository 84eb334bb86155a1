//! A group's configuration merged with the proxy's local one into the
//! `Config` the proxy builds its snapshot from.
//!
//! The group's configuration (as `weft apply` stores it) has the schema of
//! a local file with three differences, all checked by the control plane
//! when it is applied:
//! - each `filters.<name>` names a pushed module with `module:` instead of
//!   `path:`; here it becomes the `path:` of that module in the cache;
//! - listeners have a `name` and routes but no `listen:` or `tls:`; here
//!   the listeners are the local ones, in local order, each with its
//!   `listen:`, its `tls:` and the routes of the group's listener of its name (a group listener
//!   missing locally is an error naming it), so a new snapshot never
//!   changes what the proxy bound at start;
//! - `admin:` and `module_cache:` belong to each proxy: they come from the
//!   local configuration only.
//!
//! The local configuration gives listeners as `name`, `listen` and `tls`
//! only:
//! routes, filters or clusters in it would be silently replaced, so they
//! are errors. A local listener the group does not name has no routes.

use serde_json::{Map, Value};

use super::{ConfigFormat, GroupSnapshot};
use crate::config::{Config, ConfigError, ConfigErrors};

/// The configuration to serve: `group`'s configuration, with its modules'
/// paths in the cache, bound to the addresses of `local`. Errors name the
/// path of the field, prefixed by `group config v<N>` or `local config`.
pub fn merge_config(group: &GroupSnapshot, local: &Config) -> Result<Config, ConfigErrors> {
    merge_at(group, local, &format!("group config v{}: ", group.version))
}

/// A group's configuration as a `Config` of its own, for checking it where
/// no proxy's local configuration is at hand (the control plane, before
/// applying it): each of its listeners gets a placeholder address and each
/// `module:` the `path` of that module's file. Errors name the field's path
/// as `weft validate` does.
pub fn group_config_alone(group: &GroupSnapshot) -> Result<Config, ConfigErrors> {
    let parsed: Option<Value> = match group.format {
        ConfigFormat::Yaml => serde_yaml::from_str(&group.config).ok(),
        ConfigFormat::Json => serde_json::from_str(&group.config).ok(),
    };
    let names: Vec<Value> = parsed
        .as_ref()
        .and_then(|v| v.get("listeners"))
        .and_then(Value::as_array)
        .map(|ls| {
            ls.iter()
                .filter_map(|l| l.get("name").and_then(Value::as_str))
                .map(|name| serde_json::json!({"name": name, "listen": "127.0.0.1:0"}))
                .collect()
        })
        .unwrap_or_default();
    let local: Config = serde_json::from_value(serde_json::json!({ "listeners": names }))
        .map_err(|e| ConfigError::new("listeners", e.to_string()))?;
    merge_at(group, &local, "")
}

/// [`merge_config`], each error's path prefixed by `at`.
fn merge_at(group: &GroupSnapshot, local: &Config, at: &str) -> Result<Config, ConfigErrors> {
    let whole = at.trim_end_matches(": ");
    let mut errors = local_errors(local);
    let parsed: Result<Value, String> = match group.format {
        ConfigFormat::Yaml => serde_yaml::from_str(&group.config).map_err(|e| e.to_string()),
        ConfigFormat::Json => serde_json::from_str(&group.config).map_err(|e| e.to_string()),
    };
    let mut value = match parsed {
        Ok(Value::Object(map)) => map,
        Ok(_) => {
            errors.push(ConfigError::new(whole, "must be a mapping"));
            return Err(ConfigErrors(errors));
        }
        Err(e) => {
            errors.push(ConfigError::new(whole, e));
            return Err(ConfigErrors(errors));
        }
    };
    for key in ["admin", "module_cache"] {
        if value.contains_key(key) {
            errors.push(ConfigError::new(
                format!("{at}{key}"),
                "belongs to each proxy's local config, not to a group's",
            ));
        }
    }
    bind_listeners(&mut value, local, at, &mut errors);
    point_filters_at_cache(&mut value, group, at, &mut errors);
    if !errors.is_empty() {
        return Err(ConfigErrors(errors));
    }
    let mut config: Config = serde_path_to_error::deserialize(Value::Object(value))
        .map_err(|e| ConfigError::new(format!("{at}{}", e.path()), e.into_inner().to_string()))?;
    config.admin = local.admin.clone();
    config.module_cache = local.module_cache.clone();
    Ok(config)
}

/// What the local configuration may not give under a control plane.
fn local_errors(local: &Config) -> Vec<ConfigError> {
    let from_group = "comes from the group's configuration under a control plane";
    let mut errors = Vec::new();
    if !local.filters.is_empty() {
        errors.push(ConfigError::new("local config: filters", from_group));
    }
    if !local.clusters.is_empty() {
        errors.push(ConfigError::new("local config: clusters", from_group));
    }
    for (i, l) in local.listeners.iter().enumerate() {
        if !l.routes.is_empty() {
            errors.push(ConfigError::new(
                format!("local config: listeners[{i}].routes"),
                from_group,
            ));
        }
    }
    errors
}

/// The local listeners, in local order, each with the routes of the group
/// listener of its name (none when the group does not name it): the
/// listeners stay the ones the proxy bound at start, whatever the group
/// applies. A group listener the proxy lacks is an error naming it.
fn bind_listeners(
    value: &mut Map<String, Value>,
    local: &Config,
    at: &str,
    errors: &mut Vec<ConfigError>,
) {
    let Some(Value::Array(group)) = value.get_mut("listeners") else {
        return; // missing or mistyped: the model's own error, below
    };
    let mut by_name: Map<String, Value> = Map::new();
    for (i, listener) in std::mem::take(group).into_iter().enumerate() {
        let path = format!("{at}listeners[{i}]");
        let Value::Object(listener) = listener else {
            errors.push(ConfigError::new(path, "must be a mapping"));
            continue;
        };
        if listener.contains_key("listen") {
            errors.push(ConfigError::new(
                format!("{path}.listen"),
                "a group's listener has no address: each proxy binds its own",
            ));
        }
        if listener.contains_key("tls") {
            errors.push(ConfigError::new(
                format!("{path}.tls"),
                "a group's listener has no TLS files: each proxy's local config gives its own",
            ));
        }
        let Some(name) = listener.get("name").and_then(Value::as_str) else {
            errors.push(ConfigError::new(format!("{path}.name"), "missing"));
            continue;
        };
        if !local.listeners.iter().any(|l| l.name == name) {
            errors.push(ConfigError::new(
                format!("{path}.name"),
                format!(
                    "listener {name:?} has no address on this proxy: add it to the local config's listeners (name: {name}, listen: <ip:port>)"
                ),
            ));
        } else if by_name.contains_key(name) {
            errors.push(ConfigError::new(
                format!("{path}.name"),
                format!("listener {name:?} is named twice"),
            ));
        }
        by_name.insert(name.to_string(), Value::Object(listener));
    }
    *group = local
        .listeners
        .iter()
        .map(|l| {
            let mut listener = match by_name.remove(&l.name) {
                Some(Value::Object(listener)) => listener,
                _ => Map::from_iter([("name".to_string(), Value::String(l.name.clone()))]),
            };
            listener.insert("listen".into(), Value::String(l.listen.clone()));
            if let Some(tls) = &l.tls
                && let Ok(tls) = serde_json::to_value(tls)
            {
                listener.insert("tls".into(), tls);
            }
            Value::Object(listener)
        })
        .collect();
}

/// Replaces each `filters.<name>.module` by the `path` of its module in the
/// cache.
fn point_filters_at_cache(
    value: &mut Map<String, Value>,
    group: &GroupSnapshot,
    at: &str,
    errors: &mut Vec<ConfigError>,
) {
    let Some(Value::Object(filters)) = value.get_mut("filters") else {
        return;
    };
    for (name, filter) in filters.iter_mut() {
        let path = format!("{at}filters.{name}");
        let Value::Object(filter) = filter else {
            continue;
        };
        if filter.contains_key("path") {
            errors.push(ConfigError::new(
                format!("{path}.path"),
                "a group's filter names a pushed module with `module:`, not a file",
            ));
            continue;
        }
        let reference = match filter.remove("module") {
            Some(Value::String(r)) => r,
            _ => {
                errors.push(ConfigError::new(
                    format!("{path}.module"),
                    "missing: a group's filter names a pushed module",
                ));
                continue;
            }
        };
        match group.modules.iter().find(|m| m.reference == reference) {
            Some(module) => {
                let file = module.path.to_string_lossy().into_owned();
                filter.insert("path".into(), Value::String(file));
            }
            None => errors.push(ConfigError::new(
                format!("{path}.module"),
                format!("the snapshot lists no module for {reference:?}"),
            )),
        }
    }
}
