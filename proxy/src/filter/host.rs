//! The host side of the contract: what a filter's imports do. Each instance's
//! store holds a `HostState`; the request it works on arrives in `exchange`
//! for the duration of one phase call. The `request` and `response`
//! interfaces are in [`super::accessors`].

use std::borrow::Cow;
use std::sync::Arc;
use std::time::{Instant, SystemTime, UNIX_EPOCH};

use wasmtime::{ResourceLimiter, format_err};

use super::bindings::weft::filter::host::{self, LogLevel, SharedEntry, SharedError};
use super::bindings::weft::filter::host::{HttpRequest, HttpResponse};
use super::callout::Callouts;
use super::deadline::{CallSlot, runqueue};
use super::exchange::Exchange;
use super::shared::SharedState;
use crate::telemetry::Registry;

/// What every instance of one filter shares: its name, shared state, the
/// process metrics and the callouts it is granted.
pub struct FilterIdentity {
    /// The filter's name in the config (`filters.<name>`).
    pub name: Arc<str>,
    /// State shared by all instances of this filter.
    pub shared: Arc<SharedState>,
    /// The process registry.
    pub metrics: Arc<Registry>,
    /// Origin of `monotonic-nanos`.
    pub epoch: Instant,
    /// The callouts this filter may make.
    pub callouts: Arc<Callouts>,
    /// Where its log lines go instead of the proxy's log
    /// (`filters.<name>.log_file`).
    pub log_file: Option<&'static crate::logging::files::LogFile>,
}

/// Caps an instance's linear memory and remembers that the cap was hit.
pub struct MemoryCap {
    /// The cap in bytes.
    pub bytes: usize,
    /// Set when a growth past the cap was refused.
    pub hit: bool,
}

impl ResourceLimiter for MemoryCap {
    fn memory_growing(
        &mut self,
        _current: usize,
        desired: usize,
        _maximum: Option<usize>,
    ) -> wasmtime::Result<bool> {
        if desired > self.bytes {
            self.hit = true;
            return Err(format_err!(
                "memory cap of {} MiB exceeded (asked for {} MiB)",
                self.bytes >> 20,
                desired.div_ceil(1 << 20)
            ));
        }
        Ok(true)
    }

    fn table_growing(
        &mut self,
        _current: usize,
        desired: usize,
        _maximum: Option<usize>,
    ) -> wasmtime::Result<bool> {
        Ok(desired <= 100_000)
    }
}

/// The data of one filter instance's store.
pub struct HostState {
    /// Memory cap of this instance.
    pub memory: MemoryCap,
    /// Who this instance is.
    pub identity: Arc<FilterIdentity>,
    /// The request being worked on (swapped in for each call).
    pub exchange: Box<Exchange>,
    /// The running call's clock: its deadline, when it started, and how
    /// long it waited on callouts (which does not count).
    pub clock: CallClock,
    /// The property sets the guest registered, by id.
    pub property_sets: Vec<Box<[String]>>,
    /// The panic message weft-sdk's panic hook logged (`filter panicked
    /// at …`), cut at [`MAX_PANIC_MESSAGE`]: the trap that follows reports
    /// it. Never cleared: a panic traps, and a trapped instance is dropped.
    pub panic: Option<String>,
}

/// Longest panic message kept for a trap report.
pub const MAX_PANIC_MESSAGE: usize = 1024;

/// How many property sets one instance may register.
const MAX_PROPERTY_SETS: usize = 64;
/// What `properties` writes for an absent property instead of a length.
const ABSENT: [u8; 4] = [0xff; 4];

/// Time accounting of the running call, for its deadline.
pub struct CallClock {
    /// The deadline of the call's own (guest) time.
    pub deadline: std::time::Duration,
    /// When the call started.
    pub started: Instant,
    /// Time spent waiting on callouts.
    pub waited: std::time::Duration,
    /// How long this call may wait on callouts in all: the least of the
    /// phase's and what is left of the request's callout budget.
    pub callout_budget: std::time::Duration,
    /// [`CallSlot::stalled`] when the call started.
    pub stalled_before: std::time::Duration,
    /// The thread's run-queue reading when the call started
    /// ([`runqueue::mark`]).
    pub queued_before: runqueue::Mark,
    /// Where the deadline watchdog reads when this call's deadline passes.
    pub slot: Arc<CallSlot>,
}

