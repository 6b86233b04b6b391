//! proxy mode: fetch the file from the CDN with fresh credentials and stream it back.

use http::Request;
use http::header::{self, HeaderName};
use http::uri::PathAndQuery;
use hyper::body::Incoming;

use super::{Handled, RequestContext, require_get_or_head, sign_file_ref};
use crate::body::empty;
use crate::error::ProxyError;
use crate::signer::RouteSigner;
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

/// Forwards `GET`/`HEAD PREFIX[TASKS/]HANDLE[?query]` with fresh credentials.
pub async fn handle(
    signer: &RouteSigner,
    upstream: &UpstreamClient,
    rest: &str,
    request: Request<Incoming>,
    ctx: RequestContext,
) -> Result<Handled, ProxyError> {
    let (parts, _body) = request.into_parts();
    require_get_or_head(&parts)?;
    let target = sign_file_ref(
        signer,
        upstream.upstream().base_path(),
        rest,
        parts.uri.query(),
        ctx.now,
    )?;
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
    for name in &FORWARDED_REQUEST_HEADERS {
        for value in parts.headers.get_all(name) {
            headers.append(name.clone(), value.clone());
        }
    }
    add_forwarding_headers(headers, &parts, &ctx);

    let mut response = upstream.send(upstream_request).await?;
    // Cookies set by the CDN's domain must not land on the site's.
    response.headers_mut().remove(header::SET_COOKIE);
    add_via(response.headers_mut());
    Ok(Handled {
        response,
        cache: Some(target.cache),
    })
}
