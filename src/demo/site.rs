//! The demo's gallery site, in the spirit of the classic Pop Art gallery tutorial: it renders
//! bare CDN URLs and knows no secret. Uploads go from the browser straight to the CDN with a
//! policy fetched from the gateway.

use std::sync::{Mutex, PoisonError};

use bytes::Bytes;
use http::header::{self, HeaderValue};
use http::{Method, Request, Response, StatusCode};
use http_body_util::{BodyExt, Limited};
use hyper::body::Incoming;
use serde::{Deserialize, Serialize};

use super::cdn::StandInCdn;
use super::live::LiveCounter;
use super::{DEMO_MAX_SIZE, escape_html};
use crate::body::{ResponseBody, full};

/// One picture in the gallery.
#[derive(Clone, Serialize, Deserialize)]
pub struct Photo {
    /// The bare CDN URL.
    pub url: String,
    /// Its caption.
    pub caption: String,
}

/// The task the gallery's thumbnails carry (transformations need the `convert` call).
const THUMBNAIL_TASK: &str = "resize=width:300";

/// The gallery and its pictures.
pub struct GallerySite {
    cdn_base: String,
    /// This site's own address: the gallery links to itself fetched without the gateway.
    own_url: String,
    photos: Mutex<Vec<Photo>>,
    /// The second row: pictures in a private folder, as bare URLs on the gateway that
    /// verifies them. Fixed: uploads go to the CDN.
    private_row: Vec<Photo>,
    /// The app's API key: thumbnails are written as `client.transform()` writes them
    /// (`CDN/APIKEY/resize=width:300/HANDLE`), and external sources need it.
    api_key: Option<String>,
    /// The third row: pictures on a partner's server, as external sources the CDN transforms
    /// (`CDN/APIKEY/resize=width:300/http://partner/…`). Fixed.
    partner_row: Vec<Photo>,
    /// The fourth row: objects in an S3-compatible bucket, as relative URLs on the gateway's
    /// redirect route with `scheme = "s3"` (which the site route leaves alone). Fixed.
    bucket_row: Vec<Photo>,
    /// How many pages have the gallery open, pushed to each over a WebSocket.
    live: LiveCounter,
}

impl GallerySite {
    /// A gallery showing the CDN's starting pictures, served at `own_url`.
    pub fn new(cdn_base: String, cdn: &StandInCdn, own_url: String) -> Self {
        let photos = cdn
            .store_starting_pictures()
            .into_iter()
            .map(|(handle, caption)| Photo {
                url: format!("{cdn_base}/{handle}"),
                caption,
            })
            .collect();
        Self {
            cdn_base,
            own_url,
            photos: Mutex::new(photos),
            private_row: Vec::new(),
            api_key: None,
            partner_row: Vec::new(),
            bucket_row: Vec::new(),
            live: LiveCounter::default(),
        }
    }

    /// Adds a second row: `pictures` (handle, caption) served at `base` (the verify gateway in
    /// front of the folder), written as bare URLs like the first row's.
    pub fn with_private_row(mut self, base: String, pictures: Vec<(String, String)>) -> Self {
        self.private_row = row_under(&base, pictures);
        self
    }

    /// Writes CDN URLs as `client.transform()` does, after `api_key`, and adds a third row:
    /// `sources` (URL, caption) on a partner's server, transformed by the CDN.
    pub fn with_api_key(mut self, api_key: &str, sources: Vec<(String, String)>) -> Self {
        self.partner_row = sources
            .into_iter()
            .map(|(source, caption)| Photo {
                url: format!("{}/{api_key}/{source}", self.cdn_base),
                caption,
            })
            .collect();
        self.api_key = Some(api_key.to_owned());
        self
    }

