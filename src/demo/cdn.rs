//! The stand-in CDN, shared by the demo and the tests: serves files by handle only to valid
//! credentials (answering as the real one does otherwise), with `ETag`, `If-None-Match`, `Range`
//! and `HEAD` as a CDN answers them, applies `resize=width:N`, takes uploads checked against their
//! policy, and can record every request it receives.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};

use bytes::Bytes;
use http::header::{self, HeaderValue};
use http::{HeaderMap, Method, Request, Response, StatusCode};
use http_body_util::BodyExt;
use hyper::body::{Body, Incoming};
use serde::Serialize;

use super::images::{pop_art_png, resize_png};
use super::random_handle;
use crate::body::{ResponseBody, empty, full};
use crate::clock::{Clock, SystemClock};
use crate::policy::{Call, DecodedPolicy};
use crate::secret::Secret;
use crate::verify::{Invalid, Target, parse_url, verify_at, verify_parsed};

/// A stored file.
#[derive(Clone)]
pub struct StoredFile {
    /// Its bytes.
    pub contents: Contents,
    /// Its `Content-Type`.
    pub content_type: String,
}

impl StoredFile {
    /// A file of `bytes` held in memory.
    pub fn bytes(bytes: impl Into<Bytes>, content_type: &str) -> Self {
        Self {
            contents: Contents::Bytes(bytes.into()),
            content_type: content_type.to_owned(),
        }
    }
}

/// Makes a fresh body for each request of a [`Contents::Streamed`] file.
pub type MakeBody = Arc<dyn Fn() -> ResponseBody + Send + Sync>;

/// Where a file's bytes come from.
#[derive(Clone)]
pub enum Contents {
    /// Held in memory: served whole or by `Range`, resized when a PNG is asked for smaller.
    Bytes(Bytes),
    /// Made afresh for each request (a body too large to hold, or one that streams on cue), sent
    /// whole, with a `Content-Length` when `len` is known.
    Streamed {
        /// The body's length, when known.
        len: Option<u64>,
        /// Makes the body.
        body: MakeBody,
    },
}

/// One request as the CDN received it, with its verdict on the credentials.
#[derive(Debug, Clone)]
pub struct Received {
    /// The method.
    pub method: Method,
    /// Path and query exactly as received.
    pub uri: String,
    /// The request headers.
    pub headers: HeaderMap,
    /// The decoded policy, when the credentials verified.
    pub policy: Option<DecodedPolicy>,
    /// Why they did not, otherwise (`None` too for a request that needs none, as `OPTIONS`).
    pub invalid: Option<Invalid>,
    /// Unix time at arrival.
    pub at: u64,
}

/// The stand-in CDN and its files.
pub struct StandInCdn {
    /// The app secret it verifies with: replaceable, as on the real CDN's dashboard.
    secret: arc_swap::ArcSwap<Secret>,
    base: String,
    files: Mutex<HashMap<String, StoredFile>>,
    /// Every request received, when recording (see [`StandInCdn::recording`]).
    received: Option<Mutex<Vec<Received>>>,
}

/// Four RGB colours, one per panel of a picture.
type Panels = [[u8; 3]; 4];

/// The pictures the gallery starts with: caption, panel colours, disc colours.
pub const STARTING_PICTURES: [(&str, Panels, Panels); 6] = [
    (
        "Soup, four ways",
        [[230, 30, 40], [250, 210, 0], [20, 120, 220], [240, 90, 170]],
        [[255, 255, 255], [230, 30, 40], [250, 210, 0], [20, 20, 20]],
    ),
    (
        "Marilyn in mint",
        [
            [90, 220, 180],
            [255, 120, 180],
            [255, 230, 60],
            [60, 80, 230],
        ],
        [
            [255, 200, 40],
            [30, 30, 30],
            [230, 40, 120],
            [255, 255, 255],
        ],
    ),
    (
        "Banana",
        [[255, 235, 0], [20, 20, 20], [255, 90, 0], [0, 170, 90]],
        [[20, 20, 20], [255, 235, 0], [255, 255, 255], [255, 90, 0]],
    ),
    (
        "Flowers",
        [[0, 150, 80], [255, 60, 120], [255, 140, 0], [120, 60, 200]],
        [
            [255, 60, 120],
            [255, 240, 0],
            [0, 200, 255],
            [255, 255, 255],
        ],
    ),
    (
        "Electric chair, pink",
        [[255, 100, 180], [60, 60, 60], [0, 210, 255], [255, 200, 0]],
        [[60, 60, 60], [255, 100, 180], [255, 255, 255], [0, 0, 0]],
    ),
    (
        "Cow wallpaper",
        [[255, 245, 0], [255, 0, 150], [0, 200, 230], [130, 230, 0]],
        [[255, 0, 150], [0, 120, 255], [255, 245, 0], [20, 20, 20]],
    ),
];

