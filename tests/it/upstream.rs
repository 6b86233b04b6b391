//! Upstream behaviour over real sockets: streaming, timeouts, refusals, TLS, graceful shutdown.

use crate::support;

use std::io::Write;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::StatusCode;
use http_body_util::BodyExt;
use signgate::clock::{Clock, SystemClock};
use support::*;
use tokio::sync::watch;

/// A file that sends its first chunk, then its second once the returned gate opens.
fn gated_file() -> (FileBody, Arc<Gate>) {
    let gate = Gate::new();
    let body = FileBody::Gated {
        first: Bytes::from_static(b"first chunk;"),
        second: Bytes::from_static(b"second chunk"),
        gate: Arc::clone(&gate),
    };
    (body, gate)
}

/// The system clock, counting its reads. The gateway reads its clock once, as it begins a
/// request, so the count tells how many requests it has begun.
#[derive(Default)]
struct CountingClock {
    reads: watch::Sender<usize>,
}

impl Clock for CountingClock {
    fn now_unix(&self) -> u64 {
        self.reads.send_modify(|reads| *reads += 1);
        SystemClock.now_unix()
    }
}

impl CountingClock {
    fn reads(&self) -> usize {
        *self.reads.borrow()
    }

    /// Resolves once the clock has been read `n` times in all.
    async fn read_times(&self, n: usize) {
        let _ = self.reads.subscribe().wait_for(|&reads| reads >= n).await;
    }
}

#[tokio::test]
async fn bodies_stream_chunk_by_chunk_and_a_departed_client_cancels_upstream() {
    let (body, gate) = gated_file();
    let cdn = TestCdn::builder().body(H, body).start().await;
    let gateway = TestGateway::start(&one_route("proxy", "/img/", &cdn.url(), "")).await;
    tokio::time::timeout(Duration::from_secs(10), async {
        let response = client()
            .request(get_request(&gateway.url(&format!("/img/{H}"))))
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
        gate.open();
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
            .request(get_request(&gateway.url(&format!("/img/{H}"))))
            .await
            .expect("answer");
        let mut body = response.into_body();
        body.frame().await.expect("a frame").expect("data");
        drop(body);
        gate.closed().await;
    })
    .await
    .expect("upstream cancelled within 10 s");
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
    let cdn = TestCdn::builder().stall_before_headers().start().await;
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
    let clock = Arc::new(CountingClock::default());
    let gateway = TestGateway::start_with_clock(
        &one_route(
            "proxy",
            "/img/",
            &cdn.url(),
            "max_upstream_connections = 2\nresponse_timeout = \"400ms\"",
        ),
        Arc::clone(&clock) as Arc<dyn Clock>,
    )
    .await;
    let url = gateway.url(&format!("/img/{H}"));
    tokio::time::timeout(Duration::from_secs(10), async {
        // Two downloads in flight, each holding its upstream connection mid-body.
        let mut held = Vec::new();
        for _ in 0..2 {
            let response = client().request(get_request(&url)).await.expect("answer");
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

        // A fourth, sent while both are still held, waits and is served once they finish.
        let begun = clock.reads();
        let fourth = tokio::spawn({
            let url = url.clone();
            async move { get(&url).await }
        });
        // Once the gateway has begun the fourth, it is queued for a connection: it signs and
        // queues in the same poll, and on this one-thread runtime nothing runs in between. (That
        // nothing past the limit reaches the CDN is the third's check.)
        clock.read_times(begun + 1).await;
        gate.open();
        for body in held {
            let rest = body.collect().await.expect("rest").to_bytes();
            assert_eq!(&rest[..], b"second chunk");
        }
        let fourth = fourth.await.expect("task");
        assert_eq!(fourth.status, StatusCode::OK);
        assert_eq!(fourth.text(), "first chunk;second chunk");
        assert_eq!(cdn.received().len(), 3);
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
            .request(get_request(&gateway.url(&format!("/img/{H}"))))
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
        let response = client().request(get_request(&url)).await.expect("answer");
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

        gate.open();
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
