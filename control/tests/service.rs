//! The control plane's gRPC service, served on 127.0.0.1 and called with a
//! real tonic client: pushes, fetches, applies, subscriptions and status.

mod common;

use std::sync::Arc;
use std::time::Duration;

use common::*;
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tonic::{Code, Request, Status, Streaming};
use weft_api::v1::control_client::ControlClient;
use weft_api::v1::control_message::Kind as Out;
use weft_api::v1::proxy_message::Kind as In;
use weft_api::v1::{
    Ack, ApplyRequest, ApplyResponse, ConfigFormat, ControlMessage, FetchModuleRequest, Hello,
    ListModulesRequest, Nack, Phase, Progress, ProxyMessage, ProxyStatus, PushChunk,
    PushModuleResponse, StatusRequest,
};
use weft_api::{CHUNK_SIZE, ModuleAssembler, push_chunks};
use weft_control::apply::ApplyCheck;
use weft_control::server::{ControlPlane, ServeError};
use weft_test_harness::components::{
    filter_component, filter_component_of_contract, other_world_component, padded,
};
use weft_test_harness::filters::core_module_without_proxy_abi;
use weft_test_harness::proxy_wasm_filter;

type Client = ControlClient<tonic::transport::Channel>;
const TOKEN: &str = "s3cret-token";

fn with_token<T>(message: T, token: &str) -> Request<T> {
    let mut request = Request::new(message);
    let value = format!("Bearer {token}").parse().unwrap();
    request.metadata_mut().insert("authorization", value);
    request
}

async fn push(client: &mut Client, name: &str, bytes: &[u8]) -> Result<PushModuleResponse, Status> {
    let chunks = tokio_stream::iter(push_chunks(name, bytes));
    client
        .push_module(with_token(chunks, TOKEN))
        .await
        .map(|r| r.into_inner())
}

async fn apply(client: &mut Client, group: &str, config: &str) -> ApplyResponse {
    let request = ApplyRequest {
        group: group.into(),
        config: config.as_bytes().to_vec(),
        format: ConfigFormat::Yaml as i32,
    };
    client
        .apply(with_token(request, TOKEN))
        .await
        .expect("apply answers")
        .into_inner()
}

async fn fetch(client: &mut Client, sha256: &str) -> (Vec<u8>, usize) {
    let request = FetchModuleRequest {
        sha256: sha256.into(),
    };
    let mut stream = client.fetch_module(request).await.unwrap().into_inner();
    let mut assembler = ModuleAssembler::new(sha256, 64 << 20);
    let mut chunks = 0;
    while let Some(chunk) = stream.message().await.unwrap() {
        assert!(
            chunk.data.len() <= CHUNK_SIZE,
            "chunk of {} bytes",
            chunk.data.len()
        );
        assembler.push(&chunk).unwrap();
        chunks += 1;
    }
    (
        assembler
            .finish()
            .expect("whole and hashing to what was asked"),
        chunks,
    )
}

async fn statuses(client: &mut Client) -> Vec<ProxyStatus> {
    client
        .status(StatusRequest {})
        .await
        .unwrap()
        .into_inner()
        .proxies
}

async fn status_of(client: &mut Client, node: &str) -> Option<ProxyStatus> {
    statuses(client).await.into_iter().find(|p| p.node == node)
}

#[tokio::test]
async fn a_20_mib_module_is_pushed_once_and_fetched_in_chunks_after_a_restart() {
    let dir = tempfile::tempdir().unwrap();
    let plane = start(dir.path(), options(Some(TOKEN))).await;
    let mut client = plane.client().await;
    let bytes = padded(&filter_component(), 20 << 20, "big");

    let pushed = push(&mut client, "big-filter", &bytes).await.unwrap();
    assert_eq!(pushed.name, "big-filter");
    assert_eq!(pushed.version, 1);
    assert_eq!(pushed.contract_version, "0.4.0");
    assert!(!pushed.already_existed);
    let again = push(&mut client, "big-filter", &bytes).await.unwrap();
    assert!(again.already_existed, "the same bytes twice are a no-op");
    assert_eq!((again.version, &again.sha256), (1, &pushed.sha256));

    plane.stop().await;
    let plane = start(dir.path(), options(Some(TOKEN))).await;
    let mut client = plane.client().await;
    let (fetched, chunks) = fetch(&mut client, &pushed.sha256).await;
    assert_eq!(fetched, bytes);
    assert!(chunks >= 20, "{chunks} chunks");
    let listed = client
        .list_modules(ListModulesRequest {})
        .await
        .unwrap()
        .into_inner()
        .modules;
    assert_eq!(listed.len(), 1);
    assert_eq!(
        (listed[0].name.as_str(), listed[0].size),
        ("big-filter", bytes.len() as u64)
    );

    let missing = "0".repeat(64);
    let err = client
        .fetch_module(FetchModuleRequest { sha256: missing })
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::NotFound, "{err}");
    plane.stop().await;
}