impl StandInCdn {
    /// A CDN without files, reachable at `base` (`http://127.0.0.1:PORT`), which it names in its
    /// answers to uploads.
    pub fn new(secret: Secret, base: String) -> Self {
        Self {
            secret: arc_swap::ArcSwap::from_pointee(secret),
            base,
            files: Mutex::new(HashMap::new()),
            received: None,
        }
    }

    /// Keeps a record of every request, read with [`StandInCdn::received`]. Off by default: a
    /// demo left running would grow without bound.
    pub fn recording(mut self) -> Self {
        self.received = Some(Mutex::new(Vec::new()));
        self
    }

    /// The requests received so far, oldest first; empty unless [`recording`](Self::recording).
    pub fn received(&self) -> Vec<Received> {
        self.received
            .as_ref()
            .map_or_else(Vec::new, |received| lock(received).clone())
    }

    /// Verifies with `secret` from now on, as after a change on the real CDN's dashboard.
    pub fn set_secret(&self, secret: Secret) {
        self.secret.store(std::sync::Arc::new(secret));
    }

    /// Stores `file` under `handle`, replacing any file there.
    pub fn insert(&self, handle: &str, file: StoredFile) {
        lock(&self.files).insert(handle.to_owned(), file);
    }

    /// Stores `bytes` under a new handle; returns the handle.
    pub fn store(&self, bytes: Bytes, content_type: &str) -> String {
        let handle = random_handle();
        self.insert(&handle, StoredFile::bytes(bytes, content_type));
        handle
    }

    /// Draws the starting pictures and stores them; returns (handle, caption) pairs.
    pub fn store_starting_pictures(&self) -> Vec<(String, String)> {
        STARTING_PICTURES
            .iter()
            .map(|(caption, palette, disc)| {
                let handle =
                    self.store(Bytes::from(pop_art_png(480, *palette, *disc)), "image/png");
                (handle, (*caption).to_owned())
            })
            .collect()
    }

    /// Answers one request: checks its credentials for the call it makes (`read` for `GET` and
    /// `HEAD`, `store` for an upload), records it, then serves, stores or refuses.
    pub async fn handle(&self, request: Request<Incoming>) -> Response<ResponseBody> {
        let now = SystemClock.now_unix();
        let secret = self.secret.load_full();
        let path_and_query = request.uri().path_and_query().map_or("/", |pq| pq.as_str());
        let upload =
            request.method() == Method::POST && request.uri().path().starts_with("/api/store/");
        let verdict = match *request.method() {
            _ if upload => Some(
                parse_url(path_and_query)
                    .and_then(|parsed| verify_parsed(&parsed, &secret, now, &[Call::Store])),
            ),
            Method::GET | Method::HEAD => Some(verify_at(path_and_query, &secret, now, Call::Read)),
            _ => None,
        };
        self.record(&request, verdict.as_ref(), now);
        let mut response = match verdict {
            Some(verdict) if upload => self.upload(request, verdict).await,
            Some(Ok(_)) => {
                self.fetch_source(&request).await;
                self.read(&request)
            }
            Some(Err(reason)) => policy_error(&handle_of(&request), &reason),
            None if request.method() == Method::OPTIONS => status(StatusCode::NO_CONTENT, ""),
            None => status(StatusCode::METHOD_NOT_ALLOWED, "method not allowed"),
        };
        // The picker uploads straight from the site's pages, another origin.
        let headers = response.headers_mut();
        headers.insert(
            header::ACCESS_CONTROL_ALLOW_ORIGIN,
            HeaderValue::from_static("*"),
        );
        headers.insert(
            header::ACCESS_CONTROL_ALLOW_METHODS,
            HeaderValue::from_static("GET, POST, OPTIONS"),
        );
        headers.insert(
            header::ACCESS_CONTROL_ALLOW_HEADERS,
            HeaderValue::from_static("content-type"),
        );
        response
    }

