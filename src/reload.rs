//! Hot reload (SIGHUP, `signgate reload`): re-read `gateway.toml` and its secrets, validate them
//! as `signgate run` does, refuse a change to what is bound at startup, and swap every worker's
//! routes at once; or refuse the whole file and keep serving the old config.
//!
//! What a reload keeps: a route that signs exactly as before (same name, mode, secret, signing
//! settings, policy and tasks) keeps its signer and credential cache, and a site route also its
//! signed-URL cache; each worker keeps its compression budget. Upstream clients (and so their
//! connection pools, and the `ca_file` they trust) are built fresh: a reload re-reads
//! certificates, and the old pools close once the requests still on them finish. The listener's
//! `tls_cert` and `tls_key` are re-read too (their paths are fixed): connections accepted after
//! the reload get the new certificate.

use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use crate::admin::Admin;
use crate::clock::Clock;
use crate::config::{Config, ConfigError, ServerConfig};
use crate::error::StartupError;
use crate::metrics::{Metrics, ReloadOutcome};
use crate::router::Router;
use crate::server::AppState;

/// One setting that is bound at startup and that a reload tried to change.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FixedKeyChange {
    /// The key, as `gateway.toml` spells it: `server.listen`.
    pub key: &'static str,
    /// The value the process serves with.
    pub old: String,
    /// The value the file now has.
    pub new: String,
}

impl fmt::Display for FixedKeyChange {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "`{}` changed from {} to {}",
            self.key, self.old, self.new
        )
    }
}

/// Why a reload was refused. The old config keeps serving in every case.
#[derive(Debug, thiserror::Error)]
pub enum ReloadError {
    /// The file cannot be read, parsed or validated (the message names the key).
    #[error(transparent)]
    Config(#[from] ConfigError),
    /// The file changes settings that are bound at startup.
    #[error(
        "{}: bound at startup, so a reload cannot apply it; restart signgate to apply it (or put the old value back to reload the rest)",
        list(.0)
    )]
    NeedsRestart(Vec<FixedKeyChange>),
    /// The routes could not be built (an unusable `ca_file`, TLS set-up).
    #[error(transparent)]
    Build(#[from] StartupError),
}

fn list(changes: &[FixedKeyChange]) -> String {
    changes
        .iter()
        .map(ToString::to_string)
        .collect::<Vec<_>>()
        .join("; ")
}

/// The settings of `new` that differ from `old` and are bound when the process starts: every
/// key of `[server]` (the listeners, the worker count, the connection permits and slots, the
/// HTTP builders' limits and timeouts, the pid file, the TLS files' paths, though not their
/// contents) and `[admin] listen`.
pub fn fixed_changes(old: &Config, new: &Config) -> Vec<FixedKeyChange> {
    let mut changes = Vec::new();
    let mut check = |key: &'static str, old: String, new: String| {
        if old != new {
            changes.push(FixedKeyChange { key, old, new });
        }
    };
    // Destructured without `..`: a key added to `[server]` does not compile until it is
    // compared here (or moved out of `[server]`).
    let ServerConfig {
        listen,
        max_connections,
        header_read_timeout,
        shutdown_grace,
        send_timeout,
        client_body_timeout,
        max_header_bytes,
        workers,
        trusted_proxies,
        pid_file,
        tls,
    } = &old.server;
    let b = &new.server;
    check("server.listen", listen.to_string(), b.listen.to_string());
    check("server.workers", workers.to_string(), b.workers.to_string());
    check(
        "server.max_connections",
        max_connections.to_string(),
        b.max_connections.to_string(),
    );
    check(
        "server.max_header_bytes",
        max_header_bytes.to_string(),
        b.max_header_bytes.to_string(),
    );
    let seconds = |d: &std::time::Duration| format!("{d:?}");
    check(
        "server.header_read_timeout",
        seconds(header_read_timeout),
        seconds(&b.header_read_timeout),
    );
    check(
        "server.shutdown_grace",
        seconds(shutdown_grace),
        seconds(&b.shutdown_grace),
    );
    check(
        "server.send_timeout",
        seconds(send_timeout),
        seconds(&b.send_timeout),
    );
    check(
        "server.client_body_timeout",
        seconds(client_body_timeout),
        seconds(&b.client_body_timeout),
    );
    check(
        "server.trusted_proxies",
        format!("{trusted_proxies:?}"),
        format!("{:?}", b.trusted_proxies),
    );
    let path = |p: &Option<PathBuf>| {
        p.as_ref()
            .map_or_else(|| "none".to_owned(), |p| format!("{:?}", p.display()))
    };
    check("server.pid_file", path(pid_file), path(&b.pid_file));
    // The paths (and so TLS on or off) are bound at startup; the files' contents are re-read
    // by every reload.
    let tls_path = |tls: &Option<crate::config::TlsFiles>, cert: bool| {
        path(
            &tls.as_ref()
                .map(|t| if cert { t.cert.clone() } else { t.key.clone() }),
        )
    };
    check(
        "server.tls_cert",
        tls_path(tls, true),
        tls_path(&b.tls, true),
    );
    check(
        "server.tls_key",
        tls_path(tls, false),
        tls_path(&b.tls, false),
    );
    let admin = |c: &Config| {
        c.admin
            .as_ref()
            .map_or_else(|| "off".to_owned(), |admin| admin.listen.to_string())
    };
    check("admin.listen", admin(old), admin(new));
    changes
}

