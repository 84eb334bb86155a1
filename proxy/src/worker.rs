//! Workers: the threads that serve traffic, one per core by default.
//!
//! Each worker runs its own single-threaded async runtime with its own
//! listening sockets (`SO_REUSEPORT`: the kernel spreads connections over
//! the workers) and its own upstream connection pools, so a request is
//! accepted, filtered, forwarded and answered on one thread, with no
//! work-stealing or cross-thread wake-ups on the way. What workers share is
//! read-mostly: the snapshot (swapped whole on reload), the filter instance
//! pools and the metrics registry.

use std::net::TcpListener;
use std::sync::Arc;

use crate::proxy::Proxy;

/// How many workers serve when none is configured: the cores this process
/// may run on (its CPU affinity and cgroup quota count).
pub fn default_count() -> usize {
    std::thread::available_parallelism().map_or(1, |n| n.get())
}

/// Starts one thread per element of `sockets`; worker `w` serves listener
/// `i` of the snapshot on `sockets[w][i]`. The threads run until the process
/// exits.
pub fn start(sockets: Vec<Vec<TcpListener>>, proxy: &Arc<Proxy>) -> std::io::Result<()> {
    for (w, listeners) in sockets.into_iter().enumerate() {
        let proxy = proxy.clone();
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()?;
        std::thread::Builder::new()
            .name(format!("weft-worker-{w}"))
            .spawn(move || {
                runtime.block_on(async move {
                    for (index, listener) in listeners.into_iter().enumerate() {
                        match tokio::net::TcpListener::from_std(listener) {
                            Ok(listener) => {
                                tokio::spawn(crate::listener::serve(
                                    listener,
                                    index,
                                    proxy.clone(),
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
    Ok(())
}
