//! What a TLS connection tells about its client, read once at the end of the
//! handshake: filters read it as properties (`tls.*`, `peer.*`).

use rustls::ProtocolVersion;
use rustls::ServerConnection;
use x509_parser::extensions::GeneralName;

/// A TLS connection's negotiated parameters and its client's certificate.
#[derive(Debug, Default)]
pub struct TlsPeer {
    /// `TLSv1.2` or `TLSv1.3`, as property `tls.version`.
    pub version: &'static str,
    /// The name the client asked for (SNI), as property `tls.sni`.
    pub sni: Option<String>,
    /// The client's certificate, verified against the listener's CA.
    pub cert: Option<PeerCert>,
}

/// The parts of a client certificate that filters read.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct PeerCert {
    /// The subject, RFC 4514 style (`CN=client,O=Example`), as
    /// `peer.subject`.
    pub subject: String,
    /// The URI subject alternative names, comma-separated, as
    /// `peer.uri_sans`.
    pub uri_sans: String,
    /// The DNS subject alternative names, comma-separated, as
    /// `peer.dns_sans`.
    pub dns_sans: String,
    /// The first URI SAN (a SPIFFE ID in a mesh), else the first DNS SAN,
    /// else the subject, as `peer.identity`.
    pub identity: String,
}

impl TlsPeer {
    /// The parameters of `conn`, whose handshake is complete.
    pub fn of(conn: &ServerConnection) -> Self {
        TlsPeer {
            version: match conn.protocol_version() {
                Some(ProtocolVersion::TLSv1_3) => "TLSv1.3",
                Some(ProtocolVersion::TLSv1_2) => "TLSv1.2",
                _ => "unknown",
            },
            sni: conn.server_name().map(str::to_string),
            cert: conn
                .peer_certificates()
                .and_then(|chain| chain.first())
                .and_then(|leaf| PeerCert::parse(leaf)),
        }
    }
}

impl PeerCert {
    /// The properties of DER certificate `der`; `None` if it cannot be
    /// parsed (rustls verified it, so it can).
    pub fn parse(der: &[u8]) -> Option<Self> {
        let (_, cert) = x509_parser::parse_x509_certificate(der).ok()?;
        let subject = cert.subject().to_string();
        let (mut uris, mut dns) = (Vec::new(), Vec::new());
        if let Ok(Some(san)) = cert.subject_alternative_name() {
            for name in &san.value.general_names {
                match name {
                    GeneralName::URI(uri) => uris.push(*uri),
                    GeneralName::DNSName(name) => dns.push(*name),
                    _ => {}
                }
            }
        }
        let identity = uris
            .first()
            .or(dns.first())
            .map_or_else(|| subject.clone(), |id| id.to_string());
        Some(PeerCert {
            subject,
            uri_sans: uris.join(","),
            dns_sans: dns.join(","),
            identity,
        })
    }
}
