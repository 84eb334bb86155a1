//! A route's filter chain and one request's run through it.
//!
//! Request phases run in chain order, response phases in reverse order over
//! the filters whose request phases ran. A filter is only called for the
//! phases it implements; it holds one instance from its first phase of the
//! request to its last, so state kept in the filter lives across the phases
//! of one request.

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http::{HeaderName, HeaderValue, StatusCode};

use super::bindings::weft::filter::types::{Action, LocalResponse, Phases};
use super::exchange::{Exchange, Phase};
use super::instance::{FilterFailure, FilterInstance, InstancePool};
use super::proxy_wasm::{Plugin, Stream};
use crate::config::OnError;
use crate::telemetry::Registry;
use crate::telemetry::calls::PhaseMetrics;

/// A chain entry's instances: a Weft filter's pool, or a proxy-wasm
/// filter's VMs.
pub enum FilterPool {
    /// Instances of a `weft:filter` component.
    Component(InstancePool),
    /// VMs of a proxy-wasm module.
    ProxyWasm(Plugin),
}

impl FilterPool {
    /// The phases the filter is called for.
    pub fn phases(&self) -> Phases {
        match self {
            FilterPool::Component(pool) => pool.phases,
            FilterPool::ProxyWasm(plugin) => plugin.phases,
        }
    }

    /// Instances (or VMs) alive now.
    pub fn live(&self) -> usize {
        match self {
            FilterPool::Component(pool) => pool.live(),
            FilterPool::ProxyWasm(plugin) => plugin.live(),
        }
    }

    /// The module's hash.
    pub fn sha256(&self) -> &str {
        match self {
            FilterPool::Component(pool) => pool.sha256(),
            FilterPool::ProxyWasm(plugin) => plugin.sha256(),
        }
    }

    /// The kind of filter (`weft` or `proxy-wasm`) and the version of
    /// the contract or ABI it is built for.
    pub fn kind(&self) -> (&'static str, &'static str) {
        match self {
            FilterPool::Component(_) => ("weft", super::module::CONTRACT_VERSION),
            FilterPool::ProxyWasm(plugin) => ("proxy-wasm", plugin.abi()),
        }
    }

    /// The registry the filter reports to.
    pub fn metrics(&self) -> &Arc<Registry> {
        match self {
            FilterPool::Component(pool) => pool.metrics(),
            FilterPool::ProxyWasm(plugin) => plugin.metrics(),
        }
    }
}

/// One filter in a route's chain, with its own config and instances.
pub struct ChainEntry {
    /// The filter's name (`filters.<name>`).
    pub name: Arc<str>,
    /// Instances initialised with this entry's config.
    pub pool: FilterPool,
    /// The phases it is called for.
    phases: Phases,
    /// What a failure does to the request.
    pub on_error: OnError,
    last_phase: Option<Phase>,
    /// Calls and call times of each phase it implements, by [`phase_index`].
    calls: [Option<PhaseMetrics>; 5],
}

impl ChainEntry {
    /// Wraps a ready pool.
    pub fn new(name: Arc<str>, pool: FilterPool, on_error: OnError) -> Self {
        let phases = pool.phases();
        let last_phase = [
            (Phases::DONE, Phase::Done),
            (Phases::RESPONSE_BODY, Phase::ResponseBody),
            (Phases::RESPONSE_HEADERS, Phase::ResponseHeaders),
            (Phases::REQUEST_BODY, Phase::RequestBody),
            (Phases::REQUEST_HEADERS, Phase::RequestHeaders),
        ]
        .into_iter()
        .find(|(flag, _)| phases.contains(*flag))
        .map(|(_, phase)| phase);
        let calls = PHASES.map(|phase| {
            phases
                .contains(flag(phase))
                .then(|| pool.metrics().calls.phase(&name, phase.name()))
        });
        Self {
            name,
            pool,
            phases,
            on_error,
            last_phase,
            calls,
        }
    }

