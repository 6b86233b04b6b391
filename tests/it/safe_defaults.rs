//! Safe by default in front of a real site, over real sockets: what a proxy route serves as the
//! site, what the CDN's answers may carry back, which URLs a site route signs, and what caches
//! in front may keep.

use crate::support;

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use http::{HeaderMap, Method, StatusCode};
use signgate::policy::Call;
use signgate::verify::verify_at;
use support::*;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;

/// A stand-in CDN answering every file with `content_type` and `headers`, the body `<b>file</b>`.
async fn cdn_serving(content_type: &'static str, headers: &'static [(&str, &str)]) -> SocketAddr {
    start_origin(Arc::new(move |_, _| {
        let mut all = vec![("content-type", content_type)];
        all.extend_from_slice(headers);
        respond(
            200,
            &all,
            "<b>file</b><script>alert(document.cookie)</script>",
        )
    }))
    .await
}

async fn proxy_gateway(cdn: SocketAddr, extra: &str) -> TestGateway {
    TestGateway::start(&one_route(
        "proxy",
        "/img/",
        &format!("http://{cdn}"),
        extra,
    ))
    .await
}

async fn site_gateway(origin: SocketAddr, extra: &str) -> TestGateway {
    TestGateway::start(&one_route("site", "/", &format!("http://{origin}"), extra)).await
}

const ORIGIN_WIDE: [(&str, &str); 7] = [
    ("set-cookie", "cdn_session=1; Path=/"),
    (
        "strict-transport-security",
        "max-age=63072000; includeSubDomains",
    ),
    ("alt-svc", "h3=\":443\"; ma=86400"),
    ("clear-site-data", "\"*\""),
    ("access-control-allow-origin", "*"),
    ("access-control-allow-credentials", "true"),
    ("content-security-policy", "default-src *"),
];

#[tokio::test]
async fn uploaded_html_and_svg_are_downloads_that_cannot_run_as_the_site() {
    for (kind, inline) in [
        ("text/html", false),
        ("image/svg+xml", false),
        ("application/xhtml+xml; charset=utf-8", false),
        ("image/png", true),
        ("image/webp", true),
    ] {
        let cdn = cdn_serving(kind, &ORIGIN_WIDE).await;
        let gateway = proxy_gateway(cdn, "").await;
        let answer = get(&gateway.url(&format!("/img/{H}"))).await;
        assert_eq!(answer.status, StatusCode::OK, "{kind}");
        let headers = &answer.headers;
        assert_eq!(headers["x-content-type-options"], "nosniff", "{kind}");
        let csp = headers["content-security-policy"].to_str().expect("ascii");
        assert!(
            csp.contains("sandbox") && csp.contains("default-src 'none'"),
            "{csp}"
        );
        match inline {
            true => assert!(headers.get("content-disposition").is_none(), "{kind}"),
            false => assert_eq!(headers["content-disposition"], "attachment", "{kind}"),
        }
        for (name, _) in ORIGIN_WIDE {
            if name != "content-security-policy" {
                assert!(headers.get(name).is_none(), "{kind}: {name} passed");
            }
        }
    }
}

#[tokio::test]
async fn inline_types_and_cors_origins_are_the_routes_choice() {
    let cdn = cdn_serving("application/pdf", &ORIGIN_WIDE).await;
    let gateway = proxy_gateway(
        cdn,
        "inline_types = [\"application/pdf\"]\ncors_origins = [\"https://app.example.com\"]",
    )
    .await;
    let url = gateway.url(&format!("/img/{H}"));
    let listed = send(Method::GET, &url, &[("origin", "https://app.example.com")]).await;
    assert!(listed.headers.get("content-disposition").is_none());
    assert_eq!(
        listed.headers["access-control-allow-origin"],
        "https://app.example.com"
    );
    assert!(
        listed
            .headers
            .get("access-control-allow-credentials")
            .is_none()
    );
    assert_eq!(listed.headers["vary"], "origin");
    let other = send(Method::GET, &url, &[("origin", "https://evil.example")]).await;
    assert!(other.headers.get("access-control-allow-origin").is_none());
    let preflight = send(
        Method::OPTIONS,
        &url,
        &[
            ("origin", "https://app.example.com"),
            ("access-control-request-method", "GET"),
        ],
    )
    .await;
    assert_eq!(preflight.status, StatusCode::NO_CONTENT);
    assert_eq!(
        preflight.headers["access-control-allow-methods"],
        "GET, HEAD"
    );
}

