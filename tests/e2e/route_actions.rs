//! What a route does with a request: a weighted split across clusters,
//! path and host rewrites, redirects, direct responses and mirroring to a
//! shadow cluster; and the config errors of each.

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::Request;
use http_body_util::Full;
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo};
use weft_test_harness::process::validate;
use weft_test_harness::{Upstream, client, get, send};

use crate::{bin, start, wasm};

/// A config with one listener `public`, the `headers` filter as `hdr`, the
/// given routes and clusters (`name: "addr"` lines).
fn yaml(routes: &str, clusters: &[(&str, SocketAddr)]) -> String {
    let clusters: String = clusters
        .iter()
        .map(|(name, addr)| format!("  {name}: {{ endpoints: [\"{addr}\"] }}\n"))
        .collect();
    format!(
        "filters:\n  hdr: {{ path: {} }}\nlisteners:\n  - name: public\n    listen: 127.0.0.1:0\n    routes:\n{routes}\nclusters:\n{clusters}",
        wasm("headers")
    )
}

/// A port nothing listens on.
fn closed_port() -> SocketAddr {
    let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    l.local_addr().unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_weighted_split_sends_about_a_tenth_to_the_canary_and_names_the_pick() {
    let (stable, canary) = (Upstream::start().await, Upstream::start().await);
    let routes = r#"      - name: split
        filters: [{ filter: hdr, config: { response: { set: { x-cluster: "%CLUSTER%" } } } }]
        clusters: [{ name: stable, weight: 90 }, { name: canary, weight: 10 }]"#;
    let weft = start(&yaml(
        routes,
        &[("stable", stable.addr), ("canary", canary.addr)],
    ));
    let url = weft.url("public");
    const N: usize = 1000;
    let c = client(false);
    let mut tasks = Vec::new();
    for t in 0..10 {
        let (c, url) = (c.clone(), url.clone());
        tasks.push(tokio::spawn(async move {
            let mut canary = 0;
            for i in 0..N / 10 {
                let req = Request::get(format!("{url}/x/{t}/{i}"))
                    .body(Full::default())
                    .unwrap();
                let r = send(&c, req).await;
                assert_eq!(r.status, 200);
                match r.header("x-cluster") {
                    Some("canary") => canary += 1,
                    Some("stable") => {}
                    other => panic!("cluster.name {other:?}"),
                }
            }
            canary
        }));
    }
    let mut named_canary = 0;
    for t in tasks {
        named_canary += t.await.unwrap();
    }
    assert_eq!(stable.hits() + canary.hits(), N);
    // The property names the cluster that served.
    assert_eq!(named_canary, canary.hits());
    let share = canary.hits() as f64 / N as f64;
    assert!((0.06..=0.14).contains(&share), "canary share {share}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rewrites_change_what_the_upstream_sees_and_filters_see_the_original() {
    let up = Upstream::start().await;
    let seen = r#"filters: [{ filter: hdr, config: { request: { set: { x-seen: "%AUTHORITY% %PATH%" } } } }]"#;
    let routes = format!(
        r#"      - name: prefix
        match: {{ path_prefix: /api/ }}
        {seen}
        rewrite: {{ path_prefix: /v2/, host: internal.example:8443 }}
        cluster: backend
      - name: regex
        match: {{ path_prefix: /users/ }}
        rewrite: {{ path_regex: {{ pattern: "^/users/([0-9]+)/profile$", substitution: "/profiles/$1" }} }}
        cluster: backend
      - name: broken
        match: {{ path_prefix: /broken/ }}
        rewrite: {{ path_regex: {{ pattern: "^/", substitution: "" }} }}
        cluster: backend"#
    );
    let weft = start(&yaml(&routes, &[("backend", up.addr)]));
    let url = weft.url("public");
    let port = weft.addr("public").port();

    let r = get(&format!("{url}/api/items/7?q=1&r")).await;
    assert_eq!(r.status, 200);
    let echo = r.json();
    assert_eq!(echo["path"], "/v2/items/7?q=1&r");
    assert_eq!(echo["headers"]["host"], "internal.example:8443");
    assert_eq!(
        r.echoed_header("x-seen").unwrap(),
        format!("127.0.0.1:{port} /api/items/7?q=1&r"),
        "the filter saw the path and host the client sent"
    );

    let r = get(&format!("{url}/users/42/profile?full=yes")).await;
    assert_eq!(r.json()["path"], "/profiles/42?full=yes");
    let r = get(&format!("{url}/users/42/other")).await;
    assert_eq!(r.json()["path"], "/users/42/other", "no match: unchanged");

    let r = get(&format!("{url}/broken/x")).await;
    assert_eq!(r.status, 500);
    assert_eq!(r.json()["error"], "rewrite_failed");
    assert_eq!(up.hits(), 3);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redirects_answer_with_the_location_and_nothing_goes_upstream() {
    let up = Upstream::start().await;
    let routes = r#"      - name: moved
        match: { path_prefix: /old/ }
        redirect: { prefix_rewrite: /new/ }
      - name: secure
        match: { path_prefix: /login }
        redirect: { status: 308, scheme: https, host: secure.example, strip_query: true }
      - name: elsewhere
        match: { path: /here }
        redirect: { status: 302, port: 9443, path: /there }
      - name: rest
        cluster: backend"#;
    let weft = start(&yaml(routes, &[("backend", up.addr)]));
    let url = weft.url("public");
    let cases = [
        ("/old/a/b?x=1", 301, "/new/a/b?x=1".to_string()),
        (
            "/login/form?next=/x",
            308,
            "https://secure.example/login/form".to_string(),
        ),
        (
            "/here?k=v",
            302,
            "http://127.0.0.1:9443/there?k=v".to_string(),
        ),
    ];
    for (path, status, location) in cases {
        let r = get(&format!("{url}{path}")).await;
        assert_eq!(r.status, status, "{path}");
        assert_eq!(r.header("location"), Some(location.as_str()), "{path}");
        assert!(r.body.is_empty(), "{path}");
    }
    assert_eq!(up.hits(), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_direct_response_goes_through_the_chains_response_phases() {
    let up = Upstream::start().await;
    let routes = r#"      - name: maintenance
        match: { path_prefix: /down/ }
        filters: [{ filter: hdr, config: { response: { set: { x-served-by: "weft %ROUTE% %STATUS%" } } } }]
        direct_response: { status: 503, body: "back soon\n" }
      - name: teapot
        match: { path: /tea }
        direct_response: { status: 418, body: '{"short":"stout"}', content_type: application/json }
      - name: empty
        match: { path: /empty }
        direct_response: { status: 204 }"#;
    let weft = start(&yaml(routes, &[("backend", up.addr)]));
    let url = weft.url("public");

    let r = get(&format!("{url}/down/x")).await;
    assert_eq!(r.status, 503);
    assert_eq!(&r.body[..], b"back soon\n");
    assert_eq!(r.header("content-type"), Some("text/plain"));
    assert_eq!(r.header("content-length"), Some("10"));
    assert_eq!(r.header("x-served-by"), Some("weft maintenance 503"));

    let r = get(&format!("{url}/tea")).await;
    assert_eq!(r.status, 418);
    assert_eq!(r.json()["short"], "stout");
    assert_eq!(r.header("content-type"), Some("application/json"));

    let r = get(&format!("{url}/empty")).await;
    assert_eq!(r.status, 204);
    assert!(r.body.is_empty());
    assert_eq!(up.hits(), 0);
}

/// An upstream that records the `Host` of each request it receives.
async fn recording_upstream() -> (SocketAddr, Arc<Mutex<Vec<String>>>) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let hosts = Arc::new(Mutex::new(Vec::new()));
    let seen = hosts.clone();
    tokio::spawn(async move {
        while let Ok((stream, _)) = listener.accept().await {
            let seen = seen.clone();
            tokio::spawn(async move {
                let service = service_fn(move |req: Request<hyper::body::Incoming>| {
                    let host = req
                        .headers()
                        .get("host")
                        .map(|h| format!("{} {}", h.to_str().unwrap_or("?"), req.uri().path()));
                    seen.lock().unwrap().extend(host);
                    async {
                        Ok::<_, std::convert::Infallible>(http::Response::new(Full::new(
                            Bytes::from("shadow"),
                        )))
                    }
                });
                let _ = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new())
                    .serve_connection(TokioIo::new(stream), service)
                    .await;
            });
        }
    });
    (addr, hosts)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_mirror_gets_a_copy_and_a_dead_one_changes_nothing() {
    let up = Upstream::start().await;
    let (shadow, hosts) = recording_upstream().await;
    let routes = r#"      - name: mirrored
        match: { path_prefix: /m/ }
        rewrite: { path_prefix: /copied/ }
        mirror: { cluster: shadow }
        cluster: backend
      - name: dead-mirror
        mirror: { cluster: dead, percent: 100 }
        cluster: backend"#;
    let weft = start(&yaml(
        routes,
        &[
            ("backend", up.addr),
            ("shadow", shadow),
            ("dead", closed_port()),
        ],
    ));
    let url = weft.url("public");
    let port = weft.addr("public").port();

    let r = get(&format!("{url}/m/one?x=1")).await;
    assert_eq!(r.status, 200);
    assert_eq!(
        r.json()["path"],
        "/copied/one?x=1",
        "the main upstream answered"
    );
    let want = format!("127.0.0.1-shadow:{port} /copied/one");
    let deadline = Instant::now() + Duration::from_secs(10);
    while !hosts.lock().unwrap().contains(&want) {
        assert!(
            Instant::now() < deadline,
            "the shadow got no copy: {:?}",
            hosts.lock().unwrap()
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }

    for i in 0..5 {
        let started = Instant::now();
        let r = get(&format!("{url}/other/{i}")).await;
        assert_eq!(r.status, 200, "a dead shadow does not touch the request");
        assert!(started.elapsed() < Duration::from_secs(2));
    }
    assert_eq!(up.hits(), 6);
}

#[test]
fn route_action_errors_name_their_path() {
    let cases: &[(&str, &str)] = &[
        (
            "      - { name: r, cluster: backend, redirect: { path: /x } }",
            "listeners[0].routes[0]: give exactly one of `cluster`, `clusters`, `redirect`, `direct_response` (found cluster and redirect)",
        ),
        (
            "      - { name: r }",
            "listeners[0].routes[0]: give exactly one of `cluster`, `clusters`, `redirect`, `direct_response` (found none)",
        ),
        (
            "      - { name: r, clusters: [{ name: backend, weight: 1 }, { name: nope, weight: 1 }] }",
            r#"listeners[0].routes[0].clusters[1].name: unknown cluster "nope" (known: backend)"#,
        ),
        (
            "      - { name: r, clusters: [{ name: backend, weight: 0 }] }",
            "listeners[0].routes[0].clusters: the weights add up to 0",
        ),
        (
            r#"      - { name: r, cluster: backend, rewrite: { path_regex: { pattern: "(unclosed", substitution: x } } }"#,
            "listeners[0].routes[0].rewrite.path_regex.pattern: invalid regular expression",
        ),
        (
            "      - { name: r, cluster: backend, rewrite: { path_prefix: /v2/ } }",
            "listeners[0].routes[0].rewrite.path_prefix: replaces the matched prefix",
        ),
        (
            "      - { name: r, match: { path_prefix: /a/ }, redirect: { status: 200 } }",
            "listeners[0].routes[0].redirect.status: 200 is not a redirect status",
        ),
        (
            "      - { name: r, direct_response: { status: 200 }, mirror: { cluster: backend } }",
            "listeners[0].routes[0].mirror: a route with `direct_response` sends nothing upstream",
        ),
        (
            "      - { name: r, cluster: backend, mirror: { cluster: backend, percent: 150 } }",
            "listeners[0].routes[0].mirror.percent: 150 is out of range 0..=100",
        ),
    ];
    for (routes, want) in cases {
        let config = format!(
            "listeners:\n  - name: public\n    listen: 127.0.0.1:8080\n    routes:\n{routes}\nclusters:\n  backend: {{ endpoints: [\"127.0.0.1:9000\"] }}\n"
        );
        let (ok, out) = validate(bin(), &config, "weft.yaml", &[]);
        assert!(!ok, "{routes}: {out}");
        assert!(out.contains(want), "{routes}: want {want:?} in:\n{out}");
    }
}
