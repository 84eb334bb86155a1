//! The `retry` filter: failed attempts are sent again (to the cluster's next
//! endpoint) up to `max_attempts`, only for the configured methods and
//! failures, with the body intact; a per-try timeout, `Retry-After`, the
//! retry budget and the body limit are honoured.

use std::time::{Duration, Instant};

use bytes::Bytes;
use http::Request;
use http_body_util::Full;
use weft_test_harness::process::validate;
use weft_test_harness::{Reply, Upstream, client, get, raw_status, send};

use crate::{bin, config, start, wasm};

fn filters() -> String {
    format!("  retry: {{ path: {} }}", wasm("retry"))
}

/// Waits of a few milliseconds, so that tests do not sleep through backoff.
const FAST: &str = "backoff: { base_ms: 1, max_ms: 5 }";

/// A route `name`, chosen by the request header `x-route: <name>`, whose
/// chain is one retry entry with `retry` (the inside of a YAML flow mapping);
/// `extra` adds route keys (`key: value, ...`).
fn route(name: &str, retry: &str, extra: &str) -> String {
    format!(
        "      - {{ name: {name}, match: {{ headers: [{{ name: x-route, exact: {name} }}] }}, filters: [{{ filter: retry, config: {{ {retry} }} }}], cluster: backend{extra} }}\n"
    )
}

/// A config with an admin listener, the retry filter, `routes` and the
/// cluster `backend` on `upstream`.
fn yaml(routes: &[String], upstream: &Upstream) -> String {
    format!(
        "admin: {{ listen: 127.0.0.1:0 }}\n{}",
        config(&filters(), &routes.concat(), upstream.addr)
    )
}

/// Sends `method path` with `body` on route `route`.
async fn call(base: &str, route: &str, method: &str, path: &str, body: Bytes) -> Reply {
    let req = Request::builder()
        .method(method)
        .uri(format!("{base}{path}"))
        .header("x-route", route)
        .body(Full::new(body))
        .unwrap();
    send(&client(false), req).await
}

async fn get_on(base: &str, route: &str, path: &str) -> Reply {
    call(base, route, "GET", path, Bytes::new()).await
}

/// The value of `weft_user_retry_attempts_total{filter, route, outcome}`, 0 when
/// absent.
async fn attempts_metric(admin: &str, route: &str, outcome: &str) -> u64 {
    let metrics = get(&format!("{admin}/metrics")).await;
    assert_eq!(metrics.status, 200);
    let text = String::from_utf8_lossy(&metrics.body);
    let series = format!(
        r#"weft_user_retry_attempts_total{{filter="retry",route="{route}",outcome="{outcome}"}} "#
    );
    text.lines()
        .find_map(|line| line.strip_prefix(&series))
        .map_or(0, |value| value.parse().unwrap())
}

