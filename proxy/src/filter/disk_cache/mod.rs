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
//! Loading an artifact runs it as native code, so what is loaded must be
//! the proxy's user's alone:
//! - the directory is opened once per config build (`O_DIRECTORY |
//!   O_NOFOLLOW`) and checked on that handle (`fstat`): owned by this
//!   user, writable by nobody else; its ancestors are owned by root or this
//!   user and not writable by others unless sticky (as `/tmp`);
//! - a directory is trusted only if it was there, checked, the first time
//!   this process looked for it, or this process made it: one that
//!   appeared since (someone else made it while the proxy started) is not
//!   read until a restart checks it;
//! - each artifact is opened relative to that handle (`openat`, no link
//!   followed) and checked on its own handle (a regular file, this user's,
//!   writable by nobody else), then read from that handle and deserialised
//!   from memory.
//!
//! What this cannot see: another process of the same user can write
//! anything the proxy can.

use std::collections::HashMap;
use std::ffi::CString;
use std::fs::{DirBuilder, File, Metadata};
use std::hash::{Hash, Hasher};
use std::io::{Read, Write};
use std::os::fd::{AsRawFd, FromRawFd};
use std::os::unix::fs::{DirBuilderExt, MetadataExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Mutex, OnceLock};
use std::time::{Duration, Instant};

use sha2::{Digest, Sha256};
use wasmtime::Engine;
use wasmtime::Module;
use wasmtime::component::Component;

use crate::config::ModuleCacheConfig;

/// The environment variable naming the default cache directory.
pub const ENV_DIR: &str = "WEFT_MODULE_CACHE";

/// A directory of compiled components for one engine configuration.
#[derive(Debug)]
pub struct DiskCache {
    dir: PathBuf,
    compat: String,
    /// The directory, opened and checked by `resolve`; `None` when it was
    /// not there or is not trusted: nothing is loaded then.
    trusted: Option<File>,
    /// The directory this cache writes to: `trusted`, or the one `store`
    /// made.
    writable: OnceLock<File>,
    /// Set when the directory could not be created or is unsafe: nothing
    /// more is written (the warning was logged once).
    broken: AtomicBool,
}

/// How long [`DiskCache::compile_lock`] waits for another process compiling
/// the same module.
pub const COMPILE_WAIT: Duration = Duration::from_secs(60);
/// How often it tries the lock meanwhile.
const COMPILE_POLL: Duration = Duration::from_millis(10);

/// The right to compile one module into a [`DiskCache`]; see
/// [`DiskCache::compile_lock`]. Lock files stay in the directory (a few
/// bytes each): removing one while another process waits on it would let
/// two compile.
#[derive(Debug)]
pub struct CompileLock {
    _file: File,
}

/// A directory's identity: (device, inode).
type DirId = (u64, u64);

/// Each cache directory as this process first found it (`None`: it was not
/// there), or as it made it.
fn first_looks() -> &'static Mutex<HashMap<PathBuf, Option<DirId>>> {
    static FIRST: OnceLock<Mutex<HashMap<PathBuf, Option<DirId>>>> = OnceLock::new();
    FIRST.get_or_init(Mutex::default)
}

