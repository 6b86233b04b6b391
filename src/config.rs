//! `gateway.toml`: a raw serde layer mirroring the file, turned into typed, validated [`Config`].
//!
//! Every default lives here, documented on its field. Messages name the route and the key.

use std::collections::HashSet;
use std::net::SocketAddr;
use std::num::NonZeroUsize;
use std::path::{Path, PathBuf};
use std::time::Duration;

use http::Uri;
use serde::Deserialize;

use crate::filelink::UrlStyle;
use crate::policy::Call;
use crate::secret::Secret;

/// Default listen address.
pub const DEFAULT_LISTEN: &str = "127.0.0.1:8080";
/// Default time a handed-out URL stays valid at least.
pub const DEFAULT_TTL: Duration = Duration::from_secs(3600);
/// Default expiry rounding.
pub const DEFAULT_BUCKET: Duration = Duration::from_secs(300);
/// Default credential cache entries per route.
pub const DEFAULT_CACHE_SIZE: usize = 100_000;
/// Default most client connections served at once; further ones wait in the kernel's backlog.
pub const DEFAULT_MAX_CONNECTIONS: usize = 10_000;
/// Default time a client has to send a request's headers.
pub const DEFAULT_HEADER_READ_TIMEOUT: Duration = Duration::from_secs(10);
/// Default largest request head (request line and headers) a client may send.
pub const DEFAULT_MAX_HEADER_BYTES: u64 = 64 * 1024;
/// Default time in-flight requests get to finish after SIGINT/SIGTERM.
pub const DEFAULT_SHUTDOWN_GRACE: Duration = Duration::from_secs(30);
/// Default time to open a connection to an upstream.
pub const DEFAULT_CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
/// Default longest stall of a write to a client before it is disconnected (nginx's default).
pub const DEFAULT_SEND_TIMEOUT: Duration = Duration::from_secs(60);
/// Default time from sending a request upstream to its response headers.
pub const DEFAULT_RESPONSE_TIMEOUT: Duration = Duration::from_secs(30);
/// Default longest pause between two pieces of an upstream body.
pub const DEFAULT_BODY_IDLE_TIMEOUT: Duration = Duration::from_secs(30);
/// Default `max_upstream_connections`: requests in flight to one route's upstream, per worker.
pub const DEFAULT_MAX_UPSTREAM_CONNECTIONS: usize = 1024;
/// Default largest JSON answer a site route holds to rewrite; larger ones pass untouched.
pub const DEFAULT_JSON_REWRITE_LIMIT: u64 = 1024 * 1024;
/// Default largest request body a site route forwards.
pub const DEFAULT_MAX_REQUEST_BODY: u64 = 10 * 1024 * 1024;
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
    /// Routes in file order (the router picks by longest prefix).
    pub routes: Vec<Route>,
    /// Things that work but should not be so (a world-readable `secret_file`): logged at start
    /// and printed by `signgate check`.
    pub warnings: Vec<String>,
}

/// `[server]`.
#[derive(Debug, Clone)]
pub struct ServerConfig {
    /// `listen`: address to bind. Default `127.0.0.1:8080`.
    pub listen: SocketAddr,
    /// `max_connections`: client connections each worker serves at once; more wait in the
    /// kernel backlog. Default 10000.
    pub max_connections: NonZeroUsize,
    /// `header_read_timeout`: time a client has to send request headers. Default 10s.
    pub header_read_timeout: Duration,
    /// `shutdown_grace`: time in-flight requests get after SIGINT/SIGTERM. Default 30s.
    pub shutdown_grace: Duration,
    /// `send_timeout`: longest a write to a client may stall (a client that stops reading);
    /// then the connection is closed (over HTTP/2, the unread stream is dropped) and its
    /// upstream connection freed. Default 60s.
    pub send_timeout: Duration,
    /// `max_header_bytes`: largest request head; larger ones get 431. Default 64KiB (at least
    /// 8KiB).
    pub max_header_bytes: usize,
    /// `workers`: single-threaded runtimes, each with its own `SO_REUSEPORT` listener. Default:
    /// one per core the process may run on.
    pub workers: NonZeroUsize,
}

/// Upstream timeouts of one route.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Timeouts {
    /// `connect_timeout`: opening a connection (TCP and TLS). Default 5s.
    pub connect: Duration,
    /// `response_timeout`: from sending the request to the response headers. Default 30s.
    pub response: Duration,
    /// `body_idle_timeout`: longest pause between two pieces of a body. Default 30s.
    pub body_idle: Duration,
}

