//! Filter instances and their pools. An instance is a store plus an
//! instantiated component that has run `init`; a request borrows one from
//! its chain entry's pool and gives it back, so requests never pay for
//! instantiation. An instance that failed is dropped, never returned.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use wasmtime::{Engine, Store, Trap};

use super::backtrace::Backtrace;
use super::bindings::HttpFilter;
use super::bindings::weft::filter::types::{Action, Phases};
use super::deadline::{DeadlineWatchdog, runqueue};
use super::exchange::{Exchange, Phase};
use super::host::{CallClock, FilterIdentity, HostState, MemoryCap};
use super::module::CompiledModule;
use crate::telemetry::Registry;

/// Deadline of `init` (it may parse a large config).
const INIT_DEADLINE_MS: u64 = 1_000;

/// Why a filter call failed.
#[derive(Debug, Clone, thiserror::Error)]
pub enum FilterFailure {
    /// The call ran past its deadline.
    #[error("deadline of {0} ms exceeded")]
    Deadline(u64),
    /// The instance tried to grow its memory past the cap.
    #[error("memory cap of {0} MiB exceeded")]
    Memory(u64),
    /// The guest trapped (panic, unreachable, invalid host call, …), or
    /// asked for what the proxy refuses. `backtrace`: the guest's frames,
    /// when it trapped in Wasm code.
    #[error("trapped: {message}")]
    Trap {
        /// What happened.
        message: String,
        /// Where, innermost frame first (bounded; see [`Backtrace`]).
        backtrace: Option<Box<Backtrace>>,
    },
    /// No instance could be created.
    #[error("cannot instantiate: {0}")]
    Instantiate(String),
    /// Every instance the limits allow is in use: the request is refused
    /// (503), whatever the filter's `on_error` says. Not a filter failure.
    #[error("{0}")]
    Overloaded(String),
}

/// The limits every call of one chain entry runs under.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    /// Deadline of one phase call.
    pub deadline_ms: u64,
    /// Memory cap of one instance, in bytes.
    pub memory_bytes: usize,
    /// Most instances of the pool alive at once (held and idle).
    pub max_instances: usize,
    /// An idle instance unused this long is dropped (the pool keeps one).
    pub idle_timeout: Duration,
    /// Longest total wait on callouts in one phase call.
    pub callout_phase_budget: Duration,
    /// Longest total wait on callouts of one request (this chain entry).
    pub callout_request_budget: Duration,
}

/// Live instances: the whole engine's and one pool's. Every instance holds
/// a [`Lease`] on its pool's counter.
pub struct InstanceCounts {
    /// Instances alive in every pool of the process.
    pub engine: Arc<AtomicUsize>,
    /// Most instances alive at once for serving requests: the engine's
    /// limit minus what reloads need to build (see `runtime`).
    pub serving_cap: usize,
}

/// What a pool's instances share: its limits and its count of them.
struct PoolShared {
    limits: Limits,
    /// Instances of the pool alive (held by requests or idle).
    live: AtomicUsize,
    /// Instances alive in the whole engine.
    engine_live: Arc<AtomicUsize>,
}

/// One live instance, counted in its pool and in the engine until dropped.
/// One pointer: instances move on every acquire and release.
struct Lease(Arc<PoolShared>);

impl Lease {
    fn limits(&self) -> &Limits {
        &self.0.limits
    }
}

impl Drop for Lease {
    fn drop(&mut self) {
        self.0.live.fetch_sub(1, Ordering::Relaxed);
        self.0.engine_live.fetch_sub(1, Ordering::Relaxed);
    }
}

/// A ready instance: `init` has run with its pool's config.
///
/// It moves on every call (out of its pool, into a chain run's slot, back),
/// so what it holds by value is kept to a few words: the export handles
/// (168 bytes) are boxed, and the store already is.
pub struct FilterInstance {
    store: Store<HostState>,
    bindings: Box<HttpFilter>,
    /// Dropped last: the instance counts until its store is gone.
    lease: Lease,
}

