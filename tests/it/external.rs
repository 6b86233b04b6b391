//! External URL sources and API-key paths (issue 16): the SDKs' vectors verify; proxy and
//! redirect routes sign a listed source for that source only, over real sockets to a stand-in
//! CDN that checks the policy's `url`; unlisted and look-alike sources never reach the CDN.

use crate::support;

use http::StatusCode;
use serde_json::Value;
use signgate::external::{ExternalRef, Source};
use signgate::policy::{Call, Credentials, DecodedPolicy};
use signgate::secret::Secret;
use signgate::verify::{Invalid, Target, parse_url, verify_at};
use support::*;

/// The app key the vectors and these routes use.
const API_KEY: &str = "AbCdEfGhIjKlMnOpQrStUvW";
/// A source under the routes' `external_sources`.
const SOURCE: &str = "https://images.example.org/gallery/pop-art.png";
/// Before every vector's expiry.
const VECTOR_NOW: u64 = 1_800_000_000;

fn vectors() -> Vec<Value> {
    let root = env!("CARGO_MANIFEST_DIR");
    let copy = std::fs::read_to_string(format!("{root}/tests/data/filestack-external.json"))
        .expect("tests/data/filestack-external.json is in the repository");
    if let Ok(shared) =
        std::fs::read_to_string(format!("{root}/../shared/vectors/filestack-external.json"))
    {
        assert_eq!(
            copy, shared,
            "tests/data copy differs from ../shared/vectors"
        );
    }
    let file: Value = serde_json::from_str(&copy).expect("JSON");
    let cases = file["cases"].as_array().expect("cases").clone();
    assert_eq!(cases.len(), 9);
    cases
}

fn text<'a>(case: &'a Value, key: &str) -> &'a str {
    case[key]
        .as_str()
        .unwrap_or_else(|| panic!("{key} in {}", case["name"]))
}

#[test]
fn every_vector_verifies_for_its_source_or_handle_and_for_nothing_else() {
    for case in vectors() {
        let name = &case["name"];
        let secret = Secret::new(text(&case, "secret").into()).expect("not empty");
        let url = text(&case, "signed_url");
        assert_eq!(
            secret.sign_hex(text(&case, "policy_b64").as_bytes()),
            text(&case, "signature"),
            "{name}"
        );
        let policy = verify_at(url, &secret, VECTOR_NOW, Call::Read)
            .unwrap_or_else(|e| panic!("{name}: {e}"));
        let parsed = parse_url(url).expect("parses");
        match text(&case, "kind") {
            "external" => {
                assert_eq!(
                    parsed.target,
                    Some(Target::External(text(&case, "external_url").into())),
                    "{name}"
                );
                assert_eq!(parsed.needed_calls(), [Call::Convert], "{name}");
                assert!(policy.limits.url.is_some(), "{name}");
                // Another host is never the source the policy names.
                let source = text(&case, "external_url");
                let moved = source.replacen("https://", "https://evil.", 1);
                let elsewhere = url.replace(source, &moved);
                assert!(
                    matches!(
                        verify_at(&elsewhere, &secret, VECTOR_NOW, Call::Read),
                        Err(Invalid::SourceNotMatched { .. })
                    ),
                    "{name}: {elsewhere}"
                );
            }
            _ => assert_eq!(
                parsed.target,
                Some(Target::Handle(text(&case, "handle").into())),
                "{name}"
            ),
        }
        let other = Secret::new("another secret".into()).expect("not empty");
        assert_eq!(
            verify_at(url, &other, VECTOR_NOW, Call::Read),
            Err(Invalid::BadSignature),
            "{name}"
        );
    }
}

#[test]
fn signgate_writes_an_external_url_the_cdn_reads_as_the_sdk_wrote_it() {
    for case in vectors()
        .iter()
        .filter(|case| case["kind"] == "external" && case["unsigned_url"].is_string())
    {
        let unsigned = text(case, "unsigned_url");
        let path = unsigned
            .strip_prefix(&format!("https://cdn.filestackcontent.com/{API_KEY}/"))
            .expect("API-key path");
        let external = ExternalRef::parse(path).expect("plain").expect("a source");
        let credentials = Credentials {
            policy: text(case, "policy_b64").into(),
            signature: text(case, "signature").into(),
            expiry: 0,
        };
        let ours = external.signed_url(
            "https://cdn.filestackcontent.com",
            API_KEY,
            None,
            &credentials,
        );
        assert_eq!(ours, text(case, "signed_url"), "{}", case["name"]);
    }
}