#[tokio::test]
async fn writes_need_the_token_and_reads_do_not() {
    let dir = tempfile::tempdir().unwrap();
    let err = ControlPlane::bind(
        "0.0.0.0:0".parse().unwrap(),
        dir.path(),
        options(None),
        Arc::new(weft_control::apply::NoFurtherChecks),
    )
    .await
    .err()
    .expect("a non-loopback address without a token is refused");
    assert!(matches!(err, ServeError::TokenRequired(_)), "{err}");

    let plane = start(dir.path(), options(Some(TOKEN))).await;
    let mut client = plane.client().await;
    let chunks = || tokio_stream::iter(push_chunks("f", &filter_component()));
    let err = client.push_module(chunks()).await.unwrap_err();
    assert_eq!(err.code(), Code::Unauthenticated, "{err}");
    assert!(err.message().contains("Bearer"), "{err}");
    let err = client
        .push_module(with_token(chunks(), "wrong"))
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::PermissionDenied, "{err}");
    let err = client
        .apply(ApplyRequest {
            group: "web".into(),
            config: b"{}".to_vec(),
            format: 0,
        })
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::Unauthenticated, "{err}");
    // Reads need nothing, and nothing was written.
    let modules = client.list_modules(ListModulesRequest {}).await.unwrap();
    assert!(modules.into_inner().modules.is_empty());
    assert!(statuses(&mut client).await.is_empty());
    plane.stop().await;
}

#[tokio::test]
async fn bad_and_cut_off_uploads_are_refused_and_store_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let mut opts = options(Some(TOKEN));
    opts.max_module_bytes = 1 << 20;
    let plane = start(dir.path(), opts).await;
    let mut client = plane.client().await;
    let core_module = wasm_encoder::Module::new().finish();
    let cases: [(&str, Vec<u8>, &str); 5] = [
        (
            "garbage",
            b"definitely not wasm".to_vec(),
            "not a WebAssembly file",
        ),
        (
            "core",
            core_module,
            "a core WebAssembly module, not a component",
        ),
        (
            "other-world",
            other_world_component(),
            "not a component of the weft:filter world: it exports [\"acme:thing/api@1.0.0\"]",
        ),
        (
            "future",
            filter_component_of_contract("0.5.0"),
            "built for contract weft:filter@0.5.0, but the mesh serves weft:filter@0.4.0",
        ),
        (
            "huge",
            padded(&filter_component(), 2 << 20, "huge"),
            "over the control plane's cap of 1048576 bytes",
        ),
    ];
    for (name, bytes, message) in cases {
        let err = push(&mut client, name, &bytes).await.unwrap_err();
        assert_eq!(err.code(), Code::InvalidArgument, "{name}: {err}");
        assert!(err.message().contains(message), "{name}: {}", err.message());
    }

    // An upload whose stream ends early.
    let bytes = padded(&filter_component(), 300_000, "short");
    let mut chunks = push_chunks("short", &bytes[..200_000]);
    chunks[0].total_size = bytes.len() as u64;
    let err = client
        .push_module(with_token(tokio_stream::iter(chunks), TOKEN))
        .await
        .unwrap_err();
    assert!(
        err.message().contains(&format!(
            "ended after 200000 of {} bytes: nothing stored",
            bytes.len()
        )),
        "{err}"
    );

    // An upload whose client goes away mid-stream.
    let (tx, rx) = mpsc::channel::<PushChunk>(1);
    tx.send(PushChunk {
        name: "cut".into(),
        total_size: 100_000,
        data: vec![0; 50_000],
    })
    .await
    .unwrap();
    let mut cut_client = plane.client().await;
    let upload = tokio::spawn(async move {
        cut_client
            .push_module(with_token(ReceiverStream::new(rx), TOKEN))
            .await
    });
    // Wait until the client stream has taken the first chunk from the
    // channel (it is on its way), then go away mid-upload.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while tx.capacity() < tx.max_capacity() {
        assert!(
            tokio::time::Instant::now() < deadline,
            "the first chunk was not taken within 10 s"
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    upload.abort();
    drop(tx);

    // A good push still works, and is the only thing stored.
    let good = push(&mut client, "good", &filter_component())
        .await
        .unwrap();
    let listed = client
        .list_modules(ListModulesRequest {})
        .await
        .unwrap()
        .into_inner()
        .modules;
    let names: Vec<&str> = listed.iter().map(|m| m.name.as_str()).collect();
    assert_eq!(names, ["good"]);
    let files: Vec<String> = std::fs::read_dir(dir.path().join("modules"))
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    assert_eq!(files, [good.sha256]);
    plane.stop().await;
}

