//! The admin listener, apart from traffic: `GET /healthz` (the process serves), `GET /readyz`
//! (every worker accepting; 503 while draining, or while a gating canary is refused), `GET /metrics` (Prometheus text format) and
//! `GET /` (a status page a person can read without Grafana). It stops after the workers have
//! drained, so probes see the drain.
//!
//! - [`status_page`]: the HTML of `/`.

pub mod status_page;

use std::convert::Infallible;
use std::future::Future;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use arc_swap::ArcSwap;
use bytes::Bytes;
use http::{HeaderValue, Method, Request, Response, StatusCode, header};
use http_body_util::Full;
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::server::graceful::GracefulShutdown;
use tokio::net::TcpListener;
use tokio::sync::Semaphore;

use crate::clock::Clock;
use crate::config::{Config, Mode, Signing};
use crate::error::StartupError;
use crate::health::{Health, Readiness};
use crate::metrics::{self, Metrics, RotationState};
use crate::reload::ReloadRecord;

/// Connections the admin listener serves at once; more wait in the backlog. Probes and a
/// scraper need a handful.
const MAX_CONNECTIONS: usize = 64;

/// Time a client has to send its request head.
const HEADER_READ_TIMEOUT: Duration = Duration::from_secs(10);

/// Time the admin listener's own requests get to finish once it stops.
const GRACE: Duration = Duration::from_secs(5);

/// What the status page shows of one route.
#[derive(Debug, Clone)]
pub struct RouteSummary {
    /// `name`.
    pub name: String,
    /// `mode`.
    pub mode: Mode,
    /// `prefix`.
    pub prefix: String,
    /// The route's signing: the expiries it hands out, its secret rotation.
    pub signing: Signing,
}

/// Everything the admin listener answers from: the shared metrics and health, and the routes.
pub struct Admin {
    metrics: Arc<Metrics>,
    health: Arc<Health>,
    clock: Arc<dyn Clock>,
    /// The routes served now: replaced by a successful reload.
    routes: ArcSwap<Vec<RouteSummary>>,
    /// The last reload, if any.
    last_reload: Mutex<Option<ReloadRecord>>,
    /// When the status page was last shown, and the request count then: its "recent" rate.
    last_view: Mutex<Option<(Instant, u64)>>,
}

impl Admin {
    /// The admin side of a gateway serving `config`, reading `metrics` and `health`.
    pub fn new(
        config: &Config,
        metrics: Arc<Metrics>,
        health: Arc<Health>,
        clock: Arc<dyn Clock>,
    ) -> Self {
        Self {
            metrics,
            health,
            clock,
            routes: ArcSwap::from_pointee(summaries(config)),
            last_reload: Mutex::new(None),
            last_view: Mutex::new(None),
        }
    }

    /// Shows `record` as the last reload, and `config` (the one serving after it) as the routes.
    pub fn record_reload(&self, record: ReloadRecord, config: &Config) {
        self.routes.store(Arc::new(summaries(config)));
        *self
            .last_reload
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner) = Some(record);
    }

    /// The last reload, if there was one.
    pub fn last_reload(&self) -> Option<ReloadRecord> {
        *self
            .last_reload
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// The answer to one admin request.
    pub fn answer<B>(&self, request: &Request<B>) -> Response<Full<Bytes>> {
        let page = match request.uri().path() {
            "/healthz" => Page::Health,
            "/readyz" => Page::Ready,
            "/metrics" => Page::Metrics,
            "/" => Page::Status,
            _ => return text(StatusCode::NOT_FOUND, "not found\n"),
        };
        // HEAD as GET (hyper sends no body for it): every HTTP server must take both.
        if request.method() != Method::GET && request.method() != Method::HEAD {
            let mut response = text(StatusCode::METHOD_NOT_ALLOWED, "method not allowed\n");
            response
                .headers_mut()
                .insert(header::ALLOW, HeaderValue::from_static("GET, HEAD"));
            return response;
        }
        match page {
            Page::Health => text(StatusCode::OK, "ok\n"),
            Page::Ready => match self.health.readiness() {
                Readiness::Ready => match self.health.canaries().refused_gate() {
                    None => text(StatusCode::OK, "ready\n"),
                    Some(route) => with_type(
                        StatusCode::SERVICE_UNAVAILABLE,
                        "text/plain; charset=utf-8",
                        format!(
                            "canary refused: the CDN refuses the signature of route `{route}`\n"
                        ),
                    ),
                },
                Readiness::Starting => text(StatusCode::SERVICE_UNAVAILABLE, "starting\n"),
                Readiness::Draining => text(StatusCode::SERVICE_UNAVAILABLE, "draining\n"),
            },
            Page::Metrics => match self.observe_rotations().encode() {
                Ok(body) => with_type(StatusCode::OK, metrics::CONTENT_TYPE, body),
                Err(_) => text(StatusCode::INTERNAL_SERVER_ERROR, "cannot encode metrics\n"),
            },
            Page::Status => {
                let mut response = with_type(
                    StatusCode::OK,
                    "text/html; charset=utf-8",
                    status_page::render(self),
                );
                // Self-contained: no script, no fetch, only its own inline style.
                response.headers_mut().insert(
                    header::CONTENT_SECURITY_POLICY,
                    HeaderValue::from_static("default-src 'none'; style-src 'unsafe-inline'"),
                );
                response
            }
        }
    }
}

