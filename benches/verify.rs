//! verify mode against nginx's `secure_link`: keep-alive GETs of signed links to 2 KiB files,
//! checked by signgate's verify route (HMAC-SHA256 over the Filestack policy, base64 and JSON
//! decoding, expiry, handle and calls, per request: verify routes keep no cache) and by nginx
//! with `secure_link` (an MD5 of the expiry, the path and a secret, nginx's only choice), each
//! forwarding the valid request to the same origin, Debian's nginx serving the same folder of
//! 1,000 files of 2 KiB. Side by side in one run: signgate, nginx `secure_link`, signgate, nginx
//! `secure_link` (`VERIFY_ROUNDS` rounds), then the ratio of the means; the target is at least
//! 1.0 (signgate's requests per second at least nginx `secure_link`'s).
//!
//! Pinned as the load bench pins: the origin nginx, signgate (`workers`, as `signgate run`:
//! one `current_thread` worker for the one core it may use) and the `secure_link` nginx (one
//! worker, `master_process off`, upstream keep-alive 64) on core 1, wrk on core 0 (2 threads,
//! 64 connections, a Lua script cycling through 1,000 signed links). Each target gets a 2 s
//! warm-up, then a measured run (10 s by default). Before measuring, each target must serve a
//! valid link (200, 2 KiB) and refuse a tampered one (403).
//!
//! nginx's links: `/s/HANDLE?md5=M&expires=E`, M the url-safe base64 (no padding) of the MD5
//! of `E/s/HANDLE secret` (`secure_link $arg_md5,$arg_expires; secure_link_md5
//! "$secure_link_expires$uri secret";`), the request rewritten to `/HANDLE` without its query
//! for the origin. signgate's: `/v/HANDLE?policy=P&signature=S`, as the SDKs write them.
//!
//! Run:
//! ```text
//! apt-get update && apt-get install -y wrk nginx util-linux
//! cargo bench --bench verify
//! ```
//! Environment: `VERIFY_SECONDS` (measured seconds per target and round, default 10),
//! `VERIFY_CONNECTIONS` (wrk connections, default 64), `VERIFY_ROUNDS` (default 2).
//! Without `--bench` (as under `cargo test --benches`) it runs a smoke check: an origin and
//! the gateway in-process, 10 valid links answered, a tampered one refused, and the MD5 this
//! bench signs nginx's links with checked against RFC 1321's examples; no wrk or nginx needed.
//!
//! The gateway logs nothing (no tracing subscriber), as nginx has `access_log off`.
//!
//! Last recorded: 2026-12-01 01:46 UTC, commit `2b750ad`, 2-core VM ("Intel(R) Xeon(R)
//! Processor", kernel 6.18), nginx 1.22.1, wrk 4.1.0, `cargo bench --bench verify` (10 s, 64
//! connections, 2 rounds; CPU/req is the target process's own user + system CPU per request):
//!
//! | target            | req/s  | p50     | p99     | CPU/req |
//! |-------------------|--------|---------|---------|---------|
//! | signgate verify   | 23,192 | 2.61 ms | 6.20 ms | 30.1 µs |
//! | nginx secure_link | 43,242 | 1.40 ms | 2.68 ms | 14.7 µs |
//! | signgate verify   | 23,505 | 2.66 ms | 5.70 ms | 30.0 µs |
//! | nginx secure_link | 38,003 | 1.65 ms | 3.14 ms | 17.2 µs |
//!
//! Means 23,349 and 40,623 req/s: signgate/nginx 0.57, the target (1.0) missed. The check
//! itself costs 1.9 µs per request (`cargo bench --bench sign -- verify`); the rest is the
//! proxying path verify shares with proxy mode (0.59x nginx `proxy_pass` in the load bench).

