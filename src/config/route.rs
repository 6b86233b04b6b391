//! One `[[route]]`: a type per route kind, each holding only what its mode uses, built and
//! validated from the raw layer.

use std::num::NonZeroUsize;
use std::path::PathBuf;
use std::time::Duration;

use http::uri::{Authority, PathAndQuery, Scheme};
use http::{HeaderValue, Uri};

use super::access::{Authorize, build_authorize, build_tasks};
use super::canary::{Canary, build_canary, refuse_on_site};
use super::cdn::{SiteCdn, build_cdns};
use super::raw::{RawRoute, RawSigning};
use super::scheme::{
    SchemeConfig, TokenCookie, build_scheme, build_token_cookie, refuse_token_cookie_off_redirect,
};
use super::secret_source::SecretsNeeded;
use super::signing::{Signing, build_signing};
use super::units::{parse_duration, parse_size};
use super::{
    ConfigError, DEFAULT_BODY_IDLE_TIMEOUT, DEFAULT_CONNECT_TIMEOUT, DEFAULT_MAX_REQUEST_BODY,
    DEFAULT_MAX_RESPONSE_HEADERS, DEFAULT_MAX_UPSTREAM_CONNECTIONS,
    DEFAULT_PROXY_MAX_RESPONSE_HEADERS, DEFAULT_RESPONSE_TIMEOUT, DEFAULT_REWRITE_HOST,
    DEFAULT_REWRITE_LIMIT, DEFAULT_UPSTREAM_KEEPALIVE, DEFAULT_WEBSOCKET_IDLE_TIMEOUT, invalid,
};
use crate::external::SourceList;
use crate::policy::{Call, PolicyLimits, PolicyTemplate};
use crate::tasks::TaskAllowlist;

/// What a route does with a request: its `mode` key.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// Forward to the CDN with fresh credentials and stream the body back.
    Proxy,
    /// Answer 307 to the signed CDN URL.
    Redirect,
    /// Front a site, signing CDN URLs in its answers.
    Site,
    /// Hand out an upload policy with the route's limits.
    UploadPolicy,
    /// Check the credentials a request carries, in front of a private origin, and forward
    /// only valid requests, without their credentials.
    Verify,
}

impl Mode {
    /// Every mode, in the documentation's order.
    pub const ALL: [Mode; 5] = [
        Mode::Proxy,
        Mode::Redirect,
        Mode::Site,
        Mode::UploadPolicy,
        Mode::Verify,
    ];

    /// The spelling used in `gateway.toml`.
    pub fn as_str(self) -> &'static str {
        match self {
            Mode::Proxy => "proxy",
            Mode::Redirect => "redirect",
            Mode::Site => "site",
            Mode::UploadPolicy => "upload-policy",
            Mode::Verify => "verify",
        }
    }

    fn parse(text: &str) -> Option<Self> {
        Mode::ALL.into_iter().find(|m| m.as_str() == text)
    }

    /// `calls` when the route sets none. A verify route signs nothing (the config refuses
    /// `calls` on one); `read` is what `signgate sign --route` writes for it.
    pub fn default_calls(self) -> Vec<Call> {
        match self {
            Mode::Proxy | Mode::Redirect | Mode::Verify => vec![Call::Read],
            Mode::Site => vec![Call::Read, Call::Convert],
            Mode::UploadPolicy => vec![Call::Pick, Call::Store],
        }
    }
}

/// One `[[route]]`, valid by construction.
#[derive(Debug, Clone)]
pub struct Route {
    /// `name`: unique, used in logs and by `signgate sign --route`.
    pub name: String,
    /// `prefix`: request paths this route serves (longest prefix wins, on segment boundaries).
    pub prefix: String,
    /// Signing settings (from `[signing]`, overridden per route).
    pub signing: Signing,
    /// What its policies carry: `calls` (default per mode) and the limits.
    pub policy: PolicyTemplate,
    /// `tasks`: the transformation tasks a file URL may carry to be signed (proxy, redirect and
    /// site routes). Default [`crate::tasks::DEFAULT_TASKS`], read-only ones.
    pub tasks: TaskAllowlist,
    /// `authorize_url` and its settings: asked before signing (proxy, redirect and
    /// upload-policy routes; the config refuses it on a site route). Default none: anyone who
    /// reaches the route gets signatures.
    pub authorize: Option<Authorize>,
    /// `canary_handle` and its settings: a file fetched from the CDN with the route's signing
    /// on a timer (proxy and redirect routes). Default none.
    pub canary: Option<Canary>,
    /// `api_key` and `external_sources`: file references written after the app's API key, and
    /// the external URL sources the route signs (proxy, redirect and site routes). Default
    /// none.
    pub app: Option<AppKey>,
    /// `scheme` and its keys: the signature the route's URLs carry. Default Filestack's.
    pub scheme: SchemeConfig,
    /// The mode and what only that mode uses.
    pub kind: RouteKind,
}

/// The app's public API key, and where external URL sources may be signed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AppKey {
    /// `api_key`: the app's public key (not a secret). A path may start with it
    /// (`/APIKEY/resize=…/HANDLE`, as `client.transform()` writes), and an external source's
    /// URL carries it.
    pub key: String,
    /// `external_sources`: URL prefixes under which external sources are signed, with the
    /// `convert` call and a policy `url` for that one source. Default none: every external
    /// source is refused.
    pub sources: SourceList,
}

impl Route {
    /// The route's mode.
    pub fn mode(&self) -> Mode {
        self.kind.mode()
    }

