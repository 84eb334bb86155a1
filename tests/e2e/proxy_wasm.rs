//! proxy-wasm filters (ABI v0.2.1, core modules built with the proxy-wasm
//! Rust SDK from `examples/proxy-wasm`) run unmodified through a real proxy
//! and a real upstream, each doing what its README promises: headers logged
//! and a local response, a 403 decided by an HTTP callout, bodies rewritten,
//! a header from the plugin configuration, tick log lines.

mod chain;
mod failures;
mod inspect;
mod swap;
mod trailers;

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use http::{Request, Response};
use http_body_util::Full;
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto;
use tokio::net::TcpListener;
use weft_test_harness::{Upstream, client, get, send};

use crate::{config, start};

/// The path of a built proxy-wasm filter, for a config.
pub fn pw(name: &str) -> String {
    weft_test_harness::proxy_wasm_filter(name)
        .display()
        .to_string()
}

/// An authorization service for `http_auth_random`: the body of its n-th
/// answer (from 0) is `decide(n)`; it records the path and the
/// `x-original-path` of every call.
pub struct AuthService {
    pub addr: SocketAddr,
    hits: Arc<AtomicUsize>,
    seen: Arc<Mutex<Vec<(String, String)>>>,
    task: tokio::task::JoinHandle<()>,
}

impl AuthService {
    pub async fn start(decide: fn(usize) -> &'static [u8]) -> AuthService {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let hits = Arc::new(AtomicUsize::new(0));
        let seen: Arc<Mutex<Vec<(String, String)>>> = Arc::default();
        let (counter, record) = (hits.clone(), seen.clone());
        let task = tokio::spawn(async move {
            loop {
                let Ok((stream, _)) = listener.accept().await else {
                    continue;
                };
                let (counter, record) = (counter.clone(), record.clone());
                tokio::spawn(async move {
                    let service = service_fn(move |req: Request<hyper::body::Incoming>| {
                        let n = counter.fetch_add(1, Ordering::SeqCst);
                        let original = req
                            .headers()
                            .get("x-original-path")
                            .and_then(|v| v.to_str().ok())
                            .unwrap_or_default()
                            .to_string();
                        record
                            .lock()
                            .unwrap()
                            .push((req.uri().path().to_string(), original));
                        async move {
                            Ok::<_, Infallible>(Response::new(Full::new(Bytes::from_static(
                                decide(n),
                            ))))
                        }
                    });
                    let _ = auto::Builder::new(TokioExecutor::new())
                        .serve_connection(TokioIo::new(stream), service)
                        .await;
                });
            }
        });
        AuthService {
            addr,
            hits,
            seen,
            task,
        }
    }

    /// Calls received so far.
    pub fn hits(&self) -> usize {
        self.hits.load(Ordering::SeqCst)
    }

    /// `(path, x-original-path)` of every call so far.
    pub fn seen(&self) -> Vec<(String, String)> {
        self.seen.lock().unwrap().clone()
    }
}

