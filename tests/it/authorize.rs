//! Who may get a signature, over real sockets: `authorize_url` asked before signing (proxy,
//! redirect, upload-policy), its decisions cached per user and file, and failing closed; `tasks`
//! refusing what writes or names other files; every URL signed with only the calls it needs.

use crate::support;

use std::sync::{Arc, Mutex};

use http::request::Parts;
use http::{Method, StatusCode};
use signgate::clock::ManualClock;
use signgate::policy::DecodedPolicy;
use support::*;

/// The stand-in authorization service: records every request, allows `session=alice` or
/// `Bearer good`, refuses `session=bob` with 403, and asks anyone else to log in with 401.
struct AuthService {
    addr: std::net::SocketAddr,
    seen: Arc<Mutex<Vec<Parts>>>,
}

impl AuthService {
    async fn start() -> Self {
        let seen: Arc<Mutex<Vec<Parts>>> = Arc::default();
        let log = Arc::clone(&seen);
        let addr = start_origin(Arc::new(move |parts: Parts, _body| {
            let header = |name: &str| {
                parts
                    .headers
                    .get(name)
                    .and_then(|v| v.to_str().ok())
                    .unwrap_or("")
                    .to_owned()
            };
            let (cookie, authorization) = (header("cookie"), header("authorization"));
            log.lock().expect("not poisoned").push(parts);
            if cookie.contains("session=alice") || authorization == "Bearer good" {
                respond(204, &[], "")
            } else if cookie.contains("session=bob") {
                respond(403, &[("content-type", "text/plain")], "not yours\n")
            } else {
                respond(
                    401,
                    &[
                        ("www-authenticate", "Bearer realm=\"files\""),
                        ("content-type", "text/plain"),
                        ("set-cookie", "auth-server=1"),
                        ("x-auth-detail", "internal"),
                    ],
                    "login required\n",
                )
            }
        }))
        .await;
        Self { addr, seen }
    }

    fn url(&self) -> String {
        format!("http://{}/authz", self.addr)
    }

    fn asked(&self) -> usize {
        self.seen.lock().expect("not poisoned").len()
    }

    fn last(&self) -> Parts {
        self.seen
            .lock()
            .expect("not poisoned")
            .last()
            .cloned()
            .expect("asked at least once")
    }
}

async fn cdn() -> TestCdn {
    two_file_cdn().await
}

/// A gateway with one proxy route at `/img/` in front of `cdn`, plus `extra` route keys.
async fn proxy(cdn: &TestCdn, extra: &str) -> TestGateway {
    TestGateway::start(&one_route("proxy", "/img/", &cdn.url(), extra)).await
}

const ALICE: (&str, &str) = ("cookie", "session=alice");
const BOB: (&str, &str) = ("cookie", "session=bob");

/// The decoded policy of a URL's query-style credentials.
fn policy_of(url: &str) -> DecodedPolicy {
    let value = url
        .split_once("policy=")
        .expect("a policy")
        .1
        .split('&')
        .next()
        .expect("value")
        .replace("%3D", "=");
    DecodedPolicy::decode(&value).expect("decodes")
}

#[tokio::test]
async fn a_proxy_route_signs_only_for_the_clients_its_authorize_url_allows() {
    let (cdn, auth) = (cdn().await, AuthService::start().await);
    let extra = format!("authorize_url = \"{}\"", auth.url());
    let gateway = proxy(&cdn, &extra).await;
    let url = gateway.url(&format!("/img/{H}"));

    let alice = send(Method::GET, &url, &[ALICE]).await;
    assert_eq!(alice.status, StatusCode::OK, "{}", alice.text());
    assert_eq!(&alice.body[..], b"0123456789abcdefghij");
    assert_eq!(cdn.received().len(), 1);
    // A shared cache in front must not hand Alice's file to anyone else.
    let cache_control = alice.headers["cache-control"].to_str().expect("ascii");
    assert!(cache_control.starts_with("private") && !cache_control.contains("public"));

    let bob = send(Method::GET, &url, &[BOB]).await;
    assert_eq!(bob.status, StatusCode::FORBIDDEN);
    assert_eq!(bob.text(), "not yours\n");

    let anonymous = get(&url).await;
    assert_eq!(anonymous.status, StatusCode::UNAUTHORIZED);
    assert_eq!(
        anonymous.headers["www-authenticate"],
        "Bearer realm=\"files\""
    );
    assert_eq!(anonymous.headers["content-type"], "text/plain");
    assert_eq!(anonymous.headers["cache-control"], "no-store");
    assert_eq!(anonymous.text(), "login required\n");
    assert!(anonymous.headers.get("set-cookie").is_none());
    assert!(anonymous.headers.get("x-auth-detail").is_none());

    let bearer = send(Method::HEAD, &url, &[("authorization", "Bearer good")]).await;
    assert_eq!(bearer.status, StatusCode::OK);

    assert_eq!(
        auth.asked(),
        4,
        "asked once per request: no authorize_cache"
    );
    assert_eq!(
        cdn.received().len(),
        2,
        "the CDN saw only the allowed requests"
    );
}

