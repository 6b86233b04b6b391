//! Akamai EdgeAuth (Token Auth 2.0) tokens, as akamai-edgeauth 0.3.2 writes them: ACL tokens
//! for every path a pattern covers, URL tokens for one path.
//!
//! A token is `ip`, `st`, `exp`, `acl`, `id`, `data` and `hmac`, those present, joined by the
//! field delimiter (`~`). The HMAC covers the same text, plus `url=<path>` for a URL token and
//! `salt=<salt>`: neither is written into the token, so the edge must know both.

use std::fmt;

use hmac::{Hmac, KeyInit, Mac};
use md5::Md5;
use sha1::Sha1;
use sha2::Sha256;

use super::{Invalid, Validity, wildcard};
use crate::secret::{hex_decode, hex_lower};

/// The HMAC's hash: what the property's Token Auth setting names.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Algorithm {
    /// HMAC-SHA256, the SDK's and Akamai's default.
    #[default]
    Sha256,
    /// HMAC-SHA1.
    Sha1,
    /// HMAC-MD5.
    Md5,
}

impl std::str::FromStr for Algorithm {
    type Err = EdgeAuthKeyError;

    /// `sha256`, `sha1` or `md5`, in any case, as the SDK reads them.
    fn from_str(name: &str) -> Result<Self, Self::Err> {
        match name.to_ascii_lowercase().as_str() {
            "sha256" => Ok(Self::Sha256),
            "sha1" => Ok(Self::Sha1),
            "md5" => Ok(Self::Md5),
            _ => Err(EdgeAuthKeyError::UnknownAlgorithm),
        }
    }
}

/// A key or algorithm that cannot make tokens. No variant carries key material.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum EdgeAuthKeyError {
    /// The key is not an even number of hex digits, or is empty.
    #[error("the EdgeAuth key must be a non-empty string of hex digits")]
    NotHex,
    /// The algorithm is not `sha256`, `sha1` or `md5`.
    #[error("the EdgeAuth algorithm must be sha256, sha1 or md5")]
    UnknownAlgorithm,
}

/// Times a token cannot carry, refused as the SDK refuses them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum TokenTimeError {
    /// A start, end or window of zero.
    #[error("`{0}` must be greater than 0")]
    Zero(&'static str),
    /// The token would expire at or before its start.
    #[error("the token would expire at or before its start")]
    NotAfterStart,
}

/// When a token's `st` is, as the SDK's `start_time` says it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StartTime {
    /// No `st` field: valid from whenever it is handed out.
    Omitted,
    /// `st` at this unix second.
    At(u64),
    /// `st` at the `now` given when resolving (the SDK's `start_time="now"`).
    Now,
}

/// When a token's `exp` is, as the SDK's `end_time` or `window_seconds` says it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EndTime {
    /// `exp` at this unix second.
    At(u64),
    /// `exp` this many seconds after the start, or after `now` when there is no start.
    Window(u64),
}

/// A token's `st` (optional) and `exp`, checked: both non-zero, `exp` after `st`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TokenTimes {
    start: Option<u64>,
    expiry: u64,
}

impl TokenTimes {
    /// Resolves the SDK's `start_time` and `end_time`/`window_seconds` against `now` (unix
    /// seconds, read by the caller): what `start_time="now"` or a window without a start means.
    pub fn resolve(start: StartTime, end: EndTime, now: u64) -> Result<Self, TokenTimeError> {
        let start = match start {
            StartTime::Omitted => None,
            StartTime::At(0) => return Err(TokenTimeError::Zero("start_time")),
            StartTime::At(at) => Some(at),
            StartTime::Now => Some(now),
        };
        let expiry = match end {
            EndTime::At(0) => return Err(TokenTimeError::Zero("end_time")),
            EndTime::At(at) => at,
            EndTime::Window(0) => return Err(TokenTimeError::Zero("window_seconds")),
            EndTime::Window(window) => start.unwrap_or(now).saturating_add(window),
        };
        if start.is_some_and(|start| expiry <= start) {
            return Err(TokenTimeError::NotAfterStart);
        }
        Ok(Self { start, expiry })
    }

    /// `st`, when the token has one.
    pub fn start(&self) -> Option<u64> {
        self.start
    }

