//! The filter components of this workspace, built for `wasm32-wasip2` by
//! this crate's build script, and the proxy-wasm filters of
//! `examples/proxy-wasm`, core modules built for `wasm32-wasip1`.

use std::path::{Path, PathBuf};

/// The directory holding the built `.wasm` components.
pub const WASM_DIR: &str = env!("WEFT_WASM_DIR");
/// Where `misbehave_filter.wasm` built with its debug info (DWARF) is.
pub const WASM_DEBUG_DIR: &str = env!("WEFT_WASM_DEBUG_DIR");

/// The absolute path of the component whose library is named `name`, e.g.
/// `component("add_header")` for `filters/add-header`, or `api_key`,
/// `hello_filter`, `misbehave_filter`, `inspect_filter`.
///
/// # Panics
///
/// If the component was not built: `name` is not a filter built by
/// `tests/harness/build.rs`, or its file was removed since.
pub fn component(name: &str) -> PathBuf {
    let path = Path::new(WASM_DIR).join(format!("{name}.wasm"));
    assert!(
        path.is_file(),
        "filter component `{name}` not found at {}: the harness build script builds \
         add_header, api_key, headers, fault, hello_filter, misbehave_filter and inspect_filter (rebuild \
         with `cargo test` after `cargo clean -p weft-test-harness` if the file was removed)",
        path.display()
    );
    path
}

/// The directory holding the built proxy-wasm filters (core modules).
pub const PROXY_WASM_DIR: &str = env!("WEFT_PROXY_WASM_DIR");

/// The proxy-wasm filters `tests/harness/build.rs` builds from
/// `examples/proxy-wasm`, by library name.
pub const PROXY_WASM_FILTERS: [&str; 7] = [
    "http_headers",
    "http_auth_random",
    "http_body",
    "http_config",
    "hello_world",
    "pw_inspect",
    "unknown_import",
];

/// The absolute path of the proxy-wasm filter whose library is named
/// `name`, e.g. `proxy_wasm_filter("http_headers")` for
/// `examples/proxy-wasm/http-headers` (see [`PROXY_WASM_FILTERS`]).
///
/// # Panics
///
/// If the module was not built.
pub fn proxy_wasm_filter(name: &str) -> PathBuf {
    let path = Path::new(PROXY_WASM_DIR).join(format!("{name}.wasm"));
    assert!(
        path.is_file(),
        "proxy-wasm filter `{name}` not found at {}: the harness build script builds {} \
         (rebuild with `cargo test` after `cargo clean -p weft-test-harness` if the file was removed)",
        path.display(),
        PROXY_WASM_FILTERS.join(", ")
    );
    path
}

/// A valid core module that is not a proxy-wasm filter: it exports its
/// memory and an `_initialize` function, but no `proxy_abi_version_*`.
pub fn core_module_without_proxy_abi() -> Vec<u8> {
    let mut module = b"\0asm\x01\0\0\0".to_vec();
    let mut section = |id: u8, body: &[u8]| {
        module.push(id);
        module.push(u8::try_from(body.len()).expect("a small section"));
        module.extend_from_slice(body);
    };
    // One type, () -> ().
    section(1, &[1, 0x60, 0, 0]);
    // One function of type 0.
    section(3, &[1, 0]);
    // One memory of 1 page, no maximum.
    section(5, &[1, 0, 1]);
    // Exports: "memory" (memory 0) and "_initialize" (function 0).
    let mut exports = vec![2];
    for (name, kind) in [("memory", 2u8), ("_initialize", 0)] {
        exports.push(name.len() as u8);
        exports.extend_from_slice(name.as_bytes());
        exports.extend_from_slice(&[kind, 0]);
    }
    section(7, &exports);
    // The function's body: no locals, `end`.
    section(10, &[1, 2, 0, 0x0b]);
    module
}

