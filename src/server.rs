//! The listener: accept loop with a connection limit, HTTP/1.1 and h2c on one port, the request
//! service, and graceful drain on shutdown.

use std::convert::Infallible;
use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Instant;

use http::{Request, Response};
use hyper::body::{Body as _, Incoming};
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use hyper_util::server::graceful::GracefulShutdown;
use tokio::net::TcpListener;
use tokio::sync::Semaphore;
use tokio_io_timeout::TimeoutWriter;

use crate::body::pumped;
use crate::clock::Clock;
use crate::config::{Config, ServerConfig};
use crate::error::{ProxyError, StartupError};
use crate::host::settle_host;
use crate::mode::{self, RequestContext};
use crate::request_log::{AccessLog, Metered, log_error, redact_path};
use crate::router::Router;

/// Everything a request needs, built once at start and shared by `Arc`.
pub struct AppState {
    /// The route table.
    pub router: Router,
    /// Listener settings.
    pub server: ServerConfig,
    /// Wall clock (injectable for tests).
    pub clock: Arc<dyn Clock>,
}

impl AppState {
    /// Compiles `config` into serving state.
    pub fn new(config: &Config, clock: Arc<dyn Clock>) -> Result<Self, StartupError> {
        Ok(Self {
            router: Router::new(config)?,
            server: config.server.clone(),
            clock,
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
    let mut builder = auto::Builder::new(TokioExecutor::new());
    let max_head = state.server.max_header_bytes;
    builder
        .http1()
        .timer(TokioTimer::new())
        .header_read_timeout(state.server.header_read_timeout)
        .max_buf_size(max_head);
    builder
        .http2()
        .timer(TokioTimer::new())
        .max_header_list_size(u32::try_from(max_head).unwrap_or(u32::MAX));
    let graceful = GracefulShutdown::new();
    let permits = Arc::new(Semaphore::new(state.server.max_connections.get()));
    tokio::pin!(shutdown);

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
            // This listener is plain TCP.
            scheme: ListenerScheme::Http,
        };
        let state = Arc::clone(&state);
        let service = service_fn(move |request| handle_request(Arc::clone(&state), peer, request));
        let connection = builder.serve_connection(TokioIo::new(Box::pin(stream)), service);
        let connection = graceful.watch(connection.into_owned());
        tokio::spawn(async move {
            if let Err(e) = connection.await {
                tracing::debug!(peer = %peer.addr, error = %e, "connection ended with an error");
            }
            drop(permit);
        });
    }

    drop(listener);
    let grace = state.server.shutdown_grace;
    tracing::info!(
        in_flight = graceful.count(),
        ?grace,
        "shutting down: draining connections"
    );
    tokio::select! {
        () = graceful.shutdown() => tracing::info!("all connections drained"),
        () = tokio::time::sleep(grace) => tracing::warn!("shutdown grace elapsed; closing the rest"),
    }
    Ok(())
}

/// The whole request path: route, handle, turn errors into responses, meter for the access log.
async fn handle_request(
    state: Arc<AppState>,
    peer: Peer,
    mut request: Request<Incoming>,
) -> Result<Response<Metered>, Infallible> {
    let started = Instant::now();
    let method = request.method().clone();
    let version = request.version();
    let path = request.uri().path().to_owned();
    let ctx = RequestContext {
        peer: peer.addr,
        now: state.clock.now_unix(),
        scheme: peer.scheme,
        trusted_peer: peer.trusted,
    };
    // Checked before routing, so every route (and every error page) sees one settled host.
    let host = settle_host(&mut request);
    let (route_name, result) = match (host, state.router.find(&path)) {
        (Err(e), _) => ("-".to_owned(), Err(e)),
        (Ok(()), None) => ("-".to_owned(), Err(ProxyError::NoRoute)),
        (Ok(()), Some((active, rest))) => (
            active.name.clone(),
            mode::handle(active, rest, request, ctx).await,
        ),
    };
    let (response, cache) = match result {
        Ok(handled) => (handled.response, handled.cache),
        Err(error) => {
            log_error(&error, &route_name);
            (error.into_response(), None)
        }
    };
    let (mut parts, mut body) = response.into_parts();
    // Answer in the client's version, whatever the upstream spoke: hyper writes an HTTP/1.0
    // response head as such and closes the connection after it.
    parts.version = version;
    if version == http::Version::HTTP_2 && !body.is_end_stream() {
        // A stream the client never reads is never polled: watch it from a task of its own.
        body = pumped(body, state.server.send_timeout);
    }
    let log = AccessLog {
        method,
        route: route_name,
        path: redact_path(&path),
        status: parts.status.as_u16(),
        cache: cache.map_or("-", |c| c.as_str()),
        started,
    };
    Ok(Response::from_parts(parts, Metered::new(body, log)))
}
