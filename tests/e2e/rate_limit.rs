//! The `rate-limit` filter: exactly `burst` requests of a concurrent flood
//! get through, refusals carry `retry-after` and the RateLimit headers,
//! buckets refill, are keyed as configured, and survive a reload.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use http::Request;
use http_body_util::Full;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::sync::Barrier;
use weft_test_harness::process::validate;
use weft_test_harness::{Reply, Upstream, client, get, send};

use crate::{bin, config, start, start_workers, wasm};

fn filters() -> String {
    format!(
        "  rate-limit: {{ path: {} }}\n  add-header: {{ path: {} }}",
        wasm("rate_limit"),
        wasm("add_header")
    )
}

/// A route `name` on `path_prefix` whose chain is one rate-limit entry with
/// `limit` (YAML flow mapping).
fn route(name: &str, path_prefix: &str, limit: &str) -> String {
    format!(
        "      - {{ name: {name}, match: {{ path_prefix: {path_prefix} }}, filters: [{{ filter: rate-limit, config: {limit} }}], cluster: backend }}\n"
    )
}

/// GET `url` with the given request headers, on a new connection.
async fn get_with(url: &str, headers: &[(&str, &str)]) -> Reply {
    let mut req = Request::get(url);
    for (name, value) in headers {
        req = req.header(*name, *value);
    }
    send(&client(false), req.body(Full::default()).unwrap()).await
}

/// Checks a refusal: status, headers, JSON body.
fn assert_limited(r: &Reply, status: u16, policy: &str) {
    assert_eq!(r.status, status, "{:?}", r.body);
    assert_eq!(r.header("content-type"), Some("application/json"));
    let retry_after: u64 = r
        .header("retry-after")
        .expect("retry-after")
        .parse()
        .expect("retry-after is whole seconds");
    assert!(retry_after >= 1, "retry-after {retry_after}");
    let policy_field = r.header("ratelimit-policy").expect("ratelimit-policy");
    assert!(
        policy_field.starts_with(&format!("\"{policy}\";q=")),
        "{policy_field}"
    );
    let ratelimit = r.header("ratelimit").expect("ratelimit");
    assert!(
        ratelimit.starts_with(&format!("\"{policy}\";r=0;t=")),
        "{ratelimit}"
    );
    let body = r.json();
    assert_eq!(body["error"], "rate_limited", "{body}");
    assert!(
        body["message"]
            .as_str()
            .unwrap()
            .starts_with(&format!("too many requests: rate limit \"{policy}\"")),
        "{body}"
    );
}

/// The `r` of a `ratelimit` field.
fn remaining(r: &Reply) -> u64 {
    let field = r.header("ratelimit").expect("ratelimit header");
    field
        .split(';')
        .find_map(|param| param.strip_prefix("r="))
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("no r= in {field}"))
}

/// Sends `GET path` on its own connection, opened before `barrier` lets
/// every sender go; returns the status code.
async fn raw_get_after(addr: SocketAddr, path: String, barrier: Arc<Barrier>) -> u16 {
    let mut stream = TcpStream::connect(addr).await.expect("connect");
    let request = format!("GET {path} HTTP/1.1\r\nhost: test\r\nconnection: close\r\n\r\n");
    barrier.wait().await;
    stream
        .write_all(request.as_bytes())
        .await
        .expect("write request");
    let mut answer = Vec::new();
    tokio::time::timeout(Duration::from_secs(30), stream.read_to_end(&mut answer))
        .await
        .expect("an answer within 30 s")
        .expect("read answer");
    let text = String::from_utf8_lossy(&answer);
    let status_line = text.lines().next().unwrap_or_default();
    status_line
        .split(' ')
        .nth(1)
        .and_then(|code| code.parse().ok())
        .unwrap_or_else(|| panic!("no status in {text:?}"))
}

/// The value of a counter in the admin's `/metrics`, 0 when absent.
async fn counter(admin: &str, series: &str) -> u64 {
    let metrics = get(&format!("{admin}/metrics")).await;
    assert_eq!(metrics.status, 200);
    let text = String::from_utf8_lossy(&metrics.body);
    text.lines()
        .find_map(|line| line.strip_prefix(series)?.strip_prefix(' '))
        .map_or(0, |value| value.parse().unwrap())
}

