//! The host side of the contract: what a filter's imports do. Each instance's
//! store holds a `HostState`; the request it works on arrives in `exchange`
//! for the duration of one phase call.

use std::sync::Arc;
use std::time::{Instant, SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use http::header::{HeaderMap, HeaderName, HeaderValue};
use wasmtime::component::Resource;
use wasmtime::{ResourceLimiter, format_err};

use super::bindings::weft::filter::host::{self, LogLevel, SharedEntry, SharedError};
use super::bindings::weft::filter::host::{HttpRequest, HttpResponse};
use super::bindings::weft::filter::types::{self, HostRequest, HostResponse};
use super::callout::Callouts;
use super::exchange::{Exchange, Phase};
use super::shared::SharedState;
use crate::telemetry::{Labels, Registry};

/// The host-side handle of the `request` resource: the request in the
/// current exchange. Filters only ever borrow it.
pub struct RequestHandle;
/// The host-side handle of the `response` resource.
pub struct ResponseHandle;

/// Prefix of every metric a filter defines.
const METRIC_PREFIX: &str = "weft_filter_";

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
    /// The request being worked on (moved in for each call).
    pub exchange: Exchange,
    /// The running call's clock: its deadline, when it started, and how
    /// long it waited on callouts (which does not count).
    pub clock: CallClock,
}

/// Time accounting of the running call, for its deadline.
#[derive(Debug, Clone, Copy)]
pub struct CallClock {
    /// The deadline of the call's own (guest) time.
    pub deadline: std::time::Duration,
    /// When the call started.
    pub started: Instant,
    /// Time spent waiting on callouts.
    pub waited: std::time::Duration,
}

impl CallClock {
    /// Guest time left before the deadline, if any.
    pub fn left(&self) -> Option<std::time::Duration> {
        let spent = self.started.elapsed().saturating_sub(self.waited);
        self.deadline.checked_sub(spent).filter(|d| !d.is_zero())
    }
}

impl HostState {
    fn request_mut(&mut self, what: &str) -> wasmtime::Result<&mut http::request::Parts> {
        let phase = self.exchange.phase;
        if !phase.request_writable() {
            return Err(format_err!(
                "request.{what} called in {}: the request is read-only in response phases",
                phase.name()
            ));
        }
        self.request()
    }

    fn request(&mut self) -> wasmtime::Result<&mut http::request::Parts> {
        self.exchange
            .request
            .as_mut()
            .ok_or_else(|| format_err!("no request in this call"))
    }

    fn response(&mut self) -> wasmtime::Result<&mut http::response::Parts> {
        self.exchange
            .response
            .as_mut()
            .ok_or_else(|| format_err!("no response in this phase"))
    }

    fn response_mut(&mut self, what: &str) -> wasmtime::Result<&mut http::response::Parts> {
        if self.exchange.phase == Phase::Done {
            return Err(format_err!(
                "response.{what} called in on-done: the response is already sent"
            ));
        }
        self.response()
    }
}

// ---- header access shared by request and response ----

fn header(map: &HeaderMap, name: &str) -> Option<String> {
    map.get(name).map(lossy)
}

fn header_all(map: &HeaderMap, name: &str) -> Vec<String> {
    map.get_all(name).iter().map(lossy).collect()
}

fn header_names(map: &HeaderMap) -> Vec<String> {
    map.keys().map(|k| k.as_str().to_string()).collect()
}

fn lossy(v: &HeaderValue) -> String {
    String::from_utf8_lossy(v.as_bytes()).into_owned()
}

fn parse_header(name: &str, value: &str) -> wasmtime::Result<(HeaderName, HeaderValue)> {
    let n = HeaderName::from_bytes(name.as_bytes())
        .map_err(|_| format_err!("invalid header name {name:?}"))?;
    let v = HeaderValue::from_str(value)
        .map_err(|_| format_err!("invalid value for header {name:?}: {value:?}"))?;
    Ok((n, v))
}

fn set_header(map: &mut HeaderMap, name: &str, value: &str) -> wasmtime::Result<()> {
    let (n, v) = parse_header(name, value)?;
    map.insert(n, v);
    Ok(())
}

fn append_header(map: &mut HeaderMap, name: &str, value: &str) -> wasmtime::Result<()> {
    let (n, v) = parse_header(name, value)?;
    map.append(n, v);
    Ok(())
}

fn remove_header(map: &mut HeaderMap, name: &str) {
    // An invalid name cannot be present: nothing to remove.
    if let Ok(n) = HeaderName::from_bytes(name.as_bytes()) {
        map.remove(n);
    }
}

fn set_content_length(map: &mut HeaderMap, len: usize) {
    map.remove(http::header::TRANSFER_ENCODING);
    map.insert(http::header::CONTENT_LENGTH, HeaderValue::from(len));
}

