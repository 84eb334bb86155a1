//! A filter that imports a host function the proxy-wasm ABI does not have
//! (`proxy_no_such_function`): a host must refuse to load it.

use proxy_wasm::traits::{Context, RootContext};
use proxy_wasm::types::LogLevel;

unsafe extern "C" {
    fn proxy_no_such_function() -> u32;
}

proxy_wasm::main! {{
    proxy_wasm::set_log_level(LogLevel::Info);
    proxy_wasm::set_root_context(|_| -> Box<dyn RootContext> { Box::new(Unknown) });
}}

struct Unknown;

impl Context for Unknown {}

impl RootContext for Unknown {
    fn on_vm_start(&mut self, _: usize) -> bool {
        // SAFETY: takes and returns plain integers; no host provides it.
        unsafe { proxy_no_such_function() == 0 }
    }
}
