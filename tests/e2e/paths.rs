//! Paths are normalised before routing, and the normalised path is what the
//! upstream receives.

use weft_test_harness::Upstream;

use crate::authority::raw;
use crate::{start, wasm};

/// Listeners `strict` (the defaults) and `lenient` (with the `paths:` entry
/// `lenient`), each with routes `public` (`/public/`) and `admin`
/// (`/admin/`) that name themselves in `x-route`.
fn two_listeners(upstream: std::net::SocketAddr, lenient: &str) -> String {
    let tag = |name: &str| {
        format!(
            "filters: [{{ filter: add-header, config: {{ response: {{ x-route: {name} }} }} }}]"
        )
    };
    let routes = format!(
        "      - {{ name: public, match: {{ path_prefix: /public/ }}, {}, cluster: backend }}\n      - {{ name: admin, match: {{ path_prefix: /admin/ }}, {}, cluster: backend }}",
        tag("public"),
        tag("admin")
    );
    format!(
        "filters:\n  add-header: {{ path: {} }}\nlisteners:\n  - name: strict\n    listen: 127.0.0.1:0\n    routes:\n{routes}\n  - name: lenient\n    listen: 127.0.0.1:0\n{lenient}    routes:\n{routes}\nclusters:\n  backend: {{ endpoints: [\"{}\"] }}\n",
        wasm("add_header"),
        upstream
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_path_is_routed_and_forwarded_as_normalised() {
    let up = Upstream::start().await;
    let weft = start(&two_listeners(up.addr, ""));
    let get = |path: &str| format!("GET {path} HTTP/1.1\r\nhost: x\r\nconnection: close\r\n\r\n");

    // (path sent, route expected, path the upstream receives)
    let served = [
        ("/public/../admin/x", "admin", "/admin/x"),
        (
            "/public/%2e%2E/admin/x?q=/../%2e",
            "admin",
            "/admin/x?q=/../%2e",
        ),
        ("/public/./.%2e/admin/x", "admin", "/admin/x"),
        ("//admin//x", "admin", "/admin/x"),
        ("/../../admin/%78%2d%7E", "admin", "/admin/x-~"),
        ("/public/a%20b/", "public", "/public/a%20b/"),
    ];
    for (path, route, upstream_path) in served {
        let r = raw(weft.addr("strict"), &get(path)).await;
        assert_eq!(r.status(), 200, "{path}: {r:?}");
        assert_eq!(r.header("x-route"), Some(route), "{path}");
        assert_eq!(r.json()["path"], upstream_path, "{path}");
    }
    // Encoded slashes and backslashes are refused by default, as are
    // escapes that are not two hex digits.
    for path in ["/public/a%2Fb", "/public/a%5cb", "/public/%zz"] {
        let r = raw(weft.addr("strict"), &get(path)).await;
        assert_eq!(r.status(), 400, "{path}: {r:?}");
        assert_eq!(r.json()["error"], "bad_path", "{path}");
    }
    assert_eq!(
        up.hits(),
        served.len(),
        "refused paths never reach the upstream"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_listener_may_keep_slashes_and_encoded_slashes() {
    let up = Upstream::start().await;
    let weft = start(&two_listeners(
        up.addr,
        "    paths: { merge_slashes: false, escaped_slashes: keep }\n",
    ));
    let get = |path: &str| format!("GET {path} HTTP/1.1\r\nhost: x\r\nconnection: close\r\n\r\n");
    let r = raw(weft.addr("lenient"), &get("/public/a%2Fb")).await;
    assert_eq!(r.status(), 200, "{r:?}");
    assert_eq!(r.json()["path"], "/public/a%2Fb");
    let r = raw(weft.addr("lenient"), &get("//admin/x")).await;
    assert_eq!(r.status(), 404, "{r:?}");
    let r = raw(weft.addr("lenient"), &get("/public/../admin/x")).await;
    assert_eq!(r.header("x-route"), Some("admin"));
}