use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::Path;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::{Duration, Instant};

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use signgate::clock::{Clock, SystemClock};
use signgate::config::Config;
use signgate::metrics::Metrics;
use signgate::policy::{Call, Policy};
use signgate::secret::Secret;
use signgate::server::{AppState, serve};
use signgate::workers::Workers;
use tokio::net::TcpListener;

/// The allocator `signgate run` uses, so the gateway role measures the same program.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

mod support;
use support::{
    DEADLINE_ENV, Spawned, WrkResult, announce, bench_main, clock_ticks_per_second, command_output,
    cpu_ticks, env_u64, exit_with_parent, free_port, machine_line, patterned_body, require_tools,
    run_wrk, serve_http1_forever, spawn_process, start_nginx, wrk_script,
};

/// Gateway role: the origin's URL.
const UPSTREAM_ENV: &str = "SIGNGATE_VERIFY_UPSTREAM";
/// The environment variable the gateway's config names in `secret_env`.
const SECRET_ENV: &str = "SIGNGATE_VERIFY_SECRET";
const SECRET: &str = "verify-bench-secret-not-a-real-one-0123456789";
/// The secret in nginx's `secure_link_md5` expression.
const NGINX_SECRET: &str = "secure-link-bench-secret";
const BODY_LEN: usize = 2048;
const FILES: usize = 1000;
const WARMUP_SECONDS: u64 = 2;
const SERVER_CORE: &str = "1";
const LOAD_CORE: &str = "0";
const INSTALL: &str = "apt-get update && apt-get install -y wrk nginx util-linux";
const SIGNGATE_ROW: &str = "signgate verify";
const NGINX_ROW: &str = "nginx secure_link";

fn handle(i: usize) -> String {
    format!("f{i:0>19}")
}

fn main() -> ExitCode {
    bench_main("verify", |_| run_gateway(), bench, smoke)
}

fn gateway_config(upstream: &str) -> Config {
    let toml = format!(
        "[server]\nlisten = \"127.0.0.1:0\"\n[signing]\nsecret_env = \"{SECRET_ENV}\"\n\
         [[route]]\nname = \"files\"\nprefix = \"/v/\"\nmode = \"verify\"\nupstream = \"{upstream}\"\n"
    );
    Config::from_toml_str(&toml, |name| {
        (name == SECRET_ENV).then(|| SECRET.to_owned())
    })
    .expect("bench config is valid")
}

/// signgate's link to file `i`, valid for an hour from `now`.
fn signgate_link(i: usize, now: u64) -> String {
    let policy = Policy {
        expiry: now + 3600,
        call: vec![Call::Read],
        handle: Some(handle(i)),
        ..Policy::default()
    };
    let credentials = policy.sign(&Secret::new(SECRET.to_owned()).expect("not empty"));
    format!(
        "/v/{}?policy={}&signature={}",
        handle(i),
        credentials.policy_for_query(),
        credentials.signature
    )
}

/// nginx `secure_link`'s link to file `i`, valid for an hour from `now`.
fn nginx_link(i: usize, now: u64) -> String {
    let expires = now + 3600;
    let uri = format!("/s/{}", handle(i));
    let digest = md5(format!("{expires}{uri} {NGINX_SECRET}").as_bytes());
    format!(
        "{uri}?md5={}&expires={expires}",
        URL_SAFE_NO_PAD.encode(digest)
    )
}

/// A link with its last credential character changed.
fn tampered(link: &str) -> String {
    let mut bytes = link.as_bytes().to_vec();
    let last = bytes.len() - 1;
    bytes[last] = if bytes[last] == b'0' { b'1' } else { b'0' };
    String::from_utf8(bytes).expect("ASCII")
}

// ---------------------------------------------------------------------------------------------
// The gateway role (re-executed under `taskset -c 1`).

