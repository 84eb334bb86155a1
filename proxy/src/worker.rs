//! Workers: the threads that serve traffic, one per core by default.
//!
//! Each worker runs its own single-threaded async runtime with its own
//! listening sockets (`SO_REUSEPORT`: the kernel spreads connections over
//! the workers) and its own upstream connection pools, so a request is
//! accepted, filtered, forwarded and answered on one thread, with no
//! work-stealing or cross-thread wake-ups on the way. What workers share is
//! read-mostly: the snapshot (swapped whole on reload), the filter instance
//! pools and the metrics registry.

use std::collections::HashSet;
use std::net::TcpListener;
use std::sync::Arc;
use std::time::Duration;

use crate::config::limits::LimitsConfig;
use crate::listener::{Connections, Drain};
use crate::proxy::Proxy;

/// How often a worker's timer anchor fires (see [`anchor_timers`]).
const TIMER_ANCHOR: Duration = Duration::from_secs(1);
/// How often a worker sweeps its upstream connections (see
/// [`crate::upstream::sweep`]).
const POOL_SWEEP: Duration = Duration::from_secs(5);

/// How many workers serve when none is configured: the cores this process
/// may run on (its CPU affinity and cgroup quota count).
pub fn default_count() -> usize {
    std::thread::available_parallelism().map_or(1, |n| n.get())
}

/// Starts one thread per element of `sockets`; worker `w` serves listener
/// `i` of the snapshot on `sockets[w][i]` under `limits` until `drain`
/// starts. Returns each worker's connections, to wait for on shutdown; the
/// threads run until the process exits.
pub fn start(
    sockets: Vec<Vec<TcpListener>>,
    proxy: &Arc<Proxy>,
    limits: &LimitsConfig,
    drain: &Drain,
) -> std::io::Result<Vec<Arc<Connections>>> {
    let mut all = Vec::with_capacity(sockets.len());
    for (w, listeners) in sockets.into_iter().enumerate() {
        let proxy = proxy.clone();
        let conns = Arc::new(Connections::new(
            limits,
            limits.max_connections_per_worker,
            drain,
            "proxy",
            proxy.metrics.clone(),
        ));
        all.push(conns.clone());
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()?;
        std::thread::Builder::new()
            .name(format!("weft-worker-{w}"))
            .spawn(move || {
                // Its filter calls' deadlines then do not count the time it
                // waits for a CPU other processes hold.
                if let Err(e) = crate::filter::deadline::runqueue::register_thread() {
                    tracing::debug!(
                        worker = w,
                        "filter deadlines count run-queue wait on this worker: {e}"
                    );
                }
                runtime.block_on(async move {
                    tokio::spawn(anchor_timers());
                    tokio::spawn(sweep_upstream_pool(proxy.clone()));
                    for (index, listener) in listeners.into_iter().enumerate() {
                        match tokio::net::TcpListener::from_std(listener) {
                            Ok(listener) => {
                                tokio::spawn(crate::listener::serve(
                                    listener,
                                    index,
                                    proxy.clone(),
                                    conns.clone(),
                                ));
                            }
                            Err(e) => tracing::error!(
                                worker = w,
                                listener = index,
                                "cannot serve a listening socket: {e}"
                            ),
                        }
                    }
                    std::future::pending::<()>().await
                })
            })?;
    }
    Ok(all)
}

/// Every [`POOL_SWEEP`], drops this worker's dead upstream connections and
/// those to endpoints the current snapshot no longer has (after a reload).
async fn sweep_upstream_pool(proxy: Arc<Proxy>) {
    loop {
        tokio::time::sleep(POOL_SWEEP).await;
        let snapshot = proxy.snapshot.load();
        let live: HashSet<_> = snapshot
            .listeners
            .iter()
            .flat_map(|l| l.routes.routes())
            .flat_map(|r| r.clusters())
            .flat_map(|cluster| cluster.endpoints())
            .map(|endpoint| endpoint.authority.as_str())
            .collect();
        crate::upstream::sweep(&live);
    }
}

/// Keeps a timer due within [`TIMER_ANCHOR`] on this worker's runtime.
///
/// tokio wakes its driver (an eventfd write, then one more `epoll_wait`)
/// whenever a timer is set earlier than the one the driver will wake up
/// for, or when none is set. Every request sets timers (the upstream
/// timeout, hyper's header-read timeout), so on a single-threaded runtime
/// that is a wasted system call round trip per request. With a timer always
/// due within a second, timers set further out never need the wake-up. The
/// cost is one wake-up per second per idle worker.
async fn anchor_timers() {
    loop {
        tokio::time::sleep(TIMER_ANCHOR).await;
    }
}
