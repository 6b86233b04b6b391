//! CloudFront signed URLs: canned and custom policies, RSA-SHA1 over the policy's exact bytes,
//! as botocore's `CloudFrontSigner` writes them.
//!
//! A canned policy is rebuilt by CloudFront from the URL and `Expires`, so only those travel;
//! a custom policy travels whole in `Policy`, which lets one wildcard `Resource` (and so one
//! signature) cover every object under a prefix, with an optional start and client address.

use std::fmt::{self, Write as _};

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use percent_encoding::percent_decode_str;
use rsa::PrivateKey;
use rsa::pkcs1::DecodeRsaPrivateKey as _;
use rsa::pkcs1v15::{Signature, SigningKey, VerifyingKey};
use rsa::pkcs8::DecodePrivateKey as _;
use rsa::signature::{Keypair as _, SignatureEncoding as _, Signer as _, Verifier as _};
use rsa::traits::PublicKeyParts as _;
use serde_json::Value;
use sha1::Sha1;

use super::{Invalid, wildcard};

/// The query parameters CloudFront reads its credentials from, so a gateway can strip the ones
/// a client sent before signing.
pub const CREDENTIAL_PARAMS: [&str; 4] = ["Expires", "Policy", "Signature", "Key-Pair-Id"];

/// The smallest modulus accepted: CloudFront itself requires 2048-bit keys, and anything below
/// 1024 bits is broken (and, below 368, too short for a PKCS#1 SHA-1 signature at all).
const MIN_KEY_BITS: usize = 1024;

/// Signs CloudFront URLs with one key pair: the public key's id in CloudFront and the private
/// key, which `Debug` never shows.
///
/// Signing costs one RSA private-key operation, about a millisecond of CPU for a 2048-bit key
/// in a release build (far more unoptimised): callers that sign per request should cache the
/// URLs they hand out for the length of an expiry bucket.
#[derive(Clone)]
pub struct CloudFrontSigner {
    key_pair_id: String,
    key: SigningKey<Sha1>,
    public: VerifyingKey<Sha1>,
}

/// A private key that cannot sign CloudFront URLs. No variant carries key material.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CloudFrontKeyError {
    /// The key pair id is empty.
    #[error("the CloudFront key pair id is empty")]
    EmptyKeyPairId,
    /// The PEM is neither a PKCS#1 (`BEGIN RSA PRIVATE KEY`) nor a PKCS#8 (`BEGIN PRIVATE KEY`)
    /// RSA private key.
    #[error("the CloudFront key is not a PKCS#1 or PKCS#8 PEM RSA private key")]
    NotRsaPem,
    /// The modulus is shorter than 1024 bits.
    #[error("the CloudFront key has {bits} bits, fewer than {MIN_KEY_BITS}")]
    TooShort {
        /// The modulus length.
        bits: usize,
    },
    /// The key failed to sign, or its signature did not verify with its own public half.
    #[error("the CloudFront key does not sign and verify its own test message")]
    Unusable,
}

/// RSA signing failed at request time: the operating system's randomness (for blinding) was
/// unavailable, or a fault was detected in the computation.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("RSA signing failed")]
pub struct SignError;

/// A custom policy as botocore's `build_policy` writes it: compact JSON, conditions in the
/// order `DateLessThan`, `IpAddress`, `DateGreaterThan`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CustomPolicy<'a> {
    /// The URL, or a pattern with `*` and `?` wildcards, that the signature grants.
    pub resource: &'a str,
    /// `DateLessThan`: the URL stops working at this unix second.
    pub expiry: u64,
    /// `DateGreaterThan`: the URL works only after this unix second.
    pub start: Option<u64>,
    /// `IpAddress`: the client address or CIDR range allowed; a bare address gets `/32`, as
    /// botocore writes it. An empty string means none.
    pub ip: Option<&'a str>,
}

