//! Outbound HTTP calls from filters: granted authorities only, and the wait
//! does not count against the call's deadline.

use weft_test_harness::{Upstream, get};

use crate::{config, start, wasm};

fn inspect_with_callout(
    target: &str,
    allow: &str,
    deadline_ms: u64,
    upstream: std::net::SocketAddr,
) -> String {
    let filters = format!(
        "  inspect: {{ path: {}, deadline_ms: {deadline_ms}, allow_http: [{allow}] }}",
        wasm("inspect_filter")
    );
    let routes = format!(
        "      - {{ name: all, filters: [{{ filter: inspect, config: {{ phases: [request_headers], callout: \"{target}\" }} }}], cluster: backend }}"
    );
    config(&filters, &routes, upstream)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_granted_callout_is_answered_and_its_wait_does_not_count_against_the_deadline() {
    let up = Upstream::start().await;
    let service = Upstream::start().await;
    // The called service takes 300 ms; the filter's deadline is 50 ms.
    let target = format!("http://{}/delay/300", service.addr);
    let yaml = inspect_with_callout(&target, &format!("\"{}\"", service.addr), 50, up.addr);
    let weft = start(&yaml);
    for _ in 0..2 {
        let r = get(&format!("{}/x", weft.url("public"))).await;
        assert_eq!(r.status, 200, "{:?}", r.body);
        let outcome = r.echoed_header("x-callout").unwrap();
        assert!(outcome.starts_with("status=200 bytes="), "{outcome}");
    }
    assert_eq!(service.hits(), 2, "one callout per request");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_callout_to_an_authority_not_granted_is_refused() {
    let up = Upstream::start().await;
    let service = Upstream::start().await;
    let target = format!("http://{}/x", service.addr);
    let yaml = inspect_with_callout(&target, "\"127.0.0.1:1\"", 50, up.addr);
    let weft = start(&yaml);
    let r = get(&format!("{}/x", weft.url("public"))).await;
    assert_eq!(r.status, 200);
    let outcome = r.echoed_header("x-callout").unwrap();
    assert!(
        outcome.contains(&format!(
            "{} is not allowed: add it to filters.inspect.allow_http",
            service.addr
        )),
        "{outcome}"
    );
    assert_eq!(service.hits(), 0);
}

#[test]
fn allow_http_entries_must_be_host_and_port() {
    let yaml = inspect_with_callout(
        "http://127.0.0.1:9/x",
        "\"no-port\"",
        50,
        "127.0.0.1:9".parse().unwrap(),
    );
    let (ok, out) = weft_test_harness::process::validate(crate::bin(), &yaml, "weft.yaml", &[]);
    assert!(!ok);
    assert!(
        out.contains(
            r#"filters.inspect.allow_http[0]: invalid authority "no-port": expected host:port"#
        ),
        "{out}"
    );
}
