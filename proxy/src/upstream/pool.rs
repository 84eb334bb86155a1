//! A worker's keep-alive connections to upstream endpoints.
//!
//! Thread-local and lock-free: a worker's requests only use connections the
//! worker opened, whose connection tasks run on the same thread. A
//! connection goes back to the list as soon as its response head arrives;
//! HTTP/1 lets a connection carry one exchange at a time, and hyper reports
//! it ready again only once the response body has been read, so taking a
//! connection means taking the first ready one.

use std::cell::RefCell;
use std::collections::HashMap;
use std::time::{Duration, Instant};

use http::uri::Authority;
use http::{HeaderValue, Request, Response, header};
use hyper::body::Incoming;
use hyper::client::conn::http1::{self, SendRequest};
use hyper_util::rt::TokioIo;

use crate::http::ProxyBody;

/// An idle connection older than this is closed rather than reused.
const IDLE_TIMEOUT: Duration = Duration::from_secs(90);
/// Pooled connections tried for one request before opening a new one: a
/// connection the upstream closed while idle fails without sending.
const STALE_TRIES: usize = 4;

/// Connections by endpoint. The endpoints come from the config, not from
/// clients, so a fast hash does (SipHash was 0.8% of a plain proxy's CPU:
/// two lookups per request).
type Endpoints = HashMap<Authority, Vec<Pooled>, foldhash::fast::RandomState>;

thread_local! {
    static POOL: RefCell<Endpoints> = RefCell::new(Endpoints::default());
}

struct Pooled {
    sender: SendRequest<ProxyBody>,
    used: Instant,
}

/// Why no response came back.
#[derive(Debug, thiserror::Error)]
pub enum SendError {
    /// No connection could be opened.
    #[error("{0}")]
    Connect(String),
    /// The connection failed after the request was (maybe) sent.
    #[error("{0}")]
    Exchange(String),
}

/// Sends `request` (origin-form URI) to `endpoint` on a pooled connection,
/// or on a new one opened within `connect_timeout`.
pub async fn send(
    endpoint: &Authority,
    connect_timeout: Duration,
    mut request: Request<ProxyBody>,
) -> Result<Response<Incoming>, SendError> {
    if !request.headers().contains_key(header::HOST)
        && let Ok(host) = HeaderValue::from_str(endpoint.as_str())
    {
        request.headers_mut().insert(header::HOST, host);
    }
    for _ in 0..STALE_TRIES {
        let Some(mut sender) = take_ready(endpoint) else {
            break;
        };
        match sender.try_send_request(request).await {
            Ok(response) => {
                give_back(endpoint, sender);
                return Ok(response);
            }
            Err(mut failed) => match failed.take_message() {
                // Not sent: the connection was closing; try another.
                Some(unsent) => request = unsent,
                None => return Err(SendError::Exchange(error_chain(failed.error()))),
            },
        }
    }
    let mut sender = connect(endpoint, connect_timeout).await?;
    let response = sender
        .send_request(request)
        .await
        .map_err(|e| SendError::Exchange(error_chain(&e)))?;
    give_back(endpoint, sender);
    Ok(response)
}

/// The first ready connection to `endpoint`; closed and expired ones are
/// dropped on the way.
fn take_ready(endpoint: &Authority) -> Option<SendRequest<ProxyBody>> {
    POOL.with_borrow_mut(|pool| {
        let list = pool.get_mut(endpoint)?;
        let now = Instant::now();
        list.retain(|c| !c.sender.is_closed() && now.duration_since(c.used) < IDLE_TIMEOUT);
        let at = list.iter().position(|c| c.sender.is_ready())?;
        Some(list.swap_remove(at).sender)
    })
}

fn give_back(endpoint: &Authority, sender: SendRequest<ProxyBody>) {
    let pooled = Pooled {
        sender,
        used: Instant::now(),
    };
    POOL.with_borrow_mut(|pool| match pool.get_mut(endpoint) {
        Some(list) => list.push(pooled),
        None => {
            pool.insert(endpoint.clone(), vec![pooled]);
        }
    });
}

async fn connect(
    endpoint: &Authority,
    timeout: Duration,
) -> Result<SendRequest<ProxyBody>, SendError> {
    let stream = match tokio::time::timeout(
        timeout,
        tokio::net::TcpStream::connect(endpoint.as_str()),
    )
    .await
    {
        Ok(Ok(stream)) => stream,
        Ok(Err(e)) => return Err(SendError::Connect(format!("tcp connect error: {e}"))),
        Err(_) => {
            return Err(SendError::Connect(format!(
                "tcp connect timed out after {} ms",
                timeout.as_millis()
            )));
        }
    };
    let _ = stream.set_nodelay(true);
    let (sender, connection) = http1::Builder::new()
        .handshake(TokioIo::new(stream))
        .await
        .map_err(|e| SendError::Connect(error_chain(&e)))?;
    let endpoint = endpoint.clone();
    tokio::spawn(async move {
        if let Err(e) = connection.await {
            tracing::debug!(%endpoint, "upstream connection ended: {e}");
        }
    });
    Ok(sender)
}

/// `e` and its sources, `: `-separated.
fn error_chain(e: &dyn std::error::Error) -> String {
    let mut out = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        out.push_str(": ");
        out.push_str(&s.to_string());
        source = s.source();
    }
    out
}