impl CustomPolicy<'_> {
    /// The policy's exact bytes, the ones the signature covers and `Policy` carries.
    pub fn to_json(&self) -> String {
        let mut json = String::from(r#"{"Statement":[{"Resource":"#);
        push_json_string(&mut json, self.resource);
        let _ = write!(
            json,
            r#","Condition":{{"DateLessThan":{{"AWS:EpochTime":{}}}"#,
            self.expiry
        );
        if let Some(ip) = self.ip.filter(|ip| !ip.is_empty()) {
            json.push_str(r#","IpAddress":{"AWS:SourceIp":"#);
            let cidr = if ip.contains('/') {
                ip.to_owned()
            } else {
                format!("{ip}/32")
            };
            push_json_string(&mut json, &cidr);
            json.push('}');
        }
        if let Some(start) = self.start {
            let _ = write!(json, r#","DateGreaterThan":{{"AWS:EpochTime":{start}}}"#);
        }
        json.push_str("}}]}");
        json
    }
}

/// The canned policy CloudFront rebuilds from a URL and its `Expires`.
fn canned_policy(url: &str, expiry: u64) -> String {
    CustomPolicy {
        resource: url,
        expiry,
        start: None,
        ip: None,
    }
    .to_json()
}

/// Appends `text` as a JSON string the way Python's `json.dumps` does by default
/// (`ensure_ascii`): non-ASCII as `\uXXXX` UTF-16 units in lowercase hex, so that a resource
/// outside ASCII signs to the same bytes as botocore's.
fn push_json_string(out: &mut String, text: &str) {
    out.push('"');
    for c in text.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            '\u{08}' => out.push_str("\\b"),
            '\u{0c}' => out.push_str("\\f"),
            ' '..='~' | '\u{7f}' => out.push(c),
            _ => {
                let mut units = [0u16; 2];
                for unit in c.encode_utf16(&mut units) {
                    let _ = write!(out, "\\u{unit:04x}");
                }
            }
        }
    }
    out.push('"');
}

/// CloudFront's base64: the standard alphabet with `+`, `=`, `/` swapped for `-`, `_`, `~`, so
/// the value needs no escaping in a query.
pub fn encode_base64(bytes: &[u8]) -> String {
    STANDARD
        .encode(bytes)
        .chars()
        .map(|c| match c {
            '+' => '-',
            '=' => '_',
            '/' => '~',
            other => other,
        })
        .collect()
}

/// The inverse of [`encode_base64`].
fn decode_base64(text: &str) -> Option<Vec<u8>> {
    let standard: String = text
        .chars()
        .map(|c| match c {
            '-' => '+',
            '_' => '=',
            '~' => '/',
            other => other,
        })
        .collect();
    STANDARD.decode(standard).ok()
}

impl CloudFrontSigner {
    /// Builds a signer from the key pair id CloudFront knows the public key by and the private
    /// key's PEM: PKCS#1 (`BEGIN RSA PRIVATE KEY`, what `openssl genrsa -traditional` writes)
    /// or PKCS#8 (`BEGIN PRIVATE KEY`). The key must sign and verify a test message.
    pub fn from_pem(key_pair_id: &str, pem: &str) -> Result<Self, CloudFrontKeyError> {
        if key_pair_id.is_empty() {
            return Err(CloudFrontKeyError::EmptyKeyPairId);
        }
        let private = PrivateKey::from_pkcs1_pem(pem)
            .or_else(|_| PrivateKey::from_pkcs8_pem(pem))
            .map_err(|_| CloudFrontKeyError::NotRsaPem)?;
        let bits = private.size() * 8;
        if bits < MIN_KEY_BITS {
            return Err(CloudFrontKeyError::TooShort { bits });
        }
        let key = SigningKey::<Sha1>::new(private);
        let public = key.verifying_key();
        let signer = Self {
            key_pair_id: key_pair_id.to_owned(),
            key,
            public,
        };
        // Catches a key whose parts disagree now, rather than on the first request.
        const PROBE: &[u8] = b"signgate: does this key sign?";
        let signature = signer
            .sign_bytes(PROBE)
            .map_err(|_| CloudFrontKeyError::Unusable)?;
        signer
            .public
            .verify(PROBE, &signature)
            .map_err(|_| CloudFrontKeyError::Unusable)?;
        Ok(signer)
    }

    /// The key pair id written into `Key-Pair-Id`.
    pub fn key_pair_id(&self) -> &str {
        &self.key_pair_id
    }

    fn sign_bytes(&self, message: &[u8]) -> Result<Signature, SignError> {
        self.key.try_sign(message).map_err(|_| SignError)
    }

    /// `url` with a canned policy: `Expires`, `Signature` and `Key-Pair-Id` appended (after `&`
    /// when the URL already has a query, which is then part of the signed resource).
    pub fn sign_canned(&self, url: &str, expiry: u64) -> Result<String, SignError> {
        let signature = self.sign_bytes(canned_policy(url, expiry).as_bytes())?;
        Ok(self.append(url, &format!("Expires={expiry}"), &signature))
    }

    /// `url` with the custom policy built from `policy`: `Policy`, `Signature` and `Key-Pair-Id`
    /// appended.
    pub fn sign_custom(&self, url: &str, policy: &CustomPolicy<'_>) -> Result<String, SignError> {
        self.sign_policy(url, &policy.to_json())
    }

