//! One route's upstream connections, kept by the worker that made them: HTTP/1.1 connections
//! reused only after an answer's body was read to its end, at most `upstream_keepalive` of them
//! idle (the most recently used; the oldest close first, as nginx's `keepalive N`), none idle
//! longer than [`IDLE_TIMEOUT`]; one shared HTTP/2 connection where TLS's ALPN picks `h2`.
//!
//! The pool is built per route at config time and reached without hashing. A request that an
//! idle connection could not take (the upstream had closed it) goes once more on a new
//! connection; see [`Pool::send`].

use std::collections::VecDeque;
use std::pin::Pin;
use std::sync::{Arc, Mutex, MutexGuard};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use http::header::HOST;
use http::uri::{PathAndQuery, Uri};
use http::{HeaderValue, Method, Request, Response};
use hyper::body::{Body, Frame, Incoming, SizeHint};
use hyper::client::conn::{http1, http2};
use hyper_rustls::HttpsConnector;
use hyper_util::client::legacy::connect::{Connection as _, HttpConnector};
use hyper_util::rt::{TokioExecutor, TokioTimer};
use tower_service::Service as _;

use crate::body::{BoxError, ResponseBody};

/// An idle connection older than this is closed instead of reused (nginx's upstream
/// `keepalive_timeout` is 60 s too).
pub const IDLE_TIMEOUT: Duration = Duration::from_secs(60);

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
    /// How many HTTP/1.1 connections may wait idle.
    keepalive: usize,
    /// `max_response_headers`.
    max_headers: usize,
    /// Taken only between awaits, by the worker's one thread: never contended.
    state: Mutex<State>,
}

#[derive(Default)]
struct State {
    /// Oldest first; a request takes the newest.
    idle: VecDeque<Idle>,
    /// The HTTP/2 connection, once ALPN has picked `h2`.
    h2: Option<http2::SendRequest<ResponseBody>>,
}

struct Idle {
    sender: http1::SendRequest<ResponseBody>,
    since: Instant,
}

/// A connection taken for one request.
enum Taken {
    Http1 {
        sender: http1::SendRequest<ResponseBody>,
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
    /// A pool connecting with `connector`, keeping at most `keepalive` idle connections and
    /// accepting answers with at most `max_headers` headers.
    pub fn new(
        connector: HttpsConnector<HttpConnector>,
        keepalive: usize,
        max_headers: usize,
    ) -> Self {
        Self {
            shared: Arc::new(Shared {
                connector,
                keepalive,
                max_headers,
                state: Mutex::new(State::default()),
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
        set_host(&mut request);
        let replay = Replay::of(&request);
        let mut retried = false;
        loop {
            let taken = self.take(&uri).await?;
            let reused = taken.reused();
            let outcome = match taken {
                Taken::Http1 { mut sender, .. } => {
                    *request.uri_mut() = origin_form(&uri);
                    match sender.try_send_request(request).await {
                        Ok(response) => Ok(self.returning(response, sender)),
                        Err(error) => Err(error),
                    }
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
            let Some(Idle { mut sender, .. }) = idle else {
                return self.connect(uri).await;
            };
            // Given back as its last answer ended, it may not have asked for the next request
            // yet: its connection task does that at once, or finds the upstream gone.
            if !sender.is_closed() && sender.ready().await.is_ok() {
                return Ok(Taken::Http1 {
                    sender,
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
        let (sender, connection) = http1::Builder::new()
            .max_headers(self.shared.max_headers)
            .handshake(stream)
            .await
            .map_err(SendError::Send)?;
        tokio::spawn(connection.with_upgrades());
        Ok(Taken::Http1 {
            sender,
            reused: false,
        })
    }

    /// `response` with a body that puts `sender` back among the idle connections once read to
    /// its end.
    fn returning(
        &self,
        response: Response<Incoming>,
        sender: http1::SendRequest<ResponseBody>,
    ) -> Response<ResponseBody> {
        let give_back = GiveBack {
            shared: Arc::clone(&self.shared),
            sender,
        };
        // An upgrade's connection is the tunnel's now; it never comes back.
        let give_back =
            (response.status() != http::StatusCode::SWITCHING_PROTOCOLS).then_some(give_back);
        response.map(|body| PooledBody::new(body, give_back).boxed())
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
        while self
            .idle
            .front()
            .is_some_and(|idle| now.duration_since(idle.since) >= IDLE_TIMEOUT)
        {
            self.idle.pop_front();
        }
    }
}

/// A connection to hand back once its answer's body has ended.
struct GiveBack {
    shared: Arc<Shared>,
    sender: http1::SendRequest<ResponseBody>,
}

impl GiveBack {
    fn give_back(self) {
        if self.sender.is_closed() || self.shared.keepalive == 0 {
            return;
        }
        let now = Instant::now();
        let mut state = self.shared.state();
        state.evict_expired(now);
        if state.idle.len() >= self.shared.keepalive {
            state.idle.pop_front();
        }
        state.idle.push_back(Idle {
            sender: self.sender,
            since: now,
        });
    }
}

/// An answer's body; at its end, its connection goes back to the pool. Dropped before the end,
/// the connection closes with it.
struct PooledBody {
    inner: Incoming,
    give_back: Option<GiveBack>,
}

impl PooledBody {
    fn new(inner: Incoming, give_back: Option<GiveBack>) -> Self {
        let mut body = Self { inner, give_back };
        if body.inner.is_end_stream() {
            body.finish();
        }
        body
    }

    fn boxed(self) -> ResponseBody {
        http_body_util::BodyExt::boxed_unsync(self)
    }

    fn finish(&mut self) {
        if let Some(give_back) = self.give_back.take() {
            give_back.give_back();
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
        let polled = Pin::new(&mut self.inner).poll_frame(cx);
        match &polled {
            Poll::Ready(None) => self.finish(),
            Poll::Ready(Some(Ok(_))) if self.inner.is_end_stream() => self.finish(),
            Poll::Ready(Some(Err(_))) => self.give_back = None,
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

/// `Host` from the URI's authority unless the request names one (HTTP/1.1 requires it).
fn set_host(request: &mut Request<ResponseBody>) {
    if request.headers().contains_key(HOST) {
        return;
    }
    let Some(authority) = request.uri().authority() else {
        return;
    };
    let host = match (request.uri().port_u16(), request.uri().scheme_str()) {
        (Some(80), Some("http")) | (Some(443), Some("https")) => authority.host(),
        _ => authority.as_str(),
    };
    if let Ok(value) = HeaderValue::from_str(host) {
        request.headers_mut().insert(HOST, value);
    }
}

/// The request target an HTTP/1.1 origin server expects: path and query only.
fn origin_form(uri: &Uri) -> Uri {
    let path = uri
        .path_and_query()
        .cloned()
        .unwrap_or_else(|| PathAndQuery::from_static("/"));
    Uri::from(path)
}
