//! Run-queue wait of the threads that run filter calls: time a thread was
//! ready to run but waited for a CPU other processes held. A call's deadline
//! does not count it (see the parent module's docs).
//!
//! Linux keeps it per thread in `/proc/<pid>/task/<tid>/schedstat` (time on
//! a CPU, time waiting on a run queue, timeslices; nanoseconds). Reading it
//! costs a system call, too dear for every call, so:
//!
//! - a thread that runs filter calls registers once ([`register_thread`]):
//!   its file is kept open, in a record the thread finds through a
//!   thread-local and the watchdog through a registry;
//! - the watchdog re-reads every registered thread's file at each wake-up
//!   ([`refresh`]: about once per deadline while calls are being made, once
//!   a second while it is parked), off the request path, and stores the
//!   reading with when it was taken;
//! - a call, when it starts, keeps its thread's last reading ([`mark`]: a
//!   thread-local access and an atomic load);
//! - only a call overdue by wall clock reads its thread's file again
//!   ([`queued_since`]) and is credited the run-queue wait since the mark.
//!
//! The mark may be up to one watchdog period old, so the credit may include
//! wait from just before the call started: at most one period's worth (the
//! credit is cut by however much older than `allowance` the mark is), which
//! errs towards leniency. The first reading after the watchdog was parked
//! (no calls for a while) is kept too: a call that started while the
//! watchdog slept is credited from that reading, taken just after the call
//! woke it, which errs towards strictness by the few microseconds between.
//!
//! Where the file cannot be read (not Linux, `/proc` not mounted or hidden)
//! nothing registers and calls are timed as before: wall time minus
//! callouts and stalls.

use std::time::Duration;

/// A thread's run-queue reading when a call started, or none (the thread is
/// not registered).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Mark(u64);

impl Mark {
    /// No reading: the call gets no run-queue credit.
    pub const NONE: Mark = Mark(NONE);
}

// A reading packs when it was taken (ms since `imp::origin`, wrapping at
// 2^32 ms: 49 days) over the run-queue wait (µs, wrapping at 2^32 µs: 71
// minutes) into one word, so that both are loaded and stored together.
// Only differences of each are used, with wrapping arithmetic.

/// No reading.
const NONE: u64 = u64::MAX;

#[cfg_attr(not(target_os = "linux"), allow(dead_code))]
fn pack(at_ms: u32, wait_us: u32) -> u64 {
    (u64::from(at_ms) << 32) | u64::from(wait_us)
}

#[cfg_attr(not(target_os = "linux"), allow(dead_code))]
fn unpack(reading: u64) -> (u32, u32) {
    ((reading >> 32) as u32, reading as u32)
}

/// The run-queue wait a call that started at `started_ms` may be credited,
/// from `reading` to the reading `now` taken after the call became overdue.
/// A reading taken before the call started includes the wait between the
/// two; it is trusted for `allowance_ms` of that, and the credit is cut by
/// however much older the reading is.
#[cfg_attr(not(target_os = "linux"), allow(dead_code))]
fn credit(reading: u64, now: u64, started_ms: u32, allowance_ms: u32) -> Duration {
    let (now_ms, now_us) = unpack(now);
    let (at_ms, wait_us) = unpack(reading);
    // A reading from after `now` is not one: none, or wrapped around.
    if reading == NONE || at_ms.wrapping_sub(now_ms) as i32 > 0 {
        return Duration::ZERO;
    }
    let queued_us = u64::from(now_us.wrapping_sub(wait_us));
    // Negative when the reading was taken after the call started.
    let age_ms = started_ms.wrapping_sub(at_ms) as i32;
    let too_old_us = u64::from((age_ms.max(0) as u32).saturating_sub(allowance_ms)) * 1000;
    Duration::from_micros(queued_us.saturating_sub(too_old_us))
}

/// The second number of a `schedstat` file: run-queue wait in ns.
#[cfg_attr(not(target_os = "linux"), allow(dead_code))]
fn parse_wait(text: &[u8]) -> Option<u64> {
    let text = std::str::from_utf8(text).ok()?;
    text.split_ascii_whitespace().nth(1)?.parse().ok()
}

/// What a wake-up of the watchdog found, for [`refresh`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Wake {
    /// No call in flight and none started since the last wake-up: the
    /// readings are kept fresh (a parked watchdog wakes once a second), so
    /// that none grows old enough for its packed clocks to wrap, and the
    /// first reading after a resumption is forgotten.
    Idle,
    /// Calls again after an idle wake-up (a call woke the parked
    /// watchdog): the reading is also kept as the first after, for calls
    /// that started while the watchdog slept.
    Resumed,
    /// Calls being made, as at the last wake-up.
    Active,
}