    /// This entry's calls of `phase` so far, and the median and 99th
    /// percentile of their sampled times in seconds (`None` for a phase it
    /// does not implement).
    pub fn call_summary(&self, phase: Phase) -> Option<(u64, Option<f64>, Option<f64>)> {
        self.calls[phase_index(phase)]
            .as_ref()
            .map(PhaseMetrics::summary)
    }

    fn implements(&self, phase: Phase) -> bool {
        self.phases.contains(flag(phase))
    }
}

/// The phases a filter may implement, in call order.
pub const PHASES: [Phase; 5] = [
    Phase::RequestHeaders,
    Phase::RequestBody,
    Phase::ResponseHeaders,
    Phase::ResponseBody,
    Phase::Done,
];

/// `phase`'s place in [`PHASES`].
fn phase_index(phase: Phase) -> usize {
    match phase {
        Phase::RequestHeaders => 0,
        Phase::RequestBody => 1,
        Phase::ResponseHeaders => 2,
        Phase::ResponseBody => 3,
        Phase::Done => 4,
    }
}

fn flag(phase: Phase) -> Phases {
    match phase {
        Phase::RequestHeaders => Phases::REQUEST_HEADERS,
        Phase::RequestBody => Phases::REQUEST_BODY,
        Phase::ResponseHeaders => Phases::RESPONSE_HEADERS,
        Phase::ResponseBody => Phases::RESPONSE_BODY,
        Phase::Done => Phases::DONE,
    }
}

/// A route's filters, in order.
#[derive(Default)]
pub struct FilterChain {
    /// The entries.
    pub entries: Vec<ChainEntry>,
    phases: Phases,
    /// Whether a fail-closed failure's 500 carries its details (the trap
    /// and its backtrace): the route's `error_details`.
    pub error_details: bool,
}

impl FilterChain {
    /// Builds the chain from its entries.
    pub fn new(entries: Vec<ChainEntry>) -> Self {
        let phases = entries
            .iter()
            .fold(Phases::empty(), |all, e| all | e.phases);
        Self {
            entries,
            phases,
            error_details: false,
        }
    }

    /// Whether some filter implements `phase`: the proxy skips a phase (and
    /// never buffers a body) nobody asked for.
    pub fn wants(&self, phase: Phase) -> bool {
        self.phases.contains(flag(phase))
    }

    /// Whether some filter may answer `retry`: the request body is kept.
    pub fn may_retry(&self) -> bool {
        self.phases.contains(Phases::RETRY)
    }

    /// Whether the chain has no filters.
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }
}

/// A response produced by a filter.
pub struct LocalReply {
    /// The response head.
    pub head: http::response::Parts,
    /// The body.
    pub body: Bytes,
}

/// A filter that failed with `on_error: fail_closed`.
#[derive(Debug)]
pub struct ChainFailure {
    /// The filter's name.
    pub filter: Arc<str>,
    /// The phase it failed in.
    pub phase: Phase,
    /// What happened.
    pub failure: FilterFailure,
    /// Whether the 500 may carry the failure's details (the route's
    /// `error_details`).
    pub details: bool,
}

/// Longest total of `continue-after` pauses and retry delays in one request.
pub const MAX_PAUSE: Duration = Duration::from_secs(300);
/// Most `continue-after` pauses and retries in one request.
pub const MAX_PAUSES: u32 = 1000;
/// The shortest pause: `continue-after(0)` waits this long.
pub const MIN_PAUSE: Duration = Duration::from_millis(1);

/// What the chain decided after a phase.
pub enum Step {
    /// Go on.
    Continue,
    /// Answer with this response instead.
    Respond(LocalReply),
    /// A fail-closed filter failed: answer 500.
    Failed(ChainFailure),
    /// Wait this long, then call the same phase again: it resumes with the
    /// filter that paused.
    Pause(Duration),
    /// Send the request upstream again after this delay (from
    /// `on-response-headers`). To go on with this response instead, call the
    /// same phase again: it resumes with the next filter.
    Retry(Duration),
}

