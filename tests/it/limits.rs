//! The server's limits, each shown working over real sockets: slow headers, idle keep-alive,
//! header size, request body size, connection count.

use crate::support;

use std::sync::Arc;
use std::time::{Duration, Instant};

use http::{Method, StatusCode};
use support::*;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

fn config(server: &str, cdn: &str) -> String {
    format!(
        "[server]\n{server}\n{SIGNING}[[route]]\nname = \"img\"\nprefix = \"/img/\"\nmode = \"proxy\"\nupstream = \"{cdn}\"\n"
    )
}

/// Reads until the peer closes; returns what came and how long it took.
async fn read_until_closed(stream: &mut TcpStream, within: Duration) -> (String, Duration) {
    let started = Instant::now();
    let mut answer = Vec::new();
    tokio::time::timeout(within, stream.read_to_end(&mut answer))
        .await
        .expect("the gateway closed the connection in time")
        .ok();
    (
        String::from_utf8_lossy(&answer).into_owned(),
        started.elapsed(),
    )
}

#[tokio::test]
async fn a_client_sending_headers_too_slowly_is_cut_off() {
    let cdn = TestCdn::builder().file(H, &b"x"[..]).start().await;
    let gateway = TestGateway::start(&config("header_read_timeout = \"300ms\"", &cdn.url())).await;
    let mut slow = TcpStream::connect(gateway.addr).await.expect("connects");
    slow.write_all(format!("GET /img/{H} HTTP/1.1\r\nHost: gw\r\nX-Slow: ").as_bytes())
        .await
        .expect("partial head");
    let (answer, took) = read_until_closed(&mut slow, Duration::from_secs(5)).await;
    assert!(took >= Duration::from_millis(250), "{took:?}");
    assert!(
        answer.is_empty() || answer.starts_with("HTTP/1.1 408"),
        "{answer}"
    );
    assert!(cdn.received().is_empty());
    assert_eq!(
        get(&gateway.url(&format!("/img/{H}"))).await.status,
        StatusCode::OK
    );
}

#[tokio::test]
async fn an_idle_keep_alive_connection_is_closed() {
    let cdn = TestCdn::builder().file(H, &b"x"[..]).start().await;
    let gateway = TestGateway::start(&config("header_read_timeout = \"300ms\"", &cdn.url())).await;
    let mut idle = TcpStream::connect(gateway.addr).await.expect("connects");
    idle.write_all(format!("GET /img/{H} HTTP/1.1\r\nHost: gw\r\n\r\n").as_bytes())
        .await
        .expect("request");
    let (answer, took) = read_until_closed(&mut idle, Duration::from_secs(5)).await;
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
    assert!(
        took >= Duration::from_millis(250) && took < Duration::from_secs(3),
        "{took:?}"
    );
}

#[tokio::test]
async fn oversized_request_heads_get_431() {
    let cdn = TestCdn::builder().file(H, &b"x"[..]).start().await;
    let gateway = TestGateway::start(&config("max_header_bytes = \"8KiB\"", &cdn.url())).await;
    let big = "v".repeat(10_000);
    let answer = send(
        Method::GET,
        &gateway.url(&format!("/img/{H}")),
        &[("x-big", &big)],
    )
    .await;
    assert_eq!(answer.status, StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE);
    let fits = "v".repeat(4_000);
    let answer = send(
        Method::GET,
        &gateway.url(&format!("/img/{H}")),
        &[("x-big", &fits)],
    )
    .await;
    assert_eq!(answer.status, StatusCode::OK);
    assert_eq!(cdn.received().len(), 1);
}

