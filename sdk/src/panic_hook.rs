//! Reporting panics through the proxy's log.
//!
//! The standard hook writes to WASI stderr, which the proxy does not
//! provide (calling it would trap before anything is written).

use std::panic::PanicHookInfo;
use std::sync::Once;

use crate::log::{self, Level};

/// Installs a panic hook that logs the panic at error level, on one line;
/// the panic then aborts, which traps. Idempotent.
pub(crate) fn install() {
    static INSTALL: Once = Once::new();
    INSTALL.call_once(|| std::panic::set_hook(Box::new(report)));
}

fn report(info: &PanicHookInfo<'_>) {
    let message = info.payload_as_str().unwrap_or("(a non-string payload)");
    let line = match info.location() {
        Some(at) => format!("filter panicked at {at}: {message}"),
        None => format!("filter panicked: {message}"),
    };
    log::log(Level::Error, &line);
}
