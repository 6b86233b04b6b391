//! The listener: accept loop with a connection limit, HTTP/1.1 and h2c on one port (told apart
//! by [`crate::protocol`]) or TLS with ALPN (`h2`, `http/1.1`; [`crate::tls`]), the request
//! service, idle connections closed, and graceful drain on shutdown.

use std::convert::Infallible;
use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::time::{Duration, Instant};

use arc_swap::ArcSwap;
use http::{Request, Response};
use hyper::body::{Body as _, Incoming};
use hyper::server::conn::{http1, http2};
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use tokio::net::TcpListener;
use tokio::sync::{Semaphore, watch};
use tokio_io_timeout::TimeoutWriter;
use tokio_rustls::TlsAcceptor;

use crate::activity::{Activity, InFlight};
use crate::body::pumped;
use crate::clock::Clock;
use crate::config::{Config, ServerConfig};
use crate::error::{ProxyError, StartupError};
use crate::health::Health;
use crate::host::{check_method, check_target, settle_host};
use crate::metrics::Metrics;
use crate::mode::verify::VerifyMark;
use crate::mode::{self, RequestContext};
use crate::protocol::{Protocol, ServedConnection, sniff};
use crate::request_id::{RequestIds, X_REQUEST_ID};
use crate::request_log::{AccessLog, Metered, UpstreamStatus, log_error};
use crate::rewrite::RewriteMark;
use crate::router::Router;

/// Everything a request needs, built once at start and shared by `Arc`.
pub struct AppState {
    /// The route table, swapped whole by a reload. Each request loads it once, at its start,
    /// and finishes on that snapshot whatever a reload does meanwhile.
    pub router: ArcSwap<Router>,
    /// Listener settings.
    pub server: ServerConfig,
    /// Wall clock (injectable for tests).
    pub clock: Arc<dyn Clock>,
    /// Requests the worker serves at once, `max_connections` of them: an HTTP/2 stream takes
    /// one as an HTTP/1.1 request does, so a few multiplexed connections cannot hold more.
    pub request_slots: Arc<Semaphore>,
    /// The metrics every worker counts into.
    pub metrics: Arc<Metrics>,
    /// Whether every worker accepts, or the gateway drains: what `/readyz` answers from.
    pub health: Arc<Health>,
    /// Makes the ids of requests that bring no sane `X-Request-Id`.
    pub request_ids: RequestIds,
    /// The listener's TLS, when `tls_cert` and `tls_key` are set: swapped by a reload (which
    /// re-reads the files); each connection's handshake loads it once.
    pub tls: Option<ArcSwap<rustls::ServerConfig>>,
}

impl AppState {
    /// Compiles `config` into serving state for one worker, with metrics and health of its
    /// own.
    pub fn new(config: &Config, clock: Arc<dyn Clock>) -> Result<Self, StartupError> {
        Self::sharing(
            config,
            clock,
            Arc::new(Metrics::new(config)),
            Arc::new(Health::new(1)),
        )
    }

    /// Compiles `config` into serving state for one of several workers, all counting into
    /// `metrics` and reporting to `health`.
    pub fn sharing(
        config: &Config,
        clock: Arc<dyn Clock>,
        metrics: Arc<Metrics>,
        health: Arc<Health>,
    ) -> Result<Self, StartupError> {
        Ok(Self {
            router: ArcSwap::from_pointee(Router::new(config, &metrics)?),
            server: config.server.clone(),
            clock,
            request_slots: Arc::new(Semaphore::new(config.server.max_connections.get())),
            metrics,
            health,
            request_ids: RequestIds::new(),
            tls: match &config.server.tls {
                Some(files) => Some(ArcSwap::new(crate::tls::server_config(files)?)),
                None => None,
            },
        })
    }
}

/// The scheme clients use to reach a listener: what `X-Forwarded-Proto` and `Forwarded`'s
/// `proto` tell the upstream.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ListenerScheme {
    /// Plain HTTP (and h2c).
    Http,
    /// TLS.
    Https,
}

impl ListenerScheme {
    /// `"http"` or `"https"`.
    pub fn as_str(self) -> &'static str {
        match self {
            ListenerScheme::Http => "http",
            ListenerScheme::Https => "https",
        }
    }
}

/// What the accept loop knows about one client connection, shared by its requests.
#[derive(Debug, Clone, Copy)]
struct Peer {
    addr: SocketAddr,
    /// Whether `addr` is in `trusted_proxies`: decided once per connection.
    trusted: bool,
    scheme: ListenerScheme,
}

