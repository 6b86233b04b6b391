//! End-to-end load: keep-alive GETs of 2 KiB files straight at a stand-in origin, through
//! signgate (one `proxy` route, 1,000 distinct handles, so every request is signed from the
//! credential cache) and through nginx `proxy_pass` (the reference; it does no signing), plus
//! signgate's resident memory with 1,000 idle keep-alive client connections open.
//!
//! Everything runs on 127.0.0.1. The origin, signgate and nginx are pinned to core 1
//! (`taskset -c 1`), wrk to core 0 (2 threads, 64 connections, a Lua script cycling through the
//! 1,000 handles). Each target gets a 2 s warm-up, then a measured run (10 s by default).
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
//! Without `--bench` (as under `cargo test --benches`) it only runs a smoke check: origin and
//! gateway in-process, 10 requests, no wrk or nginx needed.
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
use signgate::clock::SystemClock;
use signgate::config::Config;
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
/// Gateway and bare roles: the origin's URL.
const UPSTREAM_ENV: &str = "SIGNGATE_LOAD_UPSTREAM";
/// The environment variable the gateway's config names in `secret_env`.
const SECRET_ENV: &str = "SIGNGATE_LOAD_SECRET";
const SECRET: &str = "load-bench-secret-not-a-real-one-0123456789";

const BODY_LEN: usize = 2048;
const HANDLES: usize = 1000;
const IDLE_CONNECTIONS: usize = 1000;
const WARMUP_SECONDS: u64 = 2;
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

fn gateway_config(upstream: &str) -> Config {
    let toml = format!(
        "[server]\nlisten = \"127.0.0.1:0\"\n\
         [signing]\nsecret_env = \"{SECRET_ENV}\"\n\
         [[route]]\nname = \"img\"\nprefix = \"/img/\"\nmode = \"proxy\"\nupstream = \"{upstream}\"\n"
    );
    Config::from_toml_str(&toml, |name| {
        (name == SECRET_ENV).then(|| SECRET.to_owned())
    })
    .expect("bench config is valid")
}

fn gateway_state(upstream: &str) -> Arc<AppState> {
    let config = gateway_config(upstream);
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
        // As `signgate run`: one current_thread runtime per core this process may use.
        let upstream = std::env::var(UPSTREAM_ENV).expect("upstream URL in the env");
        let config = gateway_config(&upstream);
        let workers =
            Workers::bind(config.server.listen, config.server.workers.get()).expect("bind");
        announce(workers.addr.port());
        workers
            .run(&config, Arc::new(SystemClock), std::future::pending())
            .expect("serve");
        return ExitCode::SUCCESS;
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
                announce(port);
                serve_origin(listener).await;
            }
            "gateway" => {
                let upstream = std::env::var(UPSTREAM_ENV).expect("upstream URL in the env");
                let state = gateway_state(&upstream);
                announce(port);
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
                announce(port);
                serve_bare(listener, upstream, pooled).await;
            }
            other => panic!("unknown {ROLE_ENV} {other:?}"),
        }
    });
    ExitCode::SUCCESS
}

fn announce(port: u16) {
    let mut out = std::io::stdout().lock();
    writeln!(out, "READY {port}").expect("stdout");
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

            let state = gateway_state(&format!("http://{origin_addr}"));
            let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
            let addr = listener.local_addr().expect("addr");
            let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
            let server = tokio::spawn(serve(listener, state, async {
                let _ = stopped.await;
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
            let _ = stop.send(());
            server.await.expect("serve task").expect("serve");
        })
        .await
        .expect("smoke check within 8 s");
    });
    // The server's graceful drain would wait for the client's pooled connections; don't.
    runtime.shutdown_timeout(Duration::from_millis(100));
    println!(
        "load bench smoke check: 10 proxied GETs answered 200 in {:?} (run `cargo bench --bench load` for the load figures)",
        started.elapsed()
    );
}

/// Re-executes this binary as `role` on the server core; returns it and the port it listens on.
fn spawn_role(role: &str, env: &[(&str, &str)], deadline: u64) -> Result<(Spawned, u16), String> {
    let exe = std::env::current_exe().map_err(|e| format!("current_exe: {e}"))?;
    let mut command = Command::new("taskset");
    command
        .args(["-c", SERVER_CORE])
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
    let port = line
        .trim()
        .strip_prefix("READY ")
        .and_then(|p| p.parse().ok())
        .ok_or_else(|| format!("{role} said {line:?} instead of READY <port>"))?;
    Ok((spawned, port))
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

    let targets_count = 3 + u64::from(with_current_thread) + 2 * u64::from(with_bare);
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

    let ticks = clock_ticks_per_second() as f64;
    let mut rows = Vec::new();
    for target in &targets {
        eprintln!(
            "{}: {WARMUP_SECONDS} s warm-up, then {seconds} s with {connections} connections",
            target.name
        );
        run_wrk(&script, target.port, WARMUP_SECONDS, connections)?;
        let (user0, system0) = cpu_ticks(target.pid);
        let (switches0, _) = context_switches(target.pid);
        let wrk = run_wrk(&script, target.port, seconds, connections)?;
        let (user1, system1) = cpu_ticks(target.pid);
        let (switches1, threads) = context_switches(target.pid);
        let per_request = |t: u64| t as f64 / ticks * 1e6 / wrk.requests.max(1) as f64;
        rows.push(Row {
            name: target.name.clone(),
            cpu_us: (
                per_request(user1.saturating_sub(user0)),
                per_request(system1.saturating_sub(system0)),
            ),
            switches: (
                switches1.saturating_sub(switches0) as f64 / wrk.requests.max(1) as f64,
                threads,
            ),
            wrk,
        });
    }

    let gateway_memory =
        runtime.block_on(memory_with_idle_connections(gateway.pid(), gateway_port))?;
    let nginx_memory =
        runtime.block_on(memory_with_idle_connections(nginx_worker_pid, nginx_port))?;

    print_report(&rows, &gateway_memory, &nginx_memory, seconds, connections);

    drop(nginx);
    drop(bare);
    drop(current_thread);
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
