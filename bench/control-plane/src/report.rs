//! The figures as a Markdown section, and its place in `bench/RESULTS.md`:
//! between [`BEGIN`] and [`END`], replacing an earlier one, so that
//! `bench/run.sh` (which keeps that section when it rewrites the file) and
//! this bench each own their part.

use std::fmt::Write as _;
use std::path::Path;

use anyhow::Context;

use crate::converge::Sample;
use crate::memory::{Idle, RssPair};
use crate::swaps::Outcome;

pub const BEGIN: &str = "<!-- control-plane:begin -->";
pub const END: &str = "<!-- control-plane:end -->";

/// The product's stated targets.
const TARGET_MEDIAN_MS: f64 = 1000.0;
const TARGET_CLIENT_MIB: f64 = 2.0;

/// Median, p90 and max (nearest rank) of a non-empty sample.
pub struct Stats {
    pub median: f64,
    pub p90: f64,
    pub max: f64,
}

pub fn stats(values: &[f64]) -> Stats {
    let mut v = values.to_vec();
    v.sort_by(f64::total_cmp);
    let at = |p: f64| {
        if v.is_empty() {
            return f64::NAN;
        }
        let rank = (p * v.len() as f64).ceil() as usize;
        v[rank.clamp(1, v.len()) - 1]
    };
    Stats {
        median: at(0.5),
        p90: at(0.9),
        max: v.last().copied().unwrap_or(f64::NAN),
    }
}

/// The pushes to one mesh.
pub struct Convergence {
    pub proxies: usize,
    /// A new module each push, or the same module (a config change only).
    pub new_module: bool,
    pub samples: Vec<Sample>,
}

/// Everything one run measured, and how it ran.
#[derive(Default)]
pub struct Report {
    /// Lines describing the run (date, commit, machine, command).
    pub context: Vec<String>,
    pub quick: bool,
    pub poll_ms: u64,
    pub module_cache: String,
    /// Per mesh size and kind of push: its pushes.
    pub convergence: Vec<Convergence>,
    pub idle: Option<Idle>,
    pub rss: Vec<RssPair>,
    /// Requests each proxy of the RSS comparison served before the reading.
    pub rss_requests: u32,
    pub swaps: Option<(usize, usize, u64, Outcome)>,
}

fn triple(s: &Stats) -> String {
    format!("{:.0} / {:.0} / {:.0}", s.median, s.p90, s.max)
}

fn mib(kib: u64) -> f64 {
    kib as f64 / 1024.0
}

fn verdict(ok: bool) -> &'static str {
    if ok { "met" } else { "**not met**" }
}

impl Report {
    /// The section, markers included.
    pub fn markdown(&self) -> String {
        let mut out = String::new();
        let w = &mut out;
        let _ = writeln!(w, "{BEGIN}");
        let _ = writeln!(
            w,
            "## Control plane{}\n",
            if self.quick {
                " (quick run: not a measurement)"
            } else {
                ""
            }
        );
        let _ = writeln!(
            w,
            "`weft-cp-bench` ([bench/control-plane](control-plane/)): real processes on 127.0.0.1 — one `weft control`, proxies `weft run --control … --workers 1`, one `weft-demo-upstream`; pushes and applies with the `weft` command. See [README.md](README.md#control-plane-weft-cp-bench).\n"
        );
        for line in &self.context {
            let _ = writeln!(w, "- {line}");
        }
        let _ = writeln!(
            w,
            "- Each push is a new version of the add-header component (a custom section appended: same code, new sha256), so every proxy fetches and compiles it; the applied config sets `x-version` to the push's tag. Compiled modules: {} cache. A proxy serves a version from its first answer (200) carrying that tag, polled every {} ms per proxy, all proxies concurrently, one keep-alive connection each.",
            self.module_cache, self.poll_ms
        );
        self.convergence_table(w);
        self.idle_table(w);
        self.rss_table(w);
        self.swaps_table(w);
        let _ = writeln!(w, "{END}");
        out
    }

