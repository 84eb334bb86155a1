//! Routing, forwarding and the proxy's own answers.

use http::Request;
use http_body_util::Full;
use weft_test_harness::{Upstream, client, get, raw_status, send};

use crate::{config, start, start_workers, wasm};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_routes_chain_adds_headers_and_another_route_does_not() {
    let up = Upstream::start().await;
    let filters = format!("  add-header: {{ path: {} }}", wasm("add_header"));
    let routes = r#"
      - name: tagged
        match: { path_prefix: /tagged/ }
        filters:
          - filter: add-header
            config: { request: { x-added: "yes" }, response: { x-served-by: weft } }
        cluster: backend
      - name: plain
        cluster: backend"#;
    let weft = start(&config(&filters, routes, up.addr));
    let url = weft.url("public");

    let tagged = get(&format!("{url}/tagged/item?id=1")).await;
    assert_eq!(tagged.status, 200);
    assert_eq!(tagged.echoed_header("x-added").as_deref(), Some("yes"));
    assert_eq!(tagged.header("x-served-by"), Some("weft"));
    assert_eq!(tagged.json()["path"], "/tagged/item?id=1");

    let plain = get(&format!("{url}/plain")).await;
    assert_eq!(plain.status, 200);
    assert_eq!(plain.echoed_header("x-added"), None);
    assert_eq!(plain.header("x-served-by"), None);
    assert_eq!(up.hits(), 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn forwarding_sets_request_id_and_forwarded_for_and_drops_hop_by_hop() {
    let up = Upstream::start().await;
    let weft = start(&config(
        "  {}",
        "      - { name: all, cluster: backend }",
        up.addr,
    ));
    let url = weft.url("public");
    let c = client(false);
    let req = Request::get(format!("{url}/x"))
        .header("connection", "x-private")
        .header("x-private", "secret")
        .header("x-forwarded-for", "10.1.2.3")
        .body(Full::default())
        .unwrap();
    let r = send(&c, req).await;
    assert_eq!(r.status, 200);
    assert_eq!(
        r.echoed_header("x-private"),
        None,
        "header named by Connection must not pass"
    );
    assert_eq!(
        r.echoed_header("x-forwarded-for").as_deref(),
        Some("10.1.2.3, 127.0.0.1")
    );
    let id = r.echoed_header("x-request-id").expect("x-request-id set");
    assert_eq!(id.len(), 36, "{id}");

    let req = Request::get(format!("{url}/x"))
        .header("x-request-id", "client-chosen-id")
        .body(Full::default())
        .unwrap();
    let r = send(&c, req).await;
    assert_eq!(
        r.echoed_header("x-request-id").as_deref(),
        Some("client-chosen-id")
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn routes_match_host_path_methods_and_headers_first_match_wins() {
    let up = Upstream::start().await;
    let filters = format!("  add-header: {{ path: {} }}", wasm("add_header"));
    let tag = |name: &str| {
        format!(
            "filters: [{{ filter: add-header, config: {{ response: {{ x-route: {name} }} }} }}]"
        )
    };
    let routes = format!(
        r#"
      - {{ name: exact-host, match: {{ host: api.example.com }}, {}, cluster: backend }}
      - {{ name: wildcard-host, match: {{ host: "*.example.com" }}, {}, cluster: backend }}
      - {{ name: exact-path, match: {{ path: /exact }}, {}, cluster: backend }}
      - {{ name: post-only, match: {{ path_prefix: /p/, methods: [POST] }}, {}, cluster: backend }}
      - {{ name: canary, match: {{ path_prefix: /p/, headers: [{{ name: x-env, exact: canary }}] }}, {}, cluster: backend }}
      - {{ name: under-api, match: {{ path_prefix: /api/ }}, {}, cluster: backend }}"#,
        tag("exact-host"),
        tag("wildcard-host"),
        tag("exact-path"),
        tag("post-only"),
        tag("canary"),
        tag("under-api"),
    );
    let weft = start(&config(&filters, &routes, up.addr));
    let url = weft.url("public");
    let c = client(false);
    let route_of = |method: &str, path: &str, headers: &[(&str, &str)]| {
        let mut b = Request::builder()
            .method(method)
            .uri(format!("{url}{path}"));
        for (k, v) in headers {
            b = b.header(*k, *v);
        }
        b.body(Full::default()).unwrap()
    };
    /// (method, path, headers, the route expected to answer)
    type Case<'a> = (&'a str, &'a str, &'a [(&'a str, &'a str)], Option<&'a str>);
    let cases: &[Case] = &[
        (
            "GET",
            "/api/x",
            &[("host", "API.example.com:8080")],
            Some("exact-host"),
        ),
        (
            "GET",
            "/api/x",
            &[("host", "eu.example.com")],
            Some("wildcard-host"),
        ),
        ("GET", "/exact", &[], Some("exact-path")),
        ("GET", "/exact/more", &[], None),
        ("POST", "/p/x", &[], Some("post-only")),
        ("GET", "/p/x", &[("x-env", "canary")], Some("canary")),
        ("GET", "/p/x", &[("x-env", "prod")], None),
        ("GET", "/api/v1", &[], Some("under-api")),
    ];
    for (method, path, headers, want) in cases {
        let r = send(&c, route_of(method, path, headers)).await;
        match want {
            Some(route) => {
                assert_eq!(r.status, 200, "{method} {path} {headers:?}");
                assert_eq!(
                    r.header("x-route"),
                    Some(*route),
                    "{method} {path} {headers:?}"
                );
            }
            None => {
                assert_eq!(r.status, 404, "{method} {path} {headers:?}");
                let body = r.json();
                assert_eq!(body["error"], "no_route");
                assert!(body["message"].as_str().unwrap().contains(path), "{body}");
                assert_eq!(r.header("content-type"), Some("application/json"));
            }
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unreachable_upstream_is_502_and_slow_upstream_is_504() {
    let up = Upstream::start().await;
    let closed = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap()
    };
    let yaml = format!(
        r#"listeners:
  - name: public
    listen: 127.0.0.1:0
    routes:
      - {{ name: dead, match: {{ path_prefix: /dead }}, cluster: dead }}
      - {{ name: slow, match: {{ path_prefix: /delay/ }}, cluster: backend, timeout_ms: 200 }}
clusters:
  dead: {{ endpoints: ["{closed}"] }}
  backend: {{ endpoints: ["{}"] }}
"#,
        up.addr
    );
    let weft = start(&yaml);
    let url = weft.url("public");
    let r = get(&format!("{url}/dead")).await;
    assert_eq!(r.status, 502);
    assert_eq!(r.json()["error"], "upstream_unavailable");
    let r = get(&format!("{url}/delay/3000")).await;
    assert_eq!(r.status, 504);
    assert_eq!(r.json()["error"], "upstream_timeout");
    let r = get(&format!("{url}/delay/10")).await;
    assert_eq!(r.status, 200, "a fast answer within the timeout passes");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn malformed_and_oversized_requests_get_4xx_and_nothing_else_breaks() {
    let up = Upstream::start().await;
    let weft = start(&config(
        "  {}",
        "      - { name: all, cluster: backend }",
        up.addr,
    ));
    let addr = weft.addr("public");
    let status = raw_status(addr, b"GARBAGE\r\n\r\n").await;
    assert!(status.starts_with("HTTP/1.1 400"), "{status}");
    let huge = format!(
        "GET / HTTP/1.1\r\nhost: x\r\nx-big: {}\r\n\r\n",
        "a".repeat(100 * 1024)
    );
    let status = raw_status(addr, huge.as_bytes()).await;
    assert!(status.starts_with("HTTP/1.1 431"), "{status}");
    assert_eq!(up.hits(), 0);
    let r = get(&format!("{}/still-fine", weft.url("public"))).await;
    assert_eq!(r.status, 200);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_upstream_that_drops_the_connection_gives_502() {
    // Accepts, reads the request, and closes without answering.
    let dying = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let dying_addr = dying.local_addr().unwrap();
    tokio::spawn(async move {
        use tokio::io::AsyncReadExt;
        while let Ok((mut s, _)) = dying.accept().await {
            let mut buf = [0u8; 1024];
            let _ = s.read(&mut buf).await;
            drop(s);
        }
    });
    let weft = start(&config(
        "  {}",
        "      - { name: all, cluster: backend }",
        dying_addr,
    ));
    let r = get(&format!("{}/x", weft.url("public"))).await;
    assert_eq!(r.status, 502);
    assert_eq!(r.json()["error"], "upstream_unavailable");
    assert!(
        r.json()["message"]
            .as_str()
            .unwrap()
            .contains(&dying_addr.to_string())
    );
}

/// An upstream that closes each keep-alive connection shortly after its
/// first answer: the next request must go out on a new connection, never
/// on the dead pooled one (which would be a 502).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_keep_alive_connection_the_upstream_closed_is_not_reused() {
    use std::sync::Arc;
    use std::sync::atomic::{AtomicUsize, Ordering};
    use tokio::io::AsyncWriteExt;

    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let upstream = listener.local_addr().unwrap();
    let accepted = Arc::new(AtomicUsize::new(0));
    let counter = accepted.clone();
    tokio::spawn(async move {
        while let Ok((mut stream, _)) = listener.accept().await {
            counter.fetch_add(1, Ordering::SeqCst);
            tokio::spawn(async move {
                let mut head = Vec::new();
                if weft_test_harness::raw::read_head(&mut stream, &mut head)
                    .await
                    .is_none()
                {
                    return;
                }
                // Keep-alive by default in HTTP/1.1; then hang up anyway.
                let _ = stream
                    .write_all(b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok")
                    .await;
                tokio::time::sleep(std::time::Duration::from_millis(50)).await;
            });
        }
    });
    let weft = start_workers(
        &config("  {}", "      - { name: all, cluster: backend }", upstream),
        1,
    );
    let url = weft.url("public");
    for round in 1..=3 {
        let r = get(&format!("{url}/again")).await;
        assert_eq!(r.status, 200, "round {round}: {:?}", r.body);
        tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    }
    assert_eq!(
        accepted.load(Ordering::SeqCst),
        3,
        "one connection per request"
    );
}
