//! One hop through signgate over real sockets: the forwarding headers the upstream gets from
//! trusted and untrusted peers, the host they name and how it is checked, and the HTTP version
//! the client is answered in.

use crate::support;

use std::net::SocketAddr;
use std::sync::Mutex;
use std::time::Duration;

use http::{HeaderMap, Method, StatusCode};
use signgate::config::Config;
use support::accept::accept_loop;
use support::*;
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::TcpStream;

/// What a client sends that only a proxy in front should: a forged chain, scheme and host.
const FORGED: [(&str, &str); 7] = [
    ("x-forwarded-for", "203.0.113.5"),
    ("x-forwarded-proto", "https"),
    ("x-forwarded-host", "photos.example"),
    ("x-forwarded-port", "443"),
    ("x-forwarded-prefix", "/admin"),
    (
        "forwarded",
        "for=203.0.113.5;proto=https;host=photos.example",
    ),
    ("x-real-ip", "203.0.113.5"),
];

fn last(seen: &Mutex<Vec<HeaderMap>>) -> HeaderMap {
    seen.lock()
        .expect("not poisoned")
        .last()
        .cloned()
        .expect("the origin got a request")
}

/// A site route at `/site/` in front of `origin` and a proxy route at `/img/` in front of
/// `cdn`, after `server` (a `[server]` table or nothing).
async fn gateway(server: &str, origin: SocketAddr, cdn: &TestCdn) -> TestGateway {
    TestGateway::start(&format!(
        "{server}\n{SIGNING}\
         [[route]]\nname = \"site\"\nprefix = \"/site/\"\nmode = \"site\"\nupstream = \"http://{origin}\"\n\
         [[route]]\nname = \"img\"\nprefix = \"/img/\"\nmode = \"proxy\"\nupstream = \"{}\"\n",
        cdn.url()
    ))
    .await
}

