//! site mode: front an existing site, streaming both ways, and sign the bare CDN URLs in its
//! HTML and JSON answers and URL headers; rewritten answers leave compressed as the client
//! accepts.

use std::sync::Arc;

use http::header::{self, HeaderMap, HeaderValue};
use http::uri::PathAndQuery;
use http::{Method, Request, Response, StatusCode};
use http_body_util::{BodyExt, Limited};
use hyper::body::Incoming;

use super::public_origin::PublicOrigin;
use super::websocket::{self, Handshake, Tunnel};
use super::{Handled, RequestContext, request_body};
use crate::body::ResponseBody;
use crate::config::RewriteRules;
use crate::error::ProxyError;
use crate::rewrite::compress::{Coding, Encoder, EncoderBudget};
use crate::rewrite::decompress::{Decompressor, Encoding};
use crate::rewrite::{
    CdnUrlSigner, CompressBody, CssTransform, HtmlTransform, JsonTransform, Markup, RewriteMark,
    ScriptTransform, Transform, TransformBody, cap_freshness, rewrite_url_headers,
};
use crate::router::ActiveSite;
use crate::upstream::headers::{add_forwarding_headers, add_via, strip_hop_by_hop};

/// Forwards any method under the prefix to the site's origin, path and query unchanged, and
/// signs CDN URLs in what comes back.
pub async fn handle(
    site: &ActiveSite,
    request: Request<Incoming>,
    ctx: RequestContext,
) -> Result<Handled, ProxyError> {
    let (mut parts, body) = request.into_parts();
    let client = &site.client;
    let upstream = client.upstream();
    let limit = site.max_request_body;
    let announced = parts
        .headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    if announced.is_some_and(|length| length > limit) {
        return Err(ProxyError::BodyTooLarge);
    }
    // A chunked body is cut where it passes the limit; the upstream request then fails as 413.
    let body = Limited::new(body, usize::try_from(limit).unwrap_or(usize::MAX));
    let uri = upstream.uri(site_path(upstream.base_path(), parts.uri.path_and_query())?);

    // A WebSocket handshake keeps its `Upgrade`; every other upgrade loses it with the other
    // hop-by-hop headers.
    let handshake = match site.websocket_idle {
        Some(_) if websocket::is_handshake(&parts.method, parts.version, &parts.headers) => parts
            .extensions
            .remove::<hyper::upgrade::OnUpgrade>()
            .map(Handshake::Http1),
        Some(_) if websocket::is_h2_connect(&parts.method, parts.version, &parts.extensions) => {
            parts
                .extensions
                .remove::<hyper::upgrade::OnUpgrade>()
                .map(Handshake::H2)
        }
        _ => None,
    };
    let mut headers = parts.headers.clone();
    strip_hop_by_hop(&mut headers);
    join_cookies(&mut headers);
    if let Some(handshake) = &handshake {
        websocket::mark_upgrade(&mut headers);
        if let Handshake::H2(_) = handshake {
            websocket::as_http1_handshake(&mut headers)?;
        }
    }
    if !site.preserve_host || !headers.contains_key(header::HOST) {
        headers.insert(header::HOST, upstream.host_header().clone());
    }
    restrict_accept_encoding(&mut headers);
    if may_be_rewritten(&headers, site.urls.rules().javascript_limit.is_some()) {
        // A rewritten answer's bytes are not the site's: a byte range of the site's page would
        // not match it, and a 304 would keep a copy whose URLs expired.
        for name in [
            header::RANGE,
            header::IF_RANGE,
            header::IF_NONE_MATCH,
            header::IF_MODIFIED_SINCE,
        ] {
            headers.remove(name);
        }
    }
    add_forwarding_headers(&mut headers, &parts, &ctx);
    let public_origin = PublicOrigin::from_forwarded(&headers);

    // Read before an upstream connection is taken: a body that never comes holds none.
    let body = request_body::buffered(body, ctx.client_body_timeout).await?;
    let mut upstream_request = Request::new(body);
    *upstream_request.method_mut() = match handshake {
        Some(Handshake::H2(_)) => Method::GET,
        _ => parts.method.clone(),
    };
    *upstream_request.uri_mut() = uri;
    *upstream_request.headers_mut() = headers;

    let mut response = client.send(upstream_request, ctx.now).await?;
    if let Some(public_origin) = &public_origin {
        public_origin.restore(upstream, response.headers_mut());
    }
    if let (Some(handshake), Some(idle), StatusCode::SWITCHING_PROTOCOLS) =
        (handshake, site.websocket_idle, response.status())
    {
        let upstream = hyper::upgrade::on(&mut response);
        let (mut head, upstream_permit) = response.into_parts();
        let client = match handshake {
            Handshake::Http1(client) => {
                websocket::mark_upgrade(&mut head.headers);
                client
            }
            Handshake::H2(client) => {
                // RFC 8441 section 5: the stream's 200 is the handshake's success; the key was
                // ours, so its answer stays here.
                head.status = StatusCode::OK;
                head.headers.remove(header::SEC_WEBSOCKET_ACCEPT);
                client
            }
        };
        add_via(&mut head.headers);
        return Ok(Handled {
            response: Response::from_parts(head, crate::body::empty()),
            cache: None,
            tunnel: Some(Tunnel {
                client,
                upstream,
                upstream_permit,
                idle,
            }),
        });
    }
    if response.status() == StatusCode::SWITCHING_PROTOCOLS {
        // A switch nobody asked for (or to a protocol other than the one asked for): passing
        // it on would leave the client reading the site's new protocol as HTTP.
        return Err(ProxyError::UpstreamBroken(
            "the site switched protocols unasked".into(),
        ));
    }
    let target = parts.uri.path_and_query().map_or("/", PathAndQuery::as_str);
    let signer = site.urls.for_request(ctx.now, target);
    // The client's own list, not the one the site was asked with.
    let accepted = Coding::preferred(
        parts
            .headers
            .get_all(header::ACCEPT_ENCODING)
            .iter()
            .filter_map(|v| v.to_str().ok()),
    );
    let mut response = rewrite_response(
        response,
        &signer,
        &parts.method,
        accepted,
        site.urls.rules(),
        &site.encoders,
        ctx.now,
    );
    add_via(response.headers_mut());
    Ok(Handled {
        response,
        cache: None,
        tunnel: None,
    })
}

