//! An upstream that misbehaves at the byte level, one way per [`UpstreamFault`], for the fault
//! tests and the descriptor-leak check.

use std::net::SocketAddr;
use std::time::Duration;

use http::StatusCode;
use http_body_util::BodyExt;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use super::accept::{accept_loop, bind};
use super::{client, get_request, one_route};

#[derive(Clone, Copy, Debug, PartialEq)]
pub enum UpstreamFault {
    AcceptThenClose,
    ResetMidHeaders,
    ResetMidBody,
    StallMidBody,
    Garbage,
    HugeHeaders,
    SlowerThanTimeout,
    Healthy,
}

async fn read_head(stream: &mut TcpStream) {
    let mut buf = vec![0u8; 8192];
    let mut seen = Vec::new();
    while !seen.windows(4).any(|w| w == b"\r\n\r\n") {
        match stream.read(&mut buf).await {
            Ok(0) | Err(_) => return,
            Ok(n) => seen.extend_from_slice(&buf[..n]),
        }
    }
}

/// Closes with RST instead of FIN.
fn reset(stream: TcpStream) {
    let _ = stream.set_zero_linger();
    drop(stream);
}

/// An upstream on 127.0.0.1:0 that reads each request head, then misbehaves as `fault` says.
pub async fn faulty_upstream(fault: UpstreamFault) -> SocketAddr {
    let (listener, addr) = bind().await;
    tokio::spawn(accept_loop(listener, move |mut stream| async move {
        read_head(&mut stream).await;
        match fault {
            UpstreamFault::AcceptThenClose => {}
            UpstreamFault::ResetMidHeaders => {
                let _ = stream.write_all(b"HTTP/1.1 200 OK\r\nContent-Le").await;
                reset(stream);
            }
            UpstreamFault::ResetMidBody => {
                let _ = stream
                    .write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 1000\r\n\r\n0123456789")
                    .await;
                // Part of the fault: the first bytes are read before the reset discards them.
                tokio::time::sleep(Duration::from_millis(20)).await;
                reset(stream);
            }
            UpstreamFault::StallMidBody => {
                let _ = stream
                    .write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 1000\r\n\r\n0123456789")
                    .await;
                tokio::time::sleep(Duration::from_secs(30)).await;
            }
            UpstreamFault::Garbage => {
                let _ = stream
                    .write_all(b"SSH-2.0-OpenSSH_9.6\r\n\x00\x01\x02garbage\r\n\r\n")
                    .await;
            }
            UpstreamFault::HugeHeaders => {
                let _ = stream.write_all(b"HTTP/1.1 200 OK\r\n").await;
                let line = format!("X-Big: {}\r\n", "h".repeat(1000));
                for _ in 0..10_000 {
                    if stream.write_all(line.as_bytes()).await.is_err() {
                        return;
                    }
                }
            }
            UpstreamFault::SlowerThanTimeout => {
                tokio::time::sleep(Duration::from_millis(800)).await;
                let _ = stream
                    .write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")
                    .await;
            }
            UpstreamFault::Healthy => {
                let _ = stream
                    .write_all(
                        b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nConnection: close\r\n\r\nok",
                    )
                    .await;
            }
        }
    }));
    addr
}

/// A proxy route in front of `upstream` with 300 ms response and body-idle timeouts.
pub fn fault_route(upstream: SocketAddr) -> String {
    one_route(
        "proxy",
        "/img/",
        &format!("http://{upstream}"),
        "response_timeout = \"300ms\"\nbody_idle_timeout = \"300ms\"",
    )
}

/// The outcome a client sees: status, and whether the body arrived whole.
pub async fn outcome(url: &str) -> (StatusCode, bool) {
    let response = client()
        .request(get_request(url))
        .await
        .expect("the gateway answers");
    let status = response.status();
    let whole = response.into_body().collect().await.is_ok();
    (status, whole)
}
