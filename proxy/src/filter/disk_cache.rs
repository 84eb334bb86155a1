//! Compiled filter components kept on disk between runs, so a restart maps
//! native code from a file instead of compiling the component again.
//!
//! An artifact is `<dir>/<sha256 of the .wasm>-<compat>.cwasm`, where
//! `<compat>` hashes the engine's compilation settings (target, CPU
//! features, tunables, wasmtime version) and this crate's version: another
//! build of the proxy never picks up a stale artifact, it compiles and
//! writes its own. Files are written to a temporary name and renamed into
//! place, so a concurrent reader sees a whole file or none.
//!
//! Loading an artifact runs it as native code, so the directory must be
//! writable only by the proxy's user: one owned by another user, or writable
//! by group or others, is not used.

use std::fs::{DirBuilder, Metadata, OpenOptions};
use std::hash::{Hash, Hasher};
use std::io::Write;
use std::os::unix::fs::{DirBuilderExt, MetadataExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

use sha2::{Digest, Sha256};
use wasmtime::Engine;
use wasmtime::component::Component;

use crate::config::ModuleCacheConfig;

/// The environment variable naming the default cache directory.
pub const ENV_DIR: &str = "WEFT_MODULE_CACHE";

/// A directory of compiled components for one engine configuration.
#[derive(Debug)]
pub struct DiskCache {
    dir: PathBuf,
    compat: String,
    /// Set when the directory could not be created or is unsafe: nothing
    /// more is written (the warning was logged once).
    broken: AtomicBool,
}

impl DiskCache {
    /// The cache a config asks for: `module_cache.dir` (relative to
    /// `base_dir`), or the default location. `None` when disabled, when no
    /// directory can be determined, or when the directory is not private to
    /// this user (the last two are logged as warnings). A missing directory
    /// is created on the first write, never here.
    pub fn resolve(
        config: Option<&ModuleCacheConfig>,
        base_dir: &Path,
        engine: &Engine,
    ) -> Option<DiskCache> {
        let dir = match config {
            Some(c) if !c.enabled => return None,
            Some(ModuleCacheConfig { dir: Some(d), .. }) => base_dir.join(d),
            _ => {
                let Some(dir) = default_dir() else {
                    tracing::warn!(
                        "no module cache: set module_cache.dir, {ENV_DIR}, XDG_CACHE_HOME or HOME; filters are compiled at every start"
                    );
                    return None;
                };
                dir
            }
        };
        match std::fs::metadata(&dir) {
            Ok(meta) => {
                if let Err(why) = check_private(&meta) {
                    tracing::warn!(dir = %dir.display(), "module cache not used: {why}");
                    return None;
                }
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => {
                tracing::warn!(dir = %dir.display(), "module cache not used: {e}");
                return None;
            }
        }
        Some(DiskCache {
            dir,
            compat: compat_key(engine),
            broken: AtomicBool::new(false),
        })
    }

    /// The directory.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Where the artifact of the component with this content hash goes.
    pub fn path(&self, sha256: &str) -> PathBuf {
        self.dir.join(format!("{sha256}-{}.cwasm", self.compat))
    }

    /// The cached build of component `sha256`, if there is a usable one. A
    /// file that cannot be loaded (corrupt, or from an incompatible build
    /// that collided on the key) is logged and ignored; compiling replaces
    /// it.
    pub fn load(&self, engine: &Engine, sha256: &str) -> Option<Component> {
        let path = self.path(sha256);
        if !path.is_file() {
            return None;
        }
        // SAFETY: the file is in a directory only this user can write
        // (checked by `resolve`), and this proxy writes files there only
        // whole (rename) and only from `Component::serialize`. wasmtime
        // checks that it is an artifact of a compatible engine; its files
        // are never modified in place while mapped.
        match unsafe { Component::deserialize_file(engine, &path) } {
            Ok(component) => Some(component),
            Err(e) => {
                tracing::warn!(
                    path = %path.display(),
                    "ignoring unusable compiled filter in the module cache, compiling instead: {e:#}"
                );
                None
            }
        }
    }

    /// Writes `component`'s artifact for `sha256`. A failure is a warning:
    /// the proxy keeps serving from the build it has.
    pub fn store(&self, sha256: &str, component: &Component) {
        if self.broken.load(Ordering::Relaxed) {
            return;
        }
        if let Err(why) = self.ensure_dir() {
            if !self.broken.swap(true, Ordering::Relaxed) {
                tracing::warn!(dir = %self.dir.display(), "module cache not used: {why}");
            }
            return;
        }
        let path = self.path(sha256);
        match self.write(&path, component) {
            Ok(()) => tracing::debug!(path = %path.display(), "wrote compiled filter to cache"),
            Err(e) => tracing::warn!(
                path = %path.display(),
                "cannot write compiled filter to the module cache: {e:#}"
            ),
        }
    }

    fn ensure_dir(&self) -> Result<(), String> {
        DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(&self.dir)
            .map_err(|e| format!("cannot create it: {e}"))?;
        let meta = std::fs::metadata(&self.dir).map_err(|e| e.to_string())?;
        check_private(&meta)
    }

    fn write(&self, path: &Path, component: &Component) -> anyhow::Result<()> {
        static NEXT: AtomicU64 = AtomicU64::new(0);
        let bytes = component.serialize()?;
        let tmp = self.dir.join(format!(
            ".{}.{}.{}.tmp",
            path.file_name().unwrap_or_default().to_string_lossy(),
            std::process::id(),
            NEXT.fetch_add(1, Ordering::Relaxed)
        ));
        let written = (|| {
            let mut file = OpenOptions::new()
                .write(true)
                .create_new(true)
                .mode(0o600)
                .open(&tmp)?;
            file.write_all(&bytes)?;
            // On disk before the name is: a crash never leaves a torn file
            // under the final name.
            file.sync_all()?;
            std::fs::rename(&tmp, path)
        })();
        if written.is_err() {
            let _ = std::fs::remove_file(&tmp);
        }
        Ok(written?)
    }
}

/// `$WEFT_MODULE_CACHE`, else `$XDG_CACHE_HOME/weft/modules`, else
/// `$HOME/.cache/weft/modules`.
fn default_dir() -> Option<PathBuf> {
    let var = |name| {
        std::env::var_os(name)
            .filter(|v| !v.is_empty())
            .map(PathBuf::from)
    };
    if let Some(dir) = var(ENV_DIR) {
        return Some(dir);
    }
    // The XDG spec ignores a relative XDG_CACHE_HOME.
    if let Some(xdg) = var("XDG_CACHE_HOME").filter(|p| p.is_absolute()) {
        return Some(xdg.join("weft/modules"));
    }
    var("HOME").map(|home| home.join(".cache/weft/modules"))
}

/// A directory whose files this process may run: owned by this user and
/// writable by nobody else.
fn check_private(meta: &Metadata) -> Result<(), String> {
    if !meta.is_dir() {
        return Err("not a directory".into());
    }
    let mode = meta.permissions().mode() & 0o7777;
    if mode & 0o022 != 0 {
        return Err(format!(
            "it is writable by group or others (mode {mode:o}), and compiled code loaded from it runs in this process: `chmod go-w` it or use another directory"
        ));
    }
    // SAFETY: geteuid has no preconditions and cannot fail.
    let uid = unsafe { libc::geteuid() };
    if meta.uid() != uid {
        return Err(format!(
            "it is owned by uid {}, not by this process's uid {uid}, and compiled code loaded from it runs in this process",
            meta.uid()
        ));
    }
    Ok(())
}

/// A short, stable hash of what makes an artifact loadable: the engine's
/// compilation settings and this crate's version.
fn compat_key(engine: &Engine) -> String {
    struct ShaHasher(Sha256);
    impl Hasher for ShaHasher {
        fn finish(&self) -> u64 {
            unreachable!("only the digest is read")
        }
        fn write(&mut self, bytes: &[u8]) {
            self.0.update(bytes);
        }
    }
    let mut h = ShaHasher(Sha256::new());
    engine.precompile_compatibility_hash().hash(&mut h);
    env!("CARGO_PKG_VERSION").hash(&mut h);
    let digest = h.0.finalize();
    digest[..8].iter().map(|b| format!("{b:02x}")).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn temp(tag: &str) -> PathBuf {
        let dir = std::env::temp_dir().join(format!("weft-dc-{}-{tag}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        dir
    }

    #[test]
    fn keys_are_stable_and_short() {
        let engine = Engine::default();
        let a = compat_key(&engine);
        assert_eq!(a, compat_key(&engine));
        assert_eq!(a.len(), 16);
        let mut other = wasmtime::Config::new();
        other.epoch_interruption(true);
        assert_ne!(a, compat_key(&Engine::new(&other).unwrap()));
    }

    #[test]
    fn relative_dirs_resolve_from_the_config_and_disabled_means_none() {
        let engine = Engine::default();
        let base = temp("rel");
        let config = ModuleCacheConfig {
            enabled: true,
            dir: Some("cache".into()),
        };
        let cache = DiskCache::resolve(Some(&config), &base, &engine).unwrap();
        assert_eq!(cache.dir(), base.join("cache"));
        assert!(!base.exists(), "resolving creates nothing");
        let off = ModuleCacheConfig {
            enabled: false,
            dir: Some("cache".into()),
        };
        assert!(DiskCache::resolve(Some(&off), &base, &engine).is_none());
    }

    #[test]
    fn shared_directories_are_refused() {
        let dir = temp("shared");
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o777)).unwrap();
        let err = check_private(&std::fs::metadata(&dir).unwrap()).unwrap_err();
        assert!(
            err.contains("writable by group or others (mode 777)"),
            "{err}"
        );
        std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o700)).unwrap();
        assert_eq!(check_private(&std::fs::metadata(&dir).unwrap()), Ok(()));
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn artifacts_round_trip_and_the_directory_is_private() {
        let engine = Engine::default();
        let base = temp("roundtrip");
        let config = ModuleCacheConfig {
            enabled: true,
            dir: Some("a/b".into()),
        };
        let cache = DiskCache::resolve(Some(&config), &base, &engine).unwrap();
        // The smallest component: the preamble alone.
        let component = Component::new(&engine, b"\0asm\x0d\0\x01\0").unwrap();
        assert!(cache.load(&engine, "abc").is_none());
        cache.store("abc", &component);
        let meta = std::fs::metadata(cache.dir()).unwrap();
        assert_eq!(meta.permissions().mode() & 0o777, 0o700);
        assert!(cache.load(&engine, "abc").is_some());
        std::fs::write(cache.path("abc"), b"garbage").unwrap();
        assert!(cache.load(&engine, "abc").is_none(), "garbage is ignored");
        let leftovers: Vec<_> = std::fs::read_dir(cache.dir())
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .filter(|n| n.to_string_lossy().ends_with(".tmp"))
            .collect();
        assert!(leftovers.is_empty(), "{leftovers:?}");
        std::fs::remove_dir_all(&base).unwrap();
    }
}
