//! The demo's second storage: a stand-in S3-compatible bucket holding two pictures, which it
//! serves only to a SigV4 presigned URL, as S3 serves a private object. It knows the demo's
//! access key (random per run); the gallery's fourth row reaches it through the gateway's
//! redirect route with `scheme = "s3"`, which answers 307 to the presigned URL.

use std::collections::HashMap;

use bytes::Bytes;
use http::header::{self, HeaderValue};
use http::{Method, Request, Response, StatusCode};

use super::cdn::STARTING_PICTURES;
use super::images::pop_art_png;
use crate::body::{ResponseBody, empty, full};
use crate::scheme::s3::{S3ConfigError, S3Invalid, S3Signer};
use crate::secret::TextSecret;

/// The bucket the pictures are in, addressed path style (`http://HOST/BUCKET/KEY`).
pub const DEMO_S3_BUCKET: &str = "pop-art";
/// The region the demo's access key signs for.
pub const DEMO_S3_REGION: &str = "us-east-1";
/// The objects: key, and which of the CDN's starting pictures is redrawn under it.
const OBJECTS: [(&str, usize); 2] = [("prints/flowers.png", 4), ("prints/liz.png", 5)];
/// Their width, the gallery's thumbnail width (a bucket does not resize).
const OBJECT_SIZE: u32 = 300;

/// A bucket of pictures behind a SigV4 check.
pub struct StandInS3 {
    signer: S3Signer,
    /// `/BUCKET/KEY` → the PNG.
    objects: HashMap<String, Bytes>,
    /// (key, caption) of each object, in the gallery's order.
    pictures: Vec<(String, String)>,
    /// The address it answers on: the host a presigned URL names when a request has none.
    host: String,
}

impl StandInS3 {
    /// A bucket listening at `host` (`127.0.0.1:PORT`), checking URLs presigned with
    /// `access_key_id` and `secret` in [`DEMO_S3_REGION`]; draws its pictures.
    pub fn new(
        access_key_id: String,
        secret: TextSecret,
        host: String,
    ) -> Result<Self, S3ConfigError> {
        let signer = S3Signer::new(access_key_id, secret, DEMO_S3_REGION.to_owned())?;
        let mut objects = HashMap::new();
        let mut pictures = Vec::with_capacity(OBJECTS.len());
        for (key, picture) in OBJECTS {
            let Some((caption, palette, disc)) = STARTING_PICTURES.get(picture) else {
                continue;
            };
            let png = pop_art_png(OBJECT_SIZE, *palette, *disc);
            objects.insert(format!("/{DEMO_S3_BUCKET}/{key}"), Bytes::from(png));
            pictures.push((key.to_owned(), format!("{caption}, from the bucket")));
        }
        Ok(Self {
            signer,
            objects,
            pictures,
            host,
        })
    }

    /// The (key, caption) of each picture in the bucket.
    pub fn pictures(&self) -> Vec<(String, String)> {
        self.pictures.clone()
    }

    /// Answers `GET`/`HEAD /BUCKET/KEY` at unix time `now`: the object when the URL is presigned
    /// for it with this bucket's access key and has not expired, 403 with an S3-style error
    /// otherwise (404 for a key it does not hold, once the URL verifies; 405 for other methods).
    pub fn answer<B>(&self, request: &Request<B>, now: u64) -> Response<ResponseBody> {
        let method = request.method();
        if method != Method::GET && method != Method::HEAD {
            return error(
                StatusCode::METHOD_NOT_ALLOWED,
                "MethodNotAllowed",
                "The specified method is not allowed against this resource.",
            );
        }
        // Checked as S3 checks it: against the host the request was sent to.
        let host = request
            .uri()
            .authority()
            .map(|authority| authority.as_str().to_owned())
            .or_else(|| {
                request
                    .headers()
                    .get(header::HOST)
                    .and_then(|value| value.to_str().ok())
                    .map(str::to_owned)
            })
            .unwrap_or_else(|| self.host.clone());
        let path_and_query = request.uri().path_and_query().map_or("/", |pq| pq.as_str());
        let url = format!("http://{host}{path_and_query}");
        if let Err(invalid) = self.signer.verify(&url, now) {
            return refused(&invalid);
        }
        let Some(object) = self.objects.get(request.uri().path()) else {
            return error(
                StatusCode::NOT_FOUND,
                "NoSuchKey",
                "The specified key does not exist.",
            );
        };
        let body = if method == Method::HEAD {
            empty()
        } else {
            full(object.clone())
        };
        let mut response = Response::new(body);
        let headers = response.headers_mut();
        headers.insert(header::CONTENT_TYPE, HeaderValue::from_static("image/png"));
        headers.insert(header::CONTENT_LENGTH, HeaderValue::from(object.len()));
        response
    }
}

