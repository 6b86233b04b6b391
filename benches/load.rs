//! End-to-end load: keep-alive GETs of 2 KiB files straight at a stand-in origin, through
//! signgate (one `proxy` route, 1,000 distinct handles, so every request is signed from the
//! credential cache), through nginx `proxy_pass` (the reference; it does no signing) and through
//! nginx with an njs signer (the best existing signing proxy); then signgate and nginx
//! `proxy_pass` in front of a second origin serving 256 KiB files; plus signgate's resident
//! memory with 1,000 idle keep-alive client connections open.
//!
//! Everything runs on 127.0.0.1. The origins, signgate and nginx are pinned to core 1
//! (`taskset -c 1`), wrk to core 0 (2 threads, 64 connections, a Lua script cycling through the
//! 1,000 handles). Each target gets a 2 s warm-up, then a measured run (10 s by default).
//!
//! "nginx + njs signer" is Debian's nginx with its njs module (`libnginx-mod-http-js`) and a
//! script the bench writes next to that nginx's `nginx.conf`: for `GET /img/HANDLE` (a regex
//! location checks the handle, as signgate's route does) a `js_set` variable computes what
//! signgate's proxy route sends upstream, `/HANDLE?policy=P&signature=S` with P the url-safe
//! base64 (padding kept, written `%3D`) of `{"expiry":E,"call":["read"],"handle":"HANDLE"}`, E
//! now + the route's `ttl` rounded up to its `bucket` (signgate's defaults, 1 h and 5 min), and
//! S the hex HMAC-SHA256 of P under the same secret; `proxy_pass` sends it to the same
//! keep-alive upstream as the plain nginx. It signs per request, without a cache, as a typical
//! njs deployment does (signgate reuses credentials for a bucket from its cache). Before
//! measuring, every signing target is checked: the origin echoes the request target it received
//! to a check request (see [`CHECK_AGENT`]), and the bench verifies the policy byte for byte
//! against signgate's own encoding and the signature with the hmac crate.
//!
//! After the table it prints issue 14's targets as ratios of rows of this run, each met or
//! missed: signgate/nginx `proxy_pass` throughput at 2 KiB (≥ 0.85) and at 256 KiB (≥ 1.0),
//! signgate/njs throughput at 2 KiB (≥ 1.5), and signgate's p99 against nginx `proxy_pass`'s at
//! 2 KiB (no worse).
//!
//! Then the cost of the admin listener (issue 13: throughput with it on within 3 % of off): the
//! same signgate without `[admin]` ("off") and with `[admin] listen` on a free loopback port
//! while a scraper on core 0 GETs `/metrics` once a second on one keep-alive connection, as
//! Prometheus would ("on"), alternating off, on, off, on in the same run so that drift shows.
//! It prints the on/off ratios of throughput, p99 and CPU per request, how far the runs of one
//! kind differ among themselves, and whether the throughput ratio is within 3 %. It only
//! reports: a bench never fails on timings.
//!
//! Run:
//! ```text
//! apt-get update && apt-get install -y wrk nginx libnginx-mod-http-js util-linux
//! cargo bench --bench load
//! ```
//! Environment: `LOAD_SECONDS` (measured seconds per target, default 10), `LOAD_CONNECTIONS`
//! (wrk connections, default 64), `LOAD_NJS=0` (skips the nginx + njs row, and the need for
//! `libnginx-mod-http-js`), `LOAD_LARGE=0` (skips the 256 KiB origin and its two rows),
//! `LOAD_MULTI_THREAD=1` (adds a row for signgate served by
//! tokio's multi-thread runtime instead of the per-core `current_thread` workers `signgate run`
//! uses),
//! `LOAD_GATEWAY_ENV_<NAME>=value` (sets `NAME` for the gateway processes only, e.g.
//! `LOAD_GATEWAY_ENV_LD_PRELOAD=/usr/lib/x86_64-linux-gnu/libjemalloc.so.2` to try an allocator).
//! `LOAD_BARE=1` (adds two rows for a minimal hyper proxy that does no signing, on a
//! `current_thread` runtime: `pool` with hyper-util's pooled client as signgate, `direct` with one
//! upstream connection per client connection).
//! `LOAD_ADMIN_ROUNDS` (off/on pairs in the admin comparison, default 2, at least 2).
//! Without `--bench` (as under `cargo test --benches`) it only runs a smoke check: origin and
//! gateway with its admin listener in-process, 10 requests, one check request whose credentials
//! are verified as the bench verifies the njs signer's, a 256 KiB origin, and two scrapes of
//! `/metrics`, no wrk or nginx needed.
//!
//! The gateway here logs nothing (no tracing subscriber), as nginx has `access_log off`.
//!
//! Last recorded: 2026-12-01 00:23 UTC, commit `79e5f9c`, 2-core VM ("Intel(R) Xeon(R)
//! Processor", kernel 6.18), nginx 1.22.1, njs 0.7.9, wrk 4.1.0, `LOAD_ADMIN_ROUNDS=3 cargo
//! bench --bench load` (10 s, 64 connections; CPU/req is the target process's own user + system
//! CPU per request; no other process took a share of either core):
//!
//! | target             | req/s   | p50      | p99      | CPU/req   |
//! |--------------------|---------|----------|----------|-----------|
//! | origin             | 181,239 | 132 µs   | 4.20 ms  | 5.4 µs    |
//! | signgate           |  32,487 | 1.93 ms  | 3.08 ms  | 22.9 µs   |
//! | nginx              |  55,267 | 1.12 ms  | 1.91 ms  | 12.5 µs   |
//! | nginx + njs signer |  27,546 | 2.27 ms  | 3.30 ms  | 28.7 µs   |
//! | signgate, 256 KiB  |   7,896 | 7.95 ms  | 12.15 ms | 94.7 µs   |
//! | nginx, 256 KiB     |   5,148 | 12.28 ms | 15.28 ms | 161.3 µs  |
//!
//! signgate/nginx 0.59 (2 KiB), 1.53 (256 KiB); signgate/njs signer 1.18; p99 1.61× nginx's.
//! Admin on/off throughput 0.991 (by round 0.991, 0.974, 1.008; the off runs differed by 4.3 %
//! among themselves). signgate RSS with 1,000 idle keep-alive connections: 52.6 MiB (20.7 MiB
//! before, 32.6 KiB per connection); the nginx worker: 7.2 MiB. Earlier runs that evening:
//! signgate/nginx 0.37 (the pool closing connections past `upstream_keepalive` at once, since
//! fixed), 0.54 and 0.57; admin on/off 0.994, 1.015 and 0.976. Run-to-run noise on this VM is
//! about ±5 %.

use std::io::Write;
use std::net::SocketAddr;
use std::path::Path;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::{Duration, Instant};

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use bytes::Bytes;
use hmac::{Hmac, KeyInit, Mac};
use http::{Request, Response, StatusCode, header};
use http_body_util::{BodyExt, Empty, Full};
use hyper::body::Incoming;
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper_util::client::legacy::Client;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use sha2::Sha256;
use signgate::admin::{self, Admin, AdminListener};
use signgate::clock::{Clock, SystemClock};
use signgate::config::Config;
use signgate::health::Health;
use signgate::metrics::Metrics;
use signgate::policy::{Call, Policy, PolicyLimits, bucketed_expiry};
use signgate::server::{AppState, serve};
use signgate::workers::Workers;

/// The allocator `signgate run` uses, so the gateway role measures the same program.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

mod support;
use support::{
    DEADLINE_ENV, ROLE_ENV, Spawned, WrkResult, announce, bench_main, clock_ticks_per_second,
    command_output, cpu_ticks, env_u64, exit_with_parent, free_port, machine_line, patterned_body,
    require_tools, run_wrk, serve_http1_forever, spawn_process, start_nginx, stat_fields,
    status_kib, wrk_script,
};

/// Gateway role: `workers` (what `signgate run` uses: a `current_thread` runtime per core on
/// `SO_REUSEPORT` listeners) or `multi_thread` (tokio's multi-thread runtime, for comparison).
const RUNTIME_ENV: &str = "SIGNGATE_LOAD_RUNTIME";
/// Bare role: `pool` (hyper-util pooled client) or `direct` (one upstream connection per client
/// connection).
const BARE_ENV: &str = "SIGNGATE_LOAD_BARE";
/// Gateway role (`workers`): `1` adds `[admin] listen` on a free loopback port.
const ADMIN_ENV: &str = "SIGNGATE_LOAD_ADMIN";
/// Scraper role: the admin listener's port.
const SCRAPE_PORT_ENV: &str = "SIGNGATE_LOAD_SCRAPE_PORT";
/// Scraper role: the file it appends one line per scrape to.
const SCRAPE_OUT_ENV: &str = "SIGNGATE_LOAD_SCRAPE_OUT";
/// Gateway and bare roles: the origin's URL.
const UPSTREAM_ENV: &str = "SIGNGATE_LOAD_UPSTREAM";
/// The environment variable the gateway's config names in `secret_env`.
const SECRET_ENV: &str = "SIGNGATE_LOAD_SECRET";
const SECRET: &str = "load-bench-secret-not-a-real-one-0123456789";
/// Origin role: the size of the bodies it serves, in bytes ([`BODY_LEN`] when unset).
const BODY_BYTES_ENV: &str = "SIGNGATE_LOAD_BODY_BYTES";
/// The `User-Agent` of the checks before measuring: the origin answers it with the request
/// target it received in [`TARGET_ECHO`]. signgate forwards only an allowlist of client headers,
/// `User-Agent` among them; wrk sends none, so measured requests never pay for the echo.
const CHECK_AGENT: &str = "signgate-load-check";
/// The origin's answer to [`CHECK_AGENT`]: the request target it received.
const TARGET_ECHO: &str = "x-origin-target";

