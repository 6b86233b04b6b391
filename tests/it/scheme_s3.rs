//! S3 presigned URLs against a second reading of SigV4 (`support::s3`, a stand-in S3 server's
//! check): that check is first held to botocore's vectors, then it checks what
//! `signgate::scheme::s3` signs, over keys and parameters the vectors do not have, and once over
//! a real socket.

use http::{HeaderMap, HeaderValue, StatusCode};
use serde_json::Value;
use signgate::scheme::Validity;
use signgate::scheme::s3::S3Signer;
use signgate::secret::TextSecret;

use crate::support::s3::{canonical_request, check_presigned, start_s3};
use crate::support::{get, now, send};

fn cases() -> Vec<Value> {
    let cases = crate::cdn_schemes::scheme("s3_sigv4")["cases"]
        .as_array()
        .expect("cases")
        .clone();
    assert_eq!(cases.len(), 15);
    cases
}

fn text<'a>(case: &'a Value, key: &str) -> &'a str {
    case[key]
        .as_str()
        .unwrap_or_else(|| panic!("{key} is a string in {}", case["name"]))
}

fn signed_at(case: &Value) -> u64 {
    match text(case, "frozen_utc") {
        "2013-05-24T00:00:00Z" => 1_369_353_600,
        "2026-01-15T08:30:00Z" => 1_768_465_800,
        other => panic!("no unix time for {other}"),
    }
}

/// The request a client makes with the case's URL: its target and headers.
fn request_of(case: &Value) -> (String, HeaderMap) {
    let prefix = format!("{}://{}", text(case, "scheme"), text(case, "host"));
    let target = text(case, "signed_url")
        .strip_prefix(&prefix)
        .expect("on its host");
    let mut headers = HeaderMap::new();
    if let Some(range) = case["params"]["Range"].as_str() {
        headers.insert(
            "range",
            HeaderValue::from_str(range).expect("a header value"),
        );
    }
    (target.to_owned(), headers)
}

#[test]
fn the_stand_in_check_agrees_with_every_vector() {
    for case in cases() {
        let name = &case["name"];
        let host = text(&case, "host");
        let secret = text(&case, "secret_access_key");
        let (target, headers) = request_of(&case);
        let start = signed_at(&case);
        let expiry = start + case["expires_in"].as_u64().expect("expires_in");
        assert_eq!(
            canonical_request("GET", host, &target, &headers).as_deref(),
            Ok(text(&case, "canonical_request")),
            "{name}"
        );
        assert_eq!(
            check_presigned("GET", host, &target, &headers, secret, start),
            Ok(()),
            "{name}"
        );
        assert_eq!(
            check_presigned("GET", host, &target, &headers, secret, expiry - 1),
            Ok(()),
            "{name}"
        );
        let expired = check_presigned("GET", host, &target, &headers, secret, expiry);
        assert!(
            expired.is_err_and(|why| why.starts_with("expired")),
            "{name}"
        );
        let wrong_secret = check_presigned("GET", host, &target, &headers, "not it", start);
        assert!(
            wrong_secret.is_err_and(|why| why.starts_with("signature mismatch")),
            "{name}"
        );
        let moved = target.replacen('?', "x?", 1);
        assert!(
            check_presigned("GET", host, &moved, &headers, secret, start).is_err(),
            "{name}"
        );
        assert!(
            check_presigned("HEAD", host, &target, &headers, secret, start).is_err(),
            "{name}"
        );
        let other_host = format!("x{host}");
        assert!(
            check_presigned("GET", &other_host, &target, &headers, secret, start).is_err(),
            "{name}"
        );
        if !headers.is_empty() {
            let none = HeaderMap::new();
            assert!(
                check_presigned("GET", host, &target, &none, secret, start).is_err(),
                "{name}"
            );
        }
    }
}

const SECRET: &str = "Sg7+test/Secret0key4Vectors+ONLY/abcdEFG";

