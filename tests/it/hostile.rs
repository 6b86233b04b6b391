//! Hostile input, as raw bytes over TCP: every row gets a short 4xx (or the signed answer the
//! request deserves), nothing unsigned or misrouted reaches the CDN, and the gateway keeps
//! serving.

use crate::support;

use std::sync::Arc;
use std::time::Duration;

use support::*;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// Sends `bytes` on a fresh connection; returns the status code (0 if the connection closed
/// without an answer) and the whole answer.
async fn raw(addr: std::net::SocketAddr, bytes: &[u8]) -> (u16, String) {
    let mut stream = TcpStream::connect(addr).await.expect("connects");
    // A server may answer and close before reading everything: a failed write is fine.
    let _ = stream.write_all(bytes).await;
    let mut answer = Vec::new();
    let _ = tokio::time::timeout(Duration::from_secs(5), stream.read_to_end(&mut answer)).await;
    let text = String::from_utf8_lossy(&answer).into_owned();
    let status = text
        .strip_prefix("HTTP/1.1 ")
        .or_else(|| text.strip_prefix("HTTP/1.0 "))
        .and_then(|rest| rest.get(..3))
        .and_then(|code| code.parse().ok())
        .unwrap_or(0);
    (status, text)
}

fn get(target: &str) -> Vec<u8> {
    format!("GET {target} HTTP/1.1\r\nHost: gw\r\nConnection: close\r\n\r\n").into_bytes()
}

fn method(method: &str, target: &str) -> Vec<u8> {
    format!(
        "{method} {target} HTTP/1.1\r\nHost: gw\r\nConnection: close\r\nContent-Length: 0\r\n\r\n"
    )
    .into_bytes()
}

fn with_headers(target: &str, headers: &str) -> Vec<u8> {
    format!("GET {target} HTTP/1.1\r\nHost: gw\r\n{headers}Connection: close\r\n\r\n").into_bytes()
}

/// What a row expects.
#[derive(Debug, Clone, Copy)]
enum Expect {
    /// Exactly this status.
    Status(u16),
    /// Some 4xx, or the connection closed without an answer (HTTP says so for broken framing).
    Refused,
}