/// Serves `listener` until `shutdown` resolves, then stops accepting and gives in-flight
/// requests `shutdown_grace` to finish.
pub async fn serve(
    listener: TcpListener,
    state: Arc<AppState>,
    shutdown: impl Future<Output = ()>,
) -> std::io::Result<()> {
    let max_head = state.server.max_header_bytes;
    let mut http1 = http1::Builder::new();
    http1
        .timer(TokioTimer::new())
        .header_read_timeout(state.server.header_read_timeout)
        .max_buf_size(max_head);
    let mut http2 = http2::Builder::new(TokioExecutor::new());
    http2
        .timer(TokioTimer::new())
        .max_concurrent_streams(H2_MAX_CONCURRENT_STREAMS)
        .max_header_list_size(h2_header_list_size(max_head))
        .header_table_size(H2_HEADER_TABLE_SIZE)
        // WebSockets over HTTP/2 (RFC 8441), for site routes.
        .enable_connect_protocol()
        .keep_alive_interval(H2_PING_INTERVAL)
        .keep_alive_timeout(H2_PING_TIMEOUT);
    let (http1, http2) = (Arc::new(http1), Arc::new(http2));
    let max_connections = state.server.max_connections.get();
    let permits = Arc::new(Semaphore::new(max_connections));
    // Tells every connection to finish what it has in flight and close.
    let (draining, drain_signal) = watch::channel(false);
    tokio::pin!(shutdown);
    state.health.worker_accepting();

    loop {
        // Take a permit before accepting: past the limit, new connections wait in the backlog
        // instead of costing a descriptor and a task each.
        let permit = tokio::select! {
            permit = Arc::clone(&permits).acquire_owned() => match permit {
                Ok(permit) => permit,
                Err(_) => break,
            },
            () = &mut shutdown => break,
        };
        let (stream, peer) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(accepted) => accepted,
                Err(e) => {
                    // EMFILE and friends: keep serving what is open; try again shortly.
                    tracing::warn!(error = %e, "accept failed");
                    tokio::time::sleep(std::time::Duration::from_millis(50)).await;
                    continue;
                }
            },
            () = &mut shutdown => break,
        };
        if let Err(e) = stream.set_nodelay(true) {
            tracing::debug!(error = %e, "set_nodelay failed");
        }
        // A write that stalls past `send_timeout` (a client that stopped reading) fails the
        // connection, which drops the response body and frees its upstream connection.
        let mut stream = TimeoutWriter::new(stream);
        stream.set_timeout(Some(state.server.send_timeout));
        let peer = Peer {
            addr: peer,
            trusted: state.server.trusts(peer.ip()),
            scheme: match state.tls {
                Some(_) => ListenerScheme::Https,
                None => ListenerScheme::Http,
            },
        };
        let open = state.metrics.open_connection();
        let activity = Arc::new(Activity::holding(permit));
        let service = {
            let (state, activity) = (Arc::clone(&state), Arc::clone(&activity));
            service_fn(move |request| {
                handle_request(Arc::clone(&state), peer, request, activity.begin())
            })
        };
        let idle_timeout = state.server.header_read_timeout;
        let mut drain_signal = drain_signal.clone();
        let (http1, http2) = (Arc::clone(&http1), Arc::clone(&http2));
        // Loaded at accept: a reload's certificate serves the connections accepted after it.
        let tls = state
            .tls
            .as_ref()
            .map(|tls| TlsAcceptor::from(tls.load_full()));
        // The task stays small (under 1 KiB) whichever protocol it ends up speaking: the TLS
        // stream and the connection go on the heap at their own size.
        let task = async move {
            let result = match tls {
                Some(acceptor) => {
                    // A client that does not finish the handshake within `header_read_timeout`
                    // is closed, as one that sends no request head would be.
                    let handshake = tokio::select! {
                        done = tokio::time::timeout(idle_timeout, Box::pin(acceptor.accept(Box::pin(stream)))) => done.ok().map(|tls| tls.map(Box::new)),
                        _ = drain_signal.wait_for(|draining| *draining) => None,
                    };
                    match handshake {
                        Some(Ok(io))
                            if io.get_ref().1.alpn_protocol() == Some(crate::tls::ALPN_H2) =>
                        {
                            let connection =
                                Box::pin(http2.serve_connection(TokioIo::new(io), service));
                            drive(connection, &activity, idle_timeout, &mut drain_signal).await
                        }
                        // `http/1.1`, or no ALPN at all.
                        Some(Ok(io)) => {
                            let connection = Box::pin(
                                http1
                                    .serve_connection(TokioIo::new(io), service)
                                    .with_upgrades(),
                            );
                            drive(connection, &activity, idle_timeout, &mut drain_signal).await
                        }
                        Some(Err(e)) => {
                            tracing::debug!(peer = %peer.addr, error = %e, "TLS handshake failed");
                            Ok(())
                        }
                        None => Ok(()),
                    }
                }
                None => {
                    // The first bytes tell the version; a connection that sends none within
                    // `header_read_timeout` is closed, as HTTP/1.1's header timeout would.
                    let sniffed = tokio::select! {
                        sniffed = tokio::time::timeout(idle_timeout, sniff(Box::pin(stream))) => sniffed.ok(),
                        _ = drain_signal.wait_for(|draining| *draining) => None,
                    };
                    match sniffed {
                        Some(Ok((Protocol::Http1, io))) => {
                            let connection = Box::pin(
                                http1
                                    .serve_connection(TokioIo::new(io), service)
                                    .with_upgrades(),
                            );
                            drive(connection, &activity, idle_timeout, &mut drain_signal).await
                        }
                        Some(Ok((Protocol::H2c, io))) => {
                            let connection =
                                Box::pin(http2.serve_connection(TokioIo::new(io), service));
                            drive(connection, &activity, idle_timeout, &mut drain_signal).await
                        }
                        Some(Err(_)) | None => Ok(()),
                    }
                }
            };
            if let Err(e) = result {
                tracing::debug!(peer = %peer.addr, error = %e, "connection ended with an error");
            }
            drop(open);
        };
        tokio::spawn(task);
    }

    drop(listener);
    // Not ready from here on: a load balancer polling `/readyz` stops sending new clients.
    state.health.worker_draining();
    let grace = state.server.shutdown_grace;
    let open = max_connections - permits.available_permits();
    tracing::info!(open, ?grace, "shutting down: draining connections");
    let _ = draining.send(true);
    // Every connection's task holds a permit until it ends: all of them back means all closed.
    let all_closed = permits.acquire_many(u32::try_from(max_connections).unwrap_or(u32::MAX));
    tokio::select! {
        _ = all_closed => tracing::info!("all connections drained"),
        () = tokio::time::sleep(grace) => tracing::warn!("shutdown grace elapsed; closing the rest"),
    }
    Ok(())
}

