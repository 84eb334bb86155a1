//! Accepting connections and serving HTTP/1.1 and HTTP/2 (prior knowledge,
//! h2c) on them; every request goes to [`Proxy::handle`].

use std::net::SocketAddr;
use std::sync::Arc;

use http::HeaderValue;
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use tokio::net::TcpListener;

use crate::proxy::Proxy;

/// The client at the other end of a connection, its address formatted once
/// per connection: every request on it adds the IP to `x-forwarded-for`,
/// and filters read both as properties.
#[derive(Debug)]
pub struct Peer {
    /// The address.
    pub addr: SocketAddr,
    /// `ip:port`, as property `peer.address`.
    pub address: String,
    /// The IP alone, as property `peer.ip`.
    pub ip: String,
    /// The IP as a header value, for `x-forwarded-for`.
    pub ip_header: HeaderValue,
}

impl Peer {
    /// The client at `addr`.
    pub fn new(addr: SocketAddr) -> Self {
        let ip = addr.ip().to_string();
        Peer {
            addr,
            address: addr.to_string(),
            ip_header: HeaderValue::from_str(&ip).expect("an IP address is a valid header value"),
            ip,
        }
    }
}

/// Pending connections the kernel queues per listening socket.
const BACKLOG: i32 = 1024;

/// Binds `count` listening sockets to `addr` with `SO_REUSEPORT`, one per
/// worker, so the kernel spreads new connections over the workers. Port 0
/// picks one port for all of them (the caller logs it).
pub fn bind(addr: SocketAddr, count: usize) -> std::io::Result<Vec<std::net::TcpListener>> {
    let first = bind_one(addr)?;
    let bound = first.local_addr()?;
    let mut sockets = vec![first];
    for _ in 1..count {
        sockets.push(bind_one(bound)?);
    }
    Ok(sockets)
}

fn bind_one(addr: SocketAddr) -> std::io::Result<std::net::TcpListener> {
    use socket2::{Domain, Socket, Type};
    let socket = Socket::new(Domain::for_address(addr), Type::STREAM, None)?;
    socket.set_reuse_address(true)?;
    socket.set_reuse_port(true)?;
    socket.set_nonblocking(true)?;
    socket.bind(&addr.into())?;
    socket.listen(BACKLOG)?;
    Ok(socket.into())
}

/// Accepts connections on `listener` forever, serving listener number
/// `index` of the current snapshot.
pub async fn serve(listener: TcpListener, index: usize, proxy: Arc<Proxy>) {
    let mut builder = auto::Builder::new(TokioExecutor::new());
    builder
        .http1()
        .timer(TokioTimer::new())
        .header_read_timeout(std::time::Duration::from_secs(30))
        .max_buf_size(64 * 1024);
    builder
        .http2()
        .timer(TokioTimer::new())
        .max_concurrent_streams(1024);
    let builder = Arc::new(builder);
    loop {
        let (stream, addr) = match listener.accept().await {
            Ok(accepted) => accepted,
            Err(e) => {
                // Out of file descriptors and the like: back off, keep serving.
                tracing::warn!("accept failed: {e}");
                tokio::time::sleep(std::time::Duration::from_millis(50)).await;
                continue;
            }
        };
        let _ = stream.set_nodelay(true);
        let proxy = proxy.clone();
        let builder = builder.clone();
        tokio::spawn(async move {
            let peer = Arc::new(Peer::new(addr));
            let service = service_fn(move |req| proxy.clone().handle(index, peer.clone(), req));
            if let Err(e) = builder
                .serve_connection(TokioIo::new(stream), service)
                .await
            {
                tracing::debug!(peer = %addr, "connection ended: {e}");
            }
        });
    }
}
