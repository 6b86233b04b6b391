//! Headers on the way through: hop-by-hop headers stripped both ways, and the forwarding
//! headers (`X-Forwarded-*`, `Via`) a reverse proxy adds.

use std::fmt::Write as _;

use http::header::{self, HeaderMap, HeaderName, HeaderValue};
use http::request::Parts;

use crate::mode::RequestContext;

/// Headers that describe one connection, not the message: never forwarded either way (RFC 9110
/// section 7.6.1), along with any header the `Connection` header names.
pub const HOP_BY_HOP: [HeaderName; 8] = [
    header::CONNECTION,
    HeaderName::from_static("keep-alive"),
    HeaderName::from_static("proxy-connection"),
    header::PROXY_AUTHENTICATE,
    header::PROXY_AUTHORIZATION,
    header::TE,
    header::TRAILER,
    header::TRANSFER_ENCODING,
];

/// Removes hop-by-hop headers, including those listed in `Connection`, and `Upgrade`.
pub fn strip_hop_by_hop(headers: &mut HeaderMap) {
    let named: Vec<HeaderName> = headers
        .get_all(header::CONNECTION)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .filter_map(|name| HeaderName::from_bytes(name.trim().as_bytes()).ok())
        .collect();
    for name in named.iter().chain(HOP_BY_HOP.iter()) {
        headers.remove(name);
    }
    headers.remove(header::UPGRADE);
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hop_by_hop_headers_and_those_connection_names_are_removed() {
        let mut headers = HeaderMap::new();
        for (name, value) in [
            ("connection", "close, x-private"),
            ("keep-alive", "timeout=5"),
            ("proxy-connection", "keep-alive"),
            ("proxy-authenticate", "Basic"),
            ("proxy-authorization", "Basic abc"),
            ("te", "trailers"),
            ("trailer", "x"),
            ("transfer-encoding", "chunked"),
            ("upgrade", "h2c"),
            ("x-private", "1"),
            ("content-type", "image/png"),
            ("etag", "\"abc\""),
        ] {
            headers.append(
                HeaderName::from_static(name),
                HeaderValue::from_static(value),
            );
        }
        strip_hop_by_hop(&mut headers);
        let left: Vec<&str> = headers.keys().map(HeaderName::as_str).collect();
        assert_eq!(left, ["content-type", "etag"]);
    }
}