    /// The upstream, for every mode but upload-policy.
    pub fn upstream(&self) -> Option<&Upstream> {
        match &self.kind {
            RouteKind::Proxy(proxy) => Some(&proxy.fetch.upstream),
            RouteKind::Redirect(redirect) => Some(&redirect.upstream),
            RouteKind::Site(site) => Some(&site.fetch.upstream),
            RouteKind::Verify(verify) => Some(&verify.fetch.upstream),
            RouteKind::UploadPolicy(_) => None,
        }
    }

    /// How the route fetches, for proxy, site and verify routes.
    pub fn fetch(&self) -> Option<&Fetch> {
        match &self.kind {
            RouteKind::Proxy(proxy) => Some(&proxy.fetch),
            RouteKind::Site(site) => Some(&site.fetch),
            RouteKind::Verify(verify) => Some(&verify.fetch),
            RouteKind::Redirect(_) | RouteKind::UploadPolicy(_) => None,
        }
    }
}

/// A route's mode with the settings only that mode has.
#[derive(Debug, Clone)]
pub enum RouteKind {
    /// `proxy`: signs a file reference and streams the file from the upstream.
    Proxy(ProxyRoute),
    /// `redirect`: signs a file reference and answers 307 to it on `upstream`.
    Redirect(RedirectRoute),
    /// `site`: fronts a site and signs the CDN URLs in its answers.
    Site(SiteRoute),
    /// `upload-policy`: hands out the route's upload policy.
    UploadPolicy(UploadPolicyRoute),
    /// `verify`: checks a request's credentials and streams the file from a private origin.
    Verify(VerifyRoute),
}

impl RouteKind {
    /// The mode this kind is.
    pub fn mode(&self) -> Mode {
        match self {
            RouteKind::Proxy(_) => Mode::Proxy,
            RouteKind::Redirect(_) => Mode::Redirect,
            RouteKind::Site(_) => Mode::Site,
            RouteKind::UploadPolicy(_) => Mode::UploadPolicy,
            RouteKind::Verify(_) => Mode::Verify,
        }
    }
}

/// What only a redirect route has.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RedirectRoute {
    /// `upstream`: the CDN the `Location` points at.
    pub upstream: Upstream,
    /// `token_cookie_domain` (Akamai routes): the token goes in a cookie for this domain, and
    /// the `Location` carries none. Default none: the token is in the query.
    pub token_cookie: Option<TokenCookie>,
}

/// How a proxy or site route reaches its upstream.
#[derive(Debug, Clone)]
pub struct Fetch {
    /// `upstream`.
    pub upstream: Upstream,
    /// Upstream timeouts.
    pub timeouts: Timeouts,
    /// `ca_file`: extra PEM root certificates trusted for an https upstream.
    pub ca_file: Option<PathBuf>,
    /// `max_upstream_connections`: requests in flight to the upstream at once, per worker (over
    /// HTTP/1.1 each holds its own connection; over HTTP/2 they share one); more wait up to
    /// `response_timeout`, then get 503. Default 1024.
    pub max_connections: NonZeroUsize,
    /// `upstream_keepalive`: HTTP/1.1 connections kept open while idle, per worker, at most
    /// `max_connections`; past it the oldest close once idle for a second (at the pool's sweep,
    /// every 5 s), so a burst's connections carry the load while it lasts. 0: none kept.
    /// Default 32.
    pub keepalive: usize,
    /// `max_response_headers`: headers an upstream answer may carry; more is a 502 that says
    /// so in the log. Default 100 for a proxy route, 500 for a site route.
    pub max_response_headers: NonZeroUsize,
}

/// What only a proxy route has.
#[derive(Debug, Clone)]
pub struct ProxyRoute {
    /// How the CDN is reached.
    pub fetch: Fetch,
    /// How the files it fetches are served.
    pub serving: FileServing,
}

/// What only a verify route has.
#[derive(Debug, Clone)]
pub struct VerifyRoute {
    /// How the private origin is reached.
    pub fetch: Fetch,
    /// How the files it fetches are served: as a proxy route serves them (they are uploads).
    pub serving: FileServing,
    /// What a request's credentials are held to, besides the signature.
    pub checks: VerifyChecks,
}

/// How a verify route judges credentials, besides the HMAC.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VerifyChecks {
    /// `expired_status`: the status of an answer to an expired policy, a 4xx. Default 403,
    /// as the CDN answers (and a 403 is not cached without being told to, where a 410 is).
    pub expired_status: http::StatusCode,
    /// `expiry_grace`: how long past its expiry a policy is still taken, for clocks a little
    /// apart. Default 0 (as the CDN: expired at its expiry), at most [`MAX_EXPIRY_GRACE`].
    pub expiry_grace: Duration,
    /// `origin_container`: the name of the container (bucket) the origin serves, which a
    /// policy's `container` pattern must match. Default none: a policy that names a container
    /// is refused, since nothing here could say it matches.
    pub origin_container: Option<String>,
}

/// The longest `expiry_grace`: past a few minutes a grace is a longer `ttl`, which belongs on
/// the signer.
pub const MAX_EXPIRY_GRACE: Duration = Duration::from_secs(300);

/// How a proxy route serves files it fetched: the files are uploads, written by anyone the
/// upload route lets in, so they are never served as the site's own pages.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FileServing {
    /// `inline_types`: media types (lowercase, no parameters) shown in the browser; every other
    /// type is served with `Content-Disposition: attachment`. Default png, jpeg, gif, webp, avif.
    pub inline_types: Vec<String>,
    /// `cors_origins`: origins whose pages may read the files with `fetch` (`"*"` for any).
    /// Default none: the CDN's own `Access-Control-*` headers are dropped.
    pub cors_origins: Vec<String>,
}

