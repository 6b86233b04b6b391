//! Routes with another signing scheme (issue 17), over real sockets: proxy, redirect and site
//! routes in front of stand-ins that verify each scheme and refuse what does not verify.

use crate::support;

use std::sync::Arc;

use http::{Method, StatusCode};
use signgate::clock::{Clock, SystemClock};
use signgate::scheme::akamai::{Algorithm, EdgeAuth};
use signgate::scheme::cloudfront::CloudFrontSigner;
use support::*;

/// The CloudFront test key pair: its ID and the private key, PEM.
fn cloudfront_key() -> (String, String) {
    let cloudfront = &crate::cdn_schemes::scheme("cloudfront");
    (
        cloudfront["key_pair_id"].as_str().expect("id").to_owned(),
        cloudfront["private_key_pem_pkcs1"]
            .as_str()
            .expect("pem")
            .to_owned(),
    )
}

/// The Akamai test key, hex.
const AKAMAI_KEY: &str = "a7b3c1d9e5f20486172a3b4c5d6e7f8091a2b3c4d5e6f708192a3b4c5d6e7f80";

/// A stand-in whose `verify` decides, for the URL it was asked for as `http://ADDR/PATH?QUERY`:
/// 200 with `picture` when it verifies, 403 with the reason otherwise.
async fn verifying_stand_in(
    verify: impl Fn(&str) -> Result<(), String> + Send + Sync + 'static,
) -> std::net::SocketAddr {
    let verify = Arc::new(verify);
    let addr = Arc::new(std::sync::OnceLock::<std::net::SocketAddr>::new());
    let seen = Arc::clone(&addr);
    let bound = start_origin(Arc::new(move |parts, _| {
        let url = format!(
            "http://{}{}",
            seen.get().expect("address known"),
            parts.uri.path_and_query().map_or("/", |pq| pq.as_str())
        );
        verdict_answer(verify(&url))
    }))
    .await;
    addr.set(bound).expect("set once");
    bound
}

/// A stand-in's answer: 200 with `picture` when the credentials verify, 403 with the reason
/// otherwise.
fn verdict_answer(verdict: Result<(), String>) -> http::Response<TestBody> {
    match verdict {
        Ok(()) => respond(200, &[("content-type", "image/png")], "picture"),
        Err(reason) => respond(403, &[("content-type", "text/plain")], reason),
    }
}

async fn cloudfront_stand_in() -> std::net::SocketAddr {
    let (id, pem) = cloudfront_key();
    let signer = CloudFrontSigner::from_pem(&id, &pem).expect("the test key");
    verifying_stand_in(move |url| {
        signer
            .verify(url, now())
            .map(|_| ())
            .map_err(|e| e.to_string())
    })
    .await
}

/// The imgix test source's token.
const IMGIX_TOKEN: &str = "Xz9Qm2Lp7Rt4Vw8K";

async fn imgix_stand_in() -> std::net::SocketAddr {
    let verifier = signgate::scheme::imgix::ImgixSigner::new(
        signgate::secret::TextSecret::new(IMGIX_TOKEN.into()).expect("not empty"),
    );
    verifying_stand_in(move |url| {
        let path_and_query = url
            .split_once("://")
            .and_then(|(_, rest)| rest.find('/').map(|i| rest[i..].to_owned()))
            .ok_or("no path")?;
        verifier
            .verify(&path_and_query, now())
            .map(|_| ())
            .map_err(|e| e.to_string())
    })
    .await
}

async fn akamai_stand_in() -> std::net::SocketAddr {
    let auth = EdgeAuth::new(AKAMAI_KEY, Algorithm::Sha256).expect("the test key");
    verifying_stand_in(move |url| {
        let (path, query) = url
            .split_once("://")
            .and_then(|(_, rest)| rest.find('/').map(|i| &rest[i..]))
            .map(|pq| pq.split_once('?').unwrap_or((pq, "")))
            .ok_or("no path")?;
        let token = query
            .split('&')
            .find_map(|pair| pair.strip_prefix("hdnts="))
            .ok_or("no token")?;
        auth.verify(token, path, now())
            .map(|_| ())
            .map_err(|e| e.to_string())
    })
    .await
}

/// A stand-in Akamai edge whose Token Authentication reads the token from the `hdnts` cookie:
/// 200 when it verifies for the path asked for, 403 otherwise (a token in the query is not
/// looked at).
async fn akamai_cookie_stand_in() -> std::net::SocketAddr {
    let auth = EdgeAuth::new(AKAMAI_KEY, Algorithm::Sha256).expect("the test key");
    start_origin(Arc::new(move |parts, _| {
        let token = parts
            .headers
            .get_all(http::header::COOKIE)
            .iter()
            .filter_map(|value| value.to_str().ok())
            .flat_map(|value| value.split(';'))
            .find_map(|pair| pair.trim().strip_prefix("hdnts="));
        verdict_answer(
            token
                .ok_or_else(|| "no token cookie".to_owned())
                .and_then(|token| {
                    auth.verify(token, parts.uri.path(), now())
                        .map(|_| ())
                        .map_err(|e| e.to_string())
                }),
        )
    }))
    .await
}

/// A gateway with a `mode` route at `/f/` in front of `stand_in` with `scheme_keys`, and the
/// key in a file.
async fn gateway(
    mode: &str,
    stand_in: std::net::SocketAddr,
    scheme_keys: &str,
    key: &str,
) -> (TestGateway, tempfile::NamedTempFile) {
    gateway_with_clock(mode, stand_in, scheme_keys, key, Arc::new(SystemClock)).await
}

