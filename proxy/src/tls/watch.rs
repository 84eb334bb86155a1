//! The task that reloads listeners' certificate, key and CA files when they
//! change (`tls.reload_interval_ms`).

use std::sync::Arc;
use std::time::{Duration, Instant};

use super::Refresh;
use crate::proxy::Proxy;

/// How long the watcher sleeps when no listener of the serving snapshot
/// watches files (a reload may add one).
const IDLE_CHECK: Duration = Duration::from_secs(1);

/// Checks the files of the serving snapshot's TLS listeners, each at its
/// own interval, until the process exits. The reading and parsing runs on
/// the blocking pool, never on an async worker.
pub async fn watch_files(proxy: Arc<Proxy>) {
    loop {
        let next = {
            let snapshot = proxy.snapshot.load();
            snapshot
                .listeners
                .iter()
                .filter_map(|l| l.tls.as_ref()?.next_check())
                .min()
        };
        let Some(next) = next else {
            // No listener watches files: nothing to read.
            tokio::time::sleep(IDLE_CHECK).await;
            continue;
        };
        let wait = next
            .saturating_duration_since(Instant::now())
            .min(IDLE_CHECK);
        tokio::time::sleep(wait).await;
        let proxy = proxy.clone();
        let _ = tokio::task::spawn_blocking(move || refresh_all(&proxy)).await;
    }
}

/// Refreshes each TLS listener whose check is due; logs and counts what
/// changed.
fn refresh_all(proxy: &Proxy) {
    let snapshot = proxy.snapshot.load_full();
    let now = Instant::now();
    for (i, listener) in snapshot.listeners.iter().enumerate() {
        let Some(tls) = &listener.tls else {
            continue;
        };
        let outcome = match tls.refresh(now) {
            Refresh::Unchanged => continue,
            Refresh::Reloaded => {
                tracing::info!(
                    listener = &*listener.name,
                    "TLS files changed: new connections get the new certificates"
                );
                "reloaded"
            }
            Refresh::Failed(error) => {
                tracing::error!(
                    listener = &*listener.name,
                    "TLS files changed but cannot be used, the previous certificates keep serving (tried again on each check): listeners[{i}].tls.{error}"
                );
                "rejected"
            }
        };
        let _ = proxy.metrics.counter_add(
            "weft_tls_file_reloads_total",
            vec![
                ("listener".into(), listener.name.to_string()),
                ("outcome".into(), outcome.into()),
            ],
            1,
        );
    }
}