    fn convergence_table(&self, w: &mut String) {
        if self.convergence.is_empty() {
            return;
        }
        let _ = writeln!(
            w,
            "\n### Convergence: `weft push` + `weft apply` → every proxy serves the new version\n\nTimes from the bench's clock: push start is just before `weft push` starts, apply returned is when the `weft apply` process has exited, a proxy serves at its first answer with the new tag (a negative time: before `weft apply` had exited). The same-module pushes run on the largest mesh after the others: `weft push` answers `unchanged` and only the config changes, so no proxy fetches or compiles anything.\n"
        );
        let _ = writeln!(
            w,
            "| proxies | each push | pushes | apply returned → all serve, ms (median / p90 / max) | push start → all serve, ms (median / p90 / max) | push start → apply returned, ms (median) | apply returned → first proxy serves, ms (median) | polls (failed) |"
        );
        let _ = writeln!(w, "| --- | --- | --- | --- | --- | --- | --- | --- |");
        for c in &self.convergence {
            let samples = &c.samples;
            let col = |f: fn(&Sample) -> f64| stats(&samples.iter().map(f).collect::<Vec<_>>());
            let polls: u64 = samples.iter().map(|s| s.polls).sum();
            let failed: u64 = samples.iter().map(|s| s.poll_errors).sum();
            let _ = writeln!(
                w,
                "| {} | {} | {} | {} | {} | {:.0} | {:.0} | {polls} ({failed}) |",
                c.proxies,
                if c.new_module {
                    "a new module version"
                } else {
                    "the same module (config change only)"
                },
                samples.len(),
                triple(&col(|s| s.all_after_apply_ms)),
                triple(&col(|s| s.all_after_push_ms)),
                col(|s| s.apply_ms).median,
                col(|s| s.first_ms).median,
            );
        }
        if let Some(c) = self
            .convergence
            .iter()
            .filter(|c| c.new_module)
            .max_by_key(|c| c.proxies)
        {
            let n = c.proxies;
            let m = stats(
                &c.samples
                    .iter()
                    .map(|s| s.all_after_push_ms)
                    .collect::<Vec<_>>(),
            )
            .median;
            let _ = writeln!(
                w,
                "\nTarget: median under 1 s for 50 proxies — at {n} proxies, push start → all serve has a median of {m:.0} ms: {}.",
                verdict(m < TARGET_MEDIAN_MS)
            );
        }
    }

    fn idle_table(&self, w: &mut String) {
        let Some(idle) = &self.idle else { return };
        let _ = writeln!(
            w,
            "\n### The control plane at rest, {} proxies connected and idle\n",
            idle.proxies
        );
        let _ = writeln!(
            w,
            "| `weft control` VmRSS MiB | its VmHWM (peak since start) MiB | its CPU over {:.1} s (utime+stime) | = % of one core | the proxies' VmRSS, MiB (total / per proxy) | the proxies' CPU over the window, ms (total) |",
            idle.window_s
        );
        let _ = writeln!(w, "| --- | --- | --- | --- | --- | --- |");
        let _ = writeln!(
            w,
            "| {:.1} | {:.1} | {:.0} ms | {:.2} % | {:.0} / {:.1} | {:.0} |",
            mib(idle.control_rss_kib),
            mib(idle.control_hwm_kib),
            idle.control_cpu_s * 1e3,
            100.0 * idle.control_cpu_s / idle.window_s,
            mib(idle.proxies_rss_kib),
            mib(idle.proxies_rss_kib) / idle.proxies.max(1) as f64,
            idle.proxies_cpu_s * 1e3
        );
        let _ = writeln!(
            w,
            "\nCPU times are counted in clock ticks (10 ms): over this window a figure is exact to about ±10 ms."
        );
    }