#[tokio::test]
async fn the_hostile_input_catalogue() {
    let cdn = TestCdn::builder().file(H, &b"the file"[..]).start().await;
    let toml = format!(
        "{SIGNING}[[route]]\nname = \"img\"\nprefix = \"/img/\"\nmode = \"proxy\"\nupstream = \"{}\"\ncalls = [\"read\", \"convert\"]\n\
         [[route]]\nname = \"go\"\nprefix = \"/go/\"\nmode = \"redirect\"\nupstream = \"{}\"\n",
        cdn.url(),
        cdn.url()
    );
    let gateway = TestGateway::start(&toml).await;
    let long = "a".repeat(20_000);
    let huge_query = format!("/img/{H}?q={}", "b".repeat(200_000));
    let many_headers: String = (0..200).map(|i| format!("X-H{i}: v\r\n")).collect();
    let big_header = format!("X-Big: {}\r\n", "c".repeat(100_000));
    use Expect::*;
    let rows: Vec<(&str, Vec<u8>, Expect)> = vec![
        // Path traversal and encodings of it.
        ("dot-dot", get("/img/../admin"), Status(400)),
        ("dot-dot before handle", get(&format!("/img/../{H}")), Status(400)),
        ("encoded dot-dot", get("/img/%2e%2e/admin"), Status(400)),
        ("encoded dot-dot upper", get(&format!("/img/%2E%2E%2F{H}")), Status(400)),
        ("double-encoded dot-dot", get(&format!("/img/%252e%252e/{H}")), Status(400)),
        ("encoded backslash", get(&format!("/img/..%5c{H}")), Status(400)),
        ("raw backslash", get(&format!("/img/..\\{H}")), Refused),
        ("dot-dot after handle", get(&format!("/img/{H}/../x")), Status(400)),
        ("empty segment", get(&format!("/img//{H}")), Status(400)),
        ("dot segment", get(&format!("/img/./{H}")), Status(400)),
        ("outside any route", get("/admin"), Status(404)),
        ("prefix without slash", get(&format!("/img{H}")), Status(404)),
        // Handles of the wrong length or alphabet.
        ("short handle", get("/img/abc"), Status(400)),
        ("long handle", get(&format!("/img/{H}X")), Status(400)),
        ("handle with a dot", get("/img/KW9EJhYtS6y48Whm2S6."), Status(400)),
        ("handle percent-encoded", get("/img/%4BW9EJhYtS6y48Whm2S6D"), Status(400)),
        ("handle in UTF-8", get("/img/%C3%A9W9EJhYtS6y48Whm2S6"), Status(400)),
        ("invalid UTF-8", get("/img/%FF%FEJhYtS6y48Whm2S6D"), Status(400)),
        ("no handle", get("/img/"), Status(400)),
        ("trailing slash", get(&format!("/img/{H}/")), Status(400)),
        // NUL and control characters.
        ("encoded NUL", get(&format!("/img/{H}%00")), Status(400)),
        ("raw NUL", get(&format!("/img/{H}\0")), Refused),
        ("raw tab", get(&format!("/img/\t{H}")), Refused),
        ("raw DEL", get(&format!("/img/{H}\x7f")), Refused),
        ("raw UTF-8 in the target", get("/img/caf\u{e9}"), Refused),
        ("line separator in the target", get(&format!("/img/{H}\u{2028}")), Refused),
        ("bidi override in the query", get(&format!("/img/{H}?q=\u{202e}")), Refused),
        ("encoded CRLF", get(&format!("/img/{H}%0d%0aX-Injected:%201")), Status(400)),
        ("raw CR in target", format!("GET /img/{H}\r HTTP/1.1\r\nHost: gw\r\n\r\n").into_bytes(), Refused),
        ("bare CR in a header", format!("GET /img/{H} HTTP/1.1\r\nHost: gw\r\nX-A: a\rInjected: b\r\n\r\n").into_bytes(), Refused),
        ("header without colon", with_headers(&format!("/img/{H}"), "NoColonHere\r\n"), Refused),
        ("space before colon", with_headers(&format!("/img/{H}"), "X-A : b\r\n"), Refused),
        // Overlong.
        ("overlong path", get(&format!("/img/{long}")), Refused),
        ("overlong query", get(&huge_query), Refused),
        ("oversized header", with_headers(&format!("/img/{H}"), &big_header), Refused),
        ("too many headers", with_headers(&format!("/img/{H}"), &many_headers), Refused),
        // Client credentials smuggled in every spelling: dropped, the CDN gets ours.
        ("query policy", get(&format!("/img/{H}?policy=evil&signature=evil")), Status(200)),
        ("query upper case", get(&format!("/img/{H}?POLICY=evil&SIGNATURE=evil")), Status(200)),
        ("query mixed case, repeated", get(&format!("/img/{H}?Policy=evil&policy=evil2&sIgNaTuRe=evil")), Status(200)),
        ("query encoded name", get(&format!("/img/{H}?%70olicy=evil&%73ignature=evil")), Status(200)),
        ("query encoded =", get(&format!("/img/{H}?policy%3Devil&signature%3devil")), Status(200)),
        ("query encoded &", get(&format!("/img/{H}?x=1%26policy%3Devil")), Status(200)),
        ("query array name", get(&format!("/img/{H}?policy[]=evil&signature[0]=evil")), Status(200)),
        ("query semicolon", get(&format!("/img/{H}?a=1;policy=evil")), Status(200)),
        ("query security", get(&format!("/img/{H}?security=p:evil,s:evil")), Status(200)),
        ("security task", get(&format!("/img/security=p:evil,s:evil/{H}")), Status(200)),
        ("security task long upper", get(&format!("/img/SECURITY=policy:evil,signature:evil/{H}")), Status(200)),
        ("security task among tasks", get(&format!("/img/resize=width:9/security=p:evil,s:evil/{H}")), Status(200)),
        ("security in redirect", get(&format!("/go/security=s:evil,p:evil/{H}?policy=evil")), Status(307)),
        // Tasks that try to reach another URL.
        ("external URL task", get("/img/resize=width:1/https:%2F%2Fevil.example%2Fx.png"), Status(400)),
        ("external URL after handle", get(&format!("/img/{H}/https://evil.example/x")), Status(403)),
        ("quoted external URL", get("/img/%22https://evil.example/x%22"), Status(403)),
        ("api key and external URL", get("/img/APIKEY12345/https://evil.example/x"), Status(403)),
        ("task with a slash smuggled encoded", get(&format!("/img/resize=width:1%2F..%2F/{H}")), Status(400)),
        // Request targets and methods.
        ("absolute-form target", get(&format!("http://evil.example/img/{H}")), Status(200)),
        ("absolute-form traversal", get("http://evil.example/img/../admin"), Status(400)),
        ("asterisk-form", method("OPTIONS", "*"), Status(404)),
        ("CONNECT", b"CONNECT evil.example:443 HTTP/1.1\r\nHost: evil.example:443\r\nConnection: close\r\n\r\n".to_vec(), Refused),
        ("POST", method("POST", &format!("/img/{H}")), Status(405)),
        ("PUT", method("PUT", &format!("/img/{H}")), Status(405)),
        ("DELETE", method("DELETE", &format!("/img/{H}")), Status(405)),
        ("PATCH", method("PATCH", &format!("/img/{H}")), Status(405)),
        ("TRACE", method("TRACE", &format!("/img/{H}")), Status(405)),
        ("unknown method", method("BREW", &format!("/img/{H}")), Status(405)),
        ("lower-case method", method("get", &format!("/img/{H}")), Status(405)),
        // Request smuggling: conflicting framing.
        ("CL and TE", format!("POST /img/{H} HTTP/1.1\r\nHost: gw\r\nContent-Length: 4\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\nGET /admin HTTP/1.1\r\nHost: gw\r\n\r\n").into_bytes(), Refused),
        ("two content lengths", format!("POST /img/{H} HTTP/1.1\r\nHost: gw\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\nab").into_bytes(), Refused),
        ("negative content length", format!("POST /img/{H} HTTP/1.1\r\nHost: gw\r\nContent-Length: -1\r\n\r\n").into_bytes(), Refused),
        ("non-numeric content length", format!("POST /img/{H} HTTP/1.1\r\nHost: gw\r\nContent-Length: abc\r\n\r\n").into_bytes(), Refused),
        ("unknown transfer coding", format!("POST /img/{H} HTTP/1.1\r\nHost: gw\r\nTransfer-Encoding: xchunked\r\n\r\n").into_bytes(), Refused),
        ("bad chunk size", format!("POST /img/{H} HTTP/1.1\r\nHost: gw\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n\r\nzz\r\n").into_bytes(), Refused),
        // Versions and garbage.
        ("HTTP/1.0 without Host", format!("GET /img/{H} HTTP/1.0\r\n\r\n").into_bytes(), Status(200)),
        ("HTTP/1.1 without Host", format!("GET /img/{H} HTTP/1.1\r\nConnection: close\r\n\r\n").into_bytes(), Status(400)),
        ("two Host headers", format!("GET /img/{H} HTTP/1.1\r\nHost: a\r\nHost: b\r\nConnection: close\r\n\r\n").into_bytes(), Status(400)),
        ("HTTP/3.0", format!("GET /img/{H} HTTP/3.0\r\nHost: gw\r\n\r\n").into_bytes(), Refused),
        ("garbage request line", b"HELLO THERE\r\n\r\n".to_vec(), Refused),
        ("binary garbage", vec![0x16, 0x03, 0x01, 0x00, 0xa5, 0x01, 0x00, 0x00, 0xa1, 0x03, 0x03], Refused),
        ("invalid UTF-8 header value", with_headers(&format!("/img/{H}"), "User-Agent: \u{fffd}\u{00ff}\r\n"), Status(200)),
    ];
    assert!(rows.len() >= 60, "{} rows", rows.len());

    for (name, bytes, expect) in &rows {
        let started = std::time::Instant::now();
        let (status, answer) = raw(gateway.addr, bytes).await;
        assert!(
            started.elapsed() < Duration::from_secs(3),
            "{name}: answered in {:?}",
            started.elapsed()
        );
        match expect {
            Status(code) => assert_eq!(status, *code, "{name}: {answer:.300}"),
            Refused => assert!(
                status == 0 || (400..500).contains(&status),
                "{name}: expected a 4xx or a closed connection, got {answer:.300}"
            ),
        }
        assert!(answer.len() < 2_000, "{name}: long answer");
        assert!(!answer.contains(SECRET), "{name}: the secret leaked");
        // The gateway keeps serving.
        let (after, _) = raw(gateway.addr, &get(&format!("/img/{H}"))).await;
        assert_eq!(after, 200, "{name}: the next request failed");
    }

    // Nothing unsigned, client-signed or misrouted reached the CDN.
    let received = cdn.received();
    assert!(!received.is_empty());
    for request in &received {
        assert!(
            request.policy.is_some(),
            "unsigned request reached the CDN: {}",
            request.uri
        );
        assert!(
            !request.uri.contains("evil"),
            "client input reached the CDN: {}",
            request.uri
        );
        assert_eq!(request.headers["host"], cdn.addr.to_string());
        assert!(
            request.uri.ends_with(H) || request.uri.contains(&format!("/{H}?")),
            "{}",
            request.uri
        );
    }
}

