//! The control client's directory: fetched modules, content-addressed, and
//! the last snapshot the proxy ACKed.
//!
//! ```text
//! <dir>/snapshot.json           the last ACKed GroupSnapshot (config text, version, module refs)
//! <dir>/modules/<sha256>.wasm   module bytes, written once, hash checked before writing
//! <dir>/modules/.tmp-*          a write in progress; removed when the cache opens
//! ```
//!
//! Every file is written to a temporary name, fsynced, renamed into place
//! and its directory fsynced: after a crash a file is whole or absent.

use std::fs::{DirBuilder, File, OpenOptions};
use std::io::Write;
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

use serde::{Deserialize, Serialize};

use super::GroupSnapshot;

/// The file holding the last ACKed snapshot.
pub const SNAPSHOT_FILE: &str = "snapshot.json";
const MODULES_DIR: &str = "modules";
const TMP_PREFIX: &str = ".tmp-";

/// One module of a snapshot, as the configuration references it and where
/// its bytes are.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CachedModule {
    /// The reference as written in `filters.<name>.module`.
    pub reference: String,
    /// The registry name it resolved to.
    pub name: String,
    /// The version number of that name.
    pub version: u32,
    /// Hex sha256 of the bytes.
    pub sha256: String,
    /// Size in bytes.
    pub size: u64,
    /// The filter contract it was built for.
    pub contract_version: String,
    /// The file holding its bytes (not stored: derived from the cache
    /// directory when loaded).
    #[serde(skip)]
    pub path: PathBuf,
}

/// The cache directory, opened.
#[derive(Debug, Clone)]
pub struct Cache {
    dir: PathBuf,
}

impl Cache {
    /// Opens (creating, private to this user) the cache in `dir` and
    /// removes writes left unfinished by a crash.
    pub fn open(dir: &Path) -> std::io::Result<Cache> {
        let dir = std::path::absolute(dir)?;
        DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(dir.join(MODULES_DIR))?;
        for entry in std::fs::read_dir(dir.join(MODULES_DIR))?.flatten() {
            if entry.file_name().to_string_lossy().starts_with(TMP_PREFIX) {
                let _ = std::fs::remove_file(entry.path());
            }
        }
        for entry in std::fs::read_dir(&dir)?.flatten() {
            if entry.file_name().to_string_lossy().starts_with(TMP_PREFIX) {
                let _ = std::fs::remove_file(entry.path());
            }
        }
        Ok(Cache { dir })
    }

    /// The directory.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Where the module with this hex sha256 is kept.
    pub fn module_path(&self, sha256: &str) -> PathBuf {
        module_path(&self.dir, sha256)
    }

    /// Whether the module with this hex sha256 is on disk.
    pub fn has_module(&self, sha256: &str) -> bool {
        self.module_path(sha256).is_file()
    }

    /// The hex sha256s of the modules on disk (for the `Hello`).
    pub fn module_hashes(&self) -> Vec<String> {
        let Ok(entries) = std::fs::read_dir(self.dir.join(MODULES_DIR)) else {
            return Vec::new();
        };
        let mut out: Vec<String> = entries
            .flatten()
            .filter_map(|e| {
                let name = e.file_name().into_string().ok()?;
                let sha = name.strip_suffix(".wasm")?;
                is_sha256(sha).then(|| sha.to_string())
            })
            .collect();
        out.sort();
        out
    }

    /// Writes module bytes already checked to hash to `sha256`.
    pub fn write_module(&self, sha256: &str, bytes: &[u8]) -> std::io::Result<PathBuf> {
        let path = self.module_path(sha256);
        write_atomically(&path, bytes)?;
        Ok(path)
    }

    /// Records `snapshot` as the last one ACKed.
    pub fn save_snapshot(&self, snapshot: &GroupSnapshot) -> std::io::Result<()> {
        let json = serde_json::to_vec_pretty(snapshot).map_err(std::io::Error::other)?;
        write_atomically(&self.dir.join(SNAPSHOT_FILE), &json)
    }
}

/// The last snapshot ACKed by the proxy whose cache is `dir`, if there is
/// one and every module it names is on disk; each module's `path` is set.
/// An unreadable file is logged and ignored.
pub fn load_cached(dir: &Path) -> Option<GroupSnapshot> {
    let dir = std::path::absolute(dir).ok()?;
    let file = dir.join(SNAPSHOT_FILE);
    let text = match std::fs::read(&file) {
        Ok(text) => text,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return None,
        Err(e) => {
            tracing::warn!(file = %file.display(), "cached snapshot not used: {e}");
            return None;
        }
    };
    let mut snapshot: GroupSnapshot = match serde_json::from_slice(&text) {
        Ok(snapshot) => snapshot,
        Err(e) => {
            tracing::warn!(file = %file.display(), "cached snapshot not used: {e}");
            return None;
        }
    };
    for module in &mut snapshot.modules {
        module.path = module_path(&dir, &module.sha256);
        if !is_sha256(&module.sha256) || !module.path.is_file() {
            tracing::warn!(file = %file.display(), module = %module.name, "cached snapshot not used: module {} missing", module.sha256);
            return None;
        }
    }
    Some(snapshot)
}

fn module_path(dir: &Path, sha256: &str) -> PathBuf {
    dir.join(MODULES_DIR).join(format!("{sha256}.wasm"))
}

fn is_sha256(s: &str) -> bool {
    s.len() == 64 && s.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'))
}

/// Writes `bytes` to `path` so that after a crash it is whole or absent:
/// a temporary file in the same directory, fsync, rename, fsync of the
/// directory.
fn write_atomically(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    static NEXT: AtomicU64 = AtomicU64::new(0);
    let dir = path.parent().unwrap_or(Path::new("."));
    let tmp = dir.join(format!(
        "{TMP_PREFIX}{}-{}",
        std::process::id(),
        NEXT.fetch_add(1, Ordering::Relaxed)
    ));
    let written = (|| {
        let mut file = OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(&tmp)?;
        file.write_all(bytes)?;
        file.sync_all()?;
        std::fs::rename(&tmp, path)?;
        File::open(dir)?.sync_all()
    })();
    if written.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    written
}
