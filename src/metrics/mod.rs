//! Prometheus metrics: one registry whose families every worker shares (through
//! [`crate::server::AppState`], never a `static`), with each route's handles made once at start,
//! so the request path only bumps atomics and never builds a label set.
//!
//! Labels stay bounded: route names from the config and fixed enums, never a path or a handle.
//! - [`route`]: one route's handles (requests, upstream, signing, cache);
//! - [`canary`]: a route's canary checks.

pub mod canary;
pub mod route;

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::encoding::prometheus_text;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::Registry;

use crate::config::{Config, Mode, Route, SecretRole};
use crate::error::UpstreamErrorKind;
use crate::mode::verify::VerifyMark;
pub use canary::CanaryMetrics;
pub use route::{
    CacheMetrics, RequestMetrics, RouteMetrics, STATUS_CLASSES, SigningMetrics, UpstreamMetrics,
    VerifyMetrics,
};

/// The `Content-Type` of [`Metrics::encode`]'s text: Prometheus text format 0.0.4.
pub const CONTENT_TYPE: &str = prometheus_text::CONTENT_TYPE;

/// The route label of requests no route took (unknown path, refused before routing), and the
/// mode label of those requests: what the access log writes for them.
pub const UNROUTED: &str = "-";

/// `{route}`.
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RouteLabel {
    /// The route's `name`.
    pub route: String,
}

/// `{route, mode, status_class}` of `signgate_requests_total`.
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RequestLabels {
    /// The route's `name`, or [`UNROUTED`].
    pub route: String,
    /// The route's mode as `gateway.toml` spells it, or [`UNROUTED`].
    pub mode: &'static str,
    /// `1xx` to `5xx`.
    pub status_class: &'static str,
}

/// `{route, kind}` of `signgate_upstream_errors_total`.
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct UpstreamErrorLabels {
    /// The route's `name`.
    pub route: String,
    /// `refused`, `timeout`, `tls`, `busy` or `other`.
    pub kind: &'static str,
}

/// `{route, result}` of `signgate_verify_total`.
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct VerifyLabels {
    /// The route's `name`.
    pub route: String,
    /// `valid`, or the check that failed (see [`crate::mode::verify::Check`]).
    pub result: &'static str,
}

/// `{outcome}` of `signgate_config_reloads_total`.
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ReloadLabels {
    /// `success` or `failure`.
    pub outcome: &'static str,
}

/// `{route, secret}` of `signgate_secret_in_use`.
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct SecretLabels {
    /// The route's `name`.
    pub route: String,
    /// `current` or `next`.
    pub secret: &'static str,
}

/// A route's secret rotation as the metrics show it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RotationState {
    /// `switch_at`, unix seconds.
    pub switch_at: Option<u64>,
    /// Which secret signs now.
    pub in_use: SecretRole,
}

/// How a config reload ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ReloadOutcome {
    /// The new config serves.
    Success,
    /// The new config was refused; the old one keeps serving.
    Failure,
}

impl ReloadOutcome {
    /// The label value.
    pub fn as_str(self) -> &'static str {
        match self {
            ReloadOutcome::Success => "success",
            ReloadOutcome::Failure => "failure",
        }
    }
}

type HistogramFamily<S> = Family<S, Histogram, fn() -> Histogram>;

/// Request durations, in seconds: 1 ms to about 65 s, doubling.
pub fn duration_histogram() -> Histogram {
    Histogram::new([
        0.001, 0.002, 0.004, 0.008, 0.016, 0.032, 0.064, 0.128, 0.256, 0.512, 1.024, 2.048, 4.096,
        8.192, 16.384, 32.768, 65.536,
    ])
}

/// Validity left on a URL handed out, in seconds: a minute to the 30-day `ttl` limit, with the
/// usual `ttl` of an hour (plus up to a `bucket`) finely cut.
pub fn validity_histogram() -> Histogram {
    Histogram::new([
        60.0,
        300.0,
        900.0,
        1800.0,
        3600.0,
        3900.0,
        4200.0,
        5400.0,
        7200.0,
        14_400.0,
        43_200.0,
        86_400.0,
        259_200.0,
        604_800.0,
        2_592_000.0,
    ])
}