/// A CDN with one file at the external source [`SOURCE`] and one handle, and a proxy or
/// redirect route at `/img/` in front of it that lists `https://images.example.org/gallery/`.
async fn gateway(mode: &str, cdn: &TestCdn, extra: &str) -> TestGateway {
    let keys = format!(
        "calls = [\"read\", \"convert\"]\napi_key = \"{API_KEY}\"\n\
         external_sources = [\"https://images.example.org/gallery/\"]\n{extra}"
    );
    TestGateway::start(&one_route(mode, "/img/", &cdn.url(), &keys)).await
}

async fn cdn_with_source() -> TestCdn {
    TestCdn::builder()
        .file(SOURCE, &b"partner picture"[..])
        .file(H, &b"0123456789abcdefghij"[..])
        .start()
        .await
}

#[tokio::test]
async fn a_listed_source_is_fetched_with_credentials_for_that_source_only() {
    let cdn = cdn_with_source().await;
    let gateway = gateway("proxy", &cdn, "").await;
    for path in [
        format!("/img/resize=width:300/{SOURCE}"),
        format!("/img/{API_KEY}/resize=width:300/{SOURCE}"),
        format!("/img/resize=width:300/%22{SOURCE}%22"),
        format!("/img/{SOURCE}"),
    ] {
        let answer = get(&gateway.url(&path)).await;
        assert_eq!(answer.status, StatusCode::OK, "{path}: {}", answer.text());
        assert_eq!(answer.text(), "partner picture", "{path}");
    }
    // The client's query is not passed on with a source.
    let answer = get(&gateway.url(&format!("/img/{SOURCE}?x=1&policy=p"))).await;
    assert_eq!(answer.status, StatusCode::OK);
    let received = cdn.received();
    assert_eq!(received.len(), 5);
    assert!(!received[4].uri.contains('?'), "{}", received[4].uri);
    for request in &received {
        assert!(
            request.uri.starts_with(&format!("/{API_KEY}/")),
            "{}",
            request.uri
        );
        assert!(
            request.uri.ends_with(&format!("/{SOURCE}")),
            "{}",
            request.uri
        );
        let policy = request.policy.as_ref().expect("verified");
        assert_eq!(policy.call, Some(vec!["convert".to_owned()]));
        let pattern = policy.limits.url.as_deref().expect("a url pattern");
        assert_eq!(
            pattern,
            r"^https://images\.example\.org/gallery/pop-art\.png$"
        );
        assert!(policy.handle.is_none());
    }
    // A handle behind the API key is the handle.
    let answer = get(&gateway.url(&format!("/img/{API_KEY}/{H}"))).await;
    assert_eq!(answer.status, StatusCode::OK);
    assert_eq!(answer.text(), "0123456789abcdefghij");
}

#[tokio::test]
async fn unlisted_and_look_alike_sources_never_reach_the_cdn() {
    let cdn = cdn_with_source().await;
    let gateway = gateway("proxy", &cdn, "").await;
    for (path, status) in [
        ("https://elsewhere.example/a.png", StatusCode::FORBIDDEN),
        (
            "http://images.example.org/gallery/a.png",
            StatusCode::FORBIDDEN,
        ),
        (
            "https://images.example.org/other/a.png",
            StatusCode::FORBIDDEN,
        ),
        (
            "https://images.example.org/galleryx/a.png",
            StatusCode::FORBIDDEN,
        ),
        (
            "https://images.example.org.evil.net/gallery/a.png",
            StatusCode::FORBIDDEN,
        ),
        (
            "https://images.example.org:8443/gallery/a.png",
            StatusCode::FORBIDDEN,
        ),
        (
            "https://images.example.org@evil.net/gallery/a.png",
            StatusCode::BAD_REQUEST,
        ),
        (
            "https://images.example.org/gallery/../secret.png",
            StatusCode::BAD_REQUEST,
        ),
        (
            "https://images.example.org/gallery/%2e%2e/secret.png",
            StatusCode::BAD_REQUEST,
        ),
        (
            "https://images.example.org/gallery%2F..%2Fsecret.png",
            StatusCode::BAD_REQUEST,
        ),
        (
            "https://images.example.org/gallery/a%5C..%5Cb.png",
            StatusCode::BAD_REQUEST,
        ),
        (
            "https://images.example.org/gallery//a.png",
            StatusCode::BAD_REQUEST,
        ),
        (
            "https://images.example.org/gallery/..;/private/payroll.pdf",
            StatusCode::BAD_REQUEST,
        ),
        (
            "https://images.example.org/gallery/%c0%ae%c0%ae/a.png",
            StatusCode::BAD_REQUEST,
        ),
        (
            "https://images.example.org/gallery/.../a.png",
            StatusCode::BAD_REQUEST,
        ),
        (
            "%22https://images.example.org/gallery/a.png",
            StatusCode::BAD_REQUEST,
        ),
        (
            "not-a-task/https://images.example.org/gallery/a.png",
            StatusCode::BAD_REQUEST,
        ),
    ] {
        let answer = get(&gateway.url(&format!("/img/{path}"))).await;
        assert_eq!(answer.status, status, "{path}: {}", answer.text());
        assert!(!answer.text().contains("policy"), "{path}");
    }
    // The query is the request's, not the source's: it never makes the source look listed.
    let answer = get(&gateway
        .url("/img/https://elsewhere.example/a.png?https://images.example.org/gallery/a.png"))
    .await;
    assert_eq!(answer.status, StatusCode::FORBIDDEN);
    assert!(cdn.received().is_empty(), "{:?}", cdn.received());
}

