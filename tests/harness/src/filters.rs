//! The filter components of this workspace, built for `wasm32-wasip2` by
//! this crate's build script.

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

#[cfg(test)]
mod tests {
    use super::component;

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
