//! The access log: one line per request with what an operator needs, and never a signature,
//! a signed URL or the secret, at any level.

use crate::support;

use http::{Method, StatusCode};
use signgate::config::LogFormat;
use support::*;

// current_thread: the subscriber set for this thread sees every task of the test.
#[tokio::test(flavor = "current_thread")]
async fn the_access_log_has_one_line_per_request_and_no_credentials_at_any_level() {
    one_line_per_request_and_no_credentials_at_any_level(LogFormat::Text).await;
}

#[tokio::test(flavor = "current_thread")]
async fn json_logs_have_one_line_per_request_and_no_credentials_at_any_level() {
    one_line_per_request_and_no_credentials_at_any_level(LogFormat::Json).await;
}

/// Known traffic through every mode with the log at TRACE, in `format`, through the subscriber
/// `signgate run` installs.
async fn one_line_per_request_and_no_credentials_at_any_level(format: LogFormat) {
    let (captured, _guard) = CapturedLog::this_thread_as(format, "trace");

    let cdn = TestCdn::builder().file(H, &b"x"[..]).start().await;
    let toml = format!(
        "{SIGNING}[[route]]\nname = \"images\"\nprefix = \"/img/\"\nmode = \"proxy\"\nupstream = \"{}\"\ncalls = [\"read\", \"convert\"]\nurl_style = \"task\"\n\
         [[route]]\nname = \"links\"\nprefix = \"/go/\"\nmode = \"redirect\"\nupstream = \"{}\"\n\
         [[route]]\nname = \"upload\"\nprefix = \"/upload-policy\"\nmode = \"upload-policy\"\n",
        cdn.url(),
        cdn.url()
    );
    let gateway = TestGateway::start(&toml).await;
    assert_eq!(
        get(&gateway.url(&format!("/img/{H}"))).await.status,
        StatusCode::OK
    );
    assert_eq!(
        get(&gateway.url(&format!(
            "/img/resize=width:9/security=p:aa,s:bb/{H}?signature=cc"
        )))
        .await
        .status,
        StatusCode::OK
    );
    let redirect = get(&gateway.url(&format!("/go/{H}"))).await;
    let location = redirect.headers["location"]
        .to_str()
        .expect("ascii")
        .to_owned();
    let upload = get(&gateway.url("/upload-policy")).await;
    let upload: serde_json::Value = serde_json::from_slice(&upload.body).expect("json");
    assert_eq!(
        get(&gateway.url("/img/bad")).await.status,
        StatusCode::BAD_REQUEST
    );
    let _ = send(Method::POST, &gateway.url("/nowhere"), &[]).await;
    gateway.shutdown().await.expect("clean shutdown");

    let log = captured.text();
    if format == LogFormat::Json {
        assert_json_access_lines(&captured);
    } else {
        assert_text_access_lines(&log);
    }

    // Every signature the CDN received or a client was handed must be absent from the log.
    let mut signatures: Vec<String> = cdn
        .received()
        .iter()
        .filter_map(|r| signgate::verify::parse_url(&r.uri).ok()?.signature)
        .collect();
    signatures.extend(
        signgate::verify::parse_url(&location)
            .expect("parses")
            .signature,
    );
    signatures.push(upload["signature"].as_str().expect("signature").to_owned());
    assert!(signatures.len() >= 4);
    for signature in &signatures {
        assert_eq!(signature.len(), 64, "{signature}");
        assert!(
            !log.contains(signature.as_str()),
            "a signature leaked into the log"
        );
    }
    assert!(!log.contains(SECRET), "the secret leaked into the log");
    assert!(
        !log.contains("policy=eyJ") && !log.contains("p:eyJ"),
        "a policy leaked into the log"
    );
}

/// The six access lines of the traffic above, in the text format.
fn assert_text_access_lines(log: &str) {
    let access: Vec<&str> = log
        .lines()
        .filter(|l| l.contains("signgate::access"))
        .collect();
    assert_eq!(access.len(), 6, "{log}");
    assert!(access[0].contains("method=GET") && access[0].contains("route=images"));
    assert!(access[0].contains(&format!("path=/img/{H}")) && access[0].contains("status=200"));
    assert!(
        access[0].contains("bytes=1")
            && access[0].contains("cache=miss")
            && access[0].contains("duration_us="),
        "{}",
        access[0]
    );
    // Tasks need `read` and `convert`: other credentials than the bare URL's, so a miss.
    assert!(
        access[1].contains("security=<redacted>") && access[1].contains("cache=miss"),
        "{}",
        access[1]
    );
    assert!(
        access[4].contains("status=400")
            && access[5].contains("route=- ")
            && access[5].contains("status=404")
    );
}

