//! The filter's phases, called natively through `weft_sdk::testing`, with
//! tokens minted by the fixed test keys.

use serde_json::{Value, json};
use weft_sdk::Action;
use weft_sdk::http::HttpResponse;
use weft_sdk::log::Level;
use weft_sdk::testing::{TestFilter, TestHost, TestRequest};

use crate::testkeys::{jwks, mint, oct_jwk};
use crate::{JwtAuth, REQUESTS_METRIC};

/// The test host's clock: 2026-01-01T00:00:00Z.
const NOW_S: u64 = 1_767_225_600;

fn jwt_auth(host: &TestHost, config: Value) -> TestFilter<JwtAuth> {
    host.init_json::<JwtAuth>(config).unwrap()
}

fn hs256(host: &TestHost) -> TestFilter<JwtAuth> {
    jwt_auth(
        host,
        json!({
            "jwks": {"keys": [oct_jwk("hmac")]},
            "algorithms": ["HS256"],
            "forward_claims": {"sub": "x-user"},
            "strip_token": true
        }),
    )
}

fn bearer(token: &str) -> TestRequest {
    TestRequest::get("/api").header("authorization", &format!("Bearer {token}"))
}

#[test]
fn a_valid_hs256_token_passes_with_its_claims_forwarded() {
    let host = TestHost::new();
    let mut filter = hs256(&host);
    let token = mint("HS256", "hmac", &json!({"sub": "alice", "exp": NOW_S + 60}));
    let mut exchange = filter.request(bearer(&token).header("x-user", "mallory"));
    assert_eq!(exchange.on_request_headers(), Action::Continue);
    let upstream = exchange.request();
    assert_eq!(upstream.header_all("x-user"), ["alice"]);
    assert_eq!(upstream.header("authorization"), None);
    assert_eq!(host.counter(REQUESTS_METRIC, &[("result", "allowed")]), 1);
}

#[test]
fn a_bad_token_gets_401() {
    let host = TestHost::new();
    let mut filter = hs256(&host);
    let valid = mint("HS256", "hmac", &json!({"sub": "alice", "exp": NOW_S + 60}));
    let expired = mint(
        "HS256",
        "hmac",
        &json!({"sub": "alice", "exp": NOW_S - 3600}),
    );
    let tampered = format!("{}x", &valid[..valid.len() - 1]);
    for token in [expired.as_str(), tampered.as_str(), "not.a.token"] {
        let mut exchange = filter.request(bearer(token));
        let action = exchange.on_request_headers();
        assert!(
            matches!(action, Action::Respond(ref r) if r.status == 401),
            "{action:?}"
        );
        let response = exchange.response().unwrap();
        assert_eq!(response.body_json()["error"], "invalid_token");
        let challenge = response.header("www-authenticate").unwrap();
        assert!(
            challenge.contains(r#"error="invalid_token""#),
            "{challenge}"
        );
    }
    assert_eq!(host.counter(REQUESTS_METRIC, &[("result", "invalid")]), 3);
    // The reason is logged, never the token.
    assert!(host.logged(Level::Debug, "refused GET /api"));
    assert!(!host.logs().iter().any(|l| l.message.contains(&expired)));

    let mut exchange = filter.request(TestRequest::get("/api"));
    exchange.on_request_headers();
    let response = exchange.response().unwrap();
    assert_eq!(response.status, 401);
    assert_eq!(response.body_json()["error"], "missing_token");
    assert_eq!(response.header("www-authenticate"), Some("Bearer"));
}

const JWKS_URL: &str = "http://127.0.0.1:8081/jwks.json";

fn remote(host: &TestHost) -> TestFilter<JwtAuth> {
    jwt_auth(
        host,
        json!({"jwks_url": JWKS_URL, "algorithms": ["ES256", "RS256"]}),
    )
}

#[test]
fn keys_are_fetched_once_with_the_callout_and_shared() {
    let host = TestHost::new();
    host.http_response(
        JWKS_URL,
        HttpResponse {
            status: 200,
            headers: vec![("content-type".into(), "application/json".into())],
            body: jwks().to_string().into_bytes(),
        },
    );
    let token = mint("ES256", "ec", &json!({"sub": "bob", "exp": NOW_S + 60}));
    let mut first = remote(&host);
    assert_eq!(
        first.request(bearer(&token)).on_request_headers(),
        Action::Continue
    );
    // A second instance takes the keys from shared state.
    let mut second = remote(&host);
    assert_eq!(
        second.request(bearer(&token)).on_request_headers(),
        Action::Continue
    );
    let calls = host.http_calls();
    assert_eq!(calls.len(), 1, "{calls:?}");
    assert_eq!(calls[0].method, "GET");
    assert_eq!(calls[0].timeout_ms, 2000);
}

#[test]
fn no_keys_is_a_500_and_the_cause_is_logged() {
    let host = TestHost::new();
    host.on_http(|_| Err("cannot connect: connection refused".into()));
    let mut filter = remote(&host);
    let token = mint("ES256", "ec", &json!({"sub": "bob"}));
    let mut exchange = filter.request(bearer(&token));
    exchange.on_request_headers();
    let response = exchange.response().unwrap();
    assert_eq!(response.status, 500);
    assert_eq!(response.body_json()["error"], "jwks_unavailable");
    assert_eq!(host.counter(REQUESTS_METRIC, &[("result", "error")]), 1);
    assert!(
        host.logs()
            .iter()
            .any(|l| l.level >= Level::Warn && l.message.contains("connection refused")),
        "{:?}",
        host.logs()
    );
}
