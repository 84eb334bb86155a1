//! The filter's phases, called natively through `weft_sdk::testing`.

use std::time::Duration;

use weft_sdk::Action;
use weft_sdk::testing::{TestHost, TestRequest};

use crate::{Fault, INJECTED_METRIC};

#[test]
fn a_trigger_header_aborts_and_does_not_reach_the_upstream() {
    let host = TestHost::new();
    let mut filter = host.init::<Fault>(r#"{"header_trigger": true}"#).unwrap();
    let mut exchange = filter.request(
        TestRequest::get("/")
            .header("x-weft-fault-abort", "503")
            .request_id("r-1"),
    );
    let action = exchange.on_request_headers();
    assert!(
        matches!(action, Action::Respond(ref r) if r.status == 503),
        "{action:?}"
    );
    let response = exchange.response().unwrap();
    assert_eq!(response.header("x-weft-fault"), Some("abort"));
    let body = response.body_json();
    assert_eq!(body["error"], "fault_injected");
    assert_eq!(body["request_id"], "r-1");
    assert_eq!(host.counter(INJECTED_METRIC, &[("fault", "abort")]), 1);

    // Without the header the request goes on, and never carries it upstream.
    let mut exchange = filter.request(TestRequest::get("/"));
    assert_eq!(exchange.on_request_headers(), Action::Continue);
    assert_eq!(host.counter(INJECTED_METRIC, &[("fault", "abort")]), 1);
}

#[test]
fn a_delay_pauses_then_answers_the_abort_chosen_with_it() {
    let host = TestHost::new();
    let mut filter = host.init::<Fault>(r#"{"header_trigger": true}"#).unwrap();
    let mut exchange = filter.request(
        TestRequest::get("/")
            .header("x-weft-fault-delay", "250")
            .header("x-weft-fault-abort", "504"),
    );
    assert_eq!(
        exchange.on_request_headers(),
        Action::ContinueAfter(Duration::from_millis(250))
    );
    let upstream = exchange.request();
    assert_eq!(upstream.header("x-weft-fault-delay"), None);
    assert_eq!(upstream.header("x-weft-fault-abort"), None);
    // The proxy calls the phase again after the pause.
    exchange.advance(Duration::from_millis(250));
    let action = exchange.on_request_headers();
    assert!(
        matches!(action, Action::Respond(ref r) if r.status == 504),
        "{action:?}"
    );
    assert_eq!(host.counter(INJECTED_METRIC, &[("fault", "delay")]), 1);
    assert_eq!(host.counter(INJECTED_METRIC, &[("fault", "abort")]), 1);
}

#[test]
fn percentages_draw_from_the_random_numbers() {
    let host = TestHost::new();
    let mut filter = host
        .init::<Fault>(r#"{"abort": {"status": 500, "percent": 100, "body": "down"}}"#)
        .unwrap();
    let mut exchange = filter.request(TestRequest::get("/"));
    exchange.on_request_headers();
    let response = exchange.response().unwrap();
    assert_eq!(response.status, 500);
    assert_eq!(response.body_json()["message"], "down");

    let mut filter = host
        .init::<Fault>(r#"{"abort": {"status": 500, "percent": 0}}"#)
        .unwrap();
    let mut exchange = filter.request(TestRequest::get("/"));
    assert_eq!(exchange.on_request_headers(), Action::Continue);
}
