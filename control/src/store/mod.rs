//! What the control plane keeps: the module registry (bytes by sha256,
//! names with numbered versions) and each group's applied configuration.
//!
//! `Store` is the seam for another engine (etcd, for high availability);
//! `RedbStore` keeps everything in one local directory. Every write returns
//! only once it is durable. The methods block: the service calls them on
//! tokio's blocking pool.

mod redb_store;

use std::io::Read;

use serde::{Deserialize, Serialize};

pub use redb_store::{DB_FILE, MODULES_DIR, RedbStore};

/// A module version in the registry.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ModuleRecord {
    /// The name it was pushed under, e.g. `api-key`.
    pub name: String,
    /// Its number under that name: 1, 2, …
    pub version: u32,
    /// Hex sha256 of its bytes.
    pub sha256: String,
    /// Its size in bytes.
    pub size: u64,
    /// The filter contract it was built for, e.g. `0.4.0`.
    pub contract_version: String,
    /// When it was pushed, Unix milliseconds.
    pub pushed_at_unix_ms: u64,
}

/// What `Store::put_module` did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PutModule {
    /// The stored (or already present) version.
    pub module: ModuleRecord,
    /// The same bytes were already stored under that name: nothing changed.
    pub already_existed: bool,
}

/// How a configuration names a module.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ModuleSelector {
    /// The newest version of a name: `api-key`.
    Newest(String),
    /// One version of a name: `api-key@3`.
    Version(String, u32),
    /// Exact bytes: 64 hex digits.
    Sha256(String),
}

impl ModuleSelector {
    /// Reads a reference as written in a configuration.
    pub fn parse(reference: &str) -> Self {
        if is_sha256(reference) {
            return Self::Sha256(reference.to_ascii_lowercase());
        }
        if let Some((name, version)) = reference.rsplit_once('@')
            && let Ok(version) = version.parse()
        {
            return Self::Version(name.to_string(), version);
        }
        Self::Newest(reference.to_string())
    }
}

/// Whether `s` is a hex sha256 (64 hex digits, either case).
pub fn is_sha256(s: &str) -> bool {
    s.len() == 64 && s.bytes().all(|b| b.is_ascii_hexdigit())
}

/// Checks a module name: 1–64 characters of `a-z 0-9 - _ .`, starting with
/// a letter or digit.
pub fn check_module_name(name: &str) -> Result<(), String> {
    let ok = !name.is_empty()
        && name.len() <= 64
        && name.as_bytes()[0].is_ascii_alphanumeric()
        && name
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b"-_.".contains(&b));
    if ok && !is_sha256(name) {
        Ok(())
    } else {
        Err(format!(
            "module name {name:?}: use 1 to 64 characters of a-z, 0-9, '-', '_' and '.', starting with a letter or digit (and not 64 hex digits)"
        ))
    }
}

/// How a configuration is written; kept as applied.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum ConfigFormat {
    /// YAML (JSON is YAML too).
    Yaml,
    /// JSON.
    Json,
}

/// A module reference of an applied configuration and what it resolved to.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ResolvedModule {
    /// As written in `filters.<name>.module`.
    pub reference: String,
    /// The registry's module.
    pub module: ModuleRecord,
}

/// A group's applied configuration.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct GroupState {
    /// The group's name.
    pub group: String,
    /// 1 for the first apply, then one more for each change.
    pub version: u64,
    /// The configuration text, as applied.
    pub config: String,
    /// How `config` is written.
    pub format: ConfigFormat,
    /// The modules it names, resolved when it was applied (sorted by
    /// reference).
    pub modules: Vec<ResolvedModule>,
    /// When it was applied, Unix milliseconds.
    pub applied_at_unix_ms: u64,
}

/// A module's bytes, to be read in order.
pub struct ModuleBytes {
    /// Their count.
    pub size: u64,
    /// The bytes.
    pub reader: Box<dyn Read + Send>,
}

/// Why the store could not do something.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// A file of the store could not be read or written.
    #[error("{what} {path}: {source}")]
    Io {
        /// What was being done.
        what: &'static str,
        /// The file.
        path: String,
        /// The system's error.
        source: std::io::Error,
    },
    /// The metadata database failed.
    #[error("store database {path}: {message}")]
    Database {
        /// The database file.
        path: String,
        /// redb's error.
        message: String,
    },
    /// A request the store refuses (e.g. a bad module name).
    #[error("{0}")]
    Invalid(String),
}

/// The control plane's durable state. Implementations answer a write only
/// once it survives a crash of the process and of the machine.
pub trait Store: Send + Sync + 'static {
    /// Stores `bytes` as the next version of `name` (already checked by
    /// `check_module`). The same bytes pushed again under the same name
    /// return the existing version with `already_existed`.
    fn put_module(
        &self,
        name: &str,
        bytes: &[u8],
        contract_version: &str,
    ) -> Result<PutModule, StoreError>;

    /// The module a selector names, if any (for a sha256 pushed under
    /// several names, the first).
    fn module(&self, selector: &ModuleSelector) -> Result<Option<ModuleRecord>, StoreError>;

    /// Every module version, by name then version.
    fn modules(&self) -> Result<Vec<ModuleRecord>, StoreError>;

    /// The bytes of the module with this sha256, if stored.
    fn open_module(&self, sha256: &str) -> Result<Option<ModuleBytes>, StoreError>;

    /// Records `state` as `group`'s configuration, with the next version
    /// number (`state.group` and `state.version` are set here).
    fn apply(&self, group: &str, state: GroupState) -> Result<GroupState, StoreError>;

    /// A group's current configuration, if one was ever applied.
    fn group(&self, group: &str) -> Result<Option<GroupState>, StoreError>;
}

/// Now, in Unix milliseconds.
pub fn unix_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}