#[tokio::test]
async fn an_h2_client_resetting_a_stream_mid_body_does_not_hurt_the_connection() {
    use http_body_util::BodyExt;
    let cdn = TestCdn::builder()
        .body(
            H,
            FileBody::Generated {
                len: 8 * 1024 * 1024,
            },
        )
        .file(H2, &b"small"[..])
        .start()
        .await;
    let gateway = TestGateway::start(&one_route("proxy", "/img/", &cdn.url(), "")).await;
    let h2 = h2_client();
    tokio::time::timeout(Duration::from_secs(10), async {
        for _ in 0..3 {
            let request = get_request(&gateway.url(&format!("/img/{H}")));
            let mut body = h2.request(request).await.expect("answer").into_body();
            body.frame().await.expect("a frame").expect("data");
            drop(body); // RST_STREAM mid-body
            let small = send_with(
                &h2,
                http::Method::GET,
                &gateway.url(&format!("/img/{H2}")),
                &[],
            )
            .await;
            assert_eq!(small.status, http::StatusCode::OK);
            assert_eq!(&small.body[..], b"small");
        }
    })
    .await
    .expect("within 10 s");
}

/// Whatever the version, a request with raw bytes outside ASCII in its target is refused before
/// routing: nothing reaches the site, and nothing raw reaches the log.
#[tokio::test]
async fn non_ascii_request_targets_are_refused_over_both_versions() {
    let seen = Arc::new(std::sync::Mutex::new(Vec::<String>::new()));
    let origin = {
        let seen = Arc::clone(&seen);
        start_origin(Arc::new(move |parts, _| {
            seen.lock().expect("seen").push(parts.uri.to_string());
            respond(200, &[("content-type", "text/plain")], "site")
        }))
        .await
    };
    let gateway =
        TestGateway::start(&one_route("site", "/", &format!("http://{origin}"), "")).await;
    let h2 = h2_client();
    for path in [
        "/a\u{2028}b",
        "/a\u{0085}b",
        "/\u{202e}gpj.exe",
        "/caf\u{e9}?q=\u{e9}",
    ] {
        let url = gateway.url(path);
        let answer = send_with(&h2, http::Method::GET, &url, &[]).await;
        assert_eq!(answer.status, http::StatusCode::BAD_REQUEST, "h2 {path:?}");
        let (status, _) = raw(gateway.addr, &get(path)).await;
        assert!(status == 0 || status == 400, "HTTP/1.1 {path:?}: {status}");
    }
    assert!(seen.lock().expect("seen").is_empty(), "{:?}", seen.lock());
    // Percent-encoded, the same characters are an ordinary target.
    let ok = send_with(&h2, http::Method::GET, &gateway.url("/caf%C3%A9"), &[]).await;
    assert_eq!(ok.status, http::StatusCode::OK);
}

