//! Redacts a word in bodies: buffers the whole response body and rewrites
//! every `secret` in it to `[redacted]`; does the same to the request body.

use proxy_wasm::traits::{Context, HttpContext, RootContext};
use proxy_wasm::types::{Action, ContextType, LogLevel};

proxy_wasm::main! {{
    proxy_wasm::set_log_level(LogLevel::Info);
    proxy_wasm::set_root_context(|_| -> Box<dyn RootContext> { Box::new(BodyRoot) });
}}

const WORD: &str = "secret";
const REPLACEMENT: &str = "[redacted]";

struct BodyRoot;

impl Context for BodyRoot {}

impl RootContext for BodyRoot {
    fn get_type(&self) -> Option<ContextType> {
        Some(ContextType::HttpContext)
    }

    fn create_http_context(&self, _: u32) -> Option<Box<dyn HttpContext>> {
        Some(Box::new(Body))
    }
}

struct Body;

impl Context for Body {}

/// The body with every [`WORD`] replaced, or `None` when it has none.
fn redacted(body: &[u8]) -> Option<Vec<u8>> {
    let text = String::from_utf8_lossy(body);
    text.contains(WORD)
        .then(|| text.replace(WORD, REPLACEMENT).into_bytes())
}

impl HttpContext for Body {
    fn on_http_request_headers(&mut self, _: usize, end_of_stream: bool) -> Action {
        if !end_of_stream {
            // The rewritten body has another length.
            self.set_http_request_header("content-length", None);
        }
        Action::Continue
    }

    fn on_http_request_body(&mut self, body_size: usize, end_of_stream: bool) -> Action {
        if !end_of_stream {
            return Action::Pause;
        }
        if let Some(body) = self.get_http_request_body(0, body_size)
            && let Some(new) = redacted(&body)
        {
            self.set_http_request_body(0, body_size, &new);
        }
        Action::Continue
    }

    fn on_http_response_headers(&mut self, _: usize, _: bool) -> Action {
        self.set_http_response_header("content-length", None);
        Action::Continue
    }

    fn on_http_response_body(&mut self, body_size: usize, end_of_stream: bool) -> Action {
        if !end_of_stream {
            // Wait for the whole body: the word may straddle two chunks.
            return Action::Pause;
        }
        if let Some(body) = self.get_http_response_body(0, body_size)
            && let Some(new) = redacted(&body)
        {
            self.set_http_response_body(0, body_size, &new);
        }
        Action::Continue
    }
}