/// The six access lines of the traffic above, in the JSON format: each a JSON object with the
/// documented fields.
fn assert_json_access_lines(captured: &CapturedLog) {
    let access = captured.access_json();
    assert_eq!(access.len(), 6, "{}", captured.text());
    let field = |i: usize, name: &str| access[i].get(name).cloned().unwrap_or_default();
    assert_eq!(field(0, "method"), "GET");
    assert_eq!(field(0, "route"), "images");
    assert_eq!(field(0, "path"), format!("/img/{H}").as_str());
    assert_eq!(field(0, "status"), 200);
    assert_eq!(field(0, "upstream_status"), 200);
    assert_eq!(
        (field(0, "bytes"), field(0, "cache")),
        (1.into(), "miss".into())
    );
    assert!(
        field(1, "path")
            .as_str()
            .is_some_and(|p| p.contains("security=<redacted>"))
    );
    assert_eq!(field(2, "route"), "links");
    assert_eq!(field(2, "status"), 307);
    assert!(
        !access[2].contains_key("upstream_status"),
        "{:?}",
        access[2]
    );
    assert_eq!(
        (field(4, "status"), field(5, "status")),
        (400.into(), 404.into())
    );
    assert_eq!(field(5, "route"), "-");
}

#[tokio::test(flavor = "current_thread")]
async fn a_request_can_neither_flood_the_access_log_nor_forge_a_line() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let captured = CapturedLog::default();
    let subscriber = tracing_subscriber::fmt()
        .with_writer(captured.clone())
        .with_ansi(false)
        .finish();
    let _guard = tracing::subscriber::set_default(subscriber);
    let gateway =
        TestGateway::start(&one_route("redirect", "/go/", "https://cdn.example", "")).await;

    let method = "M".repeat(60_000);
    for request in [
        format!("{method} /go/{H} HTTP/1.1\r\nhost: x\r\nconnection: close\r\n\r\n"),
        "GET /go/x\u{85}y\u{2028}z\u{202e} HTTP/1.1\r\nhost: x\r\nconnection: close\r\n\r\n"
            .to_owned(),
    ] {
        let mut stream = tokio::net::TcpStream::connect(gateway.addr)
            .await
            .expect("connects");
        stream.write_all(request.as_bytes()).await.expect("sent");
        let mut answer = Vec::new();
        let _ = stream.read_to_end(&mut answer).await;
        assert!(
            answer.starts_with(b"HTTP/1.1 4"),
            "{}",
            String::from_utf8_lossy(&answer)
        );
    }
    gateway.shutdown().await.expect("clean shutdown");

    let log = captured.text();
    for line in log.lines() {
        assert!(line.len() < 2_000, "a {}-byte line", line.len());
        assert!(line.is_ascii(), "{line}");
    }
    assert!(
        log.contains(&format!("method={}...", "M".repeat(32))),
        "{log}"
    );
}

#[tokio::test(flavor = "current_thread")]
async fn an_upstream_error_is_logged_with_its_reason() {
    let captured = CapturedLog::default();
    let subscriber = tracing_subscriber::fmt()
        .with_max_level(tracing::Level::WARN)
        .with_writer(captured.clone())
        .with_ansi(false)
        .finish();
    let _guard = tracing::subscriber::set_default(subscriber);
    let origin = start_origin(std::sync::Arc::new(|_, _| {
        let names: Vec<String> = (0..20).map(|i| format!("x-h{i}")).collect();
        let headers: Vec<(&str, &str)> = names.iter().map(|n| (n.as_str(), "v")).collect();
        respond(200, &headers, "many")
    }))
    .await;
    let gateway = TestGateway::start(&one_route(
        "site",
        "/",
        &format!("http://{origin}"),
        "max_response_headers = 10",
    ))
    .await;
    assert_eq!(get(&gateway.url("/")).await.status, StatusCode::BAD_GATEWAY);
    let log = captured.text();
    assert!(log.contains("message head is too large"), "{log}");
}

/// Every key of a JSON access line, as README's "Logging" table lists them; `upstream_status`
/// only when an upstream answered.
const ACCESS_FIELDS: [&str; 16] = [
    "timestamp",
    "level",
    "target",
    "method",
    "route",
    "path",
    "status",
    "bytes",
    "duration_us",
    "cache",
    "rewrite",
    "complete",
    "peer",
    "upstream_status",
    "request_id",
    "verify",
];

