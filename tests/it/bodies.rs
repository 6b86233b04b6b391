//! Body plumbing through its public API: decompression of upstream bodies (gzip, deflate, br,
//! zstd) in arbitrary pieces, and the body wrappers (idle timeout, permit holding, pumping,
//! metering), with tokio's paused clock where time matters.

use crate::support;

use std::io::Write;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Full, StreamBody};
use hyper::body::{Body, Frame};
use signgate::body::{BodyIdleTimeout, BoxError, Holding, IdleTimeout, ReaderStalled, pumped};
use signgate::request_log::{AccessLog, Metered};
use signgate::rewrite::decompress::{Decompressor, Encoding};
use support::*;
use tokio::sync::{Semaphore, mpsc};
use tokio::time::Instant;

// ---------------------------------------------------------------------------------------------
// Decompression

/// The page both brotli fixtures hold. They were made with Python's `brotli` 1.2.1:
/// `brotli.compress(page, quality=Q, lgwin=16)` for Q = 1 (`tests/data/page.q1.br`, the fast
/// encoder's code path) and Q = 11 (`tests/data/page.q11.br`, context modelling, block splits).
fn page() -> Vec<u8> {
    let mut page = String::from("<!doctype html><ul>\n");
    for i in 0..100 {
        page.push_str(&format!(
            "<li><img src=\"https://cdn.filestackcontent.com/{H}?v={i}\" alt=\"picture {i}, {}\"></li>\n",
            (i * 7919) % 10007
        ));
    }
    page.push_str("</ul>\n");
    page.into_bytes()
}

const BROTLI_FAST: &[u8] = include_bytes!("../data/page.q1.br");
const BROTLI_BEST: &[u8] = include_bytes!("../data/page.q11.br");

/// [`page`] in every encoding signgate undoes, named for messages.
fn encoded_pages() -> Vec<(&'static str, Encoding, Vec<u8>)> {
    let page = page();
    let mut gzip = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
    gzip.write_all(&page).expect("gzip");
    let mut zlib = flate2::write::ZlibEncoder::new(Vec::new(), flate2::Compression::default());
    zlib.write_all(&page).expect("deflate");
    let mut zstd = zstd::stream::write::Encoder::new(Vec::new(), 3).expect("zstd");
    zstd.include_checksum(true).expect("checksum");
    zstd.write_all(&page).expect("zstd");
    vec![
        ("gzip", Encoding::Gzip, gzip.finish().expect("gzip")),
        (
            "deflate",
            Encoding::Deflate,
            zlib.finish().expect("deflate"),
        ),
        ("br (quality 1)", Encoding::Brotli, BROTLI_FAST.to_vec()),
        ("br (quality 11)", Encoding::Brotli, BROTLI_BEST.to_vec()),
        ("zstd", Encoding::Zstd, zstd.finish().expect("zstd")),
        ("identity", Encoding::Identity, page),
    ]
}

/// Feeds `pieces` to a fresh decompressor, then ends the stream.
fn decode<'a>(
    encoding: Encoding,
    pieces: impl IntoIterator<Item = &'a [u8]>,
) -> std::io::Result<Vec<u8>> {
    let mut decompressor = Decompressor::new(encoding);
    let mut out = Vec::new();
    for piece in pieces {
        out.extend(decompressor.push(piece)?);
    }
    out.extend(decompressor.finish()?);
    Ok(out)
}

#[test]
fn every_encoding_decodes_to_the_original_wherever_its_input_is_split() {
    let page = page();
    for (name, encoding, data) in encoded_pages() {
        assert_eq!(
            decode(encoding, [&data[..]]).expect(name),
            page,
            "{name}: whole"
        );
        assert_eq!(
            decode(encoding, data.chunks(1)).expect(name),
            page,
            "{name}: byte by byte"
        );
        for split in 0..=data.len() {
            let (a, b) = data.split_at(split);
            assert_eq!(
                decode(encoding, [a, b]).unwrap_or_else(|e| panic!("{name} split at {split}: {e}")),
                page,
                "{name}: split at {split}"
            );
        }
    }
}

