//! `weft-cp-bench`: the control plane's benchmark, on real processes.
//!
//! It measures what an operator and a mesh see: how long `weft push` +
//! `weft apply` take to reach every proxy (10 and 50 proxies), what
//! `weft control` costs with 50 idle proxies connected, how much memory
//! the control-plane client adds to a proxy, and whether swapping versions
//! one after another under traffic fails any request. Everything runs on
//! 127.0.0.1 on port 0 (addresses read back from the logs), every wait is
//! bounded, and every process is stopped at the end, also on error or
//! Ctrl-C. The figures go to stdout and into `bench/RESULTS.md` between
//! `<!-- control-plane:begin -->` and `<!-- control-plane:end -->`.
//!
//! ```text
//! cargo build --release -p weft-cli -p weft-demo-upstream -p weft-cp-bench && make filters
//! target/release/weft-cp-bench            # the full measurement (about 5 minutes)
//! target/release/weft-cp-bench --quick    # 3 proxies, 2 pushes, 3 swaps: a smoke test
//! ```

mod converge;
mod http;
mod memory;
mod mesh;
mod procs;
mod report;
mod swaps;

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::Context;
use clap::Parser;

use crate::mesh::{Bins, Mesh, ModuleCache};
use crate::report::{Convergence, Report};

/// The control plane's benchmark: convergence, idle cost, client memory,
/// swaps under load.
#[derive(Parser)]
#[command(about)]
struct Args {
    /// Smoke test: 3 proxies, 2 pushes, a 2 s idle window, 1 RSS round, 3
    /// swaps; RESULTS.md is left alone unless --out is given.
    #[arg(long)]
    quick: bool,
    /// Mesh sizes for convergence, comma-separated [default: 10,50]; the
    /// idle cost is read on the largest.
    #[arg(long, value_delimiter = ',')]
    proxies: Option<Vec<usize>>,
    /// Push + apply cycles per mesh size [default: 10].
    #[arg(long)]
    pushes: Option<u32>,
    /// Pushes of the same module (only the config changes) on the largest
    /// mesh, after the others [default: as --pushes; 0: none].
    #[arg(long)]
    config_only_pushes: Option<u32>,
    /// Milliseconds between two polls of one proxy.
    #[arg(long, default_value_t = 5)]
    poll_ms: u64,
    /// Where proxies keep compiled modules [default: one shared directory,
    /// as proxies of one user on one machine share the default one].
    #[arg(long, value_enum, default_value_t = ModuleCache::Shared)]
    module_cache: ModuleCache,
    /// Seconds over which the idle control plane's CPU is read [default: 10].
    #[arg(long)]
    idle_window: Option<u64>,
    /// Rounds of the client-memory comparison [default: 3].
    #[arg(long)]
    rss_rounds: Option<u32>,
    /// Requests sent to each proxy before its VmRSS is read.
    #[arg(long, default_value_t = 300)]
    rss_requests: u32,
    /// Push + apply cycles under load [default: 100].
    #[arg(long)]
    swaps: Option<u32>,
    /// Proxies under load during the swaps.
    #[arg(long, default_value_t = 3)]
    swap_proxies: usize,
    /// Keep-alive connections of client traffic to each of them.
    #[arg(long, default_value_t = 2)]
    load_connections: usize,
    /// Milliseconds a connection waits after an answer before its next
    /// request (0: back to back).
    #[arg(long, default_value_t = 1)]
    load_pace_ms: u64,
    /// Parts to run, comma-separated: converge, idle, rss, swaps [default: all].
    #[arg(long, value_delimiter = ',')]
    only: Option<Vec<String>>,
    /// Where to write the section [default: bench/RESULTS.md; none with --quick].
    #[arg(long)]
    out: Option<PathBuf>,
    /// Print the section only.
    #[arg(long)]
    no_write: bool,
    /// The cargo target directory holding weft, weft-demo-upstream and the
    /// filters [default: target/ of the workspace].
    #[arg(long)]
    target_dir: Option<PathBuf>,
    /// Keep the run directory (logs, configs, modules); always kept after a
    /// failure.
    #[arg(long)]
    keep: bool,
}

/// The workspace this bench was built in.
fn workspace_root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../..")
}

fn main() -> ExitCode {
    let args = Args::parse();
    let run_dir = std::env::temp_dir().join(format!("weft-cp-bench-{}", std::process::id()));
    if let Err(e) = std::fs::create_dir_all(&run_dir) {
        eprintln!("weft-cp-bench: cannot create {}: {e}", run_dir.display());
        return ExitCode::FAILURE;
    }
    // Nothing the bench starts may read or write the user's caches.
    // SAFETY: no other thread runs yet.
    unsafe {
        std::env::set_var("WEFT_MODULE_CACHE", run_dir.join("compiled/default"));
        std::env::set_var("XDG_CACHE_HOME", run_dir.join("xdg-cache"));
    }
    let keep = args.keep;
    let result = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("cannot start the async runtime")
        .and_then(|runtime| {
            runtime.block_on(async {
                tokio::select! {
                    result = run(args, &run_dir) => result,
                    signal = interrupted() => Err(anyhow::anyhow!("interrupted ({signal})")),
                }
            })
        });
    match result {
        Ok(()) => {
            if keep {
                eprintln!("run directory kept: {}", run_dir.display());
            } else {
                let _ = std::fs::remove_dir_all(&run_dir);
            }
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("weft-cp-bench: {e:#}\n(logs kept in {})", run_dir.display());
            ExitCode::FAILURE
        }
    }
}

