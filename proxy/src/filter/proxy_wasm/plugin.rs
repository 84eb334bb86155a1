//! A chain entry running a proxy-wasm filter: its VMs (one started when
//! the snapshot is built, which ticks and checks the configuration; then
//! one per worker thread, started on the worker's first request and
//! replaced after a trap), and one request's stream context.

use std::cell::Cell;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use wasmtime::Engine;

use super::LinkedModule;
use super::state::PluginShared;
use super::ticks;
use super::vm::{StreamCall, Vm, VmSpec};
use crate::filter::bindings::weft::filter::types::{Action, Phases};
use crate::filter::deadline::DeadlineWatchdog;
use crate::filter::exchange::{Exchange, Phase};
use crate::filter::host::FilterIdentity;
use crate::filter::instance::{FilterFailure, InstanceCounts, Limits};
use crate::telemetry::Registry;

/// How often a paused stream looks whether another context (a tick, an
/// HTTP call's response) resumed it or answered it.
pub const RESUME_POLL: Duration = Duration::from_millis(20);

/// The entry's VMs and what they are made from.
pub struct Plugin {
    engine: Engine,
    watchdog: Arc<DeadlineWatchdog>,
    module: Arc<LinkedModule>,
    identity: Arc<FilterIdentity>,
    shared: Arc<PluginShared>,
    limits: Limits,
    /// VMs of this entry alive.
    live: Arc<AtomicUsize>,
    engine_live: Arc<AtomicUsize>,
    serving_cap: usize,
    /// The VM started with the snapshot: it ticks; requests use their
    /// worker's.
    _main: Arc<Mutex<Vm>>,
    /// Each worker thread's VM, by [`thread_slot`].
    workers: Mutex<Vec<Option<Arc<Mutex<Vm>>>>>,
    /// The phases the chain calls it for.
    pub phases: Phases,
}

thread_local! {
    static SLOT: Cell<usize> = const { Cell::new(usize::MAX) };
}

/// This thread's index among the threads that ran proxy-wasm filters.
fn thread_slot() -> usize {
    static NEXT: AtomicUsize = AtomicUsize::new(0);
    SLOT.with(|slot| {
        if slot.get() == usize::MAX {
            slot.set(NEXT.fetch_add(1, Ordering::Relaxed));
        }
        slot.get()
    })
}

