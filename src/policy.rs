//! Filestack security policies: the typed policy, its canonical encoding and its signature.
//!
//! Everything here is pure: no I/O and no clock reads. Time comes in as an argument.

use std::fmt;
use std::str::FromStr;
use std::time::Duration;

use base64::Engine;
use base64::alphabet;
use base64::engine::{DecodePaddingMode, GeneralPurpose, GeneralPurposeConfig};
use serde::{Deserialize, Serialize};

use crate::secret::Secret;

/// The url-safe alphabet with `=` padding, as the CDN's documentation requires.
const ENCODE: GeneralPurpose = base64::engine::general_purpose::URL_SAFE;

/// Decoding accepts padding or none, because hand-written URLs lose it.
const DECODE_URL_SAFE: GeneralPurpose = GeneralPurpose::new(
    &alphabet::URL_SAFE,
    GeneralPurposeConfig::new().with_decode_padding_mode(DecodePaddingMode::Indifferent),
);

/// The JavaScript SDK writes the standard alphabet (`+`, `/`); the CDN takes it too.
const DECODE_STANDARD: GeneralPurpose = GeneralPurpose::new(
    &alphabet::STANDARD,
    GeneralPurposeConfig::new().with_decode_padding_mode(DecodePaddingMode::Indifferent),
);

/// One operation a policy may allow, spelled as the CDN spells it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub enum Call {
    /// Open the picker.
    Pick,
    /// Download a file.
    Read,
    /// Read a file's metadata.
    Stat,
    /// Overwrite a file.
    Write,
    /// Overwrite a file from a URL.
    WriteUrl,
    /// Upload (store) a file.
    Store,
    /// Apply transformation tasks.
    Convert,
    /// Delete a file.
    Remove,
    /// Read EXIF data.
    Exif,
    /// Run a workflow.
    RunWorkflow,
}

impl Call {
    /// Every documented call, in the documentation's order.
    pub const ALL: [Call; 10] = [
        Call::Pick,
        Call::Read,
        Call::Stat,
        Call::Write,
        Call::WriteUrl,
        Call::Store,
        Call::Convert,
        Call::Remove,
        Call::Exif,
        Call::RunWorkflow,
    ];

    /// The name the CDN uses in a policy's `call` array.
    pub fn as_str(self) -> &'static str {
        match self {
            Call::Pick => "pick",
            Call::Read => "read",
            Call::Stat => "stat",
            Call::Write => "write",
            Call::WriteUrl => "writeUrl",
            Call::Store => "store",
            Call::Convert => "convert",
            Call::Remove => "remove",
            Call::Exif => "exif",
            Call::RunWorkflow => "runWorkflow",
        }
    }
}

impl fmt::Display for Call {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A call name that is not one of the documented ones.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "unknown call {0:?}, expected one of pick, read, stat, write, writeUrl, store, convert, remove, exif, runWorkflow"
)]
pub struct UnknownCall(pub String);

impl FromStr for Call {
    type Err = UnknownCall;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Call::ALL
            .into_iter()
            .find(|call| call.as_str() == s)
            .ok_or_else(|| UnknownCall(s.to_owned()))
    }
}

/// The policy fields a route fixes once for everything it signs: all but `expiry`, `call` and
/// `handle`. The one list of these fields: the config fills it, [`Policy`] writes it, and
/// [`DecodedPolicy`] reads it back, so a new field is added here and in the config's raw layer.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize)]
pub struct PolicyLimits {
    /// Regular expression of external URLs that may be transformed.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub url: Option<String>,
    /// Largest upload in bytes.
    #[serde(rename = "maxSize", skip_serializing_if = "Option::is_none")]
    pub max_size: Option<u64>,
    /// Smallest upload in bytes.
    #[serde(rename = "minSize", skip_serializing_if = "Option::is_none")]
    pub min_size: Option<u64>,
    /// Regular expression of storage paths an upload may use.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub path: Option<String>,
    /// Regular expression of storage containers an upload may use.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub container: Option<String>,
}