/// What one chain entry holds during a request. Unboxed on purpose: the
/// slots are one allocation per request, a box would add one per instance.
#[allow(clippy::large_enum_variant)]
enum Slot {
    /// No instance between phases.
    Free,
    /// The instance kept for the entry's later phases.
    Held(FilterInstance),
    /// A proxy-wasm filter's stream context, on its VM.
    Stream(Stream),
    /// The filter failed with `fail_open`: skipped for the rest of the request.
    FailedOpen,
}

/// One chain entry's part of a request.
struct EntryRun {
    slot: Slot,
    /// Time this entry's callouts waited in this request.
    callouts_waited: Duration,
}

/// One request's run through a chain.
pub struct ChainRun {
    chain: Arc<FilterChain>,
    metrics: Arc<Registry>,
    slots: Vec<EntryRun>,
    /// How many entries ran their request phases (response phases run over
    /// these, in reverse).
    ran: usize,
    /// Where a paused phase resumes: the next entry (request phases) or the
    /// bound of the entries still to run (response phases).
    resume: Option<(Phase, usize)>,
    /// Time paused (and waited before retries) so far.
    paused: Duration,
    /// Pauses and retries so far.
    pauses: u32,
}

impl ChainRun {
    /// Starts a run.
    pub fn new(chain: Arc<FilterChain>, metrics: Arc<Registry>) -> Self {
        let n = chain.entries.len();
        Self {
            chain,
            metrics,
            slots: (0..n)
                .map(|_| EntryRun {
                    slot: Slot::Free,
                    callouts_waited: Duration::ZERO,
                })
                .collect(),
            ran: 0,
            resume: None,
            paused: Duration::ZERO,
            pauses: 0,
        }
    }

    /// The chain being run.
    pub fn chain(&self) -> &FilterChain {
        &self.chain
    }

    /// Runs a request phase over the chain in order (resuming after a
    /// [`Step::Pause`]).
    pub fn request_phase(&mut self, exchange: &mut Box<Exchange>, phase: Phase) -> Step {
        let first = phase == Phase::RequestHeaders;
        let upto = if first {
            self.chain.entries.len()
        } else {
            self.ran
        };
        let start = self.resume_point(phase).unwrap_or(0);
        for i in start..upto {
            if first {
                self.ran = i + 1;
            }
            match self.call(i, exchange, phase) {
                Step::Continue => {}
                Step::Pause(pause) => {
                    self.resume = Some((phase, i));
                    return Step::Pause(pause);
                }
                Step::Respond(reply) => {
                    // The responder and the filters after it are done.
                    self.ran = i;
                    return Step::Respond(reply);
                }
                other => return other,
            }
        }
        Step::Continue
    }

    /// Runs a response phase over the filters that ran, in reverse order
    /// (resuming after a [`Step::Pause`] or a declined [`Step::Retry`]).
    pub fn response_phase(&mut self, exchange: &mut Box<Exchange>, phase: Phase) -> Step {
        let upto = self.resume_point(phase).unwrap_or(self.ran);
        for i in (0..upto).rev() {
            match self.call(i, exchange, phase) {
                Step::Continue => {}
                Step::Pause(pause) => {
                    self.resume = Some((phase, i + 1));
                    return Step::Pause(pause);
                }
                Step::Retry(delay) => {
                    // Declined, the phase goes on with the next filter.
                    self.resume = Some((phase, i));
                    return Step::Retry(delay);
                }
                other => return other,
            }
        }
        Step::Continue
    }

    /// Forgets where a phase paused: the next call of it starts over.
    pub fn restart_phases(&mut self) {
        self.resume = None;
    }

    fn resume_point(&mut self, phase: Phase) -> Option<usize> {
        match self.resume.take() {
            Some((p, at)) if p == phase => Some(at),
            _ => None,
        }
    }

    /// Runs `on-done` for the filters that ran; failures are only logged.
    pub fn done(&mut self, exchange: &mut Box<Exchange>) {
        for i in (0..self.ran).rev() {
            let _ = self.call(i, exchange, Phase::Done);
        }
    }