/// A proxy's end of a subscription, spoken over the real protocol.
/// It sends a heartbeat every 100 ms until `stop_heartbeats`.
struct Subscriber {
    to_plane: mpsc::Sender<ProxyMessage>,
    from_plane: Streaming<ControlMessage>,
    heartbeats: tokio::task::JoinHandle<()>,
}

impl Drop for Subscriber {
    fn drop(&mut self) {
        self.heartbeats.abort();
    }
}

impl Subscriber {
    async fn connect(client: &mut Client, node: &str, contract: &str, serving: u64) -> Self {
        Self::connect_serving(client, node, &[contract], serving).await
    }

    /// Connects as a proxy that serves every contract in `contracts`.
    async fn connect_serving(
        client: &mut Client,
        node: &str,
        contracts: &[&str],
        serving: u64,
    ) -> Self {
        let (to_plane, rx) = mpsc::channel(16);
        let subscriber_hello = Hello {
            node: node.into(),
            group: "web".into(),
            weft_version: "0.1.0".into(),
            contract_versions: contracts.iter().map(|c| c.to_string()).collect(),
            snapshot_version: serving,
            module_sha256s: Vec::new(),
        };
        to_plane
            .send(message(In::Hello(subscriber_hello)))
            .await
            .unwrap();
        let from_plane = client
            .subscribe(ReceiverStream::new(rx))
            .await
            .unwrap()
            .into_inner();
        let beat = to_plane.clone();
        let heartbeats = tokio::spawn(async move {
            loop {
                tokio::time::sleep(Duration::from_millis(100)).await;
                if beat
                    .send(message(In::Heartbeat(Default::default())))
                    .await
                    .is_err()
                {
                    return;
                }
            }
        });
        Self {
            to_plane,
            from_plane,
            heartbeats,
        }
    }

    fn stop_heartbeats(&self) {
        self.heartbeats.abort();
    }

    async fn send(&self, kind: In) {
        self.to_plane.send(message(kind)).await.unwrap();
    }

    /// The next message that is not a heartbeat.
    async fn next(&mut self) -> Out {
        let next = async {
            loop {
                let message = self
                    .from_plane
                    .message()
                    .await
                    .unwrap()
                    .expect("stream open");
                match message.kind.unwrap() {
                    Out::Heartbeat(_) => {}
                    other => return other,
                }
            }
        };
        tokio::time::timeout(Duration::from_secs(20), next)
            .await
            .expect("a message within 20 s")
    }
}

fn message(kind: In) -> ProxyMessage {
    ProxyMessage { kind: Some(kind) }
}

const WEB_CONFIG: &str = "
filters:
  auth: { module: auth }
listeners:
  - name: public
    routes:
      - { name: all, filters: [{ filter: auth }], cluster: backend }
clusters:
  backend: { endpoints: ['127.0.0.1:9000'] }
";

