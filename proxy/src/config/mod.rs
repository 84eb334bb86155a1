//! Configuration: the file format ([`model`]), reading it with errors that
//! name the path of the bad field, and checking it.
//!
//! Turning a checked config into something that serves traffic is
//! [`crate::snapshot`]'s job; `weft validate` runs exactly that too.

pub mod cluster;
pub mod files;
pub mod limits;
pub mod model;
pub mod route;
pub mod tls;

use std::fmt;
use std::path::{Path, PathBuf};

pub use model::*;
pub use route::*;

/// One problem in a config, at a path such as
/// `listeners[0].routes[1].filters[0].filter`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigError {
    /// Where: a dotted path with indices; empty for the whole file.
    pub path: String,
    /// What is wrong.
    pub message: String,
}

impl ConfigError {
    /// An error at `path`.
    pub fn new(path: impl Into<String>, message: impl Into<String>) -> Self {
        Self {
            path: path.into(),
            message: message.into(),
        }
    }
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.path.is_empty() {
            write!(f, "{}", self.message)
        } else {
            write!(f, "{}: {}", self.path, self.message)
        }
    }
}

/// Every problem found in a config, one per line when displayed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub struct ConfigErrors(pub Vec<ConfigError>);

impl fmt::Display for ConfigErrors {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, e) in self.0.iter().enumerate() {
            if i > 0 {
                writeln!(f)?;
            }
            write!(f, "{e}")?;
        }
        Ok(())
    }
}

impl From<ConfigError> for ConfigErrors {
    fn from(e: ConfigError) -> Self {
        ConfigErrors(vec![e])
    }
}

/// A parsed config and the directory its relative paths are resolved from.
#[derive(Debug, Clone)]
pub struct LoadedConfig {
    /// The config.
    pub config: Config,
    /// The config file's directory.
    pub base_dir: PathBuf,
}

/// Reads and parses the config file at `path`: JSON when it ends in
/// `.json`, YAML otherwise.
pub fn load(path: &Path) -> Result<LoadedConfig, ConfigErrors> {
    let text = std::fs::read_to_string(path)
        .map_err(|e| ConfigError::new("", format!("cannot read {}: {e}", path.display())))?;
    let json = path.extension().is_some_and(|e| e == "json");
    let config = parse(&text, json)?;
    let base_dir = path
        .parent()
        .filter(|p| !p.as_os_str().is_empty())
        .map(Path::to_path_buf)
        .unwrap_or_else(|| PathBuf::from("."));
    Ok(LoadedConfig { config, base_dir })
}

/// Errors in the bounds under `log:` and `metrics:`.
pub fn limit_errors(config: &Config) -> Vec<ConfigError> {
    let mut errors = Vec::new();
    let log = &config.log;
    if log.max_line_bytes < MIN_LINE_BYTES {
        errors.push(ConfigError::new(
            "log.max_line_bytes",
            format!("must be at least {MIN_LINE_BYTES}"),
        ));
    }
    if log.max_buffered_bytes < log.max_line_bytes {
        errors.push(ConfigError::new(
            "log.max_buffered_bytes",
            "must be at least log.max_line_bytes",
        ));
    }
    for (value, key) in [
        (
            config.metrics.max_series_per_family,
            "max_series_per_family",
        ),
        (
            config.metrics.max_families_per_filter,
            "max_families_per_filter",
        ),
        (
            config.metrics.max_label_value_bytes,
            "max_label_value_bytes",
        ),
    ] {
        if value == 0 {
            errors.push(ConfigError::new(
                format!("metrics.{key}"),
                "must be at least 1",
            ));
        }
    }
    errors
}

/// Parses config text (YAML, or JSON when `json`).
pub fn parse(text: &str, json: bool) -> Result<Config, ConfigError> {
    let (path, message) = if json {
        let mut de = serde_json::Deserializer::from_str(text);
        match serde_path_to_error::deserialize(&mut de) {
            Ok(config) => return Ok(config),
            Err(e) => (e.path().to_string(), e.into_inner().to_string()),
        }
    } else {
        match serde_path_to_error::deserialize(serde_yaml::Deserializer::from_str(text)) {
            Ok(config) => return Ok(config),
            Err(e) => (e.path().to_string(), e.into_inner().to_string()),
        }
    };
    let path = if path == "." { String::new() } else { path };
    // serde_yaml starts its messages with the path of the enclosing value;
    // ours is more precise, so drop that prefix.
    let message = match message.split_once(": ") {
        Some((prefix, rest)) if !prefix.is_empty() && path.starts_with(prefix) => rest.to_string(),
        _ => message,
    };
    Err(ConfigError::new(path, message))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unknown_field_names_its_path_and_line() {
        let text = "listeners:\n  - name: a\n    listen: 127.0.0.1:0\n    routes:\n      - name: r\n        cluster: c\n        matc: {}\n";
        let e = parse(text, false).unwrap_err();
        assert_eq!(e.path, "listeners[0].routes[0].matc");
        assert!(e.message.starts_with("unknown field `matc`"), "{e}");
        assert!(e.message.contains("line 7"), "{e}");
    }

    #[test]
    fn bad_yaml_names_the_line() {
        let e = parse("listeners:\n  - name: [\n", false).unwrap_err();
        assert!(e.message.contains("line"), "{e}");
    }

    #[test]
    fn json_is_accepted() {
        let c = parse(
            r#"{"listeners": [{"name": "a", "listen": "127.0.0.1:0"}]}"#,
            true,
        )
        .unwrap();
        assert_eq!(c.listeners[0].name, "a");
    }
}
