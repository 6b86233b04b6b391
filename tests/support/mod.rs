//! Test helpers: a stand-in CDN that verifies credentials as the real one does and records what
//! it receives, a gateway started on port 0, and a small HTTP client.
#![allow(dead_code)] // Each test binary uses its own subset of these helpers.

use std::collections::HashMap;
use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use http::{HeaderMap, HeaderValue, Method, Request, Response, StatusCode, header};
use http_body_util::{BodyExt, Full, StreamBody, combinators::BoxBody};
use hyper::body::{Frame, Incoming};
use hyper::service::service_fn;
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use signgate::clock::{Clock, SystemClock};
use signgate::config::Config;
use signgate::policy::{Call, DecodedPolicy};
use signgate::secret::Secret;
use signgate::server::{AppState, serve};
use signgate::verify::{Invalid, verify_at};
use tokio::net::TcpListener;
use tokio::sync::{Notify, oneshot};

pub type TestBody = BoxBody<Bytes, Box<dyn std::error::Error + Send + Sync>>;

/// The secret every test gateway and stand-in CDN share.
pub const SECRET: &str = "test-secret-never-logged-0123456789";

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

/// What the stand-in CDN received.
#[derive(Debug, Clone)]
pub struct Received {
    pub method: Method,
    /// Path and query exactly as received.
    pub uri: String,
    pub headers: HeaderMap,
    /// The decoded policy, when the credentials verified.
    pub policy: Option<DecodedPolicy>,
    /// Why they did not, otherwise.
    pub invalid: Option<Invalid>,
    /// Unix time at arrival.
    pub at: u64,
}

/// How a file's body is produced.
#[derive(Clone)]
pub enum FileBody {
    /// These bytes.
    Bytes(Bytes),
    /// `len` bytes of a fixed pattern, made in 64 KiB chunks as they are sent.
    Generated { len: u64 },
    /// `first`, then wait for `release`, then `second`; `closed` is notified if the reader goes
    /// away before `release`.
    Gated {
        first: Bytes,
        release: Arc<Notify>,
        second: Bytes,
        closed: Arc<Notify>,
    },
}

/// Behaviour of the stand-in besides serving files.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Fault {
    None,
    /// Never send response headers.
    StallBeforeHeaders,
}

/// Chunk size of [`FileBody::Generated`] bodies.
pub const CHUNK: u64 = 64 * 1024;

/// Chunk `index` of a [`FileBody::Generated`] body: a fixed pattern stamped with its index, so a
/// lost, repeated or reordered chunk changes the hash.
pub fn generated_chunk(index: u64, len: u64) -> Bytes {
    let start = index * CHUNK;
    let size = CHUNK.min(len - start) as usize;
    let mut chunk: Vec<u8> = (0..size).map(|i| (i % 251) as u8).collect();
    let stamp = index.to_le_bytes();
    let n = stamp.len().min(size);
    chunk[..n].copy_from_slice(&stamp[..n]);
    Bytes::from(chunk)
}

/// A CDN on 127.0.0.1 that serves files only to valid, handle-bound credentials.
#[derive(Clone)]
pub struct TestCdn {
    pub addr: SocketAddr,
    pub received: Arc<Mutex<Vec<Received>>>,
}

pub struct TestCdnBuilder {
    files: HashMap<String, FileBody>,
    fault: Fault,
    tls: Option<(Vec<u8>, Vec<u8>)>,
}

impl TestCdn {
    pub fn builder() -> TestCdnBuilder {
        TestCdnBuilder {
            files: HashMap::new(),
            fault: Fault::None,
            tls: None,
        }
    }

    pub fn received(&self) -> Vec<Received> {
        self.received.lock().expect("not poisoned").clone()
    }

    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }
}

impl TestCdnBuilder {
    pub fn file(mut self, handle: &str, bytes: impl Into<Bytes>) -> Self {
        self.files
            .insert(handle.into(), FileBody::Bytes(bytes.into()));
        self
    }

    pub fn body(mut self, handle: &str, body: FileBody) -> Self {
        self.files.insert(handle.into(), body);
        self
    }