#[tokio::test]
async fn subscriptions_get_snapshots_and_their_acks_nacks_and_refusals_show_in_status() {
    let dir = tempfile::tempdir().unwrap();
    let validator = |check: &ApplyCheck<'_>| -> Vec<String> {
        if check.config.contains("forbidden") {
            vec!["listeners[0].routes[0].cluster: forbidden by the proxy's checks".into()]
        } else {
            Vec::new()
        }
    };
    let plane = start_with(dir.path(), options(Some(TOKEN)), Arc::new(validator)).await;
    let mut client = plane.client().await;
    let module = push(&mut client, "auth", &filter_component())
        .await
        .unwrap();

    // Refused applies change nothing and say why, one error a line.
    let refused = apply(
        &mut client,
        "web",
        "filters:\n  auth: { path: auth.wasm }\n  x: { module: x@4 }\n",
    )
    .await;
    assert_eq!(refused.version, 0);
    assert_eq!(
        refused.errors,
        [
            "filters.auth.path: a group's filter names a pushed module with `module:` (e.g. `module: auth`), not a file",
            "filters.x.module: no module \"x@4\" in the registry",
        ]
    );
    let refused = apply(
        &mut client,
        "web",
        "listeners: [ { name: public, listen: '127.0.0.1:80' } ]",
    )
    .await;
    assert_eq!(refused.errors.len(), 1, "{:?}", refused.errors);
    assert!(
        refused.errors[0].starts_with("listeners[0].listen: "),
        "{:?}",
        refused.errors
    );
    // The proxy's own parts come from its local config only.
    let refused = apply(
        &mut client,
        "web",
        "admin: { listen: '127.0.0.1:9901' }\nmodule_cache: { enabled: false }\nlisteners: []\n",
    )
    .await;
    assert_eq!(
        refused.errors,
        [
            "admin: belongs to each proxy's local config, not to a group's",
            "module_cache: belongs to each proxy's local config, not to a group's",
        ]
    );
    let refused = apply(
        &mut client,
        "web",
        &WEB_CONFIG.replace("backend }", "forbidden }"),
    )
    .await;
    assert_eq!(
        refused.errors,
        ["listeners[0].routes[0].cluster: forbidden by the proxy's checks"]
    );
    assert!(
        !apply(&mut client, "web", "filters: [")
            .await
            .errors
            .is_empty()
    );

    // web-1 subscribes before anything is applied to its group, then takes
    // version 1: fetching, then ACK.
    let mut web1 = Subscriber::connect(&mut client, "web-1", "0.4.0", 0).await;
    eventually("web-1 connected", || async {
        status_of(&mut plane.client().await, "web-1")
            .await
            .filter(|s| s.connected)
    })
    .await;
    let applied = apply(&mut client, "web", WEB_CONFIG).await;
    assert_eq!((applied.version, applied.errors.len()), (1, 0));
    let same = apply(&mut client, "web", WEB_CONFIG).await;
    assert!(same.unchanged && same.version == 1, "{same:?}");
    let Out::Snapshot(snapshot) = web1.next().await else {
        panic!("expected a snapshot")
    };
    assert_eq!(snapshot.version, 1);
    assert_eq!(String::from_utf8(snapshot.config).unwrap(), WEB_CONFIG);
    assert_eq!(snapshot.modules.len(), 1);
    assert_eq!(snapshot.modules[0].reference, "auth");
    assert_eq!(snapshot.modules[0].sha256, module.sha256);
    web1.send(In::Progress(Progress {
        version: 1,
        phase: Phase::Fetching as i32,
    }))
    .await;
    let pending = eventually("web-1 fetching", || async {
        status_of(&mut plane.client().await, "web-1")
            .await
            .filter(|s| s.pending_phase == Phase::Fetching as i32)
    })
    .await;
    assert_eq!(
        (
            pending.pending_version,
            pending.serving_version,
            pending.connected
        ),
        (1, 0, true)
    );
    let (fetched, _) = fetch(&mut client, &snapshot.modules[0].sha256).await;
    assert_eq!(fetched, filter_component());
    web1.send(In::Ack(Ack {
        version: 1,
        nonce: snapshot.nonce,
    }))
    .await;
    let served = eventually("web-1 serving 1", || async {
        status_of(&mut plane.client().await, "web-1")
            .await
            .filter(|s| s.serving_version == 1)
    })
    .await;
    assert_eq!((served.pending_version, served.group.as_str()), (0, "web"));
    assert!(served.last_nack.is_none());
    let listed = client
        .list_modules(ListModulesRequest {})
        .await
        .unwrap()
        .into_inner();
    assert_eq!(listed.modules[0].running_on, ["web-1"]);

    // web-2's init refuses the config: NACK, it keeps version 0.
    let mut web2 = Subscriber::connect(&mut client, "web-2", "0.4.0", 0).await;
    let Out::Snapshot(snapshot) = web2.next().await else {
        panic!("expected a snapshot")
    };
    let error = "filter auth: init refused its config: missing keys";
    web2.send(In::Nack(Nack {
        version_kept: 0,
        nonce: snapshot.nonce,
        error: error.into(),
    }))
    .await;
    let nacked = eventually("web-2's NACK", || async {
        status_of(&mut plane.client().await, "web-2")
            .await
            .filter(|s| s.last_nack.is_some())
    })
    .await;
    let nack = nacked.last_nack.unwrap();
    assert_eq!(
        (nack.version, nack.error.as_str(), nack.by_control_plane),
        (1, error, false)
    );
    assert_eq!((nacked.serving_version, nacked.pending_version), (0, 0));

    // old-1 serves only contract 0.3.0: refused before any download.
    let mut old = Subscriber::connect(&mut client, "old-1", "0.3.0", 0).await;
    let Out::Refusal(refusal) = old.next().await else {
        panic!("expected a refusal")
    };
    assert_eq!(refusal.version, 1);
    assert!(
        refusal
            .error
            .contains("names auth@1 (weft:filter@0.4.0), but this proxy serves weft:filter@0.3.0"),
        "{}",
        refusal.error
    );
    let refused = eventually("old-1's refusal", || async {
        status_of(&mut plane.client().await, "old-1")
            .await
            .filter(|s| s.last_nack.is_some())
    })
    .await;
    assert!(refused.last_nack.unwrap().by_control_plane);

    // A new version reaches web-1 only when applied; a proxy already
    // serving the current version is sent nothing.
    let applied = apply(
        &mut client,
        "web",
        &WEB_CONFIG.replace("all,", "everything,"),
    )
    .await;
    assert_eq!(applied.version, 2);
    let Out::Snapshot(snapshot) = web1.next().await else {
        panic!("expected a snapshot")
    };
    assert_eq!(snapshot.version, 2);
    web1.send(In::Ack(Ack {
        version: 2,
        nonce: snapshot.nonce,
    }))
    .await;
    let mut current = Subscriber::connect(&mut client, "web-3", "0.4.0", 2).await;
    let first = tokio::time::timeout(Duration::from_millis(700), current.next()).await;
    assert!(first.is_err(), "web-3 already serves version 2: {first:?}");

    // web-2 goes away; web-3 stops its heartbeats: both are marked gone.
    drop(web2);
    current.stop_heartbeats();
    let gone = eventually("web-2 gone", || async {
        status_of(&mut plane.client().await, "web-2")
            .await
            .filter(|s| !s.connected)
    })
    .await;
    assert!(gone.gone_since_unix_ms > 0);
    let silent = eventually("web-3 gone after missed heartbeats", || async {
        status_of(&mut plane.client().await, "web-3")
            .await
            .filter(|s| !s.connected)
    })
    .await;
    assert!(silent.gone_since_unix_ms >= silent.last_seen_unix_ms);
    let web1_status = status_of(&mut client, "web-1").await.unwrap();
    assert!(
        web1_status.connected && web1_status.serving_version == 2,
        "{web1_status:?}"
    );
    drop(current);
    plane.stop().await;
}