/// Serves the verify route as `signgate run` does, one `current_thread` worker per core this
/// process may use, until the bench closes its stdin.
fn run_gateway() -> ! {
    let deadline = std::env::var(DEADLINE_ENV)
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(600);
    exit_with_parent("gateway", deadline);
    let upstream = std::env::var(UPSTREAM_ENV).expect("upstream URL in the env");
    let config = gateway_config(&upstream);
    let workers = Workers::bind(config.server.listen, config.server.workers.get()).expect("bind");
    let port = workers.addr.port();
    let metrics = Arc::new(Metrics::new(&config));
    let _running = workers
        .start(&config, Arc::new(SystemClock), metrics)
        .expect("workers start");
    announce(&[port]);
    loop {
        std::thread::park();
    }
}

// ---------------------------------------------------------------------------------------------
// Smoke check (no `--bench`): in-process, no external tools.

fn smoke() {
    let started = Instant::now();
    for (input, hex) in [
        ("", "d41d8cd98f00b204e9800998ecf8427e"),
        ("abc", "900150983cd24fb0d6963f7d28e17f72"),
        (
            "12345678901234567890123456789012345678901234567890123456789012345678901234567890",
            "57edf4a22be3c955ac49da2e2107b67a",
        ),
    ] {
        assert_eq!(
            signgate::secret::hex_lower(&md5(input.as_bytes())),
            hex,
            "{input}"
        );
    }
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("tokio runtime");
    runtime.block_on(async {
        tokio::time::timeout(Duration::from_secs(8), async {
            let origin = TcpListener::bind("127.0.0.1:0").await.expect("bind");
            let origin_addr = origin.local_addr().expect("addr");
            let body = patterned_body(BODY_LEN);
            tokio::spawn(serve_http1_forever(origin, move |_| {
                http::Response::new(http_body_util::Full::new(body.clone()))
            }));
            let config = gateway_config(&format!("http://{origin_addr}"));
            let state =
                Arc::new(AppState::new(&config, Arc::new(SystemClock)).expect("state builds"));
            let gateway = TcpListener::bind("127.0.0.1:0").await.expect("bind");
            let port = gateway.local_addr().expect("addr").port();
            tokio::spawn(serve(gateway, state, std::future::pending()));
            let now = SystemClock.now_unix();
            tokio::task::spawn_blocking(move || {
                for i in 0..10 {
                    let link = signgate_link(i * 97, now);
                    assert_eq!(get(port, &link), Ok((200, BODY_LEN)), "{link}");
                }
                let link = tampered(&signgate_link(1, now));
                assert_eq!(get(port, &link).map(|(status, _)| status), Ok(403));
            })
            .await
            .expect("checks");
        })
        .await
        .expect("smoke check within 8 s");
    });
    runtime.shutdown_timeout(Duration::from_millis(100));
    println!(
        "verify bench smoke check: 10 signed links answered 200 through a verify route, a tampered one 403, MD5 matches RFC 1321, in {:?} (run `cargo bench --bench verify` for the figures)",
        started.elapsed()
    );
}

/// `GET path` on a connection of its own: the status and the body's length.
fn get(port: u16, path: &str) -> Result<(u16, usize), String> {
    let mut stream = TcpStream::connect(("127.0.0.1", port)).map_err(|e| e.to_string())?;
    stream
        .set_read_timeout(Some(Duration::from_secs(5)))
        .map_err(|e| e.to_string())?;
    write!(
        stream,
        "GET {path} HTTP/1.1\r\nhost: bench\r\nconnection: close\r\n\r\n"
    )
    .map_err(|e| e.to_string())?;
    let mut answer = Vec::new();
    stream.read_to_end(&mut answer).map_err(|e| e.to_string())?;
    let text = String::from_utf8_lossy(&answer);
    let (head, body) = text.split_once("\r\n\r\n").ok_or("no head")?;
    let status = head
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .ok_or("no status")?;
    let chunked = head
        .to_ascii_lowercase()
        .contains("transfer-encoding: chunked");
    let length = if chunked { 0 } else { body.len() };
    Ok((status, length))
}