const BODY_LEN: usize = 2048;
const LARGE_BODY_LEN: usize = 256 * 1024;
const HANDLES: usize = 1000;
const IDLE_CONNECTIONS: usize = 1000;
const WARMUP_SECONDS: u64 = 2;
/// How often the scraper GETs `/metrics`: a demanding Prometheus `scrape_interval`.
const SCRAPE_INTERVAL: Duration = Duration::from_secs(1);
/// The cost issue 13 allows the admin listener and its scraping: throughput within 3 %.
const ADMIN_TOLERANCE: f64 = 0.03;
const SERVER_CORE: &str = "1";
const LOAD_CORE: &str = "0";
const INSTALL: &str =
    "apt-get update && apt-get install -y wrk nginx libnginx-mod-http-js util-linux";
/// Debian's njs module for nginx (package `libnginx-mod-http-js`).
const NJS_MODULE: &str = "/usr/lib/nginx/modules/ngx_http_js_module.so";
const NJS_PACKAGE: &str = "libnginx-mod-http-js";

/// Rows issue 14's targets compare.
const SIGNGATE_ROW: &str = "signgate";
const NGINX_ROW: &str = "nginx";
const NJS_ROW: &str = "nginx + njs signer";
const SIGNGATE_LARGE_ROW: &str = "signgate, 256 KiB";
const NGINX_LARGE_ROW: &str = "nginx, 256 KiB";

fn handle(i: usize) -> String {
    format!("h{i:0>19}")
}

fn main() -> ExitCode {
    bench_main("load", run_role, bench, smoke)
}

// ---------------------------------------------------------------------------------------------
// The servers: a lean origin and the gateway, shared by the role processes and the smoke check.

/// Answers every request with 200 and the same `body_len` bytes, keep-alive, until the process
/// ends; a request from [`CHECK_AGENT`] also gets the target it asked for in [`TARGET_ECHO`].
async fn serve_origin(listener: TcpListener, body_len: usize) {
    let body = patterned_body(body_len);
    serve_http1_forever(listener, move |request| {
        let mut response = Response::new(Full::new(body.clone()));
        let headers = response.headers_mut();
        headers.insert(
            header::CONTENT_TYPE,
            http::HeaderValue::from_static("image/png"),
        );
        if request
            .headers()
            .get(header::USER_AGENT)
            .is_some_and(|agent| agent == CHECK_AGENT)
            && let Ok(target) = http::HeaderValue::from_str(&request.uri().to_string())
        {
            headers.insert(TARGET_ECHO, target);
        }
        response
    })
    .await;
}

/// The origin role's body size from [`BODY_BYTES_ENV`]'s value, [`BODY_LEN`] when unset.
fn origin_body_len(value: Option<&str>) -> Result<usize, String> {
    value.map_or(Ok(BODY_LEN), |text| {
        text.parse()
            .ok()
            .filter(|&len| len > 0 && len <= 64 << 20)
            .ok_or_else(|| {
                format!("{BODY_BYTES_ENV} must be a size in bytes up to 64 MiB, got {text:?}")
            })
    })
}

/// The request to send upstream for `request`.
fn forward(
    upstream: SocketAddr,
    request: &Request<Incoming>,
) -> std::io::Result<Request<Empty<Bytes>>> {
    let mut forward = Request::new(Empty::new());
    *forward.uri_mut() = format!("http://{upstream}{}", request.uri().path())
        .parse()
        .map_err(std::io::Error::other)?;
    Ok(forward)
}

/// A minimal hyper proxy that does no signing, for comparison. `pooled`: hyper-util's pooled
/// client, as signgate uses; otherwise each client connection gets its own upstream connection
/// (hyper's `client::conn::http1`), as nginx with upstream keep-alive effectively does.
async fn serve_bare(listener: TcpListener, upstream: SocketAddr, pooled: bool) {
    let client = Client::builder(TokioExecutor::new())
        .pool_timer(TokioTimer::new())
        .build_http::<Empty<Bytes>>();
    loop {
        let (stream, _) = match listener.accept().await {
            Ok(accepted) => accepted,
            Err(_) => {
                tokio::time::sleep(Duration::from_millis(10)).await;
                continue;
            }
        };
        let _ = stream.set_nodelay(true);
        let client = client.clone();
        tokio::spawn(async move {
            if pooled {
                let service = service_fn(move |request: Request<Incoming>| {
                    let client = client.clone();
                    async move {
                        let forward = forward(upstream, &request)?;
                        client.request(forward).await.map_err(std::io::Error::other)
                    }
                });
                let _ = http1::Builder::new()
                    .serve_connection(TokioIo::new(stream), service)
                    .await;
            } else {
                let Ok(up) = TcpStream::connect(upstream).await else {
                    return;
                };
                let _ = up.set_nodelay(true);
                let Ok((sender, connection)) =
                    hyper::client::conn::http1::handshake(TokioIo::new(up)).await
                else {
                    return;
                };
                tokio::spawn(connection);
                // Requests on one HTTP/1.1 connection come one at a time: never contended.
                let sender = Arc::new(tokio::sync::Mutex::new(sender));
                let service = service_fn(move |request: Request<Incoming>| {
                    let sender = Arc::clone(&sender);
                    async move {
                        let forward = forward(upstream, &request)?;
                        let mut sender = sender.lock().await;
                        sender.ready().await.map_err(std::io::Error::other)?;
                        sender
                            .send_request(forward)
                            .await
                            .map_err(std::io::Error::other)
                    }
                });
                let _ = http1::Builder::new()
                    .serve_connection(TokioIo::new(stream), service)
                    .await;
            }
        });
    }
}

/// One `proxy` route in front of `upstream`; with `admin`, `[admin] listen` on a free port.
fn gateway_config(upstream: &str, admin: bool) -> Config {
    let admin = if admin {
        "[admin]\nlisten = \"127.0.0.1:0\"\n"
    } else {
        ""
    };
    let toml = format!(
        "[server]\nlisten = \"127.0.0.1:0\"\n{admin}\
         [signing]\nsecret_env = \"{SECRET_ENV}\"\n\
         [[route]]\nname = \"img\"\nprefix = \"/img/\"\nmode = \"proxy\"\nupstream = \"{upstream}\"\n"
    );
    Config::from_toml_str(&toml, |name| {
        (name == SECRET_ENV).then(|| SECRET.to_owned())
    })
    .expect("bench config is valid")
}

fn gateway_state(upstream: &str) -> Arc<AppState> {
    let config = gateway_config(upstream, false);
    Arc::new(AppState::new(&config, Arc::new(SystemClock)).expect("gateway state builds"))
}

// ---------------------------------------------------------------------------------------------
// Role processes (re-executed under `taskset -c 1`).

fn run_role(role: &str) -> ExitCode {
    let deadline = std::env::var(DEADLINE_ENV)
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(600);
    exit_with_parent(role, deadline);

    let multi_thread = std::env::var(RUNTIME_ENV).is_ok_and(|flavor| flavor == "multi_thread");
    if role == "gateway" && !multi_thread {
        let upstream = std::env::var(UPSTREAM_ENV).expect("upstream URL in the env");
        let admin = std::env::var(ADMIN_ENV).is_ok_and(|v| v == "1");
        run_workers(&gateway_config(&upstream, admin));
    }
    if role == "scraper" {
        let port = std::env::var(SCRAPE_PORT_ENV)
            .ok()
            .and_then(|p| p.parse().ok())
            .expect("admin port in the env");
        let out = std::env::var_os(SCRAPE_OUT_ENV).expect("scrape log path in the env");
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("tokio runtime")
            .block_on(scrape_forever(port, Path::new(&out)));
    }
    let current_thread = role != "gateway" || !multi_thread;
    let runtime = if current_thread {
        tokio::runtime::Builder::new_current_thread()
    } else {
        tokio::runtime::Builder::new_multi_thread()
    }
    .enable_all()
    .build()
    .expect("tokio runtime");

    runtime.block_on(async {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let port = listener.local_addr().expect("local addr").port();
        match role {
            "origin" => {
                let body_len = std::env::var(BODY_BYTES_ENV).ok();
                let body_len =
                    origin_body_len(body_len.as_deref()).unwrap_or_else(|e| panic!("{e}"));
                announce(&[port]);
                serve_origin(listener, body_len).await;
            }
            "gateway" => {
                let upstream = std::env::var(UPSTREAM_ENV).expect("upstream URL in the env");
                let state = gateway_state(&upstream);
                announce(&[port]);
                serve(listener, state, std::future::pending())
                    .await
                    .expect("serve");
            }
            "bare" => {
                let upstream = std::env::var(UPSTREAM_ENV).expect("upstream URL in the env");
                let upstream: SocketAddr = upstream
                    .trim_start_matches("http://")
                    .parse()
                    .expect("upstream address");
                let pooled = std::env::var(BARE_ENV).is_ok_and(|kind| kind == "pool");
                announce(&[port]);
                serve_bare(listener, upstream, pooled).await;
            }
            other => panic!("unknown {ROLE_ENV} {other:?}"),
        }
    });
    ExitCode::SUCCESS
}

