//! The CDN canary: for each proxy or redirect route with a `canary_handle`, the process (not
//! each worker) signs that handle as the route signs real traffic and fetches it from the
//! route's upstream every `canary_interval`, so a secret changed on the CDN's side without the
//! gateway knowing is caught in seconds, not by users.
//!
//! A check sends `HEAD` (after one 405, a `GET` of `Range: bytes=0-0` from then on) through a
//! client with the route's TLS roots (`ca_file`) and timeouts. Each check is counted
//! (`signgate_canary_checks_total{route,outcome}`, `signgate_canary_ok`,
//! `signgate_canary_last_check_timestamp_seconds`) and noted on the [`CanaryBoard`] that
//! `/readyz` and the status page read; a refusal (401/403) is logged at `error`, any other
//! failure at `warn`, each when it starts and again every [`board::REPEAT_EVERY`] while it
//! lasts. Log lines name the route, the handle and the URL without credentials, never a policy
//! or signature.
//!
//! [`Canaries::apply`] restarts every canary with the config serving after a reload (a new
//! secret, from SIGHUP or a rewritten `secret_file`, among it): each checks at once.
//!
//! - [`board`]: outcomes, the board, and which checks are worth a log line.

pub mod board;

use std::num::NonZeroUsize;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use http::header::{RANGE, USER_AGENT};
use http::uri::PathAndQuery;
use http::{HeaderValue, Method, Request, StatusCode};
use http_body_util::BodyExt;

pub use board::{CanaryBoard, CanaryState, Check, Outcome};
use board::{Note, Reporter};

use crate::body::empty;
use crate::clock::Clock;
use crate::config::{
    Canary, Config, DEFAULT_BODY_IDLE_TIMEOUT, DEFAULT_CONNECT_TIMEOUT,
    DEFAULT_PROXY_MAX_RESPONSE_HEADERS, DEFAULT_RESPONSE_TIMEOUT, Fetch, Route, RouteKind,
    Timeouts,
};
use crate::error::{ProxyError, StartupError};
use crate::filelink::{FileRef, Handle, signed_url};
use crate::health::Health;
use crate::metrics::{CanaryMetrics, Metrics, UpstreamMetrics};
use crate::signer::RouteSigner;
use crate::upstream::UpstreamClient;

/// Body bytes of an answer read before it is dropped: a `HEAD` has none and a ranged `GET`
/// one, but a CDN that ignores `Range` sends the whole file.
const DRAIN_LIMIT: usize = 64 * 1024;

/// The `User-Agent` of the canary's requests, so the CDN's logs can tell them apart.
const CANARY_AGENT: &str = concat!("signgate/", env!("CARGO_PKG_VERSION"), " canary");

/// The canaries of the config serving now, one task each on the runtime that made them.
pub struct Canaries {
    health: Arc<Health>,
    metrics: Arc<Metrics>,
    clock: Arc<dyn Clock>,
    running: Vec<tokio::task::JoinHandle<()>>,
    /// Each canary's log state by route and handle, kept across restarts: a refusal that a
    /// reload (the new secret) ends is logged as ended, not as a first pass.
    reporters: Vec<(String, Handle, Arc<Mutex<Reporter>>)>,
}

impl Canaries {
    /// Starts a canary for each route of `config` that has one, reporting to `health`'s board
    /// and `metrics`. Must be called within a Tokio runtime, which runs them.
    pub fn start(
        config: &Config,
        health: Arc<Health>,
        metrics: Arc<Metrics>,
        clock: Arc<dyn Clock>,
    ) -> Self {
        let mut canaries = Self {
            health,
            metrics,
            clock,
            running: Vec::new(),
            reporters: Vec::new(),
        };
        canaries.apply(config);
        canaries
    }

