//! The admin listener over real sockets: metrics after known traffic, read with a real
//! Prometheus text parser; `/healthz`; `/readyz` turning 503 while the gateway drains; the
//! status page; what it refuses; the config and the binary turning it on.

use crate::support;

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http::{Method, StatusCode};
use http_body_util::BodyExt;
use prometheus_parse::{Scrape, Value};
use support::process::http_get;
use support::*;

/// `[admin]` on a free port.
const ADMIN: &str = "[admin]\nlisten = \"127.0.0.1:0\"\n";

/// A proxy route `name` on `prefix` in front of `upstream`.
fn proxy_route(name: &str, prefix: &str, upstream: &str) -> String {
    format!(
        "[[route]]\nname = \"{name}\"\nprefix = \"{prefix}\"\nmode = \"proxy\"\nupstream = \"{upstream}\"\n"
    )
}

/// An upstream that answers every request 403, as a CDN refusing a signature does.
async fn refusing_cdn() -> std::net::SocketAddr {
    start_origin(Arc::new(|_, _| {
        respond(
            403,
            &[("content-type", "text/plain")],
            "policy error: proper credentials were not provided",
        )
    }))
    .await
}

/// An address nothing listens on: connections to it are refused.
async fn closed_port() -> std::net::SocketAddr {
    let (listener, addr) = bind().await;
    drop(listener);
    addr
}

/// `/metrics`, parsed.
async fn scrape(gateway: &TestGateway) -> (Scrape, String) {
    let answer = get(&gateway.admin_url("/metrics")).await;
    assert_eq!(answer.status, StatusCode::OK);
    assert_eq!(
        answer.headers["content-type"],
        "text/plain; version=0.0.4; charset=utf-8"
    );
    let text = answer.text();
    let scrape = Scrape::parse(text.lines().map(|line| Ok(line.to_owned())))
        .expect("Prometheus text format");
    (scrape, text)
}

/// The value of sample `name` whose labels include `labels` (a counter, a gauge, or a
/// histogram's count); panics when there is none or more than one.
pub(crate) fn value(scrape: &Scrape, name: &str, labels: &[(&str, &str)]) -> f64 {
    let found: Vec<f64> = scrape
        .samples
        .iter()
        .filter(|s| s.metric == name)
        .filter(|s| labels.iter().all(|(k, v)| s.labels.get(k) == Some(*v)))
        .map(|s| match &s.value {
            Value::Counter(v) | Value::Gauge(v) | Value::Untyped(v) => *v,
            Value::Histogram(buckets) => buckets.last().map_or(0.0, |b| b.count),
            Value::Summary(_) => panic!("no summaries here"),
        })
        .collect();
    assert_eq!(found.len(), 1, "{name} {labels:?}: {found:?}");
    found[0]
}

