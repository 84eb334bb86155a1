//! A real gRPC server (tonic, HTTP/2 cleartext) of the test service in
//! `tests/fixtures/echo.proto`, and a client for it.

use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio_stream::{Stream, StreamExt};
use tonic::metadata::MetadataValue;
use tonic::{Request, Response, Status, Streaming};

/// The generated messages, client and server.
pub mod proto {
    tonic::include_proto!("weft.test.echo");
}

use proto::echo_server::{Echo, EchoServer};
use proto::{EchoReply, EchoRequest};

/// A running gRPC server; stops when dropped.
pub struct GrpcEcho {
    /// Its address.
    pub addr: SocketAddr,
    te: Arc<Mutex<Vec<String>>>,
    task: tokio::task::JoinHandle<()>,
}

impl GrpcEcho {
    /// Starts the server on an ephemeral loopback port.
    pub async fn start() -> GrpcEcho {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind gRPC server");
        let addr = listener.local_addr().unwrap();
        let te = Arc::new(Mutex::new(Vec::new()));
        let seen = te.clone();
        let incoming = tokio_stream::wrappers::TcpListenerStream::new(listener);
        let task = tokio::spawn(async move {
            let _ = tonic::transport::Server::builder()
                // The one place tonic shows a call's raw headers.
                .trace_fn(move |req| {
                    let te = req
                        .headers()
                        .get("te")
                        .and_then(|v| v.to_str().ok())
                        .unwrap_or("")
                        .to_string();
                    seen.lock().unwrap().push(te);
                    tracing::Span::none()
                })
                .add_service(EchoServer::new(Service))
                .serve_with_incoming(incoming)
                .await;
        });
        GrpcEcho { addr, te, task }
    }

    /// The `te` header of every call received so far ("" when absent).
    pub fn te_seen(&self) -> Vec<String> {
        self.te.lock().unwrap().clone()
    }
}

impl Drop for GrpcEcho {
    fn drop(&mut self) {
        self.task.abort();
    }
}

struct Service;

type ChatStream = Pin<Box<dyn Stream<Item = Result<EchoReply, Status>> + Send>>;

#[tonic::async_trait]
impl Echo for Service {
    async fn unary(&self, request: Request<EchoRequest>) -> Result<Response<EchoReply>, Status> {
        let request = request.into_inner();
        tokio::time::sleep(Duration::from_millis(request.delay_ms)).await;
        Ok(Response::new(EchoReply {
            message: request.message,
        }))
    }

    type ChatStream = ChatStream;

    async fn chat(
        &self,
        request: Request<Streaming<EchoRequest>>,
    ) -> Result<Response<ChatStream>, Status> {
        let mut incoming = request.into_inner();
        let out = async_stream(move |tx| async move {
            while let Some(next) = incoming.next().await {
                let Ok(message) = next else { return };
                if message.message == "fail" {
                    let mut trailers = tonic::metadata::MetadataMap::new();
                    trailers.insert("x-echo-trailer", MetadataValue::from_static("done"));
                    let _ = tx
                        .send(Err(Status::with_metadata(
                            tonic::Code::Aborted,
                            "asked to fail",
                            trailers,
                        )))
                        .await;
                    return;
                }
                if tx
                    .send(Ok(EchoReply {
                        message: message.message,
                    }))
                    .await
                    .is_err()
                {
                    return;
                }
            }
        });
        Ok(Response::new(out))
    }
}

/// A stream fed by `body` through a channel.
fn async_stream<F, Fut>(body: F) -> ChatStream
where
    F: FnOnce(tokio::sync::mpsc::Sender<Result<EchoReply, Status>>) -> Fut,
    Fut: std::future::Future<Output = ()> + Send + 'static,
{
    let (tx, rx) = tokio::sync::mpsc::channel(8);
    tokio::spawn(body(tx));
    Box::pin(tokio_stream::wrappers::ReceiverStream::new(rx))
}

/// A client of the service at `url` (`http://host:port`), over HTTP/2
/// cleartext.
pub async fn client(url: &str) -> proto::echo_client::EchoClient<tonic::transport::Channel> {
    let channel = tonic::transport::Endpoint::from_shared(url.to_string())
        .expect("a valid URL")
        .connect_timeout(Duration::from_secs(5))
        .connect()
        .await
        .expect("connect the gRPC client");
    proto::echo_client::EchoClient::new(channel)
}

/// A request the service echoes with `message` after `delay_ms`; the
/// message `fail` ends a chat with the service's error status.
pub fn echo(message: &str, delay_ms: u64) -> EchoRequest {
    EchoRequest {
        message: message.into(),
        delay_ms,
    }
}

/// Waits, at most 10 s, for the end of a chat that was sent `fail`, and
/// checks it is the service's: `ABORTED`, "asked to fail", with the trailer
/// `x-echo-trailer: done`. Returns the status, for more checks of its
/// metadata.
pub async fn expect_asked_to_fail(inbound: &mut Streaming<EchoReply>) -> Status {
    let status = tokio::time::timeout(Duration::from_secs(10), inbound.message())
        .await
        .expect("the end within 10 s")
        .expect_err("the call ends with the server's status");
    assert_eq!(status.code(), tonic::Code::Aborted, "{status:?}");
    assert_eq!(status.message(), "asked to fail", "{status:?}");
    assert_eq!(
        status
            .metadata()
            .get("x-echo-trailer")
            .map(|v| v.to_str().unwrap()),
        Some("done"),
        "{status:?}"
    );
    status
}