/// When a reload happened and how it ended: the status page's "last reload".
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ReloadRecord {
    /// Unix seconds.
    pub at: u64,
    /// Whether the new config serves.
    pub outcome: ReloadOutcome,
}

/// Re-reads the config the process started with and swaps it into every worker.
pub struct Reloader {
    path: PathBuf,
    current: Config,
    workers: Vec<Arc<AppState>>,
    metrics: Arc<Metrics>,
    admin: Option<Arc<Admin>>,
    clock: Arc<dyn Clock>,
}

impl Reloader {
    /// A reloader for the process serving `current` (read from `path`) in `workers`, counting
    /// into `metrics` and telling `admin`'s status page.
    pub fn new(
        path: &Path,
        current: Config,
        workers: Vec<Arc<AppState>>,
        metrics: Arc<Metrics>,
        admin: Option<Arc<Admin>>,
        clock: Arc<dyn Clock>,
    ) -> Self {
        Self {
            path: path.to_owned(),
            current,
            workers,
            metrics,
            admin,
            clock,
        }
    }

    /// Re-reads the file and its secrets (`secret_file` from disk, `secret_env` from this
    /// process's environment) and applies them as [`Reloader::apply`] does.
    pub fn reload(&mut self) -> Result<(), ReloadError> {
        tracing::info!(config = %self.path.display(), "reloading the config");
        let loaded = Config::load(&self.path);
        self.apply(loaded)
    }

    /// Swaps `loaded` into every worker, or refuses it: logged (at `error`, with the key and
    /// the reason, on refusal), counted in `signgate_config_reloads_total` and shown on the
    /// status page either way. Requests in flight finish on the routes they started with.
    pub fn apply(&mut self, loaded: Result<Config, ConfigError>) -> Result<(), ReloadError> {
        let result = self.swap(loaded);
        let outcome = match &result {
            Ok(()) => ReloadOutcome::Success,
            Err(e) => {
                tracing::error!(
                    config = %self.path.display(),
                    "config reload refused, the old config keeps serving: {e}"
                );
                ReloadOutcome::Failure
            }
        };
        self.metrics.count_reload(outcome);
        if let Some(admin) = &self.admin {
            admin.record_reload(
                ReloadRecord {
                    at: self.clock.now_unix(),
                    outcome,
                },
                &self.current,
            );
        }
        result
    }

    fn swap(&mut self, loaded: Result<Config, ConfigError>) -> Result<(), ReloadError> {
        let config = loaded?;
        let changes = fixed_changes(&self.current, &config);
        if !changes.is_empty() {
            return Err(ReloadError::NeedsRestart(changes));
        }
        // Every worker's routes are built before any is swapped: all or nothing.
        let routers = self
            .workers
            .iter()
            .map(|state| state.router.load().reloaded(&config, &self.metrics))
            .collect::<Result<Vec<Router>, StartupError>>()?;
        // The certificate and key are re-read, once for every worker, before anything is
        // swapped: a bad file refuses the reload.
        let tls = config
            .server
            .tls
            .as_ref()
            .map(crate::tls::server_config)
            .transpose()?;
        let mut kept = 0;
        for (state, router) in self.workers.iter().zip(routers) {
            let old = state.router.swap(Arc::new(router));
            kept = kept_signers(&old, &state.router.load());
            if let (Some(serving), Some(tls)) = (&state.tls, &tls) {
                serving.store(Arc::clone(tls));
            }
        }
        for warning in &config.warnings {
            tracing::warn!("{warning}");
        }
        tracing::info!(
            config = %self.path.display(),
            routes = config.routes.len(),
            kept_caches = kept,
            "config reloaded"
        );
        self.current = config;
        Ok(())
    }

