//! S3-compatible presigned GET URLs (AWS Signature Version 4, query-string form): AWS S3 in
//! either addressing style, MinIO, R2 and any endpoint that checks SigV4.
//!
//! # Why not `aws-sigv4`
//! AWS's own crate was tried first against the 15 botocore vectors: it matched 14 byte for
//! byte, and the 15th (session token) only by reassembling the URL, since it writes
//! `X-Amz-Security-Token` after `X-Amz-Signature` where botocore writes it before. It was not
//! taken for its weight: about 25 more crates (`aws-smithy-types`, `-http`, `-runtime-api`,
//! `-async`, `aws-credential-types`, `http` 0.2, `http-body` 0.4, `time`, and second copies of
//! `hmac`, `sha2` and `digest`), with releases after 1.3 needing a newer Rust than ours. The
//! path encoding is ours either way (the crate signs the path as given), it never shows the
//! canonical request or string to sign, and a verifier needs them. What is left is a few
//! HMACs with the `hmac`/`sha2` already in the tree, held to every vector, the intermediate
//! strings included, and to AWS's crate itself: `tests/it/scheme_s3.rs` has `aws-sigv4` (a
//! dev-dependency only) compute the signature of every URL this module presigns over odd keys,
//! queries, hosts and session tokens, and the two must agree.
//!
//! # What is signed
//! `GET`, the object's path re-encoded as SigV4 wants it (uppercase hex, only `A-Za-z0-9-_.~`
//! and `/` left bare, never normalised), the URL's own query parameters plus the `X-Amz-*`
//! ones, the `host` header (with a port that is not the scheme's default) and, when asked,
//! `range`; the payload is `UNSIGNED-PAYLOAD`.

use hmac::digest::Key;
use hmac::{Hmac, KeyInit, Mac};
use percent_encoding::{
    AsciiSet, CONTROLS, NON_ALPHANUMERIC, percent_decode_str, percent_encode, utf8_percent_encode,
};
use sha2::{Digest, Sha256};

use super::Validity;
use crate::config::units::days_from_civil;
use crate::secret::{TextSecret, hex_decode, hex_lower};

type HmacSha256 = Hmac<Sha256>;

/// The only algorithm SigV4 query signing names.
pub const ALGORITHM: &str = "AWS4-HMAC-SHA256";

/// The service every S3-compatible endpoint signs for.
pub const SERVICE: &str = "s3";

/// The longest `X-Amz-Expires` SigV4 allows: 7 days.
pub const MAX_EXPIRES: u64 = 604_800;

/// `X-Amz-Algorithm`.
pub const X_AMZ_ALGORITHM: &str = "X-Amz-Algorithm";
/// `X-Amz-Credential`: access key id and credential scope.
pub const X_AMZ_CREDENTIAL: &str = "X-Amz-Credential";
/// `X-Amz-Date`: the signing time, `YYYYMMDDTHHMMSSZ`.
pub const X_AMZ_DATE: &str = "X-Amz-Date";
/// `X-Amz-Expires`: seconds from `X-Amz-Date`.
pub const X_AMZ_EXPIRES: &str = "X-Amz-Expires";
/// `X-Amz-SignedHeaders`: the signed header names, `;`-separated.
pub const X_AMZ_SIGNED_HEADERS: &str = "X-Amz-SignedHeaders";
/// `X-Amz-Security-Token`: the session token of temporary credentials.
pub const X_AMZ_SECURITY_TOKEN: &str = "X-Amz-Security-Token";
/// `X-Amz-Signature`: lowercase hex HMAC-SHA256.
pub const X_AMZ_SIGNATURE: &str = "X-Amz-Signature";

/// The query parameters a presigned URL's credentials are made of, in the order they are
/// written: a gateway strips client-supplied ones (compare without case: S3 does) before
/// signing, and [`S3Signer::presign`] refuses a URL that still has one.
pub const CREDENTIAL_PARAMS: [&str; 7] = [
    X_AMZ_ALGORITHM,
    X_AMZ_CREDENTIAL,
    X_AMZ_DATE,
    X_AMZ_EXPIRES,
    X_AMZ_SIGNED_HEADERS,
    X_AMZ_SECURITY_TOKEN,
    X_AMZ_SIGNATURE,
];

/// SigV4's `UriEncode`: RFC 3986's unreserved characters stay, all else is `%XX` in uppercase.
const UNRESERVED: &AsciiSet = &NON_ALPHANUMERIC
    .remove(b'-')
    .remove(b'_')
    .remove(b'.')
    .remove(b'~');

/// The same for a path, where `/` separates segments and stays.
const PATH: &AsciiSet = &UNRESERVED.remove(b'/');

/// What a URL cannot carry bare on the wire: controls, space and `" < > \ ^ { | }`, the backtick
/// (and non-ASCII, which is always escaped).
const SENT: &AsciiSet = &CONTROLS
    .add(b' ')
    .add(b'"')
    .add(b'<')
    .add(b'>')
    .add(b'\\')
    .add(b'^')
    .add(b'`')
    .add(b'{')
    .add(b'|')
    .add(b'}');

/// A value an [`S3Signer`] cannot be built from.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum S3ConfigError {
    /// The access key id is empty or has a character a credential scope cannot hold.
    #[error("access key id must be non-empty printable ASCII without `/`")]
    AccessKeyId,
    /// The region is empty or has a character a credential scope cannot hold.
    #[error("region must be non-empty printable ASCII without `/`, got {0:?}")]
    Region(String),
}

