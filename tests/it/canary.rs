//! The CDN canary, on the real binary over real sockets: the stand-in CDN switches its secret
//! mid-test and the canary reports it within an interval (log, metrics, and `/readyz` when it
//! gates readiness) until the secrets agree again, from either side; a failing or unreachable
//! CDN is counted apart from a refusal; a CDN refusing `HEAD` gets a ranged `GET`; a reload
//! moves the canary to the new config and stops it for a route that lost it.
//!
//! Waits are bounded (a deadline far above the 1s interval), never a timed assertion on speed.

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use http::Method;

use crate::support::process::{GatewayProcess, http_get};
use crate::support::{H, H2, SECRET, TestCdn, TestCdnBuilder, respond, start_origin};

/// `[server]` and `[admin]` of every gateway here: one worker, ports of their own.
const SERVER: &str =
    "[server]\nlisten = \"127.0.0.1:0\"\nworkers = 1\n[admin]\nlisten = \"127.0.0.1:0\"\n";

/// The secret the CDN switches to.
const NEW_SECRET: &str = "the-secret-set-on-the-cdn-dashboard-42";

/// How long a change may take to show: many intervals of 1s.
const DEADLINE: Duration = Duration::from_secs(15);

/// A runtime for the stand-in CDN and origins, serving from its own thread while the test
/// drives the gateway process synchronously.
fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .expect("runtime")
}

fn start_cdn(runtime: &tokio::runtime::Runtime, builder: TestCdnBuilder) -> TestCdn {
    runtime.block_on(
        builder
            .file(H, &b"canary file"[..])
            .file(H2, &b"other file"[..])
            .start(),
    )
}

/// A route `name` of `mode` on `/{name}/` in front of `upstream`, with `extra` keys.
fn route(name: &str, mode: &str, upstream: &str, extra: &str) -> String {
    format!(
        "[[route]]\nname = \"{name}\"\nprefix = \"/{name}/\"\nmode = \"{mode}\"\n\
         upstream = \"{upstream}\"\n{extra}\n"
    )
}

/// `canary_handle` `handle`, checked every second; `gates` sets `canary_gates_readiness`.
fn canary(handle: &str, gates: bool) -> String {
    format!(
        "canary_handle = \"{handle}\"\ncanary_interval = \"1s\"\ncanary_gates_readiness = {gates}\n"
    )
}

/// The value of `series` on `/metrics`, if it is there.
fn metric(gateway: &GatewayProcess, series: &str) -> Option<f64> {
    let text = http_get(&gateway.admin, "/metrics");
    text.lines().find_map(|line| {
        let (name, value) = line.rsplit_once(' ')?;
        (name == series).then(|| value.parse().expect("a number"))
    })
}

fn checks(gateway: &GatewayProcess, route: &str, outcome: &str) -> f64 {
    metric(
        gateway,
        &format!("signgate_canary_checks_total{{route=\"{route}\",outcome=\"{outcome}\"}}"),
    )
    .unwrap_or_else(|| panic!("no {outcome} count for route {route}"))
}

fn canary_ok(gateway: &GatewayProcess, route: &str) -> Option<f64> {
    metric(gateway, &format!("signgate_canary_ok{{route=\"{route}\"}}"))
}

