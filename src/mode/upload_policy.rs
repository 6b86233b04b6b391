//! upload-policy mode: hand the browser's picker a policy with the route's limits.

use http::header::{self, HeaderValue};
use http::request::Parts;
use http::{Method, Response};
use serde::Serialize;

use super::cors::{add_cors_headers, preflight};
use super::{Handled, RequestContext, Signing, require_get_or_head};
use crate::authorize::Subject;
use crate::body::{empty, full};
use crate::config::UploadPolicyRoute;
use crate::error::ProxyError;

#[derive(Serialize)]
struct UploadPolicy<'a> {
    policy: &'a str,
    signature: &'a str,
    expiry: u64,
}

/// Answers `GET PREFIX` with `{"policy","signature","expiry"}`, `Cache-Control: no-store`.
///
/// The limits (`calls`, `max_size`, `min_size`, `path`, `container`, `url`) come from the route
/// alone: nothing in the request can widen them. With `authorize_url`, the service is asked
/// first (a CORS preflight, which carries no credentials, is answered without asking).
pub async fn handle(
    signing: Signing<'_>,
    route: &UploadPolicyRoute,
    rest: &str,
    parts: Parts,
    ctx: RequestContext,
) -> Result<Handled, ProxyError> {
    if !rest.is_empty() && rest != "/" {
        return Err(ProxyError::NoRoute);
    }
    if parts.method == Method::OPTIONS && !route.cors_origins.is_empty() {
        return Ok(Handled {
            response: preflight(&route.cors_origins, &parts.headers, "GET"),
            cache: None,
            tunnel: None,
        });
    }
    require_get_or_head(&parts)?;
    let subject = Subject {
        file: None,
        tasks: &[],
    };
    signing.authorize(&parts, subject, ctx.now).await?;
    let (credentials, cache) = signing.signer.credentials(ctx.now, None);
    let json = serde_json::to_vec(&UploadPolicy {
        policy: &credentials.policy,
        signature: &credentials.signature,
        expiry: credentials.expiry,
    })
    .map_err(|e| ProxyError::Internal(e.into()))?;
    let length = json.len();
    let body = if parts.method == Method::HEAD {
        empty()
    } else {
        full(json)
    };
    let mut response = Response::new(body);
    let headers = response.headers_mut();
    headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    headers.insert(header::CONTENT_LENGTH, HeaderValue::from(length));
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    add_cors_headers(&route.cors_origins, &parts.headers, headers);
    Ok(Handled {
        response,
        cache: Some(cache),
        tunnel: None,
    })
}
