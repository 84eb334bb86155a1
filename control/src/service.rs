//! The `Control` gRPC service: module pushes and fetches, applies, status,
//! and (in `subscription`) the proxies' streams.

use std::collections::HashMap;
use std::io::Read;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::{mpsc, watch};
use tokio_stream::Stream;
use tokio_stream::wrappers::ReceiverStream;
use tonic::metadata::MetadataMap;
use tonic::{Request, Response, Status, Streaming};
use weft_api::v1::control_server::{Control, ControlServer};
use weft_api::v1::{
    ApplyRequest, ApplyResponse, ControlMessage, FetchModuleRequest, ListModulesRequest,
    ListModulesResponse, ModuleChunk, ModuleInfo, ProxyMessage, PushChunk, PushModuleResponse,
    StatusRequest, StatusResponse,
};
use weft_api::{AUTHORIZATION, CHUNK_SIZE};

use crate::apply::{ApplyCheck, ConfigValidator, check_and_resolve};
use crate::module_check::{DEFAULT_CONTRACT_VERSIONS, check_module};
use crate::proxies::Proxies;
use crate::store::{
    ConfigFormat, GroupState, Store, StoreError, check_module_name, is_sha256, unix_ms,
};
use crate::subscription;

/// Default cap on a pushed module's size: 64 MiB.
pub const DEFAULT_MAX_MODULE_BYTES: u64 = 64 << 20;
/// Default interval between heartbeats, both ways: 5 s.
pub const DEFAULT_HEARTBEAT_INTERVAL: Duration = Duration::from_secs(5);
/// Default number of heartbeat intervals without a word after which a
/// proxy is marked gone: 3.
pub const DEFAULT_MISSED_HEARTBEATS: u32 = 3;

/// How the service behaves.
#[derive(Debug, Clone)]
pub struct ServiceOptions {
    /// The bearer token writes must carry; `None`: writes need none (the
    /// server allows that on loopback only).
    pub token: Option<String>,
    /// The largest module a push may upload, in bytes.
    pub max_module_bytes: u64,
    /// The interval between heartbeats on a proxy's stream.
    pub heartbeat_interval: Duration,
    /// Intervals without a word after which a proxy is marked gone.
    pub missed_heartbeats: u32,
    /// The filter contract versions the mesh serves; a module built for
    /// another is refused at push.
    pub contract_versions: Vec<String>,
}

impl Default for ServiceOptions {
    fn default() -> Self {
        Self {
            token: None,
            max_module_bytes: DEFAULT_MAX_MODULE_BYTES,
            heartbeat_interval: DEFAULT_HEARTBEAT_INTERVAL,
            missed_heartbeats: DEFAULT_MISSED_HEARTBEATS,
            contract_versions: DEFAULT_CONTRACT_VERSIONS
                .iter()
                .map(|v| v.to_string())
                .collect(),
        }
    }
}

/// The current configuration of a group, as its subscribers watch it.
pub(crate) type GroupWatch = watch::Receiver<Option<Arc<GroupState>>>;

/// The `Control` service. Cheap to clone.
#[derive(Clone)]
pub struct ControlService {
    pub(crate) inner: Arc<Inner>,
}

pub(crate) struct Inner {
    pub(crate) store: Arc<dyn Store>,
    validator: Arc<dyn ConfigValidator>,
    pub(crate) options: ServiceOptions,
    pub(crate) proxies: Proxies,
    groups: Mutex<HashMap<String, watch::Sender<Option<Arc<GroupState>>>>>,
    next_nonce: AtomicU64,
    /// Set when the server shuts down: subscriptions end so that the
    /// graceful shutdown does not wait on them.
    pub(crate) stopping: watch::Sender<bool>,
}

impl ControlService {
    /// A service over `store`, checking applied configurations with
    /// `validator` after its own checks.
    pub fn new(
        store: Arc<dyn Store>,
        validator: Arc<dyn ConfigValidator>,
        options: ServiceOptions,
    ) -> Self {
        Self {
            inner: Arc::new(Inner {
                store,
                validator,
                options,
                proxies: Proxies::default(),
                groups: Mutex::new(HashMap::new()),
                next_nonce: AtomicU64::new(0),
                stopping: watch::channel(false).0,
            }),
        }
    }