/// Why a URL cannot be presigned.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum S3Error {
    /// Not an absolute `http(s)://host/…` URL.
    #[error("not an absolute http(s) URL: {0:?}")]
    Url(String),
    /// The URL carries `user:password@`.
    #[error("the URL carries user information")]
    UserInfo,
    /// The URL already carries one of [`CREDENTIAL_PARAMS`].
    #[error("the URL already carries `{0}`")]
    CredentialParam(String),
    /// The validity ends at or before its start.
    #[error("the validity ends at or before its start")]
    EmptyValidity,
    /// The validity is longer than SigV4's 7 days.
    #[error("a validity of {0} s is longer than SigV4's {MAX_EXPIRES} s")]
    TooLong(u64),
    /// The start is past year 9999 and has no `X-Amz-Date`.
    #[error("the start {0} has no X-Amz-Date")]
    Date(u64),
    /// The range is empty or not printable ASCII.
    #[error("the range is not a printable ASCII header value")]
    Range,
}

/// Why a presigned URL does not verify. The texts name no credential.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum S3Invalid {
    /// Not an absolute `http(s)://host/…` URL.
    #[error("not an absolute http(s) URL")]
    Url,
    /// A credential parameter is missing.
    #[error("credentials missing: {0}")]
    Missing(&'static str),
    /// A credential parameter is given twice.
    #[error("conflicting credentials: {0} given more than once")]
    Conflicting(&'static str),
    /// `X-Amz-Algorithm` is not `AWS4-HMAC-SHA256`.
    #[error("unsupported algorithm")]
    Algorithm,
    /// `X-Amz-Credential` is not `KEY/YYYYMMDD/REGION/SERVICE/aws4_request`.
    #[error("malformed credential scope")]
    Credential,
    /// `X-Amz-Date` is not `YYYYMMDDTHHMMSSZ`, or not the scope's day.
    #[error("malformed X-Amz-Date")]
    Date,
    /// `X-Amz-Expires` is not a number of seconds from 1 to 604800.
    #[error("X-Amz-Expires must be 1 to {MAX_EXPIRES} seconds")]
    Expires,
    /// `X-Amz-SignedHeaders` is not `host` or `host;range`.
    #[error("unsupported signed headers")]
    SignedHeaders,
    /// The URL signs a header the request does not carry.
    #[error("signed header {0} missing from the request")]
    MissingHeader(&'static str),
    /// The scope names another access key, region or service than this signer's.
    #[error("credential scope is not this signer's")]
    WrongScope,
    /// The session token is missing, unexpected or another one.
    #[error("session token is not this signer's")]
    SessionToken,
    /// The signature is not the one these credentials give.
    #[error("bad signature")]
    BadSignature,
    /// Signed for a moment more than 15 minutes ahead of `now` (S3's allowed skew).
    #[error("signed at {signed_at}, ahead of now")]
    NotYetValid {
        /// The `X-Amz-Date`, unix seconds.
        signed_at: u64,
    },
    /// The URL expired.
    #[error("expired at {expiry} ({ago}s ago)")]
    Expired {
        /// `X-Amz-Date` + `X-Amz-Expires`.
        expiry: u64,
        /// How long ago, in seconds.
        ago: u64,
    },
}

/// How far ahead of the verifier's clock a signing time may be: S3's `RequestTimeTooSkewed`.
const ALLOWED_SKEW: u64 = 900;

/// What a presigned URL says about its credentials, read without checking them: for
/// `signgate explain`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct S3Presigned {
    /// The access key id the credential scope names.
    pub access_key_id: String,
    /// The scope's day, `YYYYMMDD`.
    pub scope_date: String,
    /// The scope's region.
    pub region: String,
    /// The scope's service.
    pub service: String,
    /// `X-Amz-Date`, unix seconds.
    pub signed_at: u64,
    /// `X-Amz-Expires`, seconds.
    pub expires_in: u64,
    /// `X-Amz-SignedHeaders`, in order.
    pub signed_headers: Vec<String>,
    /// Whether an `X-Amz-Security-Token` is present.
    pub session_token: bool,
}

impl S3Presigned {
    /// When the URL stops being valid: `X-Amz-Date` + `X-Amz-Expires`.
    pub fn expiry(&self) -> u64 {
        self.signed_at.saturating_add(self.expires_in)
    }

    /// Reads the credentials of a presigned URL; checks their form, not their signature.
    pub fn decode(url: &str) -> Result<Self, S3Invalid> {
        let target = Target::parse(url).map_err(|_| S3Invalid::Url)?;
        Ok(Found::collect(&target)?.presigned)
    }
}

/// Presigns GETs for one set of S3 credentials in one region.
#[derive(Debug, Clone)]
pub struct S3Signer {
    access_key_id: String,
    secret: TextSecret,
    /// The session token of temporary credentials: written into every URL, so no secret from
    /// the client, but kept out of logs all the same.
    session_token: Option<TextSecret>,
    region: String,
    day_key: DayKey,
}

/// SigV4's derived key for the last day signed or verified: the four HMACs that derive it give
/// the same key all day, so they are done once a day instead of for every URL.
#[derive(Default)]
struct DayKey(std::sync::Mutex<Option<(String, [u8; 32])>>);

impl DayKey {
    /// The key for `day`: the one kept if it is that day's, else `derive`d and kept.
    fn get(&self, day: &str, derive: impl FnOnce() -> [u8; 32]) -> [u8; 32] {
        let mut kept = self
            .0
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        match kept.as_ref() {
            Some((kept_day, key)) if kept_day == day => *key,
            _ => {
                let key = derive();
                *kept = Some((day.to_owned(), key));
                key
            }
        }
    }
}

/// A clone derives its own keys: nothing is shared between signers.
impl Clone for DayKey {
    fn clone(&self) -> Self {
        Self::default()
    }
}

/// Derived from the secret: never shown.
impl std::fmt::Debug for DayKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("DayKey(..)")
    }
}

