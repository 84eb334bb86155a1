//! Fetching the modules a snapshot names and the proxy lacks: `FetchModule`
//! by sha256, put back together and hash-checked by `ModuleAssembler`,
//! then written to the cache.

use tonic::Code;
use tonic::transport::Channel;
use weft_api::ModuleAssembler;
use weft_api::v1::control_client::ControlClient as Api;
use weft_api::v1::{FetchModuleRequest, ModuleRef};

use super::cache::Cache;

/// Why a snapshot's modules could not be had.
#[derive(Debug)]
pub(crate) enum FetchFailure {
    /// The snapshot cannot be served (the NACK's error): a module is not
    /// in the registry, too large, or its bytes twice did not hash to what
    /// was asked for, or could not be written.
    Refused(String),
    /// The connection failed: try again on the next stream, no NACK.
    Disconnected(String),
}

/// Fetches each module of `modules` not already in `cache` (once per
/// sha256) and writes it there.
pub(crate) async fn fetch_missing(
    api: &mut Api<Channel>,
    cache: &Cache,
    modules: &[ModuleRef],
    max_bytes: u64,
) -> Result<(), FetchFailure> {
    for (i, module) in modules.iter().enumerate() {
        let first = modules[..i].iter().all(|m| m.sha256 != module.sha256);
        if !first || cache.has_module(&module.sha256) {
            continue;
        }
        if module.size > max_bytes {
            return Err(FetchFailure::Refused(format!(
                "module {}@{} is {} bytes, more than this proxy's max_module_mib ({} bytes)",
                module.name, module.version, module.size, max_bytes
            )));
        }
        let bytes = fetch_checked(api, module, max_bytes).await?;
        let (cache, sha256) = (cache.clone(), module.sha256.clone());
        tokio::task::spawn_blocking(move || cache.write_module(&sha256, &bytes))
            .await
            .map_err(|e| FetchFailure::Refused(format!("writing a module panicked: {e}")))?
            .map_err(|e| {
                FetchFailure::Refused(format!(
                    "cannot write module {}@{} to the cache: {e}",
                    module.name, module.version
                ))
            })?;
    }
    Ok(())
}

/// The module's bytes; bytes that do not hash to its sha256 are fetched
/// once more before giving up.
async fn fetch_checked(
    api: &mut Api<Channel>,
    module: &ModuleRef,
    max_bytes: u64,
) -> Result<Vec<u8>, FetchFailure> {
    match fetch_once(api, module, max_bytes).await {
        Err(FetchFailure::Refused(e)) => {
            tracing::warn!(module = %module.name, "module fetch failed, fetching again: {e}");
            fetch_once(api, module, max_bytes).await
        }
        other => other,
    }
}

async fn fetch_once(
    api: &mut Api<Channel>,
    module: &ModuleRef,
    max_bytes: u64,
) -> Result<Vec<u8>, FetchFailure> {
    let request = FetchModuleRequest {
        sha256: module.sha256.clone(),
    };
    let mut chunks = api
        .fetch_module(request)
        .await
        .map_err(|s| failure(module, s))?
        .into_inner();
    let mut assembler = ModuleAssembler::new(&module.sha256, max_bytes);
    while let Some(chunk) = chunks.message().await.map_err(|s| failure(module, s))? {
        assembler
            .push(&chunk)
            .map_err(|e| FetchFailure::Refused(e.to_string()))?;
    }
    assembler
        .finish()
        .map_err(|e| FetchFailure::Refused(e.to_string()))
}

/// A `FetchModule` error: the registry's answer that it cannot give the
/// module refuses the snapshot; anything else is the connection's.
fn failure(module: &ModuleRef, status: tonic::Status) -> FetchFailure {
    let message = format!(
        "fetching module {}@{} ({}): {}",
        module.name,
        module.version,
        module.sha256,
        status.message()
    );
    match status.code() {
        Code::NotFound | Code::InvalidArgument | Code::FailedPrecondition => {
            FetchFailure::Refused(message)
        }
        _ => FetchFailure::Disconnected(message),
    }
}
