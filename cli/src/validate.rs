//! `weft validate`: builds the snapshot a config describes without serving
//! it, and prints one line per error.

use std::path::Path;
use std::process::ExitCode;
use std::sync::Arc;

use weft::config::{self, ConfigError, ConfigErrors};
use weft::filter::FilterRuntime;
use weft::snapshot::Snapshot;
use weft::telemetry::Registry;

pub fn main(path: &Path) -> ExitCode {
    let result = (|| {
        let loaded = config::load(path)?;
        let runtime = FilterRuntime::new(Arc::new(Registry::default()))
            .map_err(|e| ConfigError::new("", format!("cannot start the filter runtime: {e}")))?;
        Snapshot::build(&loaded.config, &loaded.base_dir, &runtime)
    })();
    match result {
        Ok(snapshot) => {
            let routes: usize = snapshot
                .listeners
                .iter()
                .map(|l| l.routes.routes().len())
                .sum();
            println!(
                "{}: ok ({} listeners, {} routes, {} filters)",
                path.display(),
                snapshot.listeners.len(),
                routes,
                snapshot.config.filters.len()
            );
            ExitCode::SUCCESS
        }
        Err(errors) => {
            print_errors(&errors);
            ExitCode::from(1)
        }
    }
}

/// Prints one line per error on stderr, after the log lines already
/// buffered.
pub fn print_errors(errors: &ConfigErrors) {
    weft::logging::flush();
    for e in &errors.0 {
        eprintln!("{e}");
    }
}