impl FilterInstance {
    /// Runs `call` with `exchange` visible to the guest.
    fn call<R>(
        &mut self,
        exchange: &mut Box<Exchange>,
        phase: Phase,
        callout_request_left: Duration,
        call: impl FnOnce(&HttpFilter, &mut Store<HostState>) -> wasmtime::Result<R>,
    ) -> Result<R, FilterFailure> {
        exchange.phase = phase;
        let data = self.store.data_mut();
        let started = Instant::now();
        data.clock.started = started;
        data.clock.waited = Duration::ZERO;
        data.clock.callout_budget = self
            .lease
            .limits()
            .callout_phase_budget
            .min(callout_request_left);
        data.clock.stalled_before = data.clock.slot.stalled();
        data.clock.queued_before = runqueue::mark();
        data.clock.slot.arm(started, data.clock.deadline);
        std::mem::swap(&mut data.exchange, exchange);
        // Any advance of the epoch makes the guest check its clock
        // (`epoch_deadline_callback`); the watchdog advances it only when
        // some call is overdue.
        self.store.set_epoch_deadline(1);
        let result = call(&self.bindings, &mut self.store);
        let data = self.store.data_mut();
        data.clock.slot.disarm();
        std::mem::swap(&mut data.exchange, exchange);
        result.map_err(|e| self.failure(e))
    }

    fn failure(&self, error: wasmtime::Error) -> FilterFailure {
        let data = self.store.data();
        classify(
            error,
            data.memory.hit,
            self.lease.limits(),
            data.panic.as_deref(),
        )
    }

    /// Calls the phase, returning what the filter asks for. `callouts_waited`
    /// is the request's wait on this entry's callouts so far; the call's wait
    /// is added to it.
    pub fn run(
        &mut self,
        exchange: &mut Box<Exchange>,
        phase: Phase,
        callouts_waited: &mut Duration,
    ) -> Result<Action, FilterFailure> {
        let request_left = self
            .lease
            .limits()
            .callout_request_budget
            .saturating_sub(*callouts_waited);
        let result = self.call(exchange, phase, request_left, |b, store| {
            let f = b.weft_filter_filter();
            match phase {
                Phase::RequestHeaders => f.call_on_request_headers(store),
                Phase::RequestBody => f.call_on_request_body(store),
                Phase::ResponseHeaders => f.call_on_response_headers(store),
                Phase::ResponseBody => f.call_on_response_body(store),
                Phase::Done => f.call_on_done(store).map(|()| Action::Continue),
            }
        });
        *callouts_waited += self.store.data().clock.waited;
        result
    }

    /// When the instance's last call started.
    pub(crate) fn last_used(&self) -> Instant {
        self.store.data().clock.started
    }
}

/// What a failed call of a filter (either kind) amounts to: the memory
/// cap hit, the deadline passed, or a trap, with the panic message the
/// guest logged before it, if any.
pub(crate) fn classify(
    error: wasmtime::Error,
    memory_hit: bool,
    limits: &Limits,
    panic: Option<&str>,
) -> FilterFailure {
    if memory_hit {
        return FilterFailure::Memory((limits.memory_bytes >> 20) as u64);
    }
    if let Some(Trap::Interrupt) = error.downcast_ref::<Trap>() {
        return FilterFailure::Deadline(limits.deadline_ms);
    }
    let backtrace = Backtrace::of(&error).map(Box::new);
    let mut message = trap_message(&error);
    // A panic traps on `unreachable` once the guest's hook has logged it:
    // the logged message says more.
    if let Some(panic) = panic {
        message = format!("{panic} ({message})");
    }
    // Imports outside the contract (WASI) are linked as traps: say so,
    // rather than leave "unknown import" to be puzzled over. A std guest
    // reaches them when it writes to stderr, e.g. on allocation failure.
    if let Some(import) = message
        .split("unknown import: ")
        .nth(1)
        .and_then(|rest| rest.split_whitespace().next())
    {
        return FilterFailure::Trap {
            message: format!(
                "called {import}, which filters are not given (only weft:filter imports are; a std guest calls it to write to stderr, e.g. when an allocation fails)"
            ),
            backtrace,
        };
    }
    FilterFailure::Trap { message, backtrace }
}

