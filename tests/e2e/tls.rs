//! TLS termination: HTTP/2 and HTTP/1.1 by ALPN, SNI, client certificates
//! and their properties, certificate files replaced under load, bad files.

use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use http::Version;
use weft_test_harness::Upstream;
use weft_test_harness::process::{temp_dir, validate_file};
use weft_test_harness::tls::rustls::{self, pki_types::CertificateDer};
use weft_test_harness::tls::{Ca, Leaf, client_config, connect, get, presented, provider};

use crate::{bin, start, wasm};

/// A listener `name` with `tls` (YAML flow mapping) routing to `backend`,
/// through the inspect filter echoing `props` when given.
fn listener(name: &str, tls: &str, props: &[&str]) -> String {
    let filters = if props.is_empty() {
        String::new()
    } else {
        let list = props
            .iter()
            .map(|p| format!("\"{p}\""))
            .collect::<Vec<_>>()
            .join(", ");
        format!(
            ", filters: [{{ filter: inspect, config: {{ phases: [request_headers], properties: [{list}] }} }}]"
        )
    };
    format!(
        "  - name: {name}\n    listen: 127.0.0.1:0\n    tls: {tls}\n    routes:\n      - {{ name: all, cluster: backend{filters} }}\n"
    )
}

fn config(listeners: &[String], upstream: SocketAddr) -> String {
    format!(
        "filters:\n  inspect: {{ path: {} }}\nlisteners:\n{}clusters:\n  backend: {{ endpoints: [\"{upstream}\"] }}\n",
        wasm("inspect_filter"),
        listeners.concat()
    )
}

fn cert_entry(cert: &Path, key: &Path, names: Option<&str>) -> String {
    let names = names.map_or(String::new(), |n| format!(", server_names: [{n}]"));
    format!(
        "{{ cert_file: \"{}\", key_file: \"{}\"{names} }}",
        cert.display(),
        key.display()
    )
}

