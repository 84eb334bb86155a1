//! A mesh on loopback: one `weft control`, N proxies `weft run --control
//! … --workers 1` of one group, all routing to one upstream through the
//! add-header filter; and the operator's `weft push` + `weft apply`, run
//! as processes as a user would.
//!
//! Each push is a new version of the same component: the add-header
//! filter with a custom section naming the push appended (so its bytes,
//! hence its sha256, differ and every proxy fetches and compiles it), and
//! each apply sets the filter's `x-version` response header to the push's
//! tag, so a request tells which configuration answered it.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};

use crate::procs::{self, Proc};

/// The group every proxy of the bench belongs to.
pub const GROUP: &str = "bench";
/// The module's name in the registry.
pub const MODULE: &str = "add-header";
/// How long `weft push` and `weft apply` may take.
const CLI_TIMEOUT: Duration = Duration::from_secs(30);

/// The programs and the component the bench uses.
#[derive(Clone)]
pub struct Bins {
    pub weft: PathBuf,
    pub upstream: PathBuf,
    /// add_header.wasm, as built.
    pub component: Vec<u8>,
}

impl Bins {
    /// Finds them under `target` (the cargo target directory).
    pub fn find(target: &Path) -> anyhow::Result<Bins> {
        let weft = target.join("release/weft");
        let upstream = target.join("release/weft-demo-upstream");
        let component_path = target.join("wasm-filters/wasm32-wasip2/filter/add_header.wasm");
        for (path, how) in [
            (&weft, "cargo build --release -p weft-cli"),
            (&upstream, "cargo build --release -p weft-demo-upstream"),
            (&component_path, "make filters"),
        ] {
            if !path.is_file() {
                bail!("{} is missing: run `{how}` first", path.display());
            }
        }
        let component = std::fs::read(&component_path)
            .with_context(|| format!("cannot read {}", component_path.display()))?;
        Ok(Bins {
            weft,
            upstream,
            component,
        })
    }
}

/// Where the proxies keep compiled modules.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum ModuleCache {
    /// One directory per proxy: every proxy compiles each new module, as
    /// on its own machine.
    PerProxy,
    /// One directory for all, as the default `$XDG_CACHE_HOME/weft/modules`
    /// is for the proxies of one user on one machine: one proxy compiles
    /// a new module, the others load it.
    Shared,
}

/// The demo upstream every route goes to.
pub async fn start_upstream(bins: &Bins, dir: &Path) -> anyhow::Result<(Proc, SocketAddr)> {
    let mut upstream = Proc::spawn(
        "upstream",
        &bins.upstream,
        ["--listen", "127.0.0.1:0"],
        dir.join("upstream.log"),
    )?;
    let addr = upstream
        .wait_addr("listening on", Duration::from_secs(10))
        .await?;
    Ok((upstream, addr))
}

/// The files of one version, ready to push and apply.
pub struct Prepared {
    pub module: PathBuf,
    pub config: PathBuf,
    /// Whether the module has bytes the registry has not seen.
    pub new_module: bool,
}

/// The timings of one push + apply.
pub struct PushApply {
    /// Just before `weft push` started.
    pub start: Instant,
    /// When `weft push` had exited.
    pub pushed: Instant,
    /// When `weft apply` had exited.
    pub applied: Instant,
}

/// A control plane and its proxies.
pub struct Mesh {
    pub dir: PathBuf,
    pub bins: Bins,
    pub control: Proc,
    pub url: String,
    pub proxies: Vec<Proc>,
    pub addrs: Vec<SocketAddr>,
    upstream: SocketAddr,
    cache: ModuleCache,
}