/// HPACK lets a client send far fewer bytes than its headers decode to: an HTTP/2 request is
/// held to the HTTP/1.1 header count and to a 16 KiB decoded header list.
#[tokio::test]
async fn h2_header_lists_are_held_to_the_count_and_size_limits() {
    let seen = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let origin = {
        let seen = Arc::clone(&seen);
        start_origin(Arc::new(move |_, _| {
            seen.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
            respond(200, &[("content-type", "text/plain")], "site")
        }))
        .await
    };
    let cdn = TestCdn::builder().file(H, &b"the file"[..]).start().await;
    let toml = format!(
        "{SIGNING}[[route]]\nname = \"img\"\nprefix = \"/img/\"\nmode = \"proxy\"\nupstream = \"{}\"\n\
         [[route]]\nname = \"site\"\nprefix = \"/\"\nmode = \"site\"\nupstream = \"http://{origin}\"\n",
        cdn.url()
    );
    let gateway = TestGateway::start(&toml).await;
    let h2 = h2_client();
    let names: Vec<String> = (0..120).map(|i| format!("x-h{i}")).collect();
    let many: Vec<(&str, &str)> = names.iter().map(|n| (n.as_str(), "v")).collect();
    // A proxy route forwards none of these, so only the count can refuse them there.
    for path in [format!("/img/{H}"), "/".to_owned()] {
        let answer = send_with(&h2, http::Method::GET, &gateway.url(&path), &many).await;
        assert_eq!(
            answer.status,
            http::StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE,
            "{path}"
        );
    }
    assert!(cdn.received().is_empty(), "nothing reached the CDN");
    // The same 4,000-byte value ten times: 40 KB decoded from a few hundred bytes sent.
    let big = "b".repeat(4_000);
    let repeated: Vec<(&str, &str)> = names[..10]
        .iter()
        .map(|n| (n.as_str(), big.as_str()))
        .collect();
    let request = {
        let mut request = get_request(&gateway.url("/"));
        for (name, value) in &repeated {
            request.headers_mut().append(
                http::HeaderName::from_bytes(name.as_bytes()).expect("name"),
                http::HeaderValue::from_str(value).expect("value"),
            );
        }
        request
    };
    match h2.request(request).await {
        Ok(answer) => assert_eq!(
            answer.status(),
            http::StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE
        ),
        Err(e) => eprintln!("refused at the protocol level: {e}"),
    }
    assert_eq!(
        seen.load(std::sync::atomic::Ordering::SeqCst),
        0,
        "nothing reached the site"
    );
    // An ordinary request on the same client is still served.
    let ok = send_with(&h2, http::Method::GET, &gateway.url("/"), &[("x-a", "b")]).await;
    assert_eq!(ok.status, http::StatusCode::OK);
}

/// 256 MiB of zeros in a few hundred bytes of brotli.
const BROTLI_BOMB: &[u8] = include_bytes!("../data/zeros-256MiB.br");

/// The cheap requests that once held memory, connections or upstream slots (issue 11), each
/// over HTTP/1.1 and h2c where both apply.
#[derive(Debug, Clone, Copy)]
enum Attack {
    /// A few hundred bytes of brotli that decode to 256 MiB.
    DecompressionBomb,
    /// A page reflecting a 50 KB CDN URL.
    ReflectedLongUrl,
    /// A request announcing a 100-byte body and sending none.
    BodyNeverSent,
    /// A connection that never sends a request (h2c: the preface and SETTINGS only).
    IdleConnection,
    /// 120 headers.
    ManyHeaders,
    /// Ten 4,000-byte headers, which HPACK sends for a fraction of that.
    LargeHeaderList,
    /// A JSON answer held for signing that the client never reads.
    JsonNeverRead,
    /// A 60,000-character method.
    LongMethod,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Version {
    Http1,
    H2c,
}

/// What one attack came to.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Outcome {
    Status(u16),
    /// The gateway closed the connection without an answer.
    Closed,
    /// HTTP/2: the stream (or its body) ended in an error.
    StreamError,
}