#[tokio::test]
async fn the_service_is_told_the_file_and_tasks_and_only_the_clients_credentials() {
    let (cdn, auth) = (cdn().await, AuthService::start().await);
    let extra = format!(
        "authorize_url = \"{}?app=gallery\"\ncalls = [\"read\", \"convert\"]",
        auth.url()
    );
    let gateway = proxy(&cdn, &extra).await;
    let path = format!("/img/resize=width:300/security=p:x,s:y/flip/{H}?dl=true");
    let answer = send(
        Method::GET,
        &gateway.url(&path),
        &[
            ("cookie", "theme=dark"),
            ("cookie", "session=alice"),
            ("authorization", "Basic YTpi"),
            ("x-forwarded-for", "10.9.8.7"),
            ("user-agent", "secret-agent"),
            ("referer", "https://gallery.example/private"),
            ("accept", "image/webp"),
            ("x-custom", "1"),
        ],
    )
    .await;
    assert_eq!(answer.status, StatusCode::OK, "{}", answer.text());
    let asked = auth.last();
    assert_eq!(asked.method, Method::GET);
    assert_eq!(asked.uri.path(), "/authz");
    assert_eq!(
        asked.uri.query(),
        Some(&*format!(
            "app=gallery&handle={H}&tasks=resize%3Dwidth%3A300%2Fflip&route=r"
        ))
    );
    let mut names: Vec<&str> = asked.headers.keys().map(|n| n.as_str()).collect();
    names.sort_unstable();
    assert_eq!(
        names,
        [
            "authorization",
            "cookie",
            "host",
            "x-original-method",
            "x-original-uri"
        ]
    );
    assert_eq!(asked.headers["cookie"], "theme=dark; session=alice");
    assert_eq!(asked.headers["authorization"], "Basic YTpi");
    assert_eq!(asked.headers["x-original-uri"], path);
    assert_eq!(asked.headers["x-original-method"], "GET");
    assert_eq!(asked.headers["host"], auth.addr.to_string());
}

#[tokio::test]
async fn an_unreachable_or_failing_service_fails_closed_with_502() {
    let cdn = cdn().await;
    // A port nothing listens on any more.
    let (listener, closed) = bind().await;
    drop(listener);
    let down = proxy(&cdn, &format!("authorize_url = \"http://{closed}/authz\"")).await;
    let answer = send(Method::GET, &down.url(&format!("/img/{H}")), &[ALICE]).await;
    assert_eq!(answer.status, StatusCode::BAD_GATEWAY);
    assert_eq!(answer.text(), "bad gateway: authorization failed\n");

    // Anything but 2xx, 401 and 403, a redirect to a login page included, is a failure.
    for status in [500, 302, 404] {
        let failing = start_origin(Arc::new(move |_, _| {
            respond(status, &[("location", "/login")], "")
        }))
        .await;
        let gateway = proxy(&cdn, &format!("authorize_url = \"http://{failing}/authz\"")).await;
        let answer = send(Method::GET, &gateway.url(&format!("/img/{H}")), &[ALICE]).await;
        assert_eq!(answer.status, StatusCode::BAD_GATEWAY, "{status}");
        assert!(answer.headers.get("location").is_none());
    }
    assert!(cdn.received().is_empty(), "nothing was signed");
}

