//! `gateway.toml`: a raw serde layer mirroring the file, turned into typed, validated [`Config`].
//!
//! Every default lives here, documented on its constant and on the field it fills. Messages name
//! the route and the key, and say what is expected instead.
//!
//! - [`admin`]: `[admin]`, the admin listener's address;
//! - [`log`]: `[log]`, how log lines are written;
//! - [`raw`]: the serde structs, unknown keys refused, and the table of which key belongs to
//!   which mode;
//! - [`cidr`]: the address blocks of `trusted_proxies`;
//! - [`units`]: durations and sizes;
//! - [`secret_source`]: `secret_env` / `secret_file`, and refusing a secret in the file;
//! - [`signing`]: `[signing]` and its per-route overrides;
//! - [`route`]: a type per route kind, built and validated;
//! - [`access`]: who may get a signature: `tasks`, `authorize_url` and its settings;
//! - [`canary`]: `canary_handle` and its settings.

pub mod access;
pub mod admin;
pub mod canary;
pub mod cdn;
pub mod cidr;
pub mod log;
mod raw;
pub mod route;
pub mod scheme;
pub mod secret_source;
pub mod signing;
pub mod units;

use std::collections::HashSet;
use std::net::{IpAddr, SocketAddr};
use std::num::NonZeroUsize;
use std::path::{Path, PathBuf};
use std::time::Duration;

pub use access::Authorize;
pub use admin::AdminConfig;
pub use canary::Canary;
pub use cdn::SiteCdn;
pub use cidr::Cidr;
pub use log::{LogConfig, LogFormat};
pub use route::{
    AppKey, DEFAULT_INLINE_TYPES, Fetch, FileServing, MAX_EXPIRY_GRACE, Mode, OnOverflow,
    ProxyRoute, RedirectRoute, RewriteRules, Route, RouteKind, SiteRoute, Timeouts,
    UploadPolicyRoute, Upstream, VerifyChecks, VerifyRoute,
};
pub use scheme::{SchemeConfig, TokenCookie};
pub use secret_source::SecretsNeeded;
pub use signing::{Rotation, SecretRole, Signing};

use raw::RawConfig;
use secret_source::{refuse_inline_secrets, world_readable_mode};
use units::{parse_duration, parse_size};

/// Default listen address.
pub const DEFAULT_LISTEN: &str = "127.0.0.1:8080";
/// Default time a handed-out URL stays valid at least.
pub const DEFAULT_TTL: Duration = Duration::from_secs(3600);
/// Default expiry rounding.
pub const DEFAULT_BUCKET: Duration = Duration::from_secs(300);
/// Default `max_clock_skew`: an upstream `Date` further than this from the local clock is
/// logged as a warning.
pub const DEFAULT_MAX_CLOCK_SKEW: Duration = Duration::from_secs(30);
/// Longest `ttl`: URLs valid for longer than this are refused by `check`.
pub const MAX_TTL: Duration = Duration::from_secs(30 * 24 * 3600);
/// Longest `bucket` (and never longer than `ttl`).
pub const MAX_BUCKET: Duration = Duration::from_secs(24 * 3600);
/// Default credential cache entries per route.
pub const DEFAULT_CACHE_SIZE: usize = 100_000;
/// Default most client connections served at once; further ones wait in the kernel's backlog.
pub const DEFAULT_MAX_CONNECTIONS: usize = 10_000;
/// Default time a client has to send a request's headers.
pub const DEFAULT_HEADER_READ_TIMEOUT: Duration = Duration::from_secs(10);
/// Default largest request head (request line and headers) a client may send.
pub const DEFAULT_MAX_HEADER_BYTES: u64 = 64 * 1024;
/// Default `websocket_idle_timeout`: nginx's `proxy_read_timeout` is 60s and is usually raised
/// for WebSockets; apps ping every 25-30s.
pub const DEFAULT_WEBSOCKET_IDLE_TIMEOUT: Duration = Duration::from_secs(120);
/// Default `max_response_headers` of a site route: hyper's own default is 100, which real
/// sites pass (a dozen `Set-Cookie`s, CSP reports, tracing headers).
pub const DEFAULT_MAX_RESPONSE_HEADERS: usize = 500;
/// Default `max_response_headers` of a proxy route: a CDN's file answer carries a few dozen.
/// It is hyper's own limit, the one that costs nothing per answer: any other makes hyper fill
/// two arrays of that many entries for every answer's head (about 4,900 instructions at 500).
pub const DEFAULT_PROXY_MAX_RESPONSE_HEADERS: usize = 100;
/// Default time in-flight requests get to finish after SIGINT/SIGTERM.
pub const DEFAULT_SHUTDOWN_GRACE: Duration = Duration::from_secs(30);
/// Default time to open a connection to an upstream.
pub const DEFAULT_CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
/// Default longest stall of a write to a client before it is disconnected (nginx's default).
pub const DEFAULT_SEND_TIMEOUT: Duration = Duration::from_secs(60);