/// [`gateway`] reading `clock`.
async fn gateway_with_clock(
    mode: &str,
    stand_in: std::net::SocketAddr,
    scheme_keys: &str,
    key: &str,
    clock: Arc<dyn Clock>,
) -> (TestGateway, tempfile::NamedTempFile) {
    let file = tempfile::NamedTempFile::new().expect("temp file");
    std::fs::write(file.path(), key).expect("write");
    let keys = format!(
        "{scheme_keys}\nsecret_file = {:?}",
        file.path().display().to_string()
    );
    let config = one_route(mode, "/f/", &format!("http://{stand_in}"), &keys);
    (TestGateway::start_with_clock(&config, clock).await, file)
}

#[tokio::test]
async fn cloudfront_proxy_and_redirect_routes_hand_out_urls_the_cdn_accepts() {
    let cdn = cloudfront_stand_in().await;
    let (id, pem) = cloudfront_key();
    let keys = format!("scheme = \"cloudfront\"\nkey_pair_id = \"{id}\"");
    let bare = get(&format!("http://{cdn}/images/cat.jpg")).await;
    assert_eq!(bare.status, StatusCode::FORBIDDEN, "the stand-in checks");

    let (proxy, _key) = gateway("proxy", cdn, &keys, &pem).await;
    let answer = get(&proxy.url("/f/images/cat.jpg?w=1&Signature=forged")).await;
    assert_eq!(answer.status, StatusCode::OK, "{}", answer.text());
    assert_eq!(answer.text(), "picture");

    let (redirect, _key) = gateway("redirect", cdn, &keys, &pem).await;
    let first = get(&redirect.url("/f/images/cat.jpg")).await;
    assert_eq!(first.status, StatusCode::TEMPORARY_REDIRECT);
    let location = first.headers["location"]
        .to_str()
        .expect("ascii")
        .to_owned();
    assert!(
        location.starts_with(&format!("http://{cdn}/images/cat.jpg?Expires=")),
        "{location}"
    );
    assert!(
        location.contains(&format!("&Key-Pair-Id={id}")),
        "{location}"
    );
    assert_eq!(get(&location).await.status, StatusCode::OK);
    // Within a bucket every request gets the same URL.
    let again = get(&redirect.url("/f/images/cat.jpg")).await;
    assert_eq!(again.headers["location"], location.as_str());
    // Tampered, the CDN refuses it.
    let moved = location.replace("cat.jpg", "dog.jpg");
    assert_eq!(get(&moved).await.status, StatusCode::FORBIDDEN);
    // Traversal and encoded slashes never reach it.
    for bad in [
        "/f/images/../secret.jpg",
        "/f/images%2Fsecret.jpg",
        "/f/a//b.jpg",
    ] {
        assert_eq!(
            get(&redirect.url(bad)).await.status,
            StatusCode::BAD_REQUEST,
            "{bad}"
        );
    }
}

#[tokio::test]
async fn akamai_routes_put_a_token_for_the_path_in_hdnts() {
    let cdn = akamai_stand_in().await;
    let (proxy, _key) = gateway("proxy", cdn, "scheme = \"akamai\"", AKAMAI_KEY).await;
    let answer = get(&proxy.url("/f/video/a.mp4?hdnts=forged")).await;
    assert_eq!(answer.status, StatusCode::OK, "{}", answer.text());
    let (redirect, _key) = gateway("redirect", cdn, "scheme = \"akamai\"", AKAMAI_KEY).await;
    let location = get(&redirect.url("/f/video/a.mp4")).await.headers["location"]
        .to_str()
        .expect("ascii")
        .to_owned();
    assert!(location.contains("?hdnts=st="), "{location}");
    assert_eq!(get(&location).await.status, StatusCode::OK);
    assert_eq!(
        get(&location.replace("/video/a.mp4", "/video/b.mp4"))
            .await
            .status,
        StatusCode::FORBIDDEN
    );
}