impl S3Signer {
    /// A signer for `region` (opaque to SigV4: R2 says `auto`), with long-term credentials.
    pub fn new(
        access_key_id: String,
        secret: TextSecret,
        region: String,
    ) -> Result<Self, S3ConfigError> {
        if !scope_part(&access_key_id) {
            return Err(S3ConfigError::AccessKeyId);
        }
        if !scope_part(&region) {
            return Err(S3ConfigError::Region(region));
        }
        Ok(Self {
            access_key_id,
            secret,
            session_token: None,
            region,
            day_key: DayKey::default(),
        })
    }

    /// The same signer with temporary credentials' session token.
    pub fn with_session_token(self, token: TextSecret) -> Self {
        Self {
            session_token: Some(token),
            ..self
        }
    }

    /// The presigned GET URL of `url`, the object's absolute URL
    /// (`https://bucket.s3.eu-west-1.amazonaws.com/key` or `http://127.0.0.1:9000/bucket/key`;
    /// its path and query are re-encoded as SigV4 wants, so any escaping, or none, will do),
    /// signed at `validity.start` (so a whole expiry bucket gets one URL) until
    /// `validity.expiry`. Its own query parameters (`versionId`, `response-*`) are kept, first.
    pub fn presign(&self, url: &str, validity: Validity) -> Result<String, S3Error> {
        Ok(self.steps(url, None, validity)?.url)
    }

    /// As [`S3Signer::presign`], with `range` (`bytes=0-99`) signed as the `Range` header: the
    /// URL then works only with that header.
    pub fn presign_range(
        &self,
        url: &str,
        range: &str,
        validity: Validity,
    ) -> Result<String, S3Error> {
        Ok(self.steps(url, Some(range), validity)?.url)
    }

    /// Checks a presigned URL as S3 would for a request without a `Range` header: these
    /// credentials, the signature (in constant time), then the time.
    pub fn verify(&self, url: &str, now: u64) -> Result<S3Presigned, S3Invalid> {
        self.verify_range(url, None, now)
    }

    /// As [`S3Signer::verify`] for a request whose `Range` header is `range`.
    pub fn verify_range(
        &self,
        url: &str,
        range: Option<&str>,
        now: u64,
    ) -> Result<S3Presigned, S3Invalid> {
        let target = Target::parse(url).map_err(|_| S3Invalid::Url)?;
        let found = Found::collect(&target)?;
        let presigned = found.presigned;
        if presigned.access_key_id != self.access_key_id
            || presigned.region != self.region
            || presigned.service != SERVICE
        {
            return Err(S3Invalid::WrongScope);
        }
        let expected = self.session_token.as_ref().map(TextSecret::expose);
        if found.session_token.as_deref() != expected {
            return Err(S3Invalid::SessionToken);
        }
        let range = match presigned.signed_headers.len() {
            1 => None,
            _ => Some(
                range
                    .and_then(canonical_header_value)
                    .ok_or(S3Invalid::MissingHeader("range"))?,
            ),
        };
        let amz_date = amz_date(presigned.signed_at).ok_or(S3Invalid::Date)?;
        let canonical_request = canonical_request(&target, &found.signed_params, range.as_deref());
        let string_to_sign = string_to_sign(&amz_date, &self.scope(&amz_date), &canonical_request);
        let signature = hex_decode(&found.signature).ok_or(S3Invalid::BadSignature)?;
        keyed(&self.signing_key(&amz_date[..8]))
            .chain_update(string_to_sign.as_bytes())
            .verify_slice(&signature)
            .map_err(|_| S3Invalid::BadSignature)?;
        if presigned.signed_at > now.saturating_add(ALLOWED_SKEW) {
            return Err(S3Invalid::NotYetValid {
                signed_at: presigned.signed_at,
            });
        }
        let expiry = presigned.expiry();
        if now >= expiry {
            return Err(S3Invalid::Expired {
                expiry,
                ago: now - expiry,
            });
        }
        Ok(presigned)
    }

    /// Every step of presigning `url`, the intermediate strings included for the vectors.
    fn steps(&self, url: &str, range: Option<&str>, validity: Validity) -> Result<Steps, S3Error> {
        let target = Target::parse(url)?;
        if let Some((name, _)) = target
            .params
            .iter()
            .find(|(name, _)| credential_param(name).is_some())
        {
            return Err(S3Error::CredentialParam(name.clone()));
        }
        let expires = validity
            .expiry
            .checked_sub(validity.start)
            .filter(|seconds| *seconds > 0)
            .ok_or(S3Error::EmptyValidity)?;
        if expires > MAX_EXPIRES {
            return Err(S3Error::TooLong(expires));
        }
        let range = range
            .map(|range| canonical_header_value(range).ok_or(S3Error::Range))
            .transpose()?;
        let amz_date = amz_date(validity.start).ok_or(S3Error::Date(validity.start))?;
        let scope = self.scope(&amz_date);
        let signed_headers = if range.is_some() {
            "host;range"
        } else {
            "host"
        };

        let mut credentials = vec![
            (X_AMZ_ALGORITHM, ALGORITHM.to_owned()),
            (X_AMZ_CREDENTIAL, format!("{}/{scope}", self.access_key_id)),
            (X_AMZ_DATE, amz_date.clone()),
            (X_AMZ_EXPIRES, expires.to_string()),
            (X_AMZ_SIGNED_HEADERS, signed_headers.to_owned()),
        ];
        if let Some(token) = &self.session_token {
            credentials.push((X_AMZ_SECURITY_TOKEN, token.expose().to_owned()));
        }
        let mut signed_params = target.params.clone();
        signed_params.extend(
            credentials
                .iter()
                .map(|(name, value)| ((*name).to_owned(), encode(value.as_bytes()))),
        );
        let canonical_request = canonical_request(&target, &signed_params, range.as_deref());
        let string_to_sign = string_to_sign(&amz_date, &scope, &canonical_request);
        let signing_key = self.signing_key(&amz_date[..8]);
        let signature = hex_lower(
            &keyed(&signing_key)
                .chain_update(string_to_sign.as_bytes())
                .finalize()
                .into_bytes(),
        );

        let mut url = format!("{}://{}{}?", target.scheme, target.host, target.path);
        for (name, value) in &signed_params {
            url.push_str(name);
            url.push('=');
            url.push_str(value);
            url.push('&');
        }
        url.push_str(X_AMZ_SIGNATURE);
        url.push('=');
        url.push_str(&signature);
        Ok(Steps {
            url,
            canonical_request,
            string_to_sign,
            signing_key,
        })
    }