/// A proxy-wasm module of ABI v0.2.0, written by hand: its headers
/// callback takes no `end_of_stream`, and it answers every request itself
/// with 200 `from abi 0.2.0` (or, on a path ending in `/pass`, lets it
/// through with `proxy_continue_request`, the v0.2.0 name).
pub fn proxy_wasm_abi_0_2_0_module() -> Vec<u8> {
    wat::parse_str(
        r#"(module
  (import "env" "proxy_send_local_response"
    (func $reply (param i32 i32 i32 i32 i32 i32 i32 i32) (result i32)))
  (import "env" "proxy_get_header_map_value"
    (func $header (param i32 i32 i32 i32 i32) (result i32)))
  (import "env" "proxy_continue_request" (func $continue (result i32)))
  (memory (export "memory") 1)
  (data (i32.const 16) "from abi 0.2.0")
  (data (i32.const 64) ":path")
  (global $heap (mut i32) (i32.const 1024))
  (func (export "malloc") (param $size i32) (result i32)
    (local $at i32)
    global.get $heap
    local.set $at
    global.get $heap
    local.get $size
    i32.add
    global.set $heap
    local.get $at)
  (func (export "proxy_abi_version_0_2_0"))
  (func (export "proxy_on_context_create") (param i32 i32))
  (func (export "proxy_on_request_headers") (param $context i32) (param $headers i32) (result i32)
    (local $ptr i32)
    (local $len i32)
    ;; The path, written by the host at the pointer stored at 128.
    (drop (call $header (i32.const 0) (i32.const 64) (i32.const 5) (i32.const 128) (i32.const 132)))
    (local.set $ptr (i32.load (i32.const 128)))
    (local.set $len (i32.load (i32.const 132)))
    ;; Ends in "/pass": continue (the v0.2.0 way), and go on.
    (if (i32.and
          (i32.ge_u (local.get $len) (i32.const 5))
          (i32.eq
            (i32.load (i32.sub (i32.add (local.get $ptr) (local.get $len)) (i32.const 4)))
            (i32.const 0x73736170)))
      (then
        (drop (call $continue))
        (return (i32.const 0))))
    (drop (call $reply (i32.const 200) (i32.const 0) (i32.const 0)
      (i32.const 16) (i32.const 14) (i32.const 0) (i32.const 0) (i32.const 0)))
    (i32.const 1)))"#,
    )
    .expect("valid text")
}

#[cfg(test)]
mod tests {
    use super::{PROXY_WASM_FILTERS, component, core_module_without_proxy_abi, proxy_wasm_filter};

    /// The names of what a core module exports.
    fn exports(bytes: &[u8]) -> Vec<String> {
        fn leb(bytes: &[u8], at: &mut usize) -> usize {
            let (mut value, mut shift) = (0usize, 0);
            loop {
                let byte = bytes[*at];
                *at += 1;
                value |= usize::from(byte & 0x7f) << shift;
                shift += 7;
                if byte < 0x80 {
                    return value;
                }
            }
        }
        let mut names = Vec::new();
        let mut at = 8;
        while at < bytes.len() {
            let id = bytes[at];
            at += 1;
            let size = leb(bytes, &mut at);
            let end = at + size;
            if id == 7 {
                let mut cursor = at;
                for _ in 0..leb(bytes, &mut cursor) {
                    let len = leb(bytes, &mut cursor);
                    names.push(String::from_utf8_lossy(&bytes[cursor..cursor + len]).into_owned());
                    cursor += len + 1;
                    leb(bytes, &mut cursor);
                }
            }
            at = end;
        }
        names
    }

    #[test]
    fn the_build_script_built_every_proxy_wasm_filter_as_a_core_module() {
        for name in PROXY_WASM_FILTERS {
            let path = proxy_wasm_filter(name);
            let bytes = std::fs::read(&path).unwrap();
            // A core module: the wasm magic, then version 1.
            assert_eq!(bytes[..8], *b"\0asm\x01\0\0\0", "{}", path.display());
            wasmparser::validate(&bytes).expect("a valid core module");
            let exports = exports(&bytes);
            for export in [
                "proxy_abi_version_0_2_1",
                "memory",
                "proxy_on_memory_allocate",
            ] {
                assert!(
                    exports.iter().any(|e| e == export),
                    "{} does not export {export}: {exports:?}",
                    path.display()
                );
            }
        }
    }

    #[test]
    fn the_module_without_the_proxy_abi_is_a_core_module_without_it() {
        let bytes = core_module_without_proxy_abi();
        assert_eq!(bytes[..8], *b"\0asm\x01\0\0\0");
        wasmparser::validate(&bytes).expect("a valid core module");
        assert_eq!(exports(&bytes), ["memory", "_initialize"]);
    }

    #[test]
    fn the_build_script_built_every_filter() {
        for name in [
            "add_header",
            "api_key",
            "headers",
            "fault",
            "rate_limit",
            "retry",
            "telemetry",
            "jwt_auth",
            "hello_filter",
            "misbehave_filter",
            "inspect_filter",
        ] {
            let path = component(name);
            assert!(path.is_absolute(), "{}", path.display());
            let bytes = std::fs::read(&path).unwrap();
            // A component: the wasm magic, then version 0x0d and layer 1.
            assert_eq!(bytes[..8], *b"\0asm\x0d\0\x01\0", "{}", path.display());
        }
    }

    #[test]
    #[should_panic(expected = "filter component `no_such_filter` not found")]
    fn a_missing_component_panics_with_its_name() {
        component("no_such_filter");
    }
}