#[tokio::test]
async fn an_akamai_redirect_route_with_a_token_cookie_hands_each_object_its_own_cookie() {
    let cdn = akamai_cookie_stand_in().await;
    // Both gateways at one instant: within a bucket, the same token.
    let clock: Arc<dyn Clock> = Arc::new(signgate::clock::ManualClock::new(now()));
    let keys = "scheme = \"akamai\"\nttl = \"10m\"\nbucket = \"1m\"";
    let (query_form, _key) =
        gateway_with_clock("redirect", cdn, keys, AKAMAI_KEY, Arc::clone(&clock)).await;
    let cookie_keys = format!("{keys}\ntoken_cookie_domain = \"127.0.0.1\"");
    let (cookie_form, _key) =
        gateway_with_clock("redirect", cdn, &cookie_keys, AKAMAI_KEY, clock).await;
    let header =
        |answer: &Answer, name: &str| answer.headers[name].to_str().expect("ascii").to_owned();

    let answer = get(&cookie_form.url("/f/video/a.mp4?w=1&hdnts=forged")).await;
    assert_eq!(answer.status, StatusCode::TEMPORARY_REDIRECT);
    let location = header(&answer, "location");
    assert_eq!(
        location,
        format!("http://{cdn}/video/a.mp4?w=1"),
        "no token"
    );
    assert!(header(&answer, "cache-control").starts_with("private, max-age="));
    let set_cookie = header(&answer, "set-cookie");
    let (cookie, attributes) = set_cookie.split_once("; ").expect("attributes");
    let token = cookie
        .strip_prefix("hdnts=")
        .expect("named as `token_name`");
    let query_location = header(
        &get(&query_form.url("/f/video/a.mp4?w=1")).await,
        "location",
    );
    assert_eq!(
        query_location,
        format!("{location}&hdnts={token}"),
        "the query form's token"
    );
    let max_age = attributes
        .split("; ")
        .find_map(|attribute| attribute.strip_prefix("Max-Age="))
        .and_then(|seconds| seconds.parse::<u64>().ok())
        .expect("Max-Age");
    assert!(
        (600..=660).contains(&max_age),
        "ttl to ttl + bucket: {max_age}"
    );
    assert_eq!(
        attributes,
        format!("Domain=127.0.0.1; Path=/video/a.mp4; Max-Age={max_age}; HttpOnly; SameSite=Lax"),
        "no Secure over http"
    );

    // The stand-in reads the cookie, and only the cookie.
    assert_eq!(
        send(Method::GET, &location, &[("cookie", cookie)])
            .await
            .status,
        StatusCode::OK
    );
    assert_eq!(get(&location).await.status, StatusCode::FORBIDDEN);
    assert_eq!(get(&query_location).await.status, StatusCode::FORBIDDEN);

    // Another object's redirect sets a cookie for that object alone.
    let other = get(&cookie_form.url("/f/video/b.mp4")).await;
    let other_location = header(&other, "location");
    assert_eq!(other_location, format!("http://{cdn}/video/b.mp4"));
    let other_set_cookie = header(&other, "set-cookie");
    let (other_cookie, _) = other_set_cookie.split_once("; ").expect("attributes");
    assert!(other_set_cookie.contains("; Path=/video/b.mp4; "));
    assert_eq!(
        send(Method::GET, &other_location, &[("cookie", other_cookie)])
            .await
            .status,
        StatusCode::OK
    );
    assert_eq!(
        send(Method::GET, &location, &[("cookie", other_cookie)])
            .await
            .status,
        StatusCode::FORBIDDEN
    );
}

/// A site route in front of a site whose every page is `page`, signing URLs on `cdn` with
/// `scheme_keys` and `key` (in a file), and the config it was started from.
async fn site_gateway(
    page: String,
    cdn: std::net::SocketAddr,
    scheme_keys: &str,
    key: &str,
) -> (TestGateway, String, tempfile::NamedTempFile) {
    let site = start_origin(Arc::new(move |_, _| {
        respond(200, &[("content-type", "text/html")], page.clone())
    }))
    .await;
    let file = tempfile::NamedTempFile::new().expect("temp file");
    std::fs::write(file.path(), key).expect("write");
    let config = one_route(
        "site",
        "/",
        &format!("http://{site}"),
        &format!(
            "{scheme_keys}\nsecret_file = {:?}\nrewrite_hosts = [\"{cdn}\"]\nkeep_http = true",
            file.path().display().to_string()
        ),
    );
    (TestGateway::start(&config).await, config, file)
}

#[tokio::test]
async fn a_site_route_signs_its_pages_urls_with_the_routes_scheme() {
    let cdn = cloudfront_stand_in().await;
    let (id, pem) = cloudfront_key();
    let page = format!(
        "<img src=\"http://{cdn}/images/cat.jpg\"><img src=\"https://elsewhere.example/x.jpg\">"
    );
    let keys = format!("scheme = \"cloudfront\"\nkey_pair_id = \"{id}\"");
    let (gateway, _config, _key) = site_gateway(page, cdn, &keys, &pem).await;
    let html = get(&gateway.url("/")).await.text();
    let signed = html
        .split("src=\"")
        .nth(1)
        .and_then(|rest| rest.split('"').next())
        .expect("the first picture")
        .replace("&amp;", "&");
    assert!(signed.contains("Signature="), "{html}");
    assert_eq!(get(&signed).await.status, StatusCode::OK, "{signed}");
    assert!(
        html.contains("src=\"https://elsewhere.example/x.jpg\""),
        "{html}"
    );
}

#[tokio::test]
async fn two_gateways_hand_out_the_same_url_anywhere_in_a_bucket_with_every_scheme() {
    let cdn = cloudfront_stand_in().await;
    let (id, pem) = cloudfront_key();
    let bucket_start = now() - now() % 300;
    for (keys, key) in [
        (
            format!("scheme = \"cloudfront\"\nkey_pair_id = \"{id}\""),
            pem.clone(),
        ),
        ("scheme = \"akamai\"".to_owned(), AKAMAI_KEY.to_owned()),
    ] {
        let mut locations = Vec::new();
        let mut files = Vec::new();
        for offset in [10, 250] {
            let file = tempfile::NamedTempFile::new().expect("temp file");
            std::fs::write(file.path(), &key).expect("write");
            let config = one_route(
                "redirect",
                "/f/",
                &format!("http://{cdn}"),
                &format!(
                    "{keys}\nsecret_file = {:?}",
                    file.path().display().to_string()
                ),
            );
            let clock = Arc::new(signgate::clock::ManualClock::new(bucket_start + offset));
            let gateway = TestGateway::start_with_clock(&config, clock).await;
            let answer = get(&gateway.url("/f/images/cat.jpg")).await;
            locations.push(
                answer.headers["location"]
                    .to_str()
                    .expect("ascii")
                    .to_owned(),
            );
            files.push(file);
        }
        assert_eq!(locations[0], locations[1], "{keys}");
    }
}

