//! The filter's phases, called natively through `weft_sdk::testing`.

use std::time::Duration;

use weft_sdk::testing::{TestFilter, TestHost, TestRequest, TestResponse};
use weft_sdk::{Action, Phases};

use crate::{ATTEMPTS_METRIC, Retry};

fn retry(host: &TestHost, config: &str) -> TestFilter<Retry> {
    host.init::<Retry>(config).unwrap()
}

fn attempts(host: &TestHost, outcome: &str) -> u64 {
    host.counter(
        ATTEMPTS_METRIC,
        &[("route", "orders"), ("outcome", outcome)],
    )
}

#[test]
fn a_503_is_retried_then_the_next_answer_goes_on() {
    let host = TestHost::new();
    let mut filter = retry(&host, r#"{"attempts_header": "x-weft-attempts"}"#);
    assert!(filter.phases().contains(Phases::RETRY));
    let mut exchange = filter.request(TestRequest::get("/orders").route("orders"));
    exchange.on_request_headers();
    exchange.upstream(TestResponse::new(503));
    let action = exchange.on_response_headers();
    let Action::Retry { delay } = action else {
        panic!("{action:?}")
    };
    assert!(
        delay <= Duration::from_millis(25),
        "full jitter under base_ms: {delay:?}"
    );
    assert_eq!(attempts(&host, "retried"), 1);

    exchange.upstream(TestResponse::new(200));
    assert_eq!(exchange.on_response_headers(), Action::Continue);
    let response = exchange.response().unwrap();
    assert_eq!(response.status, 200);
    assert_eq!(response.header("x-weft-attempts"), Some("2"));
}

#[test]
fn retry_after_sets_the_wait() {
    let host = TestHost::new();
    let mut filter = retry(&host, r#"{"budget": null}"#);
    let mut exchange = filter.request(TestRequest::get("/").route("orders"));
    exchange.upstream(TestResponse::new(503).header("retry-after", "2"));
    assert_eq!(
        exchange.on_response_headers(),
        Action::Retry {
            delay: Duration::from_secs(2)
        }
    );
    // Past max_retry_after_ms (10 s) the failure goes to the client.
    exchange.upstream(TestResponse::new(503).header("retry-after", "60"));
    assert_eq!(exchange.on_response_headers(), Action::Continue);
    assert_eq!(attempts(&host, "retry_after_too_long"), 1);
}

#[test]
fn what_cannot_be_retried_goes_to_the_client() {
    let host = TestHost::new();
    let mut filter = retry(&host, r#"{"max_attempts": 2, "budget": null}"#);
    // A POST is not idempotent.
    let mut exchange = filter.request(TestRequest::post("/").route("orders"));
    exchange.upstream(TestResponse::new(502));
    assert_eq!(exchange.on_response_headers(), Action::Continue);
    assert_eq!(attempts(&host, "method_not_allowed"), 1);
    // A body the proxy did not keep.
    let mut exchange = filter.request(TestRequest::get("/").route("orders").not_retryable());
    exchange.upstream(TestResponse::new(502));
    assert_eq!(exchange.on_response_headers(), Action::Continue);
    assert_eq!(attempts(&host, "body_not_kept"), 1);
    // The last attempt.
    let mut exchange = filter.request(TestRequest::get("/").route("orders"));
    exchange.upstream(TestResponse::new(504));
    assert!(matches!(
        exchange.on_response_headers(),
        Action::Retry { .. }
    ));
    exchange.upstream(TestResponse::new(504));
    assert_eq!(exchange.on_response_headers(), Action::Continue);
    assert_eq!(attempts(&host, "exhausted"), 1);
    // Not a failure retry_on covers.
    let mut exchange = filter.request(TestRequest::get("/").route("orders"));
    exchange.upstream(TestResponse::new(500));
    assert_eq!(exchange.on_response_headers(), Action::Continue);
}

#[test]
fn a_connect_failure_is_retried_and_the_budget_is_in_shared_state() {
    let host = TestHost::new();
    let mut filter = retry(
        &host,
        r#"{"retry_on": ["connect-failure"], "per_try_timeout_ms": 800}"#,
    );
    let mut exchange = filter.request(TestRequest::get("/").route("orders").listener("public"));
    exchange.on_request_headers();
    assert_eq!(exchange.request().timeout_ms, Some(800));
    exchange.upstream(TestResponse::new(503).failure("connect-failure"));
    assert!(matches!(
        exchange.on_response_headers(),
        Action::Retry { .. }
    ));
    assert_eq!(host.shared_keys(), ["budget/public/orders"]);
}
