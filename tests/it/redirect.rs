//! redirect and upload-policy modes: what the browser is handed verifies at the CDN.

use crate::support;

use http::{Method, StatusCode};
use signgate::clock::ManualClock;
use signgate::policy::{Call, DecodedPolicy};
use signgate::verify::verify_at;
use std::sync::Arc;
use support::*;

/// A gateway config with one upload-policy route at `/upload-policy`, plus `extra` route keys.
fn upload_route(extra: &str) -> String {
    format!(
        "{SIGNING}[[route]]\nname = \"upload\"\nprefix = \"/upload-policy\"\nmode = \"upload-policy\"\n{extra}\n"
    )
}

/// A gateway on `clock` with one redirect route at `/go/` to `https://cdn.example`, ttl 1h,
/// bucket 5m, and the `extra` route keys.
async fn redirect_gateway(clock: Arc<ManualClock>, extra: &str) -> TestGateway {
    let keys = format!("ttl = \"1h\"\nbucket = \"5m\"\n{extra}");
    let config = one_route("redirect", "/go/", "https://cdn.example", &keys);
    TestGateway::start_with_clock(&config, clock).await
}

#[tokio::test]
async fn redirect_location_verifies_and_is_cached_no_longer_than_min_validity_allows() {
    let clock = Arc::new(ManualClock::new(1_800_000_100));
    let gateway = redirect_gateway(clock.clone(), "").await;
    let answer = get(&gateway.url(&format!("/go/{H}?dl=true"))).await;
    assert_eq!(answer.status, StatusCode::TEMPORARY_REDIRECT);
    let location = answer.headers["location"].to_str().expect("ascii");
    assert!(
        location.starts_with(&format!("https://cdn.example/{H}?dl=true&policy=")),
        "{location}"
    );
    let policy = verify_at(location, &secret(), 1_800_000_100, Call::Read).expect("valid");
    assert_eq!(policy.expiry, 1_800_003_900);
    // 3800 s left on the URL, less min_validity (ttl / 4 = 900 s).
    assert_eq!(answer.headers["cache-control"], "private, max-age=2900");
    assert!(answer.body.is_empty());

    // Later in the same bucket: the same URL, and a shorter max-age.
    clock.advance(100);
    let again = get(&gateway.url(&format!("/go/{H}?dl=true"))).await;
    assert_eq!(again.headers["location"], location);
    assert_eq!(again.headers["cache-control"], "private, max-age=2800");

    let head = send(Method::HEAD, &gateway.url(&format!("/go/{H}")), &[]).await;
    assert_eq!(head.status, StatusCode::TEMPORARY_REDIRECT);
    let post = send(Method::POST, &gateway.url(&format!("/go/{H}")), &[]).await;
    assert_eq!(post.status, StatusCode::METHOD_NOT_ALLOWED);
}

#[tokio::test]
async fn skew_margin_lengthens_the_expiry_but_not_what_caches_may_keep() {
    let clock = Arc::new(ManualClock::new(1_800_000_100));
    let gateway = redirect_gateway(clock, "skew_margin = \"5m\"").await;
    let answer = get(&gateway.url(&format!("/go/{H}"))).await;
    let location = answer.headers["location"].to_str().expect("ascii");
    let policy = verify_at(location, &secret(), 1_800_000_100, Call::Read).expect("valid");
    // ttl and the margin on, rounded up to the bucket: a CDN 5 minutes ahead still sees an hour.
    assert_eq!(policy.expiry, 1_800_004_200);
    // What a browser may keep counts from the expiry less the margin: as without it.
    assert_eq!(answer.headers["cache-control"], "private, max-age=2900");
}