impl PolicyLimits {
    /// Reads the fields from a decoded policy's JSON object; a field of the wrong type counts as
    /// absent, as the CDN ignores it.
    fn from_json(object: &serde_json::Map<String, serde_json::Value>) -> Self {
        let text = |key: &str| object.get(key).and_then(|v| v.as_str()).map(str::to_owned);
        let size = |key: &str| object.get(key).and_then(serde_json::Value::as_u64);
        Self {
            url: text("url"),
            max_size: size("maxSize"),
            min_size: size("minSize"),
            path: text("path"),
            container: text("container"),
        }
    }
}

/// What a route signs, less the expiry and the file: its calls and its limits.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct PolicyTemplate {
    /// The policy's `call` list.
    pub calls: Vec<Call>,
    /// The fixed fields.
    pub limits: PolicyLimits,
}

impl PolicyTemplate {
    /// Whether policies from this template allow `call`.
    pub fn allows(&self, call: Call) -> bool {
        self.calls.contains(&call)
    }

    /// The policy for `handle` (none for an upload policy) expiring at `expiry`.
    pub fn policy(&self, expiry: u64, handle: Option<&str>) -> Policy {
        Policy {
            expiry,
            call: self.calls.clone(),
            handle: handle.map(str::to_owned),
            limits: self.limits.clone(),
        }
    }
}

/// A security policy as signgate writes it.
///
/// Field order is the serialisation order (`expiry`, `call`, `handle`, then the limits: `url`,
/// `maxSize`, `minSize`, `path`, `container`), so the same inputs always give the same bytes.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize)]
pub struct Policy {
    /// Unix seconds after which the CDN refuses the policy.
    pub expiry: u64,
    /// Allowed calls; omitted when empty (the CDN then allows every call).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub call: Vec<Call>,
    /// The one file this policy is for.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub handle: Option<String>,
    /// The route's fixed fields.
    #[serde(flatten)]
    pub limits: PolicyLimits,
}

impl Policy {
    /// Compact JSON in the fixed key order.
    pub fn to_json(&self) -> String {
        // Serialising plain strings, integers and enums into a String cannot fail.
        serde_json::to_string(self).expect("a Policy always serialises to JSON")
    }

    /// The policy string as sent to the CDN: url-safe base64 of the JSON, padding kept.
    pub fn encode(&self) -> String {
        ENCODE.encode(self.to_json())
    }

    /// Encodes and signs this policy.
    pub fn sign(&self, secret: &Secret) -> Credentials {
        let policy = self.encode();
        let signature = secret.sign_hex(policy.as_bytes());
        Credentials {
            policy,
            signature,
            expiry: self.expiry,
        }
    }
}

/// A signed policy: what a URL carries to the CDN.
#[derive(Clone, PartialEq, Eq)]
pub struct Credentials {
    /// The policy string (url-safe base64 with padding).
    pub policy: String,
    /// Lowercase hex HMAC-SHA256 of `policy`.
    pub signature: String,
    /// The policy's expiry, in unix seconds.
    pub expiry: u64,
}

impl fmt::Debug for Credentials {
    // Signatures are bearer credentials: they stay out of logs and panics.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Credentials")
            .field("expiry", &self.expiry)
            .finish_non_exhaustive()
    }
}

impl Credentials {
    /// The policy with `=` written `%3D`, as it must appear in a query string.
    pub fn policy_for_query(&self) -> String {
        let unpadded = self.policy.trim_end_matches('=');
        let padding = self.policy.len() - unpadded.len();
        let mut out = String::with_capacity(unpadded.len() + padding * 3);
        out.push_str(unpadded);
        for _ in 0..padding {
            out.push_str("%3D");
        }
        out
    }
}

/// The expiry handed out at `now`: at least `ttl` away, rounded up to a multiple of `bucket`.
///
/// Every request (and every replica whose clock agrees) inside one bucket gets the same expiry,
/// hence byte-identical credentials, which keeps CDN and browser caches warm.
pub fn bucketed_expiry(now: u64, ttl: Duration, bucket: Duration) -> u64 {
    let earliest = now.saturating_add(ttl.as_secs());
    let bucket = bucket.as_secs().max(1);
    earliest.div_ceil(bucket).saturating_mul(bucket)
}

