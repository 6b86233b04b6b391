//! A stand-in S3 server's check of presigned URLs: SigV4 recomputed from the request as AWS's
//! documentation describes it, with nothing from `signgate::scheme::s3` (its own encoder, date
//! arithmetic, and ring for SHA-256 and HMAC), so the gateway's signer is checked by a second
//! reading of the spec, itself held to botocore's vectors (tests/it/scheme_s3.rs).

use std::net::SocketAddr;

use http::{HeaderMap, Request, Response, StatusCode};
use hyper::body::Incoming;
use ring::{digest, hmac};

use super::{TestBody, full};

/// The longest validity SigV4 allows.
const WEEK: u64 = 7 * 24 * 3600;

/// Checks a presigned request as S3 does: the credential parameters, the signature over the
/// method, path, query and signed headers (`host` taken from `host`, others from `headers`),
/// then expiry. The error says what failed, with the canonical request on a bad signature.
pub fn check_presigned(
    method: &str,
    host: &str,
    path_and_query: &str,
    headers: &HeaderMap,
    secret_access_key: &str,
    now: u64,
) -> Result<(), String> {
    let (_, query) = path_and_query
        .split_once('?')
        .unwrap_or((path_and_query, ""));
    let params = query_pairs(query);
    let one = |name: &str| -> Result<String, String> {
        let mut values = params.iter().filter(|(key, _)| key == name);
        match (values.next(), values.next()) {
            (Some((_, value)), None) => Ok(value.clone()),
            (None, _) => Err(format!("{name} missing")),
            (Some(_), Some(_)) => Err(format!("{name} given twice")),
        }
    };
    if one("X-Amz-Algorithm")? != "AWS4-HMAC-SHA256" {
        return Err("X-Amz-Algorithm is not AWS4-HMAC-SHA256".into());
    }
    let credential = one("X-Amz-Credential")?;
    let scope: Vec<&str> = credential.splitn(2, '/').collect();
    let [_access_key, scope] = scope[..] else {
        return Err(format!("malformed credential {credential}"));
    };
    let parts: Vec<&str> = scope.split('/').collect();
    let [day, region, service, "aws4_request"] = parts[..] else {
        return Err(format!("malformed scope {scope}"));
    };
    let date = one("X-Amz-Date")?;
    let signed_at = unix_of(&date).ok_or_else(|| format!("malformed X-Amz-Date {date}"))?;
    if !date.starts_with(day) {
        return Err(format!("scope day {day} is not the day of {date}"));
    }
    let expires: u64 = one("X-Amz-Expires")?
        .parse()
        .map_err(|_| "malformed X-Amz-Expires".to_string())?;
    if expires == 0 || expires > WEEK {
        return Err(format!("X-Amz-Expires {expires} out of range"));
    }
    let signature = one("X-Amz-Signature")?;

    let canonical = canonical_request(method, host, path_and_query, headers)?;
    let hashed = hex(digest::digest(&digest::SHA256, canonical.as_bytes()).as_ref());
    let string_to_sign = format!("AWS4-HMAC-SHA256\n{date}\n{scope}\n{hashed}");
    let key = [day, region, service, "aws4_request"].iter().fold(
        format!("AWS4{secret_access_key}").into_bytes(),
        |key, part| {
            hmac::sign(&hmac::Key::new(hmac::HMAC_SHA256, &key), part.as_bytes())
                .as_ref()
                .to_vec()
        },
    );
    let expected = hmac::sign(
        &hmac::Key::new(hmac::HMAC_SHA256, &key),
        string_to_sign.as_bytes(),
    );
    if hex(expected.as_ref()) != signature {
        return Err(format!(
            "signature mismatch; canonical request:\n{canonical}"
        ));
    }
    if now >= signed_at + expires {
        return Err(format!("expired at {}", signed_at + expires));
    }
    Ok(())
}

/// The canonical request of a presigned request: every query parameter but the signature,
/// decoded, encoded once more and sorted; the headers `X-Amz-SignedHeaders` names.
pub fn canonical_request(
    method: &str,
    host: &str,
    path_and_query: &str,
    headers: &HeaderMap,
) -> Result<String, String> {
    let (path, query) = path_and_query
        .split_once('?')
        .unwrap_or((path_and_query, ""));
    let mut params: Vec<(String, String)> = query_pairs(query)
        .into_iter()
        .filter(|(name, _)| name != "X-Amz-Signature")
        .map(|(name, value)| (uri_encode(&name, true), uri_encode(&value, true)))
        .collect();
    params.sort();
    let query = params
        .iter()
        .map(|(name, value)| format!("{name}={value}"))
        .collect::<Vec<_>>()
        .join("&");
    let signed_headers = query_pairs(path_and_query.split_once('?').map_or("", |(_, q)| q))
        .into_iter()
        .find(|(name, _)| name == "X-Amz-SignedHeaders")
        .map(|(_, value)| value)
        .ok_or("X-Amz-SignedHeaders missing")?;
    let mut lines = String::new();
    for name in signed_headers.split(';') {
        let value = if name == "host" {
            host.to_string()
        } else {
            headers
                .get(name)
                .and_then(|value| value.to_str().ok())
                .ok_or_else(|| format!("signed header {name} not sent"))?
                .split_whitespace()
                .collect::<Vec<_>>()
                .join(" ")
        };
        lines.push_str(&format!("{name}:{value}\n"));
    }
    let path = uri_encode(&percent_decode(path), false);
    Ok(format!(
        "{method}\n{path}\n{query}\n{lines}\n{signed_headers}\nUNSIGNED-PAYLOAD"
    ))
}

