//! CORS for the routes a page on another origin may read: the allowed `Origin` echoed back,
//! never a wildcard for credentials, and preflights answered.

use http::header::{self, HeaderMap, HeaderValue};
use http::{Response, StatusCode};

use crate::body::{ResponseBody, empty};

/// The `Access-Control-Allow-Origin` value for a request with `headers`: its `Origin` when listed
/// in `allowed` (or when `"*"` is), else none, and the browser keeps the page's own policy.
pub fn allowed_origin(allowed: &[String], headers: &HeaderMap) -> Option<HeaderValue> {
    let origin = headers.get(header::ORIGIN)?;
    let text = origin.to_str().ok()?;
    allowed
        .iter()
        .any(|a| a == "*" || a.trim_end_matches('/').eq_ignore_ascii_case(text))
        .then(|| origin.clone())
}

/// Sets `Access-Control-Allow-Origin` for an allowed origin, and `Vary: Origin` whenever the
/// route has a list at all, since the answer then depends on the request's `Origin`.
pub fn add_cors_headers(allowed: &[String], request: &HeaderMap, response: &mut HeaderMap) {
    if allowed.is_empty() {
        return;
    }
    if let Some(origin) = allowed_origin(allowed, request) {
        response.insert(header::ACCESS_CONTROL_ALLOW_ORIGIN, origin);
    }
    response.append(header::VARY, HeaderValue::from_static("origin"));
}

/// The answer to a CORS preflight for `methods`, cached by the browser for ten minutes.
pub fn preflight(
    allowed: &[String],
    request: &HeaderMap,
    methods: &'static str,
) -> Response<ResponseBody> {
    let mut response = Response::new(empty());
    *response.status_mut() = StatusCode::NO_CONTENT;
    let headers = response.headers_mut();
    if let Some(origin) = allowed_origin(allowed, request) {
        headers.insert(header::ACCESS_CONTROL_ALLOW_ORIGIN, origin);
        headers.insert(
            header::ACCESS_CONTROL_ALLOW_METHODS,
            HeaderValue::from_static(methods),
        );
        headers.insert(
            header::ACCESS_CONTROL_MAX_AGE,
            HeaderValue::from_static("600"),
        );
    }
    headers.insert(header::VARY, HeaderValue::from_static("origin"));
    response
}