/// Default `client_body_timeout`.
pub const DEFAULT_CLIENT_BODY_TIMEOUT: Duration = Duration::from_secs(30);
/// Default time from sending a request upstream to its response headers.
pub const DEFAULT_RESPONSE_TIMEOUT: Duration = Duration::from_secs(30);
/// Default longest pause between two pieces of an upstream body.
pub const DEFAULT_BODY_IDLE_TIMEOUT: Duration = Duration::from_secs(30);
/// Default `max_upstream_connections`: requests in flight to one route's upstream, per worker.
pub const DEFAULT_MAX_UPSTREAM_CONNECTIONS: usize = 1024;
/// Default `upstream_keepalive`: idle connections one route keeps to its upstream, per worker
/// (nginx's `keepalive` is typically 32 to 64).
pub const DEFAULT_UPSTREAM_KEEPALIVE: usize = 32;
/// Default decoded bytes of one site answer that are rewritten.
pub const DEFAULT_REWRITE_LIMIT: u64 = 64 * 1024 * 1024;
/// Default largest request body a site route forwards.
pub const DEFAULT_MAX_REQUEST_BODY: u64 = 10 * 1024 * 1024;
/// Default time the `authorize_url` service has to answer.
pub const DEFAULT_AUTHORIZE_TIMEOUT: Duration = Duration::from_secs(2);
/// Default host whose URLs site routes sign.
pub const DEFAULT_REWRITE_HOST: &str = "cdn.filestackcontent.com";

/// Why a configuration cannot be used. The message names the key and the reason.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The file could not be read.
    #[error("cannot read {path}: {source}")]
    Read {
        /// The config file.
        path: PathBuf,
        /// What the OS said.
        #[source]
        source: std::io::Error,
    },
    /// Not TOML, an unknown key, or a value of the wrong type (the message points at the key).
    #[error("{0}")]
    Syntax(String),
    /// A key whose value is not acceptable.
    #[error("{key}: {reason}")]
    Invalid {
        /// Where: `` `signing.ttl` `` or ``route `images`: `upstream` ``.
        key: String,
        /// Why.
        reason: String,
    },
    /// The same error, in a named file.
    #[error("{path}: {inner}")]
    InFile {
        /// The config file.
        path: PathBuf,
        /// The error.
        #[source]
        inner: Box<ConfigError>,
    },
}

fn invalid(key: impl Into<String>, reason: impl Into<String>) -> ConfigError {
    ConfigError::Invalid {
        key: key.into(),
        reason: reason.into(),
    }
}

/// The whole gateway configuration, valid by construction.
#[derive(Debug, Clone)]
pub struct Config {
    /// Listener settings.
    pub server: ServerConfig,
    /// `[admin]`: the admin listener, when `listen` is set.
    pub admin: Option<AdminConfig>,
    /// `[log]`: how log lines are written.
    pub log: LogConfig,
    /// Routes in file order (the router picks by longest prefix).
    pub routes: Vec<Route>,
    /// Things that work but should not be so (a world-readable `secret_file`, a secret not
    /// available to `signgate check`): logged at start and printed by `signgate check`.
    pub warnings: Vec<String>,
    /// Every `secret_file` and `secret_next_file` the file names (`[signing]` and routes'),
    /// each once: what `signgate run` watches for a new secret.
    pub secret_files: Vec<PathBuf>,
}