fn signer(token: Option<&str>) -> S3Signer {
    let signer = S3Signer::new(
        "AKIAZSIGNGATETEST001".into(),
        TextSecret::new(SECRET.into()).expect("set"),
        "auto".into(),
    )
    .expect("valid");
    match token {
        Some(token) => signer.with_session_token(TextSecret::new(token.into()).expect("set")),
        None => signer,
    }
}

/// Every printable ASCII character but `?` and `#` (which end a path), written bare or as the
/// client chose, plus non-ASCII written raw.
const KEYS: [&str; 6] = [
    "/bucket/ !\"$&'()*+,-.:;<=>@[\\]^_`{|}~%25.bin",
    "/bucket//a/./b/../c",
    "/bucket/%c3%a9t%C3%A9/%e6%9d%b1 %E4%BA%AC.jpg",
    "/bucket/ключ/日本語 ファイル.txt",
    "/",
    "/bucket/a%2Fb%3Fc%23d",
];

const QUERIES: [&str; 4] = [
    "",
    "?versionId=3HL4kqtJlcpXroDTDmJ%2BrmSpXd3dIbrHY",
    "?response-content-type=image/svg+xml&response-content-disposition=attachment;%20filename=\"a b.svg\"",
    "?b=2&a=1&a=0&flag",
];

#[test]
fn the_stand_in_check_accepts_whatever_signgate_presigns() {
    let start = 1_768_465_800;
    let validity = Validity {
        start,
        expiry: start + 300,
    };
    let mut checked = 0;
    for host in ["s3.example.com", "127.0.0.1:9000", "[::1]:9000"] {
        for token in [None, Some("FwoGZXIvYXdzEXAMPLE//////////wEaDTest+/==")] {
            for key in KEYS {
                for query in QUERIES {
                    let url = format!("http://{host}{key}{query}");
                    let signer = signer(token);
                    for range in [None, Some("bytes=0-99")] {
                        let presigned = match range {
                            Some(range) => signer.presign_range(&url, range, validity),
                            None => signer.presign(&url, validity),
                        };
                        let presigned = presigned.unwrap_or_else(|e| panic!("{url}: {e}"));
                        let target = presigned
                            .strip_prefix(&format!("http://{host}"))
                            .expect("on its host");
                        let carried = token.map(|token| {
                            let encoded = token.replace('/', "%2F").replace('+', "%2B");
                            format!("&X-Amz-Security-Token={}&", encoded.replace('=', "%3D"))
                        });
                        if let Some(carried) = carried {
                            assert!(presigned.contains(&carried), "{presigned}");
                        }
                        let mut headers = HeaderMap::new();
                        if let Some(range) = range {
                            headers.insert("range", HeaderValue::from_str(range).expect("ASCII"));
                        }
                        assert_eq!(
                            check_presigned("GET", host, target, &headers, SECRET, start + 299),
                            Ok(()),
                            "{presigned}"
                        );
                        assert!(
                            check_presigned("GET", host, target, &headers, SECRET, start + 300)
                                .is_err(),
                            "{presigned}"
                        );
                        checked += 1;
                    }
                }
            }
        }
    }
    assert_eq!(checked, 3 * 2 * KEYS.len() * QUERIES.len() * 2);
}

/// X-Amz-Signature as AWS's own signer (`aws-sigv4`) computes it for `url`, a presigned URL
/// with its `X-Amz-*` parameters taken out, on `host`, at `start`, for `expires_in` seconds.
fn aws_sigv4_signature(
    url: &str,
    host: &str,
    token: Option<&str>,
    start: u64,
    expires_in: u64,
) -> String {
    use aws_sigv4::http_request::{
        PercentEncodingMode, SignableBody, SignableRequest, SignatureLocation, SigningSettings,
        UriPathNormalizationMode, sign,
    };
    let identity = aws_credential_types::Credentials::new(
        "AKIAZSIGNGATETEST001",
        SECRET,
        token.map(str::to_owned),
        None,
        "differential test",
    )
    .into();
    let mut settings = SigningSettings::default();
    settings.signature_location = SignatureLocation::QueryParams;
    settings.expires_in = Some(std::time::Duration::from_secs(expires_in));
    // S3's rules: the path encoded once and never normalised.
    settings.percent_encoding_mode = PercentEncodingMode::Single;
    settings.uri_path_normalization_mode = UriPathNormalizationMode::Disabled;
    let params = aws_sigv4::sign::v4::SigningParams::builder()
        .identity(&identity)
        .region("auto")
        .name("s3")
        .time(std::time::UNIX_EPOCH + std::time::Duration::from_secs(start))
        .settings(settings)
        .build()
        .expect("signing parameters")
        .into();
    let request = SignableRequest::new(
        "GET",
        url,
        std::iter::once(("host", host)),
        SignableBody::UnsignedPayload,
    )
    .unwrap_or_else(|e| panic!("{url}: {e}"));
    let (instructions, _) = sign(request, &params)
        .unwrap_or_else(|e| panic!("{url}: {e}"))
        .into_parts();
    instructions
        .params()
        .iter()
        .find(|(name, _)| *name == "X-Amz-Signature")
        .map(|(_, value)| value.to_string())
        .expect("a signature")
}