/// The per-route families, kept to make a route's handles when a reload adds it.
struct RouteFamilies {
    requests: Family<RequestLabels, Counter>,
    duration: HistogramFamily<RouteLabel>,
    response_bytes: Family<RouteLabel, Counter>,
    upstream_errors: Family<UpstreamErrorLabels, Counter>,
    upstream_403: Family<RouteLabel, Counter>,
    clock_skew: Family<RouteLabel, Gauge>,
    cache_hits: Family<RouteLabel, Counter>,
    cache_misses: Family<RouteLabel, Counter>,
    cache_evictions: Family<RouteLabel, Counter>,
    cache_entries: Family<RouteLabel, Gauge>,
    minted: Family<RouteLabel, Counter>,
    validity: HistogramFamily<RouteLabel>,
    verify: Family<VerifyLabels, Counter>,
}

impl RouteFamilies {
    fn request_metrics(&self, route: &str, mode: &'static str) -> RequestMetrics {
        RequestMetrics {
            by_class: STATUS_CLASSES.map(|status_class| {
                self.requests.get_or_create_owned(&RequestLabels {
                    route: route.to_owned(),
                    mode,
                    status_class,
                })
            }),
            duration: self.duration.get_or_create_owned(&RouteLabel {
                route: route.to_owned(),
            }),
            bytes: self.response_bytes.get_or_create_owned(&RouteLabel {
                route: route.to_owned(),
            }),
        }
    }

    fn route_metrics(&self, name: &str, mode: Mode) -> RouteMetrics {
        let label = RouteLabel {
            route: name.to_owned(),
        };
        RouteMetrics {
            name: name.to_owned(),
            mode,
            requests: Arc::new(self.request_metrics(name, mode.as_str())),
            upstream: UpstreamMetrics {
                errors: UpstreamErrorKind::ALL.map(|kind| {
                    self.upstream_errors
                        .get_or_create_owned(&UpstreamErrorLabels {
                            route: name.to_owned(),
                            kind: kind.as_str(),
                        })
                }),
                forbidden: self.upstream_403.get_or_create_owned(&label),
                clock_skew: self.clock_skew.get_or_create_owned(&label),
            },
            signing: SigningMetrics {
                cache: CacheMetrics {
                    hits: self.cache_hits.get_or_create_owned(&label),
                    misses: self.cache_misses.get_or_create_owned(&label),
                    evictions: self.cache_evictions.get_or_create_owned(&label),
                    entries: self.cache_entries.get_or_create_owned(&label),
                },
                minted: self.minted.get_or_create_owned(&label),
                validity: self.validity.get_or_create_owned(&label),
            },
            // Only verify routes check credentials: no series of zeros for the others.
            verify: if mode == Mode::Verify {
                VerifyMetrics {
                    results: VerifyMark::labels().map(|result| {
                        self.verify.get_or_create_owned(&VerifyLabels {
                            route: name.to_owned(),
                            result,
                        })
                    }),
                }
            } else {
                VerifyMetrics::default()
            },
        }
    }
}

/// The registry and every family in it, shared by all workers and the admin listener.
pub struct Metrics {
    registry: Registry,
    families: RouteFamilies,
    /// Every route's handles made so far, routes a reload removed included (their series stay,
    /// as Prometheus counters should). Locked at start, on reload and by the status page only:
    /// the request path holds its route's handles and never looks here.
    routes: Mutex<Vec<Arc<RouteMetrics>>>,
    unrouted: Arc<RequestMetrics>,
    open_connections: Gauge,
    reloads: Family<ReloadLabels, Counter>,
    secret_file_changes: Counter,
    secret_switch: Family<RouteLabel, Gauge>,
    secret_in_use: Family<SecretLabels, Gauge>,
    canaries: canary::CanaryFamilies,
    started: Instant,
}

