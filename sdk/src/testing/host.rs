//! [`TestHost`]: the proxy's side of one filter, in memory.

use std::cell::RefCell;
use std::collections::BTreeMap;
use std::rc::Rc;
use std::time::Duration;

use super::current::{Call, Instance, Phase};
use super::filter::TestFilter;
use super::metrics::Metrics;
use super::shared::Shared;
use crate::http::{HttpRequest, HttpResponse};
use crate::log::Level;
use crate::shared::Entry;
use crate::sys::host::{self as wit, LogLevel, SharedEntry, SharedError};
use crate::{Filter, export};

/// 2026-01-01T00:00:00Z, where a test host's wall clock starts.
const START_UNIX_NANOS: u64 = 1_767_225_600 * 1_000_000_000;
/// Where its monotonic clock starts (not 0, which code may take for "never").
const START_MONOTONIC_NANOS: u64 = 1_000_000_000;
/// How many property sets one instance may register.
const MAX_PROPERTY_SETS: usize = 64;

/// A line a filter logged.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LogLine {
    /// Its level.
    pub level: Level,
    /// The message.
    pub message: String,
}

/// What answers a filter's HTTP callouts.
type Handler = Box<dyn FnMut(&HttpRequest) -> Result<HttpResponse, String>>;

/// The host's state: one filter's, shared by its instances.
pub(crate) struct HostState {
    name: String,
    unix_nanos: u64,
    monotonic_nanos: u64,
    random: u64,
    log_level: Level,
    logs: Vec<LogLine>,
    pub(crate) metrics: Metrics,
    pub(crate) shared: Shared,
    http_table: BTreeMap<String, HttpResponse>,
    http_handler: Option<Handler>,
    http_calls: Vec<HttpRequest>,
    requests: u64,
}

/// The proxy's side of one filter, in memory: what a test builds filters
/// with and reads results from.
///
/// It stands for one entry of the proxy's `filters:` (one module, one
/// name): every instance made with [`init`](TestHost::init) sees the same
/// shared state, metrics, log, clocks and callouts, as the proxy's
/// instances of one filter do. Cloning it gives another handle on the same
/// host.
///
/// Its clocks stand still until a test moves them (wall clock
/// 2026-01-01T00:00:00Z); its random numbers come from a fixed seed; every
/// log level is enabled; a callout nobody answers is refused.
#[derive(Clone)]
pub struct TestHost {
    pub(crate) state: Rc<RefCell<HostState>>,
}

impl Default for TestHost {
    fn default() -> TestHost {
        TestHost::new()
    }
}

impl std::fmt::Debug for TestHost {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TestHost")
            .field("filter_name", &self.state.borrow().name)
            .finish_non_exhaustive()
    }
}

impl TestHost {
    /// A host for a filter named `test`, with random seed 0.
    pub fn new() -> TestHost {
        TestHost::with_seed(0)
    }

    /// A host whose random numbers (the seeds of the filters' generators)
    /// come from `seed`: the same seed, the same numbers.
    pub fn with_seed(seed: u64) -> TestHost {
        TestHost {
            state: Rc::new(RefCell::new(HostState {
                name: "test".into(),
                unix_nanos: START_UNIX_NANOS,
                monotonic_nanos: START_MONOTONIC_NANOS,
                random: seed,
                log_level: Level::Trace,
                logs: Vec::new(),
                metrics: Metrics::default(),
                shared: Shared::default(),
                http_table: BTreeMap::new(),
                http_handler: None,
                http_calls: Vec::new(),
                requests: 0,
            })),
        }
    }

