//! The filter's phases, called natively through `weft_sdk::testing`: each
//! operation, their order, and the variables, on the proxy's header map.

use std::time::Duration;

use serde_json::{Value, json};
use weft_sdk::log::Level;
use weft_sdk::testing::{TestFilter, TestHost, TestRequest, TestResponse};
use weft_sdk::{Action, Phases};

use crate::HeadersFilter;

fn headers(host: &TestHost, config: Value) -> TestFilter<HeadersFilter> {
    host.init_json::<HeadersFilter>(config).unwrap()
}

#[test]
fn sets_and_removes_request_and_response_headers() {
    let host = TestHost::new();
    let mut filter = headers(
        &host,
        json!({
            "request": {"remove": ["x-debug"], "set": {"x-env": "prod", "x-client-ip": "%PEER_IP%"}},
            "response": {"remove": ["server"], "set": {"x-request-id": "%REQUEST_ID%", "x-upstream-status": "%STATUS%"}}
        }),
    );
    let mut exchange = filter.request(
        TestRequest::get("/")
            .header("x-debug", "1")
            .header("x-env", "dev")
            .peer("192.0.2.7:5000")
            .request_id("abc"),
    );
    assert_eq!(exchange.on_request_headers(), Action::Continue);
    let upstream = exchange.request();
    assert_eq!(upstream.header("x-debug"), None);
    assert_eq!(upstream.header_all("x-env"), ["prod"]);
    assert_eq!(upstream.header("x-client-ip"), Some("192.0.2.7"));

    exchange.upstream(TestResponse::new(503).header("server", "upstream/1.0"));
    assert_eq!(exchange.on_response_headers(), Action::Continue);
    let response = exchange.response().unwrap();
    assert_eq!(response.header("server"), None);
    assert_eq!(response.header("x-request-id"), Some("abc"));
    assert_eq!(response.header("x-upstream-status"), Some("503"));
    assert!(host.logs().is_empty(), "{:?}", host.logs());
}

#[test]
fn each_operation_alone() {
    let host = TestHost::new();
    let run = |section: Value, given: &[(&str, &str)]| {
        let mut filter = headers(&host, json!({ "request": section }));
        let mut request = TestRequest::get("/");
        for (name, value) in given {
            request = request.header(name, value);
        }
        let mut exchange = filter.request(request);
        exchange.on_request_headers();
        exchange.request()
    };
    let sent = run(
        json!({"remove": ["a"]}),
        &[("a", "1"), ("b", "2"), ("a", "3")],
    );
    assert_eq!(sent.header_all("a"), Vec::<&str>::new());
    assert_eq!(sent.header_all("b"), ["2"]);

    let sent = run(
        json!({"set": {"a": "new"}}),
        &[("a", "1"), ("b", "2"), ("a", "3")],
    );
    assert_eq!(sent.header_all("a"), ["new"]);
    assert_eq!(sent.header_all("b"), ["2"]);

    let sent = run(json!({"add": {"a": "2", "c": "3"}}), &[("a", "1")]);
    assert_eq!(sent.header_all("a"), ["1", "2"]);
    assert_eq!(sent.header_all("c"), ["3"]);

    // Rename moves every value and replaces the target.
    let sent = run(
        json!({"rename": {"old": "new"}}),
        &[("old", "1"), ("new", "stale"), ("old", "2"), ("x", "y")],
    );
    assert_eq!(sent.header_all("old"), Vec::<&str>::new());
    assert_eq!(sent.header_all("new"), ["1", "2"]);
    assert_eq!(sent.header_all("x"), ["y"]);
    // Renaming an absent header changes nothing.
    let sent = run(json!({"rename": {"old": "new"}}), &[("new", "kept")]);
    assert_eq!(sent.header_all("new"), ["kept"]);

    let sent = run(
        json!({"set_if_absent": {"missing": "default", "present": "default"}}),
        &[("present", "client")],
    );
    assert_eq!(sent.header_all("present"), ["client"]);
    assert_eq!(sent.header_all("missing"), ["default"]);
}

