//! A real HTTP/1.1 upstream server on loopback that counts its hits and
//! echoes what it received as JSON.
//!
//! Paths with meaning: `/delay/<ms>` waits before answering; `/status/<code>`
//! answers with that status. Every other request gets 200 with the echo:
//! `{"method", "path", "headers": {name: value}, "body_bytes", "trailers":
//! {name: value}}`.
//!
//! Flaky paths, counted per upstream and per `<key>` (see [`Upstream::seen`]):
//! `/flaky/<key>/<n>/<code>` answers the first `n` requests for `<key>` with
//! `<code>` (and a `retry-after` header when the query has
//! `retry-after=<value>`), the later ones with 200; `/flaky-delay/<key>/<n>/<ms>`
//! waits `<ms>` before answering the first `n`, and answers the later ones at
//! once. Both still echo the request.
//!
//! Every response names the upstream in `x-upstream-addr`. An upstream can
//! be slowed down as a whole ([`Upstream::set_delay`]), killed with its
//! open connections ([`Upstream::kill`]) and started again on the same
//! port ([`Upstream::start_on`]).

use std::collections::{BTreeMap, HashMap};
use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use http::{Request, Response, StatusCode};
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto;
use tokio::net::TcpListener;

/// A running upstream; stops when dropped.
pub struct Upstream {
    /// Its address.
    pub addr: SocketAddr,
    hits: Arc<AtomicUsize>,
    flaky: Flaky,
    delay_ms: Arc<AtomicU64>,
    connections: Arc<Mutex<Vec<tokio::task::AbortHandle>>>,
    task: tokio::task::JoinHandle<()>,
}

/// Requests seen per flaky key.
pub(crate) type Flaky = Arc<Mutex<HashMap<String, usize>>>;

impl Upstream {
    /// Starts an upstream on an ephemeral loopback port.
    pub async fn start() -> Upstream {
        Self::start_on("127.0.0.1:0".parse().unwrap()).await
    }

    /// Starts an upstream on `addr` (e.g. that of a killed one).
    pub async fn start_on(addr: SocketAddr) -> Upstream {
        // A killed upstream's listener closes once its task is next polled.
        let mut tries = 0;
        let listener = loop {
            match TcpListener::bind(addr).await {
                Ok(listener) => break listener,
                Err(e) if tries < 100 && addr.port() != 0 => {
                    tries += 1;
                    let _ = e;
                    tokio::time::sleep(Duration::from_millis(20)).await;
                }
                Err(e) => panic!("bind upstream on {addr}: {e}"),
            }
        };
        let addr = listener.local_addr().unwrap();
        let delay_ms = Arc::new(AtomicU64::new(0));
        let delay = delay_ms.clone();
        let connections: Arc<Mutex<Vec<tokio::task::AbortHandle>>> = Arc::default();
        let open = connections.clone();
        let hits = Arc::new(AtomicUsize::new(0));
        let counter = hits.clone();
        let flaky = Flaky::default();
        let seen = flaky.clone();
        let task = tokio::spawn(async move {
            loop {
                let Ok((stream, _)) = listener.accept().await else {
                    continue;
                };
                let counter = counter.clone();
                let seen = seen.clone();
                let delay = delay.clone();
                let task = tokio::spawn(async move {
                    let service = service_fn(move |req| {
                        counter.fetch_add(1, Ordering::SeqCst);
                        let (seen, delay) = (seen.clone(), delay.load(Ordering::SeqCst));
                        async move {
                            if delay > 0 {
                                tokio::time::sleep(Duration::from_millis(delay)).await;
                            }
                            let mut resp = answer(req, seen).await?;
                            resp.headers_mut()
                                .insert("x-upstream-addr", addr.to_string().parse().unwrap());
                            Ok::<_, Infallible>(resp)
                        }
                    });
                    let _ = auto::Builder::new(TokioExecutor::new())
                        .serve_connection(TokioIo::new(stream), service)
                        .await;
                });
                let mut open = open.lock().unwrap();
                open.retain(|t| !t.is_finished());
                open.push(task.abort_handle());
            }
        });
        Upstream {
            addr,
            hits,
            flaky,
            delay_ms,
            connections,
            task,
        }
    }

