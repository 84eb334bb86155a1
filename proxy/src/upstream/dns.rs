//! Endpoints named by DNS: resolved again every `dns_refresh_ms` by the
//! cluster's background task; new connections go to the last good answer
//! (kept when a lookup fails, with one warning per failure streak).

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{OnceLock, RwLock};

use tokio::net::TcpStream;

/// The last good answer per `host:port`.
fn table() -> &'static RwLock<HashMap<Box<str>, Vec<SocketAddr>>> {
    static TABLE: OnceLock<RwLock<HashMap<Box<str>, Vec<SocketAddr>>>> = OnceLock::new();
    TABLE.get_or_init(RwLock::default)
}

/// Whether `endpoint` (`host:port`) names its host by DNS.
pub fn is_dns_name(endpoint: &str) -> bool {
    endpoint.parse::<SocketAddr>().is_err()
}

/// Opens a TCP connection to `endpoint`: to its last resolved addresses
/// when it is a DNS name that has been resolved, else as given (an IP
/// literal, or a name not yet resolved, looked up now).
pub async fn connect(endpoint: &str) -> std::io::Result<TcpStream> {
    let resolved = table()
        .read()
        .unwrap_or_else(|e| e.into_inner())
        .get(endpoint)
        .cloned();
    match resolved {
        Some(addrs) => TcpStream::connect(&addrs[..]).await,
        None => TcpStream::connect(endpoint).await,
    }
}

/// What a lookup result changes, and what to log.
#[derive(Debug, PartialEq, Eq)]
pub enum Outcome {
    /// New addresses to keep.
    Updated(Vec<SocketAddr>),
    /// The same addresses as before.
    Unchanged,
    /// A failure; `first` for the first of a streak (logged).
    Failed {
        /// The first failure since the last success.
        first: bool,
    },
}

/// One endpoint's resolution state.
#[derive(Debug, Default)]
pub struct Resolution {
    last: Vec<SocketAddr>,
    failing: bool,
}

impl Resolution {
    /// Applies a lookup's result: a non-empty answer replaces the last good
    /// one; a failure (or an empty answer) keeps it.
    pub fn apply(&mut self, result: std::io::Result<Vec<SocketAddr>>) -> Outcome {
        match result {
            Ok(addrs) if !addrs.is_empty() => {
                self.failing = false;
                if addrs == self.last {
                    Outcome::Unchanged
                } else {
                    self.last = addrs.clone();
                    Outcome::Updated(addrs)
                }
            }
            _ => {
                let first = !self.failing;
                self.failing = true;
                Outcome::Failed { first }
            }
        }
    }
}

/// Resolves `endpoints` (DNS names) of cluster `cluster` every `every`,
/// forever (the cluster aborts the task when dropped).
pub async fn refresh(
    cluster: std::sync::Arc<str>,
    endpoints: Vec<String>,
    every: std::time::Duration,
) {
    let mut state: Vec<Resolution> = endpoints.iter().map(|_| Resolution::default()).collect();
    loop {
        for (endpoint, state) in endpoints.iter().zip(&mut state) {
            let result = tokio::net::lookup_host(endpoint.as_str())
                .await
                .map(|addrs| addrs.collect::<Vec<_>>());
            let error = result.as_ref().err().map(ToString::to_string);
            match state.apply(result) {
                Outcome::Updated(addrs) => {
                    tracing::debug!(cluster = &*cluster, endpoint, ?addrs, "endpoint resolved");
                    table()
                        .write()
                        .unwrap_or_else(|e| e.into_inner())
                        .insert(endpoint.as_str().into(), addrs);
                }
                Outcome::Unchanged => {}
                Outcome::Failed { first: true } => tracing::warn!(
                    cluster = &*cluster,
                    endpoint,
                    "cannot resolve the endpoint, keeping its last addresses: {}",
                    error.as_deref().unwrap_or("no addresses")
                ),
                Outcome::Failed { first: false } => {}
            }
        }
        tokio::time::sleep(every).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn addr(s: &str) -> SocketAddr {
        s.parse().unwrap()
    }

    #[test]
    fn keeps_the_last_good_answer_and_warns_once_per_streak() {
        let mut r = Resolution::default();
        let a = vec![addr("10.0.0.1:80")];
        assert_eq!(r.apply(Ok(a.clone())), Outcome::Updated(a.clone()));
        assert_eq!(r.apply(Ok(a.clone())), Outcome::Unchanged);
        let fail = || Err(std::io::Error::other("no such host"));
        assert_eq!(r.apply(fail()), Outcome::Failed { first: true });
        assert_eq!(r.apply(fail()), Outcome::Failed { first: false });
        assert_eq!(r.apply(Ok(vec![])), Outcome::Failed { first: false });
        assert_eq!(r.last, a);
        assert_eq!(r.apply(Ok(a.clone())), Outcome::Unchanged);
        assert_eq!(r.apply(fail()), Outcome::Failed { first: true });
        let b = vec![addr("10.0.0.2:80"), addr("10.0.0.3:80")];
        assert_eq!(r.apply(Ok(b.clone())), Outcome::Updated(b));
    }

    #[test]
    fn names_and_literals() {
        assert!(is_dns_name("localhost:80"));
        assert!(!is_dns_name("127.0.0.1:80"));
        assert!(!is_dns_name("[::1]:80"));
    }
}
