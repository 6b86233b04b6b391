//! JSON: string values that are bare CDN URLs, signed as the answer streams and spliced into
//! the bytes as sent, so every other byte (numbers, key order, duplicates, escapes, spacing)
//! comes out as the site wrote it.

use std::sync::Arc;

use super::{CdnUrlSigner, Transform};
use crate::body::BoxError;

/// Longest string token (quotes and escapes included) held to see whether it is a CDN URL.
/// CDN URLs are far shorter even with long task chains (the attribute cache stops at 1 KiB);
/// a longer string goes out as it came, unsigned, so holding stays small.
const HELD_STRING_MAX: usize = 16 * 1024;

/// Deepest nesting whose objects and arrays are told apart. Past it a string cannot be known
/// to be a value rather than a key, so it passes unsigned; the bytes are unchanged either way.
const MAX_DEPTH: usize = 1024;

/// JSON rewriting as the answer streams: string values (never object keys) that are bare CDN
/// URLs are replaced by their signed form, every other byte passes as sent. Invalid JSON never
/// fails: its bytes pass, at most its well-formed CDN URL strings signed.
pub struct JsonTransform {
    signer: Arc<CdnUrlSigner>,
    splicer: Splicer,
}

impl JsonTransform {
    /// A JSON rewriter signing with `signer`.
    pub fn new(signer: Arc<CdnUrlSigner>) -> Self {
        Self {
            signer,
            splicer: Splicer::default(),
        }
    }
}

impl Transform for JsonTransform {
    fn push(&mut self, chunk: &[u8]) -> Result<Vec<u8>, BoxError> {
        let mut out = Vec::with_capacity(chunk.len());
        self.splicer.push(chunk, &self.signer, &mut out);
        Ok(out)
    }

    fn finish(&mut self) -> Result<Vec<u8>, BoxError> {
        let mut out = Vec::new();
        self.splicer.finish(&mut out);
        Ok(out)
    }
}

/// Signs the CDN URL string values in a whole JSON text (a `<script type="application/ld+json">`
/// block, `__NEXT_DATA__`), keeping every other byte; `None` when nothing was signed.
pub fn sign_json_text(text: &str, signer: &CdnUrlSigner) -> Option<String> {
    let mut splicer = Splicer::default();
    let mut out = Vec::with_capacity(text.len() + 256);
    splicer.push(text.as_bytes(), signer, &mut out);
    splicer.finish(&mut out);
    if !splicer.signed_any {
        return None;
    }
    String::from_utf8(out).ok()
}

/// One open object or array.
#[derive(Debug, Clone, Copy)]
enum Container {
    Array,
    /// An object; `expecting_key` until its next `:`.
    Object {
        expecting_key: bool,
    },
}

/// The string token being read.
#[derive(Debug, Default)]
struct OpenString {
    /// The byte after a `\`, whatever it is, belongs to the escape.
    after_backslash: bool,
    /// Held to be signed (a value, not past [`HELD_STRING_MAX`]); otherwise it passes as read.
    held: bool,
}

/// The tokenizer: where in the JSON text the bytes read so far end, and the string value held.
#[derive(Debug, Default)]
struct Splicer {
    containers: Vec<Container>,
    /// Nesting past [`MAX_DEPTH`], counted but not told apart.
    untracked_depth: usize,
    string: Option<OpenString>,
    /// The held string token, from its opening quote.
    token: Vec<u8>,
    signed_any: bool,
}

impl Splicer {
    /// Reads `input`, writing to `out` everything that need not wait.
    fn push(&mut self, mut input: &[u8], signer: &CdnUrlSigner, out: &mut Vec<u8>) {
        while !input.is_empty() {
            let used = if self.string.is_some() {
                self.read_string(input, signer, out)
            } else {
                self.read_structure(input, out)
            };
            input = &input[used..];
        }
    }

    /// The input ended: a string still open goes out as it came.
    fn finish(&mut self, out: &mut Vec<u8>) {
        self.string = None;
        out.append(&mut self.token);
    }

