//! JSON: string values that are bare CDN URLs, signed once the whole answer (up to a limit) is
//! in.

use std::sync::Arc;

use super::{CdnUrlSigner, Transform};
use crate::body::BoxError;

/// JSON rewriting: string values that are bare CDN URLs get signed. The body is held up to
/// `limit` bytes; a larger one passes through untouched.
pub struct JsonTransform {
    signer: Arc<CdnUrlSigner>,
    limit: usize,
    held: Vec<u8>,
    passing_through: bool,
}

impl JsonTransform {
    /// A JSON rewriter holding at most `limit` bytes.
    pub fn new(signer: Arc<CdnUrlSigner>, limit: usize) -> Self {
        Self {
            signer,
            limit,
            held: Vec::new(),
            passing_through: false,
        }
    }
}

impl Transform for JsonTransform {
    fn push(&mut self, chunk: &[u8]) -> Result<Vec<u8>, BoxError> {
        if self.passing_through {
            return Ok(chunk.to_vec());
        }
        self.held.extend_from_slice(chunk);
        if self.held.len() > self.limit {
            self.passing_through = true;
            return Ok(std::mem::take(&mut self.held));
        }
        Ok(Vec::new())
    }

    fn finish(&mut self) -> Result<Vec<u8>, BoxError> {
        let held = std::mem::take(&mut self.held);
        if self.passing_through {
            return Ok(held);
        }
        let Ok(mut value) = serde_json::from_slice::<serde_json::Value>(&held) else {
            // Not JSON after all: what the site sent is what the client gets.
            return Ok(held);
        };
        if sign_json_strings(&mut value, &self.signer) {
            Ok(serde_json::to_vec(&value)?)
        } else {
            Ok(held)
        }
    }
}

fn sign_json_strings(value: &mut serde_json::Value, signer: &CdnUrlSigner) -> bool {
    match value {
        serde_json::Value::String(s) => match signer.sign(s) {
            Some(signed) => {
                *s = signed;
                true
            }
            None => false,
        },
        serde_json::Value::Array(items) => items
            .iter_mut()
            .fold(false, |changed, v| sign_json_strings(v, signer) | changed),
        serde_json::Value::Object(map) => map
            .values_mut()
            .fold(false, |changed, v| sign_json_strings(v, signer) | changed),
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::rewrite::test_support::{H, cdn, signer};

    #[test]
    fn json_strings_are_signed_and_large_bodies_pass_untouched() {
        let json = format!(
            r#"{{"photos":[{{"url":"{}","caption":"{}"}}],"n":1}}"#,
            cdn(H),
            cdn("x")
        );
        let mut t = JsonTransform::new(signer(), 1024);
        let mut out = t.push(json.as_bytes()).expect("push");
        out.extend(t.finish().expect("finish"));
        let value: serde_json::Value = serde_json::from_slice(&out).expect("json");
        assert!(
            value["photos"][0]["url"]
                .as_str()
                .expect("url")
                .contains("policy=")
        );
        assert_eq!(value["photos"][0]["caption"], cdn("x"));

        let mut small = JsonTransform::new(signer(), 10);
        let mut out = small.push(json.as_bytes()).expect("push");
        out.extend(small.finish().expect("finish"));
        assert_eq!(out, json.as_bytes());
    }
}
