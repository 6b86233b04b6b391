//! Why a signed URL or token is refused, in one type for every scheme, so the gateway and
//! `signgate explain` word (and the gateway answers) every scheme's refusals alike.

/// A refused signed URL or token. No variant carries key material.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Invalid {
    /// A credential is missing (a query parameter, a token field).
    #[error("missing `{0}`")]
    Missing(&'static str),
    /// A credential is present but unreadable, repeated, or contradicts another.
    #[error("malformed `{0}`")]
    Malformed(&'static str),
    /// The credential names another key (CloudFront's `Key-Pair-Id`).
    #[error("signed with key `{0}`, not this one")]
    WrongKey(String),
    /// The signature does not cover what was signed with this key.
    #[error("invalid signature")]
    BadSignature,
    /// The signature holds, but what it grants (a policy's resource, a token's ACL) does not
    /// cover this URL or path.
    #[error("the URL is not covered by what was signed")]
    NotCovered,
    /// The expiry has passed.
    #[error("expired at {expiry}")]
    Expired {
        /// The expiry, in unix seconds.
        expiry: u64,
    },
    /// The start has not come yet.
    #[error("not valid before {start}")]
    NotYetValid {
        /// The start, in unix seconds.
        start: u64,
    },
}
