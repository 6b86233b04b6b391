//! The app secret: a newtype that signs and verifies but never prints itself.

use std::fmt;

use hmac::{Hmac, KeyInit, Mac};
use sha2::Sha256;

type HmacSha256 = Hmac<Sha256>;

/// The app secret, keyed into HMAC-SHA256 once at start.
///
/// Built only through [`Secret::new`], which refuses an empty secret. `Debug` is redacted, and
/// there is no way to get the secret back out.
#[derive(Clone)]
pub struct Secret {
    /// HMAC state after the key block: cloning it per signature skips re-keying.
    keyed: HmacSha256,
    /// Stands in for a secret that is not available here (see [`Secret::placeholder`]).
    placeholder: bool,
}

/// A secret that cannot be used.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("the secret is empty")]
pub struct EmptySecret;

impl Secret {
    /// Builds a secret from its UTF-8 text (the HMAC key is its bytes); empty is refused.
    pub fn new(text: String) -> Result<Self, EmptySecret> {
        if text.is_empty() {
            return Err(EmptySecret);
        }
        Ok(Self::from_bytes(text.as_bytes()))
    }

    /// Builds a secret from raw key bytes, empty included; only the test vectors need that.
    #[doc(hidden)]
    pub fn from_bytes(key: &[u8]) -> Self {
        let keyed = HmacSha256::new_from_slice(key).expect("HMAC accepts keys of any length");
        Self {
            keyed,
            placeholder: false,
        }
    }

    /// Stands in for a secret whose variable or file is not available, so `signgate check` can
    /// validate a config without it. Its key is empty, which no CDN accepts, and
    /// [`Secret::is_placeholder`] says so: nothing that serves or signs is built from one.
    pub fn placeholder() -> Self {
        Self {
            placeholder: true,
            ..Self::from_bytes(&[])
        }
    }

    /// Whether this is a [`Secret::placeholder`].
    pub fn is_placeholder(&self) -> bool {
        self.placeholder
    }

    /// Lowercase hex HMAC-SHA256 of `message`.
    pub fn sign_hex(&self, message: &[u8]) -> String {
        let mut mac = self.keyed.clone();
        mac.update(message);
        hex_lower(&mac.finalize().into_bytes())
    }

    /// Whether `signature_hex` (either case) is the HMAC of `message`, compared in constant time.
    pub fn verify_hex(&self, message: &[u8], signature_hex: &str) -> bool {
        let Some(tag) = hex_decode(signature_hex) else {
            return false;
        };
        let mut mac = self.keyed.clone();
        mac.update(message);
        mac.verify_slice(&tag).is_ok()
    }
}

/// Two secrets are equal when they key HMAC-SHA256 alike: what a reload asks to know whether a
/// route's signatures (and so its credential cache) stay valid. Compared through the MAC of a
/// fixed message, since the key itself is not kept.
impl PartialEq for Secret {
    fn eq(&self, other: &Self) -> bool {
        const PROBE: &[u8] = b"signgate: same secret?";
        self.placeholder == other.placeholder && other.verify_hex(PROBE, &self.sign_hex(PROBE))
    }
}

impl Eq for Secret {}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Secret(<redacted>)")
    }
}

/// A key another signing scheme needs as text (S3's secret access key, from which SigV4
/// derives its keys; CloudFront's private key PEM; imgix's token; Akamai's hex key), unlike
/// [`Secret`], which keys HMAC once and keeps no text. `Debug` is redacted; only a scheme's
/// signer reads it, through [`KeyMaterial::expose`].
#[derive(Clone, PartialEq, Eq)]
pub struct KeyMaterial(std::sync::Arc<str>);

impl KeyMaterial {
    /// Key material from its text; empty is refused.
    pub fn new(text: String) -> Result<Self, EmptySecret> {
        if text.is_empty() {
            return Err(EmptySecret);
        }
        Ok(Self(text.into()))
    }

    /// The text, for a scheme's signer to derive its key from. Never log or print it.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

/// The name the S3 and imgix signers give [`KeyMaterial`].
pub type TextSecret = KeyMaterial;

impl fmt::Debug for KeyMaterial {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("KeyMaterial(<redacted>)")
    }
}

/// `bytes` as lowercase hex: the one hex encoder, for signatures and the demo's secret.
pub fn hex_lower(bytes: &[u8]) -> String {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    let mut out = String::with_capacity(bytes.len() * 2);
    for byte in bytes {
        out.push(char::from(DIGITS[usize::from(byte >> 4)]));
        out.push(char::from(DIGITS[usize::from(byte & 0x0f)]));
    }
    out
}

/// `text` (hex digits of either case, an even number of them) as bytes.
pub(crate) fn hex_decode(text: &str) -> Option<Vec<u8>> {
    if !text.len().is_multiple_of(2) {
        return None;
    }
    text.as_bytes()
        .chunks_exact(2)
        .map(|pair| {
            let high = char::from(pair[0]).to_digit(16)?;
            let low = char::from(pair[1]).to_digit(16)?;
            u8::try_from(high * 16 + low).ok()
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn empty_secret_is_refused() {
        assert_eq!(Secret::new(String::new()).err(), Some(EmptySecret));
    }

    #[test]
    fn debug_never_shows_the_secret() {
        let secret = Secret::new("hunter2hunter2".into()).expect("not empty");
        assert_eq!(format!("{secret:?}"), "Secret(<redacted>)");
    }

    #[test]
    fn text_secrets_are_never_empty_nor_shown() {
        assert_eq!(TextSecret::new(String::new()).err(), Some(EmptySecret));
        let token = TextSecret::new("hunter2hunter2".into()).expect("not empty");
        assert_eq!(format!("{token:?}"), "KeyMaterial(<redacted>)");
        assert_eq!(token.expose(), "hunter2hunter2");
    }

    #[test]
    fn secrets_are_equal_when_they_key_alike() {
        let a = Secret::new("hunter2hunter2".into()).expect("not empty");
        let b = Secret::new("hunter2hunter2".into()).expect("not empty");
        let c = Secret::new("hunter3hunter3".into()).expect("not empty");
        assert_eq!(a, b);
        assert_ne!(a, c);
        assert_ne!(Secret::placeholder(), Secret::from_bytes(&[]));
    }

    #[test]
    fn rfc4231_case_2() {
        let secret = Secret::new("Jefe".into()).expect("not empty");
        let sig = secret.sign_hex(b"what do ya want for nothing?");
        assert_eq!(
            sig,
            "5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843"
        );
        assert!(secret.verify_hex(b"what do ya want for nothing?", &sig));
        assert!(secret.verify_hex(b"what do ya want for nothing?", &sig.to_ascii_uppercase()));
        assert!(!secret.verify_hex(b"what do ya want for nothing!", &sig));
        assert!(!secret.verify_hex(b"what do ya want for nothing?", "zz"));
        assert!(!secret.verify_hex(b"what do ya want for nothing?", &sig[..62]));
    }
}