/// Opens directory `dir` without following a link at its end.
fn open_dir(dir: &Path) -> std::io::Result<File> {
    std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_DIRECTORY | libc::O_NOFOLLOW | libc::O_CLOEXEC)
        .open(dir)
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
        let opened = match open_dir(&dir) {
            Ok(handle) => {
                let checked = handle
                    .metadata()
                    .map_err(|e| e.to_string())
                    .and_then(|meta| check_private(&meta).map(|()| meta))
                    .and_then(|meta| check_ancestors(&dir).map(|()| meta));
                match checked {
                    Ok(meta) => Some((handle, (meta.dev(), meta.ino()))),
                    Err(why) => {
                        tracing::warn!(dir = %dir.display(), "module cache not used: {why}");
                        return None;
                    }
                }
            }
            Err(e) if matches!(e.raw_os_error(), Some(libc::ENOENT | libc::ENOTDIR)) => None,
            Err(e) => {
                let why = if e.raw_os_error() == Some(libc::ELOOP) {
                    "it is a symbolic link".to_string()
                } else {
                    e.to_string()
                };
                tracing::warn!(dir = %dir.display(), "module cache not used: {why}");
                return None;
            }
        };
        let seen_first = *first_looks()
            .lock()
            .unwrap()
            .entry(dir.clone())
            .or_insert(opened.as_ref().map(|(_, id)| *id));
        let trusted = match opened {
            Some((handle, id)) if seen_first == Some(id) => Some(handle),
            Some(_) => {
                tracing::warn!(
                    dir = %dir.display(),
                    "module cache not read: the directory appeared or was replaced after this process first looked for it; it is checked again at the next start"
                );
                None
            }
            None => None,
        };
        let writable = OnceLock::new();
        if let Some(handle) = &trusted {
            let _ = writable.set(handle.try_clone().ok()?);
        }
        Some(DiskCache {
            dir,
            compat: compat_key(engine),
            trusted,
            writable,
            broken: AtomicBool::new(false),
        })
    }

    /// The directory.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// The artifact's file name for the component with this content hash.
    fn name(&self, sha256: &str) -> String {
        format!("{sha256}-{}.cwasm", self.compat)
    }

    /// Where the artifact of the component with this content hash goes.
    pub fn path(&self, sha256: &str) -> PathBuf {
        self.dir.join(self.name(sha256))
    }

    /// The cached build of component `sha256`, if there is a usable one. A
    /// file that cannot be loaded (corrupt, or from an incompatible build
    /// that collided on the key) or that is not this user's alone is logged
    /// and ignored; compiling replaces it.
    pub fn load(&self, engine: &Engine, sha256: &str) -> Option<Component> {
        // SAFETY: the bytes were read from a regular file that only this
        // user can write, in a directory only this user can write, both
        // checked on the handles they were read through; this proxy writes
        // files there only whole (rename) and only from
        // `Component::serialize`. wasmtime checks that it is an artifact
        // of a compatible engine.
        self.load_artifact(sha256, |bytes| unsafe {
            Component::deserialize(engine, bytes)
        })
    }

    /// The cached build of core module `sha256` (a proxy-wasm filter), as
    /// [`DiskCache::load`] does for components.
    pub fn load_core(&self, engine: &Engine, sha256: &str) -> Option<Module> {
        // SAFETY: as in `load`; core modules' files come only from
        // `Module::serialize`, and wasmtime checks the artifact's kind.
        self.load_artifact(sha256, |bytes| unsafe {
            Module::deserialize(engine, bytes)
        })
    }

    fn load_artifact<T>(
        &self,
        sha256: &str,
        deserialize: impl FnOnce(&[u8]) -> wasmtime::Result<T>,
    ) -> Option<T> {
        let dir = self.trusted.as_ref()?;
        let path = self.path(sha256);
        let bytes = match read_artifact(dir, &self.name(sha256)) {
            Ok(Some(bytes)) => bytes,
            Ok(None) => return None,
            Err(why) => {
                tracing::warn!(
                    path = %path.display(),
                    "ignoring compiled filter in the module cache, compiling instead: {why}"
                );
                return None;
            }
        };
        match deserialize(&bytes) {
            Ok(artifact) => Some(artifact),
            Err(e) => {
                tracing::warn!(
                    path = %path.display(),
                    "ignoring unusable compiled filter in the module cache, compiling instead: {e:#}"
                );
                None
            }
        }
    }

    /// Waits for the right to compile component `sha256` into this cache:
    /// an exclusive `flock` on `<artifact>.lock`, held by one process of
    /// the machine at a time and released when the [`CompileLock`] is
    /// dropped (or its process dies). Proxies that share the cache compile
    /// a module once: the others wait here, then load the artifact. `None`
    /// when the cache cannot be written, or after [`COMPILE_WAIT`] (the
    /// caller then compiles by itself).
    pub fn compile_lock(&self, sha256: &str) -> Option<CompileLock> {
        let dir = self.writable_dir()?;
        let name = format!("{}.lock", self.name(sha256));
        let file = open_at(dir, &name, libc::O_RDWR | libc::O_CREAT, 0o600).ok()?;
        let started = Instant::now();
        loop {
            // SAFETY: a valid descriptor, owned by `file`.
            if unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) } == 0 {
                return Some(CompileLock { _file: file });
            }
            let busy = std::io::Error::last_os_error().raw_os_error() == Some(libc::EWOULDBLOCK);
            if !busy || started.elapsed() >= COMPILE_WAIT {
                return None;
            }
            std::thread::sleep(COMPILE_POLL);
        }
    }

    /// The directory this cache writes to, made and checked the first time;
    /// `None` (logged once) when it cannot be.
    fn writable_dir(&self) -> Option<&File> {
        if self.broken.load(Ordering::Relaxed) {
            return None;
        }
        if let Some(dir) = self.writable.get() {
            return Some(dir);
        }
        match self.make_dir() {
            Ok(dir) => Some(self.writable.get_or_init(|| dir)),
            Err(why) => {
                if !self.broken.swap(true, Ordering::Relaxed) {
                    tracing::warn!(dir = %self.dir.display(), "module cache not used: {why}");
                }
                None
            }
        }
    }

    /// Writes `component`'s artifact for `sha256`. A failure is a warning:
    /// the proxy keeps serving from the build it has.
    pub fn store(&self, sha256: &str, component: &Component) {
        self.store_artifact(sha256, || component.serialize());
    }

    /// Writes core module `module`'s artifact for `sha256`, as
    /// [`DiskCache::store`] does for components.
    pub fn store_core(&self, sha256: &str, module: &Module) {
        self.store_artifact(sha256, || module.serialize());
    }

    fn store_artifact(&self, sha256: &str, serialize: impl FnOnce() -> wasmtime::Result<Vec<u8>>) {
        let Some(dir) = self.writable_dir() else {
            return;
        };
        let path = self.path(sha256);
        let written = serialize()
            .map_err(anyhow::Error::from)
            .and_then(|bytes| write_artifact(dir, &self.name(sha256), &bytes));
        match written {
            Ok(()) => tracing::debug!(path = %path.display(), "wrote compiled filter to cache"),
            Err(e) => tracing::warn!(
                path = %path.display(),
                "cannot write compiled filter to the module cache: {e:#}"
            ),
        }
    }

    /// Makes the directory (its parents as needed), private to this user,
    /// and opens it. One that is there already and that this process did
    /// not find at its first look is not used.
    fn make_dir(&self) -> Result<File, String> {
        if let Some(parent) = self.dir.parent() {
            DirBuilder::new()
                .recursive(true)
                .mode(0o700)
                .create(parent)
                .map_err(|e| format!("cannot create it: {e}"))?;
        }
        let made = match DirBuilder::new().mode(0o700).create(&self.dir) {
            Ok(()) => true,
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => false,
            Err(e) => return Err(format!("cannot create it: {e}")),
        };
        let dir = open_dir(&self.dir).map_err(|e| format!("cannot open it: {e}"))?;
        let meta = dir.metadata().map_err(|e| e.to_string())?;
        check_private(&meta)?;
        check_ancestors(&self.dir)?;
        let id = (meta.dev(), meta.ino());
        let mut first = first_looks().lock().unwrap();
        let seen = first.entry(self.dir.clone()).or_insert(None);
        if made {
            *seen = Some(id);
        } else if *seen != Some(id) {
            return Err(
                "it appeared after this process first looked for it (made by someone else?); it is checked again at the next start".into(),
            );
        }
        Ok(dir)
    }
}

