//! The watchdog behind call deadlines.
//!
//! wasmtime interrupts a guest when the engine's epoch passes its store's
//! epoch deadline. Every store here has a deadline of one epoch, so each
//! advance makes the running guests check their own clocks (the store's
//! epoch callback), and the epoch only advances when a call is overdue.
//!
//! Each instance has a [`CallSlot`] saying when its running call's deadline
//! passes. The watchdog thread sleeps until the earliest such moment, or for
//! one deadline's length (at most `MAX_PERIOD`) when no call is in flight,
//! so under load it wakes about once per deadline (100 times a second at the
//! default 10 ms) instead of on a fixed 1 ms tick. A call whose deadline comes before the
//! watchdog's next wake-up wakes it; when no call has started for a while
//! the watchdog sleeps until the next call does.
//!
//! A deadline counts the call's own time, so time the whole process stood
//! still does not count: the proxy stopped (`SIGSTOP`), its machine paused,
//! or its container throttled by a CPU quota. The watchdog sees such a
//! stall as a wake-up that comes late, by more than `STALL_MIN`; it adds
//! the lateness to [`CallSlot::stalled`] before it looks at the slots, and
//! a call's clock subtracts the stalls seen since it started. While calls
//! are being made the watchdog sleeps at most `MAX_PERIOD`, so it misses
//! at most that much of a stall; once parked, the next call wakes it.
//!
//! Nor does time the call's thread was ready to run but waited for a CPU
//! that other processes held (run-queue wait, on a busy machine): on Linux
//! the worker threads register ([`runqueue`]), the watchdog re-reads their
//! run-queue wait at each wake-up (once a second when parked), a call keeps
//! its thread's last reading when it starts (an atomic load), and a call
//! found overdue by wall clock reads its thread's wait again and does not
//! count the difference. Stalls of the whole process can show as run-queue
//! wait too (a CPU quota's throttling does), so the larger of the two is
//! subtracted. The reading a call starts from may be up to one period old:
//! the call may be credited up to that much wait from just before it
//! started, leniency of at most one period. Threads that do not register
//! (the snapshot builder, the proxy-wasm tick thread) and systems without
//! `/proc/<pid>/task/<tid>/schedstat` count run-queue wait as before.

use std::sync::atomic::AtomicU64;
use std::sync::atomic::Ordering::{Relaxed, Release, SeqCst};
use std::sync::{Arc, Mutex, OnceLock, Weak};
use std::thread::Thread;
use std::time::{Duration, Instant};

use wasmtime::Engine;

pub mod runqueue;

/// How soon an overdue call is looked at again after the epoch advanced.
const RECHECK: Duration = Duration::from_millis(1);
/// The shortest and longest sleep while calls are being made.
const MIN_PERIOD: Duration = Duration::from_millis(1);
const MAX_PERIOD: Duration = Duration::from_millis(50);
/// A wake-up later than this past the time asked for is a stall of the
/// process, not scheduling delay: it does not count against deadlines.
const STALL_MIN: Duration = Duration::from_millis(10);
/// Wake-ups without a new call before the watchdog sleeps until one comes.
const IDLE_WAKES_BEFORE_PARK: u32 = 10;
/// How long a parked watchdog sleeps before checking the engine still exists.
const PARKED: Duration = Duration::from_secs(1);
/// `CallSlot::due` of a slot with no call running guest code.
const NOT_RUNNING: u64 = u64::MAX;

struct Shared {
    origin: Instant,
    /// When the thread wakes next (ns since `origin`), at the latest.
    next_wake: AtomicU64,
    slots: Mutex<Vec<Weak<CallSlot>>>,
    thread: OnceLock<Thread>,
    /// The stalls seen so far, in ns (see the module's docs).
    stalled: AtomicU64,
}

impl Shared {
    fn nanos(&self, at: Instant) -> u64 {
        at.saturating_duration_since(self.origin).as_nanos() as u64
    }
}

/// The deadline of one instance's running call, watched by the
/// [`DeadlineWatchdog`] that made it.
pub struct CallSlot {
    shared: Arc<Shared>,
    /// When the running call's deadline passes (ns since the origin), or
    /// `NOT_RUNNING`.
    due: AtomicU64,
    /// The length of the last deadline armed, in ns.
    span: AtomicU64,
    /// How many times the slot was armed: tells the watchdog calls are made.
    arms: AtomicU64,
}

impl CallSlot {
    /// Marks a call that has until `started + deadline` of guest time.
    pub fn arm(&self, started: Instant, deadline: Duration) {
        let span = deadline.as_nanos() as u64;
        self.span.store(span, Relaxed);
        // One thread uses an instance at a time: no lost update.
        self.arms
            .store(self.arms.load(Relaxed).wrapping_add(1), Relaxed);
        self.set_due(self.shared.nanos(started) + span);
    }

    /// Moves the running call's deadline to `due` (after a wait that does
    /// not count, or when the call checked its clock and has time left).
    pub fn rearm(&self, due: Instant) {
        self.set_due(self.shared.nanos(due));
    }

    /// How long the process has stood still since the watchdog started, as
    /// far as it could tell: the difference between two readings is time
    /// a call did not run.
    pub fn stalled(&self) -> Duration {
        Duration::from_nanos(self.shared.stalled.load(SeqCst))
    }

