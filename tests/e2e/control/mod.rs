//! The control plane with real processes: `weft control`, proxies under
//! `weft run --control`, and the operator's commands (`weft push`,
//! `apply`, `status`, `modules`), all on 127.0.0.1. Each test checks what
//! the proxies serve with real requests through them.

mod bad_inputs;
mod crashes;
mod groups;
mod mesh_example;
mod proxy_wasm;
mod serving;
mod tokens;

use std::future::Future;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use serde_json::Value;
use weft_test_harness::control::Output;
use weft_test_harness::process::temp_dir;
use weft_test_harness::{Control, Weft, get};

use crate::bin;

/// How long any condition is waited for.
const PATIENCE: Duration = Duration::from_secs(30);

/// A proxy's local file: its one listener, `public`, on a free port.
const LOCAL: &str = "listeners:\n  - name: public\n    listen: 127.0.0.1:0\n";

/// The response header the add-header filter sets in every group config.
const TAG: &str = "x-tag";

/// The add-header example filter's component.
fn add_header() -> Vec<u8> {
    std::fs::read(weft_test_harness::component("add_header")).expect("add_header.wasm")
}

/// Starts `weft control` on a fresh data directory with `args`.
fn control(args: &[&str]) -> Control {
    let data = temp_dir("control-data");
    tokio::task::block_in_place(|| Control::start(bin(), &data, args))
}

/// A proxy of `group` under `cp` with a fresh cache directory, started
/// without waiting for its listeners (they are bound once it serves its
/// first snapshot): see [`serving`]. The cache lies in the control plane's
/// data directory (which the store does not look into but `modules/` and
/// its own files) so that it is removed with it.
fn launch(cp: &Control, node: &str, group: &str) -> Weft {
    launch_local(cp, node, group, LOCAL)
}

/// [`launch`] with the proxy's local file `local`.
fn launch_local(cp: &Control, node: &str, group: &str, local: &str) -> Weft {
    let cache = cp.data.join("proxy-caches").join(node);
    std::fs::create_dir_all(&cache).expect("create cache dir");
    let cache = cache.display().to_string();
    let url = cp.url();
    let args = [
        "--control",
        &url,
        "--node",
        node,
        "--group",
        group,
        "--cache",
        &cache,
    ];
    tokio::task::block_in_place(|| Weft::launch_with(bin(), local, &args))
}

/// Waits until `proxy` listens.
fn serving(mut proxy: Weft) -> Weft {
    tokio::task::block_in_place(|| proxy.wait_listening());
    proxy
}

/// The cache directory a proxy was started with.
fn cache_dir(proxy: &Weft) -> PathBuf {
    PathBuf::from(proxy.arg_after("--cache").expect("started with --cache"))
}

/// A group config: listener `public` with one route through module
/// `module` (a reference: `NAME`, `NAME@V` or a sha256) as filter `tag`,
/// which sets `x-tag: <value>` on responses (add-header's config), to
/// cluster `backend` on `upstream`.
fn group_config(module: &str, value: &str, upstream: SocketAddr) -> String {
    group_config_with(
        module,
        &format!("{{ response: {{ {TAG}: \"{value}\" }} }}"),
        upstream,
    )
}

/// Like [`group_config`] with the filter's `config:` given (YAML flow).
fn group_config_with(module: &str, filter_config: &str, upstream: SocketAddr) -> String {
    format!(
        "filters:\n  tag: {{ module: \"{module}\" }}\nlisteners:\n  - name: public\n    routes:\n      - {{ name: all, filters: [{{ filter: tag, config: {filter_config} }}], cluster: backend }}\nclusters:\n  backend: {{ endpoints: [\"{upstream}\"] }}\n"
    )
}

/// Writes `bytes` to a fresh file named `name`; its path.
fn file(name: &str, bytes: &[u8]) -> PathBuf {
    let path = temp_dir("input").join(name);
    std::fs::write(&path, bytes).expect("write file");
    path
}

/// Runs `weft <args>` against `cp`.
fn weft(cp: &Control, args: &[&str]) -> Output {
    tokio::task::block_in_place(|| cp.run(args))
}

/// `weft push FILE --name NAME` of `bytes`.
fn push(cp: &Control, name: &str, bytes: &[u8]) -> Output {
    let path = file(&format!("{name}.wasm"), bytes);
    let out = weft(cp, &["push", &path.display().to_string(), "--name", name]);
    let _ = std::fs::remove_file(path);
    out
}