/// `name` in `dir` as a C string.
fn c_name(name: &str) -> std::io::Result<CString> {
    CString::new(name).map_err(|_| std::io::Error::from(std::io::ErrorKind::InvalidInput))
}

/// Opens `name` in `dir` (`openat`, never following a link).
fn open_at(
    dir: &File,
    name: &str,
    flags: libc::c_int,
    mode: libc::c_uint,
) -> std::io::Result<File> {
    let name = c_name(name)?;
    // SAFETY: a valid directory descriptor and a NUL-terminated name; the
    // descriptor returned is owned by the `File`.
    let fd = unsafe {
        libc::openat(
            dir.as_raw_fd(),
            name.as_ptr(),
            flags | libc::O_NOFOLLOW | libc::O_CLOEXEC,
            mode,
        )
    };
    if fd < 0 {
        return Err(std::io::Error::last_os_error());
    }
    // SAFETY: `fd` is a new descriptor no one else owns.
    Ok(unsafe { File::from_raw_fd(fd) })
}

/// The bytes of artifact `name` in `dir`; `None` when there is none.
fn read_artifact(dir: &File, name: &str) -> Result<Option<Vec<u8>>, String> {
    let mut file = match open_at(dir, name, libc::O_RDONLY | libc::O_NONBLOCK, 0) {
        Ok(file) => file,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) if e.raw_os_error() == Some(libc::ELOOP) => {
            return Err("it is a symbolic link".into());
        }
        Err(e) => return Err(e.to_string()),
    };
    let meta = file.metadata().map_err(|e| e.to_string())?;
    if !meta.is_file() {
        return Err("not a regular file".into());
    }
    check_owner_and_mode(&meta)?;
    let mut bytes = Vec::with_capacity(meta.len() as usize);
    file.read_to_end(&mut bytes).map_err(|e| e.to_string())?;
    Ok(Some(bytes))
}

