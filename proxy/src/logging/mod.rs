//! The proxy's log output: tracing lines to stderr, batched.
//!
//! A proxy logs at least a line per request when a filter keeps an access
//! log; one `write(2)` per line costs about as much as the rest of the log
//! path. When stderr is not a terminal, lines go into a buffer that a writer
//! thread empties every [`FLUSH_DELAY`] while lines come (one system call per
//! batch, no wake-ups while idle; see `buffer`). [`flush`] empties the
//! buffer; `weft` calls it before it exits and when it panics.
//!
//! Log lines carry text from filters and clients. Buffered lines have their
//! control characters escaped as they enter the buffer (`push_escaped`):
//! one byte scan per line, where tracing's own sanitizer formats the message
//! a character at a time (and leaves line breaks in, so a message could
//! forge a line).
//!
//! Filters' lines (an access log is one per request) skip tracing's event
//! machinery when buffered: [`filter_line`] writes the same text tracing's
//! formatter would, straight into the buffer, at a quarter of the cost.
//! A filter's line puts the proxy's fields first and the filter's text
//! last, quoted (`filter="…" request_id="…" msg="…"`): text such as
//! ` filter="other"` inside it is part of the quoted value, not a field.
//!
//! A thread that logs never waits on stderr: when stderr does not keep up,
//! lines past `log.max_buffered_bytes` are dropped and counted
//! ([`lines_dropped`], exported as `weft_log_lines_dropped_total`). Lines
//! are cut at `log.max_line_bytes`.
//!
//! Lines are text (tracing's full format) or, with `--log-format json`,
//! one JSON object per line (tracing's JSON format; [`json`] writes
//! filters' lines). A filter given a `log_file` logs there instead
//! ([`files`]).

use std::io::{self, IsTerminal};
use std::sync::OnceLock;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};

use tracing_subscriber::EnvFilter;

pub use buffer::FLUSH_DELAY;
use buffer::{Escape, LogBuffer};
use clock::LogClock;
use quote::push_debug_str;

mod buffer;
mod clock;
pub mod files;
mod json;
mod quote;

/// How log lines are written.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum LogFormat {
    /// tracing's full text format: time, level, target, fields.
    #[default]
    Text,
    /// One JSON object per line: `timestamp`, `level`, `fields`, `target`.
    Json,
}

impl std::str::FromStr for LogFormat {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "text" => Ok(LogFormat::Text),
            "json" => Ok(LogFormat::Json),
            other => Err(format!(
                "unknown log format {other:?}: expected text or json"
            )),
        }
    }
}

/// Set by [`init`] for `--log-format json`.
static JSON: AtomicBool = AtomicBool::new(false);
/// `log.max_line_bytes` and `log.max_buffered_bytes`, for every buffer.
static MAX_LINE_BYTES: AtomicUsize = AtomicUsize::new(crate::config::DEFAULT_MAX_LINE_BYTES);
static MAX_BUFFERED_BYTES: AtomicUsize =
    AtomicUsize::new(crate::config::DEFAULT_MAX_BUFFERED_BYTES);

/// The caps `log:` set.
fn limits() -> crate::config::LogConfig {
    crate::config::LogConfig {
        max_line_bytes: MAX_LINE_BYTES.load(Ordering::Relaxed),
        max_buffered_bytes: MAX_BUFFERED_BYTES.load(Ordering::Relaxed),
    }
}

static BUFFER: OnceLock<LogBuffer> = OnceLock::new();
/// Replaces the subscriber's filter.
type SetFilter = Box<dyn Fn(EnvFilter) -> Result<(), String> + Send + Sync>;
/// Set by [`init`], used by [`set_level`].
static SET_FILTER: OnceLock<SetFilter> = OnceLock::new();
/// The buffer once its writer thread runs and the subscriber writes to it:
/// only then may [`filter_line`] write there directly.
static BUFFERED: OnceLock<&'static LogBuffer> = OnceLock::new();

/// Installs `$builder` with a filter [`set_level`] can replace.
macro_rules! install {
    ($builder:expr) => {{
        let builder = $builder.with_filter_reloading();
        let handle = builder.reload_handle();
        let _ = SET_FILTER.set(Box::new(move |filter| {
            handle.reload(filter).map_err(|e| e.to_string())
        }));
        builder.init();
    }};
}

/// Installs the tracing subscriber: `level` (a `WEFT_LOG`-style filter such
/// as `info` or `weft::filter=debug`) or else `$WEFT_LOG`, else `info`;
/// lines in `format`.
pub fn init(level: Option<&str>, format: LogFormat) {
    let filter = match level {
        Some(l) => EnvFilter::new(l),
        None => EnvFilter::try_from_env("WEFT_LOG").unwrap_or_else(|_| EnvFilter::new("info")),
    };
    if format == LogFormat::Json {
        JSON.store(true, Ordering::Relaxed);
        init_json(filter);
        return;
    }
    let terminal = io::stderr().is_terminal();
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_timer(LogClock)
        .with_ansi(terminal);
    if terminal {
        install!(builder.with_writer(io::stderr));
        return;
    }
    let buffer = BUFFER.get_or_init(LogBuffer::new);
    if let Err(e) = buffer.start_writer() {
        eprintln!("weft: cannot start the log writer thread ({e}); logging unbuffered");
        install!(builder.with_writer(io::stderr));
        return;
    }
    install!(builder.with_ansi_sanitization(false).with_writer(buffer));
    let _ = BUFFERED.set(buffer);
    flush_on_panic();
}