/// What a route does with a request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// Forward to the CDN with fresh credentials and stream the body back.
    Proxy,
    /// Answer 307 to the signed CDN URL.
    Redirect,
    /// Front a site, signing CDN URLs in its HTML.
    Site,
    /// Hand out an upload policy with the route's limits.
    UploadPolicy,
}

impl Mode {
    /// The spelling used in `gateway.toml`.
    pub fn as_str(self) -> &'static str {
        match self {
            Mode::Proxy => "proxy",
            Mode::Redirect => "redirect",
            Mode::Site => "site",
            Mode::UploadPolicy => "upload-policy",
        }
    }

    fn parse(text: &str) -> Option<Self> {
        [Mode::Proxy, Mode::Redirect, Mode::Site, Mode::UploadPolicy]
            .into_iter()
            .find(|m| m.as_str() == text)
    }

    /// `calls` when the route sets none.
    pub fn default_calls(self) -> Vec<Call> {
        match self {
            Mode::Proxy | Mode::Redirect => vec![Call::Read],
            Mode::Site => vec![Call::Read, Call::Convert],
            Mode::UploadPolicy => vec![Call::Pick, Call::Store],
        }
    }
}

/// An upstream origin: absolute http(s), no query.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Upstream {
    /// The parsed URI.
    pub uri: Uri,
    /// Scheme, authority and base path without a trailing slash: what paths are appended to.
    pub base: String,
}

impl Upstream {
    fn parse(text: &str) -> Result<Self, String> {
        let bad = || format!("must be an absolute http(s) URL, got {text:?}");
        let uri: Uri = text.parse().map_err(|_| bad())?;
        match uri.scheme_str() {
            Some("http" | "https") => {}
            _ => return Err(bad()),
        }
        let host = uri.host().ok_or_else(bad)?;
        if host.is_empty() {
            return Err(bad());
        }
        if uri.query().is_some() {
            return Err(format!("must not have a query, got {text:?}"));
        }
        let base = text.trim_end_matches('/').to_owned();
        Ok(Self { uri, base })
    }

    /// The `host[:port]` of the upstream.
    pub fn authority(&self) -> &str {
        self.uri.authority().map_or("", |a| a.as_str())
    }
}

/// How a route signs.
#[derive(Debug, Clone)]
pub struct Signing {
    /// The app secret (from `secret_env` or `secret_file`).
    pub secret: Secret,
    /// `ttl`: every URL handed out is valid at least this long. Default 1h.
    pub ttl: Duration,
    /// `bucket`: expiries are rounded up to a multiple of this. Default 5m.
    pub bucket: Duration,
    /// `cache_size`: signed credentials kept per route. Default 100000.
    pub cache_size: NonZeroUsize,
    /// `url_style`: query or task form. Default query.
    pub url_style: UrlStyle,
}

/// What a route's policies allow: carried into every policy it signs.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Limits {
    /// `calls`: the policy's `call` list. Default per mode.
    pub calls: Vec<Call>,
    /// `max_size`: largest upload in bytes.
    pub max_size: Option<u64>,
    /// `min_size`: smallest upload in bytes.
    pub min_size: Option<u64>,
    /// `path`: storage path (regular expression) uploads may use.
    pub path: Option<String>,
    /// `container`: storage container (regular expression) uploads may use.
    pub container: Option<String>,
    /// `url`: external URLs (regular expression) that may be transformed.
    pub url: Option<String>,
}

