//! The forwarding headers are the proxy's own: `x-forwarded-proto` set,
//! `x-forwarded-for` appended to every line, `Via` both ways, and a client's
//! `x-request-id` taken only in a safe form.

use http::Request;
use http_body_util::Full;
use weft_test_harness::{Upstream, client, send};

use crate::{config, start};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn forwarding_headers_cannot_be_spoofed_and_via_is_added() {
    let up = Upstream::start().await;
    let weft = start(&config(
        "  {}",
        "      - { name: all, cluster: backend }",
        up.addr,
    ));
    let url = weft.url("public");
    let c = client(false);
    let request = |id: &str| {
        Request::get(format!("{url}/x"))
            .header("x-forwarded-proto", "https")
            .header("x-forwarded-for", "10.0.0.1")
            .header("x-forwarded-for", "10.0.0.2, 10.0.0.3")
            .header("x-request-id", id)
            .body(Full::default())
            .unwrap()
    };
    let r = send(&c, request("not \"safe\" <id>")).await;
    assert_eq!(r.status, 200);
    assert_eq!(
        r.echoed_header("x-forwarded-proto").as_deref(),
        Some("http")
    );
    assert_eq!(
        r.echoed_header("x-forwarded-for").as_deref(),
        Some("10.0.0.1, 10.0.0.2, 10.0.0.3, 127.0.0.1"),
        "every line kept, in order, the client last"
    );
    assert_eq!(r.echoed_header("via").as_deref(), Some("1.1 weft"));
    assert_eq!(r.header("via"), Some("1.1 weft"));
    let id = r.echoed_header("x-request-id").unwrap();
    assert_eq!(id.len(), 36, "an unsafe id is replaced: {id}");

    let too_long = "a".repeat(129);
    let r = send(&c, request(&too_long)).await;
    assert_eq!(r.echoed_header("x-request-id").unwrap().len(), 36);
    let r = send(&c, request("req-42_a.b:c")).await;
    assert_eq!(
        r.echoed_header("x-request-id").as_deref(),
        Some("req-42_a.b:c")
    );
}
