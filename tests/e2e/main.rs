//! End-to-end tests: the real `weft` binary, real upstreams and clients on
//! loopback, real filter components built from `filters/` and `examples/`.

mod admin;
mod admin_api;
mod api_key;
mod authority;
mod balancing;
mod callout;
mod callout_limits;
mod control;
mod drain;
mod expect;
mod exposition;
mod fault;
mod filter_new;
mod filter_test;
mod filters;
mod forwarding;
mod framing;
mod grpc;
mod headers;
mod health;
mod http2;
mod inline_files;
mod instances;
mod jwt_auth;
mod limits;
mod logs;
mod metrics;
mod module_cache;
mod paths;
mod pauses;
mod phases;
mod proxy_wasm;
mod quickstart;
mod rate_limit;
mod reload;
mod retry;
mod route_actions;
mod routing;
mod shared_state;
mod stream_limit;
mod telemetry;
mod tls;
mod traps;
mod upstream_protocols;
mod validate;
mod websocket;
mod workers;

use std::net::SocketAddr;

use weft_test_harness::Weft;

/// The `weft` binary cargo built for these tests.
pub fn bin() -> &'static str {
    env!("CARGO_BIN_EXE_weft")
}

/// Starts weft on `yaml` without blocking the async runtime's workers.
pub fn start(yaml: &str) -> Weft {
    tokio::task::block_in_place(|| Weft::start(bin(), yaml))
}

/// Like [`start`], with `--workers n`.
pub fn start_workers(yaml: &str, n: usize) -> Weft {
    let n = n.to_string();
    tokio::task::block_in_place(|| Weft::start_with(bin(), yaml, &["--workers", &n]))
}

/// The path of a built filter component, for a config.
pub fn wasm(name: &str) -> String {
    weft_test_harness::component(name).display().to_string()
}

/// A config with one listener `public`, the given `filters:` block (YAML,
/// indented two spaces), the given routes (YAML list items, indented four
/// spaces) and a cluster `backend` on `upstream`.
pub fn config(filters: &str, routes: &str, upstream: SocketAddr) -> String {
    format!(
        "filters:\n{filters}\nlisteners:\n  - name: public\n    listen: 127.0.0.1:0\n    routes:\n{routes}\nclusters:\n  backend: {{ endpoints: [\"{upstream}\"] }}\n"
    )
}
