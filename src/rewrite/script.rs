//! JavaScript, when a route opts in (`rewrite_javascript`): a string literal whose whole text is
//! a CDN URL (`"https://cdn…/HANDLE"`, in `"`, `'` or backquotes) is signed; nothing else in the
//! code is touched. Off by default: README says why.

use std::sync::Arc;

use super::css::{URL_TOKEN_MAX, could_be_cdn_url};
use super::{CdnUrlSigner, Transform};
use crate::body::BoxError;

/// Streaming rewriting of CDN URL string literals: a byte goes out as soon as it is read,
/// except a quoted text that may still turn out to be a whole CDN URL, held until its closing
/// quote (at most [`URL_TOKEN_MAX`] bytes).
pub struct ScriptTransform {
    signer: Arc<CdnUrlSigner>,
    /// The quote that opened the literal being held, and what followed it so far.
    open: Option<(u8, Vec<u8>)>,
}

impl ScriptTransform {
    /// A script rewriter signing with `signer`.
    pub fn new(signer: Arc<CdnUrlSigner>) -> Self {
        Self { signer, open: None }
    }

    /// Whether `byte` may stand in a URL literal signgate signs: no escapes, no spaces, no
    /// template substitution, no other quote.
    fn may_continue(byte: u8) -> bool {
        !(byte.is_ascii_whitespace() || matches!(byte, b'\\' | b'$' | b'"' | b'\'' | b'`'))
    }
}

impl Transform for ScriptTransform {
    fn push(&mut self, chunk: &[u8]) -> Result<Vec<u8>, BoxError> {
        let mut out = Vec::with_capacity(chunk.len());
        let mut at = 0;
        while at < chunk.len() {
            let Some((quote, held)) = self.open.as_mut() else {
                match memchr::memchr3(b'"', b'\'', b'`', &chunk[at..]) {
                    Some(found) => {
                        out.extend_from_slice(&chunk[at..=at + found]);
                        self.open = Some((chunk[at + found], Vec::new()));
                        at += found + 1;
                    }
                    None => {
                        out.extend_from_slice(&chunk[at..]);
                        at = chunk.len();
                    }
                }
                continue;
            };
            let byte = chunk[at];
            if byte == *quote {
                // The literal closed: signed if it is a whole CDN URL.
                let signed = std::str::from_utf8(held)
                    .ok()
                    .and_then(|url| self.signer.sign(url));
                match signed {
                    Some(signed) => out.extend_from_slice(signed.as_bytes()),
                    None => out.append(held),
                }
                out.push(byte);
                self.open = None;
                at += 1;
                continue;
            }
            held.push(byte);
            if !Self::may_continue(byte)
                || held.len() > URL_TOKEN_MAX
                || !could_be_cdn_url(held, self.signer.hosts())
            {
                // Not a URL literal: what was held goes out, and the search goes on from the
                // next byte (a quote here is read as text again: it may open a literal).
                held.pop();
                out.append(held);
                self.open = None;
            } else {
                at += 1;
            }
        }
        Ok(out)
    }

    fn finish(&mut self) -> Result<Vec<u8>, BoxError> {
        Ok(self.open.take().map(|(_, held)| held).unwrap_or_default())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::rewrite::test_support::{H, cdn, signer};

    fn rewrite_in_pieces(js: &str, piece: usize) -> String {
        let mut t = ScriptTransform::new(signer());
        let mut out = Vec::new();
        for chunk in js.as_bytes().chunks(piece) {
            out.extend(t.push(chunk).expect("push"));
        }
        out.extend(t.finish().expect("finish"));
        String::from_utf8(out).expect("utf-8")
    }

    #[test]
    fn whole_url_literals_are_signed_in_every_quoting_and_nothing_else_changes() {
        let u = cdn(H);
        let signed = signer().sign(&u).expect("a CDN URL");
        let js = format!(
            "const a = \"{u}\", b = '{u}', c = `{u}`;\n\
             const d = \"see {u}\", e = `${{base}}/{u}`, f = \"{u}\\n\", g = 'x' + \"{u}\";\n\
             // a comment: it's \"{u}\"\n\
             const h = /\"[a-z]+\"/.test(s) ? \"https://example.com/{H}\" : '';"
        );
        let expected = js
            .replacen(&format!("\"{u}\","), &format!("\"{signed}\","), 1)
            .replacen(&format!("'{u}'"), &format!("'{signed}'"), 1)
            .replacen(&format!("`{u}`"), &format!("`{signed}`"), 1)
            .replacen(&format!("+ \"{u}\""), &format!("+ \"{signed}\""), 1)
            .replacen(&format!("it's \"{u}\""), &format!("it's \"{signed}\""), 1);
        for piece in [1, 2, 7, 64, js.len()] {
            assert_eq!(
                rewrite_in_pieces(&js, piece),
                expected,
                "chunked by {piece}"
            );
        }
    }

    #[test]
    fn code_without_cdn_urls_passes_byte_for_byte() {
        let js = "let s = 'it\\'s'; const t = `a${b}c`; /* \"unclosed */ const u = \"ht";
        for piece in [1, 3, js.len()] {
            assert_eq!(rewrite_in_pieces(js, piece), js, "chunked by {piece}");
        }
    }
}
