//! Test helpers: the stand-in CDN (the demo's, with test-only bodies and faults around it), a
//! gateway started on port 0, origins, one accept loop, a small HTTP client, and the constants
//! the test files share.
// Each test binary uses its own subset of these helpers and re-exports.
#![allow(dead_code, unused_imports)]

pub mod accept;
mod cdn;
pub mod faulty;
pub mod nginx;
pub mod process;
pub mod s3;

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use http::{HeaderMap, HeaderValue, Method, Request, Response, StatusCode};
use http_body_util::{BodyExt, Empty, Full, combinators::BoxBody};
use hyper::body::Incoming;
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::{TokioExecutor, TokioTimer};
use signgate::admin::Admin;
use signgate::clock::{Clock, SystemClock};
use signgate::config::Config;
use signgate::secret::Secret;
use signgate::server::{AppState, serve};
use tokio::sync::oneshot;

pub use accept::{bind, serve as serve_http};
pub use cdn::*;

pub type TestBody = BoxBody<Bytes, Box<dyn std::error::Error + Send + Sync>>;

/// The secret every test gateway and stand-in CDN share.
pub const SECRET: &str = "test-secret-never-logged-0123456789";

/// A file handle (20 characters, as the CDN's are).
pub const H: &str = "KW9EJhYtS6y48Whm2S6D";

/// A second file handle.
pub const H2: &str = "CupXxkCQZ22cS5FdMSaB";

/// The `[signing]` table of a test gateway: its secret is [`SECRET`].
pub const SIGNING: &str = "[signing]\nsecret_env = \"SECRET\"\n";

pub fn secret() -> Secret {
    Secret::new(SECRET.into()).expect("not empty")
}

pub fn now() -> u64 {
    SystemClock.now_unix()
}

pub fn full(bytes: impl Into<Bytes>) -> TestBody {
    Full::new(bytes.into())
        .map_err(|never| match never {})
        .boxed()
}

/// A `GET url` request without a body.
pub fn get_request(url: &str) -> Request<TestBody> {
    Request::get(url)
        .body(Empty::new().map_err(|never| match never {}).boxed())
        .expect("request")
}

/// The stand-in CDN holding [`H`] (`0123456789abcdefghij`) and [`H2`] (`second file`).
pub async fn two_file_cdn() -> TestCdn {
    TestCdn::builder()
        .file(H, &b"0123456789abcdefghij"[..])
        .file(H2, &b"second file"[..])
        .start()
        .await
}

/// A gateway serving `toml` on 127.0.0.1:0; shut down by [`TestGateway::shutdown`] or on drop.
/// With `[admin] listen` in `toml`, its admin listener serves too (on the address the config
/// names: give it port 0), until the gateway is dropped or has shut down.
pub struct TestGateway {
    pub addr: SocketAddr,
    /// The admin listener's address, when the config turns it on.
    pub admin: Option<SocketAddr>,
    pub state: Arc<AppState>,
    shutdown: Option<oneshot::Sender<()>>,
    task: Option<tokio::task::JoinHandle<std::io::Result<()>>>,
    admin_stop: Option<oneshot::Sender<()>>,
}

impl TestGateway {
    /// Starts a gateway from `toml`; `secret_env = "SECRET"` resolves to [`SECRET`].
    pub async fn start(toml: &str) -> Self {
        Self::start_with_clock(toml, Arc::new(SystemClock)).await
    }

    pub async fn start_with_clock(toml: &str, clock: Arc<dyn Clock>) -> Self {
        let config =
            Config::from_toml_str(toml, |_| Some(SECRET.into())).expect("test config is valid");
        let state = Arc::new(AppState::new(&config, clock).expect("state builds"));
        let (listener, addr) = bind().await;
        let (admin, admin_stop) = match &config.admin {
            Some(settings) => {
                let listener = tokio::net::TcpListener::bind(settings.listen)
                    .await
                    .expect("admin listener binds");
                let admin_addr = listener.local_addr().expect("admin address");
                let admin = Admin::new(
                    &config,
                    Arc::clone(&state.metrics),
                    Arc::clone(&state.health),
                    Arc::clone(&state.clock),
                );
                let (stop, stopped) = oneshot::channel::<()>();
                tokio::spawn(signgate::admin::serve(listener, Arc::new(admin), async {
                    let _ = stopped.await;
                }));
                (Some(admin_addr), Some(stop))
            }
            None => (None, None),
        };
        let (tx, rx) = oneshot::channel();
        let task = tokio::spawn(serve(listener, Arc::clone(&state), async {
            let _ = rx.await;
        }));
        Self {
            addr,
            admin,
            state,
            shutdown: Some(tx),
            task: Some(task),
            admin_stop,
        }
    }