    /// `YYYYMMDD/region/s3/aws4_request` for the day of `amz_date`.
    fn scope(&self, amz_date: &str) -> String {
        format!("{}/{}/{SERVICE}/aws4_request", &amz_date[..8], self.region)
    }

    /// SigV4's derived key for one day, region and service.
    fn signing_key(&self, day: &str) -> [u8; 32] {
        self.day_key.get(day, || {
            let secret = format!("AWS4{}", self.secret.expose());
            let date = hmac(secret.as_bytes(), day.as_bytes());
            let region = hmac(&date, self.region.as_bytes());
            let service = hmac(&region, SERVICE.as_bytes());
            hmac(&service, b"aws4_request")
        })
    }
}

/// What presigning built, step by step.
// The intermediate strings are read only by the vector tests, which hold each step to botocore's.
#[cfg_attr(not(test), allow(dead_code))]
struct Steps {
    url: String,
    canonical_request: String,
    string_to_sign: String,
    signing_key: [u8; 32],
}

/// A URL taken apart, its path and parameters already in SigV4's encoding.
#[derive(Debug)]
struct Target {
    scheme: String,
    /// The `Host` header a client sends: the host, and the port unless the scheme's default.
    host: String,
    path: String,
    /// Name and value, each re-encoded, in URL order.
    params: Vec<(String, String)>,
}

impl Target {
    fn parse(url: &str) -> Result<Self, S3Error> {
        let bad = || S3Error::Url(url.to_owned());
        // What a browser escapes before sending, escaped first: the path and query are
        // re-encoded below anyway, and `http::Uri` refuses some of these bare.
        let sendable = utf8_percent_encode(url, SENT).to_string();
        let uri: http::Uri = sendable.parse().map_err(|_| bad())?;
        let scheme = uri.scheme_str().ok_or_else(bad)?;
        let default_port = match scheme {
            "https" => 443,
            "http" => 80,
            _ => return Err(bad()),
        };
        let authority = uri.authority().ok_or_else(bad)?;
        if authority.as_str().contains('@') {
            return Err(S3Error::UserInfo);
        }
        if authority.host().is_empty() {
            return Err(bad());
        }
        let host = match authority.port_u16() {
            Some(port) if port != default_port => format!("{}:{port}", authority.host()),
            _ => authority.host().to_owned(),
        };
        let params = uri
            .query()
            .unwrap_or("")
            .split('&')
            .filter(|pair| !pair.is_empty())
            .map(|pair| {
                let (name, value) = pair.split_once('=').unwrap_or((pair, ""));
                (reencode(name, UNRESERVED), reencode(value, UNRESERVED))
            })
            .collect();
        Ok(Self {
            scheme: scheme.to_owned(),
            host,
            path: reencode(uri.path(), PATH),
            params,
        })
    }
}

/// The credential parameters of a URL being verified, and the rest of what it signs.
struct Found {
    presigned: S3Presigned,
    session_token: Option<String>,
    signature: String,
    /// Every parameter but the signature, as the canonical query takes them.
    signed_params: Vec<(String, String)>,
}

impl Found {
    fn collect(target: &Target) -> Result<Self, S3Invalid> {
        let mut values: [Option<String>; 7] = Default::default();
        let mut signed_params = Vec::with_capacity(target.params.len());
        for (name, value) in &target.params {
            if let Some(index) = credential_param(name) {
                if values[index].is_some() {
                    return Err(S3Invalid::Conflicting(CREDENTIAL_PARAMS[index]));
                }
                values[index] = Some(decode(value));
            }
            if credential_param(name) != Some(6) {
                signed_params.push((name.clone(), value.clone()));
            }
        }
        let [
            algorithm,
            credential,
            date,
            expires,
            signed_headers,
            token,
            signature,
        ] = values;
        let required = |value: Option<String>, index: usize| {
            value.ok_or(S3Invalid::Missing(CREDENTIAL_PARAMS[index]))
        };
        if required(algorithm, 0)? != ALGORITHM {
            return Err(S3Invalid::Algorithm);
        }
        let credential = required(credential, 1)?;
        let date = required(date, 2)?;
        let expires = required(expires, 3)?;
        let signed_headers = required(signed_headers, 4)?;
        let signature = required(signature, 6)?;

        let scope: Vec<&str> = credential.split('/').collect();
        let [access_key_id, scope_date, region, service, "aws4_request"] = scope[..] else {
            return Err(S3Invalid::Credential);
        };
        let signed_at = parse_amz_date(&date).ok_or(S3Invalid::Date)?;
        if !date.starts_with(scope_date) || scope_date.len() != 8 {
            return Err(S3Invalid::Date);
        }
        let expires_in = expires
            .parse::<u64>()
            .ok()
            .filter(|seconds| (1..=MAX_EXPIRES).contains(seconds))
            .filter(|_| expires.bytes().all(|b| b.is_ascii_digit()))
            .ok_or(S3Invalid::Expires)?;
        if signed_headers != "host" && signed_headers != "host;range" {
            return Err(S3Invalid::SignedHeaders);
        }
        Ok(Self {
            presigned: S3Presigned {
                access_key_id: access_key_id.to_owned(),
                scope_date: scope_date.to_owned(),
                region: region.to_owned(),
                service: service.to_owned(),
                signed_at,
                expires_in,
                signed_headers: signed_headers.split(';').map(str::to_owned).collect(),
                session_token: token.is_some(),
            },
            session_token: token,
            signature,
            signed_params,
        })
    }
}

