//! `weft apply -f FILE --group GROUP`: sets a group's configuration, and
//! with `--wait` follows it until every connected proxy of the group
//! serves it or refuses it.

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::Context;
use clap::Args;
use tokio::time::Instant;
use weft_api::v1::{ApplyRequest, ConfigFormat, ProxyStatus, StatusRequest};

use crate::{ControlAddr, TokenArgs, remote};

/// How often `--wait` asks for the proxies' status.
const POLL: Duration = Duration::from_millis(100);

#[derive(Args)]
pub struct ApplyArgs {
    /// The configuration: the schema of `weft run --config`, filters named
    /// by `module:` (`api-key`, `api-key@3` or a sha256), listeners without
    /// `listen:`. JSON when it ends in .json, else YAML.
    #[arg(long, short = 'f')]
    file: PathBuf,
    /// The group of proxies it is for.
    #[arg(long)]
    group: String,
    /// Wait up to this many seconds for every connected proxy of the group
    /// to serve the new version or refuse it; exit 1 if one refuses or
    /// time runs out.
    #[arg(long, value_name = "SECONDS")]
    wait: Option<u64>,
    #[command(flatten)]
    control: ControlAddr,
    #[command(flatten)]
    token: TokenArgs,
}

pub async fn run(args: ApplyArgs) -> anyhow::Result<ExitCode> {
    let token = crate::token::read(args.token.token_file.as_deref())?;
    let config = std::fs::read(&args.file)
        .with_context(|| format!("cannot read {}", args.file.display()))?;
    let format = if args.file.extension().is_some_and(|e| e == "json") {
        ConfigFormat::Json
    } else {
        ConfigFormat::Yaml
    };
    let mut client = remote::connect(&args.control.url).await?;
    let request = ApplyRequest {
        group: args.group.clone(),
        config,
        format: format as i32,
    };
    let applied = client
        .apply(remote::authorized(request, token.as_deref())?)
        .await
        .map_err(|s| remote::refused(&format!("apply of {} refused", args.file.display()), s))?
        .into_inner();
    if !applied.errors.is_empty() {
        for line in &applied.errors {
            eprintln!("{}: {line}", args.file.display());
        }
        eprintln!(
            "{}: not applied ({} errors); group {} is unchanged",
            args.file.display(),
            applied.errors.len(),
            args.group
        );
        return Ok(ExitCode::from(1));
    }
    if applied.unchanged {
        println!(
            "unchanged: group {} already has this configuration (version {})",
            args.group, applied.version
        );
    } else {
        println!(
            "applied {} to group {}: version {}",
            args.file.display(),
            args.group,
            applied.version
        );
    }
    match args.wait {
        None => Ok(ExitCode::SUCCESS),
        Some(seconds) => {
            let deadline = Instant::now() + Duration::from_secs(seconds);
            wait_for_group(&mut client, &args.group, applied.version, deadline).await
        }
    }
}

/// What became of a version on one proxy.
enum Outcome {
    Serving,
    Refused(String),
    Waiting(String),
}

fn outcome(proxy: &ProxyStatus, version: u64) -> Outcome {
    if proxy.serving_version >= version {
        return Outcome::Serving;
    }
    if let Some(nack) = &proxy.last_nack
        && nack.version == version
    {
        return Outcome::Refused(nack.error.clone());
    }
    let phase = match proxy.pending_phase() {
        weft_api::v1::Phase::Fetching => " (fetching)",
        weft_api::v1::Phase::Compiling => " (compiling)",
        weft_api::v1::Phase::Unspecified => "",
    };
    Outcome::Waiting(format!(
        "still serving version {}{}",
        proxy.serving_version,
        if proxy.pending_version == version {
            phase
        } else {
            ""
        }
    ))
}

/// Polls the status until every connected proxy of `group` has served or
/// refused `version`, then prints one line per proxy.
async fn wait_for_group(
    client: &mut weft_api::v1::control_client::ControlClient<tonic::transport::Channel>,
    group: &str,
    version: u64,
    deadline: Instant,
) -> anyhow::Result<ExitCode> {
    let proxies = loop {
        let proxies: Vec<ProxyStatus> = client
            .status(StatusRequest {})
            .await
            .map_err(|s| remote::refused("cannot read the proxies' status", s))?
            .into_inner()
            .proxies
            .into_iter()
            .filter(|p| p.group == group && p.connected)
            .collect();
        let settled = !proxies.is_empty()
            && proxies
                .iter()
                .all(|p| !matches!(outcome(p, version), Outcome::Waiting(_)));
        if settled || Instant::now() >= deadline {
            break proxies;
        }
        tokio::time::sleep(POLL).await;
    };
    if proxies.is_empty() {
        eprintln!("no proxy of group {group} is connected");
        return Ok(ExitCode::from(1));
    }
    let mut ok = true;
    for proxy in &proxies {
        match outcome(proxy, version) {
            Outcome::Serving => println!("{}: serving version {version}", proxy.node),
            Outcome::Refused(error) => {
                ok = false;
                println!("{}: refused version {version}: {error}", proxy.node);
            }
            Outcome::Waiting(state) => {
                ok = false;
                println!("{}: timed out, {state}", proxy.node);
            }
        }
    }
    Ok(if ok {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(1)
    })
}