// ---------------------------------------------------------------------------------------------
// MD5 (RFC 1321), for nginx's links: a few lines here rather than a dependency.

fn md5(message: &[u8]) -> [u8; 16] {
    const SHIFTS: [u32; 64] = [
        7, 12, 17, 22, 7, 12, 17, 22, 7, 12, 17, 22, 7, 12, 17, 22, 5, 9, 14, 20, 5, 9, 14, 20, 5,
        9, 14, 20, 5, 9, 14, 20, 4, 11, 16, 23, 4, 11, 16, 23, 4, 11, 16, 23, 4, 11, 16, 23, 6, 10,
        15, 21, 6, 10, 15, 21, 6, 10, 15, 21, 6, 10, 15, 21,
    ];
    let constants: Vec<u32> = (0..64)
        .map(|i: i32| (f64::from(i + 1).sin().abs() * 4_294_967_296.0) as u32)
        .collect();
    let mut state: [u32; 4] = [0x6745_2301, 0xefcd_ab89, 0x98ba_dcfe, 0x1032_5476];
    let mut padded = message.to_vec();
    padded.push(0x80);
    while padded.len() % 64 != 56 {
        padded.push(0);
    }
    padded.extend_from_slice(&((message.len() as u64).wrapping_mul(8)).to_le_bytes());
    for block in padded.chunks_exact(64) {
        let words: Vec<u32> = block
            .chunks_exact(4)
            .map(|w| u32::from_le_bytes([w[0], w[1], w[2], w[3]]))
            .collect();
        let [mut a, mut b, mut c, mut d] = state;
        for i in 0..64 {
            let (f, g) = match i / 16 {
                0 => ((b & c) | (!b & d), i),
                1 => ((d & b) | (!d & c), (5 * i + 1) % 16),
                2 => (b ^ c ^ d, (3 * i + 5) % 16),
                _ => (c ^ (b | !d), (7 * i) % 16),
            };
            let rotated = a
                .wrapping_add(f)
                .wrapping_add(constants[i])
                .wrapping_add(words[g])
                .rotate_left(SHIFTS[i]);
            (a, d, c) = (d, c, b);
            b = b.wrapping_add(rotated);
        }
        for (word, add) in state.iter_mut().zip([a, b, c, d]) {
            *word = word.wrapping_add(add);
        }
    }
    let mut digest = [0u8; 16];
    for (out, word) in digest.chunks_exact_mut(4).zip(state) {
        out.copy_from_slice(&word.to_le_bytes());
    }
    digest
}

// ---------------------------------------------------------------------------------------------
// nginx: the origin and the `secure_link` front.

/// Starts nginx on the server core with `blocks` in its `http {}`, its files under `prefix`:
/// one worker with `master_process off`, so the pid in its pid file is the process that serves.
fn spawn_nginx(prefix: &Path, blocks: &str, port: u16, deadline: u64) -> Result<Spawned, String> {
    let p = prefix.display();
    let conf = format!(
        "worker_processes 1;\nmaster_process off;\ndaemon off;\npid {p}/nginx.pid;\n\
         error_log {p}/error.log warn;\nworker_rlimit_nofile 8192;\n\
         events {{ worker_connections 4096; }}\n\
         http {{\n  access_log off;\n  keepalive_requests 1000000;\n\
         default_type application/octet-stream;\n\
         client_body_temp_path {p}/client_body;\n  proxy_temp_path {p}/proxy;\n\
         fastcgi_temp_path {p}/fastcgi;\n  uwsgi_temp_path {p}/uwsgi;\n\
         scgi_temp_path {p}/scgi;\n{blocks}\n}}\n"
    );
    start_nginx(prefix, &conf, port, deadline, SERVER_CORE)
}