/// Joins the `cookie` fields an HTTP/2 client sends one per cookie into the one field an
/// HTTP/1.1 site expects (RFC 9113 section 8.2.3): a site keeps only one of several.
fn join_cookies(headers: &mut HeaderMap) {
    let header::Entry::Occupied(entry) = headers.entry(header::COOKIE) else {
        return;
    };
    if entry.iter().nth(1).is_none() {
        return;
    }
    let values: Vec<HeaderValue> = entry.remove_entry_mult().1.collect();
    let joined: Vec<&[u8]> = values.iter().map(HeaderValue::as_bytes).collect();
    // Header values joined with "; " are still a header value.
    if let Ok(joined) = HeaderValue::from_bytes(&joined.join(&b"; "[..])) {
        headers.insert(header::COOKIE, joined);
    }
}

/// The site's path for a request: the upstream's base path, then the request's path and query
/// unchanged.
fn site_path(base_path: &str, request: Option<&PathAndQuery>) -> Result<PathAndQuery, ProxyError> {
    match (base_path, request) {
        ("", Some(request)) => Ok(request.clone()),
        ("", None) => Ok(PathAndQuery::from_static("/")),
        (base, request) => {
            let request = request.map_or("/", PathAndQuery::as_str);
            PathAndQuery::try_from(format!("{base}{request}")).map_err(|_| ProxyError::BadTarget)
        }
    }
}

/// What a site answer's body is, as far as rewriting goes.
enum Kind {
    /// HTML, SVG, or an RSS/Atom feed.
    Markup {
        markup: Markup,
        charset: Option<String>,
    },
    Css,
    Json,
    /// JavaScript: rewritten only where the route opts in.
    Script,
    Other,
}