    /// Adds a fourth row: `pictures` (key, caption) in an S3-compatible bucket. The first is
    /// written as the object's bare URL, `{bucket}/KEY` (the site route's `[[route.cdn]]`
    /// presigns it in the page); the others as `{route}/KEY`, a path on the gateway's redirect
    /// route that presigns them (`route` is that route's prefix without its last `/`).
    pub fn with_bucket_row(
        mut self,
        bucket: &str,
        route: &str,
        mut pictures: Vec<(String, String)>,
    ) -> Self {
        let through_route = pictures.split_off(pictures.len().min(1));
        self.bucket_row = row_under(bucket, pictures);
        self.bucket_row.extend(row_under(route, through_route));
        self
    }

    /// The bare thumbnail URL of the picture the gallery page explains (the first one).
    pub fn explained_picture(&self) -> Option<String> {
        self.photos().first().map(|photo| self.thumbnail(photo))
    }

    fn thumbnail(&self, photo: &Photo) -> String {
        let prefix = match &self.api_key {
            Some(key) => format!("{}/{key}/", self.cdn_base),
            None => format!("{}/", self.cdn_base),
        };
        let rest = photo
            .url
            .strip_prefix(&prefix)
            .or_else(|| photo.url.strip_prefix(&format!("{}/", self.cdn_base)));
        match rest {
            Some(rest) => format!("{prefix}{THUMBNAIL_TASK}/{rest}"),
            None => photo.url.clone(),
        }
    }

    fn photos(&self) -> Vec<Photo> {
        self.photos
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }

    /// Answers one request.
    pub async fn handle(&self, request: Request<Incoming>) -> Response<ResponseBody> {
        match (request.method(), request.uri().path()) {
            (&Method::GET, "/") => html(self.gallery_page()),
            (&Method::GET, "/upload") => html(self.upload_page()),
            (&Method::GET, "/photos.json") => {
                let json = serde_json::to_vec(&self.photos()).unwrap_or_default();
                with_type(Response::new(full(json)), "application/json")
            }
            (&Method::POST, "/photos") => self.add_photo(request).await,
            (&Method::GET, "/live") => self.live.answer(request),
            _ => with_type(
                status(StatusCode::NOT_FOUND, "not found"),
                "text/plain; charset=utf-8",
            ),
        }
    }

    async fn add_photo(&self, request: Request<Incoming>) -> Response<ResponseBody> {
        let Ok(body) = Limited::new(request.into_body(), 16 * 1024).collect().await else {
            return status(StatusCode::PAYLOAD_TOO_LARGE, "too large");
        };
        let Ok(photo) = serde_json::from_slice::<Photo>(&body.to_bytes()) else {
            return status(StatusCode::BAD_REQUEST, "expected {\"url\",\"caption\"}");
        };
        // Only pictures on our CDN, stored bare: the gateway signs them on the way out.
        let bare = photo
            .url
            .split(['?', '#'])
            .next()
            .unwrap_or_default()
            .to_owned();
        let Some(handle) = bare.strip_prefix(&format!("{}/", self.cdn_base)) else {
            return status(
                StatusCode::BAD_REQUEST,
                "not a picture on this gallery's CDN",
            );
        };
        if crate::filelink::Handle::parse(handle).is_err() || photo.caption.len() > 200 {
            return status(StatusCode::BAD_REQUEST, "bad picture or caption");
        }
        self.photos
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .push(Photo {
                url: bare,
                caption: photo.caption,
            });
        status(StatusCode::CREATED, "added")
    }

