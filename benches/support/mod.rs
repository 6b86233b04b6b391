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
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, Command};
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
