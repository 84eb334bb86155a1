//! One proxy-wasm VM: an instance of the module with its root context,
//! started with the plugin's configuration, that serves the stream
//! contexts of many requests in turn. Every callback runs under the
//! filter's deadline and memory cap, as a Weft filter's phase call does;
//! after a trap the VM is broken and never called again.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use wasmtime::{Engine, Instance, InstancePre, Store, TypedFunc};

use super::state::{CallResponse, Guest, PluginShared, VmState};
use crate::filter::deadline::{DeadlineWatchdog, runqueue};
use crate::filter::exchange::Exchange;
use crate::filter::host::{CallClock, FilterIdentity, MemoryCap};
use crate::filter::instance::{FilterFailure, Limits, classify};

/// Deadline of the VM's start (`_initialize`, `proxy_on_vm_start`,
/// `proxy_on_configure`), which may parse a large configuration.
const START_DEADLINE: Duration = Duration::from_millis(1_000);
/// The root context's id; stream contexts count up from the next.
pub const ROOT_CONTEXT: u32 = 1;
/// Most rounds of HTTP calls made from one callback's responses.
const MAX_CALL_ROUNDS: usize = 8;

type Cb1 = TypedFunc<i32, ()>;
type Cb1R = TypedFunc<i32, i32>;
type Cb2 = TypedFunc<(i32, i32), ()>;
type Cb2R = TypedFunc<(i32, i32), i32>;
type Cb3R = TypedFunc<(i32, i32, i32), i32>;
type CallResponseCb = TypedFunc<(i32, i32, i32, i32, i32), ()>;

/// A headers callback: ABI 0.2.1 passes `end_of_stream`, 0.2.0 does not.
#[derive(Clone)]
enum HeadersCb {
    WithEnd(Cb3R),
    Plain(Cb2R),
}

/// The callbacks the module exports (absent ones are not called).
struct Callbacks {
    on_context_create: Cb2,
    on_vm_start: Option<Cb2R>,
    on_configure: Option<Cb2R>,
    on_tick: Option<Cb1>,
    on_request_headers: Option<HeadersCb>,
    on_request_body: Option<Cb3R>,
    on_response_headers: Option<HeadersCb>,
    on_response_body: Option<Cb3R>,
    on_request_trailers: Option<Cb2R>,
    on_response_trailers: Option<Cb2R>,
    on_done: Option<Cb1R>,
    on_log: Option<Cb1>,
    on_delete: Option<Cb1>,
    on_http_call_response: Option<CallResponseCb>,
}

/// A callback of a stream context, with its arguments.
#[derive(Clone, Copy, Debug)]
pub enum StreamCall {
    RequestHeaders { headers: usize, end: bool },
    RequestBody { size: usize, end: bool },
    ResponseHeaders { headers: usize, end: bool },
    ResponseBody { size: usize, end: bool },
    RequestTrailers { trailers: usize },
    ResponseTrailers { trailers: usize },
}

/// The one stream callback a call makes, with its arguments.
enum Selected {
    Headers(Option<HeadersCb>, usize, bool),
    Body(Option<Cb3R>, usize, bool),
    Trailers(Option<Cb2R>, usize),
}

/// Counts a VM in its plugin and in the engine while it lives.
struct VmCount {
    plugin: Arc<AtomicUsize>,
    engine: Arc<AtomicUsize>,
}

impl Drop for VmCount {
    fn drop(&mut self) {
        self.plugin.fetch_sub(1, Ordering::Relaxed);
        self.engine.fetch_sub(1, Ordering::Relaxed);
    }
}

/// What a VM is made from.
pub struct VmSpec<'a> {
    pub engine: &'a Engine,
    pub pre: &'a InstancePre<VmState>,
    pub watchdog: &'a DeadlineWatchdog,
    pub identity: &'a Arc<FilterIdentity>,
    pub plugin: &'a Arc<PluginShared>,
    pub limits: Limits,
    pub live: &'a Arc<AtomicUsize>,
    pub engine_live: &'a Arc<AtomicUsize>,
}