impl Default for FileServing {
    fn default() -> Self {
        Self {
            inline_types: DEFAULT_INLINE_TYPES.map(str::to_owned).to_vec(),
            cors_origins: Vec::new(),
        }
    }
}

/// Types a proxy route shows inline by default: raster images, which no browser runs.
pub const DEFAULT_INLINE_TYPES: [&str; 5] = [
    "image/png",
    "image/jpeg",
    "image/gif",
    "image/webp",
    "image/avif",
];

/// What only a site route has.
#[derive(Debug, Clone)]
pub struct SiteRoute {
    /// How the site is reached.
    pub fetch: Fetch,
    /// Which URLs in its answers are signed.
    pub rewrite: RewriteRules,
    /// `max_request_body`: largest request body forwarded; larger get 413. Default 10MiB.
    pub max_request_body: u64,
    /// `websockets` (default on) and `websocket_idle_timeout` (default 120s): how long an
    /// upgraded connection may carry nothing either way. `None`: upgrades are refused.
    pub websocket_idle: Option<Duration>,
    /// `preserve_host`: the site gets the client's `Host` (default), not the upstream's
    /// address, as a site behind a reverse proxy expects.
    pub preserve_host: bool,
}

/// Which URLs a site route signs in its answers, and how a rewritten answer leaves.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RewriteRules {
    /// `rewrite_hosts`: hosts whose URLs are signed with the route's own scheme, lowercase.
    /// Default the Filestack CDN.
    pub hosts: Vec<String>,
    /// `[[route.cdn]]`: more hosts, each entry with its own scheme and key. Default none.
    pub cdns: Vec<SiteCdn>,
    /// `rewrite_limit`: decoded bytes of one answer that are rewritten; past them the rest
    /// passes unmodified (its URLs unsigned). Default 64MiB.
    pub rewrite_limit: u64,
    /// `keep_http`: sign `http://` CDN URLs as `http://` (for a CDN without https). Default
    /// false: they are signed as `https://`, so a signature never travels in the clear.
    pub keep_http: bool,
    /// `reflection_guard`: leave unsigned a CDN URL whose handle the request itself names (in
    /// its path or query), so a page that echoes its input cannot be made to sign a handle of
    /// the client's choosing. Default true.
    pub reflection_guard: bool,
    /// `url_attributes`: HTML attributes holding one URL (or CSS) signed besides the built-in
    /// ones, lowercase (`data-hero`, `data-zoom-src`). Default none.
    pub url_attributes: Vec<String>,
    /// `rewrite_overflow`: what happens to an answer that cannot be rewritten in full.
    pub on_overflow: OnOverflow,
    /// `rewrite_javascript`: JavaScript answers up to this many bytes have their CDN URL
    /// string literals signed (past it the rest passes as `rewrite_overflow` says). Default
    /// none: scripts pass untouched.
    pub javascript_limit: Option<u64>,
    /// `compress`: send a rewritten answer compressed in the best of br, zstd and gzip the
    /// client accepts, each piece flushed as it streams. Default true; false: rewritten
    /// answers leave as identity. Answers that are not rewritten always keep the site's own
    /// encoding.
    pub compress: bool,
}

/// What a site route does with an answer it cannot rewrite in full (past `rewrite_limit`, or a
/// tag too long to hold): `rewrite_overflow`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum OnOverflow {
    /// `"pass"` (the default): the rest passes unmodified, its URLs unsigned; every byte is
    /// delivered, and the access log says `rewrite=partial`.
    #[default]
    Pass,
    /// `"abort"`: the answer is cut off with an error, so the client sees it incomplete; the
    /// access log says `rewrite=aborted`.
    Abort,
}

impl Default for RewriteRules {
    fn default() -> Self {
        Self {
            hosts: vec![DEFAULT_REWRITE_HOST.to_owned()],
            cdns: Vec::new(),
            rewrite_limit: DEFAULT_REWRITE_LIMIT,
            keep_http: false,
            reflection_guard: true,
            url_attributes: Vec::new(),
            on_overflow: OnOverflow::Pass,
            javascript_limit: None,
            compress: true,
        }
    }
}

impl RewriteRules {
    /// Whether `host` is one whose URLs are signed with the route's own scheme.
    pub fn is_rewrite_host(&self, host: &str) -> bool {
        self.hosts.iter().any(|h| h.eq_ignore_ascii_case(host))
    }

    /// Every host whose URLs are signed: `rewrite_hosts`, then each `[[route.cdn]]`'s.
    pub fn all_hosts(&self) -> impl Iterator<Item = &str> {
        self.hosts
            .iter()
            .chain(self.cdns.iter().flat_map(|cdn| &cdn.hosts))
            .map(String::as_str)
    }
}

/// What only an upload-policy route has.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct UploadPolicyRoute {
    /// `cors_origins`: origins whose pages may fetch the policy (`"*"` for any). Default none:
    /// same-origin pages only.
    pub cors_origins: Vec<String>,
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
    /// `event_stream_idle_timeout`: the same for `text/event-stream` answers, whose events
    /// may be minutes apart. Default none: they are never cut for pausing.
    pub event_stream_idle: Option<Duration>,
}

/// An upstream origin, absolute http(s) with no query, taken apart once so the request path
/// assembles URIs from parts.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Upstream {
    scheme: Scheme,
    authority: Authority,
    /// The base path without a trailing slash (empty for none).
    base_path: String,
    /// `scheme://authority` and the base path: what paths are appended to in URL strings.
    base: String,
    /// The `Host` value for requests to it.
    host: HeaderValue,
}