fn assert_status(r: &Reply, status: u16) {
    assert_eq!(
        r.status,
        status,
        "{}",
        String::from_utf8_lossy(&r.body)
            .chars()
            .take(500)
            .collect::<String>()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_upstream_failing_twice_is_retried_until_it_answers() {
    let up = Upstream::start().await;
    let weft = start(&yaml(
        &[route(
            "r",
            &format!("max_attempts: 3, {FAST}, attempts_header: x-weft-attempts"),
            "",
        )],
        &up,
    ));
    let r = get_on(&weft.url("public"), "r", "/flaky/a/2/503").await;
    assert_status(&r, 200);
    assert_eq!(r.json()["path"], "/flaky/a/2/503");
    assert_eq!(r.header("x-weft-attempts"), Some("3"));
    assert_eq!(up.seen("a"), 3);
    assert_eq!(up.hits(), 3);
    // A success at the first attempt says so too, and is not counted.
    let r = get_on(&weft.url("public"), "r", "/ok").await;
    assert_status(&r, 200);
    assert_eq!(r.header("x-weft-attempts"), Some("1"));
    assert_eq!(up.hits(), 4);
    let admin = weft.url("admin");
    assert_eq!(attempts_metric(&admin, "r", "retried").await, 2);
    assert_eq!(attempts_metric(&admin, "r", "exhausted").await, 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn attempts_stop_at_max_attempts_with_the_last_failure() {
    let up = Upstream::start().await;
    let weft = start(&yaml(
        &[route(
            "r",
            &format!("max_attempts: 3, {FAST}, attempts_header: x-weft-attempts"),
            "",
        )],
        &up,
    ));
    let r = get_on(&weft.url("public"), "r", "/flaky/b/5/503").await;
    assert_status(&r, 503);
    assert_eq!(r.header("x-weft-attempts"), Some("3"));
    assert_eq!(r.header("x-upstream"), Some("test"), "the upstream's 503");
    assert_eq!(up.seen("b"), 3);
    // A status retry_on does not cover is not retried.
    let r = get_on(&weft.url("public"), "r", "/flaky/c/5/500").await;
    assert_status(&r, 500);
    assert_eq!(r.header("x-weft-attempts"), Some("1"));
    assert_eq!(up.seen("c"), 1);
    let admin = weft.url("admin");
    assert_eq!(attempts_metric(&admin, "r", "retried").await, 2);
    assert_eq!(attempts_metric(&admin, "r", "exhausted").await, 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn post_is_retried_only_when_listed_and_its_body_arrives_intact() {
    let up = Upstream::start().await;
    let weft = start(&yaml(
        &[
            route("idempotent", FAST, ""),
            route("post", &format!("{FAST}, methods: [POST]"), ""),
        ],
        &up,
    ));
    let base = weft.url("public");
    let body = Bytes::from(vec![b'x'; 10_000]);
    // Default methods: POST is not retried.
    let r = call(&base, "idempotent", "POST", "/flaky/p1/1/503", body.clone()).await;
    assert_status(&r, 503);
    assert_eq!(up.seen("p1"), 1);
    // Listed: retried, and the second attempt carries the whole body.
    let r = call(&base, "post", "POST", "/flaky/p2/1/503", body.clone()).await;
    assert_status(&r, 200);
    assert_eq!(up.seen("p2"), 2);
    let echo = r.json();
    assert_eq!(echo["method"], "POST");
    assert_eq!(echo["body_bytes"], 10_000);
    assert_eq!(echo["headers"]["content-length"], "10000");
    // Only the listed methods: GET is not retried on that route.
    let r = get_on(&base, "post", "/flaky/p3/1/503").await;
    assert_status(&r, 503);
    assert_eq!(up.seen("p3"), 1);
    let admin = weft.url("admin");
    assert_eq!(
        attempts_metric(&admin, "idempotent", "method_not_allowed").await,
        1
    );
    assert_eq!(
        attempts_metric(&admin, "post", "method_not_allowed").await,
        1
    );
    assert_eq!(attempts_metric(&admin, "post", "retried").await, 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_connect_failure_is_retried_on_the_next_endpoint() {
    let up = Upstream::start().await;
    // A port nobody listens on: bound, then released.
    let closed = {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        listener.local_addr().unwrap()
    };
    let yaml = format!(
        r#"filters:
{}
listeners:
  - name: public
    listen: 127.0.0.1:0
    routes:
      - {{ name: retry, match: {{ path_prefix: /retry/ }}, filters: [{{ filter: retry, config: {{ retry_on: [connect-failure], budget: null, {FAST} }} }}], cluster: two }}
      - {{ name: plain, match: {{ path_prefix: /plain/ }}, cluster: two }}
clusters:
  two: {{ endpoints: ["{closed}", "{}"] }}
"#,
        filters(),
        up.addr
    );
    let weft = start(&yaml);
    let base = weft.url("public");
    // Without the filter, the requests sent to the closed port fail.
    let mut plain = Vec::new();
    for i in 0..10 {
        plain.push(get(&format!("{base}/plain/{i}")).await.status.as_u16());
    }
    let failed = plain.iter().filter(|s| **s == 502).count();
    assert!(
        failed >= 1,
        "round robin sends some to the closed port: {plain:?}"
    );
    assert_eq!(
        failed + plain.iter().filter(|s| **s == 200).count(),
        10,
        "{plain:?}"
    );
    assert_eq!(up.hits(), 10 - failed);
    // With it, every request gets through.
    let before = up.hits();
    for i in 0..10 {
        let r = get(&format!("{base}/retry/{i}")).await;
        assert_status(&r, 200);
        assert_eq!(r.json()["path"], format!("/retry/{i}"));
    }
    assert_eq!(
        up.hits() - before,
        10,
        "each request reached the live endpoint once"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_slow_attempt_times_out_and_the_retry_answers() {
    let up = Upstream::start().await;
    let weft = start(&yaml(
        &[
            route(
                "timeout",
                &format!(
                    "retry_on: [timeout], per_try_timeout_ms: 2000, {FAST}, attempts_header: x-weft-attempts"
                ),
                "",
            ),
            route(
                "no-timeout-retry",
                &format!(
                    "retry_on: [connect-failure], per_try_timeout_ms: 2000, {FAST}, attempts_header: x-weft-attempts"
                ),
                "",
            ),
        ],
        &up,
    ));
    let base = weft.url("public");
    // The first attempt would answer 200 after 10 s, within the route's
    // timeout (15 s): the per-try timeout cuts it at 2 s and the second
    // attempt answers at once.
    let r = get_on(&base, "timeout", "/flaky-delay/t/1/10000").await;
    assert_status(&r, 200);
    assert_eq!(r.header("x-weft-attempts"), Some("2"));
    assert_eq!(up.seen("t"), 2);
    // Without `timeout` in retry_on, the per-try timeout still applies, and
    // its 504 is the answer.
    let r = get_on(&base, "no-timeout-retry", "/flaky-delay/u/1/10000").await;
    assert_status(&r, 504);
    assert_eq!(r.json()["error"], "upstream_timeout");
    assert_eq!(r.header("x-weft-attempts"), Some("1"));
    assert_eq!(up.seen("u"), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn retry_after_sets_the_wait_and_a_too_long_one_is_not_waited_for() {
    let up = Upstream::start().await;
    let weft = start(&yaml(
        &[route(
            "r",
            &format!("{FAST}, max_retry_after_ms: 5000, attempts_header: x-weft-attempts"),
            "",
        )],
        &up,
    ));
    let base = weft.url("public");
    let started = Instant::now();
    let r = get_on(&base, "r", "/flaky/ra/1/503?retry-after=1").await;
    let elapsed = started.elapsed();
    assert_status(&r, 200);
    assert_eq!(up.seen("ra"), 2);
    assert!(
        elapsed >= Duration::from_secs(1),
        "the retry waited for retry-after: 1 (answered after {elapsed:?})"
    );
    // Longer than max_retry_after_ms: the 503 goes back, with its
    // retry-after, rather than being retried early.
    let r = get_on(&base, "r", "/flaky/rb/1/503?retry-after=3600").await;
    assert_status(&r, 503);
    assert_eq!(r.header("retry-after"), Some("3600"));
    assert_eq!(r.header("x-weft-attempts"), Some("1"));
    assert_eq!(up.seen("rb"), 1);
    let admin = weft.url("admin");
    assert_eq!(
        attempts_metric(&admin, "r", "retry_after_too_long").await,
        1
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_budget_bounds_retries_across_requests() {
    let up = Upstream::start().await;
    let weft = start(&yaml(
        &[route(
            "r",
            &format!("{FAST}, budget: {{ percent: 0, window_s: 3600, min_retries: 1 }}"),
            "",
        )],
        &up,
    ));
    let base = weft.url("public");
    let mut statuses = Vec::new();
    for i in 0..4 {
        let r = get_on(&base, "r", &format!("/flaky/k{i}/1/503")).await;
        statuses.push(r.status.as_u16());
    }
    assert_eq!(statuses, [200, 503, 503, 503], "only the first is retried");
    assert_eq!(up.hits(), 5, "4 requests and 1 retry");
    let admin = weft.url("admin");
    assert_eq!(attempts_metric(&admin, "r", "retried").await, 1);
    assert_eq!(attempts_metric(&admin, "r", "budget_exhausted").await, 3);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_body_the_proxy_cannot_keep_is_sent_once() {
    let up = Upstream::start().await;
    let weft = start(&yaml(
        &[route(
            "r",
            &format!("{FAST}, methods: [POST], attempts_header: x-weft-attempts"),
            ", max_body_bytes: 1024",
        )],
        &up,
    ));
    let base = weft.url("public");
    // Larger than max_body_bytes: answered, not retried.
    let r = call(
        &base,
        "r",
        "POST",
        "/flaky/big/1/503",
        Bytes::from(vec![b'y'; 4096]),
    )
    .await;
    assert_status(&r, 503);
    assert_eq!(
        r.json()["body_bytes"],
        4096,
        "the whole body went upstream once"
    );
    assert_eq!(r.header("x-weft-attempts"), Some("1"));
    assert_eq!(up.seen("big"), 1);
    // Within it: retried.
    let r = call(
        &base,
        "r",
        "POST",
        "/flaky/small/1/503",
        Bytes::from(vec![b'y'; 1024]),
    )
    .await;
    assert_status(&r, 200);
    assert_eq!(r.json()["body_bytes"], 1024);
    assert_eq!(up.seen("small"), 2);
    // Streamed without a length: not retried either.
    let status = raw_status(
        weft.addr("public"),
        b"POST /flaky/chunked/1/503 HTTP/1.1\r\nhost: x\r\nx-route: r\r\n\
          transfer-encoding: chunked\r\nconnection: close\r\n\r\n5\r\nhello\r\n0\r\n\r\n",
    )
    .await;
    assert!(status.starts_with("HTTP/1.1 503"), "{status}");
    assert_eq!(up.seen("chunked"), 1);
    let admin = weft.url("admin");
    assert_eq!(attempts_metric(&admin, "r", "body_not_kept").await, 2);
}

#[test]
fn invalid_configs_are_refused_with_their_path() {
    let text = |retry: &str| {
        format!(
            "filters:\n{}\nlisteners:\n  - name: public\n    listen: 127.0.0.1:0\n    routes:\n{}clusters:\n  backend: {{ endpoints: [\"127.0.0.1:9\"] }}\n",
            filters(),
            route("r", retry, "")
        )
    };
    for (retry, message) in [
        ("max_attempts: 11", "max_attempts: 11 is out of range"),
        (
            "retry_on: [5xxx]",
            r#"retry_on[0]: unknown condition "5xxx""#,
        ),
        ("retry_on: [retriable-status]", "statuses: retry_on has"),
        ("methods: [\"GE T\"]", "methods[0]"),
        (
            "budget: { percent: 101 }",
            "budget.percent: 101 is out of range",
        ),
        ("attempts_header: content-length", "attempts_header"),
    ] {
        let (ok, out) = validate(bin(), &text(retry), "weft.yaml", &[]);
        assert!(!ok, "{retry}: {out}");
        assert!(
            out.contains("listeners[0].routes[0].filters[0].config") && out.contains(message),
            "{retry}: {out}"
        );
    }
    let (ok, out) = validate(
        bin(),
        &text("budget: null, per_try_timeout_ms: 100"),
        "weft.yaml",
        &[],
    );
    assert!(ok, "{out}");
}