#[tokio::test]
async fn upload_policy_carries_the_route_limits_and_is_never_cached() {
    let gateway = TestGateway::start(&upload_route(
        "max_size = \"1MB\"\npath = \"/gallery/\"\ncontainer = \"photos\"",
    ))
    .await;
    let answer = get(&gateway.url("/upload-policy?maxSize=999999999&call=remove")).await;
    assert_eq!(answer.status, StatusCode::OK);
    assert_eq!(answer.headers["cache-control"], "no-store");
    assert_eq!(answer.headers["content-type"], "application/json");
    let json: serde_json::Value = serde_json::from_slice(&answer.body).expect("json");
    let policy = json["policy"].as_str().expect("policy");
    let signature = json["signature"].as_str().expect("signature");
    assert!(secret().verify_hex(policy.as_bytes(), signature));
    let decoded = DecodedPolicy::decode(policy).expect("decodes");
    assert_eq!(decoded.limits.max_size, Some(1_000_000));
    assert_eq!(decoded.limits.path.as_deref(), Some("/gallery/"));
    assert_eq!(decoded.limits.container.as_deref(), Some("photos"));
    assert_eq!(
        decoded.call,
        Some(vec!["pick".to_owned(), "store".to_owned()])
    );
    assert_eq!(json["expiry"].as_u64(), Some(decoded.expiry));
    assert!(decoded.expiry >= now() + 3600);

    assert_eq!(
        get(&gateway.url("/upload-policy/x")).await.status,
        StatusCode::NOT_FOUND
    );
    let post = send(Method::POST, &gateway.url("/upload-policy"), &[]).await;
    assert_eq!(post.status, StatusCode::METHOD_NOT_ALLOWED);
}

#[tokio::test]
async fn upload_policy_answers_cors_only_for_listed_origins() {
    let gateway = TestGateway::start(&upload_route(
        "cors_origins = [\"https://app.example.com\"]",
    ))
    .await;
    let url = gateway.url("/upload-policy");
    let listed = send(Method::GET, &url, &[("origin", "https://app.example.com")]).await;
    assert_eq!(listed.status, StatusCode::OK);
    assert_eq!(
        listed.headers["access-control-allow-origin"],
        "https://app.example.com"
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
    assert_eq!(preflight.headers["access-control-allow-methods"], "GET");
    let refused = send(Method::OPTIONS, &url, &[("origin", "https://evil.example")]).await;
    assert!(refused.headers.get("access-control-allow-origin").is_none());
}

#[tokio::test]
async fn a_scheduled_switch_caps_expiries_before_it_and_signs_with_the_next_secret_from_it() {
    let next_file = tempfile::NamedTempFile::new().expect("temp file");
    std::fs::write(next_file.path(), "n3xt-secret\n").expect("write");
    let next = signgate::secret::Secret::new("n3xt-secret".into()).expect("not empty");
    // 200 s into a bucket, 1,900 s after the clock starts.
    let at = 1_800_002_000;
    let clock = Arc::new(ManualClock::new(1_800_000_100));
    let keys = format!(
        "secret_env = \"SECRET\"\nsecret_next_file = \"{}\"\nswitch_at = \"2027-01-15T08:33:20Z\"",
        next_file.path().display()
    );
    let gateway = redirect_gateway(clock.clone(), &keys).await;
    let location = |answer: &Answer| {
        answer.headers["location"]
            .to_str()
            .expect("ascii")
            .to_owned()
    };

    // Within a ttl of the switch: the last bucket before it, and caches keep it no longer.
    let early = get(&gateway.url(&format!("/go/{H}"))).await;
    let policy = verify_at(&location(&early), &secret(), 1_800_000_100, Call::Read).expect("valid");
    assert_eq!(policy.expiry, 1_800_001_800);
    // 1,700 s left, less min_validity (900 s).
    assert_eq!(early.headers["cache-control"], "private, max-age=800");
    assert!(verify_at(&location(&early), &next, 1_800_000_100, Call::Read).is_err());

    // In that last bucket: the switch itself, and nothing a cache may keep.
    clock.set(at - 50);
    let last = get(&gateway.url(&format!("/go/{H}"))).await;
    let policy = verify_at(&location(&last), &secret(), at - 50, Call::Read).expect("valid");
    assert_eq!(policy.expiry, at);
    assert_eq!(last.headers["cache-control"], "private, max-age=0");

    // From the switch on: the next secret signs, for a whole ttl, and nothing cached before is
    // handed out again.
    clock.set(at);
    let after = get(&gateway.url(&format!("/go/{H}"))).await;
    let policy = verify_at(&location(&after), &next, at, Call::Read).expect("valid with next");
    assert_eq!(policy.expiry, 1_800_005_700);
    assert!(verify_at(&location(&after), &secret(), at, Call::Read).is_err());
    assert_ne!(location(&after), location(&last));
    assert_eq!(after.headers["cache-control"], "private, max-age=2800");
}