/// A CDN that echoes the URL it was asked for (credentials and all) in its error page, and
/// redirects to it.
async fn echoing_cdn() -> SocketAddr {
    start_origin(Arc::new(|parts, _| {
        let asked = parts.uri.to_string();
        if parts.uri.path().contains("resize=") {
            respond(
                302,
                &[("location", &format!("https://cdn.example{asked}"))],
                "",
            )
        } else {
            respond(
                403,
                &[("content-type", "text/html"), ("retry-after", "7")],
                format!("<h1>Forbidden</h1><p>bad policy for {asked}</p>"),
            )
        }
    }))
    .await
}

#[tokio::test]
async fn cdn_errors_and_locations_never_hand_the_signature_to_the_client() {
    let gateway = proxy_gateway(echoing_cdn().await, "calls = [\"read\", \"convert\"]").await;
    let error = get(&gateway.url(&format!("/img/{H}"))).await;
    assert_eq!(error.status, StatusCode::FORBIDDEN);
    assert_eq!(error.headers["retry-after"], "7");
    assert_eq!(error.headers["content-type"], "text/plain; charset=utf-8");
    let text = error.text();
    assert!(
        !text.contains("policy") && !text.contains("signature"),
        "{text}"
    );

    let redirect = get(&gateway.url(&format!("/img/resize=width:10/{H}"))).await;
    assert_eq!(redirect.status, StatusCode::FOUND);
    let location = redirect.headers["location"].to_str().expect("ascii");
    assert!(
        !location.contains("policy") && !location.contains("signature"),
        "{location}"
    );
    assert!(
        location.ends_with(&format!("/resize=width:10/{H}")),
        "{location}"
    );
}

/// A raw upstream that answers every request with `head`, one chunk `abc`, and then closes the
/// connection without the last chunk: a cut-short body.
async fn cut_short_upstream(head: &'static str) -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("addr");
    tokio::spawn(async move {
        while let Ok((mut stream, _)) = listener.accept().await {
            tokio::spawn(async move {
                let mut seen = Vec::new();
                let mut buf = [0u8; 4096];
                while !seen.windows(4).any(|w| w == b"\r\n\r\n") {
                    match stream.read(&mut buf).await {
                        Ok(0) | Err(_) => return,
                        Ok(n) => seen.extend_from_slice(&buf[..n]),
                    }
                }
                let _ = stream.write_all(head.as_bytes()).await;
                let _ = stream.write_all(b"3\r\nabc\r\n").await;
                tokio::time::sleep(Duration::from_millis(50)).await;
            });
        }
    });
    addr
}

#[tokio::test]
async fn content_length_beside_transfer_encoding_never_makes_a_cut_answer_look_whole() {
    let head = "HTTP/1.1 200 OK\r\ncontent-type: image/png\r\ncontent-length: 3\r\n\
                transfer-encoding: chunked\r\n\r\n";
    for mode in ["proxy", "site"] {
        let upstream = cut_short_upstream(head).await;
        let gateway =
            TestGateway::start(&one_route(mode, "/", &format!("http://{upstream}"), "")).await;
        let response = client()
            .request(get_request(&gateway.url(&format!("/{H}"))))
            .await
            .expect("headers arrive");
        assert!(
            response.headers().get("content-length").is_none(),
            "{mode}: {:?}",
            response.headers()
        );
        let body = http_body_util::BodyExt::collect(response.into_body()).await;
        assert!(
            body.is_err(),
            "{mode}: a cut-short body must not arrive whole"
        );
    }
}