/// One `[[route]]`.
#[derive(Debug, Clone)]
pub struct Route {
    /// `name`: unique, used in logs and by `signgate sign --route`.
    pub name: String,
    /// `prefix`: request paths this route serves (longest prefix wins).
    pub prefix: String,
    /// `mode`.
    pub mode: Mode,
    /// `upstream`: required for proxy, redirect and site routes.
    pub upstream: Option<Upstream>,
    /// Signing settings (from `[signing]`, overridden per route).
    pub signing: Signing,
    /// Policy limits.
    pub limits: Limits,
    /// `rewrite_hosts` (site routes): hosts whose URLs are signed. Default the Filestack CDN.
    pub rewrite_hosts: Vec<String>,
    /// Upstream timeouts.
    pub timeouts: Timeouts,
    /// `ca_file`: extra PEM root certificates trusted for this route's https upstream.
    pub ca_file: Option<PathBuf>,
    /// `json_rewrite_limit` (site routes): largest JSON answer held to sign its URLs. Default 1MiB.
    pub json_rewrite_limit: u64,
    /// `max_request_body` (site routes): largest request body forwarded; larger get 413.
    /// Default 10MiB.
    pub max_request_body: u64,
    /// `cors_origins` (upload-policy routes): origins whose pages may fetch the policy (`"*"`
    /// for any). Default none: same-origin pages only.
    pub cors_origins: Vec<String>,
    /// `max_upstream_connections` (proxy and site routes): requests in flight to the upstream
    /// at once, per worker (over HTTP/1.1 each holds its own connection; over HTTP/2 they share
    /// one); more wait up to `response_timeout`, then get 503. Idle pooled connections are
    /// capped at the same number. Default 1024.
    pub max_upstream_connections: NonZeroUsize,
}

impl Route {
    /// Whether requests on this route are fetched from its upstream (proxy and site routes).
    pub fn fetches_upstream(&self) -> bool {
        matches!(self.mode, Mode::Proxy | Mode::Site)
    }
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawConfig {
    #[serde(default)]
    server: RawServer,
    #[serde(default)]
    signing: RawSigning,
    #[serde(default, rename = "route")]
    routes: Vec<RawRoute>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawServer {
    listen: Option<String>,
    max_connections: Option<usize>,
    header_read_timeout: Option<String>,
    shutdown_grace: Option<String>,
    send_timeout: Option<String>,
    workers: Option<usize>,
    max_header_bytes: Option<RawSize>,
}

#[derive(Debug, Default, Deserialize, Clone)]
#[serde(deny_unknown_fields)]
struct RawSigning {
    /// Present only to refuse it with a clear message.
    secret: Option<toml::Value>,
    secret_env: Option<String>,
    secret_file: Option<PathBuf>,
    ttl: Option<String>,
    bucket: Option<String>,
    cache_size: Option<usize>,
    url_style: Option<UrlStyle>,
}

#[derive(Debug, Deserialize, Clone)]
#[serde(untagged)]
enum RawSize {
    Bytes(u64),
    Text(String),
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawRoute {
    name: String,
    prefix: String,
    mode: String,
    upstream: Option<String>,
    calls: Option<Vec<String>>,
    max_size: Option<RawSize>,
    min_size: Option<RawSize>,
    path: Option<String>,
    container: Option<String>,
    url: Option<String>,
    rewrite_hosts: Option<Vec<String>>,
    connect_timeout: Option<String>,
    response_timeout: Option<String>,
    body_idle_timeout: Option<String>,
    ca_file: Option<PathBuf>,
    json_rewrite_limit: Option<RawSize>,
    cors_origins: Option<Vec<String>>,
    max_request_body: Option<RawSize>,
    max_upstream_connections: Option<usize>,
    // The [signing] keys, each overridable per route (serde's flatten cannot deny unknown keys).
    secret: Option<toml::Value>,
    secret_env: Option<String>,
    secret_file: Option<PathBuf>,
    ttl: Option<String>,
    bucket: Option<String>,
    cache_size: Option<usize>,
    url_style: Option<UrlStyle>,
}

impl RawRoute {
    fn signing_overrides(&self) -> RawSigning {
        RawSigning {
            secret: self.secret.clone(),
            secret_env: self.secret_env.clone(),
            secret_file: self.secret_file.clone(),
            ttl: self.ttl.clone(),
            bucket: self.bucket.clone(),
            cache_size: self.cache_size,
            url_style: self.url_style,
        }
    }
}

impl Config {
    /// Reads and validates a config file; secrets come from the process environment or files.
    pub fn load(path: &Path) -> Result<Self, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: path.to_owned(),
            source,
        })?;
        Self::from_toml_str(&text, |name| std::env::var(name).ok()).map_err(|inner| {
            ConfigError::InFile {
                path: path.to_owned(),
                inner: Box::new(inner),
            }
        })
    }

    /// Parses and validates TOML text; `env` looks up environment variables (for `secret_env`).
    pub fn from_toml_str(
        text: &str,
        env: impl Fn(&str) -> Option<String>,
    ) -> Result<Self, ConfigError> {
        let raw: RawConfig =
            toml::from_str(text).map_err(|e| ConfigError::Syntax(e.to_string()))?;
        Self::from_raw(raw, &env)
    }