    /// `exp`.
    pub fn expiry(&self) -> u64 {
        self.expiry
    }
}

/// A gateway's validity: `st` at the start of the expiry bucket, so every replica hands out the
/// same token within it, and `exp` at its expiry.
impl TryFrom<Validity> for TokenTimes {
    type Error = TokenTimeError;

    fn try_from(validity: Validity) -> Result<Self, Self::Error> {
        Self::resolve(
            StartTime::At(validity.start),
            EndTime::At(validity.expiry),
            validity.start,
        )
    }
}

/// The optional fields a token carries: the SDK's `ip`, `session_id` and `payload`. An empty
/// string counts as absent, as in the SDK.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct TokenFields<'a> {
    /// `ip`: the client address the token is bound to.
    pub ip: Option<&'a str>,
    /// `id`: a session id.
    pub id: Option<&'a str>,
    /// `data`: an opaque payload.
    pub data: Option<&'a str>,
}

/// The HMAC keyed once at construction, so the key itself is not kept.
#[derive(Clone)]
enum Keyed {
    Sha256(Hmac<Sha256>),
    Sha1(Hmac<Sha1>),
    Md5(Hmac<Md5>),
}

impl Keyed {
    fn new(algorithm: Algorithm, key: &[u8]) -> Option<Self> {
        Some(match algorithm {
            Algorithm::Sha256 => Self::Sha256(Hmac::new_from_slice(key).ok()?),
            Algorithm::Sha1 => Self::Sha1(Hmac::new_from_slice(key).ok()?),
            Algorithm::Md5 => Self::Md5(Hmac::new_from_slice(key).ok()?),
        })
    }

    /// The HMAC of `message`.
    fn tag(&self, message: &[u8]) -> Vec<u8> {
        match self {
            Self::Sha256(keyed) => fed(keyed, message).finalize().into_bytes().to_vec(),
            Self::Sha1(keyed) => fed(keyed, message).finalize().into_bytes().to_vec(),
            Self::Md5(keyed) => fed(keyed, message).finalize().into_bytes().to_vec(),
        }
    }

    /// Whether `tag` is the HMAC of `message`, compared in constant time.
    fn verify(&self, message: &[u8], tag: &[u8]) -> bool {
        match self {
            Self::Sha256(keyed) => fed(keyed, message).verify_slice(tag).is_ok(),
            Self::Sha1(keyed) => fed(keyed, message).verify_slice(tag).is_ok(),
            Self::Md5(keyed) => fed(keyed, message).verify_slice(tag).is_ok(),
        }
    }
}

/// `value` unless it is empty: the SDK tests its optional fields for truth.
fn present(value: Option<&str>) -> Option<&str> {
    value.filter(|value| !value.is_empty())
}

/// A copy of the keyed state with `message` fed in: cloning skips re-keying.
fn fed<M: Mac + Clone>(keyed: &M, message: &[u8]) -> M {
    let mut mac = keyed.clone();
    mac.update(message);
    mac
}

/// Makes and checks EdgeAuth tokens with one key: the SDK's `EdgeAuth` minus the clock (times
/// come in [`TokenTimes`]) and the token name (the caller puts the token in the query
/// parameter or cookie its route names, `__token__` or `hdnts`). `Debug` shows neither the key
/// nor the salt.
#[derive(Clone)]
pub struct EdgeAuth {
    keyed: Keyed,
    algorithm: Algorithm,
    field_delimiter: char,
    acl_delimiter: char,
    escape_early: bool,
    salt: Option<String>,
}

impl EdgeAuth {
    /// A token maker keyed with the hex-decoded `key_hex`, with the SDK's defaults: fields
    /// joined by `~`, ACLs by `!`, no early escaping, no salt.
    pub fn new(key_hex: &str, algorithm: Algorithm) -> Result<Self, EdgeAuthKeyError> {
        let key = hex_decode(key_hex)
            .filter(|key| !key.is_empty())
            .ok_or(EdgeAuthKeyError::NotHex)?;
        Ok(Self {
            keyed: Keyed::new(algorithm, &key).ok_or(EdgeAuthKeyError::NotHex)?,
            algorithm,
            field_delimiter: '~',
            acl_delimiter: '!',
            escape_early: false,
            salt: None,
        })
    }