/// The secret access key of the S3 tests.
const S3_SECRET: &str = "wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY";

#[tokio::test]
async fn s3_routes_presign_what_an_independent_sigv4_check_accepts() {
    let s3 = support::s3::start_s3(S3_SECRET).await;
    let keys = "scheme = \"s3\"\naccess_key_id = \"AKIAIOSFODNN7EXAMPLE\"\nregion = \"us-east-1\"";
    let bare = get(&format!("http://{s3}/gallery/cat%20one.jpg")).await;
    assert_eq!(bare.status, StatusCode::FORBIDDEN, "the stand-in checks");
    // Path style: the bucket is the upstream's base path.
    let file = tempfile::NamedTempFile::new().expect("temp file");
    std::fs::write(file.path(), S3_SECRET).expect("write");
    let route = |mode: &str| {
        one_route(
            mode,
            "/f/",
            &format!("http://{s3}/gallery"),
            &format!(
                "{keys}\nsecret_file = {:?}",
                file.path().display().to_string()
            ),
        )
    };
    let proxy = TestGateway::start(&route("proxy")).await;
    let answer =
        get(&proxy.url("/f/cat%20one.jpg?response-content-type=image/png&X-Amz-Signature=forged"))
            .await;
    assert_eq!(answer.status, StatusCode::OK, "{}", answer.text());
    assert_eq!(answer.text(), "object /gallery/cat%20one.jpg");

    let redirect = TestGateway::start(&route("redirect")).await;
    let location = get(&redirect.url("/f/cat%20one.jpg")).await.headers["location"]
        .to_str()
        .expect("ascii")
        .to_owned();
    assert!(
        location.contains("X-Amz-Algorithm=AWS4-HMAC-SHA256"),
        "{location}"
    );
    assert_eq!(get(&location).await.status, StatusCode::OK, "{location}");
    assert_eq!(
        get(&location.replace("cat%20one", "cat%20two"))
            .await
            .status,
        StatusCode::FORBIDDEN
    );
    // Longer than SigV4 allows is refused when the config loads.
    let long = one_route(
        "redirect",
        "/f/",
        &format!("http://{s3}/gallery"),
        &format!(
            "{keys}\nttl = \"7d\"\nsecret_file = {:?}",
            file.path().display().to_string()
        ),
    );
    let error = signgate::config::Config::from_toml_str(&long, |_| None)
        .expect_err("too long")
        .to_string();
    assert!(error.contains("must be at most 7 days"), "{error}");
}

#[tokio::test]
async fn imgix_routes_add_s_and_a_bucketed_expires() {
    let token = IMGIX_TOKEN;
    let cdn = imgix_stand_in().await;
    let (proxy, _key) = gateway("proxy", cdn, "scheme = \"imgix\"", token).await;
    let answer = get(&proxy.url("/f/images/cat.jpg?w=400&s=forged")).await;
    assert_eq!(answer.status, StatusCode::OK, "{}", answer.text());
    let (redirect, _key) = gateway("redirect", cdn, "scheme = \"imgix\"", token).await;
    let location = get(&redirect.url("/f/images/cat.jpg?w=400")).await.headers["location"]
        .to_str()
        .expect("ascii")
        .to_owned();
    assert!(location.contains("w=400&expires="), "{location}");
    assert_eq!(get(&location).await.status, StatusCode::OK);
    assert_eq!(
        get(&location.replace("w=400", "w=4000")).await.status,
        StatusCode::FORBIDDEN
    );
}

#[tokio::test]
async fn site_routes_sign_s3_imgix_and_akamai_urls_in_their_pages() {
    let imgix_token = IMGIX_TOKEN;
    let imgix = imgix_stand_in().await;
    let s3 = support::s3::start_s3(S3_SECRET).await;
    let akamai = akamai_stand_in().await;
    for (cdn, path, keys, key) in [
        (
            s3,
            "/gallery/cat.jpg",
            "scheme = \"s3\"\naccess_key_id = \"AKIAIOSFODNN7EXAMPLE\"\nregion = \"us-east-1\"",
            S3_SECRET,
        ),
        (
            imgix,
            "/images/cat.jpg?w=300",
            "scheme = \"imgix\"",
            imgix_token,
        ),
        (akamai, "/video/a.mp4", "scheme = \"akamai\"", AKAMAI_KEY),
    ] {
        let page = format!("<img src=\"http://{cdn}{path}\">");
        let (gateway, _config, _key) = site_gateway(page, cdn, keys, key).await;
        let html = get(&gateway.url("/")).await.text();
        let signed = html
            .split("src=\"")
            .nth(1)
            .and_then(|rest| rest.split('"').next())
            .expect("the picture")
            .replace("&amp;", "&");
        assert_ne!(
            signed,
            format!("http://{cdn}{path}"),
            "{keys}: left unsigned"
        );
        assert_eq!(
            get(&signed).await.status,
            StatusCode::OK,
            "{keys}: {signed}"
        );
        assert_eq!(
            get(&format!("http://{cdn}{path}")).await.status,
            StatusCode::FORBIDDEN,
            "{keys}: the stand-in checks"
        );
    }
}