    /// The route called `name`.
    pub fn route(&self, name: &str) -> Option<&Route> {
        self.routes.iter().find(|r| r.name == name)
    }

    fn from_raw(raw: RawConfig, env: &dyn Fn(&str) -> Option<String>) -> Result<Self, ConfigError> {
        let listen = raw.server.listen.as_deref().unwrap_or(DEFAULT_LISTEN);
        let listen = listen.parse().map_err(|_| {
            invalid(
                "`server.listen`",
                format!("must be an address such as \"127.0.0.1:8080\", got {listen:?}"),
            )
        })?;
        if raw.signing.secret.is_some() {
            return Err(secret_in_toml("`signing.secret`"));
        }
        if raw.routes.is_empty() {
            return Err(invalid("`route`", "no routes: add at least one [[route]]"));
        }
        let mut secret_files: Vec<(String, PathBuf)> = Vec::new();
        if let Some(path) = &raw.signing.secret_file {
            secret_files.push(("`signing.secret_file`".to_owned(), path.clone()));
        }
        for route in &raw.routes {
            if let Some(path) = &route.secret_file {
                secret_files.push((
                    format!("route `{}`: `secret_file`", route.name),
                    path.clone(),
                ));
            }
        }
        let warnings = secret_files
            .iter()
            .filter_map(|(key, path)| {
                let mode = world_readable_mode(path)?;
                Some(format!(
                    "{key}: {} is readable by every user (mode {mode:o}); restrict it, e.g. chmod 600",
                    path.display()
                ))
            })
            .collect();
        let mut names = HashSet::new();
        let mut prefixes = HashSet::new();
        let mut routes = Vec::with_capacity(raw.routes.len());
        for raw_route in raw.routes {
            let route = build_route(raw_route, &raw.signing, env)?;
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
            routes.push(route);
        }
        let server = &raw.server;
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
        Ok(Self {
            server: ServerConfig {
                listen,
                max_connections,
                header_read_timeout: optional_duration(
                    server.header_read_timeout.as_deref(),
                    DEFAULT_HEADER_READ_TIMEOUT,
                    "`server.header_read_timeout`",
                )?,
                shutdown_grace: optional_duration(
                    server.shutdown_grace.as_deref(),
                    DEFAULT_SHUTDOWN_GRACE,
                    "`server.shutdown_grace`",
                )?,
                send_timeout: optional_duration(
                    server.send_timeout.as_deref(),
                    DEFAULT_SEND_TIMEOUT,
                    "`server.send_timeout`",
                )?,
                workers,
                max_header_bytes,
            },
            routes,
            warnings,
        })
    }
}

fn secret_in_toml(key: &str) -> ConfigError {
    invalid(
        key,
        "secrets are never read from the config file; use `secret_env` or `secret_file`",
    )
}

