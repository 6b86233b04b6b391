//! Upstream behaviour over real sockets: streaming, timeouts, refusals, TLS, graceful shutdown.

mod support;

use std::io::Write;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::{Request, StatusCode};
use http_body_util::{BodyExt, Empty};
use sha2::{Digest, Sha256};
use support::*;
use tokio::sync::Notify;

const H: &str = "KW9EJhYtS6y48Whm2S6D";

struct Gate {
    release: Arc<Notify>,
    closed: Arc<Notify>,
}

fn gated_file() -> (FileBody, Gate) {
    let release = Arc::new(Notify::new());
    let closed = Arc::new(Notify::new());
    let body = FileBody::Gated {
        first: Bytes::from_static(b"first chunk;"),
        release: Arc::clone(&release),
        second: Bytes::from_static(b"second chunk"),
        closed: Arc::clone(&closed),
    };
    (body, Gate { release, closed })
}

fn request(url: &str) -> Request<TestBody> {
    Request::get(url)
        .body(Empty::new().map_err(|never| match never {}).boxed())
        .expect("request")
}

#[tokio::test]
async fn bodies_stream_chunk_by_chunk_and_a_departed_client_cancels_upstream() {
    let (body, gate) = gated_file();
    let cdn = TestCdn::builder().body(H, body).start().await;
    let gateway = TestGateway::start(&one_route("proxy", "/img/", &cdn.url(), "")).await;
    tokio::time::timeout(Duration::from_secs(10), async {
        let response = client()
            .request(request(&gateway.url(&format!("/img/{H}"))))
            .await
            .expect("answer");
        assert_eq!(response.status(), StatusCode::OK);
        let mut body = response.into_body();
        // The first chunk arrives while the origin still holds the second: nothing is buffered.
        let first = body
            .frame()
            .await
            .expect("a frame")
            .expect("data")
            .into_data()
            .expect("data");
        assert_eq!(&first[..], b"first chunk;");
        gate.release.notify_one();
        let rest = body.collect().await.expect("rest").to_bytes();
        assert_eq!(&rest[..], b"second chunk");
    })
    .await
    .expect("streamed within 10 s");

    // Again, but the client leaves after the first chunk: the CDN sees its reader go away.
    let (body, gate) = gated_file();
    let cdn = TestCdn::builder().body(H, body).start().await;
    let gateway = TestGateway::start(&one_route("proxy", "/img/", &cdn.url(), "")).await;
    tokio::time::timeout(Duration::from_secs(10), async {
        let response = client()
            .request(request(&gateway.url(&format!("/img/{H}"))))
            .await
            .expect("answer");
        let mut body = response.into_body();
        body.frame().await.expect("a frame").expect("data");
        drop(body);
        gate.closed.notified().await;
    })
    .await
    .expect("upstream cancelled within 10 s");
}

#[tokio::test]
async fn a_256_mib_body_streams_through_intact_with_flat_memory() {
    const LEN: u64 = 256 * 1024 * 1024;
    let cdn = TestCdn::builder()
        .body(H, FileBody::Generated { len: LEN })
        .start()
        .await;
    let gateway = TestGateway::start(&one_route("proxy", "/img/", &cdn.url(), "")).await;
    let mut expected = Sha256::new();
    for i in 0..LEN.div_ceil(CHUNK) {
        expected.update(generated_chunk(i, LEN));
    }
    let expected = expected.finalize();

    let rss_before = rss_bytes();
    let mut peak = rss_before;
    let started = Instant::now();
    let response = client()
        .request(request(&gateway.url(&format!("/img/{H}"))))
        .await
        .expect("answer");
    assert_eq!(
        response.headers()["content-length"],
        LEN.to_string().as_str()
    );
    let mut body = response.into_body();
    let mut hash = Sha256::new();
    let mut received = 0u64;
    while let Some(frame) = tokio::time::timeout(Duration::from_secs(30), body.frame())
        .await
        .expect("no stall")
    {
        if let Ok(data) = frame.expect("frame").into_data() {
            received += data.len() as u64;
            hash.update(&data);
            if received % (16 * 1024 * 1024) < data.len() as u64 {
                peak = peak.max(rss_bytes());
            }
        }
    }
    assert_eq!(received, LEN);
    assert_eq!(hash.finalize(), expected, "body changed on the way");
    // The test process holds the stand-in CDN, the gateway and the client: a buffered body
    // would add 256 MiB. Streaming keeps growth to buffers.
    let growth = peak.saturating_sub(rss_before);
    assert!(
        growth < 48 * 1024 * 1024,
        "RSS grew by {} MiB",
        growth >> 20
    );
    eprintln!(
        "256 MiB in {:?}, RSS growth {} MiB",
        started.elapsed(),
        growth >> 20
    );
}