impl Admin {
    /// The metrics, with each route's rotation gauges set for this moment.
    fn observe_rotations(&self) -> &Metrics {
        let now = self.clock.now_unix();
        for route in self.routes.load().iter() {
            let state = RotationState {
                switch_at: route.signing.rotation.switch_at(),
                in_use: route.signing.role_at(now),
            };
            self.metrics.observe_rotation(&route.name, state, now);
        }
        &self.metrics
    }
}

fn summaries(config: &Config) -> Vec<RouteSummary> {
    config
        .routes
        .iter()
        .map(|route| RouteSummary {
            name: route.name.clone(),
            mode: route.mode(),
            prefix: route.prefix.clone(),
            signing: route.signing.clone(),
        })
        .collect()
}

/// The pages the admin listener serves.
enum Page {
    Health,
    Ready,
    Metrics,
    Status,
}

fn text(status: StatusCode, body: &'static str) -> Response<Full<Bytes>> {
    with_type(status, "text/plain; charset=utf-8", body)
}

fn with_type(
    status: StatusCode,
    content_type: &'static str,
    body: impl Into<Bytes>,
) -> Response<Full<Bytes>> {
    let mut response = Response::new(Full::new(body.into()));
    *response.status_mut() = status;
    let headers = response.headers_mut();
    headers.insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    response
}

/// Serves the admin pages on `listener` until `shutdown` resolves, then gives requests in
/// flight a few seconds and closes idle connections.
pub async fn serve(
    listener: TcpListener,
    admin: Arc<Admin>,
    shutdown: impl Future<Output = ()>,
) -> std::io::Result<()> {
    let mut http = http1::Builder::new();
    http.timer(TokioTimer::new())
        .header_read_timeout(HEADER_READ_TIMEOUT);
    let graceful = GracefulShutdown::new();
    let permits = Arc::new(Semaphore::new(MAX_CONNECTIONS));
    tokio::pin!(shutdown);
    loop {
        let permit = tokio::select! {
            permit = Arc::clone(&permits).acquire_owned() => match permit {
                Ok(permit) => permit,
                Err(_) => break,
            },
            () = &mut shutdown => break,
        };
        let stream = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok((stream, _)) => stream,
                Err(e) => {
                    tracing::warn!(error = %e, "admin listener: accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
            () = &mut shutdown => break,
        };
        let service = {
            let admin = Arc::clone(&admin);
            service_fn(move |request| {
                let response = admin.answer(&request);
                async move { Ok::<_, Infallible>(response) }
            })
        };
        let connection = graceful.watch(http.serve_connection(TokioIo::new(stream), service));
        tokio::spawn(async move {
            if let Err(e) = connection.await {
                tracing::debug!(error = %e, "admin connection ended with an error");
            }
            drop(permit);
        });
    }
    drop(listener);
    tokio::select! {
        () = graceful.shutdown() => {}
        () = tokio::time::sleep(GRACE) => tracing::debug!("admin listener: grace elapsed"),
    }
    Ok(())
}

/// The admin listener bound, not yet serving.
pub struct AdminListener {
    /// The bound address (the real port when the config asked for port 0).
    pub addr: SocketAddr,
    listener: std::net::TcpListener,
}

impl AdminListener {
    /// Binds `addr`.
    pub fn bind(addr: SocketAddr) -> Result<Self, StartupError> {
        let bind_error = |source| StartupError::Bind { addr, source };
        let listener = std::net::TcpListener::bind(addr).map_err(bind_error)?;
        listener.set_nonblocking(true).map_err(bind_error)?;
        let addr = listener.local_addr().map_err(bind_error)?;
        Ok(Self { addr, listener })
    }

    /// Serves `admin` on a thread and runtime of its own, so a worker's load never delays a
    /// probe; [`RunningAdmin::stop`] stops it.
    pub fn start(self, admin: Arc<Admin>) -> Result<RunningAdmin, StartupError> {
        let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
        let listener = self.listener;
        let thread = std::thread::Builder::new()
            .name("signgate-admin".to_owned())
            .spawn(move || -> std::io::Result<()> {
                let runtime = tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()?;
                runtime.block_on(async move {
                    let listener = TcpListener::from_std(listener)?;
                    serve(listener, admin, async move {
                        let _ = stop_rx.await;
                    })
                    .await
                })
            })
            .map_err(StartupError::Runtime)?;
        Ok(RunningAdmin { stop_tx, thread })
    }
}

/// The admin listener serving on its thread.
pub struct RunningAdmin {
    stop_tx: tokio::sync::oneshot::Sender<()>,
    thread: std::thread::JoinHandle<std::io::Result<()>>,
}

impl RunningAdmin {
    /// Stops accepting, lets requests in flight finish (briefly) and waits for the thread.
    pub fn stop(self) {
        let _ = self.stop_tx.send(());
        match self.thread.join() {
            Ok(Ok(())) => {}
            Ok(Err(e)) => tracing::error!(error = %e, "admin listener stopped with an error"),
            Err(_) => tracing::error!("admin listener panicked"),
        }
    }
}