    fn rss_table(&self, w: &mut String) {
        if self.rss.is_empty() {
            return;
        }
        let _ = writeln!(
            w,
            "\n### What the control-plane client adds to a proxy\n\nThe same proxy (`--workers 1`, one route through add-header to the upstream, the same compiled-module cache, warm) started with `--control` and from a file, both at once, fresh processes each round; VmRSS after {} requests each and 1 s of rest.\n",
            self.rss_requests
        );
        let _ = writeln!(
            w,
            "| round | `--control` MiB | from a file MiB | difference MiB |"
        );
        let _ = writeln!(w, "| --- | --- | --- | --- |");
        let mut diffs = Vec::new();
        for (i, pair) in self.rss.iter().enumerate() {
            let diff = mib(pair.control_kib) - mib(pair.file_kib);
            diffs.push(diff);
            let _ = writeln!(
                w,
                "| {} | {:.1} | {:.1} | {:+.2} |",
                i + 1,
                mib(pair.control_kib),
                mib(pair.file_kib),
                diff
            );
        }
        let median = stats(&diffs).median;
        let _ = writeln!(
            w,
            "\nTarget: the client adds at most 2 MiB — median difference {median:+.2} MiB: {}.",
            verdict(median <= TARGET_CLIENT_MIB)
        );
    }

    fn swaps_table(&self, w: &mut String) {
        let Some((proxies, connections, pace_ms, o)) = &self.swaps else {
            return;
        };
        let _ = writeln!(
            w,
            "\n### Swaps under load\n\n{proxies} proxies, {connections} keep-alive connections to each, each a closed loop (next request {pace_ms} ms after the last answer; hyper's connection-level client, no retries); one push + apply after another, each waiting until every proxy answers with the new version. Failed: any transport error or status other than 200.\n"
        );
        let _ = writeln!(
            w,
            "| swaps | requests | failed | req/s | apply returned → all serve, ms (median / p90 / max) | push start → all serve, ms (median / p90 / max) | swaps not served in time |"
        );
        let _ = writeln!(w, "| --- | --- | --- | --- | --- | --- | --- |");
        let _ = writeln!(
            w,
            "| {} | {} | {} | {:.0} | {} | {} | {} |",
            o.cycles,
            o.requests,
            o.failed,
            o.requests as f64 / o.seconds,
            triple(&stats(&o.all_after_apply_ms)),
            triple(&stats(&o.all_after_push_ms)),
            o.timed_out
        );
        let _ = writeln!(
            w,
            "\nTarget: zero failed requests — {} failed of {}: {}.",
            o.failed,
            o.requests,
            verdict(o.failed == 0 && o.timed_out == 0)
        );
        if !o.errors.is_empty() {
            let _ = writeln!(w, "\nFirst failures:\n\n```");
            for e in &o.errors {
                let _ = writeln!(w, "{e}");
            }
            let _ = writeln!(w, "```");
        }
    }
}

/// Puts `section` into the file at `path`: in place of the one between the
/// markers, else at the end (the file is created if missing).
pub fn write_section(path: &Path, section: &str) -> anyhow::Result<()> {
    let old = match std::fs::read_to_string(path) {
        Ok(text) => text,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => String::new(),
        Err(e) => return Err(e).with_context(|| format!("cannot read {}", path.display())),
    };
    let new = match (old.find(BEGIN), old.find(END)) {
        (Some(b), Some(e)) if b < e => {
            let after = &old[e + END.len()..];
            let after = after.strip_prefix('\n').unwrap_or(after);
            format!("{}{section}{after}", &old[..b])
        }
        _ if old.is_empty() => section.to_string(),
        _ => format!("{}\n\n{section}", old.trim_end()),
    };
    let tmp = path.with_extension("md.tmp");
    std::fs::write(&tmp, new).with_context(|| format!("cannot write {}", tmp.display()))?;
    std::fs::rename(&tmp, path).with_context(|| format!("cannot write {}", path.display()))?;
    Ok(())
}
