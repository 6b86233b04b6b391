//! The demo's stand-in CDN: serves files by handle only to valid credentials (answering as the
//! real one does otherwise), applies `resize=width:N`, and takes uploads checked against their
//! policy.

use std::collections::HashMap;
use std::sync::{Mutex, PoisonError};

use bytes::Bytes;
use http::header::{self, HeaderValue};
use http::{Method, Request, Response, StatusCode};
use http_body_util::BodyExt;
use hyper::body::{Body, Incoming};
use serde::Serialize;

use super::images::{pop_art_png, resize_png};
use super::random_handle;
use crate::body::{ResponseBody, empty, full};
use crate::clock::{Clock, SystemClock};
use crate::policy::Call;
use crate::secret::Secret;
use crate::verify::{Invalid, parse_url, verify_at, verify_parsed};

/// A stored file.
#[derive(Clone)]
pub struct StoredFile {
    /// Its bytes.
    pub bytes: Bytes,
    /// Its `Content-Type`.
    pub content_type: String,
}

/// The stand-in CDN and its files.
pub struct StandInCdn {
    secret: Secret,
    base: String,
    files: Mutex<HashMap<String, StoredFile>>,
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
    /// A CDN with the starting pictures, reachable at `base` (`http://127.0.0.1:PORT`).
    pub fn new(secret: Secret, base: String) -> Self {
        Self {
            secret,
            base,
            files: Mutex::new(HashMap::new()),
        }
    }

    /// Stores `bytes` under a new handle; returns the handle.
    pub fn store(&self, bytes: Bytes, content_type: &str) -> String {
        let handle = random_handle();
        self.files().insert(
            handle.clone(),
            StoredFile {
                bytes,
                content_type: content_type.to_owned(),
            },
        );
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

    fn files(&self) -> std::sync::MutexGuard<'_, HashMap<String, StoredFile>> {
        self.files.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Answers one request.
    pub async fn handle(&self, request: Request<Incoming>) -> Response<ResponseBody> {
        let mut response = match (request.method(), request.uri().path()) {
            (&Method::OPTIONS, _) => status(StatusCode::NO_CONTENT, ""),
            (&Method::POST, path) if path.starts_with("/api/store/") => self.upload(request).await,
            (&Method::GET | &Method::HEAD, _) => self.read(&request),
            _ => status(StatusCode::METHOD_NOT_ALLOWED, "method not allowed"),
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

    fn read(&self, request: &Request<Incoming>) -> Response<ResponseBody> {
        let path_and_query = request.uri().path_and_query().map_or("/", |pq| pq.as_str());
        let handle = request.uri().path().rsplit('/').next().unwrap_or_default();
        let now = SystemClock.now_unix();
        if let Err(reason) = verify_at(path_and_query, &self.secret, now, Call::Read) {
            return policy_error(handle, &reason);
        }
        let Some(file) = self.files().get(handle).cloned() else {
            return status(StatusCode::NOT_FOUND, "file not found");
        };
        let width = parse_url(path_and_query).ok().and_then(|p| {
            p.tasks.iter().find_map(|t| {
                t.strip_prefix("resize=")?
                    .split(',')
                    .find_map(|kv| kv.strip_prefix("width:")?.parse::<u32>().ok())
            })
        });
        let bytes = match width {
            Some(w) if file.content_type == "image/png" => {
                resize_png(&file.bytes, w).map_or(file.bytes.clone(), Bytes::from)
            }
            _ => file.bytes.clone(),
        };
        let length = bytes.len();
        let body = if request.method() == Method::HEAD {
            empty()
        } else {
            full(bytes)
        };
        let mut response = Response::new(body);
        let headers = response.headers_mut();
        if let Ok(value) = HeaderValue::try_from(file.content_type.as_str()) {
            headers.insert(header::CONTENT_TYPE, value);
        }
        headers.insert(header::CONTENT_LENGTH, HeaderValue::from(length));
        headers.insert(
            header::CACHE_CONTROL,
            HeaderValue::from_static("public, max-age=31536000"),
        );
        response
    }

    /// `POST /api/store/S3?policy=…&signature=…&path=…&filename=…`, the body being the file.
    ///
    /// A refused upload's body is still read (up to a bound) before answering, so browsers see
    /// the refusal instead of a connection cut mid-upload.
    async fn upload(&self, request: Request<Incoming>) -> Response<ResponseBody> {
        let (parts, mut body) = request.into_parts();
        let response = self.store_upload(&parts, &mut body).await;
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
        body: &mut Incoming,
    ) -> Response<ResponseBody> {
        let path_and_query = parts
            .uri
            .path_and_query()
            .map_or("/", |pq| pq.as_str())
            .to_owned();
        let parsed = match parse_url(&path_and_query) {
            Ok(parsed) => parsed,
            Err(reason) => return policy_error("upload", &reason),
        };
        let now = SystemClock.now_unix();
        let policy = match verify_parsed(&parsed, &self.secret, now, &[Call::Store]) {
            Ok(policy) => policy,
            Err(reason) => return policy_error("upload", &reason),
        };
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
            // The real CDN reads `path` as a regular expression; the demo checks it as a prefix.
            if !path.starts_with(allowed.as_str()) {
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