/// Serves `config` as `signgate run` does: one `current_thread` worker per core this process
/// may use, all counting into one registry, and with `[admin] listen` the admin listener on a
/// thread of its own, reading that registry. Announces the traffic port, then the admin port.
fn run_workers(config: &Config) -> ! {
    let admin_listener = config
        .admin
        .as_ref()
        .map(|admin| AdminListener::bind(admin.listen).expect("bind the admin listener"));
    let workers = Workers::bind(config.server.listen, config.server.workers.get()).expect("bind");
    let mut ports = vec![workers.addr.port()];
    let clock: Arc<dyn Clock> = Arc::new(SystemClock);
    let metrics = Arc::new(Metrics::new(config));
    let running = workers
        .start(config, Arc::clone(&clock), Arc::clone(&metrics))
        .expect("workers start");
    // Held, never stopped: the process ends when the bench closes its stdin.
    let _admin = admin_listener.map(|listener| {
        ports.push(listener.addr.port());
        let admin = Admin::new(config, metrics, Arc::clone(running.health()), clock);
        listener
            .start(Arc::new(admin))
            .expect("admin listener starts")
    });
    announce(&ports);
    loop {
        std::thread::park();
    }
}

/// GETs `/metrics` from the admin listener on `port` every [`SCRAPE_INTERVAL`] on one
/// keep-alive connection, as Prometheus does, appending `ok <µs> <bytes>` or `failed <why>`
/// to `out` per scrape. Announces itself after the first scrape succeeds.
async fn scrape_forever(port: u16, out: &Path) -> ! {
    let mut log = std::fs::File::create(out).expect("scrape log");
    let mut ticks = tokio::time::interval(SCRAPE_INTERVAL);
    ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut connection: Option<TcpStream> = None;
    let mut announced = false;
    loop {
        ticks.tick().await;
        let started = Instant::now();
        let outcome = tokio::time::timeout(Duration::from_secs(5), async {
            if connection.is_none() {
                connection = Some(
                    TcpStream::connect(("127.0.0.1", port))
                        .await
                        .map_err(|e| e.to_string())?,
                );
            }
            let stream = connection.as_mut().ok_or("no connection")?;
            scrape(stream).await
        })
        .await
        .unwrap_or_else(|_| Err("no answer within 5 s".into()));
        let line = match outcome {
            Ok(bytes) => format!("ok {} {bytes}\n", started.elapsed().as_micros()),
            Err(e) => {
                // Prometheus would open a new connection for its next scrape.
                connection = None;
                if !announced {
                    println!("FAILED {e}");
                    std::process::exit(1);
                }
                format!("failed {e}\n")
            }
        };
        log.write_all(line.as_bytes()).expect("scrape log");
        if !announced {
            announce(&[]);
            announced = true;
        }
    }
}

/// One `GET /metrics` on `stream`: the body's length, when the answer is 200 with a body.
async fn scrape(stream: &mut TcpStream) -> Result<usize, String> {
    match get_on(stream, "/metrics").await? {
        (200, bytes) if bytes > 0 => Ok(bytes),
        (status, bytes) => Err(format!("/metrics answered {status} with {bytes} bytes")),
    }
}

// ---------------------------------------------------------------------------------------------
// Smoke check (no `--bench`): in-process, no external tools.

fn smoke() {
    let started = Instant::now();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("tokio runtime");
    runtime.block_on(async {
        tokio::time::timeout(Duration::from_secs(8), async {
            let origin = TcpListener::bind("127.0.0.1:0").await.expect("bind");
            let origin_addr = origin.local_addr().expect("addr");
            tokio::spawn(serve_origin(origin, BODY_LEN));

            // With the admin listener, as the bench's "admin on" gateway.
            let config = gateway_config(&format!("http://{origin_addr}"), true);
            let clock: Arc<dyn Clock> = Arc::new(SystemClock);
            let metrics = Arc::new(Metrics::new(&config));
            let health = Arc::new(Health::new(1));
            let state = AppState::sharing(
                &config,
                Arc::clone(&clock),
                Arc::clone(&metrics),
                Arc::clone(&health),
            )
            .expect("gateway state builds");
            let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
            let addr = listener.local_addr().expect("addr");
            let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
            let server = tokio::spawn(serve(listener, Arc::new(state), async {
                let _ = stopped.await;
            }));
            let admin_listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
            let admin_addr = admin_listener.local_addr().expect("addr");
            let admin = Arc::new(Admin::new(&config, metrics, health, clock));
            let (stop_admin, admin_stopped) = tokio::sync::oneshot::channel::<()>();
            let admin_server = tokio::spawn(admin::serve(admin_listener, admin, async {
                let _ = admin_stopped.await;
            }));

            let client = Client::builder(TokioExecutor::new())
                .pool_timer(TokioTimer::new())
                .build_http::<Empty<Bytes>>();
            for i in 0..10 {
                let uri = format!("http://{addr}/img/{}", handle(i * 97));
                let response = client
                    .get(uri.parse().expect("uri"))
                    .await
                    .expect("gateway answers");
                assert_eq!(response.status(), StatusCode::OK, "GET {uri}");
                let body = response.into_body().collect().await.expect("body");
                assert_eq!(body.to_bytes().len(), BODY_LEN, "GET {uri}");
            }
            check_signing(addr.port()).await;
            check_large_origin().await;
            // Two scrapes on one connection, as the scraper role makes them.
            let mut scraper = TcpStream::connect(admin_addr).await.expect("admin accepts");
            for _ in 0..2 {
                scrape(&mut scraper).await.expect("GET /metrics");
            }
            drop(scraper);
            let _ = stop_admin.send(());
            admin_server
                .await
                .expect("admin task")
                .expect("admin serve");
            let _ = stop.send(());
            server.await.expect("serve task").expect("serve");
        })
        .await
        .expect("smoke check within 8 s");
    });
    // The server's graceful drain would wait for the client's pooled connections; don't.
    runtime.shutdown_timeout(Duration::from_millis(100));
    println!(
        "load bench smoke check: 10 proxied GETs answered 200, signgate's credentials passed the check the njs signer must pass, a 256 KiB origin answered, /metrics scraped twice, in {:?} (run `cargo bench --bench load` for the load figures)",
        started.elapsed()
    );
}

/// The check the bench makes of every signing target before measuring, here on the gateway
/// listening on `port`: the origin's echo comes back through it and its credentials pass.
/// Then that the check refuses what is not signgate's signing.
async fn check_signing(port: u16) {
    let expiry = Expiry::of_bench_route();
    let origin = Origin {
        pid: 0,
        body_len: BODY_LEN,
    };
    let gateway = Target {
        name: SIGNGATE_ROW.into(),
        port,
        pid: 0,
        origin,
        signs: true,
    };
    check_target(&gateway, expiry)
        .await
        .expect("signgate's credentials pass the bench's check");

    let handle = handle(1);
    let before = SystemClock.now_unix();
    let mut stream = TcpStream::connect(("127.0.0.1", port))
        .await
        .expect("gateway accepts");
    let answer = exchange(&mut stream, &format!("/img/{handle}"), CHECK_AGENT)
        .await
        .expect("gateway answers");
    let after = SystemClock.now_unix();
    let seen = answer.header(TARGET_ECHO).expect("the origin's echo");
    check_credentials(seen, &handle, expiry, before, after).expect("signgate's credentials");
    let last = if seen.ends_with('0') { '1' } else { '0' };
    let forged = format!("{}{last}", &seen[..seen.len() - 1]);
    let later = Expiry {
        ttl: expiry.ttl + expiry.bucket,
        ..expiry
    };
    for (what, seen, expiry) in [
        ("a wrong signature", forged.as_str(), expiry),
        ("no credentials", &format!("/{handle}")[..], expiry),
        ("another expiry", seen, later),
    ] {
        assert!(
            check_credentials(seen, &handle, expiry, before, after).is_err(),
            "the check passes {what}"
        );
    }
}

/// The origin role's body size knob, and an origin serving 256 KiB as the bench starts one.
async fn check_large_origin() {
    assert_eq!(origin_body_len(None), Ok(BODY_LEN));
    assert_eq!(
        origin_body_len(Some(&LARGE_BODY_LEN.to_string())),
        Ok(LARGE_BODY_LEN)
    );
    for bad in ["", "0", "256k", "-1"] {
        assert!(origin_body_len(Some(bad)).is_err(), "{bad:?}");
    }
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let port = listener.local_addr().expect("addr").port();
    let len = origin_body_len(Some(&LARGE_BODY_LEN.to_string())).expect("a size");
    tokio::spawn(serve_origin(listener, len));
    let origin = Target {
        name: "origin, 256 KiB".into(),
        port,
        pid: 0,
        origin: Origin {
            pid: 0,
            body_len: LARGE_BODY_LEN,
        },
        signs: false,
    };
    check_target(&origin, Expiry::of_bench_route())
        .await
        .expect("the 256 KiB origin answers");
}