fn build_route(
    raw: RawRoute,
    defaults: &RawSigning,
    env: &dyn Fn(&str) -> Option<String>,
) -> Result<Route, ConfigError> {
    let name = raw.name.clone();
    if name.trim().is_empty() {
        return Err(invalid("route: `name`", "must not be empty"));
    }
    let key = |k: &str| format!("route `{name}`: `{k}`");
    if raw.secret.is_some() {
        return Err(secret_in_toml(&key("secret")));
    }
    let mode = Mode::parse(&raw.mode).ok_or_else(|| {
        invalid(
            key("mode"),
            format!(
                "must be one of proxy, redirect, site, upload-policy, got {:?}",
                raw.mode
            ),
        )
    })?;
    let prefix = check_prefix(&raw.prefix).map_err(|reason| invalid(key("prefix"), reason))?;

    let upstream = match (&raw.upstream, mode) {
        (None, Mode::UploadPolicy) => None,
        (None, _) => {
            return Err(invalid(
                key("upstream"),
                format!("is required for {} routes", mode.as_str()),
            ));
        }
        (Some(_), Mode::UploadPolicy) => {
            return Err(invalid(
                key("upstream"),
                "does not apply to upload-policy routes",
            ));
        }
        (Some(text), _) => Some(Upstream::parse(text).map_err(|r| invalid(key("upstream"), r))?),
    };
    let rewrite_hosts = match (raw.rewrite_hosts.clone(), mode) {
        (None, _) => vec![DEFAULT_REWRITE_HOST.to_owned()],
        (Some(hosts), Mode::Site) => {
            for host in &hosts {
                if host.is_empty() || host.contains(['/', ' ', '?', '#', '@']) {
                    return Err(invalid(
                        key("rewrite_hosts"),
                        format!(
                            "must hold host names such as \"cdn.filestackcontent.com\", got {host:?}"
                        ),
                    ));
                }
            }
            hosts.into_iter().map(|h| h.to_ascii_lowercase()).collect()
        }
        (Some(_), _) => return Err(invalid(key("rewrite_hosts"), "only applies to site routes")),
    };

    let calls = match &raw.calls {
        None => mode.default_calls(),
        Some(names) => {
            let mut calls = Vec::with_capacity(names.len());
            for call in names {
                let call: Call = call
                    .parse()
                    .map_err(|e| invalid(key("calls"), format!("{e}")))?;
                if !calls.contains(&call) {
                    calls.push(call);
                }
            }
            if calls.is_empty() {
                return Err(invalid(key("calls"), "must name at least one call"));
            }
            calls
        }
    };
    let max_size = raw
        .max_size
        .as_ref()
        .map(|s| parse_size(s).map_err(|r| invalid(key("max_size"), r)))
        .transpose()?;
    let min_size = raw
        .min_size
        .as_ref()
        .map(|s| parse_size(s).map_err(|r| invalid(key("min_size"), r)))
        .transpose()?;
    if let (Some(min), Some(max)) = (min_size, max_size)
        && min > max
    {
        return Err(invalid(
            key("min_size"),
            format!("{min} bytes is larger than `max_size` ({max} bytes)"),
        ));
    }

    let timeouts = Timeouts {
        connect: optional_duration(
            raw.connect_timeout.as_deref(),
            DEFAULT_CONNECT_TIMEOUT,
            &key("connect_timeout"),
        )?,
        response: optional_duration(
            raw.response_timeout.as_deref(),
            DEFAULT_RESPONSE_TIMEOUT,
            &key("response_timeout"),
        )?,
        body_idle: optional_duration(
            raw.body_idle_timeout.as_deref(),
            DEFAULT_BODY_IDLE_TIMEOUT,
            &key("body_idle_timeout"),
        )?,
    };
    if raw.ca_file.is_some()
        && upstream
            .as_ref()
            .is_none_or(|u| u.uri.scheme_str() != Some("https"))
    {
        return Err(invalid(
            key("ca_file"),
            "only applies to routes with an https upstream",
        ));
    }

    let json_rewrite_limit = site_only_size(
        raw.json_rewrite_limit.as_ref(),
        mode,
        DEFAULT_JSON_REWRITE_LIMIT,
        &key("json_rewrite_limit"),
    )?;
    let max_request_body = site_only_size(
        raw.max_request_body.as_ref(),
        mode,
        DEFAULT_MAX_REQUEST_BODY,
        &key("max_request_body"),
    )?;
    let cors_origins = match (raw.cors_origins.clone(), mode) {
        (None, _) => Vec::new(),
        (Some(origins), Mode::UploadPolicy) => {
            for origin in &origins {
                let valid = origin == "*"
                    || ((origin.starts_with("https://") || origin.starts_with("http://"))
                        && !origin.trim_end_matches('/').contains(['?', '#', ' '])
                        && origin
                            .split("://")
                            .nth(1)
                            .is_some_and(|rest| !rest.is_empty() && !rest.contains('/')));
                if !valid {
                    return Err(invalid(
                        key("cors_origins"),
                        format!(
                            "must hold origins such as \"https://app.example.com\" or \"*\", got {origin:?}"
                        ),
                    ));
                }
            }
            origins
        }
        (Some(_), _) => {
            return Err(invalid(
                key("cors_origins"),
                "only applies to upload-policy routes",
            ));
        }
    };

    let max_upstream_connections = match (raw.max_upstream_connections, mode) {
        (None, _) => NonZeroUsize::new(DEFAULT_MAX_UPSTREAM_CONNECTIONS)
            .ok_or_else(|| invalid(key("max_upstream_connections"), "must be at least 1"))?,
        (Some(n), Mode::Proxy | Mode::Site) => NonZeroUsize::new(n)
            .ok_or_else(|| invalid(key("max_upstream_connections"), "must be at least 1"))?,
        (Some(_), _) => {
            return Err(invalid(
                key("max_upstream_connections"),
                "only applies to proxy and site routes, which fetch from their upstream",
            ));
        }
    };

    let overrides = raw.signing_overrides();
    let signing = build_signing(&overrides, defaults, env, &name)?;
    Ok(Route {
        name,
        prefix,
        mode,
        upstream,
        signing,
        limits: Limits {
            calls,
            max_size,
            min_size,
            path: raw.path,
            container: raw.container,
            url: raw.url,
        },
        rewrite_hosts,
        timeouts,
        ca_file: raw.ca_file,
        json_rewrite_limit,
        cors_origins,
        max_request_body,
        max_upstream_connections,
    })
}

