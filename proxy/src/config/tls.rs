//! `listeners[i].tls:` TLS termination on a listener (see docs/config.md).

use std::path::PathBuf;

use serde::{Deserialize, Serialize};

/// Default of `tls.alpn`: HTTP/2 first, then HTTP/1.1.
pub const DEFAULT_ALPN: [&str; 2] = ["h2", "http/1.1"];
/// Default of `tls.reload_interval_ms`: how often the certificate, key and
/// CA files are checked for changes.
pub const DEFAULT_RELOAD_INTERVAL_MS: u64 = 1000;
/// The shortest `tls.reload_interval_ms` other than 0 (never).
pub const MIN_RELOAD_INTERVAL_MS: u64 = 100;

/// `listeners[i].tls:` the listener speaks TLS (1.2 and 1.3 only).
#[derive(Debug, Clone, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct TlsConfig {
    /// The certificates served; SNI picks one, the first is the default for
    /// a client that sends no name or an unknown one.
    pub certificates: Vec<CertificateConfig>,
    /// ALPN protocols offered, in order of preference: `h2`, `http/1.1`.
    #[serde(default = "default_alpn")]
    pub alpn: Vec<String>,
    /// PEM file of the CAs that sign client certificates (mTLS).
    #[serde(default)]
    pub client_ca_file: Option<PathBuf>,
    /// Whether a client certificate is required; needs `client_ca_file`.
    /// Default: `required` when `client_ca_file` is given.
    #[serde(default)]
    pub client_auth: Option<ClientAuth>,
    /// The lowest TLS version accepted.
    #[serde(default)]
    pub min_version: TlsVersion,
    /// How often the files are checked for changes, in ms; 0: never (a
    /// config reload still reads them again).
    #[serde(default = "default_reload_interval_ms")]
    pub reload_interval_ms: u64,
}

fn default_alpn() -> Vec<String> {
    DEFAULT_ALPN.iter().map(|s| s.to_string()).collect()
}

fn default_reload_interval_ms() -> u64 {
    DEFAULT_RELOAD_INTERVAL_MS
}

/// `tls.certificates[j]:` one certificate chain and its key.
#[derive(Debug, Clone, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct CertificateConfig {
    /// PEM file: the certificate first, then its intermediates.
    pub cert_file: PathBuf,
    /// PEM file: the private key (PKCS#8, PKCS#1 or SEC1).
    pub key_file: PathBuf,
    /// The SNI names it serves (`*.example.com` allowed); default: the DNS
    /// names of the certificate's subject alternative names.
    #[serde(default)]
    pub server_names: Option<Vec<String>>,
}

/// `tls.client_auth:` what a client certificate is.
#[derive(Debug, Clone, Copy, Deserialize, Serialize, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum ClientAuth {
    /// A client without a certificate signed by the CA is refused.
    Required,
    /// A client may present no certificate; one it presents must be signed
    /// by the CA.
    Optional,
}

/// `tls.min_version:` `"1.2"` or `"1.3"`.
#[derive(Debug, Clone, Copy, Default, Deserialize, Serialize, PartialEq, Eq)]
#[serde(try_from = "VersionText", into = "String")]
pub enum TlsVersion {
    /// TLS 1.2 and 1.3.
    #[default]
    V1_2,
    /// TLS 1.3 only.
    V1_3,
}

/// A version as written: `"1.3"`, or `1.3` (a YAML number).
#[derive(Deserialize)]
#[serde(untagged)]
enum VersionText {
    Text(String),
    Number(f64),
}

impl TryFrom<VersionText> for TlsVersion {
    type Error = String;

    fn try_from(v: VersionText) -> Result<Self, String> {
        let text = match v {
            VersionText::Text(t) => t,
            VersionText::Number(n) => n.to_string(),
        };
        match text.as_str() {
            "1.2" => Ok(TlsVersion::V1_2),
            "1.3" => Ok(TlsVersion::V1_3),
            other => Err(format!(
                "unsupported TLS version {other:?}: \"1.2\" or \"1.3\""
            )),
        }
    }
}

impl From<TlsVersion> for String {
    fn from(v: TlsVersion) -> String {
        match v {
            TlsVersion::V1_2 => "1.2".into(),
            TlsVersion::V1_3 => "1.3".into(),
        }
    }
}
