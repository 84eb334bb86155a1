//! `weft control`: the control plane's gRPC server over its store, with
//! the proxy's own checks of an applied configuration plugged in.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

use anyhow::Context;
use clap::Args;
use weft::control_client::{CachedModule, ConfigFormat, GroupSnapshot, group_config_alone};
use weft::filter::FilterRuntime;
use weft::filter::module::{CONTRACT_VERSION, PROXY_WASM_ABI};
use weft::snapshot::Snapshot;
use weft::telemetry::Registry;
use weft_control::apply::{ApplyCheck, ConfigValidator};
use weft_control::module_check::contract_served;
use weft_control::server::{ControlPlane, DEFAULT_LISTEN, default_data_dir};
use weft_control::service::ServiceOptions;
use weft_control::store;

use crate::TokenArgs;

#[derive(Args)]
pub struct ControlArgs {
    /// The address to serve gRPC on.
    #[arg(long, default_value = DEFAULT_LISTEN)]
    listen: SocketAddr,
    /// The store's directory [default: $XDG_DATA_HOME/weft/control, else
    /// ~/.local/share/weft/control].
    #[arg(long)]
    data: Option<PathBuf>,
    #[command(flatten)]
    token: TokenArgs,
    /// The largest module a push may upload, in MiB.
    #[arg(long, default_value_t = 64, value_parser = clap::value_parser!(u64).range(1..=4096))]
    max_module_mib: u64,
    /// The interval between heartbeats on a proxy's stream, in ms; a proxy
    /// silent for three intervals is marked gone.
    #[arg(long, default_value_t = 5000, value_parser = clap::value_parser!(u64).range(100..=600_000))]
    heartbeat_interval_ms: u64,
    /// A filter contract version the mesh serves (repeat for several):
    /// `0.4.0` (or `weft:filter@0.4.0`) for Weft's contract,
    /// `proxy-wasm@0.2.1` for proxy-wasm filters [default: the two this weft
    /// serves].
    #[arg(long = "contract-version")]
    contract_versions: Vec<String>,
    /// Log filter (e.g. `info`, `weft_control=debug`); overrides WEFT_LOG.
    #[arg(long)]
    log_level: Option<String>,
    /// Log lines as `text` or `json` (one object per line).
    #[arg(long, env = "WEFT_LOG_FORMAT", default_value = "text")]
    log_format: weft::logging::LogFormat,
}

pub fn main(args: ControlArgs) -> ExitCode {
    weft::logging::init(args.log_level.as_deref(), args.log_format);
    let result = run(args);
    weft::logging::flush();
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("weft control: {e:#}");
            ExitCode::from(1)
        }
    }
}

fn run(args: ControlArgs) -> anyhow::Result<()> {
    let token = crate::token::read(args.token.token_file.as_deref())?;
    let data = args.data.unwrap_or_else(default_data_dir);
    let data = std::path::absolute(&data).unwrap_or(data);
    let contract_versions = if args.contract_versions.is_empty() {
        served_here()
    } else {
        args.contract_versions
    };
    let options = ServiceOptions {
        token,
        max_module_bytes: args.max_module_mib << 20,
        heartbeat_interval: Duration::from_millis(args.heartbeat_interval_ms),
        contract_versions,
        ..ServiceOptions::default()
    };
    let validator = Arc::new(ProxyChecks::new(data.join("checks")));
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .context("cannot start the async runtime")?;
    runtime.block_on(async move {
        let plane = ControlPlane::bind(args.listen, &data, options, validator).await?;
        tracing::info!(data = %data.display(), "control plane store open");
        plane.run(crate::run::shutdown_signal()).await?;
        tracing::info!("control plane stopped");
        anyhow::Ok(())
    })
}

/// The contracts this weft's proxy serves: Weft's and the proxy-wasm ABI.
fn served_here() -> Vec<String> {
    vec![CONTRACT_VERSION.to_string(), PROXY_WASM_ABI.to_string()]
}