/// Why a policy string could not be read.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DecodeError {
    /// Not base64 in either alphabet.
    #[error("policy is not valid base64")]
    Base64,
    /// Base64, but not a JSON object with a numeric `expiry`.
    #[error("policy is not a JSON object with a numeric expiry: {0}")]
    Json(String),
}

/// A policy as read back from any SDK's spelling: key order, spaces and escapes do not matter.
#[derive(Debug, Clone, PartialEq)]
pub struct DecodedPolicy {
    /// The JSON text exactly as decoded.
    pub json: String,
    /// `expiry` in unix seconds (fractions dropped).
    pub expiry: u64,
    /// `call`, when present (a bare string counts as one call); unknown names are kept as text.
    pub call: Option<Vec<String>>,
    /// `handle`, when present.
    pub handle: Option<String>,
    /// The limits, each when present.
    pub limits: PolicyLimits,
}

impl DecodedPolicy {
    /// Decodes a policy string in the url-safe or the standard alphabet, padded or not.
    pub fn decode(policy: &str) -> Result<Self, DecodeError> {
        let engine = if policy.contains(['+', '/']) {
            DECODE_STANDARD
        } else {
            DECODE_URL_SAFE
        };
        let bytes = engine.decode(policy).map_err(|_| DecodeError::Base64)?;
        let json = String::from_utf8(bytes).map_err(|_| DecodeError::Json("not UTF-8".into()))?;
        let value: serde_json::Value =
            serde_json::from_str(&json).map_err(|e| DecodeError::Json(e.to_string()))?;
        let object = value
            .as_object()
            .ok_or_else(|| DecodeError::Json("not an object".into()))?;
        let expiry = match object.get("expiry") {
            Some(serde_json::Value::Number(n)) => n
                .as_u64()
                .or_else(|| n.as_f64().filter(|f| *f >= 0.0).map(|f| f as u64))
                .ok_or_else(|| DecodeError::Json("expiry is negative".into()))?,
            Some(_) => return Err(DecodeError::Json("expiry is not a number".into())),
            None => return Err(DecodeError::Json("expiry is missing".into())),
        };
        let call = match object.get("call") {
            None => None,
            Some(serde_json::Value::String(one)) => Some(vec![one.clone()]),
            Some(serde_json::Value::Array(list)) => Some(
                list.iter()
                    .map(|v| v.as_str().unwrap_or_default().to_owned())
                    .collect(),
            ),
            Some(_) => return Err(DecodeError::Json("call is not a list".into())),
        };
        Ok(DecodedPolicy {
            expiry,
            call,
            handle: object
                .get("handle")
                .and_then(|v| v.as_str())
                .map(str::to_owned),
            limits: PolicyLimits::from_json(object),
            json,
        })
    }