    /// `http://ADMIN{path}` on the admin listener.
    pub fn admin_url(&self, path: &str) -> String {
        format!(
            "http://{}{path}",
            self.admin.expect("[admin] listen is set")
        )
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr)
    }

    /// The signer (and credential cache) of the route called `route`, in the routes serving now.
    pub fn signer(&self, route: &str) -> Arc<signgate::signer::RouteSigner> {
        Arc::clone(
            &self
                .state
                .router
                .load()
                .by_name(route)
                .expect("a route of that name")
                .signer,
        )
    }

    /// Signals shutdown and waits for `serve` to return; then stops the admin listener.
    pub async fn shutdown(mut self) -> std::io::Result<()> {
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(());
        }
        let served = match self.task.take() {
            Some(task) => task.await.expect("serve did not panic"),
            None => Ok(()),
        };
        if let Some(stop) = self.admin_stop.take() {
            let _ = stop.send(());
        }
        served
    }

    /// Sends the shutdown signal without waiting.
    pub fn begin_shutdown(&mut self) -> tokio::task::JoinHandle<std::io::Result<()>> {
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(());
        }
        self.task.take().expect("not shut down yet")
    }
}

impl Drop for TestGateway {
    fn drop(&mut self) {
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(());
        }
        if let Some(stop) = self.admin_stop.take() {
            let _ = stop.send(());
        }
    }
}

/// A gateway config with one route of `mode` in front of `upstream`, plus `extra` route keys.
pub fn one_route(mode: &str, prefix: &str, upstream: &str, extra: &str) -> String {
    format!(
        "{SIGNING}[[route]]\nname = \"r\"\nprefix = \"{prefix}\"\nmode = \"{mode}\"\nupstream = \"{upstream}\"\n{extra}\n"
    )
}

/// A plain HTTP/1.1 client.
pub fn client() -> Client<HttpConnector, TestBody> {
    Client::builder(TokioExecutor::new())
        .pool_timer(TokioTimer::new())
        .build_http()
}

/// An h2c (prior knowledge) client.
pub fn h2_client() -> Client<HttpConnector, TestBody> {
    Client::builder(TokioExecutor::new())
        .http2_only(true)
        .timer(TokioTimer::new())
        .build_http()
}

/// An h2c client whose streams' windows stay at 1 KiB: what it does not read, the server cannot
/// send.
pub fn h2_client_never_reading() -> Client<HttpConnector, TestBody> {
    Client::builder(TokioExecutor::new())
        .http2_only(true)
        .http2_initial_stream_window_size(1024)
        .http2_adaptive_window(false)
        .timer(TokioTimer::new())
        .build_http()
}

pub struct Answer {
    pub status: StatusCode,
    pub headers: HeaderMap,
    pub body: Bytes,
}

impl Answer {
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }
}

/// Sends a request and reads the whole answer, within 10 s.
pub async fn send(method: Method, url: &str, headers: &[(&str, &str)]) -> Answer {
    send_with(&client(), method, url, headers).await
}

pub async fn get(url: &str) -> Answer {
    send(Method::GET, url, &[]).await
}

pub async fn send_with(
    client: &Client<HttpConnector, TestBody>,
    method: Method,
    url: &str,
    headers: &[(&str, &str)],
) -> Answer {
    send_full(client, method, url, headers, Bytes::new()).await
}

/// Sends a request with `body` and reads the whole answer, within 10 s.
pub async fn send_full(
    client: &Client<HttpConnector, TestBody>,
    method: Method,
    url: &str,
    headers: &[(&str, &str)],
    body: Bytes,
) -> Answer {
    let mut request = Request::builder().method(method).uri(url);
    for (name, value) in headers {
        request = request.header(*name, *value);
    }
    let request = request.body(full(body)).expect("request");
    tokio::time::timeout(Duration::from_secs(10), async {
        let response = client.request(request).await.expect("gateway answers");
        let (parts, body) = response.into_parts();
        let body = body.collect().await.expect("body").to_bytes();
        Answer {
            status: parts.status,
            headers: parts.headers,
            body,
        }
    })
    .await
    .expect("answered within 10 s")
}

/// Resident set size of this process in bytes (Linux).
pub fn rss_bytes() -> u64 {
    let statm = std::fs::read_to_string("/proc/self/statm").unwrap_or_default();
    let pages: u64 = statm
        .split_whitespace()
        .nth(1)
        .and_then(|p| p.parse().ok())
        .unwrap_or(0);
    pages * 4096
}

/// Open file descriptors of this process (Linux).
pub fn open_fds() -> usize {
    std::fs::read_dir("/proc/self/fd").map_or(0, |dir| dir.count())
}

/// A `tracing` writer that keeps what is written, for tests that read the log.
#[derive(Clone, Default)]
pub struct CapturedLog(pub Arc<Mutex<Vec<u8>>>);

impl CapturedLog {
    /// Captures this thread's log (at INFO and above, without colour) until the guard drops:
    /// for `current_thread` tests.
    pub fn this_thread() -> (Self, tracing::subscriber::DefaultGuard) {
        let captured = Self::default();
        let subscriber = tracing_subscriber::fmt()
            .with_writer(captured.clone())
            .with_ansi(false)
            .finish();
        (captured, tracing::subscriber::set_default(subscriber))
    }