#[tokio::test]
async fn an_upstream_refusing_connections_yields_502_quickly() {
    let closed = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let addr = closed.local_addr().expect("addr");
    drop(closed);
    let gateway =
        TestGateway::start(&one_route("proxy", "/img/", &format!("http://{addr}"), "")).await;
    let started = Instant::now();
    let answer = get(&gateway.url(&format!("/img/{H}"))).await;
    assert_eq!(answer.status, StatusCode::BAD_GATEWAY);
    assert_eq!(answer.text(), "bad gateway: upstream unreachable\n");
    assert!(
        started.elapsed() < Duration::from_secs(2),
        "{:?}",
        started.elapsed()
    );
}

#[tokio::test]
async fn an_upstream_stalling_before_headers_yields_504_within_its_timeout() {
    let cdn = TestCdn::builder()
        .fault(Fault::StallBeforeHeaders)
        .start()
        .await;
    let gateway = TestGateway::start(&one_route(
        "proxy",
        "/img/",
        &cdn.url(),
        "response_timeout = \"300ms\"",
    ))
    .await;
    let started = Instant::now();
    let answer = get(&gateway.url(&format!("/img/{H}"))).await;
    let elapsed = started.elapsed();
    assert_eq!(answer.status, StatusCode::GATEWAY_TIMEOUT);
    assert!(
        elapsed >= Duration::from_millis(300) && elapsed < Duration::from_secs(3),
        "{elapsed:?}"
    );
}

