//! Asks an authorization service about every request with an HTTP call, and
//! answers 403 or lets the request through depending on the service's
//! answer: the first byte of its body, even → pass, odd → 403.
//!
//! The plugin configuration is the service's authority, `host:port`.

use std::time::Duration;

use log::{info, warn};
use proxy_wasm::traits::{Context, HttpContext, RootContext};
use proxy_wasm::types::{Action, ContextType, LogLevel};

proxy_wasm::main! {{
    proxy_wasm::set_log_level(LogLevel::Trace);
    proxy_wasm::set_root_context(|_| -> Box<dyn RootContext> {
        Box::new(AuthRoot { upstream: String::new() })
    });
}}

struct AuthRoot {
    upstream: String,
}

impl Context for AuthRoot {}

impl RootContext for AuthRoot {
    fn on_configure(&mut self, _: usize) -> bool {
        let config = self.get_plugin_configuration().unwrap_or_default();
        match String::from_utf8(config) {
            Ok(upstream) if upstream.contains(':') => {
                self.upstream = upstream.trim().to_string();
                true
            }
            _ => {
                warn!("the plugin configuration must be the authority `host:port`");
                false
            }
        }
    }

    fn get_type(&self) -> Option<ContextType> {
        Some(ContextType::HttpContext)
    }

    fn create_http_context(&self, _: u32) -> Option<Box<dyn HttpContext>> {
        Some(Box::new(Auth {
            upstream: self.upstream.clone(),
        }))
    }
}

struct Auth {
    upstream: String,
}

impl HttpContext for Auth {
    fn on_http_request_headers(&mut self, _: usize, _: bool) -> Action {
        let path = self.get_http_request_header(":path").unwrap_or_default();
        let call = self.dispatch_http_call(
            &self.upstream,
            vec![
                (":method", "GET"),
                (":path", "/auth"),
                (":authority", &self.upstream),
                ("x-original-path", &path),
            ],
            None,
            vec![],
            Duration::from_secs(5),
        );
        match call {
            Ok(token) => {
                info!("auth call {token} dispatched for {path}");
                Action::Pause
            }
            Err(status) => {
                warn!("auth call failed: {status:?}");
                self.send_http_response(503, vec![], Some(b"auth service unavailable\n"));
                Action::Pause
            }
        }
    }

    fn on_http_response_headers(&mut self, _: usize, _: bool) -> Action {
        self.set_http_response_header("x-auth", Some("passed"));
        Action::Continue
    }
}

impl Context for Auth {
    fn on_http_call_response(&mut self, token: u32, _: usize, body_size: usize, _: usize) {
        let body = self
            .get_http_call_response_body(0, body_size)
            .unwrap_or_default();
        match body.first() {
            Some(byte) if byte % 2 == 0 => {
                info!("auth call {token}: access granted");
                self.resume_http_request();
            }
            _ => {
                info!("auth call {token}: access forbidden");
                self.send_http_response(
                    403,
                    vec![("powered-by", "proxy-wasm")],
                    Some(b"Access forbidden.\n"),
                );
            }
        }
    }
}