/// The pid nginx (one process, `master_process off`) wrote under `prefix`.
fn nginx_pid(prefix: &Path) -> Result<u32, String> {
    std::fs::read_to_string(prefix.join("nginx.pid"))
        .map_err(|e| format!("nginx pid file: {e}"))?
        .trim()
        .parse()
        .map_err(|e| format!("nginx pid file: {e}"))
}

/// The origin: the folder of files, served by nginx.
fn origin_blocks(files: &Path, port: u16) -> String {
    format!(
        "server {{\n  listen 127.0.0.1:{port};\n  root {};\n}}",
        files.display()
    )
}

/// nginx `secure_link` in front of the origin on `origin_port`.
fn secure_link_blocks(port: u16, origin_port: u16) -> String {
    format!(
        "upstream origin {{\n  server 127.0.0.1:{origin_port};\n  keepalive 64;\n\
         keepalive_requests 1000000;\n}}\n\
         server {{\n  listen 127.0.0.1:{port};\n  location /s/ {{\n\
         secure_link $arg_md5,$arg_expires;\n\
         secure_link_md5 \"$secure_link_expires$uri {NGINX_SECRET}\";\n\
         if ($secure_link = \"\") {{ return 403; }}\n\
         if ($secure_link = \"0\") {{ return 410; }}\n\
         rewrite ^/s/(.*)$ /$1? break;\n\
         proxy_pass http://origin;\n    proxy_http_version 1.1;\n\
         proxy_set_header Connection \"\";\n  }}\n}}"
    )
}

// ---------------------------------------------------------------------------------------------
// The bench.

/// One thing measured: its name, the port it listens on, its process, and its wrk script.
struct Target {
    name: &'static str,
    port: u16,
    pid: u32,
    script: std::path::PathBuf,
}

/// One measured run.
struct Row {
    name: &'static str,
    wrk: WrkResult,
    /// CPU per request of the target's process (user + system), µs.
    cpu_us: f64,
}

fn measure(target: &Target, seconds: u64, connections: u64, ticks: f64) -> Result<Row, String> {
    eprintln!(
        "{}: {WARMUP_SECONDS} s warm-up, then {seconds} s with {connections} connections",
        target.name
    );
    run_wrk(
        &target.script,
        target.port,
        WARMUP_SECONDS,
        connections,
        LOAD_CORE,
    )?;
    let (user0, system0) = cpu_ticks(target.pid);
    let wrk = run_wrk(&target.script, target.port, seconds, connections, LOAD_CORE)?;
    let (user1, system1) = cpu_ticks(target.pid);
    if wrk.non_2xx > 0 {
        return Err(format!(
            "{}: {} answers were not 2xx",
            target.name, wrk.non_2xx
        ));
    }
    let used = (user1 + system1).saturating_sub(user0 + system0);
    Ok(Row {
        name: target.name,
        cpu_us: used as f64 / ticks * 1e6 / wrk.requests.max(1) as f64,
        wrk,
    })
}

/// Each target serves a valid link and refuses a tampered one.
fn check(target: &Target, valid: &str) -> Result<(), String> {
    match get(target.port, valid)? {
        (200, BODY_LEN) => {}
        other => return Err(format!("{}: {valid} answered {other:?}", target.name)),
    }
    match get(target.port, &tampered(valid))? {
        (403, _) => Ok(()),
        other => Err(format!(
            "{}: a tampered link answered {other:?}",
            target.name
        )),
    }
}