/// What a row of the resource catalogue expects.
#[derive(Debug, Clone, Copy)]
enum Bound {
    /// Exactly this status.
    Status(u16),
    /// Closed by the gateway.
    Closed,
    /// The stream reset.
    StreamError,
    /// Some 4xx, a closed connection or a reset stream.
    Refused,
}

impl Bound {
    fn holds(self, outcome: &Outcome) -> bool {
        match (self, outcome) {
            (Bound::Status(want), Outcome::Status(got)) => want == *got,
            (Bound::Closed, Outcome::Closed) => true,
            (Bound::StreamError, Outcome::StreamError) => true,
            (Bound::Refused, Outcome::Status(got)) => (400..500).contains(got),
            (Bound::Refused, Outcome::Closed | Outcome::StreamError) => true,
            _ => false,
        }
    }
}

/// Sends `bytes` on a fresh connection and reads until the gateway closes it or `enough`
/// bytes have come (then lets go).
async fn raw_outcome(addr: std::net::SocketAddr, bytes: &[u8], enough: usize) -> Outcome {
    let mut stream = TcpStream::connect(addr).await.expect("connects");
    let _ = stream.write_all(bytes).await;
    let mut answer = Vec::new();
    let mut buf = vec![0; 64 * 1024];
    let read = tokio::time::timeout(Duration::from_secs(5), async {
        loop {
            match stream.read(&mut buf).await {
                Ok(0) | Err(_) => return,
                Ok(n) => answer.extend_from_slice(&buf[..n]),
            }
            if answer.len() >= enough {
                return;
            }
        }
    })
    .await;
    assert!(read.is_ok(), "neither answered nor closed within 5 s");
    let text = String::from_utf8_lossy(&answer[..answer.len().min(64)]).into_owned();
    match text
        .strip_prefix("HTTP/1.1 ")
        .and_then(|rest| rest.get(..3))
    {
        Some(code) => Outcome::Status(code.parse().expect("status")),
        None => Outcome::Closed,
    }
}

/// Sends `request` over `h2` and reads up to `enough` bytes of the answer's body.
async fn h2_outcome(
    h2: &hyper_util::client::legacy::Client<
        hyper_util::client::legacy::connect::HttpConnector,
        TestBody,
    >,
    request: http::Request<TestBody>,
    enough: usize,
) -> Outcome {
    use http_body_util::BodyExt;
    let answer = match h2.request(request).await {
        Ok(answer) => answer,
        Err(_) => return Outcome::StreamError,
    };
    let status = answer.status().as_u16();
    let mut body = answer.into_body();
    let mut read = 0;
    while read < enough {
        match tokio::time::timeout(Duration::from_secs(5), body.frame()).await {
            Ok(Some(Ok(frame))) => read += frame.data_ref().map_or(0, |d| d.len()),
            Ok(None) => break,
            Ok(Some(Err(_))) => return Outcome::StreamError,
            Err(_) => panic!("the body stalled past 5 s"),
        }
    }
    Outcome::Status(status)
}