pub use imp::{mark, queued_since, refresh, register_thread};

#[cfg(target_os = "linux")]
mod imp {
    use std::cell::OnceCell;
    use std::fs::File;
    use std::os::unix::fs::FileExt;
    use std::sync::atomic::AtomicU64;
    use std::sync::atomic::Ordering::Relaxed;
    use std::sync::{Arc, Mutex, OnceLock, Weak};
    use std::time::{Duration, Instant};

    use super::{Mark, Wake, credit, pack, parse_wait};

    /// One registered thread.
    struct Record {
        /// Its `schedstat`, open.
        file: File,
        /// The last reading, packed.
        last: AtomicU64,
        /// The first reading after the watchdog was parked.
        resumed: AtomicU64,
    }

    impl Record {
        /// Reads the file now (a `pread`: a few µs), packed.
        fn read(&self) -> Option<u64> {
            let mut buf = [0u8; 96];
            let n = self.file.read_at(&mut buf, 0).ok()?;
            let wait_ns = parse_wait(&buf[..n])?;
            let at_ms = Instant::now()
                .saturating_duration_since(origin())
                .as_millis();
            Some(pack(at_ms as u32, (wait_ns / 1000) as u32))
        }
    }

    thread_local! {
        static CURRENT: OnceCell<Arc<Record>> = const { OnceCell::new() };
    }

    static THREADS: Mutex<Vec<Weak<Record>>> = Mutex::new(Vec::new());

    /// What readings' times count from.
    pub(super) fn origin() -> Instant {
        static ORIGIN: OnceLock<Instant> = OnceLock::new();
        *ORIGIN.get_or_init(Instant::now)
    }

    fn ms(at: Instant) -> u32 {
        at.saturating_duration_since(origin()).as_millis() as u32
    }

    /// Registers the calling thread as one that runs filter calls: their
    /// deadlines then do not count its run-queue wait. Once per thread;
    /// again is a no-op. Fails when its `schedstat` cannot be read; the
    /// thread's calls are then timed without it.
    pub fn register_thread() -> std::io::Result<()> {
        if CURRENT.with(|c| c.get().is_some()) {
            return Ok(());
        }
        let file = File::open("/proc/thread-self/schedstat")?;
        let record = Record {
            file,
            last: AtomicU64::new(super::NONE),
            resumed: AtomicU64::new(super::NONE),
        };
        let first = record.read().ok_or_else(|| {
            std::io::Error::new(
                std::io::ErrorKind::InvalidData,
                "/proc/thread-self/schedstat has no run-queue wait",
            )
        })?;
        record.last.store(first, Relaxed);
        record.resumed.store(first, Relaxed);
        let record = Arc::new(record);
        THREADS.lock().unwrap().push(Arc::downgrade(&record));
        CURRENT.with(|c| {
            let _ = c.set(record);
        });
        Ok(())
    }

    /// The calling thread's last reading, for a call starting now: a
    /// thread-local access and an atomic load.
    #[inline]
    pub fn mark() -> Mark {
        CURRENT.with(|c| c.get().map_or(Mark::NONE, |r| Mark(r.last.load(Relaxed))))
    }

    /// Re-reads every registered thread's wait: the watchdog, at each
    /// wake-up (see [`Wake`]).
    pub fn refresh(wake: Wake) {
        THREADS.lock().unwrap().retain(|weak| {
            let Some(record) = weak.upgrade() else {
                return false;
            };
            if let Some(reading) = record.read() {
                record.last.store(reading, Relaxed);
                match wake {
                    Wake::Resumed => record.resumed.store(reading, Relaxed),
                    Wake::Idle => record.resumed.store(super::NONE, Relaxed),
                    Wake::Active => {}
                }
            }
            true
        });
    }

    /// The run-queue wait of the calling thread since a call that started
    /// at `started` with `mark`, reading its `schedstat` now (only for calls
    /// overdue by wall clock); `allowance` is how old a mark is trusted to
    /// be (see the module's docs). `None` when the thread is not registered
    /// or its file cannot be read.
    pub fn queued_since(mark: Mark, started: Instant, allowance: Duration) -> Option<Duration> {
        if mark == Mark::NONE {
            return None;
        }
        CURRENT.with(|c| {
            let record = c.get()?;
            let now = record.read()?;
            record.last.store(now, Relaxed);
            let started_ms = ms(started);
            let allowance_ms = allowance.as_millis().min(u32::MAX.into()) as u32;
            let from_mark = credit(mark.0, now, started_ms, allowance_ms);
            let resumed = record.resumed.load(Relaxed);
            let from_resumed = credit(resumed, now, started_ms, allowance_ms);
            Some(from_mark.max(from_resumed))
        })
    }
}