#[tokio::test]
async fn a_service_slower_than_authorize_timeout_fails_closed_with_504() {
    let cdn = cdn().await;
    let (listener, slow) = bind().await;
    serve_http(listener, |_request| async {
        std::future::pending::<()>().await;
        respond(204, &[], "")
    });
    let gateway = TestGateway::start(&one_route(
        "redirect",
        "/go/",
        &cdn.url(),
        &format!("authorize_url = \"http://{slow}/authz\"\nauthorize_timeout = \"200ms\""),
    ))
    .await;
    let answer = send(Method::GET, &gateway.url(&format!("/go/{H}")), &[ALICE]).await;
    assert_eq!(answer.status, StatusCode::GATEWAY_TIMEOUT);
    assert!(answer.headers.get("location").is_none());
}

#[tokio::test]
async fn decisions_are_cached_per_user_and_file_and_never_across_users() {
    let (cdn, auth) = (cdn().await, AuthService::start().await);
    let clock = Arc::new(ManualClock::new(1_800_000_000));
    let extra = format!(
        "authorize_url = \"{}\"\nauthorize_cache = \"60s\"",
        auth.url()
    );
    let gateway = TestGateway::start_with_clock(
        &one_route("proxy", "/img/", &cdn.url(), &extra),
        clock.clone(),
    )
    .await;
    let file = gateway.url(&format!("/img/{H}"));
    let other_file = gateway.url(&format!("/img/{H2}"));
    let status = |answer: Answer| answer.status;

    assert_eq!(status(send(Method::GET, &file, &[ALICE]).await), 200);
    assert_eq!(status(send(Method::GET, &file, &[ALICE]).await), 200);
    assert_eq!(
        auth.asked(),
        1,
        "Alice's second request came from the cache"
    );

    assert_eq!(status(send(Method::GET, &other_file, &[ALICE]).await), 200);
    assert_eq!(auth.asked(), 2, "another file is another question");

    // Bob's cookie is asked about, and his refusal is his alone, cached too.
    assert_eq!(status(send(Method::GET, &file, &[BOB]).await), 403);
    assert_eq!(status(send(Method::GET, &file, &[BOB]).await), 403);
    assert_eq!(auth.asked(), 3);
    // Without credentials: a question of its own, never Alice's answer.
    assert_eq!(status(get(&file).await), 401);
    assert_eq!(auth.asked(), 4);
    assert_eq!(status(send(Method::GET, &file, &[ALICE]).await), 200);
    assert_eq!(auth.asked(), 4);

    // A decision lasts no longer than authorize_cache.
    clock.advance(60);
    assert_eq!(status(send(Method::GET, &file, &[ALICE]).await), 200);
    assert_eq!(auth.asked(), 5);
    assert_eq!(
        cdn.received().len(),
        5,
        "only Alice's requests reached the CDN"
    );
}

#[tokio::test]
async fn redirect_and_upload_policy_routes_ask_before_handing_anything_out() {
    let auth = AuthService::start().await;
    let toml = format!(
        "{SIGNING}[[route]]\nname = \"links\"\nprefix = \"/go/\"\nmode = \"redirect\"\n\
         upstream = \"https://cdn.example\"\nauthorize_url = \"{url}\"\n\
         [[route]]\nname = \"upload\"\nprefix = \"/upload-policy\"\nmode = \"upload-policy\"\n\
         authorize_url = \"{url}\"\n",
        url = auth.url()
    );
    let gateway = TestGateway::start(&toml).await;
    let link = gateway.url(&format!("/go/{H}"));

    let refused = get(&link).await;
    assert_eq!(refused.status, StatusCode::UNAUTHORIZED);
    assert!(refused.headers.get("location").is_none());
    let allowed = send(Method::GET, &link, &[ALICE]).await;
    assert_eq!(allowed.status, StatusCode::TEMPORARY_REDIRECT);
    assert!(
        allowed.headers["location"]
            .to_str()
            .expect("ascii")
            .contains("signature=")
    );
    assert_eq!(
        auth.last().uri.query(),
        Some(&*format!("handle={H}&tasks=&route=links"))
    );

    let upload = gateway.url("/upload-policy");
    let refused = send(Method::GET, &upload, &[BOB]).await;
    assert_eq!(refused.status, StatusCode::FORBIDDEN);
    assert!(!refused.text().contains("signature"));
    let allowed = send(Method::GET, &upload, &[ALICE]).await;
    assert_eq!(allowed.status, StatusCode::OK);
    assert!(allowed.text().contains("\"signature\""));
    assert_eq!(auth.last().uri.query(), Some("route=upload"));
}