    fn record(
        &self,
        request: &Request<Incoming>,
        verdict: Option<&Result<DecodedPolicy, Invalid>>,
        at: u64,
    ) {
        let Some(received) = &self.received else {
            return;
        };
        let entry = Received {
            method: request.method().clone(),
            uri: request
                .uri()
                .path_and_query()
                .map_or("/", |pq| pq.as_str())
                .to_owned(),
            headers: request.headers().clone(),
            policy: verdict.and_then(|v| v.as_ref().ok().cloned()),
            invalid: verdict.and_then(|v| v.as_ref().err().cloned()),
            at,
        };
        lock(received).push(entry);
    }

    /// For a request (already verified) that names an external source not fetched yet: fetches
    /// it, as the real CDN fetches a source to transform it, and keeps it under its URL. The
    /// demo's partner server speaks plain http on loopback; other sources are not fetched.
    async fn fetch_source(&self, request: &Request<Incoming>) {
        let source = handle_of(request);
        if !source.starts_with("http://") || lock(&self.files).contains_key(&source) {
            return;
        }
        let fetched = tokio::time::timeout(SOURCE_FETCH_TIMEOUT, fetch(&source)).await;
        if let Ok(Some(file)) = fetched {
            self.insert(&source, file);
        }
    }

    /// Serves a file to a request whose credentials verified.
    fn read(&self, request: &Request<Incoming>) -> Response<ResponseBody> {
        let handle = handle_of(request);
        let Some(file) = lock(&self.files).get(&handle).cloned() else {
            return status(StatusCode::NOT_FOUND, "file not found");
        };
        // The handle names the bytes: a file stored under a handle never changes.
        let etag = HeaderValue::try_from(format!("\"{handle}\"")).ok();
        if let Some(etag) = &etag
            && request.headers().get(header::IF_NONE_MATCH) == Some(etag)
        {
            let mut response = Response::new(empty());
            *response.status_mut() = StatusCode::NOT_MODIFIED;
            response.headers_mut().insert(header::ETAG, etag.clone());
            return response;
        }
        let head = request.method() == Method::HEAD;
        let mut response = match file.contents {
            Contents::Bytes(bytes) => {
                let bytes = match resize_width(request) {
                    Some(width) if file.content_type == "image/png" => {
                        resize_png(&bytes, width).map_or(bytes, Bytes::from)
                    }
                    _ => bytes,
                };
                ranged(request.headers(), bytes)
            }
            Contents::Streamed { len, body } => {
                let mut response = Response::new(if head { empty() } else { body() });
                if let Some(len) = len {
                    response
                        .headers_mut()
                        .insert(header::CONTENT_LENGTH, HeaderValue::from(len));
                }
                response
            }
        };
        let headers = response.headers_mut();
        if let Ok(value) = HeaderValue::try_from(file.content_type.as_str()) {
            headers.insert(header::CONTENT_TYPE, value);
        }
        if let Some(etag) = etag {
            headers.insert(header::ETAG, etag);
        }
        headers.insert(
            header::CACHE_CONTROL,
            HeaderValue::from_static("public, max-age=31536000"),
        );
        if head {
            *response.body_mut() = empty();
        }
        response
    }