/// Re-executes this binary as `role` on the server core; returns it and the port it listens on.
fn spawn_role(role: &str, env: &[(&str, &str)], deadline: u64) -> Result<(Spawned, u16), String> {
    let (spawned, ports) = spawn_process(role, SERVER_CORE, env, deadline)?;
    let port = *ports
        .first()
        .ok_or_else(|| format!("{role} announced no port"))?;
    Ok((spawned, port))
}

/// What an nginx instance does in front of its origin.
#[derive(Clone, Copy)]
enum NginxKind {
    /// `proxy_pass` as it is: the reference that signs nothing.
    ProxyPass,
    /// `proxy_pass` with credentials from [`njs_signer`], dated as `Expiry` says.
    NjsSigner(Expiry),
}

/// The njs signer's script (see the module documentation); `js_set` runs it once per request.
fn njs_signer(expiry: Expiry) -> String {
    let ttl = expiry.ttl.as_secs();
    let bucket = expiry.bucket.as_secs().max(1);
    format!(
        r#"// The load bench's njs signer (benches/load.rs): for GET /img/HANDLE, the upstream target
// signgate's proxy route sends, computed per request without a cache.
var crypto = require('crypto');

var SECRET = {SECRET:?};
var TTL = {ttl};
var BUCKET = {bucket};

function signed_uri(r) {{
    var handle = r.uri.slice('/img/'.length);
    // now + TTL, rounded up to a multiple of BUCKET.
    var expiry = Math.ceil((Math.floor(Date.now() / 1000) + TTL) / BUCKET) * BUCKET;
    var json = JSON.stringify({{expiry: expiry, call: ['read'], handle: handle}});
    // Url-safe base64, padding kept, as signgate writes it.
    var policy = Buffer.from(json).toString('base64').replace(/\+/g, '-').replace(/\//g, '_');
    var signature = crypto.createHmac('sha256', SECRET).update(policy).digest('hex');
    return '/' + handle + '?policy=' + policy.replace(/=/g, '%3D') + '&signature=' + signature;
}}

export default {{signed_uri}};
"#
    )
}

/// nginx's config with its files under `prefix`, listening on `port` in front of the origin on
/// `origin_port`; for the njs signer, its script is `prefix/signer.js`.
fn nginx_conf(prefix: &Path, kind: NginxKind, port: u16, origin_port: u16) -> String {
    let p = prefix.display();
    let (module, signer, location, target) = match kind {
        NginxKind::ProxyPass => (String::new(), String::new(), "/", ""),
        NginxKind::NjsSigner(_) => (
            format!("load_module {NJS_MODULE};\n"),
            format!(
                "js_import signer from {p}/signer.js;\njs_set $signed_uri signer.signed_uri;\n"
            ),
            // The handle checked as signgate checks it: 20 characters of the handle alphabet.
            "~ \"^/img/[A-Za-z0-9_-]{20}$\"",
            "$signed_uri",
        ),
    };
    format!(
        "{module}\
         worker_processes 1;\n\
         daemon off;\n\
         pid {p}/nginx.pid;\n\
         error_log {p}/error.log warn;\n\
         worker_rlimit_nofile 8192;\n\
         events {{ worker_connections 4096; }}\n\
         http {{\n\
           access_log off;\n\
           client_body_temp_path {p}/client_body;\n\
           proxy_temp_path {p}/proxy;\n\
           fastcgi_temp_path {p}/fastcgi;\n\
           uwsgi_temp_path {p}/uwsgi;\n\
           scgi_temp_path {p}/scgi;\n\
           keepalive_requests 1000000;\n\
         {signer}\
           upstream origin {{\n\
             server 127.0.0.1:{origin_port};\n\
             keepalive 64;\n\
             keepalive_requests 1000000;\n\
           }}\n\
           server {{\n\
             listen 127.0.0.1:{port};\n\
             location {location} {{\n\
               proxy_pass http://origin{target};\n\
               proxy_http_version 1.1;\n\
               proxy_set_header Connection \"\";\n\
             }}\n\
           }}\n\
         }}\n"
    )
}

/// Starts nginx with its files under `prefix`, on the server core, in front of the origin on
/// `origin_port`.
fn spawn_nginx(
    prefix: &Path,
    kind: NginxKind,
    origin_port: u16,
    deadline: u64,
) -> Result<(Spawned, u16), String> {
    let port = free_port()?;
    std::fs::create_dir_all(prefix).map_err(|e| e.to_string())?;
    if let NginxKind::NjsSigner(expiry) = kind {
        let script = prefix.join("signer.js");
        std::fs::write(&script, njs_signer(expiry))
            .map_err(|e| format!("{}: {e}", script.display()))?;
    }
    let conf = nginx_conf(prefix, kind, port, origin_port);
    let spawned = start_nginx(prefix, &conf, port, deadline, SERVER_CORE).map_err(|e| match kind {
        NginxKind::NjsSigner(_) => format!(
            "{e}\n(the njs signer needs nginx's njs module, {NJS_MODULE}: apt-get install -y {NJS_PACKAGE}, or LOAD_NJS=0 to skip it)"
        ),
        NginxKind::ProxyPass => e,
    })?;
    Ok((spawned, port))
}

/// The worker of the nginx under `prefix`: the child of the master named in its pid file.
fn nginx_worker(prefix: &Path) -> Result<u32, String> {
    let master: u32 = std::fs::read_to_string(prefix.join("nginx.pid"))
        .map_err(|e| format!("nginx pid file: {e}"))?
        .trim()
        .parse()
        .map_err(|e| format!("nginx pid file: {e}"))?;
    let entries = std::fs::read_dir("/proc").map_err(|e| e.to_string())?;
    for entry in entries.flatten().take(100_000) {
        let Some(pid) = entry
            .file_name()
            .to_str()
            .and_then(|s| s.parse::<u32>().ok())
        else {
            continue;
        };
        let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else {
            continue;
        };
        if stat_fields(&stat)
            .get(1)
            .and_then(|p| p.parse::<u32>().ok())
            == Some(master)
        {
            return Ok(pid);
        }
    }
    Err(format!("no worker under nginx master {master}"))
}

// ---------------------------------------------------------------------------------------------
// /proc readings.

/// Context switches of all threads of a process (voluntary + involuntary), and its thread count.
fn context_switches(pid: u32) -> (u64, usize) {
    let Ok(tasks) = std::fs::read_dir(format!("/proc/{pid}/task")) else {
        return (0, 0);
    };
    let mut switches = 0;
    let mut threads = 0;
    for task in tasks.flatten().take(10_000) {
        let status = std::fs::read_to_string(task.path().join("status")).unwrap_or_default();
        threads += 1;
        switches += status
            .lines()
            .filter_map(|line| {
                line.strip_prefix("voluntary_ctxt_switches:")
                    .or_else(|| line.strip_prefix("nonvoluntary_ctxt_switches:"))
            })
            .filter_map(|v| v.trim().parse::<u64>().ok())
            .sum::<u64>();
    }
    (switches, threads)
}

/// A core's busy time (user, nice, system, steal: not interrupts, which our own traffic causes
/// without them being charged to any process) and its total time, in clock ticks.
fn core_ticks(core: &str) -> (u64, u64) {
    let stat = std::fs::read_to_string("/proc/stat").unwrap_or_default();
    let prefix = format!("cpu{core} ");
    let Some(line) = stat.lines().find(|l| l.starts_with(&prefix)) else {
        return (0, 0);
    };
    // user nice system idle iowait irq softirq steal (guest time is already in user).
    let fields: Vec<u64> = line
        .split_whitespace()
        .skip(1)
        .take(8)
        .map(|v| v.parse().unwrap_or(0))
        .collect();
    let field = |i: usize| fields.get(i).copied().unwrap_or(0);
    (
        field(0) + field(1) + field(2) + field(7),
        fields.iter().sum(),
    )
}

// ---------------------------------------------------------------------------------------------
// wrk.

fn lua_script() -> String {
    let paths: Vec<String> = (0..HANDLES)
        .map(|i| format!("/img/{}", handle(i)))
        .collect();
    wrk_script(&paths)
}

// ---------------------------------------------------------------------------------------------
// Raw keep-alive connections (sanity checks and the memory figure).

/// Sends `GET path` on `stream` and reads the whole answer; returns the status and body length.
async fn get_on(stream: &mut TcpStream, path: &str) -> Result<(u16, usize), String> {
    let answer = exchange(stream, path, "load-bench").await?;
    Ok((answer.status, answer.body_len))
}

/// An answer read by [`exchange`].
struct Answer {
    status: u16,
    body_len: usize,
    /// The head as received, status line included.
    head: String,
}

impl Answer {
    /// The first value of header `name`, trimmed.
    fn header(&self, name: &str) -> Option<&str> {
        self.head.lines().skip(1).find_map(|line| {
            let (key, value) = line.split_once(':')?;
            key.trim().eq_ignore_ascii_case(name).then(|| value.trim())
        })
    }
}

/// Sends `GET path` with `User-Agent: agent` on `stream` and reads the whole answer.
async fn exchange(stream: &mut TcpStream, path: &str, agent: &str) -> Result<Answer, String> {
    let request = format!("GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nUser-Agent: {agent}\r\n\r\n");
    stream
        .write_all(request.as_bytes())
        .await
        .map_err(|e| e.to_string())?;
    let mut buf = Vec::with_capacity(4096);
    let mut chunk = [0_u8; 4096];
    let head_end = loop {
        if let Some(at) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            break at + 4;
        }
        if buf.len() > 64 * 1024 {
            return Err("response head too large".into());
        }
        let n = stream.read(&mut chunk).await.map_err(|e| e.to_string())?;
        if n == 0 {
            return Err("connection closed before the response head".into());
        }
        buf.extend_from_slice(&chunk[..n]);
    };
    let head = String::from_utf8_lossy(&buf[..head_end]).into_owned();
    let lower = head.to_ascii_lowercase();
    let status: u16 = lower
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .ok_or("no status")?;
    let content_length = lower.lines().find_map(|l| {
        l.strip_prefix("content-length:")
            .and_then(|v| v.trim().parse::<usize>().ok())
    });
    let chunked = lower.contains("transfer-encoding: chunked");
    loop {
        let body = &buf[head_end..];
        let done = match content_length {
            Some(len) => body.len() >= len,
            None if chunked => body.ends_with(b"0\r\n\r\n"),
            None => true,
        };
        if done {
            return Ok(Answer {
                status,
                body_len: content_length.unwrap_or(body.len()),
                head,
            });
        }
        if buf.len() > 1024 * 1024 {
            return Err("response body too large".into());
        }
        let n = stream.read(&mut chunk).await.map_err(|e| e.to_string())?;
        if n == 0 {
            return Err("connection closed in the response body".into());
        }
        buf.extend_from_slice(&chunk[..n]);
    }
}