    /// Ends every subscription stream (and refuses new ones): call it when
    /// the server shuts down, or its graceful shutdown waits for them.
    pub fn stop_subscriptions(&self) {
        self.inner.stopping.send_replace(true);
    }

    /// The service ready to add to a tonic `Server`.
    pub fn into_server(self) -> ControlServer<Self> {
        ControlServer::new(self)
    }

    fn authorize(&self, metadata: &MetadataMap) -> Result<(), Status> {
        let Some(token) = &self.inner.options.token else {
            return Ok(());
        };
        let Some(value) = metadata.get(AUTHORIZATION) else {
            return Err(Status::unauthenticated(
                "this write needs `authorization: Bearer <token>` (the control plane's token: --token-file or WEFT_TOKEN)",
            ));
        };
        let presented = value
            .to_str()
            .ok()
            .and_then(|v| v.strip_prefix("Bearer "))
            .unwrap_or("");
        if weft_api::token_matches(presented, token) {
            Ok(())
        } else {
            Err(Status::permission_denied(
                "the bearer token is not the control plane's",
            ))
        }
    }
}

impl Inner {
    /// A watch of `group`'s configuration, loaded from the store the first
    /// time.
    pub(crate) async fn group_watch(&self, group: &str) -> Result<GroupWatch, Status> {
        if let Some(sender) = self.groups.lock().expect("groups lock").get(group) {
            return Ok(sender.subscribe());
        }
        let store = self.store.clone();
        let name = group.to_string();
        let state = blocking(move || store.group(&name)).await?;
        let mut groups = self.groups.lock().expect("groups lock");
        let sender = groups
            .entry(group.to_string())
            .or_insert_with(|| watch::channel(state.map(Arc::new)).0);
        Ok(sender.subscribe())
    }

    /// Publishes a newly applied configuration to the group's subscribers
    /// (never an older one over a newer).
    fn publish(&self, state: GroupState) {
        let mut groups = self.groups.lock().expect("groups lock");
        let sender = groups
            .entry(state.group.clone())
            .or_insert_with(|| watch::channel(None).0);
        sender.send_if_modified(|current| {
            if current.as_ref().is_some_and(|c| c.version >= state.version) {
                return false;
            }
            *current = Some(Arc::new(state));
            true
        });
    }

    /// A fresh nonce for a snapshot sending.
    pub(crate) fn nonce(&self, version: u64) -> String {
        let n = self.next_nonce.fetch_add(1, Ordering::Relaxed);
        format!("{version}-{n}")
    }
}

type BoxStream<T> = Pin<Box<dyn Stream<Item = Result<T, Status>> + Send>>;

#[tonic::async_trait]
impl Control for ControlService {
    type SubscribeStream = BoxStream<ControlMessage>;
    type FetchModuleStream = BoxStream<ModuleChunk>;

    async fn subscribe(
        &self,
        request: Request<Streaming<ProxyMessage>>,
    ) -> Result<Response<Self::SubscribeStream>, Status> {
        let (tx, rx) = mpsc::channel(16);
        tokio::spawn(subscription::run(
            self.inner.clone(),
            request.into_inner(),
            tx,
        ));
        Ok(Response::new(Box::pin(ReceiverStream::new(rx))))
    }

    async fn fetch_module(
        &self,
        request: Request<FetchModuleRequest>,
    ) -> Result<Response<Self::FetchModuleStream>, Status> {
        let sha256 = request.into_inner().sha256.to_ascii_lowercase();
        if !is_sha256(&sha256) {
            return Err(Status::invalid_argument(format!(
                "{sha256:?} is not a sha256 (64 hex digits)"
            )));
        }
        let store = self.inner.store.clone();
        let name = sha256.clone();
        let module = blocking(move || store.open_module(&name))
            .await?
            .ok_or_else(|| Status::not_found(format!("no module with sha256 {sha256}")))?;
        let (tx, rx) = mpsc::channel(4);
        tokio::task::spawn_blocking(move || send_chunks(module, &sha256, &tx));
        Ok(Response::new(Box::pin(ReceiverStream::new(rx))))
    }

