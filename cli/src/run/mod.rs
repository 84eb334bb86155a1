//! `weft run`: serve traffic, with the configuration of a local file or of
//! a control plane (`--control`, in [`from_control`]).
//!
//! Either way the first snapshot is built before anything binds; the
//! listeners and the admin API are bound once, the worker threads start,
//! and this thread runs the control side: the admin API, the source of new
//! snapshots (SIGHUP and `--watch` for a file, the control-plane client
//! otherwise) and the signals that stop the proxy.

mod admin;
mod from_control;

use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use arc_swap::ArcSwap;
use clap::Args;

use weft::admin::{AdminApi, ConfigSource, TrafficDrain};
use weft::config;
use weft::filter::FilterRuntime;
use weft::listener::{Connections, Drain};
use weft::proxy::Proxy;
use weft::reload::Reloader;
use weft::snapshot::{Origin, Snapshot, Source};
use weft::telemetry::{MetricLimits, Registry};

use crate::validate::print_errors;

#[derive(Args)]
pub struct RunArgs {
    /// The config file (YAML, or JSON when it ends in .json). Under
    /// `--control`: the proxy's own part only (listeners' names and
    /// addresses, admin API, module cache, limits, log, metrics).
    #[arg(long, short)]
    config: PathBuf,
    /// Reload when the config file or a filter module changes.
    #[arg(long, conflicts_with = "control")]
    watch: bool,
    /// Log filter (e.g. `info`, `weft=debug`); overrides WEFT_LOG.
    #[arg(long)]
    log_level: Option<String>,
    /// Log lines as `text` or `json` (one object per line).
    #[arg(long, env = "WEFT_LOG_FORMAT", default_value = "text")]
    log_format: weft::logging::LogFormat,
    /// Worker threads serving traffic [default: the cores weft may run on].
    #[arg(long, env = "WEFT_WORKERS", value_parser = clap::value_parser!(u16).range(1..=1024))]
    workers: Option<u16>,
    /// Take routes, filters and clusters from this control plane, e.g.
    /// `http://127.0.0.1:7070`.
    #[arg(long, requires_all = ["node", "group"])]
    control: Option<String>,
    /// This proxy's node name, unique in the mesh (with `--control`).
    #[arg(long, requires = "control")]
    node: Option<String>,
    /// The group whose configuration this proxy serves (with `--control`).
    #[arg(long, requires = "control")]
    group: Option<String>,
    /// Where the modules and the last good snapshot from the control plane
    /// are kept [default: $XDG_CACHE_HOME/weft/control/<node>, else
    /// ~/.cache/weft/control/<node>].
    #[arg(long, requires = "control")]
    cache: Option<PathBuf>,
}

pub fn main(args: RunArgs) -> ExitCode {
    weft::logging::init(args.log_level.as_deref(), args.log_format);
    let workers = args
        .workers
        .map_or_else(weft::worker::default_count, usize::from);
    let result = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("cannot start the async runtime")
        .and_then(|runtime| runtime.block_on(serve(args, workers)));
    weft::logging::flush();
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("weft: {e:#}");
            ExitCode::from(1)
        }
    }
}

