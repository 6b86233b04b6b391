//! What the process-level benches (`load`, `soak`) share: child processes that stop by
//! themselves, `/proc` readings, and environment knobs.
//!
//! Each bench uses a subset.
#![allow(dead_code)]

/// The tests' accept loop, shared so that there is one.
#[path = "../../tests/support/accept.rs"]
mod accept;

pub use accept::accept_loop;

use std::convert::Infallible;
use std::io::{BufRead, BufReader, Write as _};
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::{Request, Response};
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use tokio::net::TcpListener;

/// Which role a re-executed copy of this binary plays: (`origin`, `gateway`, …).
pub const ROLE_ENV: &str = "SIGNGATE_BENCH_ROLE";
/// A role process exits by itself after this many seconds, whatever happens to the parent.
pub const DEADLINE_ENV: &str = "SIGNGATE_BENCH_DEADLINE_SECS";
/// A child process, stopped on drop (SIGTERM or kill, then reaped).
pub struct Spawned {
    pub name: String,
    pub child: Child,
    /// Closing it tells a role process to exit.
    pub stdin: Option<ChildStdin>,
    /// The child leads its own process group (`timeout`), which gets the signals.
    pub group: bool,
}

impl Spawned {
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    pub fn exited(&mut self) -> bool {
        !matches!(self.child.try_wait(), Ok(None))
    }
}

