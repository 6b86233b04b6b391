//! imgix signed URLs: `s`, the lowercase hex MD5 of the source's token, the path and the query.
//!
//! imgix checks `s` against the path and query as they arrive, so a URL someone wrote is
//! signed as written ([`ImgixSigner::sign`]), in the form a browser sends it. Building a URL
//! from a path and parameters the way imgix's SDKs do ([`ImgixSigner::build`]: sorted, with
//! their encodings) is the other way in, held byte for byte to imgix-python 4.0.0's vectors.

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use md5::{Digest, Md5};
use percent_encoding::{
    AsciiSet, CONTROLS, NON_ALPHANUMERIC, percent_decode_str, utf8_percent_encode,
};

use crate::secret::{TextSecret, hex_decode, hex_lower};

/// The signature parameter.
pub const SIGNATURE_PARAM: &str = "s";

/// The expiry parameter: unix seconds, signed like any other parameter.
pub const EXPIRES_PARAM: &str = "expires";

/// The parameters a signed URL's credentials are made of: a gateway strips client-supplied
/// ones before signing ([`ImgixSigner::sign`] drops them too).
pub const CREDENTIAL_PARAMS: [&str; 1] = [SIGNATURE_PARAM];

/// What Python's `quote(…, safe="")` leaves: `A-Za-z0-9_.-~`.
const UNRESERVED: &AsciiSet = &NON_ALPHANUMERIC
    .remove(b'-')
    .remove(b'_')
    .remove(b'.')
    .remove(b'~');

/// The SDK's file path encoding, `quote(path, safe="/&$;=@,")`.
const FILE_PATH: &AsciiSet = &UNRESERVED
    .remove(b'/')
    .remove(b'&')
    .remove(b'$')
    .remove(b';')
    .remove(b'=')
    .remove(b'@')
    .remove(b',');

/// The SDK's parameter name encoding, `quote(name)`: its default keeps `/`.
const PARAM_NAME: &AsciiSet = &UNRESERVED.remove(b'/');

/// What a browser escapes in a path it sends (WHATWG URL, path percent-encode set; `?` and `#`
/// cannot occur, they end the path).
const SENT_PATH: &AsciiSet = &CONTROLS
    .add(b' ')
    .add(b'"')
    .add(b'<')
    .add(b'>')
    .add(b'`')
    .add(b'{')
    .add(b'}');

/// What a browser escapes in a query it sends (special-query percent-encode set).
const SENT_QUERY: &AsciiSet = &CONTROLS.add(b' ').add(b'"').add(b'<').add(b'>').add(b'\'');

/// How [`ImgixSigner::build`] writes a URL: the SDK's `include_library_param` and
/// `disable_path_encoding`.
#[derive(Debug, Clone, Copy, Default)]
pub struct BuildOptions<'a> {
    /// An `ixlib` value (`python-4.0.0`) as the SDKs add to name themselves; signgate adds
    /// none.
    pub library_param: Option<&'a str>,
    /// Take the path as already encoded.
    pub disable_path_encoding: bool,
}

/// Why a written URL cannot be signed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ImgixError {
    /// Not a path from the root (`/…`) with an optional query.
    #[error("not a path from the root: {0:?}")]
    NotAPath(String),
}

/// Why a signed URL does not verify. The texts name no credential.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ImgixInvalid {
    /// Not a path from the root (`/…`) with an optional query.
    #[error("not a path from the root")]
    NotAPath,
    /// No `s` parameter.
    #[error("credentials missing: s")]
    Missing,
    /// `s` or `expires` given more than once.
    #[error("conflicting credentials: {0} given more than once")]
    Conflicting(&'static str),
    /// `s` is not the MD5 of this token, the path and the query.
    #[error("bad signature")]
    BadSignature,
    /// `expires` is not unix seconds.
    #[error("malformed expires")]
    MalformedExpires,
    /// `expires` is past.
    #[error("expired at {expiry} ({ago}s ago)")]
    Expired {
        /// The `expires` parameter.
        expiry: u64,
        /// How long ago, in seconds.
        ago: u64,
    },
}

/// What a signed URL that verified says: for `signgate explain`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ImgixSigned {
    /// Its `expires`, if it has one.
    pub expires: Option<u64>,
}

/// Signs URLs of one imgix source with its secure URL token.
#[derive(Debug, Clone)]
pub struct ImgixSigner {
    token: TextSecret,
}

impl ImgixSigner {
    /// A signer for the source whose token this is.
    pub fn new(token: TextSecret) -> Self {
        Self { token }
    }