    fn call(&mut self, i: usize, exchange: &mut Box<Exchange>, phase: Phase) -> Step {
        let entry = &self.chain.entries[i];
        let run = &mut self.slots[i];
        if matches!(run.slot, Slot::FailedOpen) || !entry.implements(phase) {
            return Step::Continue;
        }
        // Every call counted, one in `SAMPLE_EVERY` timed (one more clock
        // read: the call's start is the deadline's).
        let calls = entry.calls[phase_index(phase)].as_ref();
        let timed = calls.is_some_and(PhaseMetrics::count);
        let result = match &entry.pool {
            FilterPool::Component(pool) => {
                let instance = match std::mem::replace(&mut run.slot, Slot::Free) {
                    Slot::Held(instance) => Ok(instance),
                    _ => pool.acquire(),
                };
                instance.and_then(|mut instance| {
                    let action = instance.run(exchange, phase, &mut run.callouts_waited)?;
                    if timed && let Some(calls) = calls {
                        calls.timed(instance.last_used().elapsed());
                    }
                    // A filter that pauses or retries is called again: it
                    // keeps its instance (and so its state) for that.
                    let again = matches!(action, Action::ContinueAfter(_) | Action::Retry(_));
                    if entry.last_phase == Some(phase) && !again {
                        pool.release(instance);
                    } else {
                        run.slot = Slot::Held(instance);
                    }
                    Ok(action)
                })
            }
            FilterPool::ProxyWasm(plugin) => {
                let started = timed.then(std::time::Instant::now);
                let mut stream = match std::mem::replace(&mut run.slot, Slot::Free) {
                    Slot::Stream(stream) => Some(stream),
                    _ => None,
                };
                let result = plugin.run(&mut stream, exchange, phase, &mut run.callouts_waited);
                if let (Some(started), Some(calls)) = (started, calls) {
                    calls.timed(started.elapsed());
                }
                // A failed VM's stream is dropped with it.
                if let Some(stream) = stream.filter(|_| result.is_ok()) {
                    run.slot = Slot::Stream(stream);
                }
                result
            }
        };
        let may_retry = entry.phases.contains(Phases::RETRY);
        match result.and_then(|action| to_step(action, phase, may_retry)) {
            Ok(Step::Pause(pause)) => match self.count_pause(pause, phase, "continue-after") {
                Ok(()) => Step::Pause(pause.max(MIN_PAUSE)),
                Err(failure) => self.fail(i, phase, failure, exchange),
            },
            Ok(Step::Retry(delay)) => match self.count_pause(delay, phase, "retry") {
                Ok(()) => Step::Retry(delay),
                Err(failure) => self.fail(i, phase, failure, exchange),
            },
            Ok(step) => step,
            Err(failure) => self.fail(i, phase, failure, exchange),
        }
    }

    /// Counts a pause or a retry's delay against the request's budget: at
    /// most [`MAX_PAUSES`] of them, adding up to at most [`MAX_PAUSE`].
    fn count_pause(
        &mut self,
        pause: Duration,
        phase: Phase,
        what: &str,
    ) -> Result<(), FilterFailure> {
        let pause = pause.max(MIN_PAUSE);
        let refuse = |limit: String| {
            Err(FilterFailure::trap(format!(
                "{}: {what}: the request's pauses and retries would exceed {limit}",
                phase.name()
            )))
        };
        if self.pauses >= MAX_PAUSES {
            return refuse(format!("the limit of {MAX_PAUSES} per request"));
        }
        if self.paused + pause > MAX_PAUSE {
            return refuse(format!("{} s in all", MAX_PAUSE.as_secs()));
        }
        self.pauses += 1;
        self.paused += pause;
        Ok(())
    }

