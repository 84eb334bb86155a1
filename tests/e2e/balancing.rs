//! Clusters: weighted balancing, Maglev consistent hashing across a reload,
//! least request avoiding a slow endpoint, circuit breakers, endpoints
//! named by DNS, and the validation of cluster keys.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use http::Request;
use http_body_util::Full;
use weft_test_harness::process::validate;
use weft_test_harness::{Reply, Upstream, client, get, send};

use crate::{bin, start};

/// A config with an admin API, one listener whose routes pick their cluster
/// by the header `x-cluster: <name>`, and `clusters` (YAML mapping entries,
/// indented two spaces).
fn yaml(cluster_names: &[&str], clusters: &str) -> String {
    let routes: String = cluster_names
        .iter()
        .map(|c| {
            format!(
                "      - {{ name: {c}, match: {{ headers: [{{ name: x-cluster, exact: {c} }}] }}, cluster: {c} }}\n"
            )
        })
        .collect();
    format!(
        "admin: {{ listen: 127.0.0.1:0 }}\nlisteners:\n  - name: public\n    listen: 127.0.0.1:0\n    routes:\n{routes}clusters:\n{clusters}"
    )
}

async fn call(base: &str, cluster: &str, path: &str, extra: Option<(&str, &str)>) -> Reply {
    let mut req = Request::get(format!("{base}{path}")).header("x-cluster", cluster);
    if let Some((k, v)) = extra {
        req = req.header(k, v);
    }
    send(&client(false), req.body(Full::default()).unwrap()).await
}

