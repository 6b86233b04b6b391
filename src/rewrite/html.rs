//! HTML: every URL-bearing attribute (`src`, `href`, `srcset`, `poster`, `data-src`, inline
//! `style`, `meta content`) and `<style>` text, signed while the page streams.

use std::borrow::Cow;
use std::sync::{Arc, Mutex, PoisonError};

use lol_html::html_content::{ContentType, TextChunk};
use lol_html::send::{Element, ElementContentHandlers, HtmlRewriter, Settings};
use lol_html::{AsciiCompatibleEncoding, MemorySettings, Selector};

use super::{CdnUrlSigner, Transform};
use crate::body::BoxError;

/// Most memory the HTML parser may hold for one page (a hostile page with a gigantic tag
/// fails instead of growing without bound).
const HTML_MEMORY_LIMIT: usize = 8 * 1024 * 1024;

/// Most `<style>` text held at once to sign the URLs in it; a longer block passes unmodified
/// from there on (its URLs unsigned), so a hostile block cannot grow memory.
pub const STYLE_LIMIT: usize = 1024 * 1024;

/// Attributes that hold one URL.
const URL_ATTRIBUTES: [&str; 4] = ["src", "href", "poster", "data-src"];
/// Attributes that hold a `srcset` list.
const SRCSET_ATTRIBUTES: [&str; 2] = ["srcset", "data-srcset"];

type Output = Arc<Mutex<Vec<u8>>>;
type Sink = Box<dyn FnMut(&[u8]) + Send>;

/// The longest tag (from `<` to `>`) rewritten. lol_html holds a tag whole until it ends, up to
/// its memory limit, and then fails; past this length the rest of the page passes unmodified
/// instead, every byte delivered.
const TAG_LIMIT: usize = 1024 * 1024;

/// Streaming HTML rewriting of CDN URLs.
pub struct HtmlTransform {
    rewriter: Option<HtmlRewriter<'static, Sink>>,
    output: Output,
    /// Bytes since a `<` with no `>` after it yet: how much of a tag lol_html is holding.
    open_tag: Option<usize>,
}

impl HtmlTransform {
    /// A rewriter signing with `signer`; `charset` is the `Content-Type` charset, if any.
    pub fn new(signer: Arc<CdnUrlSigner>, charset: Option<&str>) -> Result<Self, BoxError> {
        let output: Output = Arc::new(Mutex::new(Vec::with_capacity(16 * 1024)));
        let sink_output = Arc::clone(&output);
        let sink: Sink = Box::new(move |chunk: &[u8]| {
            lock(&sink_output).extend_from_slice(chunk);
        });
        let encoding = charset
            .and_then(|label| encoding_rs::Encoding::for_label_no_replacement(label.as_bytes()))
            .and_then(AsciiCompatibleEncoding::new)
            .unwrap_or_else(AsciiCompatibleEncoding::utf_8);

        let mut settings = Settings::new_send()
            .with_encoding(encoding)
            .with_memory_settings(
                MemorySettings::new().with_max_allowed_memory_usage(HTML_MEMORY_LIMIT),
            );
        {
            // One selector list and one handler: the selector engine then runs once per start
            // tag instead of once per attribute name, and only elements carrying a URL-bearing
            // attribute reach the handler.
            let signer = Arc::clone(&signer);
            settings = settings.append_element_content_handler(on_element(
                "[src],[href],[poster],[data-src],[srcset],[data-srcset],[style],meta[content]",
                move |el| rewrite_element(el, &signer),
            )?);
        }
        {
            // <style> text arrives in arbitrary chunks: hold them until the text node ends, up
            // to STYLE_LIMIT; past it, what is held and the rest of the block pass unmodified.
            let mut pending = String::new();
            let mut overlong = false;
            let selector: Selector = "style".parse()?;
            let handlers =
                ElementContentHandlers::default().text(move |chunk: &mut TextChunk<'_>| {
                    let last = chunk.last_in_text_node();
                    if overlong {
                        overlong = !last;
                        return Ok(());
                    }
                    pending.push_str(chunk.as_str());
                    if last {
                        let css = std::mem::take(&mut pending);
                        let rewritten = signer.sign_css(&css).unwrap_or(css);
                        chunk.replace(&rewritten, ContentType::Html);
                    } else if pending.len() > STYLE_LIMIT {
                        tracing::warn!(
                            limit = STYLE_LIMIT,
                            "<style> block too long to rewrite: passed unmodified"
                        );
                        chunk.replace(&std::mem::take(&mut pending), ContentType::Html);
                        pending.shrink_to_fit();
                        overlong = true;
                    } else {
                        chunk.remove();
                    }
                    Ok(())
                });
            settings = settings.append_element_content_handler((Cow::Owned(selector), handlers));
        }
        Ok(Self {
            open_tag: None,
            rewriter: Some(HtmlRewriter::new(settings, sink)),
            output,
        })
    }

    fn take_output(&self) -> Vec<u8> {
        std::mem::take(&mut *lock(&self.output))
    }
}