/// Pushes `bytes` as `name` and asserts it was stored as a new version;
/// its `NAME@V` and sha256.
fn pushed(cp: &Control, name: &str, bytes: &[u8]) -> (String, String) {
    let out = push(cp, name, bytes);
    assert!(out.success(), "push failed: {out:?}");
    // pushed NAME@V sha256=… contract=weft:filter@… size=N
    let words: Vec<&str> = out.stdout.split_whitespace().collect();
    assert_eq!(words.first(), Some(&"pushed"), "{out:?}");
    let sha256 = words[2]
        .strip_prefix("sha256=")
        .expect("sha256=")
        .to_string();
    assert_eq!(
        sha256,
        weft_test_harness::components::sha256_hex(bytes),
        "{out:?}"
    );
    (words[1].to_string(), sha256)
}

/// `weft apply -f FILE --group GROUP [--wait 30]` of `config`.
fn apply(cp: &Control, group: &str, config: &str, wait: bool) -> Output {
    let file = file("group.yaml", config.as_bytes());
    let path = file.display().to_string();
    let mut args = vec!["apply", "-f", &path, "--group", group];
    if wait {
        args.extend(["--wait", "30"]);
    }
    let out = weft(cp, &args);
    let _ = std::fs::remove_file(file);
    out
}

/// Applies `config` to `group` and asserts that it made version
/// `version`; with `proxies` > 0, waits (`--wait`) and asserts that that
/// many proxies serve it.
fn applied(cp: &Control, group: &str, config: &str, version: u64, proxies: usize) {
    let out = apply(cp, group, config, proxies > 0);
    assert!(out.success(), "apply failed: {out:?}");
    assert!(
        out.stdout
            .contains(&format!("to group {group}: version {version}\n")),
        "{out:?}"
    );
    let serving = format!(": serving version {version}");
    assert_eq!(out.stdout.matches(&serving).count(), proxies, "{out:?}");
}

/// Waits until the control plane holds more than `kib` KiB of `push`'s
/// upload (it keeps an upload in memory as it arrives, so its resident
/// memory above `before` tells how much came in), for the caller to kill
/// a process right then. Asserts that the push was still uploading and
/// that this came before three quarters of its `size` bytes.
fn mid_upload(cp: &Control, push: &mut std::process::Child, before: u64, kib: u64, size: usize) {
    let deadline = Instant::now() + PATIENCE;
    let at_kill = loop {
        let grown = cp
            .rss_kib()
            .expect("control plane running")
            .saturating_sub(before);
        if grown > kib {
            break grown;
        }
        assert!(
            push.try_wait().expect("weft push").is_none(),
            "weft push ended before the upload was seen"
        );
        assert!(Instant::now() < deadline, "the upload never started");
        std::thread::sleep(Duration::from_millis(1));
    };
    eprintln!("killed with {at_kill} KiB of {} received", size >> 10);
    assert!(
        at_kill < (size as u64 >> 10) * 3 / 4,
        "killed too late to be mid-upload: {at_kill} KiB received"
    );
}

/// `weft status --output json`'s proxies.
fn proxies(cp: &Control) -> Vec<Value> {
    let status = tokio::task::block_in_place(|| cp.status());
    status["proxies"].as_array().expect("proxies").clone()
}

/// The status of proxy `node`.
fn proxy_status(cp: &Control, node: &str) -> Value {
    proxies(cp)
        .into_iter()
        .find(|p| p["node"] == node)
        .unwrap_or_else(|| panic!("no proxy {node} in the status"))
}

/// `weft modules --output json`'s modules.
fn modules(cp: &Control) -> Vec<Value> {
    let modules = tokio::task::block_in_place(|| cp.modules());
    modules["modules"].as_array().expect("modules").clone()
}

/// The file names under `dir` (none when it does not exist).
fn files_in(dir: &Path) -> Vec<String> {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return Vec::new();
    };
    let mut names: Vec<String> = entries
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    names
}

/// Polls `check` every 20 ms until it returns `Some`, for up to 30 s.
async fn eventually<T, F, Fut>(what: &str, mut check: F) -> T
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Option<T>>,
{
    let deadline = tokio::time::Instant::now() + PATIENCE;
    loop {
        if let Some(v) = check().await {
            return v;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "timed out after {PATIENCE:?} waiting for {what}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Waits until `n` proxies of `group` are connected.
async fn connected(cp: &Control, group: &str, n: usize) {
    eventually(&format!("{n} connected proxies in {group}"), || async {
        let up = proxies(cp)
            .iter()
            .filter(|p| p["group"] == group && p["connected"] == true)
            .count();
        (up == n).then_some(())
    })
    .await
}

/// The `x-tag` header of a response through `proxy`, which must be 200.
async fn tag(proxy: &Weft) -> String {
    let reply = get(&format!("{}/x", proxy.url("public"))).await;
    assert_eq!(reply.status, 200, "{:?}", reply.body);
    reply.header(TAG).unwrap_or_default().to_string()
}

/// Asserts that every proxy answers with `x-tag: value`.
async fn all_tagged(proxies: &[&Weft], value: &str) {
    for proxy in proxies {
        assert_eq!(tag(proxy).await, value, "{}", proxy.url("public"));
    }
}