/// Sends `request` (with `connection: close`) over a socket of its own; returns the socket's
/// local address (the peer signgate sees) and the whole answer.
async fn exchange(gateway: std::net::SocketAddr, request: &[u8]) -> (std::net::SocketAddr, String) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut stream = tokio::net::TcpStream::connect(gateway)
        .await
        .expect("connects");
    let local = stream.local_addr().expect("local address");
    stream.write_all(request).await.expect("sent");
    let mut answer = Vec::new();
    let _ = stream.read_to_end(&mut answer).await;
    (local, String::from_utf8_lossy(&answer).into_owned())
}

/// The `x-request-id` of a raw HTTP/1.1 answer.
fn answered_id(answer: &str) -> String {
    answer
        .lines()
        .take_while(|l| !l.is_empty())
        .find_map(|l| l.strip_prefix("x-request-id: "))
        .unwrap_or_else(|| panic!("no x-request-id in {answer}"))
        .trim_end()
        .to_owned()
}

/// An origin on 127.0.0.1:0 that answers `ok` and keeps every request's `x-request-id`s.
async fn id_recording_origin() -> (
    std::net::SocketAddr,
    std::sync::Arc<std::sync::Mutex<Vec<Vec<String>>>>,
) {
    let seen = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
    let origin = start_origin(std::sync::Arc::new({
        let seen = std::sync::Arc::clone(&seen);
        move |parts: http::request::Parts, _| {
            let ids = parts
                .headers
                .get_all("x-request-id")
                .iter()
                .map(|v| String::from_utf8_lossy(v.as_bytes()).into_owned())
                .collect();
            seen.lock().expect("not poisoned").push(ids);
            respond(200, &[("content-type", "text/plain")], "ok")
        }
    }))
    .await;
    (origin, seen)
}

#[tokio::test(flavor = "current_thread")]
async fn json_access_lines_carry_exactly_the_documented_fields() {
    let (captured, _guard) = CapturedLog::this_thread_as(LogFormat::Json, "info");
    let cdn = TestCdn::builder().file(H, &b"hello"[..]).start().await;
    // A port nothing listens on: bound, then closed.
    let closed = {
        let (listener, addr) = bind().await;
        drop(listener);
        addr
    };
    let gateway = TestGateway::start(&format!(
        "{SIGNING}[[route]]\nname = \"images\"\nprefix = \"/img/\"\nmode = \"proxy\"\nupstream = \"{}\"\ncalls = [\"read\", \"convert\"]\n\
         [[route]]\nname = \"links\"\nprefix = \"/go/\"\nmode = \"redirect\"\nupstream = \"{}\"\n\
         [[route]]\nname = \"down\"\nprefix = \"/down/\"\nmode = \"site\"\nupstream = \"http://{closed}\"\n",
        cdn.url(),
        cdn.url()
    ))
    .await;

    let (peer, answer) = exchange(
        gateway.addr,
        format!(
            "GET /img/resize=width:9/security=p:aa,s:bb/{H}?policy=x HTTP/1.1\r\nhost: x\r\n\
             x-request-id: known-id-1\r\nconnection: close\r\n\r\n"
        )
        .as_bytes(),
    )
    .await;
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
    let (_, redirected) = exchange(
        gateway.addr,
        format!("GET /go/{H} HTTP/1.1\r\nhost: x\r\nconnection: close\r\n\r\n").as_bytes(),
    )
    .await;
    assert!(redirected.starts_with("HTTP/1.1 307"), "{redirected}");
    let (_, unreachable) = exchange(
        gateway.addr,
        b"GET /down/page HTTP/1.1\r\nhost: x\r\nconnection: close\r\n\r\n",
    )
    .await;
    assert!(unreachable.starts_with("HTTP/1.1 502"), "{unreachable}");
    gateway.shutdown().await.expect("clean shutdown");

    let access = captured.access_json();
    assert_eq!(access.len(), 3, "{}", captured.text());
    let keys = |i: usize| {
        let mut keys: Vec<&str> = access[i].keys().map(String::as_str).collect();
        keys.sort_unstable();
        keys
    };
    let mut all = ACCESS_FIELDS.to_vec();
    all.sort_unstable();
    let mut without_upstream = all.clone();
    without_upstream.retain(|k| *k != "upstream_status");
    assert_eq!(keys(0), all);
    assert_eq!(keys(1), without_upstream);
    assert_eq!(keys(2), without_upstream);

    let line = &access[0];
    let expected = serde_json::json!({
        "level": "INFO",
        "target": "signgate::access",
        "method": "GET",
        "route": "images",
        "path": format!("/img/resize=width:9/security=<redacted>/{H}"),
        "status": 200,
        "bytes": 5,
        "cache": "miss",
        "rewrite": "-",
        "complete": true,
        "peer": peer.to_string(),
        "upstream_status": 200,
        "request_id": "known-id-1",
        "verify": "-",
    });
    for (key, value) in expected.as_object().expect("object") {
        assert_eq!(&line[key], value, "{key} in {line:?}");
    }
    assert!(line["duration_us"].is_u64(), "{line:?}");
    assert!(line["timestamp"].is_string(), "{line:?}");
    // Signgate's own answers: no upstream answered, so no `upstream_status`.
    assert_eq!(access[1]["status"], 307);
    assert_eq!(
        (&access[2]["status"], &access[2]["route"]),
        (&502.into(), &"down".into())
    );
    for (i, answer) in [(1, &redirected), (2, &unreachable)] {
        assert_eq!(access[i]["request_id"], answered_id(answer).as_str());
    }
}