/// Scrapes until the gateway has counted `requests` requests in all (each is counted as its
/// answer's body is dropped, just after the client has read it), within 5 s.
pub(crate) async fn scrape_after(gateway: &TestGateway, requests: f64) -> (Scrape, String) {
    tokio::time::timeout(Duration::from_secs(5), async {
        loop {
            let (scrape, text) = scrape(gateway).await;
            let counted: f64 = scrape
                .samples
                .iter()
                .filter(|s| s.metric == "signgate_requests_total")
                .map(|s| match s.value {
                    Value::Counter(v) => v,
                    _ => 0.0,
                })
                .sum();
            if counted >= requests {
                return (scrape, text);
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    })
    .await
    .expect("every request counted within 5 s")
}

#[tokio::test]
async fn metrics_count_known_traffic_exactly_and_never_name_a_path_or_handle() {
    let cdn = two_file_cdn().await;
    let refusing = refusing_cdn().await;
    let down = closed_port().await;
    let toml = format!(
        "{ADMIN}{SIGNING}ttl = \"1h\"\nbucket = \"5m\"\n{}{}{}",
        proxy_route("images", "/img/", &cdn.url()),
        proxy_route("refused", "/refused/", &format!("http://{refusing}")),
        proxy_route("down", "/down/", &format!("http://{down}")),
    );
    let gateway = TestGateway::start(&toml).await;

    for _ in 0..3 {
        let answer = get(&gateway.url(&format!("/img/{H}"))).await;
        assert_eq!(answer.status, StatusCode::OK);
        assert_eq!(answer.body.len(), 20);
    }
    assert_eq!(
        get(&gateway.url("/nowhere")).await.status,
        StatusCode::NOT_FOUND
    );
    assert_eq!(
        get(&gateway.url(&format!("/refused/{H2}"))).await.status,
        StatusCode::FORBIDDEN
    );
    assert_eq!(
        get(&gateway.url(&format!("/down/{H}"))).await.status,
        StatusCode::BAD_GATEWAY
    );

    let (scrape, text) = scrape_after(&gateway, 6.0).await;
    let requests = |route, mode, class| {
        value(
            &scrape,
            "signgate_requests_total",
            &[("route", route), ("mode", mode), ("status_class", class)],
        )
    };
    assert_eq!(requests("images", "proxy", "2xx"), 3.0);
    assert_eq!(requests("images", "proxy", "4xx"), 0.0);
    assert_eq!(requests("-", "-", "4xx"), 1.0);
    assert_eq!(requests("refused", "proxy", "4xx"), 1.0);
    assert_eq!(requests("down", "proxy", "5xx"), 1.0);
    let route = |name| [("route", name)];
    assert_eq!(
        value(&scrape, "signgate_response_bytes_total", &route("images")),
        60.0
    );
    assert_eq!(
        value(
            &scrape,
            "signgate_request_duration_seconds_count",
            &route("images")
        ),
        3.0
    );
    assert_eq!(
        value(&scrape, "signgate_upstream_403_total", &route("refused")),
        1.0
    );
    assert_eq!(
        value(&scrape, "signgate_upstream_403_total", &route("images")),
        0.0
    );
    let upstream_errors = |route, kind| {
        value(
            &scrape,
            "signgate_upstream_errors_total",
            &[("route", route), ("kind", kind)],
        )
    };
    assert_eq!(upstream_errors("down", "refused"), 1.0);
    for kind in ["timeout", "tls", "busy", "other"] {
        assert_eq!(upstream_errors("down", kind), 0.0, "{kind}");
    }
    // A 403 answered is not an error reaching the upstream.
    assert_eq!(upstream_errors("refused", "other"), 0.0);
    // One handle signed once, then reused twice, on each worker's cache of the route.
    let cache = |what, name| {
        value(
            &scrape,
            &format!("signgate_signature_cache_{what}"),
            &route(name),
        )
    };
    assert_eq!(cache("hits_total", "images"), 2.0);
    assert_eq!(cache("misses_total", "images"), 1.0);
    assert_eq!(cache("entries", "images"), 1.0);
    assert_eq!(cache("evictions_total", "images"), 0.0);
    assert_eq!(cache("misses_total", "refused"), 1.0);
    assert_eq!(
        value(
            &scrape,
            "signgate_credentials_minted_total",
            &route("images")
        ),
        1.0
    );
    // Every URL handed out is valid for at least ttl and at most ttl + bucket.
    assert_eq!(
        value(
            &scrape,
            "signgate_url_validity_seconds_count",
            &route("images")
        ),
        3.0
    );
    let validity_sum = value(
        &scrape,
        "signgate_url_validity_seconds_sum",
        &route("images"),
    );
    assert!(
        (3.0 * 3600.0..=3.0 * 3900.0).contains(&validity_sum),
        "{validity_sum}"
    );
    for outcome in ["success", "failure"] {
        assert_eq!(
            value(
                &scrape,
                "signgate_config_reloads_total",
                &[("outcome", outcome)]
            ),
            0.0
        );
    }
    assert!(value(&scrape, "signgate_open_connections", &[]) >= 0.0);
    // Labels are route names and fixed words: never a path, a handle or a credential.
    for secret_or_path in [H, H2, "/img/", "/nowhere", "policy", SECRET] {
        assert!(
            !text.contains(secret_or_path),
            "{secret_or_path} in\n{text}"
        );
    }
}

/// Reads `/readyz` until it answers `status`, within 5 s.
async fn readyz_becomes(gateway: &TestGateway, status: StatusCode) -> Answer {
    tokio::time::timeout(Duration::from_secs(5), async {
        loop {
            let answer = get(&gateway.admin_url("/readyz")).await;
            if answer.status == status {
                return answer;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    })
    .await
    .unwrap_or_else(|_| panic!("/readyz never answered {status}"))
}

#[tokio::test]
async fn readyz_turns_503_while_the_gateway_drains_and_healthz_stays_200() {
    let gate = Gate::new();
    let body = FileBody::Gated {
        first: Bytes::from_static(b"first chunk;"),
        second: Bytes::from_static(b"second chunk"),
        gate: Arc::clone(&gate),
    };
    let cdn = TestCdn::builder().body(H, body).start().await;
    let toml = format!(
        "[server]\nshutdown_grace = \"30s\"\n{ADMIN}{SIGNING}{}",
        proxy_route("images", "/img/", &cdn.url())
    );
    let mut gateway = TestGateway::start(&toml).await;
    let health = get(&gateway.admin_url("/healthz")).await;
    assert_eq!(
        (health.status, health.text().as_str()),
        (StatusCode::OK, "ok\n")
    );
    readyz_becomes(&gateway, StatusCode::OK).await;

    tokio::time::timeout(Duration::from_secs(10), async {
        // A slow download keeps the drain going until the gate opens.
        let response = client()
            .request(get_request(&gateway.url(&format!("/img/{H}"))))
            .await
            .expect("answer");
        assert_eq!(response.status(), StatusCode::OK);
        let mut download = response.into_body();
        let first = download.frame().await.expect("a frame").expect("data");
        assert_eq!(first.into_data().expect("data"), "first chunk;");

        let served = gateway.begin_shutdown();
        let draining = readyz_becomes(&gateway, StatusCode::SERVICE_UNAVAILABLE).await;
        assert_eq!(draining.text(), "draining\n");
        assert_eq!(
            get(&gateway.admin_url("/healthz")).await.status,
            StatusCode::OK
        );
        assert!(!served.is_finished(), "the download keeps the drain going");

        gate.open();
        let rest = download.collect().await.expect("the rest").to_bytes();
        assert_eq!(rest, "second chunk");
        served.await.expect("serve did not panic").expect("drained");
        // Drained, not restarted: still not ready.
        assert_eq!(
            get(&gateway.admin_url("/readyz")).await.status,
            StatusCode::SERVICE_UNAVAILABLE
        );
    })
    .await
    .expect("within 10 s");
}

#[tokio::test]
async fn the_status_page_shows_routes_uptime_rates_and_validity() {
    let cdn = two_file_cdn().await;
    let toml = format!(
        "{ADMIN}{SIGNING}{}[[route]]\nname = \"upload\"\nprefix = \"/upload-policy\"\nmode = \"upload-policy\"\n",
        proxy_route("images", "/img/", &cdn.url()),
    );
    let gateway = TestGateway::start(&toml).await;
    assert_eq!(
        get(&gateway.url(&format!("/img/{H}"))).await.status,
        StatusCode::OK
    );
    let page = get(&gateway.admin_url("/")).await;
    assert_eq!(page.status, StatusCode::OK);
    assert_eq!(page.headers["content-type"], "text/html; charset=utf-8");
    let html = page.text();
    for expected in [
        "<td>images</td><td>proxy</td><td><code>/img/</code></td>",
        "<td>upload</td><td>upload-policy</td><td><code>/upload-policy</code></td>",
        "uptime",
        "request rate",
        "signature cache hit ratio",
        "<th>last reload</th><td>never</td>",
        "valid for",
        "1h",
    ] {
        assert!(html.contains(expected), "{expected} not in\n{html}");
    }
    assert!(!html.contains(H), "no handle on the page");
}

#[tokio::test]
async fn the_admin_listener_serves_get_on_its_four_paths_only() {
    let cdn = two_file_cdn().await;
    let toml = format!(
        "{ADMIN}{SIGNING}{}",
        proxy_route("images", "/img/", &cdn.url())
    );
    let gateway = TestGateway::start(&toml).await;
    for path in ["/nope", "/metrics/x", "/img/KW9EJhYtS6y48Whm2S6D"] {
        assert_eq!(
            get(&gateway.admin_url(path)).await.status,
            StatusCode::NOT_FOUND,
            "{path}"
        );
    }
    for method in [Method::POST, Method::PUT, Method::DELETE] {
        let answer = send(method.clone(), &gateway.admin_url("/metrics"), &[]).await;
        assert_eq!(answer.status, StatusCode::METHOD_NOT_ALLOWED, "{method}");
        assert_eq!(answer.headers["allow"], "GET, HEAD");
    }
    let head = send(Method::HEAD, &gateway.admin_url("/healthz"), &[]).await;
    assert_eq!(head.status, StatusCode::OK);
    // The traffic listener does not answer the admin paths: they go to routing as any path.
    assert_eq!(
        get(&gateway.url("/healthz")).await.status,
        StatusCode::NOT_FOUND
    );
}

#[tokio::test]
async fn the_demo_turns_the_admin_listener_on() {
    let demo = signgate::demo::Demo::start("127.0.0.1:0".parse().expect("addr"))
        .await
        .expect("demo starts");
    let (gateway, admin) = (demo.gateway, demo.admin);
    assert_ne!(gateway, admin);
    tokio::spawn(demo.serve(std::future::pending()));
    assert_eq!(
        get(&format!("http://{gateway}/")).await.status,
        StatusCode::OK
    );
    assert_eq!(
        get(&format!("http://{admin}/healthz")).await.status,
        StatusCode::OK
    );
    let metrics = get(&format!("http://{admin}/metrics")).await.text();
    assert!(
        metrics
            .contains("signgate_requests_total{route=\"site\",mode=\"site\",status_class=\"2xx\"}"),
        "{metrics}"
    );
}

#[test]
fn the_admin_table_is_checked_by_name() {
    let route = "[[route]]\nname = \"u\"\nprefix = \"/u\"\nmode = \"upload-policy\"\n";
    let parse = |admin: &str| {
        signgate::config::Config::from_toml_str(
            &format!("[server]\nlisten = \"127.0.0.1:8080\"\n{admin}{SIGNING}{route}"),
            |_| Some(SECRET.into()),
        )
    };
    let on = parse("[admin]\nlisten = \"127.0.0.1:9090\"\n").expect("valid");
    assert_eq!(
        on.admin.expect("on").listen,
        "127.0.0.1:9090".parse().expect("addr")
    );
    assert!(parse("").expect("valid").admin.is_none(), "off by default");
    for (admin, words) in [
        ("[admin]\nlisten = \"nine\"\n", ["admin.listen", "\"nine\""]),
        (
            "[admin]\nlisten = \"127.0.0.1:8080\"\n",
            ["admin.listen", "server.listen"],
        ),
        ("[admin]\nport = 9090\n", ["port", "listen"]),
    ] {
        let error = parse(admin).expect_err(admin).to_string();
        for word in words {
            assert!(error.contains(word), "{word} not in {error}");
        }
    }
}

#[test]
fn signgate_run_serves_the_admin_listener_until_sigterm() {
    use std::io::Write as _;
    let mut config = tempfile::NamedTempFile::new().expect("temp file");
    write!(
        config,
        "[server]\nlisten = \"127.0.0.1:0\"\nworkers = 2\n{ADMIN}[signing]\nsecret_env = \"SIGNGATE_TEST_SECRET\"\n\
         [[route]]\nname = \"upload\"\nprefix = \"/upload-policy\"\nmode = \"upload-policy\"\n"
    )
    .expect("write");
    let check = std::process::Command::new(env!("CARGO_BIN_EXE_signgate"))
        .args(["check", "--config"])
        .arg(config.path())
        .output()
        .expect("check runs");
    assert!(check.status.success(), "{check:?}");

    let mut child = std::process::Command::new(env!("CARGO_BIN_EXE_signgate"))
        .args(["run", "--config"])
        .arg(config.path())
        .env("SIGNGATE_TEST_SECRET", SECRET)
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::null())
        .spawn()
        .expect("starts");
    let [_traffic, admin] = printed_addresses(child.stdout.take().expect("stdout"));
    let get_admin = |path: &str| http_get(&admin, path);
    assert!(get_admin("/healthz").starts_with("HTTP/1.1 200"));
    let deadline = std::time::Instant::now() + Duration::from_secs(5);
    while !get_admin("/readyz").starts_with("HTTP/1.1 200") {
        assert!(
            std::time::Instant::now() < deadline,
            "both workers accept within 5 s"
        );
        std::thread::sleep(Duration::from_millis(10));
    }
    assert!(get_admin("/metrics").contains("signgate_open_connections"));
    let killed = std::process::Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .expect("kill runs");
    assert!(killed.success());
    let status = child.wait().expect("exits");
    assert_eq!(status.code(), Some(0));
    assert!(
        std::net::TcpStream::connect(&admin).is_err(),
        "the admin listener stopped with it"
    );
}

#[tokio::test(flavor = "current_thread")]
async fn an_upstream_clock_minutes_ahead_shows_in_the_skew_gauge_and_a_warning() {
    let (captured, _guard) = CapturedLog::this_thread();
    let ahead = httpdate::fmt_http_date(std::time::SystemTime::now() + Duration::from_secs(300));
    let cdn = start_origin(Arc::new(move |_, _| {
        respond(
            200,
            &[("content-type", "image/png"), ("date", &ahead)],
            "png",
        )
    }))
    .await;
    let config = format!(
        "{SIGNING}{ADMIN}{}",
        proxy_route("r", "/img/", &format!("http://{cdn}"))
    );
    let gateway = TestGateway::start(&config).await;
    assert_eq!(get(&gateway.url(&format!("/img/{H}"))).await.status, 200);
    let (scrape, _) = scrape_after(&gateway, 1.0).await;
    let skew = value(
        &scrape,
        "signgate_upstream_clock_skew_seconds",
        &[("route", "r")],
    );
    assert!((298.0..=301.0).contains(&skew), "skew {skew}");
    let log = captured.text();
    assert!(
        log.contains("WARN") && log.contains("clock is off") && log.contains("route=r"),
        "{log}"
    );
}

#[tokio::test]
async fn metrics_show_the_seconds_to_a_secret_switch_and_which_secret_signs() {
    let next_file = tempfile::NamedTempFile::new().expect("temp file");
    std::fs::write(next_file.path(), "n3xt-secret").expect("write");
    let at = 1_800_002_000; // 2027-01-15T08:33:20Z
    let clock = Arc::new(signgate::clock::ManualClock::new(at - 90));
    let config = format!(
        "{SIGNING}secret_next_file = \"{}\"\nswitch_at = \"2027-01-15T08:33:20Z\"\n{ADMIN}\
         [[route]]\nname = \"go\"\nprefix = \"/go/\"\nmode = \"redirect\"\n\
         upstream = \"https://cdn.example\"\n",
        next_file.path().display()
    );
    let gateway = TestGateway::start_with_clock(&config, clock.clone()).await;
    let in_use = |scrape: &Scrape, secret: &str| {
        value(
            scrape,
            "signgate_secret_in_use",
            &[("route", "go"), ("secret", secret)],
        )
    };
    let (before, _) = scrape(&gateway).await;
    assert_eq!(
        value(
            &before,
            "signgate_secret_switch_seconds",
            &[("route", "go")]
        ),
        90.0
    );
    assert_eq!(
        (in_use(&before, "current"), in_use(&before, "next")),
        (1.0, 0.0)
    );
    clock.set(at + 10);
    let (after, _) = scrape(&gateway).await;
    assert_eq!(
        value(&after, "signgate_secret_switch_seconds", &[("route", "go")]),
        -10.0
    );
    assert_eq!(
        (in_use(&after, "current"), in_use(&after, "next")),
        (0.0, 1.0)
    );
}
