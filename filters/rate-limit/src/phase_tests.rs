//! The filter's phases, called natively through `weft_sdk::testing`: the
//! buckets live in the test host's shared state, with its compare-and-swap.

use std::time::Duration;

use weft_sdk::testing::{TestFilter, TestHost, TestRequest, TestResponse};
use weft_sdk::{Action, log::Level};

use crate::{FAIL_OPEN_METRIC, REQUESTS_METRIC, RateLimit};

fn rate_limit(host: &TestHost, config: &str) -> TestFilter<RateLimit> {
    host.init::<RateLimit>(config).unwrap()
}

fn from(ip: &str) -> TestRequest {
    TestRequest::get("/api/items?page=1").peer(&format!("{ip}:40000"))
}

#[test]
fn the_request_past_the_burst_gets_429_with_retry_after() {
    let host = TestHost::new();
    let mut filter = rate_limit(&host, r#"{"burst": 2, "rate": 1, "name": "api"}"#);
    for _ in 0..2 {
        assert_eq!(
            filter.request(from("192.0.2.1")).on_request_headers(),
            Action::Continue
        );
    }
    let mut exchange = filter.request(from("192.0.2.1"));
    let action = exchange.on_request_headers();
    assert!(
        matches!(action, Action::Respond(ref r) if r.status == 429),
        "{action:?}"
    );
    let response = exchange.response().unwrap();
    assert_eq!(response.header("retry-after"), Some("1"));
    assert_eq!(
        response.header("ratelimit-policy"),
        Some(r#""api";q=2;w=2"#)
    );
    assert_eq!(response.header("ratelimit"), Some(r#""api";r=0;t=2"#));
    assert_eq!(response.body_json()["error"], "rate_limited");
    assert_eq!(
        host.counter(REQUESTS_METRIC, &[("policy", "api"), ("result", "allowed")]),
        2
    );
    assert_eq!(
        host.counter(REQUESTS_METRIC, &[("policy", "api"), ("result", "limited")]),
        1
    );
    assert!(host.logged(Level::Debug, "limited GET /api/items by policy \"api\""));
    assert!(
        !host.shared_keys().is_empty(),
        "the bucket is in shared state"
    );

    // Another client has its own bucket; this one refills with time.
    assert_eq!(
        filter.request(from("192.0.2.2")).on_request_headers(),
        Action::Continue
    );
    host.advance(Duration::from_secs(1));
    assert_eq!(
        filter.request(from("192.0.2.1")).on_request_headers(),
        Action::Continue
    );
}

#[test]
fn instances_share_the_buckets() {
    let host = TestHost::new();
    let config = r#"{"burst": 1, "rate": 1, "per": "minute"}"#;
    let mut first = rate_limit(&host, config);
    let mut second = rate_limit(&host, config);
    assert_eq!(
        first.request(from("192.0.2.1")).on_request_headers(),
        Action::Continue
    );
    let mut exchange = second.request(from("192.0.2.1"));
    exchange.on_request_headers();
    let response = exchange.response().unwrap();
    assert_eq!(response.status, 429);
    assert_eq!(response.header("retry-after"), Some("60"));
}

#[test]
fn allowed_responses_carry_the_ratelimit_headers() {
    let host = TestHost::new();
    let mut filter = rate_limit(&host, r#"{"burst": 5, "rate": 5, "headers": true}"#);
    let mut exchange = filter.request(from("192.0.2.1"));
    assert_eq!(exchange.on_request_headers(), Action::Continue);
    exchange.upstream(TestResponse::new(200).header("ratelimit", r#""upstream";r=9;t=1"#));
    exchange.on_response_headers();
    let response = exchange.response().unwrap();
    assert_eq!(
        response.header_all("ratelimit"),
        [r#""upstream";r=9;t=1"#, r#""default";r=4;t=1"#]
    );
    assert_eq!(
        response.header("ratelimit-policy"),
        Some(r#""default";q=5;w=1"#)
    );
}

#[test]
fn a_full_shared_state_lets_requests_through_and_says_so() {
    let host = TestHost::new();
    host.set_shared_max_keys(0);
    let mut filter = rate_limit(&host, r#"{"burst": 1, "rate": 1}"#);
    for _ in 0..3 {
        assert_eq!(
            filter.request(from("192.0.2.1")).on_request_headers(),
            Action::Continue
        );
    }
    assert_eq!(
        host.counter(
            FAIL_OPEN_METRIC,
            &[("policy", "default"), ("reason", "full")]
        ),
        3
    );
    // Warnings are throttled: one per 10 s.
    let warnings = host
        .logs()
        .into_iter()
        .filter(|l| l.level == Level::Warn)
        .count();
    assert_eq!(warnings, 1, "{:?}", host.logs());
}
