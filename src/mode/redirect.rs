//! redirect mode: answer `307` to the signed CDN URL.

use http::header::{self, HeaderValue};
use http::request::Parts;
use http::{Response, StatusCode};

use super::{Handled, RequestContext, Signing, require_get_or_head, sign_file_ref};
use crate::body::empty;
use crate::config::RedirectRoute;
use crate::error::ProxyError;

/// Answers `GET`/`HEAD PREFIX[TASKS/]HANDLE` with `307` to the signed URL, cacheable privately for
/// no longer than the credentials stay valid less the route's `min_validity`.
pub async fn handle(
    signing: Signing<'_>,
    route: &RedirectRoute,
    rest: &str,
    parts: Parts,
    ctx: RequestContext,
) -> Result<Handled, ProxyError> {
    require_get_or_head(&parts)?;
    let target = sign_file_ref(signing, &route.upstream, false, rest, &parts, ctx.now).await?;
    let location = HeaderValue::try_from(target.url).map_err(|e| ProxyError::Internal(e.into()))?;
    // A browser that keeps the redirect still finds `min_validity` left on the URL it follows.
    let remaining = signing
        .signer
        .usable_until(target.expiry)
        .saturating_sub(ctx.now)
        .saturating_sub(signing.signer.signing().min_validity.as_secs());
    let cache_control = HeaderValue::try_from(format!("private, max-age={remaining}"))
        .map_err(|e| ProxyError::Internal(e.into()))?;
    let mut response = Response::new(empty());
    *response.status_mut() = StatusCode::TEMPORARY_REDIRECT;
    response.headers_mut().insert(header::LOCATION, location);
    response
        .headers_mut()
        .insert(header::CACHE_CONTROL, cache_control);
    Ok(Handled {
        response,
        cache: Some(target.cache),
        tunnel: None,
    })
}