impl Metrics {
    /// Registers every family and makes the handles of each of `config`'s routes (every series
    /// a route can have exists from the start, at zero, so an alert on it has something to read).
    pub fn new(config: &Config) -> Self {
        let requests = Family::<RequestLabels, Counter>::default();
        let duration: HistogramFamily<RouteLabel> =
            Family::new_with_constructor(duration_histogram);
        let response_bytes = Family::<RouteLabel, Counter>::default();
        let upstream_errors = Family::<UpstreamErrorLabels, Counter>::default();
        let upstream_403 = Family::<RouteLabel, Counter>::default();
        let clock_skew = Family::<RouteLabel, Gauge>::default();
        let cache_hits = Family::<RouteLabel, Counter>::default();
        let cache_misses = Family::<RouteLabel, Counter>::default();
        let cache_evictions = Family::<RouteLabel, Counter>::default();
        let cache_entries = Family::<RouteLabel, Gauge>::default();
        let minted = Family::<RouteLabel, Counter>::default();
        let validity: HistogramFamily<RouteLabel> =
            Family::new_with_constructor(validity_histogram);
        let verify = Family::<VerifyLabels, Counter>::default();
        let open_connections = Gauge::default();
        let reloads = Family::<ReloadLabels, Counter>::default();
        let secret_file_changes = Counter::default();
        let secret_switch = Family::<RouteLabel, Gauge>::default();
        let secret_in_use = Family::<SecretLabels, Gauge>::default();

        let mut registry = Registry::with_prefix("signgate");
        registry.register(
            "requests",
            "Requests answered, by route, mode and status class",
            requests.clone(),
        );
        registry.register(
            "request_duration_seconds",
            "Time from a request's arrival to the last byte of its answer",
            duration.clone(),
        );
        registry.register(
            "response_bytes",
            "Response body bytes sent to clients",
            response_bytes.clone(),
        );
        registry.register(
            "upstream_errors",
            "Requests that failed at the upstream, by kind: refused, timeout, tls, busy, other",
            upstream_errors.clone(),
        );
        registry.register(
            "upstream_403",
            "Upstream answers with status 403 (on a CDN: our signature was refused)",
            upstream_403.clone(),
        );
        registry.register(
            "upstream_clock_skew_seconds",
            "The upstream's clock less this machine's, from the Date of its answers (sampled once a second)",
            clock_skew.clone(),
        );
        registry.register(
            "signature_cache_hits",
            "Signature lookups answered from the cache",
            cache_hits.clone(),
        );
        registry.register(
            "signature_cache_misses",
            "Signature lookups that had to sign",
            cache_misses.clone(),
        );
        registry.register(
            "signature_cache_evictions",
            "Signature cache entries dropped for room or because their expiry bucket passed",
            cache_evictions.clone(),
        );
        registry.register(
            "signature_cache_entries",
            "Signature cache entries held now, all workers together",
            cache_entries.clone(),
        );
        registry.register(
            "credentials_minted",
            "Policies signed with the secret (HMAC computed)",
            minted.clone(),
        );
        registry.register(
            "url_validity_seconds",
            "Validity left on the credentials handed out (expiry minus now)",
            validity.clone(),
        );
        registry.register(
            "verify",
            "Requests to verify routes, by result: valid, or the check that failed",
            verify.clone(),
        );
        registry.register(
            "open_connections",
            "Client connections open now",
            open_connections.clone(),
        );
        registry.register(
            "config_reloads",
            "Config reloads, by outcome",
            reloads.clone(),
        );
        registry.register(
            "secret_file_changes",
            "Changes to a secret file noticed while serving (each sets off a reload)",
            secret_file_changes.clone(),
        );
        registry.register(
            "secret_switch_seconds",
            "Seconds until the route's switch_at (negative once it has passed); only routes with one",
            secret_switch.clone(),
        );
        registry.register(
            "secret_in_use",
            "1 for the secret the route signs with now (current or next), 0 for the other",
            secret_in_use.clone(),
        );
        for outcome in [ReloadOutcome::Success, ReloadOutcome::Failure] {
            // At zero from the start, so a rate over it has a series to read.
            drop(reloads.get_or_create(&ReloadLabels {
                outcome: outcome.as_str(),
            }));
        }

        let canaries = canary::CanaryFamilies::register(&mut registry);
        for route in config.routes.iter().filter(|route| route.canary.is_some()) {
            drop(canaries.handles(&route.name));
        }

        let families = RouteFamilies {
            requests,
            duration,
            response_bytes,
            upstream_errors,
            upstream_403,
            clock_skew,
            cache_hits,
            cache_misses,
            cache_evictions,
            cache_entries,
            minted,
            validity,
            verify,
        };
        let routes = config
            .routes
            .iter()
            .map(|route| Arc::new(families.route_metrics(&route.name, route.mode())))
            .collect();
        let unrouted = Arc::new(families.request_metrics(UNROUTED, UNROUTED));
        Self {
            registry,
            families,
            routes: Mutex::new(routes),
            unrouted,
            open_connections,
            reloads,
            secret_file_changes,
            secret_switch,
            secret_in_use,
            canaries,
            started: Instant::now(),
        }
    }