impl Upstream {
    /// Parses `text`, an absolute http(s) URL without a query.
    pub fn parse(text: &str) -> Result<Self, String> {
        let bad = || format!("must be an absolute http(s) URL, got {text:?}");
        let uri: Uri = text.parse().map_err(|_| bad())?;
        let scheme = match uri.scheme_str() {
            Some("http") => Scheme::HTTP,
            Some("https") => Scheme::HTTPS,
            _ => return Err(bad()),
        };
        let authority = uri.authority().cloned().ok_or_else(bad)?;
        if authority.host().is_empty() {
            return Err(bad());
        }
        if authority.as_str().contains('@') {
            return Err(format!(
                "must not carry credentials (user@host), got {text:?}"
            ));
        }
        if uri.query().is_some() {
            return Err(format!("must not have a query, got {text:?}"));
        }
        let base_path = uri.path().trim_end_matches('/').to_owned();
        let base = format!("{scheme}://{authority}{base_path}");
        let host = HeaderValue::try_from(authority.as_str()).map_err(|_| bad())?;
        Ok(Self {
            scheme,
            authority,
            base_path,
            base,
            host,
        })
    }

    /// `scheme://authority/base`, no trailing slash: what paths are appended to.
    pub fn base(&self) -> &str {
        &self.base
    }

    /// The base path without a trailing slash, empty for none.
    pub fn base_path(&self) -> &str {
        &self.base_path
    }

    /// The `host[:port]` of the upstream.
    pub fn authority(&self) -> &Authority {
        &self.authority
    }

    /// The `Host` header value for requests to it.
    pub fn host_header(&self) -> &HeaderValue {
        &self.host
    }

    /// Whether it is reached over TLS.
    pub fn is_https(&self) -> bool {
        self.scheme == Scheme::HTTPS
    }

    /// The absolute URI of `path_and_query` (which already includes the base path) on it.
    pub fn uri(&self, path_and_query: PathAndQuery) -> Uri {
        let mut parts = http::uri::Parts::default();
        parts.scheme = Some(self.scheme.clone());
        parts.authority = Some(self.authority.clone());
        parts.path_and_query = Some(path_and_query);
        // Scheme, authority and path are all set, the one combination from_parts always takes.
        Uri::from_parts(parts).expect("a URI with scheme, authority and path is valid")
    }
}

/// Builds a route from its raw keys and the `[signing]` defaults. Returns the route and any
/// warnings (a placeholder secret).
pub(super) fn build_route(
    raw: RawRoute,
    defaults: &RawSigning,
    env: &dyn Fn(&str) -> Option<String>,
    needed: SecretsNeeded,
) -> Result<(Route, Option<String>), ConfigError> {
    let name = raw.name.clone();
    if name.trim().is_empty() {
        return Err(invalid("route: `name`", "must not be empty"));
    }
    let key = |k: &str| format!("route `{name}`: `{k}`");
    let mode = Mode::parse(&raw.mode).ok_or_else(|| {
        invalid(
            key("mode"),
            format!(
                "must be one of proxy, redirect, site, upload-policy, verify, got {:?}",
                raw.mode
            ),
        )
    })?;
    refuse_on_site(&raw, mode, &key)?;
    refuse_token_cookie_off_redirect(&raw, mode, &key)?;
    for (k, modes) in raw.mode_specific_keys() {
        if !modes.contains(&mode) {
            let names: Vec<&str> = modes.iter().map(|m| m.as_str()).collect();
            // "proxy, site and verify".
            let names = match names.split_last() {
                Some((last, rest)) if !rest.is_empty() => format!("{} and {last}", rest.join(", ")),
                _ => names.concat(),
            };
            return Err(invalid(
                key(k),
                format!(
                    "does not apply to {} routes; it is for {names} routes: remove it",
                    mode.as_str()
                ),
            ));
        }
    }
    let prefix = check_prefix(&raw.prefix).map_err(|reason| invalid(key("prefix"), reason))?;
    let policy = PolicyTemplate {
        calls: parse_calls(raw.calls.as_deref(), mode).map_err(|r| invalid(key("calls"), r))?,
        limits: build_limits(&raw, &key)?,
    };
    let tasks = build_tasks(&raw, mode, &key)?;
    let authorize = build_authorize(&raw, &key)?;
    let canary = build_canary(&raw, &policy, &key)?;
    let app = build_app_key(&raw, &policy, &key)?;
    let scheme = build_scheme(&raw, defaults, mode, env, needed, &key)?;
    let site_hosts = rewrite_hosts(&raw, &key)?;
    let kind = match mode {
        Mode::Proxy => RouteKind::Proxy(ProxyRoute {
            fetch: build_fetch(&raw, mode, &key, DEFAULT_PROXY_MAX_RESPONSE_HEADERS)?,
            serving: build_serving(&raw, &key)?,
        }),
        Mode::Verify => RouteKind::Verify(VerifyRoute {
            fetch: build_fetch(&raw, mode, &key, DEFAULT_PROXY_MAX_RESPONSE_HEADERS)?,
            serving: build_serving(&raw, &key)?,
            checks: build_verify_checks(&raw, &key)?,
        }),
        Mode::Redirect => {
            let upstream = required_upstream(&raw, mode, &key)?;
            RouteKind::Redirect(RedirectRoute {
                token_cookie: build_token_cookie(&raw, &scheme, &upstream, &key)?,
                upstream,
            })
        }
        Mode::Site => RouteKind::Site(SiteRoute {
            fetch: build_fetch(&raw, mode, &key, DEFAULT_MAX_RESPONSE_HEADERS)?,
            rewrite: RewriteRules {
                // Built in the order written: the entries are checked against `hosts` first.
                cdns: build_cdns(&raw, defaults, env, needed, &site_hosts)?,
                hosts: site_hosts,
                rewrite_limit: size_or(raw.rewrite_limit.as_ref(), DEFAULT_REWRITE_LIMIT)
                    .map_err(|r| invalid(key("rewrite_limit"), r))?,
                keep_http: raw.keep_http.unwrap_or(false),
                reflection_guard: raw.reflection_guard.unwrap_or(true),
                url_attributes: check_attribute_names(
                    raw.url_attributes.as_deref().unwrap_or_default(),
                )
                .map_err(|r| invalid(key("url_attributes"), r))?,
                on_overflow: raw.rewrite_overflow.unwrap_or_default(),
                javascript_limit: raw
                    .rewrite_javascript
                    .as_ref()
                    .map(parse_size)
                    .transpose()
                    .map_err(|r| invalid(key("rewrite_javascript"), r))?,
                compress: raw.compress.unwrap_or(true),
            },
            max_request_body: size_or(raw.max_request_body.as_ref(), DEFAULT_MAX_REQUEST_BODY)
                .map_err(|r| invalid(key("max_request_body"), r))?,
            preserve_host: raw.preserve_host.unwrap_or(true),
            websocket_idle: match (raw.websockets, raw.websocket_idle_timeout.as_deref()) {
                (Some(false), None) => None,
                (Some(false), Some(_)) => {
                    return Err(invalid(
                        key("websocket_idle_timeout"),
                        "set while `websockets = false`; remove one of them",
                    ));
                }
                (_, text) => Some(text.map_or(Ok(DEFAULT_WEBSOCKET_IDLE_TIMEOUT), |t| {
                    parse_duration(t).map_err(|r| invalid(key("websocket_idle_timeout"), r))
                })?),
            },
        }),
        Mode::UploadPolicy => RouteKind::UploadPolicy(UploadPolicyRoute {
            cors_origins: check_origins(raw.cors_origins.clone().unwrap_or_default())
                .map_err(|r| invalid(key("cors_origins"), r))?,
        }),
    };
    let (signing, warning) = build_signing(&raw.signing_overrides(), defaults, env, &name, needed)?;
    check_scheme_lifetime(&scheme, &signing, &key)?;
    let route = Route {
        name,
        prefix,
        signing,
        policy,
        tasks,
        authorize,
        canary,
        app,
        scheme,
        kind,
    };
    Ok((route, warning))
}

