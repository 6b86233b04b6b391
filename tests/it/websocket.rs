//! WebSockets through a site route: a real client and a real echo server (tokio-tungstenite)
//! on either side of the gateway.

use crate::support;

use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use support::*;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::handshake::server::{Request, Response};

/// A WebSocket echo server on 127.0.0.1; each handshake's request head is recorded.
#[allow(clippy::result_large_err)] // tungstenite's handshake callback returns its own error type
async fn echo_site() -> (std::net::SocketAddr, Arc<Mutex<Vec<http::HeaderMap>>>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("addr");
    let heads = Arc::new(Mutex::new(Vec::new()));
    let recorded = Arc::clone(&heads);
    tokio::spawn(async move {
        while let Ok((stream, _)) = listener.accept().await {
            let heads = Arc::clone(&recorded);
            tokio::spawn(async move {
                let record = |request: &Request, response: Response| {
                    heads.lock().expect("heads").push(request.headers().clone());
                    Ok(response)
                };
                let Ok(mut ws) = tokio_tungstenite::accept_hdr_async(stream, record).await else {
                    return;
                };
                while let Some(Ok(message)) = ws.next().await {
                    if message.is_close() {
                        break;
                    }
                    if ws.send(message).await.is_err() {
                        break;
                    }
                }
            });
        }
    });
    (addr, heads)
}

fn site_route(origin: std::net::SocketAddr, extra: &str) -> String {
    format!(
        "{SIGNING}[[route]]\nname = \"site\"\nprefix = \"/\"\nmode = \"site\"\nupstream = \"http://{origin}\"\n{extra}\n"
    )
}

async fn connect(gateway: &TestGateway) -> tokio_tungstenite::WebSocketStream<TcpStream> {
    let stream = TcpStream::connect(gateway.addr).await.expect("connects");
    let (ws, response) =
        tokio_tungstenite::client_async(format!("ws://{}/live", gateway.addr), stream)
            .await
            .expect("the handshake goes through the gateway");
    assert_eq!(response.status(), http::StatusCode::SWITCHING_PROTOCOLS);
    ws
}