/// `[server]`: bound when the process starts, so a reload that changes any of it is refused.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServerConfig {
    /// `listen`: address to bind. Default `127.0.0.1:8080`.
    pub listen: SocketAddr,
    /// `max_connections`: client connections each worker serves at once; more wait in the
    /// kernel backlog. Default 10000.
    pub max_connections: NonZeroUsize,
    /// `header_read_timeout`: time a client has to send request headers, and the longest a
    /// connection (either version) may have no request in flight. Default 10s.
    pub header_read_timeout: Duration,
    /// `shutdown_grace`: time in-flight requests get after SIGINT/SIGTERM. Default 30s.
    pub shutdown_grace: Duration,
    /// `send_timeout`: longest a write to a client may stall (a client that stops reading);
    /// then the connection is closed (over HTTP/2, the unread stream is dropped) and its
    /// upstream connection freed. Default 60s.
    pub send_timeout: Duration,
    /// `client_body_timeout`: longest a client may pause while sending a request body; then
    /// 408 (or, once the body streams upstream, the request is cut). Default 30s.
    pub client_body_timeout: Duration,
    /// `max_header_bytes`: largest request head; larger ones get 431. Default 64KiB (at least
    /// 8KiB).
    pub max_header_bytes: usize,
    /// `workers`: single-threaded runtimes, each with its own `SO_REUSEPORT` listener. Default:
    /// one per core the process may run on.
    pub workers: NonZeroUsize,
    /// `trusted_proxies`: peers (CIDR blocks) whose `X-Forwarded-*`, `Forwarded` and
    /// `X-Real-IP` are kept and extended; from any other peer they are replaced. Default: none.
    pub trusted_proxies: Vec<Cidr>,
    /// `pid_file`: where `signgate run` writes its process id (and removes it on a clean exit),
    /// for `signgate reload` to find. Default none.
    pub pid_file: Option<PathBuf>,
    /// `tls_cert` and `tls_key`: when set (both or neither), the listener speaks TLS. Default
    /// none: plain HTTP/1.1 and h2c.
    pub tls: Option<TlsFiles>,
}

/// `[server] tls_cert` and `tls_key`: PEM files, read at start and on every reload.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TlsFiles {
    /// `tls_cert`: the certificate chain, leaf first.
    pub cert: PathBuf,
    /// `tls_key`: the private key (PKCS#8, PKCS#1 or SEC1).
    pub key: PathBuf,
}

impl ServerConfig {
    /// Whether a connection from `peer` comes from a trusted proxy.
    pub fn trusts(&self, peer: IpAddr) -> bool {
        self.trusted_proxies
            .iter()
            .any(|block| block.contains(peer))
    }
}

impl Config {
    /// Reads and validates a config file to serve from: secrets come from the process
    /// environment or files, and must be there.
    pub fn load(path: &Path) -> Result<Self, ConfigError> {
        Self::load_with(path, SecretsNeeded::Required)
    }

