//! Microbenchmarks of the filter runtime, through the `weft` library's public
//! API, on the real filter components:
//!
//! - `phase/*`: one call of one phase of a small filter (`add-header`) on a
//!   held instance, and the same request phase through a one-entry
//!   `ChainRun` (run bookkeeping, instance acquire and release included);
//! - `chain4/*`: the four-filter chain of `bench/configs/weft-chain.yaml`
//!   (api-key → rate-limit → headers → telemetry) over one request: its
//!   request phase, response phase and `on-done`, as `Proxy::handle` runs
//!   them; once with logging off and once with the access log formatted into
//!   a sink; and `filter/*`: each of those four filters alone;
//! - `instance/*`: taking an idle instance from a pool and giving it back,
//!   and creating one when the pool is empty (instantiate + `init`);
//! - `snapshot/*`: what a request pays to read the current snapshot, what a
//!   reload pays to swap one in, and a whole rebuild of the chain's snapshot
//!   with its modules already compiled.
//!
//! The components are read from `target/wasm-filters/wasm32-wasip2/filter/`
//! (built by `make filters`). Run: `cargo bench -p weft --bench
//! filter_runtime` (3 s per benchmark; add `-- --quick` for a rough pass, or
//! `-- chain4` to run only matching benchmarks). See bench/README.md.

use std::hint::black_box;
use std::path::{Path, PathBuf};
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use arc_swap::ArcSwap;
use criterion::{BatchSize, Criterion, criterion_group, criterion_main};
use weft::config::{self, Config};
use weft::filter::{ChainRun, Exchange, FilterChain, FilterRuntime, Phase, RequestProps, Step};
use weft::listener::Peer;
use weft::snapshot::Snapshot;
use weft::telemetry::Registry;

/// The workspace root.
fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

/// Where `make filters` puts the components.
fn filter_dir() -> PathBuf {
    root().join("target/wasm-filters/wasm32-wasip2/filter")
}

const COMPONENTS: [&str; 5] = [
    "add_header.wasm",
    "api_key.wasm",
    "rate_limit.wasm",
    "headers.wasm",
    "telemetry.wasm",
];

/// Fails with instructions when a component is missing.
fn check_components() {
    let dir = filter_dir();
    let missing: Vec<&str> = COMPONENTS
        .iter()
        .copied()
        .filter(|c| !dir.join(c).is_file())
        .collect();
    if !missing.is_empty() {
        eprintln!(
            "\nfilter_runtime bench: missing filter components in {}: {}\n\
             Build them first, from the workspace root:\n    make filters\n\
             or\n    cargo build --target wasm32-wasip2 --profile filter --target-dir target/wasm-filters \\\n\
             \x20       -p add-header-filter -p weft-filter-api-key -p weft-filter-rate-limit \\\n\
             \x20       -p weft-filter-headers -p weft-filter-telemetry\n",
            dir.display(),
            missing.join(", ")
        );
        std::process::exit(2);
    }
}

/// `add-header` alone, on two routes: request headers only (its last phase
/// is the request phase, so a chain run releases it there), and both ways.
const SMALL: &str = r#"
filters:
  add-header: { path: add_header.wasm }
listeners:
  - name: bench
    listen: 127.0.0.1:0
    routes:
      - name: request-only
        match: { path_prefix: /request-only }
        filters:
          - { filter: add-header, config: { request: { x-bench: weft } } }
        cluster: upstream
      - name: fresh
        match: { path_prefix: /fresh }
        filters:
          - { filter: add-header, config: { request: { x-bench: weft }, response: { x-served-by: weft } } }
        cluster: upstream
      - name: both
        filters:
          - { filter: add-header, config: { request: { x-bench: weft }, response: { x-served-by: weft } } }
        cluster: upstream
clusters:
  upstream: { endpoints: ["127.0.0.1:9"] }
"#;

struct Setup {
    runtime: Arc<FilterRuntime>,
    metrics: Arc<Registry>,
}

/// One runtime for all groups: modules are compiled once.
fn setup() -> &'static Setup {
    static SETUP: OnceLock<Setup> = OnceLock::new();
    SETUP.get_or_init(Setup::new)
}

