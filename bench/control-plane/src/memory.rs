//! What the control plane costs at rest, and what its client adds to a
//! proxy.

use std::net::SocketAddr;
use std::path::Path;
use std::time::{Duration, Instant};

use anyhow::bail;

use crate::http::Conn;
use crate::mesh::{Bins, Mesh};
use crate::procs::{self, Proc};

/// The control plane with its proxies connected and idle.
pub struct Idle {
    pub proxies: usize,
    pub window_s: f64,
    pub control_rss_kib: u64,
    /// Its VmHWM: the most it held since it started.
    pub control_hwm_kib: u64,
    /// utime + stime of `weft control` over the window, seconds.
    pub control_cpu_s: f64,
    /// The proxies' VmRSS, summed.
    pub proxies_rss_kib: u64,
    /// The proxies' utime + stime over the window, summed.
    pub proxies_cpu_s: f64,
}

/// Measures `mesh` at rest over `window`, after `settle`.
pub async fn idle(mesh: &Mesh, settle: Duration, window: Duration) -> anyhow::Result<Idle> {
    tokio::time::sleep(settle).await;
    let control = mesh.control.pid();
    let pids: Vec<u32> = mesh.proxies.iter().map(Proc::pid).collect();
    let proxies_cpu =
        |pids: &[u32]| -> anyhow::Result<f64> { pids.iter().map(|&p| procs::cpu_seconds(p)).sum() };
    let (c0, p0, t0) = (
        procs::cpu_seconds(control)?,
        proxies_cpu(&pids)?,
        Instant::now(),
    );
    tokio::time::sleep(window).await;
    let (c1, p1, elapsed) = (
        procs::cpu_seconds(control)?,
        proxies_cpu(&pids)?,
        t0.elapsed(),
    );
    let proxies_rss_kib = pids
        .iter()
        .map(|&p| procs::rss_kib(p))
        .sum::<anyhow::Result<u64>>()?;
    Ok(Idle {
        proxies: pids.len(),
        window_s: elapsed.as_secs_f64(),
        control_rss_kib: procs::rss_kib(control)?,
        control_hwm_kib: procs::status_kib(control, "VmHWM")?,
        control_cpu_s: c1 - c0,
        proxies_rss_kib,
        proxies_cpu_s: p1 - p0,
    })
}

/// One pair of proxies: the same routes and filter, from the control
/// plane and from a file.
pub struct RssPair {
    pub control_kib: u64,
    pub file_kib: u64,
}

/// Starts, `rounds` times, a proxy with `--control` (on `mesh`, whose
/// group serves version `0`) and the same proxy from a file, sends each
/// `requests` requests, and reads their VmRSS. Both use one compiled
/// module cache, warmed first, so both load the module the same way.
pub async fn client_rss(
    mesh: &Mesh,
    upstream: SocketAddr,
    rounds: u32,
    requests: u32,
) -> anyhow::Result<Vec<RssPair>> {
    let file_config = mesh.dir.join("from-file.yaml");
    let compiled = mesh.dir.join("compiled").join("shared");
    std::fs::write(
        &file_config,
        format!(
            "listeners:\n  - name: main\n    listen: \"127.0.0.1:0\"\n    routes:\n      - name: all\n        filters: [{{ filter: ver, config: {{ response: {{ x-version: \"0\" }} }} }}]\n        cluster: up\nfilters:\n  ver: {{ path: {:?} }}\nclusters:\n  up: {{ endpoints: [\"{upstream}\"] }}\nmodule_cache: {{ dir: {:?} }}\n",
            module_file(mesh)?.display().to_string(),
            compiled.display().to_string()
        ),
    )?;
    // Warm the compiled-module cache.
    let mut warm = spawn_file_proxy(&mesh.bins, &file_config, &mesh.dir, "warm")?;
    warm.wait_addr("listening listener=", Duration::from_secs(60))
        .await?;
    warm.stop();
    let mut pairs = Vec::new();
    for round in 0..rounds {
        let mut controlled = mesh.spawn_proxy(&format!("rss{round}"))?;
        let mut from_file =
            spawn_file_proxy(&mesh.bins, &file_config, &mesh.dir, &round.to_string())?;
        let mut kib = [0; 2];
        for proxy in [&mut controlled, &mut from_file] {
            let addr = proxy
                .wait_addr("listening listener=", Duration::from_secs(60))
                .await?;
            exercise(addr, requests).await?;
        }
        // Let both finish what the requests started (instances returned,
        // the client's ACK sent) before reading.
        tokio::time::sleep(Duration::from_secs(1)).await;
        for (slot, proxy) in [&controlled, &from_file].into_iter().enumerate() {
            kib[slot] = procs::rss_kib(proxy.pid())?;
        }
        pairs.push(RssPair {
            control_kib: kib[0],
            file_kib: kib[1],
        });
        procs::stop_all(&mut [controlled, from_file]);
    }
    Ok(pairs)
}

/// The module version `0` the group serves, as the control plane stored it.
fn module_file(mesh: &Mesh) -> anyhow::Result<std::path::PathBuf> {
    let path = mesh.dir.join("modules").join("0.wasm");
    if !path.is_file() {
        bail!("{} is missing", path.display());
    }
    Ok(path)
}

fn spawn_file_proxy(bins: &Bins, config: &Path, dir: &Path, name: &str) -> anyhow::Result<Proc> {
    Proc::spawn(
        &format!("from-file-{name}"),
        &bins.weft,
        [
            "run".as_ref(),
            "--config".as_ref(),
            config.as_os_str(),
            "--workers".as_ref(),
            "1".as_ref(),
        ],
        dir.join(format!("from-file-{name}.log")),
    )
}

/// `requests` requests on one connection, each a 200 with `x-version: 0`.
async fn exercise(addr: SocketAddr, requests: u32) -> anyhow::Result<()> {
    let mut conn = Conn::connect(addr).await?;
    for _ in 0..requests {
        let answer = conn.get("/cp-bench/rss").await?;
        if answer.status != 200 || answer.version.as_deref() != Some("0") {
            bail!(
                "{addr} answered {} with x-version {:?}",
                answer.status,
                answer.version
            );
        }
    }
    Ok(())
}