    /// Reads bytes outside strings up to and including the next opening quote; returns how
    /// many were read.
    fn read_structure(&mut self, input: &[u8], out: &mut Vec<u8>) -> usize {
        for (i, &byte) in input.iter().enumerate() {
            match byte {
                b'"' => {
                    out.extend_from_slice(&input[..i]);
                    self.open_string(out);
                    return i + 1;
                }
                b'{' => self.open_container(Container::Object {
                    expecting_key: true,
                }),
                b'[' => self.open_container(Container::Array),
                b'}' | b']' => self.close_container(),
                b':' => self.set_expecting_key(false),
                b',' => self.set_expecting_key(true),
                _ => {}
            }
        }
        out.extend_from_slice(input);
        input.len()
    }

    fn open_container(&mut self, container: Container) {
        if self.untracked_depth > 0 || self.containers.len() >= MAX_DEPTH {
            self.untracked_depth = self.untracked_depth.saturating_add(1);
        } else {
            self.containers.push(container);
        }
    }

    /// Closes the innermost container, whichever bracket closes it: invalid JSON only has to
    /// pass, not be understood.
    fn close_container(&mut self) {
        if self.untracked_depth > 0 {
            self.untracked_depth -= 1;
        } else {
            self.containers.pop();
        }
    }

    fn set_expecting_key(&mut self, key: bool) {
        if self.untracked_depth > 0 {
            return;
        }
        if let Some(Container::Object { expecting_key }) = self.containers.last_mut() {
            *expecting_key = key;
        }
    }

    /// Whether a string starting here is a value (top level or array item included).
    fn string_is_value(&self) -> bool {
        if self.untracked_depth > 0 {
            return false;
        }
        !matches!(
            self.containers.last(),
            Some(Container::Object {
                expecting_key: true
            })
        )
    }

    fn open_string(&mut self, out: &mut Vec<u8>) {
        let held = self.string_is_value();
        if held {
            self.token.push(b'"');
        } else {
            out.push(b'"');
        }
        self.string = Some(OpenString {
            after_backslash: false,
            held,
        });
    }

    /// Reads string bytes up to and including the closing quote; returns how many were read.
    fn read_string(&mut self, input: &[u8], signer: &CdnUrlSigner, out: &mut Vec<u8>) -> usize {
        let Some(string) = self.string.as_mut() else {
            return self.read_structure(input, out);
        };
        let mut closed_at = None;
        for (i, &byte) in input.iter().enumerate() {
            if string.after_backslash {
                string.after_backslash = false;
            } else if byte == b'\\' {
                string.after_backslash = true;
            } else if byte == b'"' {
                closed_at = Some(i);
                break;
            }
        }
        let used = closed_at.map_or(input.len(), |i| i + 1);
        let read = &input[..used];
        if !string.held {
            out.extend_from_slice(read);
        } else if self.token.len() + read.len() > HELD_STRING_MAX {
            // Too long to be a CDN URL: it goes out as it came.
            string.held = false;
            out.append(&mut self.token);
            out.extend_from_slice(read);
        } else {
            self.token.extend_from_slice(read);
        }
        if closed_at.is_some() {
            let held = string.held;
            self.string = None;
            if held {
                self.close_held_string(signer, out);
            }
        }
        used
    }

    /// Writes the held string token: signed if it is a CDN URL, else as it came.
    fn close_held_string(&mut self, signer: &CdnUrlSigner, out: &mut Vec<u8>) {
        // The token runs from its opening quote to its closing one.
        let Some(content) = self.token.get(1..self.token.len().saturating_sub(1)) else {
            out.append(&mut self.token);
            return;
        };
        let signed = may_be_url(content)
            .then(|| decode(content))
            .flatten()
            .and_then(|url| signer.sign(&url));
        match signed {
            Some(signed) => {
                encode(&signed, Escapes::like(content), out);
                self.signed_any = true;
                self.token.clear();
            }
            None => out.append(&mut self.token),
        }
    }
}

