//! One route's upstream connections, kept by the worker that made them: HTTP/1.1 connections
//! reused only after an answer's body was read to its end, the most recently used first; past
//! a burst at most `upstream_keepalive` of them stay idle (the oldest close at the first sweep,
//! every [`SWEEP_EVERY`], that finds them idle for [`EXCESS_GRACE`]), none idle longer than
//! [`IDLE_TIMEOUT`]; one shared HTTP/2 connection where TLS's ALPN picks `h2`.
//!
//! The pool is built per route at config time and reached without hashing. An HTTP/1.1
//! connection has no task of its own: the request that holds it drives it (while it waits for
//! the answer's head, then from its body as the client reads), so a proxied request wakes one
//! task instead of two or three; while it waits idle, one sweeper per pool notices within
//! [`SWEEP_EVERY`] that the upstream closed it. A request that an idle connection could not
//! take (the upstream had closed it) goes once more on a new connection; see [`Pool::send`].

use std::collections::VecDeque;
use std::future::poll_fn;
use std::pin::{Pin, pin};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, Weak};
use std::task::{Context, Poll, Waker};
use std::time::{Duration, Instant};

use http::header::HOST;
use http::uri::{PathAndQuery, Uri};
use http::{HeaderValue, Method, Request, Response};
use hyper::body::{Body, Frame, Incoming, SizeHint};
use hyper::client::conn::{http1, http2};
use hyper_rustls::{HttpsConnector, MaybeHttpsStream};
use hyper_util::client::legacy::connect::{Connection as _, HttpConnector};
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use tokio::net::TcpStream;
use tower_service::Service as _;

use crate::body::{BoxError, ResponseBody};

/// An idle connection older than this is closed instead of reused (nginx's upstream
/// `keepalive_timeout` is 60 s too).
pub const IDLE_TIMEOUT: Duration = Duration::from_secs(60);

/// hyper's own limit on an answer's headers, which it parses into arrays on the stack; any
/// other limit is set per connection and costs per answer.
const HYPER_MAX_HEADERS: usize = 100;

/// How often idle connections are looked at for an upstream that closed them, and for those
/// past `upstream_keepalive`.
pub const SWEEP_EVERY: Duration = Duration::from_secs(5);

/// How long a connection past `upstream_keepalive` must have been idle for the sweeper to
/// close it. Under steady load the idle count peaks past the limit for a moment after each
/// batch of answers; closing those at once (as nginx's `keepalive N` does) made the load
/// bench connect anew every 12 requests at 64 client connections and the default 32.
pub const EXCESS_GRACE: Duration = Duration::from_secs(1);

/// Why a request got no answer: the connection could not be made, or it broke.
#[derive(Debug)]
pub enum SendError {
    /// TCP or TLS to the upstream failed (or timed out).
    Connect(BoxError),
    /// The connection failed while the request was sent or the answer awaited.
    Send(hyper::Error),
}

/// One route's connections to its upstream, for one worker.
#[derive(Clone)]
pub struct Pool {
    shared: Arc<Shared>,
}

struct Shared {
    connector: HttpsConnector<HttpConnector>,
    /// How many idle HTTP/1.1 connections the sweeper leaves open (more wait idle between
    /// sweeps, after a burst).
    keepalive: usize,
    /// `max_response_headers`.
    max_headers: usize,
    /// The `Host` of requests that bring none.
    host: HeaderValue,
    /// Taken only between awaits, by the worker's one thread: never contended.
    state: Mutex<State>,
    /// Whether the sweeper of idle connections runs.
    sweeping: AtomicBool,
}

#[derive(Default)]
struct State {
    /// Oldest first; a request takes the newest.
    idle: VecDeque<Idle>,
    /// The HTTP/2 connection, once ALPN has picked `h2`.
    h2: Option<http2::SendRequest<ResponseBody>>,
}

struct Idle {
    connection: Http1,
    since: Instant,
}

/// The byte stream to an upstream: TCP, or TLS over it.
type Io = MaybeHttpsStream<TokioIo<TcpStream>>;