/// [`init`] for JSON lines: always buffered, a terminal too (nothing to
/// colour).
fn init_json(filter: EnvFilter) {
    let builder = tracing_subscriber::fmt()
        .json()
        .with_env_filter(filter)
        .with_timer(LogClock);
    let buffer = BUFFER.get_or_init(LogBuffer::new);
    buffer.set_escape(Escape::Json);
    if let Err(e) = buffer.start_writer() {
        eprintln!("weft: cannot start the log writer thread ({e}); logging unbuffered");
        install!(builder.with_writer(io::stderr));
        return;
    }
    install!(builder.with_writer(buffer));
    let _ = BUFFERED.set(buffer);
    flush_on_panic();
}

fn flush_on_panic() {
    let previous = std::panic::take_hook();
    std::panic::set_hook(Box::new(move |info| {
        flush();
        previous(info);
    }));
}

/// Replaces the log filter while the proxy runs (`PUT /log-level`): `spec`
/// is a `WEFT_LOG`-style filter such as `debug` or `info,weft::filter=trace`.
/// Returns the filter now in force.
pub fn set_level(spec: &str) -> Result<String, String> {
    let filter = EnvFilter::builder()
        .parse(spec)
        .map_err(|e| format!("{spec:?} is not a log filter: {e}"))?;
    let shown = filter.to_string();
    let set = SET_FILTER
        .get()
        .ok_or("logging is not set up in this process")?;
    set(filter)?;
    Ok(shown)
}

/// Applies `log:` from the config: the line cap and the buffers'.
pub fn set_limits(config: &crate::config::LogConfig) {
    MAX_LINE_BYTES.store(config.max_line_bytes, Ordering::Relaxed);
    MAX_BUFFERED_BYTES.store(config.max_buffered_bytes, Ordering::Relaxed);
    BUFFER
        .get_or_init(LogBuffer::new)
        .set_limits(config.max_line_bytes, config.max_buffered_bytes);
    files::set_limits(config.max_line_bytes, config.max_buffered_bytes);
}

/// Lines dropped since the start because stderr or a filter's log file did
/// not keep up.
pub fn lines_dropped() -> u64 {
    BUFFER.get().map_or(0, LogBuffer::dropped) + files::dropped()
}

/// Writes out whatever lines are buffered, the filters' log files' too.
pub fn flush() {
    if let Some(buffer) = BUFFER.get() {
        buffer.write_out();
    }
    files::flush_all();
}

/// Logs a filter's line: a tracing event with target `weft::filter` and
/// fields `filter`, `request_id` and `msg` (the message, cut at the line
/// cap). When lines are buffered it is written straight into the buffer,
/// as tracing's formatter would write it; else (a terminal, or logging not
/// set up) it goes through tracing. The caller checks that the level is
/// enabled.
pub fn filter_line(level: tracing::Level, filter: &str, request_id: &str, message: &str) {
    let Some(buffer) = BUFFERED.get() else {
        filter_event(level, filter, request_id, message);
        return;
    };
    // Not formatted past what the line may hold.
    let (kept, _) = buffer::cut_line(message.as_bytes(), buffer.max_line());
    // SAFETY: cut on a character boundary of a `str`.
    let message = unsafe { std::str::from_utf8_unchecked(kept) };
    LINE.with_borrow_mut(|line| {
        line.clear();
        if JSON.load(Ordering::Relaxed) {
            json::format_filter_line(line, level, filter, request_id, message);
            buffer.push(line);
        } else {
            format_filter_line(line, level, filter, request_id, message);
            buffer.push_escaped_text(line);
        }
    });
}

/// The tracing event [`filter_line`] stands for.
fn filter_event(level: tracing::Level, filter: &str, request_id: &str, message: &str) {
    if JSON.load(Ordering::Relaxed) {
        return filter_event_json(level, filter, request_id, message);
    }
    match level {
        tracing::Level::TRACE => {
            tracing::trace!(target: "weft::filter", filter, request_id, msg = ?message)
        }
        tracing::Level::DEBUG => {
            tracing::debug!(target: "weft::filter", filter, request_id, msg = ?message)
        }
        tracing::Level::INFO => {
            tracing::info!(target: "weft::filter", filter, request_id, msg = ?message)
        }
        tracing::Level::WARN => {
            tracing::warn!(target: "weft::filter", filter, request_id, msg = ?message)
        }
        _ => tracing::error!(target: "weft::filter", filter, request_id, msg = ?message),
    }
}

