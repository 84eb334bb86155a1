//! The processes the bench starts, and what it reads of them in `/proc`.
//!
//! Every process is started with its stdout and stderr in a log file of the
//! run directory (its addresses are read back from there: everything
//! listens on port 0, so the bench never collides with another one on the
//! machine), dies with the bench (`PR_SET_PDEATHSIG`, in case the bench is
//! killed), and is stopped when its [`Proc`] is dropped: SIGTERM, then
//! SIGKILL after a grace period. [`stop_all`] stops many at once, so that
//! fifty proxies draining do not take fifty grace periods.

use std::ffi::OsStr;
use std::fs::File;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};

/// How long a stopped process may take to exit after SIGTERM.
const GRACE: Duration = Duration::from_secs(3);

/// A running process of the bench.
pub struct Proc {
    pub name: String,
    pub log: PathBuf,
    child: Child,
    exited: Option<ExitStatus>,
}

impl Proc {
    /// Starts `program args…` with its output in `log`.
    pub fn spawn<I, S>(name: &str, program: &Path, args: I, log: PathBuf) -> anyhow::Result<Proc>
    where
        I: IntoIterator<Item = S>,
        S: AsRef<OsStr>,
    {
        let child = command(program, args, &log)?
            .spawn()
            .with_context(|| format!("{name}: cannot start {}", program.display()))?;
        Ok(Proc {
            name: name.to_string(),
            log,
            child,
            exited: None,
        })
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Waits until a line of the log contains `needle` and returns it;
    /// fails when the process exits first or `timeout` passes.
    pub async fn wait_log(&mut self, needle: &str, timeout: Duration) -> anyhow::Result<String> {
        let deadline = Instant::now() + timeout;
        loop {
            let text = std::fs::read_to_string(&self.log).unwrap_or_default();
            if let Some(line) = text.lines().find(|l| l.contains(needle)) {
                return Ok(line.to_string());
            }
            if let Some(status) = self.child.try_wait()? {
                self.exited = Some(status);
                bail!(
                    "{} exited ({status}) before logging {needle:?}; its log {}:\n{}",
                    self.name,
                    self.log.display(),
                    tail(&text, 20)
                );
            }
            if Instant::now() >= deadline {
                bail!(
                    "{} did not log {needle:?} within {timeout:?}; its log {}:\n{}",
                    self.name,
                    self.log.display(),
                    tail(&text, 20)
                );
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }

    /// The `addr=IP:PORT` (or `on IP:PORT`) of the first log line holding
    /// `needle`.
    pub async fn wait_addr(
        &mut self,
        needle: &str,
        timeout: Duration,
    ) -> anyhow::Result<std::net::SocketAddr> {
        let line = self.wait_log(needle, timeout).await?;
        let addr = line
            .split_whitespace()
            .filter_map(|w| w.strip_prefix("addr=").or(Some(w)))
            .find_map(|w| w.trim_matches('"').parse().ok())
            .with_context(|| format!("{}: no address in {line:?}", self.name))?;
        Ok(addr)
    }

    /// Sends SIGTERM (once) unless it has exited.
    fn terminate(&mut self) {
        if self.exited.is_none() {
            if let Ok(Some(status)) = self.child.try_wait() {
                self.exited = Some(status);
                return;
            }
            signal(self.child.id(), libc::SIGTERM);
        }
    }

    /// After [`terminate`](Self::terminate): waits until `deadline`, then
    /// kills.
    fn reap(&mut self, deadline: Instant) {
        while self.exited.is_none() {
            match self.child.try_wait() {
                Ok(Some(status)) => self.exited = Some(status),
                Ok(None) if Instant::now() < deadline => {
                    std::thread::sleep(Duration::from_millis(10));
                }
                _ => {
                    let _ = self.child.kill();
                    self.exited = self.child.wait().ok();
                    break;
                }
            }
        }
    }

    /// Stops it: SIGTERM, SIGKILL after the grace period.
    pub fn stop(&mut self) {
        self.terminate();
        self.reap(Instant::now() + GRACE);
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        self.stop();
    }
}

/// Stops every process at once: SIGTERM to all, then one grace period for
/// all, then SIGKILL to those left.
pub fn stop_all(procs: &mut [Proc]) {
    for p in procs.iter_mut() {
        p.terminate();
    }
    let deadline = Instant::now() + GRACE;
    for p in procs.iter_mut() {
        p.reap(deadline);
    }
}

/// Runs `program args…` to its end (at most `timeout`), its output in
/// `log`; fails unless it exits 0. Returns its output. Spawned on the
/// calling thread (so that `PR_SET_PDEATHSIG` holds), awaited on a blocking
/// thread, so that the end is seen when it happens.
pub async fn run_to_end<I, S>(
    program: &Path,
    args: I,
    log: PathBuf,
    timeout: Duration,
) -> anyhow::Result<String>
where
    I: IntoIterator<Item = S>,
    S: AsRef<OsStr>,
{
    let mut child = command(program, args, &log)?
        .spawn()
        .with_context(|| format!("cannot start {}", program.display()))?;
    let pid = child.id();
    let waited =
        tokio::time::timeout(timeout, tokio::task::spawn_blocking(move || child.wait())).await;
    let output = std::fs::read_to_string(&log).unwrap_or_default();
    match waited {
        Err(_) => {
            signal(pid, libc::SIGKILL);
            bail!(
                "{} did not end within {timeout:?}: {output}",
                program.display()
            )
        }
        Ok(joined) => {
            let status = joined.context("waiting thread")??;
            if !status.success() {
                bail!("{} failed ({status}): {output}", program.display());
            }
            Ok(output)
        }
    }
}

fn command<I, S>(program: &Path, args: I, log: &Path) -> anyhow::Result<Command>
where
    I: IntoIterator<Item = S>,
    S: AsRef<OsStr>,
{
    let out = File::create(log).with_context(|| format!("cannot create {}", log.display()))?;
    let mut cmd = Command::new(program);
    cmd.args(args)
        .stdin(Stdio::null())
        .stdout(out.try_clone()?)
        .stderr(out);
    // SAFETY: prctl is async-signal-safe; nothing else runs between fork
    // and exec.
    unsafe {
        use std::os::unix::process::CommandExt;
        cmd.pre_exec(|| {
            if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGTERM) != 0 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
    Ok(cmd)
}

fn signal(pid: u32, sig: libc::c_int) {
    if let Ok(pid) = libc::pid_t::try_from(pid) {
        // SAFETY: kill(2) on a child of ours, not yet reaped.
        unsafe {
            libc::kill(pid, sig);
        }
    }
}

fn tail(text: &str, lines: usize) -> String {
    let all: Vec<&str> = text.lines().collect();
    all[all.len().saturating_sub(lines)..].join("\n")
}

/// `VmRSS` of a process, in KiB.
pub fn rss_kib(pid: u32) -> anyhow::Result<u64> {
    status_kib(pid, "VmRSS")
}

/// A `kB` field of `/proc/PID/status` (`VmRSS`, `VmHWM`…).
pub fn status_kib(pid: u32, field: &str) -> anyhow::Result<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))
        .with_context(|| format!("/proc/{pid}/status"))?;
    status
        .lines()
        .find_map(|l| l.strip_prefix(field)?.strip_prefix(':'))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .with_context(|| format!("no {field} in /proc/{pid}/status"))
}

/// utime + stime of a process (all its threads), in seconds.
pub fn cpu_seconds(pid: u32) -> anyhow::Result<f64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .with_context(|| format!("/proc/{pid}/stat"))?;
    // Fields after the command name, which may hold spaces: state is
    // field 3, utime 14, stime 15.
    let rest = stat
        .rsplit_once(')')
        .map(|(_, r)| r)
        .context("malformed stat")?;
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let ticks = |i: usize| -> anyhow::Result<u64> {
        fields
            .get(i)
            .and_then(|f| f.parse().ok())
            .context("malformed stat")
    };
    let total = ticks(11)? + ticks(12)?;
    // SAFETY: sysconf has no preconditions.
    let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
    Ok(total as f64 / if hz > 0 { hz as f64 } else { 100.0 })
}