/// One request from [`CHECK_AGENT`] on a fresh connection: the answer must be 200 with the
/// body of the target's origin, and the origin must have received valid credentials when the
/// target signs.
async fn check_target(target: &Target, expiry: Expiry) -> Result<(), String> {
    let handle = handle(0);
    let before = SystemClock.now_unix();
    let answer = tokio::time::timeout(Duration::from_secs(5), async {
        let mut stream = TcpStream::connect(("127.0.0.1", target.port))
            .await
            .map_err(|e| e.to_string())?;
        exchange(&mut stream, &format!("/img/{handle}"), CHECK_AGENT).await
    })
    .await
    .map_err(|_| "no answer within 5 s".to_owned())
    .and_then(|r| r);
    let after = SystemClock.now_unix();
    answer
        .and_then(|answer| {
            if (answer.status, answer.body_len) != (200, target.origin.body_len) {
                return Err(format!(
                    "status {}, {} bytes, expected 200 with {} bytes",
                    answer.status, answer.body_len, target.origin.body_len
                ));
            }
            if target.signs {
                let seen = answer
                    .header(TARGET_ECHO)
                    .ok_or("the origin's echo of the request target did not come back")?;
                check_credentials(seen, &handle, expiry, before, after)?;
            }
            Ok(())
        })
        .map_err(|e| format!("{} on port {}: {e}", target.name, target.port))
}

/// How the bench's route dates its policies: the `ttl` and `bucket` of its `[signing]`
/// (signgate's defaults), which the njs signer and the credential checks use too.
#[derive(Clone, Copy)]
struct Expiry {
    ttl: Duration,
    bucket: Duration,
}

impl Expiry {
    fn of_bench_route() -> Self {
        let config = gateway_config("http://127.0.0.1:9", false);
        let signing = &config
            .routes
            .first()
            .expect("the bench config has one route")
            .signing;
        Self {
            ttl: signing.ttl,
            bucket: signing.bucket,
        }
    }

    /// The expiry of credentials signed at unix second `now`.
    fn at(self, now: u64) -> u64 {
        bucketed_expiry(now, self.ttl, self.bucket)
    }
}

/// Checks the request target the origin received for `GET /img/HANDLE` through a signing
/// target asked between unix seconds `before` and `after`: `/HANDLE?policy=P&signature=S`, P
/// byte for byte the policy signgate writes for the handle (url-safe base64 with `=` as `%3D`,
/// calls `read`, expiry as `expiry` dates a second in between), and S the hex HMAC-SHA256 of P
/// under [`SECRET`], computed here with the hmac crate rather than signgate's own signer.
fn check_credentials(
    seen: &str,
    handle: &str,
    expiry: Expiry,
    before: u64,
    after: u64,
) -> Result<(), String> {
    let (path, query) = seen
        .split_once('?')
        .ok_or_else(|| format!("the origin received {seen:?}, without credentials"))?;
    if path.strip_prefix('/') != Some(handle) {
        return Err(format!("the origin received path {path:?}, not /{handle}"));
    }
    let (mut policy, mut signature) = (None, None);
    for pair in query.split('&') {
        match pair.split_once('=') {
            Some(("policy", value)) if policy.is_none() => policy = Some(value),
            Some(("signature", value)) if signature.is_none() => signature = Some(value),
            _ => return Err(format!("unexpected query parameter {pair:?} in {seen:?}")),
        }
    }
    let (Some(policy), Some(signature)) = (policy, signature) else {
        return Err(format!("no policy and signature in {seen:?}"));
    };
    let policy = policy.replace("%3D", "=");
    let signgates = |now: u64| Policy {
        expiry: expiry.at(now),
        call: vec![Call::Read],
        handle: Some(handle.to_owned()),
        limits: PolicyLimits::default(),
    };
    if ![before, after]
        .into_iter()
        .any(|now| signgates(now).encode() == policy)
    {
        let json = URL_SAFE_NO_PAD
            .decode(policy.trim_end_matches('='))
            .map_or_else(
                |e| format!("not url-safe base64: {e}"),
                |json| String::from_utf8_lossy(&json).into_owned(),
            );
        return Err(format!(
            "policy {policy:?} ({json}) is not signgate's {:?} ({})",
            signgates(before).encode(),
            signgates(before).to_json()
        ));
    }
    let mut mac =
        Hmac::<Sha256>::new_from_slice(SECRET.as_bytes()).expect("HMAC takes keys of any length");
    mac.update(policy.as_bytes());
    const HEX: &[u8; 16] = b"0123456789abcdef";
    let expected: String = mac
        .finalize()
        .into_bytes()
        .iter()
        .flat_map(|byte| [HEX[usize::from(byte >> 4)], HEX[usize::from(byte & 15)]])
        .map(char::from)
        .collect();
    if signature != expected {
        return Err(format!(
            "signature {signature} is not the HMAC-SHA256 of the policy under the bench's secret ({expected})"
        ));
    }
    Ok(())
}

/// Opens `count` keep-alive connections to `port`, one request each, and keeps them open.
async fn open_idle_connections(port: u16, count: usize) -> Result<Vec<TcpStream>, String> {
    let mut streams = Vec::with_capacity(count);
    let until = Instant::now() + Duration::from_secs(60);
    for batch in (0..count).collect::<Vec<_>>().chunks(100) {
        if Instant::now() > until {
            return Err("opening idle connections took over 60 s".into());
        }
        let mut tasks = Vec::with_capacity(batch.len());
        for &i in batch {
            tasks.push(tokio::spawn(async move {
                tokio::time::timeout(Duration::from_secs(10), async move {
                    let addr = SocketAddr::from(([127, 0, 0, 1], port));
                    let mut stream = TcpStream::connect(addr).await.map_err(|e| e.to_string())?;
                    let path = format!("/img/{}", handle(i % HANDLES));
                    match get_on(&mut stream, &path).await? {
                        (200, _) => Ok(stream),
                        (status, _) => Err(format!("status {status}")),
                    }
                })
                .await
                .map_err(|_| "no answer within 10 s".to_owned())
                .and_then(|r| r)
            }));
        }
        for task in tasks {
            streams.push(task.await.map_err(|e| e.to_string())??);
        }
    }
    Ok(streams)
}

struct Memory {
    idle_kib: u64,
    open_kib: u64,
    peak_kib: u64,
}

async fn memory_with_idle_connections(pid: u32, port: u16) -> Result<Memory, String> {
    let idle_kib = status_kib(pid, "VmRSS").ok_or("no VmRSS")?;
    let streams = open_idle_connections(port, IDLE_CONNECTIONS).await?;
    tokio::time::sleep(Duration::from_millis(500)).await;
    let open_kib = status_kib(pid, "VmRSS").ok_or("no VmRSS")?;
    let peak_kib = status_kib(pid, "VmHWM").ok_or("no VmHWM")?;
    drop(streams);
    tokio::time::sleep(Duration::from_millis(500)).await;
    Ok(Memory {
        idle_kib,
        open_kib,
        peak_kib,
    })
}

// ---------------------------------------------------------------------------------------------
// The benchmark.

struct Target {
    name: String,
    port: u16,
    /// The process whose CPU time is charged to the target.
    pid: u32,
    /// The origin behind it.
    origin: Origin,
    /// Whether it signs: its check verifies the credentials the origin received.
    signs: bool,
}