/// `rewrite_hosts`, lowercase, or the Filestack CDN.
fn rewrite_hosts(raw: &RawRoute, key: &dyn Fn(&str) -> String) -> Result<Vec<String>, ConfigError> {
    match &raw.rewrite_hosts {
        None => Ok(RewriteRules::default().hosts),
        Some(hosts) => check_hosts(hosts).map_err(|r| invalid(key("rewrite_hosts"), r)),
    }
}

/// SigV4 presigned URLs live at most 7 days, and one handed out carries up to ttl, a bucket and
/// the skew margin.
pub(super) fn check_scheme_lifetime(
    scheme: &SchemeConfig,
    signing: &Signing,
    key: &dyn Fn(&str) -> String,
) -> Result<(), ConfigError> {
    let longest = signing.ttl + signing.bucket + signing.skew_margin;
    if matches!(scheme, SchemeConfig::S3 { .. })
        && longest.as_secs() > crate::scheme::s3::MAX_EXPIRES
    {
        return Err(invalid(
            key("ttl"),
            format!(
                "with scheme = \"s3\", ttl + bucket + skew_margin ({}s) must be at most 7 days \
                 (604800s), SigV4's limit",
                longest.as_secs()
            ),
        ));
    }
    Ok(())
}

/// `api_key` and `external_sources`: sources need the key (their URLs carry it) and the
/// `convert` call (the CDN checks it for them).
fn build_app_key(
    raw: &RawRoute,
    policy: &PolicyTemplate,
    key: &dyn Fn(&str) -> String,
) -> Result<Option<AppKey>, ConfigError> {
    let sources =
        SourceList::new(raw.external_sources.clone().unwrap_or_default()).map_err(|r| {
            invalid(
                key("external_sources"),
                format!(
                    "{r}; expected URL prefixes such as \"https://images.example.org/gallery/\""
                ),
            )
        })?;
    let Some(api_key) = &raw.api_key else {
        if raw.external_sources.is_some() {
            return Err(invalid(
                key("external_sources"),
                "needs `api_key`: the CDN reads an external source's URL after the app's API key",
            ));
        }
        return Ok(None);
    };
    let plain =
        (10..=64).contains(&api_key.len()) && api_key.bytes().all(|b| b.is_ascii_alphanumeric());
    if !plain {
        return Err(invalid(
            key("api_key"),
            "must be the app's API key: 10 to 64 letters and digits (the public key from the \
             CDN's dashboard, never the secret)",
        ));
    }
    if !sources.prefixes().is_empty() && !policy.allows(Call::Convert) {
        return Err(invalid(
            key("external_sources"),
            "external sources are signed with the `convert` call, which `calls` does not \
             hold: add \"convert\" to `calls`",
        ));
    }
    Ok(Some(AppKey {
        key: api_key.clone(),
        sources,
    }))
}