    /// Whether this policy allows `call` (a policy without `call` allows every call).
    pub fn allows(&self, call: Call) -> bool {
        match &self.call {
            None => true,
            Some(calls) => calls.iter().any(|c| c == call.as_str()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn secret(s: &str) -> Secret {
        Secret::new(s.to_owned()).expect("test secret is not empty")
    }

    #[test]
    fn docs_example_signs_as_documented() {
        // The policy as the docs spell it (handle first), signed with our HMAC.
        let policy = "eyJoYW5kbGUiOiJLVzlFSmhZdFM2eTQ4V2htMlM2RCIsImV4cGlyeSI6MTUwODE0MTUwNH0=";
        assert_eq!(
            secret("Z3IYZSH2UJA7VN3QYFVSVCF7PI").sign_hex(policy.as_bytes()),
            "4098f262b9dba23e4766ce127353aaf4f37fde0fd726d164d944e031fd862c18"
        );
    }

    #[test]
    fn json_uses_the_fixed_key_order_and_omits_empty_fields() {
        let policy = Policy {
            expiry: 10,
            call: vec![Call::Read, Call::Convert],
            handle: Some("KW9EJhYtS6y48Whm2S6D".into()),
            limits: PolicyLimits {
                max_size: Some(5),
                container: Some("c".into()),
                ..PolicyLimits::default()
            },
        };
        assert_eq!(
            policy.to_json(),
            r#"{"expiry":10,"call":["read","convert"],"handle":"KW9EJhYtS6y48Whm2S6D","maxSize":5,"container":"c"}"#
        );
        assert_eq!(Policy::default().to_json(), r#"{"expiry":0}"#);
    }

    #[test]
    fn encoding_is_url_safe_with_padding() {
        let policy = Policy {
            expiry: 1700000000,
            limits: PolicyLimits {
                path: Some("/img/>>~~??/".into()),
                ..PolicyLimits::default()
            },
            ..Policy::default()
        };
        let encoded = policy.encode();
        assert_eq!(
            encoded,
            "eyJleHBpcnkiOjE3MDAwMDAwMDAsInBhdGgiOiIvaW1nLz4-fn4_Py8ifQ=="
        );
        let decoded = DecodedPolicy::decode(&encoded).expect("decodes");
        assert_eq!(decoded.limits.path.as_deref(), Some("/img/>>~~??/"));
    }

    #[test]
    fn query_form_percent_encodes_padding() {
        let creds = Credentials {
            policy: "abc==".into(),
            signature: "00".into(),
            expiry: 0,
        };
        assert_eq!(creds.policy_for_query(), "abc%3D%3D");
    }

    #[test]
    fn expiry_is_rounded_up_to_the_bucket_and_at_least_ttl_away() {
        let ttl = Duration::from_secs(3600);
        let bucket = Duration::from_secs(300);
        assert_eq!(bucketed_expiry(0, ttl, bucket), 3600);
        assert_eq!(bucketed_expiry(1, ttl, bucket), 3900);
        assert_eq!(bucketed_expiry(299, ttl, bucket), 3900);
        assert_eq!(bucketed_expiry(300, ttl, bucket), 3900);
        assert_eq!(bucketed_expiry(301, ttl, bucket), 4200);
        for now in 1_700_000_000..1_700_000_700 {
            let expiry = bucketed_expiry(now, ttl, bucket);
            assert!(expiry >= now + 3600);
            assert!(expiry < now + 3600 + 300);
            assert!(expiry.is_multiple_of(300));
        }
    }

    #[test]
    fn call_names_round_trip() {
        for call in Call::ALL {
            assert_eq!(call.as_str().parse::<Call>(), Ok(call));
            assert_eq!(
                serde_json::to_string(&call).expect("serialises"),
                format!("\"{call}\"")
            );
        }
        assert!("Read".parse::<Call>().is_err());
    }

    #[test]
    fn decode_reads_other_spellings() {
        // Python's spelling: sorted keys, spaces, \u escapes, a bare-string call.
        let json = r#"{"call": "read", "expiry": 1700000000.5, "path": "\u00fc"}"#;
        let decoded = DecodedPolicy::decode(&ENCODE.encode(json)).expect("decodes");
        assert_eq!(decoded.expiry, 1700000000);
        assert_eq!(decoded.call, Some(vec!["read".to_owned()]));
        assert_eq!(decoded.limits.path.as_deref(), Some("ü"));
        assert!(decoded.allows(Call::Read));
        assert!(!decoded.allows(Call::Convert));
    }

    #[test]
    fn decode_names_what_is_wrong() {
        assert_eq!(DecodedPolicy::decode("!!!"), Err(DecodeError::Base64));
        let not_json = ENCODE.encode("hello");
        assert!(matches!(
            DecodedPolicy::decode(&not_json),
            Err(DecodeError::Json(_))
        ));
        let no_expiry = ENCODE.encode("{}");
        assert!(matches!(
            DecodedPolicy::decode(&no_expiry),
            Err(DecodeError::Json(m)) if m.contains("expiry")
        ));
    }
}
