//! The log buffer and its writer thread.
//!
//! Lines are appended to a buffer, their control characters escaped on the
//! way in ([`push_escaped`]). While lines keep coming, the writer thread
//! wakes every [`FLUSH_DELAY`], takes the buffer and writes it with one
//! system call, outside the lock the logging threads take. When a few
//! rounds pass without a line it sleeps until the next line wakes it, so an
//! idle proxy does not wake up and a busy one pays no wake-up per batch.
//!
//! A buffer that reaches [`MAX_BUFFERED`] bytes is written by the thread
//! that filled it, so a burst of logging slows its writers rather than
//! growing memory. Batches are written in the order they were taken.

use std::io::{self, Write};
use std::sync::{Condvar, Mutex, MutexGuard};
use std::time::Duration;

use tracing_subscriber::fmt::MakeWriter;

/// How long a line may wait in the buffer while lines keep coming.
pub const FLUSH_DELAY: Duration = Duration::from_millis(10);
/// Past this many buffered bytes the writing thread empties the buffer itself.
const MAX_BUFFERED: usize = 256 * 1024;
/// Rounds of [`FLUSH_DELAY`] without a line before the writer sleeps until one.
const IDLE_ROUNDS: u32 = 10;
const BATCH_CAPACITY: usize = 16 * 1024;

/// Log lines waiting for the writer thread.
pub struct LogBuffer {
    pending: Mutex<Pending>,
    arrived: Condvar,
    /// Held while a batch is written; taken before the `pending` lock is
    /// released, so batches go out in the order they were taken.
    writing: Mutex<()>,
    sink: fn(&[u8]),
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

    fn with_sink(sink: fn(&[u8])) -> Self {
        LogBuffer {
            pending: Mutex::new(Pending {
                lines: Vec::with_capacity(BATCH_CAPACITY),
                writer_waiting: false,
            }),
            arrived: Condvar::new(),
            writing: Mutex::new(()),
            sink,
        }
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
        let mut pending = self.pending();
        if pending.lines.is_empty() {
            return false;
        }
        std::mem::swap(&mut pending.lines, batch);
        let writing = self.writing.lock().unwrap_or_else(|e| e.into_inner());
        drop(pending);
        (self.sink)(batch);
        drop(writing);
        batch.clear();
        true
    }

    /// Appends one formatted line.
    pub fn push(&self, line: &[u8]) {
        let mut pending = self.pending();
        push_escaped(&mut pending.lines, line);
        if pending.lines.len() >= MAX_BUFFERED {
            let full = std::mem::replace(&mut pending.lines, Vec::with_capacity(BATCH_CAPACITY));
            let writing = self.writing.lock().unwrap_or_else(|e| e.into_inner());
            drop(pending);
            (self.sink)(&full);
            drop(writing);
        } else if pending.writer_waiting {
            pending.writer_waiting = false;
            self.arrived.notify_one();
        }
    }
}

/// Appends one formatted event to `out` with its control characters escaped
/// (`\n`, `\r`, `\x1b`, `\u{85}`…): tab and the final line feed stay.
pub fn push_escaped(out: &mut Vec<u8>, line: &[u8]) {
    let (body, end) = match line.split_last() {
        Some((b'\n', body)) => (body, &b"\n"[..]),
        _ => (line, &b""[..]),
    };
    let mut rest = body;
    while let Some(at) = first_suspect(rest) {
        out.extend_from_slice(&rest[..at]);
        let skip = match (rest[at], rest.get(at + 1)) {
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
            (0xc2, Some(&next)) if (0x80..=0x9f).contains(&next) => {
                // A C1 control (U+0080..=U+009F), which some terminals obey.
                let _ = write!(out, "\\u{{{next:x}}}");
                2
            }
            (0xc2, _) => {
                out.push(0xc2);
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

    use super::{FLUSH_DELAY, LogBuffer, first_suspect, push_escaped};

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
        buffer.start_writer().unwrap();
        let threads = 4;
        let per_thread = 3_000;
        // Lines long enough that the threads fill the buffer now and then
        // and write it themselves, between the writer thread's batches.
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
}