    async fn push_module(
        &self,
        request: Request<Streaming<PushChunk>>,
    ) -> Result<Response<PushModuleResponse>, Status> {
        self.authorize(request.metadata())?;
        let bytes_and_name =
            receive_upload(request.into_inner(), self.inner.options.max_module_bytes).await?;
        let (name, bytes) = bytes_and_name;
        let store = self.inner.store.clone();
        let served = self.inner.options.contract_versions.clone();
        let put = tokio::task::spawn_blocking(move || {
            let contract = check_module(&bytes, &served)
                .map_err(|e| Status::invalid_argument(format!("module {name}: {e}")))?;
            store
                .put_module(&name, &bytes, &contract)
                .map_err(store_status)
        })
        .await
        .map_err(|e| Status::internal(format!("push task failed: {e}")))??;
        let m = put.module;
        tracing::info!(name = %m.name, version = m.version, sha256 = %m.sha256, existed = put.already_existed, "module pushed");
        Ok(Response::new(PushModuleResponse {
            name: m.name,
            version: m.version,
            sha256: m.sha256,
            contract_version: m.contract_version,
            already_existed: put.already_existed,
        }))
    }

    async fn apply(
        &self,
        request: Request<ApplyRequest>,
    ) -> Result<Response<ApplyResponse>, Status> {
        self.authorize(request.metadata())?;
        let ApplyRequest {
            group,
            config,
            format,
        } = request.into_inner();
        check_module_name(&group)
            .map_err(|e| Status::invalid_argument(e.replacen("module name", "group name", 1)))?;
        let refused = |errors: Vec<String>| ApplyResponse {
            version: 0,
            errors,
            unchanged: false,
        };
        let Ok(config) = String::from_utf8(config) else {
            return Ok(Response::new(refused(vec![
                "the configuration is not UTF-8 text".into(),
            ])));
        };
        let format = match weft_api::v1::ConfigFormat::try_from(format) {
            Ok(weft_api::v1::ConfigFormat::Json) => ConfigFormat::Json,
            _ => ConfigFormat::Yaml,
        };
        let inner = self.inner.clone();
        let outcome =
            tokio::task::spawn_blocking(move || apply_blocking(&inner, group, config, format))
                .await
                .map_err(|e| Status::internal(format!("apply task failed: {e}")))??;
        match outcome {
            ApplyOutcome::Refused(errors) => Ok(Response::new(refused(errors))),
            ApplyOutcome::Unchanged(version) => Ok(Response::new(ApplyResponse {
                version,
                errors: Vec::new(),
                unchanged: true,
            })),
            ApplyOutcome::Applied(state) => {
                let version = state.version;
                tracing::info!(group = %state.group, version, "configuration applied");
                self.inner.publish(state);
                Ok(Response::new(ApplyResponse {
                    version,
                    errors: Vec::new(),
                    unchanged: false,
                }))
            }
        }
    }

    async fn status(&self, _: Request<StatusRequest>) -> Result<Response<StatusResponse>, Status> {
        Ok(Response::new(StatusResponse {
            proxies: self.inner.proxies.statuses(),
        }))
    }

    async fn list_modules(
        &self,
        _: Request<ListModulesRequest>,
    ) -> Result<Response<ListModulesResponse>, Status> {
        let store = self.inner.store.clone();
        let modules = blocking(move || store.modules()).await?;
        let running_on = self.inner.proxies.running_on();
        let modules = modules
            .into_iter()
            .map(|m| ModuleInfo {
                running_on: running_on.get(&m.sha256).cloned().unwrap_or_default(),
                name: m.name,
                version: m.version,
                sha256: m.sha256,
                size: m.size,
                contract_version: m.contract_version,
                pushed_at_unix_ms: m.pushed_at_unix_ms,
            })
            .collect();
        Ok(Response::new(ListModulesResponse {
            modules,
            contract_versions: self.inner.options.contract_versions.clone(),
        }))
    }
}

