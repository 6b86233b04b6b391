//! The gallery's live counter: how many pages have the gallery open now, pushed over a
//! WebSocket to each of them, so the demo shows a WebSocket passing through the gateway.

use futures_util::{SinkExt, StreamExt};
use http::header::{self, HeaderValue};
use http::{Request, Response, StatusCode};
use hyper::body::Incoming;
use hyper_util::rt::TokioIo;
use tokio::sync::watch;
use tokio_tungstenite::WebSocketStream;
use tokio_tungstenite::tungstenite::handshake::derive_accept_key;
use tokio_tungstenite::tungstenite::protocol::Role;
use tokio_tungstenite::tungstenite::{Error as WsError, Message};

use crate::body::{ResponseBody, empty, full};

/// How many pages are watching, and every open socket's way to hear of a change.
pub struct LiveCounter {
    watching: watch::Sender<usize>,
}

impl Default for LiveCounter {
    fn default() -> Self {
        Self {
            watching: watch::Sender::new(0),
        }
    }
}

impl LiveCounter {
    /// Answers a WebSocket handshake: `101`, then the count, sent again on every change until
    /// the page goes. Anything but a handshake gets `426`.
    pub fn answer(&self, mut request: Request<Incoming>) -> Response<ResponseBody> {
        let is_websocket = request
            .headers()
            .get(header::UPGRADE)
            .and_then(|v| v.to_str().ok())
            .is_some_and(|v| v.eq_ignore_ascii_case("websocket"));
        let Some(key) = request.headers().get(header::SEC_WEBSOCKET_KEY) else {
            return upgrade_required();
        };
        if !is_websocket {
            return upgrade_required();
        }
        let accept = derive_accept_key(key.as_bytes());
        let upgrade = hyper::upgrade::on(&mut request);
        let watching = self.watching.clone();
        tokio::spawn(async move {
            let Ok(upgraded) = upgrade.await else {
                return;
            };
            let socket =
                WebSocketStream::from_raw_socket(TokioIo::new(upgraded), Role::Server, None).await;
            let changes = watching.subscribe();
            watching.send_modify(|n| *n += 1);
            let _ = push_counts(socket, changes).await;
            watching.send_modify(|n| *n = n.saturating_sub(1));
        });
        let mut response = Response::new(empty());
        *response.status_mut() = StatusCode::SWITCHING_PROTOCOLS;
        let headers = response.headers_mut();
        headers.insert(header::UPGRADE, HeaderValue::from_static("websocket"));
        headers.insert(header::CONNECTION, HeaderValue::from_static("upgrade"));
        if let Ok(accept) = HeaderValue::try_from(accept) {
            headers.insert(header::SEC_WEBSOCKET_ACCEPT, accept);
        }
        response
    }
}

/// Sends the count now and after each change, until the page closes the socket.
async fn push_counts<S>(
    mut socket: WebSocketStream<S>,
    mut changes: watch::Receiver<usize>,
) -> Result<(), WsError>
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin,
{
    loop {
        let count = *changes.borrow_and_update();
        socket.send(Message::text(count.to_string())).await?;
        tokio::select! {
            changed = changes.changed() => {
                if changed.is_err() {
                    return Ok(());
                }
            }
            incoming = socket.next() => match incoming {
                None | Some(Err(_) | Ok(Message::Close(_))) => return Ok(()),
                Some(Ok(_)) => {}
            },
        }
    }
}

fn upgrade_required() -> Response<ResponseBody> {
    let mut response = Response::new(full("a WebSocket endpoint\n"));
    *response.status_mut() = StatusCode::UPGRADE_REQUIRED;
    response
}