/// An origin process and the size of the bodies it serves.
#[derive(Clone, Copy)]
struct Origin {
    pid: u32,
    body_len: usize,
}

struct Row {
    name: String,
    wrk: WrkResult,
    /// CPU per request of the target's process (user, system), µs.
    cpu_us: (f64, f64),
    /// Context switches per request of the target's process, and its thread count.
    switches: (f64, usize),
    /// Shares of the server core's time that went to neither the target nor the origin, and of
    /// the load core's that did not go to wrk (other builds on a shared machine, the
    /// hypervisor's steal), while measured.
    others: (f64, f64),
}

/// One "admin off" or "admin on" measurement of the admin listener comparison.
struct AdminRound {
    row: Row,
    /// What the scraper saw, when the admin listener was on.
    scrapes: Option<Scrapes>,
}

/// A warm-up, then `seconds` of load on `target`, with its process's CPU time and context
/// switches over the measured part, and what other processes than it and its origin took of
/// the server core meanwhile.
fn measure(
    target: &Target,
    script: &Path,
    seconds: u64,
    connections: u64,
    ticks: f64,
) -> Result<Row, String> {
    eprintln!(
        "{}: {WARMUP_SECONDS} s warm-up, then {seconds} s with {connections} connections",
        target.name
    );
    run_wrk(script, target.port, WARMUP_SECONDS, connections, LOAD_CORE)?;
    let origin_pid = target.origin.pid;
    let before = CoreUse::now(target.pid, origin_pid);
    let (user0, system0) = cpu_ticks(target.pid);
    let (switches0, _) = context_switches(target.pid);
    let wrk = run_wrk(script, target.port, seconds, connections, LOAD_CORE)?;
    let (user1, system1) = cpu_ticks(target.pid);
    let (switches1, threads) = context_switches(target.pid);
    let after = CoreUse::now(target.pid, origin_pid);
    let per_request = |t: u64| t as f64 / ticks * 1e6 / wrk.requests.max(1) as f64;
    Ok(Row {
        name: target.name.clone(),
        cpu_us: (
            per_request(user1.saturating_sub(user0)),
            per_request(system1.saturating_sub(system0)),
        ),
        switches: (
            switches1.saturating_sub(switches0) as f64 / wrk.requests.max(1) as f64,
            threads,
        ),
        others: after.others_since(&before),
        wrk,
    })
}

/// The server and load cores' busy and total ticks, and what our own processes have used: on
/// the server core the target and the origin, on the load core this process and the children
/// it has waited for (wrk, through `timeout`).
struct CoreUse {
    server: (u64, u64),
    load: (u64, u64),
    servers: u64,
    load_generator: u64,
}

impl CoreUse {
    fn now(target_pid: u32, origin_pid: u32) -> Self {
        let mut pids = vec![target_pid, origin_pid];
        pids.dedup();
        let servers = pids
            .iter()
            .map(|&pid| {
                let (user, system) = cpu_ticks(pid);
                user + system
            })
            .sum();
        let stat = std::fs::read_to_string("/proc/self/stat").unwrap_or_default();
        let fields = stat_fields(&stat);
        // utime, stime, cutime, cstime.
        let load_generator = (11..=14)
            .filter_map(|i| fields.get(i).and_then(|v| v.parse::<u64>().ok()))
            .sum();
        Self {
            server: core_ticks(SERVER_CORE),
            load: core_ticks(LOAD_CORE),
            servers,
            load_generator,
        }
    }

    /// The share of the server core, then of the load core, that went to other processes
    /// since `earlier`.
    fn others_since(&self, earlier: &Self) -> (f64, f64) {
        let share = |now: (u64, u64), then: (u64, u64), ours: u64| {
            let busy = now.0.saturating_sub(then.0);
            let total = now.1.saturating_sub(then.1);
            busy.saturating_sub(ours) as f64 / total.max(1) as f64
        };
        (
            share(
                self.server,
                earlier.server,
                self.servers.saturating_sub(earlier.servers),
            ),
            share(
                self.load,
                earlier.load,
                self.load_generator.saturating_sub(earlier.load_generator),
            ),
        )
    }
}

fn bench() -> Result<(), String> {
    require_tools(&["wrk", "nginx", "taskset", "timeout"], INSTALL)?;
    let seconds = env_u64("LOAD_SECONDS", 10, 1..=600)?;
    let connections = env_u64("LOAD_CONNECTIONS", 64, 1..=4000)?;
    let with_current_thread = std::env::var("LOAD_MULTI_THREAD").is_ok_and(|v| v == "1");
    let with_bare = std::env::var("LOAD_BARE").is_ok_and(|v| v == "1");
    let with_njs = !std::env::var("LOAD_NJS").is_ok_and(|v| v == "0");
    let with_large = !std::env::var("LOAD_LARGE").is_ok_and(|v| v == "0");
    if with_njs && !Path::new(NJS_MODULE).is_file() {
        return Err(format!(
            "nginx's njs module {NJS_MODULE} is missing, which the \"{NJS_ROW}\" row needs; install it with:\n    apt-get install -y {NJS_PACKAGE}\nor skip that row with LOAD_NJS=0"
        ));
    }
    // At least two of each, so that drift between them shows.
    let rounds = env_u64("LOAD_ADMIN_ROUNDS", 2, 2..=10)?;
    let cores = std::fs::read_to_string("/proc/cpuinfo")
        .unwrap_or_default()
        .lines()
        .filter(|l| l.starts_with("processor"))
        .count();
    if cores < 2 {
        return Err(format!(
            "needs 2 cores (load on 0, servers on 1), found {cores}"
        ));
    }

    let dir = tempfile::Builder::new()
        .prefix("signgate-load-")
        .tempdir()
        .map_err(|e| format!("temp dir: {e}"))?;
    let script = dir.path().join("handles.lua");
    std::fs::write(&script, lua_script()).map_err(|e| format!("{}: {e}", script.display()))?;

    let targets_count = 3
        + u64::from(with_current_thread)
        + 2 * u64::from(with_bare)
        + u64::from(with_njs)
        + 2 * u64::from(with_large)
        + 2 * rounds;
    let deadline = targets_count * (WARMUP_SECONDS + seconds + 40) + 180;
    let expiry = Expiry::of_bench_route();

    let (origin_process, origin_port) = spawn_role("origin", &[], deadline)?;
    let origin = Origin {
        pid: origin_process.pid(),
        body_len: BODY_LEN,
    };
    let upstream = format!("http://127.0.0.1:{origin_port}");
    // `LOAD_GATEWAY_ENV_X=v` sets `X=v` for the gateways only (e.g. `LD_PRELOAD` of an allocator).
    let extra_env: Vec<(String, String)> = std::env::vars()
        .filter_map(|(k, v)| Some((k.strip_prefix("LOAD_GATEWAY_ENV_")?.to_owned(), v)))
        .collect();
    for (key, value) in &extra_env {
        eprintln!("gateways run with {key}={value}");
    }
    let (gateway, gateway_port) = spawn_role(
        "gateway",
        &gateway_env(&upstream, "workers", &extra_env),
        deadline,
    )?;
    let (admin_gateway, admin_gateway_port, admin_port) = {
        let mut env = gateway_env(&upstream, "workers", &extra_env);
        env.push((ADMIN_ENV, "1"));
        match spawn_process("gateway", SERVER_CORE, &env, deadline)? {
            (process, ports) if ports.len() == 2 => (process, ports[0], ports[1]),
            (_, ports) => {
                return Err(format!(
                    "the gateway with [admin] announced ports {ports:?}, not traffic and admin"
                ));
            }
        }
    };
    let current_thread = if with_current_thread {
        Some(spawn_role(
            "gateway",
            &gateway_env(&upstream, "multi_thread", &extra_env),
            deadline,
        )?)
    } else {
        None
    };
    let mut bare = Vec::new();
    if with_bare {
        for kind in ["pool", "direct"] {
            bare.push((
                kind,
                spawn_role(
                    "bare",
                    &[(UPSTREAM_ENV, upstream.as_str()), (BARE_ENV, kind)],
                    deadline,
                )?,
            ));
        }
    }
    let nginx_prefix = dir.path().join("nginx");
    let (nginx, nginx_port) =
        spawn_nginx(&nginx_prefix, NginxKind::ProxyPass, origin_port, deadline)?;
    let nginx_worker_pid = nginx_worker(&nginx_prefix)?;
    let njs = if with_njs {
        let prefix = dir.path().join("nginx-njs");
        let (process, port) =
            spawn_nginx(&prefix, NginxKind::NjsSigner(expiry), origin_port, deadline)?;
        Some((process, port, nginx_worker(&prefix)?))
    } else {
        None
    };
    // The 256 KiB origin, and signgate and nginx `proxy_pass` in front of it.
    let large = if with_large {
        let (process, port) = spawn_role(
            "origin",
            &[(BODY_BYTES_ENV, &LARGE_BODY_LEN.to_string())],
            deadline,
        )?;
        let upstream = format!("http://127.0.0.1:{port}");
        let gateway = spawn_role(
            "gateway",
            &gateway_env(&upstream, "workers", &extra_env),
            deadline,
        )?;
        let prefix = dir.path().join("nginx-large");
        let nginx = spawn_nginx(&prefix, NginxKind::ProxyPass, port, deadline)?;
        let nginx_worker_pid = nginx_worker(&prefix)?;
        Some((process, gateway, nginx, nginx_worker_pid))
    } else {
        None
    };

    let target = |name: &str, port: u16, pid: u32, origin: Origin, signs: bool| Target {
        name: name.to_owned(),
        port,
        pid,
        origin,
        signs,
    };
    let mut targets = vec![
        target("origin", origin_port, origin.pid, origin, false),
        target(SIGNGATE_ROW, gateway_port, gateway.pid(), origin, true),
    ];
    if let Some((ct, port)) = &current_thread {
        targets.push(target(
            "signgate (multi_thread)",
            *port,
            ct.pid(),
            origin,
            true,
        ));
    }
    for (kind, (process, port)) in &bare {
        targets.push(target(
            &format!("bare hyper ({kind})"),
            *port,
            process.pid(),
            origin,
            false,
        ));
    }
    targets.push(target(
        NGINX_ROW,
        nginx_port,
        nginx_worker_pid,
        origin,
        false,
    ));
    if let Some((_, port, worker)) = &njs {
        targets.push(target(NJS_ROW, *port, *worker, origin, true));
    }
    if let Some((process, (gateway, gateway_port), (_, nginx_port), nginx_worker_pid)) = &large {
        let origin = Origin {
            pid: process.pid(),
            body_len: LARGE_BODY_LEN,
        };
        targets.push(target(
            SIGNGATE_LARGE_ROW,
            *gateway_port,
            gateway.pid(),
            origin,
            true,
        ));
        targets.push(target(
            NGINX_LARGE_ROW,
            *nginx_port,
            *nginx_worker_pid,
            origin,
            false,
        ));
    }

    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| format!("tokio runtime: {e}"))?;
    // Every target answers as it should, and the signing ones sign as signgate does.
    for target in &targets {
        runtime.block_on(check_target(target, expiry))?;
    }
    let admin_target = |name: String, port: u16, pid: u32| Target {
        name,
        port,
        pid,
        origin,
        signs: true,
    };
    runtime.block_on(check_target(
        &admin_target(
            "signgate, admin on".into(),
            admin_gateway_port,
            admin_gateway.pid(),
        ),
        expiry,
    ))?;

    let ticks = clock_ticks_per_second() as f64;
    let mut rows = Vec::new();
    for target in &targets {
        rows.push(measure(target, &script, seconds, connections, ticks)?);
    }

    // The admin listener's cost: the same gateway without and with `[admin] listen` and a
    // scraper, alternately, so that drift over the run shows in both.
    let mut admin_rounds = Vec::new();
    for round in 1..=rounds {
        let off = admin_target(
            format!("signgate, admin off #{round}"),
            gateway_port,
            gateway.pid(),
        );
        let on = admin_target(
            format!("signgate, admin on #{round}"),
            admin_gateway_port,
            admin_gateway.pid(),
        );
        admin_rounds.push(AdminRound {
            row: measure(&off, &script, seconds, connections, ticks)?,
            scrapes: None,
        });
        // Only while "on" is measured: scraping is part of its cost, not of "off"'s.
        let log = dir.path().join(format!("scrapes-{round}.txt"));
        let scraper_env = [
            (SCRAPE_PORT_ENV, admin_port.to_string()),
            (SCRAPE_OUT_ENV, log.display().to_string()),
        ];
        let scraper_env: Vec<(&str, &str)> =
            scraper_env.iter().map(|(k, v)| (*k, v.as_str())).collect();
        let (scraper, _) = spawn_process("scraper", LOAD_CORE, &scraper_env, deadline)?;
        let row = measure(&on, &script, seconds, connections, ticks)?;
        drop(scraper);
        admin_rounds.push(AdminRound {
            row,
            scrapes: Some(read_scrapes(&log)?),
        });
    }

    let gateway_memory =
        runtime.block_on(memory_with_idle_connections(gateway.pid(), gateway_port))?;
    let nginx_memory =
        runtime.block_on(memory_with_idle_connections(nginx_worker_pid, nginx_port))?;

    print_report(&rows, &gateway_memory, &nginx_memory, seconds, connections);
    print_admin_report(&admin_rounds);

    drop(large);
    drop(njs);
    drop(nginx);
    drop(bare);
    drop(current_thread);
    drop(admin_gateway);
    drop(gateway);
    drop(origin_process);
    drop(runtime);
    dir.close()
        .map_err(|e| format!("removing the temp dir: {e}"))?;
    Ok(())
}

