//! The host a request names: the target's authority first, then `Host` (RFC 9112 section 3.2.2,
//! RFC 9113 section 8.3.1), checked for URI host syntax once, before any route sees it; and a
//! target of ASCII only.

use http::header::{self, HeaderValue};
use http::{Request, Uri, Version};

use crate::error::ProxyError;

/// Settles which host `request` is for and leaves it as the request's one `Host` header, so
/// every handler (and every `X-Forwarded-Host` and `Forwarded` built from it) sees a single,
/// checked value.
///
/// Refused with [`ProxyError::BadHost`]: an HTTP/1.1 request without exactly one `Host`; any
/// request with more than one; an HTTP/2 request whose `host` names another host than its
/// `:authority`; a host that is not `reg-name`, IPv4 or `[IPv6]` with an optional port. An
/// HTTP/1.0 request may name no host at all; it then has none.
pub fn settle_host<B>(request: &mut Request<B>) -> Result<(), ProxyError> {
    let mut hosts = request.headers().get_all(header::HOST).iter();
    let host_header = hosts.next();
    if hosts.next().is_some() {
        return Err(ProxyError::BadHost);
    }
    if request.version() == Version::HTTP_11 && host_header.is_none() {
        return Err(ProxyError::BadHost);
    }
    let authority = request.uri().authority().map(|a| a.as_str().as_bytes());
    let host = match (authority, host_header) {
        (Some(authority), Some(host))
            if request.version() == Version::HTTP_2
                && !authority.eq_ignore_ascii_case(host.as_bytes()) =>
        {
            return Err(ProxyError::BadHost);
        }
        // An absolute-form target or `:authority` wins over `Host`.
        (Some(authority), _) => authority,
        (None, Some(host)) => host.as_bytes(),
        (None, None) => return Ok(()),
    };
    if !is_valid_host(host) {
        return Err(ProxyError::BadHost);
    }
    let host = HeaderValue::from_bytes(host).map_err(|_| ProxyError::BadHost)?;
    request.headers_mut().insert(header::HOST, host);
    Ok(())
}

/// Refuses ([`ProxyError::BadTarget`]) a path or query with raw bytes outside ASCII. The `http`
/// crate lets UTF-8 through, and HTTP/2 sends `:path` as it is: line and paragraph separators
/// (U+2028, U+0085) and bidi controls would reach the log and the upstream's request line.
/// Percent-encoded, the same characters are ordinary.
pub fn check_target(uri: &Uri) -> Result<(), ProxyError> {
    match uri.path_and_query() {
        Some(target) if !target.as_str().is_ascii() => Err(ProxyError::BadTarget),
        _ => Ok(()),
    }
}

/// The longest method forwarded. The registered ones are at most 17 characters
/// (`UPDATEREDIRECTREF`); HTTP sets no limit, so a method could otherwise fill the whole head,
/// and the site's request line and the log with it.
pub const MAX_METHOD_LEN: usize = 32;

/// Refuses ([`ProxyError::BadMethod`]) a method longer than [`MAX_METHOD_LEN`].
pub fn check_method(method: &http::Method) -> Result<(), ProxyError> {
    if method.as_str().len() > MAX_METHOD_LEN {
        return Err(ProxyError::BadMethod);
    }
    Ok(())
}

/// Whether `text` is a URI host with an optional port (RFC 3986 section 3.2.2): a non-empty
/// `reg-name` (which takes in IPv4 addresses) or a bracketed IPv6 address, then `:` and 1 to 5
/// digits up to 65535.
pub fn is_valid_host(text: &[u8]) -> bool {
    let (host, port) = match text.strip_prefix(b"[") {
        Some(rest) => {
            let Some(end) = rest.iter().position(|&b| b == b']') else {
                return false;
            };
            let is_ipv6 = std::str::from_utf8(&rest[..end])
                .is_ok_and(|inner| inner.parse::<std::net::Ipv6Addr>().is_ok());
            if !is_ipv6 {
                return false;
            }
            match &rest[end + 1..] {
                [] => return true,
                [b':', port @ ..] => (None, Some(port)),
                _ => return false,
            }
        }
        None => match text.iter().rposition(|&b| b == b':') {
            Some(colon) => (Some(&text[..colon]), Some(&text[colon + 1..])),
            None => (Some(text), None),
        },
    };
    host.is_none_or(is_reg_name) && port.is_none_or(is_port)
}