impl types::Host for HostState {}

impl HostRequest for HostState {
    fn method(&mut self, _: Resource<RequestHandle>) -> wasmtime::Result<String> {
        Ok(self.request()?.method.as_str().to_string())
    }

    fn path(&mut self, _: Resource<RequestHandle>) -> wasmtime::Result<String> {
        let uri = &self.request()?.uri;
        Ok(uri
            .path_and_query()
            .map(|p| p.as_str().to_string())
            .unwrap_or_else(|| "/".to_string()))
    }

    fn set_path(&mut self, _: Resource<RequestHandle>, path: String) -> wasmtime::Result<()> {
        let req = self.request_mut("set-path")?;
        if !path.starts_with('/') {
            return Err(format_err!("set-path: {path:?} does not start with '/'"));
        }
        let pq: http::uri::PathAndQuery = path
            .parse()
            .map_err(|_| format_err!("set-path: {path:?} is not a valid path"))?;
        let mut parts = std::mem::take(&mut req.uri).into_parts();
        parts.path_and_query = Some(pq);
        req.uri = http::Uri::from_parts(parts).map_err(|e| format_err!("set-path: {e}"))?;
        Ok(())
    }

    fn authority(&mut self, _: Resource<RequestHandle>) -> wasmtime::Result<Option<String>> {
        let req = self.request()?;
        Ok(req
            .uri
            .authority()
            .map(|a| a.as_str().to_string())
            .or_else(|| header(&req.headers, "host")))
    }

    fn header(
        &mut self,
        _: Resource<RequestHandle>,
        name: String,
    ) -> wasmtime::Result<Option<String>> {
        Ok(header(&self.request()?.headers, &name))
    }

    fn header_all(
        &mut self,
        _: Resource<RequestHandle>,
        name: String,
    ) -> wasmtime::Result<Vec<String>> {
        Ok(header_all(&self.request()?.headers, &name))
    }

    fn header_names(&mut self, _: Resource<RequestHandle>) -> wasmtime::Result<Vec<String>> {
        Ok(header_names(&self.request()?.headers))
    }

    fn set_header(
        &mut self,
        _: Resource<RequestHandle>,
        name: String,
        value: String,
    ) -> wasmtime::Result<()> {
        set_header(&mut self.request_mut("set-header")?.headers, &name, &value)
    }

    fn append_header(
        &mut self,
        _: Resource<RequestHandle>,
        name: String,
        value: String,
    ) -> wasmtime::Result<()> {
        append_header(
            &mut self.request_mut("append-header")?.headers,
            &name,
            &value,
        )
    }

    fn remove_header(&mut self, _: Resource<RequestHandle>, name: String) -> wasmtime::Result<()> {
        remove_header(&mut self.request_mut("remove-header")?.headers, &name);
        Ok(())
    }

    fn body(&mut self, _: Resource<RequestHandle>) -> wasmtime::Result<Option<Vec<u8>>> {
        Ok(self.exchange.request_body.as_ref().map(|b| b.to_vec()))
    }

    fn set_body(&mut self, _: Resource<RequestHandle>, body: Vec<u8>) -> wasmtime::Result<()> {
        if self.exchange.phase != Phase::RequestBody {
            return Err(format_err!(
                "request.set-body called in {}: only allowed in on-request-body",
                self.exchange.phase.name()
            ));
        }
        set_content_length(&mut self.request()?.headers, body.len());
        self.exchange.request_body = Some(Bytes::from(body));
        Ok(())
    }

    fn set_timeout_ms(&mut self, _: Resource<RequestHandle>, ms: u32) -> wasmtime::Result<()> {
        self.request_mut("set-timeout-ms")?;
        if ms == 0 {
            return Err(format_err!(
                "set-timeout-ms: the timeout must be at least 1 ms"
            ));
        }
        self.exchange.upstream_timeout = Some(std::time::Duration::from_millis(ms.into()));
        Ok(())
    }

    fn drop(&mut self, _: Resource<RequestHandle>) -> wasmtime::Result<()> {
        Ok(())
    }
}

impl HostResponse for HostState {
    fn status(&mut self, _: Resource<ResponseHandle>) -> wasmtime::Result<u16> {
        Ok(self.response()?.status.as_u16())
    }

    fn set_status(&mut self, _: Resource<ResponseHandle>, status: u16) -> wasmtime::Result<()> {
        let resp = self.response_mut("set-status")?;
        resp.status = http::StatusCode::from_u16(status)
            .map_err(|_| format_err!("set-status: {status} is not a valid status code"))?;
        Ok(())
    }

    fn header(
        &mut self,
        _: Resource<ResponseHandle>,
        name: String,
    ) -> wasmtime::Result<Option<String>> {
        Ok(header(&self.response()?.headers, &name))
    }

