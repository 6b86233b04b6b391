//! Headers on the way through: hop-by-hop headers stripped both ways, and the forwarding
//! headers (`X-Forwarded-*`, `Via`) a reverse proxy adds.

use std::net::IpAddr;

use http::header::{self, HeaderMap, HeaderName, HeaderValue};
use http::request::Parts;

use crate::mode::RequestContext;
use crate::request_id::X_REQUEST_ID;

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
    let mut doomed = names_where(headers, |name| {
        name == header::UPGRADE || HOP_BY_HOP.contains(name)
    });
    if doomed.contains(&header::CONNECTION) {
        let listed = headers
            .get_all(header::CONNECTION)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .flat_map(|v| v.split(','))
            .filter_map(|name| HeaderName::from_bytes(name.trim().as_bytes()).ok());
        doomed.extend(listed);
    }
    for name in &doomed {
        headers.remove(name);
    }
}

/// The names present in `headers` that `pick` chooses, in one pass over the names (which
/// compare without hashing): removing those alone searches the map only for what is there,
/// usually nothing, where removing every name of a list searches it once per name.
pub fn names_where(headers: &HeaderMap, pick: impl Fn(&HeaderName) -> bool) -> Vec<HeaderName> {
    headers.keys().filter(|name| pick(name)).cloned().collect()
}

/// The `Via` token signgate adds.
const VIA: &str = "1.1 signgate";
static X_FORWARDED_FOR: HeaderName = HeaderName::from_static("x-forwarded-for");
static X_FORWARDED_PROTO: HeaderName = HeaderName::from_static("x-forwarded-proto");
static X_FORWARDED_HOST: HeaderName = HeaderName::from_static("x-forwarded-host");
static X_REAL_IP: HeaderName = HeaderName::from_static("x-real-ip");

/// Whether `name` says something about the client as an earlier proxy saw it: `Forwarded`,
/// `X-Real-IP` or any `X-Forwarded-*`. Only a trusted peer may send these on.
fn is_forwarding(name: &HeaderName) -> bool {
    name == header::FORWARDED || name == X_REAL_IP || name.as_str().starts_with("x-forwarded-")
}

/// Sets the forwarding headers of a request going upstream: `X-Forwarded-For`, `Forwarded`,
/// `X-Forwarded-Proto`, `X-Forwarded-Host`, `Via` and the request's `X-Request-Id`.
///
/// From a trusted proxy (`ctx.trusted_peer`) its forwarding headers are kept: the peer is
/// appended to `X-Forwarded-For`, an element for this hop to `Forwarded`, and its
/// `X-Forwarded-Proto`, `X-Forwarded-Host`, other `X-Forwarded-*` and `X-Real-IP` stay. From
/// anyone else, whatever forwarding headers it sent are dropped and replaced by what signgate
/// saw: the peer, the listener's scheme and the request's host, which [`crate::host`] settled
/// into its `Host` header. Any forwarding header already in `upstream_headers` is dropped first.
pub fn add_forwarding_headers(
    upstream_headers: &mut HeaderMap,
    client: &Parts,
    ctx: &RequestContext,
) {
    let stale: Vec<HeaderName> = upstream_headers
        .keys()
        .filter(|name| is_forwarding(name))
        .cloned()
        .collect();
    for name in &stale {
        upstream_headers.remove(name);
    }
    let peer = ctx.peer.ip().to_canonical();
    let proto = ctx.scheme.as_str();
    let host = client.headers.get(header::HOST);
    let mut forwarded_for = Vec::with_capacity(64);
    let mut forwarded = Vec::with_capacity(96);
    if ctx.trusted_peer {
        for (name, value) in &client.headers {
            if name == X_FORWARDED_FOR {
                append_list(&mut forwarded_for, value.as_bytes());
            } else if name == header::FORWARDED {
                append_list(&mut forwarded, value.as_bytes());
            } else if is_forwarding(name) {
                upstream_headers.append(name.clone(), value.clone());
            }
        }
    }
    if !forwarded_for.is_empty() {
        forwarded_for.extend_from_slice(b", ");
    }
    push_ip(&mut forwarded_for, peer);
    if !forwarded.is_empty() {
        forwarded.extend_from_slice(b", ");
    }
    push_forwarded_element(&mut forwarded, peer, proto, host);
    for (name, value) in [
        (&X_FORWARDED_FOR, forwarded_for),
        (&header::FORWARDED, forwarded),
    ] {
        // Earlier values were header values and ours are ASCII: joined with ", " they are one.
        // Handed over whole: no copy.
        if let Ok(value) = HeaderValue::from_maybe_shared(bytes::Bytes::from(value)) {
            upstream_headers.insert(name.clone(), value);
        }
    }
    // `entry`: one lookup where `contains_key` then `insert` made two.
    upstream_headers
        .entry(&X_FORWARDED_PROTO)
        .or_insert_with(|| HeaderValue::from_static(proto));
    if let Some(host) = host {
        upstream_headers
            .entry(&X_FORWARDED_HOST)
            .or_insert_with(|| host.clone());
    }
    // The id the server settled on the request (see `crate::request_id`): the upstream's
    // logs and signgate's then name a request alike.
    if let Some(id) = client.headers.get(&X_REQUEST_ID) {
        upstream_headers.insert(X_REQUEST_ID.clone(), id.clone());
    }
    add_via(upstream_headers);
}