    /// Captures this thread's log at `filter` through the subscriber `signgate run` installs,
    /// in `format`, until the guard drops: for `current_thread` tests.
    pub fn this_thread_as(
        format: signgate::config::LogFormat,
        filter: &str,
    ) -> (Self, tracing::subscriber::DefaultGuard) {
        let captured = Self::default();
        let subscriber = signgate::cli::logs::subscriber(
            format,
            tracing_subscriber::EnvFilter::new(filter),
            captured.clone(),
            false,
        );
        (captured, tracing::subscriber::set_default(subscriber))
    }

    /// The access-log lines written so far (JSON format), each parsed; fails on any line that
    /// is not one JSON object.
    pub fn access_json(&self) -> Vec<serde_json::Map<String, serde_json::Value>> {
        self.text()
            .lines()
            .map(|line| match serde_json::from_str(line) {
                Ok(serde_json::Value::Object(object)) => object,
                _ => panic!("not a JSON object: {line}"),
            })
            .filter(|object| object["target"] == "signgate::access")
            .collect()
    }

    /// Everything written so far.
    pub fn text(&self) -> String {
        String::from_utf8(self.0.lock().expect("not poisoned").clone()).expect("utf-8")
    }
}

impl std::io::Write for CapturedLog {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().expect("not poisoned").extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl<'a> tracing_subscriber::fmt::MakeWriter<'a> for CapturedLog {
    type Writer = CapturedLog;
    fn make_writer(&'a self) -> Self::Writer {
        self.clone()
    }
}

/// The first `N` addresses `signgate run` prints on `stdout` (`… http://ADDR/`), in order:
/// the traffic listener's, then the admin listener's.
pub fn printed_addresses<const N: usize>(stdout: std::process::ChildStdout) -> [String; N] {
    use std::io::BufRead;
    let mut lines = std::io::BufReader::new(stdout).lines();
    std::array::from_fn(|_| {
        let line = lines.next().expect("a line").expect("utf-8");
        line.rsplit("http://")
            .next()
            .expect("an address")
            .trim_end_matches('/')
            .to_owned()
    })
}

/// An origin on 127.0.0.1:0 that answers `ok` and keeps the headers of every request.
pub async fn recording_origin() -> (SocketAddr, Arc<Mutex<Vec<http::HeaderMap>>>) {
    let seen = Arc::new(Mutex::new(Vec::new()));
    let origin = start_origin(Arc::new({
        let seen = Arc::clone(&seen);
        move |parts, _| {
            seen.lock().expect("not poisoned").push(parts.headers);
            respond(200, &[("content-type", "text/plain")], "ok")
        }
    }))
    .await;
    (origin, seen)
}

/// What a [`start_origin`] handler gets: the request head and its whole body.
pub type OriginHandler =
    Arc<dyn Fn(http::request::Parts, Bytes) -> Response<TestBody> + Send + Sync>;

/// A plain origin on 127.0.0.1:0 answering every request with `handler`.
pub async fn start_origin(handler: OriginHandler) -> SocketAddr {
    let (listener, addr) = bind().await;
    serve_http(listener, move |request: Request<Incoming>| {
        let handler = Arc::clone(&handler);
        async move {
            let (parts, body) = request.into_parts();
            let body = body
                .collect()
                .await
                .map(|b| b.to_bytes())
                .unwrap_or_default();
            handler(parts, body)
        }
    });
    addr
}

/// A response with these headers and body.
pub fn respond(
    status: u16,
    headers: &[(&str, &str)],
    body: impl Into<Bytes>,
) -> Response<TestBody> {
    let mut response = Response::new(full(body));
    *response.status_mut() = StatusCode::from_u16(status).expect("status");
    for (name, value) in headers {
        response.headers_mut().append(
            http::HeaderName::from_bytes(name.as_bytes()).expect("name"),
            HeaderValue::from_str(value).expect("value"),
        );
    }
    response
}

/// Sends a request with a body and reads the whole answer.
pub async fn send_body(
    method: Method,
    url: &str,
    headers: &[(&str, &str)],
    body: impl Into<Bytes>,
) -> Answer {
    send_full(&client(), method, url, headers, body.into()).await
}

/// A request body that never sends a byte.
pub struct Silent;

impl hyper::body::Body for Silent {
    type Data = Bytes;
    type Error = signgate::body::BoxError;

    fn poll_frame(
        self: std::pin::Pin<&mut Self>,
        _: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<Result<hyper::body::Frame<Bytes>, Self::Error>>> {
        std::task::Poll::Pending
    }
}

/// The HTTP/2 connection preface and an empty SETTINGS frame: all an idle h2c client sends.
pub const H2_PREFACE_AND_SETTINGS: &[u8] =
    b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n\x00\x00\x00\x04\x00\x00\x00\x00\x00";
