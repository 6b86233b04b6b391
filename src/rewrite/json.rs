//! JSON: string values that are bare CDN URLs, signed once the whole answer (up to a limit) is
//! in.

use std::sync::Arc;

use super::budget::{Held, HoldBudget};
use super::{CdnUrlSigner, Transform};
use crate::body::BoxError;

/// JSON rewriting: string values that are bare CDN URLs get signed. The body is held up to
/// `limit` bytes, and only while the worker's [`HoldBudget`] has room; otherwise it passes
/// through untouched.
pub struct JsonTransform {
    signer: Arc<CdnUrlSigner>,
    limit: usize,
    held: Vec<u8>,
    passing_through: bool,
    budget: Arc<HoldBudget>,
    /// What `held` (and then the signed answer, until the body is dropped) takes of `budget`.
    taken: Held,
}

impl JsonTransform {
    /// A JSON rewriter holding at most `limit` bytes, out of `budget`.
    pub fn new(signer: Arc<CdnUrlSigner>, limit: usize, budget: Arc<HoldBudget>) -> Self {
        Self {
            signer,
            limit,
            held: Vec::new(),
            passing_through: false,
            budget,
            taken: Held::default(),
        }
    }

    /// Stops holding: what was held goes out first, then the rest as it comes.
    fn pass_through(&mut self, chunk: &[u8]) -> Vec<u8> {
        self.passing_through = true;
        self.taken.release();
        let mut out = std::mem::take(&mut self.held);
        out.extend_from_slice(chunk);
        out
    }
}

impl Transform for JsonTransform {
    fn push(&mut self, chunk: &[u8]) -> Result<Vec<u8>, BoxError> {
        if self.passing_through {
            return Ok(chunk.to_vec());
        }
        if self.held.len() + chunk.len() > self.limit {
            return Ok(self.pass_through(chunk));
        }
        if !self.budget.take(&mut self.taken, chunk.len()) {
            tracing::warn!(
                held = self.held.len(),
                "json_hold_budget spent: a JSON answer passes through unrewritten"
            );
            return Ok(self.pass_through(chunk));
        }
        self.held.extend_from_slice(chunk);
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
        let grown = sign_json_strings(&mut value, &self.signer);
        if grown == 0 {
            return Ok(held);
        }
        // The signed answer is what waits on a slow client, so the budget counts it, not the
        // answer as sent, until the body is dropped. Without room for the difference, the
        // answer goes out as the site sent it.
        if !self.budget.take(&mut self.taken, grown) {
            tracing::warn!(
                held = held.len(),
                "json_hold_budget spent: a JSON answer passes through unrewritten"
            );
            self.taken.release();
            return Ok(held);
        }
        drop(held);
        Ok(serde_json::to_vec(&value)?)
    }
}

/// Signs every string in `value` that is a bare CDN URL; returns how many bytes the strings
/// grew by (0: nothing signed).
fn sign_json_strings(value: &mut serde_json::Value, signer: &CdnUrlSigner) -> usize {
    match value {
        serde_json::Value::String(s) => match signer.sign(s) {
            Some(signed) => {
                let grown = signed.len().saturating_sub(s.len()).max(1);
                *s = signed;
                grown
            }
            None => 0,
        },
        serde_json::Value::Array(items) => {
            items.iter_mut().map(|v| sign_json_strings(v, signer)).sum()
        }
        serde_json::Value::Object(map) => {
            map.values_mut().map(|v| sign_json_strings(v, signer)).sum()
        }
        _ => 0,
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
        let budget = Arc::new(HoldBudget::new(1 << 20));
        let mut t = JsonTransform::new(signer(), 1024, Arc::clone(&budget));
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

        let mut small = JsonTransform::new(signer(), 10, Arc::clone(&budget));
        let mut out = small.push(json.as_bytes()).expect("push");
        out.extend(small.finish().expect("finish"));
        assert_eq!(out, json.as_bytes());
    }

    /// What `json` signs to, and its length.
    fn signed_len(json: &str) -> usize {
        let mut t = JsonTransform::new(signer(), 1 << 20, Arc::new(HoldBudget::new(1 << 20)));
        let mut out = t.push(json.as_bytes()).expect("push");
        out.extend(t.finish().expect("finish"));
        assert!(String::from_utf8_lossy(&out).contains("policy="));
        out.len()
    }

    #[test]
    fn past_the_workers_budget_json_passes_through_and_the_bytes_come_back() {
        let json = format!(r#"{{"url":"{}"}}"#, cdn(H));
        let signed = signed_len(&json);
        let budget = Arc::new(HoldBudget::new(signed + 10));
        let mut first = JsonTransform::new(signer(), 1 << 20, Arc::clone(&budget));
        assert!(
            first.push(json.as_bytes()).expect("push").is_empty(),
            "held"
        );
        let padded = format!(r#"{{"url":"{}","pad":"{}"}}"#, cdn(H), "p".repeat(signed));
        let mut second = JsonTransform::new(signer(), 1 << 20, Arc::clone(&budget));
        let mut out = second.push(padded.as_bytes()).expect("push");
        out.extend(second.finish().expect("finish"));
        assert_eq!(
            out,
            padded.as_bytes(),
            "no room left: passed through as sent"
        );
        assert_eq!(budget.refused(), 1);
        let out = first.finish().expect("finish");
        assert_eq!(out.len(), signed, "signed");
        assert_eq!(budget.available(), 10, "the signed answer is what is held");
        drop(first);
        assert_eq!(budget.available(), signed + 10, "given back with the body");
    }

    #[test]
    fn a_signed_answer_that_would_outgrow_the_budget_goes_out_as_sent() {
        let json = format!(r#"{{"url":"{}"}}"#, cdn(H));
        let budget = Arc::new(HoldBudget::new(signed_len(&json) - 1));
        let mut t = JsonTransform::new(signer(), 1 << 20, Arc::clone(&budget));
        assert!(t.push(json.as_bytes()).expect("push").is_empty(), "held");
        assert_eq!(t.finish().expect("finish"), json.as_bytes());
        assert_eq!(budget.refused(), 1);
        assert_eq!(budget.available(), signed_len(&json) - 1, "nothing kept");
    }
}
