//! How long caches may keep an answer that carries URLs the gateway signed.
//!
//! The rule: never add freshness the site did not give, and cap what it gave so that a cached
//! copy's URLs still have `min_validity` left when it is served. Every freshness header is
//! capped (`Cache-Control`, `CDN-Cache-Control`, `Surrogate-Control`, `Expires`), directives
//! that let a cache serve past that (`immutable`, `stale-*`) go, and so do validators: a
//! revalidated copy would keep URLs that have expired.

use std::time::{Duration, UNIX_EPOCH};

use http::StatusCode;
use http::header::{self, HeaderMap, HeaderName, HeaderValue};

/// The targeted `Cache-Control` variants CDNs read instead of `Cache-Control` (RFC 9213, and
/// the older Edge Architecture one).
const TARGETED: [HeaderName; 2] = [
    HeaderName::from_static("cdn-cache-control"),
    HeaderName::from_static("surrogate-control"),
];

/// Caps the freshness of an answer with `status` and `headers` whose signed URLs leave a cache
/// `limit` seconds from `now` to use it (see the module documentation).
pub fn cap_freshness(headers: &mut HeaderMap, status: StatusCode, limit: u64, now: u64) {
    headers.remove(header::ETAG);
    headers.remove(header::LAST_MODIFIED);
    let sets_cookie = headers.contains_key(header::SET_COOKIE);
    match joined(headers, &header::CACHE_CONTROL) {
        Some(given) => {
            let mut capped = cap_directives(&given, limit);
            // A cookie-setting answer is one user's: a shared cache must not hand it on.
            if sets_cookie && !has_directive(&capped, &["private", "no-store"]) {
                capped.insert_str(0, "private, ");
            }
            set(headers, header::CACHE_CONTROL, &capped);
        }
        // Browsers keep a permanent redirect with no lifetime for ever: give it the cap.
        None if status == StatusCode::MOVED_PERMANENTLY
            || status == StatusCode::PERMANENT_REDIRECT =>
        {
            let lifetime = if sets_cookie {
                "private, max-age="
            } else {
                "max-age="
            };
            set(
                headers,
                header::CACHE_CONTROL,
                &format!("{lifetime}{limit}"),
            );
        }
        None => {}
    }
    for name in &TARGETED {
        if let Some(given) = joined(headers, name) {
            let capped = cap_directives(&given, limit);
            set(headers, name.clone(), &capped);
        }
    }
    if headers.contains_key(header::EXPIRES) {
        let latest = UNIX_EPOCH + Duration::from_secs(now.saturating_add(limit));
        let given = headers
            .get(header::EXPIRES)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| httpdate::parse_http_date(v).ok());
        // An unreadable date already means "expired" (RFC 9111 section 5.3): keep it so.
        if given.is_some_and(|given| given > latest) {
            set(headers, header::EXPIRES, &httpdate::fmt_http_date(latest));
        }
    }
}

/// Every value of `name` as one comma-separated list, if there is any.
fn joined(headers: &HeaderMap, name: &HeaderName) -> Option<String> {
    let values: Vec<&str> = headers
        .get_all(name)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .collect();
    (!values.is_empty() || headers.contains_key(name)).then(|| values.join(", "))
}

fn set(headers: &mut HeaderMap, name: HeaderName, value: &str) {
    match HeaderValue::try_from(value) {
        Ok(value) => {
            headers.insert(name, value);
        }
        // Only reachable with bytes the site sent that are not text: store nothing then.
        Err(_) => {
            headers.insert(name, HeaderValue::from_static("no-store"));
        }
    }
}

fn has_directive(list: &str, names: &[&str]) -> bool {
    list.split(',')
        .map(|d| d.split('=').next().unwrap_or_default().trim())
        .any(|d| names.iter().any(|n| d.eq_ignore_ascii_case(n)))
}