/// `inline_types` and `cors_origins` of a route that serves files as fetched.
fn build_serving(raw: &RawRoute, key: &dyn Fn(&str) -> String) -> Result<FileServing, ConfigError> {
    Ok(FileServing {
        inline_types: match &raw.inline_types {
            None => FileServing::default().inline_types,
            Some(types) => check_media_types(types).map_err(|r| invalid(key("inline_types"), r))?,
        },
        cors_origins: check_origins(raw.cors_origins.clone().unwrap_or_default())
            .map_err(|r| invalid(key("cors_origins"), r))?,
    })
}

/// A verify route's `expired_status`, `expiry_grace` and `origin_container`.
fn build_verify_checks(
    raw: &RawRoute,
    key: &dyn Fn(&str) -> String,
) -> Result<VerifyChecks, ConfigError> {
    let expired_status = match raw.expired_status {
        None => http::StatusCode::FORBIDDEN,
        Some(code) => http::StatusCode::from_u16(code)
            .ok()
            .filter(http::StatusCode::is_client_error)
            .ok_or_else(|| {
                invalid(
                    key("expired_status"),
                    format!("must be a 4xx status such as 403 (the CDN's), 401 or 410, got {code}"),
                )
            })?,
    };
    let expiry_grace = match raw.expiry_grace.as_deref() {
        None => Duration::ZERO,
        Some(text) => parse_duration(text).map_err(|r| invalid(key("expiry_grace"), r))?,
    };
    if expiry_grace > MAX_EXPIRY_GRACE {
        return Err(invalid(
            key("expiry_grace"),
            format!(
                "{}s is longer than {}s: a grace is for clocks a little apart; to make URLs \
                 live longer, raise `ttl` where they are signed",
                expiry_grace.as_secs(),
                MAX_EXPIRY_GRACE.as_secs()
            ),
        ));
    }
    let origin_container = match raw.origin_container.as_deref() {
        Some("") => {
            return Err(invalid(
                key("origin_container"),
                "must name the container (bucket) the origin serves, got an empty string",
            ));
        }
        other => other.map(str::to_owned),
    };
    Ok(VerifyChecks {
        expired_status,
        expiry_grace,
        origin_container,
    })
}

fn parse_calls(names: Option<&[String]>, mode: Mode) -> Result<Vec<Call>, String> {
    let Some(names) = names else {
        return Ok(mode.default_calls());
    };
    let mut calls = Vec::with_capacity(names.len());
    for name in names {
        let call: Call = name.parse().map_err(|e| format!("{e}"))?;
        if !calls.contains(&call) {
            calls.push(call);
        }
    }
    if calls.is_empty() {
        return Err("must name at least one call".into());
    }
    Ok(calls)
}

fn build_limits(raw: &RawRoute, key: &dyn Fn(&str) -> String) -> Result<PolicyLimits, ConfigError> {
    let size = |value: Option<&super::units::RawSize>, k: &str| {
        value
            .map(|s| parse_size(s).map_err(|r| invalid(key(k), r)))
            .transpose()
    };
    let max_size = size(raw.max_size.as_ref(), "max_size")?;
    let min_size = size(raw.min_size.as_ref(), "min_size")?;
    if let (Some(min), Some(max)) = (min_size, max_size)
        && min > max
    {
        return Err(invalid(
            key("min_size"),
            format!("{min} bytes is larger than `max_size` ({max} bytes)"),
        ));
    }
    Ok(PolicyLimits {
        url: raw.url.clone(),
        max_size,
        min_size,
        path: raw.path.clone(),
        container: raw.container.clone(),
    })
}

/// Warnings for the route's `path` and `container` when they are not anchored. The CDN reads
/// both as regular expressions and accepts a match anywhere, so `path = "/gallery/"` also lets
/// an upload land in `/private/gallery/`. A `path` must start with `^` and end with `/` (a
/// folder, optionally then `.*` or `.+`) or `$` (one path); a `container` must start with `^` and end with `$`.
pub(super) fn unanchored_pattern_warnings(route: &Route) -> Vec<String> {
    let limits = &route.policy.limits;
    let key = |k: &str| format!("route `{}`: `{k}`", route.name);
    let mut warnings = Vec::new();
    if let Some(path) = &limits.path {
        let starts = path.starts_with('^');
        // `^/gallery/.*` says no more than `^/gallery/`.
        let folder = path
            .strip_suffix(".*")
            .or_else(|| path.strip_suffix(".+"))
            .unwrap_or(path);
        let ends = folder.ends_with('/') || ends_with_anchor(path);
        let start = if starts { "" } else { "^" };
        let advice = if ends {
            format!("\"{start}{path}\"")
        } else {
            format!("\"{start}{path}/\" for a folder or \"{start}{path}$\" for one path")
        };
        let matches = match (starts, ends) {
            (true, true) => None,
            (false, _) => Some("anywhere in an upload's path"),
            (true, false) => Some("on longer paths too"),
        };
        if let Some(matches) = matches {
            warnings.push(format!(
                "{}: {path:?} is a regular expression the CDN matches {matches}; anchor it: {advice}",
                key("path")
            ));
        }
    }
    if let Some(container) = &limits.container
        && !(container.starts_with('^') && ends_with_anchor(container))
    {
        let start = if container.starts_with('^') { "" } else { "^" };
        let end = if ends_with_anchor(container) { "" } else { "$" };
        warnings.push(format!(
            "{}: {container:?} is a regular expression the CDN matches anywhere in a container's name; anchor it: \"{start}{container}{end}\"",
            key("container")
        ));
    }
    warnings
}

