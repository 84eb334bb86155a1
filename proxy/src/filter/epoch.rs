//! The epoch ticker behind call deadlines. wasmtime checks a store's
//! deadline against the engine's epoch, which this thread advances every
//! [`EPOCH_TICK`]. When no filter call has run for a while the thread parks,
//! so an idle proxy does not wake up a thousand times a second; the next
//! call wakes it.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering::SeqCst};
use std::thread::Thread;
use std::time::Duration;

use wasmtime::Engine;

/// How often the epoch advances: the resolution of call deadlines.
pub const EPOCH_TICK: Duration = Duration::from_millis(1);
/// Ticks without a call in flight before the ticker parks.
const IDLE_TICKS_BEFORE_PARK: u32 = 100;

#[derive(Default)]
struct State {
    calls: AtomicUsize,
    parked: AtomicBool,
}

/// Handle to the ticker thread; calls enter it with [`EpochTicker::enter`].
pub struct EpochTicker {
    state: Arc<State>,
    thread: Thread,
}

/// A call in flight: keeps the ticker running until dropped.
pub struct CallGuard<'a>(&'a EpochTicker);

impl Drop for CallGuard<'_> {
    fn drop(&mut self) {
        self.0.state.calls.fetch_sub(1, SeqCst);
    }
}

impl EpochTicker {
    /// Starts the thread; it ends when `engine` is dropped.
    pub fn start(engine: &Engine) -> std::io::Result<Arc<Self>> {
        let state = Arc::new(State::default());
        let weak = engine.weak();
        let shared = state.clone();
        let handle = std::thread::Builder::new()
            .name("weft-epoch".into())
            .spawn(move || {
                let mut idle = 0;
                while let Some(engine) = weak.upgrade() {
                    engine.increment_epoch();
                    drop(engine);
                    idle = if shared.calls.load(SeqCst) == 0 {
                        idle + 1
                    } else {
                        0
                    };
                    if idle >= IDLE_TICKS_BEFORE_PARK {
                        shared.parked.store(true, SeqCst);
                        // A call that entered before `parked` was set is seen
                        // here; one that enters after it unparks us.
                        if shared.calls.load(SeqCst) == 0 {
                            std::thread::park_timeout(Duration::from_secs(1));
                        }
                        shared.parked.store(false, SeqCst);
                        idle = 0;
                    }
                    std::thread::sleep(EPOCH_TICK);
                }
            })?;
        Ok(Arc::new(Self {
            state,
            thread: handle.thread().clone(),
        }))
    }

    /// Marks a call in flight, waking the ticker if it parked.
    pub fn enter(&self) -> CallGuard<'_> {
        self.state.calls.fetch_add(1, SeqCst);
        if self.state.parked.load(SeqCst) {
            self.thread.unpark();
        }
        CallGuard(self)
    }
}
