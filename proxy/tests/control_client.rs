//! The proxy's control-plane client against a real control plane
//! (`weft-control`) on 127.0.0.1: a real filter component pushed, a group
//! configuration applied, the client fetching, building a real snapshot
//! through its sink, ACKing or NACKing, reconnecting to a restarted control
//! plane, and its cache.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use sha2::{Digest, Sha256};
use tokio::sync::oneshot;
use tokio::task::JoinHandle;
use weft::config::{self, Config};
use weft::control_client::{
    Client, ClientOptions, ConfigFormat, GroupSnapshot, SnapshotSink, load_cached, merge_config,
};
use weft::filter::FilterRuntime;
use weft::snapshot::Snapshot;
use weft::telemetry::Registry;
use weft_api::push_chunks;
use weft_api::v1::control_client::ControlClient;
use weft_api::v1::{ApplyRequest, ProxyStatus, StatusRequest};
use weft_control::apply::NoFurtherChecks;
use weft_control::server::ControlPlane;
use weft_control::service::ServiceOptions;

type Api = ControlClient<tonic::transport::Channel>;

/// The proxy's local config: its listener's address, no compiled-module
/// cache (each test compiles afresh).
const LOCAL: &str = "
listeners:
  - name: main
    listen: 127.0.0.1:0
module_cache:
  enabled: false
";