#[test]
fn operations_run_in_order_remove_rename_set_set_if_absent_add() {
    // remove then rename: the removed header is gone before the rename.
    // rename then set_if_absent: the renamed header counts as present.
    // set then add: the added value follows the set one.
    let host = TestHost::new();
    let mut filter = headers(
        &host,
        json!({"request": {
            "remove": ["gone"],
            "rename": {"from": "to"},
            "set": {"s": "set"},
            "set_if_absent": {"to": "default", "fresh": "d"},
            "add": {"s": "added", "gone": "back"}
        }}),
    );
    let mut exchange = filter.request(
        TestRequest::get("/")
            .header("gone", "1")
            .header("from", "v")
            .header("s", "client"),
    );
    exchange.on_request_headers();
    let sent = exchange.request();
    for (name, values) in [
        ("gone", &["back"][..]),
        ("from", &[]),
        ("to", &["v"]),
        ("s", &["set", "added"]),
        ("fresh", &["d"]),
    ] {
        assert_eq!(sent.header_all(name), values, "{name}");
    }
}

#[test]
fn variables_see_the_headers_before_the_operations() {
    // Copy x-a to x-b, then remove x-a: a move.
    let host = TestHost::new();
    let mut filter = headers(
        &host,
        json!({"request": {"remove": ["x-a"], "set": {"x-b": "copied:%REQ(x-a)%"}}}),
    );
    let mut exchange = filter.request(TestRequest::get("/").header("x-a", "value"));
    exchange.on_request_headers();
    let sent = exchange.request();
    assert_eq!(sent.header("x-a"), None);
    assert_eq!(sent.header("x-b"), Some("copied:value"));
}

#[test]
fn an_invalid_rendered_value_is_skipped_and_logged() {
    let host = TestHost::new();
    let mut filter = headers(
        &host,
        json!({"request": {"set": {"bad": "%ROUTE%", "good": "ok"}, "add": {"bad2": "x%ROUTE%"}}}),
    );
    let mut exchange = filter.request(TestRequest::get("/").route("line\nbreak"));
    assert_eq!(exchange.on_request_headers(), Action::Continue);
    let sent = exchange.request();
    assert_eq!(sent.header("good"), Some("ok"));
    assert_eq!((sent.header("bad"), sent.header("bad2")), (None, None));
    let warnings: Vec<String> = host.logs().into_iter().map(|l| l.message).collect();
    assert_eq!(warnings.len(), 2, "{warnings:?}");
    assert!(warnings[0].starts_with("request.set.bad: skipped for this request"));
    assert!(warnings[1].starts_with("request.add.bad2: skipped for this request"));
    assert!(host.logged(Level::Warn, "the control character '\\n'"));
}

#[test]
fn the_phases_follow_the_config() {
    let host = TestHost::new();
    let request_only = headers(&host, json!({"request": {"set": {"a": "1"}}}));
    assert_eq!(request_only.phases(), Phases::REQUEST_HEADERS);
    let response_only = headers(&host, json!({"response": {"set": {"a": "%STATUS%"}}}));
    assert_eq!(response_only.phases(), Phases::RESPONSE_HEADERS);
    // %START_TIME% in the response is taken when the request arrives.
    let mut start = headers(
        &host,
        json!({"response": {"set": {"x-start": "%START_TIME%"}}}),
    );
    assert_eq!(
        start.phases(),
        Phases::REQUEST_HEADERS | Phases::RESPONSE_HEADERS
    );
    let mut exchange = start.request(TestRequest::get("/"));
    exchange.on_request_headers();
    exchange.advance(Duration::from_secs(3));
    exchange.upstream(TestResponse::new(200));
    exchange.on_response_headers();
    assert_eq!(
        exchange.response().unwrap().header("x-start"),
        Some("2026-01-01T00:00:00.000Z")
    );
}