fn served_by(r: &Reply) -> String {
    assert_eq!(r.status, 200, "{}", String::from_utf8_lossy(&r.body));
    r.header("x-upstream-addr")
        .expect("x-upstream-addr")
        .to_string()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn weights_share_the_requests() {
    let (a, b) = (Upstream::start().await, Upstream::start().await);
    let clusters = format!(
        "  rr: {{ lb_policy: round_robin, endpoints: [\"{}\", {{ address: \"{}\", weight: 3 }}] }}\n  lr: {{ endpoints: [\"{}\", {{ address: \"{}\", weight: 3 }}] }}\n",
        a.addr, b.addr, a.addr, b.addr
    );
    let weft = start(&yaml(&["rr", "lr"], &clusters));
    let base = weft.url("public");
    // Round robin: exactly one in four.
    let mut heavy = 0;
    for _ in 0..400 {
        if served_by(&call(&base, "rr", "/", None).await) == b.addr.to_string() {
            heavy += 1;
        }
    }
    assert_eq!(heavy, 300);
    // Least request (the default) with one request at a time: weighted
    // random, a quarter give or take four standard deviations.
    let mut light = 0;
    for _ in 0..800 {
        if served_by(&call(&base, "lr", "/", None).await) == a.addr.to_string() {
            light += 1;
        }
    }
    assert!(
        (150..=250).contains(&light),
        "{light} of 800 on the weight-1 endpoint"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn maglev_keeps_keys_on_their_endpoint_and_a_new_one_moves_a_minority() {
    let ups = [
        Upstream::start().await,
        Upstream::start().await,
        Upstream::start().await,
        Upstream::start().await,
    ];
    let cluster = |n: usize| {
        let eps: Vec<String> = ups[..n].iter().map(|u| format!("\"{}\"", u.addr)).collect();
        format!(
            "  h: {{ lb_policy: maglev, hash_on: {{ header: x-user }}, endpoints: [{}] }}\n",
            eps.join(", ")
        )
    };
    let weft = start(&yaml(&["h"], &cluster(3)));
    let base = weft.url("public");
    let mut home = HashMap::new();
    for k in 0..200 {
        let key = format!("user-{k}");
        let first = served_by(&call(&base, "h", "/", Some(("x-user", &key))).await);
        let again = served_by(&call(&base, "h", "/", Some(("x-user", &key))).await);
        assert_eq!(first, again, "{key}");
        home.insert(key, first);
    }
    let spread: std::collections::HashSet<_> = home.values().collect();
    assert_eq!(spread.len(), 3, "200 keys land on all three endpoints");
    let line = weft.reload(&yaml(&["h"], &cluster(4)));
    assert!(line.contains("config reloaded"), "{line}");
    let mut moved = 0;
    for (key, was) in &home {
        if served_by(&call(&base, "h", "/", Some(("x-user", key))).await) != *was {
            moved += 1;
        }
    }
    // Ideally a quarter (50) move, to the new endpoint.
    assert!(moved > 0 && moved < 80, "{moved} of 200 keys moved");
    // A request without the key is still served.
    served_by(&call(&base, "h", "/", None).await);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn least_request_sends_less_to_a_slow_endpoint() {
    let ups = [
        Upstream::start().await,
        Upstream::start().await,
        Upstream::start().await,
    ];
    ups[0].set_delay(Duration::from_millis(150));
    let eps: Vec<String> = ups.iter().map(|u| format!("\"{}\"", u.addr)).collect();
    let weft = start(&yaml(
        &["lr"],
        &format!("  lr: {{ endpoints: [{}] }}\n", eps.join(", ")),
    ));
    let base = weft.url("public");
    let mut tasks = Vec::new();
    for _ in 0..8 {
        let base = base.clone();
        tasks.push(tokio::spawn(async move {
            for _ in 0..40 {
                served_by(&call(&base, "lr", "/", None).await);
            }
        }));
    }
    for t in tasks {
        t.await.unwrap();
    }
    let slow = ups[0].hits();
    let total: usize = ups.iter().map(Upstream::hits).sum();
    assert_eq!(total, 320);
    // Round robin would give it a third (107).
    assert!(slow < 320 / 8, "the slow endpoint got {slow} of 320");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn max_requests_refuses_at_once_and_recovers() {
    let up = Upstream::start().await;
    let clusters = format!(
        "  cb: {{ endpoints: [\"{}\"], circuit_breakers: {{ max_requests: 3 }} }}\n",
        up.addr
    );
    let weft = start(&yaml(&["cb"], &clusters));
    let (base, admin) = (weft.url("public"), weft.url("admin"));
    let slow: Vec<_> = (0..3)
        .map(|_| {
            let base = base.clone();
            tokio::spawn(async move { call(&base, "cb", "/delay/1500", None).await })
        })
        .collect();
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let c = get(&format!("{admin}/clusters")).await.json();
        if c["clusters"][0]["circuit_breakers"]["requests"] == 3 {
            assert_eq!(c["clusters"][0]["endpoints"][0]["active_requests"], 3);
            break;
        }
        assert!(Instant::now() < deadline, "3 requests never in flight: {c}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let sent = Instant::now();
    let r = call(&base, "cb", "/", None).await;
    assert!(
        sent.elapsed() < Duration::from_millis(500),
        "{:?}",
        sent.elapsed()
    );
    assert_eq!(r.status, 503);
    assert_eq!(r.header("x-weft-overloaded"), Some("max_requests"));
    let body = r.json();
    assert_eq!(body["error"], "overloaded");
    let message = body["message"].as_str().unwrap();
    assert!(
        message.contains("cb") && message.contains("max_requests (3)"),
        "{message}"
    );
    for t in slow {
        assert_eq!(t.await.unwrap().status, 200);
    }
    served_by(&call(&base, "cb", "/", None).await);
    let c = get(&format!("{admin}/clusters")).await.json();
    assert_eq!(c["clusters"][0]["circuit_breakers"]["requests"], 0);
    assert_eq!(c["clusters"][0]["endpoints"][0]["requests_total"], 4);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_endpoint_named_by_dns_is_resolved_and_served() {
    let up = Upstream::start().await;
    let address = format!("localhost:{}", up.addr.port());
    let clusters = format!("  dns: {{ endpoints: [\"{address}\"], dns_refresh_ms: 100 }}\n");
    let weft = start(&yaml(&["dns"], &clusters));
    let base = weft.url("public");
    for _ in 0..3 {
        let r = call(&base, "dns", "/", None).await;
        assert_eq!(served_by(&r), up.addr.to_string());
    }
    let c = get(&format!("{}/clusters", weft.url("admin"))).await.json();
    assert_eq!(c["clusters"][0]["endpoints"][0]["address"], address);
    assert_eq!(c["clusters"][0]["endpoints"][0]["health"], "healthy");
}

#[test]
fn cluster_keys_are_checked_by_validate() {
    let clusters = "  c:\n    lb_policy: round_robin\n    hash_on: client_ip\n    endpoints: [\"127.0.0.1:1\", { address: \"127.0.0.1:2\", weight: 0 }, \"127.0.0.1:1\"]\n    health_check: { path: /h, interval_ms: 0, expected_statuses: [\"299-200\"] }\n    outlier_detection: { max_ejected_percent: 150 }\n    circuit_breakers: { max_pending_requests: 0 }\n";
    let (ok, out) = validate(bin(), &yaml(&["c"], clusters), "weft.yaml", &[]);
    assert!(!ok, "{out}");
    for needle in [
        "clusters.c.hash_on: hash_on needs lb_policy: maglev",
        "clusters.c.endpoints[1].weight: must be between 1 and 10000",
        "clusters.c.endpoints[2]: endpoint \"127.0.0.1:1\" is listed twice",
        "clusters.c.health_check.interval_ms: must be greater than 0",
        "clusters.c.health_check.expected_statuses[0]",
        "clusters.c.outlier_detection.max_ejected_percent: must be at most 100",
        "clusters.c.circuit_breakers.max_pending_requests: must be greater than 0",
    ] {
        assert!(out.contains(needle), "{needle:?} not in:\n{out}");
    }
}