    /// `POST /api/store/S3?policy=…&signature=…&path=…&filename=…`, the body being the file.
    ///
    /// A refused upload's body is still read (up to a bound) before answering, so browsers see
    /// the refusal instead of a connection cut mid-upload.
    async fn upload(
        &self,
        request: Request<Incoming>,
        verdict: Result<DecodedPolicy, Invalid>,
    ) -> Response<ResponseBody> {
        let (parts, mut body) = request.into_parts();
        let response = match verdict {
            Ok(policy) => self.store_upload(&parts, &policy, &mut body).await,
            Err(reason) => policy_error("upload", &reason),
        };
        if response.status() != StatusCode::OK {
            let mut drained = 0usize;
            while drained < UPLOAD_DRAIN_LIMIT {
                match body.frame().await {
                    Some(Ok(frame)) => drained += frame.data_ref().map_or(0, Bytes::len),
                    _ => break,
                }
            }
        }
        response
    }

    async fn store_upload(
        &self,
        parts: &http::request::Parts,
        policy: &DecodedPolicy,
        body: &mut Incoming,
    ) -> Response<ResponseBody> {
        let query = parts.uri.query().unwrap_or_default().to_owned();
        let param = |name: &str| {
            query.split('&').find_map(|pair| {
                let (k, v) = pair.split_once('=')?;
                (k == name).then(|| {
                    percent_encoding::percent_decode_str(v)
                        .decode_utf8_lossy()
                        .into_owned()
                })
            })
        };
        let path = param("path")
            .or_else(|| policy.limits.path.clone())
            .unwrap_or_else(|| "/".into());
        if let Some(allowed) = &policy.limits.path {
            // As the real CDN does: `path` is a regular expression, matched anywhere in the
            // upload's path unless anchored (so `/gallery/` also allows `/x/gallery/`).
            let Ok(allowed) = regex::Regex::new(allowed) else {
                return status(
                    StatusCode::BAD_REQUEST,
                    "policy error: path is not a valid regular expression",
                );
            };
            if !allowed.is_match(&path) {
                return status(
                    StatusCode::FORBIDDEN,
                    &format!("policy error: path {path:?} is not allowed"),
                );
            }
        }
        let content_type = parts
            .headers
            .get(header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .unwrap_or("application/octet-stream")
            .to_owned();
        let max = policy.limits.max_size.unwrap_or(u64::MAX);
        if let Some(announced) = body.size_hint().exact()
            && announced > max
        {
            return too_large(announced, max);
        }
        // Read no more than the policy allows, even if the client lied about the length.
        let mut bytes = Vec::new();
        while let Some(frame) = body.frame().await {
            let Ok(frame) = frame else {
                return status(StatusCode::BAD_REQUEST, "upload interrupted");
            };
            if let Ok(data) = frame.into_data() {
                bytes.extend_from_slice(&data);
                if bytes.len() as u64 > max {
                    return too_large(bytes.len() as u64, max);
                }
            }
        }
        let size = bytes.len() as u64;
        if let Some(min) = policy.limits.min_size
            && size < min
        {
            return status(
                StatusCode::BAD_REQUEST,
                &format!("policy error: file size {size} is below minSize {min}"),
            );
        }
        let handle = self.store(Bytes::from(bytes), &content_type);
        #[derive(Serialize)]
        struct Stored<'a> {
            url: String,
            handle: &'a str,
            size: u64,
            filename: Option<String>,
            path: String,
            r#type: &'a str,
        }
        let stored = Stored {
            url: format!("{}/{handle}", self.base),
            handle: &handle,
            size,
            filename: param("filename"),
            path,
            r#type: &content_type,
        };
        let json = serde_json::to_vec(&stored).unwrap_or_default();
        let mut response = Response::new(full(json));
        response.headers_mut().insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/json"),
        );
        response
    }
}

/// Most bytes of a refused upload read before answering.
const UPLOAD_DRAIN_LIMIT: usize = 32 * 1024 * 1024;

fn status(code: StatusCode, text: &str) -> Response<ResponseBody> {
    let mut response = Response::new(full(Bytes::from(format!("{text}\n"))));
    *response.status_mut() = code;
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    response
}

fn too_large(size: u64, max: u64) -> Response<ResponseBody> {
    status(
        StatusCode::FORBIDDEN,
        &format!("policy error: file size {size} exceeds maxSize {max}"),
    )
}