/// Sends [`FORGED`] through the site route and the proxy route; returns what the site and the
/// CDN received, each named by its mode.
async fn forge_through_both_modes(
    gateway: &TestGateway,
    seen: &Mutex<Vec<HeaderMap>>,
    cdn: &TestCdn,
) -> [(&'static str, HeaderMap); 2] {
    let site = send(Method::GET, &gateway.url("/site/page"), &FORGED).await;
    assert_eq!(site.status, StatusCode::OK, "{}", site.text());
    let proxied = send(Method::GET, &gateway.url(&format!("/img/{H}")), &FORGED).await;
    assert_eq!(proxied.status, StatusCode::OK, "{}", proxied.text());
    let cdn_got = cdn
        .received()
        .last()
        .expect("the CDN got it")
        .headers
        .clone();
    [("site", last(seen)), ("proxy", cdn_got)]
}

#[tokio::test]
async fn an_untrusted_client_cannot_forge_forwarding_headers() {
    let (origin, seen) = recording_origin().await;
    let cdn = TestCdn::builder().file(H, &b"file"[..]).start().await;
    // The default (no trusted proxies), and a list the client is not in.
    for server in [
        "",
        "[server]\ntrusted_proxies = [\"10.0.0.0/8\", \"::1\"]\n",
    ] {
        let gateway = gateway(server, origin, &cdn).await;
        let host = gateway.addr.to_string();
        for (mode, up) in forge_through_both_modes(&gateway, &seen, &cdn).await {
            assert_eq!(up["x-forwarded-for"], "127.0.0.1", "{mode} {server}");
            assert_eq!(up.get_all("x-forwarded-for").iter().count(), 1, "{mode}");
            assert_eq!(up["x-forwarded-proto"], "http", "{mode}");
            assert_eq!(up["x-forwarded-host"], host.as_str(), "{mode}");
            assert_eq!(
                up["forwarded"],
                format!("for=127.0.0.1;proto=http;host=\"{host}\"").as_str(),
                "{mode}"
            );
            for dropped in ["x-real-ip", "x-forwarded-port", "x-forwarded-prefix"] {
                assert!(
                    up.get(dropped).is_none(),
                    "{mode}: {dropped} reached upstream"
                );
            }
        }
    }
}

#[tokio::test]
async fn a_trusted_proxy_keeps_its_scheme_and_host_and_the_chain_grows() {
    let (origin, seen) = recording_origin().await;
    let cdn = TestCdn::builder().file(H, &b"file"[..]).start().await;
    let gateway = gateway(
        "[server]\ntrusted_proxies = [\"192.0.2.0/24\", \"127.0.0.0/8\"]\n",
        origin,
        &cdn,
    )
    .await;
    let host = gateway.addr.to_string();
    for (mode, up) in forge_through_both_modes(&gateway, &seen, &cdn).await {
        assert_eq!(up["x-forwarded-for"], "203.0.113.5, 127.0.0.1", "{mode}");
        assert_eq!(
            up["forwarded"],
            format!(
                "for=203.0.113.5;proto=https;host=photos.example, \
                 for=127.0.0.1;proto=http;host=\"{host}\""
            )
            .as_str(),
            "{mode}"
        );
        // The TLS terminator in front said https: no redirect loop for sites that force it.
        assert_eq!(up["x-forwarded-proto"], "https", "{mode}");
        assert_eq!(up["x-forwarded-host"], "photos.example", "{mode}");
        assert_eq!(up["x-real-ip"], "203.0.113.5", "{mode}");
    }
    // Without forwarding headers of its own, the trusted peer is described as any other.
    let plain = send(Method::GET, &gateway.url("/site/page"), &[]).await;
    assert_eq!(plain.status, StatusCode::OK);
    let up = last(&seen);
    assert_eq!(up["x-forwarded-for"], "127.0.0.1");
    assert_eq!(up["x-forwarded-proto"], "http");
    assert_eq!(up["x-forwarded-host"], host.as_str());
}

#[test]
fn a_bad_trusted_proxies_entry_is_refused_naming_the_key_the_entry_and_the_form() {
    for bad in [
        "10.0.0.0/33",
        "proxy.internal",
        "10.0.0.0/8/8",
        "fd00::/129",
    ] {
        let toml = format!(
            "[server]\ntrusted_proxies = [\"127.0.0.1\", \"{bad}\"]\n{SIGNING}\
             [[route]]\nname = \"r\"\nprefix = \"/\"\nmode = \"upload-policy\"\n"
        );
        let error = Config::from_toml_str(&toml, |_| Some(SECRET.into()))
            .expect_err(bad)
            .to_string();
        assert!(error.contains("`server.trusted_proxies`"), "{error}");
        assert!(error.contains(&format!("{bad:?}")), "{error}");
        assert!(error.contains("\"10.0.0.0/8\""), "{error}");
    }
}

/// Sends `bytes` on a fresh connection and reads until the gateway closes it (the requests
/// say `Connection: close`); returns the status code and the whole answer.
async fn raw(addr: SocketAddr, bytes: &[u8]) -> (u16, String) {
    let mut stream = TcpStream::connect(addr).await.expect("connects");
    stream.write_all(bytes).await.expect("sent");
    let mut answer = Vec::new();
    tokio::time::timeout(Duration::from_secs(10), stream.read_to_end(&mut answer))
        .await
        .expect("answered and closed within 10 s")
        .expect("read");
    let text = String::from_utf8_lossy(&answer).into_owned();
    let status = text.get(9..12).and_then(|s| s.parse().ok()).unwrap_or(0);
    (status, text)
}

#[tokio::test]
async fn the_host_comes_from_the_target_before_the_host_header() {
    let (origin, seen) = recording_origin().await;
    let cdn = TestCdn::builder().start().await;
    let gateway = gateway("", origin, &cdn).await;
    // An absolute-form target names the host and the Host header loses (RFC 9112 3.2.2); an
    // IPv6 literal with a port is a host, quoted in Forwarded.
    for (target, host, forwarded_host) in [
        (
            "http://public.example:8443/site/page",
            "other.example",
            "public.example:8443",
        ),
        ("/site/page", "[2001:db8::1]:8080", "[2001:db8::1]:8080"),
    ] {
        let request = format!("GET {target} HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n");
        let (status, answer) = raw(gateway.addr, request.as_bytes()).await;
        assert_eq!(status, 200, "{answer}");
        let up = last(&seen);
        assert_eq!(up["x-forwarded-host"], forwarded_host);
        assert_eq!(
            up["forwarded"],
            format!("for=127.0.0.1;proto=http;host=\"{forwarded_host}\"").as_str()
        );
        assert_eq!(up["host"], forwarded_host, "preserve_host is on by default");
    }
}

#[tokio::test]
async fn the_site_gets_the_clients_host_unless_preserve_host_is_off() {
    let (origin, seen) = recording_origin().await;
    let request = b"GET /page HTTP/1.1\r\nHost: shop.example\r\nConnection: close\r\n\r\n";
    for (extra, host) in [
        ("", "shop.example".to_owned()),
        ("preserve_host = false", origin.to_string()),
    ] {
        let gateway =
            TestGateway::start(&one_route("site", "/", &format!("http://{origin}"), extra)).await;
        let (status, answer) = raw(gateway.addr, request).await;
        assert_eq!(status, 200, "{answer}");
        let up = last(&seen);
        assert_eq!(up["host"], host.as_str(), "{extra:?}");
        assert_eq!(up["x-forwarded-host"], "shop.example");
    }
}

/// A site that builds absolute URLs from its own address: they come back on the client's.
#[tokio::test]
async fn redirects_to_the_upstreams_own_address_come_back_on_the_public_host() {
    let origin = {
        let (listener, addr) = support::bind().await;
        let own = format!("http://{addr}");
        serve_http(
            listener,
            move |_request: http::Request<hyper::body::Incoming>| {
                let own = own.clone();
                async move {
                    respond(
                        302,
                        &[
                            ("location", &format!("{own}/signin?next=/a")),
                            ("content-location", &format!("{own}/page")),
                            ("refresh", &format!("3; url={own}/later")),
                            ("content-type", "text/plain"),
                        ],
                        "moved",
                    )
                }
            },
        );
        addr
    };
    let cdn = TestCdn::builder().start().await;
    let gateway = gateway("", origin, &cdn).await;
    let request = b"GET /site/account HTTP/1.1\r\nHost: shop.example\r\nConnection: close\r\n\r\n";
    let (status, answer) = raw(gateway.addr, request).await;
    assert_eq!(status, 302, "{answer}");
    for line in [
        "location: http://shop.example/signin?next=/a",
        "content-location: http://shop.example/page",
        "refresh: 3; url=http://shop.example/later",
    ] {
        assert!(
            answer.to_ascii_lowercase().contains(line),
            "{line} in {answer}"
        );
    }
    assert!(!answer.contains(&origin.to_string()), "{answer}");

    // Behind a trusted proxy, the origin it reports: its scheme and host.
    let gateway = gateway_trusting_localhost(origin, &cdn).await;
    let request = b"GET /site/account HTTP/1.1\r\nHost: internal\r\nX-Forwarded-Proto: https\r\nX-Forwarded-Host: www.shop.example\r\nConnection: close\r\n\r\n";
    let (_, answer) = raw(gateway.addr, request).await;
    assert!(
        answer
            .to_ascii_lowercase()
            .contains("location: https://www.shop.example/signin?next=/a"),
        "{answer}"
    );
}

async fn gateway_trusting_localhost(origin: SocketAddr, cdn: &TestCdn) -> TestGateway {
    gateway(
        "[server]\ntrusted_proxies = [\"127.0.0.1/32\"]",
        origin,
        cdn,
    )
    .await
}

#[tokio::test]
async fn a_host_that_is_not_uri_host_syntax_is_refused_before_any_route() {
    let (origin, seen) = recording_origin().await;
    let cdn = TestCdn::builder().file(H, &b"file"[..]).start().await;
    let gateway = gateway("", origin, &cdn).await;
    let count = || seen.lock().expect("not poisoned").len();
    // Such hosts never reach a site or the CDN, on any path.
    let before = (count(), cdn.received().len());
    for host in [
        "x\"><script>alert(1)</script>",
        "gw/evil",
        "user@gw",
        "gw:99999",
        "gw:80:80",
        "[::1",
        "[gw]",
        "a b",
        "",
    ] {
        for path in ["/site/page", &format!("/img/{H}"), "/no-route"] {
            let request =
                format!("GET {path} HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n");
            let (status, answer) = raw(gateway.addr, request.as_bytes()).await;
            assert_eq!(status, 400, "Host: {host} on {path}: {answer}");
            assert!(answer.contains("Host"), "{answer}");
            assert!(!answer.contains("script"), "{answer}");
        }
    }
    assert_eq!((count(), cdn.received().len()), before);
}

#[tokio::test]
async fn an_h2_request_whose_host_differs_from_its_authority_is_refused() {
    let (origin, seen) = recording_origin().await;
    let cdn = TestCdn::builder().file(H, &b"file"[..]).start().await;
    let gateway = gateway("", origin, &cdn).await;
    let h2 = h2_client();
    let url = gateway.url("/site/page");
    let authority = gateway.addr.to_string();

    let refused = send_with(&h2, Method::GET, &url, &[("host", "evil.example")]).await;
    assert_eq!(
        refused.status,
        StatusCode::BAD_REQUEST,
        "{}",
        refused.text()
    );
    assert!(seen.lock().expect("not poisoned").is_empty());

    // The same host, or none besides `:authority`: the authority is the host.
    for headers in [vec![("host", authority.as_str())], vec![]] {
        let answer = send_with(&h2, Method::GET, &url, &headers).await;
        assert_eq!(answer.status, StatusCode::OK, "{}", answer.text());
        assert_eq!(last(&seen)["x-forwarded-host"], authority.as_str());
    }
}

/// A stand-in for an HTTP/1.0 site (`python3 -m http.server`): reads one request head, answers
/// `HTTP/1.0 200 OK` (with a `Content-Length` unless the path is `/no-length`) and closes.
async fn http_1_0_origin() -> SocketAddr {
    let (listener, addr) = bind().await;
    tokio::spawn(accept_loop(listener, |stream| async move {
        let mut stream = BufReader::new(stream);
        let mut request_line = String::new();
        if stream.read_line(&mut request_line).await.is_err() {
            return;
        }
        let mut line = String::new();
        while stream.read_line(&mut line).await.is_ok_and(|n| n > 0) && line != "\r\n" {
            line.clear();
        }
        let head = if request_line.contains("/no-length") {
            "HTTP/1.0 200 OK\r\nContent-Type: text/plain\r\n\r\n"
        } else {
            "HTTP/1.0 200 OK\r\nContent-Type: text/plain\r\nContent-Length: 5\r\n\r\n"
        };
        let _ = stream.write_all(format!("{head}hello").as_bytes()).await;
        // Dropping the stream closes it, as an HTTP/1.0 server does.
    }));
    addr
}

/// Reads one response from a kept-alive connection: its head and its body, framed by
/// `Content-Length` or chunked coding.
async fn read_response(stream: &mut BufReader<TcpStream>) -> (String, Vec<u8>) {
    let mut head = String::new();
    loop {
        let mut line = String::new();
        let n = stream.read_line(&mut line).await.expect("read");
        assert!(n > 0, "the connection closed; head so far: {head:?}");
        if line == "\r\n" {
            break;
        }
        head.push_str(&line);
    }
    let lower = head.to_ascii_lowercase();
    let length = lower
        .lines()
        .find_map(|l| l.strip_prefix("content-length:"))
        .map(|v| v.trim().parse::<usize>().expect("a length"));
    let mut body = Vec::new();
    if let Some(length) = length {
        body.resize(length, 0);
        stream.read_exact(&mut body).await.expect("body");
    } else {
        assert!(lower.contains("transfer-encoding: chunked"), "{head}");
        loop {
            let mut size = String::new();
            stream.read_line(&mut size).await.expect("chunk size");
            let size = usize::from_str_radix(size.trim(), 16).expect("hex size");
            let mut chunk = vec![0; size + 2];
            stream.read_exact(&mut chunk).await.expect("chunk");
            if size == 0 {
                break;
            }
            body.extend_from_slice(&chunk[..size]);
        }
    }
    (head, body)
}

#[tokio::test]
async fn an_http_1_0_site_is_answered_in_the_clients_version_and_keeps_the_connection() {
    let origin = http_1_0_origin().await;
    let gateway =
        TestGateway::start(&one_route("site", "/", &format!("http://{origin}"), "")).await;
    let stream = TcpStream::connect(gateway.addr).await.expect("connects");
    let mut stream = BufReader::new(stream);
    tokio::time::timeout(Duration::from_secs(10), async {
        // Two requests on one HTTP/1.1 connection: both answered as HTTP/1.1, kept alive.
        for path in ["/page", "/no-length"] {
            let request = format!("GET {path} HTTP/1.1\r\nHost: gw\r\n\r\n");
            stream.write_all(request.as_bytes()).await.expect("sent");
            let (head, body) = read_response(&mut stream).await;
            assert!(head.starts_with("HTTP/1.1 200 "), "{path}: {head}");
            assert!(
                !head.to_ascii_lowercase().contains("connection: close"),
                "{head}"
            );
            assert_eq!(body, b"hello", "{path}");
        }
    })
    .await
    .expect("answered within 10 s");

    // An HTTP/1.0 client is still answered in HTTP/1.0.
    let (status, answer) = raw(gateway.addr, b"GET /page HTTP/1.0\r\nHost: gw\r\n\r\n").await;
    assert_eq!(status, 200, "{answer}");
    assert!(answer.starts_with("HTTP/1.0 200 "), "{answer}");
    assert!(answer.ends_with("hello"), "{answer}");
}
