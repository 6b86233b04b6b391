//! A site behind signgate builds absolute URLs from what it is told (`Host`) or from what it
//! knows of itself (its own address). The second kind would send clients to an internal
//! address, so a `Location`, `Content-Location` or `Refresh` that points at the upstream is
//! turned back into the client's origin, as nginx's `proxy_redirect default` does.

use http::header::{self, HeaderMap, HeaderName, HeaderValue};

use crate::config::Upstream;
use crate::host::is_valid_host;

/// The `scheme://host` the client used, as the forwarding headers sent upstream say (from a
/// trusted proxy, its own; from anyone else, what signgate saw).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PublicOrigin(String);

impl PublicOrigin {
    /// Reads the first `X-Forwarded-Proto` and `X-Forwarded-Host` elements of the headers going
    /// upstream; `None` without a host, or with anything but http(s) and a valid host.
    pub fn from_forwarded(headers: &HeaderMap) -> Option<Self> {
        let first = |name: &str| {
            headers
                .get(name)
                .and_then(|v| v.to_str().ok())
                .and_then(|v| v.split(',').next())
                .map(str::trim)
        };
        let proto = first("x-forwarded-proto")?.to_ascii_lowercase();
        let host = first("x-forwarded-host")?;
        if !(proto == "http" || proto == "https") || !is_valid_host(host.as_bytes()) {
            return None;
        }
        Some(Self(format!("{proto}://{host}")))
    }

    /// Rewrites the URL headers of a site answer that point at `upstream` to this origin.
    pub fn restore(&self, upstream: &Upstream, headers: &mut HeaderMap) {
        for name in [header::LOCATION, header::CONTENT_LOCATION] {
            self.restore_each(headers, &name, |value| self.url(upstream, value));
        }
        self.restore_each(headers, &header::REFRESH, |value| {
            let at = value.to_ascii_lowercase().find("url=")? + "url=".len();
            let (head, url) = value.split_at(at);
            let quote = url.chars().next().filter(|c| *c == '\'' || *c == '"');
            let inner = quote.map_or(url, |q| url[1..].trim_end_matches(q));
            let restored = self.url(upstream, inner)?;
            Some(match quote {
                Some(q) => format!("{head}{q}{restored}{q}"),
                None => format!("{head}{restored}"),
            })
        });
    }

    fn restore_each(
        &self,
        headers: &mut HeaderMap,
        name: &HeaderName,
        restore: impl Fn(&str) -> Option<String>,
    ) {
        if let header::Entry::Occupied(mut entry) = headers.entry(name) {
            for value in entry.iter_mut() {
                let restored = value.to_str().ok().and_then(&restore);
                if let Some(restored) = restored.and_then(|r| HeaderValue::try_from(r).ok()) {
                    *value = restored;
                }
            }
        }
    }

    /// `url` on this origin if it is on the upstream (under its base path), else `None`.
    fn url(&self, upstream: &Upstream, url: &str) -> Option<String> {
        let base = upstream.base();
        let rest = url
            .get(..base.len())
            .filter(|start| start.eq_ignore_ascii_case(base))
            .map(|_| &url[base.len()..])?;
        match rest.chars().next() {
            None => Some(format!("{}/", self.0)),
            Some('/') => Some(format!("{}{rest}", self.0)),
            Some('?' | '#') => Some(format!("{}/{rest}", self.0)),
            Some(_) => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn origin() -> PublicOrigin {
        let mut headers = HeaderMap::new();
        headers.insert("x-forwarded-proto", HeaderValue::from_static("https"));
        headers.insert("x-forwarded-host", HeaderValue::from_static("shop.example"));
        PublicOrigin::from_forwarded(&headers).expect("an origin")
    }

    fn restored(upstream: &str, name: HeaderName, value: &str) -> String {
        let upstream = Upstream::parse(upstream).expect("upstream");
        let mut headers = HeaderMap::new();
        headers.insert(name.clone(), HeaderValue::from_str(value).expect("value"));
        origin().restore(&upstream, &mut headers);
        headers[name].to_str().expect("ascii").to_owned()
    }

    #[test]
    fn urls_on_the_upstream_come_back_on_the_public_origin() {
        let up = "http://127.0.0.1:3000";
        let location = header::LOCATION;
        assert_eq!(
            restored(up, location.clone(), "http://127.0.0.1:3000/login?next=/a"),
            "https://shop.example/login?next=/a"
        );
        assert_eq!(
            restored(up, location.clone(), "HTTP://127.0.0.1:3000"),
            "https://shop.example/"
        );
        assert_eq!(
            restored(up, location.clone(), "http://127.0.0.1:3000?x=1"),
            "https://shop.example/?x=1"
        );
        assert_eq!(
            restored(up, header::CONTENT_LOCATION, "http://127.0.0.1:3000/a"),
            "https://shop.example/a"
        );
        assert_eq!(
            restored(up, header::REFRESH, "5; url=http://127.0.0.1:3000/x"),
            "5; url=https://shop.example/x"
        );
        assert_eq!(
            restored(up, header::REFRESH, "0;URL='http://127.0.0.1:3000/x'"),
            "0;URL='https://shop.example/x'"
        );
        // Under the upstream's base path only.
        assert_eq!(
            restored("http://up/app", location.clone(), "http://up/app/x"),
            "https://shop.example/x"
        );
        assert_eq!(
            restored("http://up/app", location, "http://up/application"),
            "http://up/application"
        );
    }

    #[test]
    fn other_urls_are_left_alone() {
        let up = "http://127.0.0.1:3000";
        for url in [
            "/relative",
            "http://127.0.0.1:30001/x",
            "https://127.0.0.1:3000/x",
            "http://evil.example/127.0.0.1:3000",
            "https://shop.example/x",
        ] {
            assert_eq!(restored(up, header::LOCATION, url), url);
        }
    }

    #[test]
    fn no_origin_without_a_valid_host_and_scheme() {
        let mut headers = HeaderMap::new();
        headers.insert("x-forwarded-proto", HeaderValue::from_static("gopher"));
        headers.insert("x-forwarded-host", HeaderValue::from_static("shop.example"));
        assert_eq!(PublicOrigin::from_forwarded(&headers), None);
        headers.insert("x-forwarded-proto", HeaderValue::from_static("http"));
        headers.insert("x-forwarded-host", HeaderValue::from_static("bad host/x"));
        assert_eq!(PublicOrigin::from_forwarded(&headers), None);
    }
}
