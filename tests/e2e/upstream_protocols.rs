//! Upstream protocols: shared HTTP/2 connections within the server's
//! stream limit, TLS origination (CA file, SNI, client certificates, ALPN).

use std::net::SocketAddr;

use weft_test_harness::origin::{Origin, OriginOptions, TestCa};
use weft_test_harness::{Weft, get, process};

use crate::{bin, start_workers};

/// One listener `public` routing everything to cluster `backend`, whose
/// settings (after `endpoints`) are `cluster` (YAML flow-mapping members).
fn yaml(upstream: SocketAddr, cluster: &str) -> String {
    format!(
        "listeners:\n  - name: public\n    listen: 127.0.0.1:0\n    routes:\n      - {{ name: all, cluster: backend }}\nclusters:\n  backend: {{ endpoints: [\"{upstream}\"], {cluster} }}\n"
    )
}

/// Starts weft (one worker) with `files` beside its config.
fn start_with_files(config: &str, files: &[(&str, &[u8])]) -> Weft {
    tokio::task::block_in_place(|| {
        Weft::start_with_files(bin(), config, &["--workers", "1"], files)
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn http2_upstream_connections_are_shared_within_the_stream_limit() {
    let origin = Origin::start(OriginOptions {
        max_concurrent_streams: Some(2),
        ..Default::default()
    })
    .await;
    let weft = start_workers(&yaml(origin.addr, "protocol: http2"), 1);
    let url = weft.url("public");
    // One after the other: one connection, spoken in HTTP/2.
    for i in 0..4 {
        let r = get(&format!("{url}/seq/{i}")).await;
        assert_eq!(r.status, 200, "{:?}", r.body);
        assert_eq!(r.json()["version"], "HTTP/2.0");
        assert!(
            r.json()["headers"]["host"].is_null(),
            "Host became :authority"
        );
    }
    assert_eq!(origin.accepted().len(), 1);
    // Six at once, two streams per connection: three connections, and no
    // stream refused (each answered 200).
    let slow: Vec<_> = (0..6)
        .map(|i| tokio::spawn(get_owned(format!("{url}/delay/700?n={i}"))))
        .collect();
    for r in slow {
        let r = r.await.unwrap();
        assert_eq!(r.status, 200, "{}", String::from_utf8_lossy(&r.body));
    }
    assert_eq!(origin.accepted().len(), 3, "{:?}", origin.accepted());
}

async fn get_owned(url: String) -> weft_test_harness::Reply {
    get(&url).await
}

/// A CA, and an upstream with a certificate from it for `backend.test` and
/// 127.0.0.1, offering `alpn`.
async fn tls_origin(ca: &TestCa, alpn: Vec<&'static str>, client_ca: Option<String>) -> Origin {
    Origin::start(OriginOptions {
        tls: Some(ca.issue(&["backend.test", "127.0.0.1"])),
        alpn,
        client_ca,
        ..Default::default()
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tls_origination_verifies_the_upstream_and_sends_sni() {
    let ca = TestCa::default();
    let origin = tls_origin(&ca, vec!["http/1.1"], None).await;
    let config = yaml(origin.addr, "tls: { ca_file: ca.pem, sni: backend.test }");
    let weft = start_with_files(&config, &[("ca.pem", ca.pem().as_bytes())]);
    let r = get(&format!("{}/tls", weft.url("public"))).await;
    assert_eq!(r.status, 200, "{}", String::from_utf8_lossy(&r.body));
    assert_eq!(r.json()["version"], "HTTP/1.1");
    let seen = origin.accepted();
    assert_eq!(seen[0].sni.as_deref(), Some("backend.test"));
    assert_eq!(seen[0].alpn.as_deref(), Some("http/1.1"));
    assert!(!seen[0].client_cert);

    // Without `sni`, an IP endpoint is verified against the certificate's
    // IP addresses, and no SNI is sent.
    let config = yaml(origin.addr, "tls: { ca_file: ca.pem }");
    let weft = start_with_files(&config, &[("ca.pem", ca.pem().as_bytes())]);
    let r = get(&format!("{}/tls-ip", weft.url("public"))).await;
    assert_eq!(r.status, 200, "{}", String::from_utf8_lossy(&r.body));
    assert_eq!(origin.accepted().last().unwrap().sni, None);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn health_checks_of_a_tls_cluster_speak_tls() {
    let ca = TestCa::default();
    let origin = tls_origin(&ca, vec!["http/1.1"], None).await;
    let config = yaml(
        origin.addr,
        "tls: { ca_file: ca.pem, sni: backend.test }, health_check: { path: /healthz, interval_ms: 100, unhealthy_threshold: 1 }",
    );
    let weft = start_with_files(&config, &[("ca.pem", ca.pem().as_bytes())]);
    // Each check is a TLS connection of its own; a plaintext check would
    // never complete a handshake (and would mark the endpoint unhealthy).
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
    while origin.accepted().len() < 3 {
        assert!(std::time::Instant::now() < deadline, "no TLS health checks");
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    assert!(
        origin
            .accepted()
            .iter()
            .all(|c| c.sni.as_deref() == Some("backend.test"))
    );
    let r = get(&format!("{}/after-checks", weft.url("public"))).await;
    assert_eq!(r.status, 200, "{}", String::from_utf8_lossy(&r.body));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_upstream_certificate_from_an_unknown_ca_is_a_502_that_says_so() {
    let ca = TestCa::default();
    let other = TestCa::new("another CA");
    let origin = tls_origin(&ca, vec![], None).await;
    let config = yaml(
        origin.addr,
        "tls: { ca_file: other.pem, sni: backend.test }",
    );
    let weft = start_with_files(&config, &[("other.pem", other.pem().as_bytes())]);
    let r = get(&format!("{}/x", weft.url("public"))).await;
    assert_eq!(r.status, 502);
    let message = r.json()["message"].as_str().unwrap().to_string();
    assert!(
        message.contains("invalid peer certificate: UnknownIssuer"),
        "{message}"
    );
    weft.wait_for_log("invalid peer certificate: UnknownIssuer", 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_certificate_is_presented_when_configured() {
    let ca = TestCa::default();
    let origin = tls_origin(&ca, vec![], Some(ca.pem())).await;
    let (cert, key) = ca.issue(&["weft.test"]);
    let ca_pem = ca.pem();
    let files: &[(&str, &[u8])] = &[
        ("ca.pem", ca_pem.as_bytes()),
        ("client.pem", cert.as_bytes()),
        ("client.key", key.as_bytes()),
    ];
    let config = yaml(
        origin.addr,
        "tls: { ca_file: ca.pem, cert_file: client.pem, key_file: client.key }",
    );
    let weft = start_with_files(&config, files);
    let r = get(&format!("{}/mtls", weft.url("public"))).await;
    assert_eq!(r.status, 200, "{}", String::from_utf8_lossy(&r.body));
    assert!(origin.accepted()[0].client_cert);

    // Without one, the server refuses the handshake: 502.
    let weft = start_with_files(&yaml(origin.addr, "tls: { ca_file: ca.pem }"), files);
    let r = get(&format!("{}/no-cert", weft.url("public"))).await;
    assert_eq!(r.status, 502, "{}", String::from_utf8_lossy(&r.body));
    assert!(origin.accepted().last().unwrap().tls_error.is_some());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn auto_speaks_what_the_server_chooses_by_alpn() {
    let ca = TestCa::default();
    let ca_pem = ca.pem();
    let files: &[(&str, &[u8])] = &[("ca.pem", ca_pem.as_bytes())];
    for (offered, version) in [
        (vec!["h2", "http/1.1"], "HTTP/2.0"),
        (vec!["http/1.1"], "HTTP/1.1"),
    ] {
        let origin = tls_origin(&ca, offered.clone(), None).await;
        let config = yaml(origin.addr, "protocol: auto, tls: { ca_file: ca.pem }");
        let weft = start_with_files(&config, files);
        for i in 0..3 {
            let r = get(&format!("{}/auto/{i}", weft.url("public"))).await;
            assert_eq!(r.status, 200, "{}", String::from_utf8_lossy(&r.body));
            assert_eq!(r.json()["version"], version, "server offers {offered:?}");
        }
        assert_eq!(origin.accepted()[0].alpn.as_deref(), Some(offered[0]));
    }
}

#[test]
fn bad_tls_files_are_config_errors_naming_the_path() {
    let upstream: SocketAddr = "127.0.0.1:9".parse().unwrap();
    let config = yaml(
        upstream,
        "tls: { ca_file: missing.pem, cert_file: client.pem }",
    );
    let (ok, out) = process::validate(bin(), &config, "weft.yaml", &[]);
    assert!(!ok, "{out}");
    assert!(
        out.contains("clusters.backend.tls.ca_file: cannot read"),
        "{out}"
    );
    assert!(
        out.contains("clusters.backend.tls.key_file: required with cert_file"),
        "{out}"
    );
    let config = yaml(upstream, "protocol: http3");
    let (ok, out) = process::validate(bin(), &config, "weft.yaml", &[]);
    assert!(!ok, "{out}");
    assert!(out.contains("clusters.backend.protocol"), "{out}");
}
