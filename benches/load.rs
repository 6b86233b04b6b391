//! End-to-end load: keep-alive GETs of 2 KiB files straight at a stand-in origin, through
//! signgate (one `proxy` route, 1,000 distinct handles, so every request is signed from the
//! credential cache) and through nginx `proxy_pass` (the reference; it does no signing), plus
//! signgate's resident memory with 1,000 idle keep-alive client connections open.
//!
//! Everything runs on 127.0.0.1. The origin, signgate and nginx are pinned to core 1
//! (`taskset -c 1`), wrk to core 0 (2 threads, 64 connections, a Lua script cycling through the
//! 1,000 handles). Each target gets a 2 s warm-up, then a measured run (10 s by default).
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
//! apt-get update && apt-get install -y wrk nginx util-linux
//! cargo bench --bench load
//! ```
//! Environment: `LOAD_SECONDS` (measured seconds per target, default 10), `LOAD_CONNECTIONS`
//! (wrk connections, default 64), `LOAD_MULTI_THREAD=1` (adds a row for signgate served by
//! tokio's multi-thread runtime instead of the per-core `current_thread` workers `signgate run`
//! uses),
//! `LOAD_GATEWAY_ENV_<NAME>=value` (sets `NAME` for the gateway processes only, e.g.
//! `LOAD_GATEWAY_ENV_LD_PRELOAD=/usr/lib/x86_64-linux-gnu/libjemalloc.so.2` to try an allocator).
//! `LOAD_BARE=1` (adds two rows for a minimal hyper proxy that does no signing, on a
//! `current_thread` runtime: `pool` with hyper-util's pooled client as signgate, `direct` with one
//! upstream connection per client connection).
//! `LOAD_ADMIN_ROUNDS` (off/on pairs in the admin comparison, default 2, at least 2).
//! Without `--bench` (as under `cargo test --benches`) it only runs a smoke check: origin and
//! gateway with its admin listener in-process, 10 requests and two scrapes of `/metrics`, no
//! wrk or nginx needed.
//!
//! The gateway here logs nothing (no tracing subscriber), as nginx has `access_log off`.
//!
//! Last recorded: 2026-11-29, 2-core VM ("Intel(R) Xeon(R) Processor", kernel 6.18), nginx
//! 1.22.1, wrk 4.1.0, `cargo bench --bench load` (10 s, 64 connections), two runs (CPU/req is
//! the target process's own user + system CPU per request):
//!
//! | target   | req/s           | p50             | p99            | CPU/req       |
//! |----------|-----------------|-----------------|----------------|---------------|
//! | origin   | 145,683/148,629 | 161 µs / 159 µs | 4.25 / 4.28 ms | 6.3 / 6.2 µs  |
//! | signgate |  31,202/ 32,718 | 1.89 / 1.82 ms  | 3.88 / 3.77 ms | 24.5 / 23.4 µs|
//! | nginx    |  51,277/ 50,860 | 1.16 / 1.17 ms  | 2.51 / 2.65 ms | 13.3 / 13.4 µs|
//!
//! signgate/nginx throughput 0.61 / 0.64. signgate RSS with 1,000 idle keep-alive connections:
//! 56.0 / 55.8 MiB (21.3 MiB before, ≈ 35 KiB per connection); the nginx worker: 7.3 / 6.6 MiB.
//! Run-to-run noise on this VM is about ±10 %.