/// Appends `item` to a comma-separated list.
fn append_list(list: &mut Vec<u8>, item: &[u8]) {
    if !list.is_empty() {
        list.extend_from_slice(b", ");
    }
    list.extend_from_slice(item);
}

/// Writes `peer` as text: an IPv4 address digit by digit (the usual case, and the formatting
/// machinery took a noticeable share of a proxied request), an IPv6 one as `Display` writes it.
fn push_ip(out: &mut Vec<u8>, peer: IpAddr) {
    match peer {
        IpAddr::V4(v4) => {
            for (i, octet) in v4.octets().into_iter().enumerate() {
                if i > 0 {
                    out.push(b'.');
                }
                if octet >= 100 {
                    out.push(b'0' + octet / 100);
                }
                if octet >= 10 {
                    out.push(b'0' + octet / 10 % 10);
                }
                out.push(b'0' + octet % 10);
            }
        }
        IpAddr::V6(v6) => {
            // Writing into a Vec cannot fail.
            let _ = std::io::Write::write_fmt(out, format_args!("{v6}"));
        }
    }
}

/// Writes this hop's `Forwarded` element (RFC 7239): `for=PEER;proto=SCHEME;host=HOST`, an
/// IPv6 peer bracketed and quoted, a host quoted when it is not a token (a port's `:` makes it
/// so).
fn push_forwarded_element(
    out: &mut Vec<u8>,
    peer: IpAddr,
    proto: &str,
    host: Option<&HeaderValue>,
) {
    out.extend_from_slice(b"for=");
    if peer.is_ipv6() {
        out.extend_from_slice(b"\"[");
        push_ip(out, peer);
        out.extend_from_slice(b"]\"");
    } else {
        push_ip(out, peer);
    }
    out.extend_from_slice(b";proto=");
    out.extend_from_slice(proto.as_bytes());
    // A settled host is ASCII; anything else is left out rather than mangled.
    if let Some(host) = host.and_then(|h| h.to_str().ok()) {
        out.extend_from_slice(b";host=");
        push_token_or_quoted(out, host);
    }
}

/// `value` as an RFC 7230 token if it is one, else as a quoted-string.
fn push_token_or_quoted(out: &mut Vec<u8>, value: &str) {
    let is_tchar = |c: u8| c.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&c);
    if !value.is_empty() && value.bytes().all(is_tchar) {
        out.extend_from_slice(value.as_bytes());
        return;
    }
    out.push(b'"');
    for c in value.bytes() {
        if c == b'"' || c == b'\\' {
            out.push(b'\\');
        }
        out.push(c);
    }
    out.push(b'"');
}

