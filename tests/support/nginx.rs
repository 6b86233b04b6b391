//! Debian's nginx, started by a test in a directory of its own on free ports (as the load bench
//! starts it), stopped on drop.

use std::io::Read;
use std::net::TcpStream;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// Debian's nginx (`nginx-light` is enough).
pub const NGINX: &str = "/usr/sbin/nginx";

/// A running nginx; killed on drop.
pub struct Nginx {
    child: Child,
    dir: tempfile::TempDir,
}

impl Nginx {
    /// Starts nginx with `http` as the body of its `http {}` block (`http` is given the
    /// directory nginx keeps its files in) and waits until each of `ports` accepts.
    pub fn start(http: impl FnOnce(&Path) -> String, ports: &[u16]) -> Self {
        let dir = tempfile::tempdir().expect("temp dir");
        let d = dir.path().display();
        let conf = format!(
            "daemon off;\nmaster_process off;\nworker_processes 1;\nuser root;\n\
             error_log {d}/error.log warn;\npid {d}/nginx.pid;\n\
             events {{ worker_connections 64; }}\n\
             http {{\n  client_body_temp_path {d}/body;\n  proxy_temp_path {d}/proxy;\n\
             fastcgi_temp_path {d}/fastcgi;\n  uwsgi_temp_path {d}/uwsgi;\n\
             scgi_temp_path {d}/scgi;\n{}\n}}\n",
            http(dir.path())
        );
        let conf_path = dir.path().join("nginx.conf");
        std::fs::write(&conf_path, conf).expect("nginx.conf");
        let child = Command::new(NGINX)
            .arg("-p")
            .arg(dir.path())
            .arg("-e")
            .arg(dir.path().join("error.log"))
            .arg("-c")
            .arg(&conf_path)
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("nginx starts");
        let mut nginx = Self { child, dir };
        for &port in ports {
            nginx.wait_for(port);
        }
        nginx
    }

    fn wait_for(&mut self, port: u16) {
        let deadline = Instant::now() + Duration::from_secs(10);
        while TcpStream::connect(("127.0.0.1", port)).is_err() {
            if let Ok(Some(status)) = self.child.try_wait() {
                let mut stderr = String::new();
                if let Some(mut pipe) = self.child.stderr.take() {
                    let _ = pipe.read_to_string(&mut stderr);
                }
                panic!("nginx exited ({status}): {stderr}{}", self.error_log());
            }
            assert!(
                Instant::now() < deadline,
                "nginx not listening on {port}: {}",
                self.error_log()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// The directory nginx keeps its files in.
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    /// What nginx logged as errors.
    pub fn error_log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("error.log")).unwrap_or_default()
    }
}

impl Drop for Nginx {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A port nothing listens on right now (bound to 0, then released), for nginx's config.
pub fn free_port() -> u16 {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    listener.local_addr().expect("addr").port()
}

/// Whether nginx is missing here: a failure under CI (`CI` set), a skip, said so, elsewhere.
pub fn nginx_missing(test: &str) -> bool {
    if Path::new(NGINX).exists() {
        return false;
    }
    assert!(
        std::env::var_os("CI").is_none(),
        "nginx missing under CI: .ci/run must install nginx-light"
    );
    eprintln!("SKIPPED: install nginx (nginx-light) to run the {test} test");
    true
}