/// A size key that only site routes take.
fn site_only_size(
    raw: Option<&RawSize>,
    mode: Mode,
    default: u64,
    key: &str,
) -> Result<u64, ConfigError> {
    match (raw, mode) {
        (None, _) => Ok(default),
        (Some(size), Mode::Site) => parse_size(size).map_err(|r| invalid(key, r)),
        (Some(_), _) => Err(invalid(key, "only applies to site routes")),
    }
}

fn optional_duration(
    text: Option<&str>,
    default: Duration,
    key: &str,
) -> Result<Duration, ConfigError> {
    text.map_or(Ok(default), |t| {
        parse_duration(t).map_err(|r| invalid(key, r))
    })
}

fn check_prefix(prefix: &str) -> Result<String, String> {
    if !prefix.starts_with('/') {
        return Err(format!("must start with '/', got {prefix:?}"));
    }
    if prefix.contains(['?', '#', ' ', '\\', '%'])
        || prefix.contains("//")
        || prefix.contains("/../")
        || prefix.ends_with("/..")
    {
        return Err(format!("must be a plain path, got {prefix:?}"));
    }
    Ok(prefix.to_owned())
}

fn build_signing(
    route: &RawSigning,
    defaults: &RawSigning,
    env: &dyn Fn(&str) -> Option<String>,
    route_name: &str,
) -> Result<Signing, ConfigError> {
    // Each key comes from the route if set there, else from [signing]; errors say which.
    let pick = |route_value: bool, k: &str| {
        if route_value {
            format!("route `{route_name}`: `{k}`")
        } else {
            format!("`signing.{k}`")
        }
    };
    let secret = if route.secret_env.is_some() || route.secret_file.is_some() {
        load_secret(route, env, &format!("route `{route_name}`: "))?
    } else if defaults.secret_env.is_some() || defaults.secret_file.is_some() {
        load_secret(defaults, env, "signing.")?
    } else {
        return Err(invalid(
            format!("route `{route_name}`"),
            "no secret: set `secret_env` or `secret_file` in [signing] or in the route",
        ));
    };
    let ttl_text = route.ttl.as_deref().or(defaults.ttl.as_deref());
    let ttl = match ttl_text {
        None => DEFAULT_TTL,
        Some(t) => parse_duration(t).map_err(|r| invalid(pick(route.ttl.is_some(), "ttl"), r))?,
    };
    let bucket_text = route.bucket.as_deref().or(defaults.bucket.as_deref());
    let bucket = match bucket_text {
        None => DEFAULT_BUCKET,
        Some(t) => {
            parse_duration(t).map_err(|r| invalid(pick(route.bucket.is_some(), "bucket"), r))?
        }
    };
    if bucket.as_secs() == 0 || bucket.subsec_nanos() != 0 {
        return Err(invalid(
            pick(route.bucket.is_some(), "bucket"),
            "must be a whole number of seconds, at least 1s",
        ));
    }
    let cache_size = route
        .cache_size
        .or(defaults.cache_size)
        .unwrap_or(DEFAULT_CACHE_SIZE);
    let cache_size = NonZeroUsize::new(cache_size).ok_or_else(|| {
        invalid(
            pick(route.cache_size.is_some(), "cache_size"),
            "must be at least 1",
        )
    })?;
    Ok(Signing {
        secret,
        ttl,
        bucket,
        cache_size,
        url_style: route
            .url_style
            .or(defaults.url_style)
            .unwrap_or(UrlStyle::Query),
    })
}

