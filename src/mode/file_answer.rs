//! What a file fetched through a proxy route may carry back to the client.
//!
//! The files are uploads, written by whoever the upload route lets in, and they are served on
//! the site's own origin. So none may run as the site: every answer gets `nosniff` and a
//! sandboxing `Content-Security-Policy`, only the route's `inline_types` are shown in the
//! browser (everything else, SVG and HTML included, is a download), and no header that sets
//! policy for the whole origin passes from the CDN. The CDN's error pages and `Location`s never
//! reach the client as they are: either could echo the credentials the gateway signed.

use bytes::Bytes;
use http::header::{self, HeaderMap, HeaderName, HeaderValue};
use http::{Method, Response};

use super::cors::add_cors_headers;
use crate::body::{ResponseBody, empty, full};
use crate::config::FileServing;
use crate::filelink::strip_url_credentials;
use crate::upstream::headers::names_where;

/// Sandboxes any document the browser might still render: no scripts, no plugins, no requests.
const FILE_CSP: &str = "default-src 'none'; style-src 'unsafe-inline'; sandbox";

/// Headers from the CDN that would set policy for the site's whole origin, or describe the
/// CDN's own cross-origin rules: never passed on. `Access-Control-*` is dropped as a family.
const ORIGIN_WIDE: [HeaderName; 6] = [
    header::SET_COOKIE,
    header::STRICT_TRANSPORT_SECURITY,
    HeaderName::from_static("alt-svc"),
    HeaderName::from_static("clear-site-data"),
    header::CONTENT_SECURITY_POLICY,
    header::CONTENT_SECURITY_POLICY_REPORT_ONLY,
];

/// Makes the CDN's answer safe to serve on the site's origin: see the module documentation.
/// `request` is the client's request headers (for CORS), `method` its method.
pub fn serve_file_answer(
    response: Response<ResponseBody>,
    serving: &FileServing,
    method: &Method,
    request: &HeaderMap,
) -> Response<ResponseBody> {
    let (mut parts, body) = response.into_parts();
    if parts.status.is_client_error() || parts.status.is_server_error() {
        // The CDN's own error text may quote the URL it was asked for, credentials and all.
        drop(body);
        let mut headers = own_error_headers(&parts.headers);
        let message = format!(
            "upstream answered {} {}\n",
            parts.status.as_u16(),
            parts.status.canonical_reason().unwrap_or_default()
        );
        headers.insert(header::CONTENT_LENGTH, HeaderValue::from(message.len()));
        parts.headers = headers;
        let body = if *method == Method::HEAD {
            empty()
        } else {
            full(Bytes::from(message))
        };
        add_file_headers(&mut parts.headers, serving, request);
        return Response::from_parts(parts, body);
    }

    let headers = &mut parts.headers;
    let origin_wide = names_where(headers, |name| {
        ORIGIN_WIDE.contains(name) || name.as_str().starts_with("access-control-")
    });
    for name in &origin_wide {
        headers.remove(name);
    }
    for name in [header::LOCATION, header::CONTENT_LOCATION] {
        let stripped = headers
            .get(&name)
            .and_then(|v| v.to_str().ok())
            .and_then(strip_url_credentials)
            .and_then(|url| HeaderValue::try_from(url).ok());
        if let Some(value) = stripped {
            headers.insert(name, value);
        }
    }
    // A 304 refreshes the stored answer's headers: it carries no type to judge by.
    if parts.status != http::StatusCode::NOT_MODIFIED {
        set_disposition(headers, &serving.inline_types);
    }
    add_file_headers(headers, serving, request);
    Response::from_parts(parts, body)
}

/// The headers of the gateway's own answer for a CDN error: only `Retry-After` is kept.
fn own_error_headers(cdn: &HeaderMap) -> HeaderMap {
    let mut headers = HeaderMap::with_capacity(6);
    headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    if let Some(retry) = cdn.get(header::RETRY_AFTER) {
        headers.insert(header::RETRY_AFTER, retry.clone());
    }
    headers
}

/// `nosniff`, the sandboxing policy, and CORS when the route allows the request's origin.
fn add_file_headers(headers: &mut HeaderMap, serving: &FileServing, request: &HeaderMap) {
    headers.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    headers.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(FILE_CSP),
    );
    add_cors_headers(&serving.cors_origins, request, headers);
}