#[tokio::test]
async fn tasks_that_write_or_name_other_files_get_403_unless_the_route_lists_them() {
    let cdn = cdn().await;
    let calls = "calls = [\"read\", \"convert\"]";
    let default = proxy(&cdn, calls).await;
    for tasks in [
        "store",
        "store=location:s3",
        "resize=width:30/collage=files:[CupXxkCQZ22cS5FdMSaB],width:90,height:90",
        "watermark=file:CupXxkCQZ22cS5FdMSaB",
        "zip",
        "urlscreenshot",
        "fallback=handle:CupXxkCQZ22cS5FdMSaB",
    ] {
        let answer = get(&default.url(&format!("/img/{tasks}/{H}"))).await;
        assert_eq!(answer.status, StatusCode::FORBIDDEN, "{tasks}");
        assert_eq!(
            answer.text(),
            "forbidden: this route does not allow that task\n"
        );
    }
    assert!(cdn.received().is_empty(), "nothing refused reached the CDN");
    let resized = get(&default.url(&format!("/img/resize=width:3/flip/{H}"))).await;
    assert_eq!(resized.status, StatusCode::OK, "{}", resized.text());

    let listed = proxy(&cdn, &format!("{calls}\ntasks = [\"resize\", \"store\"]")).await;
    let stored = get(&listed.url(&format!("/img/store=location:s3/{H}"))).await;
    assert_eq!(stored.status, StatusCode::OK, "{}", stored.text());
    let flipped = get(&listed.url(&format!("/img/flip/{H}"))).await;
    assert_eq!(
        flipped.status,
        StatusCode::FORBIDDEN,
        "flip is not listed here"
    );

    let redirect = TestGateway::start(&one_route("redirect", "/go/", &cdn.url(), calls)).await;
    let refused = get(&redirect.url(&format!("/go/zip/{H}"))).await;
    assert_eq!(refused.status, StatusCode::FORBIDDEN);
}

#[tokio::test]
async fn every_url_is_signed_with_only_the_calls_it_needs() {
    let cdn = cdn().await;
    let calls = "calls = [\"read\", \"convert\", \"stat\"]";
    let gateway = proxy(&cdn, calls).await;
    assert_eq!(get(&gateway.url(&format!("/img/{H}"))).await.status, 200);
    let resized = get(&gateway.url(&format!("/img/resize=width:3/{H}"))).await;
    assert_eq!(resized.status, StatusCode::OK, "{}", resized.text());
    let received = cdn.received();
    let granted = |i: usize| received[i].policy.as_ref().expect("verified").call.clone();
    assert_eq!(granted(0), Some(vec!["read".to_owned()]));
    assert_eq!(
        granted(1),
        Some(vec!["read".to_owned(), "convert".to_owned()])
    );
    assert_eq!(
        gateway.signer("r").cache().misses(),
        2,
        "one handle, two sets of calls, two entries"
    );

    let redirect = TestGateway::start(&one_route("redirect", "/go/", &cdn.url(), calls)).await;
    let location = |answer: Answer| {
        answer.headers["location"]
            .to_str()
            .expect("ascii")
            .to_owned()
    };
    let bare = location(get(&redirect.url(&format!("/go/{H}"))).await);
    assert_eq!(policy_of(&bare).call, Some(vec!["read".to_owned()]));
    let task = location(get(&redirect.url(&format!("/go/resize=width:3/{H}"))).await);
    assert_eq!(
        policy_of(&task).call,
        Some(vec!["read".to_owned(), "convert".to_owned()])
    );
}
