//! Filters' own log files (`filters.<name>.log_file`): an access log kept
//! out of the proxy's log, batched like it, and reopened on SIGUSR1 so
//! that logrotate can move it away.
//!
//! A file is opened once per path for the life of the process (a reload
//! naming it again gets the same file) and has its own buffer and writer
//! thread ([`LogBuffer`]): a thread that logs never waits on the disk, and
//! lines past `log.max_buffered_bytes` are dropped and counted. Each line
//! is the filter's message alone, control characters written as JSON
//! escapes, so a JSON access line stays one valid JSON object.

use std::fs::{File, OpenOptions};
use std::io::{self, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

use super::buffer::{Escape, LogBuffer, cut_line};

/// One filter log file.
pub struct LogFile {
    path: PathBuf,
    file: Arc<Mutex<File>>,
    buffer: LogBuffer,
}

/// Every log file opened so far.
static FILES: Mutex<Vec<&'static LogFile>> = Mutex::new(Vec::new());

fn open_append(path: &Path) -> io::Result<File> {
    OpenOptions::new().create(true).append(true).open(path)
}

/// The log file at `path`, opened (created, appended to) on first use.
pub fn open(path: &Path) -> io::Result<&'static LogFile> {
    let mut files = FILES.lock().unwrap_or_else(|e| e.into_inner());
    if let Some(found) = files.iter().find(|f| f.path == path) {
        return Ok(found);
    }
    let file = Arc::new(Mutex::new(open_append(path)?));
    let sink = file.clone();
    let shown = path.display().to_string();
    let failing = AtomicBool::new(false);
    let buffer = LogBuffer::with_sink(move |batch| {
        let written = sink
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .write_all(batch);
        match written {
            Ok(()) => failing.store(false, Ordering::Relaxed),
            // Once per failure streak: the proxy's log says where lines go missing.
            Err(e) if !failing.swap(true, Ordering::Relaxed) => {
                tracing::error!(path = shown, "cannot write to the filter log file: {e}");
            }
            Err(_) => {}
        }
    });
    buffer.set_escape(Escape::Json);
    let limits = super::limits();
    buffer.set_limits(limits.max_line_bytes, limits.max_buffered_bytes);
    let opened: &'static LogFile = Box::leak(Box::new(LogFile {
        path: path.to_path_buf(),
        file,
        buffer,
    }));
    opened.buffer.start_writer()?;
    files.push(opened);
    Ok(opened)
}

impl LogFile {
    /// Appends `message` as one line (cut at the line cap).
    pub fn line(&self, message: &str) {
        let (kept, _) = cut_line(message.as_bytes(), self.buffer.max_line());
        LINE.with_borrow_mut(|line| {
            line.clear();
            line.extend_from_slice(kept);
            line.push(b'\n');
            self.buffer.push(line);
        });
    }

    /// The file's path, as configured.
    pub fn path(&self) -> &Path {
        &self.path
    }
}

thread_local! {
    static LINE: std::cell::RefCell<Vec<u8>> = const { std::cell::RefCell::new(Vec::new()) };
}

fn each(mut f: impl FnMut(&LogFile)) {
    let files = FILES.lock().unwrap_or_else(|e| e.into_inner()).clone();
    for file in files {
        f(file);
    }
}

/// Writes out what every log file holds, then reopens each at its path
/// (SIGUSR1): lines buffered before go to the file that was moved away,
/// later ones to the new file. A file that cannot be reopened keeps the
/// old one and is reported.
pub fn reopen_all() -> Vec<(PathBuf, io::Error)> {
    let mut failed = Vec::new();
    let files = FILES.lock().unwrap_or_else(|e| e.into_inner()).clone();
    for file in files {
        file.buffer.write_out();
        match open_append(&file.path) {
            Ok(new) => *file.file.lock().unwrap_or_else(|e| e.into_inner()) = new,
            Err(e) => failed.push((file.path.clone(), e)),
        }
    }
    failed
}

/// Writes out what every log file holds.
pub fn flush_all() {
    each(|file| file.buffer.write_out());
}

/// Applies `log:`'s caps to every log file.
pub fn set_limits(max_line: usize, max_buffered: usize) {
    each(|file| file.buffer.set_limits(max_line, max_buffered));
}

/// Lines dropped from every log file because the disk did not keep up.
pub fn dropped() -> u64 {
    let mut n = 0;
    each(|file| n += file.buffer.dropped());
    n
}