/// Leaves an inline type as the CDN sent it; makes anything else a download, keeping the CDN's
/// file name if it gave one.
fn set_disposition(headers: &mut HeaderMap, inline_types: &[String]) {
    let media_type = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .map(|v| {
            v.split(';')
                .next()
                .unwrap_or_default()
                .trim()
                .to_ascii_lowercase()
        });
    if media_type.is_some_and(|t| inline_types.contains(&t)) {
        return;
    }
    let file_name = headers
        .get(header::CONTENT_DISPOSITION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| {
            v.split(';')
                .map(str::trim)
                .find(|p| p.to_ascii_lowercase().starts_with("filename"))
                .map(str::to_owned)
        });
    let value = match file_name {
        Some(name) => HeaderValue::try_from(format!("attachment; {name}")).ok(),
        None => None,
    };
    headers.insert(
        header::CONTENT_DISPOSITION,
        value.unwrap_or_else(|| HeaderValue::from_static("attachment")),
    );
}

#[cfg(test)]
mod tests {
    use super::*;

    fn answer(status: u16, pairs: &[(&'static str, &'static str)]) -> Response<ResponseBody> {
        let mut response = Response::new(full(Bytes::from_static(b"cdn body policy=P")));
        *response.status_mut() = http::StatusCode::from_u16(status).expect("status");
        for (name, value) in pairs {
            response
                .headers_mut()
                .append(*name, HeaderValue::from_static(value));
        }
        response
    }

    fn serve(status: u16, pairs: &[(&'static str, &'static str)]) -> HeaderMap {
        serve_file_answer(
            answer(status, pairs),
            &FileServing::default(),
            &Method::GET,
            &HeaderMap::new(),
        )
        .headers()
        .clone()
    }

    #[test]
    fn images_are_inline_and_everything_else_downloads() {
        let png = serve(200, &[("content-type", "image/png")]);
        assert!(png.get(header::CONTENT_DISPOSITION).is_none());
        assert_eq!(png[header::X_CONTENT_TYPE_OPTIONS], "nosniff");
        assert_eq!(png[header::CONTENT_SECURITY_POLICY], FILE_CSP);
        for kind in [
            "text/html",
            "image/svg+xml",
            "application/pdf",
            "IMAGE/SVG+XML",
        ] {
            let headers = serve(200, &[("content-type", kind)]);
            assert_eq!(headers[header::CONTENT_DISPOSITION], "attachment", "{kind}");
        }
        let named = serve(
            200,
            &[
                ("content-type", "text/html"),
                ("content-disposition", "inline; filename=\"a.html\""),
            ],
        );
        assert_eq!(
            named[header::CONTENT_DISPOSITION],
            "attachment; filename=\"a.html\""
        );
        assert_eq!(serve(200, &[])[header::CONTENT_DISPOSITION], "attachment");
    }

    #[test]
    fn origin_wide_and_cors_headers_never_pass() {
        let headers = serve(
            200,
            &[
                ("content-type", "image/png"),
                ("set-cookie", "a=b"),
                ("strict-transport-security", "max-age=1"),
                ("alt-svc", "h3=\":443\""),
                ("clear-site-data", "\"*\""),
                ("access-control-allow-origin", "*"),
                ("access-control-allow-credentials", "true"),
                ("location", "https://cdn.x/H?policy=P&signature=S"),
            ],
        );
        let names: Vec<&str> = headers.keys().map(HeaderName::as_str).collect();
        assert_eq!(
            names,
            [
                "content-type",
                "location",
                "x-content-type-options",
                "content-security-policy"
            ]
        );
        assert_eq!(headers[header::LOCATION], "https://cdn.x/H");
    }

    #[test]
    fn cdn_errors_are_replaced_with_the_gateways_text() {
        let response = serve_file_answer(
            answer(403, &[("content-type", "text/html"), ("retry-after", "5")]),
            &FileServing::default(),
            &Method::GET,
            &HeaderMap::new(),
        );
        assert_eq!(response.status(), 403);
        assert_eq!(response.headers()[header::RETRY_AFTER], "5");
        assert_eq!(
            response.headers()[header::CONTENT_TYPE],
            "text/plain; charset=utf-8"
        );
    }
}
