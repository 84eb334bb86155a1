//! TLS termination on listeners (rustls with the ring provider; TLS 1.2
//! and 1.3 only): certificates chosen by SNI, ALPN, client certificates
//! (mTLS), and certificate files reloaded without a restart.
//!
//! A listener's [`ListenerTls`] holds its current rustls `ServerConfig` in
//! an `ArcSwap`: each new connection takes the current one, and when the
//! files change ([`watch`]) a new one is built off the accept path and
//! swapped in, so handshakes in progress finish with the one they started
//! with. Files that cannot be used keep the previous certificates serving.

pub mod certs;
pub mod peer;
pub mod sni;
pub mod watch;

use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

use arc_swap::ArcSwap;
use rustls::crypto::CryptoProvider;
use rustls::server::WebPkiClientVerifier;
use rustls::server::{ProducesTickets, ServerSessionMemoryCache, StoresServerSessions};
use rustls::{ServerConfig, SupportedProtocolVersion};

use crate::config::ConfigError;
use crate::config::tls::{ClientAuth, MIN_RELOAD_INTERVAL_MS, TlsConfig, TlsVersion};

pub use certs::TlsFileError;
pub use peer::{PeerCert, TlsPeer};
pub use sni::CertSet;

/// TLS 1.2 sessions remembered per listener for resumption by session id
/// (clients that do not take tickets).
const SESSION_CACHE_SIZE: usize = 4096;

/// TLS 1.3 only (`min_version: "1.3"`).
static TLS13_ONLY: &[&SupportedProtocolVersion] = &[&rustls::version::TLS13];

/// The crypto provider of every listener: ring, with its default cipher
/// suites and key exchange groups.
fn provider() -> &'static Arc<CryptoProvider> {
    static PROVIDER: OnceLock<Arc<CryptoProvider>> = OnceLock::new();
    // Deprecated since rustls 0.23.48 for want of post-quantum key
    // exchange, which ring does not have; ring is the provider chosen here.
    #[allow(deprecated)]
    PROVIDER.get_or_init(|| Arc::new(rustls::crypto::ring::default_provider()))
}

/// The process's session ticket keys (rotated every 6 hours), shared by
/// every listener and kept across certificate and config reloads, so a
/// client resumes on any worker and after a reload.
fn ticketer() -> Option<&'static Arc<dyn ProducesTickets>> {
    static TICKETER: OnceLock<Option<Arc<dyn ProducesTickets>>> = OnceLock::new();
    TICKETER
        .get_or_init(|| match rustls::crypto::ring::Ticketer::new() {
            Ok(t) => Some(t),
            Err(e) => {
                tracing::warn!("TLS session tickets off: {e}");
                None
            }
        })
        .as_ref()
}

/// One certificate of a listener, its paths resolved.
#[derive(Debug)]
struct CertFiles {
    cert_file: PathBuf,
    key_file: PathBuf,
    /// Configured names; `None`: the certificate's DNS SANs.
    server_names: Option<Vec<String>>,
}

/// What a listener's `ServerConfig` is built from.
#[derive(Debug)]
struct Settings {
    certs: Vec<CertFiles>,
    client_ca: Option<(PathBuf, ClientAuth)>,
    versions: &'static [&'static SupportedProtocolVersion],
    alpn: Vec<Vec<u8>>,
    sessions: Arc<dyn StoresServerSessions>,
}

/// A file of the settings that could not be used: the config field that
/// names it, and why.
#[derive(Debug)]
struct LoadError {
    field: String,
    message: String,
}

impl Settings {
    /// Every file, in a fixed order (for [`stamps`]).
    fn files(&self) -> impl Iterator<Item = &Path> {
        self.certs
            .iter()
            .flat_map(|c| [c.cert_file.as_path(), c.key_file.as_path()])
            .chain(self.client_ca.iter().map(|(path, _)| path.as_path()))
    }

