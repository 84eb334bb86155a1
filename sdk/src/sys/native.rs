//! The host's functions on targets other than `wasm32`, with the signatures
//! of the wit-bindgen imports they stand for. With feature `testing` each
//! is answered by the phase call that [`testing`](crate::testing) is
//! running on this thread; without it each panics.

// Without `testing` the arguments go nowhere.
#![cfg_attr(not(feature = "testing"), allow(unused_variables))]

/// Runs `$body` with the running test call as `$call`.
#[cfg(feature = "testing")]
macro_rules! native {
    ($what:literal, |$call:ident| $body:expr) => {
        crate::testing::current::with($what, |$call| $body)
    };
}

/// Without feature `testing`: panics, saying how to get it.
#[cfg(not(feature = "testing"))]
macro_rules! native {
    ($what:literal, |$call:ident| $body:expr) => {
        super::unavailable($what)
    };
}

/// Why a host function cannot run here.
#[cfg(not(feature = "testing"))]
#[cold]
#[track_caller]
fn unavailable(what: &str) -> ! {
    panic!(
        "weft_sdk: {what} is a call into the Weft proxy, which is not here: a filter runs as a \
         wasm32-wasip2 component. To call filter phases in `cargo test`, enable weft-sdk's \
         `testing` feature in [dev-dependencies] and use weft_sdk::testing"
    )
}

/// The `request` interface.
pub mod request {
    /// The method.
    pub fn method() -> String {
        native!("request.method", |call| call.request_method())
    }

    /// The path with its query.
    pub fn path() -> String {
        native!("request.path", |call| call.request_path())
    }

    /// Replaces the path.
    pub fn set_path(path: &str) {
        native!("request.set-path", |call| call.request_set_path(path))
    }

    /// The authority.
    pub fn authority() -> Option<String> {
        native!("request.authority", |call| call.request_authority())
    }

    /// The first value of a header.
    pub fn header(name: &str) -> Option<String> {
        native!("request.header", |call| call
            .request_headers("header")
            .first(name))
    }

    /// Every value of a header.
    pub fn header_all(name: &str) -> Vec<String> {
        native!("request.header-all", |call| call
            .request_headers("header-all")
            .all(name))
    }

    /// The header names.
    pub fn header_names() -> Vec<String> {
        native!("request.header-names", |call| call
            .request_headers("header-names")
            .names())
    }

    /// Sets a header.
    pub fn set_header(name: &str, value: &str) {
        native!("request.set-header", |call| call
            .request_headers_mut("set-header")
            .set("request.set-header", name, value))
    }

    /// Adds a header value.
    pub fn append_header(name: &str, value: &str) {
        native!("request.append-header", |call| call
            .request_headers_mut("append-header")
            .append("request.append-header", name, value))
    }

    /// Removes a header.
    pub fn remove_header(name: &str) {
        native!("request.remove-header", |call| call
            .request_headers_mut("remove-header")
            .remove("request.remove-header", name))
    }

    /// The buffered body.
    pub fn body() -> Option<Vec<u8>> {
        native!("request.body", |call| call.request_body())
    }

    /// Replaces the body.
    pub fn set_body(body: &[u8]) {
        native!("request.set-body", |call| call.request_set_body(body))
    }

    /// Sets the per-attempt timeout.
    pub fn set_timeout_ms(ms: u32) {
        native!("request.set-timeout-ms", |call| call
            .request_set_timeout_ms(ms))
    }
}

/// The `response` interface.
pub mod response {
    /// The status.
    pub fn status() -> u16 {
        native!("response.status", |call| call.response_status())
    }

    /// Replaces the status.
    pub fn set_status(status: u16) {
        native!("response.set-status", |call| call
            .response_set_status(status))
    }

    /// The first value of a header.
    pub fn header(name: &str) -> Option<String> {
        native!("response.header", |call| call
            .response_headers("header")
            .first(name))
    }

    /// Every value of a header.
    pub fn header_all(name: &str) -> Vec<String> {
        native!("response.header-all", |call| call
            .response_headers("header-all")
            .all(name))
    }