    /// Signs `path_and_query` as written (`/images/cat.jpg?w=400`): escapes what a browser
    /// would (a space, non-ASCII), drops any `s`, and with `expires` replaces any `expires`
    /// by `expires=<expires>` at the end; returns it with `s` appended. A `#fragment` is kept
    /// after the signature, unsigned, as imgix never sees it.
    pub fn sign(&self, path_and_query: &str, expires: Option<u64>) -> Result<String, ImgixError> {
        let written = Written::parse(path_and_query)
            .ok_or_else(|| ImgixError::NotAPath(path_and_query.to_owned()))?;
        let mut params: Vec<&str> = written
            .params()
            .filter(|(name, _)| name != SIGNATURE_PARAM)
            .filter(|(name, _)| expires.is_none() || name != EXPIRES_PARAM)
            .map(|(_, pair)| pair)
            .collect();
        let expires_pair = expires.map(|expiry| format!("{EXPIRES_PARAM}={expiry}"));
        params.extend(expires_pair.as_deref());
        let query = params.join("&");
        let mut url = self.signed(&written.path, &query);
        url.push_str(written.fragment);
        Ok(url)
    }

    /// The signed path and query imgix's SDKs write for `path` (unencoded, or a whole source
    /// URL for a web-proxy source) and `params` (plain values; a name ending in `64` takes its
    /// value's URL-safe base64): imgix-python 4.0.0's `create_url` without scheme and domain.
    /// A name given twice keeps its last value, as the SDK's dict does.
    pub fn build(&self, path: &str, params: &[(&str, &str)], options: &BuildOptions) -> String {
        let path = sdk_path(path, options.disable_path_encoding);
        let mut named: Vec<(String, &str)> = Vec::with_capacity(params.len() + 1);
        let library = options.library_param.map(|value| ("ixlib", value));
        for (name, value) in params.iter().copied().chain(library) {
            let name = utf8_percent_encode(name, PARAM_NAME).to_string();
            named.retain(|(known, _)| *known != name);
            named.push((name, value));
        }
        named.sort_by(|(a, _), (b, _)| a.cmp(b));
        let query = named
            .iter()
            .map(|(name, value)| {
                let value = if name.ends_with("64") {
                    URL_SAFE_NO_PAD.encode(value)
                } else {
                    utf8_percent_encode(value, UNRESERVED).to_string()
                };
                format!("{name}={value}")
            })
            .collect::<Vec<_>>()
            .join("&");
        self.signed(&path, &query)
    }

    /// Checks a signed path and query as imgix would: `s` (compared in constant time) over the
    /// rest as it arrived, then `expires` against `now`.
    pub fn verify(&self, path_and_query: &str, now: u64) -> Result<ImgixSigned, ImgixInvalid> {
        let written = Written::parse(path_and_query).ok_or(ImgixInvalid::NotAPath)?;
        let mut signature = None;
        let mut expires = None;
        let mut signed: Vec<&str> = Vec::new();
        for (name, pair) in written.params() {
            if name == SIGNATURE_PARAM {
                if signature.replace(pair).is_some() {
                    return Err(ImgixInvalid::Conflicting(SIGNATURE_PARAM));
                }
                continue;
            }
            if name == EXPIRES_PARAM && expires.replace(pair).is_some() {
                return Err(ImgixInvalid::Conflicting(EXPIRES_PARAM));
            }
            signed.push(pair);
        }
        let signature = signature.ok_or(ImgixInvalid::Missing)?;
        let given = pair_value(signature).and_then(hex_decode);
        let expected = Md5::digest(signature_base(
            &self.token,
            &written.path,
            &signed.join("&"),
        ));
        if !given.is_some_and(|given| same_bytes(&given, &expected)) {
            return Err(ImgixInvalid::BadSignature);
        }
        let expires = expires
            .map(|pair| {
                pair_value(pair)
                    .and_then(|value| value.bytes().all(|b| b.is_ascii_digit()).then_some(value))
                    .and_then(|value| value.parse::<u64>().ok())
                    .ok_or(ImgixInvalid::MalformedExpires)
            })
            .transpose()?;
        if let Some(expiry) = expires
            && now >= expiry
        {
            return Err(ImgixInvalid::Expired {
                expiry,
                ago: now - expiry,
            });
        }
        Ok(ImgixSigned { expires })
    }

    /// `path`, `?query` unless empty, and `s`.
    fn signed(&self, path: &str, query: &str) -> String {
        let signature = hex_lower(&Md5::digest(signature_base(&self.token, path, query)));
        match query {
            "" => format!("{path}?{SIGNATURE_PARAM}={signature}"),
            query => format!("{path}?{query}&{SIGNATURE_PARAM}={signature}"),
        }
    }
}

/// What `s` is the MD5 of: the token, the path, and `?query` unless the query is empty.
fn signature_base(token: &TextSecret, path: &str, query: &str) -> String {
    let delimiter = if query.is_empty() { "" } else { "?" };
    format!("{}{path}{delimiter}{query}", token.expose())
}

