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

/// The gallery and its pictures.
pub struct GallerySite {
    cdn_base: String,
    photos: Mutex<Vec<Photo>>,
}

impl GallerySite {
    /// A gallery showing the CDN's starting pictures.
    pub fn new(cdn_base: String, cdn: &StandInCdn) -> Self {
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
            photos: Mutex::new(photos),
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
        let mut figures = String::new();
        for photo in self.photos() {
            let thumbnail = photo.url.replacen(
                &format!("{}/", self.cdn_base),
                &format!("{}/resize=width:300/", self.cdn_base),
                1,
            );
            figures.push_str(&format!(
                r#"<figure><a href="{url}"><img src="{thumbnail}" alt="{caption}" width="300"></a><figcaption>{caption}</figcaption></figure>
"#,
                url = escape_html(&photo.url),
                thumbnail = escape_html(&thumbnail),
                caption = escape_html(&photo.caption),
            ));
        }
        page(
            "Pop Art Gallery",
            &format!(
                r#"<p class="lede">Every picture below is written in this page as a bare CDN URL. signgate signs them as the page streams through it; this site holds no secret.</p>
<p><a class="button" href="/upload">Upload a picture</a></p>
<main class="grid">
{figures}</main>"#
            ),
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