    /// Stops every canary and starts those of `config` (the one serving after a reload): a
    /// removed route's canary stops, its gauges go, and every other checks at once with the
    /// route's current signing and upstream.
    pub fn apply(&mut self, config: &Config) {
        self.stop();
        let routes: Vec<(&Route, &Canary)> = config
            .routes
            .iter()
            .filter_map(|route| Some((route, route.canary.as_ref()?)))
            .collect();
        let board = self.health.canaries();
        for gone in board
            .states()
            .iter()
            .filter(|old| !routes.iter().any(|(route, _)| route.name == old.route))
        {
            self.metrics.forget_canary(&gone.route);
        }
        board.replace(
            routes
                .iter()
                .map(|(route, canary)| CanaryState {
                    route: route.name.clone(),
                    handle: canary.handle,
                    gates_readiness: canary.gates_readiness,
                    last: None,
                })
                .collect(),
        );
        let mut reporters = Vec::with_capacity(routes.len());
        for (route, canary) in &routes {
            let kept = self
                .reporters
                .iter()
                .find(|(name, handle, _)| *name == route.name && *handle == canary.handle)
                .map(|(_, _, reporter)| Arc::clone(reporter));
            reporters.push((route.name.clone(), canary.handle, kept.unwrap_or_default()));
        }
        self.reporters = reporters;
        for ((route, canary), (_, _, reporter)) in routes.iter().zip(&self.reporters) {
            match Probe::new(route, canary, Arc::clone(reporter), self) {
                Ok(Some(probe)) => self.running.push(tokio::spawn(probe.run(canary.interval))),
                Ok(None) => {}
                // The workers built the same client from the same file a moment ago, so this
                // is a file that changed in between.
                Err(e) => tracing::error!(route = %route.name, "canary not started: {e}"),
            }
        }
    }

    fn stop(&mut self) {
        for task in self.running.drain(..) {
            task.abort();
        }
    }
}

impl Drop for Canaries {
    fn drop(&mut self) {
        self.stop();
    }
}

/// One route's canary: what it signs with, where it fetches, where it reports.
struct Probe {
    route: Arc<str>,
    handle: Handle,
    /// `upstream/HANDLE`, without credentials: what log lines name.
    url: String,
    /// Signs as the route's workers do (the same settings give the same bytes), with a cache
    /// and metrics of its own, so real traffic's counts stay real traffic's.
    signer: RouteSigner,
    client: UpstreamClient,
    metrics: CanaryMetrics,
    health: Arc<Health>,
    clock: Arc<dyn Clock>,
    /// Locked for a moment after each check, never across an `.await`.
    reporter: Arc<Mutex<Reporter>>,
}

impl Probe {
    /// The probe of `route`'s `canary`; `None` for a mode without a CDN upstream, which the
    /// config refuses a canary.
    fn new(
        route: &Route,
        canary: &Canary,
        reporter: Arc<Mutex<Reporter>>,
        canaries: &Canaries,
    ) -> Result<Option<Self>, StartupError> {
        let (fetch, upstream_metrics, max_skew) = match &route.kind {
            // The route's own upstream settings; one connection is all a canary needs. Its
            // answers' `Date`s are left to the route's traffic, which watches them already.
            RouteKind::Proxy(proxy) => (
                Fetch {
                    max_connections: NonZeroUsize::MIN,
                    keepalive: 1,
                    ..proxy.fetch.clone()
                },
                UpstreamMetrics::default(),
                Duration::MAX,
            ),
            // Browsers fetch a redirect route's URLs: the public roots, the default timeouts.
            // No traffic of the route's own reaches the CDN, so the canary's answers are the
            // only view of its clock: they feed the route's skew gauge and warning.
            RouteKind::Redirect(redirect) => (
                Fetch {
                    upstream: redirect.upstream.clone(),
                    timeouts: Timeouts {
                        connect: DEFAULT_CONNECT_TIMEOUT,
                        response: DEFAULT_RESPONSE_TIMEOUT,
                        body_idle: DEFAULT_BODY_IDLE_TIMEOUT,
                        event_stream_idle: None,
                    },
                    ca_file: None,
                    max_connections: NonZeroUsize::MIN,
                    keepalive: 1,
                    max_response_headers: NonZeroUsize::new(DEFAULT_PROXY_MAX_RESPONSE_HEADERS)
                        .unwrap_or(NonZeroUsize::MIN),
                },
                UpstreamMetrics {
                    clock_skew: canaries
                        .metrics
                        .route_handles(route)
                        .upstream
                        .clock_skew
                        .clone(),
                    ..UpstreamMetrics::default()
                },
                route.signing.max_clock_skew,
            ),
            RouteKind::Site(_) | RouteKind::UploadPolicy(_) | RouteKind::Verify(_) => {
                return Ok(None);
            }
        };
        let client = UpstreamClient::new(&route.name, &fetch, &upstream_metrics, max_skew)?;
        Ok(Some(Self {
            route: Arc::from(route.name.as_str()),
            handle: canary.handle,
            url: format!("{}/{}", fetch.upstream.base(), canary.handle),
            signer: RouteSigner::for_route(route),
            client,
            metrics: canaries.metrics.canary(&route.name),
            health: Arc::clone(&canaries.health),
            clock: Arc::clone(&canaries.clock),
            reporter,
        }))
    }

