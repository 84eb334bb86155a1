//! `weft status` (every proxy the control plane knows) and `weft modules`
//! (the registry), as columns or JSON.

use std::process::ExitCode;

use clap::Args;
use serde_json::{Value, json};
use weft_api::v1::{ListModulesRequest, Phase, ProxyStatus, StatusRequest};
use weft_control::module_check::contract_label;

use crate::remote::{self, ago};
use crate::{ControlAddr, Output};

#[derive(Args)]
pub struct StatusArgs {
    #[command(flatten)]
    control: ControlAddr,
    /// Only the proxies of this group.
    #[arg(long)]
    group: Option<String>,
    /// How to print it.
    #[arg(long, value_enum, default_value_t)]
    output: Output,
}

#[derive(Args)]
pub struct ModulesArgs {
    #[command(flatten)]
    control: ControlAddr,
    /// How to print it.
    #[arg(long, value_enum, default_value_t)]
    output: Output,
}

pub async fn status(args: StatusArgs) -> anyhow::Result<ExitCode> {
    let mut client = remote::connect(&args.control.url).await?;
    let mut proxies = client
        .status(StatusRequest {})
        .await
        .map_err(|s| remote::refused("status", s))?
        .into_inner()
        .proxies;
    proxies.retain(|p| args.group.as_ref().is_none_or(|g| &p.group == g));
    proxies.sort_by(|a, b| (&a.group, &a.node).cmp(&(&b.group, &b.node)));
    match args.output {
        Output::Json => {
            let list: Vec<Value> = proxies.iter().map(proxy_json).collect();
            println!("{}", json!({ "proxies": list }));
        }
        Output::Text => {
            let mut rows = vec![
                [
                    "NODE",
                    "GROUP",
                    "STATE",
                    "SERVING",
                    "PENDING",
                    "LAST SEEN",
                    "LAST NACK",
                ]
                .map(String::from),
            ];
            rows.extend(proxies.iter().map(proxy_row));
            print_table(&rows);
        }
    }
    Ok(ExitCode::SUCCESS)
}

fn phase_name(phase: Phase) -> Option<&'static str> {
    match phase {
        Phase::Fetching => Some("fetching"),
        Phase::Compiling => Some("compiling"),
        Phase::Unspecified => None,
    }
}

fn proxy_json(p: &ProxyStatus) -> Value {
    json!({
        "node": p.node,
        "group": p.group,
        "weft_version": p.weft_version,
        "connected": p.connected,
        "gone_since_unix_ms": (p.gone_since_unix_ms != 0).then_some(p.gone_since_unix_ms),
        "serving_version": p.serving_version,
        "pending_version": (p.pending_version != 0).then_some(p.pending_version),
        "pending_phase": phase_name(p.pending_phase()),
        "last_nack": p.last_nack.as_ref().map(|n| json!({
            "version": n.version,
            "error": n.error,
            "by_control_plane": n.by_control_plane,
            "at_unix_ms": n.at_unix_ms,
        })),
        "last_seen_unix_ms": p.last_seen_unix_ms,
    })
}

fn proxy_row(p: &ProxyStatus) -> [String; 7] {
    let state = if p.connected {
        "connected".to_string()
    } else {
        format!("gone since {}", ago(p.gone_since_unix_ms))
    };
    let version = |v: u64| {
        if v == 0 {
            "-".to_string()
        } else {
            format!("v{v}")
        }
    };
    let pending = match (p.pending_version, phase_name(p.pending_phase())) {
        (0, _) => "-".to_string(),
        (v, Some(phase)) => format!("v{v} {phase}"),
        (v, None) => format!("v{v}"),
    };
    let nack = match &p.last_nack {
        None => "-".to_string(),
        Some(n) => format!(
            "v{}{}: {}",
            n.version,
            if n.by_control_plane {
                " (refused by the control plane)"
            } else {
                ""
            },
            n.error
        ),
    };
    [
        p.node.clone(),
        p.group.clone(),
        state,
        version(p.serving_version),
        pending,
        ago(p.last_seen_unix_ms),
        nack,
    ]
}

pub async fn modules(args: ModulesArgs) -> anyhow::Result<ExitCode> {
    let mut client = remote::connect(&args.control.url).await?;
    let mut modules = client
        .list_modules(ListModulesRequest {})
        .await
        .map_err(|s| remote::refused("modules", s))?
        .into_inner()
        .modules;
    modules.sort_by(|a, b| (&a.name, a.version).cmp(&(&b.name, b.version)));
    match args.output {
        Output::Json => {
            let list: Vec<Value> = modules
                .iter()
                .map(|m| {
                    json!({
                        "name": m.name,
                        "version": m.version,
                        "sha256": m.sha256,
                        "size": m.size,
                        "contract_version": m.contract_version,
                        "pushed_at_unix_ms": m.pushed_at_unix_ms,
                        "running_on": m.running_on,
                    })
                })
                .collect();
            println!("{}", json!({ "modules": list }));
        }
        Output::Text => {
            let mut rows = vec![
                [
                    "NAME",
                    "VERSION",
                    "SHA256",
                    "SIZE",
                    "CONTRACT",
                    "PUSHED",
                    "RUNNING ON",
                ]
                .map(String::from),
            ];
            rows.extend(modules.iter().map(|m| {
                [
                    m.name.clone(),
                    m.version.to_string(),
                    m.sha256[..m.sha256.len().min(12)].to_string(),
                    m.size.to_string(),
                    contract_label(&m.contract_version).to_string(),
                    ago(m.pushed_at_unix_ms),
                    if m.running_on.is_empty() {
                        "-".to_string()
                    } else {
                        m.running_on.join(",")
                    },
                ]
            }));
            print_table(&rows);
        }
    }
    Ok(ExitCode::SUCCESS)
}

/// Left-aligned columns, two spaces apart; the last column is not padded.
fn print_table<const N: usize>(rows: &[[String; N]]) {
    let mut widths = [0usize; N];
    for row in rows {
        for (w, cell) in widths.iter_mut().zip(row) {
            *w = (*w).max(cell.chars().count());
        }
    }
    for row in rows {
        let mut line = String::new();
        for (i, cell) in row.iter().enumerate() {
            if i + 1 == N {
                line.push_str(cell);
            } else {
                line.push_str(&format!("{cell:<width$}  ", width = widths[i]));
            }
        }
        println!("{}", line.trim_end());
    }
}