/// One started VM.
pub struct Vm {
    store: Store<VmState>,
    callbacks: Callbacks,
    limits: Limits,
    next_context: u32,
    /// Why the VM may not be called any more.
    broken: Option<String>,
    _count: VmCount,
}

impl Vm {
    /// Instantiates the module and starts the plugin: `_initialize`, the
    /// root context, `proxy_on_vm_start` and `proxy_on_configure`. The error
    /// says which step failed.
    pub fn start(spec: VmSpec<'_>) -> Result<Vm, String> {
        spec.live.fetch_add(1, Ordering::Relaxed);
        spec.engine_live.fetch_add(1, Ordering::Relaxed);
        let count = VmCount {
            plugin: spec.live.clone(),
            engine: spec.engine_live.clone(),
        };
        let slot = spec.watchdog.slot();
        let state = VmState {
            memory: MemoryCap {
                bytes: spec.limits.memory_bytes,
                hit: false,
            },
            clock: CallClock {
                deadline: START_DEADLINE,
                started: Instant::now(),
                waited: Duration::ZERO,
                callout_budget: spec.limits.callout_phase_budget,
                stalled_before: slot.stalled(),
                queued_before: runqueue::mark(),
                slot,
            },
            identity: spec.identity.clone(),
            plugin: spec.plugin.clone(),
            guest: None,
            exchange: Box::default(),
            current: 0,
            effective: ROOT_CONTEXT,
            local_responses: HashMap::new(),
            resumed: HashSet::new(),
            pending_calls: Vec::new(),
            next_token: 0,
            call_response: None,
            tick_period: Duration::ZERO,
            tick_changed: false,
            metrics: Vec::new(),
            properties: HashMap::new(),
            panic: None,
        };
        let mut store = Store::new(spec.engine, state);
        store.limiter(|s| &mut s.memory);
        store.epoch_deadline_callback(|ctx| Ok(ctx.data().clock.on_epoch()));
        let clock = &store.data().clock;
        clock.slot.arm(clock.started, clock.deadline);
        store.set_epoch_deadline(1);
        let instance = spec.pre.instantiate(&mut store);
        store.data().clock.slot.disarm();
        let instance = instance.map_err(|e| format!("cannot instantiate: {e:#}"))?;
        let callbacks = Callbacks::find(&instance, &mut store)?;
        let mut vm = Vm {
            store,
            callbacks,
            limits: spec.limits,
            next_context: ROOT_CONTEXT,
            broken: None,
            _count: count,
        };
        vm.store.data_mut().clock.deadline = START_DEADLINE;
        let init = ["_initialize", "_start"]
            .into_iter()
            .find_map(|name| instance.get_typed_func::<(), ()>(&mut vm.store, name).ok());
        if let Some(init) = init {
            vm.invoke(ROOT_CONTEXT, |s| init.call(s, ()))
                .map_err(|e| describe("_initialize", e))?;
        }
        let create = vm.callbacks.on_context_create.clone();
        vm.invoke(ROOT_CONTEXT, |s| create.call(s, (ROOT_CONTEXT as i32, 0)))
            .map_err(|e| describe("proxy_on_context_create (root)", e))?;
        let plugin = spec.plugin.clone();
        for (name, callback, size) in [
            (
                "proxy_on_vm_start",
                vm.callbacks.on_vm_start.clone(),
                plugin.vm_config.len(),
            ),
            (
                "proxy_on_configure",
                vm.callbacks.on_configure.clone(),
                plugin.plugin_config.len(),
            ),
        ] {
            let Some(callback) = callback else { continue };
            let started = vm
                .invoke(ROOT_CONTEXT, |s| {
                    callback.call(s, (ROOT_CONTEXT as i32, size as i32))
                })
                .map_err(|e| describe(name, e))?;
            if started == 0 {
                return Err(format!(
                    "the plugin of filter {:?} failed to start: {name} returned false ({}; see \
                     the filter's log lines)",
                    &*spec.identity.name,
                    if name == "proxy_on_configure" {
                        "it rejected its plugin configuration"
                    } else {
                        "it rejected its VM configuration"
                    }
                ));
            }
        }
        // Calls made while starting are answered now.
        let mut waited = Duration::ZERO;
        vm.make_calls(&mut waited)
            .map_err(|e| describe("proxy_on_http_call_response", e))?;
        vm.store.data_mut().clock.deadline = Duration::from_millis(spec.limits.deadline_ms);
        Ok(vm)
    }