/// The index of `name`, in any case, in [`CREDENTIAL_PARAMS`].
fn credential_param(name: &str) -> Option<usize> {
    CREDENTIAL_PARAMS
        .iter()
        .position(|known| known.eq_ignore_ascii_case(name))
}

/// The canonical request of a GET: method, path, sorted query, headers, payload hash.
fn canonical_request(target: &Target, params: &[(String, String)], range: Option<&str>) -> String {
    let mut sorted: Vec<&(String, String)> = params.iter().collect();
    sorted.sort();
    let query = sorted
        .iter()
        .map(|(name, value)| format!("{name}={value}"))
        .collect::<Vec<_>>()
        .join("&");
    let (headers, signed) = match range {
        Some(range) => (
            format!("host:{}\nrange:{range}\n", target.host),
            "host;range",
        ),
        None => (format!("host:{}\n", target.host), "host"),
    };
    format!(
        "GET\n{}\n{query}\n{headers}\n{signed}\nUNSIGNED-PAYLOAD",
        target.path
    )
}

/// The string to sign: algorithm, date, scope and the canonical request's SHA-256.
fn string_to_sign(amz_date: &str, scope: &str, canonical_request: &str) -> String {
    let hash = hex_lower(&Sha256::digest(canonical_request.as_bytes()));
    format!("{ALGORITHM}\n{amz_date}\n{scope}\n{hash}")
}

/// A header value as SigV4 signs it: trimmed, runs of spaces made one; `None` unless it is
/// printable ASCII (what a client can send and a server reads back alike).
fn canonical_header_value(value: &str) -> Option<String> {
    if value.trim().is_empty() || !value.bytes().all(|b| b == b' ' || b.is_ascii_graphic()) {
        return None;
    }
    Some(value.split_whitespace().collect::<Vec<_>>().join(" "))
}

/// Whether `part` can sit between the `/`s of a credential scope.
fn scope_part(part: &str) -> bool {
    !part.is_empty() && part.bytes().all(|b| b.is_ascii_graphic() && b != b'/')
}

fn encode(bytes: &[u8]) -> String {
    percent_encode(bytes, UNRESERVED).to_string()
}

fn decode(text: &str) -> String {
    percent_decode_str(text).decode_utf8_lossy().into_owned()
}

/// Decodes `%XX` (a `+` stays a `+`) and encodes again with `set`: what the client wrote and
/// what SigV4 signs then agree whatever escapes the client chose.
fn reencode(text: &str, set: &'static AsciiSet) -> String {
    let bytes: Vec<u8> = percent_decode_str(text).collect();
    percent_encode(&bytes, set).to_string()
}

/// HMAC-SHA256 of `message` under `key`.
fn hmac(key: &[u8], message: &[u8]) -> [u8; 32] {
    keyed(key)
        .chain_update(message)
        .finalize()
        .into_bytes()
        .into()
}

/// HMAC-SHA256 keyed with `key`, through `KeyInit::new` and one key block built as RFC 2104
/// says (zero-padded, or hashed first when longer than the block): the infallible form of
/// `new_from_slice`, whose error cannot happen for HMAC.
fn keyed(key: &[u8]) -> HmacSha256 {
    let mut block = Key::<HmacSha256>::default();
    if key.len() > block.len() {
        let digest = Sha256::digest(key);
        block[..digest.len()].copy_from_slice(&digest);
    } else {
        block[..key.len()].copy_from_slice(key);
    }
    HmacSha256::new(&block)
}

/// `YYYYMMDDTHHMMSSZ` for unix seconds; `None` past year 9999.
fn amz_date(unix: u64) -> Option<String> {
    let days = i64::try_from(unix / 86_400).ok()?;
    let seconds = unix % 86_400;
    let (year, month, day) = civil_from_days(days);
    (year <= 9999).then(|| {
        format!(
            "{year:04}{month:02}{day:02}T{:02}{:02}{:02}Z",
            seconds / 3600,
            seconds / 60 % 60,
            seconds % 60
        )
    })
}

/// Unix seconds of `YYYYMMDDTHHMMSSZ`.
fn parse_amz_date(text: &str) -> Option<u64> {
    let bytes = text.as_bytes();
    if bytes.len() != 16 || bytes[8] != b'T' || bytes[15] != b'Z' {
        return None;
    }
    let number = |range: std::ops::Range<usize>| -> Option<i64> {
        let digits = text.get(range)?;
        digits
            .bytes()
            .all(|b| b.is_ascii_digit())
            .then(|| digits.parse().ok())?
    };
    let (year, month, day) = (number(0..4)?, number(4..6)?, number(6..8)?);
    let (hour, minute, second) = (number(9..11)?, number(11..13)?, number(13..15)?);
    if !(1..=12).contains(&month)
        || !(1..=31).contains(&day)
        || hour > 23
        || minute > 59
        || second > 59
    {
        return None;
    }
    let days = days_from_civil(year, month, day);
    u64::try_from(days * 86_400 + hour * 3600 + minute * 60 + second)
        .ok()
        .filter(|unix| amz_date(*unix).as_deref() == Some(text))
}