#[cfg(not(target_os = "linux"))]
mod imp {
    use std::time::{Duration, Instant};

    use super::{Mark, Wake};

    /// Elsewhere than Linux there is no per-thread run-queue wait to read:
    /// calls are timed without it.
    pub fn register_thread() -> std::io::Result<()> {
        Err(std::io::Error::new(
            std::io::ErrorKind::Unsupported,
            "run-queue wait is read on Linux only",
        ))
    }

    /// No reading.
    #[inline]
    pub fn mark() -> Mark {
        Mark::NONE
    }

    /// Nothing to read.
    pub fn refresh(_: Wake) {}

    /// No credit.
    pub fn queued_since(_: Mark, _: Instant, _: Duration) -> Option<Duration> {
        None
    }
}

#[cfg(test)]
mod tests {
    use std::time::Instant;

    use super::*;

    #[test]
    fn schedstat_parses_the_run_queue_wait() {
        assert_eq!(parse_wait(b"840175 3227744 2\n"), Some(3_227_744));
        assert_eq!(parse_wait(b"840175\n"), None);
        assert_eq!(parse_wait(b"x y z"), None);
    }

    #[test]
    fn credit_trusts_a_mark_for_its_allowance_only() {
        // Read 5 ms before the call, 40 ms of wait since: all of it.
        let r = pack(1_000, 7_000);
        let now = pack(9_500, 47_000);
        assert_eq!(credit(r, now, 1_005, 10), Duration::from_millis(40));
        // Read 30 ms before with a 10 ms allowance: 20 ms less.
        assert_eq!(credit(r, now, 1_030, 10), Duration::from_millis(20));
        // Much older: nothing, never negative.
        assert_eq!(credit(r, now, 9_000, 10), Duration::ZERO);
        // Read after the call started: all the wait since.
        assert_eq!(credit(r, now, 990, 10), Duration::from_millis(40));
        assert_eq!(credit(NONE, now, 990, 10), Duration::ZERO);
        // From after `now`: wrapped around, not a reading of this call.
        assert_eq!(credit(r, pack(999, 47_000), 990, 10), Duration::ZERO);
    }

    #[test]
    fn credit_wraps_both_clocks() {
        let r = pack(u32::MAX - 2, u32::MAX - 999);
        // 4 ms and 3 ms later, across both wraps: 3 ms of wait, 1 ms old.
        assert_eq!(credit(r, pack(2, 2_000), 1, 10), Duration::from_millis(3));
    }

    /// A registered thread that shares its CPU with a busy thread is
    /// credited the time it waited for it.
    #[cfg(target_os = "linux")]
    #[test]
    fn a_registered_thread_is_credited_its_run_queue_wait() {
        use std::sync::atomic::{AtomicBool, Ordering};

        fn pin_to(cpu: usize) {
            // SAFETY: a zeroed cpu_set_t is a valid empty set; 0 is the
            // calling thread.
            unsafe {
                let mut set: libc::cpu_set_t = std::mem::zeroed();
                libc::CPU_SET(cpu, &mut set);
                assert_eq!(
                    libc::sched_setaffinity(0, std::mem::size_of_val(&set), &set),
                    0
                );
            }
        }
        // SAFETY: no arguments; returns the CPU this thread runs on.
        let cpu = unsafe { libc::sched_getcpu() }.max(0) as usize;
        let measured = std::thread::spawn(move || {
            pin_to(cpu);
            register_thread().expect("schedstat");
            refresh(Wake::Active);
            let started = Instant::now();
            let mark = mark();
            assert_ne!(mark, Mark::NONE);
            let stop = AtomicBool::new(false);
            std::thread::scope(|s| {
                s.spawn(|| {
                    pin_to(cpu);
                    // Bounded: stops when told, or after 2 s.
                    let begun = Instant::now();
                    while !stop.load(Ordering::Relaxed) && begun.elapsed() < Duration::from_secs(2)
                    {
                        std::hint::spin_loop();
                    }
                });
                // Both spin on one CPU for 200 ms of wall time.
                while started.elapsed() < Duration::from_millis(200) {
                    std::hint::spin_loop();
                }
                let queued = queued_since(mark, started, Duration::from_millis(10)).unwrap();
                stop.store(true, Ordering::Relaxed);
                queued
            })
        });
        let queued = measured.join().unwrap();
        assert!(
            queued >= Duration::from_millis(40) && queued <= Duration::from_millis(220),
            "credited {queued:?} of 200 ms shared with a busy thread"
        );
    }
}
