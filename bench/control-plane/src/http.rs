//! One HTTP/1.1 keep-alive connection to a proxy, with hyper's low-level
//! client: no pool and no retries, so every failed request is seen (a
//! pooled client would silently resend a request whose connection closed).

use std::net::SocketAddr;
use std::time::Duration;

use anyhow::{Context, bail};
use bytes::Bytes;
use http_body_util::{BodyExt, Empty};
use hyper::client::conn::http1::{SendRequest, handshake};
use hyper_util::rt::TokioIo;

/// The header whose value tells which configuration answered.
pub const VERSION_HEADER: &str = "x-version";

/// The longest a request may take before it counts as failed.
const TIMEOUT: Duration = Duration::from_secs(5);

/// What one request saw.
pub struct Answer {
    pub status: u16,
    /// The value of [`VERSION_HEADER`], if any.
    pub version: Option<String>,
}

/// A keep-alive connection.
pub struct Conn {
    addr: SocketAddr,
    sender: SendRequest<Empty<Bytes>>,
}

impl Conn {
    pub async fn connect(addr: SocketAddr) -> anyhow::Result<Conn> {
        let stream = tokio::time::timeout(TIMEOUT, tokio::net::TcpStream::connect(addr))
            .await
            .with_context(|| format!("connect to {addr}: timed out"))?
            .with_context(|| format!("connect to {addr}"))?;
        stream.set_nodelay(true)?;
        let (sender, connection) = handshake(TokioIo::new(stream)).await?;
        tokio::spawn(async move {
            let _ = connection.await;
        });
        Ok(Conn { addr, sender })
    }

    /// `GET path`, the whole body read. An error means the connection is
    /// no longer usable.
    pub async fn get(&mut self, path: &str) -> anyhow::Result<Answer> {
        let request = hyper::Request::get(path)
            .header(hyper::header::HOST, self.addr.to_string())
            .body(Empty::<Bytes>::new())?;
        let exchange = async {
            self.sender.ready().await?;
            let response = self.sender.send_request(request).await?;
            let status = response.status().as_u16();
            let version = response
                .headers()
                .get(VERSION_HEADER)
                .and_then(|v| v.to_str().ok())
                .map(str::to_string);
            response.into_body().collect().await?;
            anyhow::Ok(Answer { status, version })
        };
        match tokio::time::timeout(TIMEOUT, exchange).await {
            Ok(answer) => answer,
            Err(_) => bail!("no answer from {} within {TIMEOUT:?}", self.addr),
        }
    }
}
