//! The log buffer and its writer thread.
//!
//! Lines are appended to a buffer, their control characters escaped on the
//! way in ([`push_escaped`]). While lines keep coming, the writer thread
//! wakes every [`FLUSH_DELAY`], takes the buffer and writes it with one
//! system call, outside the lock the logging threads take. When a few
//! rounds pass without a line it sleeps until the next line wakes it, so an
//! idle proxy does not wake up and a busy one pays no wake-up per batch.
//!
//! Only the writer thread (and [`LogBuffer::write_out`], at exit) writes:
//! a thread that logs never waits on stderr. When stderr does not keep up
//! and the buffer holds `max_buffered` bytes, new lines are dropped and
//! counted; once a batch is written again, the writer logs how many were
//! lost. A line longer than `max_line` bytes is cut and marked.
//!
//! A buffer writes text lines (control characters escaped as `\n`,
//! `\x1b`, `\u{85}`) or JSON lines ([`Escape::Json`]: escapes JSON allows,
//! and a cut line replaced by a JSON line saying so), and goes to stderr or
//! to any other sink (the filters' own log files, `files`).

use std::io::{self, Write};
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Condvar, Mutex, MutexGuard};
use std::time::Duration;

use tracing_subscriber::fmt::MakeWriter;

use crate::config::{DEFAULT_MAX_BUFFERED_BYTES, DEFAULT_MAX_LINE_BYTES, MIN_LINE_BYTES};

/// How long a line may wait in the buffer while lines keep coming.
pub const FLUSH_DELAY: Duration = Duration::from_millis(10);
/// Rounds of [`FLUSH_DELAY`] without a line before the writer sleeps until one.
const IDLE_ROUNDS: u32 = 10;
const BATCH_CAPACITY: usize = 16 * 1024;

/// Where a buffer's batches are written.
type Sink = dyn Fn(&[u8]) + Send + Sync;

/// Log lines waiting for the writer thread.
pub struct LogBuffer {
    pending: Mutex<Pending>,
    arrived: Condvar,
    /// Held while a batch is taken and written, so batches go out in the
    /// order they were taken. Only writers take it, never a logging thread.
    writing: Mutex<()>,
    sink: Box<Sink>,
    /// Lines are JSON ([`Escape::Json`]).
    json: AtomicBool,
    /// Past this many buffered bytes, lines are dropped.
    max_buffered: AtomicUsize,
    /// Longest line, before its control characters are escaped.
    max_line: AtomicUsize,
    /// Lines dropped since the start.
    dropped: AtomicU64,
}

struct Pending {
    lines: Vec<u8>,
    /// The writer sleeps until a line arrives and must be woken.
    writer_waiting: bool,
}

fn write_stderr(batch: &[u8]) {
    // A log line that cannot be written has nowhere to be reported.
    let _ = io::stderr().lock().write_all(batch);
}

impl LogBuffer {
    /// A buffer whose batches go to stderr.
    pub fn new() -> Self {
        Self::with_sink(write_stderr)
    }

    /// A buffer whose batches go to `sink` (called by one thread at a time).
    pub fn with_sink(sink: impl Fn(&[u8]) + Send + Sync + 'static) -> Self {
        LogBuffer {
            pending: Mutex::new(Pending {
                lines: Vec::with_capacity(BATCH_CAPACITY),
                writer_waiting: false,
            }),
            arrived: Condvar::new(),
            writing: Mutex::new(()),
            sink: Box::new(sink),
            json: AtomicBool::new(false),
            max_buffered: AtomicUsize::new(DEFAULT_MAX_BUFFERED_BYTES),
            max_line: AtomicUsize::new(DEFAULT_MAX_LINE_BYTES),
            dropped: AtomicU64::new(0),
        }
    }

    /// Sets the line cap (at least [`MIN_LINE_BYTES`]) and the buffer's.
    pub fn set_limits(&self, max_line: usize, max_buffered: usize) {
        self.max_line
            .store(max_line.max(MIN_LINE_BYTES), Ordering::Relaxed);
        self.max_buffered.store(max_buffered, Ordering::Relaxed);
    }

