//! Test helpers: real components made from the WIT contract, and a real
//! control plane on 127.0.0.1.
#![allow(dead_code)]

use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::oneshot;
use weft_api::v1::control_client::ControlClient;
use weft_control::apply::{ConfigValidator, NoFurtherChecks};
use weft_control::server::ControlPlane;
use weft_control::service::ServiceOptions;
use wit_component::{ComponentEncoder, StringEncoding};
use wit_parser::{LiftLowerAbi, ManglingAndAbi, Resolve};

/// The contract as the proxy serves it.
pub fn contract_wit() -> String {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../wit/filter.wit");
    std::fs::read_to_string(path).expect("wit/filter.wit")
}

/// A component of `world` in the package written in `wit`, with dummy
/// code: what `cargo build --target wasm32-wasip2` makes, minus behaviour.
pub fn component(wit: &str, world: &str) -> Vec<u8> {
    let mut resolve = Resolve::default();
    let package = resolve.push_str("filter.wit", wit).expect("WIT parses");
    let world = resolve
        .select_world(&[package], Some(world))
        .expect("world exists");
    let mangling = ManglingAndAbi::Legacy(LiftLowerAbi::Sync);
    let mut module = wit_component::dummy_module(&resolve, world, mangling);
    wit_component::embed_component_metadata(
        &mut module,
        &resolve,
        world,
        StringEncoding::UTF8,
        false,
    )
    .expect("metadata embeds");
    ComponentEncoder::default()
        .module(&module)
        .expect("module")
        .validate(true)
        .encode()
        .expect("component encodes")
}

/// A filter component of the contract served (0.4.0).
pub fn filter_component() -> Vec<u8> {
    component(&contract_wit(), "http-filter")
}

/// A filter component of another contract version.
pub fn filter_component_of_contract(version: &str) -> Vec<u8> {
    let wit = contract_wit().replace(
        "package weft:filter@0.4.0;",
        &format!("package weft:filter@{version};"),
    );
    assert!(wit.contains(version), "the contract's package line changed");
    component(&wit, "http-filter")
}

/// A component of a world that is not the filter contract.
pub fn other_world_component() -> Vec<u8> {
    component(
        "package acme:thing@1.0.0; interface api { run: func(); } world thing { export api; }",
        "thing",
    )
}

/// `component` grown to at least `size` bytes by a custom section (so it
/// stays a valid component), with `tag` in it so that different tags make
/// different bytes.
pub fn padded(component: &[u8], size: usize, tag: &str) -> Vec<u8> {
    let name = format!("padding-{tag}");
    let payload = size.saturating_sub(component.len()) + 1;
    let mut content = Vec::with_capacity(payload + name.len() + 8);
    leb128(&mut content, name.len() as u64);
    content.extend_from_slice(name.as_bytes());
    content.resize(content.len() + payload, 0x5a);
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

/// A running control plane.
pub struct Running {
    pub addr: SocketAddr,
    stop: Option<oneshot::Sender<()>>,
    task: tokio::task::JoinHandle<()>,
}

impl Running {
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    pub async fn client(&self) -> ControlClient<tonic::transport::Channel> {
        ControlClient::connect(self.url()).await.expect("connects")
    }

    /// Stops it and waits until it has stopped (open subscriptions must
    /// not hold the shutdown up).
    pub async fn stop(mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        tokio::time::timeout(Duration::from_secs(10), &mut self.task)
            .await
            .expect("the control plane stops within 10 s")
            .expect("the control plane task ends cleanly");
    }
}

/// Test options: a token and quick heartbeats.
pub fn options(token: Option<&str>) -> ServiceOptions {
    ServiceOptions {
        token: token.map(str::to_string),
        heartbeat_interval: Duration::from_millis(200),
        ..ServiceOptions::default()
    }
}

/// Starts a control plane on 127.0.0.1:0 over `data_dir`.
pub async fn start(data_dir: &Path, options: ServiceOptions) -> Running {
    start_with(data_dir, options, Arc::new(NoFurtherChecks)).await
}

pub async fn start_with(
    data_dir: &Path,
    options: ServiceOptions,
    validator: Arc<dyn ConfigValidator>,
) -> Running {
    let plane = ControlPlane::bind("127.0.0.1:0".parse().unwrap(), data_dir, options, validator)
        .await
        .expect("control plane starts");
    let addr = plane.local_addr();
    let (stop, stopped) = oneshot::channel::<()>();
    let task = tokio::spawn(async move {
        plane
            .run(async {
                let _ = stopped.await;
            })
            .await
            .expect("control plane runs");
    });
    Running {
        addr,
        stop: Some(stop),
        task,
    }
}

/// Polls `check` every 20 ms until it returns `Some`, for up to 20 s.
pub async fn eventually<T, F, Fut>(what: &str, mut check: F) -> T
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
{
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    loop {
        if let Some(v) = check().await {
            return v;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "timed out after 20 s waiting for {what}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}
