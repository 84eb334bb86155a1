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

/// Applies `log:` from the config: the line cap and the buffer's.
pub fn set_limits(config: &crate::config::LogConfig) {
    BUFFER
        .get_or_init(LogBuffer::new)
        .set_limits(config.max_line_bytes, config.max_buffered_bytes);
}

/// Lines dropped since the start because stderr did not keep up.
pub fn lines_dropped() -> u64 {
    BUFFER.get().map_or(0, LogBuffer::dropped)
}

/// Writes out whatever lines are buffered.
pub fn flush() {
    if let Some(buffer) = BUFFER.get() {
        buffer.write_out();
    }
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
        format_filter_line(line, level, filter, request_id, message);
        buffer.push(line);
    });
}

/// The tracing event [`filter_line`] stands for.
fn filter_event(level: tracing::Level, filter: &str, request_id: &str, message: &str) {
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

/// `text` as `{:?}` writes it: quoted, `"` and `\\` escaped. Printable
/// ASCII (names, request ids, JSON access lines) is copied eight bytes at a
/// time where none of the eight is to be escaped (a JSON line has a quote
/// every few bytes, too often for a copy per run between them); anything
/// else goes through `Debug`.
fn push_debug_str(out: &mut Vec<u8>, text: &str) {
    if !text.bytes().all(|b| (0x20..0x7f).contains(&b)) {
        let _ = write!(out, "{text:?}");
        return;
    }
    let bytes = text.as_bytes();
    let start = out.len();
    // Room for every byte escaped and the quotes; cut to what was written.
    out.resize(start + bytes.len() * 2 + 2, 0);
    let buf = &mut out[start..];
    buf[0] = b'"';
    let mut n = 1;
    let (chunks, tail) = bytes.as_chunks::<8>();
    for chunk in chunks {
        if may_escape(u64::from_le_bytes(*chunk)) {
            n = push_escaped_ascii(buf, n, chunk);
        } else {
            buf[n..n + 8].copy_from_slice(chunk);
            n += 8;
        }
    }
    n = push_escaped_ascii(buf, n, tail);
    buf[n] = b'"';
    out.truncate(start + n + 1);
}

/// Whether one of the eight bytes of `word` may be `"` or `\\` (a byte of
/// `word` is zero after the XOR; exact for ASCII, as a false positive only
/// costs the byte-wise path).
fn may_escape(word: u64) -> bool {
    const ONES: u64 = 0x0101_0101_0101_0101;
    const HIGH: u64 = 0x8080_8080_8080_8080;
    let has_zero = |x: u64| x.wrapping_sub(ONES) & !x & HIGH != 0;
    has_zero(word ^ (ONES * u64::from(b'"'))) || has_zero(word ^ (ONES * u64::from(b'\\')))
}

/// Writes `bytes` at `buf[n..]` with `"` and `\\` escaped, without a branch
/// per byte; returns the new end.
fn push_escaped_ascii(buf: &mut [u8], mut n: usize, bytes: &[u8]) -> usize {
    for &b in bytes {
        buf[n] = b'\\';
        n += usize::from(b == b'"' || b == b'\\');
        buf[n] = b;
        n += 1;
    }
    n
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
            }
        }
    }
}
