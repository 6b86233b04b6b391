//! URL-signing schemes beside Filestack's policy and signature: S3-compatible presigned URLs
//! (SigV4), CloudFront signed URLs, imgix's `s` parameter and Akamai EdgeAuth tokens.
//!
//! Each scheme signs an object's URL (on the CDN or storage endpoint a route names) for a
//! [`Validity`]: pure functions of their inputs, so every replica hands out the same URL within
//! a bucket, and the vendors' SDK vectors (`tests/data/cdn-schemes.json`) are reproduced byte
//! for byte.

pub mod imgix;
pub mod s3;
#[cfg(test)]
mod vectors;

/// When a signed URL is valid, in unix seconds: from the start of its expiry bucket (what a
/// scheme that carries a signing time writes, such as SigV4's `X-Amz-Date`) to its expiry.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Validity {
    /// The start of the bucket the URL was signed in.
    pub start: u64,
    /// The moment the URL stops being valid.
    pub expiry: u64,
}