/// Whether a string's raw content could decode to a URL `CdnUrlSigner::sign` takes (`http`,
/// `https` or `//`, perhaps escaped): most strings are not worth decoding.
fn may_be_url(content: &[u8]) -> bool {
    matches!(content.first(), Some(b'h' | b'H' | b'/' | b'\\'))
}

/// A string token's content, JSON escapes undone; `None` if it is not a valid JSON string
/// (bad escape, lone surrogate, raw control character, invalid UTF-8).
fn decode(content: &[u8]) -> Option<String> {
    let text = std::str::from_utf8(content).ok()?;
    let mut decoded = String::with_capacity(text.len());
    let mut chars = text.chars();
    while let Some(c) = chars.next() {
        match c {
            '\\' => decoded.push(decode_escape(&mut chars)?),
            c if c < ' ' => return None,
            c => decoded.push(c),
        }
    }
    Some(decoded)
}

/// The character an escape stands for, read after its `\`.
fn decode_escape(chars: &mut std::str::Chars<'_>) -> Option<char> {
    let c = match chars.next()? {
        '"' => '"',
        '\\' => '\\',
        '/' => '/',
        'b' => '\u{8}',
        'f' => '\u{c}',
        'n' => '\n',
        'r' => '\r',
        't' => '\t',
        'u' => return decode_unicode_escape(chars),
        _ => return None,
    };
    Some(c)
}

/// The character of a `\uXXXX` escape (read after its `u`), or of a surrogate pair.
fn decode_unicode_escape(chars: &mut std::str::Chars<'_>) -> Option<char> {
    let first = hex4(chars)?;
    if !(0xD800..0xDC00).contains(&first) {
        return char::from_u32(first);
    }
    if chars.next()? != '\\' || chars.next()? != 'u' {
        return None;
    }
    let second = hex4(chars)?;
    if !(0xDC00..0xE000).contains(&second) {
        return None;
    }
    char::from_u32(0x10000 + ((first - 0xD800) << 10) + (second - 0xDC00))
}

fn hex4(chars: &mut std::str::Chars<'_>) -> Option<u32> {
    (0..4).try_fold(0, |value, _| Some(value * 16 + chars.next()?.to_digit(16)?))
}

/// Which optional escapes the signed token uses, following the original token so a page that
/// escapes them stays consistent.
#[derive(Debug, Clone, Copy)]
struct Escapes {
    /// `/` as `\/` (PHP's default).
    slash: bool,
    /// `&` as `\u0026` (Go's default).
    ampersand: bool,
    /// Anything past ASCII as `\uXXXX`: an ASCII token stays ASCII.
    non_ascii: bool,
}

impl Escapes {
    fn like(content: &[u8]) -> Self {
        let has = |needle: &[u8]| {
            content
                .windows(needle.len())
                .any(|w| w.eq_ignore_ascii_case(needle))
        };
        Self {
            slash: has(b"\\/"),
            ampersand: has(b"\\u0026"),
            non_ascii: content.is_ascii(),
        }
    }
}

/// Writes `text` as a JSON string token. `<` and `>` are always escaped (as are U+2028 and
/// U+2029), so a URL whose original spelled them as escapes cannot close a `<script>` the
/// JSON sits in.
fn encode(text: &str, escapes: Escapes, out: &mut Vec<u8>) {
    out.push(b'"');
    let mut units = [0u16; 2];
    for c in text.chars() {
        match c {
            '"' => out.extend_from_slice(b"\\\""),
            '\\' => out.extend_from_slice(b"\\\\"),
            '\n' => out.extend_from_slice(b"\\n"),
            '\r' => out.extend_from_slice(b"\\r"),
            '\t' => out.extend_from_slice(b"\\t"),
            '/' if escapes.slash => out.extend_from_slice(b"\\/"),
            '&' if escapes.ampersand => push_unicode_escape(u16::from(b'&'), out),
            c if c < ' ' || matches!(c, '<' | '>' | '\u{2028}' | '\u{2029}') => {
                for unit in c.encode_utf16(&mut units) {
                    push_unicode_escape(*unit, out);
                }
            }
            c if !c.is_ascii() && escapes.non_ascii => {
                for unit in c.encode_utf16(&mut units) {
                    push_unicode_escape(*unit, out);
                }
            }
            c => {
                let mut utf8 = [0u8; 4];
                out.extend_from_slice(c.encode_utf8(&mut utf8).as_bytes());
            }
        }
    }
    out.push(b'"');
}

