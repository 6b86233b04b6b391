//! The raw layer: serde structs that mirror `gateway.toml` key for key, unknown keys refused.
//! Nothing here is validated; [`super::Config`] is built from it.

use std::path::PathBuf;

use serde::Deserialize;

use super::Mode;
use super::units::RawSize;
use crate::filelink::UrlStyle;

/// The whole file.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawConfig {
    #[serde(default)]
    pub server: RawServer,
    #[serde(default)]
    pub signing: RawSigning,
    pub admin: Option<RawAdmin>,
    #[serde(default)]
    pub log: RawLog,
    #[serde(default, rename = "route")]
    pub routes: Vec<RawRoute>,
}

/// `[server]`.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawServer {
    pub listen: Option<String>,
    pub max_connections: Option<usize>,
    pub header_read_timeout: Option<String>,
    pub shutdown_grace: Option<String>,
    pub send_timeout: Option<String>,
    pub client_body_timeout: Option<String>,
    pub workers: Option<usize>,
    pub max_header_bytes: Option<RawSize>,
    /// Deprecated: accepted so old configs load, ignored (JSON streams now).
    pub json_hold_budget: Option<RawSize>,
    pub trusted_proxies: Option<Vec<String>>,
    pub pid_file: Option<PathBuf>,
    pub tls_cert: Option<PathBuf>,
    pub tls_key: Option<PathBuf>,
}

/// `[admin]`.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawAdmin {
    pub listen: Option<String>,
}

/// `[log]`.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawLog {
    pub format: Option<super::LogFormat>,
}

/// `[signing]`, and the same keys on a route.
#[derive(Debug, Default, Deserialize, Clone)]
#[serde(deny_unknown_fields)]
pub(super) struct RawSigning {
    pub secret_env: Option<String>,
    pub secret_file: Option<PathBuf>,
    pub ttl: Option<String>,
    pub bucket: Option<String>,
    pub min_validity: Option<String>,
    pub cache_size: Option<usize>,
    pub url_style: Option<UrlStyle>,
    pub max_clock_skew: Option<String>,
    pub skew_margin: Option<String>,
    pub secret_next_env: Option<String>,
    pub secret_next_file: Option<PathBuf>,
    /// A string or a TOML date-time: both are read as RFC 3339.
    pub switch_at: Option<toml::Value>,
}

/// One `[[route]]`.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawRoute {
    pub name: String,
    pub prefix: String,
    pub mode: String,
    pub upstream: Option<String>,
    pub calls: Option<Vec<String>>,
    pub max_size: Option<RawSize>,
    pub min_size: Option<RawSize>,
    pub path: Option<String>,
    pub container: Option<String>,
    pub url: Option<String>,
    pub rewrite_hosts: Option<Vec<String>>,
    pub connect_timeout: Option<String>,
    pub response_timeout: Option<String>,
    pub body_idle_timeout: Option<String>,
    pub event_stream_idle_timeout: Option<String>,
    pub ca_file: Option<PathBuf>,
    /// Deprecated: accepted so old configs load, ignored (JSON streams now).
    pub json_rewrite_limit: Option<RawSize>,
    pub cors_origins: Option<Vec<String>>,
    pub inline_types: Option<Vec<String>>,
    pub keep_http: Option<bool>,
    pub rewrite_limit: Option<RawSize>,
    pub reflection_guard: Option<bool>,
    pub url_attributes: Option<Vec<String>>,
    pub rewrite_overflow: Option<super::OnOverflow>,
    pub rewrite_javascript: Option<RawSize>,
    pub compress: Option<bool>,
    pub max_request_body: Option<RawSize>,
    pub websockets: Option<bool>,
    pub preserve_host: Option<bool>,
    pub websocket_idle_timeout: Option<String>,
    pub max_upstream_connections: Option<usize>,
    pub upstream_keepalive: Option<usize>,
    pub max_response_headers: Option<usize>,
    pub tasks: Option<Vec<String>>,
    pub authorize_url: Option<String>,
    pub authorize_timeout: Option<String>,
    pub authorize_cache: Option<String>,
    pub expired_status: Option<u16>,
    pub expiry_grace: Option<String>,
    pub origin_container: Option<String>,
    pub canary_handle: Option<String>,
    pub canary_interval: Option<String>,
    pub canary_gates_readiness: Option<bool>,
    pub api_key: Option<String>,
    pub external_sources: Option<Vec<String>>,
    pub scheme: Option<String>,
    pub access_key_id: Option<String>,
    pub region: Option<String>,
    pub key_pair_id: Option<String>,
    pub policy_resource: Option<String>,
    pub expires_param: Option<bool>,
    pub token_name: Option<String>,
    pub token_algorithm: Option<String>,
    pub token_cookie_domain: Option<String>,
    /// `[[route.cdn]]`: more hosts a site route signs, each with its own scheme.
    pub cdn: Option<Vec<RawCdn>>,
    // The [signing] keys, each overridable per route (serde's flatten cannot deny unknown keys).
    pub secret_env: Option<String>,
    pub secret_file: Option<PathBuf>,
    pub ttl: Option<String>,
    pub bucket: Option<String>,
    pub min_validity: Option<String>,
    pub cache_size: Option<usize>,
    pub url_style: Option<UrlStyle>,
    pub max_clock_skew: Option<String>,
    pub skew_margin: Option<String>,
    pub secret_next_env: Option<String>,
    pub secret_next_file: Option<PathBuf>,
    /// A string or a TOML date-time: both are read as RFC 3339.
    pub switch_at: Option<toml::Value>,
}

