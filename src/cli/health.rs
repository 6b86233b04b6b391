//! `signgate health`: ask the running gateway's admin listener for `/healthz`, for a container's
//! `HEALTHCHECK` in an image that has no curl (distroless).

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Duration;

use super::{EXIT_OK, EXIT_UNHEALTHY, EXIT_USAGE};
use crate::config::ConfigError;

/// How long connecting, sending and reading the status line may each take. The admin listener
/// runs on a thread of its own, so a loaded gateway still answers within it.
const TIMEOUT: Duration = Duration::from_secs(2);

/// Longest status line read: `HTTP/1.1 200 OK` and room for any reason phrase.
const MAX_STATUS_LINE: u64 = 256;

/// Why the gateway was not found healthy.
#[derive(Debug, thiserror::Error)]
pub enum HealthError {
    /// The config (read for `admin.listen`) is unusable.
    #[error(transparent)]
    Config(#[from] ConfigError),
    /// Neither `--admin` nor `admin.listen`.
    #[error(
        "{}: no admin listener: set `[admin] listen` (and restart signgate), or pass --admin ADDR",
        config.display()
    )]
    NoAdmin {
        /// The config without `admin.listen`.
        config: PathBuf,
    },
    /// Nothing answered: not listening, or too slow.
    #[error("http://{addr}/healthz: no answer: {source}")]
    NoAnswer {
        /// The address asked.
        addr: SocketAddr,
        /// What the OS said.
        #[source]
        source: std::io::Error,
    },
    /// Something answered, but not `200`.
    #[error("http://{addr}/healthz answered {status_line:?}, not 200")]
    NotHealthy {
        /// The address asked.
        addr: SocketAddr,
        /// The answer's first line.
        status_line: String,
    },
}

impl HealthError {
    /// 2 when it could not be told where to ask; 1 when the gateway did not answer healthy.
    fn exit_code(&self) -> u8 {
        match self {
            HealthError::Config(_) | HealthError::NoAdmin { .. } => EXIT_USAGE,
            HealthError::NoAnswer { .. } | HealthError::NotHealthy { .. } => EXIT_UNHEALTHY,
        }
    }
}

/// Asks `GET /healthz` of the admin listener at `admin`, or at the `admin.listen` of the config
/// at `config`: exit 0 on a 200, 1 on anything else or no answer, 2 when there is no address.
pub fn run(config: &Path, admin: Option<SocketAddr>) -> ExitCode {
    let checked = admin
        .map_or_else(|| admin_address(config), Ok)
        .and_then(|addr| probe(addr).map(|()| addr));
    match checked {
        Ok(addr) => {
            println!("signgate: http://{addr}/healthz: ok");
            ExitCode::from(EXIT_OK)
        }
        Err(e) => {
            eprintln!("signgate: {e}");
            ExitCode::from(e.exit_code())
        }
    }
}

/// The admin listener's address from the config file: `admin.listen` alone, so that a file
/// a reload refused (the gateway serving on with the old one) does not make it look unhealthy.
/// A wildcard address is asked on the loopback address of its family.
fn admin_address(config: &Path) -> Result<SocketAddr, HealthError> {
    let in_file = |inner: ConfigError| ConfigError::InFile {
        path: config.to_owned(),
        inner: Box::new(inner),
    };
    let text = std::fs::read_to_string(config).map_err(|source| ConfigError::Read {
        path: config.to_owned(),
        source,
    })?;
    let table: toml::Table =
        toml::from_str(&text).map_err(|e| in_file(ConfigError::Syntax(e.to_string())))?;
    let listen = table
        .get("admin")
        .and_then(toml::Value::as_table)
        .and_then(|admin| admin.get("listen"))
        .and_then(toml::Value::as_str)
        .ok_or_else(|| HealthError::NoAdmin {
            config: config.to_owned(),
        })?;
    let addr = crate::config::admin::parse_listen(listen).map_err(in_file)?;
    Ok(on_loopback(addr))
}

/// `addr`, with a wildcard IP replaced by the loopback address of its family.
fn on_loopback(addr: SocketAddr) -> SocketAddr {
    let ip = match addr.ip() {
        IpAddr::V4(ip) if ip.is_unspecified() => IpAddr::V4(Ipv4Addr::LOCALHOST),
        IpAddr::V6(ip) if ip.is_unspecified() => IpAddr::V6(Ipv6Addr::LOCALHOST),
        ip => ip,
    };
    SocketAddr::new(ip, addr.port())
}

/// One `GET /healthz` over HTTP/1.1; `Ok` when the status is 200.
fn probe(addr: SocketAddr) -> Result<(), HealthError> {
    let no_answer = |source| HealthError::NoAnswer { addr, source };
    let mut stream = TcpStream::connect_timeout(&addr, TIMEOUT).map_err(no_answer)?;
    stream.set_read_timeout(Some(TIMEOUT)).map_err(no_answer)?;
    stream.set_write_timeout(Some(TIMEOUT)).map_err(no_answer)?;
    write!(
        stream,
        "GET /healthz HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n"
    )
    .map_err(no_answer)?;
    let mut status_line = String::new();
    BufReader::new(stream.take(MAX_STATUS_LINE))
        .read_line(&mut status_line)
        .map_err(no_answer)?;
    let status_line = status_line.trim_end();
    if is_ok(status_line) {
        Ok(())
    } else if status_line.is_empty() {
        Err(no_answer(std::io::ErrorKind::UnexpectedEof.into()))
    } else {
        Err(HealthError::NotHealthy {
            addr,
            status_line: status_line.to_owned(),
        })
    }
}

/// Whether an HTTP/1.x status line says 200.
fn is_ok(status_line: &str) -> bool {
    let mut parts = status_line.split(' ');
    matches!(parts.next(), Some("HTTP/1.1" | "HTTP/1.0")) && parts.next() == Some("200")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_wildcard_address_is_asked_on_loopback_and_others_as_written() {
        for (configured, asked) in [
            ("0.0.0.0:9090", "127.0.0.1:9090"),
            ("[::]:9090", "[::1]:9090"),
            ("10.1.2.3:9090", "10.1.2.3:9090"),
            ("127.0.0.1:9999", "127.0.0.1:9999"),
        ] {
            let configured: SocketAddr = configured.parse().expect("addr");
            assert_eq!(on_loopback(configured).to_string(), asked);
        }
    }

    #[test]
    fn only_a_200_status_line_is_healthy() {
        assert!(is_ok("HTTP/1.1 200 OK"));
        assert!(is_ok("HTTP/1.0 200"));
        for line in [
            "HTTP/1.1 503 Service Unavailable",
            "HTTP/1.1 2000 OK",
            "HTTP/2 200",
            "SSH-2.0-OpenSSH_9.2",
            "",
        ] {
            assert!(!is_ok(line), "{line}");
        }
    }
}
