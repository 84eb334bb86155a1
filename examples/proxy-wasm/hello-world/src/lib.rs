//! Logs a greeting when its VM starts, then a line with the time on every
//! tick. The plugin configuration is the tick period in milliseconds
//! (default 1000). Requests pass through untouched.

use std::time::{Duration, UNIX_EPOCH};

use log::info;
use proxy_wasm::traits::{Context, HttpContext, RootContext};
use proxy_wasm::types::{ContextType, LogLevel};

proxy_wasm::main! {{
    proxy_wasm::set_log_level(LogLevel::Info);
    proxy_wasm::set_root_context(|_| -> Box<dyn RootContext> { Box::new(Hello { ticks: 0 }) });
}}

struct Hello {
    ticks: u64,
}

impl Context for Hello {}

impl RootContext for Hello {
    fn on_vm_start(&mut self, _: usize) -> bool {
        info!("hello-world: Hello, World!");
        true
    }

    fn on_configure(&mut self, _: usize) -> bool {
        let config = self.get_plugin_configuration().unwrap_or_default();
        let period_ms = String::from_utf8_lossy(&config)
            .trim()
            .parse()
            .unwrap_or(1000);
        self.set_tick_period(Duration::from_millis(period_ms));
        true
    }

    fn on_tick(&mut self) {
        self.ticks += 1;
        let now = self
            .get_current_time()
            .duration_since(UNIX_EPOCH)
            .unwrap_or_default();
        info!(
            "hello-world: tick {} at {} ms since the epoch",
            self.ticks,
            now.as_millis()
        );
    }

    fn get_type(&self) -> Option<ContextType> {
        Some(ContextType::HttpContext)
    }

    fn create_http_context(&self, _: u32) -> Option<Box<dyn HttpContext>> {
        Some(Box::new(PassThrough))
    }
}

struct PassThrough;

impl Context for PassThrough {}

impl HttpContext for PassThrough {}
