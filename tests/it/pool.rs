//! The upstream pool over real sockets, against an origin that counts its connections and
//! answers as each test scripts: keep-alive reuse, at most `upstream_keepalive` idle connections
//! after a burst, a reused connection the upstream closed retried once (bodiless idempotent
//! requests only), and a connection that broke the protocol never used again.

use crate::support;

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use http::{Method, StatusCode};
use support::*;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::sync::Semaphore;

/// What the scripted origin does with the `nth` request (from 0) on its `connection`th
/// connection (from 0).
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Reply {
    /// 200 with a small body, keep-alive.
    Ok,
    /// 200 with a small body, keep-alive, then the connection closed 300 ms later.
    OkThenClose,
    /// Reads the request, then closes the connection without a word.
    Close,
    /// A status line followed by a header no parser accepts.
    Garbage,
}

type Script = dyn Fn(usize, usize) -> Reply + Send + Sync;

/// An origin speaking just enough HTTP/1.1 by hand to misbehave on cue. `opened` counts
/// accepted connections, `open` those not yet closed, `heads` the request heads read; `gate`,
/// when given, holds every answer until it has a permit.
struct ScriptedOrigin {
    addr: std::net::SocketAddr,
    opened: Arc<AtomicUsize>,
    open: Arc<AtomicUsize>,
    heads: Arc<AtomicUsize>,
}

impl ScriptedOrigin {
    async fn start(script: Arc<Script>, gate: Option<Arc<Semaphore>>) -> Self {
        let (listener, addr) = bind().await;
        let opened = Arc::new(AtomicUsize::new(0));
        let open = Arc::new(AtomicUsize::new(0));
        let heads = Arc::new(AtomicUsize::new(0));
        let (counted, live, read) = (Arc::clone(&opened), Arc::clone(&open), Arc::clone(&heads));
        tokio::spawn(async move {
            loop {
                let Ok((stream, _)) = listener.accept().await else {
                    continue;
                };
                let connection = counted.fetch_add(1, Ordering::SeqCst);
                live.fetch_add(1, Ordering::SeqCst);
                let (script, gate, live, read) = (
                    Arc::clone(&script),
                    gate.clone(),
                    Arc::clone(&live),
                    Arc::clone(&read),
                );
                tokio::spawn(async move {
                    serve_scripted(stream, connection, &*script, gate, &read).await;
                    live.fetch_sub(1, Ordering::SeqCst);
                });
            }
        });
        Self {
            addr,
            opened,
            open,
            heads,
        }
    }

    fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    fn opened(&self) -> usize {
        self.opened.load(Ordering::SeqCst)
    }

    fn open(&self) -> usize {
        self.open.load(Ordering::SeqCst)
    }

    fn heads(&self) -> usize {
        self.heads.load(Ordering::SeqCst)
    }
}

/// Serves one connection: each request head read whole (the tests send no bodies), then the
/// scripted reply.
async fn serve_scripted(
    mut stream: TcpStream,
    connection: usize,
    script: &Script,
    gate: Option<Arc<Semaphore>>,
    heads: &AtomicUsize,
) {
    let mut buffer = Vec::new();
    for nth in 0.. {
        while !buffer.windows(4).any(|w| w == b"\r\n\r\n") {
            let mut chunk = [0u8; 4096];
            match stream.read(&mut chunk).await {
                Ok(0) | Err(_) => return,
                Ok(n) => buffer.extend_from_slice(&chunk[..n]),
            }
        }
        let end = buffer
            .windows(4)
            .position(|w| w == b"\r\n\r\n")
            .expect("a head")
            + 4;
        buffer.drain(..end);
        heads.fetch_add(1, Ordering::SeqCst);
        if let Some(gate) = &gate {
            gate.acquire().await.expect("open").forget();
        }
        let reply = script(connection, nth);
        let answer: &[u8] = match reply {
            Reply::Ok | Reply::OkThenClose => {
                b"HTTP/1.1 200 OK\r\ncontent-type: image/png\r\ncontent-length: 2\r\n\r\nok"
            }
            Reply::Close => return,
            Reply::Garbage => b"HTTP/1.1 200 OK\r\ncontent-length: two\r\n\r\nok",
        };
        if stream.write_all(answer).await.is_err() {
            return;
        }
        if reply == Reply::OkThenClose {
            tokio::time::sleep(Duration::from_millis(300)).await;
            return;
        }
    }
}

async fn gateway_for(origin: &ScriptedOrigin, mode: &str, extra: &str) -> TestGateway {
    let prefix = if mode == "site" { "/" } else { "/img/" };
    TestGateway::start(&one_route(mode, prefix, &origin.url(), extra)).await
}

