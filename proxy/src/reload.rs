//! Replacing the snapshot while traffic flows: on SIGHUP, or when `--watch`
//! sees the config or a filter module change. The new snapshot is built off
//! the request path (compiling and initialising filters), then swapped in
//! atomically; requests in flight finish on the snapshot they started on.
//! An invalid config is rejected with the same errors as `weft validate`
//! and the old snapshot keeps serving.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, SystemTime};

use crate::config::{self, ConfigError, ConfigErrors};
use crate::filter::FilterRuntime;
use crate::proxy::Proxy;
use crate::snapshot::{Origin, Snapshot, Source};

/// Rebuilds and swaps snapshots from the config file.
pub struct Reloader {
    path: PathBuf,
    proxy: Arc<Proxy>,
    runtime: Arc<FilterRuntime>,
    version: AtomicU64,
    lock: tokio::sync::Mutex<()>,
}

impl Reloader {
    /// A reloader for the config at `path`, whose version 1 is serving.
    pub fn new(path: PathBuf, proxy: Arc<Proxy>, runtime: Arc<FilterRuntime>) -> Self {
        Self {
            path,
            proxy,
            runtime,
            version: AtomicU64::new(1),
            lock: tokio::sync::Mutex::new(()),
        }
    }

    /// Builds a snapshot from the file and swaps it in; returns its version.
    pub async fn reload(&self) -> Result<u64, ConfigErrors> {
        let _one_at_a_time = self.lock.lock().await;
        let (path, runtime) = (self.path.clone(), self.runtime.clone());
        let built = tokio::task::spawn_blocking(move || {
            let loaded = config::load(&path)?;
            let built = Snapshot::build(&loaded.config, &loaded.base_dir, &runtime);
            runtime.release_freed_memory();
            built
        })
        .await
        .unwrap_or_else(|e| Err(ConfigError::new("", format!("build panicked: {e}")).into()))?;
        let source = Source::File {
            path: self.path.display().to_string(),
        };
        self.swap_next(built, source)
    }

    /// Replaces filter `name`'s module by the component at `module` in the
    /// serving config, builds that snapshot and swaps it in, as a reload
    /// does; returns its version. The file is not changed: the next reload
    /// from it serves the file's module again.
    pub async fn replace_module(
        &self,
        name: &str,
        module: PathBuf,
        sha256: &str,
    ) -> Result<u64, ConfigErrors> {
        let _one_at_a_time = self.lock.lock().await;
        let mut config = self.proxy.snapshot.load().config.clone();
        let Some(filter) = config.filters.get_mut(name) else {
            return Err(ConfigError::new(format!("filters.{name}"), "no such filter").into());
        };
        filter.path = module;
        let base_dir = self
            .path
            .parent()
            .filter(|p| !p.as_os_str().is_empty())
            .map_or_else(|| PathBuf::from("."), Path::to_path_buf);
        let runtime = self.runtime.clone();
        let built = tokio::task::spawn_blocking(move || {
            let built = Snapshot::build(&config, &base_dir, &runtime);
            runtime.release_freed_memory();
            built
        })
        .await
        .unwrap_or_else(|e| Err(ConfigError::new("", format!("build panicked: {e}")).into()))?;
        let source = Source::AdminUpload {
            path: self.path.display().to_string(),
            filter: name.to_string(),
            sha256: sha256.to_string(),
        };
        self.swap_next(built, source)
    }

    /// Swaps `built` in as the next version (the caller holds `lock`).
    fn swap_next(&self, mut built: Snapshot, source: Source) -> Result<u64, ConfigErrors> {
        let version = self.version.load(Ordering::Relaxed) + 1;
        built.origin = Origin::new(version, source);
        swap(&self.proxy, &self.runtime, built)?;
        self.version.store(version, Ordering::Relaxed);
        Ok(version)
    }