/// Runs curl (blocking) and returns its output with the response headers.
async fn curl(args: Vec<String>) -> String {
    tokio::task::spawn_blocking(move || {
        let out = std::process::Command::new("curl")
            .args(["-sS", "-i", "--max-time", "10"])
            .args(&args)
            .output()
            .expect("run curl");
        format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        )
    })
    .await
    .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn curl_gets_http2_and_http1_by_alpn() {
    let up = Upstream::start().await;
    let dir = temp_dir("tls-curl");
    let ca = Ca::new("test CA");
    let ca_file = ca.write(&dir, "ca.pem");
    let (cert, key) = ca.server(&["a.test"]).write(&dir, "a");
    let tls = format!("{{ certificates: [{}] }}", cert_entry(&cert, &key, None));
    let weft = start(&config(&[listener("public", &tls, &[])], up.addr));
    let port = weft.addr("public").port();
    let common = |version: &str, path: &str| {
        vec![
            version.to_string(),
            "--cacert".into(),
            ca_file.display().to_string(),
            "--resolve".into(),
            format!("a.test:{port}:127.0.0.1"),
            format!("https://a.test:{port}{path}"),
        ]
    };
    let h2 = curl(common("--http2", "/over/h2")).await;
    assert!(h2.starts_with("HTTP/2 200"), "{h2}");
    assert!(h2.contains(r#""path":"/over/h2""#), "{h2}");
    assert!(h2.contains(r#""x-forwarded-proto":"https""#), "{h2}");
    let h1 = curl(common("--http1.1", "/over/h1")).await;
    assert!(h1.starts_with("HTTP/1.1 200"), "{h1}");
    assert!(h1.contains(r#""path":"/over/h1""#), "{h1}");

    // The same with a rustls client: the offered ALPN decides.
    let addr = weft.addr("public");
    for (alpn, want) in [
        (&["h2", "http/1.1"][..], Version::HTTP_2),
        (&["http/1.1"][..], Version::HTTP_11),
        (&[][..], Version::HTTP_11),
    ] {
        let stream = connect(addr, "a.test", client_config(&ca, None, alpn))
            .await
            .unwrap();
        let (reply, version) = get(stream, "a.test", "/alpn").await.unwrap();
        assert_eq!((reply.status.as_u16(), version), (200, want), "{alpn:?}");
    }
    // Plaintext HTTP on the TLS port gets no HTTP answer.
    let plain = weft_test_harness::raw_status(addr, b"GET / HTTP/1.1\r\nhost: a\r\n\r\n").await;
    assert!(!plain.starts_with("HTTP/1.1 200"), "{plain}");
    assert_eq!(up.hits(), 5);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sni_picks_the_certificate_and_unknown_names_get_the_first() {
    let up = Upstream::start().await;
    let dir = temp_dir("tls-sni");
    let ca = Ca::new("test CA");
    // `a` also covers c.test, but serves only a.test by SNI: c.test gets
    // it as the default.
    let a = ca.server(&["a.test", "c.test"]);
    let b = ca.server(&["b.test", "*.wild.test"]);
    let (a_cert, a_key) = a.write(&dir, "a");
    let (b_cert, b_key) = b.write(&dir, "b");
    let tls = format!(
        "{{ certificates: [{}, {}] }}",
        cert_entry(&a_cert, &a_key, Some("a.test")),
        cert_entry(&b_cert, &b_key, None)
    );
    let tls13 = format!(
        "{{ min_version: \"1.3\", certificates: [{}] }}",
        cert_entry(&a_cert, &a_key, None)
    );
    let weft = start(&config(
        &[
            listener("public", &tls, &["tls.sni", "tls.version"]),
            listener("modern", &tls13, &[]),
        ],
        up.addr,
    ));
    let addr = weft.addr("public");
    let config = client_config(&ca, None, &["h2"]);
    for (name, want) in [
        ("a.test", &a),
        ("b.test", &b),
        ("x.wild.test", &b),
        ("c.test", &a),
    ] {
        let stream = connect(addr, name, config.clone()).await.unwrap();
        assert_eq!(presented(&stream), want.der, "{name}");
        let (reply, _) = get(stream, name, "/").await.unwrap();
        assert_eq!(reply.status, 200);
        assert_eq!(
            reply.echoed_header("x-property-tls-sni").as_deref(),
            Some(name)
        );
        assert_eq!(
            reply.echoed_header("x-property-tls-version").as_deref(),
            Some("TLSv1.3")
        );
    }
    // TLS 1.2 is served by default, refused with min_version 1.3.
    let tls12 = Arc::new({
        let mut c = rustls::ClientConfig::builder_with_provider(provider())
            .with_protocol_versions(&[&rustls::version::TLS12])
            .unwrap()
            .with_root_certificates(ca.roots())
            .with_no_client_auth();
        c.alpn_protocols = vec![b"h2".to_vec()];
        c
    });
    let stream = connect(addr, "a.test", tls12.clone()).await.unwrap();
    let (reply, _) = get(stream, "a.test", "/").await.unwrap();
    assert_eq!(
        reply.echoed_header("x-property-tls-version").as_deref(),
        Some("TLSv1.2")
    );
    assert!(connect(weft.addr("modern"), "a.test", tls12).await.is_err());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn client_certificates_are_required_and_their_names_are_properties() {
    let up = Upstream::start().await;
    let dir = temp_dir("tls-mtls");
    let ca = Ca::new("test CA");
    let ca_file = ca.write(&dir, "ca.pem");
    let (cert, key) = ca.server(&["a.test"]).write(&dir, "server");
    let entry = cert_entry(&cert, &key, None);
    let props = [
        "peer.certificate_present",
        "peer.identity",
        "peer.subject",
        "peer.uri_sans",
        "peer.dns_sans",
    ];
    let required = format!(
        "{{ certificates: [{entry}], client_ca_file: \"{}\" }}",
        ca_file.display()
    );
    let optional = format!(
        "{{ certificates: [{entry}], client_ca_file: \"{}\", client_auth: optional }}",
        ca_file.display()
    );
    let weft = start(&config(
        &[
            listener("mtls", &required, &props),
            listener("optional", &optional, &props),
        ],
        up.addr,
    ));
    let spiffe = "spiffe://weft.test/ns/default/sa/client";
    let client = ca.client("client-1", &[spiffe], &["client.test"]);
    let stranger = Ca::new("other CA").client("client-2", &[spiffe], &[]);

    let mtls = weft.addr("mtls");
    let refused = |what: &'static str, config| async move {
        let outcome = match connect(mtls, "a.test", config).await {
            Ok(stream) => get(stream, "a.test", "/").await.map(|(r, _)| r.status),
            Err(e) => Err(e.to_string()),
        };
        assert!(outcome.is_err(), "{what}: {outcome:?}");
    };
    refused("no certificate", client_config(&ca, None, &["h2"])).await;
    refused(
        "another CA's certificate",
        client_config(&ca, Some(&stranger), &["h2"]),
    )
    .await;
    assert_eq!(up.hits(), 0);

    let stream = connect(mtls, "a.test", client_config(&ca, Some(&client), &["h2"]))
        .await
        .unwrap();
    let (reply, _) = get(stream, "a.test", "/").await.unwrap();
    assert_eq!(reply.status, 200);
    let echoed =
        |name: &str| reply.echoed_header(&format!("x-property-{}", name.replace('.', "-")));
    assert_eq!(echoed("peer.certificate_present").as_deref(), Some("true"));
    assert_eq!(echoed("peer.identity").as_deref(), Some(spiffe));
    assert_eq!(echoed("peer.subject").as_deref(), Some("CN=client-1"));
    assert_eq!(echoed("peer.uri_sans").as_deref(), Some(spiffe));
    assert_eq!(echoed("peer.dns_sans").as_deref(), Some("client.test"));

    // Optional: no certificate is fine, and says so.
    let stream = connect(
        weft.addr("optional"),
        "a.test",
        client_config(&ca, None, &[]),
    )
    .await
    .unwrap();
    let (reply, _) = get(stream, "a.test", "/").await.unwrap();
    assert_eq!(reply.status, 200);
    assert_eq!(
        reply
            .echoed_header("x-property-peer-certificate_present")
            .as_deref(),
        Some("false")
    );
    assert_eq!(
        reply.echoed_header("x-property-peer-uri_sans").as_deref(),
        Some("(none)")
    );
}

/// Writes `leaf` over `cert`/`key` by writing temporary files and renaming
/// them into place (key first: for a moment the pair does not match).
fn replace_by_rename(leaf: &Leaf, cert: &Path, key: &Path) {
    for (path, text) in [(key, &leaf.key_pem), (cert, &leaf.cert_pem)] {
        let tmp = path.with_extension("tmp");
        std::fs::write(&tmp, text).unwrap();
        std::fs::rename(&tmp, path).unwrap();
    }
}

/// Polls new connections until one presents `want` (10 s bound). Each
/// with a client of its own: a resumed session would show the certificate
/// of the session it resumes.
async fn wait_presented(addr: SocketAddr, ca: &Ca, want: &CertificateDer<'_>) {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let stream = connect(addr, "a.test", client_config(ca, None, &[]))
            .await
            .unwrap();
        if presented(&stream) == *want {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "the new certificate was never presented"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn certificate_files_replaced_under_load_fail_no_handshake() {
    let up = Upstream::start().await;
    let dir = temp_dir("tls-rotate");
    let ca = Ca::new("test CA");
    let v1 = ca.server(&["a.test"]);
    let (cert, key) = v1.write(&dir, "server");
    let tls = format!(
        "{{ reload_interval_ms: 100, certificates: [{}] }}",
        cert_entry(&cert, &key, None)
    );
    let weft = start(&config(&[listener("public", &tls, &[])], up.addr));
    let addr = weft.addr("public");
    let config = client_config(&ca, None, &["h2", "http/1.1"]);

    // 6 clients making new connections, one request each, until both
    // rotations are seen (at most 500 connections each).
    const CLIENTS: usize = 6;
    const MAX_EACH: usize = 500;
    let done = Arc::new(AtomicUsize::new(0));
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let mut load = Vec::new();
    for _ in 0..CLIENTS {
        let (config, done, stop) = (config.clone(), done.clone(), stop.clone());
        load.push(tokio::spawn(async move {
            let mut failures = Vec::new();
            let mut made = 0;
            while made < MAX_EACH && !stop.load(Ordering::Relaxed) {
                let outcome = match connect(addr, "a.test", config.clone()).await {
                    Ok(stream) => get(stream, "a.test", "/").await.map(|(r, _)| r.status),
                    Err(e) => Err(e.to_string()),
                };
                match outcome {
                    Ok(status) if status == 200 => {}
                    other => failures.push(format!("connection {made}: {other:?}")),
                }
                made += 1;
                done.fetch_add(1, Ordering::Relaxed);
            }
            (made, failures)
        }));
    }
    let deadline = Instant::now() + Duration::from_secs(30);
    while done.load(Ordering::Relaxed) < 30 {
        assert!(Instant::now() < deadline, "load stalled");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let v2 = ca.server(&["a.test"]);
    replace_by_rename(&v2, &cert, &key);
    wait_presented(addr, &ca, &v2.der).await;
    // In place: truncated and rewritten, cert first.
    let v3 = ca.server(&["a.test"]);
    std::fs::write(&cert, &v3.cert_pem).unwrap();
    std::fs::write(&key, &v3.key_pem).unwrap();
    wait_presented(addr, &ca, &v3.der).await;
    stop.store(true, Ordering::Relaxed);

    let mut failures = Vec::new();
    for task in load {
        let (made, failed) = task.await.unwrap();
        assert!(
            made < MAX_EACH,
            "a client ended its load before the rotations"
        );
        failures.extend(failed);
    }
    assert!(
        failures.is_empty(),
        "{} failed: {failures:?}",
        failures.len()
    );
    assert!(done.load(Ordering::Relaxed) >= 60, "{done:?}");
    assert!(weft.log_count("TLS files changed: new connections get the new certificates") >= 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_bad_new_file_keeps_the_old_certificate_until_fixed() {
    let up = Upstream::start().await;
    let dir = temp_dir("tls-bad-reload");
    let ca = Ca::new("test CA");
    let v1 = ca.server(&["a.test"]);
    let (cert, key) = v1.write(&dir, "server");
    let tls = format!(
        "{{ reload_interval_ms: 100, certificates: [{}] }}",
        cert_entry(&cert, &key, None)
    );
    let weft = start(&config(&[listener("public", &tls, &[])], up.addr));
    let addr = weft.addr("public");
    let config = client_config(&ca, None, &[]);
    // A certificate whose key is not the one in the key file.
    let v2 = ca.server(&["a.test"]);
    let mut mismatched = v2.clone();
    mismatched.key_pem = v1.key_pem.clone();
    replace_by_rename(&mismatched, &cert, &key);
    tokio::task::block_in_place(|| weft.wait_for_log("cannot be used", 1));
    let line = weft.log_text();
    assert!(
        line.contains("listeners[0].tls.certificates[0].key_file")
            && line.contains(&format!(
                "{}: the private key does not match the certificate of {}",
                key.display(),
                cert.display()
            )),
        "{line}"
    );
    let stream = connect(addr, "a.test", config.clone()).await.unwrap();
    assert_eq!(presented(&stream), v1.der);
    let (reply, _) = get(stream, "a.test", "/").await.unwrap();
    assert_eq!(reply.status, 200);
    // Logged once, not on every check.
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(weft.log_count("cannot be used"), 1);
    // The matching key arrives: the new certificate serves.
    std::fs::write(&key, &v2.key_pem).unwrap();
    wait_presented(addr, &ca, &v2.der).await;
}

#[test]
fn bad_files_at_start_are_config_errors_naming_the_path() {
    let dir = temp_dir("tls-bad-start");
    let ca = Ca::new("test CA");
    let (cert, key) = ca.server(&["a.test"]).write(&dir, "good");
    let (other_cert, _) = ca.server(&["a.test"]).write(&dir, "other");
    let garbage = dir.join("garbage.pem");
    std::fs::write(&garbage, "-----BEGIN CERTIFICATE-----\nnot base64!\n").unwrap();
    let missing = dir.join("missing.pem");
    let write = |name: &str, tls: &str| {
        let path = dir.join(name);
        let yaml = format!(
            "listeners:\n  - name: public\n    listen: 127.0.0.1:0\n    tls: {tls}\n    routes: []\nclusters: {{}}\n"
        );
        std::fs::write(&path, yaml).unwrap();
        path
    };
    for (name, tls, want) in [
        (
            "missing.yaml",
            format!("{{ certificates: [{}] }}", cert_entry(&missing, &key, None)),
            format!(
                "listeners[0].tls.certificates[0].cert_file: {}: cannot read",
                missing.display()
            ),
        ),
        (
            "garbage.yaml",
            format!("{{ certificates: [{}] }}", cert_entry(&garbage, &key, None)),
            format!(
                "listeners[0].tls.certificates[0].cert_file: {}: invalid PEM",
                garbage.display()
            ),
        ),
        (
            "mismatch.yaml",
            format!(
                "{{ certificates: [{}] }}",
                cert_entry(&other_cert, &key, None)
            ),
            format!(
                "listeners[0].tls.certificates[0].key_file: {}: the private key does not match",
                key.display()
            ),
        ),
        (
            "options.yaml",
            format!(
                "{{ certificates: [{}], alpn: [h3], client_auth: required, min_version: \"1.1\" }}",
                cert_entry(&cert, &key, None)
            ),
            "min_version".to_string(),
        ),
        (
            "alpn.yaml",
            format!(
                "{{ certificates: [{}], alpn: [h3], client_auth: optional }}",
                cert_entry(&cert, &key, None)
            ),
            "listeners[0].tls.alpn[0]: unsupported protocol \"h3\"".to_string(),
        ),
        (
            "client_auth.yaml",
            format!(
                "{{ certificates: [{}], client_auth: optional }}",
                cert_entry(&cert, &key, None)
            ),
            "listeners[0].tls.client_auth: needs client_ca_file".to_string(),
        ),
    ] {
        let path = write(name, &tls);
        let (ok, out) = validate_file(bin(), &path);
        assert!(!ok, "{name}: {out}");
        assert!(out.contains(&want), "{name}: want {want:?} in:\n{out}");
        if name == "missing.yaml" {
            let run = std::process::Command::new(bin())
                .args(["run", "--config"])
                .arg(&path)
                .output()
                .unwrap();
            let err = String::from_utf8_lossy(&run.stderr);
            assert!(!run.status.success(), "{err}");
            assert!(err.contains(&want), "weft run: {err}");
        }
    }
}