#[tokio::test]
async fn explain_reads_each_schemes_url_and_checks_it_with_the_configured_key() {
    let dir = tempfile::tempdir().expect("temp dir");
    let (id, pem) = cloudfront_key();
    let write = |name: &str, text: &str| {
        let path = dir.path().join(name);
        std::fs::write(&path, text).expect("write");
        path.display().to_string()
    };
    let (s3_key, cf_key, ak_key) = (
        write("s3", S3_SECRET),
        write("cf.pem", &pem),
        write("ak", AKAMAI_KEY),
    );
    let config = format!(
        "{SIGNING}\
         [[route]]\nname = \"bucket\"\nprefix = \"/s3/\"\nmode = \"redirect\"\n\
         upstream = \"http://127.0.0.1:9000/gallery\"\nscheme = \"s3\"\n\
         access_key_id = \"AKIAIOSFODNN7EXAMPLE\"\nregion = \"us-east-1\"\nsecret_file = {s3_key:?}\n\
         [[route]]\nname = \"cdn\"\nprefix = \"/cf/\"\nmode = \"redirect\"\n\
         upstream = \"https://d111111abcdef8.cloudfront.net\"\nscheme = \"cloudfront\"\n\
         key_pair_id = \"{id}\"\nsecret_file = {cf_key:?}\n\
         [[route]]\nname = \"video\"\nprefix = \"/v/\"\nmode = \"redirect\"\n\
         upstream = \"https://media.example.com\"\nscheme = \"akamai\"\nsecret_file = {ak_key:?}\n"
    );
    let config_path = write("gateway.toml", &config);
    let gateway = TestGateway::start(&config).await;
    for (path, kind) in [
        ("/s3/cat.jpg", "S3 presigned GET"),
        ("/cf/images/cat.jpg", "CloudFront signed URL"),
        ("/v/a.mp4", "Akamai EdgeAuth token"),
    ] {
        let location = get(&gateway.url(path)).await.headers["location"]
            .to_str()
            .expect("ascii")
            .to_owned();
        let explain = |url: &str| explain(&config_path, url);
        let out = explain(&location);
        let text = String::from_utf8_lossy(&out.stdout);
        assert_eq!(out.status.code(), Some(0), "{path}: {text}");
        assert!(
            text.contains(kind) && text.contains("valid") && text.contains("yes, for route"),
            "{text}"
        );
        let moved = explain(
            &location
                .replacen(".jpg", ".png", 1)
                .replacen(".mp4", ".mkv", 1),
        );
        assert_eq!(
            moved.status.code(),
            Some(1),
            "{path}: {}",
            String::from_utf8_lossy(&moved.stdout)
        );
        for secret in [S3_SECRET, AKAMAI_KEY, "PRIVATE KEY"] {
            assert!(!text.contains(secret));
        }
    }
}

/// `signgate explain --config CONFIG INPUT`.
fn explain(config: &str, input: &str) -> std::process::Output {
    std::process::Command::new(env!("CARGO_BIN_EXE_signgate"))
        .args(["explain", "--config", config, input])
        .env("SECRET", SECRET)
        .output()
        .expect("the binary runs")
}

#[tokio::test]
async fn explain_reads_an_akamai_token_from_a_cookie_without_its_url() {
    let dir = tempfile::tempdir().expect("temp dir");
    let key = dir.path().join("ak");
    std::fs::write(&key, AKAMAI_KEY).expect("write");
    let config = format!(
        "{SIGNING}[[route]]\nname = \"video\"\nprefix = \"/v/\"\nmode = \"redirect\"\n\
         upstream = \"https://media.example.com\"\nscheme = \"akamai\"\n\
         token_cookie_domain = \"example.com\"\nsecret_file = {:?}\n",
        key.display().to_string()
    );
    let config_path = dir.path().join("gateway.toml");
    std::fs::write(&config_path, &config).expect("write");
    let config_path = config_path.display().to_string();
    let gateway = TestGateway::start(&config).await;
    let set_cookie = get(&gateway.url("/v/a.mp4")).await.headers["set-cookie"]
        .to_str()
        .expect("ascii")
        .to_owned();
    assert!(set_cookie.ends_with("; Secure"), "{set_cookie}");
    let (cookie, _) = set_cookie.split_once("; ").expect("attributes");
    let token = cookie.strip_prefix("hdnts=").expect("hdnts");
    for input in [set_cookie.as_str(), cookie, token] {
        let out = explain(&config_path, input);
        let text = String::from_utf8_lossy(&out.stdout);
        assert_eq!(out.status.code(), Some(0), "{input}: {text}");
        assert!(
            text.contains("Akamai EdgeAuth token, without its URL")
                && text.contains("yes, for route `video`'s key"),
            "{text}"
        );
        assert!(!text.contains(AKAMAI_KEY));
    }
    let moved = explain(&config_path, &cookie.replace("acl=/a.mp4", "acl=/b.mp4"));
    assert_eq!(
        moved.status.code(),
        Some(1),
        "{}",
        String::from_utf8_lossy(&moved.stdout)
    );
    let not_a_token = explain(&config_path, "hdnts=hello");
    assert_eq!(not_a_token.status.code(), Some(2));
}

