//! The listener over TLS (`[server] tls_cert`, `tls_key`): ALPN picks HTTP/2 or HTTP/1.1, the
//! upstream is told `https`, a half-set pair is refused, and a reload's certificate serves new
//! connections.

use crate::support;

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use http::{Request, Version};
use http_body_util::{BodyExt, Empty};
use hyper::body::Bytes;
use hyper_util::rt::{TokioExecutor, TokioIo};
use rustls::pki_types::CertificateDer;
use rustls::pki_types::ServerName;
use signgate::clock::SystemClock;
use signgate::config::Config;
use signgate::metrics::Metrics;
use signgate::reload::Reloader;
use support::*;
use tokio::net::TcpStream;
use tokio_rustls::TlsConnector;
use tokio_rustls::client::TlsStream;

/// A self-signed certificate for `localhost`, its PEM files written to `dir` as `NAME.pem` and
/// `NAME.key`; returns the two paths and the certificate a client should trust.
fn self_signed(dir: &Path, name: &str) -> (PathBuf, PathBuf, CertificateDer<'static>) {
    let certified =
        rcgen::generate_simple_self_signed(vec!["localhost".to_owned()]).expect("certificate");
    let (cert, key) = (
        dir.join(format!("{name}.pem")),
        dir.join(format!("{name}.key")),
    );
    std::fs::write(&cert, certified.cert.pem()).expect("cert written");
    std::fs::write(&key, certified.signing_key.serialize_pem()).expect("key written");
    (cert, key, certified.cert.der().clone())
}

fn tls_server(cert: &Path, key: &Path) -> String {
    format!(
        "[server]\ntls_cert = {:?}\ntls_key = {:?}\n",
        cert.display().to_string(),
        key.display().to_string()
    )
}

/// A TLS connection to `addr` trusting only `trusted`, offering `alpn`.
async fn connect(
    addr: SocketAddr,
    trusted: &CertificateDer<'static>,
    alpn: &[u8],
) -> std::io::Result<TlsStream<TcpStream>> {
    let mut roots = rustls::RootCertStore::empty();
    roots.add(trusted.clone()).expect("a valid certificate");
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .expect("versions")
        .with_root_certificates(roots)
        .with_no_client_auth();
    config.alpn_protocols = vec![alpn.to_vec()];
    let tcp = TcpStream::connect(addr).await?;
    let name = ServerName::try_from("localhost").expect("a name");
    TlsConnector::from(Arc::new(config))
        .connect(name, tcp)
        .await
}

fn get(path: &str) -> Request<Empty<Bytes>> {
    Request::get(path)
        .header("host", "localhost")
        .body(Empty::new())
        .expect("request")
}

/// GETs `path` over `io` in the version ALPN chose; returns the status and the version.
async fn get_over(io: TlsStream<TcpStream>, path: &str) -> (u16, Version) {
    let h2 = io.get_ref().1.alpn_protocol() == Some(b"h2");
    let response = if h2 {
        let (mut sender, connection) =
            hyper::client::conn::http2::handshake(TokioExecutor::new(), TokioIo::new(io))
                .await
                .expect("h2 handshake");
        tokio::spawn(connection);
        let mut request = get(&format!("https://localhost{path}"));
        request.headers_mut().remove("host");
        sender.send_request(request).await.expect("an answer")
    } else {
        let (mut sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(io))
            .await
            .expect("http/1.1 handshake");
        tokio::spawn(connection);
        sender.send_request(get(path)).await.expect("an answer")
    };
    let (status, version) = (response.status().as_u16(), response.version());
    response.into_body().collect().await.expect("the body");
    (status, version)
}

#[tokio::test]
async fn h2_and_http1_over_tls_are_served_as_alpn_chose_and_the_upstream_is_told_https() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (cert, key, trusted) = self_signed(dir.path(), "server");
    let (origin, seen) = recording_origin().await;
    let gateway = TestGateway::start(&format!(
        "{}{}",
        tls_server(&cert, &key),
        one_route("site", "/site/", &format!("http://{origin}"), "")
    ))
    .await;
    tokio::time::timeout(Duration::from_secs(10), async {
        for (alpn, version) in [
            (&b"h2"[..], Version::HTTP_2),
            (b"http/1.1", Version::HTTP_11),
        ] {
            let io = connect(gateway.addr, &trusted, alpn).await.expect("TLS");
            assert_eq!(io.get_ref().1.alpn_protocol(), Some(alpn));
            assert_eq!(get_over(io, "/site/page").await, (200, version));
            let headers = seen
                .lock()
                .expect("not poisoned")
                .last()
                .cloned()
                .expect("the origin got it");
            assert_eq!(headers["x-forwarded-proto"], "https", "{version:?}");
        }
    })
    .await
    .expect("in time");
}