#[tokio::test]
async fn site_request_bodies_past_the_limit_get_413_and_never_reach_the_site() {
    let origin = start_origin(Arc::new(|_, body| {
        respond(200, &[], format!("{} bytes", body.len()))
    }))
    .await;
    let toml = format!(
        "{SIGNING}[[route]]\nname = \"site\"\nprefix = \"/\"\nmode = \"site\"\n\
         upstream = \"http://{origin}\"\nmax_request_body = \"1KiB\"\n"
    );
    let gateway = TestGateway::start(&toml).await;
    let ok = send_body(Method::POST, &gateway.url("/form"), &[], vec![1u8; 1024]).await;
    assert_eq!(ok.text(), "1024 bytes");
    let too_big = send_body(Method::POST, &gateway.url("/form"), &[], vec![1u8; 1025]).await;
    assert_eq!(too_big.status, StatusCode::PAYLOAD_TOO_LARGE);

    // Chunked, without a length: cut where it passes the limit.
    let mut stream = TcpStream::connect(gateway.addr).await.expect("connects");
    let chunk = "a".repeat(800);
    let request = format!(
        "POST /form HTTP/1.1\r\nHost: gw\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n\r\n\
         320\r\n{chunk}\r\n320\r\n{chunk}\r\n0\r\n\r\n"
    );
    let _ = stream.write_all(request.as_bytes()).await;
    let (answer, _) = read_until_closed(&mut stream, Duration::from_secs(5)).await;
    assert!(answer.starts_with("HTTP/1.1 413"), "{answer}");
}

#[tokio::test]
async fn connections_past_max_connections_wait_until_one_closes() {
    let cdn = TestCdn::builder().file(H, &b"x"[..]).start().await;
    let gateway = TestGateway::start(&config("max_connections = 2", &cdn.url())).await;
    let request = format!("GET /img/{H} HTTP/1.1\r\nHost: gw\r\n\r\n");
    let mut held = Vec::new();
    for _ in 0..2 {
        let mut stream = TcpStream::connect(gateway.addr).await.expect("connects");
        stream.write_all(request.as_bytes()).await.expect("request");
        let mut buf = [0u8; 12];
        stream.read_exact(&mut buf).await.expect("answered");
        assert_eq!(&buf, b"HTTP/1.1 200");
        held.push(stream);
    }
    // The third connects (the kernel's backlog) but is not served while two are open.
    let mut third = TcpStream::connect(gateway.addr).await.expect("connects");
    third.write_all(request.as_bytes()).await.expect("request");
    let mut buf = [0u8; 12];
    assert!(
        tokio::time::timeout(Duration::from_millis(300), third.read_exact(&mut buf))
            .await
            .is_err(),
        "served past max_connections"
    );
    drop(held.pop());
    tokio::time::timeout(Duration::from_secs(5), third.read_exact(&mut buf))
        .await
        .expect("served once a slot freed")
        .expect("read");
    assert_eq!(&buf, b"HTTP/1.1 200");
}

/// A 1 GiB file that a client will stop reading.
const BIG: &str = "BIGFILEhandle0000000";

/// A gateway with `send_timeout = 300ms` and one upstream connection for its route, so that
/// while a stalled download holds it, nothing else on the route is fetched; its CDN serves
/// [`BIG`] and a small file at `H`.
async fn one_slot_gateway_with_a_big_file() -> (TestCdn, TestGateway) {
    let cdn = TestCdn::builder()
        .body(BIG, FileBody::Generated { len: 1 << 30 })
        .file(H, &b"small"[..])
        .start()
        .await;
    let toml = format!(
        "{}max_upstream_connections = 1\nresponse_timeout = \"10s\"\n",
        config("send_timeout = \"300ms\"", &cdn.url())
    );
    let gateway = TestGateway::start(&toml).await;
    (cdn, gateway)
}