use std::io::Write;
use std::net::SocketAddr;
use std::path::Path;
use std::process::{Command, ExitCode, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::{Request, Response, StatusCode, header};
use http_body_util::{BodyExt, Empty, Full};
use hyper::body::Incoming;
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper_util::client::legacy::Client;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use signgate::admin::{self, Admin, AdminListener};
use signgate::clock::{Clock, SystemClock};
use signgate::config::Config;
use signgate::health::Health;
use signgate::metrics::Metrics;
use signgate::server::{AppState, serve};
use signgate::workers::Workers;

/// The allocator `signgate run` uses, so the gateway role measures the same program.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

mod support;
use support::{
    Spawned, clock_ticks_per_second, command_output, cpu_ticks, env_u64, exit_with_parent,
    first_stdout_line, free_port, machine_line, patterned_body, serve_http1_forever, stat_fields,
    status_kib, tool_exists,
};

/// Which role a re-executed copy of this binary plays: `origin` or `gateway`.
const ROLE_ENV: &str = "SIGNGATE_LOAD_ROLE";
/// A role process exits by itself after this many seconds, whatever happens to the parent.
const DEADLINE_ENV: &str = "SIGNGATE_LOAD_DEADLINE_SECS";
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

const BODY_LEN: usize = 2048;
const HANDLES: usize = 1000;
const IDLE_CONNECTIONS: usize = 1000;
const WARMUP_SECONDS: u64 = 2;
/// How often the scraper GETs `/metrics`: a demanding Prometheus `scrape_interval`.
const SCRAPE_INTERVAL: Duration = Duration::from_secs(1);
/// The cost issue 13 allows the admin listener and its scraping: throughput within 3 %.
const ADMIN_TOLERANCE: f64 = 0.03;
const SERVER_CORE: &str = "1";
const LOAD_CORE: &str = "0";
const INSTALL: &str = "apt-get update && apt-get install -y wrk nginx util-linux";

fn handle(i: usize) -> String {
    format!("h{i:0>19}")
}

fn main() -> ExitCode {
    if let Ok(role) = std::env::var(ROLE_ENV) {
        return run_role(&role);
    }
    if std::env::args().skip(1).any(|a| a == "--bench") {
        match bench() {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => {
                eprintln!("load bench failed: {e}");
                ExitCode::FAILURE
            }
        }
    } else {
        smoke();
        ExitCode::SUCCESS
    }
}

// ---------------------------------------------------------------------------------------------
// The servers: a lean origin and the gateway, shared by the role processes and the smoke check.

/// Answers every request with 200 and the same 2 KiB body, keep-alive, until the process ends.
async fn serve_origin(listener: TcpListener) {
    let body = patterned_body(BODY_LEN);
    serve_http1_forever(listener, move |_request| {
        let mut response = Response::new(Full::new(body.clone()));
        response.headers_mut().insert(
            header::CONTENT_TYPE,
            http::HeaderValue::from_static("image/png"),
        );
        response
    })
    .await;
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
                announce(&[port]);
                serve_origin(listener).await;
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

/// `READY` and the ports the role listens on: what [`spawn_process`] waits for.
fn announce(ports: &[u16]) {
    let mut out = std::io::stdout().lock();
    write!(out, "READY").expect("stdout");
    for port in ports {
        write!(out, " {port}").expect("stdout");
    }
    writeln!(out).expect("stdout");
    out.flush().expect("stdout");
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
            tokio::spawn(serve_origin(origin));

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
        "load bench smoke check: 10 proxied GETs answered 200 and /metrics scraped twice in {:?} (run `cargo bench --bench load` for the load figures)",
        started.elapsed()
    );
}

/// Re-executes this binary as `role` on the server core; returns it and the port it listens on.
fn spawn_role(role: &str, env: &[(&str, &str)], deadline: u64) -> Result<(Spawned, u16), String> {
    let (spawned, ports) = spawn_process(role, SERVER_CORE, env, deadline)?;
    let port = *ports
        .first()
        .ok_or_else(|| format!("{role} announced no port"))?;
    Ok((spawned, port))
}

/// Re-executes this binary as `role` on `core`; returns it once it has announced itself, and
/// the ports it announced.
fn spawn_process(
    role: &str,
    core: &str,
    env: &[(&str, &str)],
    deadline: u64,
) -> Result<(Spawned, Vec<u16>), String> {
    let exe = std::env::current_exe().map_err(|e| format!("current_exe: {e}"))?;
    let mut command = Command::new("taskset");
    command
        .args(["-c", core])
        .arg(&exe)
        .env(ROLE_ENV, role)
        .env(DEADLINE_ENV, deadline.to_string())
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit());
    for (key, value) in env {
        command.env(key, value);
    }
    let mut child = command
        .spawn()
        .map_err(|e| format!("cannot start {role}: {e}"))?;
    let stdin = child.stdin.take();
    let line = first_stdout_line(&mut child, role, Duration::from_secs(15));
    let spawned = Spawned {
        name: role.to_owned(),
        child,
        stdin,
        group: false,
    };
    let line = line?;
    let mut words = line.split_whitespace();
    let ports = (words.next() == Some("READY"))
        .then(|| words.map(|p| p.parse().ok()).collect::<Option<Vec<u16>>>())
        .flatten()
        .ok_or_else(|| format!("{role} said {line:?} instead of READY <port>..."))?;
    Ok((spawned, ports))
}

