//! A `signgate run` process on its own config file, for the tests that need the real binary
//! (signals, reload, several replicas).

use std::io::{BufRead, BufReader, Read, Write as _};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use super::{SECRET, printed_addresses};

/// A `signgate run` process serving a config file in a directory of its own; killed on drop.
pub struct GatewayProcess {
    pub child: Child,
    /// The traffic listener's address.
    pub addr: String,
    /// The admin listener's address.
    pub admin: String,
    dir: tempfile::TempDir,
    log: Arc<Mutex<String>>,
}

impl GatewayProcess {
    /// Starts `signgate run` on `config` (which must set `[admin] listen`; the secret is in
    /// the env var `SECRET`) and waits for both addresses.
    pub fn start(config: &str) -> Self {
        let dir = tempfile::tempdir().expect("temp dir");
        let gateway_path = dir.path().join("gateway.toml");
        std::fs::write(&gateway_path, config).expect("write");
        let mut child = Command::new(env!("CARGO_BIN_EXE_signgate"))
            .args(["run", "--config"])
            .arg(&gateway_path)
            .env("SECRET", SECRET)
            .env("RUST_LOG", "info")
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("starts");
        let log = Arc::new(Mutex::new(String::new()));
        let stderr = child.stderr.take().expect("stderr");
        let sink = Arc::clone(&log);
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines() {
                let Ok(line) = line else { break };
                let mut log = sink.lock().expect("log");
                log.push_str(&line);
                log.push('\n');
            }
        });
        let [addr, admin] = printed_addresses(child.stdout.take().expect("stdout"));
        Self {
            child,
            addr,
            admin,
            dir,
            log,
        }
    }

    /// The config file it serves.
    pub fn config_path(&self) -> PathBuf {
        self.dir.path().join("gateway.toml")
    }

    /// Replaces the config file's contents.
    pub fn rewrite(&self, config: &str) {
        std::fs::write(self.config_path(), config).expect("write");
    }

    /// Sends a signal, as `kill` names it (`-HUP`).
    pub fn signal(&self, name: &str) {
        let sent = Command::new("kill")
            .args([name, &self.child.id().to_string()])
            .status()
            .expect("kill runs");
        assert!(sent.success());
    }

    /// `GET path` on the traffic listener, the whole answer as text.
    pub fn get(&self, path: &str) -> String {
        http_get(&self.addr, path)
    }

    /// The value of the sample `series` (name and labels, as written) on `/metrics`.
    pub fn metric(&self, series: &str) -> f64 {
        let text = http_get(&self.admin, "/metrics");
        text.lines()
            .find_map(|line| {
                let (name, value) = line.rsplit_once(' ')?;
                (name == series).then(|| value.parse().expect("a number"))
            })
            .unwrap_or_else(|| panic!("no {series} in {text}"))
    }

    /// Waits until `signgate_config_reloads_total{outcome}` reaches `count`.
    pub fn wait_for_reloads(&self, outcome: &str, count: f64) {
        let series = format!("signgate_config_reloads_total{{outcome=\"{outcome}\"}}");
        let deadline = Instant::now() + Duration::from_secs(10);
        while self.metric(&series) < count {
            assert!(
                Instant::now() < deadline,
                "no {count} {outcome} reloads within 10 s; log:\n{}",
                self.log()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
        assert_eq!(self.metric(&series), count, "{series}");
    }

    /// Waits up to 10 s for `needle` in the log (read by a thread of its own, so a line the
    /// process has written may not be here yet).
    pub fn wait_for_log(&self, needle: &str) {
        let deadline = Instant::now() + Duration::from_secs(10);
        while !self.log().contains(needle) {
            assert!(
                Instant::now() < deadline,
                "{needle:?} not logged within 10 s; log:\n{}",
                self.log()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Everything it has logged so far.
    pub fn log(&self) -> String {
        self.log.lock().expect("log").clone()
    }

    /// Whether the process is still there.
    pub fn is_running(&mut self) -> bool {
        self.child.try_wait().expect("wait").is_none()
    }

    /// SIGTERM, then the exit code (failing if the process is still there 10 s later).
    pub fn stop(mut self) -> Option<i32> {
        self.signal("-TERM");
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            if let Some(status) = self.child.try_wait().expect("wait") {
                return status.code();
            }
            assert!(
                Instant::now() < deadline,
                "still running 10 s after SIGTERM"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for GatewayProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// `GET path` over HTTP/1.1, the whole answer as text.
pub fn http_get(addr: &str, path: &str) -> String {
    let mut stream = std::net::TcpStream::connect(addr).expect("connects");
    write!(
        stream,
        "GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"
    )
    .expect("request");
    let mut answer = String::new();
    stream.read_to_string(&mut answer).expect("answer");
    answer
}

/// The `Location` of a redirect answer.
pub fn location(answer: &str) -> &str {
    answer
        .lines()
        .find_map(|line| line.strip_prefix("location: "))
        .unwrap_or_else(|| panic!("no location in {answer}"))
}
