//! Ticks: `proxy_on_tick` of each VM whose plugin set a tick period, called
//! on one thread of the process for all of them (a tick waits for the VM
//! while a worker is calling it). A VM dropped with its snapshot stops
//! ticking; a period of 0 stops it too.

use std::sync::{Arc, Condvar, Mutex, OnceLock, Weak};
use std::time::{Duration, Instant};

use super::vm::Vm;

/// The shortest tick period honoured.
const MIN_PERIOD: Duration = Duration::from_millis(10);

struct Ticking {
    vm: Weak<Mutex<Vm>>,
    period: Duration,
    next: Instant,
}

#[derive(Default)]
struct Ticks {
    ticking: Mutex<Vec<Ticking>>,
    changed: Condvar,
}

fn ticks() -> &'static Ticks {
    static TICKS: OnceLock<&'static Ticks> = OnceLock::new();
    TICKS.get_or_init(|| {
        let ticks: &'static Ticks = Box::leak(Box::default());
        std::thread::Builder::new()
            .name("weft-proxy-wasm-ticks".into())
            .spawn(move || run(ticks))
            .expect("cannot start the proxy-wasm tick thread");
        ticks
    })
}

/// Ticks `vm` every `period` from now on (`0`: no more).
pub fn schedule(vm: &Arc<Mutex<Vm>>, period: Duration) {
    let ticks = ticks();
    let mut ticking = ticks.ticking.lock().unwrap();
    ticking.retain(|t| !std::ptr::eq(t.vm.as_ptr(), Arc::as_ptr(vm)) && t.vm.strong_count() > 0);
    if !period.is_zero() {
        let period = period.max(MIN_PERIOD);
        ticking.push(Ticking {
            vm: Arc::downgrade(vm),
            period,
            next: Instant::now() + period,
        });
    }
    ticks.changed.notify_one();
}

fn run(ticks: &'static Ticks) {
    let mut ticking = ticks.ticking.lock().unwrap();
    loop {
        let now = Instant::now();
        let next = ticking.iter().map(|t| t.next).min();
        match next {
            None => ticking = ticks.changed.wait(ticking).unwrap(),
            Some(next) if next > now => {
                ticking = ticks.changed.wait_timeout(ticking, next - now).unwrap().0;
            }
            Some(_) => {
                let due: Vec<Arc<Mutex<Vm>>> = ticking
                    .iter_mut()
                    .filter(|t| t.next <= now)
                    .filter_map(|t| {
                        t.next = now + t.period;
                        t.vm.upgrade()
                    })
                    .collect();
                ticking.retain(|t| t.vm.strong_count() > 0);
                drop(ticking);
                for vm in due {
                    tick(&vm);
                }
                ticking = ticks.ticking.lock().unwrap();
            }
        }
    }
}

fn tick(vm: &Arc<Mutex<Vm>>) {
    let mut guard = vm.lock().unwrap();
    if guard.broken().is_some() {
        drop(guard);
        schedule(vm, Duration::ZERO);
        return;
    }
    if let Err(failure) = guard.tick() {
        tracing::warn!(
            filter = guard.filter(),
            "filter failed in proxy_on_tick: {failure}"
        );
    }
    let change = guard.take_tick_change();
    drop(guard);
    if let Some(period) = change {
        schedule(vm, period);
    }
}