impl Setup {
    fn new() -> Self {
        check_components();
        let metrics = Arc::new(Registry::default());
        let runtime = FilterRuntime::new(metrics.clone()).expect("the filter runtime starts");
        Self { runtime, metrics }
    }

    fn build(&self, config: &Config, base_dir: &Path) -> Snapshot {
        Snapshot::build(config, base_dir, &self.runtime)
            .unwrap_or_else(|e| panic!("the bench config does not build:\n{e}"))
    }
}

/// The chain's config: the same file the end-to-end benchmark runs.
fn chain_config() -> (Config, PathBuf) {
    let path = root().join("bench/configs/weft-chain.yaml");
    let loaded = config::load(&path).unwrap_or_else(|e| panic!("{}:\n{e}", path.display()));
    (loaded.config, loaded.base_dir)
}

fn chain_of(snapshot: &Snapshot, route: &str) -> Arc<FilterChain> {
    snapshot.listeners[0]
        .routes
        .routes()
        .iter()
        .find(|r| &*r.name == route)
        .unwrap_or_else(|| panic!("no route {route}"))
        .chain
        .clone()
}

/// A request as the proxy hands it to the chain (after routing), with the
/// API key the chain accepts.
fn exchange(route: &str) -> Box<Exchange> {
    let (head, ()) = http::Request::builder()
        .method("GET")
        .uri("/bench?page=2")
        .header("host", "127.0.0.1:18011")
        .header("user-agent", "wrk-weft-bench")
        .header("accept", "*/*")
        .header("x-api-key", "bench-key-0123456789")
        .header("x-request-id", "6f1c1f0e-5a4b-4c3d-9e2f-0a1b2c3d4e5f")
        .body(())
        .expect("a valid request")
        .into_parts();
    let peer = Arc::new(Peer::new("127.0.0.1:40000".parse().unwrap()));
    Box::new(Exchange {
        request: Some(head),
        props: RequestProps {
            request_id: "6f1c1f0e-5a4b-4c3d-9e2f-0a1b2c3d4e5f".into(),
            listener: "bench".into(),
            route: route.into(),
            cluster: "upstream".into(),
            peer: Some(peer),
            ..Default::default()
        },
        ..Default::default()
    })
}

/// The upstream's response head, as the proxy puts it in the exchange.
fn response_head() -> http::response::Parts {
    http::Response::builder()
        .status(200)
        .header("content-type", "application/json")
        .header("content-length", "12")
        .body(())
        .expect("a valid response")
        .into_parts()
        .0
}

/// After the request phases: what `forward` records before the response
/// phases run.
fn as_forwarded(ex: &mut Exchange) {
    ex.props.attempt = 1;
    ex.props.upstream_endpoint = Some("127.0.0.1:18000".parse().unwrap());
    ex.response = Some(response_head());
}

fn expect_continue(step: Step, what: &str) {
    match step {
        Step::Continue => {}
        Step::Respond(reply) => panic!("{what}: a filter answered {}", reply.head.status),
        Step::Failed(f) => panic!(
            "{what}: {} failed in {}: {}",
            f.filter,
            f.phase.name(),
            f.failure
        ),
        Step::Pause(_) | Step::Retry(_) => panic!("{what}: unexpected pause or retry"),
    }
}

/// One request through the whole chain: request headers, response headers,
/// on-done.
fn run_chain(
    chain: &Arc<FilterChain>,
    metrics: &Arc<Registry>,
    mut ex: Box<Exchange>,
) -> Box<Exchange> {
    let mut run = ChainRun::new(chain.clone(), metrics.clone());
    expect_continue(
        run.request_phase(&mut ex, Phase::RequestHeaders),
        "request phase",
    );
    as_forwarded(&mut ex);
    expect_continue(
        run.response_phase(&mut ex, Phase::ResponseHeaders),
        "response phase",
    );
    run.done(&mut ex);
    ex
}