#[tokio::test]
async fn no_spelling_of_a_schemes_credential_parameters_reaches_the_cdn() {
    let (id, pem) = cloudfront_key();
    let cases: [(&str, String, String, &[&str]); 3] = [
        (
            "cloudfront",
            format!("scheme = \"cloudfront\"\nkey_pair_id = \"{id}\""),
            pem,
            &[
                "Signature",
                "signature",
                "EXPIRES",
                "Policy",
                "key-pair-id",
                "%53ignature",
            ],
        ),
        (
            "akamai",
            "scheme = \"akamai\"".to_owned(),
            AKAMAI_KEY.to_owned(),
            &["hdnts", "HDNTS", "%68dnts"],
        ),
        (
            "imgix",
            "scheme = \"imgix\"".to_owned(),
            IMGIX_TOKEN.to_owned(),
            &["s", "S", "expires", "%73"],
        ),
    ];
    for (name, keys, key, params) in cases {
        let seen = Arc::new(std::sync::Mutex::new(Vec::<String>::new()));
        let recorded = Arc::clone(&seen);
        let cdn = verifying_stand_in(move |url| {
            recorded.lock().expect("lock").push(url.to_owned());
            Ok(())
        })
        .await;
        let (proxy, _key) = gateway("proxy", cdn, &keys, &key).await;
        let query: Vec<String> = params.iter().map(|p| format!("{p}=forged")).collect();
        let answer = get(&proxy.url(&format!("/f/a.jpg?keep=1&{}", query.join("&")))).await;
        assert_eq!(answer.status, StatusCode::OK, "{name}");
        let seen = seen.lock().expect("lock").clone();
        assert_eq!(seen.len(), 1, "{name}");
        assert!(!seen[0].contains("forged"), "{name}: {}", seen[0]);
        assert!(seen[0].contains("keep=1"), "{name}: {}", seen[0]);
    }
    // S3: the independent check would refuse a second signature; the stand-in answers 200 only
    // to what verifies.
    let s3 = support::s3::start_s3(S3_SECRET).await;
    let file = tempfile::NamedTempFile::new().expect("temp file");
    std::fs::write(file.path(), S3_SECRET).expect("write");
    let route = one_route(
        "proxy",
        "/f/",
        &format!("http://{s3}/gallery"),
        &format!(
            "scheme = \"s3\"\naccess_key_id = \"AKIAIOSFODNN7EXAMPLE\"\nregion = \"us-east-1\"\n\
             secret_file = {:?}",
            file.path().display().to_string()
        ),
    );
    let proxy = TestGateway::start(&route).await;
    let forged =
        "x-amz-signature=forged&X-AMZ-DATE=forged&%58-Amz-Credential=forged&X-Amz-Expires=9";
    let answer = get(&proxy.url(&format!("/f/a.jpg?{forged}"))).await;
    assert_eq!(answer.status, StatusCode::OK, "{}", answer.text());
}

#[tokio::test]
async fn a_cloudfront_wildcard_policy_signs_a_pages_urls_under_it_with_one_signature() {
    let cdn = cloudfront_stand_in().await;
    let (id, pem) = cloudfront_key();
    let page = format!(
        "<img src=\"http://{cdn}/images/a.jpg\"><img src=\"http://{cdn}/images/b.jpg\">\
         <img src=\"http://{cdn}/other/c.jpg\">"
    );
    let keys = format!(
        "scheme = \"cloudfront\"\nkey_pair_id = \"{id}\"\npolicy_resource = \"http://{cdn}/images/*\""
    );
    let (gateway, config, _key) = site_gateway(page, cdn, &keys, &pem).await;
    let html = get(&gateway.url("/")).await.text();
    let urls: Vec<String> = html
        .split("src=\"")
        .skip(1)
        .filter_map(|rest| rest.split('"').next())
        .map(|url| url.replace("&amp;", "&"))
        .collect();
    assert_eq!(urls.len(), 3, "{html}");
    for url in &urls {
        assert_eq!(get(url).await.status, StatusCode::OK, "{url}");
    }
    let signature = |url: &str| {
        url.split(['?', '&'])
            .find_map(|pair| pair.strip_prefix("Signature="))
            .expect("a signature")
            .to_owned()
    };
    // One custom policy for the two under the wildcard; a canned one for the other.
    assert!(
        urls[0].contains("Policy=") && urls[1].contains("Policy="),
        "{urls:?}"
    );
    assert_eq!(signature(&urls[0]), signature(&urls[1]));
    assert!(
        urls[2].contains("Expires=") && !urls[2].contains("Policy="),
        "{urls:?}"
    );
    // The shared policy is for its prefix only: moved outside it, the CDN refuses it.
    let moved = urls[0].replace("/images/a.jpg", "/other/a.jpg");
    assert_eq!(get(&moved).await.status, StatusCode::FORBIDDEN);
    let error = signgate::config::Config::from_toml_str(
        &config.replace(&format!("http://{cdn}/images/*"), "images"),
        |_| Some("s".into()),
    )
    .expect_err("not a pattern")
    .to_string();
    assert!(
        error.contains("`policy_resource`: must be a URL pattern with a `*`"),
        "{error}"
    );
}