fn kind_of(headers: &HeaderMap) -> Kind {
    let Some(content_type) = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
    else {
        return Kind::Other;
    };
    let mut params = content_type.split(';');
    let mime = params
        .next()
        .unwrap_or_default()
        .trim()
        .to_ascii_lowercase();
    let charset = params
        .filter_map(|p| p.split_once('='))
        .find(|(k, _)| k.trim().eq_ignore_ascii_case("charset"))
        .map(|(_, v)| v.trim().trim_matches('"').to_owned());
    match mime.as_str() {
        "text/html" | "application/xhtml+xml" => Kind::Markup {
            markup: Markup::Html,
            charset,
        },
        "image/svg+xml"
        | "application/rss+xml"
        | "application/atom+xml"
        | "application/xml"
        | "text/xml" => Kind::Markup {
            markup: Markup::Xml,
            charset,
        },
        "text/css" => Kind::Css,
        "text/javascript" | "application/javascript" | "application/x-javascript" => Kind::Script,
        "application/json" => Kind::Json,
        json if json.ends_with("+json") => Kind::Json,
        _ => Kind::Other,
    }
}

/// Site answers whose declared identity length is under this are not compressed: the
/// encoding's framing would eat most of what it saves.
const MIN_COMPRESSED_LENGTH: u64 = 1024;

/// Signs URLs in the headers and, for HTML and JSON, in the body (decompressing it first, and
/// compressing it again in `accepted`, the client's best coding, if the route compresses).
fn rewrite_response(
    response: Response<ResponseBody>,
    signer: &Arc<CdnUrlSigner>,
    method: &Method,
    accepted: Option<Coding>,
    rules: &RewriteRules,
    encoders: &Arc<EncoderBudget>,
    now: u64,
) -> Response<ResponseBody> {
    let (mut parts, body) = response.into_parts();
    rewrite_url_headers(&mut parts.headers, signer);
    let cap = |parts: &mut http::response::Parts| {
        cap_freshness(&mut parts.headers, parts.status, signer.cache_limit(), now);
    };
    let kind = match kind_of(&parts.headers) {
        Kind::Script if rules.javascript_limit.is_none() => Kind::Other,
        kind => kind,
    };
    // A byte range of a page cannot be rewritten and keep its Content-Range true: it passes as
    // the site sent it (its URLs unsigned).
    if matches!(kind, Kind::Other) || parts.status == StatusCode::PARTIAL_CONTENT {
        if signer.signed_any() {
            cap(&mut parts);
        }
        return Response::from_parts(parts, body);
    }
    let encoding_header = parts
        .headers
        .get(header::CONTENT_ENCODING)
        .and_then(|v| v.to_str().ok());
    let Some(encoding) = Encoding::from_header(encoding_header) else {
        tracing::warn!(encoding = ?encoding_header, "site answer in an encoding signgate cannot read: passed on unsigned");
        if signer.signed_any() {
            cap(&mut parts);
        }
        return Response::from_parts(parts, body);
    };

    // The body is signed as it streams, after the headers are sent: cap as if it carries URLs.
    cap(&mut parts);
    let coding = if rules.compress {
        // Whether it leaves compressed, and how, depends on the client's Accept-Encoding.
        vary_on_accept_encoding(&mut parts.headers);
        accepted.filter(|_| !is_tiny(&parts.headers, encoding))
    } else {
        None
    };
    parts.headers.remove(header::CONTENT_LENGTH);
    parts.headers.remove(header::CONTENT_ENCODING);

    let bodiless =
        parts.status == StatusCode::NO_CONTENT || parts.status == StatusCode::NOT_MODIFIED;
    if *method == Method::HEAD || bodiless {
        // A HEAD answer says how the GET's body would come.
        if !bodiless && let Some(coding) = coding {
            parts.headers.insert(
                header::CONTENT_ENCODING,
                HeaderValue::from_static(coding.as_str()),
            );
        }
        return Response::from_parts(parts, body);
    }
    let is_script = matches!(kind, Kind::Script);
    let transform: Box<dyn Transform> = match kind {
        Kind::Markup { markup, charset } => {
            match HtmlTransform::for_markup(Arc::clone(signer), charset.as_deref(), markup) {
                Ok(html) => Box::new(html),
                Err(e) => {
                    tracing::error!(error = %e, "cannot build the HTML rewriter");
                    return Response::from_parts(parts, body);
                }
            }
        }
        Kind::Css => Box::new(CssTransform::new(Arc::clone(signer))),
        Kind::Json => Box::new(JsonTransform::new(Arc::clone(signer))),
        Kind::Script => Box::new(ScriptTransform::new(Arc::clone(signer))),
        Kind::Other => return Response::from_parts(parts, body),
    };
    let limit = match rules.javascript_limit {
        Some(script_limit) if is_script => script_limit.min(rules.rewrite_limit),
        _ => rules.rewrite_limit,
    };
    let mark = RewriteMark::default();
    let body = TransformBody::decoding(body, Decompressor::new(encoding), transform, limit)
        .on_overflow(rules.on_overflow, mark.clone())
        .boxed_unsync();
    parts.extensions.insert(mark);
    let Some(coding) = coding else {
        return Response::from_parts(parts, body);
    };
    let Some(share) = encoders.take(coding) else {
        tracing::debug!(
            coding = coding.as_str(),
            "the worker's encoder budget is spent: the answer leaves as identity"
        );
        return Response::from_parts(parts, body);
    };
    match Encoder::new(coding) {
        Ok(encoder) => {
            parts.headers.insert(
                header::CONTENT_ENCODING,
                HeaderValue::from_static(coding.as_str()),
            );
            Response::from_parts(
                parts,
                CompressBody::new(body, encoder, share).boxed_unsync(),
            )
        }
        Err(e) => {
            tracing::warn!(
                error = %e,
                coding = coding.as_str(),
                "cannot start the encoder: the answer leaves as identity"
            );
            Response::from_parts(parts, body)
        }
    }
}