    /// How control characters are escaped, and a cut line marked.
    pub fn set_escape(&self, escape: Escape) {
        self.json.store(escape == Escape::Json, Ordering::Relaxed);
    }

    /// The line cap.
    pub fn max_line(&self) -> usize {
        self.max_line.load(Ordering::Relaxed)
    }

    /// Lines dropped since the start because stderr did not keep up.
    pub fn dropped(&self) -> u64 {
        self.dropped.load(Ordering::Relaxed)
    }

    /// Starts the writer thread.
    pub fn start_writer(&'static self) -> io::Result<()> {
        std::thread::Builder::new()
            .name("weft-log".into())
            .spawn(move || self.write_batches())
            .map(drop)
    }

    fn pending(&self) -> MutexGuard<'_, Pending> {
        // A thread that panicked while logging left whole lines behind.
        self.pending.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn write_batches(&self) {
        let mut batch = Vec::with_capacity(BATCH_CAPACITY);
        let mut reported = 0;
        loop {
            let mut pending = self.pending();
            while pending.lines.is_empty() {
                pending.writer_waiting = true;
                pending = self
                    .arrived
                    .wait(pending)
                    .unwrap_or_else(|e| e.into_inner());
            }
            pending.writer_waiting = false;
            drop(pending);
            let mut idle = 0;
            while idle < IDLE_ROUNDS {
                std::thread::sleep(FLUSH_DELAY);
                idle = if self.write_out_into(&mut batch) {
                    0
                } else {
                    idle + 1
                };
                let dropped = self.dropped();
                if dropped > reported {
                    tracing::warn!(
                        lines = dropped - reported,
                        "log lines dropped: stderr did not take them as fast as they came (weft_log_lines_dropped_total counts them all)"
                    );
                    reported = dropped;
                }
            }
        }
    }

    /// Writes out whatever lines are buffered.
    pub fn write_out(&self) {
        self.write_out_into(&mut Vec::new());
    }

    /// Swaps the buffered lines into `batch` (empty; its capacity becomes
    /// the buffer's) and writes them. Returns whether there were any.
    fn write_out_into(&self, batch: &mut Vec<u8>) -> bool {
        let writing = self.writing.lock().unwrap_or_else(|e| e.into_inner());
        {
            let mut pending = self.pending();
            if pending.lines.is_empty() {
                return false;
            }
            std::mem::swap(&mut pending.lines, batch);
        }
        (self.sink)(batch);
        drop(writing);
        batch.clear();
        true
    }

    /// Appends one formatted line, cut at the line cap; drops it when the
    /// buffer is full.
    pub fn push(&self, line: &[u8]) {
        self.push_as(line, false);
    }

    /// [`push`](Self::push) for a text line that holds no byte to escape
    /// but its final line feed (a filter's line, its fields quoted as
    /// `Debug` quotes them): copied as it is.
    pub fn push_escaped_text(&self, line: &[u8]) {
        self.push_as(line, true);
    }

    fn push_as(&self, line: &[u8], escaped_text: bool) {
        let (line, cut) = cut_line(line, self.max_line());
        let max_buffered = self.max_buffered.load(Ordering::Relaxed);
        let mut pending = self.pending();
        if pending.lines.len() + line.len() > max_buffered {
            drop(pending);
            self.dropped.fetch_add(1, Ordering::Relaxed);
            return;
        }
        let json = self.json.load(Ordering::Relaxed);
        if cut == 0 && escaped_text && !json {
            pending.lines.extend_from_slice(line);
        } else if cut == 0 {
            let escape = if json { Escape::Json } else { Escape::Text };
            push_escaped_as(&mut pending.lines, line, escape);
        } else if json {
            push_cut_json(&mut pending.lines, line, cut);
        } else {
            push_escaped(&mut pending.lines, line.strip_suffix(b"\n").unwrap_or(line));
            let _ = writeln!(pending.lines, " [line cut: {cut} more bytes]");
        }
        if pending.writer_waiting {
            pending.writer_waiting = false;
            self.arrived.notify_one();
        }
    }
}

