//! `weft-demo-upstream`: an HTTP/1.1 server that answers every request with
//! a 200 JSON echo of it:
//!
//! ```json
//! {"upstream":"demo","method":"GET","path":"/a?b=c","headers":{"host":"…"},"body_bytes":0}
//! ```
//!
//! A header sent several times appears once, its values joined with `, `.
//!
//! With `--h2c` it also speaks HTTP/2 cleartext with prior knowledge on the
//! same port (told apart by the connection's first bytes): an upstream for
//! a `protocol: http2` cluster.

use std::convert::Infallible;
use std::net::SocketAddr;

use anyhow::Context;
use clap::Parser;
use http_body_util::{BodyExt, Full};
use hyper::body::{Bytes, Incoming};
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper::{Request, Response};
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto;
use serde::{Serialize, Serializer};
use tokio::net::TcpListener;

/// Echoes every request as JSON.
#[derive(Parser)]
#[command(version, about)]
struct Args {
    /// The address to listen on (port 0 picks a free port; the address is
    /// printed).
    #[arg(long, default_value = "127.0.0.1:9000")]
    listen: SocketAddr,
    /// Also serve HTTP/2 cleartext (prior knowledge) on the same port.
    #[arg(long)]
    h2c: bool,
}

#[tokio::main(flavor = "current_thread")]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let listener = TcpListener::bind(args.listen)
        .await
        .with_context(|| format!("cannot listen on {}", args.listen))?;
    println!("demo upstream listening on {}", listener.local_addr()?);
    loop {
        let (stream, _) = match listener.accept().await {
            Ok(accepted) => accepted,
            Err(err) => {
                eprintln!("demo upstream: accept failed: {err}");
                continue;
            }
        };
        let h2c = args.h2c;
        tokio::spawn(async move {
            let service = service_fn(echo);
            let io = TokioIo::new(stream);
            let served = if h2c {
                auto::Builder::new(TokioExecutor::new())
                    .serve_connection(io, service)
                    .await
            } else {
                http1::Builder::new()
                    .serve_connection(io, service)
                    .await
                    .map_err(Into::into)
            };
            if let Err(err) = served {
                eprintln!("demo upstream: connection error: {err}");
            }
        });
    }
}

/// Answers `request` with its JSON echo.
async fn echo(request: Request<Incoming>) -> Result<Response<Full<Bytes>>, Infallible> {
    let (parts, body) = request.into_parts();
    let body_bytes = match body.collect().await {
        Ok(collected) => collected.to_bytes().len(),
        Err(err) => {
            eprintln!("demo upstream: reading the request body failed: {err}");
            0
        }
    };
    let headers = parts
        .headers
        .keys()
        .map(|name| {
            let values: Vec<&str> = parts
                .headers
                .get_all(name)
                .iter()
                .map(|value| value.to_str().unwrap_or("<non-ascii>"))
                .collect();
            (name.as_str(), values.join(", "))
        })
        .collect();
    let echo = Echo {
        upstream: "demo",
        method: parts.method.as_str(),
        path: parts.uri.path_and_query().map_or("/", |path| path.as_str()),
        headers: Headers(headers),
        body_bytes,
    };
    let body = serde_json::to_vec(&echo).expect("an echo always serialises");
    let response = Response::builder()
        .status(200)
        .header("content-type", "application/json")
        .body(Full::new(Bytes::from(body)))
        .expect("a static status and header are valid");
    Ok(response)
}

/// The JSON answer, fields in this order.
#[derive(Serialize)]
struct Echo<'a> {
    upstream: &'static str,
    method: &'a str,
    path: &'a str,
    headers: Headers<'a>,
    body_bytes: usize,
}

/// Headers as a JSON object, in the order they arrived.
struct Headers<'a>(Vec<(&'a str, String)>);

impl Serialize for Headers<'_> {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_map(self.0.iter().map(|(name, value)| (name, value)))
    }
}
