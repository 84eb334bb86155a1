//! The `weft` command: the proxy (`run`, `validate`), the control plane
//! (`control`) and the operator's commands that talk to it (`push`,
//! `apply`, `status`, `modules`), and the filter author's (`filter new`,
//! `filter test`).

mod apply;
mod control_plane;
mod filter;
mod push;
mod remote;
mod run;
mod status;
mod token;
mod validate;

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Args, Parser, Subcommand, ValueEnum};

/// Weft: a WebAssembly-extensible L7 proxy.
#[derive(Parser)]
#[command(version, about)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Serve traffic with a config file, or with a control plane's config.
    Run(run::RunArgs),
    /// Check a config file, its filter modules and their configs.
    Validate {
        /// The config file.
        #[arg(long, short)]
        config: PathBuf,
    },
    /// Run the control plane: the module registry and the groups' configs,
    /// served to proxies over gRPC.
    Control(control_plane::ControlArgs),
    /// Upload a filter module to the control plane's registry.
    Push(push::PushArgs),
    /// Set the configuration of a group of proxies.
    Apply(apply::ApplyArgs),
    /// Show every proxy the control plane knows: what it serves, what it
    /// refused.
    Status(status::StatusArgs),
    /// List the registry's modules, their versions and the proxies that
    /// run them.
    Modules(status::ModulesArgs),
    /// Write and test filters: `weft filter new`, `weft filter test`.
    Filter {
        #[command(subcommand)]
        command: filter::FilterCommand,
    },
}

/// How to reach the control plane, for the commands that talk to it.
#[derive(Args, Clone, Debug)]
pub struct ControlAddr {
    /// The control plane's URL.
    #[arg(
        long = "control",
        env = "WEFT_CONTROL",
        default_value = "http://127.0.0.1:7070"
    )]
    pub url: String,
}

/// The bearer token of writes: from a file or the environment.
#[derive(Args, Clone, Debug)]
pub struct TokenArgs {
    /// A file holding the bearer token (its first line); else WEFT_TOKEN.
    #[arg(long)]
    pub token_file: Option<PathBuf>,
}

/// How a command prints what it read.
#[derive(ValueEnum, Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Output {
    /// Columns for people.
    #[default]
    Text,
    /// One JSON document for scripts.
    Json,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match cli.command {
        Command::Run(args) => run::main(args),
        Command::Validate { config } => validate::main(&config),
        Command::Control(args) => control_plane::main(args),
        Command::Push(args) => remote::main(push::run(args)),
        Command::Apply(args) => remote::main(apply::run(args)),
        Command::Status(args) => remote::main(status::status(args)),
        Command::Modules(args) => remote::main(status::modules(args)),
        Command::Filter { command } => filter::main(command),
    }
}