    /// `url` with a policy given as JSON text, signed as its exact bytes (a hand-written,
    /// pretty-printed policy stays as written).
    pub fn sign_policy(&self, url: &str, policy_json: &str) -> Result<String, SignError> {
        let signature = self.sign_bytes(policy_json.as_bytes())?;
        let policy = format!("Policy={}", encode_base64(policy_json.as_bytes()));
        Ok(self.append(url, &policy, &signature))
    }

    fn append(&self, url: &str, first: &str, signature: &Signature) -> String {
        let separator = if url.contains('?') { '&' } else { '?' };
        format!(
            "{url}{separator}{first}&Signature={}&Key-Pair-Id={}",
            encode_base64(&signature.to_bytes()),
            self.key_pair_id
        )
    }

    /// Checks a signed URL as CloudFront would at `now` (unix seconds): key pair, signature
    /// over the policy with this key's public half, resource, then the dates. `IpAddress` is
    /// reported in the answer, not checked: there is no client address here.
    pub fn verify(&self, signed_url: &str, now: u64) -> Result<SignedUrl, Invalid> {
        let signed = SignedUrl::decode(signed_url)?;
        if signed.key_pair_id != self.key_pair_id {
            return Err(Invalid::WrongKey(signed.key_pair_id));
        }
        let signature =
            Signature::try_from(signed.signature.as_slice()).map_err(|_| Invalid::BadSignature)?;
        self.public
            .verify(signed.policy_json.as_bytes(), &signature)
            .map_err(|_| Invalid::BadSignature)?;
        if let Some(resource) = &signed.resource
            && !wildcard::matches(resource, &signed.url)
        {
            return Err(Invalid::NotCovered);
        }
        if now >= signed.expiry {
            return Err(Invalid::Expired {
                expiry: signed.expiry,
            });
        }
        if let Some(start) = signed.start
            && now <= start
        {
            return Err(Invalid::NotYetValid { start });
        }
        Ok(signed)
    }
}

impl fmt::Debug for CloudFrontSigner {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("CloudFrontSigner")
            .field("key_pair_id", &self.key_pair_id)
            .field("key", &"<redacted>")
            .finish()
    }
}

/// What a signed CloudFront URL carries, read without a key: for `signgate explain`, and the
/// answer of [`CloudFrontSigner::verify`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SignedUrl {
    /// The URL without its credential parameters: what CloudFront matches the resource against.
    pub url: String,
    /// Whether the policy is canned (`Expires`) rather than custom (`Policy`).
    pub canned: bool,
    /// The policy's exact bytes: decoded from `Policy`, or rebuilt from the URL and `Expires`.
    pub policy_json: String,
    /// The policy's `Resource`; `None` when a custom policy omits it, which grants every URL.
    pub resource: Option<String>,
    /// `DateLessThan`, in unix seconds.
    pub expiry: u64,
    /// `DateGreaterThan`, in unix seconds.
    pub start: Option<u64>,
    /// `IpAddress`'s `AWS:SourceIp`.
    pub ip: Option<String>,
    /// `Key-Pair-Id`.
    pub key_pair_id: String,
    signature: Vec<u8>,
}

impl SignedUrl {
    /// Reads a signed URL's credentials and policy, checking nothing but their form.
    pub fn decode(signed_url: &str) -> Result<Self, Invalid> {
        let (base, query) = signed_url.split_once('?').unwrap_or((signed_url, ""));
        let mut kept = Vec::new();
        let [mut expires, mut policy, mut signature, mut key_pair_id] = [const { None }; 4];
        for pair in query.split('&').filter(|pair| !pair.is_empty()) {
            let (name, value) = pair.split_once('=').unwrap_or((pair, ""));
            let slot = match name {
                "Expires" => &mut expires,
                "Policy" => &mut policy,
                "Signature" => &mut signature,
                "Key-Pair-Id" => &mut key_pair_id,
                _ => {
                    kept.push(pair);
                    continue;
                }
            };
            *slot = Some(percent_decode_str(value).decode_utf8_lossy().into_owned());
        }
        let url = if kept.is_empty() {
            base.to_owned()
        } else {
            format!("{base}?{}", kept.join("&"))
        };
        let signature = signature.ok_or(Invalid::Missing("Signature"))?;
        let signature = decode_base64(&signature).ok_or(Invalid::Malformed("Signature"))?;
        let key_pair_id = key_pair_id.ok_or(Invalid::Missing("Key-Pair-Id"))?;
        match (expires, policy) {
            (Some(_), Some(_)) => Err(Invalid::Malformed("Expires")),
            (None, None) => Err(Invalid::Missing("Policy")),
            (Some(expires), None) => {
                let expiry = expires.parse().map_err(|_| Invalid::Malformed("Expires"))?;
                Ok(Self {
                    canned: true,
                    policy_json: canned_policy(&url, expiry),
                    resource: Some(url.clone()),
                    url,
                    expiry,
                    start: None,
                    ip: None,
                    key_pair_id,
                    signature,
                })
            }
            (None, Some(policy)) => {
                let malformed = Invalid::Malformed("Policy");
                let bytes = decode_base64(&policy).ok_or(malformed.clone())?;
                let policy_json = String::from_utf8(bytes).map_err(|_| malformed.clone())?;
                let terms = PolicyTerms::read(&policy_json).ok_or(malformed)?;
                Ok(Self {
                    url,
                    canned: false,
                    policy_json,
                    resource: terms.resource,
                    expiry: terms.expiry,
                    start: terms.start,
                    ip: terms.ip,
                    key_pair_id,
                    signature,
                })
            }
        }
    }
}

