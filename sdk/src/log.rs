//! Writing to the proxy's log.
//!
//! Lines are tagged with the filter's name. Prefer the macros
//! ([`info!`](crate::info), [`warn!`](crate::warn), [`error!`](crate::error),
//! [`debug!`](crate::debug), [`trace!`](crate::trace)): they format the
//! message only when the proxy would write it.
//!
//! ```
//! # fn demo(path: &str) {
//! weft_sdk::debug!("rewriting {path}");
//! weft_sdk::log::log(weft_sdk::log::Level::Info, "plain message");
//! # }
//! ```

use std::fmt;
use std::sync::atomic::{AtomicU8, Ordering::Relaxed};

use crate::sys::host::{self, LogLevel};

/// Severity of a log line.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Level {
    /// Very detailed tracing.
    Trace,
    /// Debugging detail.
    Debug,
    /// Normal operation.
    Info,
    /// Something unexpected that the filter handled.
    Warn,
    /// Something failed.
    Error,
}

impl Level {
    fn to_wit(self) -> LogLevel {
        match self {
            Level::Trace => LogLevel::Trace,
            Level::Debug => LogLevel::Debug,
            Level::Info => LogLevel::Info,
            Level::Warn => LogLevel::Warn,
            Level::Error => LogLevel::Error,
        }
    }
}

/// Writes `message` to the proxy's log at `level`.
pub fn log(level: Level, message: &str) {
    host::log(level.to_wit(), message)
}

/// The host's answers to `log-enabled`, by level: unknown, no or yes. They
/// do not change during an instance's life, so each is asked once.
static ENABLED: [AtomicU8; 5] = [const { AtomicU8::new(UNKNOWN) }; 5];
const UNKNOWN: u8 = 0;
const NO: u8 = 1;
const YES: u8 = 2;

/// Whether a line at `level` would be written: skip building a message
/// nobody reads. Asks the host once per level.
pub fn enabled(level: Level) -> bool {
    // Natively (`weft_sdk::testing`) each test has its own host, with its
    // own levels: ask it every time. A constant: gone from a wasm build.
    if !cfg!(target_arch = "wasm32") {
        return host::log_enabled(level.to_wit());
    }
    let known = &ENABLED[level as usize];
    match known.load(Relaxed) {
        YES => true,
        NO => false,
        _ => {
            let enabled = host::log_enabled(level.to_wit());
            known.store(if enabled { YES } else { NO }, Relaxed);
            enabled
        }
    }
}

/// Formats and writes a message if `level` is enabled; what the macros call.
#[doc(hidden)]
pub fn __log_args(level: Level, args: fmt::Arguments<'_>) {
    if !enabled(level) {
        return;
    }
    match args.as_str() {
        Some(message) => log(level, message),
        None => log(level, &args.to_string()),
    }
}

/// Logs at error level, formatting like `format!` only if the line is
/// written.
#[macro_export]
macro_rules! error {
    ($($arg:tt)+) => {
        $crate::log::__log_args($crate::log::Level::Error, ::core::format_args!($($arg)+))
    };
}

/// Logs at warn level, formatting like `format!` only if the line is
/// written.
#[macro_export]
macro_rules! warn {
    ($($arg:tt)+) => {
        $crate::log::__log_args($crate::log::Level::Warn, ::core::format_args!($($arg)+))
    };
}

/// Logs at info level, formatting like `format!` only if the line is
/// written.
#[macro_export]
macro_rules! info {
    ($($arg:tt)+) => {
        $crate::log::__log_args($crate::log::Level::Info, ::core::format_args!($($arg)+))
    };
}

/// Logs at debug level, formatting like `format!` only if the line is
/// written.
#[macro_export]
macro_rules! debug {
    ($($arg:tt)+) => {
        $crate::log::__log_args($crate::log::Level::Debug, ::core::format_args!($($arg)+))
    };
}

/// Logs at trace level, formatting like `format!` only if the line is
/// written.
#[macro_export]
macro_rules! trace {
    ($($arg:tt)+) => {
        $crate::log::__log_args($crate::log::Level::Trace, ::core::format_args!($($arg)+))
    };
}