    /// Joins fields with `field` and ACLs with `acl` instead of `~` and `!`.
    pub fn with_delimiters(self, field: char, acl: char) -> Self {
        Self {
            field_delimiter: field,
            acl_delimiter: acl,
            ..self
        }
    }

    /// The SDK's `escape_early`: `ip`, `id`, `data` and the hashed URL are `quote_plus`-encoded
    /// with lowercase escapes before signing (the ACL never is), for edges configured to
    /// compare the escaped form.
    pub fn with_escape_early(self, escape_early: bool) -> Self {
        Self {
            escape_early,
            ..self
        }
    }

    /// Hashes `salt=<salt>` after the fields (never written into the token). Empty means none.
    pub fn with_salt(self, salt: &str) -> Self {
        Self {
            salt: (!salt.is_empty()).then(|| salt.to_owned()),
            ..self
        }
    }

    /// Whether `path`, written as an ACL, grants that one path: it holds no wildcard (`*`,
    /// `?`), no ACL delimiter (another ACL would follow) and no field delimiter (another field
    /// would).
    pub fn is_literal_acl(&self, path: &str) -> bool {
        !path.contains(|c| {
            c == '*' || c == '?' || c == self.acl_delimiter || c == self.field_delimiter
        })
    }

    /// A token granting every path one of `acls` matches (`*` and `?` wildcards), joined with
    /// the ACL delimiter. An empty list writes `acl=`, which grants nothing.
    pub fn acl_token(&self, acls: &[&str], times: TokenTimes, fields: &TokenFields<'_>) -> String {
        let acl = acls.join(self.acl_delimiter.encode_utf8(&mut [0; 4]));
        self.token(Path::Acl(&acl), times, fields)
    }

    /// A token granting `url_path` alone (the path and query the edge sees, as the SDK's
    /// `generate_url_token` takes it): hashed, not written into the token.
    pub fn url_token(&self, url_path: &str, times: TokenTimes, fields: &TokenFields<'_>) -> String {
        self.token(Path::Url(url_path), times, fields)
    }

    fn token(&self, path: Path<'_>, times: TokenTimes, fields: &TokenFields<'_>) -> String {
        let mut token = String::new();
        let mut push = |name: &str, value: &str| {
            if !token.is_empty() {
                token.push(self.field_delimiter);
            }
            token.push_str(name);
            token.push('=');
            token.push_str(value);
        };
        if let Some(ip) = present(fields.ip) {
            push("ip", &self.escape(ip));
        }
        if let Some(start) = times.start {
            push("st", &start.to_string());
        }
        push("exp", &times.expiry.to_string());
        if let Path::Acl(acl) = path {
            push("acl", acl);
        }
        if let Some(id) = present(fields.id) {
            push("id", &self.escape(id));
        }
        if let Some(data) = present(fields.data) {
            push("data", &self.escape(data));
        }
        let url = match path {
            Path::Url(url) => Some(url),
            Path::Acl(_) => None,
        };
        let hmac = self.keyed.tag(self.hmac_input(&token, url).as_bytes());
        format!("{token}{}hmac={}", self.field_delimiter, hex_lower(&hmac))
    }

    /// What the HMAC covers: the token's fields, then `url=` for a URL token, then `salt=`.
    fn hmac_input(&self, fields: &str, url: Option<&str>) -> String {
        let mut input = fields.to_owned();
        if let Some(url) = url {
            input.push(self.field_delimiter);
            input.push_str("url=");
            input.push_str(&self.escape(url));
        }
        if let Some(salt) = &self.salt {
            input.push(self.field_delimiter);
            input.push_str("salt=");
            input.push_str(salt);
        }
        input
    }