/// Serves with `workers` worker threads until SIGTERM or SIGINT, then
/// drains.
async fn serve(args: RunArgs, workers: usize) -> anyhow::Result<()> {
    let metrics = Arc::new(Registry::default());
    let filters = FilterRuntime::new(metrics.clone())
        .map_err(|e| anyhow::anyhow!("cannot start the filter runtime: {e}"))?;
    let mut control = match &args.control {
        None => None,
        Some(url) => {
            let Some(control) = from_control::start(&args, url, filters.clone()).await? else {
                return Ok(()); // stopped before the first snapshot
            };
            Some(control)
        }
    };
    let snapshot = match &mut control {
        Some(control) => control.take_first()?,
        None => {
            let mut snapshot = config::load(&args.config)
                .and_then(|loaded| Snapshot::build(&loaded.config, &loaded.base_dir, &filters))
                .map_err(|errors| {
                    print_errors(&errors);
                    anyhow::anyhow!(
                        "{}: invalid config ({} errors)",
                        args.config.display(),
                        errors.0.len()
                    )
                })?;
            let path = args.config.display().to_string();
            snapshot.origin = Origin::new(1, Source::File { path });
            snapshot
        }
    };
    weft::logging::set_limits(&snapshot.config.log);
    metrics.set_limits(MetricLimits {
        max_series_per_family: snapshot.config.metrics.max_series_per_family,
        max_families_per_filter: snapshot.config.metrics.max_families_per_filter,
        max_label_value_bytes: snapshot.config.metrics.max_label_value_bytes,
    });
    let addrs: Vec<_> = snapshot
        .listeners
        .iter()
        .map(|l| (l.name.clone(), l.addr, l.tls.is_some()))
        .collect();
    let admin = match &snapshot.config.admin {
        Some(admin) => Some(admin::bind(admin).await?),
        None => None,
    };
    let limits = snapshot.config.limits.clone();
    weft::http::body::configure(&limits);
    raise_fd_limit();
    snapshot.start();
    let proxy = Arc::new(Proxy {
        snapshot: ArcSwap::from_pointee(snapshot),
        metrics,
    });
    let upstream = weft::upstream::metrics::UpstreamMetrics::new(&proxy);
    if let Err(e) = proxy.metrics.register(Box::new(upstream)) {
        tracing::warn!("the upstream metrics are not exported: {e}");
    }
    // sockets[w][i]: worker w's socket for listener i
    let mut sockets: Vec<Vec<std::net::TcpListener>> = (0..workers).map(|_| Vec::new()).collect();
    for (name, addr, tls) in addrs {
        let bound = weft::listener::bind(addr, workers)
            .with_context(|| format!("listener {name:?}: cannot bind {addr}"))?;
        let local = bound[0].local_addr()?;
        tracing::info!(listener = &*name, addr = %local, workers, tls, "listening");
        for (w, socket) in bound.into_iter().enumerate() {
            sockets[w].push(socket);
        }
    }
    // Traffic and the admin API drain apart: `POST /drain` stops traffic
    // while the admin API answers; SIGTERM starts both.
    let traffic_drain = Arc::new(Drain::default());
    let admin_drain = Drain::default();
    let traffic = weft::worker::start(sockets, &proxy, &limits, &traffic_drain)
        .context("cannot start the worker threads")?;
    // Certificate files changed on disk are read again off the workers.
    tokio::spawn(weft::tls::watch::watch_files(proxy.clone()));
    // A serving process fills the disk cache of compiled modules (`weft
    // validate` only reads it): the modules built so far are written off the
    // async workers, later ones as snapshots compile them.
    let writer = filters.clone();
    tokio::task::spawn_blocking(move || {
        writer.allow_module_cache_writes();
        writer.release_freed_memory();
    });
    let source = match control {
        Some(control) => {
            let url = control.url().to_string();
            control.serving(proxy.clone());
            ConfigSource::ControlPlane { url }
        }
        None => {
            let reloader = Arc::new(Reloader::new(args.config, proxy.clone(), filters.clone()));
            tokio::spawn(reloader.clone().on_sighup());
            if args.watch {
                tokio::spawn(reloader.clone().watch(Duration::from_millis(500)));
            }
            ConfigSource::File(reloader)
        }
    };
    let mut connections = traffic.clone();
    if let Some(admin) = admin {
        let api = AdminApi {
            proxy: proxy.clone(),
            runtime: filters,
            source,
            traffic: TrafficDrain {
                drain: traffic_drain.clone(),
                connections: traffic,
                timeout: limits.drain_timeout(),
            },
            token: admin.token,
            loopback: admin.listener.local_addr()?.ip().is_loopback(),
        };
        let conns = Arc::new(Connections::new(
            &limits,
            limits.admin_max_connections,
            &admin_drain,
            "admin",
            proxy.metrics.clone(),
        ));
        connections.push(conns.clone());
        tokio::spawn(weft::admin::serve(admin.listener, Arc::new(api), conns));
    }
    tokio::spawn(reopen_log_files_on_sigusr1());
    shutdown_signal().await;
    admin_drain.start();
    drain_connections(&traffic_drain, &connections, limits.drain_timeout()).await;
    Ok(())
}

/// Stops accepting (the listening sockets close), shuts every connection
/// down gracefully (HTTP/1 answers with `Connection: close`, HTTP/2 gets
/// GOAWAY) and waits up to `timeout` for the requests in flight to finish.
async fn drain_connections(drain: &Drain, connections: &[Arc<Connections>], timeout: Duration) {
    let open = |conns: &[Arc<Connections>]| conns.iter().map(|c| c.open()).sum::<usize>();
    tracing::info!(
        connections = open(connections),
        timeout_ms = timeout.as_millis() as u64,
        "shutting down: draining connections"
    );
    drain.start();
    let closed = async {
        for conns in connections {
            conns.closed().await;
        }
    };
    match tokio::time::timeout(timeout, closed).await {
        Ok(()) => tracing::info!("drained: every connection closed"),
        Err(_) => tracing::warn!(
            connections = open(connections),
            "drain timeout (limits.drain_timeout_ms): closing the connections still open"
        ),
    }
}

/// Raises the soft limit on open files to the hard limit: every client and
/// upstream connection is a descriptor.
fn raise_fd_limit() {
    let mut limit = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit and setrlimit only read and write `limit`.
    unsafe {
        if libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit) != 0 || limit.rlim_cur >= limit.rlim_max
        {
            return;
        }
        let soft = limit.rlim_cur;
        limit.rlim_cur = limit.rlim_max;
        if libc::setrlimit(libc::RLIMIT_NOFILE, &limit) == 0 {
            tracing::debug!(from = soft, to = limit.rlim_max, "open files limit raised");
        } else {
            tracing::warn!(
                limit = soft,
                "cannot raise the open files limit: {}",
                std::io::Error::last_os_error()
            );
        }
    }
}

/// Reopens the filters' log files on every SIGUSR1 (after logrotate moved
/// them).
async fn reopen_log_files_on_sigusr1() {
    use tokio::signal::unix::{SignalKind, signal};
    let Ok(mut usr1) = signal(SignalKind::user_defined1()) else {
        tracing::warn!("cannot listen for SIGUSR1: filter log files will not be reopened");
        return;
    };
    while usr1.recv().await.is_some() {
        let failed = weft::logging::files::reopen_all();
        for (path, e) in &failed {
            tracing::error!(path = %path.display(), "SIGUSR1: cannot reopen the log file, still writing to the old one: {e}");
        }
        tracing::info!(failed = failed.len(), "SIGUSR1: filter log files reopened");
    }
}

/// Completes on SIGTERM or SIGINT.
pub async fn shutdown_signal() {
    use tokio::signal::unix::{SignalKind, signal};
    let mut term = signal(SignalKind::terminate()).expect("can listen for SIGTERM");
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        _ = term.recv() => {}
    }
}