/// A site route whose pages carry Filestack handles, S3 objects and CloudFront URLs, each host
/// signed with its own scheme: the route's `rewrite_hosts` with Filestack's, two
/// `[[route.cdn]]` entries with theirs.
async fn mixed_site(
    page: String,
    cloudfront_ttl: &str,
) -> (
    TestGateway,
    [std::net::SocketAddr; 3],
    Vec<tempfile::NamedTempFile>,
) {
    let filestack = two_file_cdn().await.addr;
    let s3 = support::s3::start_s3(S3_SECRET).await;
    let cloudfront = cloudfront_stand_in().await;
    let page = page
        .replace("FILESTACK", &filestack.to_string())
        .replace("S3", &s3.to_string())
        .replace("CLOUDFRONT", &cloudfront.to_string());
    let site = start_origin(Arc::new(move |_, _| {
        respond(
            200,
            &[
                ("content-type", "text/html"),
                ("cache-control", "public, max-age=86400"),
            ],
            page.clone(),
        )
    }))
    .await;
    let (id, pem) = cloudfront_key();
    let key_file = |text: &str| {
        let file = tempfile::NamedTempFile::new().expect("temp file");
        std::fs::write(file.path(), text).expect("write");
        file
    };
    let (s3_key, cloudfront_key) = (key_file(S3_SECRET), key_file(&pem));
    let path = |file: &tempfile::NamedTempFile| file.path().display().to_string();
    let config = format!(
        "{}\n\
         [[route.cdn]]\nhosts = [\"{s3}\"]\nscheme = \"s3\"\n\
         access_key_id = \"AKIAIOSFODNN7EXAMPLE\"\nregion = \"us-east-1\"\nsecret_file = {:?}\n\
         [[route.cdn]]\nhosts = [\"{cloudfront}\"]\nscheme = \"cloudfront\"\n\
         key_pair_id = \"{id}\"\nsecret_file = {:?}\nttl = \"{cloudfront_ttl}\"\n",
        one_route(
            "site",
            "/",
            &format!("http://{site}"),
            &format!("rewrite_hosts = [\"{filestack}\"]\nkeep_http = true\nttl = \"1h\""),
        ),
        path(&s3_key),
        path(&cloudfront_key),
    );
    let config_file = key_file(&config);
    (
        TestGateway::start(&config).await,
        [filestack, s3, cloudfront],
        vec![s3_key, cloudfront_key, config_file],
    )
}

/// The `src` of every `<img>` in `html`, unescaped.
fn image_sources(html: &str) -> Vec<String> {
    html.split("src=\"")
        .skip(1)
        .filter_map(|rest| rest.split('"').next())
        .map(|src| src.replace("&amp;", "&"))
        .collect()
}

#[tokio::test]
async fn one_site_route_signs_filestack_s3_and_cloudfront_urls_in_one_page_each_with_its_scheme() {
    let page = format!(
        "<img src=\"http://FILESTACK/{H}\"><img src=\"http://S3/gallery/cat.jpg\">\
         <img src=\"http://CLOUDFRONT/images/cat.jpg\"><img src=\"http://elsewhere.example/x.jpg\">"
    );
    let (gateway, [filestack, s3, cloudfront], keys) = mixed_site(page, "10m").await;
    let answer = get(&gateway.url("/")).await;
    let html = answer.text();
    let sources = image_sources(&html);
    assert_eq!(sources.len(), 4, "{html}");
    assert!(
        sources[0].starts_with(&format!("http://{filestack}/"))
            && sources[0].contains("signature="),
        "{html}"
    );
    assert!(
        sources[1].starts_with(&format!("http://{s3}/gallery/cat.jpg?"))
            && sources[1].contains("X-Amz-Signature="),
        "{html}"
    );
    assert!(
        sources[2].starts_with(&format!("http://{cloudfront}/images/cat.jpg?"))
            && sources[2].contains("Key-Pair-Id="),
        "{html}"
    );
    assert_eq!(sources[3], "http://elsewhere.example/x.jpg");
    for signed in &sources[..3] {
        assert_eq!(get(signed).await.status, StatusCode::OK, "{signed}");
    }
    // Each stand-in refuses the others' signatures: the S3 URL's credentials on CloudFront.
    let moved = sources[1].replace(&s3.to_string(), &cloudfront.to_string());
    assert_eq!(get(&moved).await.status, StatusCode::FORBIDDEN, "{moved}");

    // The page may be kept only as long as its shortest-lived URL (CloudFront's 10m ttl, not
    // the route's own 1h) stays valid.
    let max_age: u64 = answer.headers["cache-control"]
        .to_str()
        .expect("ascii")
        .split(',')
        .find_map(|d| d.trim().strip_prefix("max-age="))
        .and_then(|v| v.parse().ok())
        .expect("a max-age");
    let cloudfront_expiry: u64 = sources[2]
        .split(['?', '&'])
        .find_map(|pair| pair.strip_prefix("Expires="))
        .and_then(|v| v.parse().ok())
        .expect("Expires");
    // ttl 10m, bucket 5m, min_validity ttl/4: at most 10m + 5m - 150s.
    assert!(
        max_age + now() <= cloudfront_expiry - 150 + 1 && max_age <= 750,
        "max-age={max_age} outlives the CloudFront URL (expires in {}s)",
        cloudfront_expiry - now()
    );
    assert!(max_age > 0, "max-age=0");

    // Served again in the same bucket, from the signed-attribute cache: the same URLs.
    assert_eq!(image_sources(&get(&gateway.url("/")).await.text()), sources);

    // `explain` checks each entry's URLs with that entry's key.
    let config_path = keys[2].path().display().to_string();
    for (url, route) in [(&sources[1], s3), (&sources[2], cloudfront)] {
        let out = std::process::Command::new(env!("CARGO_BIN_EXE_signgate"))
            .args(["explain", "--config", &config_path, url])
            .env("SECRET", SECRET)
            .output()
            .expect("the binary runs");
        let text = String::from_utf8_lossy(&out.stdout);
        assert_eq!(out.status.code(), Some(0), "{url}: {text}");
        assert!(text.contains(&format!("r ({route})")), "{text}");
    }
}

