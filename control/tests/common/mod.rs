//! Test helpers: a real control plane on 127.0.0.1 (the components come
//! from `weft_test_harness::components`).
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