/// The environment of a gateway role in front of `upstream` on `runtime`, with the extra
/// variables of `LOAD_GATEWAY_ENV_*`.
fn gateway_env<'a>(
    upstream: &'a str,
    runtime: &'a str,
    extra: &'a [(String, String)],
) -> Vec<(&'a str, &'a str)> {
    let mut env = vec![(UPSTREAM_ENV, upstream), (RUNTIME_ENV, runtime)];
    env.extend(extra.iter().map(|(k, v)| (k.as_str(), v.as_str())));
    env
}

fn fmt_us(us: f64) -> String {
    if us >= 1000.0 {
        format!("{:.2} ms", us / 1000.0)
    } else {
        format!("{us:.0} µs")
    }
}

fn print_report(rows: &[Row], gateway: &Memory, nginx: &Memory, seconds: u64, connections: u64) {
    println!();
    println!(
        "signgate load bench: {seconds} s per target after {WARMUP_SECONDS} s warm-up, wrk {} thread(s) x {connections} connections on core {LOAD_CORE}, servers on core {SERVER_CORE}, 2 KiB bodies (256 KiB where the row says so), {HANDLES} handles",
        connections.min(2)
    );
    let njs = if rows.iter().any(|r| r.name == NJS_ROW) {
        format!(
            "; njs {}",
            command_output("dpkg-query", &["-W", "-f=${Version}", NJS_PACKAGE])
        )
    } else {
        String::new()
    };
    println!(
        "machine: {}; {}{njs}; {}",
        machine_line(),
        command_output("nginx", &["-v"]),
        command_output("wrk", &["-v"]).lines().next().unwrap_or(""),
    );
    println!();
    print_rows(rows);
    let rps = |name: &str| {
        rows.iter()
            .find(|r| r.name == name)
            .map_or(f64::NAN, |r| r.wrk.requests_per_second)
    };
    println!();
    print_goals(rows);
    println!();
    println!(
        "signgate/origin throughput: {:.2}",
        rps(SIGNGATE_ROW) / rps("origin")
    );
    if rows.iter().any(|r| r.name == "signgate (multi_thread)") {
        println!(
            "signgate (multi_thread)/nginx throughput: {:.2}",
            rps("signgate (multi_thread)") / rps("nginx")
        );
    }
    let per_connection =
        |m: &Memory| (m.open_kib.saturating_sub(m.idle_kib)) as f64 / IDLE_CONNECTIONS as f64;
    println!(
        "signgate RSS with {IDLE_CONNECTIONS} idle keep-alive connections: {:.1} MiB (before opening them {:.1} MiB, +{:.1} KiB per connection; peak {:.1} MiB)",
        gateway.open_kib as f64 / 1024.0,
        gateway.idle_kib as f64 / 1024.0,
        per_connection(gateway),
        gateway.peak_kib as f64 / 1024.0,
    );
    println!(
        "nginx worker RSS with {IDLE_CONNECTIONS} idle keep-alive connections: {:.1} MiB (before {:.1} MiB, +{:.1} KiB per connection)",
        nginx.open_kib as f64 / 1024.0,
        nginx.idle_kib as f64 / 1024.0,
        per_connection(nginx),
    );
}

/// One of issue 14's targets: a ratio of two rows of one run.
struct Goal {
    ours: &'static str,
    theirs: &'static str,
    what: &'static str,
    /// Throughput at least `bound` times theirs, or p99 at most `bound` times theirs.
    metric: GoalMetric,
    bound: f64,
    /// The knob that leaves the rows out.
    skipped_by: &'static str,
}

#[derive(Clone, Copy)]
enum GoalMetric {
    Throughput,
    P99,
}

const GOALS: [Goal; 4] = [
    Goal {
        ours: SIGNGATE_ROW,
        theirs: NGINX_ROW,
        what: "signgate/nginx proxy_pass throughput, 2 KiB",
        metric: GoalMetric::Throughput,
        bound: 0.85,
        skipped_by: "",
    },
    Goal {
        ours: SIGNGATE_ROW,
        theirs: NJS_ROW,
        what: "signgate/nginx + njs signer throughput, 2 KiB",
        metric: GoalMetric::Throughput,
        bound: 1.5,
        skipped_by: "LOAD_NJS=0",
    },
    Goal {
        ours: SIGNGATE_ROW,
        theirs: NGINX_ROW,
        what: "signgate/nginx proxy_pass p99, 2 KiB",
        metric: GoalMetric::P99,
        bound: 1.0,
        skipped_by: "",
    },
    Goal {
        ours: SIGNGATE_LARGE_ROW,
        theirs: NGINX_LARGE_ROW,
        what: "signgate/nginx proxy_pass throughput, 256 KiB",
        metric: GoalMetric::Throughput,
        bound: 1.0,
        skipped_by: "LOAD_LARGE=0",
    },
];