    /// [`Config::load`], with a choice of what a secret that is not available here means.
    pub fn load_with(path: &Path, needed: SecretsNeeded) -> Result<Self, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: path.to_owned(),
            source,
        })?;
        Self::parse(&text, &|name| std::env::var(name).ok(), needed).map_err(|inner| {
            ConfigError::InFile {
                path: path.to_owned(),
                inner: Box::new(inner),
            }
        })
    }

    /// Parses and validates TOML text; `env` looks up environment variables (for `secret_env`),
    /// and every secret must be there.
    pub fn from_toml_str(
        text: &str,
        env: impl Fn(&str) -> Option<String>,
    ) -> Result<Self, ConfigError> {
        Self::parse(text, &env, SecretsNeeded::Required)
    }

    /// Parses and validates TOML text, with a choice of what a missing secret means.
    pub fn parse(
        text: &str,
        env: &dyn Fn(&str) -> Option<String>,
        needed: SecretsNeeded,
    ) -> Result<Self, ConfigError> {
        let table: toml::Table =
            toml::from_str(text).map_err(|e| ConfigError::Syntax(e.to_string()))?;
        refuse_inline_secrets(&table)?;
        let raw: RawConfig =
            toml::from_str(text).map_err(|e| ConfigError::Syntax(e.to_string()))?;
        Self::from_raw(raw, env, needed)
    }

    /// The route called `name`.
    pub fn route(&self, name: &str) -> Option<&Route> {
        self.routes.iter().find(|r| r.name == name)
    }

    fn from_raw(
        raw: RawConfig,
        env: &dyn Fn(&str) -> Option<String>,
        needed: SecretsNeeded,
    ) -> Result<Self, ConfigError> {
        if raw.routes.is_empty() {
            return Err(invalid("`route`", "no routes: add at least one [[route]]"));
        }
        warn_of_ignored_json_keys(&raw);
        let mut secret_files: Vec<(String, PathBuf)> = Vec::new();
        for (key, path) in [
            ("secret_file", &raw.signing.secret_file),
            ("secret_next_file", &raw.signing.secret_next_file),
        ] {
            if let Some(path) = path {
                secret_files.push((format!("`signing.{key}`"), path.clone()));
            }
        }
        for route in &raw.routes {
            for (key, path) in [
                ("secret_file", &route.secret_file),
                ("secret_next_file", &route.secret_next_file),
            ] {
                if let Some(path) = path {
                    secret_files.push((format!("route `{}`: `{key}`", route.name), path.clone()));
                }
            }
            for cdn in route.cdn.iter().flatten() {
                if let Some(path) = &cdn.secret_file {
                    secret_files.push((
                        format!("route `{}`: [[route.cdn]] `secret_file`", route.name),
                        path.clone(),
                    ));
                }
            }
        }
        let mut warnings: Vec<String> = secret_files
            .iter()
            .filter_map(|(key, path)| {
                let mode = world_readable_mode(path)?;
                Some(format!(
                    "{key}: {} is readable by every user (mode {mode:o}); restrict it, e.g. chmod 600",
                    path.display()
                ))
            })
            .collect();
        let mut watched: Vec<PathBuf> = Vec::new();
        for (_, path) in secret_files {
            if !watched.contains(&path) {
                watched.push(path);
            }
        }
        let mut names = HashSet::new();
        let mut prefixes = HashSet::new();
        let mut routes = Vec::with_capacity(raw.routes.len());
        for raw_route in raw.routes {
            let (route, warning) = route::build_route(raw_route, &raw.signing, env, needed)?;
            if let Some(warning) = warning
                && !warnings.contains(&warning)
            {
                warnings.push(warning);
            }
            if !names.insert(route.name.clone()) {
                return Err(invalid(
                    format!("route `{}`: `name`", route.name),
                    "is used by another route",
                ));
            }
            if !prefixes.insert(route.prefix.clone()) {
                return Err(invalid(
                    format!("route `{}`: `prefix`", route.name),
                    format!("{:?} is used by another route", route.prefix),
                ));
            }
            warnings.extend(route::unanchored_pattern_warnings(&route));
            routes.push(route);
        }
        let server = build_server(&raw.server)?;
        let admin = admin::build_admin(raw.admin.as_ref(), server.listen)?;
        let log = LogConfig {
            format: raw.log.format.unwrap_or_default(),
        };
        Ok(Self {
            server,
            admin,
            log,
            routes,
            warnings,
            secret_files: watched,
        })
    }
}

/// `json_rewrite_limit` and `json_hold_budget` bounded JSON answers held whole; JSON now
/// streams, so they are accepted (old configs still load) but do nothing: one warning each.
fn warn_of_ignored_json_keys(raw: &RawConfig) {
    if raw.server.json_hold_budget.is_some() {
        tracing::warn!(
            "`server.json_hold_budget` is ignored: JSON answers are now rewritten as they stream, bounded by `rewrite_limit`"
        );
    }
    if raw.routes.iter().any(|r| r.json_rewrite_limit.is_some()) {
        tracing::warn!(
            "`json_rewrite_limit` is ignored: JSON answers are now rewritten as they stream, bounded by `rewrite_limit`"
        );
    }
}