    /// Reads the files and builds a `ServerConfig`.
    fn load(&self) -> Result<ServerConfig, LoadError> {
        let provider = provider();
        let mut set: Option<CertSet> = None;
        for (j, c) in self.certs.iter().enumerate() {
            let key =
                certs::load_certified_key(&c.cert_file, &c.key_file, provider).map_err(|e| {
                    let file = match &e {
                        TlsFileError::Key { .. } => "key_file",
                        TlsFileError::Read { path, .. } | TlsFileError::Pem { path, .. }
                            if *path == c.key_file =>
                        {
                            "key_file"
                        }
                        _ => "cert_file",
                    };
                    LoadError {
                        field: format!("certificates[{j}].{file}"),
                        message: e.to_string(),
                    }
                })?;
            let names = match &c.server_names {
                Some(names) => names.clone(),
                None => certs::dns_names(&key.cert[0]),
            };
            if j > 0 && names.is_empty() {
                return Err(LoadError {
                    field: format!("certificates[{j}]"),
                    message: format!(
                        "{}: the certificate has no DNS subject alternative names and no server_names are given: no client could ever get it",
                        c.cert_file.display()
                    ),
                });
            }
            let key = Arc::new(key);
            let set = set.get_or_insert_with(|| CertSet::new(key.clone()));
            for name in &names {
                set.add(name, &key);
            }
        }
        let set = set.ok_or_else(|| LoadError {
            field: "certificates".into(),
            message: "at least one certificate is required".into(),
        })?;
        let builder = ServerConfig::builder_with_provider(provider.clone())
            .with_protocol_versions(self.versions)
            .map_err(|e| LoadError {
                field: "min_version".into(),
                message: e.to_string(),
            })?;
        let builder = match &self.client_ca {
            None => builder.with_no_client_auth(),
            Some((path, auth)) => {
                let ca_error = |message: String| LoadError {
                    field: "client_ca_file".into(),
                    message,
                };
                let roots = certs::load_roots(path).map_err(|e| ca_error(e.to_string()))?;
                let mut verifier =
                    WebPkiClientVerifier::builder_with_provider(roots, provider.clone());
                if *auth == ClientAuth::Optional {
                    verifier = verifier.allow_unauthenticated();
                }
                let verifier = verifier
                    .build()
                    .map_err(|e| ca_error(format!("{}: {e}", path.display())))?;
                builder.with_client_cert_verifier(verifier)
            }
        };
        let mut config = builder.with_cert_resolver(Arc::new(set));
        config.alpn_protocols = self.alpn.clone();
        config.session_storage = self.sessions.clone();
        if let Some(ticketer) = ticketer() {
            config.ticketer = ticketer.clone();
        }
        Ok(config)
    }
}

/// What identifies a file's contents without reading it: a replaced file
/// (rename) has a new inode, a rewritten one a new size or times.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Stamp {
    dev: u64,
    ino: u64,
    len: u64,
    mtime_ns: i64,
    ctime_ns: i64,
}

fn stamps<'a>(files: impl Iterator<Item = &'a Path>) -> Vec<Option<Stamp>> {
    files
        .map(|path| {
            let m = std::fs::metadata(path).ok()?;
            Some(Stamp {
                dev: m.dev(),
                ino: m.ino(),
                len: m.len(),
                mtime_ns: m.mtime() * 1_000_000_000 + m.mtime_nsec(),
                ctime_ns: m.ctime() * 1_000_000_000 + m.ctime_nsec(),
            })
        })
        .collect()
}

/// Where the file watcher is with a listener's files.
#[derive(Debug)]
struct WatchState {
    /// The files' stamps when the serving `ServerConfig` was read.
    loaded: Vec<Option<Stamp>>,
    /// The stamps of the last change that could not be used (logged once).
    failed: Option<Vec<Option<Stamp>>>,
    /// When the files are next checked.
    next_check: Instant,
}

/// What [`ListenerTls::refresh`] did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Refresh {
    /// Not due yet, or no file changed.
    Unchanged,
    /// The files changed and the new certificates serve new connections.
    Reloaded,
    /// The files changed but cannot be used (the message names the file);
    /// the previous certificates keep serving.
    Failed(String),
}

/// A listener's TLS: the serving `ServerConfig` and what it is built from.
#[derive(Debug)]
pub struct ListenerTls {
    settings: Settings,
    current: ArcSwap<ServerConfig>,
    reload_interval: Option<Duration>,
    watch: Mutex<WatchState>,
}