    pub fn fault(mut self, fault: Fault) -> Self {
        self.fault = fault;
        self
    }

    /// Serve https with this PEM certificate chain and PEM private key.
    pub fn tls(mut self, cert_pem: Vec<u8>, key_pem: Vec<u8>) -> Self {
        self.tls = Some((cert_pem, key_pem));
        self
    }

    pub async fn start(self) -> TestCdn {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = listener.local_addr().expect("addr");
        let received = Arc::new(Mutex::new(Vec::new()));
        let files = Arc::new(self.files);
        let fault = self.fault;
        let acceptor = self.tls.map(|(cert, key)| tls_acceptor(&cert, &key));
        let record = Arc::clone(&received);
        tokio::spawn(async move {
            loop {
                let Ok((stream, _)) = listener.accept().await else {
                    return;
                };
                let files = Arc::clone(&files);
                let record = Arc::clone(&record);
                let acceptor = acceptor.clone();
                tokio::spawn(async move {
                    let service = service_fn(move |req| {
                        cdn_answer(req, Arc::clone(&files), Arc::clone(&record), fault)
                    });
                    let builder = auto::Builder::new(TokioExecutor::new());
                    match acceptor {
                        Some(acceptor) => {
                            if let Ok(tls) = acceptor.accept(stream).await {
                                let _ = builder.serve_connection(TokioIo::new(tls), service).await;
                            }
                        }
                        None => {
                            let _ = builder
                                .serve_connection(TokioIo::new(stream), service)
                                .await;
                        }
                    }
                });
            }
        });
        TestCdn { addr, received }
    }
}

fn tls_acceptor(cert_pem: &[u8], key_pem: &[u8]) -> tokio_rustls::TlsAcceptor {
    use rustls::pki_types::pem::PemObject;
    use rustls::pki_types::{CertificateDer, PrivateKeyDer};
    let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_slice_iter(cert_pem)
        .collect::<Result<_, _>>()
        .expect("cert PEM");
    let key = PrivateKeyDer::from_pem_slice(key_pem).expect("key PEM");
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut config = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .expect("versions")
        .with_no_client_auth()
        .with_single_cert(certs, key)
        .expect("cert and key match");
    config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    tokio_rustls::TlsAcceptor::from(Arc::new(config))
}

async fn cdn_answer(
    req: Request<Incoming>,
    files: Arc<HashMap<String, FileBody>>,
    record: Arc<Mutex<Vec<Received>>>,
    fault: Fault,
) -> Result<Response<TestBody>, Infallible> {
    let uri = req
        .uri()
        .path_and_query()
        .map_or("/", |pq| pq.as_str())
        .to_owned();
    let at = now();
    let verdict = verify_at(&uri, &secret(), at, Call::Read);
    record.lock().expect("not poisoned").push(Received {
        method: req.method().clone(),
        uri: uri.clone(),
        headers: req.headers().clone(),
        policy: verdict.as_ref().ok().cloned(),
        invalid: verdict.as_ref().err().cloned(),
        at,
    });
    if fault == Fault::StallBeforeHeaders {
        std::future::pending::<()>().await;
    }
    let handle = req
        .uri()
        .path()
        .rsplit('/')
        .next()
        .unwrap_or_default()
        .to_owned();
    if let Err(reason) = verdict {
        // The real CDN's wording.
        let body =
            format!("file {handle} policy error: proper credentials were not provided: ({reason})");
        return Ok(plain(StatusCode::FORBIDDEN, body));
    }
    let Some(file) = files.get(&handle) else {
        return Ok(plain(StatusCode::NOT_FOUND, "not found".into()));
    };
    let etag = format!("\"{handle}\"");
    if req
        .headers()
        .get(header::IF_NONE_MATCH)
        .is_some_and(|v| v.as_bytes() == etag.as_bytes())
    {
        let mut response = Response::new(full(Bytes::new()));
        *response.status_mut() = StatusCode::NOT_MODIFIED;
        response
            .headers_mut()
            .insert(header::ETAG, HeaderValue::try_from(etag).expect("etag"));
        return Ok(response);
    }
    let is_head = req.method() == Method::HEAD;
    let mut response = match file {
        FileBody::Bytes(bytes) => ranged(&req, bytes.clone()),
        FileBody::Generated { len } => {
            let mut r = Response::new(generated(*len));
            r.headers_mut()
                .insert(header::CONTENT_LENGTH, HeaderValue::from(*len));
            r
        }
        FileBody::Gated {
            first,
            release,
            second,
            closed,
        } => Response::new(gated(
            first.clone(),
            Arc::clone(release),
            second.clone(),
            Arc::clone(closed),
        )),
    };
    let headers = response.headers_mut();
    headers.insert(header::CONTENT_TYPE, HeaderValue::from_static("image/png"));
    headers.insert(header::ETAG, HeaderValue::try_from(etag).expect("etag"));
    headers.insert(
        header::CACHE_CONTROL,
        HeaderValue::from_static("public, max-age=31536000"),
    );
    headers.insert(header::SET_COOKIE, HeaderValue::from_static("cdn=1"));
    headers.insert(header::CONNECTION, HeaderValue::from_static("x-hop"));
    headers.insert("x-hop", HeaderValue::from_static("1"));
    if is_head {
        let (parts, _) = response.into_parts();
        return Ok(Response::from_parts(parts, full(Bytes::new())));
    }
    Ok(response)
}