fn load_secret(
    raw: &RawSigning,
    env: &dyn Fn(&str) -> Option<String>,
    at: &str,
) -> Result<Secret, ConfigError> {
    let key = |k: &str| {
        if at.ends_with('.') {
            format!("`{at}{k}`")
        } else {
            format!("{at}`{k}`")
        }
    };
    match (&raw.secret_env, &raw.secret_file) {
        (Some(_), Some(_)) => Err(invalid(
            key("secret_env"),
            "set `secret_env` or `secret_file`, not both",
        )),
        (Some(var), None) => {
            let value = env(var).ok_or_else(|| {
                invalid(
                    key("secret_env"),
                    format!("environment variable {var} is not set"),
                )
            })?;
            Secret::new(value).map_err(|_| {
                invalid(
                    key("secret_env"),
                    format!("environment variable {var} is empty"),
                )
            })
        }
        (None, Some(path)) => {
            let text = std::fs::read_to_string(path).map_err(|e| {
                invalid(
                    key("secret_file"),
                    format!("cannot read {}: {e}", path.display()),
                )
            })?;
            let text = text.strip_suffix('\n').unwrap_or(&text);
            let text = text.strip_suffix('\r').unwrap_or(text);
            Secret::new(text.to_owned())
                .map_err(|_| invalid(key("secret_file"), format!("{} is empty", path.display())))
        }
        (None, None) => Err(invalid(key("secret_env"), "no secret configured")),
    }
}

/// The file's permission bits when others may read it; `None` otherwise (or off Unix).
fn world_readable_mode(path: &Path) -> Option<u32> {
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(path).ok()?.permissions().mode() & 0o777;
        (mode & 0o004 != 0).then_some(mode)
    }
    #[cfg(not(unix))]
    {
        let _ = path;
        None
    }
}

/// Parses `"90s"`, `"5m"`, `"1h"`, `"2d"` (and combinations such as `"1h 30m"`).
pub fn parse_duration(text: &str) -> Result<Duration, String> {
    humantime::parse_duration(text)
        .map_err(|_| {
            format!("must be a duration such as \"90s\", \"5m\", \"1h\" or \"2d\", got {text:?}")
        })
        .and_then(|d| {
            if d.is_zero() {
                Err(format!("must be longer than zero, got {text:?}"))
            } else {
                Ok(d)
            }
        })
}

fn parse_size(raw: &RawSize) -> Result<u64, String> {
    let text = match raw {
        RawSize::Bytes(n) => return Ok(*n),
        RawSize::Text(text) => text,
    };
    let bad = || {
        format!(
            "must be bytes as an integer, or a size such as \"512KB\", \"1MB\", \"10MiB\", got {text:?}"
        )
    };
    let trimmed = text.trim();
    let split = trimmed
        .find(|c: char| !c.is_ascii_digit())
        .unwrap_or(trimmed.len());
    let (digits, unit) = trimmed.split_at(split);
    let number: u64 = digits.parse().map_err(|_| bad())?;
    let multiplier: u64 = match unit.trim().to_ascii_lowercase().as_str() {
        "" | "b" => 1,
        "kb" => 1000,
        "mb" => 1000_u64.pow(2),
        "gb" => 1000_u64.pow(3),
        "tb" => 1000_u64.pow(4),
        "kib" => 1 << 10,
        "mib" => 1 << 20,
        "gib" => 1 << 30,
        "tib" => 1 << 40,
        _ => return Err(bad()),
    };
    number
        .checked_mul(multiplier)
        .ok_or_else(|| format!("is too large, got {text:?}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_follow_the_usual_convention() {
        let size = |s: &str| parse_size(&RawSize::Text(s.into()));
        assert_eq!(size("512KB"), Ok(512_000));
        assert_eq!(size("1MB"), Ok(1_000_000));
        assert_eq!(size("10MiB"), Ok(10 * 1024 * 1024));
        assert_eq!(size("7"), Ok(7));
        assert_eq!(parse_size(&RawSize::Bytes(42)), Ok(42));
        assert!(size("1XB").is_err());
        assert!(size("MB").is_err());
        assert!(size("99999999999TB").is_err());
    }

    #[test]
    fn durations_are_humane_and_never_zero() {
        assert_eq!(parse_duration("90s"), Ok(Duration::from_secs(90)));
        assert_eq!(parse_duration("5m"), Ok(Duration::from_secs(300)));
        assert_eq!(parse_duration("2d"), Ok(Duration::from_secs(172_800)));
        assert!(parse_duration("0s").is_err());
        assert!(parse_duration("soon").is_err());
    }
}