#[tokio::test]
async fn a_client_that_stops_reading_is_cut_off_after_send_timeout_freeing_its_upstream_slot() {
    let (_cdn, gateway) = one_slot_gateway_with_a_big_file().await;
    let mut stalled = TcpStream::connect(gateway.addr).await.expect("connects");
    stalled
        .write_all(format!("GET /img/{BIG} HTTP/1.1\r\nHost: gw\r\n\r\n").as_bytes())
        .await
        .expect("request");
    let mut head = [0u8; 12];
    stalled.read_exact(&mut head).await.expect("answered");
    assert_eq!(&head, b"HTTP/1.1 200");
    // From here on the client reads nothing: socket buffers fill and the gateway's writes stall.

    let started = Instant::now();
    let answer = tokio::time::timeout(
        Duration::from_secs(8),
        get(&gateway.url(&format!("/img/{H}"))),
    )
    .await
    .expect("the second request was served before response_timeout");
    assert_eq!(answer.status, StatusCode::OK);
    assert_eq!(answer.text(), "small");
    assert!(
        started.elapsed() < Duration::from_secs(8),
        "{:?}",
        started.elapsed()
    );

    // The stalled connection was closed: after what the buffers held, it ends well short of 1 GiB.
    let mut received = 0_u64;
    let mut buf = vec![0u8; 1 << 16];
    loop {
        match tokio::time::timeout(Duration::from_secs(5), stalled.read(&mut buf)).await {
            Ok(Ok(0)) | Ok(Err(_)) => break,
            Ok(Ok(n)) => received += n as u64,
            Err(_) => panic!("the stalled connection is still open"),
        }
    }
    assert!(received < 256 << 20, "{received} bytes arrived");
}

#[tokio::test]
async fn an_h2_stream_the_client_never_reads_is_dropped_after_send_timeout() {
    use http_body_util::BodyExt;
    let (_cdn, gateway) = one_slot_gateway_with_a_big_file().await;
    let h2 = h2_client();
    let response = h2
        .request(get_request(&gateway.url(&format!("/img/{BIG}"))))
        .await
        .expect("answer");
    assert_eq!(response.status(), StatusCode::OK);
    // The stream's window fills and stays shut: its body is never read, the connection lives on.
    let mut unread = response.into_body();

    let started = Instant::now();
    let small = tokio::time::timeout(
        Duration::from_secs(8),
        send_with(&h2, Method::GET, &gateway.url(&format!("/img/{H}")), &[]),
    )
    .await
    .expect("served on the same connection before response_timeout");
    assert_eq!(small.status, StatusCode::OK);
    assert_eq!(&small.body[..], b"small");
    assert!(started.elapsed() < Duration::from_secs(8));

    // Reading the abandoned stream now ends in an error well short of 1 GiB.
    let mut received = 0_u64;
    let ended_badly = tokio::time::timeout(Duration::from_secs(10), async {
        while let Some(frame) = unread.frame().await {
            match frame {
                Ok(frame) => received += frame.data_ref().map_or(0, |d| d.len() as u64),
                Err(_) => return true,
            }
        }
        false
    })
    .await
    .expect("the stream ended");
    assert!(ended_badly, "the abandoned stream ended as if complete");
    assert!(received < 256 << 20, "{received} bytes arrived");
}

#[tokio::test]
async fn idle_h2_connections_are_closed_and_free_their_slots() {
    let cdn = TestCdn::builder().file(H, &b"x"[..]).start().await;
    let gateway = TestGateway::start(&config(
        "header_read_timeout = \"500ms\"\nmax_connections = 3",
        &cdn.url(),
    ))
    .await;
    let mut idle = Vec::new();
    for _ in 0..3 {
        let mut stream = TcpStream::connect(gateway.addr).await.expect("connects");
        stream
            .write_all(H2_PREFACE_AND_SETTINGS)
            .await
            .expect("preface");
        idle.push(stream);
    }
    // Every slot is taken; the idle ones are closed (GOAWAY, then EOF) and a new client is
    // served well within the time it would otherwise wait.
    let started = Instant::now();
    let answer = tokio::time::timeout(
        Duration::from_secs(5),
        get(&gateway.url(&format!("/img/{H}"))),
    )
    .await
    .expect("served once the idle h2 connections are closed");
    assert_eq!(answer.status, StatusCode::OK);
    assert!(
        started.elapsed() >= Duration::from_millis(300),
        "{:?}",
        started.elapsed()
    );
    for mut stream in idle {
        let (_, took) = read_until_closed(&mut stream, Duration::from_secs(5)).await;
        assert!(took < Duration::from_secs(5));
    }
}