    fn gallery_page(&self) -> String {
        let photos = self.photos();
        // The first picture is the one the explainer reads its `src` from.
        let first_row = figures(
            photos.iter().map(|photo| (photo, self.thumbnail(photo))),
            true,
        );
        let private = if self.private_row.is_empty() {
            String::new()
        } else {
            format!(
                r#"<h2>From a private folder</h2>
<p class="lede">These are files in a folder behind a plain file server that checks nothing. A second signgate, with a <code>verify</code> route, stands in front of it and lets a request through only with valid credentials, which it removes; this page names them bare, and the gateway signs them as it signs the CDN's.</p>
<main class="grid" id="private-row">
{}</main>
"#,
                figures(
                    self.private_row
                        .iter()
                        .map(|photo| (photo, photo.url.clone())),
                    false
                )
            )
        };
        let partner = if self.partner_row.is_empty() {
            String::new()
        } else {
            format!(
                r#"<h2>From a partner's server</h2>
<p class="lede">This picture is kept on another site. The page names it as <code>client.transform()</code> writes an external source: the CDN's address, the app's API key, the task, then the picture's own URL. The gateway signs it for that one source (its route lists the partner's folder in <code>external_sources</code>), and the CDN fetches and resizes it only with those credentials.</p>
<main class="grid" id="partner-row">
{}</main>
"#,
                figures(
                    self.partner_row
                        .iter()
                        .map(|photo| (photo, self.thumbnail(photo))),
                    false
                )
            )
        };
        let bucket = if self.bucket_row.is_empty() {
            String::new()
        } else {
            format!(
                r#"<h2>From an S3-compatible bucket</h2>
<p class="lede">These pictures are objects in a bucket on a stand-in S3-compatible store, which serves an object only to a URL presigned with AWS Signature Version 4, as S3 serves a private one. The first is written in this page as the object's bare URL, and the gateway's site route presigns it as the page streams (a <code>[[route.cdn]]</code> entry with <code>scheme = "s3"</code> and the bucket's access key). The second links to a path on the gateway itself, a <code>redirect</code> route with <code>scheme = "s3"</code>, which answers 307 to the object's presigned URL: one page, Filestack's signatures and S3's.</p>
<main class="grid" id="bucket-row">
{}</main>
"#,
                figures(
                    self.bucket_row
                        .iter()
                        .map(|photo| (photo, photo.url.clone())),
                    false
                )
            )
        };
        let (explainer, script) = match photos.first() {
            Some(first) => (self.explainer(&self.thumbnail(first)), EXPLAINER_SCRIPT),
            None => (String::new(), ""),
        };
        page(
            "Pop Art Gallery",
            &format!(
                r#"<p class="lede">Every picture below is written in this page as a bare CDN URL. signgate signs them as the page streams through it; this site holds no secret.</p>
<p><a class="button" href="/upload">Upload a picture</a></p>
<p class="live">Pages showing this gallery now: <strong id="live-count">…</strong> <small>(pushed by the site over a WebSocket, through the gateway)</small></p>
{explainer}<main class="grid">
{first_row}</main>
{private}{partner}{bucket}{script}{LIVE_SCRIPT}"#
            ),
        )
    }