/// A differential test against AWS's own SigV4 signer: every URL signgate presigns over the
/// keys, queries, hosts and tokens above carries the signature `aws-sigv4` computes for the
/// same request, so the two agree on the canonical request byte for byte.
#[test]
fn aws_sigv4_computes_the_signature_signgate_presigns_with() {
    let start = 1_768_465_800;
    let validity = Validity {
        start,
        expiry: start + 300,
    };
    let mut compared = 0;
    for host in ["s3.example.com", "127.0.0.1:9000", "[::1]:9000"] {
        for token in [None, Some("FwoGZXIvYXdzEXAMPLE//////////wEaDTest+/==")] {
            for key in KEYS {
                for query in QUERIES {
                    let url = format!("http://{host}{key}{query}");
                    let presigned = signer(token)
                        .presign(&url, validity)
                        .unwrap_or_else(|e| panic!("{url}: {e}"));
                    let (address, query) = presigned.split_once('?').expect("a query");
                    let ours = query
                        .split('&')
                        .find_map(|pair| pair.strip_prefix("X-Amz-Signature="))
                        .expect("a signature");
                    let others: Vec<&str> = query
                        .split('&')
                        .filter(|pair| !pair.starts_with("X-Amz-"))
                        .collect();
                    let unsigned = if others.is_empty() {
                        address.to_owned()
                    } else {
                        format!("{address}?{}", others.join("&"))
                    };
                    assert_eq!(
                        aws_sigv4_signature(&unsigned, host, token, start, 300),
                        ours,
                        "{url} -> {presigned}"
                    );
                    compared += 1;
                }
            }
        }
    }
    assert_eq!(compared, 3 * 2 * KEYS.len() * QUERIES.len());
}

#[tokio::test]
async fn a_presigned_url_fetches_from_the_stand_in_s3_and_a_changed_one_does_not() {
    let addr = start_s3(SECRET).await;
    let start = now() - now() % 300;
    let validity = Validity {
        start,
        expiry: start + 600,
    };
    let url =
        format!("http://{addr}/gallery/pop art/warhol soup.png?response-content-type=image/png");
    let presigned = signer(None).presign(&url, validity).expect("presigns");
    let answer = get(&presigned).await;
    assert_eq!(answer.status, StatusCode::OK, "{}", answer.text());
    assert_eq!(answer.text(), "object /gallery/pop%20art/warhol%20soup.png");

    let changed = presigned.replace("image%2Fpng", "text%2Fhtml");
    let answer = get(&changed).await;
    assert_eq!(answer.status, StatusCode::FORBIDDEN);
    assert!(
        answer.text().starts_with("signature mismatch"),
        "{}",
        answer.text()
    );

    let ranged = signer(None)
        .presign_range(&url, "bytes=0-99", validity)
        .expect("presigns");
    let answer = send(http::Method::GET, &ranged, &[("range", "bytes=0-99")]).await;
    assert_eq!(answer.status, StatusCode::OK, "{}", answer.text());
    let answer = get(&ranged).await;
    assert_eq!(answer.status, StatusCode::FORBIDDEN);
    assert_eq!(answer.text(), "signed header range not sent");
}