/// The date of a day count from 1970-01-01 (Howard Hinnant's `civil_from_days`).
fn civil_from_days(days: i64) -> (i64, i64, i64) {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let day_of_era = z - era * 146_097;
    let year_of_era =
        (day_of_era - day_of_era / 1460 + day_of_era / 36_524 - day_of_era / 146_096) / 365;
    let day_of_year = day_of_era - (365 * year_of_era + year_of_era / 4 - year_of_era / 100);
    let mp = (5 * day_of_year + 2) / 153;
    let day = day_of_year - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = year_of_era + era * 400 + i64::from(month <= 2);
    (year, month, day)
}

#[cfg(test)]
mod tests {
    use serde_json::Value;

    use super::*;
    use crate::scheme::vectors::{self, text};

    fn cases() -> Vec<Value> {
        vectors::cases("s3_sigv4", 15)
    }

    fn vector(name: &str) -> Value {
        vectors::case("s3_sigv4", 15, name)
    }

    fn signer(case: &Value) -> S3Signer {
        let secret = TextSecret::new(text(case, "secret_access_key").to_owned()).expect("set");
        let signer = S3Signer::new(
            text(case, "access_key_id").to_owned(),
            secret,
            text(case, "region").to_owned(),
        )
        .expect("valid");
        match case["session_token"].as_str() {
            Some(token) => {
                signer.with_session_token(TextSecret::new(token.to_owned()).expect("set"))
            }
            None => signer,
        }
    }

    fn validity(case: &Value) -> Validity {
        let start = match text(case, "frozen_utc") {
            "2013-05-24T00:00:00Z" => 1_369_353_600,
            "2026-01-15T08:30:00Z" => 1_768_465_800,
            other => panic!("no unix time for {other}"),
        };
        let expires = case["expires_in"].as_u64().expect("expires_in");
        Validity {
            start,
            expiry: start + expires,
        }
    }

    fn range(case: &Value) -> Option<&str> {
        case["params"]["Range"].as_str()
    }

    /// The object's URL as a caller hands it over: the case's path, and its operation
    /// parameters (the decoded pairs before the `X-Amz-*` ones) written with `escape`.
    fn object_url(case: &Value, path: &str, escape: fn(&str) -> String) -> String {
        let mut url = format!("{}://{}{path}", text(case, "scheme"), text(case, "host"));
        let pairs = case["query"].as_array().expect("query pairs");
        let own: Vec<String> = pairs
            .iter()
            .map(|pair| {
                (
                    pair[0].as_str().expect("name"),
                    pair[1].as_str().expect("value"),
                )
            })
            .take_while(|(name, _)| !name.starts_with("X-Amz-"))
            .map(|(name, value)| format!("{}={}", escape(name), escape(value)))
            .collect();
        if !own.is_empty() {
            url.push('?');
            url.push_str(&own.join("&"));
        }
        url
    }

    /// Escapes only what cannot be sent bare (space, `"`, `%`, `?`, `#`, `&`, `=`, `+` and
    /// non-ASCII), in lowercase hex: another spelling of the same URL.
    fn loosely(text: &str) -> String {
        text.bytes()
            .map(|b| match b {
                b' ' | b'"' | b'%' | b'?' | b'#' | b'&' | b'=' | b'+' | 0x80.. => {
                    format!("%{b:02x}")
                }
                _ => char::from(b).to_string(),
            })
            .collect()
    }

    fn canonical(text: &str) -> String {
        encode(text.as_bytes())
    }

    fn steps(case: &Value, url: &str) -> Steps {
        signer(case)
            .steps(url, range(case), validity(case))
            .unwrap_or_else(|e| panic!("{}: {e}", case["name"]))
    }

    #[test]
    fn every_vector_is_reproduced_step_by_step() {
        for case in cases() {
            let name = &case["name"];
            let steps = steps(&case, &object_url(&case, text(&case, "path"), canonical));
            assert_eq!(
                steps.canonical_request,
                text(&case, "canonical_request"),
                "{name}"
            );
            assert_eq!(
                steps.string_to_sign,
                text(&case, "string_to_sign"),
                "{name}"
            );
            assert_eq!(
                hex_lower(&steps.signing_key),
                text(&case, "signing_key_hex"),
                "{name}"
            );
            assert_eq!(steps.url, text(&case, "signed_url"), "{name}");
            let signer = signer(&case);
            let url = object_url(&case, text(&case, "path"), canonical);
            let presigned = match range(&case) {
                Some(range) => signer.presign_range(&url, range, validity(&case)),
                None => signer.presign(&url, validity(&case)),
            };
            assert_eq!(
                presigned.as_deref(),
                Ok(text(&case, "signed_url")),
                "{name}"
            );
        }
    }

    #[test]
    fn another_spelling_of_the_same_url_signs_the_same() {
        let mut respelled = 0;
        for case in cases() {
            let raw_path = decode(text(&case, "path"));
            let url = object_url(&case, &loosely(&raw_path), loosely);
            respelled += usize::from(url != object_url(&case, text(&case, "path"), canonical));
            assert_eq!(
                steps(&case, &url).url,
                text(&case, "signed_url"),
                "{}",
                case["name"]
            );
        }
        assert_eq!(respelled, 7, "cases written another way");
    }