/// A valid core module exporting one function, `() -> ()`, as `name`.
fn core_module_exporting(name: &str) -> Vec<u8> {
    use wasm_encoder::{
        CodeSection, ExportKind, ExportSection, Function, FunctionSection, Instruction, Module,
        TypeSection,
    };
    let mut types = TypeSection::new();
    types.ty().function([], []);
    let mut functions = FunctionSection::new();
    functions.function(0);
    let mut exports = ExportSection::new();
    exports.export(name, ExportKind::Func, 0);
    let mut body = Function::new([]);
    body.instruction(&Instruction::End);
    let mut code = CodeSection::new();
    code.function(&body);
    let mut module = Module::new();
    module
        .section(&types)
        .section(&functions)
        .section(&exports)
        .section(&code);
    module.finish()
}

const PROXY_WASM_CONFIG: &str = "
filters:
  headers: { module: headers }
  legacy: { module: legacy }
listeners:
  - name: public
    routes:
      - { name: all, filters: [{ filter: headers }, { filter: legacy }], cluster: backend }
clusters:
  backend: { endpoints: ['127.0.0.1:9000'] }
";

#[tokio::test]
async fn proxy_wasm_modules_are_pushed_with_their_abi_and_sent_only_to_proxies_that_run_it() {
    let dir = tempfile::tempdir().unwrap();
    let plane = start(dir.path(), options(Some(TOKEN))).await;
    let mut client = plane.client().await;

    // A proxy-wasm filter built with the SDK: ABI 0.2.1.
    let headers = std::fs::read(proxy_wasm_filter("http_headers")).unwrap();
    let pushed = push(&mut client, "headers", &headers).await.unwrap();
    assert_eq!(
        (pushed.version, pushed.contract_version.as_str()),
        (1, "proxy-wasm@0.2.1")
    );
    // A module declaring only ABI 0.2.0.
    let legacy = push(
        &mut client,
        "legacy",
        &core_module_exporting("proxy_abi_version_0_2_0"),
    )
    .await
    .unwrap();
    assert_eq!(legacy.contract_version, "proxy-wasm@0.2.0");
    let listed = client
        .list_modules(ListModulesRequest {})
        .await
        .unwrap()
        .into_inner();
    assert_eq!(listed.contract_versions, ["0.4.0", "proxy-wasm@0.2.1"]);
    let contracts: Vec<(&str, &str)> = listed
        .modules
        .iter()
        .map(|m| (m.name.as_str(), m.contract_version.as_str()))
        .collect();
    assert!(
        contracts.contains(&("headers", "proxy-wasm@0.2.1"))
            && contracts.contains(&("legacy", "proxy-wasm@0.2.0")),
        "{contracts:?}"
    );

    // Core modules without the ABI export are still refused, saying why.
    for (name, bytes) in [
        ("plain", core_module_without_proxy_abi()),
        ("on-start", core_module_exporting("proxy_on_vm_start")),
    ] {
        let err = push(&mut client, name, &bytes).await.unwrap_err();
        assert_eq!(err.code(), Code::InvalidArgument, "{name}: {err}");
        for part in [
            "a core WebAssembly module, not a component",
            "not a proxy-wasm filter either",
            "proxy_abi_version_0_2_1",
        ] {
            assert!(err.message().contains(part), "{name}: {}", err.message());
        }
    }

    // A proxy that advertises proxy-wasm@0.2.1 is sent both (0.2.0 runs
    // there too); one that serves only Weft's contract is refused, in
    // words that name the ABI as it is.
    let applied = apply(&mut client, "web", PROXY_WASM_CONFIG).await;
    assert_eq!(
        (applied.version, applied.errors.len()),
        (1, 0),
        "{applied:?}"
    );
    let mut new =
        Subscriber::connect_serving(&mut client, "new-1", &["0.4.0", "proxy-wasm@0.2.1"], 0).await;
    let Out::Snapshot(snapshot) = new.next().await else {
        panic!("expected a snapshot")
    };
    let sent: Vec<(&str, &str)> = snapshot
        .modules
        .iter()
        .map(|m| (m.name.as_str(), m.contract_version.as_str()))
        .collect();
    assert_eq!(
        sent,
        [
            ("headers", "proxy-wasm@0.2.1"),
            ("legacy", "proxy-wasm@0.2.0")
        ]
    );
    let (fetched, _) = fetch(&mut client, &pushed.sha256).await;
    assert_eq!(fetched, headers);
    let mut old = Subscriber::connect(&mut client, "old-1", "0.4.0", 0).await;
    let Out::Refusal(refusal) = old.next().await else {
        panic!("expected a refusal")
    };
    assert!(
        refusal.error.contains(
            "names headers@1 (proxy-wasm@0.2.1), legacy@1 (proxy-wasm@0.2.0), but this proxy \
             serves weft:filter@0.4.0: not sent"
        ),
        "{}",
        refusal.error
    );
    plane.stop().await;

    // A mesh that serves only Weft's contract refuses the push itself.
    let dir = tempfile::tempdir().unwrap();
    let mut weft_only = options(Some(TOKEN));
    weft_only.contract_versions = vec!["0.4.0".into()];
    let plane = start(dir.path(), weft_only).await;
    let mut client = plane.client().await;
    let err = push(&mut client, "headers", &headers).await.unwrap_err();
    assert!(
        err.message()
            .contains("built for contract proxy-wasm@0.2.1, but the mesh serves weft:filter@0.4.0"),
        "{}",
        err.message()
    );
    plane.stop().await;
}