    /// Delays every later answer by `delay`.
    pub fn set_delay(&self, delay: Duration) {
        self.delay_ms
            .store(delay.as_millis() as u64, Ordering::SeqCst);
    }

    /// Stops accepting and closes every open connection, as a crashed
    /// server would.
    pub fn kill(self) {
        for c in self.connections.lock().unwrap().drain(..) {
            c.abort();
        }
    }

    /// Requests received so far.
    pub fn hits(&self) -> usize {
        self.hits.load(Ordering::SeqCst)
    }

    /// Requests received so far on the flaky paths with `key`.
    pub fn seen(&self, key: &str) -> usize {
        self.flaky.lock().unwrap().get(key).copied().unwrap_or(0)
    }
}

impl Drop for Upstream {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// For `/<prefix>/<key>/<n>/<value>`: counts the request under `key` and
/// returns `value` while the count is at most `n`.
fn flaky<T: std::str::FromStr>(flaky: &Flaky, path: &str, prefix: &str) -> Option<T> {
    let mut parts = path.strip_prefix(prefix)?.split('/');
    let (key, n, value) = (parts.next()?, parts.next()?, parts.next()?);
    let n: usize = n.parse().ok()?;
    let value = value.parse().ok()?;
    let mut seen = flaky.lock().unwrap();
    let count = seen.entry(key.to_string()).or_insert(0);
    *count += 1;
    (*count <= n).then_some(value)
}

/// Answers one request as described at the top of this module.
pub(crate) async fn answer(
    req: Request<Incoming>,
    seen: Flaky,
) -> Result<Response<Full<Bytes>>, Infallible> {
    let (head, body) = req.into_parts();
    let path = head.uri.path().to_string();
    if let Some(ms) = path.strip_prefix("/delay/").and_then(|s| s.parse().ok()) {
        tokio::time::sleep(Duration::from_millis(ms)).await;
    }
    if let Some(ms) = flaky::<u64>(&seen, &path, "/flaky-delay/") {
        tokio::time::sleep(Duration::from_millis(ms)).await;
    }
    let failing = flaky::<u16>(&seen, &path, "/flaky/").and_then(|c| StatusCode::from_u16(c).ok());
    let retry_after = failing.and(head.uri.query()).and_then(|query| {
        query
            .split('&')
            .find_map(|param| param.strip_prefix("retry-after="))
            .and_then(|value| http::HeaderValue::from_str(value).ok())
    });
    let status = path
        .strip_prefix("/status/")
        .and_then(|s| s.parse().ok())
        .and_then(|c| StatusCode::from_u16(c).ok())
        .or(failing)
        .unwrap_or(StatusCode::OK);
    // Count the body without keeping it: large bodies stream through.
    let mut body = body;
    let mut body_bytes = 0u64;
    let mut trailers = BTreeMap::new();
    while let Some(frame) = body.frame().await {
        match frame {
            Ok(f) => {
                body_bytes += f.data_ref().map_or(0, |d| d.len() as u64);
                for (k, v) in f.trailers_ref().into_iter().flatten() {
                    trailers.insert(
                        k.to_string(),
                        String::from_utf8_lossy(v.as_bytes()).into_owned(),
                    );
                }
            }
            Err(_) => break,
        }
    }
    let headers: BTreeMap<String, String> = head
        .headers
        .iter()
        .map(|(k, v)| {
            (
                k.to_string(),
                String::from_utf8_lossy(v.as_bytes()).into_owned(),
            )
        })
        .collect();
    let echo = serde_json::json!({
        "method": head.method.as_str(),
        "path": head.uri.path_and_query().map(|p| p.as_str()).unwrap_or("/"),
        "headers": headers,
        "body_bytes": body_bytes,
        "trailers": trailers,
        "version": format!("{:?}", head.version),
    });
    let mut resp = Response::new(Full::new(Bytes::from(echo.to_string())));
    *resp.status_mut() = status;
    resp.headers_mut()
        .insert("content-type", "application/json".parse().unwrap());
    resp.headers_mut()
        .insert("x-upstream", "test".parse().unwrap());
    if let Some(value) = retry_after {
        resp.headers_mut().insert("retry-after", value);
    }
    Ok(resp)
}