impl CallClock {
    /// Guest time left before the deadline, if any. Waits on callouts and
    /// stalls of the whole process do not count.
    pub fn left(&self) -> Option<std::time::Duration> {
        self.left_without(self.slot.stalled().saturating_sub(self.stalled_before))
    }

    /// Guest time left when `not_running` of the wall time since the call
    /// started (besides its callouts) was not its own.
    fn left_without(&self, not_running: std::time::Duration) -> Option<std::time::Duration> {
        let spent = self
            .started
            .elapsed()
            .saturating_sub(self.waited)
            .saturating_sub(not_running);
        self.deadline.checked_sub(spent).filter(|d| !d.is_zero())
    }

    /// Like [`CallClock::left`], and when that finds the call overdue, the
    /// time its thread waited on a run queue does not count either: read
    /// now (a system call, only for calls overdue by wall clock). Stalls of
    /// the whole process also show as run-queue wait (a CPU quota's
    /// throttling does), so the larger of the two is subtracted, not both.
    pub fn left_on_cpu(&self) -> Option<std::time::Duration> {
        self.left().or_else(|| {
            let stalled = self.slot.stalled().saturating_sub(self.stalled_before);
            let queued = runqueue::queued_since(
                self.queued_before,
                self.started,
                super::deadline::period(self.deadline),
            )?;
            self.left_without(stalled.max(queued))
        })
    }

    /// What the store does when the epoch advances: stop the call when its
    /// own time is up, else tell the watchdog when it now will be.
    pub fn on_epoch(&self) -> wasmtime::UpdateDeadline {
        match self.left_on_cpu() {
            Some(left) => {
                self.slot.rearm(Instant::now() + left);
                wasmtime::UpdateDeadline::Continue(1)
            }
            None => wasmtime::UpdateDeadline::Interrupt,
        }
    }
}

impl HostState {
    fn property_value(&self, name: &str) -> Option<Cow<'_, str>> {
        match name {
            "filter.name" => Some(Cow::Borrowed(&self.identity.name)),
            _ => self.exchange.property(name),
        }
    }
}

fn tracing_level(level: LogLevel) -> tracing::Level {
    match level {
        LogLevel::Trace => tracing::Level::TRACE,
        LogLevel::Debug => tracing::Level::DEBUG,
        LogLevel::Info => tracing::Level::INFO,
        LogLevel::Warn => tracing::Level::WARN,
        LogLevel::Error => tracing::Level::ERROR,
    }
}

/// `message` cut at `max` bytes, on a character boundary.
fn cut_message(message: &str, max: usize) -> String {
    let mut end = message.len().min(max);
    while !message.is_char_boundary(end) {
        end -= 1;
    }
    message[..end].to_string()
}

impl host::Host for HostState {
    fn log(&mut self, level: LogLevel, message: String) -> wasmtime::Result<()> {
        if matches!(level, LogLevel::Error) && message.starts_with("filter panicked") {
            self.panic = Some(cut_message(&message, MAX_PANIC_MESSAGE));
        }
        if let Some(file) = self.identity.log_file {
            if self.log_enabled(level)? {
                file.line(&message);
            }
            return Ok(());
        }
        if self.log_enabled(level)? {
            crate::logging::filter_line(
                tracing_level(level),
                &self.identity.name,
                &self.exchange.props.request_id,
                &message,
            );
        }
        Ok(())
    }

    fn log_enabled(&mut self, level: LogLevel) -> wasmtime::Result<bool> {
        // A filter's own log file takes `info` and above whatever the
        // proxy's log level: an access log does not vanish with `warn`.
        if self.identity.log_file.is_some()
            && matches!(level, LogLevel::Info | LogLevel::Warn | LogLevel::Error)
        {
            return Ok(true);
        }
        Ok(match tracing_level(level) {
            tracing::Level::TRACE => {
                tracing::enabled!(target: "weft::filter", tracing::Level::TRACE)
            }
            tracing::Level::DEBUG => {
                tracing::enabled!(target: "weft::filter", tracing::Level::DEBUG)
            }
            tracing::Level::INFO => tracing::enabled!(target: "weft::filter", tracing::Level::INFO),
            tracing::Level::WARN => tracing::enabled!(target: "weft::filter", tracing::Level::WARN),
            _ => tracing::enabled!(target: "weft::filter", tracing::Level::ERROR),
        })
    }

