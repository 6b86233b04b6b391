//! proxy mode over real sockets: what the CDN receives, what the client gets back.

use crate::support;

use http::{Method, StatusCode};
use signgate::policy::Call;
use support::*;

async fn cdn() -> TestCdn {
    two_file_cdn().await
}

#[tokio::test]
async fn the_cdn_gets_valid_handle_bound_credentials_valid_for_at_least_ttl() {
    let cdn = cdn().await;
    let gateway =
        TestGateway::start(&one_route("proxy", "/img/", &cdn.url(), "ttl = \"1h\"")).await;
    let before = now();
    let answer = get(&gateway.url(&format!("/img/{H}"))).await;
    assert_eq!(answer.status, StatusCode::OK, "{}", answer.text());
    assert_eq!(&answer.body[..], b"0123456789abcdefghij");
    let received = cdn.received();
    assert_eq!(received.len(), 1);
    let policy = received[0]
        .policy
        .as_ref()
        .expect("credentials verified at the CDN");
    assert_eq!(policy.handle.as_deref(), Some(H));
    assert_eq!(policy.call, Some(vec!["read".to_owned()]));
    assert!(
        policy.expiry >= before + 3600,
        "{} < {}",
        policy.expiry,
        before + 3600
    );
    assert_eq!(policy.expiry % 300, 0);
    let uri = &received[0].uri;
    assert!(uri.starts_with(&format!("/{H}?policy=")), "{uri}");
    let policy_value = uri
        .split_once("policy=")
        .expect("policy")
        .1
        .split('&')
        .next()
        .expect("value");
    assert!(
        !policy_value.contains('='),
        "padding not written %3D: {uri}"
    );
}

#[tokio::test]
async fn requests_in_one_bucket_reuse_identical_credentials_from_the_cache() {
    let cdn = cdn().await;
    let gateway = TestGateway::start(&one_route("proxy", "/img/", &cdn.url(), "")).await;
    for _ in 0..5 {
        assert_eq!(
            get(&gateway.url(&format!("/img/{H}"))).await.status,
            StatusCode::OK
        );
    }
    assert_eq!(
        get(&gateway.url(&format!("/img/{H2}"))).await.status,
        StatusCode::OK
    );
    let uris: Vec<String> = cdn.received().into_iter().map(|r| r.uri).collect();
    assert!(uris[..5].iter().all(|u| u == &uris[0]), "{uris:?}");
    assert_ne!(uris[5], uris[0]);
    let signer = gateway.signer("r");
    let cache = signer.cache();
    assert_eq!((cache.hits(), cache.misses()), (4, 2));
}

#[tokio::test]
async fn client_sent_credentials_never_reach_the_cdn() {
    let cdn = cdn().await;
    let gateway = TestGateway::start(&one_route("proxy", "/img/", &cdn.url(), "")).await;
    let smuggled = [
        format!("/img/{H}?policy=evil&signature=evil"),
        format!("/img/{H}?dl=true&POLICY=evil&Signature=evil"),
        format!("/img/{H}?%70olicy=evil&signature%3D=evil"),
        format!("/img/security=p:evil,s:evil/{H}"),
        format!("/img/SECURITY=policy:evil,signature:evil/{H}?policy=evil"),
    ];
    for path in &smuggled {
        let answer = get(&gateway.url(path)).await;
        assert_eq!(answer.status, StatusCode::OK, "{path}: {}", answer.text());
    }
    for received in cdn.received() {
        assert!(!received.uri.contains("evil"), "{}", received.uri);
        assert!(received.policy.is_some(), "{}", received.uri);
    }
    // Other query parameters go through.
    assert!(cdn.received()[1].uri.contains("dl=true"));
}

#[tokio::test]
async fn task_url_style_is_accepted_by_the_cdn() {
    let cdn = cdn().await;
    let gateway = TestGateway::start(&one_route(
        "proxy",
        "/img/",
        &cdn.url(),
        "url_style = \"task\"",
    ))
    .await;
    let answer = get(&gateway.url(&format!("/img/{H}"))).await;
    assert_eq!(answer.status, StatusCode::OK, "{}", answer.text());
    let uri = &cdn.received()[0].uri;
    assert!(uri.starts_with("/security=p:") && uri.ends_with(H), "{uri}");
}

#[tokio::test]
async fn transformation_tasks_need_convert_on_the_route() {
    let cdn = cdn().await;
    let without = TestGateway::start(&one_route("proxy", "/img/", &cdn.url(), "")).await;
    let answer = get(&without.url(&format!("/img/resize=width:300/{H}"))).await;
    assert_eq!(answer.status, StatusCode::FORBIDDEN);
    assert!(cdn.received().is_empty(), "the CDN was contacted");

    let with = TestGateway::start(&one_route(
        "proxy",
        "/img/",
        &cdn.url(),
        "calls = [\"read\", \"convert\"]\nurl_style = \"task\"",
    ))
    .await;
    let answer = get(&with.url(&format!("/img/resize=width:300/{H}"))).await;
    assert_eq!(answer.status, StatusCode::OK, "{}", answer.text());
    let received = &cdn.received()[0];
    assert!(
        received.uri.starts_with("/resize=width:300/security=p:"),
        "{}",
        received.uri
    );
    assert!(
        received
            .policy
            .as_ref()
            .expect("verified")
            .allows(Call::Convert)
    );
}