/// Whether `pattern` ends with a `$` anchor (not an escaped `\$`).
fn ends_with_anchor(pattern: &str) -> bool {
    pattern
        .strip_suffix('$')
        .is_some_and(|rest| rest.bytes().rev().take_while(|&b| b == b'\\').count() % 2 == 0)
}

fn required_upstream(
    raw: &RawRoute,
    mode: Mode,
    key: &dyn Fn(&str) -> String,
) -> Result<Upstream, ConfigError> {
    let text = raw.upstream.as_deref().ok_or_else(|| {
        invalid(
            key("upstream"),
            format!(
                "is required for {} routes, e.g. \"https://cdn.filestackcontent.com\"",
                mode.as_str()
            ),
        )
    })?;
    Upstream::parse(text).map_err(|r| invalid(key("upstream"), r))
}

/// `max_headers`: the mode's default `max_response_headers`.
fn build_fetch(
    raw: &RawRoute,
    mode: Mode,
    key: &dyn Fn(&str) -> String,
    max_headers: usize,
) -> Result<Fetch, ConfigError> {
    let upstream = required_upstream(raw, mode, key)?;
    let duration = |text: Option<&str>, default: Duration, k: &str| {
        text.map_or(Ok(default), |t| {
            parse_duration(t).map_err(|r| invalid(key(k), r))
        })
    };
    let timeouts = Timeouts {
        connect: duration(
            raw.connect_timeout.as_deref(),
            DEFAULT_CONNECT_TIMEOUT,
            "connect_timeout",
        )?,
        response: duration(
            raw.response_timeout.as_deref(),
            DEFAULT_RESPONSE_TIMEOUT,
            "response_timeout",
        )?,
        body_idle: duration(
            raw.body_idle_timeout.as_deref(),
            DEFAULT_BODY_IDLE_TIMEOUT,
            "body_idle_timeout",
        )?,
        event_stream_idle: raw
            .event_stream_idle_timeout
            .as_deref()
            .map(|t| parse_duration(t).map_err(|r| invalid(key("event_stream_idle_timeout"), r)))
            .transpose()?,
    };
    if raw.ca_file.is_some() && !upstream.is_https() {
        return Err(invalid(
            key("ca_file"),
            "only applies to an https upstream; remove it or make `upstream` https://",
        ));
    }
    let max_connections = NonZeroUsize::new(
        raw.max_upstream_connections
            .unwrap_or(DEFAULT_MAX_UPSTREAM_CONNECTIONS),
    )
    .ok_or_else(|| invalid(key("max_upstream_connections"), "must be at least 1"))?;
    let max_response_headers =
        NonZeroUsize::new(raw.max_response_headers.unwrap_or(max_headers))
            .ok_or_else(|| invalid(key("max_response_headers"), "must be at least 1"))?;
    let keepalive = raw
        .upstream_keepalive
        .unwrap_or(DEFAULT_UPSTREAM_KEEPALIVE)
        .min(max_connections.get());
    Ok(Fetch {
        upstream,
        timeouts,
        ca_file: raw.ca_file.clone(),
        max_connections,
        keepalive,
        max_response_headers,
    })
}

fn size_or(raw: Option<&super::units::RawSize>, default: u64) -> Result<u64, String> {
    raw.map_or(Ok(default), parse_size)
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
        return Err(format!(
            "must be a plain path such as \"/img/\", got {prefix:?}"
        ));
    }
    Ok(prefix.to_owned())
}

pub(super) fn check_hosts(hosts: &[String]) -> Result<Vec<String>, String> {
    for host in hosts {
        if host.is_empty() || host.contains(['/', ' ', '?', '#', '@']) {
            return Err(format!(
                "must hold host names such as \"cdn.filestackcontent.com\", got {host:?}"
            ));
        }
    }
    Ok(hosts.iter().map(|h| h.to_ascii_lowercase()).collect())
}

/// HTML attribute names, lowercased: letters, digits, `-`, `_`, `.` and one `:` prefix.
fn check_attribute_names(names: &[String]) -> Result<Vec<String>, String> {
    names
        .iter()
        .map(|name| {
            let fine = name.starts_with(|c: char| c.is_ascii_alphabetic())
                && name.matches(':').count() <= 1
                && name
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b"-_.:".contains(&b));
            if fine {
                Ok(name.to_ascii_lowercase())
            } else {
                Err(format!(
                    "must hold attribute names such as \"data-hero\" or \"data-zoom-src\", \
                     got {name:?}"
                ))
            }
        })
        .collect()
}

/// Media types as `type/subtype`, lowercased; parameters and wildcards are refused.
fn check_media_types(types: &[String]) -> Result<Vec<String>, String> {
    types
        .iter()
        .map(|t| {
            let token = |part: &str| {
                !part.is_empty()
                    && part
                        .bytes()
                        .all(|b| b.is_ascii_alphanumeric() || b"!#$&-^_.+".contains(&b))
            };
            match t.split_once('/') {
                Some((kind, sub)) if token(kind) && token(sub) => Ok(t.to_ascii_lowercase()),
                _ => Err(format!(
                    "must hold media types such as \"image/png\" (no parameters, no wildcards), \
                     got {t:?}"
                )),
            }
        })
        .collect()
}