/// A site whose page echoes the request's `q` parameter in an `<img>`, a JSON answer and a
/// `Link` header, and also shows a handle of its own.
async fn echoing_site() -> SocketAddr {
    start_origin(Arc::new(|parts, _| {
        let query = parts.uri.query().unwrap_or_default();
        let q = query
            .split('&')
            .find_map(|pair| pair.strip_prefix("q="))
            .map(|q| {
                percent_encoding::percent_decode_str(q)
                    .decode_utf8_lossy()
                    .into_owned()
            })
            .unwrap_or_default();
        let own = format!("https://cdn.filestackcontent.com/{H2}");
        let link = format!("<{q}>; rel=preload; as=image");
        if parts.uri.path() == "/api" {
            let body = format!(r#"{{"echo":"{q}","own":"{own}"}}"#);
            return respond(
                200,
                &[("content-type", "application/json"), ("link", &link)],
                body,
            );
        }
        let page = format!(r#"<p>You searched for</p><img src="{q}"><img src="{own}">"#);
        respond(200, &[("content-type", "text/html"), ("link", &link)], page)
    }))
    .await
}

fn signed(text: &str, handle: &str) -> bool {
    text.contains(&format!("{handle}?policy="))
}

#[tokio::test]
async fn a_handle_the_request_names_is_never_signed_in_the_answer() {
    let gateway = site_gateway(echoing_site().await, "").await;
    let victim = format!("https://cdn.filestackcontent.com/{H}");
    for path in ["/search", "/api"] {
        for spelling in [
            victim.clone(),
            victim.replace(':', "%3A").replace('/', "%2F"),
            victim.replace(':', "%253A").replace('/', "%252F"),
        ] {
            let answer = get(&gateway.url(&format!("{path}?q={spelling}"))).await;
            let text = answer.text();
            let link = answer.headers["link"].to_str().expect("ascii");
            assert!(!signed(&text, H), "{path} {spelling}: {text}");
            assert!(!signed(link, H), "{path} {spelling}: {link}");
            assert!(
                signed(&text, H2),
                "the site's own file is still signed: {text}"
            );
        }
    }
    // In the path too.
    let answer = get(&gateway.url(&format!("/{H}?q={victim}"))).await;
    assert!(!signed(&answer.text(), H));

    let unguarded = site_gateway(echoing_site().await, "reflection_guard = false").await;
    let answer = get(&unguarded.url(&format!("/search?q={victim}"))).await;
    assert!(
        signed(&answer.text(), H),
        "the guard is what kept it unsigned"
    );
}

#[tokio::test]
async fn http_cdn_urls_are_signed_as_https_unless_the_route_keeps_http() {
    let origin = start_origin(Arc::new(|_, _| {
        let page = format!(r#"<img src="http://cdn.filestackcontent.com/{H}">"#);
        respond(200, &[("content-type", "text/html")], page)
    }))
    .await;
    let gateway = site_gateway(origin, "").await;
    let html = get(&gateway.url("/")).await.text();
    assert!(
        html.contains(&format!("\"https://cdn.filestackcontent.com/{H}?policy=")),
        "{html}"
    );
    let url = html.split('"').nth(1).expect("src").replace("&amp;", "&");
    verify_at(&url, &secret(), now(), Call::Read).expect("valid");
    let plain = site_gateway(origin, "keep_http = true").await;
    let html = get(&plain.url("/")).await.text();
    assert!(
        html.contains(&format!("\"http://cdn.filestackcontent.com/{H}?policy=")),
        "{html}"
    );
}

/// The default `ttl` (1h) plus `bucket` (5m) less `min_validity` (ttl / 4): the most a signed
/// answer may be kept; and the least, one bucket earlier.
const MOST: u64 = 3600 + 300 - 900;
const LEAST: u64 = 3600 - 900;

fn max_age(headers: &HeaderMap, name: &str, directive: &str) -> u64 {
    let value = headers[name].to_str().expect("ascii");
    value
        .split(',')
        .find_map(|d| d.trim().strip_prefix(directive))
        .and_then(|v| v.strip_prefix('='))
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| panic!("{name}: {value}"))
}

#[tokio::test]
async fn a_page_is_never_given_freshness_the_site_did_not_give() {
    let origin = start_origin(Arc::new(|parts, _| {
        let page = format!(r#"<img src="https://cdn.filestackcontent.com/{H}">"#);
        match parts.uri.path() {
            "/personal" => respond(
                200,
                &[("content-type", "text/html"), ("set-cookie", "s=1")],
                page,
            ),
            _ => respond(
                200,
                &[
                    ("content-type", "text/html"),
                    ("set-cookie", "s=1"),
                    ("cache-control", "max-age=600"),
                ],
                page,
            ),
        }
    }))
    .await;
    let gateway = site_gateway(origin, "").await;
    let personal = get(&gateway.url("/personal")).await;
    assert!(signed(&personal.text(), H));
    assert!(
        personal.headers.get("cache-control").is_none(),
        "{:?}",
        personal.headers
    );
    let cookie = get(&gateway.url("/cookie")).await;
    assert_eq!(cookie.headers["cache-control"], "private, max-age=600");
}

#[tokio::test]
async fn every_answer_carrying_a_signature_is_capped_whatever_its_type() {
    let origin = start_origin(Arc::new(|parts, _| {
        let cdn = format!("https://cdn.filestackcontent.com/{H}");
        match parts.uri.path() {
            "/moved" => respond(301, &[("location", &cdn)], ""),
            "/plain-moved" => respond(301, &[("location", "/elsewhere")], ""),
            _ => respond(
                200,
                &[
                    ("content-type", "text/plain"),
                    ("link", &format!("<{cdn}>; rel=preload; as=image")),
                    ("cache-control", "public, max-age=31536000, immutable"),
                    ("cdn-cache-control", "max-age=86400"),
                    ("surrogate-control", "max-age=86400"),
                    ("expires", "Thu, 01 Jan 2099 00:00:00 GMT"),
                    ("etag", "\"v1\""),
                ],
                "plain text",
            ),
        }
    }))
    .await;
    let gateway = site_gateway(origin, "").await;
    let text = get(&gateway.url("/text")).await;
    assert!(signed(text.headers["link"].to_str().expect("ascii"), H));
    let headers = &text.headers;
    let cache_control = headers["cache-control"].to_str().expect("ascii");
    assert!(!cache_control.contains("immutable"), "{cache_control}");
    for name in ["cache-control", "cdn-cache-control", "surrogate-control"] {
        let age = max_age(headers, name, "max-age");
        assert!((LEAST..=MOST).contains(&age), "{name}: {age}");
    }
    let expires = httpdate::parse_http_date(headers["expires"].to_str().expect("ascii"))
        .expect("a date")
        .duration_since(std::time::UNIX_EPOCH)
        .expect("after 1970")
        .as_secs();
    assert!(expires <= now() + MOST, "{expires}");
    assert!(headers.get("etag").is_none());

    let moved = get(&gateway.url("/moved")).await;
    assert_eq!(moved.status, StatusCode::MOVED_PERMANENTLY);
    assert!(signed(
        moved.headers["location"].to_str().expect("ascii"),
        H
    ));
    let age = max_age(&moved.headers, "cache-control", "max-age");
    assert!((LEAST..=MOST).contains(&age), "{age}");
    // A redirect with nothing signed is the site's business.
    let plain = get(&gateway.url("/plain-moved")).await;
    assert!(plain.headers.get("cache-control").is_none());
}

#[tokio::test]
async fn a_page_is_never_cut_to_a_byte_range_of_the_sites_bytes() {
    let ranges = Arc::new(Mutex::new(Vec::new()));
    let seen = Arc::clone(&ranges);
    let origin = start_origin(Arc::new(move |parts, _| {
        let range = parts.headers.get("range").cloned();
        seen.lock().expect("not poisoned").push(range.clone());
        let page = format!(r#"<html><img src="https://cdn.filestackcontent.com/{H}"></html>"#);
        match range {
            Some(_) => respond(
                206,
                &[
                    ("content-type", "text/html"),
                    (
                        "content-range",
                        &format!("bytes 19-{}/{}", page.len() - 1, page.len()),
                    ),
                ],
                page[19..].to_owned(),
            ),
            None => respond(200, &[("content-type", "text/html")], page),
        }
    }))
    .await;
    let gateway = site_gateway(origin, "").await;
    for accept in ["*/*", "text/html"] {
        let answer = send(
            Method::GET,
            &gateway.url("/page"),
            &[
                ("range", "bytes=19-"),
                ("if-range", "\"v1\""),
                ("accept", accept),
            ],
        )
        .await;
        assert_eq!(answer.status, StatusCode::OK, "{accept}");
        assert!(answer.headers.get("content-range").is_none());
        assert!(signed(&answer.text(), H));
    }
    assert_eq!(
        *ranges.lock().expect("not poisoned"),
        vec![None, None],
        "no Range went up for a page"
    );
    // A video keeps its ranges, and a range that comes back for a page passes untouched.
    let video = send(
        Method::GET,
        &gateway.url("/clip"),
        &[("range", "bytes=19-"), ("sec-fetch-dest", "video")],
    )
    .await;
    assert_eq!(video.status, StatusCode::PARTIAL_CONTENT);
    assert!(!signed(&video.text(), H));
}
