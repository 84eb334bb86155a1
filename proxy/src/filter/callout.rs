//! Outbound HTTP calls from filters (`http-call`): only to the authorities
//! a filter module is granted (`filters.<name>.allow_http`), `http://` only,
//! bounded in time and size. The guest sees a blocking call; the calls run
//! on a runtime of their own while the worker waits, and the wait is not
//! counted against the phase's deadline but against the filter's callout
//! budgets (per phase and per request). The `Host` sent is always the
//! granted authority: a filter cannot pick another virtual host behind it.

use std::future::Future;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::sync::OnceLock;
use std::time::Duration;

use bytes::Bytes;
use http::header::HOST;
use http::uri::{Authority, Scheme};
use http::{HeaderName, HeaderValue, Method, Request, Uri};
use http_body_util::{BodyExt, Full, Limited};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;

use super::bindings::weft::filter::host::{HttpRequest, HttpResponse};

/// Largest callout response body.
pub const MAX_RESPONSE_BYTES: usize = 4 * 1024 * 1024;
const DEFAULT_TIMEOUT: Duration = Duration::from_secs(5);
const MAX_TIMEOUT: Duration = Duration::from_secs(60);

type CalloutClient = Client<HttpConnector, Full<Bytes>>;

/// The callouts one filter module may make.
pub struct Callouts {
    allowed: Vec<Authority>,
    client: CalloutClient,
}

impl Callouts {
    /// Callouts to `allowed` authorities only.
    pub fn new(allowed: Vec<Authority>) -> Self {
        let mut connector = HttpConnector::new();
        connector.set_nodelay(true);
        connector.set_connect_timeout(Some(Duration::from_secs(2)));
        Self {
            allowed,
            client: Client::builder(TokioExecutor::new()).build(connector),
        }
    }

    /// Whether `authority` (`host:port`) is one of the granted ones.
    pub fn allows(&self, authority: &str) -> bool {
        let Ok(authority) = authority.parse::<Authority>() else {
            return false;
        };
        self.allowed.iter().any(|a| {
            a.host().eq_ignore_ascii_case(authority.host()) && a.port_u16() == authority.port_u16()
        })
    }

    /// Performs `request`, blocking this thread until it is answered or
    /// for `max_wait` at most.
    pub fn call(
        &self,
        request: HttpRequest,
        filter: &str,
        max_wait: Duration,
    ) -> Result<HttpResponse, String> {
        let (req, timeout) = self.prepare(request, filter)?;
        let timeout = timeout.min(max_wait);
        let fetch = |client: CalloutClient| async move {
            let exchange = async {
                let resp = client.request(req).await.map_err(|e| format!("{e:#}"))?;
                let (head, body) = resp.into_parts();
                let body = Limited::new(body, MAX_RESPONSE_BYTES)
                    .collect()
                    .await
                    .map_err(|e| format!("reading the body: {e}"))?
                    .to_bytes();
                Ok::<_, String>(HttpResponse {
                    status: head.status.as_u16(),
                    headers: head
                        .headers
                        .iter()
                        .map(|(k, v)| {
                            (
                                k.to_string(),
                                String::from_utf8_lossy(v.as_bytes()).into_owned(),
                            )
                        })
                        .collect(),
                    body: body.to_vec(),
                })
            };
            tokio::time::timeout(timeout, exchange)
                .await
                .map_err(|_| format!("timed out after {} ms", timeout.as_millis()))?
        };
        block_on(&self.client, fetch)
    }

    /// Whether `grant` is one of `addrs` (the proxy's own listeners): the
    /// same port, and the same IP, or `localhost` or a loopback IP for an
    /// address on `0.0.0.0`/`::`. Port 0 (a port picked at bind) and host
    /// names other than `localhost` (not resolved) never match.
    pub fn points_at(grant: &Authority, addrs: &[SocketAddr]) -> bool {
        let Some(port) = grant.port_u16() else {
            return false;
        };
        let host = grant.host().trim_start_matches('[').trim_end_matches(']');
        let ips: Vec<IpAddr> = if host.eq_ignore_ascii_case("localhost") {
            vec![Ipv4Addr::LOCALHOST.into(), Ipv6Addr::LOCALHOST.into()]
        } else {
            host.parse().into_iter().collect()
        };
        addrs.iter().any(|addr| {
            addr.port() == port
                && port != 0
                && ips.iter().any(|ip| {
                    addr.ip() == *ip
                        || (addr.ip().is_unspecified() && (ip.is_loopback() || ip.is_unspecified()))
                })
        })
    }

