//! A 401 or 403 from the `authorize_url` service, kept to be sent back to the client: its status,
//! `WWW-Authenticate`, `Content-Type` and at most [`DENIAL_BODY_MAX`] bytes of its body.

use bytes::{Bytes, BytesMut};
use http::header::{self, HeaderMap, HeaderValue};
use http::{Response, StatusCode};
use http_body_util::BodyExt;
use hyper::body::Body;

use crate::body::{ResponseBody, full};

/// Most bytes of a denial's body passed on to the client; the rest is not read.
pub const DENIAL_BODY_MAX: usize = 4096;

/// What the client is sent when the authorization service refuses.
///
/// Only what a client needs to authenticate is kept: the status, `WWW-Authenticate` and the
/// body with its `Content-Type`. The service's other headers (`Set-Cookie` above all, which
/// would land on the gateway's origin) are not passed on.
#[derive(Debug, Clone)]
pub struct Denial {
    status: StatusCode,
    www_authenticate: Vec<HeaderValue>,
    content_type: Option<HeaderValue>,
    body: Bytes,
}

impl Denial {
    /// Reads a 401 or 403 answer: its headers, and its body up to [`DENIAL_BODY_MAX`] bytes (a
    /// body that fails midway is kept as far as it came: the answer is a refusal either way).
    pub async fn read<B: Body<Data = Bytes> + Unpin>(
        status: StatusCode,
        headers: &HeaderMap,
        mut body: B,
    ) -> Self {
        let mut kept = BytesMut::new();
        while kept.len() < DENIAL_BODY_MAX {
            match body.frame().await {
                Some(Ok(frame)) => {
                    if let Some(data) = frame.data_ref() {
                        let room = DENIAL_BODY_MAX - kept.len();
                        kept.extend_from_slice(&data[..data.len().min(room)]);
                    }
                }
                Some(Err(_)) | None => break,
            }
        }
        Self {
            status,
            www_authenticate: headers
                .get_all(header::WWW_AUTHENTICATE)
                .iter()
                .cloned()
                .collect(),
            content_type: headers.get(header::CONTENT_TYPE).cloned(),
            body: kept.freeze(),
        }
    }

    /// 401 or 403.
    pub fn status(&self) -> StatusCode {
        self.status
    }

    /// The answer for the client: never stored by a cache, since it is about one user.
    pub fn response(&self) -> Response<ResponseBody> {
        let mut response = Response::new(full(self.body.clone()));
        *response.status_mut() = self.status;
        let headers = response.headers_mut();
        for value in &self.www_authenticate {
            headers.append(header::WWW_AUTHENTICATE, value.clone());
        }
        if let Some(content_type) = &self.content_type {
            headers.insert(header::CONTENT_TYPE, content_type.clone());
        }
        headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
        response
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use http_body_util::Full;

    #[tokio::test]
    async fn keeps_the_status_the_challenge_and_a_capped_body_only() {
        let mut headers = HeaderMap::new();
        headers.insert(
            header::WWW_AUTHENTICATE,
            HeaderValue::from_static("Bearer realm=\"files\""),
        );
        headers.insert(header::CONTENT_TYPE, HeaderValue::from_static("text/html"));
        headers.insert(header::SET_COOKIE, HeaderValue::from_static("auth=1"));
        let body = Full::new(Bytes::from(vec![b'x'; DENIAL_BODY_MAX * 3]));
        let denial = Denial::read(StatusCode::UNAUTHORIZED, &headers, body).await;
        let response = denial.response();
        assert_eq!(response.status(), StatusCode::UNAUTHORIZED);
        assert_eq!(
            response.headers()[header::WWW_AUTHENTICATE],
            "Bearer realm=\"files\""
        );
        assert_eq!(response.headers()[header::CONTENT_TYPE], "text/html");
        assert_eq!(response.headers()[header::CACHE_CONTROL], "no-store");
        assert!(response.headers().get(header::SET_COOKIE).is_none());
        let body = response
            .into_body()
            .collect()
            .await
            .expect("body")
            .to_bytes();
        assert_eq!(body.len(), DENIAL_BODY_MAX);
    }
}