/// The issue's acceptance test: from a cold start, 3×burst requests at once
/// (each on its own HTTP/1.1 connection, then as HTTP/2 streams) and
/// exactly `burst` get through. The proxy runs four workers, each accepting
/// its share of the connections, so requests really race on the bucket
/// from different threads.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn exactly_burst_of_a_concurrent_flood_gets_through() {
    const BURST: usize = 20;
    let up = Upstream::start().await;
    // One token per hour: nothing refills during the test.
    let routes = [
        route("h1", "/h1/", "{ burst: 20, rate: 1, per: hour, name: h1 }"),
        route("h2", "/h2/", "{ burst: 20, rate: 1, per: hour, name: h2 }"),
    ]
    .concat();
    let yaml = format!(
        "admin: {{ listen: 127.0.0.1:0 }}\n{}",
        config(&filters(), &routes, up.addr)
    );
    let weft = start_workers(&yaml, 4);
    let addr = weft.addr("public");

    // HTTP/1.1: 60 connections, opened first, then all requests at once.
    let barrier = Arc::new(Barrier::new(3 * BURST));
    let tasks: Vec<_> = (0..3 * BURST)
        .map(|i| tokio::spawn(raw_get_after(addr, format!("/h1/{i}"), barrier.clone())))
        .collect();
    let mut statuses = Vec::new();
    for task in tasks {
        statuses.push(task.await.unwrap());
    }
    let ok = statuses.iter().filter(|&&s| s == 200).count();
    let limited = statuses.iter().filter(|&&s| s == 429).count();
    assert_eq!((ok, limited), (BURST, 2 * BURST), "{statuses:?}");
    assert_eq!(up.hits(), BURST, "only the allowed requests went upstream");

    // HTTP/2: 60 streams on one connection, another policy (a fresh bucket).
    let h2 = client(true);
    let url = weft.url("public");
    let tasks: Vec<_> = (0..3 * BURST)
        .map(|i| {
            let (h2, url) = (h2.clone(), url.clone());
            tokio::spawn(async move {
                let req = Request::get(format!("{url}/h2/{i}"))
                    .body(Full::default())
                    .unwrap();
                send(&h2, req).await.status.as_u16()
            })
        })
        .collect();
    let mut statuses = Vec::new();
    for task in tasks {
        statuses.push(task.await.unwrap());
    }
    let ok = statuses.iter().filter(|&&s| s == 200).count();
    let limited = statuses.iter().filter(|&&s| s == 429).count();
    assert_eq!((ok, limited), (BURST, 2 * BURST), "{statuses:?}");
    assert_eq!(up.hits(), 2 * BURST);

    let admin = weft.url("admin");
    for policy in ["h1", "h2"] {
        let series = |result: &str| {
            format!(
                "weft_user_rate_limit_requests_total{{filter=\"rate-limit\",policy=\"{policy}\",result=\"{result}\"}}"
            )
        };
        assert_eq!(counter(&admin, &series("allowed")).await, BURST as u64);
        assert_eq!(counter(&admin, &series("limited")).await, 2 * BURST as u64);
    }
    assert_eq!(
        weft.log_count("let through without a decision"),
        0,
        "no request failed open:\n{}",
        weft.log_text()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn responses_carry_the_ratelimit_headers_and_refusals_a_retry_after() {
    let up = Upstream::start().await;
    let routes = [
        route(
            "api",
            "/api/",
            "{ burst: 3, rate: 1, per: hour, name: api }",
        ),
        route(
            "quiet",
            "/quiet/",
            "{ burst: 1, rate: 1, per: minute, name: quiet, headers: false }",
        ),
        route(
            "busy",
            "/busy/",
            "{ burst: 1, rate: 2, per: second, name: \"busy \\\"b\\\"\", status: 503 }",
        ),
    ]
    .concat();
    let weft = start(&config(&filters(), &routes, up.addr));
    let url = weft.url("public");

    // Allowed: the policy, and `r` counting down. A token per hour, so the
    // bucket is full again `(3 - r)` hours after.
    for r in [2, 1, 0] {
        let reply = get(&format!("{url}/api/x")).await;
        assert_eq!(reply.status, 200, "{:?}", reply.body);
        assert_eq!(reply.header("x-upstream"), Some("test"));
        assert_eq!(
            reply.header("ratelimit-policy"),
            Some(r#""api";q=3;w=10800"#)
        );
        assert_eq!(remaining(&reply), r);
        assert_eq!(
            reply.header("ratelimit"),
            Some(format!("\"api\";r={r};t={}", (3 - r) * 3600).as_str())
        );
    }
    let refused = get_with(&format!("{url}/api/x"), &[("x-request-id", "rl-1")]).await;
    assert_limited(&refused, 429, "api");
    assert_eq!(refused.header("retry-after"), Some("3600"));
    assert_eq!(refused.header("ratelimit"), Some(r#""api";r=0;t=10800"#));
    assert_eq!(
        refused.json()["message"],
        "too many requests: rate limit \"api\" allows 3 requests at once and 1 more per hour; \
         retry in 3600 s"
    );
    assert_eq!(refused.json()["request_id"], "rl-1");
    assert_eq!(up.hits(), 3, "the refusal did not reach the upstream");

    // `headers: false`: nothing on allowed responses; a refusal still says
    // when to come back.
    let quiet = get(&format!("{url}/quiet/x")).await;
    assert_eq!(quiet.status, 200);
    assert_eq!(quiet.header("ratelimit"), None);
    assert_eq!(quiet.header("ratelimit-policy"), None);
    let quiet = get(&format!("{url}/quiet/x")).await;
    assert_limited(&quiet, 429, "quiet");
    assert_eq!(
        quiet.header("ratelimit-policy"),
        Some(r#""quiet";q=1;w=60"#)
    );

    // A configured status; a name with quotes is escaped.
    let mut refused = None;
    for _ in 0..10 {
        let r = get(&format!("{url}/busy/x")).await;
        if r.status != 200 {
            refused = Some(r);
            break;
        }
    }
    let refused = refused.expect("a refusal within 10 requests of a burst of 1");
    assert_limited(&refused, 503, "busy \\\"b\\\"");
    assert_eq!(
        refused.header("ratelimit-policy"),
        Some(r#""busy \"b\"";q=1;w=1"#)
    );
    assert_eq!(refused.header("retry-after"), Some("1"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refused_client_gets_through_again_once_a_token_is_back() {
    let up = Upstream::start().await;
    // Burst 1, a token every 50 ms.
    let routes = route("fast", "/", "{ burst: 1, rate: 20, per: second }");
    let weft = start(&config(&filters(), &routes, up.addr));
    let url = weft.url("public");
    let c = client(false);
    let fetch = || {
        let req = Request::get(format!("{url}/x"))
            .body(Full::default())
            .unwrap();
        send(&c, req)
    };

    for round in 0..3 {
        // Requests back to back: one is refused before 50 ms pass (bounded:
        // 100 requests).
        let mut refused = None;
        for _ in 0..100 {
            let r = fetch().await;
            if r.status == 429 {
                refused = Some(r);
                break;
            }
            assert_eq!(r.status, 200, "{:?}", r.body);
        }
        let refused = refused.unwrap_or_else(|| panic!("round {round}: no 429 in 100 requests"));
        assert_limited(&refused, 429, "default");
        assert_eq!(refused.header("retry-after"), Some("1"));
        assert_eq!(
            refused.header("ratelimit-policy"),
            Some(r#""default";q=1;w=1"#)
        );

        // After ~100 ms a token is back; allow up to 2 s for a slow machine.
        tokio::time::sleep(Duration::from_millis(100)).await;
        let deadline = Instant::now() + Duration::from_secs(2);
        loop {
            let r = fetch().await;
            if r.status == 200 {
                assert_eq!(remaining(&r), 0);
                break;
            }
            assert_eq!(r.status, 429, "{:?}", r.body);
            assert!(
                Instant::now() < deadline,
                "round {round}: still refused 2 s after the refusal"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn buckets_are_per_key_value_and_shared_by_the_same_policy() {
    let up = Upstream::start().await;
    let per_hour = "rate: 1, per: hour";
    let routes = [
        route(
            "user",
            "/user/",
            &format!("{{ burst: 2, {per_hour}, name: users, key: [{{ header: x-user }}] }}"),
        ),
        route(
            "ip",
            "/ip/",
            &format!("{{ burst: 2, {per_hour}, name: ips, key: [peer_ip] }}"),
        ),
        route(
            "a",
            "/a/",
            &format!("{{ burst: 1, {per_hour}, name: routes, key: [route] }}"),
        ),
        route(
            "b",
            "/b/",
            &format!("{{ burst: 1, {per_hour}, name: routes, key: [route] }}"),
        ),
        // Same name and key on two routes: one bucket per client for both.
        route(
            "shared-1",
            "/shared-1/",
            &format!("{{ burst: 2, {per_hour}, name: shared }}"),
        ),
        route(
            "shared-2",
            "/shared-2/",
            &format!("{{ burst: 2, {per_hour}, name: shared }}"),
        ),
        // Same numbers, another name: its own buckets.
        route(
            "other",
            "/other/",
            &format!("{{ burst: 2, {per_hour}, name: other }}"),
        ),
        // A global bucket.
        route(
            "global",
            "/global/",
            &format!("{{ burst: 1, {per_hour}, name: global, key: [{{ const: everyone }}] }}"),
        ),
    ]
    .concat();
    let weft = start(&config(&filters(), &routes, up.addr));
    let url = weft.url("public");
    let status = |path: &'static str, user: Option<&'static str>| {
        let url = url.clone();
        async move {
            let headers: Vec<(&str, &str)> = user.map(|u| ("x-user", u)).into_iter().collect();
            get_with(&format!("{url}{path}"), &headers).await.status
        }
    };

    // By header: alice's bucket, bob's, and one for requests without it
    // (not the same as a user literally called "-").
    assert_eq!(status("/user/x", Some("alice")).await, 200);
    assert_eq!(status("/user/x", Some("alice")).await, 200);
    assert_eq!(status("/user/x", Some("alice")).await, 429);
    assert_eq!(status("/user/x", Some("bob")).await, 200);
    assert_eq!(status("/user/x", None).await, 200);
    assert_eq!(status("/user/x", None).await, 200);
    assert_eq!(status("/user/x", None).await, 429);
    assert_eq!(status("/user/x", Some("-")).await, 200);
    assert_eq!(status("/user/x", Some("bob")).await, 200);
    assert_eq!(status("/user/x", Some("bob")).await, 429);

    // By peer IP: every test connection comes from 127.0.0.1 (each
    // `get_with` opens a new connection, from a new port), and headers do
    // not matter.
    assert_eq!(status("/ip/x", Some("alice")).await, 200);
    assert_eq!(status("/ip/x", Some("bob")).await, 200);
    assert_eq!(status("/ip/x", None).await, 429);

    // By route: one bucket per route even with the same policy.
    assert_eq!(status("/a/x", None).await, 200);
    assert_eq!(status("/a/x", None).await, 429);
    assert_eq!(status("/b/x", None).await, 200);
    assert_eq!(status("/b/x", None).await, 429);

    // Same name and key on two routes share; another name does not.
    assert_eq!(status("/shared-1/x", None).await, 200);
    assert_eq!(status("/shared-2/x", None).await, 200);
    assert_eq!(status("/shared-1/x", None).await, 429);
    assert_eq!(status("/shared-2/x", None).await, 429);
    assert_eq!(status("/other/x", None).await, 200);

    // A constant key: one bucket for everyone.
    assert_eq!(status("/global/x", Some("alice")).await, 200);
    assert_eq!(status("/global/x", Some("bob")).await, 429);

    assert_eq!(up.hits(), 15);
}

/// Two versions of a config: the same `limit` on `/limited/`, and
/// add-header with `version` on `/other/`.
fn reload_config(limit: &str, version: u32, upstream: SocketAddr) -> String {
    let routes = format!(
        "{}      - {{ name: other, match: {{ path_prefix: /other/ }}, filters: [{{ filter: add-header, config: {{ response: {{ x-version: \"{version}\" }} }} }}], cluster: backend }}\n",
        route("limited", "/limited/", limit)
    );
    config(&filters(), &routes, upstream)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_bucket_survives_a_reload_that_keeps_its_policy() {
    let up = Upstream::start().await;
    let limit = "{ burst: 2, rate: 1, per: hour, name: kept }";
    let weft = start(&reload_config(limit, 1, up.addr));
    let url = weft.url("public");

    assert_eq!(get(&format!("{url}/limited/x")).await.status, 200);
    assert_eq!(get(&format!("{url}/limited/x")).await.status, 200);
    assert_limited(&get(&format!("{url}/limited/x")).await, 429, "kept");
    assert_eq!(
        get(&format!("{url}/other/x")).await.header("x-version"),
        Some("1")
    );

    // Another route changes; the rate-limit entry is the same.
    let outcome = tokio::task::block_in_place(|| weft.reload(&reload_config(limit, 2, up.addr)));
    assert!(outcome.contains("config reloaded"), "{outcome}");
    assert_eq!(
        get(&format!("{url}/other/x")).await.header("x-version"),
        Some("2"),
        "the new config serves"
    );
    assert_limited(&get(&format!("{url}/limited/x")).await, 429, "kept");

    // The same name and key with other numbers: still the same bucket (a
    // larger burst, but the bucket is empty).
    let bigger = "{ burst: 5, rate: 1, per: hour, name: kept }";
    let outcome = tokio::task::block_in_place(|| weft.reload(&reload_config(bigger, 3, up.addr)));
    assert!(outcome.contains("config reloaded"), "{outcome}");
    let r = get(&format!("{url}/limited/x")).await;
    assert_limited(&r, 429, "kept");
    assert_eq!(r.header("ratelimit-policy"), Some(r#""kept";q=5;w=18000"#));

    // Another name: a new policy, with full buckets.
    let renamed = "{ burst: 2, rate: 1, per: hour, name: renamed }";
    let outcome = tokio::task::block_in_place(|| weft.reload(&reload_config(renamed, 4, up.addr)));
    assert!(outcome.contains("config reloaded"), "{outcome}");
    let r = get(&format!("{url}/limited/x")).await;
    assert_eq!(r.status, 200, "{:?}", r.body);
    assert_eq!(r.header("ratelimit"), Some(r#""renamed";r=1;t=3600"#));
}

#[test]
fn a_bad_rate_limit_config_is_rejected_with_its_path() {
    let yaml = |limit: &str| {
        config(
            &filters(),
            &format!(
                "      - {{ name: api, filters: [{{ filter: add-header, config: {{ request: {{ x-a: b }} }} }}, {{ filter: rate-limit, config: {limit} }}], cluster: backend }}"
            ),
            "127.0.0.1:9000".parse().unwrap(),
        )
    };
    let cases = [
        ("{ burst: 0, rate: 1 }", "burst: must be at least 1"),
        (
            "{ burst: 5, rate: 1, key: [peer_ip, user] }",
            "key[1]: unknown key part \"user\": expected \"peer_ip\", \"route\", \
             {\"header\": \"<header name>\"} or {\"const\": \"<text>\"}",
        ),
        (
            "{ burst: 5, rate: 0 }",
            "rate: must be a number greater than 0",
        ),
        (
            "{ burst: 5, rate: 1, per: day }",
            "invalid config: unknown variant `day`, expected one of `second`, `minute`, `hour`",
        ),
        ("{ rate: 1 }", "invalid config: missing field `burst`"),
        ("{ burst: 5, rate: 1, key: [] }", "key: the list is empty"),
        (
            "{ burst: 5, rate: 1, status: 200 }",
            "status: 200 is not an error status",
        ),
    ];
    for (limit, expected) in cases {
        let (ok, out) = validate(bin(), &yaml(limit), "weft.yaml", &[]);
        assert!(!ok, "{limit} was accepted:\n{out}");
        assert!(
            out.contains(&format!(
                "listeners[0].routes[0].filters[1].config: init rejected the config: {expected}"
            )),
            "{limit}:\n{out}"
        );
    }
    let (ok, out) = validate(
        bin(),
        &yaml("{ burst: 5, rate: 0.5, per: minute }"),
        "weft.yaml",
        &[],
    );
    assert!(ok, "a valid config is accepted:\n{out}");
}