fn check_origins(origins: Vec<String>) -> Result<Vec<String>, String> {
    for origin in &origins {
        let valid = origin == "*"
            || ((origin.starts_with("https://") || origin.starts_with("http://"))
                && !origin.trim_end_matches('/').contains(['?', '#', ' '])
                && origin
                    .split("://")
                    .nth(1)
                    .is_some_and(|rest| !rest.is_empty() && !rest.contains('/')));
        if !valid {
            return Err(format!(
                "must hold origins such as \"https://app.example.com\" or \"*\", got {origin:?}"
            ));
        }
    }
    Ok(origins)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_upstream_is_taken_apart_once() {
        let upstream = Upstream::parse("https://cdn.example.com:8443/base/").expect("valid");
        assert_eq!(upstream.base(), "https://cdn.example.com:8443/base");
        assert_eq!(upstream.base_path(), "/base");
        assert_eq!(upstream.host_header(), "cdn.example.com:8443");
        assert!(upstream.is_https());
        let uri = upstream.uri(PathAndQuery::from_static("/base/x?y=1"));
        assert_eq!(uri.to_string(), "https://cdn.example.com:8443/base/x?y=1");
        let bare = Upstream::parse("http://127.0.0.1:3000").expect("valid");
        assert_eq!(bare.base_path(), "");
        assert_eq!(bare.base(), "http://127.0.0.1:3000");
    }

    #[test]
    fn upstreams_that_cannot_be_fetched_are_refused() {
        for text in [
            "cdn.example.com",
            "ftp://cdn.example.com",
            "https://cdn.example.com/?a=1",
            "https://user:pw@cdn.example.com",
            "/relative",
        ] {
            assert!(Upstream::parse(text).is_err(), "{text}");
        }
    }

    #[test]
    fn a_proxy_route_takes_hyper_s_header_limit_and_a_site_route_more() {
        let config = crate::config::Config::from_toml_str(
            "[signing]\nsecret_env = \"S\"\n\
             [[route]]\nname = \"img\"\nprefix = \"/img/\"\nmode = \"proxy\"\n\
             upstream = \"https://cdn.example\"\n\
             [[route]]\nname = \"site\"\nprefix = \"/\"\nmode = \"site\"\n\
             upstream = \"http://127.0.0.1:3000\"\n",
            |_| Some("secret".into()),
        )
        .expect("valid");
        let limits: Vec<usize> = config
            .routes
            .iter()
            .filter_map(|route| route.fetch())
            .map(|fetch| fetch.max_response_headers.get())
            .collect();
        assert_eq!(limits, [100, 500]);
    }

    #[test]
    fn prefixes_must_be_plain_paths() {
        assert!(check_prefix("/img/").is_ok());
        for bad in ["img/", "/a/../b", "/a//b", "/a?b", "/%2e"] {
            assert!(check_prefix(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn calls_default_per_mode_and_repeat_once() {
        assert_eq!(
            parse_calls(None, Mode::Site),
            Ok(vec![Call::Read, Call::Convert])
        );
        let names = ["read".to_owned(), "read".to_owned()];
        assert_eq!(parse_calls(Some(&names), Mode::Proxy), Ok(vec![Call::Read]));
        assert!(parse_calls(Some(&[]), Mode::Proxy).is_err());
        assert!(parse_calls(Some(&["delete".to_owned()]), Mode::Proxy).is_err());
    }

    #[test]
    fn origins_and_hosts_are_checked() {
        assert!(check_origins(vec!["https://a.example".into(), "*".into()]).is_ok());
        assert!(check_origins(vec!["https://a.example/path".into()]).is_err());
        assert_eq!(
            check_hosts(&["CDN.Example.com".into()]),
            Ok(vec!["cdn.example.com".to_owned()])
        );
        assert!(check_hosts(&["cdn.example.com/x".into()]).is_err());
    }

    fn upload_with(limits: &str) -> Route {
        let raw: RawRoute = toml::from_str(&format!(
            "name = \"up\"\nprefix = \"/up\"\nmode = \"upload-policy\"\n{limits}"
        ))
        .expect("raw route");
        let signing = RawSigning {
            secret_env: Some("S".to_owned()),
            ..RawSigning::default()
        };
        let env = |_: &str| Some("s".to_owned());
        build_route(raw, &signing, &env, SecretsNeeded::Required)
            .expect("valid")
            .0
    }

    #[test]
    fn unanchored_paths_and_containers_are_warned_about() {
        let warnings = |limits: &str| unanchored_pattern_warnings(&upload_with(limits));
        for anchored in [
            "path = \"^/gallery/\"",
            "path = \"^/gallery/.+\"",
            "path = \"^/gallery/cat\\\\.png$\"",
            "container = \"^photos$\"",
            "",
        ] {
            assert_eq!(warnings(anchored), Vec::<String>::new(), "{anchored}");
        }
        assert_eq!(
            warnings("path = \"/gallery/\""),
            [
                "route `up`: `path`: \"/gallery/\" is a regular expression the CDN matches anywhere in an upload's path; anchor it: \"^/gallery/\""
            ]
        );
        assert_eq!(
            warnings("path = \"^/gallery\""),
            [
                "route `up`: `path`: \"^/gallery\" is a regular expression the CDN matches on longer paths too; anchor it: \"^/gallery/\" for a folder or \"^/gallery$\" for one path"
            ]
        );
        assert!(warnings("path = \"^/price\\\\$\"")[0].contains("longer paths"));
        assert_eq!(
            warnings("container = \"photos\""),
            [
                "route `up`: `container`: \"photos\" is a regular expression the CDN matches anywhere in a container's name; anchor it: \"^photos$\""
            ]
        );
        assert_eq!(warnings("container = \"^photos\"").len(), 1);
    }
}
