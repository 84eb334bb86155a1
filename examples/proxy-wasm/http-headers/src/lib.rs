//! Logs every request and response header, answers `/hello` itself, and
//! adds `x-powered-by: proxy-wasm` to every response it lets through.

use log::info;
use proxy_wasm::traits::{Context, HttpContext, RootContext};
use proxy_wasm::types::{Action, ContextType, LogLevel};

proxy_wasm::main! {{
    proxy_wasm::set_log_level(LogLevel::Trace);
    proxy_wasm::set_root_context(|_| -> Box<dyn RootContext> { Box::new(HeadersRoot) });
}}

struct HeadersRoot;

impl Context for HeadersRoot {}

impl RootContext for HeadersRoot {
    fn get_type(&self) -> Option<ContextType> {
        Some(ContextType::HttpContext)
    }

    fn create_http_context(&self, context_id: u32) -> Option<Box<dyn HttpContext>> {
        Some(Box::new(Headers { context_id }))
    }
}

struct Headers {
    context_id: u32,
}

impl Context for Headers {}

impl HttpContext for Headers {
    fn on_http_request_headers(&mut self, _: usize, _: bool) -> Action {
        for (name, value) in &self.get_http_request_headers() {
            info!("#{} -> {}: {}", self.context_id, name, value);
        }
        match self.get_http_request_header(":path").as_deref() {
            Some("/hello") => {
                self.send_http_response(
                    200,
                    vec![
                        ("x-powered-by", "proxy-wasm"),
                        ("content-type", "text/plain"),
                    ],
                    Some(b"Hello from proxy-wasm\n"),
                );
                Action::Pause
            }
            _ => Action::Continue,
        }
    }

    fn on_http_response_headers(&mut self, _: usize, _: bool) -> Action {
        for (name, value) in &self.get_http_response_headers() {
            info!("#{} <- {}: {}", self.context_id, name, value);
        }
        self.set_http_response_header("x-powered-by", Some("proxy-wasm"));
        Action::Continue
    }

    fn on_log(&mut self) {
        info!("#{} completed.", self.context_id);
    }
}