impl Plugin {
    /// Starts the entry's first VM: a module that fails to start, or a
    /// plugin that rejects its configuration, is an error here, before
    /// any request. [`StartError::vm`] tells a VM start's failure (its
    /// VM configuration) from the plugin's (its configuration).
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        engine: &Engine,
        watchdog: Arc<DeadlineWatchdog>,
        module: Arc<LinkedModule>,
        identity: Arc<FilterIdentity>,
        shared: PluginShared,
        limits: Limits,
        counts: &InstanceCounts,
        bodies: (bool, bool),
    ) -> Result<Self, StartError> {
        let mut phases = Phases::REQUEST_HEADERS | Phases::RESPONSE_HEADERS | Phases::DONE;
        if bodies.0 {
            phases |= Phases::REQUEST_BODY;
        }
        if bodies.1 {
            phases |= Phases::RESPONSE_BODY;
        }
        let live = Arc::new(AtomicUsize::new(0));
        let shared = Arc::new(shared);
        let main = Vm::start(VmSpec {
            engine,
            pre: &module.pre,
            watchdog: &watchdog,
            identity: &identity,
            plugin: &shared,
            limits,
            live: &live,
            engine_live: &counts.engine,
        })
        .map_err(|message| StartError {
            vm: message.contains("proxy_on_vm_start") || message.contains("_initialize"),
            message,
        })?;
        let main = Arc::new(Mutex::new(main));
        watch_ticks(&main);
        Ok(Plugin {
            engine: engine.clone(),
            watchdog,
            module,
            identity,
            shared,
            limits,
            live,
            engine_live: counts.engine.clone(),
            serving_cap: counts.serving_cap,
            _main: main,
            workers: Mutex::new(Vec::new()),
            phases,
        })
    }

    /// VMs alive now.
    pub fn live(&self) -> usize {
        self.live.load(Ordering::Relaxed)
    }

    /// The module's hash.
    pub fn sha256(&self) -> &str {
        &self.module.sha256
    }

    /// The ABI version the module declares.
    pub fn abi(&self) -> &'static str {
        self.module.abi
    }

    /// The registry the filter reports to.
    pub fn metrics(&self) -> &Arc<Registry> {
        &self.identity.metrics
    }

    /// This worker's VM: started on first use, and again after a trap.
    fn vm(&self) -> Result<Arc<Mutex<Vm>>, FilterFailure> {
        let slot = thread_slot();
        {
            let workers = self.workers.lock().unwrap();
            if let Some(Some(vm)) = workers.get(slot)
                && vm.lock().unwrap().broken().is_none()
            {
                return Ok(vm.clone());
            }
        }
        if self.live() > self.limits.max_instances.max(1) {
            return Err(FilterFailure::Overloaded(format!(
                "all {} VMs of filter {:?} are in use (filters.{}.max_instances)",
                self.limits.max_instances, &*self.identity.name, &*self.identity.name
            )));
        }
        if self.engine_live.load(Ordering::Relaxed) >= self.serving_cap {
            return Err(FilterFailure::Overloaded(format!(
                "the {} filter instances the proxy serves with are all in use",
                self.serving_cap
            )));
        }
        let _ = self.identity.metrics.counter_add(
            "weft_filter_instances_created_total",
            vec![("filter".into(), self.identity.name.to_string())],
            1,
        );
        let vm = Vm::start(VmSpec {
            engine: &self.engine,
            pre: &self.module.pre,
            watchdog: &self.watchdog,
            identity: &self.identity,
            plugin: &self.shared,
            limits: self.limits,
            live: &self.live,
            engine_live: &self.engine_live,
        })
        .map_err(FilterFailure::Instantiate)?;
        let vm = Arc::new(Mutex::new(vm));
        watch_ticks(&vm);
        let mut workers = self.workers.lock().unwrap();
        if workers.len() <= slot {
            workers.resize(slot + 1, None);
        }
        workers[slot] = Some(vm.clone());
        Ok(vm)
    }

    /// Runs `phase` for one request. `stream` is the request's stream
    /// context: made in `on-request-headers`, gone after `on-done`.
    pub fn run(
        &self,
        stream: &mut Option<Stream>,
        exchange: &mut Box<Exchange>,
        phase: Phase,
        waited: &mut Duration,
    ) -> Result<Action, FilterFailure> {
        if stream.is_none() {
            if phase != Phase::RequestHeaders {
                // Nothing ran for this request (it started elsewhere).
                return Ok(Action::Continue);
            }
            let vm = self.vm()?;
            let context = vm.lock().unwrap().create_context()?;
            *stream = Some(Stream {
                vm,
                context,
                paused: None,
                request_end: false,
                response_end: false,
                finished: false,
            });
        }
        let s = stream.as_mut().expect("made above");
        let vm = s.vm.clone();
        let mut guard = vm.lock().unwrap();
        if phase == Phase::Done {
            s.finished = true;
            return guard.finish(s.context, exchange).map(|()| Action::Continue);
        }
        if s.paused == Some(phase) {
            return Ok(s.outcome(&mut guard, false));
        }
        let call = match phase {
            Phase::RequestHeaders => {
                let request = exchange
                    .request
                    .as_ref()
                    .expect("request head in request phases");
                s.request_end = !request_has_body(request);
                StreamCall::RequestHeaders {
                    headers: request.headers.len() + 4,
                    end: s.request_end,
                }
            }
            Phase::RequestBody => {
                let size = exchange.request_body.as_ref().map_or(0, |b| b.len());
                if s.request_end && size == 0 {
                    return Ok(Action::Continue);
                }
                StreamCall::RequestBody { size, end: true }
            }
            Phase::ResponseHeaders => {
                let response = exchange
                    .response
                    .as_ref()
                    .expect("response head in response phases");
                let head = exchange
                    .request
                    .as_ref()
                    .is_some_and(|r| r.method == http::Method::HEAD);
                s.response_end = head || !response_has_body(response);
                StreamCall::ResponseHeaders {
                    headers: response.headers.len() + 1,
                    end: s.response_end,
                }
            }
            Phase::ResponseBody => {
                let size = exchange.response_body.as_ref().map_or(0, |b| b.len());
                if s.response_end && size == 0 {
                    return Ok(Action::Continue);
                }
                StreamCall::ResponseBody { size, end: true }
            }
            Phase::Done => unreachable!("handled above"),
        };
        let mut proceed = guard.stream_call(s.context, exchange, call, waited)?;
        // A body that ended with trailers: they come next, as on Envoy.
        let trailers = match phase {
            Phase::RequestBody => exchange
                .request_trailers
                .as_ref()
                .map(|t| StreamCall::RequestTrailers { trailers: t.len() }),
            Phase::ResponseBody => exchange
                .response_trailers
                .as_ref()
                .map(|t| StreamCall::ResponseTrailers { trailers: t.len() }),
            _ => None,
        };
        if let Some(call) = trailers
            && proceed
        {
            proceed = guard.stream_call(s.context, exchange, call, waited)?;
        }
        let change = guard.take_tick_change();
        let action = s.outcome(&mut guard, proceed);
        s.paused = matches!(action, Action::ContinueAfter(_)).then_some(phase);
        drop(guard);
        if let Some(period) = change {
            ticks::schedule(&vm, period);
        }
        Ok(action)
    }
}