fn bench() -> Result<(), String> {
    require_tools(&["wrk", "nginx", "taskset", "timeout"], INSTALL)?;
    let seconds = env_u64("VERIFY_SECONDS", 10, 1..=3600)?;
    let connections = env_u64("VERIFY_CONNECTIONS", 64, 1..=10_000)?;
    let rounds = env_u64("VERIFY_ROUNDS", 2, 1..=20)?;
    let deadline = 120 + rounds * 2 * (seconds + WARMUP_SECONDS + 30);
    let ticks = clock_ticks_per_second() as f64;
    let dir = tempfile::tempdir().map_err(|e| e.to_string())?;

    let files = dir.path().join("files");
    std::fs::create_dir_all(&files).map_err(|e| e.to_string())?;
    let body = patterned_body(BODY_LEN);
    for i in 0..FILES {
        std::fs::write(files.join(handle(i)), &body).map_err(|e| e.to_string())?;
    }
    let origin_port = free_port()?;
    let origin_prefix = dir.path().join("origin");
    let _origin = spawn_nginx(
        &origin_prefix,
        &origin_blocks(&files, origin_port),
        origin_port,
        deadline,
    )?;
    let secure_port = free_port()?;
    let secure_prefix = dir.path().join("secure-link");
    let _secure_link = spawn_nginx(
        &secure_prefix,
        &secure_link_blocks(secure_port, origin_port),
        secure_port,
        deadline,
    )?;
    let upstream = format!("http://127.0.0.1:{origin_port}");
    let (gateway, gateway_ports) = spawn_process(
        "gateway",
        SERVER_CORE,
        &[(UPSTREAM_ENV, &upstream)],
        deadline,
    )?;
    let gateway_port = *gateway_ports
        .first()
        .ok_or("the gateway announced no port")?;

    let now = SystemClock.now_unix();
    let write_script = |name: &str, link: fn(usize, u64) -> String| {
        let paths: Vec<String> = (0..FILES).map(|i| link(i, now)).collect();
        let path = dir.path().join(name);
        std::fs::write(&path, wrk_script(&paths)).map_err(|e| e.to_string())?;
        Ok::<_, String>(path)
    };
    let targets = [
        Target {
            name: SIGNGATE_ROW,
            port: gateway_port,
            pid: gateway.pid(),
            script: write_script("signgate.lua", signgate_link)?,
        },
        Target {
            name: NGINX_ROW,
            port: secure_port,
            pid: nginx_pid(&secure_prefix)?,
            script: write_script("nginx.lua", nginx_link)?,
        },
    ];
    check(&targets[0], &signgate_link(0, now))?;
    check(&targets[1], &nginx_link(0, now))?;

    let mut rows = Vec::new();
    for _ in 0..rounds {
        for target in &targets {
            rows.push(measure(target, seconds, connections, ticks)?);
        }
    }
    print_report(&rows, seconds, connections);
    drop(gateway);
    Ok(())
}

fn print_report(rows: &[Row], seconds: u64, connections: u64) {
    println!();
    println!("verify bench: {}", machine_line());
    println!(
        "{}; wrk {}; {seconds} s per run, {connections} connections, {FILES} files of {BODY_LEN} bytes",
        command_output("nginx", &["-v"]),
        command_output("wrk", &["-v"])
            .lines()
            .next()
            .unwrap_or_default()
    );
    println!();
    println!("| target | req/s | p50 | p99 | CPU/req |");
    println!("|---|---|---|---|---|");
    for row in rows {
        println!(
            "| {} | {:.0} | {:.0} µs | {:.0} µs | {:.1} µs |",
            row.name, row.wrk.requests_per_second, row.wrk.p50_us, row.wrk.p99_us, row.cpu_us
        );
    }
    let mean = |name: &str| {
        let runs: Vec<f64> = rows
            .iter()
            .filter(|row| row.name == name)
            .map(|row| row.wrk.requests_per_second)
            .collect();
        runs.iter().sum::<f64>() / runs.len().max(1) as f64
    };
    let ratio = mean(SIGNGATE_ROW) / mean(NGINX_ROW);
    println!();
    println!(
        "mean req/s: {SIGNGATE_ROW} {:.0}, {NGINX_ROW} {:.0}; signgate/nginx {ratio:.2} (target >= 1.00: {})",
        mean(SIGNGATE_ROW),
        mean(NGINX_ROW),
        if ratio >= 1.0 { "met" } else { "missed" }
    );
}
