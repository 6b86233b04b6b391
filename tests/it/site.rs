//! site mode over real sockets: the gallery's bare CDN URLs come out signed, and everything
//! else passes as a reverse proxy should.

use crate::support;

use std::io::Write;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http::{Method, StatusCode};
use http_body_util::BodyExt;
use signgate::policy::Call;
use signgate::verify::verify_at;
use support::*;

fn gallery_html() -> String {
    format!(
        r#"<!doctype html><html><head><meta property="og:image" content="https://cdn.filestackcontent.com/{H}">
<style>.hero{{background:url(https://cdn.filestackcontent.com/{H2})}}</style></head><body>
<h1>Pop Art gallery</h1>
<figure><img src="https://cdn.filestackcontent.com/{H}" srcset="https://cdn.filestackcontent.com/resize=width:300/{H} 300w"><figcaption>Soup</figcaption></figure>
<figure><img src="https://cdn.filestackcontent.com/{H2}?policy=stale&amp;signature=stale"><figcaption>Marilyn</figcaption></figure>
<img src="/static/logo.png"><a href="https://example.com/{H}">elsewhere</a>
</body></html>"#
    )
}

fn signed_urls(html: &str) -> Vec<String> {
    html.split(['"', ' ', '(', ')'])
        .filter(|s| s.starts_with("https://cdn.filestackcontent.com/"))
        .map(|s| s.replace("&amp;", "&"))
        .collect()
}

async fn site_gateway(origin: std::net::SocketAddr, extra: &str) -> TestGateway {
    TestGateway::start(&one_route("site", "/", &format!("http://{origin}"), extra)).await
}

#[tokio::test]
async fn gallery_urls_are_signed_and_verify_while_the_rest_is_untouched() {
    let origin = start_origin(Arc::new(|_, _| {
        respond(
            200,
            &[
                ("content-type", "text/html; charset=utf-8"),
                ("etag", "\"v1\""),
                ("last-modified", "Mon, 01 Jan 2024 00:00:00 GMT"),
                ("cache-control", "public, max-age=86400"),
                ("content-length", &gallery_html().len().to_string()),
            ],
            gallery_html(),
        )
    }))
    .await;
    let gateway = site_gateway(origin, "").await;
    let answer = get(&gateway.url("/")).await;
    assert_eq!(answer.status, StatusCode::OK);
    let html = answer.text();
    let urls = signed_urls(&html);
    assert_eq!(urls.len(), 5, "{html}");
    for url in &urls {
        let call = if url.contains("resize=") {
            Call::Convert
        } else {
            Call::Read
        };
        verify_at(url, &secret(), now(), call).unwrap_or_else(|e| panic!("{url}: {e}"));
        assert_eq!(
            url.matches("policy=").count() + url.matches("security=").count(),
            1,
            "{url}"
        );
        assert!(!url.contains("stale"), "{url}");
    }
    assert!(html.contains(r#"<img src="/static/logo.png">"#));
    assert!(html.contains(&format!(r#"<a href="https://example.com/{H}">"#)));
    assert!(html.contains("<h1>Pop Art gallery</h1>"));
    // A page never outlives its signatures in a cache.
    assert!(answer.headers.get("etag").is_none() && answer.headers.get("last-modified").is_none());
    assert!(answer.headers.get("content-length").is_none());
    let cache_control = answer.headers["cache-control"].to_str().expect("ascii");
    let max_age: u64 = cache_control
        .rsplit("max-age=")
        .next()
        .expect("max-age")
        .parse()
        .expect("number");
    assert!(
        cache_control.starts_with("public, ") && max_age <= 3600 + 300,
        "{cache_control}"
    );
    let expiry = signgate::policy::DecodedPolicy::decode(
        signgate::verify::parse_url(&urls[0])
            .expect("parses")
            .policy
            .as_deref()
            .expect("policy"),
    )
    .expect("decodes")
    .expiry;
    assert!(now() + max_age <= expiry, "cached past its signatures");
}

#[tokio::test]
async fn compressed_pages_are_decompressed_and_rewritten_and_zstd_is_asked_for_too() {
    let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
    gz.write_all(gallery_html().as_bytes()).expect("gzip");
    let gzipped = Bytes::from(gz.finish().expect("gzip"));
    let zstded =
        Bytes::from(zstd::stream::encode_all(gallery_html().as_bytes(), 19).expect("zstd"));
    let origin = start_origin(Arc::new(move |parts, _| {
        assert_eq!(
            parts.headers["accept-encoding"], "gzip, zstd, br",
            "compress must not be offered"
        );
        let (encoding, body) = match parts.uri.path() {
            "/zstd" => ("zstd", zstded.clone()),
            _ => ("gzip", gzipped.clone()),
        };
        respond(
            200,
            &[
                ("content-type", "text/html"),
                ("content-encoding", encoding),
            ],
            body,
        )
    }))
    .await;
    let gateway = site_gateway(origin, "compress = false").await;
    for path in ["/", "/zstd"] {
        let answer = send(
            Method::GET,
            &gateway.url(path),
            &[("accept-encoding", "gzip, zstd, compress, br")],
        )
        .await;
        assert_eq!(answer.status, StatusCode::OK, "{path}");
        assert!(answer.headers.get("content-encoding").is_none(), "{path}");
        assert_eq!(
            signed_urls(&answer.text()).len(),
            5,
            "{path}: {}",
            answer.text()
        );
    }
}

#[tokio::test]
async fn json_answers_and_url_headers_are_signed() {
    let origin = start_origin(Arc::new(|parts, _| match parts.uri.path() {
        "/api/photos" => respond(
            200,
            &[("content-type", "application/json")],
            format!(r#"[{{"url":"https://cdn.filestackcontent.com/{H}","caption":"Soup"}}]"#),
        ),
        _ => respond(
            302,
            &[
                ("location", &format!("https://cdn.filestackcontent.com/{H}")),
                (
                    "link",
                    &format!("<https://cdn.filestackcontent.com/{H2}>; rel=preload; as=image"),
                ),
            ],
            "",
        ),
    }))
    .await;
    let gateway = site_gateway(origin, "").await;
    let json = get(&gateway.url("/api/photos")).await;
    let value: serde_json::Value = serde_json::from_slice(&json.body).expect("json");
    let url = value[0]["url"].as_str().expect("url");
    assert!(
        verify_at(url, &secret(), now(), Call::Read).is_ok(),
        "{url}"
    );
    assert_eq!(value[0]["caption"], "Soup");

    let redirect = get(&gateway.url("/latest")).await;
    assert_eq!(redirect.status, StatusCode::FOUND);
    let location = redirect.headers["location"].to_str().expect("ascii");
    assert!(
        verify_at(location, &secret(), now(), Call::Read).is_ok(),
        "{location}"
    );
    assert!(
        redirect.headers["link"]
            .to_str()
            .expect("ascii")
            .contains("signature=")
    );
}

#[tokio::test]
async fn other_bodies_methods_and_cookies_pass_as_a_reverse_proxy_should() {
    let png = Bytes::from_static(
        b"\x89PNG\r\n\x1a\n https://cdn.filestackcontent.com/KW9EJhYtS6y48Whm2S6D",
    );
    let served = png.clone();
    let origin = start_origin(Arc::new(move |parts, body| {
        match (parts.method.as_str(), parts.uri.path()) {
            ("GET", "/logo.png") => respond(
                200,
                &[("content-type", "image/png"), ("etag", "\"logo\"")],
                served.clone(),
            ),
            ("POST", "/photos") => {
                let cookie = parts
                    .headers
                    .get("cookie")
                    .map(|v| v.to_str().unwrap_or_default().to_owned());
                let host = parts.headers["host"]
                    .to_str()
                    .unwrap_or_default()
                    .to_owned();
                respond(
                    201,
                    &[
                        ("set-cookie", "flash=saved; Path=/"),
                        ("content-type", "text/plain"),
                    ],
                    format!("{} bytes, cookie={cookie:?}, host={host}", body.len()),
                )
            }
            _ => respond(404, &[("content-type", "text/plain")], "nope"),
        }
    }))
    .await;
    let gateway = site_gateway(origin, "").await;
    let logo = get(&gateway.url("/logo.png")).await;
    assert_eq!(logo.body, png, "non-HTML bodies are never rewritten");
    assert_eq!(logo.headers["etag"], "\"logo\"");
    assert_eq!(
        logo.headers["content-length"],
        png.len().to_string().as_str()
    );

    let posted = send_body(
        Method::POST,
        &gateway.url("/photos"),
        &[("cookie", "session=abc")],
        vec![7u8; 100_000],
    )
    .await;
    assert_eq!(posted.status, StatusCode::CREATED);
    assert_eq!(
        posted.text(),
        format!(
            "100000 bytes, cookie=Some(\"session=abc\"), host={}",
            gateway.addr
        )
    );
    assert_eq!(posted.headers["set-cookie"], "flash=saved; Path=/");
    assert_eq!(
        get(&gateway.url("/missing")).await.status,
        StatusCode::NOT_FOUND
    );
}

/// A JSON answer serde would not give back as written (big integers, `19.90`, duplicate keys,
/// escapes, odd spacing), with one CDN URL value deep inside and one CDN URL as a key.
fn awkward_json() -> String {
    format!(
        "{{ \"z\":12345678901234567890123,\t\"price\" :19.90,\"a\":1,\"a\":2,\r\n\
         \"name\":\"caf\\u00e9 \\/ bar\",\"https://cdn.filestackcontent.com/{H2}\":0,\
         \"deep\":[ [ {{\"k\":[\"x\", \"https://cdn.filestackcontent.com/{H}\"  ]}} ] ] }}\n"
    )
}

#[tokio::test]
async fn json_answers_come_back_byte_for_byte_but_for_the_signed_url() {
    let origin = start_origin(Arc::new(|_, _| {
        respond(
            200,
            &[("content-type", "application/json; charset=utf-8")],
            awkward_json(),
        )
    }))
    .await;
    let gateway = site_gateway(origin, "").await;
    let answer = get(&gateway.url("/api/photos")).await;
    assert_eq!(answer.status, StatusCode::OK);
    let text = answer.text();
    let sent = awkward_json();
    let (before, after) = sent
        .split_once(&format!("\"https://cdn.filestackcontent.com/{H}\""))
        .expect("the URL value");
    assert!(
        text.starts_with(before) && text.ends_with(after),
        "only the URL changed: {text}"
    );
    let url = text[before.len()..text.len() - after.len()]
        .strip_prefix('"')
        .and_then(|u| u.strip_suffix('"'))
        .expect("a JSON string");
    assert!(
        verify_at(url, &secret(), now(), Call::Read).is_ok(),
        "{url}"
    );
}

/// A site sends `first` (holding a CDN URL and the word "first") of a `content_type` answer,
/// then waits: the client must get it, signed, before `second` is released.
async fn assert_streams_through_the_rewriter(
    content_type: &'static str,
    first: String,
    second: &'static [u8],
) {
    let gate = Gate::new();
    let origin_gate = Arc::clone(&gate);
    let origin = start_origin(Arc::new(move |_, _| {
        let body = gated(
            Bytes::from(first.clone()),
            Bytes::from_static(second),
            Arc::clone(&origin_gate),
        );
        let mut response = hyper::Response::new(body.boxed());
        response
            .headers_mut()
            .insert("content-type", content_type.parse().expect("value"));
        response
    }))
    .await;
    let gateway = site_gateway(origin, "").await;
    tokio::time::timeout(Duration::from_secs(10), async {
        let mut body = client()
            .request(get_request(&gateway.url("/")))
            .await
            .expect("answer")
            .into_body();
        let mut seen = String::new();
        while !seen.contains("first") {
            let frame = body.frame().await.expect("a frame").expect("ok");
            seen.push_str(&String::from_utf8_lossy(&frame.into_data().expect("data")));
        }
        assert!(seen.contains("signature="), "{seen}");
        gate.open();
        let rest = body.collect().await.expect("rest").to_bytes();
        assert_eq!(rest, second, "the rest as the site sent it");
    })
    .await
    .expect("streamed within 10 s");
}

#[tokio::test]
async fn json_answers_stream_through_the_rewriter() {
    assert_streams_through_the_rewriter(
        "application/json",
        format!(
            "{{\"photos\":[{{\"url\":\"https://cdn.filestackcontent.com/{H}\",\"caption\":\"first\"}}"
        ),
        b",{\"caption\":\"second\"}]}",
    )
    .await;
}

#[tokio::test]
async fn pages_stream_through_the_rewriter() {
    assert_streams_through_the_rewriter(
        "text/html",
        format!("<html><body><img src=\"https://cdn.filestackcontent.com/{H}\"><p>first</p>"),
        b"<p>second</p></body></html>",
    )
    .await;
}

#[tokio::test]
async fn navigations_never_revalidate_a_page_whose_urls_may_have_expired() {
    let origin = start_origin(Arc::new(|parts, _| {
        let conditional = parts.headers.contains_key("if-none-match")
            || parts.headers.contains_key("if-modified-since");
        respond(
            200,
            &[("content-type", "text/html")],
            format!("<p>conditional={conditional}</p>"),
        )
    }))
    .await;
    let gateway = site_gateway(origin, "").await;
    let page = send(
        Method::GET,
        &gateway.url("/"),
        &[
            ("accept", "text/html"),
            ("if-none-match", "\"v1\""),
            ("if-modified-since", "Mon, 01 Jan 2024 00:00:00 GMT"),
        ],
    )
    .await;
    assert_eq!(page.text(), "<p>conditional=false</p>");
    let image = send(
        Method::GET,
        &gateway.url("/a.png"),
        &[("accept", "image/png"), ("if-none-match", "\"v1\"")],
    )
    .await;
    assert_eq!(image.text(), "<p>conditional=true</p>");
}

#[tokio::test]
async fn an_h2_clients_cookie_fields_reach_the_site_as_one() {
    let origin = start_origin(Arc::new(|parts, _| {
        let cookies: Vec<String> = parts
            .headers
            .get_all("cookie")
            .iter()
            .map(|v| v.to_str().unwrap_or_default().to_owned())
            .collect();
        respond(200, &[("content-type", "text/plain")], cookies.join("|"))
    }))
    .await;
    let gateway = site_gateway(origin, "").await;
    let cookies = [
        ("cookie", "session=abc"),
        ("cookie", "theme=dark"),
        ("cookie", "a=1"),
    ];
    let answer = send_with(&h2_client(), Method::GET, &gateway.url("/"), &cookies).await;
    assert_eq!(answer.text(), "session=abc; theme=dark; a=1");
    let one = send_with(&client(), Method::GET, &gateway.url("/"), &cookies[..1]).await;
    assert_eq!(one.text(), "session=abc");
}

#[tokio::test]
async fn an_answer_with_150_headers_passes_and_one_past_max_response_headers_is_a_502() {
    let origin = start_origin(Arc::new(|parts, _| {
        let count: usize = parts.uri.query().and_then(|q| q.parse().ok()).unwrap_or(0);
        let names: Vec<String> = (0..count).map(|i| format!("x-h{i}")).collect();
        let mut headers: Vec<(&str, &str)> = names.iter().map(|n| (n.as_str(), "v")).collect();
        headers.push(("content-type", "text/plain"));
        respond(200, &headers, "many")
    }))
    .await;
    let gateway = site_gateway(origin, "").await;
    // The test's own client must take them too: hyper's default is 100.
    let roomy = hyper_util::client::legacy::Client::builder(hyper_util::rt::TokioExecutor::new())
        .http1_max_headers(1_000)
        .build_http();
    let answer = send_with(&roomy, Method::GET, &gateway.url("/?150"), &[]).await;
    assert_eq!(answer.status, StatusCode::OK);
    assert_eq!(answer.headers["x-h149"], "v");
    let small = site_gateway(origin, "max_response_headers = 50").await;
    assert_eq!(get(&small.url("/?40")).await.status, StatusCode::OK);
    assert_eq!(
        get(&small.url("/?60")).await.status,
        StatusCode::BAD_GATEWAY
    );
}

/// Server-sent events may be minutes apart: `text/event-stream` answers are not cut by
/// `body_idle_timeout`, unless `event_stream_idle_timeout` says so; other answers still are.
#[tokio::test]
async fn event_streams_are_not_cut_for_pausing_unless_configured() {
    for (content_type, extra, whole) in [
        ("text/event-stream", "", true),
        (
            "text/event-stream; charset=utf-8",
            "event_stream_idle_timeout = \"500ms\"",
            false,
        ),
        ("text/plain", "", false),
    ] {
        let gate = Gate::new();
        let origin = {
            let gate = Arc::clone(&gate);
            start_origin(Arc::new(move |_, _| {
                let body = gated(
                    "data: one\n\n".into(),
                    "data: two\n\n".into(),
                    Arc::clone(&gate),
                );
                let mut response = http::Response::new(BodyExt::boxed(body));
                response
                    .headers_mut()
                    .insert("content-type", http::HeaderValue::from_static(content_type));
                response
            }))
            .await
        };
        let gateway =
            site_gateway(origin, &format!("body_idle_timeout = \"500ms\"\n{extra}")).await;
        let url = gateway.url("/events");
        let reading = tokio::spawn(async move {
            let response = client().request(get_request(&url)).await.expect("head");
            response.into_body().collect().await.map(|b| b.to_bytes())
        });
        tokio::time::sleep(Duration::from_millis(1_500)).await;
        gate.open();
        let read = tokio::time::timeout(Duration::from_secs(5), reading)
            .await
            .expect("in time")
            .expect("task");
        match (whole, read) {
            (true, Ok(body)) => assert_eq!(&body[..], b"data: one\n\ndata: two\n\n"),
            (false, Err(_)) => {}
            (whole, read) => panic!("{content_type} {extra:?}: whole={whole}, got {read:?}"),
        }
    }
}

/// A compressed page sent in pieces is decoded and passed on piece by piece: what the site has
/// sent arrives before the rest exists, for each encoding signgate decodes.
#[tokio::test]
async fn a_compressed_page_streams_without_waiting_for_the_next_piece() {
    use std::io::Write as _;
    let first = "<html><body><p>first part</p>\n";
    let rest = "<p>second part</p></body></html>\n";
    type Pieces = (Vec<u8>, Vec<u8>);
    let gzip = || -> Pieces {
        let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
        gz.write_all(first.as_bytes()).expect("gzip");
        gz.flush().expect("sync flush");
        let one = std::mem::take(gz.get_mut());
        gz.write_all(rest.as_bytes()).expect("gzip");
        (one, gz.finish().expect("gzip"))
    };
    let deflate = || -> Pieces {
        let mut z = flate2::write::ZlibEncoder::new(Vec::new(), flate2::Compression::default());
        z.write_all(first.as_bytes()).expect("deflate");
        z.flush().expect("sync flush");
        let one = std::mem::take(z.get_mut());
        z.write_all(rest.as_bytes()).expect("deflate");
        (one, z.finish().expect("deflate"))
    };
    let brotli = || -> Pieces {
        let mut br = brotli::CompressorWriter::new(Vec::new(), 4096, 5, 22);
        br.write_all(first.as_bytes()).expect("br");
        br.flush().expect("flush");
        let one = std::mem::take(br.get_mut());
        br.write_all(rest.as_bytes()).expect("br");
        (one, br.into_inner())
    };
    let zstd = || -> Pieces {
        let mut z = zstd::stream::write::Encoder::new(Vec::new(), 3).expect("zstd");
        z.write_all(first.as_bytes()).expect("zstd");
        z.flush().expect("flush");
        let one = std::mem::take(z.get_mut());
        z.write_all(rest.as_bytes()).expect("zstd");
        (one, z.finish().expect("zstd"))
    };
    for (encoding, (one, two)) in [
        ("gzip", gzip()),
        ("deflate", deflate()),
        ("br", brotli()),
        ("zstd", zstd()),
    ] {
        let gate = Gate::new();
        let origin = {
            let gate = Arc::clone(&gate);
            let (one, two) = (Bytes::from(one), Bytes::from(two));
            start_origin(Arc::new(move |_, _| {
                let body = gated(one.clone(), two.clone(), Arc::clone(&gate));
                let mut response = http::Response::new(BodyExt::boxed(body));
                let headers = response.headers_mut();
                headers.insert("content-type", http::HeaderValue::from_static("text/html"));
                headers.insert("content-encoding", http::HeaderValue::from_static(encoding));
                response
            }))
            .await
        };
        let gateway = site_gateway(origin, "").await;
        let response = client()
            .request(get_request(&gateway.url("/")))
            .await
            .expect("head");
        let mut body = response.into_body();
        let mut seen = Vec::new();
        // The rest does not exist yet: the first part must come without it.
        tokio::time::timeout(Duration::from_secs(3), async {
            while !String::from_utf8_lossy(&seen).contains("first part") {
                let frame = body.frame().await.expect("a frame").expect("ok");
                if let Ok(data) = frame.into_data() {
                    seen.extend_from_slice(&data);
                }
            }
        })
        .await
        .unwrap_or_else(|_| panic!("{encoding}: the first part waited for the rest"));
        gate.open();
        let rest_seen = body.collect().await.expect("the rest").to_bytes();
        seen.extend_from_slice(&rest_seen);
        assert_eq!(
            String::from_utf8_lossy(&seen),
            format!("{first}{rest}"),
            "{encoding}"
        );
    }
}

/// A tag too large to rewrite (a 9 MiB `data:` URI) is not a reason to cut the page: it and
/// the rest pass as the site sent them, the URLs before it signed, and nothing is lost.
#[tokio::test]
async fn a_page_with_a_tag_too_large_to_rewrite_arrives_whole() {
    let before = format!(
        "<html><body><img src=\"https://cdn.filestackcontent.com/{H}\">
"
    );
    let huge = format!(
        "<img src=\"data:image/png;base64,{}\">",
        "A".repeat(9 * 1024 * 1024)
    );
    let after = format!(
        "<img src=\"https://cdn.filestackcontent.com/{H}\"><p>after</p></body></html>
"
    );
    let page = format!("{before}{huge}{after}");
    let origin = {
        let page = Bytes::from(page.clone());
        start_origin(Arc::new(move |_, _| {
            respond(200, &[("content-type", "text/html")], page.clone())
        }))
        .await
    };
    let gateway = site_gateway(origin, "").await;
    let answer = get(&gateway.url("/")).await;
    assert_eq!(answer.status, StatusCode::OK);
    let text = answer.text();
    let (head, tail) = text.split_at(text.find("<img src=\"data:").expect("the big tag"));
    assert!(head.contains("policy="), "the URL before it is signed");
    assert_eq!(
        tail,
        format!("{huge}{after}"),
        "the rest as the site sent it"
    );

    // A route that would rather fail than send a page half signed breaks it off instead.
    let aborting = site_gateway(origin, "rewrite_overflow = \"abort\"").await;
    let response = client()
        .request(get_request(&aborting.url("/")))
        .await
        .expect("headers arrive");
    assert!(
        response.into_body().collect().await.is_err(),
        "the client sees the page broken off"
    );
}

/// `text` with the credentials of every signed CDN URL in it taken out, and how many there
/// were; each signed URL must verify for `call` read.
fn unsigned(text: &str) -> (String, usize) {
    let mut out = String::with_capacity(text.len());
    let mut count = 0;
    let mut rest = text;
    while let Some(at) = rest.find("?policy=") {
        let url_start = rest[..at]
            .rfind("https://cdn.filestackcontent.com/")
            .expect("credentials on a CDN URL");
        let after = &rest[at..];
        let sig = after.find("signature=").expect("a signature") + "signature=".len();
        let end = at + sig + 64;
        let url = rest[url_start..end].replace("&amp;", "&");
        assert!(
            verify_at(&url, &secret(), now(), Call::Read).is_ok(),
            "{url} does not verify"
        );
        out.push_str(&rest[..at]);
        rest = &rest[end..];
        count += 1;
    }
    out.push_str(rest);
    (out, count)
}

/// Starts a site answering each path in `answers` with its content type and bytes.
async fn site_of(answers: Vec<(&'static str, &'static str, Vec<u8>)>) -> std::net::SocketAddr {
    let answers = Arc::new(answers);
    start_origin(Arc::new(move |parts, _| {
        match answers.iter().find(|(path, ..)| *path == parts.uri.path()) {
            Some((_, content_type, body)) => respond(
                200,
                &[("content-type", content_type)],
                Bytes::from(body.clone()),
            ),
            None => respond(404, &[], Bytes::new()),
        }
    }))
    .await
}

#[tokio::test]
async fn a_page_written_the_way_current_frameworks_write_it_has_every_file_url_signed() {
    let u = format!("https://cdn.filestackcontent.com/{H}");
    let page = format!(
        r#"<!doctype html><html><head>
<link rel="preload" as="image" imagesrcset="{u} 640w, https://cdn.filestackcontent.com/resize=width:1280/{H} 1280w" imagesizes="100vw">
<script type="application/ld+json">{{"@context":"https://schema.org","@type":"ImageObject","contentUrl":"{u}","price":19.90,"big":12345678901234567890123}}</script>
</head><body style="font-family:&quot;Helvetica Neue&quot;">
<svg width="10"><image xlink:href="{u}"></image><use href="{u}#i"></use></svg>
<object data="{u}"></object><embed src="{u}"><video poster="{u}"><track src="{u}"></video>
<img data-lazy-src="{u}" alt="lazy"><img data-original="{u}"><div data-bg="{u}"></div>
<div style="background:url(&quot;{u}&quot;)"></div>
<noscript><img src="{u}" alt="no script"></noscript>
<script id="__NEXT_DATA__" type="application/json">{{"props":{{"pageProps":{{"photo":{{"url":"{u}","n":1.50}}}}}}}}</script>
<script>var notSigned = "{u}";</script>
</body></html>"#
    );
    let origin = site_of(vec![(
        "/",
        "text/html; charset=utf-8",
        page.clone().into_bytes(),
    )])
    .await;
    let gateway = site_gateway(origin, "").await;
    let answer = get(&gateway.url("/")).await;
    assert_eq!(answer.status, StatusCode::OK);
    let (text, signed) = unsigned(&answer.text());
    assert_eq!(signed, 15, "{}", answer.text());
    assert_eq!(
        text, page,
        "every byte but the credentials as the site sent it"
    );
    assert!(
        answer.text().contains(&format!("var notSigned = \"{u}\";")),
        "scripts are not rewritten"
    );
}

#[tokio::test]
async fn stylesheets_svg_images_feeds_and_manifests_are_signed_and_otherwise_byte_for_byte() {
    let u = format!("https://cdn.filestackcontent.com/{H}");
    let css = format!(
        "@charset \"utf-8\";\n/* caf\u{e9} */ .hero{{background:url({u}) no-repeat}}\n.icon{{background:URL( '{u}' )}} .local{{background:url(/x.png)}}\n"
    );
    let svg = format!(
        r#"<svg xmlns="http://www.w3.org/2000/svg" xmlns:xlink="http://www.w3.org/1999/xlink"><image xlink:href="{u}" width="10"></image><style>rect{{fill:url({u})}}</style></svg>"#
    );
    let feed = format!(
        r#"<?xml version="1.0" encoding="UTF-8"?>
<rss version="2.0" xmlns:media="http://search.yahoo.com/mrss/"><channel><title>Gallery</title>
<image><url>{u}</url><link>https://example.com/</link></image>
<item><guid>{u}</guid><enclosure url="{u}" length="1" type="image/png"></enclosure><media:content url="{u}" medium="image"></media:content></item>
</channel></rss>"#
    );
    let manifest = format!(
        r#"{{"name":"Gallery","icons":[{{"src":"{u}","sizes":"512x512","type":"image/png"}}]}}"#
    );
    let origin = site_of(vec![
        (
            "/site.css",
            "text/css; charset=utf-8",
            css.clone().into_bytes(),
        ),
        ("/logo.svg", "image/svg+xml", svg.clone().into_bytes()),
        (
            "/feed.xml",
            "application/rss+xml",
            feed.clone().into_bytes(),
        ),
        (
            "/manifest.webmanifest",
            "application/manifest+json",
            manifest.clone().into_bytes(),
        ),
    ])
    .await;
    let gateway = site_gateway(origin, "").await;
    for (path, sent, expected_signed) in [
        ("/site.css", &css, 2),
        ("/logo.svg", &svg, 2),
        ("/feed.xml", &feed, 3),
        ("/manifest.webmanifest", &manifest, 1),
    ] {
        let answer = send(
            Method::GET,
            &gateway.url(path),
            &[("sec-fetch-dest", "style")],
        )
        .await;
        assert_eq!(answer.status, StatusCode::OK, "{path}");
        let (text, signed) = unsigned(&answer.text());
        assert_eq!(signed, expected_signed, "{path}: {}", answer.text());
        assert_eq!(&text, sent, "{path}: every other byte as sent");
    }
}

#[tokio::test]
async fn pages_in_legacy_charsets_and_with_invalid_bytes_pass_byte_for_byte() {
    let u = format!("https://cdn.filestackcontent.com/{H}");
    let with_url = |head: &[u8], tail: &[u8]| {
        let mut page = head.to_vec();
        page.extend_from_slice(u.as_bytes());
        page.extend_from_slice(tail);
        page
    };
    let latin1 = with_url(
        b"<html><head><style>.caf\xe9{content:\"\xe9\"}</style></head><body><img alt=\"caf\xe9\" src=\"",
        b"\"><p>\xe0 bient\xf4t</p></body></html>",
    );
    let shift_jis = with_url(
        b"<html><head><meta charset=\"Shift_JIS\"><title>\x93\xfa\x96\x7b</title><style>.a{content:\"\x83\x81\"}</style></head><body><img alt=\"\x93\xfa\" src=\"",
        b"\"><p>\x83\x81\x83j\x83\x85\x81[</p></body></html>",
    );
    let invalid_utf8 = with_url(
        b"<html><head><style>.a{color:red}</style></head><body><p>\xff\xfe\xc3</p><img src=\"",
        b"\"><p title=\"\xe9\">\x80</p></body></html>",
    );
    let origin = site_of(vec![
        ("/latin1", "text/html; charset=iso-8859-1", latin1.clone()),
        ("/sjis", "text/html", shift_jis.clone()),
        ("/invalid", "text/html; charset=utf-8", invalid_utf8.clone()),
    ])
    .await;
    let gateway = site_gateway(origin, "").await;
    for (path, sent) in [
        ("/latin1", latin1),
        ("/sjis", shift_jis),
        ("/invalid", invalid_utf8),
    ] {
        let answer = get(&gateway.url(path)).await;
        assert_eq!(answer.status, StatusCode::OK, "{path}");
        let body = answer.body.to_vec();
        // The credentials are ASCII: cut them out at the byte level.
        let start = body
            .windows(8)
            .position(|w| w == b"?policy=")
            .expect("the image is signed");
        let end = start
            + body[start..]
                .windows(10)
                .position(|w| w == b"signature=")
                .expect("a signature")
            + 10
            + 64;
        let mut rest = body[..start].to_vec();
        rest.extend_from_slice(&body[end..]);
        assert_eq!(
            String::from_utf8_lossy(&rest),
            String::from_utf8_lossy(&sent),
            "{path}"
        );
        assert_eq!(rest, sent, "{path}: byte for byte");
    }
}

/// An origin answering every request with `page` as HTML: its first 4 KiB at once, the rest
/// once `gate` opens. The client then has the answer's head before the rewriting reaches what
/// comes after.
async fn page_in_two_pieces(page: String, gate: &Arc<Gate>) -> std::net::SocketAddr {
    let page = Bytes::from(page);
    let gate = Arc::clone(gate);
    start_origin(Arc::new(move |_, _| {
        let body = gated(page.slice(..4096), page.slice(4096..), Arc::clone(&gate));
        let mut response = hyper::Response::new(body.boxed());
        response
            .headers_mut()
            .insert("content-type", "text/html".parse().expect("value"));
        response
    }))
    .await
}

#[tokio::test(flavor = "current_thread")]
async fn an_answer_past_rewrite_limit_continues_unsigned_or_is_cut_off_as_configured() {
    let (captured, _guard) = CapturedLog::this_thread();
    let img = format!("<img src=\"https://cdn.filestackcontent.com/{H}\">\n");
    let page = format!("<html><body>{}</body></html>", img.repeat(2_000));
    let origin = site_of(vec![("/", "text/html", page.clone().into_bytes())]).await;

    let passing = site_gateway(origin, "rewrite_limit = \"16KiB\"").await;
    let answer = get(&passing.url("/")).await;
    assert_eq!(answer.status, StatusCode::OK);
    let (text, signed) = unsigned(&answer.text());
    assert_eq!(text, page, "every byte delivered");
    assert!(signed > 10 && signed < 2_000, "{signed} signed");
    assert_access_line(&captured, &["rewrite=partial", "complete=true"]).await;
    passing.shutdown().await.expect("clean shutdown");

    let gate = Gate::new();
    let aborting = site_gateway(
        page_in_two_pieces(page, &gate).await,
        "rewrite_limit = \"16KiB\"\nrewrite_overflow = \"abort\"",
    )
    .await;
    let response = client()
        .request(get_request(&aborting.url("/")))
        .await
        .expect("headers arrive");
    assert_eq!(response.status(), StatusCode::OK);
    gate.open();
    let body = response.into_body().collect().await;
    assert!(
        body.is_err(),
        "the client sees the answer broken off, not complete"
    );
    assert_access_line(&captured, &["rewrite=aborted", "complete=false"]).await;
    aborting.shutdown().await.expect("clean shutdown");
}

/// Waits (up to 10 s) for an access log line in `captured` holding every one of `fields`: the
/// line is written when the server drops the body, which may be just after the client has it.
async fn assert_access_line(captured: &CapturedLog, fields: &[&str]) {
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    loop {
        let log = captured.text();
        if log
            .lines()
            .any(|l| l.contains("signgate::access") && fields.iter().all(|f| l.contains(f)))
        {
            return;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "no access line with {fields:?} in:\n{log}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test]
async fn scripts_pass_untouched_unless_the_route_opts_in_to_signing_their_url_literals() {
    let u = format!("https://cdn.filestackcontent.com/{H}");
    let js =
        format!("const hero = \"{u}\";\nconst label = `photo: ${{name}} at {u}`;\nfetch('{u}');\n");
    let origin = site_of(vec![(
        "/app.js",
        "text/javascript; charset=utf-8",
        js.clone().into_bytes(),
    )])
    .await;
    let untouched = site_gateway(origin, "").await;
    let answer = send(
        Method::GET,
        &untouched.url("/app.js"),
        &[("sec-fetch-dest", "script")],
    )
    .await;
    assert_eq!(answer.text(), js, "scripts are not rewritten by default");

    let opted_in = site_gateway(origin, "rewrite_javascript = \"1MiB\"").await;
    let answer = send(
        Method::GET,
        &opted_in.url("/app.js"),
        &[("sec-fetch-dest", "script")],
    )
    .await;
    let (text, signed) = unsigned(&answer.text());
    assert_eq!(
        signed,
        2,
        "the two literals that are whole URLs: {}",
        answer.text()
    );
    assert_eq!(text, js, "every other byte as the site sent it");
}

#[tokio::test]
async fn a_head_answer_carries_what_the_get_would() {
    let page = format!("<img src=\"https://cdn.filestackcontent.com/{H}\">");
    let origin = start_origin(Arc::new(move |parts, _| {
        let (content_type, body) = match parts.uri.path() {
            "/logo.png" => ("image/png", Bytes::from_static(&[7u8; 1234])),
            _ => ("text/html", Bytes::from(page.clone())),
        };
        let length = body.len().to_string();
        let mut response = respond(200, &[("content-type", content_type)], body);
        response
            .headers_mut()
            .insert("content-length", length.parse().expect("value"));
        response
    }))
    .await;
    let gateway = site_gateway(origin, "").await;
    let image = send(Method::HEAD, &gateway.url("/logo.png"), &[]).await;
    assert_eq!(image.headers["content-length"], "1234", "kept");
    let head = send(Method::HEAD, &gateway.url("/"), &[]).await;
    let get = send(Method::GET, &gateway.url("/"), &[]).await;
    assert_eq!(head.status, StatusCode::OK);
    for name in ["content-type", "cache-control", "content-encoding"] {
        assert_eq!(head.headers.get(name), get.headers.get(name), "{name}");
    }
    assert!(
        head.headers.get("content-length").is_none() && get.headers.get("content-length").is_none(),
        "a page's length is known only once rewritten: {:?}",
        head.headers
    );
}

// ---------------------------------------------------------------------------------------------
// Compression on the way out

/// A page over 1 KiB with CDN URLs in it.
fn long_page() -> String {
    let mut page = gallery_html();
    for i in 0..40 {
        page.push_str(&format!("<p>Paragraph {i}: more about the gallery.</p>\n"));
    }
    page
}

/// Decodes `data` in `coding`; a stream that was not ended gives what it decodes to so far.
fn decode(coding: &str, data: &[u8]) -> Vec<u8> {
    use std::io::Read;
    let mut reader: Box<dyn Read + '_> = match coding {
        "br" => Box::new(brotli::Decompressor::new(data, 4096)),
        "zstd" => Box::new(zstd::stream::read::Decoder::new(data).expect("zstd")),
        "gzip" => Box::new(flate2::read::GzDecoder::new(data)),
        other => panic!("no decoder for {other}"),
    };
    let mut out = Vec::new();
    let mut buf = [0u8; 4096];
    while let Ok(n @ 1..) = reader.read(&mut buf) {
        out.extend_from_slice(&buf[..n]);
    }
    out
}

/// A site serving [`long_page`] with `Vary: Cookie`, at `/small` a page under 1 KiB with its
/// length, and at `/picture.png` a gzip-encoded image.
async fn compressible_site() -> std::net::SocketAddr {
    start_origin(Arc::new(|parts, _| match parts.uri.path() {
        "/small" => respond(
            200,
            &[
                ("content-type", "text/html"),
                ("content-length", &gallery_html().len().to_string()),
            ],
            gallery_html(),
        ),
        "/picture.png" => respond(
            200,
            &[("content-type", "image/png"), ("content-encoding", "gzip")],
            picture_gz(),
        ),
        _ => respond(
            200,
            &[("content-type", "text/html"), ("vary", "Cookie")],
            long_page(),
        ),
    }))
    .await
}

/// Bytes standing for a gzip-encoded picture.
fn picture_gz() -> Vec<u8> {
    let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
    gz.write_all(b"\x89PNG\r\n\x1a\n not really a picture")
        .expect("gzip");
    gz.finish().expect("gzip")
}

#[tokio::test]
async fn rewritten_pages_leave_in_the_clients_best_coding_and_decode_to_the_identity_answer() {
    let gateway = site_gateway(compressible_site().await, "").await;
    let identity = get(&gateway.url("/")).await;
    assert!(identity.headers.get("content-encoding").is_none());
    assert_eq!(
        signed_urls(&identity.text()).len(),
        5,
        "{}",
        identity.text()
    );
    for (accepted, coding) in [
        ("gzip, deflate, br, zstd", "br"),
        ("gzip, zstd", "zstd"),
        ("deflate, gzip", "gzip"),
        // q-values: the highest non-zero weight wins, whatever the order of preference.
        ("gzip;q=1, br;q=0.5", "gzip"),
        ("br;q=0, zstd;q=0.2, *;q=0.3", "gzip"),
        ("br;q=0, *", "zstd"),
    ] {
        let answer = send(
            Method::GET,
            &gateway.url("/"),
            &[("accept-encoding", accepted)],
        )
        .await;
        assert_eq!(answer.status, StatusCode::OK, "{accepted}");
        assert_eq!(answer.headers["content-encoding"], coding, "{accepted}");
        assert_eq!(
            answer.headers["vary"], "Cookie, Accept-Encoding",
            "{accepted}"
        );
        assert!(answer.headers.get("content-length").is_none(), "{accepted}");
        assert!(answer.body.len() < identity.body.len() / 2, "{accepted}");
        assert_eq!(
            String::from_utf8_lossy(&decode(coding, &answer.body)),
            identity.text(),
            "{accepted}"
        );
    }
    // A HEAD answer says what the GET would.
    let head = send(
        Method::HEAD,
        &gateway.url("/"),
        &[("accept-encoding", "gzip, br")],
    )
    .await;
    assert_eq!(head.headers["content-encoding"], "br");
    assert_eq!(head.headers["vary"], "Cookie, Accept-Encoding");
    assert!(head.body.is_empty());
}

#[tokio::test]
async fn what_the_client_did_not_ask_for_or_is_not_rewritten_or_is_tiny_is_not_compressed() {
    let origin = compressible_site().await;
    let gateway = site_gateway(origin, "").await;
    let identity = get(&gateway.url("/")).await;
    for accepted in [
        "",
        "identity",
        "deflate",
        "br;q=0, zstd;q=0, gzip;q=0",
        "*;q=0",
    ] {
        let answer = send(
            Method::GET,
            &gateway.url("/"),
            &[("accept-encoding", accepted)],
        )
        .await;
        assert!(
            answer.headers.get("content-encoding").is_none(),
            "{accepted}"
        );
        // Still a different answer than a client accepting br gets.
        assert_eq!(
            answer.headers["vary"], "Cookie, Accept-Encoding",
            "{accepted}"
        );
        assert_eq!(answer.text(), identity.text(), "{accepted}");
    }
    assert_eq!(identity.headers["vary"], "Cookie, Accept-Encoding");

    // An image passes with the site's own encoding, byte for byte.
    let picture = send(
        Method::GET,
        &gateway.url("/picture.png"),
        &[("accept-encoding", "br, zstd, gzip")],
    )
    .await;
    assert_eq!(picture.headers["content-encoding"], "gzip");
    assert!(picture.headers.get("vary").is_none());
    assert_eq!(picture.body, picture_gz());

    // A page the site declared under 1 KiB leaves as identity.
    let small = send(
        Method::GET,
        &gateway.url("/small"),
        &[("accept-encoding", "br, zstd, gzip")],
    )
    .await;
    assert!(small.headers.get("content-encoding").is_none());
    assert_eq!(signed_urls(&small.text()).len(), 5, "{}", small.text());

    // compress = false: rewritten answers leave as identity, as before.
    let plain = site_gateway(origin, "compress = false").await;
    let answer = send(
        Method::GET,
        &plain.url("/"),
        &[("accept-encoding", "br, zstd, gzip")],
    )
    .await;
    assert!(answer.headers.get("content-encoding").is_none());
    assert_eq!(answer.headers["vary"], "Cookie");
    assert_eq!(answer.text(), identity.text());
}

/// Each piece of a rewritten page is compressed and flushed on its own: what the site has sent
/// decodes at the client before the rest exists, in every coding.
#[tokio::test]
async fn a_recompressed_page_streams_without_waiting_for_the_next_piece() {
    let first = format!(
        "<html><body><img src=\"https://cdn.filestackcontent.com/{H}\"><p>first part</p>\n"
    );
    let rest = "<p>second part</p></body></html>\n";
    for coding in ["gzip", "br", "zstd"] {
        let gate = Gate::new();
        let origin = {
            let gate = Arc::clone(&gate);
            let first = Bytes::from(first.clone());
            start_origin(Arc::new(move |_, _| {
                let body = gated(
                    first.clone(),
                    Bytes::from_static(rest.as_bytes()),
                    Arc::clone(&gate),
                );
                let mut response = http::Response::new(BodyExt::boxed(body));
                response
                    .headers_mut()
                    .insert("content-type", http::HeaderValue::from_static("text/html"));
                response
            }))
            .await
        };
        let gateway = site_gateway(origin, "").await;
        let mut request = get_request(&gateway.url("/"));
        request
            .headers_mut()
            .insert("accept-encoding", http::HeaderValue::from_static(coding));
        let response = client().request(request).await.expect("head");
        assert_eq!(response.headers()["content-encoding"], coding);
        let mut body = response.into_body();
        let mut received = Vec::new();
        // The rest does not exist yet: the first part must come, and decode, without it.
        let seen = tokio::time::timeout(Duration::from_secs(3), async {
            loop {
                let frame = body.frame().await.expect("a frame").expect("ok");
                if let Ok(data) = frame.into_data() {
                    received.extend_from_slice(&data);
                }
                let seen = String::from_utf8_lossy(&decode(coding, &received)).into_owned();
                if seen.contains("first part") {
                    return seen;
                }
            }
        })
        .await
        .unwrap_or_else(|_| panic!("{coding}: the first part waited for the rest"));
        assert!(seen.contains("signature="), "{coding}: {seen}");
        gate.open();
        let rest_received = body.collect().await.expect("the rest").to_bytes();
        received.extend_from_slice(&rest_received);
        let whole = String::from_utf8_lossy(&decode(coding, &received)).into_owned();
        assert!(
            whole.starts_with(&seen) && whole.ends_with(rest),
            "{coding}: {whole}"
        );
    }
}

/// A rewritten page cut off by `rewrite_overflow = "abort"` is cut off compressed too: the
/// encoding is not ended, so the client cannot take it for whole.
#[tokio::test]
async fn an_aborted_recompressed_page_is_not_ended_cleanly() {
    let page = format!(
        "<html><body>{}</body></html>",
        format!("<img src=\"https://cdn.filestackcontent.com/{H}\">\n").repeat(2_000)
    );
    let gate = Gate::new();
    let gateway = site_gateway(
        page_in_two_pieces(page, &gate).await,
        "rewrite_limit = \"16KiB\"\nrewrite_overflow = \"abort\"",
    )
    .await;
    let mut request = get_request(&gateway.url("/"));
    request
        .headers_mut()
        .insert("accept-encoding", http::HeaderValue::from_static("gzip"));
    let response = client().request(request).await.expect("headers arrive");
    gate.open();
    assert_eq!(response.headers()["content-encoding"], "gzip");
    assert!(response.into_body().collect().await.is_err());
}

/// Every compressed answer holds encoder state while it streams: a worker gives them 64 MiB in
/// all, so slow downloads cannot make it hold more; past it answers leave uncompressed.
#[tokio::test]
async fn compressed_answers_in_flight_share_one_encoder_budget_per_worker() {
    let gate = Gate::new();
    let origin_gate = Arc::clone(&gate);
    let origin = start_origin(Arc::new(move |_, _| {
        let body = gated(
            Bytes::from(format!(
                "<html><body><img src=\"https://cdn.filestackcontent.com/{H}\"><p>{}</p>",
                "first piece ".repeat(200)
            )),
            Bytes::from_static(b"<p>second</p></body></html>"),
            Arc::clone(&origin_gate),
        );
        let mut response = hyper::Response::new(body.boxed());
        response
            .headers_mut()
            .insert("content-type", "text/html".parse().expect("value"));
        response
    }))
    .await;
    let gateway = site_gateway(origin, "").await;
    let ask = |coding: &'static str| {
        let url = gateway.url("/");
        async move {
            let mut request = get_request(&url);
            request
                .headers_mut()
                .insert("accept-encoding", coding.parse().expect("value"));
            client().request(request).await.expect("headers")
        }
    };
    let coding = |response: &hyper::Response<hyper::body::Incoming>| {
        response
            .headers()
            .get("content-encoding")
            .map(|v| v.to_str().expect("ascii").to_owned())
    };
    // 18 zstd encoders (3.5 MiB each) take 63 of the 64 MiB while their pages wait on the site.
    let mut held = Vec::new();
    for _ in 0..18 {
        let response = ask("zstd").await;
        assert_eq!(coding(&response).as_deref(), Some("zstd"));
        held.push(response);
    }
    let refused = ask("zstd").await;
    assert_eq!(coding(&refused), None, "no room for a 19th: identity");
    let small = ask("gzip").await;
    assert_eq!(
        coding(&small).as_deref(),
        Some("gzip"),
        "a gzip encoder still fits"
    );
    gate.open();
    for response in held.drain(..).chain([refused, small]) {
        response.into_body().collect().await.expect("the page ends");
    }
    // Given back as the answers end.
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    loop {
        let again = ask("zstd").await;
        let done = coding(&again).as_deref() == Some("zstd");
        again.into_body().collect().await.expect("the page ends");
        if done {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "the budget never came back"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test]
async fn near_a_secret_switch_pages_carry_urls_that_die_by_it_and_caches_keep_them_less() {
    let origin = start_origin(Arc::new(|_, _| {
        respond(
            200,
            &[
                ("content-type", "text/html; charset=utf-8"),
                ("cache-control", "public, max-age=86400"),
            ],
            gallery_html(),
        )
    }))
    .await;
    let at = 1_800_002_000; // 2027-01-15T08:33:20Z, 200 s into a 5-minute bucket
    let clock = Arc::new(signgate::clock::ManualClock::new(at - 1_900));
    let config = one_route(
        "site",
        "/",
        &format!("http://{origin}"),
        "ttl = \"1h\"\nbucket = \"5m\"\nsecret_env = \"SECRET\"\nswitch_at = \"2027-01-15T08:33:20Z\"",
    );
    let gateway = TestGateway::start_with_clock(&config, clock.clone()).await;
    let expiries_and_max_age = |answer: &Answer| {
        let expiries: Vec<u64> = signed_urls(&answer.text())
            .iter()
            .map(|url| {
                let policy = signgate::verify::parse_url(url).expect("parses").policy;
                signgate::policy::DecodedPolicy::decode(policy.as_deref().expect("policy"))
                    .expect("decodes")
                    .expiry
            })
            .collect();
        (
            expiries,
            answer.headers["cache-control"]
                .to_str()
                .expect("ascii")
                .to_owned(),
        )
    };
    // A ttl ahead of the switch's bucket: every URL dies at the bucket before it, and a cache
    // keeps the page until min_validity (900 s) before that.
    let (expiries, cache_control) = expiries_and_max_age(&get(&gateway.url("/")).await);
    assert_eq!(expiries, [1_800_001_800; 5]);
    assert_eq!(cache_control, "public, max-age=800");
    // In the last bucket: the switch itself, and no cache may keep the page.
    clock.set(at - 60);
    let (expiries, cache_control) = expiries_and_max_age(&get(&gateway.url("/")).await);
    assert_eq!(expiries, [at; 5]);
    assert_eq!(cache_control, "public, max-age=0");
}

#[tokio::test]
async fn pages_written_by_client_transform_get_their_listed_sources_signed_and_no_others() {
    const API_KEY: &str = "AbCdEfGhIjKlMnOpQrStUvW";
    let page = format!(
        r#"<html><body>
<img id="listed" src="https://cdn.filestackcontent.com/{API_KEY}/resize=width:300/https://images.example.org/gallery/pop-art.png">
<img id="quoted" src='https://cdn.filestackcontent.com/{API_KEY}/resize=width:300/"https://images.example.org/gallery/b.png"'>
<img id="unlisted" src="https://cdn.filestackcontent.com/{API_KEY}/resize=width:300/https://elsewhere.example/x.png">
<img id="handle" src="https://cdn.filestackcontent.com/{API_KEY}/resize=width:300/{H}">
</body></html>"#
    );
    let origin = start_origin(Arc::new(move |request, _| {
        // A page that reflects its query, as a search page does.
        let reflected = request
            .uri
            .query()
            .and_then(|q| q.strip_prefix("q="))
            .map(|q| {
                let q = percent_encoding::percent_decode_str(q).decode_utf8_lossy();
                format!("<img id=\"reflected\" src=\"{q}\">")
            })
            .unwrap_or_default();
        respond(
            200,
            &[("content-type", "text/html")],
            format!("{page}{reflected}"),
        )
    }))
    .await;
    let gateway = site_gateway(
        origin,
        &format!(
            "api_key = \"{API_KEY}\"\nexternal_sources = [\"https://images.example.org/gallery/\"]"
        ),
    )
    .await;
    let html = get(&gateway.url("/")).await.text();
    let src = |id: &str| -> String {
        let at = html.find(&format!("id=\"{id}\"")).expect(id);
        let rest = &html[at..];
        let start = rest.find("src=").expect("src") + 5;
        let quote = rest.as_bytes()[start - 1] as char;
        let end = rest[start..].find(quote).expect("end") + start;
        rest[start..end]
            .replace("&amp;", "&")
            .replace("&quot;", "\"")
    };
    let listed = src("listed");
    assert!(
        listed.starts_with(&format!(
            "https://cdn.filestackcontent.com/{API_KEY}/resize=width:300/security=p:"
        )),
        "{listed}"
    );
    verify_at(&listed, &secret(), now(), Call::Convert).expect("valid for its source");
    let quoted = src("quoted");
    assert!(
        quoted.ends_with("/\"https://images.example.org/gallery/b.png\""),
        "{quoted}"
    );
    verify_at(&quoted, &secret(), now(), Call::Convert).expect("valid for its source");
    assert_eq!(
        src("unlisted"),
        format!(
            "https://cdn.filestackcontent.com/{API_KEY}/resize=width:300/https://elsewhere.example/x.png"
        )
    );
    let handle = src("handle");
    verify_at(&handle, &secret(), now(), Call::Read).expect("the handle behind the key");
    // A source the request itself carried is not signed, listed or not.
    let reflected_source = "https://cdn.filestackcontent.com/resize=width:9/https://images.example.org/gallery/private.png";
    let html = get(&gateway.url(&format!("/?q={reflected_source}")))
        .await
        .text();
    assert!(
        html.contains(&format!("src=\"{reflected_source}\"")),
        "{html}"
    );
}

#[tokio::test]
async fn a_source_whose_host_and_path_or_file_name_the_request_names_is_never_signed() {
    const API_KEY: &str = "AbCdEfGhIjKlMnOpQrStUvW";
    const CDN: &str = "https://cdn.filestackcontent.com";
    // A viewer page that writes the `https://` (or the whole gallery prefix) itself and
    // echoes the rest from the query, undecoded, beside a picture of its own.
    let origin = start_origin(Arc::new(move |request, _| {
        let query = request.uri.query().unwrap_or_default();
        let named = if let Some(source) = query.strip_prefix("src=") {
            format!("{CDN}/{API_KEY}/https://{source}")
        } else if let Some(name) = query.strip_prefix("name=") {
            format!("{CDN}/{API_KEY}/https://images.example.org/gallery/{name}")
        } else {
            format!("{CDN}/{API_KEY}/https://images.example.org/gallery/cat.png")
        };
        let own = format!("{CDN}/{API_KEY}/https://images.example.org/gallery/own.png");
        respond(
            200,
            &[("content-type", "text/html")],
            format!("<img src=\"{named}\"><img src=\"{own}\">"),
        )
    }))
    .await;
    let gateway = site_gateway(
        origin,
        &format!(
            "api_key = \"{API_KEY}\"\nexternal_sources = [\"https://images.example.org/gallery/\"]"
        ),
    )
    .await;
    // Cached first, as an ordinary visit leaves it.
    let first = get(&gateway.url("/")).await.text();
    assert_eq!(first.matches("security=p:").count(), 2, "{first}");
    for target in [
        "/view?src=images.example.org/gallery/private.png",
        "/view?name=private.png",
        "/view?name=cat.png",
    ] {
        let html = get(&gateway.url(target)).await.text();
        let sources: Vec<&str> = html.split("src=\"").skip(1).collect();
        assert_eq!(sources.len(), 2, "{html}");
        assert!(
            !sources[0].contains("security=p:"),
            "{target} got the source it names signed: {html}"
        );
        assert!(sources[1].contains("security=p:"), "{html}");
    }
}
