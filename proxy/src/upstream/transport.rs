//! How a cluster's connections are opened: TCP, then TLS (rustls) when the
//! cluster has `tls:`, and which HTTP version each connection speaks.
//!
//! The rustls `ClientConfig`s are built once per cluster when the snapshot
//! is built (files read, roots loaded, client key checked), never per
//! request or per connection.

use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use http::uri::Authority;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName};
use rustls::{ClientConfig, RootCertStore};
use tokio::net::TcpStream;
use tokio_rustls::TlsConnector;
use tokio_rustls::client::TlsStream;

use crate::config::model::{ClusterConfig, UpstreamProtocol, UpstreamTlsConfig};

/// A cluster's way to its endpoints: protocol and TLS.
#[derive(Clone)]
pub struct Transport {
    /// The configured protocol.
    pub protocol: UpstreamProtocol,
    tls: Option<Tls>,
    /// Distinguishes this cluster's pooled connections from those of
    /// another cluster (or an older snapshot) to the same endpoint.
    id: u64,
}

#[derive(Clone)]
struct Tls {
    /// ALPN from the protocol.
    config: Arc<ClientConfig>,
    /// ALPN `http/1.1` only: for `Upgrade` tunnels.
    http1: Arc<ClientConfig>,
    /// `tls.sni`, when set.
    sni: Option<ServerName<'static>>,
}

/// A connection just opened.
pub enum Connected {
    /// Plaintext TCP.
    Plain(TcpStream),
    /// TLS over TCP.
    Tls(Box<TlsStream<TcpStream>>),
}

static NEXT_ID: AtomicU64 = AtomicU64::new(1);

impl Transport {
    /// Plaintext HTTP/1.1.
    pub fn plain() -> Self {
        Self {
            protocol: UpstreamProtocol::Http1,
            tls: None,
            id: 0,
        }
    }

    /// The transport of `cluster` (at config path `at`); its files are
    /// relative to `base_dir`. Errors are `(path, message)` pairs.
    pub fn build(
        cluster: &ClusterConfig,
        endpoints: &[Authority],
        at: &str,
        base_dir: &Path,
    ) -> Result<Self, Vec<(String, String)>> {
        let Some(tls) = &cluster.tls else {
            return Ok(Self {
                protocol: cluster.protocol,
                tls: None,
                id: if cluster.protocol == UpstreamProtocol::Http2 {
                    NEXT_ID.fetch_add(1, Ordering::Relaxed)
                } else {
                    0
                },
            });
        };
        let at = format!("{at}.tls");
        let tls = build_tls(tls, cluster.protocol, endpoints, &at, base_dir)?;
        Ok(Self {
            protocol: cluster.protocol,
            tls: Some(tls),
            id: NEXT_ID.fetch_add(1, Ordering::Relaxed),
        })
    }

    /// Plaintext HTTP/1.1: the pool's fast path.
    pub fn is_plain_http1(&self) -> bool {
        self.id == 0
    }

    /// Whether connections use TLS.
    pub fn is_tls(&self) -> bool {
        self.tls.is_some()
    }

    /// The key of `endpoint`'s connections in a worker's pool.
    pub fn pool_key(&self, endpoint: &Authority) -> Box<str> {
        if self.is_plain_http1() {
            endpoint.as_str().into()
        } else {
            format!("{endpoint}#{}", self.id).into()
        }
    }

    /// Opens a connection to `endpoint` (TCP, then the TLS handshake)
    /// within `timeout`; `upgrade` offers only `http/1.1` by ALPN.
    pub async fn connect(
        &self,
        endpoint: &Authority,
        timeout: Duration,
        upgrade: bool,
    ) -> Result<Connected, String> {
        let opened = tokio::time::timeout(timeout, async {
            let stream = super::dns::connect(endpoint.as_str())
                .await
                .map_err(|e| format!("tcp connect error: {e}"))?;
            let _ = stream.set_nodelay(true);
            let Some(tls) = &self.tls else {
                return Ok(Connected::Plain(stream));
            };
            let name = match &tls.sni {
                Some(name) => name.clone(),
                None => server_name(endpoint.host())
                    .map_err(|e| format!("tls: invalid server name {:?}: {e}", endpoint.host()))?,
            };
            let config = if upgrade { &tls.http1 } else { &tls.config };
            let stream = TlsConnector::from(config.clone())
                .connect(name, stream)
                .await
                .map_err(|e| format!("tls handshake failed: {e}"))?;
            Ok(Connected::Tls(Box::new(stream)))
        })
        .await;
        match opened {
            Ok(result) => result,
            Err(_) => Err(format!(
                "{} timed out after {} ms",
                if self.tls.is_some() {
                    "tcp connect and tls handshake"
                } else {
                    "tcp connect"
                },
                timeout.as_millis()
            )),
        }
    }

    /// Whether a connection speaks HTTP/2: by prior knowledge
    /// (`protocol: http2`), or because the server chose `h2` by ALPN.
    pub fn speaks_h2(&self, connected: &Connected) -> bool {
        match connected {
            Connected::Plain(_) => self.protocol == UpstreamProtocol::Http2,
            Connected::Tls(stream) => {
                self.protocol == UpstreamProtocol::Http2
                    || stream.get_ref().1.alpn_protocol() == Some(b"h2")
            }
        }
    }
}

/// A host (`example.com`, `10.0.0.1`, `[::1]`) as a rustls server name.
fn server_name(host: &str) -> Result<ServerName<'static>, String> {
    let host = host.trim_start_matches('[').trim_end_matches(']');
    ServerName::try_from(host.to_string()).map_err(|e| e.to_string())
}

