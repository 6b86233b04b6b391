//! CSS: every `url(…)` holding a CDN URL, signed while a stylesheet (or a `<style>` block)
//! streams; every other byte as the site sent it.

use std::sync::Arc;

use super::{CdnUrlSigner, Transform};
use crate::body::BoxError;

/// Longest URL held while its end has not arrived. A longer one passes as it came and is not
/// signed, so a stylesheet cannot grow what is held.
pub const URL_TOKEN_MAX: usize = 16 * 1024;

const OPENER: &[u8; 4] = b"url(";

/// Streaming CSS rewriting: a byte goes out as soon as it is read, except the URL of a
/// `url(…)` that may be a CDN URL, held until it ends and then signed.
pub struct CssTransform {
    signer: Arc<CdnUrlSigner>,
    scanner: UrlScanner,
}

impl CssTransform {
    /// A stylesheet rewriter signing with `signer`.
    pub fn new(signer: Arc<CdnUrlSigner>) -> Self {
        Self {
            signer,
            scanner: UrlScanner::default(),
        }
    }
}

impl Transform for CssTransform {
    fn push(&mut self, chunk: &[u8]) -> Result<Vec<u8>, BoxError> {
        let mut out = Vec::with_capacity(chunk.len());
        self.scanner.feed(chunk, &self.signer, &mut out);
        Ok(out)
    }

    fn finish(&mut self) -> Result<Vec<u8>, BoxError> {
        Ok(self.scanner.finish())
    }
}

/// `css` with every complete `url(…)` holding a CDN URL signed.
pub fn sign_css_bytes(css: &[u8], signer: &CdnUrlSigner) -> Vec<u8> {
    let mut scanner = UrlScanner::default();
    let mut out = Vec::with_capacity(css.len() + 256);
    scanner.feed(css, signer, &mut out);
    out.extend(scanner.finish());
    out
}

/// Where the scanner is in the CSS.
#[derive(Debug)]
enum State {
    /// Outside a token; `matched` bytes of `url(` seen last.
    Text { matched: usize },
    /// After `url(`, before its URL (spaces, then perhaps a quote).
    Opened,
    /// In the URL, which ends at `quote` (or, unquoted, at `)` or a space). While it may still
    /// turn out to be a CDN URL, its bytes are `held`; otherwise they go straight out.
    Url {
        quote: Option<u8>,
        held: Vec<u8>,
        holding: bool,
    },
}

impl Default for State {
    fn default() -> Self {
        Self::Text { matched: 0 }
    }
}

/// The `url(…)` tokenizer under [`CssTransform`]: one pass, no backtracking.
#[derive(Debug, Default)]
struct UrlScanner {
    state: State,
}

impl UrlScanner {
    /// Reads `chunk`, writing to `out` everything that need not wait.
    fn feed(&mut self, chunk: &[u8], signer: &CdnUrlSigner, out: &mut Vec<u8>) {
        let mut at = 0;
        while at < chunk.len() {
            at = match &mut self.state {
                State::Text { matched } => {
                    let from = if *matched == 0 {
                        match memchr::memchr2(b'u', b'U', &chunk[at..]) {
                            Some(found) => at + found,
                            None => chunk.len(),
                        }
                    } else {
                        at
                    };
                    out.extend_from_slice(&chunk[at..from]);
                    let Some(&byte) = chunk.get(from) else {
                        break;
                    };
                    out.push(byte);
                    *matched = if byte.eq_ignore_ascii_case(&OPENER[*matched]) {
                        *matched + 1
                    } else {
                        usize::from(byte.eq_ignore_ascii_case(&b'u'))
                    };
                    if *matched == OPENER.len() {
                        self.state = State::Opened;
                    }
                    from + 1
                }
                State::Opened => {
                    let byte = chunk[at];
                    if byte.is_ascii_whitespace() {
                        out.push(byte);
                        at + 1
                    } else {
                        let quoted = byte == b'"' || byte == b'\'';
                        if quoted {
                            out.push(byte);
                        }
                        self.state = State::Url {
                            quote: quoted.then_some(byte),
                            held: Vec::new(),
                            holding: true,
                        };
                        at + usize::from(quoted)
                    }
                }
                State::Url {
                    quote,
                    held,
                    holding,
                } => {
                    let rest = &chunk[at..];
                    let end = match quote {
                        Some(q) => memchr::memchr(*q, rest),
                        None => rest
                            .iter()
                            .position(|b| *b == b')' || b.is_ascii_whitespace()),
                    };
                    let piece = &rest[..end.unwrap_or(rest.len())];
                    if *holding {
                        held.extend_from_slice(piece);
                        if held.len() > URL_TOKEN_MAX || !could_be_cdn_url(held, signer.hosts()) {
                            *holding = false;
                            out.append(held);
                        }
                    } else {
                        out.extend_from_slice(piece);
                    }
                    let Some(end) = end else {
                        break;
                    };
                    if *holding {
                        let signed = std::str::from_utf8(held).ok().and_then(|u| signer.sign(u));
                        match signed {
                            Some(signed) => out.extend_from_slice(signed.as_bytes()),
                            None => out.append(held),
                        }
                    }
                    self.state = State::default();
                    at + end
                }
            };
        }
    }