    /// Reloads and logs the outcome.
    pub async fn reload_and_log(&self, cause: &str) {
        let result = self.reload().await;
        let outcome = if result.is_ok() { "ok" } else { "rejected" };
        let _ = self.proxy.metrics.counter_add(
            "weft_config_reloads_total",
            vec![("result".into(), outcome.into())],
            1,
        );
        match result {
            Ok(version) => tracing::info!(version, cause, "config reloaded"),
            Err(errors) => {
                for e in &errors.0 {
                    tracing::error!(cause, "config rejected, previous config keeps serving: {e}");
                }
            }
        }
    }

    /// Reloads on every SIGHUP, forever.
    pub async fn on_sighup(self: Arc<Self>) -> std::io::Result<()> {
        use tokio::signal::unix::{SignalKind, signal};
        let mut hup = signal(SignalKind::hangup())?;
        while hup.recv().await.is_some() {
            self.reload_and_log("SIGHUP").await;
        }
        Ok(())
    }

    /// Polls the config file and the filter modules it names; reloads when
    /// one changes.
    pub async fn watch(self: Arc<Self>, every: Duration) {
        let mut seen = self.fingerprint();
        loop {
            tokio::time::sleep(every).await;
            let now = self.fingerprint();
            if now != seen {
                seen = now;
                self.reload_and_log("file change").await;
            }
        }
    }

    /// Modification time and size of the config and every module it names.
    fn fingerprint(&self) -> Vec<Option<(SystemTime, u64)>> {
        let stat = |p: &Path| {
            std::fs::metadata(p)
                .ok()
                .and_then(|m| Some((m.modified().ok()?, m.len())))
        };
        let mut out = vec![stat(&self.path)];
        if let Ok(loaded) = config::load(&self.path) {
            out.extend(
                loaded
                    .config
                    .filters
                    .values()
                    .map(|f| stat(&loaded.base_dir.join(&f.path))),
            );
        }
        out
    }
}

/// Swaps `built` in for the snapshot `proxy` serves, as every reload does:
/// refused when it would change the listeners or the admin API (bound once
/// at start); a warning for sections read only at start; the modules no
/// snapshot uses any more are dropped from the runtime's cache.
pub fn swap(proxy: &Proxy, runtime: &FilterRuntime, built: Snapshot) -> Result<(), ConfigErrors> {
    let serving = proxy.snapshot.load();
    check_listeners_unchanged(&serving, &built)?;
    warn_of_settings_read_at_start(&serving.config, &built.config);
    built.start();
    proxy.snapshot.store(Arc::new(built));
    runtime.evict_unused();
    Ok(())
}

/// Listeners (and the admin API) are bound once at start: a reload may not
/// add, remove or move one.
fn check_listeners_unchanged(old: &Snapshot, new: &Snapshot) -> Result<(), ConfigErrors> {
    if old.config.admin != new.config.admin {
        return Err(
            ConfigError::new("admin", "changing the admin API's address needs a restart").into(),
        );
    }
    let old_l: Vec<_> = old
        .config
        .listeners
        .iter()
        .map(|l| (&l.name, &l.listen))
        .collect();
    let new_l: Vec<_> = new
        .config
        .listeners
        .iter()
        .map(|l| (&l.name, &l.listen))
        .collect();
    if old_l == new_l {
        return Ok(());
    }
    Err(ConfigError::new(
        "listeners",
        format!("changing listeners needs a restart (serving {old_l:?}, config has {new_l:?})"),
    )
    .into())
}

/// The sections read once at start keep their values across reloads: says
/// so when a reload changes one, so the change is not thought applied.
fn warn_of_settings_read_at_start(serving: &config::Config, new: &config::Config) {
    for (section, changed) in [
        ("limits", serving.limits != new.limits),
        ("log", serving.log != new.log),
        ("metrics", serving.metrics != new.metrics),
    ] {
        if changed {
            tracing::warn!(
                section,
                "the {section}: section changed; it is read at start, so the proxy keeps the values it started with until it restarts"
            );
        }
    }
}
