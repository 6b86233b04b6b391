//! proxy mode: fetch the file from the CDN with fresh credentials and stream it back.

use http::header::{self, HeaderName};
use http::request::Parts;
use http::uri::PathAndQuery;
use http::{Method, Request, Response};
use hyper::body::Incoming;

use super::cors::preflight;
use super::file_answer::serve_file_answer;
use super::{Handled, RequestContext, Signing, require_get_or_head, sign_file_ref};
use crate::authorize::keep_private;
use crate::body::{ResponseBody, empty};
use crate::config::FileServing;
use crate::error::ProxyError;
use crate::router::ActiveProxy;
use crate::upstream::UpstreamClient;
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

/// What a route serving files (proxy, verify) answers before it looks at the file: a CORS
/// preflight when the route lets other origins read its files, 405 for any method but `GET`
/// and `HEAD`. `None`: go on.
pub(super) fn preflight_or_read(
    parts: &Parts,
    cors_origins: &[String],
) -> Result<Option<Handled>, ProxyError> {
    if parts.method == Method::OPTIONS && !cors_origins.is_empty() {
        return Ok(Some(Handled {
            response: preflight(cors_origins, &parts.headers, "GET, HEAD"),
            cache: None,
            tunnel: None,
        }));
    }
    require_get_or_head(parts)?;
    Ok(None)
}

/// Fetches the file at `path` (base path included) from `client`'s upstream for the client
/// request `parts` (its method, only the allowlisted client headers, and the forwarding
/// headers), and serves the answer as a file (see [`serve_file_answer`]).
pub(super) async fn fetch_file(
    client: &UpstreamClient,
    serving: &FileServing,
    parts: &Parts,
    path: PathAndQuery,
    ctx: &RequestContext,
) -> Result<Response<ResponseBody>, ProxyError> {
    let mut request = Request::new(empty());
    *request.method_mut() = parts.method.clone();
    *request.uri_mut() = client.upstream().uri(path);
    let headers = request.headers_mut();
    // The allowlisted headers and the five forwarding ones, without regrowing the map.
    headers.reserve(FORWARDED_REQUEST_HEADERS.len() + 5);
    // One pass over what the client sent, names compared without hashing, rather than a
    // lookup in its map for every allowlisted name.
    for (name, value) in &parts.headers {
        if FORWARDED_REQUEST_HEADERS.contains(name) {
            headers.append(name.clone(), value.clone());
        }
    }
    add_forwarding_headers(headers, parts, ctx);
    let response = client.send(request, ctx.now).await?;
    let mut response = serve_file_answer(response, serving, &parts.method, &parts.headers);
    add_via(response.headers_mut());
    Ok(response)
}

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
    if let Some(preflight) = preflight_or_read(&parts, &proxy.serving.cors_origins)? {
        return Ok(preflight);
    }
    let upstream = &proxy.client;
    let target = sign_file_ref(signing, upstream.upstream(), true, rest, &parts, ctx.now).await?;
    // The handle and tasks were checked and the query came from a parsed request target, so
    // this only fails for a target no upstream should be sent.
    let path = PathAndQuery::try_from(target.url).map_err(|_| ProxyError::BadTarget)?;
    let mut response = fetch_file(upstream, &proxy.serving, &parts, path, &ctx).await?;
    if signing.authorizer.is_some() {
        keep_private(response.headers_mut());
    }
    Ok(Handled {
        response,
        cache: Some(target.cache),
        tunnel: None,
    })
}