    /// Builds an instance of `F` as the proxy's `init` does: `config` is the
    /// chain entry's `config` as JSON text (`"null"` for none), parsed into
    /// `F::Config`, then `F::new`, then `phases`. `Err` is the message the
    /// proxy would refuse the config with.
    pub fn init<F: Filter>(&self, config: &str) -> Result<TestFilter<F>, String> {
        let call = Call {
            host: self.state.clone(),
            instance: Instance::default(),
            exchange: None,
            phase: Phase::Init,
        };
        let (built, call) = super::current::enter(call, || {
            let filter = export::build::<F>(config)?;
            let phases = filter.phases();
            Ok::<_, String>((filter, phases))
        });
        let (filter, phases) = built?;
        Ok(TestFilter::new(self.clone(), filter, phases, call.instance))
    }

    /// [`init`](TestHost::init) with the config as a JSON value.
    pub fn init_json<F: Filter>(&self, config: serde_json::Value) -> Result<TestFilter<F>, String> {
        self.init(&config.to_string())
    }

    /// Sets the filter's name (property `filter.name`; default `test`).
    pub fn set_filter_name(&self, name: &str) {
        self.state.borrow_mut().name = name.to_string();
    }

    /// Writes lines at `level` and above only (default: every level), as
    /// the proxy's log level does; `log::enabled` answers accordingly.
    pub fn set_log_level(&self, level: Level) {
        self.state.borrow_mut().log_level = level;
    }

    /// The lines logged so far, in order.
    pub fn logs(&self) -> Vec<LogLine> {
        self.state.borrow().logs.clone()
    }

    /// Whether a line at `level` contains `text`.
    pub fn logged(&self, level: Level, text: &str) -> bool {
        let state = self.state.borrow();
        state
            .logs
            .iter()
            .any(|line| line.level == level && line.message.contains(text))
    }

    /// Moves both clocks forward by `by`.
    pub fn advance(&self, by: Duration) {
        let nanos = u64::try_from(by.as_nanos()).unwrap_or(u64::MAX);
        let mut state = self.state.borrow_mut();
        state.unix_nanos = state.unix_nanos.saturating_add(nanos);
        state.monotonic_nanos = state.monotonic_nanos.saturating_add(nanos);
    }

    /// Sets the wall clock (`time::now_unix_nanos`), leaving the monotonic
    /// one.
    pub fn set_unix_nanos(&self, unix_nanos: u64) {
        self.state.borrow_mut().unix_nanos = unix_nanos;
    }

    /// The value of counter `name` (as the filter names it, without
    /// `weft_user_`) with `labels` (in any order); 0 if never counted.
    pub fn counter(&self, name: &str, labels: &[(&str, &str)]) -> u64 {
        self.state.borrow().metrics.counter(name, labels)
    }

    /// The value of gauge `name` with `labels`, if it was ever set.
    pub fn gauge(&self, name: &str, labels: &[(&str, &str)]) -> Option<f64> {
        self.state.borrow().metrics.gauge_value(name, labels)
    }

    /// The values histogram `name` with `labels` observed, in order.
    pub fn histogram(&self, name: &str, labels: &[(&str, &str)]) -> Vec<f64> {
        self.state.borrow().metrics.histogram(name, labels)
    }

    /// The shared-state entry under `key`.
    pub fn shared(&self, key: &str) -> Option<Entry> {
        let (value, cas) = self.state.borrow().shared.get(key)?;
        Some(Entry { value, cas })
    }

    /// The keys in shared state, sorted.
    pub fn shared_keys(&self) -> Vec<String> {
        self.state.borrow().shared.keys()
    }

    /// Writes `value` under `key` whatever is there (a new version), to set
    /// up shared state before a phase.
    pub fn set_shared(&self, key: &str, value: impl AsRef<[u8]>) {
        self.state.borrow_mut().shared.put(key, value.as_ref());
    }

    /// Lets shared state hold at most `keys` keys (the proxy's limit is
    /// 100000): a write of a new key past it fails with `TooLarge`.
    pub fn set_shared_max_keys(&self, keys: usize) {
        self.state.borrow_mut().shared.max_keys = keys;
    }