/// Requests through the whole chain side by side: every request phase
/// first, then every response phase and on-done.
// Boxed as the proxy keeps them: a phase call swaps the box into the store.
#[allow(clippy::vec_box)]
fn run_interleaved(
    chain: &Arc<FilterChain>,
    metrics: &Arc<Registry>,
    mut exchanges: Vec<Box<Exchange>>,
) -> Vec<Box<Exchange>> {
    let mut runs: Vec<ChainRun> = exchanges
        .iter_mut()
        .map(|ex| {
            let mut run = ChainRun::new(chain.clone(), metrics.clone());
            expect_continue(
                run.request_phase(ex, Phase::RequestHeaders),
                "request phase",
            );
            as_forwarded(ex);
            run
        })
        .collect();
    for (run, ex) in runs.iter_mut().zip(&mut exchanges) {
        expect_continue(
            run.response_phase(ex, Phase::ResponseHeaders),
            "response phase",
        );
        run.done(ex);
    }
    exchanges
}

fn phases(c: &mut Criterion) {
    let setup = setup();
    let config = config::parse(SMALL, false).expect("the small config parses");
    let snapshot = setup.build(&config, &filter_dir());
    let both = chain_of(&snapshot, "both");
    let request_only = chain_of(&snapshot, "request-only");
    let entry = &both.entries[0];

    let mut group = c.benchmark_group("phase");
    // add-header sets its headers: calling a phase again on the same
    // exchange does the same work, so the exchange is reused.
    let mut instance = component_pool(entry).acquire().expect("an instance");
    let mut ex = exchange("both");
    as_forwarded(&mut ex);
    // add-header makes no callouts: nothing is waited.
    let mut callouts_waited = Duration::ZERO;
    group.bench_function("add_header/on_request_headers", |b| {
        b.iter(|| {
            black_box(
                instance
                    .run(&mut ex, Phase::RequestHeaders, &mut callouts_waited)
                    .expect("no trap"),
            )
        })
    });
    group.bench_function("add_header/on_response_headers", |b| {
        b.iter(|| {
            black_box(
                instance
                    .run(&mut ex, Phase::ResponseHeaders, &mut callouts_waited)
                    .expect("no trap"),
            )
        })
    });
    component_pool(entry).release(instance);

    let mut ex = exchange("request-only");
    group.bench_function("add_header/on_request_headers_via_chain_run", |b| {
        b.iter(|| {
            let mut run = ChainRun::new(request_only.clone(), setup.metrics.clone());
            let step = run.request_phase(&mut ex, Phase::RequestHeaders);
            assert!(matches!(step, Step::Continue));
        })
    });
    group.finish();
}

fn chain4(c: &mut Criterion) {
    let setup = setup();
    let (mut config, base_dir) = chain_config();
    // Also each filter of the chain alone, on a route named after it.
    let full = config.listeners[0].routes[0].clone();
    let names: Vec<String> = full.filters.iter().map(|e| e.filter.clone()).collect();
    for entry in &full.filters {
        let mut alone = full.clone();
        alone.name = entry.filter.clone();
        alone.filters = vec![entry.clone()];
        config.listeners[0].routes.push(alone);
    }
    let snapshot = setup.build(&config, &base_dir);
    let chain = chain_of(&snapshot, "all");
    assert_eq!(chain.entries.len(), 4, "weft-chain.yaml has four filters");
    // Once outside the timing: proves the chain lets the request through.
    run_chain(&chain, &setup.metrics, exchange("all"));

    let mut group = c.benchmark_group("chain4");
    group.bench_function("request_phase", |b| {
        b.iter_batched(
            || exchange("all"),
            |mut ex| {
                let mut run = ChainRun::new(chain.clone(), setup.metrics.clone());
                let step = run.request_phase(&mut ex, Phase::RequestHeaders);
                assert!(matches!(step, Step::Continue));
                // Dropping the run gives back the instances held for the
                // later phases, as when a request ends early; the
                // exchange is dropped outside the timing.
                drop(run);
                ex
            },
            BatchSize::SmallInput,
        )
    });
    group.bench_function("request_response_done", |b| {
        b.iter_batched(
            || exchange("all"),
            |ex| run_chain(&chain, &setup.metrics, ex),
            BatchSize::SmallInput,
        )
    });
    // 50 requests in flight, as at 50 connections: every request phase,
    // then every response phase and on-done. Each request holds its own
    // instance of each filter, so 50 instances per filter take turns.
    // Reported per batch of 50.
    group.bench_function("request_response_done_50_in_flight", |b| {
        b.iter_batched(
            || (0..50).map(|_| exchange("all")).collect::<Vec<_>>(),
            |exchanges| run_interleaved(&chain, &setup.metrics, exchanges),
            BatchSize::SmallInput,
        )
    });
    // The same with the telemetry filter's access log line formatted and
    // written (to a sink), as `weft run` does at the default log level.
    let sink = tracing_subscriber::fmt()
        .with_writer(std::io::sink)
        .with_ansi(false)
        .with_max_level(tracing::Level::INFO)
        .finish();
    tracing::subscriber::with_default(sink, || {
        group.bench_function("request_response_done_access_log", |b| {
            b.iter_batched(
                || exchange("all"),
                |ex| run_chain(&chain, &setup.metrics, ex),
                BatchSize::SmallInput,
            )
        });
    });
    group.finish();

    // Each filter of the chain alone: request, response and on-done phases
    // (those it implements), logging off.
    let mut group = c.benchmark_group("filter");
    for name in &names {
        let alone = chain_of(&snapshot, name);
        run_chain(&alone, &setup.metrics, exchange(name));
        group.bench_function(name.as_str(), |b| {
            b.iter_batched(
                || exchange(name),
                |ex| run_chain(&alone, &setup.metrics, ex),
                BatchSize::SmallInput,
            )
        });
    }
    group.finish();
}

