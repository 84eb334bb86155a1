//! The on-disk cache of compiled filter modules: a second start loads what
//! the first compiled; a corrupt artifact is replaced; a disabled or unsafe
//! cache is not used; `weft validate` writes nothing.

use std::net::SocketAddr;
use std::os::unix::fs::{DirBuilderExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use weft_test_harness::process::{temp_dir, validate_file};
use weft_test_harness::{Upstream, Weft, get};

use crate::{config, start, wasm};

/// weft with an admin API and add-header on every route; `cache` is the
/// `module_cache:` value (YAML flow mapping), or none for the default.
fn yaml(up: SocketAddr, cache: Option<&str>, extra_filter: bool) -> String {
    let mut filters = format!("  add-header: {{ path: {} }}", wasm("add_header"));
    if extra_filter {
        filters += &format!("\n  hello: {{ path: {} }}", wasm("hello_filter"));
    }
    let routes = "      - { name: all, filters: [{ filter: add-header, config: { request: { x-a: b }, response: { x-b: c } } }], cluster: backend }";
    let cache = cache
        .map(|c| format!("module_cache: {c}\n"))
        .unwrap_or_default();
    format!(
        "admin: {{ listen: 127.0.0.1:0 }}\n{cache}{}",
        config(&filters, routes, up)
    )
}

fn cache_at(dir: &Path) -> String {
    format!("{{ dir: \"{}\" }}", dir.display())
}

/// The `.cwasm` files in `dir` (none when it does not exist).
fn artifacts(dir: &Path) -> Vec<PathBuf> {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return Vec::new();
    };
    let mut out: Vec<PathBuf> = entries
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "cwasm"))
        .collect();
    out.sort();
    out
}