/// SIGINT or SIGTERM: the processes are stopped as `run` is dropped.
async fn interrupted() -> &'static str {
    use tokio::signal::unix::{SignalKind, signal};
    let (Ok(mut int), Ok(mut term)) = (
        signal(SignalKind::interrupt()),
        signal(SignalKind::terminate()),
    ) else {
        return std::future::pending().await;
    };
    tokio::select! {
        _ = int.recv() => "SIGINT",
        _ = term.recv() => "SIGTERM",
    }
}

async fn run(args: Args, run_dir: &std::path::Path) -> anyhow::Result<()> {
    let root = workspace_root();
    let bins = Bins::find(&args.target_dir.clone().unwrap_or(root.join("target")))?;
    let q = args.quick;
    let proxies = args
        .proxies
        .clone()
        .unwrap_or(if q { vec![3] } else { vec![10, 50] });
    let pushes = args.pushes.unwrap_or(if q { 2 } else { 10 });
    let config_only_pushes = args.config_only_pushes.unwrap_or(pushes);
    let idle_window = Duration::from_secs(args.idle_window.unwrap_or(if q { 2 } else { 10 }));
    let rss_rounds = args.rss_rounds.unwrap_or(if q { 1 } else { 3 });
    let swap_cycles = args.swaps.unwrap_or(if q { 3 } else { 100 });
    let wants = |part: &str| {
        args.only
            .as_ref()
            .is_none_or(|o| o.iter().any(|p| p == part))
    };
    let poll = Duration::from_millis(args.poll_ms);

    let mut report = Report {
        quick: q,
        poll_ms: args.poll_ms,
        rss_requests: args.rss_requests,
        module_cache: match args.module_cache {
            ModuleCache::PerProxy => "a per-proxy".into(),
            ModuleCache::Shared => "one shared".into(),
        },
        ..Report::default()
    };
    report.context = context(&root);
    let load_before = loadavg();

    let (_upstream, upstream) = mesh::start_upstream(&bins, run_dir).await?;
    if wants("converge") || wants("idle") {
        let largest = proxies.iter().copied().max().unwrap_or(0);
        for &n in &proxies {
            eprintln!("convergence: starting a control plane and {n} proxies");
            let mesh = Mesh::start(
                &bins,
                run_dir.join(format!("converge-{n}")),
                upstream,
                n,
                args.module_cache,
            )
            .await?;
            if wants("converge") {
                let samples = converge::run(&mesh, &format!("n{n}"), pushes, poll, true).await?;
                report.convergence.push(Convergence {
                    proxies: n,
                    new_module: true,
                    samples,
                });
                if n == largest && config_only_pushes > 0 {
                    eprintln!("convergence: {n} proxies, the same module, a new config");
                    let label = format!("n{n}-config");
                    let samples =
                        converge::run(&mesh, &label, config_only_pushes, poll, false).await?;
                    report.convergence.push(Convergence {
                        proxies: n,
                        new_module: false,
                        samples,
                    });
                }
            }
            if n == largest && wants("idle") {
                eprintln!(
                    "idle: {n} proxies connected, reading the control plane over {idle_window:?}"
                );
                report.idle = Some(memory::idle(&mesh, Duration::from_secs(3), idle_window).await?);
            }
        }
    }
    if wants("rss") {
        eprintln!(
            "client memory: {rss_rounds} round(s), {} requests each",
            args.rss_requests
        );
        let mesh =
            Mesh::start(&bins, run_dir.join("rss"), upstream, 0, ModuleCache::Shared).await?;
        report.rss = memory::client_rss(&mesh, upstream, rss_rounds, args.rss_requests).await?;
    }
    if wants("swaps") {
        eprintln!(
            "swaps: {} proxies under load, {swap_cycles} push + apply cycles",
            args.swap_proxies
        );
        let mesh = Mesh::start(
            &bins,
            run_dir.join("swaps"),
            upstream,
            args.swap_proxies,
            args.module_cache,
        )
        .await?;
        let pace = Duration::from_millis(args.load_pace_ms);
        let outcome = swaps::run(&mesh, swap_cycles, args.load_connections, pace).await?;
        report.swaps = Some((
            args.swap_proxies,
            args.load_connections,
            args.load_pace_ms,
            outcome,
        ));
    }
    report.context.push(format!(
        "Load average (1, 5, 15 min) before: {load_before}; after: {}.",
        loadavg()
    ));

    let section = report.markdown();
    println!("{section}");
    let out = match (&args.out, q) {
        (Some(out), _) => Some(out.clone()),
        (None, false) => Some(root.join("bench/RESULTS.md")),
        (None, true) => None,
    };
    if let Some(out) = out.filter(|_| !args.no_write) {
        report::write_section(&out, &section)?;
        eprintln!("section written to {}", out.display());
    }
    Ok(())
}

/// Date, commit, machine and command of this run, for the report.
fn context(root: &std::path::Path) -> Vec<String> {
    let output = |program: &str, a: &[&str]| {
        std::process::Command::new(program)
            .args(a)
            .current_dir(root)
            .output()
            .ok()
            .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string())
            .unwrap_or_default()
    };
    let date = output("date", &["-u", "+%Y-%m-%d %H:%M UTC"]);
    let commit = output("git", &["rev-parse", "--short", "HEAD"]);
    let dirty = !output("git", &["status", "--porcelain", "--untracked-files=no"]).is_empty();
    let cores = std::thread::available_parallelism().map_or(0, usize::from);
    let command: Vec<String> = std::env::args().collect();
    vec![
        format!(
            "{date}, commit {commit}{}, {cores} cores.",
            if dirty { " (with uncommitted changes)" } else { "" }
        ),
        format!("Command: `{}`.", command.join(" ")),
        "`weft control` and the proxies with their defaults (heartbeats every 5 s); no token (loopback).".into(),
    ]
}

fn loadavg() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .map(|l| l.split_whitespace().take(3).collect::<Vec<_>>().join(" "))
        .unwrap_or_default()
}
