//! signgate: a reverse-proxy signing gateway for Filestack-style CDNs.
//!
//! It holds the app secret and hands out (or fetches through) URLs carrying a `policy` and a
//! `signature`, so no front-end code ever needs the secret.
//!
//! # Layout
//! - [`policy`]: the typed policy, its canonical encoding, bucketed expiry; pure.
//! - [`secret`]: the secret newtype (HMAC-SHA256, redacted `Debug`).
//! - [`filelink`]: `[TASKS/]HANDLE` references and the signed URLs built from them.
//! - [`verify`]: checks signed URLs in every SDK spelling, as the CDN does.
//! - [`cache`]: the sharded LRU of signed credentials.
//! - [`signer`]: one route's signing: limits, which URLs it signs, expiry bucket, cache.
//! - [`tasks`]: transformation task names, the read-only default, a route's allowlist.
//! - [`authorize`]: asking a route's `authorize_url` before signing, and caching the answers.
//! - [`clock`]: injectable wall clock.
//! - [`config`]: `gateway.toml` into typed, validated [`config::Config`].
//! - [`host`]: the request's host, from the target's authority or `Host`, checked once.
//! - [`router`]: routes compiled once, longest prefix.
//! - [`mode`]: one handler per mode (proxy, redirect, site, upload-policy).
//! - [`upstream`]: the pooled upstream client, TLS, timeouts, hop-by-hop stripping.
//! - [`rewrite`]: signing CDN URLs in site answers (streaming HTML, JSON, headers), decoding
//!   them first and compressing them again on the way out.
//! - [`body`]: the response body type and its wrappers (idle timeout, held permit, pumping).
//! - [`metrics`]: the Prometheus registry every worker counts into, per-route handles.
//! - [`health`]: readiness (every worker accepting, or draining; the canaries' findings) for
//!   `/readyz`.
//! - [`canary`]: per route, a handle signed and fetched from the CDN on a timer, so a refused
//!   secret is caught by the gateway first.
//! - [`admin`]: the admin listener: `/healthz`, `/readyz`, `/metrics`, the status page.
//! - [`request_log`]: the access-log line per request, path redaction, error logging.
//! - [`request_id`]: `X-Request-Id`, kept from the client when sane or made, sent both ways.
//! - [`fdlimit`]: the open-file limit, raised at start to what the client and upstream
//!   connection limits can need.
//! - [`reload`]: hot reload: re-read, validate, refuse what needs a restart, swap the routes.
//! - [`workers`]: one single-threaded runtime per core on `SO_REUSEPORT` listeners.
//! - [`tls`]: the listener's TLS (`tls_cert`, `tls_key`), re-read on reload.
//! - [`server`]: accept loop, limits, graceful drain, the request service.
//! - [`activity`]: a connection's requests in flight, so an idle one can be closed.
//! - [`error`]: `ProxyError` mapped to statuses in one place; `StartupError`.
//! - [`demo`]: the embedded demo: stand-in CDN, gallery site, gateway.
//! - [`cli`]: the `signgate` command line.
#![cfg_attr(not(test), deny(clippy::unwrap_used))]

pub mod activity;
pub mod admin;
pub mod authorize;
pub mod body;
pub mod cache;
pub mod canary;
pub mod cli;
pub mod clock;
pub mod config;
#[cfg(feature = "demo")]
pub mod demo;
pub mod error;
pub mod external;
pub mod fdlimit;
pub mod filelink;
pub mod health;
pub mod host;
pub mod metrics;
pub mod mode;
pub mod policy;
pub mod protocol;
pub mod reload;
pub mod request_id;
pub mod request_log;
pub mod rewrite;
pub mod router;
pub mod scheme;
pub mod secret;
pub mod secret_watch;
pub mod server;
pub mod signer;
pub mod tasks;
pub mod tls;
pub mod upstream;
pub mod verify;
pub mod workers;
