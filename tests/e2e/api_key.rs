//! The `api-key` filter: refusals (401, 403) that never reach the upstream,
//! and allowed requests that reach it with the consumer named and the key
//! removed.

use http::Request;
use http_body_util::Full;
use weft_test_harness::process::validate;
use weft_test_harness::{Reply, Upstream, client, get, send};

use crate::{bin, config, start, wasm};

/// alice's key, configured in plain text.
const ALICE_KEY: &str = "alice-key-1";
/// bob's key, configured by its digest only.
const BOB_KEY: &str = "bob+key/2";
/// `printf %s 'bob+key/2' | sha256sum`
const BOB_SHA256: &str = "061e1fe7f17898512096c5d43b50150d52f4b0b4e114a61ae9a146fb1a9cd53a";

fn filters() -> String {
    format!(
        "  api-key: {{ path: {} }}\n  add-header: {{ path: {} }}",
        wasm("api_key"),
        wasm("add_header")
    )
}

/// The key config every route here uses.
fn keys() -> String {
    format!("[{{ consumer: alice, key: {ALICE_KEY} }}, {{ consumer: bob, sha256: {BOB_SHA256} }}]")
}

/// Routes: `/api/` (header or `api_key` query parameter), `/header-only/`
/// (header only), `/keep/` (`strip: false`), `/chain/` (api-key, then
/// add-header).
fn routes() -> String {
    let keys = keys();
    format!(
        r#"      - name: api
        match: {{ path_prefix: /api/ }}
        filters: [{{ filter: api-key, config: {{ keys: {keys}, query: api_key }} }}]
        cluster: backend
      - name: header-only
        match: {{ path_prefix: /header-only/ }}
        filters: [{{ filter: api-key, config: {{ keys: {keys} }} }}]
        cluster: backend
      - name: keep
        match: {{ path_prefix: /keep/ }}
        filters: [{{ filter: api-key, config: {{ keys: {keys}, strip: false }} }}]
        cluster: backend
      - name: chain
        match: {{ path_prefix: /chain/ }}
        filters:
          - {{ filter: api-key, config: {{ keys: {keys} }} }}
          - {{ filter: add-header, config: {{ request: {{ x-added: "yes" }}, response: {{ x-served-by: weft }} }} }}
        cluster: backend"#
    )
}

/// GET `url` with the given request headers.
async fn get_with(url: &str, headers: &[(&str, &str)]) -> Reply {
    let mut req = Request::get(url);
    for (name, value) in headers {
        req = req.header(*name, *value);
    }
    send(&client(false), req.body(Full::default()).unwrap()).await
}