    /// Answers callouts to `url` (exactly; any method) with `response`.
    /// Checked before the handler of [`on_http`](TestHost::on_http).
    pub fn http_response(&self, url: &str, response: HttpResponse) {
        let mut state = self.state.borrow_mut();
        state.http_table.insert(url.to_string(), response);
    }

    /// Answers the callouts the table of
    /// [`http_response`](TestHost::http_response) does not: `Err` is the
    /// error the filter sees (cannot connect, timed out, …).
    pub fn on_http(
        &self,
        handler: impl FnMut(&HttpRequest) -> Result<HttpResponse, String> + 'static,
    ) {
        self.state.borrow_mut().http_handler = Some(Box::new(handler));
    }

    /// The callouts made so far, in order.
    pub fn http_calls(&self) -> Vec<HttpRequest> {
        self.state.borrow().http_calls.clone()
    }

    /// The next request's number, for its default id.
    pub(crate) fn next_request(&self) -> u64 {
        let mut state = self.state.borrow_mut();
        state.requests += 1;
        state.requests
    }

    /// The clocks now: wall-clock and monotonic nanoseconds.
    pub(crate) fn clocks(&self) -> (u64, u64) {
        let state = self.state.borrow();
        (state.unix_nanos, state.monotonic_nanos)
    }
}

fn level(level: LogLevel) -> Level {
    match level {
        LogLevel::Trace => Level::Trace,
        LogLevel::Debug => Level::Debug,
        LogLevel::Info => Level::Info,
        LogLevel::Warn => Level::Warn,
        LogLevel::Error => Level::Error,
    }
}

// ---- the `host` interface ----

impl Call {
    pub(crate) fn log(&mut self, at: LogLevel, message: &str) {
        if self.log_enabled(at) {
            self.host.borrow_mut().logs.push(LogLine {
                level: level(at),
                message: message.to_string(),
            });
        }
    }

    pub(crate) fn log_enabled(&mut self, at: LogLevel) -> bool {
        level(at) >= self.host.borrow().log_level
    }

    pub(crate) fn now_unix_nanos(&mut self) -> u64 {
        self.host.borrow().unix_nanos
    }

    pub(crate) fn monotonic_nanos(&mut self) -> u64 {
        self.host.borrow().monotonic_nanos
    }

    pub(crate) fn random_u64(&mut self) -> u64 {
        let mut host = self.host.borrow_mut();
        host.random = host.random.wrapping_add(0x9e37_79b9_7f4a_7c15);
        crate::random::split_mix(host.random)
    }

    pub(crate) fn counter_add(&mut self, name: &str, labels: &[(&str, &str)], value: u64) {
        let mut host = self.host.borrow_mut();
        host.metrics.counter_add(name, labels, value)
    }

    pub(crate) fn gauge_set(&mut self, name: &str, labels: &[(&str, &str)], value: f64) {
        let mut host = self.host.borrow_mut();
        host.metrics.gauge(name, labels, |_| value)
    }

    pub(crate) fn gauge_add(&mut self, name: &str, labels: &[(&str, &str)], delta: f64) {
        let mut host = self.host.borrow_mut();
        host.metrics.gauge(name, labels, |v| v + delta)
    }

    pub(crate) fn histogram_observe(&mut self, name: &str, labels: &[(&str, &str)], value: f64) {
        let mut host = self.host.borrow_mut();
        host.metrics.histogram_observe(name, labels, value)
    }

    pub(crate) fn shared_get(&mut self, key: &str) -> Option<SharedEntry> {
        let (value, cas) = self.host.borrow().shared.get(key)?;
        Some(SharedEntry { value, cas })
    }

    pub(crate) fn shared_set(
        &mut self,
        key: &str,
        value: &[u8],
        cas: u64,
    ) -> Result<u64, SharedError> {
        self.host.borrow_mut().shared.set(key, value, cas)
    }

    pub(crate) fn shared_delete(&mut self, key: &str, cas: u64) -> Result<(), SharedError> {
        self.host.borrow_mut().shared.delete(key, cas)
    }