fn spawn_nginx(dir: &Path, origin_port: u16, deadline: u64) -> Result<(Spawned, u16), String> {
    let port = free_port()?;
    let prefix = dir.join("nginx");
    for sub in ["", "client_body", "proxy", "fastcgi", "uwsgi", "scgi"] {
        std::fs::create_dir_all(prefix.join(sub)).map_err(|e| e.to_string())?;
    }
    let p = prefix.display();
    let conf = format!(
        "worker_processes 1;\n\
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
           upstream origin {{\n\
             server 127.0.0.1:{origin_port};\n\
             keepalive 64;\n\
             keepalive_requests 1000000;\n\
           }}\n\
           server {{\n\
             listen 127.0.0.1:{port};\n\
             location / {{\n\
               proxy_pass http://origin;\n\
               proxy_http_version 1.1;\n\
               proxy_set_header Connection \"\";\n\
             }}\n\
           }}\n\
         }}\n"
    );
    let conf_path = prefix.join("nginx.conf");
    std::fs::write(&conf_path, conf).map_err(|e| e.to_string())?;
    let child = Command::new("timeout")
        .args([
            "-k",
            "5",
            &deadline.to_string(),
            "taskset",
            "-c",
            SERVER_CORE,
        ])
        .arg("nginx")
        .arg("-p")
        .arg(&prefix)
        .arg("-c")
        .arg(&conf_path)
        .arg("-e")
        .arg(prefix.join("error.log"))
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::inherit())
        .spawn()
        .map_err(|e| format!("cannot start nginx: {e}"))?;
    let mut spawned = Spawned {
        name: "nginx".into(),
        child,
        stdin: None,
        group: true,
    };
    let until = Instant::now() + Duration::from_secs(15);
    loop {
        if spawned.exited() {
            let log = std::fs::read_to_string(prefix.join("error.log")).unwrap_or_default();
            return Err(format!("nginx exited at start:\n{log}"));
        }
        if std::net::TcpStream::connect(("127.0.0.1", port)).is_ok() {
            return Ok((spawned, port));
        }
        if Instant::now() > until {
            return Err("nginx did not listen within 15 s".into());
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// The nginx worker: the child of the master named in the pid file.
fn nginx_worker(dir: &Path) -> Result<u32, String> {
    let master: u32 = std::fs::read_to_string(dir.join("nginx/nginx.pid"))
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

struct WrkResult {
    requests_per_second: f64,
    p50_us: f64,
    p99_us: f64,
    requests: u64,
    non_2xx: u64,
    socket_errors: String,
}

fn lua_script() -> String {
    let mut script = String::from("local paths = {\n");
    for i in 0..HANDLES {
        script.push_str(&format!("  \"/img/{}\",\n", handle(i)));
    }
    script.push_str(
        "}\n\
         local requests = {}\n\
         local n = 0\n\
         function init(args)\n\
           for i, path in ipairs(paths) do requests[i] = wrk.format(\"GET\", path) end\n\
         end\n\
         function request()\n\
           n = n % #requests + 1\n\
           return requests[n]\n\
         end\n",
    );
    script
}

fn run_wrk(script: &Path, port: u16, seconds: u64, connections: u64) -> Result<WrkResult, String> {
    let threads = connections.min(2);
    let output = Command::new("timeout")
        .args(["-k", "5", &(seconds + 30).to_string()])
        .args(["taskset", "-c", LOAD_CORE, "wrk"])
        .arg(format!("-t{threads}"))
        .arg(format!("-c{connections}"))
        .arg(format!("-d{seconds}s"))
        .args(["--timeout", "5s", "--latency", "-s"])
        .arg(script)
        .arg(format!("http://127.0.0.1:{port}/"))
        .stdin(Stdio::null())
        .output()
        .map_err(|e| format!("cannot run wrk: {e}"))?;
    let text = String::from_utf8_lossy(&output.stdout).into_owned();
    if !output.status.success() {
        return Err(format!(
            "wrk failed ({}): {text}{}",
            output.status,
            String::from_utf8_lossy(&output.stderr)
        ));
    }
    parse_wrk(&text).ok_or_else(|| format!("cannot read wrk's output:\n{text}"))
}

fn parse_wrk(text: &str) -> Option<WrkResult> {
    let mut result = WrkResult {
        requests_per_second: f64::NAN,
        p50_us: f64::NAN,
        p99_us: f64::NAN,
        requests: 0,
        non_2xx: 0,
        socket_errors: "none".into(),
    };
    for line in text.lines().map(str::trim) {
        if let Some(v) = line.strip_prefix("Requests/sec:") {
            result.requests_per_second = v.trim().parse().ok()?;
        } else if let Some(v) = line.strip_prefix("50%") {
            result.p50_us = latency_us(v.trim())?;
        } else if let Some(v) = line.strip_prefix("99%") {
            result.p99_us = latency_us(v.trim())?;
        } else if let Some(v) = line.strip_prefix("Non-2xx or 3xx responses:") {
            result.non_2xx = v.trim().parse().ok()?;
        } else if let Some(v) = line.strip_prefix("Socket errors:") {
            result.socket_errors = v.trim().to_owned();
        } else if let Some((n, _)) = line.split_once(" requests in ") {
            result.requests = n.trim().parse().ok()?;
        }
    }
    (result.requests_per_second.is_finite()
        && result.p50_us.is_finite()
        && result.p99_us.is_finite())
    .then_some(result)
}

fn latency_us(text: &str) -> Option<f64> {
    let split = text.find(|c: char| c.is_ascii_alphabetic())?;
    let (number, unit) = text.split_at(split);
    let number: f64 = number.parse().ok()?;
    let scale = match unit {
        "us" => 1.0,
        "ms" => 1e3,
        "s" => 1e6,
        "m" => 60e6,
        _ => return None,
    };
    Some(number * scale)
}

// ---------------------------------------------------------------------------------------------
// Raw keep-alive connections (sanity checks and the memory figure).

/// Sends `GET path` on `stream` and reads the whole answer; returns the status and body length.
async fn get_on(stream: &mut TcpStream, path: &str) -> Result<(u16, usize), String> {
    let request =
        format!("GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nUser-Agent: load-bench\r\n\r\n");
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
    let head = String::from_utf8_lossy(&buf[..head_end]).to_ascii_lowercase();
    let status: u16 = head
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .ok_or("no status")?;
    let content_length = head.lines().find_map(|l| {
        l.strip_prefix("content-length:")
            .and_then(|v| v.trim().parse::<usize>().ok())
    });
    let chunked = head.contains("transfer-encoding: chunked");
    loop {
        let body = &buf[head_end..];
        let done = match content_length {
            Some(len) => body.len() >= len,
            None if chunked => body.ends_with(b"0\r\n\r\n"),
            None => true,
        };
        if done {
            return Ok((status, content_length.unwrap_or(body.len())));
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

/// One request on a fresh connection; the answer must be 200 with the 2 KiB body.
async fn check_target(name: &str, port: u16) -> Result<(), String> {
    tokio::time::timeout(Duration::from_secs(5), async {
        let mut stream = TcpStream::connect(("127.0.0.1", port))
            .await
            .map_err(|e| e.to_string())?;
        match get_on(&mut stream, &format!("/img/{}", handle(0))).await? {
            (200, BODY_LEN) => Ok(()),
            (status, len) => Err(format!("status {status}, {len} bytes")),
        }
    })
    .await
    .map_err(|_| "no answer within 5 s".to_owned())
    .and_then(|r| r)
    .map_err(|e| format!("{name} on port {port}: {e}"))
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
/// switches over the measured part, and what other processes than it and the origin
/// (`origin_pid`) took of the server core meanwhile.
fn measure(
    target: &Target,
    origin_pid: u32,
    script: &Path,
    seconds: u64,
    connections: u64,
    ticks: f64,
) -> Result<Row, String> {
    eprintln!(
        "{}: {WARMUP_SECONDS} s warm-up, then {seconds} s with {connections} connections",
        target.name
    );
    run_wrk(script, target.port, WARMUP_SECONDS, connections)?;
    let before = CoreUse::now(target.pid, origin_pid);
    let (user0, system0) = cpu_ticks(target.pid);
    let (switches0, _) = context_switches(target.pid);
    let wrk = run_wrk(script, target.port, seconds, connections)?;
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
    let missing: Vec<&str> = ["wrk", "nginx", "taskset", "timeout"]
        .into_iter()
        .filter(|tool| !tool_exists(tool))
        .collect();
    if !missing.is_empty() {
        return Err(format!(
            "missing {}; install with:\n    {INSTALL}",
            missing.join(", ")
        ));
    }
    let seconds = env_u64("LOAD_SECONDS", 10, 1..=600)?;
    let connections = env_u64("LOAD_CONNECTIONS", 64, 1..=4000)?;
    let with_current_thread = std::env::var("LOAD_MULTI_THREAD").is_ok_and(|v| v == "1");
    let with_bare = std::env::var("LOAD_BARE").is_ok_and(|v| v == "1");
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

    let targets_count = 3 + u64::from(with_current_thread) + 2 * u64::from(with_bare) + 2 * rounds;
    let deadline = targets_count * (WARMUP_SECONDS + seconds + 40) + 180;

    let (origin, origin_port) = spawn_role("origin", &[], deadline)?;
    let upstream = format!("http://127.0.0.1:{origin_port}");
    // `LOAD_GATEWAY_ENV_X=v` sets `X=v` for the gateways only (e.g. `LD_PRELOAD` of an allocator).
    let extra_env: Vec<(String, String)> = std::env::vars()
        .filter_map(|(k, v)| Some((k.strip_prefix("LOAD_GATEWAY_ENV_")?.to_owned(), v)))
        .collect();
    let gateway_env = |runtime: &'static str| {
        let mut env = vec![(UPSTREAM_ENV, upstream.as_str()), (RUNTIME_ENV, runtime)];
        env.extend(extra_env.iter().map(|(k, v)| (k.as_str(), v.as_str())));
        env
    };
    for (key, value) in &extra_env {
        eprintln!("gateways run with {key}={value}");
    }
    let (gateway, gateway_port) = spawn_role("gateway", &gateway_env("workers"), deadline)?;
    let (admin_gateway, admin_gateway_port, admin_port) = {
        let mut env = gateway_env("workers");
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
            &gateway_env("multi_thread"),
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
    let (nginx, nginx_port) = spawn_nginx(dir.path(), origin_port, deadline)?;
    let nginx_worker_pid = nginx_worker(dir.path())?;

    let mut targets = vec![
        Target {
            name: "origin".into(),
            port: origin_port,
            pid: origin.pid(),
        },
        Target {
            name: "signgate".into(),
            port: gateway_port,
            pid: gateway.pid(),
        },
    ];
    if let Some((ct, port)) = &current_thread {
        targets.push(Target {
            name: "signgate (multi_thread)".into(),
            port: *port,
            pid: ct.pid(),
        });
    }
    for (kind, (process, port)) in &bare {
        targets.push(Target {
            name: format!("bare hyper ({kind})"),
            port: *port,
            pid: process.pid(),
        });
    }
    targets.push(Target {
        name: "nginx".into(),
        port: nginx_port,
        pid: nginx_worker_pid,
    });

    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| format!("tokio runtime: {e}"))?;
    for target in &targets {
        runtime.block_on(check_target(&target.name, target.port))?;
    }
    runtime.block_on(check_target("signgate, admin on", admin_gateway_port))?;

    let ticks = clock_ticks_per_second() as f64;
    let mut rows = Vec::new();
    for target in &targets {
        rows.push(measure(
            target,
            origin.pid(),
            &script,
            seconds,
            connections,
            ticks,
        )?);
    }

    // The admin listener's cost: the same gateway without and with `[admin] listen` and a
    // scraper, alternately, so that drift over the run shows in both.
    let mut admin_rounds = Vec::new();
    for round in 1..=rounds {
        let off = Target {
            name: format!("signgate, admin off #{round}"),
            port: gateway_port,
            pid: gateway.pid(),
        };
        let on = Target {
            name: format!("signgate, admin on #{round}"),
            port: admin_gateway_port,
            pid: admin_gateway.pid(),
        };
        admin_rounds.push(AdminRound {
            row: measure(&off, origin.pid(), &script, seconds, connections, ticks)?,
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
        let row = measure(&on, origin.pid(), &script, seconds, connections, ticks)?;
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

    drop(nginx);
    drop(bare);
    drop(current_thread);
    drop(admin_gateway);
    drop(gateway);
    drop(origin);
    drop(runtime);
    dir.close()
        .map_err(|e| format!("removing the temp dir: {e}"))?;
    Ok(())
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
        "signgate load bench: {seconds} s per target after {WARMUP_SECONDS} s warm-up, wrk {} thread(s) x {connections} connections on core {LOAD_CORE}, servers on core {SERVER_CORE}, 2 KiB bodies, {HANDLES} handles",
        connections.min(2)
    );
    println!(
        "machine: {}; {}; {}",
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
    println!(
        "signgate/nginx throughput: {:.2}   signgate/origin throughput: {:.2}",
        rps("signgate") / rps("nginx"),
        rps("signgate") / rps("origin")
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
