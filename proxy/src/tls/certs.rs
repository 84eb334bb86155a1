//! Reading certificate chains, private keys and CA bundles from PEM files,
//! with errors that name the file.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use rustls::RootCertStore;
use rustls::crypto::CryptoProvider;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::sign::CertifiedKey;

/// Why a certificate, key or CA file cannot be used. Each names the file.
#[derive(Debug, thiserror::Error)]
pub enum TlsFileError {
    /// The file cannot be read.
    #[error("{}: cannot read: {source}", path.display())]
    Read {
        /// The file.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// The file is not valid PEM, or has nothing of the expected kind.
    #[error("{}: {what}", path.display())]
    Pem {
        /// The file.
        path: PathBuf,
        /// What is wrong.
        what: String,
    },
    /// The key cannot be used, or is not the certificate's.
    #[error("{}: {what}", path.display())]
    Key {
        /// The key file.
        path: PathBuf,
        /// What is wrong.
        what: String,
    },
    /// The certificate cannot be parsed.
    #[error("{}: invalid certificate: {what}", path.display())]
    Certificate {
        /// The certificate file.
        path: PathBuf,
        /// What is wrong.
        what: String,
    },
}

fn read(path: &Path) -> Result<Vec<u8>, TlsFileError> {
    std::fs::read(path).map_err(|source| TlsFileError::Read {
        path: path.to_path_buf(),
        source,
    })
}

/// The certificates of the PEM file at `path`, in order; at least one.
pub fn read_certificates(path: &Path) -> Result<Vec<CertificateDer<'static>>, TlsFileError> {
    let bytes = read(path)?;
    let certs = CertificateDer::pem_slice_iter(&bytes)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| TlsFileError::Pem {
            path: path.to_path_buf(),
            what: format!("invalid PEM: {e}"),
        })?;
    if certs.is_empty() {
        return Err(TlsFileError::Pem {
            path: path.to_path_buf(),
            what: "no certificate (-----BEGIN CERTIFICATE-----) found".into(),
        });
    }
    Ok(certs)
}

/// A certificate chain (`cert_file`) and its private key (`key_file`),
/// checked to belong together.
pub fn load_certified_key(
    cert_file: &Path,
    key_file: &Path,
    provider: &CryptoProvider,
) -> Result<CertifiedKey, TlsFileError> {
    let chain = read_certificates(cert_file)?;
    let key_bytes = read(key_file)?;
    let key = PrivateKeyDer::from_pem_slice(&key_bytes).map_err(|e| TlsFileError::Pem {
        path: key_file.to_path_buf(),
        what: match e {
            rustls::pki_types::pem::Error::NoItemsFound => {
                "no private key (PKCS#8, PKCS#1 or SEC1 PEM) found".into()
            }
            e => format!("invalid PEM: {e}"),
        },
    })?;
    // Parsed here so that a bad certificate is found now, not at the first
    // handshake.
    x509_parser::parse_x509_certificate(&chain[0]).map_err(|e| TlsFileError::Certificate {
        path: cert_file.to_path_buf(),
        what: e.to_string(),
    })?;
    CertifiedKey::from_der(chain, key, provider).map_err(|e| TlsFileError::Key {
        path: key_file.to_path_buf(),
        what: match e {
            rustls::Error::InconsistentKeys(_) => format!(
                "the private key does not match the certificate of {}",
                cert_file.display()
            ),
            e => format!("unusable private key: {e}"),
        },
    })
}

/// The DNS names of the subject alternative names of `cert`, lowercased.
pub fn dns_names(cert: &CertificateDer<'_>) -> Vec<String> {
    let Ok((_, parsed)) = x509_parser::parse_x509_certificate(cert) else {
        return Vec::new();
    };
    let Ok(Some(san)) = parsed.subject_alternative_name() else {
        return Vec::new();
    };
    san.value
        .general_names
        .iter()
        .filter_map(|name| match name {
            x509_parser::extensions::GeneralName::DNSName(dns) => Some(dns.to_ascii_lowercase()),
            _ => None,
        })
        .collect()
}

/// The CA certificates of the PEM file at `path`, as trust anchors.
pub fn load_roots(path: &Path) -> Result<Arc<RootCertStore>, TlsFileError> {
    let mut roots = RootCertStore::empty();
    for cert in read_certificates(path)? {
        roots.add(cert).map_err(|e| TlsFileError::Certificate {
            path: path.to_path_buf(),
            what: e.to_string(),
        })?;
    }
    Ok(Arc::new(roots))
}