impl Drop for Spawned {
    fn drop(&mut self) {
        drop(self.stdin.take());
        if self.exited() {
            return;
        }
        let pid = self.pid().to_string();
        if self.group {
            // `timeout` passes SIGTERM on to nginx (master and worker).
            let _ = Command::new("kill").args(["-TERM", &pid]).status();
        } else {
            let _ = self.child.kill();
        }
        let until = Instant::now() + Duration::from_secs(5);
        while Instant::now() < until {
            if self.exited() {
                return;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        eprintln!("{} did not stop; killing it", self.name);
        if self.group {
            let _ = Command::new("kill")
                .args(["-KILL", "--", &format!("-{pid}")])
                .status();
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The first line `child` writes to stdout, within `within`.
pub fn first_stdout_line(
    child: &mut Child,
    name: &str,
    within: Duration,
) -> Result<String, String> {
    let stdout = child.stdout.take().ok_or("no stdout")?;
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        let mut reader = BufReader::new(stdout);
        let mut line = String::new();
        let _ = reader.read_line(&mut line);
        let _ = tx.send(line);
        // Keep draining so the child never blocks on a full pipe.
        let _ = std::io::copy(&mut reader, &mut std::io::sink());
    });
    rx.recv_timeout(within)
        .map_err(|_| format!("{name} printed nothing within {within:?}"))
}

/// `len` bytes of a fixed pattern: the files the stand-in servers hand out.
pub fn patterned_body(len: usize) -> Bytes {
    Bytes::from((0..len).map(|i| b'a' + (i % 26) as u8).collect::<Vec<u8>>())
}

/// Serves HTTP/1.1 keep-alive on `listener`, every request answered by `answer`, until the
/// process ends.
pub async fn serve_http1_forever<F>(listener: TcpListener, answer: F)
where
    F: Fn(&Request<Incoming>) -> Response<Full<Bytes>> + Clone + Send + 'static,
{
    accept_loop(listener, move |stream| {
        let answer = answer.clone();
        async move {
            let service = service_fn(move |request: Request<Incoming>| {
                std::future::ready(Ok::<_, Infallible>(answer(&request)))
            });
            let _ = http1::Builder::new()
                .serve_connection(TokioIo::new(stream), service)
                .await;
        }
    })
    .await;
}

/// Makes a re-executed role process stop by itself: when the parent closes its stdin (or
/// dies), or `deadline_secs` after start.
pub fn exit_with_parent(role: &str, deadline_secs: u64) {
    std::thread::spawn(|| {
        let mut sink = Vec::new();
        let _ = std::io::Read::read_to_end(&mut std::io::stdin(), &mut sink);
        std::process::exit(0);
    });
    let role = role.to_owned();
    std::thread::spawn(move || {
        std::thread::sleep(Duration::from_secs(deadline_secs));
        eprintln!("bench {role} process: deadline reached, exiting");
        std::process::exit(3);
    });
}

pub fn free_port() -> Result<u16, String> {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").map_err(|e| e.to_string())?;
    Ok(listener.local_addr().map_err(|e| e.to_string())?.port())
}

/// Fields of `/proc/PID/stat` after `(comm)`: index 0 is the state, 11 utime, 12 stime.
pub fn stat_fields(stat: &str) -> Vec<&str> {
    stat.rsplit_once(')')
        .map_or_else(Vec::new, |(_, rest)| rest.split_whitespace().collect())
}

/// User and system CPU time of a process, in clock ticks.
pub fn cpu_ticks(pid: u32) -> (u64, u64) {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    let fields = stat_fields(&stat);
    let field = |i: usize| fields.get(i).and_then(|v| v.parse().ok()).unwrap_or(0);
    (field(11), field(12))
}

pub fn clock_ticks_per_second() -> u64 {
    Command::new("getconf")
        .arg("CLK_TCK")
        .output()
        .ok()
        .and_then(|o| String::from_utf8_lossy(&o.stdout).trim().parse().ok())
        .unwrap_or(100)
}

/// `VmRSS` or `VmHWM` of a process, in KiB.
pub fn status_kib(pid: u32, key: &str) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    status
        .lines()
        .find_map(|line| line.strip_prefix(key)?.strip_prefix(':'))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
}

/// Open file descriptors of a process.
pub fn open_fds(pid: u32) -> Option<usize> {
    Some(std::fs::read_dir(format!("/proc/{pid}/fd")).ok()?.count())
}

pub fn command_output(program: &str, args: &[&str]) -> String {
    Command::new(program)
        .args(args)
        .output()
        .map(|o| {
            let mut text = String::from_utf8_lossy(&o.stdout).into_owned();
            text.push_str(&String::from_utf8_lossy(&o.stderr));
            text.trim().to_owned()
        })
        .unwrap_or_default()
}

pub fn tool_exists(tool: &str) -> bool {
    std::env::var_os("PATH").is_some_and(|paths| {
        std::env::split_paths(&paths).any(|dir: PathBuf| dir.join(tool).is_file())
    }) || ["/usr/sbin", "/sbin"]
        .iter()
        .any(|dir| Path::new(dir).join(tool).is_file())
}

/// A number from the environment, `default` when unset, refused outside `range`.
pub fn env_u64(
    name: &str,
    default: u64,
    range: std::ops::RangeInclusive<u64>,
) -> Result<u64, String> {
    match std::env::var(name) {
        Err(_) => Ok(default),
        Ok(text) => text
            .parse()
            .ok()
            .filter(|v| range.contains(v))
            .ok_or_else(|| format!("{name} must be a number in {range:?}, got {text:?}")),
    }
}

/// The CPU model, kernel and date, for a report's header.
pub fn machine_line() -> String {
    let model = std::fs::read_to_string("/proc/cpuinfo")
        .unwrap_or_default()
        .lines()
        .find_map(|l| {
            l.strip_prefix("model name")
                .map(|v| v.trim_start_matches([' ', '\t', ':']).to_owned())
        })
        .unwrap_or_else(|| "unknown CPU".into());
    // Counted from /proc/cpuinfo: `nproc` would report this process's affinity.
    let cores = std::fs::read_to_string("/proc/cpuinfo")
        .unwrap_or_default()
        .lines()
        .filter(|l| l.starts_with("processor"))
        .count();
    format!(
        "{cores} cores, {model}, kernel {}; date {}",
        command_output("uname", &["-r"]),
        command_output("date", &["-u", "+%Y-%m-%d %H:%M UTC"]),
    )
}

/// `READY` and the ports the role listens on: what [`spawn_process`] waits for.
pub fn announce(ports: &[u16]) {
    let mut out = std::io::stdout().lock();
    write!(out, "READY").expect("stdout");
    for port in ports {
        write!(out, " {port}").expect("stdout");
    }
    writeln!(out).expect("stdout");
    out.flush().expect("stdout");
}

/// Re-executes this binary as `role` on `core`; returns it once it has announced itself, and
/// the ports it announced.
pub fn spawn_process(
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

/// What wrk measured.
pub struct WrkResult {
    pub requests_per_second: f64,
    pub p50_us: f64,
    pub p99_us: f64,
    pub requests: u64,
    pub non_2xx: u64,
    pub socket_errors: String,
}

/// Runs wrk on `core` (2 threads at most) for `seconds` against `port` with the Lua `script`.
pub fn run_wrk(
    script: &Path,
    port: u16,
    seconds: u64,
    connections: u64,
    core: &str,
) -> Result<WrkResult, String> {
    let threads = connections.min(2);
    let output = Command::new("timeout")
        .args(["-k", "5", &(seconds + 30).to_string()])
        .args(["taskset", "-c", core, "wrk"])
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

pub fn parse_wrk(text: &str) -> Option<WrkResult> {
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

pub fn latency_us(text: &str) -> Option<f64> {
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

/// Starts nginx (`conf` is its whole `nginx.conf`, with its files under `prefix`) pinned to
/// `core`, under `timeout` so it stops by itself after `deadline` seconds; returns it once
/// `port` accepts, or nginx's error log if it exited first.
pub fn start_nginx(
    prefix: &Path,
    conf: &str,
    port: u16,
    deadline: u64,
    core: &str,
) -> Result<Spawned, String> {
    for sub in ["", "client_body", "proxy", "fastcgi", "uwsgi", "scgi"] {
        std::fs::create_dir_all(prefix.join(sub)).map_err(|e| e.to_string())?;
    }
    let conf_path = prefix.join("nginx.conf");
    std::fs::write(&conf_path, conf).map_err(|e| e.to_string())?;
    let child = Command::new("timeout")
        .args(["-k", "5", &deadline.to_string(), "taskset", "-c", core])
        .arg("nginx")
        .arg("-p")
        .arg(prefix)
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
            return Ok(spawned);
        }
        if Instant::now() > until {
            return Err("nginx did not listen within 15 s".into());
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// A wrk Lua script that cycles through `paths`, one `GET` each, the requests formatted once.
pub fn wrk_script(paths: &[String]) -> String {
    let mut script = String::from("local paths = {\n");
    for path in paths {
        script.push_str(&format!("  \"{path}\",\n"));
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

/// `Ok` when every one of `tools` is installed; otherwise which are not, and `install`, the
/// command that installs them.
pub fn require_tools(tools: &[&str], install: &str) -> Result<(), String> {
    let missing: Vec<&str> = tools
        .iter()
        .copied()
        .filter(|tool| !tool_exists(tool))
        .collect();
    if missing.is_empty() {
        return Ok(());
    }
    Err(format!(
        "missing {}; install with:\n    {install}",
        missing.join(", ")
    ))
}

/// A process bench's `main`: a copy of the bench re-executed as a role ([`ROLE_ENV`]) plays
/// it; with `--bench` (`cargo bench`) the bench runs, failing with its reason; without it (as
/// under `cargo test --benches`) only its smoke check does.
pub fn bench_main(
    name: &str,
    role: impl FnOnce(&str) -> std::process::ExitCode,
    bench: impl FnOnce() -> Result<(), String>,
    smoke: impl FnOnce(),
) -> std::process::ExitCode {
    if let Ok(played) = std::env::var(ROLE_ENV) {
        return role(&played);
    }
    if std::env::args().skip(1).any(|a| a == "--bench") {
        match bench() {
            Ok(()) => std::process::ExitCode::SUCCESS,
            Err(e) => {
                eprintln!("{name} bench failed: {e}");
                std::process::ExitCode::FAILURE
            }
        }
    } else {
        smoke();
        std::process::ExitCode::SUCCESS
    }
}