    #[test]
    fn every_vector_verifies_until_it_expires() {
        for case in cases() {
            let name = &case["name"];
            let url = text(&case, "signed_url");
            let Validity { start, expiry } = validity(&case);
            let signer = signer(&case);
            let read = signer
                .verify_range(url, range(&case), start)
                .expect("verifies");
            assert_eq!(read.expiry(), expiry, "{name}");
            assert_eq!(read, S3Presigned::decode(url).expect("decodes"), "{name}");
            assert!(
                signer.verify_range(url, range(&case), expiry - 1).is_ok(),
                "{name}"
            );
            assert_eq!(
                signer.verify_range(url, range(&case), expiry + 5),
                Err(S3Invalid::Expired { expiry, ago: 5 }),
                "{name}"
            );
            assert_eq!(
                signer.verify_range(url, range(&case), start - ALLOWED_SKEW - 1),
                Err(S3Invalid::NotYetValid { signed_at: start }),
                "{name}"
            );
        }
    }

    #[test]
    fn tampered_urls_are_refused() {
        for case in cases() {
            let name = &case["name"];
            let url = text(&case, "signed_url");
            let now = validity(&case).start;
            let signer = signer(&case);
            let verify = |url: &str| signer.verify_range(url, range(&case), now);
            let (path_end, _) = url.split_once('?').expect("a query");
            let other_key = url.replacen(path_end, &format!("{path_end}x"), 1);
            assert_eq!(verify(&other_key), Err(S3Invalid::BadSignature), "{name}");
            let expires = format!("X-Amz-Expires={}", case["expires_in"]);
            let longer = url.replace(&expires, "X-Amz-Expires=604800");
            assert_eq!(verify(&longer), Err(S3Invalid::BadSignature), "{name}");
            let (rest, sig) = url.rsplit_once("X-Amz-Signature=").expect("signature");
            let mut flipped = sig.as_bytes().to_vec();
            flipped[0] = if flipped[0] == b'0' { b'1' } else { b'0' };
            let forged = format!(
                "{rest}X-Amz-Signature={}",
                String::from_utf8_lossy(&flipped)
            );
            assert_eq!(verify(&forged), Err(S3Invalid::BadSignature), "{name}");
            let other_secret = S3Signer {
                secret: TextSecret::new("another secret".into()).expect("set"),
                ..signer.clone()
            };
            assert_eq!(
                other_secret.verify_range(url, range(&case), now),
                Err(S3Invalid::BadSignature),
                "{name}"
            );
        }
    }

    #[test]
    fn session_token_and_range_must_match_the_signers() {
        let case = vector("us_east_1_session_token");
        let url = text(&case, "signed_url");
        let now = validity(&case).start;
        let with_token = signer(&case);
        let without_token = S3Signer {
            session_token: None,
            ..with_token.clone()
        };
        assert!(with_token.verify(url, now).is_ok());
        assert_eq!(without_token.verify(url, now), Err(S3Invalid::SessionToken));
        let other_token = with_token
            .clone()
            .with_session_token(TextSecret::new("another".into()).expect("set"));
        assert_eq!(other_token.verify(url, now), Err(S3Invalid::SessionToken));
        let plain = vector("us_east_1_key_with_spaces");
        assert_eq!(
            with_token.verify(text(&plain, "signed_url"), now),
            Err(S3Invalid::SessionToken)
        );

        let case = vector("us_east_1_range_signed_header");
        let url = text(&case, "signed_url");
        let signer = signer(&case);
        assert_eq!(
            signer.verify(url, now),
            Err(S3Invalid::MissingHeader("range"))
        );
        assert_eq!(
            signer.verify_range(url, Some("bytes=0-100"), now),
            Err(S3Invalid::BadSignature)
        );
        assert!(signer.verify_range(url, Some("  bytes=0-99 "), now).is_ok());
    }

    #[test]
    fn another_key_region_or_service_is_refused_before_the_signature() {
        let case = vector("eu_west_1_virtual_regional_host");
        let url = text(&case, "signed_url");
        let now = validity(&case).start;
        let signer = signer(&case);
        for (from, to) in [
            ("AKIAZSIGNGATETEST001%2F", "AKIAZSIGNGATETEST002%2F"),
            ("%2Feu-west-1%2F", "%2Fus-east-1%2F"),
            ("%2Fs3%2F", "%2Fs4%2F"),
        ] {
            assert_eq!(
                signer.verify(&url.replace(from, to), now),
                Err(S3Invalid::WrongScope)
            );
        }
        let other_day = url.replace("%2F20260115%2F", "%2F20260116%2F");
        assert_eq!(signer.verify(&other_day, now), Err(S3Invalid::Date));
        let missing = url.replace("X-Amz-Date=", "X-Amz-Datum=");
        assert_eq!(
            signer.verify(&missing, now),
            Err(S3Invalid::Missing(X_AMZ_DATE))
        );
        let twice = format!("{url}&x-amz-expires=60");
        assert_eq!(
            signer.verify(&twice, now),
            Err(S3Invalid::Conflicting(X_AMZ_EXPIRES))
        );
        let sigv2 = url.replace("AWS4-HMAC-SHA256", "AWS4-HMAC-SHA1");
        assert_eq!(signer.verify(&sigv2, now), Err(S3Invalid::Algorithm));
        assert_eq!(signer.verify("not a url", now), Err(S3Invalid::Url));
    }