impl Mesh {
    /// Starts a control plane in `dir`, pushes and applies the first
    /// version (tag `0`), then starts `n` proxies and waits until all are
    /// connected and serve it.
    pub async fn start(
        bins: &Bins,
        dir: PathBuf,
        upstream: SocketAddr,
        n: usize,
        cache: ModuleCache,
    ) -> anyhow::Result<Mesh> {
        std::fs::create_dir_all(dir.join("modules"))?;
        if cache == ModuleCache::Shared {
            // Made before any proxy looks for it: a proxy does not use a
            // cache directory that appeared after its first look.
            use std::os::unix::fs::DirBuilderExt;
            std::fs::DirBuilder::new()
                .recursive(true)
                .mode(0o700)
                .create(dir.join("compiled").join("shared"))?;
        }
        let data = dir.join("control-data");
        let mut control = Proc::spawn(
            "weft control",
            &bins.weft,
            [
                "control".as_ref(),
                "--listen".as_ref(),
                "127.0.0.1:0".as_ref(),
                "--data".as_ref(),
                data.as_os_str(),
            ],
            dir.join("control.log"),
        )?;
        let addr = control
            .wait_addr("control plane listening", Duration::from_secs(10))
            .await?;
        let mut mesh = Mesh {
            dir,
            bins: bins.clone(),
            control,
            url: format!("http://{addr}"),
            proxies: Vec::new(),
            addrs: Vec::new(),
            upstream,
            cache,
        };
        let first = mesh.prepare("0", true)?;
        mesh.push_apply(&first).await?;
        for i in 0..n {
            let proxy = mesh.spawn_proxy(&format!("p{i:02}"))?;
            mesh.proxies.push(proxy);
        }
        // All compile the first module at once: one deadline for all.
        let deadline = Instant::now() + Duration::from_secs(60 + 3 * n as u64);
        for proxy in &mut mesh.proxies {
            let left = deadline.saturating_duration_since(Instant::now());
            let addr = proxy.wait_addr("listening listener=", left).await?;
            mesh.addrs.push(addr);
        }
        mesh.wait_connected(n, deadline).await?;
        Ok(mesh)
    }

    /// Starts proxy `node` of the group (not added to `proxies`).
    pub fn spawn_proxy(&self, node: &str) -> anyhow::Result<Proc> {
        let modules = match self.cache {
            ModuleCache::PerProxy => self.dir.join("compiled").join(node),
            ModuleCache::Shared => self.dir.join("compiled").join("shared"),
        };
        let local = self.dir.join(format!("{node}.yaml"));
        std::fs::write(
            &local,
            format!(
                "listeners: [{{ name: main, listen: \"127.0.0.1:0\" }}]\nmodule_cache: {{ dir: {:?} }}\n",
                modules.display().to_string()
            ),
        )?;
        let cache = self.dir.join("client-cache").join(node);
        Proc::spawn(
            node,
            &self.bins.weft,
            [
                "run".as_ref(),
                "--config".as_ref(),
                local.as_os_str(),
                "--control".as_ref(),
                self.url.as_ref(),
                "--node".as_ref(),
                node.as_ref(),
                "--group".as_ref(),
                GROUP.as_ref(),
                "--cache".as_ref(),
                cache.as_os_str(),
                "--workers".as_ref(),
                "1".as_ref(),
            ],
            self.dir.join(format!("{node}.log")),
        )
    }

    /// Writes the module and the group config of version `tag`. With
    /// `new_module` false the module is the bytes of version `0`, which the
    /// registry has: the push answers `unchanged` and only the config
    /// changes.
    pub fn prepare(&self, tag: &str, new_module: bool) -> anyhow::Result<Prepared> {
        let module = self.dir.join("modules").join(format!("{tag}.wasm"));
        let module_tag = if new_module { tag } else { "0" };
        std::fs::write(&module, tagged(&self.bins.component, module_tag))?;
        let config = self.dir.join("modules").join(format!("{tag}.yaml"));
        std::fs::write(&config, group_config(tag, self.upstream))?;
        Ok(Prepared {
            module,
            config,
            new_module,
        })
    }

