//! Adds one response header, named and valued by the plugin configuration
//! `{"header": "<name>", "value": "<value>"}`. Refuses to start on an empty or
//! invalid configuration. Logs the VM configuration when the VM starts.

use log::{info, warn};
use proxy_wasm::traits::{Context, HttpContext, RootContext};
use proxy_wasm::types::{Action, ContextType, LogLevel};

proxy_wasm::main! {{
    proxy_wasm::set_log_level(LogLevel::Info);
    proxy_wasm::set_root_context(|_| -> Box<dyn RootContext> {
        Box::new(ConfigRoot { header: None })
    });
}}

struct ConfigRoot {
    header: Option<(String, String)>,
}

impl Context for ConfigRoot {}

/// `(name, value)` from the plugin configuration, if it is valid.
fn parse(config: &[u8]) -> Option<(String, String)> {
    let json: serde_json::Value = serde_json::from_slice(config).ok()?;
    let name = json.get("header")?.as_str()?;
    let value = json.get("value")?.as_str()?;
    (!name.is_empty()).then(|| (name.to_string(), value.to_string()))
}

impl RootContext for ConfigRoot {
    fn on_vm_start(&mut self, _: usize) -> bool {
        let vm = self.get_vm_configuration().unwrap_or_default();
        info!(
            "http-config: vm configuration: {}",
            String::from_utf8_lossy(&vm)
        );
        true
    }

    fn on_configure(&mut self, _: usize) -> bool {
        let config = self.get_plugin_configuration().unwrap_or_default();
        self.header = parse(&config);
        if self.header.is_none() {
            warn!(
                "http-config: the plugin configuration must be {{\"header\": \"<name>\", \"value\": \"<value>\"}}, got {:?}",
                String::from_utf8_lossy(&config)
            );
        }
        self.header.is_some()
    }

    fn get_type(&self) -> Option<ContextType> {
        Some(ContextType::HttpContext)
    }

    fn create_http_context(&self, _: u32) -> Option<Box<dyn HttpContext>> {
        Some(Box::new(AddHeader {
            header: self.header.clone(),
        }))
    }
}

struct AddHeader {
    /// `None` only if a host created a context after a failed `on_configure`.
    header: Option<(String, String)>,
}

impl Context for AddHeader {}

impl HttpContext for AddHeader {
    fn on_http_response_headers(&mut self, _: usize, _: bool) -> Action {
        if let Some((name, value)) = &self.header {
            self.add_http_response_header(name, value);
        }
        Action::Continue
    }
}