    #[test]
    fn validity_is_one_second_to_seven_days() {
        let case = vector("minio_path_style");
        let signer = signer(&case);
        let url = "http://127.0.0.1:9000/gallery/x.jpg";
        let at = |start: u64, expiry: u64| signer.presign(url, Validity { start, expiry });
        let week = at(1_768_465_800, 1_768_465_800 + MAX_EXPIRES).expect("7 days is allowed");
        assert!(week.contains("&X-Amz-Expires=604800&"));
        assert_eq!(
            at(1_768_465_800, 1_768_465_800 + MAX_EXPIRES + 1),
            Err(S3Error::TooLong(604_801))
        );
        assert_eq!(
            at(1_768_465_800, 1_768_465_800),
            Err(S3Error::EmptyValidity)
        );
        assert_eq!(
            at(1_768_465_800, 1_768_465_799),
            Err(S3Error::EmptyValidity)
        );
    }

    #[test]
    fn urls_that_cannot_be_presigned_are_refused() {
        let signer = signer(&vector("minio_path_style"));
        let validity = Validity {
            start: 1_768_465_800,
            expiry: 1_768_466_100,
        };
        for name in CREDENTIAL_PARAMS {
            let url = format!("https://b.s3.amazonaws.com/k?a=1&{}=x", name.to_lowercase());
            assert_eq!(
                signer.presign(&url, validity),
                Err(S3Error::CredentialParam(name.to_lowercase()))
            );
        }
        assert_eq!(
            signer.presign("https://user:pw@b.s3.amazonaws.com/k", validity),
            Err(S3Error::UserInfo)
        );
        for url in ["b.s3.amazonaws.com/k", "ftp://b/k", "/k", "https:///k"] {
            assert_eq!(signer.presign(url, validity), Err(S3Error::Url(url.into())));
        }
        assert_eq!(
            signer.presign_range("https://b/k", "bytes=0-9\n", validity),
            Err(S3Error::Range)
        );
    }

    #[test]
    fn a_plus_in_the_query_is_a_plus() {
        let signer = signer(&vector("minio_path_style"));
        let validity = Validity {
            start: 1_768_465_800,
            expiry: 1_768_466_100,
        };
        let url = "http://127.0.0.1:9000/b/k.svg?response-content-type=image/svg+xml";
        let presigned = signer.presign(url, validity).expect("presigns");
        assert!(
            presigned.starts_with(
                "http://127.0.0.1:9000/b/k.svg?response-content-type=image%2Fsvg%2Bxml&X-Amz-"
            ),
            "{presigned}"
        );
    }

    #[test]
    fn a_default_port_is_left_out_of_the_host() {
        let case = vector("aws_docs_example");
        let with_port = text(&case, "signed_url").replace(".com/", ".com:443/");
        let url = object_url(&case, text(&case, "path"), canonical).replace(".com/", ".com:443/");
        assert_ne!(with_port, text(&case, "signed_url"));
        assert_eq!(steps(&case, &url).url, text(&case, "signed_url"));
    }

    fn signer_for_tomorrow(case: &Value, url: &str, validity: Validity) -> String {
        signer(case).presign(url, validity).expect("signs")
    }

    #[test]
    fn the_kept_day_key_turns_with_the_day() {
        let case = vector("aws_docs_example");
        let url = object_url(&case, text(&case, "path"), canonical);
        let day = validity(&case);
        let next_day = Validity {
            start: day.start + 86_400,
            expiry: day.expiry + 86_400,
        };
        let signer = signer(&case);
        assert_eq!(
            signer.presign(&url, day).expect("signs"),
            text(&case, "signed_url")
        );
        // After a day's URL, the next day's is what a fresh signer writes, and verifies.
        let tomorrow = signer.presign(&url, next_day).expect("signs");
        assert_eq!(tomorrow, signer_for_tomorrow(&case, &url, next_day));
        assert!(signer.verify(&tomorrow, next_day.start).is_ok());
        // And back: a day's URL still verifies after the key moved on.
        assert!(signer.verify(text(&case, "signed_url"), day.start).is_ok());
        assert!(!format!("{signer:?}").contains(text(&case, "secret_access_key")));
    }

    #[test]
    fn amz_dates_round_trip() {
        for (unix, text) in [
            (0, "19700101T000000Z"),
            (1_369_353_600, "20130524T000000Z"),
            (1_768_465_800, "20260115T083000Z"),
            (1_709_251_199, "20240229T235959Z"),
            (253_402_300_799, "99991231T235959Z"),
        ] {
            assert_eq!(amz_date(unix).as_deref(), Some(text));
            assert_eq!(parse_amz_date(text), Some(unix));
        }
        assert_eq!(amz_date(253_402_300_800), None);
        for bad in [
            "20230229T000000Z",
            "20260115T083000",
            "2026011TT083000Z",
            "20261315T083000Z",
            "20260115T246000Z",
            "+0260115T083000Z",
        ] {
            assert_eq!(parse_amz_date(bad), None, "{bad}");
        }
    }

    #[test]
    fn long_keys_are_hashed_into_the_block_as_hmac_says() {
        for len in [0, 1, 32, 63, 64, 65, 200] {
            let key = vec![0x5a; len];
            let reference = HmacSha256::new_from_slice(&key)
                .expect("any length")
                .chain_update(b"message")
                .finalize()
                .into_bytes();
            assert_eq!(hmac(&key, b"message")[..], reference[..], "{len}");
        }
    }

    #[test]
    fn debug_never_shows_a_credential() {
        let case = vector("us_east_1_session_token");
        let shown = format!("{:?}", signer(&case));
        assert!(!shown.contains(text(&case, "secret_access_key")), "{shown}");
        assert!(!shown.contains("FwoG"), "{shown}");
        assert!(shown.contains("<redacted>"));
    }
}
