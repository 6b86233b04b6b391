//! site mode: front an existing site, streaming requests and responses both ways.

use http::header::{self, HeaderValue};
use http::{Request, Uri};
use http_body_util::BodyExt;
use hyper::body::Incoming;

use super::{Handled, RequestContext, add_forwarding_headers, add_via};
use crate::body::BoxError;
use crate::error::ProxyError;
use crate::router::ActiveRoute;
use crate::upstream::strip_hop_by_hop;

/// Forwards any method under the prefix to the site's origin, path and query unchanged.
pub async fn handle(
    active: &ActiveRoute,
    request: Request<Incoming>,
    ctx: RequestContext,
) -> Result<Handled, ProxyError> {
    let (parts, body) = request.into_parts();
    let (Some(upstream), Some(client)) = (&active.route.upstream, &active.upstream) else {
        return Err(ProxyError::Internal(
            "site route without an upstream".into(),
        ));
    };
    let path_and_query = parts.uri.path_and_query().map_or("/", |pq| pq.as_str());
    let uri: Uri = format!("{}{path_and_query}", upstream.base)
        .parse()
        .map_err(|e: http::uri::InvalidUri| ProxyError::Internal(e.into()))?;

    let mut headers = parts.headers.clone();
    strip_hop_by_hop(&mut headers);
    headers.remove(header::HOST);
    let authority =
        HeaderValue::try_from(upstream.authority()).map_err(|e| ProxyError::Internal(e.into()))?;
    headers.insert(header::HOST, authority);
    add_forwarding_headers(&mut headers, &parts, &ctx);

    let mut upstream_request = Request::new(body.map_err(BoxError::from).boxed());
    *upstream_request.method_mut() = parts.method.clone();
    *upstream_request.uri_mut() = uri;
    *upstream_request.headers_mut() = headers;

    let mut response = client.send(upstream_request).await?;
    add_via(response.headers_mut());
    Ok(Handled {
        response,
        cache: None,
    })
}
