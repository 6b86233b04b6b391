//! Checks that measure the whole process (resident memory, open descriptors), in a binary of
//! their own and one at a time: anything else running in the process would be counted too.

mod support;

use std::sync::Arc;
use std::time::{Duration, Instant};

use http::StatusCode;
use http_body_util::BodyExt;
use sha2::{Digest, Sha256};
use support::faulty::*;
use support::*;

/// Held by each measuring test for its whole run, so that they never run side by side.
static MEASURING: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

#[tokio::test]
async fn a_256_mib_body_streams_through_intact_with_flat_memory() {
    let _alone = MEASURING.lock().await;
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
        .request(get_request(&gateway.url(&format!("/img/{H}"))))
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

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ten_thousand_faulted_requests_leak_nothing() {
    let _alone = MEASURING.lock().await;
    let faults = [
        UpstreamFault::AcceptThenClose,
        UpstreamFault::ResetMidHeaders,
        UpstreamFault::Garbage,
        UpstreamFault::ResetMidBody,
    ];
    let mut gateways = Vec::new();
    for fault in faults {
        // Default timeouts: every fault here ends the exchange itself, and a 300 ms limit would
        // turn a busy machine's slowness into 504s.
        let upstream = format!("http://{}", faulty_upstream(fault).await);
        gateways.push(Arc::new(
            TestGateway::start(&one_route("proxy", "/img/", &upstream, "")).await,
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
    // Connections close asynchronously and nothing announces the last one: poll, with a bound.
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

/// 256 MiB of zeros in a few hundred bytes of brotli (see `src/rewrite/decompress.rs`).
const BROTLI_BOMB: &[u8] = include_bytes!("data/zeros-256MiB.br");
/// A page with one 64 MiB `<style>` block, then a CDN picture, in 65 KB of gzip (Python's
/// `gzip.compress(page, 9, mtime=0)`, the page being `<html><head><style>` + `a{}` repeated to
/// 64 MiB + `</style></head><body><img src="https://cdn.filestackcontent.com/H"></body></html>`).
const STYLE_BOMB: &[u8] = include_bytes!("data/style-64MiB.html.gz");

/// Reads a whole answer, returning its length, its last 200 bytes and the peak RSS seen.
async fn read_measuring(url: &str, mut peak: u64) -> (u64, Vec<u8>, u64) {
    let response = client().request(get_request(url)).await.expect("answer");
    assert_eq!(response.status(), StatusCode::OK);
    let mut body = response.into_body();
    let mut received = 0u64;
    let mut tail = Vec::new();
    while let Some(frame) = tokio::time::timeout(Duration::from_secs(30), body.frame())
        .await
        .expect("no stall")
    {
        if let Ok(data) = frame.expect("frame").into_data() {
            received += data.len() as u64;
            tail.extend_from_slice(&data);
            let keep = tail.len().saturating_sub(200);
            tail.drain(..keep);
            if received % (8 * 1024 * 1024) < data.len() as u64 {
                peak = peak.max(rss_bytes());
            }
        }
    }
    (received, tail, peak)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn decompression_and_style_bombs_stream_with_flat_memory() {
    let _alone = MEASURING.lock().await;
    let origin = start_origin(Arc::new(|parts, _| match parts.uri.path() {
        "/bomb" => respond(
            200,
            &[("content-type", "text/html"), ("content-encoding", "br")],
            BROTLI_BOMB,
        ),
        "/style" => respond(
            200,
            &[("content-type", "text/html"), ("content-encoding", "gzip")],
            STYLE_BOMB,
        ),
        _ => respond(200, &[("content-type", "text/html")], "<p>ordinary</p>"),
    }))
    .await;
    let gateway = TestGateway::start(&one_route(
        "site",
        "/",
        &format!("http://{origin}"),
        "rewrite_limit = \"8MiB\"",
    ))
    .await;
    let rss_before = rss_bytes();

    // An ordinary client is served while the bomb streams.
    let bomb_url = gateway.url("/bomb");
    let bomb = tokio::spawn(async move { read_measuring(&bomb_url, 0).await });
    tokio::time::sleep(Duration::from_millis(200)).await;
    let started = Instant::now();
    let ordinary = get(&gateway.url("/")).await;
    assert_eq!(ordinary.text(), "<p>ordinary</p>");
    assert!(
        started.elapsed() < Duration::from_secs(2),
        "{:?}",
        started.elapsed()
    );
    let (received, _, peak) = bomb.await.expect("bomb read");
    assert_eq!(received, 256 << 20, "every decoded byte arrives");

    // The whole style page is rewritten (the limit is above it), its block held no further
    // than the <style> cap.
    let whole = TestGateway::start(&one_route(
        "site",
        "/",
        &format!("http://{origin}"),
        "rewrite_limit = \"100MiB\"",
    ))
    .await;
    let (received, tail, peak) = read_measuring(&whole.url("/style"), peak).await;
    assert!(received > 67_108_982, "{received}");
    let tail = String::from_utf8_lossy(&tail);
    assert!(
        tail.contains("&amp;signature="),
        "the picture after the block is signed: {tail}"
    );

    let grown = peak.saturating_sub(rss_before) / (1024 * 1024);
    assert!(grown < 128, "RSS grew {grown} MiB while decoding bombs");
}

/// A page with `count` distinct CDN URLs of about `len` bytes each (the fragment makes them
/// distinct and long; the CDN URL before it is an ordinary one the route signs).
fn page_of_long_urls(seed: usize, count: usize, len: usize) -> String {
    let mut page = String::with_capacity(count * (len + 32));
    for i in 0..count {
        let fragment = format!("{seed:08}-{i:08}-");
        let padding = "p".repeat(len.saturating_sub(fragment.len()));
        page.push_str(&format!(
            "<img src=\"https://cdn.filestackcontent.com/{H}#{fragment}{padding}\">\n"
        ));
    }
    page
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_signed_url_cache_is_bounded_by_bytes_not_by_entries() {
    let _alone = MEASURING.lock().await;
    let origin = start_origin(Arc::new(|parts, _| {
        let query = parts.uri.query().unwrap_or_default();
        let (kind, seed) = query.split_once('=').unwrap_or(("short", "0"));
        let seed: usize = seed.parse().unwrap_or(0);
        let page = match kind {
            // One 50 KB URL per page, as a site that reflects a query into its page gives.
            "long" => page_of_long_urls(seed, 1, 50_000),
            // 1,000 distinct 1 KB URLs per page.
            _ => page_of_long_urls(seed, 1_000, 1_000),
        };
        respond(200, &[("content-type", "text/html")], page)
    }))
    .await;
    let gateway =
        TestGateway::start(&one_route("site", "/", &format!("http://{origin}"), "")).await;
    let rss_before = rss_bytes();
    let mut peak = rss_before;
    let mut signed = 0;
    for seed in 0..1_000 {
        let page = get(&gateway.url(&format!("/?long={seed}"))).await;
        signed += page.text().matches("&amp;signature=").count();
        if seed % 100 == 0 {
            peak = peak.max(rss_bytes());
        }
    }
    for seed in 0..40 {
        let page = get(&gateway.url(&format!("/?short={seed}"))).await;
        signed += page.text().matches("&amp;signature=").count();
        peak = peak.max(rss_bytes());
    }
    assert_eq!(
        signed,
        1_000 + 40 * 1_000,
        "every URL is signed, cached or not"
    );
    let grown = peak.saturating_sub(rss_before) / (1024 * 1024);
    eprintln!("RSS grew {grown} MiB for 1,000 50 KB URLs and 40,000 1 KB ones");
    assert!(grown < 48, "RSS grew {grown} MiB");
}