fn plain(status: StatusCode, body: String) -> Response<TestBody> {
    let mut response = Response::new(full(body));
    *response.status_mut() = status;
    response
}

/// Serves `bytes`, honouring a single `Range: bytes=a-b`.
fn ranged(req: &Request<Incoming>, bytes: Bytes) -> Response<TestBody> {
    let len = bytes.len() as u64;
    let range = req
        .headers()
        .get(header::RANGE)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("bytes="))
        .and_then(|v| v.split_once('-'))
        .and_then(|(a, b)| {
            let start: u64 = a.parse().ok()?;
            let end: u64 = if b.is_empty() {
                len - 1
            } else {
                b.parse().ok()?
            };
            (start <= end && end < len).then_some((start, end))
        });
    let mut response = match range {
        Some((start, end)) => {
            let mut r = Response::new(full(bytes.slice(start as usize..=end as usize)));
            *r.status_mut() = StatusCode::PARTIAL_CONTENT;
            r.headers_mut().insert(
                header::CONTENT_RANGE,
                HeaderValue::try_from(format!("bytes {start}-{end}/{len}")).expect("range"),
            );
            r.headers_mut()
                .insert(header::CONTENT_LENGTH, HeaderValue::from(end - start + 1));
            r
        }
        None => {
            let mut r = Response::new(full(bytes));
            r.headers_mut()
                .insert(header::CONTENT_LENGTH, HeaderValue::from(len));
            r
        }
    };
    response
        .headers_mut()
        .insert(header::ACCEPT_RANGES, HeaderValue::from_static("bytes"));
    response
}

fn generated(len: u64) -> TestBody {
    let chunks = (0..len.div_ceil(CHUNK)).map(move |i| {
        Ok::<_, Box<dyn std::error::Error + Send + Sync>>(Frame::data(generated_chunk(i, len)))
    });
    StreamBody::new(IterStream(chunks)).boxed()
}

pub fn gated(first: Bytes, release: Arc<Notify>, second: Bytes, closed: Arc<Notify>) -> TestBody {
    let (tx, rx) = tokio::sync::mpsc::channel::<
        Result<Frame<Bytes>, Box<dyn std::error::Error + Send + Sync>>,
    >(2);
    tokio::spawn(async move {
        let _ = tx.send(Ok(Frame::data(first))).await;
        tokio::select! {
            () = release.notified() => {
                let _ = tx.send(Ok(Frame::data(second))).await;
            }
            () = tx.closed() => closed.notify_one(),
        }
    });
    StreamBody::new(ReceiverStream(rx)).boxed()
}

/// An iterator as a `Stream`, without pulling in a stream crate.
struct IterStream<I>(I);