    /// The first picture, explained: its URL as written here, as the browser received it, and
    /// its decoded policy. The bare URL is element text, which the gateway's rewriter leaves
    /// alone (it signs attributes and CSS only); the received one is read by a script from the
    /// picture's `src` once the page has arrived.
    fn explainer(&self, bare: &str) -> String {
        format!(
            r#"<section class="explainer" aria-labelledby="explainer-title">
<h2 id="explainer-title">The first picture, explained</h2>
<dl>
<dt>In this page's source, as the site wrote it: no credentials</dt>
<dd><code id="bare-url">{bare}</code></dd>
<dt>What your browser received (the picture's <code>src</code> as it arrived)</dt>
<dd><code id="received-url">(needs JavaScript)</code></dd>
<dt>Its policy, decoded</dt>
<dd><pre id="decoded-policy">(needs JavaScript)</pre><p id="policy-expiry"></p></dd>
</dl>
<p>Compare <a id="without-gateway" href="{own}/">this page fetched without the gateway</a>, straight from the site: the CDN refuses every picture, for want of a signature.
From a terminal, <code>signgate explain --secret-env {env} 'URL'</code> decodes and checks any of these URLs; <code>signgate demo</code> printed the secret to set.</p>
</section>
"#,
            bare = escape_html(bare),
            own = escape_html(&self.own_url),
            env = super::DEMO_SECRET_ENV,
        )
    }

    fn upload_page(&self) -> String {
        page(
            "Upload a picture",
            &format!(
                r#"<p class="lede">The picture goes straight from your browser to the CDN, with a policy the gateway signs: at most {DEMO_MAX_SIZE}, stored under /gallery/. Nothing in this page can widen it.</p>
<form id="upload" data-cdn="{cdn}">
  <label>Picture <input type="file" id="file" name="file" accept="image/*" required></label>
  <label>Caption <input type="text" id="caption" name="caption" maxlength="200" required></label>
  <button type="submit" id="send">Upload</button>
  <progress id="progress" max="1" value="0"></progress>
  <p id="status" role="status"></p>
</form>
<p><a href="/">Back to the gallery</a></p>
<script>
const form = document.getElementById('upload');
const status = document.getElementById('status');
const progress = document.getElementById('progress');
form.addEventListener('submit', async (event) => {{
  event.preventDefault();
  const file = document.getElementById('file').files[0];
  const caption = document.getElementById('caption').value;
  status.textContent = 'Asking the gateway for an upload policy…';
  const grant = await (await fetch('/upload-policy')).json();
  const query = new URLSearchParams({{
    policy: grant.policy, signature: grant.signature, path: '/gallery/', filename: file.name,
  }});
  const xhr = new XMLHttpRequest();
  xhr.open('POST', form.dataset.cdn + '/api/store/S3?' + query);
  xhr.upload.onprogress = (e) => {{ if (e.lengthComputable) progress.value = e.loaded / e.total; }};
  xhr.onerror = () => {{ status.textContent = 'Upload failed: the CDN could not be reached.'; }};
  xhr.onload = async () => {{
    if (xhr.status !== 200) {{
      status.textContent = 'Refused by the CDN: ' + xhr.responseText;
      status.className = 'refused';
      return;
    }}
    const stored = JSON.parse(xhr.responseText);
    status.textContent = 'Stored. Adding it to the gallery…';
    const added = await fetch('/photos', {{
      method: 'POST', headers: {{ 'content-type': 'application/json' }},
      body: JSON.stringify({{ url: stored.url, caption }}),
    }});
    if (added.ok) location.href = '/';
    else status.textContent = 'The gallery refused it: ' + await added.text();
  }};
  xhr.setRequestHeader('content-type', file.type || 'application/octet-stream');
  xhr.send(file);
}});
</script>"#,
                cdn = escape_html(&self.cdn_base),
            ),
        )
    }
}

/// A row of `pictures` (name, caption), each at `base/NAME`.
fn row_under(base: &str, pictures: Vec<(String, String)>) -> Vec<Photo> {
    pictures
        .into_iter()
        .map(|(name, caption)| Photo {
            url: format!("{base}/{name}"),
            caption,
        })
        .collect()
}

/// Keeps the live counter up to date from the site's WebSocket, on the page's own host.
const LIVE_SCRIPT: &str = r#"<script>
(() => {
  const count = document.getElementById('live-count');
  const scheme = location.protocol === 'https:' ? 'wss://' : 'ws://';
  const socket = new WebSocket(scheme + location.host + '/live');
  socket.onmessage = (event) => { count.textContent = event.data; };
  socket.onclose = () => { count.textContent = 'disconnected'; };
})();
</script>"#;

/// Fills the explainer from the picture's `src` as it arrived: query or task form, url-safe base64.
/// It stands after the pictures, which must be parsed before it runs.
const EXPLAINER_SCRIPT: &str = r#"<script>
(() => {
  const picture = document.getElementById('explained-picture');
  const show = (id, text) => { document.getElementById(id).textContent = text; };
  const received = picture.getAttribute('src');
  show('received-url', received);
  const url = new URL(received, location.href);
  const task = url.pathname.match(/security=(?:p|policy):"?([^,"\/]+)/);
  const policy = url.searchParams.get('policy') || (task && decodeURIComponent(task[1]));
  if (!policy) {
    show('decoded-policy', 'none: this page did not come through signgate, so the CDN refuses this picture');
    return;
  }
  try {
    const fields = JSON.parse(atob(policy.replace(/-/g, '+').replace(/_/g, '/')));
    show('decoded-policy', JSON.stringify(fields, null, 2));
    const minutes = Math.round((fields.expiry - Date.now() / 1000) / 60);
    show('policy-expiry', 'Expires ' + new Date(fields.expiry * 1000).toISOString() +
      ', in ' + minutes + ' minutes: at least the ttl, rounded up to the bucket.');
  } catch (e) {
    show('decoded-policy', 'cannot decode: ' + e);
  }
})();
</script>"#;