/// The error's messages, outermost first, without the backtrace wasmtime
/// attaches as one of them (that one is reported apart, bounded).
fn trap_message(error: &wasmtime::Error) -> String {
    let mut message = String::new();
    for cause in error.chain() {
        let text = cause.to_string();
        // The context layer holding the backtrace (wasmtime's Display).
        if text.starts_with("error while executing at wasm backtrace") {
            continue;
        }
        if !message.is_empty() {
            message.push_str(": ");
        }
        message.push_str(&text);
    }
    message
}

impl FilterFailure {
    /// A trap with no backtrace: what the proxy refuses of a filter.
    pub fn trap(message: String) -> Self {
        FilterFailure::Trap {
            message,
            backtrace: None,
        }
    }

    /// The guest's frames, when it trapped in Wasm code.
    pub fn backtrace(&self) -> Option<&Backtrace> {
        match self {
            FilterFailure::Trap { backtrace, .. } => backtrace.as_deref(),
            _ => None,
        }
    }
}

/// Instances of one chain entry (one module with one config).
pub struct InstancePool {
    engine: Engine,
    watchdog: Arc<DeadlineWatchdog>,
    module: Arc<CompiledModule>,
    identity: Arc<FilterIdentity>,
    config_json: String,
    /// The phases the filter implements, as it reported after `init`.
    pub phases: Phases,
    /// Idle instances, the most recently used last.
    idle: Mutex<Vec<FilterInstance>>,
    /// The limits and the count of live instances.
    shared: Arc<PoolShared>,
    serving_cap: usize,
}

impl InstancePool {
    /// Creates the pool and its first instance: an `init` error or a trap
    /// rejects the config here, before any request.
    pub fn new(
        engine: &Engine,
        watchdog: Arc<DeadlineWatchdog>,
        module: Arc<CompiledModule>,
        identity: Arc<FilterIdentity>,
        config_json: String,
        limits: Limits,
        counts: &InstanceCounts,
    ) -> Result<Self, String> {
        let mut pool = Self {
            engine: engine.clone(),
            watchdog,
            module,
            identity,
            config_json,
            phases: Phases::empty(),
            idle: Mutex::new(Vec::new()),
            shared: Arc::new(PoolShared {
                limits,
                live: AtomicUsize::new(0),
                engine_live: counts.engine.clone(),
            }),
            serving_cap: counts.serving_cap,
        };
        // The first instance may use the engine's reserve for builds.
        let (first, phases) = pool.instantiate(pool.lease())?;
        pool.phases = phases;
        pool.idle.get_mut().unwrap().push(first);
        Ok(pool)
    }

    /// Counts one more instance, whatever the limits.
    fn lease(&self) -> Lease {
        self.shared.live.fetch_add(1, Ordering::Relaxed);
        self.shared.engine_live.fetch_add(1, Ordering::Relaxed);
        Lease(self.shared.clone())
    }

    /// Counts one more instance if the pool's and the engine's serving
    /// limits allow it.
    fn try_lease(&self) -> Result<Lease, FilterFailure> {
        let lease = self.lease();
        let pool = self.shared.live.load(Ordering::Relaxed);
        let engine = self.shared.engine_live.load(Ordering::Relaxed);
        if pool > self.shared.limits.max_instances {
            return Err(FilterFailure::Overloaded(format!(
                "all {} instances of filter {:?} are in use (filters.{}.max_instances)",
                self.shared.limits.max_instances, &*self.identity.name, &*self.identity.name
            )));
        }
        if engine > self.serving_cap {
            return Err(FilterFailure::Overloaded(format!(
                "the {} filter instances the proxy serves with are all in use",
                self.serving_cap
            )));
        }
        Ok(lease)
    }