    fn header_all(
        &mut self,
        _: Resource<ResponseHandle>,
        name: String,
    ) -> wasmtime::Result<Vec<String>> {
        Ok(header_all(&self.response()?.headers, &name))
    }

    fn header_names(&mut self, _: Resource<ResponseHandle>) -> wasmtime::Result<Vec<String>> {
        Ok(header_names(&self.response()?.headers))
    }

    fn set_header(
        &mut self,
        _: Resource<ResponseHandle>,
        name: String,
        value: String,
    ) -> wasmtime::Result<()> {
        set_header(&mut self.response_mut("set-header")?.headers, &name, &value)
    }

    fn append_header(
        &mut self,
        _: Resource<ResponseHandle>,
        name: String,
        value: String,
    ) -> wasmtime::Result<()> {
        append_header(
            &mut self.response_mut("append-header")?.headers,
            &name,
            &value,
        )
    }

    fn remove_header(&mut self, _: Resource<ResponseHandle>, name: String) -> wasmtime::Result<()> {
        remove_header(&mut self.response_mut("remove-header")?.headers, &name);
        Ok(())
    }

    fn body(&mut self, _: Resource<ResponseHandle>) -> wasmtime::Result<Option<Vec<u8>>> {
        Ok(self.exchange.response_body.as_ref().map(|b| b.to_vec()))
    }

    fn set_body(&mut self, _: Resource<ResponseHandle>, body: Vec<u8>) -> wasmtime::Result<()> {
        if self.exchange.phase != Phase::ResponseBody {
            return Err(format_err!(
                "response.set-body called in {}: only allowed in on-response-body",
                self.exchange.phase.name()
            ));
        }
        set_content_length(&mut self.response()?.headers, body.len());
        self.exchange.response_body = Some(Bytes::from(body));
        Ok(())
    }

    fn drop(&mut self, _: Resource<ResponseHandle>) -> wasmtime::Result<()> {
        Ok(())
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

impl HostState {
    fn metric(&self, name: &str, labels: Vec<(String, String)>) -> (String, Labels) {
        let mut full = String::with_capacity(METRIC_PREFIX.len() + name.len());
        full.push_str(METRIC_PREFIX);
        full.push_str(name);
        (full, labels)
    }
}

impl host::Host for HostState {
    fn log(&mut self, level: LogLevel, message: String) -> wasmtime::Result<()> {
        let filter = &*self.identity.name;
        let request_id = &self.exchange.props.request_id;
        match tracing_level(level) {
            tracing::Level::TRACE => {
                tracing::trace!(target: "weft::filter", filter, request_id, "{message}")
            }
            tracing::Level::DEBUG => {
                tracing::debug!(target: "weft::filter", filter, request_id, "{message}")
            }
            tracing::Level::INFO => {
                tracing::info!(target: "weft::filter", filter, request_id, "{message}")
            }
            tracing::Level::WARN => {
                tracing::warn!(target: "weft::filter", filter, request_id, "{message}")
            }
            _ => tracing::error!(target: "weft::filter", filter, request_id, "{message}"),
        }
        Ok(())
    }

    fn log_enabled(&mut self, level: LogLevel) -> wasmtime::Result<bool> {
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
        let (name, labels) = self.metric(&name, labels);
        Ok(self.identity.metrics.counter_add(&name, labels, value)?)
    }

    fn gauge_set(
        &mut self,
        name: String,
        labels: Vec<(String, String)>,
        value: f64,
    ) -> wasmtime::Result<()> {
        let (name, labels) = self.metric(&name, labels);
        Ok(self.identity.metrics.gauge_set(&name, labels, value)?)
    }

    fn gauge_add(
        &mut self,
        name: String,
        labels: Vec<(String, String)>,
        delta: f64,
    ) -> wasmtime::Result<()> {
        let (name, labels) = self.metric(&name, labels);
        Ok(self.identity.metrics.gauge_add(&name, labels, delta)?)
    }

    fn histogram_observe(
        &mut self,
        name: String,
        labels: Vec<(String, String)>,
        value: f64,
    ) -> wasmtime::Result<()> {
        let (name, labels) = self.metric(&name, labels);
        Ok(self
            .identity
            .metrics
            .histogram_observe(&name, labels, value)?)
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
        let started = Instant::now();
        let result = self.identity.callouts.call(request, &self.identity.name);
        self.clock.waited += started.elapsed();
        Ok(result)
    }

    fn property(&mut self, name: String) -> wasmtime::Result<Option<String>> {
        Ok(match name.as_str() {
            "filter.name" => Some(self.identity.name.to_string()),
            _ => self.exchange.props.get(&name),
        })
    }
}