fn build_tls(
    tls: &UpstreamTlsConfig,
    protocol: UpstreamProtocol,
    endpoints: &[Authority],
    at: &str,
    base_dir: &Path,
) -> Result<Tls, Vec<(String, String)>> {
    let mut errors = Vec::new();
    let sni = match &tls.sni {
        Some(sni) => match ServerName::try_from(sni.clone()) {
            Ok(name) => Some(name),
            Err(e) => {
                errors.push((
                    format!("{at}.sni"),
                    format!("invalid server name {sni:?}: {e}"),
                ));
                None
            }
        },
        None => {
            for e in endpoints {
                if let Err(why) = server_name(e.host()) {
                    errors.push((
                        format!("{at}.sni"),
                        format!("endpoint {e} has no valid server name ({why}): set sni"),
                    ));
                }
            }
            None
        }
    };
    let roots = match &tls.ca_file {
        Some(path) => match read_roots(&base_dir.join(path)) {
            Ok(roots) => Some(Arc::new(roots)),
            Err(e) => {
                errors.push((format!("{at}.ca_file"), e));
                None
            }
        },
        None => match system_roots() {
            Ok(roots) => Some(roots.clone()),
            Err(e) => {
                errors.push((format!("{at}.ca_file"), e.clone()));
                None
            }
        },
    };
    let client_cert = match (&tls.cert_file, &tls.key_file) {
        (None, None) => None,
        (Some(_), None) => {
            errors.push((format!("{at}.key_file"), "required with cert_file".into()));
            None
        }
        (None, Some(_)) => {
            errors.push((format!("{at}.cert_file"), "required with key_file".into()));
            None
        }
        (Some(cert), Some(key)) => {
            let certs = read_certs(&base_dir.join(cert))
                .map_err(|e| errors.push((format!("{at}.cert_file"), e)))
                .ok();
            let key = read_key(&base_dir.join(key))
                .map_err(|e| errors.push((format!("{at}.key_file"), e)))
                .ok();
            certs.zip(key)
        }
    };
    let (Some(roots), true) = (roots, errors.is_empty()) else {
        return Err(errors);
    };
    let alpn: &[&[u8]] = match protocol {
        UpstreamProtocol::Http1 => &[b"http/1.1"],
        UpstreamProtocol::Http2 => &[b"h2"],
        UpstreamProtocol::Auto => &[b"h2", b"http/1.1"],
    };
    let build = |alpn: &[&[u8]]| -> Result<Arc<ClientConfig>, String> {
        // ring is the project's provider (its post-quantum key exchange
        // is aws-lc-rs only).
        #[allow(deprecated)]
        let provider = rustls::crypto::ring::default_provider();
        let builder = ClientConfig::builder_with_provider(Arc::new(provider))
            .with_protocol_versions(&[&rustls::version::TLS13, &rustls::version::TLS12])
            .map_err(|e| e.to_string())?
            .with_root_certificates(roots.clone());
        let mut config = match &client_cert {
            None => builder.with_no_client_auth(),
            Some((certs, key)) => builder
                .with_client_auth_cert(certs.clone(), key.clone_key())
                .map_err(|e| format!("client certificate and key do not go together: {e}"))?,
        };
        config.alpn_protocols = alpn.iter().map(|p| p.to_vec()).collect();
        Ok(Arc::new(config))
    };
    let config = build(alpn).map_err(|e| vec![(format!("{at}.key_file"), e)])?;
    let http1 =
        build(&[b"http/1.1".as_slice()]).map_err(|e| vec![(format!("{at}.key_file"), e)])?;
    Ok(Tls { config, http1, sni })
}

fn read_roots(path: &Path) -> Result<RootCertStore, String> {
    let mut roots = RootCertStore::empty();
    for cert in read_certs(path)? {
        roots
            .add(cert)
            .map_err(|e| format!("{}: not a usable CA certificate: {e}", path.display()))?;
    }
    Ok(roots)
}

fn read_certs(path: &Path) -> Result<Vec<CertificateDer<'static>>, String> {
    let pem = std::fs::read(path).map_err(|e| format!("cannot read {}: {e}", path.display()))?;
    let certs = CertificateDer::pem_slice_iter(&pem)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| format!("{}: not a PEM certificate file: {e}", path.display()))?;
    if certs.is_empty() {
        return Err(format!("{}: no PEM certificate in it", path.display()));
    }
    Ok(certs)
}

fn read_key(path: &Path) -> Result<PrivateKeyDer<'static>, String> {
    let pem = std::fs::read(path).map_err(|e| format!("cannot read {}: {e}", path.display()))?;
    PrivateKeyDer::from_pem_slice(&pem)
        .map_err(|e| format!("{}: no PEM private key in it: {e}", path.display()))
}

/// The system's trusted roots, loaded once per process.
fn system_roots() -> &'static Result<Arc<RootCertStore>, String> {
    static ROOTS: OnceLock<Result<Arc<RootCertStore>, String>> = OnceLock::new();
    ROOTS.get_or_init(|| {
        let found = rustls_native_certs::load_native_certs();
        let mut roots = RootCertStore::empty();
        let (added, _) = roots.add_parsable_certificates(found.certs);
        if added == 0 {
            let why = found
                .errors
                .first()
                .map(|e| format!(": {e}"))
                .unwrap_or_default();
            return Err(format!("no system CA certificates found{why}; set ca_file"));
        }
        Ok(Arc::new(roots))
    })
}