/// `1*( unreserved / pct-encoded / sub-delims )`.
fn is_reg_name(text: &[u8]) -> bool {
    if text.is_empty() {
        return false;
    }
    let mut i = 0;
    while i < text.len() {
        match text[i] {
            b'%' => {
                let hex = text.get(i + 1..i + 3);
                if !hex.is_some_and(|h| h.iter().all(u8::is_ascii_hexdigit)) {
                    return false;
                }
                i += 3;
            }
            b if b.is_ascii_alphanumeric() || b"-._~!$&'()*+,;=".contains(&b) => i += 1,
            _ => return false,
        }
    }
    true
}

fn is_port(text: &[u8]) -> bool {
    (1..=5).contains(&text.len())
        && text.iter().all(u8::is_ascii_digit)
        && std::str::from_utf8(text).is_ok_and(|t| t.parse::<u16>().is_ok())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hosts_are_reg_names_ipv4_or_bracketed_ipv6_with_an_optional_port() {
        for good in [
            "example.com",
            "EXAMPLE.com:8080",
            "127.0.0.1",
            "127.0.0.1:65535",
            "[::1]",
            "[2001:db8::1]:443",
            "gw",
            "xn--bcher-kva.example",
            "under_score.example",
            "a%20b",
            "a!$&'()*+,;=b",
            "host:1",
        ] {
            assert!(is_valid_host(good.as_bytes()), "{good}");
        }
        for bad in [
            "",
            ":80",
            "x\"><script>alert(1)</script>",
            "a b",
            "a/b",
            "a@b",
            "user@example.com",
            "a\\b",
            "example.com:",
            "example.com:65536",
            "example.com:123456",
            "example.com:8a",
            "example.com:80:80",
            "::1",
            "[::1",
            "[example.com]",
            "[::1]x",
            "[::1]:",
            "[::1]:99999",
            "a%2",
            "a%zz",
            "é.example",
            "a\tb",
        ] {
            assert!(!is_valid_host(bad.as_bytes()), "{bad}");
        }
    }

    fn request(version: Version, target: &str, hosts: &[&str]) -> Request<()> {
        let mut builder = Request::get(target).version(version);
        for host in hosts {
            builder = builder.header(header::HOST, *host);
        }
        builder.body(()).expect("request")
    }

    fn settled(mut request: Request<()>) -> Result<Option<String>, ProxyError> {
        settle_host(&mut request)?;
        let mut hosts = request.headers().get_all(header::HOST).iter();
        let host = hosts.next().map(|h| h.to_str().expect("ascii").to_owned());
        assert!(hosts.next().is_none(), "one Host header left");
        Ok(host)
    }

    #[test]
    fn the_target_authority_wins_over_host_and_h2_must_agree() {
        let ok = |r| settled(r).expect("accepted");
        assert_eq!(
            ok(request(Version::HTTP_11, "/x", &["gw:8080"])).as_deref(),
            Some("gw:8080")
        );
        assert_eq!(
            ok(request(
                Version::HTTP_11,
                "http://target.example/x",
                &["other"]
            ))
            .as_deref(),
            Some("target.example")
        );
        assert_eq!(ok(request(Version::HTTP_10, "/x", &[])), None);
        assert_eq!(
            ok(request(Version::HTTP_2, "http://gw:8080/x", &[])).as_deref(),
            Some("gw:8080")
        );
        assert_eq!(
            ok(request(Version::HTTP_2, "http://GW:8080/x", &["gw:8080"])).as_deref(),
            Some("GW:8080")
        );
        for refused in [
            request(Version::HTTP_11, "/x", &[]),
            request(Version::HTTP_11, "/x", &["a", "b"]),
            request(Version::HTTP_10, "/x", &["a", "a"]),
            request(Version::HTTP_11, "/x", &["x\"><script>"]),
            request(Version::HTTP_11, "/x", &[""]),
            request(Version::HTTP_2, "http://gw/x", &["evil.example"]),
            request(Version::HTTP_11, "http://user@gw/x", &["gw"]),
        ] {
            assert!(matches!(settled(refused), Err(ProxyError::BadHost)));
        }
    }
}