impl<I: Iterator + Unpin> futures_core::Stream for IterStream<I> {
    type Item = I::Item;
    fn poll_next(
        mut self: std::pin::Pin<&mut Self>,
        _: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<I::Item>> {
        std::task::Poll::Ready(self.0.next())
    }
}

struct ReceiverStream<T>(tokio::sync::mpsc::Receiver<T>);

impl<T> futures_core::Stream for ReceiverStream<T> {
    type Item = T;
    fn poll_next(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<T>> {
        self.0.poll_recv(cx)
    }
}

/// A gateway serving `toml` on 127.0.0.1:0; shut down by [`TestGateway::shutdown`] or on drop.
pub struct TestGateway {
    pub addr: SocketAddr,
    pub state: Arc<AppState>,
    shutdown: Option<oneshot::Sender<()>>,
    task: Option<tokio::task::JoinHandle<std::io::Result<()>>>,
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
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = listener.local_addr().expect("addr");
        let (tx, rx) = oneshot::channel();
        let task = tokio::spawn(serve(listener, Arc::clone(&state), async {
            let _ = rx.await;
        }));
        Self {
            addr,
            state,
            shutdown: Some(tx),
            task: Some(task),
        }
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr)
    }

    /// Signals shutdown and waits for `serve` to return.
    pub async fn shutdown(mut self) -> std::io::Result<()> {
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(());
        }
        match self.task.take() {
            Some(task) => task.await.expect("serve did not panic"),
            None => Ok(()),
        }
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
    }
}

/// A gateway config with one route of `mode` in front of `upstream`, plus `extra` route keys.
pub fn one_route(mode: &str, prefix: &str, upstream: &str, extra: &str) -> String {
    format!(
        "[signing]\nsecret_env = \"SECRET\"\n\
         [[route]]\nname = \"r\"\nprefix = \"{prefix}\"\nmode = \"{mode}\"\nupstream = \"{upstream}\"\n{extra}\n"
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

/// A CA and a leaf certificate for 127.0.0.1 signed by it: (ca PEM, leaf PEM, leaf key PEM).
pub fn self_signed_ca_and_leaf() -> (String, String, String) {
    use rcgen::{BasicConstraints, CertificateParams, IsCa, Issuer, KeyPair, KeyUsagePurpose};
    let mut ca_params = CertificateParams::new(Vec::<String>::new()).expect("params");
    ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    ca_params.key_usages = vec![
        KeyUsagePurpose::KeyCertSign,
        KeyUsagePurpose::DigitalSignature,
    ];
    let ca_key = KeyPair::generate().expect("key");
    let ca_cert = ca_params.self_signed(&ca_key).expect("ca cert");
    let issuer = Issuer::new(ca_params, ca_key);
    let leaf_params = CertificateParams::new(vec!["127.0.0.1".to_owned(), "localhost".to_owned()])
        .expect("params");
    let leaf_key = KeyPair::generate().expect("key");
    let leaf = leaf_params
        .signed_by(&leaf_key, &issuer)
        .expect("leaf cert");
    (ca_cert.pem(), leaf.pem(), leaf_key.serialize_pem())
}

/// What a [`start_origin`] handler gets: the request head and its whole body.
pub type OriginHandler =
    Arc<dyn Fn(http::request::Parts, Bytes) -> Response<TestBody> + Send + Sync>;

/// A plain origin on 127.0.0.1:0 answering every request with `handler`.
pub async fn start_origin(handler: OriginHandler) -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("addr");
    tokio::spawn(async move {
        loop {
            let Ok((stream, _)) = listener.accept().await else {
                return;
            };
            let handler = Arc::clone(&handler);
            tokio::spawn(async move {
                let service = service_fn(move |req: Request<Incoming>| {
                    let handler = Arc::clone(&handler);
                    async move {
                        let (parts, body) = req.into_parts();
                        let body = body
                            .collect()
                            .await
                            .map(|b| b.to_bytes())
                            .unwrap_or_default();
                        Ok::<_, Infallible>(handler(parts, body))
                    }
                });
                let _ = auto::Builder::new(TokioExecutor::new())
                    .serve_connection(TokioIo::new(stream), service)
                    .await;
            });
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
