//! URL-signing schemes beside Filestack's policy and signature: S3-compatible presigned URLs
//! (SigV4), CloudFront signed URLs, imgix's `s` parameter and Akamai EdgeAuth tokens.
//!
//! Each scheme signs an object's URL (on the CDN or storage endpoint a route names) for a
//! [`Validity`]: pure functions of their inputs, so every replica hands out the same URL within
//! a bucket, and the vendors' SDK vectors (`tests/data/cdn-schemes.json`) are reproduced byte
//! for byte.

pub mod akamai;
pub mod cloudfront;
pub mod imgix;
mod invalid;
mod route;
pub mod s3;
#[cfg(test)]
mod vectors;
mod wildcard;

pub use invalid::Invalid;
pub use route::signer_for;
pub(crate) use route::split_origin;

/// When a signed URL is valid, in unix seconds: from the start of its expiry bucket (what a
/// scheme that carries a signing time writes, such as SigV4's `X-Amz-Date`) to its expiry.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Validity {
    /// The start of the bucket the URL was signed in.
    pub start: u64,
    /// The moment the URL stops being valid.
    pub expiry: u64,
}

/// Signs object URLs for one route with a scheme other than Filestack's. Each scheme's signer
/// implements it; the route keeps one, built from its config.
pub trait SignsUrls: Send + Sync {
    /// `url` (absolute, its path percent-encoded as it is sent, the client's query already
    /// stripped of credentials) signed to be valid for `validity`.
    fn sign_url(&self, url: &str, validity: Validity) -> Result<String, SchemeError>;

    /// Whether a query parameter of this name (percent-decoded) carries this scheme's
    /// credentials: such parameters are removed from what a client or a page wrote before
    /// signing, so only signgate's reach the CDN.
    fn is_credential(&self, name: &str) -> bool;
}

/// Why a URL could not be signed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SchemeError {
    /// The URL is not one the scheme can sign (not absolute, a path it cannot encode).
    #[error("cannot sign this URL: {0}")]
    Url(&'static str),
    /// The validity is longer than the scheme allows (SigV4: 7 days).
    #[error("validity longer than the scheme allows")]
    TooLong,
    /// The object's path holds characters the scheme's credentials read as their own syntax
    /// (an Akamai ACL's wildcards and delimiters): signed, it would grant more than the object.
    /// The client's (or the page's) doing, never the key's.
    #[error("cannot sign this path: {0}")]
    Path(&'static str),
}

/// Whether `path` (an object's path after a route's prefix, no leading `/`) is plainly
/// written: letters, digits, `-._~!$&'()*+,=:@/`, and `%` escapes of anything but `/`, `\\`,
/// `.`, `%` and control characters; no empty or dots-only segment. What reaches the storage is
/// then the object the client named, whatever the storage normalises.
pub fn is_plain_object_path(path: &str) -> bool {
    let bytes = path.as_bytes();
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'%' => {
                let decoded = path
                    .get(i + 1..i + 3)
                    .and_then(|hex| u8::from_str_radix(hex, 16).ok());
                match decoded {
                    Some(b)
                        if !matches!(b, b'/' | b'\\' | b'.' | b'%') && b >= 0x20 && b != 0x7f =>
                    {
                        i += 3;
                    }
                    _ => return false,
                }
            }
            b if crate::external::is_plain_path_byte(b) => i += 1,
            _ => return false,
        }
    }
    !path.is_empty()
        && path
            .split('/')
            .all(|segment| !segment.is_empty() && !segment.bytes().all(|b| b == b'.'))
}

/// The URL `scheme` signs for the object at `path` under `base` (`https://host[/prefix]`, no
/// trailing slash), with the request's or page's `query` kept minus `scheme`'s credential
/// parameters ([`strip_params`]).
pub fn object_url(base: &str, path: &str, query: Option<&str>, scheme: &dyn SignsUrls) -> String {
    let mut url = format!("{base}/{path}");
    if let Some(query) = query.and_then(|q| strip_params(q, |name| scheme.is_credential(name))) {
        url.push('?');
        url.push_str(&query);
    }
    url
}

/// `query` without the parameters that name credentials as any parser might read them:
/// credentials a client or page wrote are never passed on. `None` when nothing is left.
///
/// A pair goes when, percent-decoded once or twice and split at `&` and `;`, any piece's name
/// (spaces trimmed, an array suffix such as `[]` or `[0]` cut off) is one `is_credential`
/// says carries credentials: `Signature[]=…`, `a=1;Signature=…` and `a=1%26Signature%3D…`
/// go as `Signature=…` does.
pub fn strip_params(query: &str, is_credential: impl Fn(&str) -> bool) -> Option<String> {
    let names_credential = |text: &str| {
        text.split(['&', ';']).any(|piece| {
            let name = piece.split_once('=').map_or(piece, |(name, _)| name);
            let name = name.split_once('[').map_or(name, |(base, _)| base);
            is_credential(name.trim())
        })
    };
    let kept: Vec<&str> = query
        .split('&')
        .filter(|pair| !pair.is_empty())
        .filter(|pair| {
            let once = percent_encoding::percent_decode_str(pair).decode_utf8_lossy();
            let twice = percent_encoding::percent_decode_str(&once).decode_utf8_lossy();
            !names_credential(&once) && !names_credential(&twice)
        })
        .collect();
    (!kept.is_empty()).then(|| kept.join("&"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn object_paths_are_plain_or_refused() {
        for ok in [
            "images/cat.jpg",
            "a/b%20c.png",
            "x",
            "caf%C3%A9.jpg",
            "a+b(1).png",
        ] {
            assert!(is_plain_object_path(ok), "{ok}");
        }
        for bad in [
            "",
            "/a",
            "a//b",
            "../a",
            "a/./b",
            "a/...",
            "a%2Fb",
            "a%2e%2e/b",
            "a%5cb",
            "a%00",
            "a%25",
            "a b",
            "a;b",
            "a?b",
            "a#b",
            "a\\b",
            "%zz",
        ] {
            assert!(!is_plain_object_path(bad), "{bad}");
        }
    }

    #[test]
    fn credential_params_are_stripped_in_any_case_and_spelling() {
        let names = ["X-Amz-Signature", "X-Amz-Credential"];
        let banned = |name: &str| names.iter().any(|n| name.eq_ignore_ascii_case(n));
        assert_eq!(
            strip_params(
                "a=1&x-amz-signature=s&X-Amz-Credential=c&%58-Amz-Signature=t&b=2",
                banned
            ),
            Some("a=1&b=2".into())
        );
        assert_eq!(strip_params("X-AMZ-SIGNATURE=s", banned), None);
        // As a lax parser reads them: array names, `;` separators, encoded `&` and `=`, spaces.
        for hidden in [
            "X-Amz-Signature[]=s",
            "x-amz-signature[0]=s",
            "a=1;X-Amz-Signature=s",
            "a=1%26X-Amz-Signature%3Ds",
            "a=1%2526X-Amz-Signature%253Ds",
            "%20X-Amz-Signature=s",
            "X-Amz-Signature",
        ] {
            assert_eq!(
                strip_params(&format!("w=1&{hidden}"), banned),
                Some("w=1".into()),
                "{hidden}"
            );
        }
        // Names that merely contain one are kept: imgix's `s` is not in `sat` or `usm`.
        let imgix = |name: &str| name == "s";
        assert_eq!(
            strip_params("sat=10&usm=5&s=forged&txt=a%20b", imgix),
            Some("sat=10&usm=5&txt=a%20b".into())
        );
    }
}
