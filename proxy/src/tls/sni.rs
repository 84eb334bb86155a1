//! Choosing a listener's certificate by the name the client sends (SNI).

use std::collections::HashMap;
use std::sync::Arc;

use rustls::server::{ClientHello, ResolvesServerCert};
use rustls::sign::CertifiedKey;

/// A listener's certificates by name. Immutable: a change of files builds
/// a new one (with a new `ServerConfig`).
#[derive(Debug)]
pub struct CertSet {
    /// For a client that sends no name or one no certificate serves.
    default: Arc<CertifiedKey>,
    /// By exact name, lowercase.
    exact: HashMap<Box<str>, Arc<CertifiedKey>>,
    /// By the suffix of `*.suffix`, lowercase, without the `*.`.
    wildcard: HashMap<Box<str>, Arc<CertifiedKey>>,
}

impl CertSet {
    /// A set whose default is `default`.
    pub fn new(default: Arc<CertifiedKey>) -> Self {
        Self {
            default,
            exact: HashMap::new(),
            wildcard: HashMap::new(),
        }
    }

    /// Serves `key` for `name` (`host` or `*.suffix`) unless an earlier
    /// certificate already does.
    pub fn add(&mut self, name: &str, key: &Arc<CertifiedKey>) {
        let name = name.to_ascii_lowercase();
        let (map, name) = match name.strip_prefix("*.") {
            Some(suffix) => (&mut self.wildcard, suffix.to_string()),
            None => (&mut self.exact, name),
        };
        map.entry(name.into_boxed_str())
            .or_insert_with(|| key.clone());
    }

    /// The certificate for `server_name`: an exact name, then a wildcard
    /// for its parent domain, then the default.
    pub fn choose(&self, server_name: Option<&str>) -> &Arc<CertifiedKey> {
        let Some(name) = server_name else {
            return &self.default;
        };
        let lower;
        let name = if name.bytes().any(|b| b.is_ascii_uppercase()) {
            lower = name.to_ascii_lowercase();
            lower.as_str()
        } else {
            name
        };
        if let Some(key) = self.exact.get(name) {
            return key;
        }
        if let Some((_, parent)) = name.split_once('.')
            && let Some(key) = self.wildcard.get(parent)
        {
            return key;
        }
        &self.default
    }
}

impl ResolvesServerCert for CertSet {
    fn resolve(&self, hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        Some(self.choose(hello.server_name()).clone())
    }
}

/// Whether `name` can be served by SNI: a DNS name, optionally `*.` and a
/// domain.
pub fn valid_server_name(name: &str) -> bool {
    let host = name.strip_prefix("*.").unwrap_or(name);
    !host.is_empty()
        && host.len() <= 253
        && host.split('.').all(|label| {
            !label.is_empty()
                && label.len() <= 63
                && label
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
        })
}

#[cfg(test)]
mod tests {
    use super::*;
    use rustls::crypto::ring::sign::any_supported_type;
    use rustls::pki_types::pem::PemObject;
    use rustls::pki_types::{CertificateDer, PrivateKeyDer};

    /// A placeholder chain (`choose` never looks at it) around a fixed P-256
    /// key generated with openssl.
    fn key(tag: u8) -> Arc<CertifiedKey> {
        const P256: &str = "-----BEGIN PRIVATE KEY-----\n\
MIGHAgEAMBMGByqGSM49AgEGCCqGSM49AwEHBG0wawIBAQQgTZ8La6KyQwJPECEi\n\
Uzto6Ni/kv0CRIB8n2iNEPFwjJ2hRANCAARYm93HgIBZhKNYAWN+yp3FnDgObAyM\n\
ENRv8Gbw95EAQRTc50uIgdTEhPy4ZZthCa/m/q5ARjPZ84m0+DEdfiVy\n\
-----END PRIVATE KEY-----\n";
        let der = PrivateKeyDer::from_pem_slice(P256.as_bytes()).unwrap();
        Arc::new(CertifiedKey::new(
            vec![CertificateDer::from(vec![tag])],
            any_supported_type(&der).unwrap(),
        ))
    }

    fn tag(key: &Arc<CertifiedKey>) -> u8 {
        key.cert[0].as_ref()[0]
    }

    #[test]
    fn sni_picks_exact_then_wildcard_then_the_default() {
        let mut set = CertSet::new(key(0));
        set.add("a.test", &key(1));
        set.add("*.b.test", &key(2));
        set.add("A.TEST", &key(9)); // a later certificate does not take a name
        assert_eq!(tag(set.choose(None)), 0);
        assert_eq!(tag(set.choose(Some("a.test"))), 1);
        assert_eq!(tag(set.choose(Some("A.Test"))), 1);
        assert_eq!(tag(set.choose(Some("x.b.test"))), 2);
        // A wildcard covers one label only.
        assert_eq!(tag(set.choose(Some("y.x.b.test"))), 0);
        assert_eq!(tag(set.choose(Some("b.test"))), 0);
        assert_eq!(tag(set.choose(Some("other.test"))), 0);
    }

    #[test]
    fn server_names_are_dns_names() {
        for ok in ["a.test", "*.a.test", "localhost", "x-1.y_2.z"] {
            assert!(valid_server_name(ok), "{ok}");
        }
        for bad in ["", "*.", "a..b", "a b", "*a.test", "a.*.test", "1.2.3.4:80"] {
            assert!(!valid_server_name(bad), "{bad}");
        }
    }
}