/// One row: the attack, over `version`, against `gateway`.
async fn run_attack(attack: Attack, version: Version, gateway: &TestGateway) -> Outcome {
    let addr = gateway.addr;
    let request = |method: &str, path: &str| {
        http::Request::builder()
            .method(http::Method::from_bytes(method.as_bytes()).expect("method"))
            .uri(gateway.url(path))
            .body(full(bytes::Bytes::new()))
            .expect("request")
    };
    let many: String = (0..120).map(|i| format!("X-H{i}: v\r\n")).collect();
    let big = "b".repeat(4_000);
    let long_method = "M".repeat(60_000);
    match (attack, version) {
        (Attack::DecompressionBomb, Version::Http1) => {
            raw_outcome(addr, &get("/bomb"), 1 << 20).await
        }
        (Attack::DecompressionBomb, Version::H2c) => {
            h2_outcome(&h2_client(), request("GET", "/bomb"), 1 << 20).await
        }
        (Attack::ReflectedLongUrl, Version::Http1) => {
            raw_outcome(addr, &get("/reflect"), usize::MAX).await
        }
        (Attack::ReflectedLongUrl, Version::H2c) => {
            h2_outcome(&h2_client(), request("GET", "/reflect"), usize::MAX).await
        }
        (Attack::BodyNeverSent, Version::Http1) => {
            raw_outcome(
                addr,
                b"POST /echo HTTP/1.1\r\nHost: gw\r\nContent-Length: 100\r\n\r\n",
                usize::MAX,
            )
            .await
        }
        (Attack::BodyNeverSent, Version::H2c) => {
            let request = http::Request::post(gateway.url("/echo"))
                .header("content-length", "100")
                .body(http_body_util::BodyExt::boxed(Silent))
                .expect("request");
            h2_outcome(&h2_client(), request, usize::MAX).await
        }
        (Attack::IdleConnection, Version::Http1) => raw_outcome(addr, b"", usize::MAX).await,
        (Attack::IdleConnection, Version::H2c) => {
            // Whatever frames come (SETTINGS, GOAWAY), the connection ends.
            match raw_outcome(addr, H2_PREFACE_AND_SETTINGS, usize::MAX).await {
                Outcome::Closed => Outcome::Closed,
                other => panic!("an idle h2c connection got {other:?}"),
            }
        }
        (Attack::ManyHeaders, Version::Http1) => {
            raw_outcome(addr, &with_headers("/", &many), usize::MAX).await
        }
        (Attack::ManyHeaders | Attack::LargeHeaderList, Version::H2c) => {
            let mut request = request("GET", "/");
            let (count, value) = match attack {
                Attack::ManyHeaders => (120, "v"),
                _ => (10, big.as_str()),
            };
            for i in 0..count {
                request.headers_mut().append(
                    http::HeaderName::from_bytes(format!("x-h{i}").as_bytes()).expect("name"),
                    http::HeaderValue::from_str(value).expect("value"),
                );
            }
            h2_outcome(&h2_client(), request, usize::MAX).await
        }
        (Attack::LargeHeaderList, Version::Http1) => unreachable!("no HPACK in HTTP/1.1"),
        (Attack::JsonNeverRead, Version::Http1) => {
            // The head comes; the body is left unread and the socket held.
            raw_outcome(addr, &get("/photos.json"), 1).await
        }
        (Attack::JsonNeverRead, Version::H2c) => {
            // A stream window of 1 KiB that is never opened: the gateway gives up after
            // send_timeout and resets the stream.
            let shut = h2_client_never_reading();
            let answer = shut
                .request(request("GET", "/photos.json"))
                .await
                .expect("a head");
            assert_eq!(answer.status(), http::StatusCode::OK);
            let body = answer.into_body();
            tokio::time::sleep(Duration::from_secs(3)).await;
            // The gateway has given up by now: what was buffered, then the reset.
            let read = tokio::time::timeout(
                Duration::from_secs(5),
                http_body_util::BodyExt::collect(body),
            )
            .await
            .expect("the reset arrives");
            if read.is_err() {
                Outcome::StreamError
            } else {
                Outcome::Status(200)
            }
        }
        (Attack::LongMethod, Version::Http1) => {
            raw_outcome(addr, &method(&long_method, "/"), usize::MAX).await
        }
        (Attack::LongMethod, Version::H2c) => {
            h2_outcome(&h2_client(), request(&long_method, "/"), usize::MAX).await
        }
    }
}

/// The resource catalogue: each cheap request that once held the gateway's memory, slots or
/// upstream permits, over both versions where both apply, gets its bounded answer within a few
/// seconds while an ordinary client on the same gateway is served in its usual time.
#[tokio::test]
async fn the_resource_catalogue() {
    let photos: Vec<String> = (0..1_000)
        .map(|i| format!("\"https://cdn.filestackcontent.com/{H}#{i}\""))
        .collect();
    let json = bytes::Bytes::from(format!("{{\"photos\":[{}]}}", photos.join(",")));
    let reflected = format!(
        "<img src=\"https://cdn.filestackcontent.com/{H}#{}\">",
        "r".repeat(50_000)
    );
    let origin = start_origin(Arc::new(move |parts, body| match parts.uri.path() {
        "/bomb" => respond(
            200,
            &[("content-type", "text/html"), ("content-encoding", "br")],
            BROTLI_BOMB,
        ),
        "/reflect" => respond(200, &[("content-type", "text/html")], reflected.clone()),
        "/photos.json" => respond(200, &[("content-type", "application/json")], json.clone()),
        "/echo" => respond(200, &[("content-type", "text/plain")], body),
        _ => respond(200, &[("content-type", "text/plain")], "site"),
    }))
    .await;
    let cdn = TestCdn::builder().file(H, &b"the file"[..]).start().await;
    let toml = format!(
        "[server]\nheader_read_timeout = \"1s\"\nclient_body_timeout = \"1s\"\nsend_timeout = \"1s\"\n\
         {SIGNING}[[route]]\nname = \"img\"\nprefix = \"/img/\"\nmode = \"proxy\"\nupstream = \"{}\"\n\
         [[route]]\nname = \"site\"\nprefix = \"/\"\nmode = \"site\"\nupstream = \"http://{origin}\"\nmax_upstream_connections = 4\n",
        cdn.url()
    );
    let gateway = Arc::new(TestGateway::start(&toml).await);
    use Attack::*;
    use Version::*;
    let rows: Vec<(Attack, Version, Bound)> = vec![
        (DecompressionBomb, Http1, Bound::Status(200)),
        (DecompressionBomb, H2c, Bound::Status(200)),
        (ReflectedLongUrl, Http1, Bound::Status(200)),
        (ReflectedLongUrl, H2c, Bound::Status(200)),
        (BodyNeverSent, Http1, Bound::Status(408)),
        (BodyNeverSent, H2c, Bound::Status(408)),
        (IdleConnection, Http1, Bound::Closed),
        (IdleConnection, H2c, Bound::Closed),
        (ManyHeaders, Http1, Bound::Status(431)),
        (ManyHeaders, H2c, Bound::Status(431)),
        (LargeHeaderList, H2c, Bound::Refused),
        (JsonNeverRead, Http1, Bound::Status(200)),
        (JsonNeverRead, H2c, Bound::StreamError),
        (LongMethod, Http1, Bound::Refused),
        (LongMethod, H2c, Bound::Refused),
    ];
    for (attack, version, bound) in rows {
        let started = std::time::Instant::now();
        let running = {
            let gateway = Arc::clone(&gateway);
            tokio::spawn(async move { run_attack(attack, version, &gateway).await })
        };
        tokio::time::sleep(Duration::from_millis(100)).await;
        // Meanwhile, an ordinary client on the same gateway, over both versions.
        for client in [client(), h2_client()] {
            let asked = std::time::Instant::now();
            let ordinary = tokio::time::timeout(
                Duration::from_secs(1),
                send_with(
                    &client,
                    http::Method::GET,
                    &gateway.url(&format!("/img/{H}")),
                    &[],
                ),
            )
            .await
            .unwrap_or_else(|_| {
                panic!("{attack:?} over {version:?}: an ordinary client waited over 1 s")
            });
            assert_eq!(
                ordinary.status,
                http::StatusCode::OK,
                "{attack:?} over {version:?}"
            );
            assert!(asked.elapsed() < Duration::from_secs(1));
        }
        let outcome = running.await.expect("the attack ran");
        eprintln!(
            "{attack:?} over {version:?}: {outcome:?} in {:?}",
            started.elapsed()
        );
        assert!(
            bound.holds(&outcome),
            "{attack:?} over {version:?}: {outcome:?}, expected {bound:?}"
        );
        assert!(
            started.elapsed() < Duration::from_secs(8),
            "{attack:?} over {version:?}: {:?}",
            started.elapsed()
        );
    }
}