    fn now_unix_nanos(&mut self) -> wasmtime::Result<u64> {
        Ok(SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_nanos() as u64)
            .unwrap_or(0))
    }

    fn monotonic_nanos(&mut self) -> wasmtime::Result<u64> {
        Ok(self.identity.epoch.elapsed().as_nanos() as u64)
    }

    fn random_u64(&mut self) -> wasmtime::Result<u64> {
        Ok(fastrand::u64(..))
    }

    fn counter_add(
        &mut self,
        name: String,
        labels: Vec<(String, String)>,
        value: u64,
    ) -> wasmtime::Result<()> {
        let identity = &self.identity;
        Ok(identity
            .metrics
            .filter_counter_add(&identity.name, &name, labels, value)?)
    }

    fn gauge_set(
        &mut self,
        name: String,
        labels: Vec<(String, String)>,
        value: f64,
    ) -> wasmtime::Result<()> {
        let identity = &self.identity;
        Ok(identity
            .metrics
            .filter_gauge_set(&identity.name, &name, labels, value)?)
    }

    fn gauge_add(
        &mut self,
        name: String,
        labels: Vec<(String, String)>,
        delta: f64,
    ) -> wasmtime::Result<()> {
        let identity = &self.identity;
        Ok(identity
            .metrics
            .filter_gauge_add(&identity.name, &name, labels, delta)?)
    }

    fn histogram_observe(
        &mut self,
        name: String,
        labels: Vec<(String, String)>,
        value: f64,
    ) -> wasmtime::Result<()> {
        let identity = &self.identity;
        Ok(identity
            .metrics
            .filter_histogram_observe(&identity.name, &name, labels, value)?)
    }

    fn shared_get(&mut self, key: String) -> wasmtime::Result<Option<SharedEntry>> {
        Ok(self
            .identity
            .shared
            .get(&key)
            .map(|(value, cas)| SharedEntry {
                value: value.to_vec(),
                cas,
            }))
    }

    fn shared_set(
        &mut self,
        key: String,
        value: Vec<u8>,
        cas: u64,
    ) -> wasmtime::Result<Result<u64, SharedError>> {
        Ok(self.identity.shared.set(key, value, cas))
    }

    fn shared_delete(
        &mut self,
        key: String,
        cas: u64,
    ) -> wasmtime::Result<Result<(), SharedError>> {
        Ok(self.identity.shared.delete(&key, cas))
    }

    fn http_call(
        &mut self,
        request: HttpRequest,
    ) -> wasmtime::Result<Result<HttpResponse, String>> {
        let budget = self.clock.callout_budget.saturating_sub(self.clock.waited);
        if budget.is_zero() {
            return Ok(Err(format!(
                "no callout budget left: the callout waits of this phase or request reached \
                 their limit (filters.{name}.callout_phase_budget_ms, \
                 filters.{name}.callout_request_budget_ms)",
                name = self.identity.name
            )));
        }
        // The wait does not count: no deadline runs meanwhile.
        self.clock.slot.disarm();
        let started = Instant::now();
        let result = self
            .identity
            .callouts
            .call(request, &self.identity.name, budget);
        let now = Instant::now();
        self.clock.waited += now - started;
        self.clock
            .slot
            .rearm(now + self.clock.left().unwrap_or_default());
        Ok(result)
    }

    fn property(&mut self, name: String) -> wasmtime::Result<Option<String>> {
        Ok(self.property_value(&name).map(Cow::into_owned))
    }

    fn property_set(&mut self, names: Vec<String>) -> wasmtime::Result<u32> {
        if self.property_sets.len() >= MAX_PROPERTY_SETS {
            return Err(format_err!(
                "property-set: at most {MAX_PROPERTY_SETS} sets per instance (register a set once, in init)"
            ));
        }
        self.property_sets.push(names.into_boxed_slice());
        Ok((self.property_sets.len() - 1) as u32)
    }

    fn properties(&mut self, id: u32) -> wasmtime::Result<Vec<u8>> {
        let names = self.property_sets.get(id as usize).ok_or_else(|| {
            format_err!("properties: no property set {id} (ids come from property-set)")
        })?;
        let mut packed = Vec::with_capacity(names.len() * 24);
        for name in names {
            match self.property_value(name) {
                Some(value) => {
                    packed.extend_from_slice(&(value.len() as u32).to_le_bytes());
                    packed.extend_from_slice(value.as_bytes());
                }
                None => packed.extend_from_slice(&ABSENT),
            }
        }
        Ok(packed)
    }
}
