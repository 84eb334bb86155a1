//! Swaps under load: client traffic to every proxy of a small mesh while
//! the operator pushes and applies new versions one after another; every
//! request that fails (a transport error, or any status but 200) counts.
//!
//! The traffic is a closed loop per connection (each connection sends its
//! next request when the last is answered, after `pace`), on hyper's
//! low-level client, which never retries. It also tells when each proxy
//! serves a version: the answers carry `x-version`, and each cycle waits
//! until every proxy has answered with the new one before the next push.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use crate::http::Conn;
use crate::mesh::Mesh;

/// The longest one cycle may wait for every proxy to serve its version.
const CYCLE_TIMEOUT: Duration = Duration::from_secs(30);
/// Failure messages kept for the report.
const KEPT_ERRORS: usize = 10;

/// What the traffic saw over all cycles.
pub struct Outcome {
    pub cycles: u32,
    /// Cycles whose version did not reach every proxy in time.
    pub timed_out: u32,
    pub requests: u64,
    pub failed: u64,
    /// The first failures, as text.
    pub errors: Vec<String>,
    pub seconds: f64,
    /// Per cycle: `weft apply` exited → all proxies answer with it, ms.
    pub all_after_apply_ms: Vec<f64>,
    /// Per cycle: push start → all proxies answer with it, ms.
    pub all_after_push_ms: Vec<f64>,
}

/// Shared by the traffic tasks.
struct Traffic {
    stop: AtomicBool,
    ok: AtomicU64,
    failed: AtomicU64,
    errors: Mutex<Vec<String>>,
    /// Per proxy: the highest cycle number seen in `x-version`.
    seen: Vec<AtomicU64>,
}

impl Traffic {
    fn fail(&self, what: String) {
        self.failed.fetch_add(1, Ordering::Relaxed);
        let mut errors = self.errors.lock().unwrap_or_else(|e| e.into_inner());
        if errors.len() < KEPT_ERRORS {
            errors.push(what);
        }
    }
}

/// Runs `cycles` push + apply cycles on `mesh` under traffic of
/// `connections` connections per proxy.
pub async fn run(
    mesh: &Mesh,
    cycles: u32,
    connections: usize,
    pace: Duration,
) -> anyhow::Result<Outcome> {
    let traffic = Arc::new(Traffic {
        stop: AtomicBool::new(false),
        ok: AtomicU64::new(0),
        failed: AtomicU64::new(0),
        errors: Mutex::new(Vec::new()),
        seen: mesh.addrs.iter().map(|_| AtomicU64::new(0)).collect(),
    });
    // A hard end for the traffic, whatever happens to the cycles.
    let hard_end = Instant::now() + CYCLE_TIMEOUT * (cycles + 2);
    let mut tasks = Vec::new();
    for (i, &addr) in mesh.addrs.iter().enumerate() {
        for _ in 0..connections {
            let traffic = traffic.clone();
            tasks.push(tokio::spawn(load(addr, i, traffic, pace, hard_end)));
        }
    }
    let started = Instant::now();
    tokio::time::sleep(Duration::from_secs(1)).await;
    let result = cycle(mesh, &traffic, cycles).await;
    // A last second of traffic on the last version.
    tokio::time::sleep(Duration::from_secs(1)).await;
    traffic.stop.store(true, Ordering::Relaxed);
    for task in tasks {
        task.await?;
    }
    let (all_after_apply_ms, all_after_push_ms, timed_out) = result?;
    let ok = traffic.ok.load(Ordering::Relaxed);
    let failed = traffic.failed.load(Ordering::Relaxed);
    let errors = std::mem::take(&mut *traffic.errors.lock().unwrap_or_else(|e| e.into_inner()));
    Ok(Outcome {
        cycles,
        timed_out,
        requests: ok + failed,
        failed,
        errors,
        seconds: started.elapsed().as_secs_f64(),
        all_after_apply_ms,
        all_after_push_ms,
    })
}

type Cycles = (Vec<f64>, Vec<f64>, u32);

async fn cycle(mesh: &Mesh, traffic: &Traffic, cycles: u32) -> anyhow::Result<Cycles> {
    let (mut after_apply, mut after_push, mut timed_out) = (Vec::new(), Vec::new(), 0);
    for k in 1..=cycles {
        let files = mesh.prepare(&format!("swap-{k}"), true)?;
        let timing = mesh.push_apply(&files).await?;
        let deadline = Instant::now() + CYCLE_TIMEOUT;
        let all = loop {
            if traffic
                .seen
                .iter()
                .all(|s| s.load(Ordering::Relaxed) >= u64::from(k))
            {
                break Some(Instant::now());
            }
            if Instant::now() >= deadline {
                break None;
            }
            tokio::time::sleep(Duration::from_millis(1)).await;
        };
        match all {
            Some(at) => {
                after_apply.push(at.duration_since(timing.applied).as_secs_f64() * 1e3);
                after_push.push(at.duration_since(timing.start).as_secs_f64() * 1e3);
            }
            None => {
                timed_out += 1;
                eprintln!("  swap {k}: not served by every proxy within {CYCLE_TIMEOUT:?}");
            }
        }
        if k % 10 == 0 {
            eprintln!(
                "  swap {k}/{cycles}: {} requests, {} failed",
                traffic.ok.load(Ordering::Relaxed) + traffic.failed.load(Ordering::Relaxed),
                traffic.failed.load(Ordering::Relaxed)
            );
        }
    }
    Ok((after_apply, after_push, timed_out))
}

/// One connection's closed loop of requests to proxy `index`.
async fn load(
    addr: SocketAddr,
    index: usize,
    traffic: Arc<Traffic>,
    pace: Duration,
    hard_end: Instant,
) {
    let mut conn: Option<Conn> = None;
    while !traffic.stop.load(Ordering::Relaxed) && Instant::now() < hard_end {
        let c = match conn.as_mut() {
            Some(c) => c,
            None => match Conn::connect(addr).await {
                Ok(c) => conn.insert(c),
                Err(e) => {
                    traffic.fail(format!("proxy {index}: {e:#}"));
                    tokio::time::sleep(Duration::from_millis(10)).await;
                    continue;
                }
            },
        };
        match c.get("/cp-bench/load").await {
            Ok(answer) if answer.status == 200 => {
                traffic.ok.fetch_add(1, Ordering::Relaxed);
                let cycle = answer
                    .version
                    .as_deref()
                    .and_then(|v| v.strip_prefix("swap-"))
                    .and_then(|v| v.parse().ok())
                    .unwrap_or(0);
                traffic.seen[index].fetch_max(cycle, Ordering::Relaxed);
            }
            Ok(answer) => traffic.fail(format!("proxy {index}: status {}", answer.status)),
            Err(e) => {
                traffic.fail(format!("proxy {index}: {e:#}"));
                conn = None;
            }
        }
        if !pace.is_zero() {
            tokio::time::sleep(pace).await;
        }
    }
}