#[test]
fn a_stream_cut_short_is_an_error_not_a_shorter_page() {
    for (name, encoding, data) in encoded_pages() {
        if encoding == Encoding::Identity {
            continue;
        }
        for keep in [1, data.len() / 2, data.len() - 1] {
            assert!(
                decode(encoding, [&data[..keep]]).is_err(),
                "{name}: {keep} of {} bytes decoded without error",
                data.len()
            );
        }
    }
}

#[test]
fn input_in_another_format_is_an_error() {
    let garbage = b"<!doctype html><p>not compressed at all</p>".repeat(4);
    for encoding in [
        Encoding::Gzip,
        Encoding::Deflate,
        Encoding::Brotli,
        Encoding::Zstd,
    ] {
        assert!(
            decode(encoding, [&garbage[..]]).is_err(),
            "{encoding:?} accepted plain HTML"
        );
    }
}

#[test]
fn any_corrupted_byte_gives_an_error_or_other_bytes_never_a_panic_and_checksums_are_checked() {
    let page = page();
    for (name, encoding, data) in encoded_pages() {
        for at in 0..data.len() {
            let mut corrupt = data.clone();
            corrupt[at] ^= 0x55;
            // Brotli has no checksum: some corruptions decode to other bytes. Either is fine;
            // what must not happen is a panic on the request path.
            let _ = decode(encoding, corrupt.chunks(64));
        }
        // gzip (CRC-32, length), zlib (Adler-32) and zstd (XXH64, when asked for, as here)
        // end in a checksum of the page.
        let trailer = match encoding {
            Encoding::Gzip => 8,
            Encoding::Deflate | Encoding::Zstd => 4,
            _ => continue,
        };
        for at in data.len() - trailer..data.len() {
            let mut corrupt = data.clone();
            corrupt[at] ^= 0x55;
            let decoded = decode(encoding, [&corrupt[..]]);
            assert!(
                decoded.is_err(),
                "{name}: checksum byte {at} corrupted, yet decoded (same page: {})",
                decoded.is_ok_and(|d| d == page)
            );
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Body wrappers

type FrameResult = Result<Frame<Bytes>, BoxError>;

/// A body whose frames the test sends; it ends when the sender is dropped.
fn channel_body(
    capacity: usize,
) -> (
    mpsc::Sender<FrameResult>,
    StreamBody<ReceiverStream<FrameResult>>,
) {
    let (tx, rx) = mpsc::channel(capacity);
    (tx, StreamBody::new(ReceiverStream(rx)))
}

fn data(text: &'static str) -> FrameResult {
    Ok(Frame::data(Bytes::from_static(text.as_bytes())))
}

/// The next frame's bytes; panics on an error or the end.
async fn next_data<B>(body: &mut B) -> Bytes
where
    B: Body<Data = Bytes> + Unpin,
    B::Error: std::fmt::Debug,
{
    body.frame()
        .await
        .expect("a frame")
        .expect("not an error")
        .into_data()
        .expect("data")
}

#[tokio::test(start_paused = true)]
async fn idle_timeout_fails_a_body_that_stays_quiet_for_its_limit_from_the_last_frame() {
    const IDLE: Duration = Duration::from_secs(5);
    let (tx, inner) = channel_body(4);
    let mut body = IdleTimeout::new(inner, IDLE);
    tx.send(data("first")).await.expect("send");
    tokio::time::advance(Duration::from_secs(3)).await;
    assert_eq!(next_data(&mut body).await, "first");

    // From here nothing comes, though the sender stays: the body fails IDLE after that frame.
    let quiet_from = Instant::now();
    let error = body
        .frame()
        .await
        .expect("an error, not the end")
        .expect_err("the body went quiet");
    assert_eq!(quiet_from.elapsed(), IDLE);
    let idle = error
        .downcast_ref::<BodyIdleTimeout>()
        .expect("a BodyIdleTimeout");
    assert_eq!(idle.0, IDLE);
    drop(tx);
}

#[tokio::test(start_paused = true)]
async fn idle_timeout_lets_a_slow_body_through_while_each_pause_is_shorter() {
    const IDLE: Duration = Duration::from_secs(5);
    let (tx, inner) = channel_body(1);
    let mut body = IdleTimeout::new(inner, IDLE);
    let started = Instant::now();
    let sender = tokio::spawn(async move {
        for text in ["a", "b", "c", "d"] {
            tokio::time::sleep(IDLE - Duration::from_secs(1)).await;
            tx.send(data(text)).await.expect("send");
        }
    });
    let mut all = Vec::new();
    while let Some(frame) = body.frame().await {
        all.extend_from_slice(&frame.expect("no idle timeout").into_data().expect("data"));
    }
    assert_eq!(all, b"abcd");
    assert_eq!(started.elapsed(), 4 * (IDLE - Duration::from_secs(1)));
    sender.await.expect("sender");
}

#[tokio::test]
async fn idle_timeout_passes_on_frames_errors_the_end_and_the_size() {
    let mut body = IdleTimeout::new(
        Full::new(Bytes::from_static(b"whole")),
        Duration::from_secs(5),
    );
    assert_eq!(body.size_hint().exact(), Some(5));
    assert!(!body.is_end_stream());
    assert_eq!(next_data(&mut body).await, "whole");
    assert!(body.is_end_stream());
    assert!(body.frame().await.is_none());

    let (tx, inner) = channel_body(1);
    let mut body = IdleTimeout::new(inner, Duration::from_secs(5));
    tx.send(Err("upstream reset".into())).await.expect("send");
    let error = body
        .frame()
        .await
        .expect("a frame")
        .expect_err("the inner error");
    assert_eq!(error.to_string(), "upstream reset");
}

#[tokio::test]
async fn holding_keeps_its_guard_until_the_body_is_dropped_not_just_ended() {
    let permits = Arc::new(Semaphore::new(1));
    let permit = Arc::clone(&permits)
        .acquire_owned()
        .await
        .expect("a permit");
    let mut body = Holding::new(Full::new(Bytes::from_static(b"held")), permit);
    assert_eq!(body.size_hint().exact(), Some(4));
    assert_eq!(next_data(&mut body).await, "held");
    assert!(body.frame().await.is_none());
    assert!(body.is_end_stream());
    assert_eq!(permits.available_permits(), 0, "released before the drop");
    drop(body);
    assert_eq!(permits.available_permits(), 1, "not released on drop");
}

#[tokio::test]
async fn a_pumped_body_passes_every_frame_and_ends_cleanly() {
    let (tx, inner) = channel_body(4);
    let body = pumped(inner.boxed_unsync(), Duration::from_secs(5));
    let sender = tokio::spawn(async move {
        for text in ["one;", "two;", "three"] {
            tx.send(data(text)).await.expect("send");
        }
    });
    let all = body.collect().await.expect("no error at the end");
    assert_eq!(all.to_bytes(), "one;two;three");
    sender.await.expect("sender");
}

/// A body of `frames` from a channel that holds an upstream permit (from `permits`) until dropped,
/// as the upstream client's bodies do.
async fn upstream_body(
    permits: &Arc<Semaphore>,
) -> (mpsc::Sender<FrameResult>, signgate::body::ResponseBody) {
    let permit = Arc::clone(permits).acquire_owned().await.expect("a permit");
    let (tx, inner) = channel_body(4);
    (tx, Holding::new(inner, permit).boxed_unsync())
}

#[tokio::test(start_paused = true)]
async fn a_pumped_body_its_reader_stopped_pulling_is_dropped_after_stall_and_the_reader_told() {
    const STALL: Duration = Duration::from_secs(5);
    let permits = Arc::new(Semaphore::new(1));
    let (tx, inner) = upstream_body(&permits).await;
    let mut body = pumped(inner, STALL);
    // The pump takes the first frame into its one-frame channel; the second waits for a reader
    // that never comes.
    tx.send(data("first")).await.expect("send");
    tx.send(data("second")).await.expect("send");
    let started = Instant::now();
    // The upstream body, and with it the permit, is given up once a frame waited STALL.
    let _permit = tokio::time::timeout(2 * STALL, permits.acquire())
        .await
        .expect("the upstream body was given up")
        .expect("the permit comes back");
    assert_eq!(started.elapsed(), STALL);
    // The reader gets what was already handed over, then the reason, not a clean end.
    assert_eq!(next_data(&mut body).await, "first");
    let error = body
        .frame()
        .await
        .expect("an error, not the end")
        .expect_err("abandoned");
    let stalled = error
        .downcast_ref::<ReaderStalled>()
        .expect("ReaderStalled");
    assert_eq!(stalled.0, STALL);
}

#[tokio::test]
async fn a_pumped_body_dropped_by_its_reader_gives_up_the_upstream_at_the_next_frame() {
    let permits = Arc::new(Semaphore::new(1));
    let (tx, inner) = upstream_body(&permits).await;
    let body = pumped(inner, Duration::from_secs(3600));
    drop(body);
    tx.send(data("unwanted")).await.expect("send");
    let _permit = tokio::time::timeout(Duration::from_secs(10), permits.acquire())
        .await
        .expect("the permit came back well before the stall limit")
        .expect("open");
}

fn access_log() -> AccessLog {
    AccessLog {
        method: http::Method::GET,
        route: "images".into(),
        target: format!("/img/{H}").parse().expect("a path"),
        status: 200,
        cache: "hit",
        rewrite: None,
        started: std::time::Instant::now(),
        peer: ([127, 0, 0, 1], 40000).into(),
        upstream_status: Some(http::StatusCode::OK),
        request_id: signgate::request_id::RequestIds::new().make(),
        verify: None,
    }
}

/// The access lines written so far.
fn access_lines(log: &CapturedLog) -> Vec<String> {
    log.text()
        .lines()
        .filter(|line| line.contains("signgate::access"))
        .map(str::to_owned)
        .collect()
}

// current_thread: the subscriber set for this thread sees every drop.
#[tokio::test(flavor = "current_thread")]
async fn metered_writes_one_access_line_when_dropped_with_bytes_and_completeness() {
    let log = CapturedLog::default();
    let subscriber = tracing_subscriber::fmt()
        .with_writer(log.clone())
        .with_ansi(false)
        .finish();
    let _guard = tracing::subscriber::set_default(subscriber);

    let body = Metered::new(
        signgate::body::full("hello"),
        access_log(),
        Default::default(),
    );
    assert_eq!(body.collect().await.expect("body").to_bytes(), "hello");
    let lines = access_lines(&log);
    assert_eq!(lines.len(), 1, "{lines:?}");
    let path = format!("path=/img/{H}");
    for field in [
        "method=GET",
        "route=images",
        &path,
        "status=200",
        "bytes=5",
        "cache=hit",
        "duration_us=",
        "complete=true",
    ] {
        assert!(lines[0].contains(field), "{field} missing: {}", lines[0]);
    }

    // A reader that leaves after the first of two frames.
    let (tx, inner) = channel_body(2);
    tx.send(data("abc")).await.expect("send");
    tx.send(data("defgh")).await.expect("send");
    let mut body = Metered::new(inner.boxed_unsync(), access_log(), Default::default());
    assert_eq!(next_data(&mut body).await, "abc");
    assert_eq!(
        access_lines(&log).len(),
        1,
        "logged before the body was dropped"
    );
    drop(body);
    let lines = access_lines(&log);
    assert_eq!(lines.len(), 2, "{lines:?}");
    assert!(
        lines[1].contains("bytes=3") && lines[1].contains("complete=false"),
        "{}",
        lines[1]
    );
}