/// Reads a whole upload into memory, within `cap`. Nothing is written
/// anywhere until it is complete.
async fn receive_upload(
    mut stream: Streaming<PushChunk>,
    cap: u64,
) -> Result<(String, Vec<u8>), Status> {
    let first = stream
        .message()
        .await?
        .ok_or_else(|| Status::invalid_argument("empty upload: nothing stored"))?;
    let name = first.name;
    check_module_name(&name).map_err(Status::invalid_argument)?;
    let total = first.total_size;
    if total > cap {
        return Err(Status::invalid_argument(format!(
            "module {name} is {total} bytes, over the control plane's cap of {cap} bytes (max_module_bytes): nothing stored"
        )));
    }
    if total == 0 {
        return Err(Status::invalid_argument(format!(
            "module {name}: the first chunk must give the module's total_size: nothing stored"
        )));
    }
    let mut bytes = Vec::with_capacity(total as usize);
    bytes.extend_from_slice(&first.data);
    loop {
        let got = bytes.len() as u64;
        if got > total {
            return Err(Status::invalid_argument(format!(
                "module {name}: more bytes than the announced {total}: nothing stored"
            )));
        }
        match stream.message().await {
            Ok(Some(chunk)) => bytes.extend_from_slice(&chunk.data),
            Ok(None) if got == total => return Ok((name, bytes)),
            Ok(None) => {
                return Err(Status::invalid_argument(format!(
                    "upload of {name} ended after {got} of {total} bytes: nothing stored"
                )));
            }
            Err(e) => {
                return Err(Status::aborted(format!(
                    "upload of {name} cut off after {got} of {total} bytes ({}): nothing stored",
                    e.message()
                )));
            }
        }
    }
}

enum ApplyOutcome {
    Refused(Vec<String>),
    Unchanged(u64),
    Applied(GroupState),
}

fn apply_blocking(
    inner: &Inner,
    group: String,
    config: String,
    format: ConfigFormat,
) -> Result<ApplyOutcome, Status> {
    let store = &*inner.store;
    let modules = match check_and_resolve(&config, format, store, &inner.options.contract_versions)
    {
        Ok(modules) => modules,
        Err(errors) => return Ok(ApplyOutcome::Refused(errors)),
    };
    let errors = inner.validator.validate(&ApplyCheck {
        group: &group,
        config: &config,
        format,
        modules: &modules,
        store,
    });
    if !errors.is_empty() {
        return Ok(ApplyOutcome::Refused(errors));
    }
    if let Some(current) = store.group(&group).map_err(store_status)?
        && current.config == config
        && current.format == format
        && current.modules == modules
    {
        return Ok(ApplyOutcome::Unchanged(current.version));
    }
    let state = GroupState {
        group: group.clone(),
        version: 0,
        config,
        format,
        modules,
        applied_at_unix_ms: unix_ms(),
    };
    store
        .apply(&group, state)
        .map(ApplyOutcome::Applied)
        .map_err(store_status)
}

/// Streams a module's bytes in chunks of at most `CHUNK_SIZE`.
fn send_chunks(
    mut module: crate::store::ModuleBytes,
    sha256: &str,
    tx: &mpsc::Sender<Result<ModuleChunk, Status>>,
) {
    let total_size = module.size;
    let mut offset = 0u64;
    while offset < total_size {
        let want = (total_size - offset).min(CHUNK_SIZE as u64) as usize;
        let mut data = vec![0; want];
        let item = match module.reader.read_exact(&mut data) {
            Ok(()) => Ok(ModuleChunk {
                data,
                offset,
                total_size,
            }),
            Err(e) => Err(Status::internal(format!(
                "cannot read module {sha256}: {e}"
            ))),
        };
        let failed = item.is_err();
        if tx.blocking_send(item).is_err() || failed {
            return;
        }
        offset += want as u64;
    }
}

/// Runs a store call on the blocking pool.
pub(crate) async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> Result<T, StoreError> + Send + 'static,
) -> Result<T, Status> {
    tokio::task::spawn_blocking(f)
        .await
        .map_err(|e| Status::internal(format!("store task failed: {e}")))?
        .map_err(store_status)
}

fn store_status(e: StoreError) -> Status {
    match e {
        StoreError::Invalid(message) => Status::invalid_argument(message),
        e => Status::internal(e.to_string()),
    }
}
