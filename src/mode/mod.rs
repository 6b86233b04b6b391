//! One handler per route mode, and what they share: signing a file reference and the headers a
//! reverse proxy adds.

pub mod proxy;
pub mod redirect;
pub mod site;
pub mod upload_policy;

use std::fmt::Write as _;
use std::net::SocketAddr;
use std::sync::Arc;

use http::header::{self, HeaderMap, HeaderName, HeaderValue};
use http::request::Parts;
use http::{Method, Response};
use hyper::body::Incoming;

use crate::body::ResponseBody;
use crate::cache::CacheOutcome;
use crate::config::Mode;
use crate::error::ProxyError;
use crate::filelink::{FileRef, signed_url, strip_client_credentials};
use crate::policy::{Call, Credentials};
use crate::router::ActiveRoute;

/// What every handler knows about the request besides the request itself.
#[derive(Debug, Clone, Copy)]
pub struct RequestContext {
    /// The client's address.
    pub peer: SocketAddr,
    /// The current unix time, read once per request.
    pub now: u64,
}

/// A handler's answer, and whether signing hit the cache (for the access log).
pub struct Handled {
    /// The response.
    pub response: Response<ResponseBody>,
    /// Cache outcome, when the handler signed.
    pub cache: Option<CacheOutcome>,
}

/// Dispatches to the route's mode. `rest` is the path after the route's prefix.
pub async fn handle(
    active: &Arc<ActiveRoute>,
    rest: &str,
    request: http::Request<Incoming>,
    ctx: RequestContext,
) -> Result<Handled, ProxyError> {
    match active.route.mode {
        Mode::Proxy => proxy::handle(active, rest, request, ctx).await,
        Mode::Redirect => redirect::handle(active, rest, request.into_parts().0, ctx),
        Mode::Site => site::handle(active, request, ctx).await,
        Mode::UploadPolicy => upload_policy::handle(active, rest, request.into_parts().0, ctx),
    }
}

/// A file reference signed for its route: the upstream URL and the credentials in it.
pub struct SignedTarget {
    /// The upstream URL with credentials.
    pub url: String,
    /// The credentials (for their expiry).
    pub credentials: Arc<Credentials>,
    /// Whether they came from the cache.
    pub cache: CacheOutcome,
}

/// Only `GET` and `HEAD` read files.
pub fn require_get_or_head(parts: &Parts) -> Result<(), ProxyError> {
    if parts.method == Method::GET || parts.method == Method::HEAD {
        Ok(())
    } else {
        Err(ProxyError::MethodNotAllowed { allow: "GET, HEAD" })
    }
}

/// Parses `rest` as `[TASKS/]HANDLE`, checks the route allows what it asks, and signs the
/// upstream URL (keeping the client's query, minus any credentials it carried).
pub fn sign_file_ref(
    active: &ActiveRoute,
    rest: &str,
    query: Option<&str>,
    now: u64,
) -> Result<SignedTarget, ProxyError> {
    let file = FileRef::parse(rest).map_err(|_| ProxyError::NotAHandle)?;
    if file.has_tasks() && !active.route.limits.calls.contains(&Call::Convert) {
        return Err(ProxyError::CallNotAllowed);
    }
    let upstream = active
        .route
        .upstream
        .as_ref()
        .ok_or_else(|| ProxyError::Internal("file route without an upstream".into()))?;
    let (credentials, cache) = active.signer.credentials(now, Some(file.handle));
    let query = query.map(strip_client_credentials);
    let url = signed_url(
        &upstream.base,
        &file,
        query.as_deref(),
        &credentials,
        active.route.signing.url_style,
    );
    Ok(SignedTarget {
        url,
        credentials,
        cache,
    })
}

/// The `Via` token signgate adds.
const VIA: &str = "1.1 signgate";
static X_FORWARDED_FOR: HeaderName = HeaderName::from_static("x-forwarded-for");
static X_FORWARDED_PROTO: HeaderName = HeaderName::from_static("x-forwarded-proto");
static X_FORWARDED_HOST: HeaderName = HeaderName::from_static("x-forwarded-host");

/// Sets `X-Forwarded-For` (appending the client's address), `X-Forwarded-Proto`,
/// `X-Forwarded-Host` and `Via` on a request going upstream.
pub fn add_forwarding_headers(
    upstream_headers: &mut HeaderMap,
    client: &Parts,
    ctx: &RequestContext,
) {
    let mut forwarded_for = String::with_capacity(64);
    if let Some(earlier) = client
        .headers
        .get(&X_FORWARDED_FOR)
        .and_then(|v| v.to_str().ok())
    {
        forwarded_for.push_str(earlier);
        forwarded_for.push_str(", ");
    }
    // Writing into a String cannot fail.
    let _ = write!(forwarded_for, "{}", ctx.peer.ip());
    if let Ok(value) = HeaderValue::try_from(forwarded_for) {
        upstream_headers.insert(X_FORWARDED_FOR.clone(), value);
    }
    upstream_headers.insert(X_FORWARDED_PROTO.clone(), HeaderValue::from_static("http"));
    let host = client.headers.get(header::HOST).cloned().or_else(|| {
        client
            .uri
            .authority()
            .and_then(|a| HeaderValue::try_from(a.as_str()).ok())
    });
    if let Some(host) = host {
        upstream_headers.insert(X_FORWARDED_HOST.clone(), host);
    }
    add_via(upstream_headers);
}

/// Appends signgate to the `Via` header.
pub fn add_via(headers: &mut HeaderMap) {
    let value = match headers.get(header::VIA).and_then(|v| v.to_str().ok()) {
        Some(earlier) => HeaderValue::try_from(format!("{earlier}, {VIA}")).ok(),
        None => Some(HeaderValue::from_static(VIA)),
    };
    if let Some(value) = value {
        headers.insert(header::VIA, value);
    }
}