/// One `[[route.cdn]]` of a site route: hosts, their scheme and its keys, and the signing keys
/// the entry sets for itself.
#[derive(Debug, Default, Deserialize, Clone)]
#[serde(deny_unknown_fields)]
pub(super) struct RawCdn {
    pub hosts: Option<Vec<String>>,
    pub scheme: Option<String>,
    pub access_key_id: Option<String>,
    pub region: Option<String>,
    pub key_pair_id: Option<String>,
    pub policy_resource: Option<String>,
    pub expires_param: Option<bool>,
    pub token_name: Option<String>,
    pub token_algorithm: Option<String>,
    pub secret_env: Option<String>,
    pub secret_file: Option<PathBuf>,
    pub ttl: Option<String>,
    pub bucket: Option<String>,
    pub min_validity: Option<String>,
    pub cache_size: Option<usize>,
    pub max_clock_skew: Option<String>,
    pub skew_margin: Option<String>,
    pub secret_next_env: Option<String>,
    pub secret_next_file: Option<PathBuf>,
    /// A string or a TOML date-time: both are read as RFC 3339.
    pub switch_at: Option<toml::Value>,
}

impl RawCdn {
    /// The entry as a route of its own, named `label`, so the scheme and signing keys are read
    /// (and their errors worded) exactly as a route's.
    pub fn as_route(&self, label: String) -> RawRoute {
        RawRoute {
            name: label,
            mode: Mode::Site.as_str().to_owned(),
            scheme: self.scheme.clone(),
            access_key_id: self.access_key_id.clone(),
            region: self.region.clone(),
            key_pair_id: self.key_pair_id.clone(),
            policy_resource: self.policy_resource.clone(),
            expires_param: self.expires_param,
            token_name: self.token_name.clone(),
            token_algorithm: self.token_algorithm.clone(),
            secret_env: self.secret_env.clone(),
            secret_file: self.secret_file.clone(),
            ttl: self.ttl.clone(),
            bucket: self.bucket.clone(),
            min_validity: self.min_validity.clone(),
            cache_size: self.cache_size,
            max_clock_skew: self.max_clock_skew.clone(),
            skew_margin: self.skew_margin.clone(),
            secret_next_env: self.secret_next_env.clone(),
            secret_next_file: self.secret_next_file.clone(),
            switch_at: self.switch_at.clone(),
            ..RawRoute::default()
        }
    }
}

/// Routes that fetch from their upstream.
const FETCHING: &[Mode] = &[Mode::Proxy, Mode::Site, Mode::Verify];
/// Routes with an upstream.
const WITH_UPSTREAM: &[Mode] = &[Mode::Proxy, Mode::Redirect, Mode::Site, Mode::Verify];
/// Site routes.
const SITE: &[Mode] = &[Mode::Site];
/// Upload-policy routes.
const UPLOAD: &[Mode] = &[Mode::UploadPolicy];
/// Routes that serve files fetched from their upstream as they are.
const FILES: &[Mode] = &[Mode::Proxy, Mode::Verify];
/// Routes whose answers a browser may read across origins.
const CORS: &[Mode] = &[Mode::Proxy, Mode::UploadPolicy, Mode::Verify];
/// Routes that sign file references a client names, or check them (verify: the tasks passed
/// on to the origin).
const SIGNING_FILES: &[Mode] = &[Mode::Proxy, Mode::Redirect, Mode::Site, Mode::Verify];
/// Routes whose policies are signgate's own: every mode but verify, which checks others'.
const SIGNING: &[Mode] = &[Mode::Proxy, Mode::Redirect, Mode::Site, Mode::UploadPolicy];
/// Verify routes.
const VERIFY: &[Mode] = &[Mode::Verify];
/// Routes that hand a signature to the client who asks (site routes sign what the site wrote).
const ASKING: &[Mode] = &[Mode::Proxy, Mode::Redirect, Mode::UploadPolicy];
/// Routes whose upstream is the CDN they sign for: where a canary can fetch.
const CANARY: &[Mode] = &[Mode::Proxy, Mode::Redirect];
/// Redirect routes: the only ones that hand a browser a URL to follow.
const REDIRECT: &[Mode] = &[Mode::Redirect];

