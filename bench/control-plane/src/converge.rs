//! Convergence: from `weft push` + `weft apply` until every proxy serves
//! the new version, seen by requests.
//!
//! Before each push, one poller per proxy starts sending `GET` on its own
//! keep-alive connection every `poll` interval (concurrently, all proxies
//! at once) and stops at the first answer carrying the new `x-version`.
//! The last proxy's first such answer is the moment all serve it.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use anyhow::bail;

use crate::http::Conn;
use crate::mesh::Mesh;

/// The longest one push may take to reach every proxy.
const PUSH_TIMEOUT: Duration = Duration::from_secs(60);
/// The pause between two pushes, for the proxies to finish with the last.
const SETTLE: Duration = Duration::from_millis(500);

/// One push, in milliseconds.
pub struct Sample {
    /// Push start → `weft push` exited.
    pub push_ms: f64,
    /// Push start → `weft apply` exited.
    pub apply_ms: f64,
    /// `weft apply` exited → the first proxy serves the new version.
    pub first_ms: f64,
    /// `weft apply` exited → all proxies serve it.
    pub all_after_apply_ms: f64,
    /// Push start → all proxies serve it.
    pub all_after_push_ms: f64,
    /// Requests the pollers sent for this push.
    pub polls: u64,
    /// Requests that failed (transport error or not 200).
    pub poll_errors: u64,
}

/// What a poller of one proxy saw.
struct Polled {
    conn: Option<Conn>,
    served_at: Option<Instant>,
    requests: u64,
    errors: u64,
    last_error: Option<String>,
}

/// Makes `pushes` push + apply cycles on `mesh`, each timed until every
/// proxy serves it; each pushes a new module, or with `new_module` false
/// the one the registry has (only the config changes).
pub async fn run(
    mesh: &Mesh,
    label: &str,
    pushes: u32,
    poll: Duration,
    new_module: bool,
) -> anyhow::Result<Vec<Sample>> {
    let mut conns: Vec<Option<Conn>> = Vec::new();
    for &addr in &mesh.addrs {
        conns.push(Some(Conn::connect(addr).await?));
    }
    let mut samples = Vec::new();
    for k in 1..=pushes {
        let tag = format!("{label}-{k}");
        let files = mesh.prepare(&tag, new_module)?;
        let deadline = Instant::now() + PUSH_TIMEOUT;
        let pollers: Vec<_> = mesh
            .addrs
            .iter()
            .zip(conns.iter_mut())
            .map(|(&addr, conn)| {
                tokio::spawn(poll_until(addr, conn.take(), tag.clone(), poll, deadline))
            })
            .collect();
        let timing = match mesh.push_apply(&files).await {
            Ok(timing) => timing,
            Err(e) => {
                pollers.iter().for_each(|p| p.abort());
                return Err(e);
            }
        };
        let mut polled = Vec::new();
        for poller in pollers {
            polled.push(poller.await?);
        }
        let (mut polls, mut poll_errors) = (0, 0);
        let mut served = Vec::new();
        let mut last_error = None;
        for (i, p) in polled.into_iter().enumerate() {
            polls += p.requests;
            poll_errors += p.errors;
            if let Some(e) = &p.last_error {
                last_error = Some(format!("{}: {e}", mesh.proxies[i].name));
            }
            let Some(at) = p.served_at else {
                bail!(
                    "push {tag}: proxy {} ({}) did not serve it within {PUSH_TIMEOUT:?} ({} failed requests, the last: {})",
                    mesh.proxies[i].name,
                    mesh.addrs[i],
                    p.errors,
                    p.last_error.unwrap_or_else(|| "none".into())
                );
            };
            served.push(at);
            conns[i] = p.conn;
        }
        let first = served.iter().min().copied().unwrap_or(timing.applied);
        let last = served.iter().max().copied().unwrap_or(timing.applied);
        let ms = |later: Instant, earlier: Instant| signed_ms(later, earlier);
        let sample = Sample {
            push_ms: ms(timing.pushed, timing.start),
            apply_ms: ms(timing.applied, timing.start),
            first_ms: ms(first, timing.applied),
            all_after_apply_ms: ms(last, timing.applied),
            all_after_push_ms: ms(last, timing.start),
            polls,
            poll_errors,
        };
        eprintln!(
            "  {tag}: push {:.0} ms, apply returned at {:.0} ms, first proxy {:+.0} ms, all {} {:+.0} ms (push start → all: {:.0} ms){}",
            sample.push_ms,
            sample.apply_ms,
            sample.first_ms,
            mesh.addrs.len(),
            sample.all_after_apply_ms,
            sample.all_after_push_ms,
            if poll_errors > 0 {
                format!(
                    ", {poll_errors} failed polls (the last: {})",
                    last_error.as_deref().unwrap_or("?")
                )
            } else {
                String::new()
            }
        );
        samples.push(sample);
        tokio::time::sleep(SETTLE).await;
    }
    Ok(samples)
}

/// Polls `addr` until it answers with `x-version: tag` (or `deadline`).
async fn poll_until(
    addr: SocketAddr,
    mut conn: Option<Conn>,
    tag: String,
    poll: Duration,
    deadline: Instant,
) -> Polled {
    let mut polled = Polled {
        conn: None,
        served_at: None,
        requests: 0,
        errors: 0,
        last_error: None,
    };
    while Instant::now() < deadline {
        let c = match conn.as_mut() {
            Some(c) => c,
            None => match Conn::connect(addr).await {
                Ok(c) => conn.insert(c),
                Err(e) => {
                    polled.errors += 1;
                    polled.last_error = Some(format!("{e:#}"));
                    tokio::time::sleep(poll).await;
                    continue;
                }
            },
        };
        polled.requests += 1;
        match c.get("/cp-bench").await {
            Ok(answer) if answer.status == 200 => {
                if answer.version.as_deref() == Some(tag.as_str()) {
                    polled.served_at = Some(Instant::now());
                    break;
                }
            }
            Ok(answer) => {
                polled.errors += 1;
                polled.last_error = Some(format!("status {}", answer.status));
            }
            Err(e) => {
                polled.errors += 1;
                polled.last_error = Some(format!("{e:#}"));
                conn = None;
            }
        }
        tokio::time::sleep(poll).await;
    }
    polled.conn = conn;
    polled
}

/// `later - earlier` in ms, negative when `later` came first.
fn signed_ms(later: Instant, earlier: Instant) -> f64 {
    match later.checked_duration_since(earlier) {
        Some(d) => d.as_secs_f64() * 1e3,
        None => -(earlier.duration_since(later).as_secs_f64() * 1e3),
    }
}
