//! A fault-injecting upstream: every fault gives the client a bounded, correct outcome (502,
//! 504, or a cut connection once the body has begun), and 10,000 faulted requests leave file
//! descriptors and memory where they were.

mod support;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::{Request, StatusCode};
use http_body_util::{BodyExt, Empty};
use support::*;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

const H: &str = "KW9EJhYtS6y48Whm2S6D";

#[derive(Clone, Copy, Debug, PartialEq)]
enum Fault {
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

async fn faulty_upstream(fault: Fault) -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("addr");
    tokio::spawn(async move {
        loop {
            let Ok((mut stream, _)) = listener.accept().await else {
                return;
            };
            tokio::spawn(async move {
                read_head(&mut stream).await;
                match fault {
                    Fault::AcceptThenClose => {}
                    Fault::ResetMidHeaders => {
                        let _ = stream.write_all(b"HTTP/1.1 200 OK\r\nContent-Le").await;
                        reset(stream);
                    }
                    Fault::ResetMidBody => {
                        let _ = stream
                            .write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 1000\r\n\r\n0123456789")
                            .await;
                        tokio::time::sleep(Duration::from_millis(20)).await;
                        reset(stream);
                    }
                    Fault::StallMidBody => {
                        let _ = stream
                            .write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 1000\r\n\r\n0123456789")
                            .await;
                        tokio::time::sleep(Duration::from_secs(30)).await;
                    }
                    Fault::Garbage => {
                        let _ = stream
                            .write_all(b"SSH-2.0-OpenSSH_9.6\r\n\x00\x01\x02garbage\r\n\r\n")
                            .await;
                    }
                    Fault::HugeHeaders => {
                        let _ = stream.write_all(b"HTTP/1.1 200 OK\r\n").await;
                        let line = format!("X-Big: {}\r\n", "h".repeat(1000));
                        for _ in 0..10_000 {
                            if stream.write_all(line.as_bytes()).await.is_err() {
                                return;
                            }
                        }
                    }
                    Fault::SlowerThanTimeout => {
                        tokio::time::sleep(Duration::from_millis(800)).await;
                        let _ = stream
                            .write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")
                            .await;
                    }
                    Fault::Healthy => {
                        let _ = stream.write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nConnection: close\r\n\r\nok").await;
                    }
                }
            });
        }
    });
    addr
}

fn route(upstream: SocketAddr) -> String {
    one_route(
        "proxy",
        "/img/",
        &format!("http://{upstream}"),
        "response_timeout = \"300ms\"\nbody_idle_timeout = \"300ms\"",
    )
}

/// The outcome a client sees: status, and whether the body arrived whole.
async fn outcome(url: &str) -> (StatusCode, bool) {
    let request = Request::get(url)
        .body(
            Empty::<Bytes>::new()
                .map_err(|never| match never {})
                .boxed(),
        )
        .expect("request");
    let response = client()
        .request(request)
        .await
        .expect("the gateway answers");
    let status = response.status();
    let whole = response.into_body().collect().await.is_ok();
    (status, whole)
}

#[tokio::test]
async fn every_upstream_fault_has_a_bounded_correct_outcome() {
    let cases = [
        (Fault::AcceptThenClose, StatusCode::BAD_GATEWAY, true),
        (Fault::ResetMidHeaders, StatusCode::BAD_GATEWAY, true),
        (Fault::Garbage, StatusCode::BAD_GATEWAY, true),
        (Fault::HugeHeaders, StatusCode::BAD_GATEWAY, true),
        (Fault::SlowerThanTimeout, StatusCode::GATEWAY_TIMEOUT, true),
        // The body had begun: the status is gone, the connection is cut.
        (Fault::ResetMidBody, StatusCode::OK, false),
        (Fault::StallMidBody, StatusCode::OK, false),
        (Fault::Healthy, StatusCode::OK, true),
    ];
    for (fault, status, whole) in cases {
        let upstream = faulty_upstream(fault).await;
        let gateway = TestGateway::start(&route(upstream)).await;
        let started = Instant::now();
        let seen = tokio::time::timeout(
            Duration::from_secs(5),
            outcome(&gateway.url(&format!("/img/{H}"))),
        )
        .await
        .unwrap_or_else(|_| panic!("{fault:?}: no outcome within 5 s"));
        assert_eq!(seen, (status, whole), "{fault:?}");
        assert!(
            started.elapsed() < Duration::from_secs(2),
            "{fault:?} took {:?}",
            started.elapsed()
        );
        // And the gateway serves normally afterwards.
        let healthy = TestGateway::start(&route(faulty_upstream(Fault::Healthy).await)).await;
        assert_eq!(
            outcome(&healthy.url(&format!("/img/{H}"))).await,
            (StatusCode::OK, true)
        );
    }
}

fn open_fds() -> usize {
    std::fs::read_dir("/proc/self/fd").map_or(0, |dir| dir.count())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ten_thousand_faulted_requests_leak_nothing() {
    let faults = [
        Fault::AcceptThenClose,
        Fault::ResetMidHeaders,
        Fault::Garbage,
        Fault::ResetMidBody,
    ];
    let mut gateways = Vec::new();
    for fault in faults {
        gateways.push(Arc::new(
            TestGateway::start(&route(faulty_upstream(fault).await)).await,
        ));
    }
    // Warm up allocator pools and the client before taking the baseline.
    for gateway in &gateways {
        let _ = outcome(&gateway.url(&format!("/img/{H}"))).await;
    }
    let (fds_before, rss_before) = (open_fds(), rss_bytes());
    let started = Instant::now();
    let mut tasks = Vec::new();
    for worker in 0..16 {
        let gateways = gateways.clone();
        tasks.push(tokio::spawn(async move {
            for i in 0..625 {
                let gateway = &gateways[(worker + i) % gateways.len()];
                let (status, _) = outcome(&gateway.url(&format!("/img/{H}"))).await;
                assert!(
                    status == StatusCode::BAD_GATEWAY || status == StatusCode::OK,
                    "{status} from fault {}",
                    (worker + i) % gateways.len()
                );
            }
        }));
    }
    for task in tasks {
        tokio::time::timeout(Duration::from_secs(120), task)
            .await
            .expect("in time")
            .expect("no panic");
    }
    let elapsed = started.elapsed();
    // Connections close asynchronously: give them a bounded moment.
    let deadline = Instant::now() + Duration::from_secs(5);
    while open_fds() > fds_before + 16 && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let (fds_after, rss_after) = (open_fds(), rss_bytes());
    eprintln!(
        "10,000 faulted requests in {elapsed:?}; fds {fds_before} -> {fds_after}; RSS {} -> {} MiB",
        rss_before >> 20,
        rss_after >> 20
    );
    assert!(
        fds_after <= fds_before + 16,
        "descriptors leaked: {fds_before} -> {fds_after}"
    );
    assert!(
        rss_after < rss_before + 32 * 1024 * 1024,
        "memory grew: {rss_before} -> {rss_after}"
    );
}
