//! The upstream of `weft filter test`: a loopback HTTP/1.1 server that
//! answers each request with the running case's response for that attempt
//! and records what it received.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

use bytes::Bytes;
use http::{HeaderName, HeaderValue, Request, Response, StatusCode};
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;

use super::cases::{Received, Upstream};

/// What the running case's upstream answers, and what it received.
#[derive(Default)]
struct State {
    answers: Option<Arc<Upstream>>,
    received: Vec<Received>,
}

/// The server, serving on its own task.
#[derive(Clone)]
pub struct TestUpstream {
    pub addr: SocketAddr,
    state: Arc<Mutex<State>>,
}

impl TestUpstream {
    /// Binds 127.0.0.1:0 and serves on the current runtime.
    pub async fn start() -> std::io::Result<TestUpstream> {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
        let upstream = TestUpstream {
            addr: listener.local_addr()?,
            state: Arc::default(),
        };
        let state = upstream.state.clone();
        tokio::spawn(async move {
            while let Ok((stream, _)) = listener.accept().await {
                let state = state.clone();
                tokio::spawn(async move {
                    let service = service_fn(move |req| answer(state.clone(), req));
                    let _ = hyper::server::conn::http1::Builder::new()
                        .serve_connection(TokioIo::new(stream), service)
                        .await;
                });
            }
        });
        Ok(upstream)
    }

    /// Starts a case: these answers, nothing received yet.
    pub fn begin(&self, answers: Arc<Upstream>) {
        let mut state = self.state.lock().unwrap();
        state.answers = Some(answers);
        state.received.clear();
    }

    /// What the upstream received since [`TestUpstream::begin`].
    pub fn received(&self) -> Vec<Received> {
        self.state.lock().unwrap().received.clone()
    }
}

async fn answer(
    state: Arc<Mutex<State>>,
    req: Request<Incoming>,
) -> Result<Response<Full<Bytes>>, Infallible> {
    let (head, body) = req.into_parts();
    let body = body
        .collect()
        .await
        .map(|b| b.to_bytes().to_vec())
        .unwrap_or_default();
    let answers = {
        let mut state = state.lock().unwrap();
        let attempt = state.received.len();
        state.received.push(Received {
            method: head.method.to_string(),
            path: head
                .uri
                .path_and_query()
                .map_or("/".into(), |p| p.to_string()),
            headers: head.headers,
            body,
        });
        state
            .answers
            .as_ref()
            .map(|a| a.response(attempt).clone())
            .unwrap_or_default()
    };
    let mut resp = Response::new(Full::new(Bytes::from(answers.body)));
    *resp.status_mut() = StatusCode::from_u16(answers.status).unwrap_or(StatusCode::OK);
    for (name, values) in &answers.headers {
        let Ok(name) = HeaderName::from_bytes(name.as_bytes()) else {
            continue;
        };
        for value in values.all() {
            if let Ok(value) = HeaderValue::from_str(value) {
                resp.headers_mut().append(name.clone(), value);
            }
        }
    }
    Ok(resp)
}