/// The SDK's `_sanitize_path`: one leading `/` dropped, the rest encoded (whole, with
/// `quote_plus`, for a web-proxy source), a `/` put back.
fn sdk_path(path: &str, disable_path_encoding: bool) -> String {
    if path.is_empty() {
        return String::new();
    }
    let path = path.strip_prefix('/').unwrap_or(path);
    let encoded = if disable_path_encoding {
        path.to_owned()
    } else if path.starts_with("http") {
        // `quote_plus`: everything but the unreserved characters escaped, then a space as `+`
        // (a `+` itself is `%2B` by then).
        utf8_percent_encode(path, UNRESERVED)
            .to_string()
            .replace("%20", "+")
    } else {
        utf8_percent_encode(path, FILE_PATH).to_string()
    };
    format!("/{encoded}")
}

/// A written path and query, escaped as a browser sends them.
struct Written<'a> {
    path: String,
    query: String,
    /// `#…` or empty.
    fragment: &'a str,
}

impl<'a> Written<'a> {
    fn parse(text: &'a str) -> Option<Self> {
        let (rest, fragment) = match text.find('#') {
            Some(at) => text.split_at(at),
            None => (text, ""),
        };
        let (path, query) = rest.split_once('?').unwrap_or((rest, ""));
        if !path.starts_with('/') || path.starts_with("//") {
            return None;
        }
        Some(Self {
            path: utf8_percent_encode(path, SENT_PATH).to_string(),
            query: utf8_percent_encode(query, SENT_QUERY).to_string(),
            fragment,
        })
    }

    /// Each `name=value` pair as written, with its decoded name.
    fn params(&self) -> impl Iterator<Item = (String, &str)> {
        self.query
            .split('&')
            .filter(|pair| !pair.is_empty())
            .map(|pair| {
                let name = pair.split_once('=').map_or(pair, |(name, _)| name);
                (
                    percent_decode_str(name).decode_utf8_lossy().into_owned(),
                    pair,
                )
            })
    }
}

/// The value of a `name=value` pair, as written.
fn pair_value(pair: &str) -> Option<&str> {
    pair.split_once('=').map(|(_, value)| value)
}

/// Whether two digests are equal, in time that depends only on their lengths.
fn same_bytes(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0, |diff, (x, y)| diff | (x ^ y)) == 0
}

#[cfg(test)]
mod tests {
    use serde_json::Value;

    use super::*;
    use crate::scheme::vectors::{self, text};

    fn cases() -> Vec<Value> {
        vectors::cases("imgix", 9)
    }

    fn vector(name: &str) -> Value {
        vectors::case("imgix", 9, name)
    }

    fn signer(case: &Value) -> ImgixSigner {
        ImgixSigner::new(TextSecret::new(text(case, "sign_key").to_owned()).expect("set"))
    }

    /// The case's params as the SDK stringifies them (`str(400)` is `400`).
    fn params(case: &Value) -> Vec<(String, String)> {
        let object = case["params"].as_object().expect("params object");
        object
            .iter()
            .map(|(name, value)| match value {
                Value::String(text) => (name.clone(), text.clone()),
                other => (name.clone(), other.to_string()),
            })
            .collect()
    }