/// Checks a refusal: status, JSON error code, content type.
fn assert_refused(r: &Reply, status: u16, error: &str) {
    assert_eq!(r.status, status, "{:?}", r.body);
    assert_eq!(r.header("content-type"), Some("application/json"));
    assert_eq!(r.json()["error"], error, "{:?}", r.body);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_request_without_a_key_gets_401_with_a_challenge_and_never_reaches_the_upstream() {
    let up = Upstream::start().await;
    let weft = start(&config(&filters(), &routes(), up.addr));
    let url = weft.url("public");

    let r = get_with(&format!("{url}/api/items"), &[("x-request-id", "no-key-1")]).await;
    assert_refused(&r, 401, "missing_api_key");
    assert_eq!(
        r.header("www-authenticate"),
        Some(r#"ApiKey header="x-api-key", query="api_key""#)
    );
    let body = r.json();
    assert_eq!(
        body["message"],
        "this route needs an API key, in the `x-api-key` header or the `api_key` query parameter"
    );
    assert_eq!(body["request_id"], "no-key-1");

    // Without a query parameter configured, the challenge names the header only.
    let r = get(&format!("{url}/header-only/items")).await;
    assert_refused(&r, 401, "missing_api_key");
    assert_eq!(
        r.header("www-authenticate"),
        Some(r#"ApiKey header="x-api-key""#)
    );

    // An empty key is no key; a key in the query of a header-only route is
    // not looked at.
    let r = get_with(&format!("{url}/api/items"), &[("x-api-key", "")]).await;
    assert_refused(&r, 401, "missing_api_key");
    let r = get(&format!("{url}/api/items?api_key=")).await;
    assert_refused(&r, 401, "missing_api_key");
    let r = get(&format!("{url}/header-only/items?api_key={ALICE_KEY}")).await;
    assert_refused(&r, 401, "missing_api_key");

    assert_eq!(
        up.hits(),
        0,
        "a refused request must not reach the upstream"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unknown_key_gets_403_and_never_reaches_the_upstream() {
    let up = Upstream::start().await;
    let weft = start(&config(&filters(), &routes(), up.addr));
    let url = weft.url("public");

    let r = get_with(&format!("{url}/api/items"), &[("x-api-key", "guess")]).await;
    assert_refused(&r, 403, "invalid_api_key");
    assert_eq!(r.json()["message"], "the API key is not valid");
    assert_eq!(r.header("www-authenticate"), None, "only a 401 challenges");

    // Keys are compared exactly: case and the digest itself do not pass.
    let upper = ALICE_KEY.to_uppercase();
    for key in [upper.as_str(), BOB_SHA256] {
        let r = get_with(&format!("{url}/api/items"), &[("x-api-key", key)]).await;
        assert_refused(&r, 403, "invalid_api_key");
    }

    let r = get(&format!("{url}/api/items?api_key=guess")).await;
    assert_refused(&r, 403, "invalid_api_key");

    // A known key next to another one is refused rather than guessed at.
    let r = get_with(
        &format!("{url}/api/items"),
        &[("x-api-key", ALICE_KEY), ("x-api-key", "guess")],
    )
    .await;
    assert_refused(&r, 403, "invalid_api_key");
    assert_eq!(
        r.json()["message"],
        "the request carries more than one API key"
    );

    assert_eq!(
        up.hits(),
        0,
        "a refused request must not reach the upstream"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_known_key_in_the_header_names_the_consumer_and_is_removed() {
    let up = Upstream::start().await;
    let weft = start(&config(&filters(), &routes(), up.addr));
    let url = weft.url("public");

    // The client tries to pass as someone else with its own x-consumer
    // headers: they are replaced.
    let r = get_with(
        &format!("{url}/api/items?page=2"),
        &[
            ("x-api-key", ALICE_KEY),
            ("x-consumer", "mallory"),
            ("x-consumer", "eve"),
        ],
    )
    .await;
    assert_eq!(r.status, 200, "{:?}", r.body);
    let echo = r.json();
    assert_eq!(echo["headers"]["x-consumer"], "alice");
    assert_eq!(echo["headers"].get("x-api-key"), None, "the key is removed");
    assert_eq!(echo["path"], "/api/items?page=2", "the path is untouched");

    // With `strip: false` the key goes upstream too.
    let r = get_with(
        &format!("{url}/keep/items"),
        &[("x-api-key", ALICE_KEY), ("x-consumer", "mallory")],
    )
    .await;
    assert_eq!(r.status, 200, "{:?}", r.body);
    assert_eq!(r.echoed_header("x-consumer").as_deref(), Some("alice"));
    assert_eq!(r.echoed_header("x-api-key").as_deref(), Some(ALICE_KEY));

    assert_eq!(up.hits(), 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_key_configured_by_its_sha256_digest_is_accepted() {
    let up = Upstream::start().await;
    let weft = start(&config(&filters(), &routes(), up.addr));
    let url = weft.url("public");

    for path in ["/api/x", "/header-only/x"] {
        let r = get_with(&format!("{url}{path}"), &[("x-api-key", BOB_KEY)]).await;
        assert_eq!(r.status, 200, "{path}: {:?}", r.body);
        assert_eq!(r.echoed_header("x-consumer").as_deref(), Some("bob"));
        assert_eq!(r.echoed_header("x-api-key"), None);
    }
    assert_eq!(up.hits(), 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_key_in_the_query_is_accepted_and_removed_from_the_path() {
    let up = Upstream::start().await;
    let weft = start(&config(&filters(), &routes(), up.addr));
    let url = weft.url("public");

    // The other parameters stay, byte for byte and in order.
    let r = get(&format!(
        "{url}/api/items?a=1&api_key={ALICE_KEY}&b=x%20y&c"
    ))
    .await;
    assert_eq!(r.status, 200, "{:?}", r.body);
    assert_eq!(r.json()["path"], "/api/items?a=1&b=x%20y&c");
    assert_eq!(r.echoed_header("x-consumer").as_deref(), Some("alice"));

    // Nothing left: no `?`. The value is percent-decoded: bob's key has a
    // `+` and a `/`.
    let r = get(&format!("{url}/api/items?api_key=bob%2Bkey%2F2")).await;
    assert_eq!(r.status, 200, "{:?}", r.body);
    assert_eq!(r.json()["path"], "/api/items");
    assert_eq!(r.echoed_header("x-consumer").as_deref(), Some("bob"));

    // The header wins over the query; the query parameter is removed anyway.
    let r = get_with(
        &format!("{url}/api/items?api_key=guess&z=9"),
        &[("x-api-key", ALICE_KEY)],
    )
    .await;
    assert_eq!(r.status, 200, "{:?}", r.body);
    assert_eq!(r.json()["path"], "/api/items?z=9");
    assert_eq!(r.echoed_header("x-consumer").as_deref(), Some("alice"));

    assert_eq!(up.hits(), 3);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn add_header_after_api_key_runs_only_for_allowed_requests() {
    let up = Upstream::start().await;
    let weft = start(&config(&filters(), &routes(), up.addr));
    let url = weft.url("public");

    let allowed = get_with(&format!("{url}/chain/x"), &[("x-api-key", ALICE_KEY)]).await;
    assert_eq!(allowed.status, 200, "{:?}", allowed.body);
    assert_eq!(allowed.echoed_header("x-added").as_deref(), Some("yes"));
    assert_eq!(
        allowed.echoed_header("x-consumer").as_deref(),
        Some("alice")
    );
    assert_eq!(allowed.header("x-served-by"), Some("weft"));

    // api-key answers first: add-header, after it in the chain, sees neither
    // the request nor the response.
    let missing = get(&format!("{url}/chain/x")).await;
    assert_refused(&missing, 401, "missing_api_key");
    assert_eq!(missing.header("x-served-by"), None);
    let invalid = get_with(&format!("{url}/chain/x"), &[("x-api-key", "guess")]).await;
    assert_refused(&invalid, 403, "invalid_api_key");
    assert_eq!(invalid.header("x-served-by"), None);

    assert_eq!(up.hits(), 1, "only the allowed request went upstream");
}

#[test]
fn a_bad_api_key_config_is_rejected_with_its_path() {
    let yaml = |key_config: &str| {
        config(
            &filters(),
            &format!(
                "      - {{ name: api, filters: [{{ filter: api-key, config: {key_config} }}], cluster: backend }}"
            ),
            "127.0.0.1:9000".parse().unwrap(),
        )
    };
    let cases = [
        (
            "{ keys: [] }".to_string(),
            "api-key needs at least one entry under `keys`",
        ),
        (
            "{ keys: [{ consumer: a, sha256: abc }] }".to_string(),
            "keys[0].sha256: expected 64 hexadecimal digits (a SHA-256 digest), got 3 characters",
        ),
        (
            "{ keys: [{ consumer: \"\", key: k }] }".to_string(),
            "keys[0].consumer: the consumer name is empty",
        ),
        (
            format!(
                "{{ keys: [{{ consumer: a, key: {BOB_KEY} }}, {{ consumer: b, sha256: {BOB_SHA256} }}] }}"
            ),
            "keys[1] (consumer \"b\"): the same key is already listed for consumer \"a\"",
        ),
        (
            "{ keys: [{ consumer: a, key: k }], header: \"x api key\" }".to_string(),
            "header: invalid header name `x api key`",
        ),
    ];
    for (key_config, expected) in cases {
        let (ok, out) = validate(bin(), &yaml(&key_config), "weft.yaml", &[]);
        assert!(!ok, "{key_config} was accepted:\n{out}");
        assert!(
            out.contains(&format!(
                "listeners[0].routes[0].filters[0].config: init rejected the config: {expected}"
            )),
            "{key_config}:\n{out}"
        );
    }
}
