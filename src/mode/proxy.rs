//! proxy mode: fetch the file from the CDN with fresh credentials and stream it back.

use http::header::{self, HeaderName};
use http::uri::PathAndQuery;
use http::{Method, Request};
use hyper::body::Incoming;

use super::cors::preflight;
use super::file_answer::serve_file_answer;
use super::{Handled, RequestContext, Signing, require_get_or_head, sign_file_ref};
use crate::authorize::keep_private;
use crate::body::empty;
use crate::error::ProxyError;
use crate::router::ActiveProxy;
use crate::upstream::headers::{add_forwarding_headers, add_via};

/// Client headers that go up to the CDN; nothing else does (no cookies, no authorization).
const FORWARDED_REQUEST_HEADERS: [HeaderName; 9] = [
    header::ACCEPT,
    header::ACCEPT_ENCODING,
    header::ACCEPT_LANGUAGE,
    header::RANGE,
    header::IF_RANGE,
    header::IF_NONE_MATCH,
    header::IF_MODIFIED_SINCE,
    header::CACHE_CONTROL,
    header::USER_AGENT,
];

/// Forwards `GET`/`HEAD PREFIX[TASKS/]HANDLE[?query]` with fresh credentials, and serves the
/// answer as a file (see [`serve_file_answer`]).
pub async fn handle(
    signing: Signing<'_>,
    proxy: &ActiveProxy,
    rest: &str,
    request: Request<Incoming>,
    ctx: RequestContext,
) -> Result<Handled, ProxyError> {
    let (parts, _body) = request.into_parts();
    let cors_origins = &proxy.serving.cors_origins;
    if parts.method == Method::OPTIONS && !cors_origins.is_empty() {
        return Ok(Handled {
            response: preflight(cors_origins, &parts.headers, "GET, HEAD"),
            cache: None,
            tunnel: None,
        });
    }
    require_get_or_head(&parts)?;
    let upstream = &proxy.client;
    let target = sign_file_ref(
        signing,
        upstream.upstream().base_path(),
        rest,
        &parts,
        ctx.now,
    )
    .await?;
    // The handle and tasks were checked and the query came from a parsed request target, so
    // this only fails for a target no upstream should be sent.
    let path = PathAndQuery::try_from(target.url).map_err(|_| ProxyError::BadTarget)?;
    let uri = upstream.upstream().uri(path);

    let mut upstream_request = Request::new(empty());
    *upstream_request.method_mut() = parts.method.clone();
    *upstream_request.uri_mut() = uri;
    let headers = upstream_request.headers_mut();
    // The allowlisted headers and the five forwarding ones, without regrowing the map.
    headers.reserve(FORWARDED_REQUEST_HEADERS.len() + 5);
    // One pass over what the client sent, names compared without hashing, rather than a
    // lookup in its map for every allowlisted name.
    for (name, value) in &parts.headers {
        if FORWARDED_REQUEST_HEADERS.contains(name) {
            headers.append(name.clone(), value.clone());
        }
    }
    add_forwarding_headers(headers, &parts, &ctx);

    let response = upstream.send(upstream_request, ctx.now).await?;
    let mut response = serve_file_answer(response, &proxy.serving, &parts.method, &parts.headers);
    add_via(response.headers_mut());
    if signing.authorizer.is_some() {
        keep_private(response.headers_mut());
    }
    Ok(Handled {
        response,
        cache: Some(target.cache),
        tunnel: None,
    })
}
