//! `weft filter`: the filter author's commands. `new` creates a ready
//! filter crate from a template; `test` runs a built component in the real
//! proxy, in-process, against request cases written in YAML.

mod cases;
mod new;
mod run_cases;
mod upstream;

use std::process::ExitCode;

use clap::Subcommand;

#[derive(Subcommand)]
pub enum FilterCommand {
    /// Create a filter crate: Cargo.toml, src/lib.rs, a test, a case file
    /// for `weft filter test` and a README with the commands.
    New(new::NewArgs),
    /// Run a built filter component in the proxy against request cases
    /// (YAML); one line per case, exit 1 if one fails.
    Test(run_cases::TestArgs),
}

pub fn main(command: FilterCommand) -> ExitCode {
    match command {
        FilterCommand::New(args) => match new::run(args) {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => {
                eprintln!("weft filter new: {e}");
                ExitCode::from(2)
            }
        },
        FilterCommand::Test(args) => run_cases::main(args),
    }
}
