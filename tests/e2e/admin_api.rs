//! The admin API's endpoints against a running proxy: the OpenAPI
//! description matches the server, secrets never show, writes need the
//! token, a module upload serves the next request (a bad one changes
//! nothing), and a drain finishes what is in flight.

use std::path::PathBuf;

use bytes::Bytes;
use http::{Method, Request};
use http_body_util::Full;
use serde_json::Value;
use weft_test_harness::process::temp_dir;
use weft_test_harness::{Reply, Upstream, client, get, send};

use crate::{bin, config, start, wasm};

const TOKEN: &str = "admin-test-token";

fn token_file() -> PathBuf {
    let path = temp_dir("admin-token").join("token");
    std::fs::create_dir_all(path.parent().unwrap()).unwrap();
    std::fs::write(&path, format!("{TOKEN}\n")).unwrap();
    path
}

/// A proxy with an admin API (with a token), api-key and headers chained
/// on `/api`, misbehave (traps on `x-boom`) on the rest.
fn yaml(up: &Upstream) -> String {
    let filters = format!(
        "  key: {{ path: {} }}\n  hdr: {{ path: {} }}\n  misbehave: {{ path: {} }}",
        wasm("api_key"),
        wasm("headers"),
        wasm("misbehave_filter")
    );
    // sha256 of "k1"
    let routes = r#"      - name: api
        match: { path_prefix: /api }
        cluster: backend
        filters:
          - filter: key
            config: { keys: [{ consumer: c1, sha256: 6ab9f1eb8f7d3388f4f9d586f66e99fd54080df2c446f0e58668b09c08a16dd0 }] }
          - filter: hdr
            config: { response: { set: { x-tag: one, x-opaque: { $secret: "opaque-s3cret" } } }, request: { set: { x-hmac-secret: "hmac-s3cret" } } }
      - { name: split, match: { path_prefix: /split/ }, clusters: [{ name: backend, weight: 3 }], rewrite: { path_prefix: /s/, host: internal }, mirror: { cluster: backend, percent: 5 } }
      - { name: regex, match: { path_prefix: /re/ }, cluster: backend, rewrite: { path_regex: { pattern: "^/re", substitution: "" } } }
      - { name: moved, match: { path: /moved }, redirect: { status: 308, scheme: https, port: 8443, prefix_rewrite: /new } }
      - { name: down, match: { path: /down }, direct_response: { status: 503, body: later } }
      - { name: all, cluster: backend, filters: [{ filter: misbehave, config: { do: trap, when_header: x-boom } }] }"#;
    format!(
        "admin: {{ listen: 127.0.0.1:0, token_file: {} }}\n{}",
        token_file().display(),
        config(&filters, routes, up.addr)
    )
}

async fn call(method: Method, url: String, token: Option<&str>, body: Vec<u8>) -> Reply {
    let mut req = Request::builder().method(method).uri(url);
    if let Some(token) = token {
        req = req.header("authorization", format!("Bearer {token}"));
    }
    send(
        &client(false),
        req.body(Full::new(Bytes::from(body))).unwrap(),
    )
    .await
}

fn openapi() -> Value {
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../docs/admin-openapi.json");
    serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap()
}

/// Checks `reply` against the OpenAPI response of `path`/`method` for its
/// status: documented, and (for JSON) a body matching the schema.
fn check(doc: &Value, path: &str, method: &str, reply: &Reply) {
    let status = reply.status.as_u16().to_string();
    let response = &doc["paths"][path][method]["responses"][&status];
    assert!(
        response.is_object(),
        "{method} {path} answered {status}, which docs/admin-openapi.json does not document: {}",
        String::from_utf8_lossy(&reply.body)
    );
    let Some(schema) = response["content"]["application/json"]["schema"].as_object() else {
        return;
    };
    let root = serde_json::json!({
        "allOf": [Value::Object(schema.clone())],
        "components": doc["components"],
    });
    let validator = jsonschema::validator_for(&root).expect("the schema compiles");
    let body: Value = serde_json::from_slice(&reply.body).expect("a JSON body");
    let errors: Vec<String> = validator
        .iter_errors(&body)
        .map(|e| format!("{} at {}", e, e.instance_path()))
        .collect();
    assert!(
        errors.is_empty(),
        "{method} {path} {status}: the body does not match the schema: {errors:?}\n{body}"
    );
}