fn write_artifact(dir: &File, name: &str, bytes: &[u8]) -> anyhow::Result<()> {
    static NEXT: AtomicU64 = AtomicU64::new(0);
    let tmp = format!(
        ".{name}.{}.{}.tmp",
        std::process::id(),
        NEXT.fetch_add(1, Ordering::Relaxed)
    );
    let written = (|| {
        let mut file = open_at(
            dir,
            &tmp,
            libc::O_WRONLY | libc::O_CREAT | libc::O_EXCL,
            0o600,
        )?;
        file.write_all(bytes)?;
        // On disk before the name is: a crash never leaves a torn file
        // under the final name.
        file.sync_all()?;
        let (from, to) = (c_name(&tmp)?, c_name(name)?);
        // SAFETY: a valid directory descriptor and NUL-terminated names.
        let renamed =
            unsafe { libc::renameat(dir.as_raw_fd(), from.as_ptr(), dir.as_raw_fd(), to.as_ptr()) };
        if renamed != 0 {
            return Err(std::io::Error::last_os_error());
        }
        Ok(())
    })();
    if written.is_err()
        && let Ok(tmp) = c_name(&tmp)
    {
        // SAFETY: as above.
        unsafe { libc::unlinkat(dir.as_raw_fd(), tmp.as_ptr(), 0) };
    }
    Ok(written?)
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
    check_owner_and_mode(meta)
}

/// Owned by this user and writable by nobody else.
fn check_owner_and_mode(meta: &Metadata) -> Result<(), String> {
    let mode = meta.mode() & 0o7777;
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

/// Each ancestor of `dir` is owned by root or this user, and not writable
/// by group or others unless sticky (as `/tmp`): no one else can rename
/// the directory away and put another in its place.
fn check_ancestors(dir: &Path) -> Result<(), String> {
    let dir = std::fs::canonicalize(dir).map_err(|e| e.to_string())?;
    // SAFETY: geteuid has no preconditions and cannot fail.
    let uid = unsafe { libc::geteuid() };
    for ancestor in dir.ancestors().skip(1) {
        let meta = std::fs::metadata(ancestor).map_err(|e| e.to_string())?;
        let mode = meta.mode() & 0o7777;
        let shared = mode & 0o022 != 0 && mode & 0o1000 == 0;
        if (meta.uid() != 0 && meta.uid() != uid) || shared {
            return Err(format!(
                "its ancestor {} (owner uid {}, mode {mode:o}) lets others replace it, and compiled code loaded from it runs in this process",
                ancestor.display(),
                meta.uid()
            ));
        }
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
    weft_api::hex(&digest[..8])
}

#[cfg(test)]
mod tests;