fn lock(output: &Output) -> std::sync::MutexGuard<'_, Vec<u8>> {
    output.lock().unwrap_or_else(PoisonError::into_inner)
}

type ElementHandlerResult = Result<(), Box<dyn std::error::Error + Send + Sync>>;

fn on_element(
    selector: &str,
    mut handler: impl FnMut(&mut Element<'_, '_>) -> ElementHandlerResult + Send + 'static,
) -> Result<(Cow<'static, Selector>, ElementContentHandlers<'static>), BoxError> {
    let selector: Selector = selector.parse()?;
    let handlers =
        ElementContentHandlers::default().element(move |el: &mut Element<'_, '_>| handler(el));
    Ok((Cow::Owned(selector), handlers))
}

/// Signs every URL-bearing attribute of one element.
fn rewrite_element(el: &mut Element<'_, '_>, signer: &CdnUrlSigner) -> ElementHandlerResult {
    for name in URL_ATTRIBUTES {
        if let Some(raw) = el.get_attribute(name)
            && let Some(signed) = signer.sign_html_attribute(&raw)
        {
            el.set_attribute(name, &signed)?;
        }
    }
    for name in SRCSET_ATTRIBUTES {
        rewrite_attribute(el, name, |v| signer.sign_srcset(v))?;
    }
    rewrite_attribute(el, "style", |v| signer.sign_css(v))?;
    if el.tag_name() == "meta" {
        // og:image, twitter:image and friends: a meta whose whole content is a CDN URL.
        if let Some(raw) = el.get_attribute("content")
            && let Some(signed) = signer.sign_html_attribute(raw.trim())
        {
            el.set_attribute("content", &signed)?;
        }
    }
    Ok(())
}

/// Rewrites one attribute with `sign`, which gets the value with `&amp;` decoded and returns the
/// new value, or `None` to leave it untouched.
fn rewrite_attribute<S>(
    el: &mut Element<'_, '_>,
    name: &str,
    sign: impl Fn(&str) -> Option<S>,
) -> ElementHandlerResult
where
    S: std::ops::Deref,
    S::Target: AsRef<str>,
{
    let Some(raw) = el.get_attribute(name) else {
        return Ok(());
    };
    let value = if raw.contains("&amp;") {
        Cow::Owned(raw.replace("&amp;", "&"))
    } else {
        Cow::Borrowed(raw.as_str())
    };
    if let Some(signed) = sign(&value) {
        el.set_attribute(name, &(*signed).as_ref().replace('&', "&amp;"))?;
    }
    Ok(())
}

impl HtmlTransform {
    /// Follows `<` and `>` through `chunk` (quotes aside: a `>` inside an attribute only ends
    /// the count early, which errs towards rewriting).
    fn track_tags(&mut self, chunk: &[u8]) {
        let opened = memchr::memrchr(b'<', chunk);
        let closed = memchr::memrchr(b'>', chunk);
        self.open_tag = match (opened, closed) {
            (Some(lt), Some(gt)) if gt > lt => None,
            (Some(lt), _) => Some(chunk.len() - lt),
            (None, Some(_)) => None,
            (None, None) => self.open_tag.map(|n| n.saturating_add(chunk.len())),
        };
    }
}