#[test]
fn the_openapi_description_lists_exactly_the_served_endpoints() {
    let doc = openapi();
    let mut documented: Vec<String> = doc["paths"]
        .as_object()
        .unwrap()
        .iter()
        .flat_map(|(path, ops)| {
            ops.as_object()
                .unwrap()
                .keys()
                .filter(|k| *k != "parameters")
                .map(move |m| format!("{} {path}", m.to_uppercase()))
        })
        .collect();
    let mut served: Vec<String> = weft::admin::ENDPOINTS
        .iter()
        .map(|e| format!("{} {}", e.method, e.path))
        .collect();
    documented.sort();
    served.sort();
    assert_eq!(documented, served);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_endpoint_answers_as_the_openapi_description_says() {
    let up = Upstream::start().await;
    let weft = start(&yaml(&up));
    let admin = weft.url("admin");
    let doc = openapi();
    for path in [
        "/ready",
        "/healthz",
        "/metrics",
        "/config",
        "/routes",
        "/clusters",
        "/filters",
    ] {
        let reply = get(&format!("{admin}{path}")).await;
        assert_eq!(reply.status, 200, "GET {path}");
        check(&doc, path, "get", &reply);
    }
    let module = std::fs::read(wasm("headers")).unwrap();
    let put = |body: Vec<u8>, token: Option<&'static str>| {
        call(Method::PUT, format!("{admin}/filters/hdr"), token, body)
    };
    let cases = [
        (
            "/filters/{name}",
            "put",
            put(module.clone(), Some(TOKEN)).await,
            200,
        ),
        (
            "/filters/{name}",
            "put",
            put(b"not wasm".to_vec(), Some(TOKEN)).await,
            400,
        ),
        (
            "/filters/{name}",
            "put",
            put(module.clone(), None).await,
            401,
        ),
        (
            "/filters/{name}",
            "put",
            put(module, Some("wrong")).await,
            401,
        ),
        (
            "/filters/{name}",
            "put",
            call(
                Method::PUT,
                format!("{admin}/filters/nope"),
                Some(TOKEN),
                vec![1],
            )
            .await,
            404,
        ),
        (
            "/reload",
            "post",
            call(Method::POST, format!("{admin}/reload"), Some(TOKEN), vec![]).await,
            200,
        ),
        (
            "/reload",
            "post",
            call(Method::POST, format!("{admin}/reload"), None, vec![]).await,
            401,
        ),
        (
            "/log-level",
            "put",
            call(
                Method::PUT,
                format!("{admin}/log-level"),
                Some(TOKEN),
                b"info,weft=debug".to_vec(),
            )
            .await,
            200,
        ),
        (
            "/log-level",
            "put",
            call(
                Method::PUT,
                format!("{admin}/log-level"),
                Some(TOKEN),
                b"=[".to_vec(),
            )
            .await,
            400,
        ),
        (
            "/drain",
            "post",
            call(Method::POST, format!("{admin}/drain"), Some(TOKEN), vec![]).await,
            200,
        ),
        ("/ready", "get", get(&format!("{admin}/ready")).await, 503),
    ];
    for (path, method, reply, status) in &cases {
        assert_eq!(
            reply.status,
            *status,
            "{method} {path}: {}",
            String::from_utf8_lossy(&reply.body)
        );
        check(&doc, path, method, reply);
    }
    let wrong_method = call(Method::DELETE, format!("{admin}/config"), None, vec![]).await;
    assert_eq!(wrong_method.status, 405);
    assert_eq!(wrong_method.header("allow"), Some("GET"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_config_never_shows_a_configured_secret() {
    let up = Upstream::start().await;
    let weft = start(&yaml(&up));
    let reply = get(&format!("{}/config", weft.url("admin"))).await;
    assert_eq!(reply.status, 200);
    let body = String::from_utf8_lossy(&reply.body);
    for secret in [
        "6ab9f1eb8f7d3388f4f9d586f66e99fd54080df2c446f0e58668b09c08a16dd0",
        "opaque-s3cret",
        "hmac-s3cret",
        TOKEN,
    ] {
        assert!(!body.contains(secret), "{secret} is in /config: {body}");
    }
    let config = reply.json();
    assert_eq!(config["version"], 1);
    assert_eq!(config["source"]["kind"], "file");
    let hdr = &config["config"]["listeners"][0]["routes"][0]["filters"][1]["config"];
    assert_eq!(
        hdr["response"]["set"]["x-tag"], "one",
        "what is not secret is shown"
    );
    // The filter itself got the secret's value.
    let api = Request::get(format!("{}/api/x", weft.url("public")))
        .header("x-api-key", "k1")
        .body(Full::default())
        .unwrap();
    let served = send(&client(false), api).await;
    assert_eq!(served.status, 200);
    assert_eq!(served.header("x-opaque"), Some("opaque-s3cret"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_uploaded_module_serves_the_next_request_and_a_bad_one_changes_nothing() {
    let up = Upstream::start().await;
    let weft = start(&yaml(&up));
    let (admin, public) = (weft.url("admin"), weft.url("public"));
    let with_key = || {
        Request::get(format!("{public}/api/x"))
            .header("x-api-key", "k1")
            .body(Full::default())
            .unwrap()
    };
    assert_eq!(
        send(&client(false), with_key()).await.header("x-tag"),
        Some("one")
    );

    // add-header takes `{"response": {"x-tag": ...}}`: the chain entry's
    // config does not fit it, so the swap is refused and nothing changes.
    let wrong = std::fs::read(wasm("add_header")).unwrap();
    let refused = call(
        Method::PUT,
        format!("{admin}/filters/hdr"),
        Some(TOKEN),
        wrong,
    )
    .await;
    assert_eq!(refused.status, 400);
    assert!(
        refused.json()["message"]
            .as_str()
            .unwrap()
            .contains("init rejected the config"),
        "{:?}",
        refused.json()
    );
    let garbage = call(
        Method::PUT,
        format!("{admin}/filters/hdr"),
        Some(TOKEN),
        b"\0asm junk".to_vec(),
    )
    .await;
    assert_eq!(garbage.status, 400);
    assert_eq!(
        send(&client(false), with_key()).await.header("x-tag"),
        Some("one")
    );
    assert_eq!(get(&format!("{admin}/config")).await.json()["version"], 1);

    // The misbehave module in place of headers: it ignores the request but
    // runs; the response no longer carries x-tag.
    let misbehave = std::fs::read(wasm("misbehave_filter")).unwrap();
    let replaced = call(
        Method::PUT,
        format!("{admin}/filters/misbehave"),
        Some(TOKEN),
        misbehave,
    )
    .await;
    assert_eq!(replaced.status, 200, "{:?}", replaced.json());
    assert_eq!(replaced.json()["version"], 2);
    let filters = get(&format!("{admin}/filters")).await.json();
    assert_eq!(filters["source"]["kind"], "admin_upload");
    assert_eq!(filters["source"]["filter"], "misbehave");

    let headers = std::fs::read(wasm("headers")).unwrap();
    let sha = weft_api::sha256_hex(&headers);
    let back = call(
        Method::PUT,
        format!("{admin}/filters/hdr"),
        Some(TOKEN),
        headers,
    )
    .await;
    assert_eq!(back.status, 200);
    assert_eq!(back.json()["sha256"], sha.as_str());
    assert_eq!(
        send(&client(false), with_key()).await.header("x-tag"),
        Some("one")
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn filters_count_traps_and_reads_need_no_token_on_loopback() {
    let up = Upstream::start().await;
    let weft = start(&yaml(&up));
    let admin = weft.url("admin");
    for _ in 0..2 {
        let boom = Request::get(format!("{}/x", weft.url("public")))
            .header("x-boom", "1")
            .body(Full::default())
            .unwrap();
        assert_eq!(send(&client(false), boom).await.status, 500);
    }
    let filters = get(&format!("{admin}/filters")).await.json();
    let misbehave = filters["filters"]
        .as_array()
        .unwrap()
        .iter()
        .find(|f| f["name"] == "misbehave")
        .unwrap()
        .clone();
    assert_eq!(misbehave["failures"]["trap"], 2);
    assert_eq!(misbehave["chain_entries"][0]["route"], "all");
    assert_eq!(
        misbehave["sha256"],
        weft_api::sha256_hex(&std::fs::read(wasm("misbehave_filter")).unwrap()).as_str()
    );
    let clusters = get(&format!("{admin}/clusters")).await.json();
    assert_eq!(
        clusters["clusters"][0]["endpoints"][0]["address"],
        up.addr.to_string()
    );
    let routes = get(&format!("{admin}/routes")).await.json();
    assert_eq!(
        routes["listeners"][0]["routes"][0]["filters"][0]["filter"],
        "key"
    );
    // Each route's action, with its config under the key of the same name.
    let listed = &routes["listeners"][0]["routes"];
    assert_eq!(listed[0]["action"], "cluster");
    assert_eq!(listed[0]["cluster"], "backend");
    assert_eq!(listed[1]["action"], "split");
    assert_eq!(listed[1]["clusters"][0]["weight"], 3);
    assert_eq!(listed[1]["rewrite"]["host"], "internal");
    assert_eq!(listed[1]["mirror"]["percent"], 5.0);
    assert_eq!(listed[2]["rewrite"]["path_regex"]["pattern"], "^/re");
    assert_eq!(listed[3]["action"], "redirect");
    assert_eq!(listed[3]["redirect"]["status"], 308);
    assert_eq!(listed[4]["action"], "direct_response");
    assert_eq!(listed[4]["direct_response"]["content_type"], "text/plain");
    assert!(listed[4].get("cluster").is_none(), "{}", listed[4]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_drain_finishes_the_requests_in_flight_then_refuses_new_ones() {
    let up = Upstream::start().await;
    let weft = start(&yaml(&up));
    let (admin, public) = (weft.url("admin"), weft.url("public"));
    let slow = tokio::spawn(get_owned(format!("{public}/delay/800")));
    // The slow request is in flight once the upstream has seen it.
    for _ in 0..200 {
        if up.hits() > 0 {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(10)).await;
    }
    assert_eq!(up.hits(), 1, "the slow request reached the upstream");
    let drained = call(Method::POST, format!("{admin}/drain"), Some(TOKEN), vec![]).await;
    assert_eq!(drained.status, 200);
    assert_eq!(drained.json()["drained"], true);
    assert_eq!(
        slow.await.unwrap().status,
        200,
        "the request in flight finished"
    );
    assert_eq!(get(&format!("{admin}/ready")).await.status, 503);
    let refused = tokio::net::TcpStream::connect(weft.addr("public")).await;
    assert!(refused.is_err(), "the traffic listener is closed");
    assert_eq!(
        get(&format!("{admin}/healthz")).await.status,
        200,
        "the admin API still answers"
    );
}

async fn get_owned(url: String) -> Reply {
    get(&url).await
}

#[test]
fn an_admin_api_off_loopback_without_a_token_is_refused() {
    let yaml =
        "admin: { listen: 0.0.0.0:0 }\nlisteners:\n  - { name: public, listen: 127.0.0.1:0 }\n";
    let dir = temp_dir("admin-open");
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("weft.yaml");
    std::fs::write(&path, yaml).unwrap();
    let out = std::process::Command::new(bin())
        .args(["run", "--config"])
        .arg(&path)
        .env_remove("WEFT_ADMIN_TOKEN")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("without a token"), "{stderr}");
}