    fn escape<'a>(&self, value: &'a str) -> std::borrow::Cow<'a, str> {
        if self.escape_early {
            quote_plus_lower(value).into()
        } else {
            value.into()
        }
    }

    /// Reads a token's fields without checking its HMAC: for `signgate explain`.
    pub fn decode(&self, token: &str) -> Result<EdgeAuthToken, Invalid> {
        let marker = format!("{}hmac=", self.field_delimiter);
        let (fields, hmac) = token.rsplit_once(&marker).ok_or(Invalid::Missing("hmac"))?;
        let [mut ip, mut st, mut exp, mut acl, mut id, mut data] = [const { None }; 6];
        let mut last: Option<&mut String> = None;
        for piece in fields.split(self.field_delimiter) {
            let (name, value) = piece.split_once('=').unwrap_or(("", piece));
            let slot: &mut Option<String> = match name {
                "ip" => &mut ip,
                "st" => &mut st,
                "exp" => &mut exp,
                "acl" => &mut acl,
                "id" => &mut id,
                "data" => &mut data,
                // A value that held the delimiter itself (an unescaped `data`, an ACL with
                // `~`): the SDK writes it as is, so read it back whole.
                _ => match last.as_deref_mut() {
                    Some(value) => {
                        value.push(self.field_delimiter);
                        value.push_str(piece);
                        continue;
                    }
                    None => return Err(Invalid::Malformed("token")),
                },
            };
            if slot.is_some() {
                return Err(Invalid::Malformed("token"));
            }
            last = Some(slot.insert(value.to_owned()));
        }
        let number = |text: Option<String>, name| match text {
            None => Ok(None),
            Some(text) => text.parse().map(Some).map_err(|_| Invalid::Malformed(name)),
        };
        Ok(EdgeAuthToken {
            ip,
            start: number(st, "st")?,
            expiry: number(exp, "exp")?.ok_or(Invalid::Missing("exp"))?,
            acl,
            id,
            data,
            hmac: hmac.to_owned(),
            hmac_input_fields: fields.to_owned(),
        })
    }

    /// Checks a token for a request of `url_path` at `now` (unix seconds), as the edge does:
    /// the HMAC (with `url_path` hashed when the token has no ACL), then the times, then that
    /// an ACL covers `url_path`. `ip` is reported, not checked: there is no client address here.
    pub fn verify(&self, token: &str, url_path: &str, now: u64) -> Result<EdgeAuthToken, Invalid> {
        let decoded = self.decode(token)?;
        let tag = hex_decode(&decoded.hmac).ok_or(Invalid::BadSignature)?;
        let url = decoded.acl.is_none().then_some(url_path);
        let input = self.hmac_input(&decoded.hmac_input_fields, url);
        if !self.keyed.verify(input.as_bytes(), &tag) {
            return Err(Invalid::BadSignature);
        }
        if let Some(start) = decoded.start
            && now < start
        {
            return Err(Invalid::NotYetValid { start });
        }
        if now >= decoded.expiry {
            return Err(Invalid::Expired {
                expiry: decoded.expiry,
            });
        }
        if let Some(acl) = &decoded.acl
            && !acl
                .split(self.acl_delimiter)
                .any(|pattern| wildcard::matches(pattern, url_path))
        {
            return Err(Invalid::NotCovered);
        }
        Ok(decoded)
    }
}

impl fmt::Debug for EdgeAuth {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("EdgeAuth")
            .field("key", &"<redacted>")
            .field("algorithm", &self.algorithm)
            .field("field_delimiter", &self.field_delimiter)
            .field("acl_delimiter", &self.acl_delimiter)
            .field("escape_early", &self.escape_early)
            .field("salt", &self.salt.as_ref().map(|_| "<redacted>"))
            .finish()
    }
}

/// What a token is signed for.
#[derive(Clone, Copy)]
enum Path<'a> {
    /// The ACL, written into the token.
    Acl(&'a str),
    /// The URL, hashed only.
    Url(&'a str),
}

/// A token's fields, as written (escaped values stay escaped).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EdgeAuthToken {
    /// `ip`.
    pub ip: Option<String>,
    /// `st`, in unix seconds.
    pub start: Option<u64>,
    /// `exp`, in unix seconds.
    pub expiry: u64,
    /// `acl`, its patterns still joined by the ACL delimiter; `None` for a URL token.
    pub acl: Option<String>,
    /// `id`.
    pub id: Option<String>,
    /// `data`.
    pub data: Option<String>,
    /// `hmac`, as hex.
    pub hmac: String,
    /// The token's text before `hmac`: the start of the HMAC input.
    hmac_input_fields: String,
}