    /// `weft push` then `weft apply` of a prepared version, timed.
    pub async fn push_apply(&self, prepared: &Prepared) -> anyhow::Result<PushApply> {
        let Prepared {
            module,
            config,
            new_module,
        } = prepared;
        let log = |what: &str| self.dir.join(format!("last-{what}.log"));
        let start = Instant::now();
        let out = procs::run_to_end(
            &self.bins.weft,
            [
                "push".as_ref(),
                module.as_os_str(),
                "--name".as_ref(),
                MODULE.as_ref(),
                "--control".as_ref(),
                self.url.as_ref(),
            ],
            log("push"),
            CLI_TIMEOUT,
        )
        .await?;
        let pushed = Instant::now();
        if !out.starts_with(if *new_module { "pushed " } else { "unchanged " }) {
            bail!("weft push {}: {out}", module.display());
        }
        let out = procs::run_to_end(
            &self.bins.weft,
            [
                "apply".as_ref(),
                "-f".as_ref(),
                config.as_os_str(),
                "--group".as_ref(),
                GROUP.as_ref(),
                "--control".as_ref(),
                self.url.as_ref(),
            ],
            log("apply"),
            CLI_TIMEOUT,
        )
        .await?;
        let applied = Instant::now();
        if !out.starts_with("applied ") {
            bail!("weft apply {}: {out}", config.display());
        }
        Ok(PushApply {
            start,
            pushed,
            applied,
        })
    }

    /// Waits until `weft status` shows `n` connected proxies of the group,
    /// none with a version pending.
    pub async fn wait_connected(&self, n: usize, deadline: Instant) -> anyhow::Result<()> {
        loop {
            let status = self.status().await?;
            let proxies = status["proxies"].as_array().cloned().unwrap_or_default();
            let settled = proxies
                .iter()
                .filter(|p| {
                    p["group"] == GROUP && p["connected"] == true && p["pending_version"].is_null()
                })
                .count();
            if settled == n {
                return Ok(());
            }
            if Instant::now() >= deadline {
                bail!("{settled} of {n} proxies connected and settled; status: {status}");
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// `weft status --output json`.
    pub async fn status(&self) -> anyhow::Result<serde_json::Value> {
        let out = procs::run_to_end(
            &self.bins.weft,
            ["status", "--control", &self.url, "--output", "json"],
            self.dir.join("last-status.log"),
            CLI_TIMEOUT,
        )
        .await?;
        serde_json::from_str(&out).with_context(|| format!("weft status: {out}"))
    }
}

impl Drop for Mesh {
    /// Stops the proxies (all at once), then the control plane.
    fn drop(&mut self) {
        procs::stop_all(&mut self.proxies);
        self.control.stop();
    }
}

/// The group's configuration of version `tag`: every request through the
/// add-header filter, which sets `x-version: tag` on the response.
pub fn group_config(tag: &str, upstream: SocketAddr) -> String {
    format!(
        "filters:\n  ver: {{ module: {MODULE} }}\nlisteners:\n  - name: main\n    routes:\n      - name: all\n        filters: [{{ filter: ver, config: {{ response: {{ x-version: \"{tag}\" }} }} }}]\n        cluster: up\nclusters:\n  up: {{ endpoints: [\"{upstream}\"] }}\n"
    )
}

/// The component with a custom section `cp-bench-<tag>` appended: the
/// same code, other bytes (as `padded` in control/tests/common/mod.rs).
pub fn tagged(component: &[u8], tag: &str) -> Vec<u8> {
    let name = format!("cp-bench-{tag}");
    let mut content = Vec::new();
    leb128(&mut content, name.len() as u64);
    content.extend_from_slice(name.as_bytes());
    let mut out = component.to_vec();
    out.push(0); // custom section
    leb128(&mut out, content.len() as u64);
    out.extend_from_slice(&content);
    out
}

fn leb128(out: &mut Vec<u8>, mut v: u64) {
    loop {
        let byte = (v & 0x7f) as u8;
        v >>= 7;
        if v == 0 {
            out.push(byte);
            return;
        }
        out.push(byte | 0x80);
    }
}