impl Drop for AuthService {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// Even first bytes grant, odd ones forbid: grant, forbid, grant, …
pub fn alternate(n: usize) -> &'static [u8] {
    if n.is_multiple_of(2) {
        b"0 granted"
    } else {
        b"1 forbidden"
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn http_headers_logs_every_header_answers_hello_and_marks_responses() {
    let up = Upstream::start().await;
    let filters = format!("  pw-headers: {{ path: {} }}", pw("http_headers"));
    let routes = "      - { name: all, filters: [{ filter: pw-headers }], cluster: backend }";
    let weft = start(&config(&filters, routes, up.addr));
    let url = weft.url("public");

    for _ in 0..2 {
        let r = get(&format!("{url}/hello")).await;
        assert_eq!(r.status, 200, "{:?}", r.body);
        assert_eq!(&r.body[..], b"Hello from proxy-wasm\n");
        assert_eq!(r.header("x-powered-by"), Some("proxy-wasm"));
        assert_eq!(r.header("content-type"), Some("text/plain"));
    }
    assert_eq!(
        up.hits(),
        0,
        "the local response never reaches the upstream"
    );

    let req = Request::get(format!("{url}/pass/through"))
        .header("x-pw-marker", "marker-4711")
        .body(Full::default())
        .unwrap();
    let r = send(&client(false), req).await;
    assert_eq!(r.status, 200, "{:?}", r.body);
    assert_eq!(r.json()["path"], "/pass/through");
    assert_eq!(
        r.echoed_header("x-pw-marker").as_deref(),
        Some("marker-4711")
    );
    assert_eq!(r.header("x-powered-by"), Some("proxy-wasm"));
    assert_eq!(up.hits(), 1);

    // Request headers (pseudo-headers too) and response headers are logged.
    tokio::task::block_in_place(|| {
        weft.wait_for_log("-> x-pw-marker: marker-4711", 1);
        weft.wait_for_log("-> :path: /pass/through", 1);
        weft.wait_for_log(&format!("<- x-upstream-addr: {}", up.addr), 1);
        weft.wait_for_log("completed.", 1);
    });
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn http_auth_random_lets_through_or_forbids_as_its_callout_answers() {
    let up = Upstream::start().await;
    let auth = AuthService::start(alternate).await;
    let filters = format!(
        "  pw-auth: {{ path: {}, allow_http: [\"{}\"] }}",
        pw("http_auth_random"),
        auth.addr
    );
    let routes = format!(
        "      - {{ name: all, filters: [{{ filter: pw-auth, config: \"{}\" }}], cluster: backend }}",
        auth.addr
    );
    let weft = start(&config(&filters, &routes, up.addr));
    let url = weft.url("public");

    // Requests one at a time: the service's answers alternate.
    let mut statuses = Vec::new();
    for i in 0..6 {
        let r = get(&format!("{url}/item/{i}")).await;
        statuses.push(r.status.as_u16());
        if r.status == 200 {
            assert_eq!(r.json()["path"], format!("/item/{i}"));
            assert_eq!(r.header("x-auth"), Some("passed"));
        } else {
            assert_eq!(&r.body[..], b"Access forbidden.\n");
            assert_eq!(r.header("powered-by"), Some("proxy-wasm"));
            assert_eq!(r.header("x-auth"), None);
        }
    }
    assert_eq!(statuses, [200, 403, 200, 403, 200, 403]);
    assert_eq!(up.hits(), 3, "only the granted requests reach the upstream");
    assert_eq!(auth.hits(), 6, "one callout per request");
    let seen = auth.seen();
    for (i, (path, original)) in seen.iter().enumerate() {
        assert_eq!(path, "/auth");
        assert_eq!(original, &format!("/item/{i}"));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn http_body_rewrites_the_whole_response_and_request_bodies() {
    let up = Upstream::start().await;
    let filters = format!("  pw-body: {{ path: {} }}", pw("http_body"));
    let routes = "      - { name: all, filters: [{ filter: pw-body }], cluster: backend }";
    let weft = start(&config(&filters, routes, up.addr));
    let url = weft.url("public");

    // The upstream echoes the path in its body: the word is replaced there.
    let r = get(&format!("{url}/top/secret/file")).await;
    assert_eq!(r.status, 200, "{:?}", r.body);
    let text = String::from_utf8_lossy(&r.body).to_string();
    assert!(!text.contains("secret"), "{text}");
    assert_eq!(r.json()["path"], "/top/[redacted]/file");
    if let Some(length) = r.header("content-length") {
        assert_eq!(
            length,
            r.body.len().to_string(),
            "the length of the new body"
        );
    }

    // A body without the word is left alone.
    let r = get(&format!("{url}/plain")).await;
    assert_eq!(r.json()["path"], "/plain");

    // The request body: "my secret, our secret" becomes
    // "my [redacted], our [redacted]" (29 bytes) before the upstream sees it.
    let req = Request::post(format!("{url}/upload"))
        .body(Full::new(Bytes::from_static(b"my secret, our secret")))
        .unwrap();
    let r = send(&client(false), req).await;
    assert_eq!(r.status, 200, "{:?}", r.body);
    assert_eq!(r.json()["body_bytes"], 29);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn http_config_adds_the_header_its_plugin_configuration_names() {
    let up = Upstream::start().await;
    let filters = format!(
        "  pw-config: {{ path: {}, vm_config: \"vm-config-marker-31\" }}",
        pw("http_config")
    );
    // A mapping is passed as JSON; a string is passed as its bytes.
    let routes = r#"      - { name: json, match: { path_prefix: /json/ }, filters: [{ filter: pw-config, config: { header: x-from-config, value: from-json } }], cluster: backend }
      - { name: text, filters: [{ filter: pw-config, config: '{"header": "x-from-text", "value": "from text"}' }], cluster: backend }"#;
    let weft = start(&config(&filters, routes, up.addr));
    let url = weft.url("public");

    let r = get(&format!("{url}/json/x")).await;
    assert_eq!(r.status, 200, "{:?}", r.body);
    assert_eq!(r.header("x-from-config"), Some("from-json"));
    assert_eq!(r.header("x-from-text"), None);
    let r = get(&format!("{url}/other")).await;
    assert_eq!(r.status, 200, "{:?}", r.body);
    assert_eq!(r.header("x-from-text"), Some("from text"));
    assert_eq!(r.header("x-from-config"), None);
    assert_eq!(up.hits(), 2);

    // The VM configuration is what the filter definition gave.
    tokio::task::block_in_place(|| {
        weft.wait_for_log("http-config: vm configuration: vm-config-marker-31", 1)
    });
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hello_world_logs_its_start_and_a_line_on_every_tick() {
    let up = Upstream::start().await;
    let filters = format!("  pw-hello: {{ path: {} }}", pw("hello_world"));
    // The plugin configuration is the tick period: 100 ms.
    let routes =
        "      - { name: all, filters: [{ filter: pw-hello, config: \"100\" }], cluster: backend }";
    let weft = start(&config(&filters, routes, up.addr));

    let r = get(&format!("{}/x", weft.url("public"))).await;
    assert_eq!(r.status, 200, "requests pass: {:?}", r.body);
    assert_eq!(r.json()["path"], "/x");

    tokio::task::block_in_place(|| {
        weft.wait_for_log("hello-world: Hello, World!", 1);
        weft.wait_for_log("hello-world: tick 1 at ", 1);
        weft.wait_for_log("hello-world: tick 2 at ", 1);
    });
    // Each tick line has the host's clock, in ms since the epoch.
    let log = weft.log_text();
    let line = log
        .lines()
        .find(|l| l.contains("hello-world: tick 2 at "))
        .unwrap();
    let rest = &line[line.find("tick 2 at ").unwrap() + "tick 2 at ".len()..];
    let ms: u128 = rest
        .split_whitespace()
        .next()
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("no time in {line}"));
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_millis();
    let off = now.abs_diff(ms);
    assert!(
        off < Duration::from_secs(60).as_millis(),
        "tick time {ms} is {off} ms from now: {line}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_module_of_abi_0_2_0_runs_with_its_own_callback_shapes() {
    let up = Upstream::start().await;
    let dir = weft_test_harness::process::temp_dir("pw-abi-0-2-0");
    std::fs::create_dir_all(&dir).unwrap();
    let module = dir.join("abi_0_2_0.wasm");
    std::fs::write(
        &module,
        weft_test_harness::filters::proxy_wasm_abi_0_2_0_module(),
    )
    .unwrap();
    let filters = format!("  old: {{ path: {} }}", module.display());
    let routes = "      - { name: all, filters: [{ filter: old }], cluster: backend }";
    let weft = start(&format!(
        "admin: {{ listen: 127.0.0.1:0 }}\n{}",
        config(&filters, routes, up.addr)
    ));
    // A two-argument headers callback, and its local response.
    let r = get(&format!("{}/x", weft.url("public"))).await;
    assert_eq!(r.status, 200);
    assert_eq!(&r.body[..], b"from abi 0.2.0");
    assert_eq!(up.hits(), 0);
    // `proxy_continue_request`, the v0.2.0 name, lets a request through.
    let r = get(&format!("{}/a/pass", weft.url("public"))).await;
    assert_eq!(r.status, 200);
    assert_eq!(r.json()["path"], "/a/pass");
    assert_eq!(up.hits(), 1);
    let filters = get(&format!("{}/filters", weft.url("admin"))).await.json();
    assert_eq!(filters["filters"][0]["contract_version"], "0.2.0");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bodies_are_given_whole_by_default_and_stream_with_an_empty_list() {
    let up = Upstream::start().await;
    let filters = format!(
        "  given: {{ path: {} }}\n  streams: {{ path: {}, bodies: [] }}",
        pw("http_headers"),
        pw("http_headers")
    );
    let routes = "      - { name: given, match: { path_prefix: /given/ }, max_body_bytes: 16, filters: [{ filter: given }], cluster: backend }
      - { name: streams, max_body_bytes: 16, filters: [{ filter: streams }], cluster: backend }";
    let weft = start(&config(&filters, routes, up.addr));
    let post = |path: &str| {
        Request::post(format!("{}{path}", weft.url("public")))
            .body(Full::new(Bytes::from(vec![b'x'; 100])))
            .unwrap()
    };
    // Given whole: buffered, and past the route's limit.
    let r = send(&client(false), post("/given/x")).await;
    assert_eq!(r.status, 413, "{:?}", r.body);
    assert_eq!(up.hits(), 0);
    // `bodies: []`: the filter runs its header callbacks, the body streams.
    let r = send(&client(false), post("/streams/x")).await;
    assert_eq!(r.status, 200, "{:?}", r.body);
    assert_eq!(r.header("x-powered-by"), Some("proxy-wasm"));
    assert_eq!(r.json()["body_bytes"], 100);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_http_call_past_the_callout_budget_arrives_failed_and_in_time() {
    let up = Upstream::start().await;
    // Accepts connections (the kernel's backlog) and never answers.
    let silent = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = silent.local_addr().unwrap();
    let filters = format!(
        "  auth: {{ path: {}, allow_http: [\"{addr}\"], callout_phase_budget_ms: 300 }}",
        pw("http_auth_random")
    );
    let routes = format!(
        "      - {{ name: all, filters: [{{ filter: auth, config: \"{addr}\" }}], cluster: backend }}"
    );
    let weft = start(&config(&filters, &routes, up.addr));
    let started = std::time::Instant::now();
    let r = get(&format!("{}/x", weft.url("public"))).await;
    // The call is cut at the phase's budget, well before its own 5 s
    // timeout, and arrives with no body: the filter forbids.
    assert!(
        started.elapsed() < Duration::from_secs(3),
        "{:?}",
        started.elapsed()
    );
    assert_eq!(r.status, 403, "{:?}", r.body);
    assert_eq!(up.hits(), 0);
    tokio::task::block_in_place(|| weft.wait_for_log("http call failed", 1));
    drop(silent);
}