    fn instantiate(&self, lease: Lease) -> Result<(FilterInstance, Phases), String> {
        let _ = self.identity.metrics.counter_add(
            "weft_filter_instances_created_total",
            vec![("filter".into(), self.identity.name.to_string())],
            1,
        );
        let slot = self.watchdog.slot();
        let state = HostState {
            memory: MemoryCap {
                bytes: self.shared.limits.memory_bytes,
                hit: false,
            },
            identity: self.identity.clone(),
            exchange: Box::default(),
            clock: CallClock {
                deadline: Duration::from_millis(INIT_DEADLINE_MS),
                started: Instant::now(),
                waited: Duration::ZERO,
                callout_budget: self.shared.limits.callout_phase_budget,
                stalled_before: slot.stalled(),
                queued_before: runqueue::mark(),
                slot,
            },
            property_sets: Vec::new(),
            panic: None,
        };
        let mut store = Store::new(&self.engine, state);
        store.limiter(|s| &mut s.memory);
        // When the epoch advances, check the call's own time (waits on
        // callouts do not count): stop it, or tell the watchdog when its
        // deadline now passes.
        store.epoch_deadline_callback(|ctx| Ok(ctx.data().clock.on_epoch()));
        // The component's start functions run under `init`'s deadline.
        let clock = &store.data().clock;
        clock.slot.arm(clock.started, clock.deadline);
        store.set_epoch_deadline(1);
        let pre = self
            .module
            .component()
            .ok_or("not a component of the weft:filter world")?;
        let instantiated = pre.instantiate(&mut store);
        store.data().clock.slot.disarm();
        let bindings = instantiated.map_err(|e| format!("cannot instantiate: {e:#}"))?;
        let mut instance = FilterInstance {
            store,
            bindings: Box::new(bindings),
            lease,
        };
        let config = self.config_json.as_str();
        let mut scratch = Box::default();
        let init = instance
            .call(
                &mut scratch,
                Phase::RequestHeaders,
                Duration::MAX,
                |b, store| b.weft_filter_filter().call_init(store, config),
            )
            .map_err(|e| match e.backtrace() {
                Some(backtrace) => format!("init {e}; backtrace: {backtrace}"),
                None => format!("init {e}"),
            })?;
        init.map_err(|e| format!("init rejected the config: {e}"))?;
        let phases = instance
            .call(
                &mut scratch,
                Phase::RequestHeaders,
                Duration::MAX,
                |b, store| b.weft_filter_filter().call_phases(store),
            )
            .map_err(|e| format!("phases {e}"))?;
        instance.store.data_mut().clock.deadline =
            Duration::from_millis(self.shared.limits.deadline_ms);
        Ok((instance, phases))
    }

    /// An idle instance, or a new one if the limits allow it
    /// ([`FilterFailure::Overloaded`] otherwise).
    pub fn acquire(&self) -> Result<FilterInstance, FilterFailure> {
        if let Some(instance) = self.idle.lock().unwrap().pop() {
            return Ok(instance);
        }
        let lease = self.try_lease()?;
        self.instantiate(lease)
            .map(|(instance, _)| instance)
            .map_err(FilterFailure::Instantiate)
    }

    /// Gives back a healthy instance, and drops the oldest idle one if it
    /// went unused for longer than the idle timeout (the pool keeps one).
    /// The given-back instance's last call start stands for "now": no clock
    /// is read here.
    pub fn release(&self, instance: FilterInstance) {
        let now = instance.last_used();
        let mut idle = self.idle.lock().unwrap();
        let stale = idle.first().is_some_and(|oldest| {
            now.saturating_duration_since(oldest.last_used()) > self.shared.limits.idle_timeout
        });
        // Rare, and the pool is small: shifting the others down is cheap.
        let trimmed = stale.then(|| idle.remove(0));
        idle.push(instance);
        drop(idle);
        // Dropped outside the lock.
        drop(trimmed);
    }

    /// The module's hash.
    pub fn sha256(&self) -> &str {
        &self.module.sha256
    }

    /// Instances of this pool alive now (held by requests or idle).
    pub fn live(&self) -> usize {
        self.shared.live.load(Ordering::Relaxed)
    }

    /// The registry the pool's filter reports to.
    pub fn metrics(&self) -> &Arc<Registry> {
        &self.identity.metrics
    }
}
