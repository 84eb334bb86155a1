//! Filter instances and their pools. An instance is a store plus an
//! instantiated component that has run `init`; a request borrows one from
//! its chain entry's pool and gives it back, so requests never pay for
//! instantiation. An instance that failed is dropped, never returned.

use std::sync::{Arc, Mutex};

use std::time::{Duration, Instant};

use wasmtime::{Engine, Store, Trap, UpdateDeadline};

use super::bindings::HttpFilter;
use super::bindings::weft::filter::types::{Action, Phases};
use super::deadline::DeadlineWatchdog;
use super::exchange::{Exchange, Phase};
use super::host::{CallClock, FilterIdentity, HostState, MemoryCap};
use super::module::CompiledModule;

/// Idle instances kept per pool; more are created under load and dropped
/// when returned to a full pool.
const MAX_IDLE: usize = 256;
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
    /// The guest trapped (panic, unreachable, invalid host call, …).
    #[error("trapped: {0}")]
    Trap(String),
    /// No instance could be created.
    #[error("cannot instantiate: {0}")]
    Instantiate(String),
}

/// The limits every call of one chain entry runs under.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    /// Deadline of one phase call.
    pub deadline_ms: u64,
    /// Memory cap of one instance, in bytes.
    pub memory_bytes: usize,
}

/// A ready instance: `init` has run with its pool's config.
///
/// It moves on every call (out of its pool, into a chain run's slot, back),
/// so what it holds by value is kept to a few words: the export handles
/// (168 bytes) are boxed, and the store already is.
pub struct FilterInstance {
    store: Store<HostState>,
    bindings: Box<HttpFilter>,
    limits: Limits,
}

impl FilterInstance {
    /// Runs `call` with `exchange` visible to the guest.
    fn call<R>(
        &mut self,
        exchange: &mut Box<Exchange>,
        phase: Phase,
        call: impl FnOnce(&HttpFilter, &mut Store<HostState>) -> wasmtime::Result<R>,
    ) -> Result<R, FilterFailure> {
        exchange.phase = phase;
        let data = self.store.data_mut();
        let started = Instant::now();
        data.clock.started = started;
        data.clock.waited = Duration::ZERO;
        data.clock.stalled_before = data.clock.slot.stalled();
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
        if self.store.data().memory.hit {
            return FilterFailure::Memory((self.limits.memory_bytes >> 20) as u64);
        }
        if let Some(Trap::Interrupt) = error.downcast_ref::<Trap>() {
            return FilterFailure::Deadline(self.limits.deadline_ms);
        }
        let message = format!("{error:#}");
        // Imports outside the contract (WASI) are linked as traps: say so,
        // rather than leave "unknown import" to be puzzled over. A std guest
        // reaches them when it writes to stderr, e.g. on allocation failure.
        if let Some(import) = message
            .split("unknown import: ")
            .nth(1)
            .and_then(|rest| rest.split_whitespace().next())
        {
            return FilterFailure::Trap(format!(
                "called {import}, which filters are not given (only weft:filter imports are; a std guest calls it to write to stderr, e.g. when an allocation fails)"
            ));
        }
        FilterFailure::Trap(message)
    }

    /// Calls the phase, returning what the filter asks for.
    pub fn run(
        &mut self,
        exchange: &mut Box<Exchange>,
        phase: Phase,
    ) -> Result<Action, FilterFailure> {
        self.call(exchange, phase, |b, store| {
            let f = b.weft_filter_filter();
            match phase {
                Phase::RequestHeaders => f.call_on_request_headers(store),
                Phase::RequestBody => f.call_on_request_body(store),
                Phase::ResponseHeaders => f.call_on_response_headers(store),
                Phase::ResponseBody => f.call_on_response_body(store),
                Phase::Done => f.call_on_done(store).map(|()| Action::Continue),
            }
        })
    }
}