fn instances(c: &mut Criterion) {
    let setup = setup();
    let config = config::parse(SMALL, false).expect("the small config parses");
    let snapshot = setup.build(&config, &filter_dir());
    let chain = chain_of(&snapshot, "both");
    let pool = component_pool(&chain.entries[0]);

    let mut group = c.benchmark_group("instance");
    group.bench_function("acquire_release", |b| {
        b.iter(|| {
            let instance = pool.acquire().expect("an instance");
            pool.release(black_box(instance));
        })
    });
    // With the pool empty every acquire creates an instance (instantiate
    // from the pre-linked component and run `init`); it is dropped, not
    // returned, so the pool stays empty. The `fresh` route's pool holds only
    // the instance the build created: taking it empties the pool.
    let fresh = chain_of(&snapshot, "fresh");
    let fresh_pool = component_pool(&fresh.entries[0]);
    let first = fresh_pool.acquire().expect("the instance made at build");
    group.bench_function("create_init_drop", |b| {
        b.iter(|| drop(black_box(fresh_pool.acquire().expect("an instance"))))
    });
    fresh_pool.release(first);
    group.finish();
}

fn snapshots(c: &mut Criterion) {
    let setup = setup();
    let (config, base_dir) = chain_config();
    let a = Arc::new(setup.build(&config, &base_dir));
    let b_snapshot = Arc::new(setup.build(&config, &base_dir));
    let current = ArcSwap::new(a.clone());

    let mut group = c.benchmark_group("snapshot");
    group.bench_function("load_full", |b| b.iter(|| black_box(current.load_full())));
    let mut flip = false;
    group.bench_function("swap_store_load", |b| {
        b.iter(|| {
            flip = !flip;
            current.store(if flip { b_snapshot.clone() } else { a.clone() });
            black_box(current.load_full())
        })
    });
    group.sample_size(10);
    group.bench_function("build_chain_modules_cached", |b| {
        b.iter(|| black_box(setup.build(&config, &base_dir)))
    });
    group.finish();
}

fn config() -> Criterion {
    Criterion::default()
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(3))
}

criterion_group! {
    name = benches;
    config = config();
    targets = phases, chain4, instances, snapshots
}
criterion_main!(benches);

/// The instance pool of a Weft filter's chain entry.
fn component_pool(entry: &weft::filter::ChainEntry) -> &weft::filter::instance::InstancePool {
    match &entry.pool {
        weft::filter::chain::FilterPool::Component(pool) => pool,
        weft::filter::chain::FilterPool::ProxyWasm(_) => panic!("not a Weft filter"),
    }
}