/// The HPACK table a client may fill is 1 KiB, not the 4 KiB default: the gateway's SETTINGS
/// frame, the first thing it sends on an h2c connection, says so.
#[tokio::test]
async fn h2c_connections_are_told_a_1_kib_header_table() {
    let gateway = TestGateway::start(&one_route("proxy", "/img/", "https://cdn.invalid", "")).await;
    let mut stream = TcpStream::connect(gateway.addr).await.expect("connects");
    stream
        .write_all(H2_PREFACE_AND_SETTINGS)
        .await
        .expect("preface");
    let mut head = [0u8; 9];
    tokio::time::timeout(Duration::from_secs(5), stream.read_exact(&mut head))
        .await
        .expect("in time")
        .expect("a frame header");
    let len = usize::from(head[0]) << 16 | usize::from(head[1]) << 8 | usize::from(head[2]);
    assert_eq!(head[3], 0x4, "the first frame is SETTINGS");
    let mut payload = vec![0u8; len];
    stream.read_exact(&mut payload).await.expect("its payload");
    let settings: Vec<(u16, u32)> = payload
        .chunks_exact(6)
        .map(|s| {
            (
                u16::from_be_bytes([s[0], s[1]]),
                u32::from_be_bytes([s[2], s[3], s[4], s[5]]),
            )
        })
        .collect();
    assert!(
        settings.contains(&(0x1, 1024)),
        "SETTINGS_HEADER_TABLE_SIZE = 1024 in {settings:?}"
    );
}