#[tokio::test]
async fn a_websocket_echoes_through_a_site_route_and_frees_its_slot_when_closed() {
    let (origin, heads) = echo_site().await;
    let gateway = TestGateway::start(&site_route(origin, "")).await;
    let slots = gateway.state.request_slots.available_permits();
    let mut ws = connect(&gateway).await;
    for text in ["hello", "signgate", &"x".repeat(100_000)] {
        ws.send(Message::text(text)).await.expect("send");
        let echoed = tokio::time::timeout(Duration::from_secs(5), ws.next())
            .await
            .expect("in time")
            .expect("a message")
            .expect("not an error");
        assert_eq!(echoed, Message::text(text));
    }
    ws.send(Message::binary(vec![0u8, 159, 146, 150]))
        .await
        .expect("send");
    let echoed = ws.next().await.expect("a message").expect("ok");
    assert_eq!(echoed, Message::binary(vec![0u8, 159, 146, 150]));
    assert_eq!(
        gateway.state.request_slots.available_permits(),
        slots - 1,
        "the open WebSocket holds a request slot"
    );
    {
        let heads = heads.lock().expect("heads");
        let head = &heads[0];
        assert_eq!(head["upgrade"], "websocket");
        assert!(
            head["connection"]
                .to_str()
                .expect("ascii")
                .contains("upgrade")
        );
        assert!(head.contains_key("sec-websocket-key"));
        assert!(
            head.contains_key("x-forwarded-for"),
            "forwarded like any request"
        );
    }
    ws.close(None).await.expect("close");
    while ws.next().await.is_some() {}
    let deadline = std::time::Instant::now() + Duration::from_secs(5);
    while gateway.state.request_slots.available_permits() < slots {
        assert!(std::time::Instant::now() < deadline, "the slot came back");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test]
async fn a_silent_websocket_is_closed_after_websocket_idle_timeout() {
    let (origin, _) = echo_site().await;
    let gateway = TestGateway::start(&site_route(origin, "websocket_idle_timeout = \"1s\"")).await;
    let mut ws = connect(&gateway).await;
    ws.send(Message::text("still here")).await.expect("send");
    assert!(ws.next().await.is_some());
    let started = std::time::Instant::now();
    // Nothing either way: the gateway closes both sides.
    let ended = tokio::time::timeout(Duration::from_secs(5), async {
        while let Some(Ok(_)) = ws.next().await {}
    })
    .await;
    assert!(ended.is_ok(), "closed within 5 s");
    let took = started.elapsed();
    assert!(
        took >= Duration::from_millis(900) && took < Duration::from_secs(3),
        "{took:?}"
    );
}

#[tokio::test]
async fn other_upgrades_and_switched_off_websockets_reach_the_site_as_plain_requests() {
    let seen = Arc::new(Mutex::new(Vec::<http::HeaderMap>::new()));
    let origin = {
        let seen = Arc::clone(&seen);
        start_origin(Arc::new(move |parts, _| {
            seen.lock().expect("seen").push(parts.headers);
            respond(200, &[("content-type", "text/plain")], "plain")
        }))
        .await
    };
    let ask = |addr, upgrade: &'static str| async move {
        let mut stream = TcpStream::connect(addr).await.expect("connects");
        let head = format!(
            "GET / HTTP/1.1\r\nHost: gw\r\nConnection: Upgrade, HTTP2-Settings\r\nUpgrade: {upgrade}\r\nHTTP2-Settings: AAMAAABkAAQAAP__\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n"
        );
        stream.write_all(head.as_bytes()).await.expect("head");
        let mut answer = vec![0u8; 4096];
        let n = tokio::time::timeout(Duration::from_secs(5), stream.read(&mut answer))
            .await
            .expect("in time")
            .expect("read");
        String::from_utf8_lossy(&answer[..n]).into_owned()
    };
    let gateway = TestGateway::start(&site_route(origin, "")).await;
    let answer = ask(gateway.addr, "h2c").await;
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
    let off = TestGateway::start(&site_route(origin, "websockets = false")).await;
    let answer = ask(off.addr, "websocket").await;
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
    for head in seen.lock().expect("seen").iter() {
        assert!(!head.contains_key("upgrade"), "{head:?}");
        assert!(!head.contains_key("http2-settings"), "{head:?}");
    }
}

#[test]
fn an_idle_timeout_with_websockets_off_is_a_config_error() {
    let toml = site_route(
        "127.0.0.1:9".parse().expect("addr"),
        "websockets = false\nwebsocket_idle_timeout = \"1m\"",
    );
    let error = signgate::config::Config::from_toml_str(&toml, |_| Some(SECRET.into()))
        .expect_err("refused")
        .to_string();
    assert!(error.contains("websocket_idle_timeout"), "{error}");
}