/// Appends signgate to the `Via` header.
pub fn add_via(headers: &mut HeaderMap) {
    match headers.entry(header::VIA) {
        header::Entry::Vacant(vacant) => {
            vacant.insert(HeaderValue::from_static(VIA));
        }
        header::Entry::Occupied(mut occupied) => {
            let joined = occupied
                .get()
                .to_str()
                .ok()
                .and_then(|earlier| HeaderValue::try_from(format!("{earlier}, {VIA}")).ok());
            if let Some(value) = joined {
                occupied.insert(value);
            }
        }
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
        // Removing reorders what is left; the order of different names carries no meaning.
        let mut left: Vec<&str> = headers.keys().map(HeaderName::as_str).collect();
        left.sort_unstable();
        assert_eq!(left, ["content-type", "etag"]);
    }

    fn client(headers: &[(&'static str, &'static str)]) -> Parts {
        let mut request = http::Request::get("/page").body(()).expect("request");
        for (name, value) in headers {
            request
                .headers_mut()
                .append(*name, HeaderValue::from_static(value));
        }
        request.into_parts().0
    }

    fn ctx(peer: &str, trusted_peer: bool) -> RequestContext {
        RequestContext {
            peer: peer.parse().expect("socket address"),
            now: 0,
            scheme: crate::server::ListenerScheme::Http,
            trusted_peer,
            client_body_timeout: std::time::Duration::from_secs(30),
        }
    }

    const SENT_BY_THE_CLIENT: [(&str, &str); 8] = [
        ("host", "gw.example:8080"),
        ("x-forwarded-for", "10.9.9.9"),
        ("x-forwarded-for", "10.8.8.8"),
        ("x-forwarded-proto", "https"),
        ("x-forwarded-host", "public.example"),
        ("x-forwarded-port", "443"),
        ("forwarded", "for=10.9.9.9;proto=https"),
        ("x-real-ip", "10.9.9.9"),
    ];

    #[test]
    fn an_untrusted_peer_gets_its_forwarding_headers_replaced() {
        let client = client(&SENT_BY_THE_CLIENT);
        // As site mode does: the client's headers are the starting point.
        let mut up = client.headers.clone();
        add_forwarding_headers(&mut up, &client, &ctx("[::ffff:192.0.2.1]:5000", false));
        assert_eq!(up["x-forwarded-for"], "192.0.2.1");
        assert_eq!(up["x-forwarded-proto"], "http");
        assert_eq!(up["x-forwarded-host"], "gw.example:8080");
        assert_eq!(
            up["forwarded"],
            "for=192.0.2.1;proto=http;host=\"gw.example:8080\""
        );
        assert!(up.get("x-real-ip").is_none() && up.get("x-forwarded-port").is_none());
        assert_eq!(up.get_all("x-forwarded-for").iter().count(), 1);
        assert_eq!(up["via"], "1.1 signgate");
    }

    #[test]
    fn a_trusted_peer_gets_its_forwarding_headers_kept_and_extended() {
        let client = client(&SENT_BY_THE_CLIENT);
        // As proxy mode does: nothing of the client's yet.
        let mut up = HeaderMap::new();
        add_forwarding_headers(&mut up, &client, &ctx("[2001:db8::7]:5000", true));
        assert_eq!(up["x-forwarded-for"], "10.9.9.9, 10.8.8.8, 2001:db8::7");
        assert_eq!(
            up["forwarded"],
            "for=10.9.9.9;proto=https, for=\"[2001:db8::7]\";proto=http;host=\"gw.example:8080\""
        );
        assert_eq!(up["x-forwarded-proto"], "https");
        assert_eq!(up["x-forwarded-host"], "public.example");
        assert_eq!(up["x-forwarded-port"], "443");
        assert_eq!(up["x-real-ip"], "10.9.9.9");
    }

    #[test]
    fn forwarded_values_are_tokens_or_quoted_strings() {
        let element = |host: Option<&'static str>| {
            let mut out = Vec::new();
            push_forwarded_element(
                &mut out,
                "192.0.2.1".parse().expect("ip"),
                "https",
                host.map(HeaderValue::from_static).as_ref(),
            );
            String::from_utf8(out).expect("ASCII")
        };
        assert_eq!(element(None), "for=192.0.2.1;proto=https");
        assert_eq!(element(Some("gw")), "for=192.0.2.1;proto=https;host=gw");
        assert_eq!(
            element(Some("[::1]:8080")),
            "for=192.0.2.1;proto=https;host=\"[::1]:8080\""
        );
        let mut out = Vec::new();
        push_token_or_quoted(&mut out, "a\"b\\c");
        assert_eq!(out, b"\"a\\\"b\\\\c\"");
    }

    #[test]
    fn addresses_are_written_as_display_writes_them() {
        for ip in [
            "0.0.0.0",
            "9.10.99.100",
            "127.0.0.1",
            "255.255.255.255",
            "203.0.113.7",
            "2001:db8::7",
            "::1",
        ] {
            let ip: IpAddr = ip.parse().expect("ip");
            let mut out = Vec::new();
            push_ip(&mut out, ip);
            assert_eq!(out, ip.to_string().as_bytes());
        }
    }
}