#[tokio::test]
async fn max_upstream_connections_caps_requests_in_flight_the_rest_wait_or_get_503() {
    let (body, gate) = gated_file();
    let cdn = TestCdn::builder().body(H, body).start().await;
    let gateway = TestGateway::start(&one_route(
        "proxy",
        "/img/",
        &cdn.url(),
        "max_upstream_connections = 2\nresponse_timeout = \"400ms\"",
    ))
    .await;
    let url = gateway.url(&format!("/img/{H}"));
    tokio::time::timeout(Duration::from_secs(10), async {
        // Two downloads in flight, each holding its upstream connection mid-body.
        let mut held = Vec::new();
        for _ in 0..2 {
            let response = client().request(request(&url)).await.expect("answer");
            assert_eq!(response.status(), StatusCode::OK);
            let mut body = response.into_body();
            body.frame().await.expect("a frame").expect("data");
            held.push(body);
        }
        // A third waits for a connection, never reaches the CDN, and gets 503 when
        // response_timeout passes.
        let started = Instant::now();
        let third = get(&url).await;
        assert_eq!(
            third.status,
            StatusCode::SERVICE_UNAVAILABLE,
            "{}",
            third.text()
        );
        assert_eq!(third.text(), "service unavailable: upstream busy\n");
        assert!(started.elapsed() >= Duration::from_millis(400));
        assert_eq!(cdn.received().len(), 2, "the third request reached the CDN");

        // A fourth, sent while both are still held, waits and is served once one finishes.
        let fourth = tokio::spawn({
            let url = url.clone();
            async move { get(&url).await }
        });
        tokio::time::sleep(Duration::from_millis(100)).await;
        assert_eq!(cdn.received().len(), 2, "the fourth went past the limit");
        let releaser = tokio::spawn(async move {
            loop {
                gate.release.notify_waiters();
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
        });
        for body in held {
            let rest = body.collect().await.expect("rest").to_bytes();
            assert_eq!(&rest[..], b"second chunk");
        }
        let fourth = fourth.await.expect("task");
        assert_eq!(fourth.status, StatusCode::OK);
        assert_eq!(fourth.text(), "first chunk;second chunk");
        assert_eq!(cdn.received().len(), 3);
        releaser.abort();
    })
    .await
    .expect("within 10 s");
}

#[tokio::test]
async fn an_upstream_body_pausing_too_long_cuts_the_response() {
    let (body, _gate) = gated_file();
    let cdn = TestCdn::builder().body(H, body).start().await;
    let gateway = TestGateway::start(&one_route(
        "proxy",
        "/img/",
        &cdn.url(),
        "body_idle_timeout = \"300ms\"",
    ))
    .await;
    let result = tokio::time::timeout(Duration::from_secs(5), async {
        let response = client()
            .request(request(&gateway.url(&format!("/img/{H}"))))
            .await
            .expect("answer");
        assert_eq!(response.status(), StatusCode::OK);
        response.into_body().collect().await
    })
    .await
    .expect("cut within 5 s");
    assert!(
        result.is_err(),
        "a body that stalled mid-way must not look complete"
    );
}

#[tokio::test]
async fn an_https_upstream_with_a_private_ca_is_trusted_only_through_ca_file() {
    let (ca_pem, leaf_pem, key_pem) = self_signed_ca_and_leaf();
    let cdn = TestCdn::builder()
        .file(H, &b"over tls"[..])
        .tls(leaf_pem.into_bytes(), key_pem.into_bytes())
        .start()
        .await;
    let upstream = format!("https://127.0.0.1:{}", cdn.addr.port());
    let mut ca_file = tempfile::NamedTempFile::new().expect("temp file");
    ca_file.write_all(ca_pem.as_bytes()).expect("write");
    let ca_path = ca_file.path().display().to_string();

    let trusted = TestGateway::start(&one_route(
        "proxy",
        "/img/",
        &upstream,
        &format!("ca_file = {ca_path:?}"),
    ))
    .await;
    let answer = get(&trusted.url(&format!("/img/{H}"))).await;
    assert_eq!(answer.status, StatusCode::OK, "{}", answer.text());
    assert_eq!(&answer.body[..], b"over tls");
    assert!(cdn.received()[0].policy.is_some());

    let untrusted = TestGateway::start(&one_route("proxy", "/img/", &upstream, "")).await;
    let answer = get(&untrusted.url(&format!("/img/{H}"))).await;
    assert_eq!(answer.status, StatusCode::BAD_GATEWAY);
    assert_eq!(
        cdn.received().len(),
        1,
        "an untrusted upstream got a signed request"
    );
}

#[tokio::test]
async fn shutdown_drains_an_in_flight_download_and_refuses_new_connections() {
    let (body, gate) = gated_file();
    let cdn = TestCdn::builder().body(H, body).start().await;
    let mut gateway = TestGateway::start(&one_route("proxy", "/img/", &cdn.url(), "")).await;
    let url = gateway.url(&format!("/img/{H}"));
    let addr = gateway.addr;
    tokio::time::timeout(Duration::from_secs(10), async {
        let response = client().request(request(&url)).await.expect("answer");
        let mut body = response.into_body();
        body.frame().await.expect("a frame").expect("data");

        let mut serving = gateway.begin_shutdown();
        // Still draining: serve has not returned while the download is open.
        assert!(
            tokio::time::timeout(Duration::from_millis(200), &mut serving)
                .await
                .is_err()
        );
        assert!(
            tokio::net::TcpStream::connect(addr).await.is_err(),
            "still accepting"
        );

        gate.release.notify_one();
        let rest = body
            .collect()
            .await
            .expect("the download completes")
            .to_bytes();
        assert_eq!(&rest[..], b"second chunk");
        serving.await.expect("no panic").expect("serve returns Ok");
    })
    .await
    .expect("drained within 10 s");
}