#[tokio::test]
async fn a_cdn_entry_signs_its_hosts_in_css_and_inline_scripts_too() {
    let page = "<div style=\"background: url(http://S3/gallery/bg.jpg)\"></div>\
                <style>.hero { background-image: url('http://CLOUDFRONT/images/hero.jpg') }</style>"
        .to_owned();
    let (gateway, _, _keys) = mixed_site(page, "1h").await;
    let html = get(&gateway.url("/")).await.text();
    assert!(html.contains("X-Amz-Signature="), "{html}");
    assert!(html.contains("Key-Pair-Id="), "{html}");
}

/// A key file holding `text`, for a test config's `secret_file`.
fn key_file(text: &str) -> tempfile::NamedTempFile {
    let file = tempfile::NamedTempFile::new().expect("temp file");
    std::fs::write(file.path(), text).expect("write");
    file
}

/// The `hdnts` token of an Akamai URL.
fn akamai_token(url: &str) -> &str {
    url.split(['?', '&'])
        .find_map(|pair| pair.strip_prefix("hdnts="))
        .unwrap_or_default()
}

#[tokio::test]
async fn an_akamai_token_never_grants_more_than_the_path_it_was_signed_for() {
    let cdn = akamai_stand_in().await;
    let key = key_file(AKAMAI_KEY);
    // The route hands out the CDN's `/public` objects; `/private` is not its to sign.
    let config = one_route(
        "redirect",
        "/f/",
        &format!("http://{cdn}/public"),
        &format!(
            "scheme = \"akamai\"\nsecret_file = {:?}",
            key.path().display().to_string()
        ),
    );
    let gateway = TestGateway::start(&config).await;
    let fine = get(&gateway.url("/f/video/a.mp4")).await;
    assert_eq!(fine.status, StatusCode::TEMPORARY_REDIRECT);
    // `*` and `?` are an ACL's wildcards, `!` joins ACLs and `~` joins a token's fields: in
    // the path, each would write an ACL of the client's making into the token.
    for path in [
        "/f/x!/private/*",
        "/f/*",
        "/f/x~acl=/*",
        "/f/video/a*",
        "/f/video/a&b.mp4",
        "/f/video/a,b.mp4",
    ] {
        let answer = get(&gateway.url(path)).await;
        if let Some(location) = answer.headers.get("location") {
            let token = akamai_token(location.to_str().expect("ascii")).to_owned();
            let private = get(&format!("http://{cdn}/private/payroll.mp4?hdnts={token}")).await;
            assert_eq!(
                private.status,
                StatusCode::FORBIDDEN,
                "{path}: a token for {location:?} opens /private"
            );
        }
        assert_eq!(answer.status, StatusCode::BAD_REQUEST, "{path}");
    }
}

/// A site whose pages show the picture the request names (`/photo/KEY` or `?img=KEY`, echoed
/// as written, undecoded) on `cdn`, beside one of its own (`gallery/own.jpg`).
async fn picture_viewer(cdn: std::net::SocketAddr) -> std::net::SocketAddr {
    start_origin(Arc::new(move |parts, _| {
        let path = parts.uri.path();
        let named = match path.strip_prefix("/photo/") {
            Some(key) => key.to_owned(),
            None => parts
                .uri
                .query()
                .and_then(|q| q.strip_prefix("img="))
                .unwrap_or("gallery/cat.jpg")
                .to_owned(),
        };
        let page = format!(
            "<img id=\"named\" src=\"http://{cdn}/{named}\"><img src=\"http://{cdn}/gallery/own.jpg\">"
        );
        respond(200, &[("content-type", "text/html")], page)
    }))
    .await
}

#[tokio::test]
async fn an_object_the_request_names_is_never_signed_on_an_entry_host() {
    let s3 = support::s3::start_s3(S3_SECRET).await;
    let akamai = akamai_stand_in().await;
    let (s3_key, akamai_key) = (key_file(S3_SECRET), key_file(AKAMAI_KEY));
    let path = |file: &tempfile::NamedTempFile| file.path().display().to_string();
    for (cdn, entry, credential) in [
        (
            s3,
            format!(
                "scheme = \"s3\"\naccess_key_id = \"AKIAIOSFODNN7EXAMPLE\"\n\
                 region = \"us-east-1\"\nsecret_file = {:?}",
                path(&s3_key)
            ),
            "X-Amz-Signature=",
        ),
        (
            akamai,
            format!("scheme = \"akamai\"\nsecret_file = {:?}", path(&akamai_key)),
            "hdnts=",
        ),
    ] {
        let site = picture_viewer(cdn).await;
        let config = format!(
            "{}[[route.cdn]]\nhosts = [\"{cdn}\"]\n{entry}\n",
            one_route("site", "/", &format!("http://{site}"), "keep_http = true"),
        );
        let gateway = TestGateway::start(&config).await;
        for target in [
            "/view?img=private/payroll.pdf",
            "/photo/private/payroll.pdf",
            "/view?img=private/caf%C3%A9.pdf",
            "/view?img=private/caf%25C3%25A9.pdf",
        ] {
            let html = get(&gateway.url(target)).await.text();
            let sources = image_sources(&html);
            assert_eq!(sources.len(), 2, "{html}");
            assert!(
                !sources[0].contains(credential),
                "{entry}: {target} got the object it names signed: {}",
                sources[0]
            );
            assert!(
                sources[1].contains(credential),
                "{entry}: the site's own picture is still signed: {html}"
            );
            assert_eq!(get(&sources[1]).await.status, StatusCode::OK);
        }
    }
}