/// Issue 14's targets as ratios of `rows`, each met or missed. It only reports.
fn print_goals(rows: &[Row]) {
    let row = |name: &str| rows.iter().find(|r| r.name == name);
    println!(
        "issue 14's targets, as ratios of the rows above (one run of each: a ratio within the VM's run-to-run noise of its bound settles nothing):"
    );
    for goal in &GOALS {
        let (Some(ours), Some(theirs)) = (row(goal.ours), row(goal.theirs)) else {
            println!("  {:<46} not measured ({})", goal.what, goal.skipped_by);
            continue;
        };
        let (ratio, bound, met, figures) = match goal.metric {
            GoalMetric::Throughput => {
                let ratio = ours.wrk.requests_per_second / theirs.wrk.requests_per_second;
                let figures = format!(
                    "{:.0} / {:.0} req/s",
                    ours.wrk.requests_per_second, theirs.wrk.requests_per_second
                );
                (ratio, '≥', ratio >= goal.bound, figures)
            }
            GoalMetric::P99 => {
                let ratio = ours.wrk.p99_us / theirs.wrk.p99_us;
                let figures = format!(
                    "{} / {}",
                    fmt_us(ours.wrk.p99_us),
                    fmt_us(theirs.wrk.p99_us)
                );
                (ratio, '≤', ratio <= goal.bound, figures)
            }
        };
        println!(
            "  {:<46} {ratio:>5.2}  target {bound} {:.2}  {:<6}  ({figures})",
            goal.what,
            goal.bound,
            if met { "met" } else { "missed" },
        );
    }
}

/// The table of measured rows, with its header.
fn print_rows<'a>(rows: impl IntoIterator<Item = &'a Row>) {
    println!(
        "{:<26} {:>10} {:>10} {:>10} {:>8} {:>22} {:>13}  socket errors",
        "target", "req/s", "p50", "p99", "non-2xx", "CPU/req usr+sys (µs)", "ctxsw/req (thr)"
    );
    for row in rows {
        println!(
            "{:<26} {:>10.0} {:>10} {:>10} {:>8} {:>22} {:>13}  {}",
            row.name,
            row.wrk.requests_per_second,
            fmt_us(row.wrk.p50_us),
            fmt_us(row.wrk.p99_us),
            row.wrk.non_2xx,
            format!(
                "{:.1} + {:.1} = {:.1}",
                row.cpu_us.0,
                row.cpu_us.1,
                row.cpu_us.0 + row.cpu_us.1
            ),
            format!("{:.2} ({})", row.switches.0, row.switches.1),
            row.wrk.socket_errors,
        );
    }
}

/// The admin listener comparison: its rows in the order run, what the scraper saw, the on/off
/// ratios, and whether throughput with it on is within [`ADMIN_TOLERANCE`] of off.
fn print_admin_report(rounds: &[AdminRound]) {
    let (on, off): (Vec<&AdminRound>, Vec<&AdminRound>) =
        rounds.iter().partition(|r| r.scrapes.is_some());
    println!();
    println!(
        "admin listener cost (issue 13: throughput with it on within {:.0} % of off), side by side in this run, off and on alternating, {} of each:",
        ADMIN_TOLERANCE * 100.0,
        off.len()
    );
    println!(
        "  off: the signgate above; on: the same config plus [admin] listen on a loopback port, GET /metrics once a second on one keep-alive connection from core {LOAD_CORE} (as Prometheus would) through warm-up and measurement"
    );
    println!();
    print_rows(rounds.iter().map(|r| &r.row));
    println!();
    for (index, round) in on.iter().enumerate() {
        if let Some(scrapes) = &round.scrapes {
            println!("scrapes, round {}: {scrapes}", index + 1);
        }
    }

    let others: Vec<String> = rounds
        .iter()
        .map(|r| {
            format!(
                "{} {:.0} / {:.0} %",
                r.row.name.trim_start_matches("signgate, admin "),
                r.row.others.0 * 100.0,
                r.row.others.1 * 100.0,
            )
        })
        .collect();
    println!(
        "other processes (a shared machine's builds, steal) on core {SERVER_CORE} / core {LOAD_CORE} while measured: {}",
        others.join(", ")
    );
    let mean = |rounds: &[&AdminRound], value: fn(&Row) -> f64| {
        rounds.iter().map(|r| value(&r.row)).sum::<f64>() / rounds.len().max(1) as f64
    };
    let rps = |row: &Row| row.wrk.requests_per_second;
    let p99 = |row: &Row| row.wrk.p99_us;
    let cpu = |row: &Row| row.cpu_us.0 + row.cpu_us.1;
    let throughput = mean(&on, rps) / mean(&off, rps);
    let per_round: Vec<String> = off
        .iter()
        .zip(&on)
        .map(|(off, on)| format!("{:.3}", rps(&on.row) / rps(&off.row)))
        .collect();
    println!(
        "admin on/off: throughput {throughput:.3} ({:.0} / {:.0} req/s; by round {}), p99 {:.2} ({} / {}), CPU per request {:.3} ({:.1} / {:.1} µs)",
        mean(&on, rps),
        mean(&off, rps),
        per_round.join(", "),
        mean(&on, p99) / mean(&off, p99),
        fmt_us(mean(&on, p99)),
        fmt_us(mean(&off, p99)),
        mean(&on, cpu) / mean(&off, cpu),
        mean(&on, cpu),
        mean(&off, cpu),
    );
    let spread = |rounds: &[&AdminRound]| {
        let (min, max) = rounds
            .iter()
            .map(|r| rps(&r.row))
            .fold((f64::INFINITY, f64::NEG_INFINITY), |(min, max), v| {
                (min.min(v), max.max(v))
            });
        (max - min) / mean(rounds, rps)
    };
    let noise = spread(&off).max(spread(&on));
    println!(
        "noise in this run: the off runs differ among themselves by {:.1} %, the on runs by {:.1} %",
        spread(&off) * 100.0,
        spread(&on) * 100.0,
    );
    let within = (throughput - 1.0).abs() <= ADMIN_TOLERANCE;
    let mut caveats = Vec::new();
    if noise > ADMIN_TOLERANCE {
        caveats.push(format!(
            "the runs of one kind differ by more than {:.0} %",
            ADMIN_TOLERANCE * 100.0
        ));
    }
    let most_others = rounds
        .iter()
        .map(|r| r.row.others.0.max(r.row.others.1))
        .fold(0.0, f64::max);
    if most_others > ADMIN_TOLERANCE {
        caveats.push(format!(
            "other processes took up to {:.0} % of a core the bench uses",
            most_others * 100.0
        ));
    }
    println!(
        "within {:.0} %: {} (on/off throughput {throughput:.3}, {:+.1} %){}",
        ADMIN_TOLERANCE * 100.0,
        if within { "yes" } else { "NO" },
        (throughput - 1.0) * 100.0,
        if caveats.is_empty() {
            String::new()
        } else {
            format!(
                "; but {}, so this run cannot settle it: repeat it on a quiet machine",
                caveats.join(" and ")
            )
        },
    );
}

/// What the scraper saw in one "admin on" round.
struct Scrapes {
    ok: usize,
    failed: Vec<String>,
    /// Body sizes of the successful scrapes, bytes.
    bytes: Vec<usize>,
    /// Times of the successful scrapes, µs, sorted.
    times_us: Vec<u64>,
}

impl std::fmt::Display for Scrapes {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let median = self.times_us.get(self.times_us.len() / 2).copied();
        let max = self.times_us.last().copied();
        write!(
            f,
            "{} ok, {} failed, {:.1} KiB each, median {}, max {}",
            self.ok,
            self.failed.len(),
            self.bytes.iter().sum::<usize>() as f64 / self.bytes.len().max(1) as f64 / 1024.0,
            median.map_or_else(|| "-".into(), |us| fmt_us(us as f64)),
            max.map_or_else(|| "-".into(), |us| fmt_us(us as f64)),
        )?;
        if let Some(first) = self.failed.first() {
            write!(f, " (first failure: {first})")?;
        }
        Ok(())
    }
}

/// The scraper's log: `ok <µs> <bytes>` or `failed <why>` per line. The scraper is stopped
/// mid-interval, so a last line cut short is skipped.
fn read_scrapes(log: &Path) -> Result<Scrapes, String> {
    let text = std::fs::read_to_string(log).map_err(|e| format!("{}: {e}", log.display()))?;
    let mut scrapes = Scrapes {
        ok: 0,
        failed: Vec::new(),
        bytes: Vec::new(),
        times_us: Vec::new(),
    };
    for line in text.lines() {
        let mut words = line.splitn(3, ' ');
        match (words.next(), words.next(), words.next()) {
            (Some("ok"), Some(us), Some(bytes)) => {
                if let (Ok(us), Ok(bytes)) = (us.parse(), bytes.parse()) {
                    scrapes.ok += 1;
                    scrapes.times_us.push(us);
                    scrapes.bytes.push(bytes);
                }
            }
            (Some("failed"), ..) => scrapes
                .failed
                .push(line.trim_start_matches("failed ").to_owned()),
            _ => {}
        }
    }
    scrapes.times_us.sort_unstable();
    Ok(scrapes)
}