/// The site's directives with every lifetime capped to `limit` seconds and nothing that would
/// let a cache serve the answer stale. `public` without a lifetime gets one: a cache would
/// otherwise pick its own.
pub fn cap_directives(given: &str, limit: u64) -> String {
    let mut directives: Vec<String> = Vec::new();
    let mut max_age = None;
    let mut s_maxage = None;
    let mut public = false;
    for directive in given.split(',') {
        let directive = directive.trim();
        let name = directive
            .split('=')
            .next()
            .unwrap_or_default()
            .trim()
            .to_ascii_lowercase();
        // An unreadable lifetime counts as 0, as RFC 9111 section 1.2.2 asks of caches.
        let seconds = || {
            directive
                .split_once('=')
                .and_then(|(_, v)| v.trim().trim_matches('"').parse::<u64>().ok())
                .unwrap_or(0)
        };
        match name.as_str() {
            "" => {}
            "no-store" => return "no-store".to_owned(),
            "max-age" => max_age = Some(seconds()),
            "s-maxage" => s_maxage = Some(seconds()),
            "immutable" | "stale-while-revalidate" | "stale-if-error" => {}
            "public" => {
                public = true;
                directives.push(directive.to_owned());
            }
            _ => directives.push(directive.to_owned()),
        }
    }
    if max_age.is_none() && public {
        max_age = Some(limit);
    }
    if let Some(m) = max_age {
        directives.push(format!("max-age={}", m.min(limit)));
    }
    if let Some(s) = s_maxage {
        directives.push(format!("s-maxage={}", s.min(limit)));
    }
    directives.join(", ")
}

#[cfg(test)]
mod tests {
    use super::*;

    const NOW: u64 = 1_800_000_000;

    #[test]
    fn lifetimes_are_capped_and_never_added() {
        assert_eq!(cap_directives("", 3600), "");
        assert_eq!(
            cap_directives("public, max-age=86400, immutable", 3600),
            "public, max-age=3600"
        );
        assert_eq!(cap_directives("public", 3600), "public, max-age=3600");
        assert_eq!(
            cap_directives("private, max-age=60", 3600),
            "private, max-age=60"
        );
        assert_eq!(
            cap_directives("s-maxage=99999, stale-while-revalidate=30", 100),
            "s-maxage=100"
        );
        assert_eq!(cap_directives("no-store", 100), "no-store");
        assert_eq!(cap_directives("no-cache", 100), "no-cache");
        assert_eq!(cap_directives("max-age=banana", 100), "max-age=0");
    }

    fn headers(pairs: &[(&'static str, &'static str)]) -> HeaderMap {
        let mut map = HeaderMap::new();
        for (name, value) in pairs {
            map.append(*name, HeaderValue::from_static(value));
        }
        map
    }

    #[test]
    fn every_freshness_header_is_capped_and_validators_go() {
        let mut map = headers(&[
            ("cache-control", "public, max-age=31536000"),
            ("cache-control", "immutable"),
            ("cdn-cache-control", "max-age=86400"),
            ("surrogate-control", "max-age=86400, stale-if-error=600"),
            ("expires", "Thu, 01 Jan 2099 00:00:00 GMT"),
            ("etag", "\"v1\""),
            ("last-modified", "Thu, 01 Jan 2020 00:00:00 GMT"),
        ]);
        cap_freshness(&mut map, StatusCode::OK, 600, NOW);
        assert_eq!(map["cache-control"], "public, max-age=600");
        assert_eq!(map["cdn-cache-control"], "max-age=600");
        assert_eq!(map["surrogate-control"], "max-age=600");
        let expires =
            httpdate::parse_http_date(map["expires"].to_str().expect("ascii")).expect("a date");
        assert_eq!(expires, UNIX_EPOCH + Duration::from_secs(NOW + 600));
        assert!(map.get("etag").is_none() && map.get("last-modified").is_none());
    }

    #[test]
    fn no_freshness_is_added_and_cookies_stay_private() {
        let mut map = headers(&[("content-type", "text/html")]);
        cap_freshness(&mut map, StatusCode::OK, 600, NOW);
        assert!(map.get("cache-control").is_none(), "{map:?}");
        let mut map = headers(&[("set-cookie", "s=1"), ("cache-control", "max-age=60")]);
        cap_freshness(&mut map, StatusCode::OK, 600, NOW);
        assert_eq!(map["cache-control"], "private, max-age=60");
        let mut map = headers(&[("location", "https://cdn/x")]);
        cap_freshness(&mut map, StatusCode::MOVED_PERMANENTLY, 600, NOW);
        assert_eq!(map["cache-control"], "max-age=600");
        let mut map = headers(&[("location", "https://cdn/x")]);
        cap_freshness(&mut map, StatusCode::FOUND, 600, NOW);
        assert!(map.get("cache-control").is_none());
    }
}