/// Instances of one chain entry (one module with one config).
pub struct InstancePool {
    engine: Engine,
    watchdog: Arc<DeadlineWatchdog>,
    module: Arc<CompiledModule>,
    identity: Arc<FilterIdentity>,
    config_json: String,
    limits: Limits,
    /// The phases the filter implements, as it reported after `init`.
    pub phases: Phases,
    idle: Mutex<Vec<FilterInstance>>,
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
    ) -> Result<Self, String> {
        let mut pool = Self {
            engine: engine.clone(),
            watchdog,
            module,
            identity,
            config_json,
            limits,
            phases: Phases::empty(),
            idle: Mutex::new(Vec::new()),
        };
        let (first, phases) = pool.instantiate()?;
        pool.phases = phases;
        pool.idle.get_mut().unwrap().push(first);
        Ok(pool)
    }

    fn instantiate(&self) -> Result<(FilterInstance, Phases), String> {
        let _ = self.identity.metrics.counter_add(
            "weft_filter_instances_created_total",
            vec![("filter".into(), self.identity.name.to_string())],
            1,
        );
        let slot = self.watchdog.slot();
        let state = HostState {
            memory: MemoryCap {
                bytes: self.limits.memory_bytes,
                hit: false,
            },
            identity: self.identity.clone(),
            exchange: Box::default(),
            clock: CallClock {
                deadline: Duration::from_millis(INIT_DEADLINE_MS),
                started: Instant::now(),
                waited: Duration::ZERO,
                stalled_before: slot.stalled(),
                slot,
            },
            property_sets: Vec::new(),
        };
        let mut store = Store::new(&self.engine, state);
        store.limiter(|s| &mut s.memory);
        // When the epoch advances, check the call's own time (waits on
        // callouts do not count): stop it, or tell the watchdog when its
        // deadline now passes.
        store.epoch_deadline_callback(|ctx| {
            let clock = &ctx.data().clock;
            Ok(match clock.left() {
                Some(left) => {
                    clock.slot.rearm(Instant::now() + left);
                    UpdateDeadline::Continue(1)
                }
                None => UpdateDeadline::Interrupt,
            })
        });
        // The component's start functions run under `init`'s deadline.
        let clock = &store.data().clock;
        clock.slot.arm(clock.started, clock.deadline);
        store.set_epoch_deadline(1);
        let instantiated = self.module.pre.instantiate(&mut store);
        store.data().clock.slot.disarm();
        let bindings = instantiated.map_err(|e| format!("cannot instantiate: {e:#}"))?;
        let mut instance = FilterInstance {
            store,
            bindings: Box::new(bindings),
            limits: self.limits,
        };
        let config = self.config_json.as_str();
        let mut scratch = Box::default();
        let init = instance
            .call(&mut scratch, Phase::RequestHeaders, |b, store| {
                b.weft_filter_filter().call_init(store, config)
            })
            .map_err(|e| format!("init {e}"))?;
        init.map_err(|e| format!("init rejected the config: {e}"))?;
        let phases = instance
            .call(&mut scratch, Phase::RequestHeaders, |b, store| {
                b.weft_filter_filter().call_phases(store)
            })
            .map_err(|e| format!("phases {e}"))?;
        instance.store.data_mut().clock.deadline = Duration::from_millis(self.limits.deadline_ms);
        Ok((instance, phases))
    }

    /// An idle instance, or a new one.
    pub fn acquire(&self) -> Result<FilterInstance, FilterFailure> {
        if let Some(instance) = self.idle.lock().unwrap().pop() {
            return Ok(instance);
        }
        self.instantiate()
            .map(|(instance, _)| instance)
            .map_err(FilterFailure::Instantiate)
    }

    /// Gives back a healthy instance.
    pub fn release(&self, instance: FilterInstance) {
        let mut idle = self.idle.lock().unwrap();
        if idle.len() < MAX_IDLE {
            idle.push(instance);
        }
    }

    /// The module's hash.
    pub fn sha256(&self) -> &str {
        &self.module.sha256
    }
}