    /// The header names.
    pub fn header_names() -> Vec<String> {
        native!("response.header-names", |call| call
            .response_headers("header-names")
            .names())
    }

    /// Sets a header.
    pub fn set_header(name: &str, value: &str) {
        native!("response.set-header", |call| call
            .response_headers_mut("set-header")
            .set("response.set-header", name, value))
    }

    /// Adds a header value.
    pub fn append_header(name: &str, value: &str) {
        native!("response.append-header", |call| call
            .response_headers_mut("append-header")
            .append("response.append-header", name, value))
    }

    /// Removes a header.
    pub fn remove_header(name: &str) {
        native!("response.remove-header", |call| call
            .response_headers_mut("remove-header")
            .remove("response.remove-header", name))
    }

    /// The buffered body.
    pub fn body() -> Option<Vec<u8>> {
        native!("response.body", |call| call.response_body())
    }

    /// Replaces the body.
    pub fn set_body(body: &[u8]) {
        native!("response.set-body", |call| call.response_set_body(body))
    }
}

/// The `host` interface.
pub mod host {
    pub use crate::bindings::weft::filter::host::{
        HttpRequest, HttpResponse, LogLevel, SharedEntry, SharedError,
    };

    /// Writes a log line.
    pub fn log(level: LogLevel, message: &str) {
        native!("host.log", |call| call.log(level, message))
    }

    /// Whether a level is written.
    pub fn log_enabled(level: LogLevel) -> bool {
        native!("host.log-enabled", |call| call.log_enabled(level))
    }

    /// Wall-clock nanoseconds.
    pub fn now_unix_nanos() -> u64 {
        native!("host.now-unix-nanos", |call| call.now_unix_nanos())
    }

    /// Monotonic nanoseconds.
    pub fn monotonic_nanos() -> u64 {
        native!("host.monotonic-nanos", |call| call.monotonic_nanos())
    }

    /// A random number.
    pub fn random_u64() -> u64 {
        native!("host.random-u64", |call| call.random_u64())
    }

    /// Adds to a counter.
    pub fn counter_add(name: &str, labels: &[(&str, &str)], value: u64) {
        native!("host.counter-add", |call| call
            .counter_add(name, labels, value))
    }

    /// Sets a gauge.
    pub fn gauge_set(name: &str, labels: &[(&str, &str)], value: f64) {
        native!("host.gauge-set", |call| call.gauge_set(name, labels, value))
    }

    /// Adds to a gauge.
    pub fn gauge_add(name: &str, labels: &[(&str, &str)], delta: f64) {
        native!("host.gauge-add", |call| call.gauge_add(name, labels, delta))
    }

    /// Records a histogram observation.
    pub fn histogram_observe(name: &str, labels: &[(&str, &str)], value: f64) {
        native!("host.histogram-observe", |call| call
            .histogram_observe(name, labels, value))
    }

    /// Reads shared state.
    pub fn shared_get(key: &str) -> Option<SharedEntry> {
        native!("host.shared-get", |call| call.shared_get(key))
    }

    /// Writes shared state.
    pub fn shared_set(key: &str, value: &[u8], cas: u64) -> Result<u64, SharedError> {
        native!("host.shared-set", |call| call.shared_set(key, value, cas))
    }

    /// Removes from shared state.
    pub fn shared_delete(key: &str, cas: u64) -> Result<(), SharedError> {
        native!("host.shared-delete", |call| call.shared_delete(key, cas))
    }

    /// Makes a callout.
    pub fn http_call(request: HttpRequest<'_>) -> Result<HttpResponse, String> {
        native!("host.http-call", |call| call.http_call(request))
    }

    /// A property.
    pub fn property(name: &str) -> Option<String> {
        native!("host.property", |call| call.property(name))
    }

    /// Registers a property set.
    pub fn property_set(names: &[&str]) -> u32 {
        native!("host.property-set", |call| call.property_set(names))
    }

    /// Reads a property set.
    pub fn properties(id: u32) -> Vec<u8> {
        native!("host.properties", |call| call.properties(id))
    }
}