/// Python's `quote_plus` with the SDK's lowercasing of escapes: UTF-8 bytes other than
/// `A-Z a-z 0-9 _ . - ~` become `%xx` in lowercase hex, a space becomes `+`.
fn quote_plus_lower(value: &str) -> String {
    let mut out = String::with_capacity(value.len());
    for &byte in value.as_bytes() {
        match byte {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'_' | b'.' | b'-' | b'~' => {
                out.push(char::from(byte));
            }
            b' ' => out.push('+'),
            _ => {
                out.push('%');
                out.push_str(&hex_lower(&[byte]));
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The SDK's recorded HMAC message and digest for every vector: the token (checked in
    /// `tests/it/scheme_akamai.rs`) shows only their outcome.
    #[test]
    fn every_vector_hashes_the_sdks_message_to_its_hmac() {
        let path = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/data/cdn-schemes.json");
        let all: serde_json::Value =
            serde_json::from_str(&std::fs::read_to_string(path).expect("vectors")).expect("JSON");
        let cases = all["schemes"]["akamai_edgeauth"]["cases"]
            .as_array()
            .expect("cases");
        assert_eq!(cases.len(), 8);
        for case in cases {
            let text = |key: &str| case[key].as_str().expect("a string");
            let auth = EdgeAuth::new(text("key_hex"), text("algorithm").parse().expect("known"))
                .expect("hex key")
                .with_escape_early(case["escape_early"] == true)
                .with_salt(case["salt"].as_str().unwrap_or(""));
            let decoded = auth.decode(text("token")).expect("decodes");
            let url = (text("method") == "generate_url_token").then(|| text("argument"));
            let input = auth.hmac_input(&decoded.hmac_input_fields, url);
            assert_eq!(input, text("hmac_input"), "{}", case["name"]);
            assert_eq!(hex_lower(&auth.keyed.tag(input.as_bytes())), text("hmac"));
        }
    }

    #[test]
    fn quote_plus_keeps_the_unreserved_and_lowercases_escapes() {
        assert_eq!(
            quote_plus_lower("/path with space/\u{fc}.mp4?a=b&c=d~_.-"),
            "%2fpath+with+space%2f%c3%bc.mp4%3fa%3db%26c%3dd~_.-"
        );
    }

    #[test]
    fn times_are_resolved_and_refused_as_the_sdk_does() {
        let resolve = TokenTimes::resolve;
        let times = |start, expiry| Ok(TokenTimes { start, expiry });
        assert_eq!(
            resolve(StartTime::At(100), EndTime::Window(5), 7),
            times(Some(100), 105)
        );
        assert_eq!(
            resolve(StartTime::Now, EndTime::Window(5), 7),
            times(Some(7), 12)
        );
        assert_eq!(
            resolve(StartTime::Omitted, EndTime::Window(5), 7),
            times(None, 12)
        );
        assert_eq!(
            resolve(StartTime::Omitted, EndTime::At(50), 7),
            times(None, 50)
        );
        assert_eq!(
            resolve(StartTime::At(0), EndTime::At(50), 7),
            Err(TokenTimeError::Zero("start_time"))
        );
        assert_eq!(
            resolve(StartTime::Omitted, EndTime::Window(0), 7),
            Err(TokenTimeError::Zero("window_seconds"))
        );
        assert_eq!(
            resolve(StartTime::At(50), EndTime::At(50), 7),
            Err(TokenTimeError::NotAfterStart)
        );
        assert_eq!(
            TokenTimes::try_from(Validity {
                start: 60,
                expiry: 120
            }),
            times(Some(60), 120)
        );
    }

    #[test]
    fn keys_that_are_not_hex_are_refused_and_none_is_ever_printed() {
        for key in ["", "abc", "zz", "a7b3 c1"] {
            assert_eq!(
                EdgeAuth::new(key, Algorithm::Sha256).err(),
                Some(EdgeAuthKeyError::NotHex),
                "{key}"
            );
        }
        assert_eq!("MD5".parse(), Ok(Algorithm::Md5));
        assert_eq!(
            "sha512".parse::<Algorithm>(),
            Err(EdgeAuthKeyError::UnknownAlgorithm)
        );
        let auth = EdgeAuth::new("a7b3c1d9", Algorithm::Sha1)
            .expect("hex")
            .with_salt("pepper");
        let debug = format!("{auth:?}");
        assert!(
            !debug.contains("a7b3") && !debug.contains("pepper"),
            "{debug}"
        );
    }
}