    /// The config the process serves now.
    pub fn current(&self) -> &Config {
        &self.current
    }
}

/// Routes of `new` that kept their signer (and cache) from `old`.
fn kept_signers(old: &Router, new: &Router) -> usize {
    new.routes()
        .iter()
        .filter(|route| {
            old.by_name(&route.name)
                .is_some_and(|before| Arc::ptr_eq(&before.signer, &route.signer))
        })
        .count()
}

#[cfg(test)]
mod tests {
    use super::*;

    const BASE: &str = "[server]\nlisten = \"127.0.0.1:8080\"\nworkers = 2\n\
        [admin]\nlisten = \"127.0.0.1:9090\"\n[signing]\nsecret_env = \"S\"\n\
        [[route]]\nname = \"up\"\nprefix = \"/up\"\nmode = \"upload-policy\"\n";

    fn config(text: &str) -> Config {
        Config::from_toml_str(text, |_| Some("s3cret".into())).expect("valid")
    }

    #[test]
    fn listen_workers_and_admin_changes_are_named_with_both_values() {
        let old = config(BASE);
        let new = config(
            &BASE
                .replace("8080", "8081")
                .replace("workers = 2", "workers = 3")
                .replace("9090", "9091"),
        );
        let changes = fixed_changes(&old, &new);
        let keys: Vec<_> = changes.iter().map(|c| c.key).collect();
        assert_eq!(keys, ["server.listen", "server.workers", "admin.listen"]);
        let message = ReloadError::NeedsRestart(changes).to_string();
        assert!(
            message.starts_with(
                "`server.listen` changed from 127.0.0.1:8080 to 127.0.0.1:8081; \
                 `server.workers` changed from 2 to 3"
            ),
            "{message}"
        );
        assert!(message.contains("restart signgate"), "{message}");
    }

    #[test]
    fn route_changes_and_identical_files_need_no_restart() {
        let old = config(BASE);
        assert!(fixed_changes(&old, &old.clone()).is_empty());
        let more = format!(
            "{BASE}[[route]]\nname = \"go\"\nprefix = \"/go/\"\nmode = \"redirect\"\n\
             upstream = \"https://cdn.filestackcontent.com\"\n"
        );
        assert!(fixed_changes(&old, &config(&more)).is_empty());
    }

    #[test]
    fn tls_paths_need_a_restart() {
        let old = config(BASE);
        let on = config(&BASE.replace(
            "workers = 2\n",
            "workers = 2\ntls_cert = \"/c.pem\"\ntls_key = \"/k.pem\"\n",
        ));
        let keys: Vec<_> = fixed_changes(&old, &on).iter().map(|c| c.key).collect();
        assert_eq!(keys, ["server.tls_cert", "server.tls_key"]);
        assert!(fixed_changes(&on, &on.clone()).is_empty());
        let moved = config(&BASE.replace(
            "workers = 2\n",
            "workers = 2\ntls_cert = \"/c2.pem\"\ntls_key = \"/k.pem\"\n",
        ));
        let keys: Vec<_> = fixed_changes(&on, &moved).iter().map(|c| c.key).collect();
        assert_eq!(keys, ["server.tls_cert"]);
    }

    #[test]
    fn every_server_key_is_compared() {
        let old = config(BASE);
        for (key, line) in [
            ("server.max_connections", "max_connections = 7"),
            ("server.header_read_timeout", "header_read_timeout = \"3s\""),
            ("server.shutdown_grace", "shutdown_grace = \"3s\""),
            ("server.send_timeout", "send_timeout = \"3s\""),
            ("server.client_body_timeout", "client_body_timeout = \"3s\""),
            ("server.max_header_bytes", "max_header_bytes = \"32KiB\""),
            (
                "server.trusted_proxies",
                "trusted_proxies = [\"10.0.0.0/8\"]",
            ),
            ("server.pid_file", "pid_file = \"/run/signgate.pid\""),
        ] {
            let new = config(&BASE.replace("workers = 2\n", &format!("workers = 2\n{line}\n")));
            let changes = fixed_changes(&old, &new);
            assert_eq!(changes.len(), 1, "{key}: {changes:?}");
            assert_eq!(changes[0].key, key);
            assert_ne!(old.server, new.server, "{key}");
        }
    }
}