/// 403 for a URL that does not verify, worded as S3 words it.
fn refused(invalid: &S3Invalid) -> Response<ResponseBody> {
    let (code, message) = match invalid {
        S3Invalid::BadSignature => (
            "SignatureDoesNotMatch",
            "The request signature we calculated does not match the signature you provided."
                .to_owned(),
        ),
        S3Invalid::Expired { .. } => ("AccessDenied", "Request has expired".to_owned()),
        S3Invalid::Missing(_) => ("AccessDenied", "Access Denied".to_owned()),
        // The texts name no credential.
        other => ("AccessDenied", format!("Access Denied: {other}")),
    };
    error(StatusCode::FORBIDDEN, code, &message)
}

fn error(status: StatusCode, code: &str, message: &str) -> Response<ResponseBody> {
    let body = format!(
        "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<Error><Code>{code}</Code><Message>{}</Message></Error>\n",
        super::escape_html(message)
    );
    let mut response = Response::new(full(body));
    *response.status_mut() = status;
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/xml"),
    );
    response
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::scheme::Validity;
    use http_body_util::BodyExt;

    const NOW: u64 = 1_700_000_000;

    fn bucket() -> (StandInS3, S3Signer) {
        let secret = TextSecret::new("demo-secret-access-key".into()).expect("not empty");
        let host = "127.0.0.1:9000".to_owned();
        let bucket = StandInS3::new("DEMOKEY".into(), secret.clone(), host).expect("bucket");
        let signer =
            S3Signer::new("DEMOKEY".into(), secret, DEMO_S3_REGION.into()).expect("signer");
        (bucket, signer)
    }

    fn request(url: &str) -> Request<()> {
        let (_, target) = url.split_once("9000").expect("on the bucket's host");
        Request::get(target)
            .header(header::HOST, "127.0.0.1:9000")
            .body(())
            .expect("request")
    }

    async fn text(response: Response<ResponseBody>) -> String {
        let body = response.into_body().collect().await.expect("body");
        String::from_utf8_lossy(&body.to_bytes()).into_owned()
    }

    #[tokio::test]
    async fn serves_only_presigned_urls() {
        let (bucket, signer) = bucket();
        let (key, _) = &bucket.pictures()[0];
        let object = format!("http://127.0.0.1:9000/{DEMO_S3_BUCKET}/{key}");
        let validity = Validity {
            start: NOW - 60,
            expiry: NOW + 3600,
        };
        let presigned = signer.presign(&object, validity).expect("presigns");

        let served = bucket.answer(&request(&presigned), NOW);
        assert_eq!(served.status(), StatusCode::OK);
        assert_eq!(served.headers()[header::CONTENT_TYPE], "image/png");

        let bare = bucket.answer(&request(&object), NOW);
        assert_eq!(bare.status(), StatusCode::FORBIDDEN);
        assert!(text(bare).await.contains("<Code>AccessDenied</Code>"));

        let tampered = presigned.replace(key.as_str(), "prints/other.png");
        let refused = bucket.answer(&request(&tampered), NOW);
        assert_eq!(refused.status(), StatusCode::FORBIDDEN);
        assert!(text(refused).await.contains("SignatureDoesNotMatch"));

        let expired = bucket.answer(&request(&presigned), NOW + 7200);
        assert_eq!(expired.status(), StatusCode::FORBIDDEN);
        assert!(text(expired).await.contains("Request has expired"));
    }
}