/// RFC 8441: an HTTP/2 client opens a WebSocket with an extended `CONNECT` on one stream; the
/// site sees an ordinary HTTP/1.1 handshake.
#[tokio::test]
async fn a_websocket_over_http2_extended_connect_echoes_through() {
    let (origin, heads) = echo_site().await;
    let gateway = TestGateway::start(&site_route(origin, "")).await;
    let stream = TcpStream::connect(gateway.addr).await.expect("connects");
    let (mut sender, connection) =
        hyper::client::conn::http2::Builder::new(hyper_util::rt::TokioExecutor::new())
            .handshake(hyper_util::rt::TokioIo::new(stream))
            .await
            .expect("h2 handshake");
    tokio::spawn(connection);
    // The server's SETTINGS must allow extended CONNECT before the client may use it.
    tokio::time::sleep(Duration::from_millis(100)).await;
    let mut request = http::Request::connect(format!("http://{}/live", gateway.addr))
        .header("sec-websocket-version", "13")
        .body(http_body_util::Empty::<bytes::Bytes>::new())
        .expect("request");
    request
        .extensions_mut()
        .insert(hyper::ext::Protocol::from_static("websocket"));
    let mut response = sender.send_request(request).await.expect("an answer");
    assert_eq!(response.status(), http::StatusCode::OK, "{response:?}");
    assert!(!response.headers().contains_key("sec-websocket-accept"));
    let upgraded = hyper::upgrade::on(&mut response).await.expect("the stream");
    let mut ws = tokio_tungstenite::WebSocketStream::from_raw_socket(
        hyper_util::rt::TokioIo::new(upgraded),
        tokio_tungstenite::tungstenite::protocol::Role::Client,
        None,
    )
    .await;
    for text in ["over", "h2"] {
        ws.send(Message::text(text)).await.expect("send");
        let echoed = tokio::time::timeout(Duration::from_secs(5), ws.next())
            .await
            .expect("in time")
            .expect("a message")
            .expect("ok");
        assert_eq!(echoed, Message::text(text));
    }
    let heads = heads.lock().expect("heads");
    assert_eq!(heads[0]["upgrade"], "websocket");
    assert_eq!(heads[0]["sec-websocket-version"], "13");
    assert_eq!(
        heads[0]["sec-websocket-key"].len(),
        24,
        "a fresh 16-byte key"
    );
}

#[tokio::test]
async fn an_open_websocket_counts_against_max_connections() {
    let (origin, _) = echo_site().await;
    let gateway = TestGateway::start(&format!(
        "[server]\nmax_connections = 1\nheader_read_timeout = \"300ms\"\n{}",
        site_route(origin, "")
    ))
    .await;
    let mut ws = connect(&gateway).await;
    ws.send(Message::text("hold")).await.expect("send");
    assert!(ws.next().await.is_some());
    // The only connection slot is the WebSocket's: a new connection waits in the backlog (were
    // it accepted, its request would get 503 after 300 ms waiting for a request slot).
    let waiting = tokio::time::timeout(
        Duration::from_millis(700),
        TcpStream::connect(gateway.addr).then_request(),
    )
    .await;
    assert!(waiting.is_err(), "served while the WebSocket held the slot");
    ws.close(None).await.expect("close");
    while ws.next().await.is_some() {}
    let served = tokio::time::timeout(
        Duration::from_secs(5),
        TcpStream::connect(gateway.addr).then_request(),
    )
    .await
    .expect("served once the WebSocket closed");
    assert!(served.starts_with("HTTP/1.1 "), "{served}");
}

/// Connects, sends a plain `GET /`, and returns the first bytes of the answer.
trait ThenRequest {
    async fn then_request(self) -> String;
}

impl<F: std::future::Future<Output = std::io::Result<TcpStream>>> ThenRequest for F {
    async fn then_request(self) -> String {
        let mut stream = self.await.expect("connects");
        stream
            .write_all(b"GET / HTTP/1.1\r\nHost: gw\r\nConnection: close\r\n\r\n")
            .await
            .expect("request");
        let mut answer = vec![0u8; 256];
        let n = stream.read(&mut answer).await.expect("answer");
        String::from_utf8_lossy(&answer[..n]).into_owned()
    }
}

#[tokio::test]
async fn a_site_switching_protocols_unasked_gets_502() {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let origin = listener.local_addr().expect("addr");
    tokio::spawn(async move {
        while let Ok((mut stream, _)) = listener.accept().await {
            tokio::spawn(async move {
                let mut head = vec![0u8; 4096];
                let _ = stream.read(&mut head).await;
                let _ = stream
                    .write_all(b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: evil\r\nConnection: upgrade\r\n\r\nSMUGGLED")
                    .await;
            });
        }
    });
    let gateway = TestGateway::start(&site_route(origin, "")).await;
    let answer = get(&gateway.url("/")).await;
    assert_eq!(
        answer.status,
        http::StatusCode::BAD_GATEWAY,
        "{}",
        answer.text()
    );
    assert!(!answer.text().contains("SMUGGLED"));
}