    /// The filter's name.
    pub fn filter(&self) -> &str {
        &self.store.data().identity.name
    }

    /// Why the VM may not be called, if it may not.
    pub fn broken(&self) -> Option<&str> {
        self.broken.as_deref()
    }

    /// The tick period, when the guest changed it since the last look.
    pub fn take_tick_change(&mut self) -> Option<Duration> {
        let state = self.store.data_mut();
        std::mem::take(&mut state.tick_changed).then_some(state.tick_period)
    }

    /// Creates a stream context and returns its id.
    pub fn create_context(&mut self) -> Result<u32, FilterFailure> {
        self.usable()?;
        self.next_context = self.next_context.wrapping_add(1).max(ROOT_CONTEXT + 1);
        let id = self.next_context;
        let create = self.callbacks.on_context_create.clone();
        self.invoke(id, |s| create.call(s, (id as i32, ROOT_CONTEXT as i32)))?;
        Ok(id)
    }

    /// Calls one of `context`'s stream callbacks with `exchange` visible,
    /// then makes the HTTP calls it dispatched (their waits added to
    /// `waited`) and delivers their responses. Returns the callback's
    /// action (`true`: continue).
    pub fn stream_call(
        &mut self,
        context: u32,
        exchange: &mut Box<Exchange>,
        call: StreamCall,
        waited: &mut Duration,
    ) -> Result<bool, FilterFailure> {
        self.usable()?;
        let id = context as i32;
        // Only the callback called is taken out of the set.
        let c = &self.callbacks;
        let callback = match call {
            StreamCall::RequestHeaders { headers, end } => {
                Selected::Headers(c.on_request_headers.clone(), headers, end)
            }
            StreamCall::ResponseHeaders { headers, end } => {
                Selected::Headers(c.on_response_headers.clone(), headers, end)
            }
            StreamCall::RequestBody { size, end } => {
                Selected::Body(c.on_request_body.clone(), size, end)
            }
            StreamCall::ResponseBody { size, end } => {
                Selected::Body(c.on_response_body.clone(), size, end)
            }
            StreamCall::RequestTrailers { trailers } => {
                Selected::Trailers(c.on_request_trailers.clone(), trailers)
            }
            StreamCall::ResponseTrailers { trailers } => {
                Selected::Trailers(c.on_response_trailers.clone(), trailers)
            }
        };
        let call = move |s: &mut Store<VmState>| match callback {
            Selected::Headers(Some(HeadersCb::WithEnd(f)), n, end) => {
                f.call(s, (id, n as i32, end as i32))
            }
            Selected::Headers(Some(HeadersCb::Plain(f)), n, _) => f.call(s, (id, n as i32)),
            Selected::Body(Some(f), n, end) => f.call(s, (id, n as i32, end as i32)),
            Selected::Trailers(Some(f), n) => f.call(s, (id, n as i32)),
            // Not exported: go on.
            _ => Ok(super::abi::ACTION_CONTINUE),
        };
        self.with_exchange(context, exchange, |vm| {
            let action = vm.invoke(context, call)?;
            vm.make_calls(waited)?;
            Ok(action == super::abi::ACTION_CONTINUE)
        })
    }

