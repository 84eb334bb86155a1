//! One authority per request: the Host rules of RFC 9112 §3.2 and RFC 9113
//! §8.3.1, and the authority routed on is the `Host` sent upstream.

use http::Request;
use http_body_util::Full;
use weft_test_harness::{RawConn, RawReply, Upstream, client, send};

use crate::{config, start, wasm};

/// Routes `api` (host `api.example.com`) and `other` (everything else), each
/// answering with its name in `x-route`.
fn routes_by_host(upstream: std::net::SocketAddr) -> String {
    let filters = format!("  add-header: {{ path: {} }}", wasm("add_header"));
    let tag = |name: &str| {
        format!(
            "filters: [{{ filter: add-header, config: {{ response: {{ x-route: {name} }} }} }}]"
        )
    };
    let routes = format!(
        "      - {{ name: api, match: {{ host: api.example.com }}, {}, cluster: backend }}\n      - {{ name: other, {}, cluster: backend }}",
        tag("api"),
        tag("other")
    );
    config(&filters, &routes, upstream)
}

/// Sends `request` on a new connection and reads the answer.
pub async fn raw(addr: std::net::SocketAddr, request: &str) -> RawReply {
    let mut conn = RawConn::connect(addr).await;
    conn.send(request.as_bytes()).await;
    conn.reply().await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn several_missing_or_invalid_host_lines_are_400() {
    let up = Upstream::start().await;
    let weft = start(&routes_by_host(up.addr));
    let addr = weft.addr("public");
    let cases = [
        (
            "GET /x HTTP/1.1\r\nhost: api.example.com\r\nhost: other.example.com\r\n\r\n",
            "Host",
        ),
        ("GET /x HTTP/1.1\r\nx-no-host: 1\r\n\r\n", "Host"),
        (
            "GET /x HTTP/1.1\r\nhost: api.example.com/admin\r\n\r\n",
            "Host",
        ),
        (
            "GET /x HTTP/1.1\r\nhost: api.example.com:80x\r\n\r\n",
            "Host",
        ),
    ];
    for (request, names) in cases {
        let r = raw(addr, request).await;
        assert_eq!(r.status(), 400, "{request:?}: {r:?}");
        let body = r.json();
        assert_eq!(body["error"], "bad_authority", "{request:?}: {body}");
        assert!(
            body["message"].as_str().unwrap().contains(names),
            "{request:?}: {body}"
        );
    }
    assert_eq!(up.hits(), 0, "no bad request reaches the upstream");
    // HTTP/1.0 may go without Host.
    let r = raw(addr, "GET /old HTTP/1.0\r\n\r\n").await;
    assert_eq!(r.status(), 200, "{r:?}");
    assert_eq!(r.header("x-route"), Some("other"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_request_targets_authority_is_routed_on_and_sent_upstream() {
    let up = Upstream::start().await;
    let weft = start(&routes_by_host(up.addr));
    let addr = weft.addr("public");
    // Absolute form: the target's authority wins over the Host line, for
    // routing and upstream alike (RFC 9112 §3.2.2).
    let r = raw(
        addr,
        "GET http://other.example.com/x HTTP/1.1\r\nhost: api.example.com\r\n\r\n",
    )
    .await;
    assert_eq!(r.status(), 200, "{r:?}");
    assert_eq!(r.header("x-route"), Some("other"));
    assert_eq!(r.json()["headers"]["host"], "other.example.com");
    assert_eq!(r.json()["path"], "/x");
    // A trailing dot names the same host.
    let r = raw(
        addr,
        "GET /x HTTP/1.1\r\nhost: API.example.com.:8080\r\n\r\n",
    )
    .await;
    assert_eq!(r.status(), 200, "{r:?}");
    assert_eq!(r.header("x-route"), Some("api"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_h2_host_field_that_differs_from_the_authority_is_400() {
    let up = Upstream::start().await;
    let weft = start(&routes_by_host(up.addr));
    let url = weft.url("public");
    let c = client(true);
    let request = |host: &str| {
        Request::get(format!("{url}/x"))
            .header("host", host)
            .body(Full::default())
            .unwrap()
    };
    let r = send(&c, request("api.example.com")).await;
    assert_eq!(r.status, 400, "{:?}", r.body);
    assert_eq!(r.json()["error"], "bad_authority");
    assert_eq!(up.hits(), 0);
    // The same authority in both is fine.
    let authority = url.trim_start_matches("http://");
    let r = send(&c, request(authority)).await;
    assert_eq!(r.status, 200, "{:?}", r.body);
    assert_eq!(r.header("x-route"), Some("other"));
    assert_eq!(r.echoed_header("host").as_deref(), Some(authority));
}