/// `line` cut to at most `max` bytes (whole characters, its line feed
/// kept when it had one), and how many bytes were cut off.
pub fn cut_line(line: &[u8], max: usize) -> (&[u8], usize) {
    if line.len() <= max {
        return (line, 0);
    }
    let mut end = max;
    // Not inside a UTF-8 sequence: back off continuation bytes.
    while end > 0 && line[end] & 0xc0 == 0x80 {
        end -= 1;
    }
    (&line[..end], line.len() - end)
}

/// How a buffer's lines are escaped.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Escape {
    /// Text: `\n`, `\x1b`, `\u{85}`; tab stays.
    Text,
    /// JSON string escapes: `\u000a`, `\u001b`, `\u0085`; valid inside a
    /// JSON string and readable in text.
    Json,
}

/// A JSON line standing for one cut at the line cap: what it started with,
/// as a JSON string, and how many bytes went.
fn push_cut_json(out: &mut Vec<u8>, kept: &[u8], cut: usize) {
    let start = String::from_utf8_lossy(kept.strip_suffix(b"\n").unwrap_or(kept));
    let _ = writeln!(
        out,
        r#"{{"level":"WARN","target":"weft::logging","fields":{{"message":"log line cut at log.max_line_bytes","cut_bytes":{cut},"start":{}}}}}"#,
        serde_json::Value::from(start.as_ref())
    );
}

/// Appends one formatted event to `out` with its control characters escaped
/// (`\n`, `\r`, `\x1b`, `\u{85}`…): tab and the final line feed stay.
pub fn push_escaped(out: &mut Vec<u8>, line: &[u8]) {
    push_escaped_as(out, line, Escape::Text);
}

/// Appends `line` with its control characters escaped as `escape` says:
/// for [`Escape::Json`] every byte a JSON string may not hold raw (and DEL
/// and the C1 controls, which terminals obey) becomes `\u00XX`. The final
/// line feed stays.
pub fn push_escaped_as(out: &mut Vec<u8>, line: &[u8], escape: Escape) {
    let json = escape == Escape::Json;
    let (body, end) = match line.split_last() {
        Some((b'\n', body)) => (body, &b"\n"[..]),
        _ => (line, &b""[..]),
    };
    let mut rest = body;
    while let Some(at) = first_suspect(rest) {
        out.extend_from_slice(&rest[..at]);
        let skip = match (rest[at], rest.get(at + 1)) {
            (0xc2, Some(&next)) if (0x80..=0x9f).contains(&next) => {
                // A C1 control (U+0080..=U+009F), which some terminals obey.
                let _ = match json {
                    true => write!(out, "\\u{next:04x}"),
                    false => write!(out, "\\u{{{next:x}}}"),
                };
                2
            }
            (0xc2, _) => {
                out.push(0xc2);
                1
            }
            (b, _) if json => {
                let _ = write!(out, "\\u{b:04x}");
                1
            }
            (b'\t', _) => {
                out.push(b'\t');
                1
            }
            (b'\n', _) => {
                out.extend_from_slice(b"\\n");
                1
            }
            (b'\r', _) => {
                out.extend_from_slice(b"\\r");
                1
            }
            (b, _) => {
                let _ = write!(out, "\\x{b:02x}");
                1
            }
        };
        rest = &rest[at + skip..];
    }
    out.extend_from_slice(rest);
    out.extend_from_slice(end);
}

/// A byte that may need escaping; 0xc2 starts a C1 control or a harmless
/// character such as `©`.
fn suspect(b: u8) -> bool {
    b < 0x20 || b == 0x7f || b == 0xc2
}

/// Where the first suspect byte of `bytes` is. Lines are mostly plain: they
/// are looked at 16 bytes at a time, which the compiler turns into vector
/// compares (a byte at a time cost 1.1 ns per byte, 400 ns per access log
/// line).
fn first_suspect(bytes: &[u8]) -> Option<usize> {
    let (chunks, tail) = bytes.as_chunks::<16>();
    for (n, chunk) in chunks.iter().enumerate() {
        if chunk.iter().fold(false, |any, &b| any | suspect(b)) {
            return chunk.iter().position(|&b| suspect(b)).map(|at| n * 16 + at);
        }
    }
    let start = chunks.len() * 16;
    tail.iter().position(|&b| suspect(b)).map(|at| start + at)
}