    /// `proxy_on_done`, `proxy_on_log` and `proxy_on_delete` of a stream
    /// context, with `exchange` visible (an empty one once the request is
    /// gone).
    pub fn finish(
        &mut self,
        context: u32,
        exchange: &mut Box<Exchange>,
    ) -> Result<(), FilterFailure> {
        let result = self.usable().and_then(|()| {
            let c = &self.callbacks;
            let (done, log, delete) = (c.on_done.clone(), c.on_log.clone(), c.on_delete.clone());
            let id = context as i32;
            // One call under one deadline: the three are the stream's end.
            self.with_exchange(context, exchange, |vm| {
                vm.invoke(context, |s| {
                    if let Some(f) = done {
                        f.call(&mut *s, id)?;
                    }
                    if let Some(f) = log {
                        f.call(&mut *s, id)?;
                    }
                    if let Some(f) = delete {
                        f.call(&mut *s, id)?;
                    }
                    Ok(())
                })
            })
        });
        self.store.data_mut().forget(context);
        result
    }

    /// Takes what the guest left for `context`: a local response, and
    /// whether it resumed the stream.
    pub fn take_outcome(
        &mut self,
        context: u32,
    ) -> (
        Option<crate::filter::bindings::weft::filter::types::LocalResponse>,
        bool,
    ) {
        let state = self.store.data_mut();
        (
            state.local_responses.remove(&context),
            state.resumed.remove(&context),
        )
    }

    /// `proxy_on_tick` of the root context, and the calls it made.
    pub fn tick(&mut self) -> Result<(), FilterFailure> {
        self.usable()?;
        if let Some(f) = self.callbacks.on_tick.clone() {
            self.invoke(ROOT_CONTEXT, |s| f.call(s, ROOT_CONTEXT as i32))?;
        }
        let mut waited = Duration::ZERO;
        self.make_calls(&mut waited)
    }

    fn usable(&self) -> Result<(), FilterFailure> {
        match &self.broken {
            None => Ok(()),
            Some(why) => Err(FilterFailure::trap(format!(
                "the filter's VM failed in another call and is being replaced: {why}"
            ))),
        }
    }

    /// Runs `f` with `exchange` in the store as `context`'s request.
    fn with_exchange<R>(
        &mut self,
        context: u32,
        exchange: &mut Box<Exchange>,
        f: impl FnOnce(&mut Self) -> Result<R, FilterFailure>,
    ) -> Result<R, FilterFailure> {
        let state = self.store.data_mut();
        std::mem::swap(&mut state.exchange, exchange);
        state.current = context;
        let result = f(self);
        let state = self.store.data_mut();
        std::mem::swap(&mut state.exchange, exchange);
        state.current = 0;
        result
    }

    /// Calls into the guest as `context`, under the deadline; a failure
    /// breaks the VM.
    fn invoke<R>(
        &mut self,
        context: u32,
        f: impl FnOnce(&mut Store<VmState>) -> wasmtime::Result<R>,
    ) -> Result<R, FilterFailure> {
        let data = self.store.data_mut();
        data.effective = context;
        let started = Instant::now();
        data.clock.started = started;
        data.clock.waited = Duration::ZERO;
        data.clock.stalled_before = data.clock.slot.stalled();
        data.clock.queued_before = runqueue::mark();
        data.clock.slot.arm(started, data.clock.deadline);
        self.store.set_epoch_deadline(1);
        let result = f(&mut self.store);
        self.store.data().clock.slot.disarm();
        result.map_err(|error| {
            let data = self.store.data();
            let failure = classify(error, data.memory.hit, &self.limits, data.panic.as_deref());
            self.broken = Some(failure.to_string());
            failure
        })
    }

