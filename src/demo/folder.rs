//! The demo's private store: pictures in a folder on disk, served by a plain file server that
//! checks nothing. Only the demo's second gateway, with a verify route, is meant to reach it:
//! the gallery's second row comes from here, signed by the first gateway on the way out and
//! checked by the second on the way in.

use std::path::{Path, PathBuf};

use bytes::Bytes;
use http::header::{self, HeaderValue};
use http::{Method, Request, Response, StatusCode};
use hyper::body::Incoming;

use super::cdn::STARTING_PICTURES;
use super::images::pop_art_png;
use super::{random_handle, random_hex};
use crate::body::{ResponseBody, empty, full};
use crate::filelink::Handle;

/// Pictures the folder holds: the first of the CDN's, redrawn at thumbnail size (a file server
/// cannot resize), each under a handle of its own.
const FOLDER_PICTURES: usize = 3;
/// Their width, the gallery's thumbnail width.
const FOLDER_PICTURE_SIZE: u32 = 300;

/// A folder of pictures and the file server in front of it. The folder is removed on drop.
pub struct FolderOrigin {
    dir: PathBuf,
}

impl FolderOrigin {
    /// Makes a folder of its own under the system's temporary directory and draws the
    /// pictures into it; returns it and the (handle, caption) of each picture.
    pub fn create() -> std::io::Result<(Self, Vec<(String, String)>)> {
        let dir = std::env::temp_dir().join(format!("signgate-demo-{}", random_hex(8)));
        std::fs::create_dir(&dir)?;
        let origin = Self { dir };
        let mut pictures = Vec::with_capacity(FOLDER_PICTURES);
        for (caption, palette, disc) in STARTING_PICTURES.iter().take(FOLDER_PICTURES) {
            let handle = random_handle();
            let png = pop_art_png(FOLDER_PICTURE_SIZE, *palette, *disc);
            std::fs::write(origin.dir.join(&handle), png)?;
            pictures.push((handle, format!("{caption}, from the folder")));
        }
        Ok((origin, pictures))
    }

    /// The folder.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Serves `GET`/`HEAD /HANDLE` from the folder, as a plain file server would: no
    /// credentials asked for. Anything else is 404 or 405.
    pub async fn handle(&self, request: Request<Incoming>) -> Response<ResponseBody> {
        let method = request.method();
        if method != Method::GET && method != Method::HEAD {
            return status(StatusCode::METHOD_NOT_ALLOWED);
        }
        // Only a handle names a file here: no path can leave the folder.
        let Some(handle) = request
            .uri()
            .path()
            .strip_prefix('/')
            .and_then(|name| Handle::parse(name).ok())
        else {
            return status(StatusCode::NOT_FOUND);
        };
        // A picture of a few KiB on local disk: read in place (tokio's `fs` is not built in).
        let Ok(bytes) = std::fs::read(self.dir.join(handle.as_str())) else {
            return status(StatusCode::NOT_FOUND);
        };
        let length = bytes.len();
        let body = if method == Method::HEAD {
            empty()
        } else {
            full(Bytes::from(bytes))
        };
        let mut response = Response::new(body);
        let headers = response.headers_mut();
        headers.insert(header::CONTENT_TYPE, HeaderValue::from_static("image/png"));
        headers.insert(header::CONTENT_LENGTH, HeaderValue::from(length));
        response
    }
}

impl Drop for FolderOrigin {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

fn status(code: StatusCode) -> Response<ResponseBody> {
    let mut response = Response::new(empty());
    *response.status_mut() = code;
    response
}