/// Whether the site's answer declared an identity body under [`MIN_COMPRESSED_LENGTH`].
fn is_tiny(headers: &HeaderMap, encoding: Encoding) -> bool {
    encoding == Encoding::Identity
        && headers
            .get(header::CONTENT_LENGTH)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.trim().parse::<u64>().ok())
            .is_some_and(|length| length < MIN_COMPRESSED_LENGTH)
}

/// Adds `Accept-Encoding` to the answer's `Vary`, unless it is listed already (or `*` is).
fn vary_on_accept_encoding(headers: &mut HeaderMap) {
    let values: Vec<&[u8]> = headers
        .get_all(header::VARY)
        .iter()
        .map(HeaderValue::as_bytes)
        .filter(|v| !v.trim_ascii().is_empty())
        .collect();
    let listed = values
        .iter()
        .flat_map(|v| v.split(|&b| b == b','))
        .map(<[u8]>::trim_ascii)
        .any(|name| name == b"*" || name.eq_ignore_ascii_case(b"accept-encoding"));
    if listed {
        return;
    }
    // Header values joined with ", " are still a header value.
    let joined = [&values[..], &[&b"Accept-Encoding"[..]]]
        .concat()
        .join(&b", "[..]);
    if let Ok(value) = HeaderValue::from_bytes(&joined) {
        headers.insert(header::VARY, value);
    }
}

/// Asks the site only for encodings signgate can undo, so every HTML answer can be rewritten.
fn restrict_accept_encoding(headers: &mut HeaderMap) {
    let Some(accepted) = headers
        .get(header::ACCEPT_ENCODING)
        .and_then(|v| v.to_str().ok())
    else {
        return;
    };
    let kept: Vec<&str> = accepted
        .split(',')
        .map(str::trim)
        .filter(|coding| {
            let name = coding.split(';').next().unwrap_or_default().trim();
            ["gzip", "x-gzip", "deflate", "br", "zstd", "identity"]
                .iter()
                .any(|ok| name.eq_ignore_ascii_case(ok))
        })
        .collect();
    match HeaderValue::try_from(kept.join(", ")) {
        Ok(value) if !kept.is_empty() => {
            headers.insert(header::ACCEPT_ENCODING, value);
        }
        _ => {
            headers.remove(header::ACCEPT_ENCODING);
        }
    }
}