/// An HTTP/1.1 connection: the handle requests go through, and the future that reads and
/// writes the socket, polled by whoever holds the connection (`None` once it has ended). The
/// driver is boxed: it is large (about 1.8 KiB) and moves with the connection on every request.
struct Http1 {
    sender: http1::SendRequest<ResponseBody>,
    driver: Option<Box<http1::Connection<Io, ResponseBody>>>,
}

impl Http1 {
    /// Lets the connection read and write what it can; notes when it has ended.
    fn drive(&mut self, cx: &mut Context<'_>) {
        if let Some(driver) = &mut self.driver
            && Pin::new(&mut **driver).poll(cx).is_ready()
        {
            self.driver = None;
        }
    }

    /// Ready for a request: `false` once the connection has ended.
    async fn ready(&mut self) -> bool {
        poll_fn(|cx| {
            self.drive(cx);
            self.sender.poll_ready(cx).map(|ready| ready.is_ok())
        })
        .await
    }

    /// Whether the connection can still serve: its driver runs and its handle is open.
    fn is_open(&self) -> bool {
        self.driver.is_some() && !self.sender.is_closed()
    }
}

/// A connection taken for one request.
enum Taken {
    Http1 {
        connection: Http1,
        reused: bool,
    },
    Http2 {
        sender: http2::SendRequest<ResponseBody>,
        reused: bool,
    },
}

impl Taken {
    fn reused(&self) -> bool {
        match self {
            Taken::Http1 { reused, .. } | Taken::Http2 { reused, .. } => *reused,
        }
    }
}

impl Pool {
    /// A pool connecting with `connector`, keeping `keepalive` idle connections past a burst,
    /// accepting answers with at most `max_headers` headers, and sending `host` as the `Host`
    /// of HTTP/1.1 requests that bring none.
    pub fn new(
        connector: HttpsConnector<HttpConnector>,
        keepalive: usize,
        max_headers: usize,
        host: HeaderValue,
    ) -> Self {
        Self {
            shared: Arc::new(Shared {
                connector,
                keepalive,
                max_headers,
                host,
                state: Mutex::new(State::default()),
                sweeping: AtomicBool::new(false),
            }),
        }
    }

    /// How many HTTP/1.1 connections wait idle now.
    pub fn idle_count(&self) -> usize {
        self.shared.state().idle.len()
    }

    /// Sends `request` (an absolute URI) on an idle connection or a new one and returns the
    /// answer; its body gives the connection back when read to the end.
    ///
    /// A request that an idle connection could not take because the upstream had closed it
    /// goes once more on a new connection: unsent, it is the same request whatever its method.
    /// A bodiless `GET`, `HEAD` or `OPTIONS` whose reused connection closed before any answer
    /// came also goes once more (RFC 9110 section 9.2.2: repeating it is safe).
    pub async fn send(
        &self,
        mut request: Request<ResponseBody>,
    ) -> Result<Response<ResponseBody>, SendError> {
        let uri = request.uri().clone();
        let replay = Replay::of(&request);
        let mut retried = false;
        loop {
            let taken = self.take(&uri).await?;
            let reused = taken.reused();
            let outcome = match taken {
                Taken::Http1 { mut connection, .. } => {
                    *request.uri_mut() = origin_form(&uri);
                    // HTTP/1.1 needs a `Host`; HTTP/2 has the URI's authority instead.
                    let shared = &self.shared;
                    request
                        .headers_mut()
                        .entry(HOST)
                        .or_insert_with(|| shared.host.clone());
                    if is_upgrade(&request)
                        && let Some(driver) = connection.driver.take()
                    {
                        // The connection becomes the tunnel's: a task of its own hands it over.
                        tokio::spawn((*driver).with_upgrades());
                    }
                    let mut sent = pin!(connection.sender.try_send_request(request));
                    let answer = poll_fn(|cx| {
                        connection.drive(cx);
                        sent.as_mut().poll(cx)
                    })
                    .await;
                    answer.map(|response| self.returning(response, connection))
                }
                Taken::Http2 { mut sender, .. } => {
                    *request.uri_mut() = uri.clone();
                    sender
                        .try_send_request(request)
                        .await
                        .map(|response| response.map(|body| PooledBody::new(body, None).boxed()))
                }
            };
            let mut error = match outcome {
                Ok(response) => return Ok(response),
                Err(error) => error,
            };
            if retried || !reused {
                return Err(SendError::Send(error.into_error()));
            }
            retried = true;
            request = match (error.take_message(), &replay) {
                (Some(unsent), _) => unsent,
                (None, Some(replay)) if error.error().is_incomplete_message() => replay.request(),
                _ => return Err(SendError::Send(error.into_error())),
            };
            *request.uri_mut() = uri.clone();
        }
    }