/// The catalogue's traversal and smuggled-credential rows for every other signing scheme: a
/// proxy route per scheme in front of an origin that records what reaches it.
#[tokio::test]
async fn the_hostile_input_catalogue_for_every_scheme() {
    let reached = Arc::new(std::sync::Mutex::new(Vec::<String>::new()));
    let recorded = Arc::clone(&reached);
    let origin = start_origin(Arc::new(move |parts, _| {
        recorded.lock().expect("lock").push(parts.uri.to_string());
        respond(200, &[("content-type", "image/png")], "picture")
    }))
    .await;
    let cloudfront = crate::cdn_schemes::scheme("cloudfront");
    let dir = tempfile::tempdir().expect("temp dir");
    let key_file = |name: &str, text: &str| {
        let path = dir.path().join(name);
        std::fs::write(&path, text).expect("write");
        path.display().to_string()
    };
    // (prefix, route keys, the credential parameters a client may try, the one we sign with)
    let schemes: [(&str, String, &[&str], &str); 4] = [
        (
            "s3",
            format!(
                "scheme = \"s3\"\naccess_key_id = \"AKIAIOSFODNN7EXAMPLE\"\nregion = \"us-east-1\"\n\
                 secret_file = {:?}",
                key_file("s3", "wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY")
            ),
            &[
                "X-Amz-Signature",
                "X-Amz-Credential",
                "X-Amz-Date",
                "X-Amz-Expires",
                "X-Amz-Security-Token",
            ],
            "X-Amz-Signature",
        ),
        (
            "cf",
            format!(
                "scheme = \"cloudfront\"\nkey_pair_id = {:?}\nsecret_file = {:?}",
                cloudfront["key_pair_id"].as_str().expect("id"),
                key_file(
                    "cf.pem",
                    cloudfront["private_key_pem_pkcs1"].as_str().expect("pem")
                )
            ),
            &["Signature", "Policy", "Expires", "Key-Pair-Id"],
            "Signature",
        ),
        (
            "ix",
            format!(
                "scheme = \"imgix\"\nsecret_file = {:?}",
                key_file("ix", "Xz9Qm2Lp7Rt4Vw8K")
            ),
            &["s", "expires"],
            "s",
        ),
        (
            "ak",
            format!(
                "scheme = \"akamai\"\nsecret_file = {:?}",
                key_file(
                    "ak",
                    "a7b3c1d9e5f20486172a3b4c5d6e7f8091a2b3c4d5e6f708192a3b4c5d6e7f80"
                )
            ),
            &["hdnts"],
            "hdnts",
        ),
    ];
    let mut toml = SIGNING.to_owned();
    for (prefix, keys, _, _) in &schemes {
        toml.push_str(&format!(
            "[[route]]\nname = \"{prefix}\"\nprefix = \"/{prefix}/\"\nmode = \"proxy\"\n\
             upstream = \"http://{origin}/bucket\"\n{keys}\n"
        ));
    }
    toml.push_str(&format!(
        "[[route]]\nname = \"s3go\"\nprefix = \"/s3go/\"\nmode = \"redirect\"\n\
         upstream = \"http://{origin}/bucket\"\n{}\n",
        schemes[0].1
    ));
    let gateway = TestGateway::start(&toml).await;

    let mut rows: Vec<(String, Vec<u8>, u16)> = Vec::new();
    for (prefix, _, params, _) in &schemes {
        for (name, path) in [
            ("dot-dot", "../x.jpg"),
            ("dot-dot inside", "a/../x.jpg"),
            ("encoded dot-dot", "a/%2e%2e/x.jpg"),
            ("encoded slash", "a%2Fx.jpg"),
            ("encoded backslash", "a%5cx.jpg"),
            ("empty segment", "a//x.jpg"),
            ("dot segment", "a/./x.jpg"),
            ("encoded NUL", "x.jpg%00"),
            ("encoded percent", "x%25.jpg"),
            ("semicolon in the path", "x.jpg;a=b"),
            ("no object", ""),
        ] {
            rows.push((
                format!("{prefix}: {name}"),
                get(&format!("/{prefix}/{path}")),
                400,
            ));
        }
        for param in *params {
            let encoded_first = format!("%{:02X}{}", param.as_bytes()[0], &param[1..]);
            for (name, query) in [
                ("as written", format!("{param}=evil")),
                ("upper case", format!("{}=evil", param.to_ascii_uppercase())),
                ("lower case", format!("{}=evil", param.to_ascii_lowercase())),
                ("encoded name", format!("{encoded_first}=evil")),
                ("repeated", format!("{param}=evil&{param}=evil2")),
                ("array name", format!("{param}[]=evil")),
                ("indexed name", format!("{param}[0]=evil")),
                ("after a semicolon", format!("a=1;{param}=evil")),
                ("behind an encoded &", format!("a=1%26{param}%3Devil")),
                (
                    "behind a double-encoded &",
                    format!("a=1%2526{param}%253Devil"),
                ),
                ("no value", param.to_string()),
            ] {
                rows.push((
                    format!("{prefix}: {param} {name}"),
                    get(&format!("/{prefix}/gallery/x.jpg?keep=1&{query}")),
                    200,
                ));
            }
        }
    }
    rows.push((
        "s3 redirect: smuggled signature".into(),
        get("/s3go/gallery/x.jpg?X-Amz-Signature=evil&x-amz-date[]=evil"),
        307,
    ));
    assert!(rows.len() >= 80, "{} rows", rows.len());

    for (name, bytes, expected) in &rows {
        let (status, answer) = raw(gateway.addr, bytes).await;
        assert_eq!(status, *expected, "{name}: {answer:.300}");
        assert!(
            !answer.contains("evil"),
            "{name}: handed back: {answer:.500}"
        );
        assert!(answer.len() < 2_000, "{name}: long answer");
    }

    // Nothing the client wrote as a credential reached the origin, and each request carried
    // exactly one signature of its route's scheme.
    let reached = reached.lock().expect("lock").clone();
    assert!(reached.len() >= 60, "{} requests", reached.len());
    for uri in &reached {
        assert!(
            !uri.contains("evil"),
            "client credentials reached the origin: {uri}"
        );
        assert!(
            uri.contains("keep=1"),
            "the client's other parameters were lost: {uri}"
        );
        let prefix = schemes
            .iter()
            .find(|(_, keys, _, _)| {
                uri.contains(if keys.contains("s3") {
                    "X-Amz-"
                } else if keys.contains("cloudfront") {
                    "Key-Pair-Id="
                } else if keys.contains("imgix") {
                    "&s="
                } else {
                    "hdnts="
                })
            })
            .map(|(_, _, _, signature)| *signature)
            .unwrap_or_else(|| panic!("unsigned: {uri}"));
        let query = uri.split_once('?').map_or("", |(_, q)| q);
        let signatures = query
            .split('&')
            .filter(|pair| pair.split('=').next() == Some(prefix))
            .count();
        assert_eq!(signatures, 1, "{uri}");
    }
}
