//! The `jwt-auth` filter: tokens of every algorithm accepted with their
//! claims forwarded, every kind of bad token refused with 401 before the
//! upstream, and a JWK Set fetched from a URL once, again on key rotation,
//! and not at all when the proxy does not allow the call.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use http::{Request, Response, StatusCode};
use http_body_util::Full;
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto;
use serde_json::{Value, json};
use tokio::net::TcpListener;
use weft_test_harness::jwt::{self, Alg, Key};
use weft_test_harness::process::validate;
use weft_test_harness::{Reply, Upstream, Weft, client, get, send};

use crate::{bin, config, start, wasm};

const ISSUER: &str = "https://idp.test";
const AUDIENCE: &str = "orders";

/// The `filters:` block; `allow` is the module's `allow_http`. The
/// deadline is the one the filter's docs recommend: an RS256 or ES256
/// verification takes 1 to 3 ms, and the tests run side by side on few cores.
fn filters(allow: &[SocketAddr]) -> String {
    let allow: Vec<String> = allow.iter().map(|a| format!("\"{a}\"")).collect();
    format!(
        "  jwt-auth: {{ path: {}, deadline_ms: 50, allow_http: [{}] }}",
        wasm("jwt_auth"),
        allow.join(", ")
    )
}

/// The keys of the inline routes, by kid: `rs`, `ec`, `ed`, `hs`.
fn keys() -> [Key; 4] {
    [
        jwt::key(Alg::Rs256, "rs"),
        jwt::key(Alg::Es256, "ec"),
        jwt::key(Alg::EdDsa, "ed"),
        jwt::key(Alg::Hs256, "hs"),
    ]
}

/// A route entry running jwt-auth with `config` (JSON is YAML).
fn route(name: &str, prefix: &str, config: &Value) -> String {
    format!(
        "      - {{ name: {name}, match: {{ path_prefix: {prefix} }}, filters: [{{ filter: jwt-auth, config: {config} }}], cluster: backend }}"
    )
}

/// Routes: `/api/` (every algorithm, issuer and audience checked, claims
/// forwarded, token stripped), `/keep/` (ES256 key only, default
/// algorithms, token kept, a realm), `/es-only/` (RS256 and ES256 keys,
/// only ES256 accepted).
fn routes() -> String {
    let [rs, ec, ed, hs] = keys();
    let api = json!({
        "jwks": jwt::jwks(&[&rs, &ec, &ed, &hs]),
        "algorithms": ["RS256", "ES256", "EdDSA", "HS256"],
        "issuer": ISSUER,
        "audiences": [AUDIENCE],
        "required_claims": ["sub"],
        "forward_claims": {"sub": "x-user", "scope": "x-scope", "tenant": "x-tenant"},
        "strip_token": true,
    });
    let keep = json!({"jwks": jwt::jwks(&[&ec]), "realm": "orders"});
    let es_only = json!({"jwks": jwt::jwks(&[&rs, &ec]), "algorithms": ["ES256"]});
    [
        route("api", "/api/", &api),
        route("keep", "/keep/", &keep),
        route("es-only", "/es-only/", &es_only),
    ]
    .join("\n")
}

/// Claims that pass on `/api/`.
fn good_claims() -> Value {
    json!({
        "iss": ISSUER,
        "aud": AUDIENCE,
        "sub": "alice",
        "scope": "orders:read orders:write",
        "tenant": 42,
        "iat": jwt::now(),
        "exp": jwt::now() + 300,
    })
}

/// `good_claims()` with `changes` applied (null removes a claim).
fn claims_with(changes: Value) -> Value {
    let mut claims = good_claims();
    for (name, value) in changes.as_object().unwrap() {
        if value.is_null() {
            claims.as_object_mut().unwrap().remove(name);
        } else {
            claims[name] = value.clone();
        }
    }
    claims
}

/// GET `url` with the given request headers.
async fn get_with(url: &str, headers: &[(&str, &str)]) -> Reply {
    let mut req = Request::get(url);
    for (name, value) in headers {
        req = req.header(*name, *value);
    }
    send(&client(false), req.body(Full::default()).unwrap()).await
}