/// A stand-in S3 endpoint on 127.0.0.1: a presigned GET that checks under `secret_access_key`
/// (at the wall clock) gets `object <path>`, anything else 403 with what failed.
pub async fn start_s3(secret_access_key: &'static str) -> SocketAddr {
    let (listener, addr) = super::bind().await;
    super::serve_http(listener, move |request: Request<Incoming>| async move {
        let host = request
            .headers()
            .get(http::header::HOST)
            .and_then(|value| value.to_str().ok())
            .unwrap_or_default()
            .to_string();
        let target = request
            .uri()
            .path_and_query()
            .map_or("/", |target| target.as_str());
        let checked = check_presigned(
            request.method().as_str(),
            &host,
            target,
            request.headers(),
            secret_access_key,
            super::now(),
        );
        let (status, body) = match checked {
            Ok(()) => (StatusCode::OK, format!("object {}", request.uri().path())),
            Err(why) => (StatusCode::FORBIDDEN, why),
        };
        Response::builder()
            .status(status)
            .body(full(body))
            .expect("a valid response")
    });
    addr
}

/// The query's pairs, percent-decoded (a `+` stays a `+`: SigV4 knows no form encoding).
fn query_pairs(query: &str) -> Vec<(String, String)> {
    query
        .split('&')
        .filter(|pair| !pair.is_empty())
        .map(|pair| {
            let (name, value) = pair.split_once('=').unwrap_or((pair, ""));
            (percent_decode(name), percent_decode(value))
        })
        .collect()
}

/// SigV4's `UriEncode`: unreserved bytes as they are, `/` too in a path, the rest `%XX`.
fn uri_encode(text: &str, encode_slash: bool) -> String {
    let mut out = String::new();
    for byte in text.bytes() {
        let bare = byte.is_ascii_alphanumeric()
            || matches!(byte, b'-' | b'_' | b'.' | b'~')
            || (byte == b'/' && !encode_slash);
        if bare {
            out.push(char::from(byte));
        } else {
            out.push_str(&format!("%{byte:02X}"));
        }
    }
    out
}

fn percent_decode(text: &str) -> String {
    let bytes = text.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut at = 0;
    while at < bytes.len() {
        let escaped = (bytes[at] == b'%')
            .then(|| text.get(at + 1..at + 3))
            .flatten()
            .and_then(|hex| u8::from_str_radix(hex, 16).ok());
        match escaped {
            Some(byte) => {
                out.push(byte);
                at += 3;
            }
            None => {
                out.push(bytes[at]);
                at += 1;
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|byte| format!("{byte:02x}")).collect()
}

/// Unix seconds of `YYYYMMDDTHHMMSSZ`, by counting days from 1970.
fn unix_of(date: &str) -> Option<u64> {
    if date.len() != 16 || &date[8..9] != "T" || !date.ends_with('Z') {
        return None;
    }
    let field = |range: std::ops::Range<usize>| date.get(range)?.parse::<u64>().ok();
    let (year, month, day) = (field(0..4)?, field(4..6)?, field(6..8)?);
    let (hour, minute, second) = (field(9..11)?, field(11..13)?, field(13..15)?);
    let leap = |y: u64| (y.is_multiple_of(4) && !y.is_multiple_of(100)) || y.is_multiple_of(400);
    let month_days = [
        31,
        if leap(year) { 29 } else { 28 },
        31,
        30,
        31,
        30,
        31,
        31,
        30,
        31,
        30,
        31,
    ];
    if year < 1970 || !(1..=12).contains(&month) || day == 0 || day > month_days[month as usize - 1]
    {
        return None;
    }
    let days = (1970..year)
        .map(|y| if leap(y) { 366 } else { 365 })
        .sum::<u64>()
        + month_days[..month as usize - 1].iter().sum::<u64>()
        + day
        - 1;
    Some(days * 86_400 + hour * 3600 + minute * 60 + second)
}
