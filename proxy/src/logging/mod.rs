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

use std::io::{self, IsTerminal, Write};
use std::sync::OnceLock;

use tracing_subscriber::EnvFilter;

pub use buffer::FLUSH_DELAY;
use buffer::LogBuffer;
use clock::LogClock;

mod buffer;
mod clock;

static BUFFER: OnceLock<LogBuffer> = OnceLock::new();
/// The buffer once its writer thread runs and the subscriber writes to it:
/// only then may [`filter_line`] write there directly.
static BUFFERED: OnceLock<&'static LogBuffer> = OnceLock::new();

/// Installs the tracing subscriber: `level` (a `WEFT_LOG`-style filter such
/// as `info` or `weft::filter=debug`) or else `$WEFT_LOG`, else `info`.
pub fn init(level: Option<&str>) {
    let filter = match level {
        Some(l) => EnvFilter::new(l),
        None => EnvFilter::try_from_env("WEFT_LOG").unwrap_or_else(|_| EnvFilter::new("info")),
    };
    let terminal = io::stderr().is_terminal();
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_timer(LogClock)
        .with_ansi(terminal);
    if terminal {
        builder.with_writer(io::stderr).init();
        return;
    }
    let buffer = BUFFER.get_or_init(LogBuffer::new);
    if let Err(e) = buffer.start_writer() {
        eprintln!("weft: cannot start the log writer thread ({e}); logging unbuffered");
        builder.with_writer(io::stderr).init();
        return;
    }
    builder
        .with_ansi_sanitization(false)
        .with_writer(buffer)
        .init();
    let _ = BUFFERED.set(buffer);
    let previous = std::panic::take_hook();
    std::panic::set_hook(Box::new(move |info| {
        flush();
        previous(info);
    }));
}

/// Writes out whatever lines are buffered.
pub fn flush() {
    if let Some(buffer) = BUFFER.get() {
        buffer.write_out();
    }
}

/// Logs a filter's line: a tracing event with target `weft::filter` and
/// fields `filter` and `request_id`. When lines are buffered it is written
/// straight into the buffer, as tracing's formatter would write it; else
/// (a terminal, or logging not set up) it goes through tracing. The caller
/// checks that the level is enabled.
pub fn filter_line(level: tracing::Level, filter: &str, request_id: &str, message: &str) {
    let Some(buffer) = BUFFERED.get() else {
        filter_event(level, filter, request_id, message);
        return;
    };
    LINE.with_borrow_mut(|line| {
        line.clear();
        format_filter_line(line, level, filter, request_id, message);
        buffer.push(line);
    });
}

/// The tracing event [`filter_line`] stands for.
fn filter_event(level: tracing::Level, filter: &str, request_id: &str, message: &str) {
    match level {
        tracing::Level::TRACE => {
            tracing::trace!(target: "weft::filter", filter, request_id, "{message}")
        }
        tracing::Level::DEBUG => {
            tracing::debug!(target: "weft::filter", filter, request_id, "{message}")
        }
        tracing::Level::INFO => {
            tracing::info!(target: "weft::filter", filter, request_id, "{message}")
        }
        tracing::Level::WARN => {
            tracing::warn!(target: "weft::filter", filter, request_id, "{message}")
        }
        _ => tracing::error!(target: "weft::filter", filter, request_id, "{message}"),
    }
}

thread_local! {
    /// Where [`filter_line`] formats a line.
    static LINE: std::cell::RefCell<Vec<u8>> = const { std::cell::RefCell::new(Vec::new()) };
}

/// Tracing's full format without colours: time, level, target, message,
/// then the fields, `str` values in their `Debug` form.
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
    out.extend_from_slice(b" weft::filter: ");
    out.extend_from_slice(message.as_bytes());
    out.extend_from_slice(b" filter=");
    push_debug_str(out, filter);
    out.extend_from_slice(b" request_id=");
    push_debug_str(out, request_id);
    out.push(b'\n');
}

/// `text` as `{:?}` writes it: quoted, and copied as is when it is
/// printable ASCII without `"` or `\`, as names and request ids are.
fn push_debug_str(out: &mut Vec<u8>, text: &str) {
    if text
        .bytes()
        .all(|b| (0x20..0x7f).contains(&b) && b != b'"' && b != b'\\')
    {
        out.push(b'"');
        out.extend_from_slice(text.as_bytes());
        out.push(b'"');
    } else {
        let _ = write!(out, "{text:?}");
    }
}

#[cfg(test)]
mod tests {
    use super::LogClock;

    #[test]
    fn filter_lines_are_what_tracing_writes() {
        use std::sync::{Arc, Mutex};
        #[derive(Clone, Default)]
        struct Captured(Arc<Mutex<Vec<u8>>>);
        impl std::io::Write for Captured {
            fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
                self.0.lock().unwrap().extend_from_slice(buf);
                Ok(buf.len())
            }
            fn flush(&mut self) -> std::io::Result<()> {
                Ok(())
            }
        }
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
            ("", "", ""),
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
            }
        }
    }
}