    fn prepare(
        &self,
        r: HttpRequest,
        filter: &str,
    ) -> Result<(Request<Full<Bytes>>, Duration), String> {
        let uri: Uri = r
            .url
            .parse()
            .map_err(|e| format!("invalid URL {:?}: {e}", r.url))?;
        if uri.scheme() != Some(&Scheme::HTTP) {
            return Err(format!("only http:// URLs are supported, not {:?}", r.url));
        }
        let authority = uri
            .authority()
            .ok_or_else(|| format!("invalid URL {:?}: no host", r.url))?;
        let port = authority.port_u16().unwrap_or(80);
        let Some(granted) = self.allowed.iter().find(|a| {
            a.host().eq_ignore_ascii_case(authority.host()) && a.port_u16() == Some(port)
        }) else {
            return Err(format!(
                "{}:{port} is not allowed: add it to filters.{filter}.allow_http",
                authority.host()
            ));
        };
        let host = HeaderValue::from_str(granted.as_str()).map_err(|e| e.to_string())?;
        let method = Method::from_bytes(r.method.as_bytes())
            .map_err(|_| format!("invalid method {:?}", r.method))?;
        let mut req = Request::builder().method(method).uri(uri);
        for (name, value) in &r.headers {
            let n = HeaderName::from_bytes(name.as_bytes())
                .map_err(|_| format!("invalid header name {name:?}"))?;
            let v = HeaderValue::from_str(value)
                .map_err(|_| format!("invalid value for header {name:?}"))?;
            if n != HOST {
                req = req.header(n, v);
            }
        }
        req = req.header(HOST, host);
        let req = req
            .body(Full::new(Bytes::from(r.body)))
            .map_err(|e| e.to_string())?;
        let timeout = match r.timeout_ms {
            0 => DEFAULT_TIMEOUT,
            ms => Duration::from_millis(ms.into()).min(MAX_TIMEOUT),
        };
        Ok((req, timeout))
    }
}

/// Runs the future built by `make` to completion from synchronous code, on
/// the callout runtime (one thread of its own, started on first use, whose
/// pooled connections serve every call). The calling worker waits blocked:
/// its other requests wait too, which is why filters cache what they fetch.
fn block_on<F, Fut>(client: &CalloutClient, make: F) -> Result<HttpResponse, String>
where
    F: FnOnce(CalloutClient) -> Fut,
    Fut: Future<Output = Result<HttpResponse, String>> + Send + 'static,
{
    static RUNTIME: OnceLock<Result<tokio::runtime::Runtime, String>> = OnceLock::new();
    let runtime = RUNTIME
        .get_or_init(|| {
            tokio::runtime::Builder::new_multi_thread()
                .worker_threads(1)
                .thread_name("weft-callout")
                .enable_all()
                .build()
                .map_err(|e| e.to_string())
        })
        .as_ref()
        .map_err(|e| format!("cannot start the callout runtime: {e}"))?;
    let call = make(client.clone());
    let (answer, answered) = std::sync::mpsc::sync_channel(1);
    runtime.spawn(async move {
        let _ = answer.send(call.await);
    });
    answered
        .recv()
        .unwrap_or_else(|_| Err("the call panicked".to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn points_at(grant: &str, addrs: &[&str]) -> bool {
        let addrs: Vec<SocketAddr> = addrs.iter().map(|a| a.parse().unwrap()).collect();
        Callouts::points_at(&grant.parse().unwrap(), &addrs)
    }

    #[test]
    fn a_grant_points_at_a_listener_on_its_ip_or_any_address() {
        assert!(points_at("127.0.0.1:8080", &["127.0.0.1:8080"]));
        assert!(points_at("localhost:8080", &["127.0.0.1:8080"]));
        assert!(points_at("[::1]:8080", &["0.0.0.0:8080", "[::]:9"]));
        assert!(points_at("127.0.0.2:8080", &["0.0.0.0:8080"]));
        assert!(!points_at("127.0.0.1:8081", &["127.0.0.1:8080"]));
        assert!(!points_at("10.0.0.5:8080", &["0.0.0.0:8080"]));
        assert!(!points_at("auth.internal:8080", &["0.0.0.0:8080"]));
        assert!(!points_at("127.0.0.1:0", &["127.0.0.1:0"]));
    }
}