    /// Makes the HTTP calls dispatched so far, each bounded by what is
    /// left of the callout budgets, and calls `proxy_on_http_call_response`
    /// for each (no headers and no body when the call failed).
    fn make_calls(&mut self, waited: &mut Duration) -> Result<(), FilterFailure> {
        let Some(on_response) = self.callbacks.on_http_call_response.clone() else {
            self.store.data_mut().pending_calls.clear();
            return Ok(());
        };
        // What this callback's calls waited, against the phase's budget.
        let mut phase_waited = Duration::ZERO;
        for _ in 0..MAX_CALL_ROUNDS {
            let pending = std::mem::take(&mut self.store.data_mut().pending_calls);
            if pending.is_empty() {
                return Ok(());
            }
            for call in pending {
                let identity = self.store.data().identity.clone();
                let budget = (self
                    .limits
                    .callout_phase_budget
                    .saturating_sub(phase_waited))
                .min(self.limits.callout_request_budget.saturating_sub(*waited));
                let started = Instant::now();
                let result = if budget.is_zero() {
                    Err(format!(
                        "no callout budget left: the callout waits of this phase or request \
                         reached their limit (filters.{name}.callout_phase_budget_ms, \
                         filters.{name}.callout_request_budget_ms)",
                        name = identity.name
                    ))
                } else {
                    identity.callouts.call(call.request, &identity.name, budget)
                };
                let took = started.elapsed();
                *waited += took;
                phase_waited += took;
                let response = match result {
                    Ok(r) => {
                        let mut headers = vec![(":status".to_string(), r.status.to_string())];
                        headers.extend(r.headers);
                        CallResponse {
                            headers,
                            body: r.body,
                        }
                    }
                    Err(e) => {
                        tracing::warn!(filter = &*identity.name, "http call failed: {e}");
                        CallResponse::default()
                    }
                };
                let (headers, body) = (response.headers.len(), response.body.len());
                self.store.data_mut().call_response = Some(response);
                // The response goes to the context that made the call.
                let target = call.context;
                let result = self.invoke(target, |s| {
                    on_response.call(
                        s,
                        (
                            target as i32,
                            call.token as i32,
                            headers as i32,
                            body as i32,
                            0,
                        ),
                    )
                });
                self.store.data_mut().call_response = None;
                result?;
            }
        }
        self.store.data_mut().pending_calls.clear();
        Ok(())
    }
}

fn describe(step: &str, failure: FilterFailure) -> String {
    match failure.backtrace() {
        Some(backtrace) => format!("{step} {failure}; backtrace: {backtrace}"),
        None => format!("{step} {failure}"),
    }
}

impl Callbacks {
    fn find(instance: &Instance, store: &mut Store<VmState>) -> Result<Self, String> {
        let memory = instance
            .get_memory(&mut *store, "memory")
            .ok_or("the module exports no memory named \"memory\"")?;
        let malloc = ["proxy_on_memory_allocate", "malloc"]
            .into_iter()
            .find_map(|name| instance.get_typed_func::<i32, i32>(&mut *store, name).ok())
            .ok_or("the module exports no allocator (proxy_on_memory_allocate or malloc)")?;
        store.data_mut().guest = Some(Guest { memory, malloc });
        macro_rules! get {
            ($name:literal) => {
                instance.get_typed_func(&mut *store, $name).ok()
            };
        }
        let headers = |store: &mut Store<VmState>, name: &str| {
            instance
                .get_typed_func::<(i32, i32, i32), i32>(&mut *store, name)
                .map(HeadersCb::WithEnd)
                .or_else(|_| {
                    instance
                        .get_typed_func::<(i32, i32), i32>(&mut *store, name)
                        .map(HeadersCb::Plain)
                })
                .ok()
        };
        Ok(Callbacks {
            on_context_create: get!("proxy_on_context_create")
                .ok_or("the module exports no proxy_on_context_create(i32, i32)")?,
            on_vm_start: get!("proxy_on_vm_start"),
            on_configure: get!("proxy_on_configure"),
            on_tick: get!("proxy_on_tick"),
            on_request_headers: headers(store, "proxy_on_request_headers"),
            on_request_body: get!("proxy_on_request_body"),
            on_response_headers: headers(store, "proxy_on_response_headers"),
            on_response_body: get!("proxy_on_response_body"),
            on_request_trailers: get!("proxy_on_request_trailers"),
            on_response_trailers: get!("proxy_on_response_trailers"),
            on_done: get!("proxy_on_done"),
            on_log: get!("proxy_on_log"),
            on_delete: get!("proxy_on_delete"),
            on_http_call_response: get!("proxy_on_http_call_response"),
        })
    }
}
