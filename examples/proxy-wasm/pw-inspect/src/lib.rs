//! Shows what the proxy-wasm host gives a filter, in response headers:
//! properties (`x-pw-path`, `x-pw-method`, `x-pw-source`, `x-pw-request-id`,
//! `x-pw-plugin-name`), a request count kept in shared data with CAS
//! (`x-pw-count`, also sent upstream), and the size of the header maps.
//! Defines metrics: a counter `pw_inspect_requests_total`, a gauge
//! `pw_inspect_last_count` and a histogram `pw_inspect_request_headers`.
//!
//! Misbehaves on request, by the last segment of the path: `…/trap` panics,
//! `…/loop` never returns, `…/oom` allocates without bound. A VM configuration `trap` panics in
//! `on_vm_start`; a plugin configuration `{"reject": true}` makes
//! `on_configure` fail.

use std::hint::black_box;

use log::{info, warn};
use proxy_wasm::traits::{Context, HttpContext, RootContext};
use proxy_wasm::types::{Action, ContextType, LogLevel, MetricType, Status};

proxy_wasm::main! {{
    proxy_wasm::set_log_level(LogLevel::Info);
    proxy_wasm::set_root_context(|_| -> Box<dyn RootContext> { Box::new(InspectRoot::default()) });
}}

/// The shared-data key of the request count.
const COUNT_KEY: &str = "pw-inspect.requests";

#[derive(Default, Clone, Copy)]
struct Metrics {
    requests: u32,
    last_count: u32,
    request_headers: u32,
}

#[derive(Default)]
struct InspectRoot {
    metrics: Metrics,
}

impl Context for InspectRoot {}

impl RootContext for InspectRoot {
    fn on_vm_start(&mut self, _: usize) -> bool {
        let vm = self.get_vm_configuration().unwrap_or_default();
        if vm == b"trap" {
            panic!("pw-inspect: the VM configuration asks for a trap in on_vm_start");
        }
        true
    }

    fn on_configure(&mut self, _: usize) -> bool {
        let config = self.get_plugin_configuration().unwrap_or_default();
        if !config.is_empty() {
            let Ok(json) = serde_json::from_slice::<serde_json::Value>(&config) else {
                warn!("pw-inspect: the plugin configuration is not JSON");
                return false;
            };
            if json.get("reject") == Some(&serde_json::Value::Bool(true)) {
                warn!("pw-inspect: rejecting the plugin configuration as asked");
                return false;
            }
        }
        let define = |kind, name| proxy_wasm::hostcalls::define_metric(kind, name);
        match (
            define(MetricType::Counter, "pw_inspect_requests_total"),
            define(MetricType::Gauge, "pw_inspect_last_count"),
            define(MetricType::Histogram, "pw_inspect_request_headers"),
        ) {
            (Ok(requests), Ok(last_count), Ok(request_headers)) => {
                self.metrics = Metrics {
                    requests,
                    last_count,
                    request_headers,
                };
                true
            }
            _ => {
                warn!("pw-inspect: cannot define its metrics");
                false
            }
        }
    }

    fn get_type(&self) -> Option<ContextType> {
        Some(ContextType::HttpContext)
    }

    fn create_http_context(&self, context_id: u32) -> Option<Box<dyn HttpContext>> {
        Some(Box::new(Inspect {
            context_id,
            metrics: self.metrics,
            reply: Vec::new(),
        }))
    }
}

struct Inspect {
    context_id: u32,
    metrics: Metrics,
    /// Response headers to add, gathered on the request path.
    reply: Vec<(&'static str, String)>,
}

impl Context for Inspect {}

/// A property as text, `-` when the host has none.
fn property(ctx: &dyn Context, path: &[&str]) -> String {
    match ctx.get_property(path.to_vec()) {
        Some(bytes) => String::from_utf8_lossy(&bytes).into_owned(),
        None => "-".to_string(),
    }
}

/// Adds one to the shared request count (compare-and-swap, retried on a
/// conflict) and returns the new count.
fn count_request(ctx: &dyn Context) -> u64 {
    loop {
        let (value, cas) = ctx.get_shared_data(COUNT_KEY);
        let count = value
            .and_then(|v| String::from_utf8(v).ok())
            .and_then(|v| v.parse::<u64>().ok())
            .unwrap_or(0)
            + 1;
        match ctx.set_shared_data(COUNT_KEY, Some(count.to_string().as_bytes()), cas) {
            Ok(()) => return count,
            Err(Status::CasMismatch) => continue,
            Err(status) => panic!("pw-inspect: set_shared_data failed: {status:?}"),
        }
    }
}

/// Never returns: a filter stuck in a loop.
fn spin() -> ! {
    let mut n: u64 = 0;
    loop {
        n = black_box(n.wrapping_add(1));
    }
}

/// Allocates 1 MiB after 1 MiB, touching each, until memory runs out.
fn eat_memory() -> ! {
    let mut hoard: Vec<Vec<u8>> = Vec::new();
    loop {
        hoard.push(black_box(vec![0xa5; 1 << 20]));
        black_box(&hoard);
    }
}

impl HttpContext for Inspect {
    fn on_http_request_headers(&mut self, num_headers: usize, _: bool) -> Action {
        let path = property(self, &["request", "path"]);
        let last_segment = path.split('?').next().and_then(|p| p.rsplit('/').next());
        match last_segment {
            Some("trap") => panic!("pw-inspect: trap requested by the path"),
            Some("loop") => spin(),
            Some("oom") => eat_memory(),
            _ => {}
        }
        let count = count_request(self);
        let m = self.metrics;
        let _ = proxy_wasm::hostcalls::increment_metric(m.requests, 1);
        let _ = proxy_wasm::hostcalls::record_metric(m.last_count, count);
        let _ = proxy_wasm::hostcalls::record_metric(m.request_headers, num_headers as u64);

        let headers = self.get_http_request_headers();
        self.set_http_request_header("x-pw-count", Some(&count.to_string()));
        self.remove_http_request_header("x-pw-remove-me");
        info!("pw-inspect: #{} {} request {count}", self.context_id, path);

        self.reply = vec![
            ("x-pw-path", path),
            ("x-pw-method", property(self, &["request", "method"])),
            ("x-pw-source", property(self, &["source", "address"])),
            ("x-pw-request-id", property(self, &["request", "id"])),
            ("x-pw-plugin-name", property(self, &["plugin_name"])),
            ("x-pw-count", count.to_string()),
            ("x-pw-request-headers", headers.len().to_string()),
        ];
        Action::Continue
    }

    fn on_http_request_trailers(&mut self, _: usize) -> Action {
        let trailers = self.get_http_request_trailers();
        self.reply
            .push(("x-pw-request-trailers", trailers.len().to_string()));
        Action::Continue
    }

    fn on_http_response_headers(&mut self, _: usize, _: bool) -> Action {
        let upstream_headers = self.get_http_response_headers().len();
        for (name, value) in std::mem::take(&mut self.reply) {
            self.set_http_response_header(name, Some(&value));
        }
        self.set_http_response_header("x-pw-response-headers", Some(&upstream_headers.to_string()));
        Action::Continue
    }

    fn on_http_response_trailers(&mut self, _: usize) -> Action {
        let trailers = self.get_http_response_trailers();
        let status = trailers
            .iter()
            .find(|(name, _)| name == "grpc-status")
            .map_or("none", |(_, value)| value.as_str());
        let seen = format!("{} trailers, grpc-status {status}", trailers.len());
        self.add_http_response_trailer("x-pw-trailers", &seen);
        Action::Continue
    }
}