#[tokio::test]
async fn a_route_without_external_sources_signs_none() {
    let cdn = cdn_with_source().await;
    let config = one_route(
        "proxy",
        "/img/",
        &cdn.url(),
        &format!("calls = [\"read\", \"convert\"]\napi_key = \"{API_KEY}\""),
    );
    let gateway = TestGateway::start(&config).await;
    let answer = get(&gateway.url(&format!("/img/{SOURCE}"))).await;
    assert_eq!(answer.status, StatusCode::FORBIDDEN);
    let plain = TestGateway::start(&one_route("proxy", "/img/", &cdn.url(), "")).await;
    let answer = get(&plain.url(&format!("/img/{SOURCE}"))).await;
    assert_eq!(answer.status, StatusCode::FORBIDDEN);
    assert!(cdn.received().is_empty());
}

#[tokio::test]
async fn a_redirect_route_hands_out_a_url_valid_for_that_source_only() {
    let cdn = cdn_with_source().await;
    let gateway = gateway("redirect", &cdn, "").await;
    let answer = get(&gateway.url(&format!("/img/resize=width:300/{SOURCE}"))).await;
    assert_eq!(answer.status, StatusCode::TEMPORARY_REDIRECT);
    let location = answer.headers["location"].to_str().expect("ascii");
    assert!(location.starts_with(&format!(
        "{}/{API_KEY}/resize=width:300/security=p:",
        cdn.url()
    )));
    verify_at(location, &secret(), now(), Call::Convert).expect("valid for the source");
    let moved = location.replace("pop-art.png", "pop-art.png.evil");
    assert!(matches!(
        verify_at(&moved, &secret(), now(), Call::Convert),
        Err(Invalid::SourceNotMatched { .. })
    ));
    let decoded = parse_url(location).expect("parses");
    let policy =
        DecodedPolicy::decode(decoded.policy.as_deref().expect("policy")).expect("decodes");
    assert_eq!(policy.call, Some(vec!["convert".to_owned()]));
}

#[test]
fn config_refuses_sources_without_a_key_or_convert_and_names_the_key() {
    let route = |keys: &str| {
        format!(
            "{SIGNING}[[route]]\nname = \"r\"\nprefix = \"/img/\"\nmode = \"proxy\"\n\
             upstream = \"https://cdn.example\"\n{keys}\n"
        )
    };
    let error = |keys: &str| {
        signgate::config::Config::from_toml_str(&route(keys), |_| Some("s".into()))
            .expect_err("refused")
            .to_string()
    };
    let message =
        error("calls = [\"read\", \"convert\"]\nexternal_sources = [\"https://a.example/\"]");
    assert!(
        message.starts_with("route `r`: `external_sources`: needs `api_key`"),
        "{message}"
    );
    let message = error(&format!(
        "api_key = \"{API_KEY}\"\nexternal_sources = [\"https://a.example/\"]"
    ));
    assert!(message.contains("add \"convert\" to `calls`"), "{message}");
    let message = error(&format!(
        "calls = [\"read\", \"convert\"]\napi_key = \"{API_KEY}\"\nexternal_sources = [\"a.example/\"]"
    ));
    assert!(
        message.starts_with("route `r`: `external_sources`: \"a.example/\""),
        "{message}"
    );
    let message = error("api_key = \"my secret!\"");
    assert!(
        message.starts_with("route `r`: `api_key`: must be the app's API key"),
        "{message}"
    );
    assert!(Source::parse("https://images.example.org/gallery/a.png").is_ok());
}