/// Serves one connection until it ends, closing it once no request has been in flight for
/// `idle_timeout` or when the server drains.
async fn drive<C: ServedConnection>(
    mut connection: Pin<Box<C>>,
    activity: &Activity,
    idle_timeout: Duration,
    drain_signal: &mut watch::Receiver<bool>,
) -> Result<(), hyper::Error> {
    let closing = tokio::select! {
        result = connection.as_mut() => Closing::Ended(result),
        // HTTP/1.1 has its header timeout between requests; HTTP/2 has nothing of its own, so
        // a connection with no stream open for as long is closed here.
        () = activity.idle_for(idle_timeout) => Closing::Idle,
        _ = drain_signal.wait_for(|draining| *draining) => Closing::Draining,
    };
    match closing {
        Closing::Ended(result) => result,
        Closing::Idle => {
            // GOAWAY, then the ping a graceful HTTP/2 close waits for: a peer that never
            // answers gets as long again, then the connection is dropped. A request that
            // slipped in meanwhile (HTTP/1.1) is answered first.
            connection.as_mut().graceful_shutdown();
            tokio::select! {
                result = connection.as_mut() => result,
                () = activity.idle_for(idle_timeout) => Ok(()),
            }
        }
        Closing::Draining => {
            // Streams in flight finish, within `shutdown_grace`.
            connection.as_mut().graceful_shutdown();
            connection.await
        }
    }
}

/// Takes one of the worker's request slots (waiting up to `header_read_timeout`), then settles
/// the host and checks the target, the method's length and the header count.
async fn admit<B>(
    state: &AppState,
    request: &mut Request<B>,
    in_flight: &mut InFlight,
) -> Result<(), ProxyError> {
    let slots = Arc::clone(&state.request_slots);
    let slot = match Arc::clone(&slots).try_acquire_owned() {
        Ok(slot) => slot,
        Err(_) => tokio::time::timeout(state.server.header_read_timeout, slots.acquire_owned())
            .await
            .map_err(|_| ProxyError::TooManyRequests)?
            .map_err(|e| ProxyError::Internal(e.into()))?,
    };
    in_flight.hold_slot(slot);
    settle_host(request)?;
    check_target(request.uri())?;
    check_method(request.method())?;
    if request.headers().len() > MAX_REQUEST_HEADERS {
        return Err(ProxyError::TooManyHeaders);
    }
    Ok(())
}

/// Why a connection's task stopped serving it.
enum Closing<E> {
    /// The connection ended by itself.
    Ended(Result<(), E>),
    /// No request was in flight for `header_read_timeout`.
    Idle,
    /// The server is shutting down.
    Draining,
}

/// The HPACK dynamic table a client may fill (the `h2` crate's default is 4 KiB): what one
/// byte of a header block can stand for.
const H2_HEADER_TABLE_SIZE: u32 = 1024;