    /// The HTTP/2 connection, the newest idle connection still open, or a new one.
    async fn take(&self, uri: &Uri) -> Result<Taken, SendError> {
        loop {
            let idle = {
                let mut state = self.shared.state();
                if let Some(h2) = &state.h2 {
                    if !h2.is_closed() {
                        return Ok(Taken::Http2 {
                            sender: h2.clone(),
                            reused: true,
                        });
                    }
                    state.h2 = None;
                }
                state.evict_expired(Instant::now());
                state.idle.pop_back()
            };
            let Some(Idle { mut connection, .. }) = idle else {
                // Boxed: connecting (TCP, TLS, the HTTP/2 handshake) takes a future of about
                // 6.5 KiB that would otherwise sit inside every request's future, and in the
                // slot hyper keeps for it on each client connection.
                return Box::pin(self.connect(uri)).await;
            };
            // Given back as its last answer ended, it may not have asked for the next request
            // yet: driven once, it does that at once, or finds the upstream gone.
            if connection.is_open() && connection.ready().await {
                return Ok(Taken::Http1 {
                    connection,
                    reused: true,
                });
            }
        }
    }

    async fn connect(&self, uri: &Uri) -> Result<Taken, SendError> {
        let mut connector = self.shared.connector.clone();
        let stream = connector
            .call(uri.clone())
            .await
            .map_err(SendError::Connect)?;
        if stream.connected().is_negotiated_h2() {
            let (sender, connection) = http2::Builder::new(TokioExecutor::new())
                .timer(TokioTimer::new())
                .handshake(stream)
                .await
                .map_err(SendError::Send)?;
            tokio::spawn(connection);
            self.shared.state().h2 = Some(sender.clone());
            return Ok(Taken::Http2 {
                sender,
                reused: false,
            });
        }
        let mut builder = http1::Builder::new();
        if self.shared.max_headers != HYPER_MAX_HEADERS {
            // Costs per answer: hyper then fills two arrays of this many entries for each head.
            builder.max_headers(self.shared.max_headers);
        }
        let (sender, driver) = builder.handshake(stream).await.map_err(SendError::Send)?;
        Ok(Taken::Http1 {
            connection: Http1 {
                sender,
                driver: Some(Box::new(driver)),
            },
            reused: false,
        })
    }

    /// `response` with a body that drives `connection` and puts it back among the idle ones
    /// once read to its end.
    fn returning(&self, response: Response<Incoming>, connection: Http1) -> Response<ResponseBody> {
        let held = Held {
            shared: Arc::clone(&self.shared),
            connection,
        };
        response.map(|body| PooledBody::new(body, Some(held)).boxed())
    }
}

impl Shared {
    fn state(&self) -> MutexGuard<'_, State> {
        // A panic while holding it leaves nothing half-done: the lists stay valid.
        self.state
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

impl State {
    fn evict_expired(&mut self, now: Instant) {
        self.evict_idle_since(now, IDLE_TIMEOUT, 0);
    }