fn push_unicode_escape(unit: u16, out: &mut Vec<u8>) {
    out.extend_from_slice(format!("\\u{unit:04x}").as_bytes());
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::policy::Call;
    use crate::rewrite::test_support::{H, NOW, cdn, signer};
    use crate::secret::Secret;
    use crate::verify::verify_at;

    /// Runs `json` through a [`JsonTransform`] in pieces of `size` bytes.
    fn splice_in_chunks(json: &[u8], size: usize) -> Vec<u8> {
        let mut t = JsonTransform::new(signer());
        let mut out = Vec::new();
        for chunk in json.chunks(size) {
            out.extend(t.push(chunk).expect("push"));
        }
        out.extend(t.finish().expect("finish"));
        out
    }

    fn splice(json: &str) -> String {
        String::from_utf8(splice_in_chunks(json.as_bytes(), json.len().max(1))).expect("utf-8")
    }

    fn signed(url: &str) -> String {
        signer().sign(url).expect("a CDN URL")
    }

    fn valid(url: &str) -> bool {
        let secret = Secret::new("s".into()).expect("secret");
        verify_at(url, &secret, NOW, Call::Read).is_ok()
    }

    /// A document serde would not give back as written, with one CDN URL deep inside.
    fn awkward_document() -> String {
        format!(
            "{{ \"z\":12345678901234567890123,\t\"price\" :19.90,\"a\":1,\"a\":2,\r\n\
             \"name\":\"caf\\u00e9 \\/ bar\",\"e\":1E+2, \"deep\":[ [ {{\"k\":[\"x\", \"{}\"  ]}} ] ],\
             \"empty\":\"\",\"t\":true,\"n\":null }}\n",
            cdn(H)
        )
    }

    #[test]
    fn every_byte_but_the_url_is_as_sent() {
        let json = awkward_document();
        let url = cdn(H);
        let signed_url = signed(&url);
        assert!(valid(&signed_url), "{signed_url}");
        let expected = json.replace(&format!("\"{url}\""), &format!("\"{signed_url}\""));
        assert_ne!(expected, json);
        assert_eq!(splice(&json), expected);
    }

    #[test]
    fn any_chunking_gives_the_same_output() {
        let json = format!(
            "{}[\"\\ud83d\\ude00\",\"h\\u0074tps:\\/\\/cdn.filestackcontent.com\\/{H}\",\"é😀\\\\\"]",
            awkward_document()
        );
        let whole = splice_in_chunks(json.as_bytes(), json.len());
        assert_eq!(
            String::from_utf8_lossy(&whole)
                .matches("signature=")
                .count(),
            2
        );
        for size in 1..=17 {
            assert_eq!(
                splice_in_chunks(json.as_bytes(), size),
                whole,
                "chunks of {size}"
            );
        }
    }

    #[test]
    fn a_key_that_is_a_cdn_url_is_not_signed() {
        let url = cdn(H);
        let json = format!("{{\"{url}\":\"{url}\",\"b\":{{\"{url}\":[\"{url}\"]}}}}");
        let signed_url = signed(&url);
        let expected =
            format!("{{\"{url}\":\"{signed_url}\",\"b\":{{\"{url}\":[\"{signed_url}\"]}}}}");
        assert_eq!(splice(&json), expected);
    }

    #[test]
    fn a_string_past_the_cap_passes_unchanged() {
        let long = format!("{}?pad={}", cdn(H), "p".repeat(HELD_STRING_MAX));
        assert!(signer().sign(&long).is_some(), "signable, were it short");
        let json = format!("{{\"url\":\"{long}\",\"next\":\"{}\"}}", cdn(H));
        let expected = json.replace(
            &format!("\"{}\"", cdn(H)),
            &format!("\"{}\"", signed(&cdn(H))),
        );
        assert_eq!(splice(&json), expected);
        assert_eq!(
            String::from_utf8(splice_in_chunks(json.as_bytes(), 7)).expect("utf-8"),
            expected
        );
    }

    #[test]
    fn invalid_json_comes_back_as_sent_but_for_well_formed_url_strings() {
        let url = cdn(H);
        let signed_url = signed(&url);
        for (json, expected) in [
            (
                format!("{{\"a\":[\"{url}\""),
                format!("{{\"a\":[\"{signed_url}\""),
            ),
            (
                format!("]]}}\"{url}\"}}}}"),
                format!("]]}}\"{signed_url}\"}}}}"),
            ),
            (format!("[\"{url}"), format!("[\"{url}")),
            (format!("[\"{url}\\"), format!("[\"{url}\\")),
            (format!("[\"{url}\\u12\"]"), format!("[\"{url}\\u12\"]")),
            (format!("[\"{url}\\ud800\"]"), format!("[\"{url}\\ud800\"]")),
            (format!("[\"{url}\n\"]"), format!("[\"{url}\n\"]")),
            ("{{{[[[\"\\".to_owned(), "{{{[[[\"\\".to_owned()),
        ] {
            assert_eq!(splice(&json), expected, "{json:?}");
        }
        let bad_utf8 = [
            b"[\"https://cdn.filestackcontent.com/".as_slice(),
            H.as_bytes(),
            b"\xff\"]",
        ]
        .concat();
        assert_eq!(splice_in_chunks(&bad_utf8, 3), bad_utf8);
    }

    #[test]
    fn past_the_tracked_depth_strings_pass_unsigned() {
        let url = cdn(H);
        let deep = format!(
            "{}\"{url}\"{}[\"{url}\"]",
            "[".repeat(MAX_DEPTH + 1),
            "]".repeat(MAX_DEPTH + 1)
        );
        let expected = format!(
            "{}\"{url}\"{}[\"{}\"]",
            "[".repeat(MAX_DEPTH + 1),
            "]".repeat(MAX_DEPTH + 1),
            signed(&url)
        );
        assert_eq!(splice(&deep), expected);
    }

    #[test]
    fn a_signed_url_keeps_the_escaping_of_the_original() {
        let url = format!("{}?a=1&b=2", cdn(H));
        let signed_url = signed(&url);
        let slashed = format!("[\"{}\"]", url.replace('/', "\\/"));
        assert_eq!(
            splice(&slashed),
            format!("[\"{}\"]", signed_url.replace('/', "\\/"))
        );
        let go_style = format!("[\"{}\"]", url.replace('&', "\\u0026"));
        assert_eq!(
            splice(&go_style),
            format!("[\"{}\"]", signed_url.replace('&', "\\u0026"))
        );
        let script = format!("[\"{url}#\\u003c/script\\u003e\"]");
        let out = splice(&script);
        assert!(
            out.contains("#\\u003c/script\\u003e\"]") && !out.contains('<'),
            "{out}"
        );
    }

    #[test]
    fn whole_texts_are_signed_or_left_alone() {
        let s = signer();
        let json = format!(
            "{{\"contentUrl\": \"{}\", \"@type\": \"ImageObject\", \"width\": 1200.0}}",
            cdn(H)
        );
        let out = sign_json_text(&json, &s).expect("signed");
        let expected = json.replace(&cdn(H), &signed(&cdn(H)));
        assert_eq!(out, expected);
        assert_eq!(
            sign_json_text("{\"a\":\"https://example.com/x\"}", &s),
            None
        );
        assert_eq!(sign_json_text("not json", &s), None);
    }
}
