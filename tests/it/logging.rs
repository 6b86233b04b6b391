//! The access log: one line per request with what an operator needs, and never a signature,
//! a signed URL or the secret, at any level.

use crate::support;

use http::{Method, StatusCode};
use support::*;

// current_thread: the subscriber set for this thread sees every task of the test.
#[tokio::test(flavor = "current_thread")]
async fn the_access_log_has_one_line_per_request_and_no_credentials_at_any_level() {
    let captured = CapturedLog::default();
    let subscriber = tracing_subscriber::fmt()
        .with_max_level(tracing::Level::TRACE)
        .with_writer(captured.clone())
        .with_ansi(false)
        .finish();
    let _guard = tracing::subscriber::set_default(subscriber);

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