impl Transform for HtmlTransform {
    fn push(&mut self, chunk: &[u8]) -> Result<Vec<u8>, BoxError> {
        if self.rewriter.is_none() {
            return Ok(chunk.to_vec());
        }
        self.track_tags(chunk);
        if self.open_tag.is_some_and(|held| held > TAG_LIMIT) {
            tracing::warn!(
                limit = TAG_LIMIT,
                "a tag too long to rewrite: the rest of the page passes unmodified, its URLs unsigned"
            );
            // What lol_html holds of the tag comes out as it came in; then the rest, raw.
            let mut out = self.finish()?;
            out.extend_from_slice(chunk);
            return Ok(out);
        }
        if let Some(rewriter) = self.rewriter.as_mut() {
            rewriter.write(chunk)?;
        }
        Ok(self.take_output())
    }

    fn finish(&mut self) -> Result<Vec<u8>, BoxError> {
        if let Some(rewriter) = self.rewriter.take() {
            rewriter.end()?;
        }
        Ok(self.take_output())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::policy::Call;
    use crate::rewrite::test_support::{H, NOW, cdn, signer};
    use crate::secret::Secret;
    use crate::verify::verify_at;

    fn rewrite_in_pieces(html: &str, piece: usize) -> String {
        let mut t = HtmlTransform::new(signer(), None).expect("builds");
        let mut out = Vec::new();
        for chunk in html.as_bytes().chunks(piece) {
            out.extend(t.push(chunk).expect("rewrites"));
        }
        out.extend(t.finish().expect("ends"));
        String::from_utf8(out).expect("utf-8")
    }

    #[test]
    fn every_url_place_in_html_is_signed_however_the_page_is_chunked() {
        let html = format!(
            r#"<!doctype html><html><head>
<meta property="og:image" content="{u}">
<link rel="preload" href="{u}">
<style>.hero {{ background: url("{u}") }}</style></head>
<body><img src="{u}" alt="a"><img srcset="{t} 300w, {u} 600w" data-src="{u}" data-srcset="{u} 2x">
<picture><source srcset="{u}"></picture><video poster="{u}"></video>
<div style="background-image:url('{u}')"></div>
<a href="{u}?dl=true&amp;x=1">download</a>
<img src="https://example.com/{H}"><img src="/local/{H}"><p>{u}</p>
</body></html>"#,
            u = cdn(H),
            t = cdn(&format!("resize=width:300/{H}")),
        );
        let whole = rewrite_in_pieces(&html, html.len());
        for piece in [1, 7, 64] {
            assert_eq!(rewrite_in_pieces(&html, piece), whole, "chunked by {piece}");
        }
        // 12 signed places; the text node and other hosts stay as they were.
        assert_eq!(whole.matches("policy=").count(), 12, "{whole}");
        assert!(whole.contains(&format!("<p>{}</p>", cdn(H))));
        assert!(whole.contains(&format!(r#"<img src="https://example.com/{H}">"#)));
        assert!(whole.contains(&format!(r#"<img src="/local/{H}">"#)));
        assert!(whole.contains("?dl=true&amp;x=1&amp;policy="), "{whole}");
        let secret = Secret::new("s".into()).expect("secret");
        let src = whole
            .split("<img src=\"")
            .nth(1)
            .expect("img")
            .split('"')
            .next()
            .expect("src");
        assert!(
            verify_at(&src.replace("&amp;", "&"), &secret, NOW, Call::Read).is_ok(),
            "{src}"
        );
    }

    #[test]
    fn rewriting_twice_changes_nothing_more() {
        let html = format!(r#"<img src="{}">"#, cdn(H));
        let once = rewrite_in_pieces(&html, 5);
        assert_eq!(rewrite_in_pieces(&once, 3), once);
    }
}