/// Waits until `dir` holds `n` artifacts (they are written just after the
/// proxy starts listening).
async fn wait_for_artifacts(dir: &Path, n: usize) -> Vec<PathBuf> {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let found = artifacts(dir);
        if found.len() >= n {
            return found;
        }
        assert!(
            Instant::now() < deadline,
            "{} holds {found:?}, not {n} artifacts",
            dir.display()
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// (modules compiled, modules loaded from the disk cache), from /metrics.
async fn counts(weft: &Weft) -> (u64, u64) {
    let metrics = get(&format!("{}/metrics", weft.url("admin"))).await;
    let text = String::from_utf8_lossy(&metrics.body).to_string();
    let value = |name: &str| -> u64 {
        text.lines()
            .find_map(|l| l.strip_prefix(name)?.strip_prefix(' ')?.parse().ok())
            .unwrap_or_else(|| panic!("no {name} in\n{text}"))
    };
    (
        value("weft_filter_modules_compiled_total"),
        value("weft_filter_module_cache_hits_total"),
    )
}

/// One request through the add-header chain works.
async fn serves_through_the_filter(weft: &Weft) {
    let r = get(&format!("{}/x", weft.url("public"))).await;
    assert_eq!(r.status, 200, "{:?}", r.body);
    assert_eq!(r.header("x-b"), Some("c"));
    assert_eq!(r.echoed_header("x-a").as_deref(), Some("b"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_second_start_loads_what_the_first_compiled() {
    let up = Upstream::start().await;
    // Not there yet: the proxy creates it, private to its user.
    let dir = temp_dir("module-cache").join("modules");
    let yaml = yaml(up.addr, Some(&cache_at(&dir)), false);

    let first = start(&yaml);
    serves_through_the_filter(&first).await;
    assert_eq!(counts(&first).await, (1, 0));
    let files = wait_for_artifacts(&dir, 1).await;
    assert_eq!(files.len(), 1, "{files:?}");
    let name = files[0].file_name().unwrap().to_string_lossy().to_string();
    let sha = format!(
        "{:x}",
        <sha2::Sha256 as sha2::Digest>::digest(std::fs::read(wasm("add_header")).unwrap())
    );
    assert!(
        name.starts_with(&format!("{sha}-")),
        "{name} is keyed by the module's sha256"
    );
    let mode = |p: &Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode(&dir), 0o700);
    assert_eq!(mode(&files[0]), 0o600);
    drop(first);

    let second = start(&yaml);
    second.wait_for_log("loaded compiled filter from cache", 1);
    assert!(
        second.log_text().contains(&files[0].display().to_string()),
        "the hit names the file:\n{}",
        second.log_text()
    );
    assert_eq!(counts(&second).await, (0, 1), "nothing was compiled");
    serves_through_the_filter(&second).await;
    assert_eq!(second.log_count("compiled filter module="), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_corrupt_artifact_is_ignored_and_rewritten() {
    let up = Upstream::start().await;
    let dir = temp_dir("module-cache-corrupt");
    let yaml = yaml(up.addr, Some(&cache_at(&dir)), false);
    let file = {
        let _first = start(&yaml);
        wait_for_artifacts(&dir, 1).await.remove(0)
    };
    let good_len = std::fs::metadata(&file).unwrap().len();
    std::fs::write(&file, b"this is not a compiled component").unwrap();

    let weft = start(&yaml);
    let warning = "ignoring unusable compiled filter in the module cache";
    weft.wait_for_log(warning, 1);
    let line = weft
        .log_text()
        .lines()
        .find(|l| l.contains(warning))
        .unwrap()
        .to_string();
    assert!(line.contains("WARN"), "{line}");
    assert!(line.contains(&file.display().to_string()), "{line}");
    serves_through_the_filter(&weft).await;
    assert_eq!(counts(&weft).await, (1, 0), "compiled instead");

    // The garbage is replaced by a whole artifact, and the next start uses it.
    let deadline = Instant::now() + Duration::from_secs(30);
    while std::fs::metadata(&file).unwrap().len() != good_len {
        assert!(Instant::now() < deadline, "the artifact was not rewritten");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    drop(weft);
    let again = start(&yaml);
    assert_eq!(counts(&again).await, (0, 1));
    assert_eq!(again.log_count(warning), 0);
    serves_through_the_filter(&again).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_disabled_cache_writes_and_reads_nothing() {
    let up = Upstream::start().await;
    let dir = temp_dir("module-cache-off").join("modules");
    let yaml = yaml(
        up.addr,
        Some(&format!("{{ enabled: false, dir: \"{}\" }}", dir.display())),
        false,
    );
    let first = start(&yaml);
    serves_through_the_filter(&first).await;
    assert_eq!(counts(&first).await, (1, 0));
    // An enabled cache has written its artifact well within this.
    tokio::time::sleep(Duration::from_millis(1000)).await;
    assert!(!dir.exists(), "{} was created", dir.display());
    drop(first);
    let second = start(&yaml);
    assert_eq!(counts(&second).await, (1, 0), "compiled again");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_directory_others_can_write_is_not_used() {
    let up = Upstream::start().await;
    let dir = temp_dir("module-cache-shared");
    let yaml = yaml(up.addr, Some(&cache_at(&dir)), false);
    {
        // A good artifact, written while the directory was private.
        let first = start(&yaml);
        wait_for_artifacts(&dir, 1).await;
        drop(first);
    }
    std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o777)).unwrap();

    let weft = start(&yaml);
    weft.wait_for_log("module cache not used", 1);
    assert!(
        weft.log_text()
            .contains("writable by group or others (mode 777)"),
        "{}",
        weft.log_text()
    );
    assert_eq!(
        counts(&weft).await,
        (1, 0),
        "the artifact there was not loaded"
    );
    serves_through_the_filter(&weft).await;
    assert_eq!(weft.log_count("loaded compiled filter from cache"), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reload_writes_new_modules_to_the_cache_it_names() {
    let up = Upstream::start().await;
    let dir = temp_dir("module-cache-reload");
    let (a, b) = (dir.join("a"), dir.join("b"));
    let weft = start(&yaml(up.addr, Some(&cache_at(&a)), false));
    wait_for_artifacts(&a, 1).await;
    // A new module and a new directory: the directory applies from this
    // reload on; add-header stays in memory and is not written again.
    let outcome =
        tokio::task::block_in_place(|| weft.reload(&yaml(up.addr, Some(&cache_at(&b)), true)));
    assert!(outcome.contains("config reloaded"), "{outcome}");
    let in_b = wait_for_artifacts(&b, 1).await;
    let hello = format!(
        "{:x}",
        <sha2::Sha256 as sha2::Digest>::digest(std::fs::read(wasm("hello_filter")).unwrap())
    );
    assert_eq!(in_b.len(), 1, "{in_b:?}");
    assert!(
        in_b[0]
            .file_name()
            .unwrap()
            .to_string_lossy()
            .starts_with(&hello),
        "{in_b:?}"
    );
    assert_eq!(artifacts(&a).len(), 1);
    assert_eq!(counts(&weft).await, (2, 0));
    serves_through_the_filter(&weft).await;
}

#[test]
fn validate_reads_the_cache_but_never_writes_it() {
    let dir = temp_dir("module-cache-validate");
    let cache = dir.join("modules");
    let config_path = dir.join("weft.yaml");
    // Port 1: never bound, validate only parses it.
    let write = |cache_value: &str| {
        let filters = format!("  add-header: {{ path: {} }}", wasm("add_header"));
        let routes = "      - { name: all, filters: [{ filter: add-header, config: { request: { x-a: b } } }], cluster: backend }";
        let text = format!(
            "module_cache: {cache_value}\n{}",
            config(&filters, routes, "127.0.0.1:1".parse().unwrap())
        );
        std::fs::write(&config_path, text).unwrap();
    };
    write(&cache_at(&cache));
    let (ok, out) = validate_file(crate::bin(), &config_path);
    assert!(ok, "{out}");
    assert!(!cache.exists(), "validate created {}", cache.display());

    // An existing, empty cache stays empty.
    std::fs::create_dir(&cache).unwrap();
    std::fs::set_permissions(&cache, std::fs::Permissions::from_mode(0o700)).unwrap();
    let (ok, out) = validate_file(crate::bin(), &config_path);
    assert!(ok, "{out}");
    assert_eq!(artifacts(&cache), Vec::<PathBuf>::new());

    // A bad key is an error with its path.
    write("{ dir: x, enable: false }");
    let (ok, out) = validate_file(crate::bin(), &config_path);
    assert!(!ok, "{out}");
    assert!(
        out.contains("module_cache.enable: unknown field `enable`"),
        "{out}"
    );
}

#[test]
fn the_default_directory_comes_from_the_environment() {
    let dir = temp_dir("module-cache-env");
    let cache = dir.join("from-env");
    let config_path = dir.join("weft.yaml");
    let filters = format!("  add-header: {{ path: {} }}", wasm("add_header"));
    let routes = "      - { name: all, filters: [{ filter: add-header, config: { request: { x-a: b } } }], cluster: backend }";
    std::fs::write(
        &config_path,
        config(&filters, routes, "127.0.0.1:1".parse().unwrap()),
    )
    .unwrap();
    let mut child = Command::new(crate::bin())
        .args(["run", "--config"])
        .arg(&config_path)
        .env("WEFT_MODULE_CACHE", &cache)
        .env("WEFT_LOG", "warn")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(30);
    let found = loop {
        let found = artifacts(&cache);
        if !found.is_empty() || Instant::now() > deadline {
            break found;
        }
        if let Some(status) = child.try_wait().unwrap() {
            panic!("weft exited with {status}");
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    let _ = child.kill();
    let _ = child.wait();
    assert_eq!(found.len(), 1, "nothing written to $WEFT_MODULE_CACHE");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_artifact_others_can_write_or_a_link_is_not_loaded() {
    let up = Upstream::start().await;
    let dir = temp_dir("module-cache-artifact-mode");
    let yaml = yaml(up.addr, Some(&cache_at(&dir)), false);
    let file = {
        let _first = start(&yaml);
        wait_for_artifacts(&dir, 1).await.remove(0)
    };
    std::fs::set_permissions(&file, std::fs::Permissions::from_mode(0o666)).unwrap();
    let weft = start(&yaml);
    assert_eq!(counts(&weft).await, (1, 0), "the artifact was loaded");
    weft.wait_for_log("ignoring compiled filter in the module cache", 1);
    assert!(
        weft.log_text()
            .contains("writable by group or others (mode 666)"),
        "{}",
        weft.log_text()
    );
    drop(weft);

    // A link to a good artifact elsewhere is not followed.
    let elsewhere = temp_dir("module-cache-artifact-elsewhere").join("artifact");
    std::fs::rename(&file, &elsewhere).unwrap();
    std::fs::set_permissions(&elsewhere, std::fs::Permissions::from_mode(0o600)).unwrap();
    std::os::unix::fs::symlink(&elsewhere, &file).unwrap();
    let weft = start(&yaml);
    assert_eq!(counts(&weft).await, (1, 0), "the link was followed");
    weft.wait_for_log("it is a symbolic link", 1);
    serves_through_the_filter(&weft).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_directory_that_appears_after_the_start_is_not_read() {
    let up = Upstream::start().await;
    // A good artifact of hello-filter, made by another run.
    let source = temp_dir("module-cache-source");
    {
        let _weft = start(&yaml(up.addr, Some(&cache_at(&source)), true));
        wait_for_artifacts(&source, 2).await;
    }
    let hello = format!(
        "{:x}",
        <sha2::Sha256 as sha2::Digest>::digest(std::fs::read(wasm("hello_filter")).unwrap())
    );
    let artifact = artifacts(&source)
        .into_iter()
        .find(|p| p.file_name().unwrap().to_string_lossy().starts_with(&hello))
        .unwrap();

    // The cache directory cannot be there at the start: its parent is a file.
    let root = temp_dir("module-cache-late");
    let parent = root.join("parent");
    let dir = parent.join("modules");
    std::fs::write(&parent, "not a directory").unwrap();
    let weft = start(&yaml(up.addr, Some(&cache_at(&dir)), false));
    weft.wait_for_log("module cache not used", 1);

    // Someone makes it, private as it should be, with the artifact in it.
    std::fs::remove_file(&parent).unwrap();
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o700)).unwrap();
    std::fs::copy(&artifact, dir.join(artifact.file_name().unwrap())).unwrap();
    let outcome =
        tokio::task::block_in_place(|| weft.reload(&yaml(up.addr, Some(&cache_at(&dir)), true)));
    assert!(outcome.contains("config reloaded"), "{outcome}");
    assert_eq!(
        counts(&weft).await,
        (2, 0),
        "hello-filter was loaded from the planted artifact"
    );
    assert_eq!(weft.log_count("loaded compiled filter from cache"), 0);
    assert!(
        weft.log_text()
            .contains("appeared or was replaced after this process first looked"),
        "{}",
        weft.log_text()
    );
    serves_through_the_filter(&weft).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn proxies_sharing_the_cache_compile_a_new_module_once() {
    let up = Upstream::start().await;
    let dir = temp_dir("module-cache-shared").join("modules");
    // There before either proxy looks: both use it.
    std::fs::DirBuilder::new()
        .mode(0o700)
        .recursive(true)
        .create(&dir)
        .unwrap();
    let before = yaml(up.addr, Some(&cache_at(&dir)), false);
    let (a, b) = (start(&before), start(&before));
    let (counts_a, counts_b) = (counts(&a).await, counts(&b).await);

    // Both reload at once onto a config naming a module neither has
    // compiled: one compiles it, the other waits and loads its artifact.
    let after = yaml(up.addr, Some(&cache_at(&dir)), true);
    for weft in [&a, &b] {
        std::fs::write(&weft.config_path, &after).unwrap();
    }
    a.signal("HUP");
    b.signal("HUP");
    for weft in [&a, &b] {
        tokio::task::block_in_place(|| weft.wait_for_log("config reloaded", 1));
    }
    let (after_a, after_b) = (counts(&a).await, counts(&b).await);
    let compiled = (after_a.0 - counts_a.0) + (after_b.0 - counts_b.0);
    let loaded = (after_a.1 - counts_a.1) + (after_b.1 - counts_b.1);
    assert_eq!(
        (compiled, loaded),
        (1, 1),
        "one proxy compiles the new module, the other loads it"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_proxy_wasm_module_is_cached_and_loaded_like_a_component() {
    let up = Upstream::start().await;
    let dir = temp_dir("module-cache-proxy-wasm");
    let filters = format!(
        "  headers: {{ path: {} }}",
        crate::proxy_wasm::pw("http_headers")
    );
    let routes = "      - { name: all, filters: [{ filter: headers }], cluster: backend }";
    let yaml = format!(
        "admin: {{ listen: 127.0.0.1:0 }}\nmodule_cache: {}\n{}",
        cache_at(&dir),
        config(&filters, routes, up.addr)
    );
    let hello = |weft: &Weft| {
        let url = format!("{}/hello", weft.url("public"));
        async move {
            let r = get(&url).await;
            assert_eq!(r.status, 200);
            assert_eq!(&r.body[..], b"Hello from proxy-wasm\n");
        }
    };
    let first = start(&yaml);
    hello(&first).await;
    assert_eq!(counts(&first).await, (1, 0));
    assert_eq!(wait_for_artifacts(&dir, 1).await.len(), 1);
    drop(first);

    let second = start(&yaml);
    second.wait_for_log("loaded compiled filter from cache", 1);
    assert_eq!(counts(&second).await, (0, 1), "nothing was compiled");
    hello(&second).await;
}