#[tokio::test(flavor = "current_thread")]
async fn a_request_id_goes_upstream_and_back_kept_made_or_replaced() {
    let (captured, _guard) = CapturedLog::this_thread_as(LogFormat::Json, "info");
    let cdn = TestCdn::builder().file(H, &b"x"[..]).start().await;
    let (origin, seen) = id_recording_origin().await;
    let gateway = TestGateway::start(&format!(
        "{SIGNING}[[route]]\nname = \"images\"\nprefix = \"/img/\"\nmode = \"proxy\"\nupstream = \"{}\"\n\
         [[route]]\nname = \"site\"\nprefix = \"/\"\nmode = \"site\"\nupstream = \"http://{origin}\"\n",
        cdn.url()
    ))
    .await;

    let long = "x".repeat(129);
    let longest = "y".repeat(128);
    // (what the client sends as `x-request-id`, if anything; whether it is kept)
    let cases: [(Option<&[u8]>, bool); 7] = [
        (Some(b"client-id-7f3a"), true),
        (Some(longest.as_bytes()), true),
        (None, false),
        (Some(long.as_bytes()), false),
        (Some(b"a\tb"), false),
        (Some(b"a b"), false),
        (Some("caf\u{e9}".as_bytes()), false),
    ];
    let mut answered = Vec::new();
    for (sent, kept) in cases {
        for path in [format!("/img/{H}"), "/page".to_owned()] {
            let mut request =
                format!("GET {path} HTTP/1.1\r\nhost: x\r\nconnection: close\r\n").into_bytes();
            if let Some(sent) = sent {
                request.extend_from_slice(b"x-request-id: ");
                request.extend_from_slice(sent);
                request.extend_from_slice(b"\r\n");
            }
            request.extend_from_slice(b"\r\n");
            let (_, answer) = exchange(gateway.addr, &request).await;
            assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
            let id = answered_id(&answer);
            if kept {
                assert_eq!(Some(id.as_bytes()), sent);
            } else {
                // Made: 32 hex digits, never what the client sent.
                assert_eq!(id.len(), 32, "{id}");
                assert!(id.bytes().all(|b| b.is_ascii_hexdigit()), "{id}");
                assert_ne!(Some(id.as_bytes()), sent);
            }
            let upstream_got: Vec<String> = if path == "/page" {
                seen.lock()
                    .expect("not poisoned")
                    .last()
                    .cloned()
                    .expect("the site got it")
            } else {
                let received = cdn.received();
                let headers = &received.last().expect("the CDN got it").headers;
                headers
                    .get_all("x-request-id")
                    .iter()
                    .map(|v| String::from_utf8_lossy(v.as_bytes()).into_owned())
                    .collect()
            };
            assert_eq!(
                upstream_got,
                std::slice::from_ref(&id),
                "{path} sent {:?}",
                sent.map(String::from_utf8_lossy)
            );
            answered.push(id);
        }
    }
    gateway.shutdown().await.expect("clean shutdown");

    let logged: Vec<String> = captured
        .access_json()
        .iter()
        .map(|line| line["request_id"].as_str().expect("a string").to_owned())
        .collect();
    assert_eq!(logged, answered);
    let made: std::collections::HashSet<&String> =
        answered.iter().filter(|id| id.len() == 32).collect();
    assert_eq!(made.len(), 10, "made ids repeat: {answered:?}");
}