/// The parts of a custom policy CloudFront acts on.
struct PolicyTerms {
    resource: Option<String>,
    expiry: u64,
    start: Option<u64>,
    ip: Option<String>,
}

impl PolicyTerms {
    /// Reads a policy of exactly one statement with a `DateLessThan`, as CloudFront requires.
    fn read(policy_json: &str) -> Option<Self> {
        let policy: Value = serde_json::from_str(policy_json).ok()?;
        let [statement] = policy.get("Statement")?.as_array()?.as_slice() else {
            return None;
        };
        let resource = match statement.get("Resource") {
            None => None,
            Some(resource) => Some(resource.as_str()?.to_owned()),
        };
        let condition = statement.get("Condition")?;
        let epoch = |name: &str| condition.get(name)?.get("AWS:EpochTime")?.as_u64();
        let ip = match condition.get("IpAddress") {
            None => None,
            Some(ip) => Some(ip.get("AWS:SourceIp")?.as_str()?.to_owned()),
        };
        let start = match condition.get("DateGreaterThan") {
            None => None,
            Some(_) => Some(epoch("DateGreaterThan")?),
        };
        Some(Self {
            resource,
            expiry: epoch("DateLessThan")?,
            start,
            ip,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cloudfront_base64_swaps_the_three_characters_that_need_escaping() {
        // 0xfb 0xff 0xbf encodes to "+/+/" in the standard alphabet; one byte pads with "==".
        assert_eq!(encode_base64(&[0xfb, 0xff, 0xbf]), "-~-~");
        assert_eq!(encode_base64(b"a"), "YQ__");
        assert_eq!(decode_base64("-~-~"), Some(vec![0xfb, 0xff, 0xbf]));
        assert_eq!(decode_base64("YQ__"), Some(b"a".to_vec()));
    }

    #[test]
    fn resources_outside_ascii_are_escaped_as_python_json_dumps_does() {
        let policy = CustomPolicy {
            resource: "https://d.net/\u{fc}/\u{1f600}\"\\\n",
            expiry: 1,
            start: None,
            ip: None,
        };
        assert_eq!(
            policy.to_json(),
            r#"{"Statement":[{"Resource":"https://d.net/\u00fc/\ud83d\ude00\"\\\n","Condition":{"DateLessThan":{"AWS:EpochTime":1}}}]}"#
        );
    }

    #[test]
    fn a_policy_that_is_not_one_statement_with_an_expiry_is_malformed() {
        for json in [
            "not json",
            r#"{"Statement":[]}"#,
            r#"{"Statement":[{"Condition":{}}]}"#,
            r#"{"Statement":[{"Condition":{"DateLessThan":{"AWS:EpochTime":"1"}}}]}"#,
            r#"{"Statement":[{"Condition":{"DateLessThan":{"AWS:EpochTime":1},"DateGreaterThan":{}}}]}"#,
        ] {
            assert!(PolicyTerms::read(json).is_none(), "{json}");
        }
        let terms = PolicyTerms::read(
            r#"{"Statement":[{"Condition":{"DateLessThan":{"AWS:EpochTime":5}}}]}"#,
        )
        .expect("one statement with an expiry");
        assert_eq!(
            (terms.resource, terms.expiry, terms.start, terms.ip),
            (None, 5, None, None)
        );
    }
}