/// The proxy's own checks of a group's configuration, run by the control
/// plane before it applies one: the `weft validate` checks of
/// [`Snapshot::check`], with the same messages. No filter code runs on the
/// control plane: each proxy `init`s the filters when it builds the
/// snapshot, and a refusal there is its NACK.
///
/// A module built for a contract this weft does not serve (the mesh may
/// serve several, `--contract-version`) cannot be loaded here: the error
/// of loading it is dropped. The proxies that serve its contract check it
/// when they build the snapshot; the others get a refusal from the control
/// plane before they download it.
struct ProxyChecks {
    /// Where the modules a check compiles are written.
    dir: PathBuf,
    /// Started on the first check.
    runtime: OnceLock<Result<Arc<FilterRuntime>, String>>,
    /// One check at a time: they share `dir` and compile on all cores.
    one_at_a_time: Mutex<()>,
}

impl ProxyChecks {
    fn new(dir: PathBuf) -> Self {
        Self {
            dir,
            runtime: OnceLock::new(),
            one_at_a_time: Mutex::new(()),
        }
    }

    fn check(&self, check: &ApplyCheck<'_>) -> Result<(), Vec<String>> {
        let _one = self.one_at_a_time.lock().unwrap_or_else(|e| e.into_inner());
        let runtime = self
            .runtime
            .get_or_init(|| {
                FilterRuntime::new(Arc::new(Registry::default()))
                    .map_err(|e| format!("cannot start the filter runtime: {e}"))
            })
            .clone()
            .map_err(|e| vec![e])?;
        let mut modules = Vec::new();
        let mut unloadable = Vec::new();
        for resolved in check.modules {
            let record = &resolved.module;
            let path = self
                .module_file(check.store, &record.sha256)
                .map_err(|e| vec![format!("module {}@{}: {e}", record.name, record.version)])?;
            if !contract_served(&record.contract_version, &served_here()) {
                unloadable.push(path.display().to_string());
            }
            modules.push(CachedModule {
                reference: resolved.reference.clone(),
                name: record.name.clone(),
                version: record.version,
                sha256: record.sha256.clone(),
                size: record.size,
                contract_version: record.contract_version.clone(),
                path,
            });
        }
        let group = GroupSnapshot {
            group: check.group.to_string(),
            version: 0,
            config: check.config.to_string(),
            format: match check.format {
                store::ConfigFormat::Yaml => ConfigFormat::Yaml,
                store::ConfigFormat::Json => ConfigFormat::Json,
            },
            modules,
        };
        let lines = |errors: weft::config::ConfigErrors| {
            errors.0.iter().map(ToString::to_string).collect::<Vec<_>>()
        };
        let config = group_config_alone(&group).map_err(lines)?;
        Snapshot::check(&config, &self.dir, &runtime).or_else(|errors| {
            // `filters.<name>.path: <file>: …` of a module of another contract.
            let of_unloadable = |e: &weft::config::ConfigError| {
                e.path.ends_with(".path")
                    && unloadable
                        .iter()
                        .any(|file| e.message.starts_with(file.as_str()))
            };
            let kept: Vec<_> = errors.0.into_iter().filter(|e| !of_unloadable(e)).collect();
            if kept.is_empty() {
                Ok(())
            } else {
                Err(lines(weft::config::ConfigErrors(kept)))
            }
        })
    }

    /// A file holding the module's bytes, written from the store once.
    fn module_file(&self, store: &dyn store::Store, sha256: &str) -> anyhow::Result<PathBuf> {
        let path = self.dir.join(format!("{sha256}.wasm"));
        if path.is_file() {
            return Ok(path);
        }
        let mut bytes = store
            .open_module(sha256)?
            .with_context(|| format!("{sha256} is not in the store"))?;
        std::fs::create_dir_all(&self.dir)
            .with_context(|| format!("cannot create {}", self.dir.display()))?;
        let tmp = self.dir.join(format!(".tmp-{sha256}"));
        let mut file = std::fs::File::create(&tmp)
            .with_context(|| format!("cannot create {}", tmp.display()))?;
        std::io::copy(&mut bytes.reader, &mut file)
            .with_context(|| format!("cannot write {}", tmp.display()))?;
        std::fs::rename(&tmp, &path).with_context(|| format!("cannot rename {}", tmp.display()))?;
        Ok(path)
    }
}

impl ConfigValidator for ProxyChecks {
    fn validate(&self, check: &ApplyCheck<'_>) -> Vec<String> {
        self.check(check).err().unwrap_or_default()
    }
}