/// The real CDN's wording for missing or bad credentials.
fn policy_error(handle: &str, reason: &Invalid) -> Response<ResponseBody> {
    let detail = match reason {
        Invalid::Missing(_) => {
            "proper credentials were not provided: (signature: \"\"; policy \"\")".to_owned()
        }
        other => other.to_string(),
    };
    status(
        StatusCode::FORBIDDEN,
        &format!("file {handle} policy error: {detail}"),
    )
}

fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
}

/// What a read asks for: the handle (the last path segment), or an external source as the
/// URL names it (`…/https://partner.example/a.png`).
fn handle_of<B>(request: &Request<B>) -> String {
    let path_and_query = request.uri().path_and_query().map_or("/", |pq| pq.as_str());
    match parse_url(path_and_query)
        .ok()
        .and_then(|parsed| parsed.target)
    {
        Some(Target::External(source)) => source,
        _ => request
            .uri()
            .path()
            .rsplit('/')
            .next()
            .unwrap_or_default()
            .to_owned(),
    }
}

/// The width a `resize=width:N` task asks for.
fn resize_width<B>(request: &Request<B>) -> Option<u32> {
    let path_and_query = request.uri().path_and_query()?.as_str();
    parse_url(path_and_query).ok()?.tasks.iter().find_map(|t| {
        t.strip_prefix("resize=")?
            .split(',')
            .find_map(|kv| kv.strip_prefix("width:")?.parse::<u32>().ok())
    })
}

/// Serves `bytes`, honouring a single satisfiable `Range: bytes=A-B` or `bytes=A-`.
fn ranged(headers: &HeaderMap, bytes: Bytes) -> Response<ResponseBody> {
    let len = bytes.len() as u64;
    let range = headers
        .get(header::RANGE)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("bytes="))
        .and_then(|v| v.split_once('-'))
        .and_then(|(start, end)| {
            let start: u64 = start.parse().ok()?;
            let end: u64 = if end.is_empty() {
                len.checked_sub(1)?
            } else {
                end.parse().ok()?
            };
            (start <= end && end < len).then_some((start, end))
        });
    let mut response = match range {
        Some((start, end)) => {
            let mut response = Response::new(full(bytes.slice(start as usize..=end as usize)));
            *response.status_mut() = StatusCode::PARTIAL_CONTENT;
            if let Ok(value) = HeaderValue::try_from(format!("bytes {start}-{end}/{len}")) {
                response.headers_mut().insert(header::CONTENT_RANGE, value);
            }
            response
                .headers_mut()
                .insert(header::CONTENT_LENGTH, HeaderValue::from(end - start + 1));
            response
        }
        None => {
            let mut response = Response::new(full(bytes));
            response
                .headers_mut()
                .insert(header::CONTENT_LENGTH, HeaderValue::from(len));
            response
        }
    };
    response
        .headers_mut()
        .insert(header::ACCEPT_RANGES, HeaderValue::from_static("bytes"));
    response
}

/// How long the CDN waits for an external source.
const SOURCE_FETCH_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(10);
/// The largest external source the CDN fetches.
const SOURCE_MAX_BYTES: usize = 8 * 1024 * 1024;

/// `GET http://HOST:PORT/PATH` over one HTTP/1.1 connection: the file, if it answered 200.
async fn fetch(source: &str) -> Option<StoredFile> {
    let rest = source.strip_prefix("http://")?;
    let (authority, path) = rest.split_at(rest.find('/')?);
    let stream = tokio::net::TcpStream::connect(authority).await.ok()?;
    let (mut sender, connection) =
        hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(stream))
            .await
            .ok()?;
    tokio::spawn(connection);
    let request = Request::get(path)
        .header(header::HOST, authority)
        .body(http_body_util::Empty::<Bytes>::new())
        .ok()?;
    let response = sender.send_request(request).await.ok()?;
    if response.status() != StatusCode::OK {
        return None;
    }
    let content_type = response
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("application/octet-stream")
        .to_owned();
    let body = http_body_util::Limited::new(response.into_body(), SOURCE_MAX_BYTES)
        .collect()
        .await
        .ok()?
        .to_bytes();
    Some(StoredFile::bytes(body, &content_type))
}
