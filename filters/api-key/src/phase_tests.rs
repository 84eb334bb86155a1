//! The filter's phases, called natively through `weft_sdk::testing`.

use weft_sdk::Action;
use weft_sdk::log::Level;
use weft_sdk::testing::{TestFilter, TestHost, TestRequest};

use crate::{ApiKey, REQUESTS_METRIC};

fn api_key(host: &TestHost, extra: &str) -> TestFilter<ApiKey> {
    let config = format!(r#"{{"keys": [{{"consumer": "alice", "key": "s3cret"}}]{extra}}}"#);
    host.init::<ApiKey>(&config).unwrap()
}

#[test]
fn no_key_is_a_401_with_a_challenge() {
    let host = TestHost::new();
    let mut filter = api_key(&host, "");
    let mut exchange = filter.request(TestRequest::get("/api/orders?page=2").request_id("r-7"));
    let action = exchange.on_request_headers();
    assert!(
        matches!(action, Action::Respond(ref r) if r.status == 401),
        "{action:?}"
    );
    let response = exchange.response().unwrap();
    assert_eq!(
        response.header("www-authenticate"),
        Some(r#"ApiKey header="x-api-key""#)
    );
    assert_eq!(response.header("content-type"), Some("application/json"));
    let body = response.body_json();
    assert_eq!(body["error"], "missing_api_key");
    assert_eq!(body["request_id"], "r-7");
    assert_eq!(host.counter(REQUESTS_METRIC, &[("result", "missing")]), 1);
    // The path is logged without its query, which may hold a key.
    assert!(host.logged(Level::Debug, "refused GET /api/orders: no API key"));
}

#[test]
fn a_wrong_key_is_a_403() {
    let host = TestHost::new();
    let mut filter = api_key(&host, "");
    let mut exchange = filter.request(TestRequest::get("/").header("x-api-key", "guess"));
    exchange.on_request_headers();
    let response = exchange.response().unwrap();
    assert_eq!(response.status, 403);
    assert_eq!(response.body_json()["error"], "invalid_api_key");
    assert_eq!(host.counter(REQUESTS_METRIC, &[("result", "invalid")]), 1);
    assert_eq!(host.counter(REQUESTS_METRIC, &[("result", "allowed")]), 0);

    // Two keys are refused too, even if one is right.
    let mut exchange = filter.request(
        TestRequest::get("/")
            .header("x-api-key", "s3cret")
            .header("x-api-key", "guess"),
    );
    exchange.on_request_headers();
    assert_eq!(exchange.response().unwrap().status, 403);
}

#[test]
fn the_right_key_goes_on_with_the_consumer_and_without_the_key() {
    let host = TestHost::new();
    let mut filter = api_key(&host, "");
    let mut exchange = filter.request(
        TestRequest::get("/api/orders")
            .header("x-api-key", "s3cret")
            .header("x-consumer", "mallory"),
    );
    assert_eq!(exchange.on_request_headers(), Action::Continue);
    let upstream = exchange.request();
    assert_eq!(upstream.header_all("x-consumer"), ["alice"]);
    assert_eq!(upstream.header("x-api-key"), None);
    assert!(exchange.response().is_none());
    assert_eq!(host.counter(REQUESTS_METRIC, &[("result", "allowed")]), 1);

    // Accepted again (from the remembered tag), still counted.
    let mut exchange = filter.request(TestRequest::get("/").header("x-api-key", "s3cret"));
    assert_eq!(exchange.on_request_headers(), Action::Continue);
    assert_eq!(host.counter(REQUESTS_METRIC, &[("result", "allowed")]), 2);
}

#[test]
fn a_key_in_the_query_is_taken_out_of_the_path() {
    let host = TestHost::new();
    let mut filter = api_key(&host, r#", "query": "api_key""#);
    let mut exchange =
        filter.request(TestRequest::get("/items?api_key=s3cret&page=2").header("accept", "*/*"));
    assert_eq!(exchange.on_request_headers(), Action::Continue);
    let upstream = exchange.request();
    assert_eq!(upstream.path, "/items?page=2");
    assert_eq!(upstream.header("x-consumer"), Some("alice"));

    // With `strip: false` the key stays where it was.
    let mut filter = api_key(&host, r#", "query": "api_key", "strip": false"#);
    let mut exchange = filter.request(TestRequest::get("/items?api_key=s3cret"));
    assert_eq!(exchange.on_request_headers(), Action::Continue);
    assert_eq!(exchange.request().path, "/items?api_key=s3cret");
}