/// One event's handle on the buffer.
pub struct LineWriter<'a>(&'a LogBuffer);

impl Write for LineWriter<'_> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.0.push(buf);
        Ok(buf.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

impl<'a> MakeWriter<'a> for &'static LogBuffer {
    type Writer = LineWriter<'a>;

    fn make_writer(&'a self) -> Self::Writer {
        LineWriter(self)
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Mutex;
    use std::time::{Duration, Instant};

    use super::{
        Escape, FLUSH_DELAY, LogBuffer, cut_line, first_suspect, push_escaped, push_escaped_as,
    };

    fn escaped(line: &str) -> String {
        let mut out = Vec::new();
        push_escaped(&mut out, line.as_bytes());
        String::from_utf8(out).unwrap()
    }

    #[test]
    fn the_first_suspect_byte_is_found_in_every_lane_and_the_tail() {
        for len in 0..=40 {
            let plain = vec![b'a'; len];
            assert_eq!(first_suspect(&plain), None, "len {len}");
            for at in 0..len {
                for bad in [0x00, b'\n', 0x1b, 0x1f, 0x7f, 0xc2] {
                    let mut line = plain.clone();
                    line[at] = bad;
                    // A second suspect further on must not be the answer.
                    if at + 3 < len {
                        line[at + 3] = b'\r';
                    }
                    assert_eq!(
                        first_suspect(&line),
                        Some(at),
                        "len {len}, {bad:#x} at {at}"
                    );
                }
            }
        }
        // Bytes at or above 0x20, other than 0x7f and 0xc2, are plain.
        let plain: Vec<u8> = (0x20..=0xff).filter(|b| *b != 0x7f && *b != 0xc2).collect();
        assert_eq!(first_suspect(&plain), None);
    }

    #[test]
    fn plain_lines_are_copied() {
        assert_eq!(escaped("a line\twith a tab\n"), "a line\twith a tab\n");
        assert_eq!(escaped("no line feed"), "no line feed");
        assert_eq!(escaped(""), "");
        assert_eq!(escaped("é € 😀\n"), "é € 😀\n");
    }

    #[test]
    fn control_characters_are_escaped() {
        assert_eq!(
            escaped("forged\n2026-01-01 INFO fake\r\n"),
            "forged\\n2026-01-01 INFO fake\\r\n"
        );
        assert_eq!(escaped("\x1b[31mred\x07\x7f\n"), "\\x1b[31mred\\x07\\x7f\n");
        assert_eq!(
            escaped("c1 \u{85} \u{9b}x \u{a0}\n"),
            "c1 \\u{85} \\u{9b}x \u{a0}\n"
        );
        assert_eq!(escaped("\u{0}"), "\\x00");
        assert_eq!(escaped("© ¶\u{c2}"), "© ¶\u{c2}");
    }

    #[test]
    fn json_escapes_keep_a_json_line_valid() {
        let mut out = Vec::new();
        // What serde_json leaves raw: DEL and the C1 controls.
        let line = format!("{}\n", serde_json::json!({"m": "a\u{7f}b\u{85}c © \u{1b}"}));
        push_escaped_as(&mut out, line.as_bytes(), Escape::Json);
        let text = String::from_utf8(out).unwrap();
        assert_eq!(text, "{\"m\":\"a\\u007fb\\u0085c © \\u001b\"}\n");
        let back: serde_json::Value = serde_json::from_str(&text).unwrap();
        assert_eq!(back["m"], "a\u{7f}b\u{85}c © \u{1b}");
        // Raw controls in a plain line become JSON escapes too.
        let mut out = Vec::new();
        push_escaped_as(&mut out, b"tab\tline\nend\n", Escape::Json);
        assert_eq!(out, b"tab\\u0009line\\u000aend\n");
    }

    #[test]
    fn a_cut_json_line_becomes_a_json_line_saying_so() {
        let buffer = LogBuffer::with_sink(ignore);
        buffer.set_escape(Escape::Json);
        buffer.set_limits(300, 10_000);
        let line = format!("{}\n", serde_json::json!({"m": "é".repeat(400)}));
        buffer.push(line.as_bytes());
        let written = String::from_utf8(buffer.pending().lines.clone()).unwrap();
        assert!(written.ends_with('\n'));
        let cut: serde_json::Value = serde_json::from_str(written.trim_end()).unwrap();
        assert_eq!(cut["level"], "WARN");
        assert_eq!(cut["fields"]["cut_bytes"], line.len() - 300);
        assert!(
            cut["fields"]["start"]
                .as_str()
                .unwrap()
                .starts_with("{\"m\":\"éé")
        );
    }

    static WRITTEN: Mutex<Vec<u8>> = Mutex::new(Vec::new());

    fn record(batch: &[u8]) {
        WRITTEN.lock().unwrap().extend_from_slice(batch);
    }

    fn written_lines() -> Vec<String> {
        let written = WRITTEN.lock().unwrap();
        String::from_utf8(written.clone())
            .unwrap()
            .lines()
            .map(str::to_owned)
            .collect()
    }

    #[test]
    fn every_line_is_written_once_in_order_across_batches_and_idle_spells() {
        let buffer: &'static LogBuffer = Box::leak(Box::new(LogBuffer::with_sink(record)));
        // Room for every line: none is dropped.
        buffer.set_limits(1024, 64 << 20);
        buffer.start_writer().unwrap();
        let threads = 4;
        let per_thread = 3_000;
        // Lines long enough that the writer thread takes many batches.
        let padding = "x".repeat(200);
        let push_all = |round: usize| {
            std::thread::scope(|scope| {
                for t in 0..threads {
                    let padding = &padding;
                    scope.spawn(move || {
                        for i in 0..per_thread {
                            buffer.push(format!("{round} {t} {i} {padding}\n").as_bytes());
                        }
                    });
                }
            });
        };
        push_all(0);
        // Long enough for the writer to go idle and sleep until a line.
        std::thread::sleep(FLUSH_DELAY * (super::IDLE_ROUNDS + 5));
        push_all(1);
        // The writer thread empties the buffer by itself.
        let deadline = Instant::now() + Duration::from_secs(10);
        while written_lines().len() < 2 * threads * per_thread && Instant::now() < deadline {
            std::thread::sleep(FLUSH_DELAY);
        }
        let lines = written_lines();
        assert_eq!(lines.len(), 2 * threads * per_thread);
        let mut next = vec![(0, 0); threads];
        for line in &lines {
            let mut fields = line.split(' ');
            let mut number = || fields.next().unwrap().parse::<usize>().unwrap();
            let (round, t, i) = (number(), number(), number());
            assert_eq!((round, i), next[t], "thread {t}'s lines out of order");
            next[t] = if i + 1 == per_thread {
                (round + 1, 0)
            } else {
                (round, i + 1)
            };
        }
    }

    #[test]
    fn long_lines_are_cut_on_a_character_boundary() {
        assert_eq!(cut_line(b"short\n", 300), (&b"short\n"[..], 0));
        let line = "é".repeat(200);
        let (kept, cut) = cut_line(line.as_bytes(), 301);
        assert_eq!(kept.len(), 300);
        assert_eq!(cut, 100);
        assert!(std::str::from_utf8(kept).is_ok());
    }

    fn ignore(_: &[u8]) {}

    #[test]
    fn a_full_buffer_drops_lines_and_counts_them_without_writing() {
        // No writer thread: nothing empties the buffer.
        let buffer = LogBuffer::with_sink(ignore);
        buffer.set_limits(300, 1000);
        let line = format!("{}\n", "x".repeat(99));
        for _ in 0..25 {
            buffer.push(line.as_bytes());
        }
        assert_eq!(buffer.pending().lines.len(), 1000);
        assert_eq!(buffer.dropped(), 15);
        buffer.push(format!("{}\n", "y".repeat(1000)).as_bytes());
        assert_eq!(buffer.dropped(), 16);
        buffer.write_out();
        buffer.push(format!("{}\n", "y".repeat(1000)).as_bytes());
        let lines = String::from_utf8(buffer.pending().lines.clone()).unwrap();
        assert_eq!(
            lines,
            format!("{} [line cut: 701 more bytes]\n", "y".repeat(300))
        );
    }
}
