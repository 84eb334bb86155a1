//! Upstreams for protocol tests: TLS with certificates from a test CA
//! (rcgen), ALPN, client certificates, an HTTP/2 stream limit. Each one
//! answers like [`crate::Upstream`] (the echo, with the request's HTTP
//! version) and records what every connection negotiated.

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto;
use rcgen::{
    BasicConstraints, CertificateParams, CertifiedIssuer, DnType, IsCa, KeyPair, KeyUsagePurpose,
};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use tokio::net::TcpListener;

/// A certificate authority for one test.
pub struct TestCa {
    issuer: CertifiedIssuer<'static, KeyPair>,
}

impl Default for TestCa {
    fn default() -> Self {
        Self::new("weft test CA")
    }
}

impl TestCa {
    /// A new self-signed CA named `name`.
    pub fn new(name: &str) -> Self {
        let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
        params.distinguished_name.push(DnType::CommonName, name);
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
        let key = KeyPair::generate().unwrap();
        Self {
            issuer: CertifiedIssuer::self_signed(params, key).unwrap(),
        }
    }

    /// The CA's certificate (PEM).
    pub fn pem(&self) -> String {
        self.issuer.pem()
    }

    /// A certificate for `names` (DNS names or IP addresses) signed by this
    /// CA: (certificate PEM, private key PEM).
    pub fn issue(&self, names: &[&str]) -> (String, String) {
        let names: Vec<String> = names.iter().map(|n| n.to_string()).collect();
        let params = CertificateParams::new(names).unwrap();
        let key = KeyPair::generate().unwrap();
        let cert = params.signed_by(&key, &self.issuer).unwrap();
        (cert.pem(), key.serialize_pem())
    }
}

/// How an [`Origin`] serves.
#[derive(Default)]
pub struct OriginOptions {
    /// TLS: certificate and key (PEM); absent: plaintext.
    pub tls: Option<(String, String)>,
    /// ALPN protocols offered over TLS, in order of preference.
    pub alpn: Vec<&'static str>,
    /// Require a client certificate signed by this CA (PEM).
    pub client_ca: Option<String>,
    /// HTTP/2 `SETTINGS_MAX_CONCURRENT_STREAMS`.
    pub max_concurrent_streams: Option<u32>,
}

/// What one connection negotiated.
#[derive(Debug, Clone, Default)]
pub struct Accepted {
    /// The server name the client sent (SNI).
    pub sni: Option<String>,
    /// The ALPN protocol chosen.
    pub alpn: Option<String>,
    /// Whether the client presented a certificate.
    pub client_cert: bool,
    /// Set when the TLS handshake failed: why.
    pub tls_error: Option<String>,
}

/// A running upstream; stops when dropped.
pub struct Origin {
    /// Its address.
    pub addr: SocketAddr,
    accepted: Arc<Mutex<Vec<Accepted>>>,
    task: tokio::task::JoinHandle<()>,
}

impl Origin {
    /// Starts an upstream on an ephemeral loopback port.
    pub async fn start(options: OriginOptions) -> Origin {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind origin");
        let addr = listener.local_addr().unwrap();
        let acceptor = options.tls.as_ref().map(|(cert, key)| {
            let certs: Vec<CertificateDer<'static>> =
                CertificateDer::pem_slice_iter(cert.as_bytes())
                    .collect::<Result<_, _>>()
                    .unwrap();
            let key = PrivateKeyDer::from_pem_slice(key.as_bytes()).unwrap();
            #[allow(deprecated)] // ring, as the proxy uses
            let provider = Arc::new(rustls::crypto::ring::default_provider());
            let builder = rustls::ServerConfig::builder_with_provider(provider.clone())
                .with_safe_default_protocol_versions()
                .unwrap();
            let builder = match &options.client_ca {
                None => builder.with_no_client_auth(),
                Some(ca) => {
                    let mut roots = rustls::RootCertStore::empty();
                    for c in CertificateDer::pem_slice_iter(ca.as_bytes()) {
                        roots.add(c.unwrap()).unwrap();
                    }
                    let verifier = rustls::server::WebPkiClientVerifier::builder_with_provider(
                        Arc::new(roots),
                        provider,
                    )
                    .build()
                    .unwrap();
                    builder.with_client_cert_verifier(verifier)
                }
            };
            let mut config = builder.with_single_cert(certs, key).unwrap();
            config.alpn_protocols = options.alpn.iter().map(|p| p.as_bytes().to_vec()).collect();
            tokio_rustls::TlsAcceptor::from(Arc::new(config))
        });
        let max_streams = options.max_concurrent_streams;
        let accepted = Arc::new(Mutex::new(Vec::new()));
        let record = accepted.clone();
        let task = tokio::spawn(async move {
            loop {
                let Ok((stream, _)) = listener.accept().await else {
                    continue;
                };
                let acceptor = acceptor.clone();
                let record = record.clone();
                tokio::spawn(async move {
                    let mut builder = auto::Builder::new(TokioExecutor::new());
                    builder.http2().max_concurrent_streams(max_streams);
                    let service =
                        service_fn(|req| crate::upstream::answer(req, Default::default()));
                    let Some(acceptor) = acceptor else {
                        record.lock().unwrap().push(Accepted::default());
                        let _ = builder
                            .serve_connection(TokioIo::new(stream), service)
                            .await;
                        return;
                    };
                    let tls = match acceptor.accept(stream).await {
                        Ok(tls) => tls,
                        Err(e) => {
                            record.lock().unwrap().push(Accepted {
                                tls_error: Some(e.to_string()),
                                ..Default::default()
                            });
                            return;
                        }
                    };
                    let conn = tls.get_ref().1;
                    record.lock().unwrap().push(Accepted {
                        sni: conn.server_name().map(str::to_string),
                        alpn: conn
                            .alpn_protocol()
                            .map(|p| String::from_utf8_lossy(p).into_owned()),
                        client_cert: conn.peer_certificates().is_some_and(|c| !c.is_empty()),
                        tls_error: None,
                    });
                    let _ = builder.serve_connection(TokioIo::new(tls), service).await;
                });
            }
        });
        Origin {
            addr,
            accepted,
            task,
        }
    }

    /// Every connection accepted so far, in order.
    pub fn accepted(&self) -> Vec<Accepted> {
        self.accepted.lock().unwrap().clone()
    }
}

impl Drop for Origin {
    fn drop(&mut self) {
        self.task.abort();
    }
}