/// Waits until `done` holds, failing with `what` and the gateway's log after [`DEADLINE`].
fn wait_until(gateway: &GatewayProcess, what: &str, mut done: impl FnMut() -> bool) {
    let deadline = Instant::now() + DEADLINE;
    while !done() {
        assert!(
            Instant::now() < deadline,
            "not within {DEADLINE:?}: {what}; log:\n{}",
            gateway.log()
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

fn readyz(gateway: &GatewayProcess) -> String {
    http_get(&gateway.admin, "/readyz")
}

/// A secret file holding `secret`, readable by its owner only.
fn write_secret(path: &Path, secret: &str) {
    std::fs::write(path, secret).expect("write");
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600)).expect("chmod");
}

/// The canary's requests the CDN received for `handle` (those with the canary's user agent).
fn canary_requests(cdn: &TestCdn, handle: &str) -> Vec<signgate::demo::cdn::Received> {
    cdn.received()
        .into_iter()
        .filter(|r| {
            r.uri.starts_with(&format!("/{handle}?"))
                && r.headers
                    .get(http::header::USER_AGENT)
                    .is_some_and(|agent| agent.to_str().is_ok_and(|a| a.ends_with(" canary")))
        })
        .collect()
}

/// Neither secret nor any credential ever reaches the log.
fn assert_log_keeps_secrets(gateway: &GatewayProcess) {
    let log = gateway.log();
    for secret in [SECRET, NEW_SECRET, "policy=", "signature="] {
        assert!(!log.contains(secret), "{secret} in the log:\n{log}");
    }
}

#[test]
fn a_secret_changed_on_the_cdn_fails_a_gated_readyz_until_the_gateway_s_secret_file_has_it_too() {
    let runtime = runtime();
    let cdn = start_cdn(&runtime, TestCdn::builder());
    let dir = tempfile::tempdir().expect("temp dir");
    let secret_file: PathBuf = dir.path().join("filestack");
    write_secret(&secret_file, SECRET);
    let gateway = GatewayProcess::start(&format!(
        "{SERVER}[signing]\nsecret_file = {secret_file:?}\n{}",
        route("images", "proxy", &cdn.url(), &canary(H, true))
    ));
    wait_until(&gateway, "the canary passes", || {
        canary_ok(&gateway, "images") == Some(1.0)
    });
    assert!(readyz(&gateway).starts_with("HTTP/1.1 200"));
    // Signed as the route signs: a HEAD whose credentials the CDN verified, bound to the handle.
    let first = canary_requests(&cdn, H);
    assert_eq!(first[0].method, Method::HEAD);
    let policy = first[0]
        .policy
        .as_ref()
        .expect("the CDN verified the credentials");
    assert_eq!(policy.handle.as_deref(), Some(H));

    cdn.set_secret(NEW_SECRET);
    wait_until(&gateway, "/readyz fails naming the route", || {
        let answer = readyz(&gateway);
        answer.starts_with("HTTP/1.1 503") && answer.contains("route `images`")
    });
    assert!(checks(&gateway, "images", "refused") >= 1.0);
    assert_eq!(canary_ok(&gateway, "images"), Some(0.0));
    gateway.wait_for_log("canary: the CDN refuses the route's signature");
    let log = gateway.log();
    let refusal = log
        .lines()
        .find(|line| line.contains("canary: the CDN refuses the route's signature"))
        .unwrap_or_else(|| panic!("no refusal logged:\n{log}"));
    assert!(refusal.contains("ERROR"), "{refusal}");
    assert!(
        refusal.contains("images") && refusal.contains(H),
        "{refusal}"
    );
    let status_page = http_get(&gateway.admin, "/");
    assert!(
        status_page.contains("not ready: the CDN refuses the canary of route images"),
        "{status_page}"
    );
    assert!(status_page.contains("refused (403)"), "{status_page}");

    // The gateway is given the CDN's new secret: the watched file reloads, the canary passes.
    write_secret(&secret_file, NEW_SECRET);
    wait_until(&gateway, "/readyz is 200 again", || {
        readyz(&gateway).starts_with("HTTP/1.1 200")
    });
    assert_eq!(canary_ok(&gateway, "images"), Some(1.0));
    assert!(
        gateway
            .log()
            .contains("canary: the CDN accepts the route's signature again")
    );
    assert_log_keeps_secrets(&gateway);
    assert_eq!(gateway.stop(), Some(0));
}

#[test]
fn an_ungated_canary_on_a_redirect_route_counts_a_refusal_while_readyz_stays_200() {
    let runtime = runtime();
    let cdn = start_cdn(&runtime, TestCdn::builder());
    let gateway = GatewayProcess::start(&format!(
        "{SERVER}[signing]\nsecret_env = \"SECRET\"\n{}",
        route("links", "redirect", &cdn.url(), &canary(H, false))
    ));
    wait_until(&gateway, "the canary passes", || {
        canary_ok(&gateway, "links") == Some(1.0)
    });

    cdn.set_secret(NEW_SECRET);
    wait_until(&gateway, "a refusal is counted", || {
        checks(&gateway, "links", "refused") >= 1.0
    });
    assert_eq!(canary_ok(&gateway, "links"), Some(0.0));
    assert!(readyz(&gateway).starts_with("HTTP/1.1 200"));
    assert!(gateway.log().contains("canary: the CDN refuses"));

    // The CDN's secret is switched back: the next check passes.
    cdn.set_secret(SECRET);
    wait_until(&gateway, "the canary passes again", || {
        canary_ok(&gateway, "links") == Some(1.0)
    });
    assert!(readyz(&gateway).starts_with("HTTP/1.1 200"));
    assert_log_keeps_secrets(&gateway);
}

#[test]
fn a_failing_slow_or_unreachable_cdn_is_counted_apart_from_a_refusal_and_leaves_readyz_alone() {
    let runtime = runtime();
    let failing = runtime.block_on(start_origin(Arc::new(|_, _| respond(503, &[], "busy"))));
    let slow = start_cdn(&runtime, TestCdn::builder().stall_before_headers());
    // A port nothing listens on any more.
    let gone = std::net::TcpListener::bind("127.0.0.1:0")
        .expect("binds")
        .local_addr()
        .expect("address");
    let gateway = GatewayProcess::start(&format!(
        "{SERVER}[signing]\nsecret_env = \"SECRET\"\n{}{}{}",
        route(
            "failing",
            "proxy",
            &format!("http://{failing}"),
            &canary(H, true)
        ),
        route(
            "slow",
            "proxy",
            &slow.url(),
            &format!("{}response_timeout = \"1s\"\n", canary(H, true))
        ),
        route("gone", "proxy", &format!("http://{gone}"), &canary(H, true)),
    ));
    wait_until(&gateway, "each failure counted as what it is", || {
        checks(&gateway, "failing", "http_error") >= 1.0
            && checks(&gateway, "slow", "timeout") >= 1.0
            && checks(&gateway, "gone", "unreachable") >= 1.0
    });
    for route in ["failing", "slow", "gone"] {
        assert_eq!(checks(&gateway, route, "refused"), 0.0, "{route}");
        assert_eq!(checks(&gateway, route, "ok"), 0.0, "{route}");
        assert_eq!(canary_ok(&gateway, route), Some(0.0), "{route}");
    }
    assert!(readyz(&gateway).starts_with("HTTP/1.1 200"));
    for outcome in ["http_error", "timeout", "unreachable"] {
        gateway.wait_for_log(&format!("outcome=\"{outcome}\""));
    }
    let log = gateway.log();
    assert!(!log.contains("canary: the CDN refuses"), "{log}");
    for outcome in ["http_error", "timeout", "unreachable"] {
        assert!(
            log.lines().any(|line| line.contains("WARN")
                && line.contains("this is not a refusal")
                && line.contains(outcome)),
            "no warning with {outcome}:\n{log}"
        );
    }
}

#[test]
fn a_cdn_that_refuses_head_is_checked_with_a_one_byte_ranged_get() {
    let runtime = runtime();
    let cdn = start_cdn(&runtime, TestCdn::builder().refuse_head());
    let gateway = GatewayProcess::start(&format!(
        "{SERVER}[signing]\nsecret_env = \"SECRET\"\n{}",
        route("images", "proxy", &cdn.url(), &canary(H, true))
    ));
    wait_until(&gateway, "the canary passes", || {
        canary_ok(&gateway, "images") == Some(1.0)
    });
    assert_eq!(checks(&gateway, "images", "http_error"), 0.0);
    let gets = canary_requests(&cdn, H);
    assert_eq!(gets[0].method, Method::GET);
    assert_eq!(
        gets[0]
            .headers
            .get(http::header::RANGE)
            .map(|v| v.as_bytes()),
        Some(&b"bytes=0-0"[..])
    );
    assert!(gets[0].policy.is_some(), "{:?}", gets[0].invalid);
    assert!(gateway.log().contains("ranged GET from now on"));
}

#[test]
fn a_reload_moves_the_canary_to_the_new_config_and_stops_it_for_a_route_without_one() {
    let runtime = runtime();
    let cdn = start_cdn(&runtime, TestCdn::builder());
    let config = |extra: &str| {
        format!(
            "{SERVER}[signing]\nsecret_env = \"SECRET\"\n{}",
            route("images", "proxy", &cdn.url(), extra)
        )
    };
    let gateway = GatewayProcess::start(&config(&canary(H, true)));
    wait_until(&gateway, "a check of H", || {
        !canary_requests(&cdn, H).is_empty()
    });

    gateway.rewrite(&config(&canary(H2, true)));
    gateway.signal("-HUP");
    gateway.wait_for_reloads("success", 1.0);
    wait_until(&gateway, "a check of H2", || {
        !canary_requests(&cdn, H2).is_empty()
    });
    assert!(http_get(&gateway.admin, "/").contains(&format!("<code>{H2}</code>")));

    gateway.rewrite(&config(""));
    gateway.signal("-HUP");
    gateway.wait_for_reloads("success", 2.0);
    wait_until(&gateway, "the canary's gauges go", || {
        canary_ok(&gateway, "images").is_none()
    });
    assert!(!http_get(&gateway.admin, "/").contains("CDN canaries"));
    // Its count stays, as a counter should.
    assert!(checks(&gateway, "images", "ok") >= 2.0);
    // Stopped: over three intervals, no check arrives. (Proving an absence takes a wait.)
    let before = canary_requests(&cdn, H).len() + canary_requests(&cdn, H2).len();
    std::thread::sleep(Duration::from_secs(3));
    let after = canary_requests(&cdn, H).len() + canary_requests(&cdn, H2).len();
    assert_eq!(before, after);
}
