//! proxy-wasm filters and Weft filters in one chain: each one's effect in
//! the same response, a proxy-wasm pause (a callout) and resume between
//! Weft filters, and a proxy-wasm local response stopping the chain.

use http::Request;
use http_body_util::Full;
use weft_test_harness::{Upstream, client, get, send};

use super::{AuthService, alternate, pw};
use crate::{config, start, wasm};

/// `pw-headers → headers (Weft) → pw-auth`, the Weft filter marking both
/// the request and the response.
fn chain_config(auth: &AuthService, upstream: std::net::SocketAddr) -> String {
    let filters = format!(
        "  pw-headers: {{ path: {} }}\n  headers: {{ path: {} }}\n  pw-auth: {{ path: {}, allow_http: [\"{}\"] }}",
        pw("http_headers"),
        wasm("headers"),
        pw("http_auth_random"),
        auth.addr
    );
    let routes = format!(
        r#"      - name: all
        filters:
          - {{ filter: pw-headers }}
          - filter: headers
            config: {{ request: {{ set: {{ x-chain: weft }} }}, response: {{ set: {{ x-weft: "yes" }} }} }}
          - {{ filter: pw-auth, config: "{}" }}
        cluster: backend"#,
        auth.addr
    );
    config(&filters, &routes, upstream)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn proxy_wasm_and_weft_filters_each_leave_their_mark_on_one_response() {
    let up = Upstream::start().await;
    let auth = AuthService::start(alternate).await;
    let weft = start(&chain_config(&auth, up.addr));
    let url = weft.url("public");

    // Granted: every filter ran, on the way in and on the way out.
    let req = Request::get(format!("{url}/orders"))
        .header("x-pw-marker", "chain-1")
        .body(Full::default())
        .unwrap();
    let r = send(&client(false), req).await;
    assert_eq!(r.status, 200, "{:?}", r.body);
    assert_eq!(r.json()["path"], "/orders");
    assert_eq!(r.echoed_header("x-chain").as_deref(), Some("weft"));
    assert_eq!(r.header("x-auth"), Some("passed"), "pw-auth");
    assert_eq!(r.header("x-weft"), Some("yes"), "the Weft headers filter");
    assert_eq!(r.header("x-powered-by"), Some("proxy-wasm"), "pw-headers");
    assert_eq!(auth.hits(), 1);
    assert_eq!(up.hits(), 1);
    // Response phases run in reverse order: pw-headers, first in the chain,
    // logs what the two filters after it added.
    tokio::task::block_in_place(|| {
        weft.wait_for_log("-> x-pw-marker: chain-1", 1);
        weft.wait_for_log("<- x-auth: passed", 1);
        weft.wait_for_log("<- x-weft: yes", 1);
    });

    // Forbidden: pw-auth's local response goes back through the filters
    // before it (they mark it), never to the upstream.
    let r = get(&format!("{url}/orders")).await;
    assert_eq!(r.status, 403, "{:?}", r.body);
    assert_eq!(&r.body[..], b"Access forbidden.\n");
    assert_eq!(r.header("x-auth"), None);
    assert_eq!(r.header("x-weft"), Some("yes"));
    assert_eq!(r.header("x-powered-by"), Some("proxy-wasm"));
    assert_eq!(auth.hits(), 2);
    assert_eq!(up.hits(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_proxy_wasm_local_response_stops_the_chain_before_a_weft_filter() {
    let up = Upstream::start().await;
    let auth = AuthService::start(alternate).await;
    let weft = start(&chain_config(&auth, up.addr));
    let url = weft.url("public");

    let r = get(&format!("{url}/hello")).await;
    assert_eq!(r.status, 200, "{:?}", r.body);
    assert_eq!(&r.body[..], b"Hello from proxy-wasm\n");
    assert_eq!(r.header("x-powered-by"), Some("proxy-wasm"));
    // Neither the Weft filter nor pw-auth after it ran.
    assert_eq!(r.header("x-weft"), None);
    assert_eq!(r.header("x-auth"), None);
    assert_eq!(auth.hits(), 0);
    assert_eq!(up.hits(), 0);

    // The next request goes through the whole chain again.
    let r = get(&format!("{url}/next")).await;
    assert_eq!(r.status, 200, "{:?}", r.body);
    assert_eq!(r.header("x-weft"), Some("yes"));
    assert_eq!(auth.hits(), 1);
}
