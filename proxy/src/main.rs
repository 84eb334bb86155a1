//! The `weft` command.

use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use arc_swap::ArcSwap;
use clap::{Parser, Subcommand};

use weft::config::{self, ConfigErrors};
use weft::filter::FilterRuntime;
use weft::listener::{Connections, Drain};
use weft::proxy::Proxy;
use weft::reload::Reloader;
use weft::snapshot::Snapshot;
use weft::telemetry::{MetricLimits, Registry};

/// Weft: a WebAssembly-extensible L7 proxy.
#[derive(Parser)]
#[command(version, about)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Serve traffic with a config file.
    Run {
        /// The config file (YAML, or JSON when it ends in .json).
        #[arg(long, short)]
        config: PathBuf,
        /// Reload when the config file or a filter module changes.
        #[arg(long)]
        watch: bool,
        /// Log filter (e.g. `info`, `weft=debug`); overrides WEFT_LOG.
        #[arg(long)]
        log_level: Option<String>,
        /// Worker threads serving traffic [default: the cores weft may run on].
        #[arg(long, env = "WEFT_WORKERS", value_parser = clap::value_parser!(u16).range(1..=1024))]
        workers: Option<u16>,
    },
    /// Check a config file, its filter modules and their configs.
    Validate {
        /// The config file.
        #[arg(long, short)]
        config: PathBuf,
    },
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match cli.command {
        Command::Validate { config } => validate(&config),
        Command::Run {
            config,
            watch,
            log_level,
            workers,
        } => {
            weft::logging::init(log_level.as_deref());
            let workers = workers.map_or_else(weft::worker::default_count, usize::from);
            let result = run(config, watch, workers);
            weft::logging::flush();
            match result {
                Ok(()) => ExitCode::SUCCESS,
                Err(e) => {
                    eprintln!("weft: {e:#}");
                    ExitCode::from(1)
                }
            }
        }
    }
}

/// Builds the snapshot without serving. Prints one line per error.
fn validate(path: &Path) -> ExitCode {
    let result = (|| {
        let loaded = config::load(path)?;
        let runtime = FilterRuntime::new(Arc::new(Registry::default())).map_err(|e| {
            config::ConfigError::new("", format!("cannot start the filter runtime: {e}"))
        })?;
        Snapshot::build(&loaded.config, &loaded.base_dir, &runtime)
    })();
    match result {
        Ok(snapshot) => {
            let routes: usize = snapshot
                .listeners
                .iter()
                .map(|l| l.routes.routes().len())
                .sum();
            println!(
                "{}: ok ({} listeners, {} routes, {} filters)",
                path.display(),
                snapshot.listeners.len(),
                routes,
                snapshot.config.filters.len()
            );
            ExitCode::SUCCESS
        }
        Err(errors) => {
            print_errors(&errors);
            ExitCode::from(1)
        }
    }
}

fn print_errors(errors: &ConfigErrors) {
    weft::logging::flush();
    for e in &errors.0 {
        eprintln!("{e}");
    }
}

/// Serves with `workers` worker threads; this thread runs the control side:
/// the admin API, reloads and signals.
fn run(config_path: PathBuf, watch: bool, workers: usize) -> anyhow::Result<()> {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("cannot start the async runtime")?;
    runtime.block_on(serve(config_path, watch, workers))
}

async fn serve(config_path: PathBuf, watch: bool, workers: usize) -> anyhow::Result<()> {
    let metrics = Arc::new(Registry::default());
    let filters = FilterRuntime::new(metrics.clone())
        .map_err(|e| anyhow::anyhow!("cannot start the filter runtime: {e}"))?;
    let snapshot = config::load(&config_path)
        .and_then(|loaded| Snapshot::build(&loaded.config, &loaded.base_dir, &filters))
        .map_err(|errors| {
            print_errors(&errors);
            anyhow::anyhow!(
                "{}: invalid config ({} errors)",
                config_path.display(),
                errors.0.len()
            )
        })?;
    weft::logging::set_limits(&snapshot.config.log);
    metrics.set_limits(MetricLimits {
        max_series_per_family: snapshot.config.metrics.max_series_per_family,
        max_families_per_filter: snapshot.config.metrics.max_families_per_filter,
        max_label_value_bytes: snapshot.config.metrics.max_label_value_bytes,
    });
    let addrs: Vec<_> = snapshot
        .listeners
        .iter()
        .map(|l| (l.name.clone(), l.addr))
        .collect();
    let admin = snapshot.config.admin.as_ref().map(|a| a.listen.clone());
    let limits = snapshot.config.limits.clone();
    weft::http::body::configure(&limits);
    raise_fd_limit();
    let proxy = Arc::new(Proxy {
        snapshot: ArcSwap::from_pointee(snapshot),
        metrics,
    });
    // sockets[w][i]: worker w's socket for listener i
    let mut sockets: Vec<Vec<std::net::TcpListener>> = (0..workers).map(|_| Vec::new()).collect();
    for (name, addr) in addrs {
        let bound = weft::listener::bind(addr, workers)
            .with_context(|| format!("listener {name:?}: cannot bind {addr}"))?;
        let local = bound[0].local_addr()?;
        tracing::info!(listener = &*name, addr = %local, workers, "listening");
        for (w, socket) in bound.into_iter().enumerate() {
            sockets[w].push(socket);
        }
    }
    let drain = Drain::default();
    let mut connections = weft::worker::start(sockets, &proxy, &limits, &drain)
        .context("cannot start the worker threads")?;
    if let Some(listen) = admin {
        let addr: std::net::SocketAddr = listen.parse().context("admin.listen")?;
        let listener = tokio::net::TcpListener::bind(addr)
            .await
            .with_context(|| format!("admin API: cannot bind {addr}"))?;
        tracing::info!(addr = %listener.local_addr()?, "admin API listening");
        let conns = Arc::new(Connections::new(
            &limits,
            limits.admin_max_connections,
            &drain,
            "admin",
            proxy.metrics.clone(),
        ));
        connections.push(conns.clone());
        tokio::spawn(weft::admin::serve(listener, proxy.clone(), conns));
    }
    // A serving process fills the disk cache of compiled modules (`weft
    // validate` only reads it): the modules built so far are written off the
    // async workers, later ones as reloads compile them.
    let writer = filters.clone();
    tokio::task::spawn_blocking(move || {
        writer.allow_module_cache_writes();
        writer.release_freed_memory();
    });
    let reloader = Arc::new(Reloader::new(config_path, proxy, filters));
    tokio::spawn(reloader.clone().on_sighup());
    if watch {
        tokio::spawn(reloader.watch(Duration::from_millis(500)));
    }
    shutdown_signal().await;
    drain_connections(&drain, &connections, limits.drain_timeout()).await;
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

async fn shutdown_signal() {
    use tokio::signal::unix::{SignalKind, signal};
    let mut term = signal(SignalKind::terminate()).expect("can listen for SIGTERM");
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        _ = term.recv() => {}
    }
}