async fn status(method: Method, url: &str) -> StatusCode {
    send(method, url, &[]).await.status
}

/// Waits up to 5 s for `done`.
async fn eventually(what: &str, done: impl Fn() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(5);
    while !done() {
        assert!(Instant::now() < deadline, "not within 5 s: {what}");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

#[tokio::test]
async fn sequential_requests_share_one_kept_alive_connection() {
    let origin = ScriptedOrigin::start(Arc::new(|_, _| Reply::Ok), None).await;
    let gateway = gateway_for(&origin, "proxy", "").await;
    for _ in 0..5 {
        assert_eq!(
            status(Method::GET, &gateway.url(&format!("/img/{H}"))).await,
            200
        );
    }
    assert_eq!(origin.opened(), 1);
}

/// Sends ten GETs to `url` at once, lets the gated `origin` answer them once all ten are
/// there, and checks each is 200.
async fn burst_of_ten(url: &str, origin: &ScriptedOrigin, gate: &Semaphore) {
    let before = origin.heads();
    let burst: Vec<_> = (0..10)
        .map(|_| {
            let url = url.to_owned();
            tokio::spawn(async move { send(Method::GET, &url, &[]).await })
        })
        .collect();
    eventually("ten requests at the origin", || {
        origin.heads() == before + 10
    })
    .await;
    gate.add_permits(10);
    for request in burst {
        assert_eq!(request.await.expect("no panic").status, 200);
    }
}

#[tokio::test]
async fn a_burst_keeps_its_connections_while_it_lasts_then_only_upstream_keepalive_stay_open() {
    let gate = Arc::new(Semaphore::new(0));
    let origin = ScriptedOrigin::start(Arc::new(|_, _| Reply::Ok), Some(Arc::clone(&gate))).await;
    let gateway = gateway_for(&origin, "proxy", "upstream_keepalive = 2").await;
    let url = gateway.url(&format!("/img/{H}"));
    // All ten are at the origin at once, each on a connection of its own.
    burst_of_ten(&url, &origin, &gate).await;
    assert_eq!(origin.opened(), 10);
    // A second burst right after finds the first one's connections still open: closing the
    // eight past `upstream_keepalive` at once would make it connect anew.
    burst_of_ten(&url, &origin, &gate).await;
    assert_eq!(origin.opened(), 10, "the second burst connected anew");

    // Once unused for a while, the sweeper closes the eight past `upstream_keepalive`.
    let deadline = Instant::now()
        + signgate::upstream::pool::SWEEP_EVERY * 2
        + signgate::upstream::pool::EXCESS_GRACE
        + Duration::from_secs(2);
    while origin.open() != 2 {
        assert!(
            Instant::now() < deadline,
            "{} idle connections still open",
            origin.open()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    // The two kept serve what comes next.
    gate.add_permits(2);
    assert_eq!(status(Method::GET, &url).await, 200);
    assert_eq!(status(Method::GET, &url).await, 200);
    assert_eq!(origin.opened(), 10);
}

#[tokio::test]
async fn a_get_on_a_connection_the_upstream_closed_is_retried_once_on_a_new_one() {
    // Every connection answers one request, then drops the next without a word.
    let origin = ScriptedOrigin::start(
        Arc::new(|_, nth| if nth == 0 { Reply::Ok } else { Reply::Close }),
        None,
    )
    .await;
    let gateway = gateway_for(&origin, "proxy", "").await;
    let url = gateway.url(&format!("/img/{H}"));
    assert_eq!(status(Method::GET, &url).await, 200);
    assert_eq!(status(Method::GET, &url).await, 200, "retried");
    assert_eq!(origin.opened(), 2);
    assert_eq!(status(Method::HEAD, &url).await, 200, "retried");
    assert_eq!(origin.opened(), 3);
}

#[tokio::test]
async fn a_post_on_a_connection_the_upstream_closed_is_not_repeated() {
    let origin = ScriptedOrigin::start(
        Arc::new(|_, nth| if nth == 0 { Reply::Ok } else { Reply::Close }),
        None,
    )
    .await;
    let gateway = gateway_for(&origin, "site", "").await;
    assert_eq!(status(Method::GET, &gateway.url("/page")).await, 200);
    let answer = send(Method::POST, &gateway.url("/form"), &[]).await;
    assert_eq!(answer.status, StatusCode::BAD_GATEWAY);
    assert_eq!(
        origin.opened(),
        1,
        "the POST went once, on the reused connection"
    );
}

#[tokio::test]
async fn a_connection_that_broke_the_protocol_is_not_used_again() {
    // The first connection answers once, then with a header no parser takes.
    let origin = ScriptedOrigin::start(
        Arc::new(|connection, nth| match (connection, nth) {
            (0, 1) => Reply::Garbage,
            _ => Reply::Ok,
        }),
        None,
    )
    .await;
    let gateway = gateway_for(&origin, "proxy", "").await;
    let url = gateway.url(&format!("/img/{H}"));
    assert_eq!(status(Method::GET, &url).await, 200);
    assert_eq!(status(Method::GET, &url).await, StatusCode::BAD_GATEWAY);
    assert_eq!(status(Method::GET, &url).await, 200);
    assert_eq!(origin.opened(), 2);
    eventually("the broken connection closed", || origin.open() == 1).await;
}

/// Sockets of this process (the gateway runs in it) connected to `port` and half-closed by
/// their peer (`CLOSE_WAIT`), from `/proc/net/tcp`.
fn half_closed_to(port: u16) -> usize {
    let table = std::fs::read_to_string("/proc/net/tcp").expect("/proc/net/tcp");
    let remote = format!(":{port:04X}");
    table
        .lines()
        .skip(1)
        .filter(|line| {
            let fields: Vec<&str> = line.split_whitespace().collect();
            fields.len() > 3 && fields[2].ends_with(&remote) && fields[3] == "08"
        })
        .count()
}

#[tokio::test]
async fn an_idle_connection_the_upstream_closed_is_let_go_within_the_sweep() {
    let origin = ScriptedOrigin::start(Arc::new(|_, _| Reply::OkThenClose), None).await;
    let gateway = gateway_for(&origin, "proxy", "").await;
    let url = gateway.url(&format!("/img/{H}"));
    assert_eq!(status(Method::GET, &url).await, 200);
    eventually("the origin closed its side", || origin.open() == 0).await;
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert_eq!(half_closed_to(origin.addr.port()), 1, "idle, half-closed");
    let deadline = Instant::now() + signgate::upstream::pool::SWEEP_EVERY + Duration::from_secs(3);
    while half_closed_to(origin.addr.port()) > 0 {
        assert!(Instant::now() < deadline, "the idle connection still open");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    // And the next request finds no dead connection to try first.
    assert_eq!(status(Method::GET, &url).await, 200);
    assert_eq!(origin.opened(), 2);
}

#[tokio::test]
async fn the_sweep_keeps_upstream_keepalive_live_connections_when_newer_idle_ones_died() {
    // Four connections at once; answered one at a time, so that they go idle in that order.
    // The two answered first stay open, the two answered last are closed by the origin.
    let answered = Arc::new(AtomicUsize::new(0));
    let script = {
        let answered = Arc::clone(&answered);
        Arc::new(
            move |_: usize, _: usize| match answered.fetch_add(1, Ordering::SeqCst) {
                2 | 3 => Reply::OkThenClose,
                _ => Reply::Ok,
            },
        )
    };
    let gate = Arc::new(Semaphore::new(0));
    let origin = ScriptedOrigin::start(script, Some(Arc::clone(&gate))).await;
    let gateway = gateway_for(&origin, "proxy", "upstream_keepalive = 2").await;
    let url = gateway.url(&format!("/img/{H}"));
    let done = Arc::new(AtomicUsize::new(0));
    let burst: Vec<_> = (0..4)
        .map(|_| {
            let (url, done) = (url.clone(), Arc::clone(&done));
            tokio::spawn(async move {
                let status = send(Method::GET, &url, &[]).await.status;
                done.fetch_add(1, Ordering::SeqCst);
                status
            })
        })
        .collect();
    eventually("four requests at the origin", || origin.heads() == 4).await;
    for n in 1..=4 {
        gate.add_permits(1);
        eventually("one more answered", || done.load(Ordering::SeqCst) == n).await;
    }
    for request in burst {
        assert_eq!(request.await.expect("no panic"), 200);
    }
    assert_eq!(origin.opened(), 4);
    eventually("the origin closed the newest two", || origin.open() == 2).await;

    // A sweep finds the two oldest idle past the grace and two dead: it must drop the dead ones
    // and keep the live ones, not close the oldest two as past `upstream_keepalive`.
    tokio::time::sleep(
        signgate::upstream::pool::SWEEP_EVERY
            + signgate::upstream::pool::EXCESS_GRACE
            + Duration::from_secs(1),
    )
    .await;
    assert_eq!(origin.open(), 2, "the sweep closed live connections");
    gate.add_permits(2);
    assert_eq!(status(Method::GET, &url).await, 200);
    assert_eq!(status(Method::GET, &url).await, 200);
    assert_eq!(origin.opened(), 4, "a kept connection was not reused");
}
