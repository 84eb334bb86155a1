//! Accepting connections and serving HTTP/1.1 and HTTP/2 (prior knowledge,
//! h2c) on them, or TLS with ALPN when the listener has a `tls:` block
//! ([`crate::tls`]); every request goes to [`Proxy::handle`].
//!
//! Every connection is bounded ([`Connections`], from `limits:`): a cap per
//! worker (past it the worker stops accepting and the kernel queues), a
//! first-bytes timeout covering HTTP/1 vs HTTP/2 detection, an idle timeout
//! when no request is in flight, a write-progress timeout ([`WriteBounded`])
//! and the drain on shutdown (graceful shutdown: `Connection: close` on
//! HTTP/1, GOAWAY on HTTP/2).

mod conn;

use std::net::SocketAddr;
use std::sync::Arc;

use http::HeaderValue;
use hyper::service::service_fn;
use tokio::net::TcpListener;

use crate::proxy::Proxy;
use crate::tls::TlsPeer;

pub use conn::{Activity, Connections, Drain, InFlight, WriteBounded};

/// The client at the other end of a connection, its address formatted once
/// per connection: every request on it adds the IP to `x-forwarded-for`,
/// and filters read both as properties, and the TLS parameters and client
/// certificate read once at the handshake.
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
    /// The connection's TLS, on a TLS listener.
    pub tls: Option<Box<TlsPeer>>,
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
            tls: None,
        }
    }

    /// The client at `addr` over TLS.
    pub fn with_tls(addr: SocketAddr, tls: TlsPeer) -> Self {
        Peer {
            tls: Some(Box::new(tls)),
            ..Peer::new(addr)
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

/// Accepts connections on `listener` until the drain starts, serving
/// listener number `index` of the current snapshot.
pub async fn serve(
    listener: TcpListener,
    index: usize,
    proxy: Arc<Proxy>,
    conns: Arc<Connections>,
) {
    let tls_of = proxy.clone();
    let tls = move || {
        let snapshot = tls_of.snapshot.load();
        let tls = snapshot.listeners.get(index)?.tls.as_ref()?;
        Some(tls.server_config())
    };
    conns
        .accept_loop(listener, tls, move |peer, activity| {
            let proxy = proxy.clone();
            service_fn(move |req| {
                proxy
                    .clone()
                    .handle(index, peer.clone(), req, activity.begin())
            })
        })
        .await;
}