    /// Checks at once, then every `interval` (a check slower than that delays the next).
    async fn run(self, interval: Duration) {
        let mut ticks = tokio::time::interval(interval);
        ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut head = true;
        loop {
            ticks.tick().await;
            let check = self.check(&mut head).await;
            self.metrics.record(check.outcome, check.at);
            self.health.canaries().record(&self.route, check);
            let note = self
                .reporter
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner)
                .note(check.outcome, check.at);
            if let Some(note) = note {
                self.log(note, check);
            }
        }
    }

    /// One check; `head` turns false for good when the CDN answers `HEAD` with 405.
    async fn check(&self, head: &mut bool) -> Check {
        let at = self.clock.now_unix();
        let mut answer = self.fetch(*head, at).await;
        if *head && matches!(answer, Ok(StatusCode::METHOD_NOT_ALLOWED)) {
            *head = false;
            tracing::info!(route = %self.route, url = %self.url, "the CDN answers HEAD with 405: the canary sends a one-byte ranged GET from now on");
            answer = self.fetch(false, at).await;
        }
        match answer {
            Ok(status) => Check {
                at,
                outcome: Outcome::of_status(status),
                status: Some(status),
            },
            Err(e) => {
                let outcome = match e {
                    ProxyError::UpstreamTimeout(_) | ProxyError::UpstreamBusy => Outcome::Timeout,
                    _ => Outcome::Unreachable,
                };
                tracing::debug!(route = %self.route, url = %self.url, error = %e, kind = e.upstream_error_kind().map_or("other", |k| k.as_str()), "canary check failed");
                Check {
                    at,
                    outcome,
                    status: None,
                }
            }
        }
    }

    /// Signs the handle as of `now` and fetches it; the answer's status.
    async fn fetch(&self, head: bool, now: u64) -> Result<StatusCode, ProxyError> {
        let file = FileRef {
            tasks: Vec::new(),
            handle: self.handle,
        };
        let (credentials, _) = self
            .signer
            .file_credentials(now, self.handle, file.needed_calls());
        let url = signed_url(
            self.client.upstream().base_path(),
            &file,
            None,
            &credentials,
            self.signer.signing().url_style,
        );
        let path = PathAndQuery::try_from(url).map_err(|_| ProxyError::BadTarget)?;
        let mut request = Request::new(empty());
        *request.uri_mut() = self.client.upstream().uri(path);
        let headers = request.headers_mut();
        headers.insert(USER_AGENT, HeaderValue::from_static(CANARY_AGENT));
        if head {
            *request.method_mut() = Method::HEAD;
        } else {
            headers.insert(RANGE, HeaderValue::from_static("bytes=0-0"));
        }
        let response = self.client.send(request, now).await?;
        let status = response.status();
        // Read to its end (so the connection can serve the next check) unless it is large.
        let mut body = response.into_body();
        let mut read = 0;
        while read < DRAIN_LIMIT {
            match body.frame().await {
                Some(Ok(frame)) => read += frame.data_ref().map_or(0, bytes::Bytes::len),
                Some(Err(_)) | None => break,
            }
        }
        Ok(status)
    }

    fn log(&self, note: Note, check: Check) {
        let (route, handle, url) = (&*self.route, self.handle.as_str(), self.url.as_str());
        let status = check.status.map(|s| s.as_u16());
        match note {
            Note::Passing { after: None } => {
                tracing::info!(
                    route,
                    handle,
                    url,
                    status,
                    "canary: the CDN accepts the route's signature"
                );
            }
            Note::Passing {
                after: Some(failing_seconds),
            } => tracing::info!(
                route,
                handle,
                url,
                status,
                failing_seconds,
                "canary: the CDN accepts the route's signature again"
            ),
            Note::Failing {
                outcome: Outcome::Refused,
                for_seconds,
            } => tracing::error!(
                route,
                handle,
                url,
                status,
                for_seconds,
                "canary: the CDN refuses the route's signature: the secret it holds is not the gateway's (changed on the CDN's dashboard, or a rotation half done), or a clock is far off"
            ),
            Note::Failing {
                outcome,
                for_seconds,
            } => tracing::warn!(
                route,
                handle,
                url,
                status,
                outcome = outcome.as_str(),
                for_seconds,
                "canary: the CDN did not answer the check with a success; this is not a refusal of the signature"
            ),
        }
    }
}