impl RawRoute {
    /// The keys this route sets that only some modes take, each with those modes: the one table
    /// of which key belongs to which mode. Keys every mode takes are not listed.
    pub fn mode_specific_keys(&self) -> Vec<(&'static str, &'static [Mode])> {
        [
            ("upstream", self.upstream.is_some(), WITH_UPSTREAM),
            ("connect_timeout", self.connect_timeout.is_some(), FETCHING),
            (
                "response_timeout",
                self.response_timeout.is_some(),
                FETCHING,
            ),
            (
                "body_idle_timeout",
                self.body_idle_timeout.is_some(),
                FETCHING,
            ),
            (
                "event_stream_idle_timeout",
                self.event_stream_idle_timeout.is_some(),
                SITE,
            ),
            ("ca_file", self.ca_file.is_some(), FETCHING),
            (
                "max_response_headers",
                self.max_response_headers.is_some(),
                FETCHING,
            ),
            (
                "max_upstream_connections",
                self.max_upstream_connections.is_some(),
                FETCHING,
            ),
            (
                "upstream_keepalive",
                self.upstream_keepalive.is_some(),
                FETCHING,
            ),
            ("rewrite_hosts", self.rewrite_hosts.is_some(), SITE),
            ("cdn", self.cdn.is_some(), SITE),
            (
                "json_rewrite_limit",
                self.json_rewrite_limit.is_some(),
                SITE,
            ),
            ("max_request_body", self.max_request_body.is_some(), SITE),
            ("websockets", self.websockets.is_some(), SITE),
            ("preserve_host", self.preserve_host.is_some(), SITE),
            (
                "websocket_idle_timeout",
                self.websocket_idle_timeout.is_some(),
                SITE,
            ),
            ("keep_http", self.keep_http.is_some(), SITE),
            ("rewrite_limit", self.rewrite_limit.is_some(), SITE),
            ("reflection_guard", self.reflection_guard.is_some(), SITE),
            ("url_attributes", self.url_attributes.is_some(), SITE),
            ("rewrite_overflow", self.rewrite_overflow.is_some(), SITE),
            (
                "rewrite_javascript",
                self.rewrite_javascript.is_some(),
                SITE,
            ),
            ("compress", self.compress.is_some(), SITE),
            ("cors_origins", self.cors_origins.is_some(), CORS),
            ("inline_types", self.inline_types.is_some(), FILES),
            ("calls", self.calls.is_some(), SIGNING),
            ("url", self.url.is_some(), SIGNING),
            ("expired_status", self.expired_status.is_some(), VERIFY),
            ("expiry_grace", self.expiry_grace.is_some(), VERIFY),
            ("origin_container", self.origin_container.is_some(), VERIFY),
            ("max_size", self.max_size.is_some(), UPLOAD),
            ("min_size", self.min_size.is_some(), UPLOAD),
            ("path", self.path.is_some(), UPLOAD),
            ("container", self.container.is_some(), UPLOAD),
            ("tasks", self.tasks.is_some(), SIGNING_FILES),
            ("authorize_url", self.authorize_url.is_some(), ASKING),
            (
                "authorize_timeout",
                self.authorize_timeout.is_some(),
                ASKING,
            ),
            ("authorize_cache", self.authorize_cache.is_some(), ASKING),
            ("canary_handle", self.canary_handle.is_some(), CANARY),
            ("canary_interval", self.canary_interval.is_some(), CANARY),
            (
                "canary_gates_readiness",
                self.canary_gates_readiness.is_some(),
                CANARY,
            ),
            ("api_key", self.api_key.is_some(), SIGNING_FILES),
            (
                "external_sources",
                self.external_sources.is_some(),
                SIGNING_FILES,
            ),
            ("access_key_id", self.access_key_id.is_some(), SIGNING_FILES),
            ("region", self.region.is_some(), SIGNING_FILES),
            ("key_pair_id", self.key_pair_id.is_some(), SIGNING_FILES),
            (
                "policy_resource",
                self.policy_resource.is_some(),
                SIGNING_FILES,
            ),
            ("expires_param", self.expires_param.is_some(), SIGNING_FILES),
            ("token_name", self.token_name.is_some(), SIGNING_FILES),
            (
                "token_algorithm",
                self.token_algorithm.is_some(),
                SIGNING_FILES,
            ),
            (
                "token_cookie_domain",
                self.token_cookie_domain.is_some(),
                REDIRECT,
            ),
        ]
        .into_iter()
        .filter(|(_, set, _)| *set)
        .map(|(key, _, modes)| (key, modes))
        .collect()
    }

    /// The route's own `[signing]` keys.
    pub fn signing_overrides(&self) -> RawSigning {
        RawSigning {
            secret_env: self.secret_env.clone(),
            secret_file: self.secret_file.clone(),
            ttl: self.ttl.clone(),
            bucket: self.bucket.clone(),
            min_validity: self.min_validity.clone(),
            cache_size: self.cache_size,
            url_style: self.url_style,
            max_clock_skew: self.max_clock_skew.clone(),
            skew_margin: self.skew_margin.clone(),
            secret_next_env: self.secret_next_env.clone(),
            secret_next_file: self.secret_next_file.clone(),
            switch_at: self.switch_at.clone(),
        }
    }
}