    pub(crate) fn http_call(
        &mut self,
        request: wit::HttpRequest<'_>,
    ) -> Result<wit::HttpResponse, String> {
        let request = HttpRequest {
            method: request.method.to_string(),
            url: request.url.to_string(),
            headers: request.headers.iter().map(|h| (*h).clone()).collect(),
            body: request.body.to_vec(),
            timeout_ms: request.timeout_ms,
        };
        let mut host = self.host.borrow_mut();
        host.http_calls.push(request.clone());
        if !request.url.starts_with("http://") {
            return Err(format!(
                "only http:// URLs are supported, not {:?}",
                request.url
            ));
        }
        let answer = if let Some(response) = host.http_table.get(&request.url) {
            Ok(response.clone())
        } else if let Some(mut handler) = host.http_handler.take() {
            // The handler is test code: run it without the host borrowed.
            drop(host);
            let answer = handler(&request);
            self.host.borrow_mut().http_handler = Some(handler);
            answer
        } else {
            let authority = request.url["http://".len()..]
                .split(['/', '?'])
                .next()
                .unwrap_or_default();
            Err(format!(
                "{authority} is not allowed: add it to filters.{}.allow_http \
                 (weft_sdk::testing: no answer was given for {})",
                host.name, request.url
            ))
        };
        answer.map(|r| wit::HttpResponse {
            status: r.status,
            headers: r.headers,
            body: r.body,
        })
    }

    pub(crate) fn property(&mut self, name: &str) -> Option<String> {
        if name == "filter.name" {
            return Some(self.host.borrow().name.clone());
        }
        let exchange = self.exchange.as_ref()?;
        if let Some(field) = name.strip_prefix("request.") {
            let request = &exchange.request;
            match field.strip_prefix("header.") {
                Some(header) => return request.headers.first(header),
                None => match field {
                    "method" => return Some(request.method.clone()),
                    "path" => return Some(request.path.clone()),
                    "authority" => return request.headers.first("host"),
                    "attempt" => {
                        return (exchange.attempt > 0).then(|| exchange.attempt.to_string());
                    }
                    "retryable" => {
                        return (exchange.attempt > 0).then(|| exchange.retryable.to_string());
                    }
                    "start_unix_ns" => return Some(exchange.started.0.to_string()),
                    "elapsed_ns" => {
                        let now = self.host.borrow().monotonic_nanos;
                        return Some(now.saturating_sub(exchange.started.1).to_string());
                    }
                    _ => {}
                },
            }
        } else if let Some(field) = name.strip_prefix("response.") {
            let response = exchange
                .response
                .as_ref()
                .filter(|_| self.phase.has_response())?;
            return match field.strip_prefix("header.") {
                Some(header) => response.headers.first(header),
                None if field == "status" => Some(response.status.to_string()),
                None => None,
            };
        }
        exchange.props.get(name).cloned()
    }

    pub(crate) fn property_set(&mut self, names: &[&str]) -> u32 {
        let sets = &mut self.instance.property_sets;
        if sets.len() >= MAX_PROPERTY_SETS {
            panic!(
                "property-set: at most {MAX_PROPERTY_SETS} sets per instance (register a set once, in init)"
            );
        }
        sets.push(names.iter().map(|n| n.to_string()).collect());
        (sets.len() - 1) as u32
    }

    pub(crate) fn properties(&mut self, id: u32) -> Vec<u8> {
        let Some(names) = self.instance.property_sets.get(id as usize).cloned() else {
            panic!("properties: no property set {id} (ids come from property-set)")
        };
        let mut packed = Vec::new();
        for name in names {
            match self.property(&name) {
                Some(value) => {
                    packed.extend_from_slice(&(value.len() as u32).to_le_bytes());
                    packed.extend_from_slice(value.as_bytes());
                }
                None => packed.extend_from_slice(&[0xff; 4]),
            }
        }
        packed
    }
}