#[tokio::test]
async fn a_client_that_never_finishes_the_handshake_is_closed() {
    use tokio::io::AsyncReadExt;
    let dir = tempfile::tempdir().expect("tempdir");
    let (cert, key, _) = self_signed(dir.path(), "server");
    let gateway = TestGateway::start(&format!(
        "{}header_read_timeout = \"1s\"\n{}",
        tls_server(&cert, &key),
        one_route("redirect", "/go/", "https://cdn.filestackcontent.com", "")
    ))
    .await;
    let mut tcp = TcpStream::connect(gateway.addr).await.expect("connects");
    let mut buf = [0u8; 16];
    let read = tokio::time::timeout(Duration::from_secs(5), tcp.read(&mut buf))
        .await
        .expect("closed within the timeout");
    assert!(matches!(read, Ok(0) | Err(_)), "{read:?}");
}

#[test]
fn a_cert_without_a_key_is_refused_naming_tls_key() {
    let error = Config::from_toml_str(
        &format!(
            "[server]\ntls_cert = \"/etc/cert.pem\"\n{}",
            one_route("redirect", "/go/", "https://cdn.filestackcontent.com", "")
        ),
        |_| Some(SECRET.into()),
    )
    .expect_err("refused");
    assert!(error.to_string().contains("`server.tls_key`"), "{error}");
}

#[test]
fn an_unreadable_key_file_is_a_startup_error_naming_the_file() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (cert, _, _) = self_signed(dir.path(), "server");
    let missing = dir.path().join("missing.key");
    let config = Config::from_toml_str(
        &format!(
            "{}{}",
            tls_server(&cert, &missing),
            one_route("redirect", "/go/", "https://cdn.filestackcontent.com", "")
        ),
        |_| Some(SECRET.into()),
    )
    .expect("the paths are valid");
    let error = signgate::server::AppState::new(&config, Arc::new(SystemClock))
        .err()
        .expect("refused");
    let message = error.to_string();
    assert!(
        message.contains("`server.tls_key`") && message.contains("missing.key"),
        "{message}"
    );
}

#[tokio::test]
async fn a_reload_re_reads_the_certificate_for_new_connections() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (cert, key, first) = self_signed(dir.path(), "server");
    let text = format!(
        "{}{}",
        tls_server(&cert, &key),
        one_route("redirect", "/go/", "https://cdn.filestackcontent.com", "")
    );
    let config = Config::from_toml_str(&text, |_| Some(SECRET.into())).expect("valid");
    let gateway = TestGateway::start(&text).await;
    let mut reloader = Reloader::new(
        &dir.path().join("gateway.toml"),
        config.clone(),
        vec![Arc::clone(&gateway.state)],
        Arc::new(Metrics::new(&config)),
        None,
        Arc::new(SystemClock),
    );
    connect(gateway.addr, &first, b"h2")
        .await
        .expect("the first certificate");

    // Same paths, new contents.
    let (_, _, second) = self_signed(dir.path(), "server");
    reloader.apply(Ok(config.clone())).expect("reloaded");
    connect(gateway.addr, &second, b"h2")
        .await
        .expect("a new connection sees the new certificate");
    assert!(connect(gateway.addr, &first, b"h2").await.is_err());

    // A bad key is refused, and the certificate serving stays.
    std::fs::write(&key, "not a key").expect("written");
    let refused = reloader.apply(Ok(config)).expect_err("refused");
    assert!(
        refused.to_string().contains("`server.tls_key`"),
        "{refused}"
    );
    connect(gateway.addr, &second, b"h2")
        .await
        .expect("the reloaded certificate still serves");
}

/// The same on the real binary: SIGHUP, as `systemctl reload` or `signgate reload` sends it,
/// swaps the certificate that new connections get.
#[tokio::test]
async fn sighup_swaps_the_certificate_of_a_running_gateway() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (cert, key, first) = self_signed(dir.path(), "server");
    let config = format!(
        "{}listen = \"127.0.0.1:0\"\nworkers = 1\n[admin]\nlisten = \"127.0.0.1:0\"\n{}",
        tls_server(&cert, &key),
        one_route("redirect", "/go/", "https://cdn.filestackcontent.com", "")
    );
    let gateway = tokio::task::spawn_blocking(move || process::GatewayProcess::start(&config))
        .await
        .expect("starts");
    let addr: SocketAddr = gateway.addr.parse().expect("an address");
    connect(addr, &first, b"http/1.1")
        .await
        .expect("the first certificate");

    let (_, _, second) = self_signed(dir.path(), "server");
    let mut gateway = tokio::task::spawn_blocking(move || {
        gateway.signal("-HUP");
        gateway.wait_for_reloads("success", 1.0);
        gateway
    })
    .await
    .expect("reloaded");
    connect(addr, &second, b"http/1.1")
        .await
        .expect("a new connection sees the new certificate");
    assert!(connect(addr, &first, b"http/1.1").await.is_err());
    assert!(gateway.is_running());
}