    fn routes_locked(&self) -> std::sync::MutexGuard<'_, Vec<Arc<RouteMetrics>>> {
        // Nothing panics while holding it; a poisoned list is still a valid list.
        self.routes
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// The handles of the route called `name`, if one of that name was ever served.
    pub fn route(&self, name: &str) -> Option<Arc<RouteMetrics>> {
        self.routes_locked()
            .iter()
            .rev()
            .find(|route| route.name == name)
            .cloned()
    }

    /// The handles of `route`: those made before for its name and mode, or new ones (a route
    /// a reload added, or whose mode it changed), registered from now on.
    pub fn route_handles(&self, route: &Route) -> Arc<RouteMetrics> {
        let mut routes = self.routes_locked();
        if let Some(found) = routes
            .iter()
            .find(|known| known.name == route.name && known.mode == route.mode())
        {
            return Arc::clone(found);
        }
        let made = Arc::new(self.families.route_metrics(&route.name, route.mode()));
        routes.push(Arc::clone(&made));
        made
    }

    /// Every route's handles made so far, in the order they were made.
    pub fn routes(&self) -> Vec<Arc<RouteMetrics>> {
        self.routes_locked().clone()
    }

    /// The request handles of requests no route took.
    pub fn unrouted(&self) -> &Arc<RequestMetrics> {
        &self.unrouted
    }

    /// Counts a client connection open until the returned guard drops.
    pub fn open_connection(&self) -> OpenConnection {
        self.open_connections.inc();
        OpenConnection(self.open_connections.clone())
    }

    /// Client connections open now.
    pub fn open_connections(&self) -> i64 {
        self.open_connections.get()
    }

    /// Counts a config reload.
    pub fn count_reload(&self, outcome: ReloadOutcome) {
        self.reloads
            .get_or_create(&ReloadLabels {
                outcome: outcome.as_str(),
            })
            .inc();
    }

    /// Counts a change to a secret file.
    pub fn count_secret_file_change(&self) {
        self.secret_file_changes.inc();
    }

    /// Sets the rotation gauges of route `name` from `state` at `now`: read when the metrics
    /// are, since they move with the clock.
    pub fn observe_rotation(&self, name: &str, state: RotationState, now: u64) {
        let route = RouteLabel {
            route: name.to_owned(),
        };
        match state.switch_at {
            Some(at) => {
                let left = i64::try_from(at).unwrap_or(i64::MAX) - i64::try_from(now).unwrap_or(0);
                self.secret_switch.get_or_create(&route).set(left);
            }
            None => {
                self.secret_switch.remove(&route);
            }
        }
        for role in [SecretRole::Current, SecretRole::Next] {
            let labels = SecretLabels {
                route: name.to_owned(),
                secret: role.as_str(),
            };
            self.secret_in_use
                .get_or_create(&labels)
                .set(i64::from(role == state.in_use));
        }
    }

    /// The canary series of route `route`, made at zero if it has none yet.
    pub fn canary(&self, route: &str) -> CanaryMetrics {
        self.canaries.handles(route)
    }

    /// Drops the gauges of route `route`'s canary, which no longer runs.
    pub fn forget_canary(&self, route: &str) {
        self.canaries.forget(route);
    }

    /// Time since these metrics were made: the process's serving time.
    pub fn uptime(&self) -> Duration {
        self.started.elapsed()
    }

    /// Everything, in the Prometheus text format ([`CONTENT_TYPE`]).
    pub fn encode(&self) -> Result<String, std::fmt::Error> {
        let mut text = String::with_capacity(16 * 1024);
        prometheus_text::encode(&mut text, &self.registry)?;
        Ok(text)
    }
}

/// A client connection counted in `signgate_open_connections` until dropped.
pub struct OpenConnection(Gauge);

impl Drop for OpenConnection {
    fn drop(&mut self) {
        self.0.dec();
    }
}