/// Whether the answer to a request with `headers` may be one signgate rewrites (a page, a
/// stylesheet, JSON, a feed, and a script where `scripts` are rewritten): anything but a
/// request that says it is for an image, a font, media or (unless `scripts`) a script. Those
/// keep `Range` and revalidation; everything else loses them.
fn may_be_rewritten(headers: &HeaderMap, scripts: bool) -> bool {
    const MEDIA_DESTINATIONS: [&str; 5] = ["image", "audio", "video", "track", "font"];
    const SCRIPT_DESTINATIONS: [&str; 6] = [
        "script",
        "worker",
        "sharedworker",
        "serviceworker",
        "audioworklet",
        "paintworklet",
    ];
    if let Some(destination) = headers.get("sec-fetch-dest").and_then(|v| v.to_str().ok()) {
        return !(MEDIA_DESTINATIONS.contains(&destination)
            || !scripts && SCRIPT_DESTINATIONS.contains(&destination));
    }
    let accept = headers
        .get(header::ACCEPT)
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default();
    // Only a request whose every accepted type is an asset type is sure to get no page.
    let mut types = accept
        .split(',')
        .map(|t| t.split(';').next().unwrap_or_default().trim())
        .filter(|t| !t.is_empty())
        .peekable();
    types.peek().is_none()
        || !types.all(|t| {
            let t = t.to_ascii_lowercase();
            ["image/", "audio/", "video/", "font/"]
                .iter()
                .any(|prefix| t.starts_with(prefix))
                || !scripts && t.ends_with("/javascript")
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(pairs: &[(&'static str, &'static str)]) -> HeaderMap {
        let mut map = HeaderMap::new();
        for (name, value) in pairs {
            map.append(*name, HeaderValue::from_static(value));
        }
        map
    }

    #[test]
    fn the_content_type_says_what_is_rewritten_and_in_which_charset() {
        let kind = |value: &'static str| kind_of(&headers(&[("content-type", value)]));
        let html = Markup::Html;
        assert!(
            matches!(kind("text/html"), Kind::Markup { markup, charset: None } if markup == html)
        );
        assert!(matches!(
            kind("Text/HTML; charset=\"ISO-8859-1\""),
            Kind::Markup { charset: Some(c), .. } if c == "ISO-8859-1"
        ));
        assert!(
            matches!(kind("application/xhtml+xml"), Kind::Markup { markup, .. } if markup == html)
        );
        for xml in [
            "image/svg+xml",
            "application/rss+xml",
            "application/atom+xml",
            "text/xml",
        ] {
            assert!(
                matches!(
                    kind(xml),
                    Kind::Markup {
                        markup: Markup::Xml,
                        ..
                    }
                ),
                "{xml}"
            );
        }
        assert!(matches!(kind("text/css; charset=utf-8"), Kind::Css));
        assert!(matches!(kind("application/manifest+json"), Kind::Json));
        assert!(matches!(kind("application/javascript"), Kind::Script));
        assert!(matches!(
            kind("text/javascript; charset=utf-8"),
            Kind::Script
        ));
        assert!(matches!(
            kind("application/json; charset=utf-8"),
            Kind::Json
        ));
        assert!(matches!(kind("application/ld+json"), Kind::Json));
        assert!(matches!(kind("image/png"), Kind::Other));
        assert!(matches!(kind("text/htmlx"), Kind::Other));
        assert!(matches!(kind_of(&HeaderMap::new()), Kind::Other));
    }

    #[test]
    fn only_encodings_signgate_can_undo_are_asked_for() {
        let mut map = headers(&[(
            "accept-encoding",
            "zstd, br;q=0.9, gzip, compress, identity",
        )]);
        restrict_accept_encoding(&mut map);
        assert_eq!(map["accept-encoding"], "zstd, br;q=0.9, gzip, identity");
        let mut map = headers(&[("accept-encoding", "compress, x-bzip2")]);
        restrict_accept_encoding(&mut map);
        assert!(map.get("accept-encoding").is_none());
        let mut map = HeaderMap::new();
        restrict_accept_encoding(&mut map);
        assert!(map.is_empty());
    }

    #[test]
    fn vary_gains_accept_encoding_once() {
        let vary = |pairs: &[(&'static str, &'static str)]| {
            let mut map = headers(pairs);
            vary_on_accept_encoding(&mut map);
            let values: Vec<_> = map.get_all("vary").iter().cloned().collect();
            values
        };
        assert_eq!(vary(&[]), ["Accept-Encoding"]);
        assert_eq!(vary(&[("vary", "Cookie")]), ["Cookie, Accept-Encoding"]);
        assert_eq!(
            vary(&[("vary", "Cookie"), ("vary", "Origin")]),
            ["Cookie, Origin, Accept-Encoding"]
        );
        assert_eq!(vary(&[("vary", "accept-encoding")]), ["accept-encoding"]);
        assert_eq!(
            vary(&[("vary", "Origin"), ("vary", "Cookie,Accept-Encoding")]),
            ["Origin", "Cookie,Accept-Encoding"]
        );
        assert_eq!(vary(&[("vary", "*")]), ["*"]);
    }

    #[test]
    fn only_identity_answers_declared_under_1_kib_are_too_small_to_compress() {
        let small = headers(&[("content-length", "1023")]);
        assert!(is_tiny(&small, Encoding::Identity));
        assert!(!is_tiny(&small, Encoding::Gzip));
        assert!(!is_tiny(
            &headers(&[("content-length", "1024")]),
            Encoding::Identity
        ));
        assert!(!is_tiny(&HeaderMap::new(), Encoding::Identity));
    }

    #[test]
    fn pages_api_calls_and_unknowns_may_be_rewritten_assets_are_not() {
        for rewritable in [
            &[("accept", "text/html,*/*")][..],
            &[("accept", "application/json")],
            &[("accept", "*/*")],
            &[("accept", "image/png, */*;q=0.1")],
            &[],
            &[("sec-fetch-dest", "document")],
            &[("sec-fetch-dest", "empty"), ("accept", "image/png")],
            // Stylesheets are rewritten too.
            &[
                ("accept", "text/css,*/*;q=0.1"),
                ("sec-fetch-dest", "style"),
            ],
            &[("accept", "text/css")],
        ] {
            assert!(
                may_be_rewritten(&headers(rewritable), false),
                "{rewritable:?}"
            );
        }
        for asset in [
            &[("accept", "image/avif,image/*")][..],
            &[("sec-fetch-dest", "video"), ("accept", "*/*")],
            &[("accept", "application/javascript")],
        ] {
            assert!(!may_be_rewritten(&headers(asset), false), "{asset:?}");
        }
        // Where scripts are rewritten, a script request loses its validators too.
        for script in [
            &[("sec-fetch-dest", "script")][..],
            &[("accept", "application/javascript")],
        ] {
            assert!(!may_be_rewritten(&headers(script), false), "{script:?}");
            assert!(may_be_rewritten(&headers(script), true), "{script:?}");
        }
        assert!(!may_be_rewritten(
            &headers(&[("sec-fetch-dest", "image")]),
            true
        ));
    }

    #[test]
    fn the_site_path_keeps_the_request_and_adds_the_base() {
        let request = PathAndQuery::from_static("/a/b?c=d%20e");
        assert_eq!(
            site_path("", Some(&request)).expect("valid"),
            "/a/b?c=d%20e"
        );
        assert_eq!(
            site_path("/base", Some(&request)).expect("valid"),
            "/base/a/b?c=d%20e"
        );
        assert_eq!(site_path("", None).expect("valid"), "/");
        assert_eq!(site_path("/base", None).expect("valid"), "/base/");
    }
}