fn build_server(server: &raw::RawServer) -> Result<ServerConfig, ConfigError> {
    let listen = server.listen.as_deref().unwrap_or(DEFAULT_LISTEN);
    let listen = listen.parse().map_err(|_| {
        invalid(
            "`server.listen`",
            format!("must be an address such as \"127.0.0.1:8080\", got {listen:?}"),
        )
    })?;
    let max_connections =
        NonZeroUsize::new(server.max_connections.unwrap_or(DEFAULT_MAX_CONNECTIONS))
            .ok_or_else(|| invalid("`server.max_connections`", "must be at least 1"))?;
    let max_header_bytes = match &server.max_header_bytes {
        None => DEFAULT_MAX_HEADER_BYTES,
        Some(size) => parse_size(size).map_err(|r| invalid("`server.max_header_bytes`", r))?,
    };
    if !(8192..=16 * 1024 * 1024).contains(&max_header_bytes) {
        return Err(invalid(
            "`server.max_header_bytes`",
            "must be between 8KiB and 16MiB",
        ));
    }
    let max_header_bytes = usize::try_from(max_header_bytes).unwrap_or(usize::MAX);
    let cores = std::thread::available_parallelism().map_or(1, NonZeroUsize::get);
    let workers = NonZeroUsize::new(server.workers.unwrap_or(cores))
        .ok_or_else(|| invalid("`server.workers`", "must be at least 1"))?;
    let duration = |text: Option<&str>, default: Duration, key: &str| {
        text.map_or(Ok(default), |t| {
            parse_duration(t).map_err(|r| invalid(key, r))
        })
    };
    let trusted_proxies = server
        .trusted_proxies
        .iter()
        .flatten()
        .map(|entry| {
            entry
                .parse()
                .map_err(|r| invalid("`server.trusted_proxies`", r))
        })
        .collect::<Result<_, _>>()?;
    Ok(ServerConfig {
        listen,
        max_connections,
        header_read_timeout: duration(
            server.header_read_timeout.as_deref(),
            DEFAULT_HEADER_READ_TIMEOUT,
            "`server.header_read_timeout`",
        )?,
        shutdown_grace: duration(
            server.shutdown_grace.as_deref(),
            DEFAULT_SHUTDOWN_GRACE,
            "`server.shutdown_grace`",
        )?,
        send_timeout: duration(
            server.send_timeout.as_deref(),
            DEFAULT_SEND_TIMEOUT,
            "`server.send_timeout`",
        )?,
        client_body_timeout: duration(
            server.client_body_timeout.as_deref(),
            DEFAULT_CLIENT_BODY_TIMEOUT,
            "`server.client_body_timeout`",
        )?,
        workers,
        max_header_bytes,
        trusted_proxies,
        pid_file: match &server.pid_file {
            Some(path) if path.as_os_str().is_empty() => {
                return Err(invalid(
                    "`server.pid_file`",
                    "must be a file path, got an empty string",
                ));
            }
            other => other.clone(),
        },
        tls: build_tls(server)?,
    })
}

/// `tls_cert` and `tls_key`: both or neither. The files are read when the listener's TLS is
/// built ([`crate::tls`]), so that a reload re-reads them.
fn build_tls(server: &raw::RawServer) -> Result<Option<TlsFiles>, ConfigError> {
    let path = |p: &Option<PathBuf>, key: &str| match p {
        Some(path) if path.as_os_str().is_empty() => {
            Err(invalid(key, "must be a file path, got an empty string"))
        }
        other => Ok(other.clone()),
    };
    let cert = path(&server.tls_cert, "`server.tls_cert`")?;
    let key = path(&server.tls_key, "`server.tls_key`")?;
    match (cert, key) {
        (Some(cert), Some(key)) => Ok(Some(TlsFiles { cert, key })),
        (None, None) => Ok(None),
        (Some(_), None) => Err(invalid(
            "`server.tls_key`",
            "missing: `tls_cert` is set, and TLS needs both `tls_cert` and `tls_key`",
        )),
        (None, Some(_)) => Err(invalid(
            "`server.tls_cert`",
            "missing: `tls_key` is set, and TLS needs both `tls_cert` and `tls_key`",
        )),
    }
}