fn watch_ticks(vm: &Arc<Mutex<Vm>>) {
    if let Some(period) = vm.lock().unwrap().take_tick_change() {
        ticks::schedule(vm, period);
    }
}

/// Why a plugin did not start.
#[derive(Debug)]
pub struct StartError {
    /// Whether the VM failed to start (rather than the plugin's configure).
    pub vm: bool,
    /// What happened.
    pub message: String,
}

/// One request's stream context, on the VM that created it.
pub struct Stream {
    vm: Arc<Mutex<Vm>>,
    context: u32,
    /// The phase the filter paused in, until resumed.
    paused: Option<Phase>,
    request_end: bool,
    response_end: bool,
    finished: bool,
}

impl Stream {
    /// What the chain does next: the local response the filter sent, go
    /// on (it returned continue, or resumed the stream), or wait.
    fn outcome(&mut self, vm: &mut Vm, proceed: bool) -> Action {
        let (reply, resumed) = vm.take_outcome(self.context);
        if let Some(reply) = reply {
            self.paused = None;
            return Action::Respond(reply);
        }
        if proceed || resumed {
            self.paused = None;
            return Action::Continue;
        }
        Action::ContinueAfter(RESUME_POLL.as_millis() as u32)
    }
}

impl Drop for Stream {
    /// A request that ends before `on-done` (the client went away, or a
    /// filter answered first) still has its context's log and delete
    /// callbacks run, so the guest frees what it holds.
    fn drop(&mut self) {
        if self.finished {
            return;
        }
        if let Ok(mut vm) = self.vm.lock()
            && vm.broken().is_none()
        {
            let _ = vm.finish(self.context, &mut Box::default());
        }
    }
}

/// Whether a request head announces a body: a length above 0, chunked
/// framing, or (HTTP/2 and later, which frame without either) a method
/// that usually carries one.
fn request_has_body(request: &http::request::Parts) -> bool {
    if let Some(len) = request.headers.get(http::header::CONTENT_LENGTH) {
        return len.as_bytes() != b"0";
    }
    if request
        .headers
        .contains_key(http::header::TRANSFER_ENCODING)
    {
        return true;
    }
    request.version >= http::Version::HTTP_2
        && !matches!(
            request.method,
            http::Method::GET | http::Method::HEAD | http::Method::DELETE | http::Method::OPTIONS
        )
}

fn response_has_body(response: &http::response::Parts) -> bool {
    let status = response.status.as_u16();
    if (100..200).contains(&status) || status == 204 || status == 304 {
        return false;
    }
    response
        .headers
        .get(http::header::CONTENT_LENGTH)
        .is_none_or(|len| len.as_bytes() != b"0")
}
