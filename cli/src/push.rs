//! `weft push FILE --name NAME`: uploads a filter module to the registry.

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::{Context, bail};
use clap::Args;
use weft_api::push_chunks;
use weft_api::v1::ListModulesRequest;
use weft_control::module_check::{check_module, contract_label};

use crate::{ControlAddr, Output, TokenArgs, remote};

#[derive(Args)]
pub struct PushArgs {
    /// The module: a Weft filter (a component built for wasm32-wasip2) or a
    /// proxy-wasm filter (a core module).
    file: PathBuf,
    /// Its name in the registry (e.g. `api-key`); a push of different
    /// bytes under a name makes its next version.
    #[arg(long)]
    name: String,
    #[command(flatten)]
    control: ControlAddr,
    #[command(flatten)]
    token: TokenArgs,
    /// How to print the result.
    #[arg(long, value_enum, default_value_t)]
    output: Output,
}

pub async fn run(args: PushArgs) -> anyhow::Result<ExitCode> {
    let token = crate::token::read(args.token.token_file.as_deref())?;
    let bytes = std::fs::read(&args.file)
        .with_context(|| format!("cannot read {}", args.file.display()))?;
    let mut client = remote::connect(&args.control.url).await?;
    // Checked here first, against the contracts the mesh serves: a module
    // the control plane would refuse is not uploaded.
    let served = client
        .list_modules(ListModulesRequest {})
        .await
        .map_err(|s| remote::refused("cannot read the mesh's contract versions", s))?
        .into_inner()
        .contract_versions;
    if let Err(e) = check_module(&bytes, &served) {
        bail!("{}: {e}", args.file.display());
    }
    let chunks = push_chunks(&args.name, &bytes);
    let request = remote::authorized(tokio_stream::iter(chunks), token.as_deref())?;
    let pushed = client
        .push_module(request)
        .await
        .map_err(|s| remote::refused(&format!("push of {} refused", args.file.display()), s))?
        .into_inner();
    match args.output {
        Output::Json => println!(
            "{}",
            serde_json::json!({
                "name": pushed.name,
                "version": pushed.version,
                "sha256": pushed.sha256,
                "contract_version": pushed.contract_version,
                "size": bytes.len(),
                "already_existed": pushed.already_existed,
            })
        ),
        Output::Text if pushed.already_existed => println!(
            "unchanged {}@{} sha256={} contract={}: these bytes were pushed before",
            pushed.name,
            pushed.version,
            pushed.sha256,
            contract_label(&pushed.contract_version)
        ),
        Output::Text => println!(
            "pushed {}@{} sha256={} contract={} size={}",
            pushed.name,
            pushed.version,
            pushed.sha256,
            contract_label(&pushed.contract_version),
            bytes.len()
        ),
    }
    Ok(ExitCode::SUCCESS)
}