    /// Closes the oldest idle connections that have waited `at_least`, while more than `keep`
    /// are idle.
    fn evict_idle_since(&mut self, now: Instant, at_least: Duration, keep: usize) {
        while self.idle.len() > keep
            && self
                .idle
                .front()
                .is_some_and(|idle| now.duration_since(idle.since) >= at_least)
        {
            self.idle.pop_front();
        }
    }
}

/// The connection an answer's body came on: driven while the body is read, handed back at
/// its end.
struct Held {
    shared: Arc<Shared>,
    connection: Http1,
}

impl Held {
    fn give_back(self) {
        // An upgrade's connection is the tunnel's: its driver was spawned, and it never comes
        // back. Neither does one the upstream closed.
        if !self.connection.is_open() || self.shared.keepalive == 0 {
            return;
        }
        let now = Instant::now();
        {
            let mut state = self.shared.state();
            state.evict_expired(now);
            // Past `keepalive`, the sweeper closes what stays unused. There are never more
            // connections than requests were in flight at once, so at most
            // `max_upstream_connections`.
            state.idle.push_back(Idle {
                connection: self.connection,
                since: now,
            });
        }
        if !self.shared.sweeping.swap(true, Ordering::Relaxed) {
            tokio::spawn(sweep(Arc::downgrade(&self.shared)));
        }
    }
}

/// Every [`SWEEP_EVERY`], until the pool is gone: drops the idle connections the upstream
/// closed (each driven once, so that it reads the upstream's end of stream) and those that
/// passed [`IDLE_TIMEOUT`], then the oldest of those past `keepalive` that have waited
/// [`EXCESS_GRACE`]: dead ones first, so that they never count towards what is kept.
async fn sweep(pool: Weak<Shared>) {
    loop {
        tokio::time::sleep(SWEEP_EVERY).await;
        let Some(shared) = pool.upgrade() else {
            return;
        };
        let mut state = shared.state();
        let mut cx = Context::from_waker(Waker::noop());
        state.idle.retain_mut(|idle| {
            idle.connection.drive(&mut cx);
            idle.connection.is_open()
        });
        let now = Instant::now();
        state.evict_expired(now);
        state.evict_idle_since(now, EXCESS_GRACE, shared.keepalive);
    }
}

/// An answer's body, driving the connection it comes on; at its end, the connection goes back
/// to the pool. Dropped before the end, the connection closes with it.
struct PooledBody {
    inner: Incoming,
    held: Option<Held>,
}

impl PooledBody {
    fn new(inner: Incoming, held: Option<Held>) -> Self {
        let mut body = Self { inner, held };
        if body.inner.is_end_stream() {
            body.finish();
        }
        body
    }

    fn boxed(self) -> ResponseBody {
        http_body_util::BodyExt::boxed_unsync(self)
    }

    fn finish(&mut self) {
        if let Some(held) = self.held.take() {
            held.give_back();
        }
    }
}

impl Body for PooledBody {
    type Data = bytes::Bytes;
    type Error = BoxError;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<bytes::Bytes>, BoxError>>> {
        if let Some(held) = &mut self.held {
            held.connection.drive(cx);
        }
        let polled = Pin::new(&mut self.inner).poll_frame(cx);
        match &polled {
            Poll::Ready(None) => self.finish(),
            Poll::Ready(Some(Ok(_))) if self.inner.is_end_stream() => self.finish(),
            Poll::Ready(Some(Err(_))) => self.held = None,
            _ => {}
        }
        polled.map_err(BoxError::from)
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

/// What it takes to send a bodiless idempotent request again.
struct Replay {
    method: Method,
    headers: http::HeaderMap,
}

impl Replay {
    fn of(request: &Request<ResponseBody>) -> Option<Self> {
        let idempotent = matches!(
            *request.method(),
            Method::GET | Method::HEAD | Method::OPTIONS
        );
        (idempotent && request.body().is_end_stream()).then(|| Self {
            method: request.method().clone(),
            headers: request.headers().clone(),
        })
    }

    fn request(&self) -> Request<ResponseBody> {
        let mut request = Request::new(crate::body::empty());
        *request.method_mut() = self.method.clone();
        *request.headers_mut() = self.headers.clone();
        request
    }
}

/// Whether `request` asks to switch protocols (a WebSocket handshake).
fn is_upgrade(request: &Request<ResponseBody>) -> bool {
    request.headers().contains_key(http::header::UPGRADE)
}

/// The request target an HTTP/1.1 origin server expects: path and query only.
fn origin_form(uri: &Uri) -> Uri {
    let path = uri
        .path_and_query()
        .cloned()
        .unwrap_or_else(|| PathAndQuery::from_static("/"));
    Uri::from(path)
}