    fn options(case: &Value) -> BuildOptions<'static> {
        let library = case["include_library_param"].as_bool().expect("a bool");
        BuildOptions {
            library_param: library.then_some("python-4.0.0"),
            disable_path_encoding: case["options"]["disable_path_encoding"] == true,
        }
    }

    /// The signed URL's path and query, without scheme and domain.
    fn signed_path(case: &Value) -> &str {
        let prefix = format!("https://{}", text(case, "domain"));
        text(case, "signed_url")
            .strip_prefix(&prefix)
            .expect("on the case's domain")
    }

    /// The signed path and query without its `s`, as someone wrote it.
    fn unsigned_path(case: &Value) -> String {
        let suffix = format!("s={}", text(case, "s"));
        signed_path(case)
            .strip_suffix(&suffix)
            .and_then(|rest| rest.strip_suffix(['?', '&']))
            .expect("s is last")
            .to_owned()
    }

    #[test]
    fn every_vector_is_built_byte_for_byte() {
        for case in cases() {
            let name = &case["name"];
            let params = params(&case);
            let params: Vec<(&str, &str)> = params
                .iter()
                .map(|(name, value)| (name.as_str(), value.as_str()))
                .collect();
            let built = signer(&case).build(text(&case, "path"), &params, &options(&case));
            assert_eq!(built, signed_path(&case), "{name}");
            let unsigned = unsigned_path(&case);
            let base = format!("{}{unsigned}", text(&case, "sign_key"));
            assert_eq!(base, text(&case, "signature_base"), "{name}");
            assert_eq!(hex_lower(&Md5::digest(&base)), text(&case, "s"), "{name}");
        }
    }

    #[test]
    fn every_vector_signed_as_written_gets_the_sdks_signature() {
        for case in cases() {
            let signed = signer(&case).sign(&unsigned_path(&case), None);
            assert_eq!(
                signed.as_deref(),
                Ok(signed_path(&case)),
                "{}",
                case["name"]
            );
        }
    }

    #[test]
    fn every_vector_verifies_and_any_change_is_refused() {
        for case in cases() {
            let name = &case["name"];
            let signer = signer(&case);
            let signed = signed_path(&case);
            let expires = case["params"]["expires"].as_u64();
            assert_eq!(
                signer.verify(signed, 0),
                Ok(ImgixSigned { expires }),
                "{name}"
            );
            let (path, rest) = signed.split_once('?').expect("a query");
            let moved = format!("{path}x?{rest}");
            assert_eq!(
                signer.verify(&moved, 0),
                Err(ImgixInvalid::BadSignature),
                "{name}"
            );
            let unsigned = unsigned_path(&case);
            let delimiter = if unsigned.contains('?') { '&' } else { '?' };
            let added = format!("{unsigned}{delimiter}dl=1&s={}", text(&case, "s"));
            assert_eq!(
                signer.verify(&added, 0),
                Err(ImgixInvalid::BadSignature),
                "{name}"
            );
            let other = ImgixSigner::new(TextSecret::new("another token".into()).expect("set"));
            assert_eq!(
                other.verify(signed, 0),
                Err(ImgixInvalid::BadSignature),
                "{name}"
            );
            let upper = signed.replace(text(&case, "s"), &text(&case, "s").to_uppercase());
            assert!(signer.verify(&upper, 0).is_ok(), "{name}");
        }
    }

    #[test]
    fn expires_is_signed_and_checked() {
        let case = vector("expires_param");
        let signer = signer(&case);
        let signed = signed_path(&case);
        assert!(signer.verify(signed, 1_767_225_599).is_ok());
        assert_eq!(
            signer.verify(signed, 1_767_225_610),
            Err(ImgixInvalid::Expired {
                expiry: 1_767_225_600,
                ago: 10
            })
        );
        let later = signed.replace("expires=1767225600", "expires=1767229200");
        assert_eq!(signer.verify(&later, 0), Err(ImgixInvalid::BadSignature));

        let ours = signer
            .sign(
                "/private/album/cover.jpg?expires=9999999999&w=300&s=0",
                Some(1_767_225_600),
            )
            .expect("a path");
        assert!(ours.starts_with("/private/album/cover.jpg?w=300&expires=1767225600&s="));
        assert_eq!(
            signer.verify(&ours, 1_767_225_599),
            Ok(ImgixSigned {
                expires: Some(1_767_225_600)
            })
        );
        assert!(signer.verify(&ours, 1_767_225_600).is_err());
        let twice = ours.replace("?w=300", "?expires=1&w=300");
        assert_eq!(
            signer.verify(&twice, 0),
            Err(ImgixInvalid::Conflicting(EXPIRES_PARAM))
        );
    }

    #[test]
    fn a_url_is_signed_as_a_browser_sends_it() {
        let case = vector("path_spaces_unicode");
        let written =
            "/photos/my summer/café ☕ 東京.jpg?auto=format%2Ccompress&ixlib=python-4.0.0&q=75#top";
        let signed = signer(&case).sign(written, None).expect("a path");
        assert_eq!(signed, format!("{}#top", signed_path(&case)));
        let stale = format!("{}&s=0123", unsigned_path(&case));
        assert_eq!(
            signer(&case).sign(&stale, None).as_deref(),
            Ok(signed_path(&case))
        );
    }

    #[test]
    fn only_paths_from_the_root_are_signed() {
        let signer = signer(&vector("basic_params"));
        for bad in [
            "images/cat.jpg",
            "https://a.imgix.net/x",
            "//a.imgix.net/x",
            "",
        ] {
            assert_eq!(
                signer.sign(bad, None),
                Err(ImgixError::NotAPath(bad.into()))
            );
            assert_eq!(signer.verify(bad, 0), Err(ImgixInvalid::NotAPath));
        }
        assert_eq!(signer.verify("/x.jpg?w=1", 0), Err(ImgixInvalid::Missing));
        assert_eq!(
            signer.verify("/x.jpg?s=1&s=2", 0),
            Err(ImgixInvalid::Conflicting(SIGNATURE_PARAM))
        );
    }

    #[test]
    fn debug_never_shows_the_token() {
        let case = vector("basic_params");
        let shown = format!("{:?}", signer(&case));
        assert!(!shown.contains(text(&case, "sign_key")), "{shown}");
    }
}