#[tokio::test]
async fn range_conditional_and_head_requests_pass_through() {
    let cdn = cdn().await;
    let gateway = TestGateway::start(&one_route("proxy", "/img/", &cdn.url(), "")).await;
    let url = gateway.url(&format!("/img/{H}"));

    let ranged = send(Method::GET, &url, &[("range", "bytes=2-5")]).await;
    assert_eq!(ranged.status, StatusCode::PARTIAL_CONTENT);
    assert_eq!(&ranged.body[..], b"2345");
    assert_eq!(ranged.headers["content-range"], "bytes 2-5/20");
    assert_eq!(ranged.headers["accept-ranges"], "bytes");

    let full = get(&url).await;
    let etag = full.headers["etag"].to_str().expect("ascii").to_owned();
    assert_eq!(full.headers["content-type"], "image/png");
    assert_eq!(full.headers["content-length"], "20");
    assert_eq!(full.headers["cache-control"], "public, max-age=31536000");
    let not_modified = send(Method::GET, &url, &[("if-none-match", &etag)]).await;
    assert_eq!(not_modified.status, StatusCode::NOT_MODIFIED);
    assert!(not_modified.body.is_empty());

    let head = send(Method::HEAD, &url, &[]).await;
    assert_eq!(head.status, StatusCode::OK);
    assert!(head.body.is_empty());
    assert_eq!(cdn.received().last().expect("request").method, Method::HEAD);

    let missing = get(&gateway.url("/img/AAAAAAAAAAAAAAAAAAAA")).await;
    assert_eq!(missing.status, StatusCode::NOT_FOUND);
}

#[tokio::test]
async fn headers_are_filtered_and_forwarding_headers_set() {
    let cdn = cdn().await;
    let gateway = TestGateway::start(&one_route("proxy", "/img/", &cdn.url(), "")).await;
    let answer = send(
        Method::GET,
        &gateway.url(&format!("/img/{H}")),
        &[
            ("cookie", "session=secret"),
            ("authorization", "Bearer x"),
            ("accept", "image/webp"),
            ("x-forwarded-for", "10.1.2.3"),
            ("connection", "keep-alive"),
        ],
    )
    .await;
    assert_eq!(answer.status, StatusCode::OK);
    // Back to the client: no CDN cookie, no hop-by-hop headers, a Via.
    assert!(answer.headers.get("set-cookie").is_none());
    assert!(answer.headers.get("x-hop").is_none());
    assert_eq!(answer.headers["via"], "1.1 signgate");
    // Up to the CDN: only the allowed headers, the CDN's Host, forwarding headers.
    let up = &cdn.received()[0].headers;
    assert!(up.get("cookie").is_none() && up.get("authorization").is_none());
    assert_eq!(up["accept"], "image/webp");
    assert_eq!(up["host"], cdn.addr.to_string());
    // The client is no trusted proxy: its own X-Forwarded-For is replaced.
    assert_eq!(up["x-forwarded-for"], "127.0.0.1");
    assert_eq!(up["x-forwarded-proto"], "http");
    assert_eq!(up["x-forwarded-host"], gateway.addr.to_string());
    assert_eq!(up["via"], "1.1 signgate");
}

#[tokio::test]
async fn bad_requests_get_short_plain_errors_and_never_reach_the_cdn() {
    let cdn = cdn().await;
    let gateway = TestGateway::start(&one_route("proxy", "/img/", &cdn.url(), "")).await;
    let cases = [
        (
            Method::GET,
            "/nothing-here".to_owned(),
            StatusCode::NOT_FOUND,
        ),
        (
            Method::POST,
            format!("/img/{H}"),
            StatusCode::METHOD_NOT_ALLOWED,
        ),
        (
            Method::DELETE,
            format!("/img/{H}"),
            StatusCode::METHOD_NOT_ALLOWED,
        ),
        (
            Method::GET,
            "/img/short".to_owned(),
            StatusCode::BAD_REQUEST,
        ),
        (
            Method::GET,
            "/img/../admin".to_owned(),
            StatusCode::BAD_REQUEST,
        ),
        (
            Method::GET,
            format!("/img/%2e%2e/{H}"),
            StatusCode::BAD_REQUEST,
        ),
        (
            Method::GET,
            format!("/img/{H}/metadata"),
            StatusCode::BAD_REQUEST,
        ),
        (Method::GET, "/img/".to_owned(), StatusCode::BAD_REQUEST),
    ];
    for (method, path, status) in cases {
        let answer = send(method.clone(), &gateway.url(&path), &[]).await;
        assert_eq!(answer.status, status, "{method} {path}");
        assert_eq!(answer.headers["content-type"], "text/plain; charset=utf-8");
        assert!(answer.body.len() < 80, "{}", answer.text());
        assert!(!answer.text().contains(SECRET));
        if status == StatusCode::METHOD_NOT_ALLOWED {
            assert_eq!(answer.headers["allow"], "GET, HEAD");
        }
    }
    assert!(cdn.received().is_empty());
}

#[tokio::test]
async fn an_http2_client_is_served_on_the_same_port() {
    let cdn = cdn().await;
    let gateway = TestGateway::start(&one_route("proxy", "/img/", &cdn.url(), "")).await;
    let h2 = h2_client();
    for handle in [H, H2, H] {
        let answer = send_with(
            &h2,
            Method::GET,
            &gateway.url(&format!("/img/{handle}")),
            &[],
        )
        .await;
        assert_eq!(answer.status, StatusCode::OK);
    }
    assert_eq!(cdn.received().len(), 3);
    assert_eq!(
        cdn.received()[0].headers["x-forwarded-host"],
        gateway.addr.to_string()
    );
}