/// GET `url` with `Authorization: Bearer <token>`.
async fn get_bearer(url: &str, token: &str) -> Reply {
    get_with(url, &[("authorization", &format!("Bearer {token}"))]).await
}

/// Checks a 401 for a presented token: JSON body, challenge with the error,
/// and the message (also the challenge's error_description).
fn assert_invalid(r: &Reply, message: &str) {
    assert_eq!(r.status, 401, "{:?}", r.body);
    assert_eq!(r.header("content-type"), Some("application/json"));
    let body = r.json();
    assert_eq!(body["error"], "invalid_token", "{body}");
    assert_eq!(body["message"], message, "{body}");
    let challenge = r.header("www-authenticate").expect("a challenge");
    assert!(
        challenge.starts_with("Bearer ") && challenge.contains(r#"error="invalid_token""#),
        "{challenge}"
    );
    assert!(
        challenge.contains(&format!(r#"error_description="{message}""#)),
        "{challenge}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_valid_token_of_each_algorithm_reaches_the_upstream_with_its_claims() {
    let up = Upstream::start().await;
    let weft = start(&config(&filters(&[]), &routes(), up.addr));
    let url = weft.url("public");

    for key in keys() {
        let token = key.sign(&good_claims());
        // The client tries to set the forwarded headers itself.
        let r = get_with(
            &format!("{url}/api/orders?page=2"),
            &[
                ("authorization", &format!("Bearer {token}")),
                ("x-user", "mallory"),
                ("x-user", "eve"),
                ("x-scope", "admin"),
            ],
        )
        .await;
        assert_eq!(r.status, 200, "{:?}: {:?}", key.alg(), r.body);
        let echo = r.json();
        assert_eq!(echo["headers"]["x-user"], "alice", "{:?}", key.alg());
        assert_eq!(echo["headers"]["x-scope"], "orders:read orders:write");
        assert_eq!(echo["headers"]["x-tenant"], "42", "numbers are stringified");
        assert_eq!(
            echo["headers"].get("authorization"),
            None,
            "strip_token removes the token"
        );
        assert_eq!(echo["path"], "/api/orders?page=2");
    }

    // Without strip_token the token goes upstream; the scheme is
    // case-insensitive.
    let ec = jwt::key(Alg::Es256, "ec");
    let token = ec.sign(&json!({"sub": "bob"}));
    let r = get_with(
        &format!("{url}/keep/x"),
        &[("authorization", &format!("bearer {token}"))],
    )
    .await;
    assert_eq!(r.status, 200, "{:?}", r.body);
    assert_eq!(
        r.echoed_header("authorization"),
        Some(format!("bearer {token}"))
    );
    assert_eq!(r.echoed_header("x-user"), None, "nothing forwarded here");

    assert_eq!(up.hits(), 5);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_request_without_a_token_gets_401_with_a_bearer_challenge() {
    let up = Upstream::start().await;
    let weft = start(&config(&filters(&[]), &routes(), up.addr));
    let url = weft.url("public");

    for headers in [
        vec![],
        vec![("authorization", "Basic YWxpY2U6cHc=")],
        vec![("authorization", "Bearer")],
        vec![("authorization", "")],
    ] {
        let r = get_with(&format!("{url}/api/orders"), &headers).await;
        assert_eq!(r.status, 401, "{headers:?}: {:?}", r.body);
        assert_eq!(r.header("www-authenticate"), Some("Bearer"), "{headers:?}");
        let body = r.json();
        assert_eq!(body["error"], "missing_token", "{headers:?}");
        assert_eq!(
            body["message"],
            "this route needs a token in the `authorization` header: `Bearer <token>`"
        );
    }
    let r = get_with(
        &format!("{url}/keep/x"),
        &[("x-request-id", "jwt-missing-1")],
    )
    .await;
    assert_eq!(r.status, 401);
    assert_eq!(
        r.header("www-authenticate"),
        Some(r#"Bearer realm="orders""#)
    );
    assert_eq!(r.json()["request_id"], "jwt-missing-1");

    assert_eq!(
        up.hits(),
        0,
        "a refused request must not reach the upstream"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn expired_and_not_yet_valid_tokens_are_refused_beyond_the_leeway() {
    let up = Upstream::start().await;
    let weft = start(&config(&filters(&[]), &routes(), up.addr));
    let url = format!("{}/api/x", weft.url("public"));
    let ed = jwt::key(Alg::EdDsa, "ed");
    let now = jwt::now();

    let expired = ed.sign(&claims_with(json!({"exp": now - 120})));
    assert_invalid(&get_bearer(&url, &expired).await, "the token has expired");
    let early = ed.sign(&claims_with(json!({"nbf": now + 600})));
    assert_invalid(
        &get_bearer(&url, &early).await,
        "the token is not valid yet (nbf)",
    );
    let bad_exp = ed.sign(&claims_with(json!({"exp": "tomorrow"})));
    assert_invalid(
        &get_bearer(&url, &bad_exp).await,
        "the token's exp claim is not a number",
    );
    assert_eq!(up.hits(), 0);

    // Within the default 30 s leeway: accepted.
    let just_expired = ed.sign(&claims_with(json!({"exp": now - 5})));
    let r = get_bearer(&url, &just_expired).await;
    assert_eq!(r.status, 200, "{:?}", r.body);
    assert_eq!(up.hits(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_wrong_issuer_audience_or_missing_claim_is_refused() {
    let up = Upstream::start().await;
    let weft = start(&config(&filters(&[]), &routes(), up.addr));
    let url = format!("{}/api/x", weft.url("public"));
    let rs = jwt::key(Alg::Rs256, "rs");

    for (changes, message) in [
        (
            json!({"iss": "https://evil.test"}),
            "the token's issuer (iss) is not accepted",
        ),
        (
            json!({"iss": null}),
            "the token's issuer (iss) is not accepted",
        ),
        (
            json!({"aud": "billing"}),
            "the token's audience (aud) is not accepted",
        ),
        (
            json!({"aud": ["billing", "web"]}),
            "the token's audience (aud) is not accepted",
        ),
        (
            json!({"aud": null}),
            "the token's audience (aud) is not accepted",
        ),
        (json!({"sub": null}), "the token has no sub claim"),
    ] {
        let token = rs.sign(&claims_with(changes.clone()));
        assert_invalid(&get_bearer(&url, &token).await, message);
    }
    assert_eq!(up.hits(), 0);

    // `aud` may be a list that names the audience among others.
    let token = rs.sign(&claims_with(json!({"aud": ["billing", AUDIENCE]})));
    assert_eq!(get_bearer(&url, &token).await.status, 200);
    assert_eq!(up.hits(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_token_signed_by_another_key_or_changed_is_refused() {
    let up = Upstream::start().await;
    let weft = start(&config(&filters(&[]), &routes(), up.addr));
    let url = format!("{}/api/x", weft.url("public"));

    // Same kid, same algorithm, another key.
    for (alg, kid) in [
        (Alg::Rs256, "rs"),
        (Alg::Es256, "ec"),
        (Alg::EdDsa, "ed"),
        (Alg::Hs256, "hs"),
    ] {
        let forged = jwt::other_key(alg, kid).sign(&good_claims());
        assert_invalid(
            &get_bearer(&url, &forged).await,
            "the token's signature is not valid",
        );
    }
    // A valid token whose claims were changed afterwards.
    let token = jwt::key(Alg::Es256, "ec").sign(&good_claims());
    let parts: Vec<&str> = token.split('.').collect();
    let admin = jwt::b64(claims_with(json!({"sub": "admin"})).to_string().as_bytes());
    let tampered = format!("{}.{admin}.{}", parts[0], parts[2]);
    assert_invalid(
        &get_bearer(&url, &tampered).await,
        "the token's signature is not valid",
    );
    assert_eq!(up.hits(), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unknown_kid_is_refused_and_a_token_without_kid_is_tried_by_algorithm() {
    let up = Upstream::start().await;
    let weft = start(&config(&filters(&[]), &routes(), up.addr));
    let url = format!("{}/api/x", weft.url("public"));

    let unknown = jwt::key(Alg::Es256, "ec").with_kid("ec-2031");
    assert_invalid(
        &get_bearer(&url, &unknown.sign(&good_claims())).await,
        "no key has the token's kid ec-2031",
    );
    let other_no_kid =
        jwt::other_key(Alg::EdDsa, "").sign_with_header(&json!({"alg": "EdDSA"}), &good_claims());
    assert_invalid(
        &get_bearer(&url, &other_no_kid).await,
        "the token's signature is not valid",
    );
    assert_eq!(up.hits(), 0);

    let no_kid =
        jwt::key(Alg::EdDsa, "").sign_with_header(&json!({"alg": "EdDSA"}), &good_claims());
    assert_eq!(get_bearer(&url, &no_kid).await.status, 200);
    assert_eq!(up.hits(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_algorithm_that_does_not_fit_the_key_or_the_config_is_refused() {
    let up = Upstream::start().await;
    let weft = start(&config(&filters(&[]), &routes(), up.addr));
    let url = weft.url("public");
    let rs = jwt::key(Alg::Rs256, "rs");

    // HS256 naming the RSA key: signed with the real HMAC secret, and with
    // the RSA modulus as the secret (the algorithm-confusion attack).
    let hs_as_rs = jwt::key(Alg::Hs256, "rs").sign(&good_claims());
    let header = json!({"alg": "HS256", "kid": "rs", "typ": "JWT"});
    let input = format!(
        "{}.{}",
        jwt::b64(header.to_string().as_bytes()),
        jwt::b64(good_claims().to_string().as_bytes())
    );
    let modulus = rs.rsa_modulus().unwrap();
    let confused = format!(
        "{input}.{}",
        jwt::b64(&jwt::hmac_sha256(&modulus, input.as_bytes()))
    );
    for token in [hs_as_rs, confused] {
        assert_invalid(
            &get_bearer(&format!("{url}/api/x"), &token).await,
            "the key rs is not a key for the token's algorithm HS256",
        );
    }

    // `/es-only/` has the RSA key but accepts ES256 only.
    let r = get_bearer(&format!("{url}/es-only/x"), &rs.sign(&good_claims())).await;
    assert_invalid(&r, "the token's algorithm RS256 is not accepted");
    // Unsigned tokens never pass.
    let none = format!(
        "{}.{}.",
        jwt::b64(br#"{"alg":"none"}"#),
        jwt::b64(good_claims().to_string().as_bytes())
    );
    let r = get_bearer(&format!("{url}/es-only/x"), &none).await;
    assert_invalid(&r, "malformed token: the token's signature is empty");
    let none_signed = format!("{none}{}", jwt::b64(b"sig"));
    let r = get_bearer(&format!("{url}/api/x"), &none_signed).await;
    assert_invalid(&r, "the token's algorithm none is not accepted");

    assert_eq!(up.hits(), 0);
    let ok = get_bearer(
        &format!("{url}/es-only/x"),
        &jwt::key(Alg::Es256, "ec").sign(&good_claims()),
    )
    .await;
    assert_eq!(ok.status, 200);
    assert_eq!(up.hits(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn garbage_tokens_get_401_never_500() {
    let up = Upstream::start().await;
    let weft = start(&config(&filters(&[]), &routes(), up.addr));
    let url = format!("{}/api/x", weft.url("public"));
    let b64 = |text: &str| jwt::b64(text.as_bytes());
    let sig = jwt::b64(&[7; 64]);
    let long = "A".repeat(20_000);

    let cases = [
        (
            "abc".to_string(),
            "malformed token: a JWT has 3 parts separated by dots, this token has 1",
        ),
        (
            "a.b".to_string(),
            "malformed token: a JWT has 3 parts separated by dots, this token has 2",
        ),
        (
            "...".to_string(),
            "malformed token: a JWT has 3 parts separated by dots, this token has 4",
        ),
        (
            "a.b.c.d.e".to_string(),
            "malformed token: the token is encrypted (JWE); only signed tokens (JWS) are accepted",
        ),
        (
            "!!.??.**".to_string(),
            "malformed token: the token's header is not base64url",
        ),
        (
            format!("{}.{}.{sig}", b64("{not json"), b64("{}")),
            "malformed token: the token's header is not JSON",
        ),
        (
            format!(
                "{}.{}.{sig}",
                b64(r#"{"alg":"ES256","kid":"ec"}"#),
                b64("[1,2]")
            ),
            "malformed token: the token's payload is not a JSON object",
        ),
        (
            format!("{}.{}.{sig}", b64(r#"{"kid":"ec"}"#), b64("{}")),
            "malformed token: the header has no alg",
        ),
        (
            format!(
                "{}.{}.{sig}",
                b64(r#"{"alg":"ES256","kid":"ec","crit":["exp"]}"#),
                b64("{}")
            ),
            "malformed token: the header lists critical extensions (crit), which are not supported",
        ),
        (
            format!(
                "{}.{}.{}",
                b64(r#"{"alg":"ES256","kid":"ec"}"#),
                b64("{}"),
                jwt::b64(&[1; 3])
            ),
            "the token's signature is not valid",
        ),
        (
            long,
            "malformed token: the token is longer than 16384 bytes",
        ),
    ];
    for (token, message) in &cases {
        let r = get_bearer(&url, token).await;
        assert_invalid(&r, message);
    }

    // Two Authorization headers: refused rather than guessed at.
    let good = jwt::key(Alg::Es256, "ec").sign(&good_claims());
    let bearer = format!("Bearer {good}");
    let r = get_with(
        &url,
        &[("authorization", &bearer), ("authorization", &bearer)],
    )
    .await;
    assert_invalid(&r, "the request carries more than one token header");

    assert_eq!(up.hits(), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn decisions_are_counted() {
    let up = Upstream::start().await;
    let yaml = format!(
        "admin: {{ listen: 127.0.0.1:0 }}\n{}",
        config(&filters(&[]), &routes(), up.addr)
    );
    let weft = start(&yaml);
    let url = format!("{}/keep/x", weft.url("public"));
    let ec = jwt::key(Alg::Es256, "ec");

    assert_eq!(get_bearer(&url, &ec.sign(&json!({}))).await.status, 200);
    assert_eq!(get(&url).await.status, 401);
    for _ in 0..2 {
        assert_eq!(get_bearer(&url, "nope").await.status, 401);
    }
    let metrics = get(&format!("{}/metrics", weft.url("admin"))).await;
    let text = String::from_utf8_lossy(&metrics.body);
    for (result, n) in [("allowed", 1), ("missing", 1), ("invalid", 2)] {
        let line = format!(
            "weft_user_jwt_auth_requests_total{{filter=\"jwt-auth\",result=\"{result}\"}} {n}"
        );
        assert!(text.contains(&line), "no {line:?} in:\n{text}");
    }
}

#[test]
fn a_bad_jwt_auth_config_is_rejected_with_its_path() {
    let yaml = |jwt_config: &str| {
        config(
            &filters(&[]),
            &format!(
                "      - {{ name: api, filters: [{{ filter: jwt-auth, config: {jwt_config} }}], cluster: backend }}"
            ),
            "127.0.0.1:9000".parse().unwrap(),
        )
    };
    let ec = jwt::jwks(&[&jwt::key(Alg::Es256, "ec")]);
    let hs = jwt::jwks(&[&jwt::key(Alg::Hs256, "hs")]);
    let cases = [
        ("{}".to_string(), "jwt-auth needs keys: `jwks`"),
        (
            json!({"jwks": ec, "algorithms": ["none"]}).to_string(),
            "algorithms[0]: `none` (unsigned tokens) is never accepted",
        ),
        (
            json!({"jwks": ec, "algorithms": ["HS256"]}).to_string(),
            "algorithms lists HS256, which needs a shared secret",
        ),
        (
            json!({"jwks": hs}).to_string(),
            "jwks has an `oct` key (HS256), but `algorithms` does not list HS256",
        ),
        (
            json!({"jwks": {"keys": [{"kty": "EC", "crv": "P-384", "x": "AA", "y": "AA"}]}})
                .to_string(),
            "jwks.keys[0]: `crv` \"P-384\" is not supported for EC keys (supported: P-256)",
        ),
        (
            json!({"jwks_url": "https://idp.test/jwks.json"}).to_string(),
            "jwks_url \"https://idp.test/jwks.json\": must start with http://",
        ),
        (
            json!({"jwks": ec, "forward_claims": {"sub": "Host"}}).to_string(),
            "forward_claims.sub: `Host` is managed by the proxy and cannot be used here",
        ),
    ];
    for (jwt_config, expected) in cases {
        let (ok, out) = validate(bin(), &yaml(&jwt_config), "weft.yaml", &[]);
        assert!(!ok, "{jwt_config} was accepted:\n{out}");
        assert!(
            out.contains(&format!(
                "listeners[0].routes[0].filters[0].config: init rejected the config: {expected}"
            )),
            "{jwt_config}:\n{out}"
        );
    }
}

/// A key server on loopback: serves one JWK Set (or a status) at any path
/// and counts its hits.
struct JwksServer {
    addr: SocketAddr,
    hits: Arc<AtomicUsize>,
    answer: Arc<Mutex<(u16, String)>>,
    task: tokio::task::JoinHandle<()>,
}

impl JwksServer {
    async fn start(jwks: &Value) -> JwksServer {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let hits = Arc::new(AtomicUsize::new(0));
        let answer = Arc::new(Mutex::new((200, jwks.to_string())));
        let (counter, current) = (hits.clone(), answer.clone());
        let task = tokio::spawn(async move {
            loop {
                let Ok((stream, _)) = listener.accept().await else {
                    continue;
                };
                let (counter, current) = (counter.clone(), current.clone());
                tokio::spawn(async move {
                    let service = service_fn(move |_req: Request<hyper::body::Incoming>| {
                        counter.fetch_add(1, Ordering::SeqCst);
                        let (status, body) = current.lock().unwrap().clone();
                        async move {
                            let mut resp = Response::new(Full::new(Bytes::from(body)));
                            *resp.status_mut() = StatusCode::from_u16(status).unwrap();
                            resp.headers_mut()
                                .insert("content-type", "application/json".parse().unwrap());
                            Ok::<_, Infallible>(resp)
                        }
                    });
                    let _ = auto::Builder::new(TokioExecutor::new())
                        .serve_connection(TokioIo::new(stream), service)
                        .await;
                });
            }
        });
        JwksServer {
            addr,
            hits,
            answer,
            task,
        }
    }

    fn url(&self) -> String {
        format!("http://{}/.well-known/jwks.json", self.addr)
    }

    fn hits(&self) -> usize {
        self.hits.load(Ordering::SeqCst)
    }

    fn serve(&self, status: u16, body: &Value) {
        *self.answer.lock().unwrap() = (status, body.to_string());
    }
}

impl Drop for JwksServer {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// One route `/api/` with jwt-auth on `jwks_url` plus `extra` config.
fn remote_routes(server: &JwksServer, extra: Value) -> String {
    let mut config = json!({"jwks_url": server.url(), "forward_claims": {"sub": "x-user"}});
    for (k, v) in extra.as_object().unwrap() {
        config[k] = v.clone();
    }
    route("api", "/api/", &config)
}

/// Sleeps for at least `d` without blocking the runtime.
async fn sleep_at_least(d: Duration) {
    tokio::time::sleep(d).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_jwks_url_is_fetched_once_for_many_requests() {
    let up = Upstream::start().await;
    let k1 = jwt::key(Alg::Es256, "k1");
    let server = JwksServer::start(&jwt::jwks(&[&k1])).await;
    let yaml = format!(
        "admin: {{ listen: 127.0.0.1:0 }}\n{}",
        config(
            &filters(&[server.addr]),
            &remote_routes(&server, json!({"jwks_min_refresh_s": 300})),
            up.addr,
        )
    );
    let weft = start(&yaml);
    assert_eq!(server.hits(), 0, "fetched on first need, not at load");
    let url = format!("{}/api/x", weft.url("public"));

    for i in 0..20 {
        let token = k1.sign(&json!({"sub": format!("user-{i}")}));
        let r = get_bearer(&url, &token).await;
        assert_eq!(r.status, 200, "request {i}: {:?}", r.body);
        assert_eq!(r.echoed_header("x-user"), Some(format!("user-{i}")));
    }
    assert_eq!(server.hits(), 1, "one fetch serves every request");

    // A kid the set does not have: within jwks_min_refresh_s of the fetch,
    // it is refused without fetching again.
    let stranger = jwt::key(Alg::Es256, "k9");
    for _ in 0..5 {
        assert_invalid(
            &get_bearer(&url, &stranger.sign(&json!({}))).await,
            "no key has the token's kid k9",
        );
    }
    assert_eq!(
        server.hits(),
        1,
        "unknown kids must not refetch on every request"
    );
    assert_eq!(up.hits(), 20);

    // A reload makes new instances; they adopt the set the old ones shared
    // instead of fetching it again.
    let outcome = tokio::task::block_in_place(|| weft.reload(&yaml));
    assert!(outcome.contains("config reloaded"), "{outcome}");
    let r = get_bearer(&url, &k1.sign(&json!({"sub": "after-reload"}))).await;
    assert_eq!(r.status, 200, "{:?}", r.body);
    let metrics = get(&format!("{}/metrics", weft.url("admin"))).await;
    let text = String::from_utf8_lossy(&metrics.body);
    let created = text
        .lines()
        .find_map(|l| l.strip_prefix(r#"weft_filter_instances_created_total{filter="jwt-auth"} "#))
        .and_then(|n| n.trim().parse::<u64>().ok())
        .unwrap_or_else(|| panic!("no instance count in:\n{text}"));
    assert!(created >= 2, "the reload made a new instance: {created}");
    assert_eq!(server.hits(), 1, "the new instance adopted the shared set");
    assert_eq!(
        weft.log_count("fetched the JWK Set from"),
        1,
        "{}",
        weft.log_text()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_new_kid_refetches_the_jwks_after_a_key_rotation() {
    let up = Upstream::start().await;
    let k1 = jwt::key(Alg::Es256, "k1");
    let k2 = jwt::key(Alg::EdDsa, "k2");
    let server = JwksServer::start(&jwt::jwks(&[&k1])).await;
    let weft = start(&config(
        &filters(&[server.addr]),
        &remote_routes(&server, json!({"jwks_min_refresh_s": 1})),
        up.addr,
    ));
    let url = format!("{}/api/x", weft.url("public"));

    assert_eq!(
        get_bearer(&url, &k1.sign(&json!({"sub": "a"})))
            .await
            .status,
        200
    );
    assert_eq!(server.hits(), 1);

    // The key server rotates: k2 is added. Past jwks_min_refresh_s, a token
    // signed by k2 makes the filter fetch the set again.
    server.serve(200, &jwt::jwks(&[&k1, &k2]));
    sleep_at_least(Duration::from_millis(1500)).await;
    let r = get_bearer(&url, &k2.sign(&json!({"sub": "b"}))).await;
    assert_eq!(r.status, 200, "{:?}", r.body);
    assert_eq!(r.echoed_header("x-user").as_deref(), Some("b"));
    assert_eq!(server.hits(), 2);

    // Both keys are now known: no more fetches.
    for key in [&k1, &k2, &k1] {
        assert_eq!(get_bearer(&url, &key.sign(&json!({}))).await.status, 200);
    }
    assert_eq!(server.hits(), 2);
    assert_eq!(up.hits(), 5);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failed_refresh_keeps_the_keys_fetched_before() {
    let up = Upstream::start().await;
    let k1 = jwt::key(Alg::Rs256, "k1");
    let server = JwksServer::start(&jwt::jwks(&[&k1])).await;
    let weft = start(&config(
        &filters(&[server.addr]),
        &remote_routes(&server, json!({"jwks_ttl_s": 1, "jwks_min_refresh_s": 1})),
        up.addr,
    ));
    let url = format!("{}/api/x", weft.url("public"));
    let token = k1.sign(&json!({"sub": "a"}));

    assert_eq!(get_bearer(&url, &token).await.status, 200);
    assert_eq!(server.hits(), 1);

    // Past the TTL the set is fetched again; the key server fails, and the
    // keys fetched before keep serving.
    server.serve(503, &json!({"error": "down"}));
    sleep_at_least(Duration::from_millis(1500)).await;
    let r = get_bearer(&url, &token).await;
    assert_eq!(r.status, 200, "{:?}", r.body);
    assert_eq!(server.hits(), 2, "the stale set was refreshed once");
    weft.wait_for_log(
        "keeping the keys fetched before: the key server answered 503",
        1,
    );
    assert_eq!(up.hits(), 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_jwks_url_the_proxy_does_not_allow_fails_closed_with_500() {
    let up = Upstream::start().await;
    let k1 = jwt::key(Alg::Es256, "k1");
    let server = JwksServer::start(&jwt::jwks(&[&k1])).await;
    // allow_http does not list the key server.
    let weft = start(&config(
        &filters(&[]),
        &remote_routes(&server, json!({})),
        up.addr,
    ));
    let url = format!("{}/api/x", weft.url("public"));
    let token = k1.sign(&json!({"sub": "a"}));

    for _ in 0..3 {
        let r = get_bearer(&url, &token).await;
        assert_eq!(r.status, 500, "{:?}", r.body);
        let body = r.json();
        assert_eq!(body["error"], "jwks_unavailable", "{body}");
        assert_eq!(r.header("www-authenticate"), None, "not the client's fault");
    }
    // The log says why, once: the failed fetch is not retried on every
    // request (jwks_min_refresh_s).
    let why = format!(
        "fetching the JWK Set from {} failed: {} is not allowed: add it to filters.jwt-auth.allow_http",
        server.url(),
        server.addr
    );
    weft.wait_for_log(&why, 1);
    assert_eq!(weft.log_count(&why), 1, "{}", weft.log_text());
    assert_eq!(server.hits(), 0);
    assert_eq!(up.hits(), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_jwks_from_a_file_is_inlined_by_the_proxy() {
    let up = Upstream::start().await;
    let key = jwt::key(Alg::EdDsa, "from-file");
    // Beside the config: files elsewhere are refused.
    let jwks = jwt::jwks(&[&key]).to_string();
    let config_json = json!({"jwks": {"$file": "jwks.json"}, "algorithms": ["EdDSA"]});
    let yaml = config(&filters(&[]), &route("file", "/", &config_json), up.addr);
    let weft = tokio::task::block_in_place(|| {
        Weft::start_with_files(bin(), &yaml, &[], &[("jwks.json", jwks.as_bytes())])
    });
    let url = weft.url("public");
    let token = key.sign(&json!({"sub": "carol", "exp": jwt::now() + 300}));
    assert_eq!(get_bearer(&format!("{url}/x"), &token).await.status, 200);
    let stranger =
        jwt::other_key(Alg::EdDsa, "from-file").sign(&json!({"sub": "x", "exp": jwt::now() + 300}));
    assert_eq!(get_bearer(&format!("{url}/x"), &stranger).await.status, 401);

    let missing = json!({"jwks": {"$file": "no-such-jwks.json"}});
    let yaml = config(&filters(&[]), &route("file", "/", &missing), up.addr);
    let (ok, out) = validate(bin(), &yaml, "weft.yaml", &[]);
    assert!(!ok);
    assert!(
        out.contains("listeners[0].routes[0].filters[0].config.jwks.$file: cannot read"),
        "{out}"
    );
}