/// A group config naming listener `listener`, with the pushed add-header
/// filter on its route.
fn group_config(listener: &str) -> String {
    format!(
        "
listeners:
  - name: {listener}
    routes:
      - name: all
        cluster: backend
        filters:
          - filter: tag
            config: {{request: {{x-tag: from-control}}}}
clusters:
  backend:
    endpoints: [\"127.0.0.1:9\"]
filters:
  tag:
    module: add-header
"
    )
}

/// A control plane serving on `addr` over `data`.
struct Plane {
    addr: SocketAddr,
    stop: oneshot::Sender<()>,
    task: JoinHandle<()>,
}

impl Plane {
    async fn start(addr: SocketAddr, data: &Path) -> Plane {
        let options = ServiceOptions {
            heartbeat_interval: Duration::from_millis(200),
            ..ServiceOptions::default()
        };
        let plane = ControlPlane::bind(addr, data, options, Arc::new(NoFurtherChecks))
            .await
            .expect("the control plane starts");
        let addr = plane.local_addr();
        let (stop, stopped) = oneshot::channel::<()>();
        let task = tokio::spawn(async move {
            let stopped = async {
                let _ = stopped.await;
            };
            plane.run(stopped).await.expect("the control plane runs");
        });
        Plane { addr, stop, task }
    }

    fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    async fn api(&self) -> Api {
        ControlClient::connect(self.url()).await.expect("connects")
    }

    async fn stop(self) {
        let _ = self.stop.send(());
        tokio::time::timeout(Duration::from_secs(10), self.task)
            .await
            .expect("the control plane stops within 10 s")
            .expect("the control plane task ends cleanly");
    }

    /// Pushes the add-header filter component; returns its sha256.
    async fn push_add_header(&self) -> String {
        let bytes = std::fs::read(weft_test_harness::component("add_header")).unwrap();
        let chunks = tokio_stream::iter(push_chunks("add-header", &bytes));
        let pushed = self.api().await.push_module(chunks).await.expect("pushed");
        pushed.into_inner().sha256
    }

    async fn apply(&self, config: &str) -> u64 {
        let request = ApplyRequest {
            group: "web".into(),
            config: config.as_bytes().to_vec(),
            format: weft_api::v1::ConfigFormat::Yaml as i32,
        };
        let answer = self.api().await.apply(request).await.unwrap().into_inner();
        assert!(answer.errors.is_empty(), "{:?}", answer.errors);
        answer.version
    }

    /// Polls `Status` until `node`'s entry satisfies `done` (up to 30 s).
    async fn wait_for(&self, node: &str, what: &str, done: impl Fn(&ProxyStatus) -> bool) {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
        let mut last = None;
        while tokio::time::Instant::now() < deadline {
            if let Ok(mut api) = ControlClient::connect(self.url()).await
                && let Ok(status) = api.status(StatusRequest {}).await
            {
                last = status
                    .into_inner()
                    .proxies
                    .into_iter()
                    .find(|p| p.node == node);
                if last.as_ref().is_some_and(&done) {
                    return;
                }
            }
            tokio::time::sleep(Duration::from_millis(25)).await;
        }
        panic!("timed out after 30 s waiting for {what}; last status: {last:?}");
    }
}

/// A sink that does what the proxy does: merge with the local config and
/// build the whole snapshot (compiling and `init`ing the real filter).
struct BuildingSink {
    local: Config,
    runtime: Arc<FilterRuntime>,
    /// The versions it was asked to apply, in order.
    calls: Mutex<Vec<u64>>,
    /// The config of the last snapshot built.
    built: Mutex<Option<Config>>,
}

impl BuildingSink {
    fn new() -> Arc<Self> {
        Arc::new(Self {
            local: config::parse(LOCAL, false).unwrap(),
            runtime: FilterRuntime::new(Arc::new(Registry::default())).unwrap(),
            calls: Mutex::default(),
            built: Mutex::default(),
        })
    }

    fn calls(&self) -> Vec<u64> {
        self.calls.lock().unwrap().clone()
    }
}

impl SnapshotSink for BuildingSink {
    fn apply(&self, snapshot: &GroupSnapshot) -> Result<(), String> {
        self.calls.lock().unwrap().push(snapshot.version);
        let config = merge_config(snapshot, &self.local).map_err(|e| e.to_string())?;
        let built =
            Snapshot::build(&config, Path::new("."), &self.runtime).map_err(|e| e.to_string())?;
        *self.built.lock().unwrap() = Some(built.config);
        Ok(())
    }
}

/// Runs a client of node `web-1` in group `web` until the returned sender
/// is dropped or sent to.
fn run_client(
    url: String,
    cache: &Path,
    sink: Arc<BuildingSink>,
) -> (oneshot::Sender<()>, JoinHandle<()>) {
    let options = ClientOptions {
        cache_dir: Some(cache.to_path_buf()),
        heartbeat_interval_ms: 200,
        backoff_min_ms: 50,
        backoff_max_ms: 500,
        ..ClientOptions::new(url, "web-1", "web")
    };
    let client = Client::new(options, sink, 0).expect("the client starts");
    let (stop, stopped) = oneshot::channel::<()>();
    let task = tokio::spawn(client.run(async {
        let _ = stopped.await;
    }));
    (stop, task)
}

fn sha256_of(path: &Path) -> String {
    let bytes = std::fs::read(path).unwrap();
    Sha256::digest(&bytes)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_client_fetches_builds_acks_and_caches_an_applied_snapshot() {
    let data = tempfile::tempdir().unwrap();
    let cache = tempfile::tempdir().unwrap();
    let plane = Plane::start("127.0.0.1:0".parse().unwrap(), data.path()).await;
    let sha256 = plane.push_add_header().await;
    let version = plane.apply(&group_config("main")).await;

    let sink = BuildingSink::new();
    let (stop, client) = run_client(plane.url(), cache.path(), sink.clone());
    plane
        .wait_for("web-1", "web-1 to serve the applied version", |p| {
            p.connected && p.serving_version == version && p.pending_version == 0
        })
        .await;
    assert_eq!(sink.calls(), vec![version]);

    // The snapshot built: the local listener's address, the filter's module
    // from the cache, by the hash that was pushed.
    let module_file: PathBuf = std::path::absolute(cache.path())
        .unwrap()
        .join(format!("modules/{sha256}.wasm"));
    let built = sink
        .built
        .lock()
        .unwrap()
        .clone()
        .expect("a snapshot built");
    assert_eq!(built.listeners[0].listen, "127.0.0.1:0");
    assert_eq!(built.filters["tag"].path, module_file);
    assert_eq!(sha256_of(&module_file), sha256);

    // What a restarted proxy starts from.
    let cached = load_cached(cache.path()).expect("the ACKed snapshot is cached");
    assert_eq!(
        (cached.group.as_str(), cached.version, cached.format),
        ("web", version, ConfigFormat::Yaml)
    );
    assert_eq!(cached.config, group_config("main"));
    assert_eq!(cached.modules.len(), 1);
    assert_eq!(cached.modules[0].sha256, sha256);
    assert_eq!(cached.modules[0].path, module_file);

    let _ = stop.send(());
    tokio::time::timeout(Duration::from_secs(10), client)
        .await
        .expect("the client stops")
        .unwrap();
    plane.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refused_snapshot_is_nacked_once_and_a_restarted_control_plane_is_rejoined() {
    let data = tempfile::tempdir().unwrap();
    let cache = tempfile::tempdir().unwrap();
    let plane = Plane::start("127.0.0.1:0".parse().unwrap(), data.path()).await;
    plane.push_add_header().await;
    // Listener `edge` has no address in the proxy's local config.
    let refused = plane.apply(&group_config("edge")).await;

    let sink = BuildingSink::new();
    let (stop, client) = run_client(plane.url(), cache.path(), sink.clone());
    let nacked = |p: &ProxyStatus| {
        p.connected
            && p.serving_version == 0
            && p.last_nack.as_ref().is_some_and(|n| {
                n.version == refused
                    && !n.by_control_plane
                    && n.error
                        .contains("listener \"edge\" has no address on this proxy")
            })
    };
    plane.wait_for("web-1", "web-1 to NACK", nacked).await;
    assert_eq!(sink.calls(), vec![refused]);
    assert!(
        load_cached(cache.path()).is_none(),
        "nothing ACKed, nothing cached"
    );

    // The control plane goes away and comes back on the same address: it
    // knows nothing of web-1 until web-1 reconnects, is sent the same
    // version again, and NACKs it again without building it.
    let addr = plane.addr;
    plane.stop().await;
    let plane = Plane::start(addr, data.path()).await;
    plane.wait_for("web-1", "web-1 to NACK again", nacked).await;
    assert_eq!(
        sink.calls(),
        vec![refused],
        "the refused version was built again"
    );

    // A newer version is tried afresh.
    let fixed = plane.apply(&group_config("main")).await;
    assert!(fixed > refused);
    plane
        .wait_for("web-1", "web-1 to serve the fixed version", |p| {
            p.connected && p.serving_version == fixed
        })
        .await;
    assert_eq!(sink.calls(), vec![refused, fixed]);
    assert_eq!(load_cached(cache.path()).map(|s| s.version), Some(fixed));

    let _ = stop.send(());
    tokio::time::timeout(Duration::from_secs(10), client)
        .await
        .expect("the client stops")
        .unwrap();
    plane.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_module_whose_bytes_do_not_hash_to_its_sha256_is_nacked_and_never_cached() {
    let data = tempfile::tempdir().unwrap();
    let cache = tempfile::tempdir().unwrap();
    let plane = Plane::start("127.0.0.1:0".parse().unwrap(), data.path()).await;
    let sha256 = plane.push_add_header().await;
    // The registry's copy rots on disk: same size, its last byte flipped.
    let stored = data.path().join("modules").join(&sha256);
    let mut bytes = std::fs::read(&stored).expect("the registry keeps modules/<sha256>");
    *bytes.last_mut().unwrap() ^= 0xff;
    std::fs::write(&stored, &bytes).unwrap();
    let version = plane.apply(&group_config("main")).await;

    let sink = BuildingSink::new();
    let (stop, client) = run_client(plane.url(), cache.path(), sink.clone());
    plane
        .wait_for("web-1", "web-1 to NACK the corrupt module", |p| {
            p.serving_version == 0
                && p.last_nack.as_ref().is_some_and(|n| {
                    n.version == version && n.error.contains("the bytes received hash to")
                })
        })
        .await;
    assert!(
        sink.calls().is_empty(),
        "built from bytes that failed the hash"
    );
    let cached = cache.path().join(format!("modules/{sha256}.wasm"));
    assert!(!cached.exists(), "{} written", cached.display());

    let _ = stop.send(());
    tokio::time::timeout(Duration::from_secs(10), client)
        .await
        .expect("the client stops")
        .unwrap();
    plane.stop().await;
}

#[test]
fn merging_binds_listeners_and_names_what_the_proxy_lacks() {
    let local: Config = config::parse(LOCAL, false).unwrap();
    let module = weft::control_client::CachedModule {
        reference: "add-header".into(),
        name: "add-header".into(),
        version: 1,
        sha256: "ab".repeat(32),
        size: 10,
        contract_version: "0.4.0".into(),
        path: PathBuf::from("/cache/modules/x.wasm"),
    };
    let group = |config: String| GroupSnapshot {
        group: "web".into(),
        version: 7,
        config,
        format: ConfigFormat::Yaml,
        modules: vec![module.clone()],
    };

    let two_local: Config = config::parse(
        "listeners: [{name: admin-ish, listen: 127.0.0.1:1}, {name: main, listen: 127.0.0.1:0}]",
        false,
    )
    .unwrap();
    let merged = merge_config(&group(group_config("main")), &two_local).unwrap();
    let bound: Vec<_> = merged
        .listeners
        .iter()
        .map(|l| (l.name.as_str(), l.listen.as_str(), l.routes.len()))
        .collect();
    assert_eq!(
        bound,
        [("admin-ish", "127.0.0.1:1", 0), ("main", "127.0.0.1:0", 1)],
        "the local listeners, in local order, the group's routes on its own"
    );

    let merged = merge_config(&group(group_config("main")), &local).unwrap();
    assert_eq!(merged.listeners[0].listen, "127.0.0.1:0");
    assert_eq!(
        merged.listeners[0].routes[0].cluster.as_deref(),
        Some("backend")
    );
    assert_eq!(merged.filters["tag"].path, module.path);
    assert_eq!(merged.module_cache, local.module_cache);

    let errors = merge_config(&group(group_config("edge")), &local)
        .unwrap_err()
        .to_string();
    assert!(
        errors.contains("group config v7: listeners[0].name: listener \"edge\" has no address"),
        "{errors}"
    );

    let with_path = group_config("main").replace("module: add-header", "path: /tmp/x.wasm");
    let errors = merge_config(&group(with_path), &local)
        .unwrap_err()
        .to_string();
    assert!(errors.contains("filters.tag.path"), "{errors}");

    let with_admin = format!(
        "{}admin: {{listen: 127.0.0.1:9901}}\n",
        group_config("main")
    );
    let errors = merge_config(&group(with_admin), &local)
        .unwrap_err()
        .to_string();
    assert!(
        errors.contains("admin: belongs to each proxy's local config"),
        "{errors}"
    );

    let local_routes: Config = config::parse(
        "listeners: [{name: main, listen: 127.0.0.1:0, routes: [{name: r, cluster: c}]}]",
        false,
    )
    .unwrap();
    let errors = merge_config(&group(group_config("main")), &local_routes)
        .unwrap_err()
        .to_string();
    assert!(
        errors.contains("local config: listeners[0].routes"),
        "{errors}"
    );
}