    fn fail(&mut self, i: usize, phase: Phase, failure: FilterFailure, ex: &Exchange) -> Step {
        let entry = &self.chain.entries[i];
        let kind = match failure {
            // A limit, not a fault of the filter: never skipped, never
            // counted as its failure.
            FilterFailure::Overloaded(_) => {
                let _ = self.metrics.counter_add(
                    "weft_filter_overloaded_total",
                    vec![("filter".into(), entry.name.to_string())],
                    1,
                );
                return Step::Failed(ChainFailure {
                    filter: entry.name.clone(),
                    phase,
                    failure,
                    details: self.chain.error_details,
                });
            }
            FilterFailure::Deadline(_) => "deadline",
            FilterFailure::Memory(_) => "memory",
            FilterFailure::Trap { .. } => "trap",
            FilterFailure::Instantiate(_) => "instantiate",
        };
        let _ = self.metrics.counter_add(
            "weft_filter_failures_total",
            vec![
                ("filter".into(), entry.name.to_string()),
                ("kind".into(), kind.into()),
            ],
            1,
        );
        match failure.backtrace() {
            Some(backtrace) => tracing::warn!(
                filter = &*entry.name,
                route = &*ex.props.route,
                request_id = ex.props.request_id,
                phase = phase.name(),
                on_error = ?entry.on_error,
                %backtrace,
                "filter failed: {failure}"
            ),
            None => tracing::warn!(
                filter = &*entry.name,
                route = &*ex.props.route,
                request_id = ex.props.request_id,
                phase = phase.name(),
                on_error = ?entry.on_error,
                "filter failed: {failure}"
            ),
        }
        match entry.on_error {
            OnError::FailOpen => {
                self.slots[i].slot = Slot::FailedOpen;
                Step::Continue
            }
            OnError::FailClosed => Step::Failed(ChainFailure {
                filter: entry.name.clone(),
                phase,
                failure,
                details: self.chain.error_details,
            }),
        }
    }
}

impl Drop for ChainRun {
    fn drop(&mut self) {
        for (entry, run) in self.chain.entries.iter().zip(self.slots.drain(..)) {
            if let (Slot::Held(instance), FilterPool::Component(pool)) = (run.slot, &entry.pool) {
                pool.release(instance);
            }
        }
    }
}

fn to_step(action: Action, phase: Phase, may_retry: bool) -> Result<Step, FilterFailure> {
    let refuse = |what: &str| Err(FilterFailure::trap(format!("{}: {what}", phase.name())));
    match action {
        Action::Continue => Ok(Step::Continue),
        Action::Respond(reply) => local_reply(reply, phase).map(Step::Respond),
        Action::ContinueAfter(_) if phase == Phase::Done => Ok(Step::Continue),
        Action::ContinueAfter(ms) => Ok(Step::Pause(Duration::from_millis(ms.into()))),
        Action::Retry(_) if phase != Phase::ResponseHeaders => {
            refuse("retry is only allowed in on-response-headers")
        }
        Action::Retry(_) if !may_retry => {
            refuse("retry from a filter whose phases do not include `retry`")
        }
        Action::Retry(r) => Ok(Step::Retry(Duration::from_millis(r.delay_ms.into()))),
    }
}

fn local_reply(reply: LocalResponse, phase: Phase) -> Result<LocalReply, FilterFailure> {
    let invalid = |what: String| FilterFailure::trap(format!("{}: respond: {what}", phase.name()));
    let status = StatusCode::from_u16(reply.status)
        .map_err(|_| invalid(format!("invalid status {}", reply.status)))?;
    let mut head = http::Response::new(()).into_parts().0;
    head.status = status;
    for (name, value) in reply.headers {
        let n = HeaderName::from_bytes(name.as_bytes())
            .map_err(|_| invalid(format!("invalid header name {name:?}")))?;
        let v = HeaderValue::from_str(&value)
            .map_err(|_| invalid(format!("invalid value for header {name:?}")))?;
        head.headers.append(n, v);
    }
    head.headers.insert(
        http::header::CONTENT_LENGTH,
        HeaderValue::from(reply.body.len()),
    );
    Ok(LocalReply {
        head,
        body: Bytes::from(reply.body),
    })
}
