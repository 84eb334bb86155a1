//! A real WebSocket echo server and client (tokio-tungstenite).

use std::net::SocketAddr;
use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use tokio::net::TcpListener;
use tokio_tungstenite::tungstenite::{Error, Message};

/// A WebSocket server echoing every text and binary message; stops when
/// dropped.
pub struct WsEcho {
    /// Its address.
    pub addr: SocketAddr,
    task: tokio::task::JoinHandle<()>,
}

impl WsEcho {
    /// Starts the server on an ephemeral loopback port.
    pub async fn start() -> WsEcho {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind ws");
        let addr = listener.local_addr().unwrap();
        let task = tokio::spawn(async move {
            loop {
                let Ok((stream, _)) = listener.accept().await else {
                    continue;
                };
                tokio::spawn(async move {
                    let Ok(mut ws) = tokio_tungstenite::accept_async(stream).await else {
                        return;
                    };
                    while let Some(Ok(message)) = ws.next().await {
                        let echo = match message {
                            Message::Text(_) | Message::Binary(_) => message,
                            Message::Close(_) => break,
                            _ => continue,
                        };
                        if ws.send(echo).await.is_err() {
                            break;
                        }
                    }
                });
            }
        });
        WsEcho { addr, task }
    }
}

impl Drop for WsEcho {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// Opens a WebSocket to `url` (`ws://…`), sends each message in turn and
/// reads its echo (10 s bound per step). A refused handshake is
/// `Err((status, body))`.
pub async fn roundtrip(url: &str, messages: &[&str]) -> Result<Vec<String>, (u16, String)> {
    const BOUND: Duration = Duration::from_secs(10);
    let connected = tokio::time::timeout(BOUND, tokio_tungstenite::connect_async(url))
        .await
        .expect("a WebSocket handshake answer within 10 s");
    let mut ws = match connected {
        Ok((ws, _)) => ws,
        Err(Error::Http(response)) => {
            let status = response.status().as_u16();
            let body = response
                .body()
                .as_deref()
                .map(|b| String::from_utf8_lossy(b).into_owned())
                .unwrap_or_default();
            return Err((status, body));
        }
        Err(e) => panic!("WebSocket handshake with {url} failed: {e}"),
    };
    let mut echoes = Vec::new();
    for m in messages {
        ws.send(Message::text(m.to_string())).await.expect("send");
        let echo = tokio::time::timeout(BOUND, ws.next())
            .await
            .expect("an echo within 10 s")
            .expect("the connection stays open")
            .expect("a message");
        echoes.push(echo.into_text().expect("text").to_string());
    }
    let _ = ws.close(None).await;
    Ok(echoes)
}