/// Streams one HTTP/2 connection may have open at once (hyper's default is 200).
const H2_MAX_CONCURRENT_STREAMS: u32 = 100;

/// The largest decoded HTTP/2 header list: `max_header_bytes`, but at most 16 KiB. HPACK lets a
/// header stored once be repeated for a byte per reference, so what a request decodes to is
/// bounded here, by [`MAX_REQUEST_HEADERS`] and by [`H2_HEADER_TABLE_SIZE`], not by what the
/// client sent.
fn h2_header_list_size(max_header_bytes: usize) -> u32 {
    u32::try_from(max_header_bytes.min(16 * 1024)).unwrap_or(u32::MAX)
}

/// How often an HTTP/2 connection is pinged, and how long the peer has to answer before the
/// connection is closed as dead.
const H2_PING_INTERVAL: Duration = Duration::from_secs(30);
const H2_PING_TIMEOUT: Duration = Duration::from_secs(20);

/// Headers one request may carry, over either version: hyper's HTTP/1.1 parser stops at this
/// many, and HTTP/2 requests are held to the same.
const MAX_REQUEST_HEADERS: usize = 100;

/// The whole request path: route, handle, turn errors into responses, meter for the access log.
async fn handle_request(
    state: Arc<AppState>,
    peer: Peer,
    mut request: Request<Incoming>,
    mut in_flight: InFlight,
) -> Result<Response<Metered>, Infallible> {
    let started = Instant::now();
    let method = request.method().clone();
    let version = request.version();
    let target = request.uri().clone();
    let ctx = RequestContext {
        peer: peer.addr,
        now: state.clock.now_unix(),
        scheme: peer.scheme,
        trusted_peer: peer.trusted,
        client_body_timeout: state.server.client_body_timeout,
    };
    // Checked before routing, so every route (and every error page) sees a request with a
    // slot, one settled host, an ASCII target, a method of sane length and no more headers
    // than HTTP/1.1 allows.
    let admitted = admit(&state, &mut request, &mut in_flight).await;
    // Handlers forward the request's own `X-Request-Id`: make it the one logged and answered.
    let request_id = state.request_ids.for_request(request.headers());
    request
        .headers_mut()
        .insert(X_REQUEST_ID.clone(), request_id.header_value().clone());
    let mut in_flight = Some(in_flight);
    // The one load of the routing state: this request is served by this snapshot to its end.
    let router = state.router.load_full();
    let (route_name, route, result) = match (admitted, router.find(target.path())) {
        (Err(e), _) => (Arc::from("-"), None, Err(e)),
        (Ok(()), None) => (Arc::from("-"), None, Err(ProxyError::NoRoute)),
        (Ok(()), Some((active, rest))) => (
            Arc::clone(&active.name),
            Some(Arc::clone(&active.metrics)),
            mode::handle(active, rest, request, ctx).await,
        ),
    };
    let (response, cache) = match result {
        Ok(handled) => {
            if let Some(tunnel) = handled.tunnel {
                // The WebSocket keeps this request's slot for as long as it lives.
                tokio::spawn(tunnel.run(in_flight.take()));
            }
            (handled.response, handled.cache)
        }
        Err(error) => {
            log_error(&error, &route_name);
            if let (Some(route), Some(kind)) = (&route, error.upstream_error_kind()) {
                route.upstream.count_error(kind);
            }
            (error.into_response(), None)
        }
    };
    let requests = match &route {
        Some(route) => Arc::clone(&route.requests),
        None => Arc::clone(state.metrics.unrouted()),
    };
    let (mut parts, mut body) = response.into_parts();
    // Answer in the client's version, whatever the upstream spoke: hyper writes an HTTP/1.0
    // response head as such and closes the connection after it.
    parts.version = version;
    parts
        .headers
        .insert(X_REQUEST_ID.clone(), request_id.header_value().clone());
    if version == http::Version::HTTP_2 && !body.is_end_stream() {
        // A stream the client never reads is never polled: watch it from a task of its own.
        body = pumped(body, state.server.send_timeout);
    }
    let verify = parts.extensions.remove::<VerifyMark>();
    if let (Some(route), Some(mark)) = (&route, verify) {
        route.verify.count(mark);
    }
    let log = AccessLog {
        method,
        route: route_name,
        target,
        status: parts.status.as_u16(),
        cache: cache.map_or("-", |c| c.as_str()),
        rewrite: parts.extensions.remove::<RewriteMark>(),
        started,
        peer: peer.addr,
        upstream_status: parts.extensions.remove::<UpstreamStatus>().map(|s| s.0),
        request_id,
        verify,
    };
    let body = Metered::new(body, log, requests);
    Ok(Response::from_parts(
        parts,
        match in_flight {
            Some(in_flight) => body.holding(in_flight),
            None => body,
        },
    ))
}