/// [`filter_event`] in JSON: `msg` a string, not its `Debug` form.
fn filter_event_json(level: tracing::Level, filter: &str, request_id: &str, message: &str) {
    match level {
        tracing::Level::TRACE => {
            tracing::trace!(target: "weft::filter", filter, request_id, msg = %message)
        }
        tracing::Level::DEBUG => {
            tracing::debug!(target: "weft::filter", filter, request_id, msg = %message)
        }
        tracing::Level::INFO => {
            tracing::info!(target: "weft::filter", filter, request_id, msg = %message)
        }
        tracing::Level::WARN => {
            tracing::warn!(target: "weft::filter", filter, request_id, msg = %message)
        }
        _ => tracing::error!(target: "weft::filter", filter, request_id, msg = %message),
    }
}

thread_local! {
    /// Where [`filter_line`] formats a line.
    static LINE: std::cell::RefCell<Vec<u8>> = const { std::cell::RefCell::new(Vec::new()) };
}

/// Tracing's full format without colours: time, level, target, then the
/// fields, `str` values in their `Debug` form, the message last.
fn format_filter_line(
    out: &mut Vec<u8>,
    level: tracing::Level,
    filter: &str,
    request_id: &str,
    message: &str,
) {
    let mut time = [0; 27];
    LogClock::now(&mut time);
    out.extend_from_slice(&time);
    out.extend_from_slice(match level {
        tracing::Level::TRACE => b" TRACE",
        tracing::Level::DEBUG => b" DEBUG",
        tracing::Level::INFO => b"  INFO",
        tracing::Level::WARN => b"  WARN",
        _ => b" ERROR",
    });
    out.extend_from_slice(b" weft::filter: filter=");
    push_debug_str(out, filter);
    out.extend_from_slice(b" request_id=");
    push_debug_str(out, request_id);
    out.extend_from_slice(b" msg=");
    push_debug_str(out, message);
    out.push(b'\n');
}

/// A writer that keeps what tracing writes, for tests that compare the
/// proxy's own formatting with tracing's.
#[cfg(test)]
#[derive(Clone, Default)]
pub(crate) struct Captured(pub std::sync::Arc<std::sync::Mutex<Vec<u8>>>);

#[cfg(test)]
impl std::io::Write for Captured {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::Captured;
    use super::LogClock;
    use super::buffer::Escape;

    #[test]
    fn filter_lines_are_what_tracing_writes() {
        let captured = Captured::default();
        let subscriber = || {
            let writer = captured.clone();
            tracing_subscriber::fmt()
                .with_timer(LogClock)
                .with_ansi(false)
                .with_ansi_sanitization(false)
                .with_max_level(tracing::Level::TRACE)
                .with_writer(move || writer.clone())
                .finish()
        };
        let cases = [
            (
                "telemetry",
                "3d52fba5-b479-4e95",
                "{\"type\":\"access\",\"path\":\"/a b\"}",
            ),
            (
                "api-key",
                "id with \"quotes\" and \\",
                "refused GET /: no API key",
            ),
            ("x", "é\u{1b}", "line\nbreak \u{85}"),
            ("x", "\u{7f}\u{9f}\r", "tab\there \u{2028} \u{a9} \0"),
            (
                "x",
                "a",
                "forged\" filter=\"api-key\" request_id=\"1\" \\ \t",
            ),
            ("", "", ""),
            (
                "telemetry",
                "0123456\\",
                "{\"path\":\"/q?x=\\\\\\\"y\",\"agent\":\"curl/8.5.0\",\"n\":12345678}\\\"",
            ),
        ];
        for (filter, request_id, message) in cases {
            for level in [
                tracing::Level::TRACE,
                tracing::Level::DEBUG,
                tracing::Level::INFO,
                tracing::Level::WARN,
                tracing::Level::ERROR,
            ] {
                captured.0.lock().unwrap().clear();
                tracing::subscriber::with_default(subscriber(), || {
                    super::filter_event(level, filter, request_id, message)
                });
                let theirs = String::from_utf8(captured.0.lock().unwrap().clone()).unwrap();
                let mut ours = Vec::new();
                super::format_filter_line(&mut ours, level, filter, request_id, message);
                let ours = String::from_utf8(ours).unwrap();
                // The same text after the timestamps (27 bytes each).
                assert_eq!(
                    ours[27..],
                    theirs[27..],
                    "{level} {filter:?} {request_id:?}"
                );
                assert_eq!(ours.as_bytes()[26], b'Z');
                // Nothing left for the buffer to escape: it copies the line.
                let mut escaped = Vec::new();
                super::buffer::push_escaped_as(&mut escaped, ours.as_bytes(), Escape::Text);
                assert_eq!(
                    escaped,
                    ours.as_bytes(),
                    "{level} {filter:?} {request_id:?}"
                );
            }
        }
    }
}