impl ListenerTls {
    /// Checks `config` (the `tls:` block at path `at`, relative paths from
    /// `base_dir`) and reads its files.
    pub fn build(config: &TlsConfig, base_dir: &Path, at: &str) -> Result<Self, Vec<ConfigError>> {
        let mut errors = Vec::new();
        if config.certificates.is_empty() {
            errors.push(ConfigError::new(
                format!("{at}.certificates"),
                "at least one certificate is required",
            ));
        }
        let mut certs = Vec::new();
        for (j, c) in config.certificates.iter().enumerate() {
            if let Some(names) = &c.server_names {
                if names.is_empty() {
                    errors.push(ConfigError::new(
                        format!("{at}.certificates[{j}].server_names"),
                        "an empty list: leave it out to serve the certificate's own names",
                    ));
                }
                for (k, name) in names.iter().enumerate() {
                    if !sni::valid_server_name(name) {
                        errors.push(ConfigError::new(
                            format!("{at}.certificates[{j}].server_names[{k}]"),
                            format!("{name:?} is not a DNS name (or *.domain)"),
                        ));
                    }
                }
            }
            certs.push(CertFiles {
                cert_file: base_dir.join(&c.cert_file),
                key_file: base_dir.join(&c.key_file),
                server_names: c.server_names.clone(),
            });
        }
        let mut alpn = Vec::new();
        for (k, protocol) in config.alpn.iter().enumerate() {
            match protocol.as_str() {
                "h2" | "http/1.1" if !config.alpn[..k].contains(protocol) => {
                    alpn.push(protocol.as_bytes().to_vec());
                }
                "h2" | "http/1.1" => errors.push(ConfigError::new(
                    format!("{at}.alpn[{k}]"),
                    format!("{protocol:?} is listed twice"),
                )),
                _ => errors.push(ConfigError::new(
                    format!("{at}.alpn[{k}]"),
                    format!(
                        "unsupported protocol {protocol:?}: \"h2\" and \"http/1.1\" are served"
                    ),
                )),
            }
        }
        let client_ca = match (&config.client_ca_file, config.client_auth) {
            (Some(path), auth) => Some((base_dir.join(path), auth.unwrap_or(ClientAuth::Required))),
            (None, Some(_)) => {
                errors.push(ConfigError::new(
                    format!("{at}.client_auth"),
                    "needs client_ca_file: the CAs that sign client certificates",
                ));
                None
            }
            (None, None) => None,
        };
        let ms = config.reload_interval_ms;
        if ms != 0 && ms < MIN_RELOAD_INTERVAL_MS {
            errors.push(ConfigError::new(
                format!("{at}.reload_interval_ms"),
                format!("{ms} is below {MIN_RELOAD_INTERVAL_MS} (0: never)"),
            ));
        }
        if !errors.is_empty() {
            return Err(errors);
        }
        let settings = Settings {
            certs,
            client_ca,
            versions: match config.min_version {
                TlsVersion::V1_2 => rustls::ALL_VERSIONS,
                TlsVersion::V1_3 => TLS13_ONLY,
            },
            alpn,
            sessions: ServerSessionMemoryCache::new(SESSION_CACHE_SIZE),
        };
        let loaded = stamps(settings.files());
        let server_config = settings
            .load()
            .map_err(|e| vec![ConfigError::new(format!("{at}.{}", e.field), e.message)])?;
        let reload_interval = (ms != 0).then(|| Duration::from_millis(ms));
        Ok(ListenerTls {
            current: ArcSwap::from_pointee(server_config),
            watch: Mutex::new(WatchState {
                loaded,
                failed: None,
                next_check: Instant::now() + reload_interval.unwrap_or_default(),
            }),
            reload_interval,
            settings,
        })
    }

    /// The `ServerConfig` for a new connection.
    pub fn server_config(&self) -> Arc<ServerConfig> {
        self.current.load_full()
    }

    /// How often the files are checked; `None`: never.
    pub fn reload_interval(&self) -> Option<Duration> {
        self.reload_interval
    }

    /// When due, checks whether a file changed and if so reads them all
    /// again and swaps the new `ServerConfig` in. Blocking file I/O: call
    /// it off the async workers.
    pub fn refresh(&self, now: Instant) -> Refresh {
        let Some(interval) = self.reload_interval else {
            return Refresh::Unchanged;
        };
        let mut state = self.watch.lock().unwrap_or_else(|e| e.into_inner());
        if now < state.next_check {
            return Refresh::Unchanged;
        }
        state.next_check = now + interval;
        // Stamped before reading: a change while reading is seen next time.
        let stamps = stamps(self.settings.files());
        if stamps == state.loaded {
            state.failed = None;
            return Refresh::Unchanged;
        }
        match self.settings.load() {
            Ok(config) => {
                self.current.store(Arc::new(config));
                state.loaded = stamps;
                state.failed = None;
                Refresh::Reloaded
            }
            // Tried again on every check: a file half-written now is
            // complete later, perhaps with the same stamp.
            Err(e) if state.failed.as_ref() == Some(&stamps) => {
                let _ = e;
                Refresh::Unchanged
            }
            Err(e) => {
                state.failed = Some(stamps);
                Refresh::Failed(format!("{}: {}", e.field, e.message))
            }
        }
    }

    /// When the next check is due.
    pub fn next_check(&self) -> Option<Instant> {
        self.reload_interval?;
        Some(
            self.watch
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .next_check,
        )
    }
}