#[tokio::test]
async fn request_bodies_that_never_come_hold_no_upstream_slot_and_get_408() {
    let origin = start_origin(Arc::new(|_, body| {
        respond(200, &[("content-type", "text/plain")], body)
    }))
    .await;
    let toml = format!(
        "[server]\nclient_body_timeout = \"3s\"\n{SIGNING}[[route]]\nname = \"site\"\nprefix = \"/\"\nmode = \"site\"\nupstream = \"http://{origin}\"\nmax_upstream_connections = 2\nresponse_timeout = \"5s\"\n"
    );
    let gateway = TestGateway::start(&toml).await;
    let h2 = h2_client();
    // Twenty streams announcing 100 bytes and sending none.
    let stalled: Vec<_> = (0..20)
        .map(|_| {
            let request = http::Request::post(gateway.url("/form"))
                .header("content-length", "100")
                .body(http_body_util::BodyExt::boxed(Silent))
                .expect("request");
            let h2 = h2.clone();
            tokio::spawn(async move {
                let started = Instant::now();
                let answer = h2.request(request).await.expect("an answer");
                (answer.status(), started.elapsed())
            })
        })
        .collect();
    tokio::time::sleep(Duration::from_millis(200)).await;
    // Meanwhile an ordinary request, and a small POST, get through at once.
    let started = Instant::now();
    let ordinary = send_with(&h2, Method::GET, &gateway.url("/"), &[]).await;
    assert_eq!(ordinary.status, StatusCode::OK);
    let posted = send_full(&h2, Method::POST, &gateway.url("/form"), &[], "a=1".into()).await;
    assert_eq!(
        (posted.status, &posted.body[..]),
        (StatusCode::OK, &b"a=1"[..])
    );
    assert!(
        started.elapsed() < Duration::from_millis(1_500),
        "{:?}",
        started.elapsed()
    );
    for stalled in stalled {
        let (status, took) = stalled.await.expect("task");
        assert_eq!(status, StatusCode::REQUEST_TIMEOUT);
        assert!(
            took >= Duration::from_secs(2) && took < Duration::from_secs(6),
            "{took:?}"
        );
    }
}

#[tokio::test]
async fn http2_streams_count_against_max_connections() {
    let gate = Gate::new();
    let origin = {
        let gate = Arc::clone(&gate);
        start_origin(Arc::new(move |_, _| {
            let body = gated("first ".into(), "second".into(), Arc::clone(&gate));
            let mut response = http::Response::new(http_body_util::BodyExt::boxed(body));
            response
                .headers_mut()
                .insert("content-type", http::HeaderValue::from_static("text/plain"));
            response
        }))
        .await
    };
    let toml = format!(
        "[server]\nmax_connections = 4\nheader_read_timeout = \"500ms\"\n{SIGNING}[[route]]\nname = \"site\"\nprefix = \"/\"\nmode = \"site\"\nupstream = \"http://{origin}\"\n"
    );
    let gateway = TestGateway::start(&toml).await;
    let h2 = h2_client();
    let requests: Vec<_> = (0..6)
        .map(|i| {
            let (h2, url) = (h2.clone(), gateway.url(&format!("/{i}")));
            tokio::spawn(async move { send_with(&h2, Method::GET, &url, &[]).await })
        })
        .collect();
    tokio::time::sleep(Duration::from_millis(1_000)).await;
    gate.open();
    let mut statuses: Vec<u16> = Vec::new();
    for request in requests {
        statuses.push(request.await.expect("task").status.as_u16());
    }
    statuses.sort_unstable();
    assert_eq!(
        statuses,
        [200, 200, 200, 200, 503, 503],
        "one connection, six streams"
    );
}