    /// Marks that no guest code runs: the call returned, or waits on the host.
    pub fn disarm(&self) {
        self.due.store(NOT_RUNNING, Release);
    }

    fn set_due(&self, due: u64) {
        // Paired with the watchdog, which publishes `next_wake` before it
        // reads the slots: either it sees this deadline, or this sees when it
        // wakes and wakes it sooner.
        self.due.store(due, SeqCst);
        if due < self.shared.next_wake.load(SeqCst)
            && let Some(thread) = self.shared.thread.get()
        {
            thread.unpark();
        }
    }
}

/// How long the watchdog sleeps while calls with `deadline` are being
/// made, at most: its period, and so the age of a run-queue reading.
pub fn period(deadline: Duration) -> Duration {
    deadline.clamp(MIN_PERIOD, MAX_PERIOD)
}

/// The thread that advances the engine's epoch when a call is overdue.
pub struct DeadlineWatchdog {
    shared: Arc<Shared>,
}

impl DeadlineWatchdog {
    /// Starts the thread; it ends when `engine` is dropped.
    pub fn start(engine: &Engine) -> std::io::Result<Arc<Self>> {
        let shared = Arc::new(Shared {
            origin: Instant::now(),
            next_wake: AtomicU64::new(0),
            slots: Mutex::new(Vec::new()),
            thread: OnceLock::new(),
            stalled: AtomicU64::new(0),
        });
        let weak = engine.weak();
        let watched = shared.clone();
        let handle = std::thread::Builder::new()
            .name("weft-deadline".into())
            .spawn(move || watch(&watched, &weak))?;
        let _ = shared.thread.set(handle.thread().clone());
        Ok(Arc::new(Self { shared }))
    }

    /// A new slot for one instance, watched until it is dropped.
    pub fn slot(&self) -> Arc<CallSlot> {
        let slot = Arc::new(CallSlot {
            shared: self.shared.clone(),
            due: AtomicU64::new(NOT_RUNNING),
            span: AtomicU64::new(MAX_PERIOD.as_nanos() as u64),
            arms: AtomicU64::new(0),
        });
        self.shared
            .slots
            .lock()
            .unwrap()
            .push(Arc::downgrade(&slot));
        slot
    }
}

/// What one look at the slots found.
struct Scan {
    overdue: bool,
    /// The earliest deadline still to come, in ns.
    earliest: u64,
    /// The shortest deadline armed, in ns.
    shortest_span: u64,
    arms: u64,
}

fn scan(shared: &Shared, now: u64) -> Scan {
    let mut found = Scan {
        overdue: false,
        earliest: u64::MAX,
        shortest_span: u64::MAX,
        arms: 0,
    };
    shared.slots.lock().unwrap().retain(|slot| {
        let Some(slot) = slot.upgrade() else {
            return false;
        };
        let due = slot.due.load(SeqCst);
        if due != NOT_RUNNING {
            if due <= now {
                found.overdue = true;
            } else {
                found.earliest = found.earliest.min(due);
            }
        }
        found.shortest_span = found.shortest_span.min(slot.span.load(Relaxed));
        found.arms = found.arms.wrapping_add(slot.arms.load(Relaxed));
        true
    });
    found
}

fn watch(shared: &Shared, engine: &wasmtime::EngineWeak) {
    let mut period = MAX_PERIOD;
    let mut idle_wakes = 0;
    let mut last_arms = 0;
    // When the last sleep was to end (ns since the origin).
    let mut asked: Option<u64> = None;
    // Whether the last wake-up found calls being made.
    let mut was_active = false;
    loop {
        let now = shared.nanos(Instant::now());
        // Counted before the slots are looked at, so that a call the stall
        // made overdue finds it when the epoch makes it check its clock.
        if let Some(asked) = asked
            && now.saturating_sub(asked) > STALL_MIN.as_nanos() as u64
        {
            shared.stalled.fetch_add(now - asked, SeqCst);
        }
        let parked = idle_wakes >= IDLE_WAKES_BEFORE_PARK;
        let horizon = now + if parked { PARKED } else { period }.as_nanos() as u64;
        // Parked, it is woken by the next call, however long its deadline:
        // a stall during that call must find the watchdog on its short sleep.
        shared
            .next_wake
            .store(if parked { u64::MAX } else { horizon }, SeqCst);
        let found = scan(shared, now);
        let mut wake = horizon.min(found.earliest);
        if found.overdue {
            let Some(engine) = engine.upgrade() else {
                return;
            };
            engine.increment_epoch();
            wake = wake.min(now + RECHECK.as_nanos() as u64);
        }
        period = Duration::from_nanos(found.shortest_span).clamp(MIN_PERIOD, MAX_PERIOD);
        idle_wakes = if found.arms == last_arms && found.earliest == u64::MAX && !found.overdue {
            idle_wakes.saturating_add(1)
        } else {
            0
        };
        last_arms = found.arms;
        // Readings for calls that become overdue (see `runqueue`).
        let active = idle_wakes == 0;
        runqueue::refresh(match (active, was_active) {
            (false, _) => runqueue::Wake::Idle,
            (true, false) => runqueue::Wake::Resumed,
            (true, true) => runqueue::Wake::Active,
        });
        was_active = active;
        if parked && engine.upgrade().is_none() {
            return;
        }
        asked = Some(wake.max(now));
        std::thread::park_timeout(Duration::from_nanos(wake.saturating_sub(now)));
    }
}