    /// The input ended: a URL still open goes out as it came.
    fn finish(&mut self) -> Vec<u8> {
        match std::mem::take(&mut self.state) {
            State::Url { held, .. } => held,
            _ => Vec::new(),
        }
    }
}

/// Whether a URL that starts with `partial` may be a file URL on one of `hosts`.
pub(super) fn could_be_cdn_url(partial: &[u8], hosts: &[String]) -> bool {
    hosts.iter().any(|host| {
        ["https://", "http://", "//"].iter().any(|scheme| {
            let start = scheme.bytes().chain(host.bytes()).chain([b'/']);
            start
                .zip(partial)
                .all(|(expected, got)| expected.eq_ignore_ascii_case(got))
        })
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::rewrite::test_support::{H, cdn, signer};

    fn rewrite_in_pieces(css: &[u8], piece: usize) -> Vec<u8> {
        let mut t = CssTransform::new(signer());
        let mut out = Vec::new();
        for chunk in css.chunks(piece) {
            out.extend(t.push(chunk).expect("push"));
        }
        out.extend(t.finish().expect("finish"));
        out
    }

    fn signed(url: &str) -> String {
        signer().sign(url).expect("a CDN URL")
    }

    #[test]
    fn every_cdn_url_is_signed_and_every_other_byte_kept_however_it_is_chunked() {
        let u = cdn(H);
        // Latin-1 bytes and invalid UTF-8 around the URLs stay exactly as they were.
        let mut css = b"/* caf\xe9 \xff\xfe menu */ .a{background:uurl(".to_vec();
        css.extend_from_slice(u.as_bytes());
        css.extend_from_slice(b")} .b{background:URL( \"");
        css.extend_from_slice(u.as_bytes());
        css.extend_from_slice(b"\" )} .c{background:url('https://example.com/x.png')} .d{x:url(");
        let mut expected = b"/* caf\xe9 \xff\xfe menu */ .a{background:uurl(".to_vec();
        expected.extend_from_slice(signed(&u).as_bytes());
        expected.extend_from_slice(b")} .b{background:URL( \"");
        expected.extend_from_slice(signed(&u).as_bytes());
        expected
            .extend_from_slice(b"\" )} .c{background:url('https://example.com/x.png')} .d{x:url(");
        for piece in [1, 2, 3, 5, 7, 64, css.len()] {
            assert_eq!(
                String::from_utf8_lossy(&rewrite_in_pieces(&css, piece)),
                String::from_utf8_lossy(&expected),
                "chunked by {piece}"
            );
        }
    }

    #[test]
    fn bytes_go_out_as_they_arrive_unless_they_may_be_a_cdn_url() {
        let mut t = CssTransform::new(signer());
        assert_eq!(t.push(b".a{x:ur").expect("push"), b".a{x:ur");
        assert_eq!(t.push(b"l(/local/").expect("push"), b"l(/local/");
        assert_eq!(
            t.push(b"x.png) .b{y:url(\"https://cdn.filest")
                .expect("push"),
            b"x.png) .b{y:url(\""
        );
        let rest = t
            .push(format!("ackcontent.com/{H}\")}}").as_bytes())
            .expect("push");
        assert!(String::from_utf8_lossy(&rest).contains("policy="));
    }

    #[test]
    fn a_stylesheet_without_cdn_urls_comes_back_byte_for_byte() {
        let css = b"@charset \"Shift_JIS\"; .menu{content:\"\x83\x81\x83j\x83\x85\x81[\"} .u{x:url(/local.png)} u";
        for piece in [1, 4, css.len()] {
            assert_eq!(
                rewrite_in_pieces(css, piece),
                css.to_vec(),
                "chunked by {piece}"
            );
        }
    }

    #[test]
    fn an_overlong_url_passes_unsigned_and_what_follows_is_still_signed() {
        let u = cdn(H);
        let long = format!("{u}?x={}", "A".repeat(URL_TOKEN_MAX));
        let css = format!(".a{{background:url({long})}} .b{{background:url({u})}}");
        let mut t = CssTransform::new(signer());
        let mut out = Vec::new();
        for chunk in css.as_bytes().chunks(1000) {
            out.extend(t.push(chunk).expect("push"));
        }
        out.extend(t.finish().expect("finish"));
        assert_eq!(
            String::from_utf8(out).expect("utf-8"),
            css.replace(&format!("url({u})"), &format!("url({})", signed(&u)))
        );
    }
}