/// One `<figure>` per (photo, the URL its picture loads from), linking to the photo; with
/// `explained`, the first picture is the one the explainer reads.
fn figures<'p>(photos: impl Iterator<Item = (&'p Photo, String)>, explained: bool) -> String {
    let mut out = String::new();
    for (i, (photo, src)) in photos.enumerate() {
        let id = if explained && i == 0 {
            r#" id="explained-picture""#
        } else {
            ""
        };
        out.push_str(&format!(
            r#"<figure><a href="{url}"><img src="{src}"{id} alt="{caption}" width="300"></a><figcaption>{caption}</figcaption></figure>
"#,
            url = escape_html(&photo.url),
            src = escape_html(&src),
            caption = escape_html(&photo.caption),
        ));
    }
    out
}

fn page(title: &str, body: &str) -> String {
    format!(
        r#"<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>{title}</title>
<meta name="viewport" content="width=device-width, initial-scale=1">
<style>
body {{ font-family: "Helvetica Neue", Arial, sans-serif; margin: 0 auto; max-width: 1000px; padding: 1.5rem; background: #fffbe6; color: #111; }}
h1 {{ font-size: 3rem; letter-spacing: .05em; text-transform: uppercase; background: #ff2d7a; color: #fff; display: inline-block; padding: .2em .5em; transform: rotate(-1deg); }}
.lede {{ max-width: 60ch; }}
.grid {{ display: grid; grid-template-columns: repeat(auto-fill, minmax(300px, 1fr)); gap: 1.2rem; }}
figure {{ margin: 0; background: #111; padding: 8px; box-shadow: 6px 6px 0 #00b3e6; }}
figure img {{ display: block; width: 100%; height: auto; }}
figcaption {{ color: #ffe600; font-weight: bold; padding: .4rem 0 0; }}
.button, button {{ background: #00b3e6; color: #fff; border: 0; padding: .6em 1.2em; font-weight: bold; text-decoration: none; cursor: pointer; }}
form label {{ display: block; margin: .8rem 0; }}
progress {{ width: 100%; height: 1.2rem; }}
.refused {{ color: #c00; font-weight: bold; }}
.explainer {{ background: #fff; border: 3px solid #111; padding: .2rem 1rem 1rem; margin: 1rem 0 1.5rem; }}
.explainer code, .explainer pre {{ word-break: break-all; white-space: pre-wrap; background: #f3f3f3; }}
.explainer dt {{ font-weight: bold; margin-top: .6rem; }}
</style></head>
<body><h1>{title}</h1>
{body}
</body></html>"#
    )
}

fn html(page: String) -> Response<ResponseBody> {
    let mut response = with_type(
        Response::new(full(Bytes::from(page))),
        "text/html; charset=utf-8",
    );
    response
        .headers_mut()
        .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    response
}

fn status(code: StatusCode, text: &str) -> Response<ResponseBody> {
    let mut response = Response::new(full(Bytes::from(format!("{text}\n"))));
    *response.status_mut() = code;
    response
}

fn with_type(
    mut response: Response<ResponseBody>,
    content_type: &'static str,
) -> Response<ResponseBody> {
    response
        .headers_mut()
        .insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
    response
}
