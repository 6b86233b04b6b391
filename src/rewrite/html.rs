//! Markup: HTML pages, and SVG images and RSS/Atom feeds, which lol_html reads as well. Every
//! URL-bearing attribute, `<style>` text, JSON `<script>` blocks and `<noscript>` content are
//! signed while the answer streams; text with nothing to sign passes byte for byte.

use std::borrow::Cow;
use std::sync::{Arc, Mutex, PoisonError};

use lol_html::html_content::{ContentType, TextChunk};
use lol_html::send::{Element, ElementContentHandlers, HtmlRewriter, Settings};
use lol_html::{AsciiCompatibleEncoding, MemorySettings, Selector};

use super::css::CssTransform;
use super::json::JsonTransform;
use super::{CdnUrlSigner, RewriteOverflow, Transform};
use crate::body::BoxError;

/// Most memory the HTML parser may hold for one page (a hostile page with a gigantic tag
/// fails instead of growing without bound).
const HTML_MEMORY_LIMIT: usize = 8 * 1024 * 1024;

/// The longest tag (from `<` to `>`) rewritten. lol_html holds a tag whole until it ends, up to
/// its memory limit; past this length the transform stops with [`RewriteOverflow`] instead,
/// and the page goes on unmodified or is cut off, as the route says.
const TAG_LIMIT: usize = 1024 * 1024;

/// Longest text of an element that is one URL (a feed's `<url>`) held to see it whole.
const URL_TEXT_MAX: usize = 16 * 1024;

/// Attributes that hold one URL, on any element: `<img src>`, `<object data>`, `<svg><image
/// xlink:href>`, `<video poster>`, `<enclosure url>` and `<media:content url>` in feeds, and
/// the lazy-loading libraries' attributes. A value that is CSS (`data-bg="url(…)"`) is
/// signed as CSS.
pub const URL_ATTRIBUTES: [&str; 11] = [
    "src",
    "href",
    "poster",
    "data",
    "xlink:href",
    "background",
    "url",
    "data-src",
    "data-lazy-src",
    "data-original",
    "data-bg",
];
/// Attributes that hold a `srcset` list (`<link rel=preload imagesrcset>` too).
pub const SRCSET_ATTRIBUTES: [&str; 3] = ["srcset", "data-srcset", "imagesrcset"];

/// `<script>` blocks holding JSON: structured data, Next.js and Nuxt page data, and the like.
const JSON_SCRIPTS: &str = r#"script[type$="json"], script#__NEXT_DATA__"#;

/// Elements of a feed whose whole text is a URL: RSS `<image><url>`, Atom `<icon>`, `<logo>`.
const FEED_URL_TEXT: &str = "url, icon, logo";

type Output = Arc<Mutex<Vec<u8>>>;
type Sink = Box<dyn FnMut(&[u8]) + Send>;
type Handler = (Cow<'static, Selector>, ElementContentHandlers<'static>);

/// What kind of markup an answer is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Markup {
    /// An HTML page.
    Html,
    /// An SVG image or an RSS/Atom feed: no `<noscript>`, and a few elements whose text is a URL.
    Xml,
}

/// Streaming rewriting of CDN URLs in markup.
pub struct HtmlTransform {
    rewriter: Option<HtmlRewriter<'static, Sink>>,
    output: Output,
    /// Bytes since a `<` with no `>` after it yet: how much of a tag lol_html is holding.
    open_tag: Option<usize>,
}

impl HtmlTransform {
    /// An HTML page rewriter signing with `signer`; `charset` is the `Content-Type` charset, if
    /// any (without one, a `<meta charset>` in the page decides, as in a browser).
    pub fn new(signer: Arc<CdnUrlSigner>, charset: Option<&str>) -> Result<Self, BoxError> {
        Self::build(signer, charset, Markup::Html, true)
    }

    /// A rewriter for `markup` of the given kind.
    pub fn for_markup(
        signer: Arc<CdnUrlSigner>,
        charset: Option<&str>,
        markup: Markup,
    ) -> Result<Self, BoxError> {
        Self::build(signer, charset, markup, true)
    }

    fn build(
        signer: Arc<CdnUrlSigner>,
        charset: Option<&str>,
        markup: Markup,
        with_noscript: bool,
    ) -> Result<Self, BoxError> {
        let output: Output = Arc::new(Mutex::new(Vec::with_capacity(16 * 1024)));
        let sink_output = Arc::clone(&output);
        let sink: Sink = Box::new(move |chunk: &[u8]| {
            lock(&sink_output).extend_from_slice(chunk);
        });
        let encoding = charset
            .and_then(|label| encoding_rs::Encoding::for_label_no_replacement(label.as_bytes()))
            .and_then(AsciiCompatibleEncoding::new);

        let mut settings = Settings::new_send()
            .with_encoding(encoding.unwrap_or_else(AsciiCompatibleEncoding::utf_8))
            .with_adjust_charset_on_meta_tag(encoding.is_none() && markup == Markup::Html)
            .with_memory_settings(
                MemorySettings::new().with_max_allowed_memory_usage(HTML_MEMORY_LIMIT),
            );
        settings = settings.append_element_content_handler(attribute_handler(&signer)?);
        {
            let signer = Arc::clone(&signer);
            settings = settings.append_element_content_handler(text_through("style", move || {
                Ok(CssTransform::new(Arc::clone(&signer)))
            })?);
        }
        {
            let signer = Arc::clone(&signer);
            settings = settings
                .append_element_content_handler(text_through(JSON_SCRIPTS, move || {
                    Ok(JsonTransform::new(Arc::clone(&signer)))
                })?);
        }
        match markup {
            Markup::Html if with_noscript => {
                // lol_html reads <noscript> as text (a browser with scripts on does too); what a
                // browser without scripts would load from it is signed as a page of its own.
                let signer = Arc::clone(&signer);
                settings = settings
                    .append_element_content_handler(text_through("noscript", move || {
                        Self::build(Arc::clone(&signer), None, Markup::Html, false)
                    })?);
            }
            Markup::Html => {}
            Markup::Xml => {
                let signer = Arc::clone(&signer);
                settings = settings
                    .append_element_content_handler(text_through(FEED_URL_TEXT, move || {
                        Ok(UrlText::new(Arc::clone(&signer)))
                    })?);
            }
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

/// One handler on every element, which looks at each attribute once ([`rewrite_element`]).
/// Under callgrind this costs less than a selector list naming the 17 signed attributes (a
/// 180 KiB gallery page: 10.7 million instructions against 12.6; a 460 KiB text page: 68.7
/// million against 76.7): lol_html's selector engine tests each attribute selector on every
/// start tag, where the handler's one pass over the attributes is cheap.
fn attribute_handler(signer: &Arc<CdnUrlSigner>) -> Result<Handler, BoxError> {
    let extra = signer.rules().url_attributes.clone();
    let selector: Selector = "*".parse()?;
    let signer = Arc::clone(signer);
    let handlers = ElementContentHandlers::default()
        .element(move |el: &mut Element<'_, '_>| rewrite_element(el, &signer, &extra));
    Ok((Cow::Owned(selector), handlers))
}

/// Runs a fresh [`Transform`] from `make` over the text of each element `selector` matches.
/// A chunk of text is touched only when the transform changed or held some of it, so text
/// with nothing to sign reaches the client byte for byte, whatever its encoding. A transform
/// that fails or overflows lets the rest of that element's text pass as it came.
fn text_through<T, F>(selector: &str, mut make: F) -> Result<Handler, BoxError>
where
    T: Transform + 'static,
    F: FnMut() -> Result<T, BoxError> + Send + 'static,
{
    let selector: Selector = selector.parse()?;
    let mut current: Option<T> = None;
    let mut passing = false;
    let handlers = ElementContentHandlers::default().text(move |chunk: &mut TextChunk<'_>| {
        let last = chunk.last_in_text_node();
        if passing {
            passing = !last;
            return Ok(());
        }
        if current.is_none() {
            current = make().ok();
        }
        let Some(transform) = current.as_mut() else {
            passing = !last;
            return Ok(());
        };
        let text = chunk.as_str();
        let out = transform.push(text.as_bytes()).and_then(|mut out| {
            if last {
                out.extend(transform.finish()?);
            }
            Ok(out)
        });
        let out = match out {
            Ok(out) => out,
            Err(e) => {
                tracing::warn!(error = %e, "element text left unsigned from here on");
                // What the transform held comes out as it came in, then this chunk.
                let mut out = transform.finish().unwrap_or_default();
                out.extend_from_slice(text.as_bytes());
                current = None;
                passing = !last;
                out
            }
        };
        if last {
            current = None;
        }
        if out != text.as_bytes() {
            chunk.replace(&String::from_utf8_lossy(&out), ContentType::Html);
        }
        Ok(())
    });
    Ok((Cow::Owned(selector), handlers))
}

/// What an attribute holds, as far as signing goes.
#[derive(Debug, Clone, Copy)]
enum Place {
    /// One URL (or, failing that, CSS with `url(…)`).
    Url,
    /// A `srcset` list.
    Srcset,
    /// CSS.
    Style,
    /// A `<meta content>`: one URL when the element is a `meta`.
    Content,
}

/// Where the attribute `name` (lowercase) is, among those signed.
fn place_of(name: &str, extra: &[String]) -> Option<Place> {
    if URL_ATTRIBUTES.contains(&name) || extra.iter().any(|e| e == name) {
        Some(Place::Url)
    } else if SRCSET_ATTRIBUTES.contains(&name) {
        Some(Place::Srcset)
    } else if name == "style" {
        Some(Place::Style)
    } else if name == "content" {
        Some(Place::Content)
    } else {
        None
    }
}

/// Signs every URL-bearing attribute of one element.
fn rewrite_element(
    el: &mut Element<'_, '_>,
    signer: &CdnUrlSigner,
    extra: &[String],
) -> ElementHandlerResult {
    // One pass over the element's attributes, however many names are signed: asking for each
    // name instead costs a pass per name.
    let found: Vec<(String, String, Place)> = el
        .attributes()
        .iter()
        .filter_map(|attribute| {
            let name = attribute.name();
            let place = place_of(&name, extra)?;
            Some((name, attribute.value(), place))
        })
        .collect();
    for (name, raw, place) in found {
        let signed = match place {
            Place::Url => match signer.sign_html_attribute(&raw) {
                Some(signed) => Some(signed.as_str().to_owned()),
                None if raw.contains("url(") || raw.contains("URL(") => {
                    sign_decoded(&raw, |v| signer.sign_css(v))
                }
                None => None,
            },
            Place::Srcset => sign_decoded(&raw, |v| signer.sign_srcset(v)),
            Place::Style => sign_decoded(&raw, |v| signer.sign_css(v)),
            // og:image, twitter:image and friends: a meta whose whole content is a CDN URL.
            Place::Content if el.tag_name() == "meta" => signer
                .sign_html_attribute(&raw)
                .map(|signed| signed.as_str().to_owned()),
            Place::Content => None,
        };
        if let Some(signed) = signed {
            el.set_attribute(&name, &signed)?;
        }
    }
    Ok(())
}

/// `sign` applied to an attribute value with its character references decoded; the new value
/// with `&` escaped (lol_html escapes `"`), or `None` to leave it untouched.
fn sign_decoded(raw: &str, sign: impl Fn(&str) -> Option<String>) -> Option<String> {
    sign(&decode_char_refs(raw)).map(|signed| signed.replace('&', "&amp;"))
}

/// `text` with the character references attribute values commonly carry decoded (`&amp;`,
/// `&quot;`, `&apos;`, `&lt;`, `&gt;` and numeric ones); any other stays as written.
pub fn decode_char_refs(text: &str) -> Cow<'_, str> {
    if !text.contains('&') {
        return Cow::Borrowed(text);
    }
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(at) = rest.find('&') {
        out.push_str(&rest[..at]);
        rest = &rest[at..];
        match decode_char_ref(rest) {
            Some((c, len)) => {
                out.push(c);
                rest = &rest[len..];
            }
            None => {
                out.push('&');
                rest = &rest[1..];
            }
        }
    }
    out.push_str(rest);
    Cow::Owned(out)
}

/// The character `text` starts with a reference to, and the reference's length.
fn decode_char_ref(text: &str) -> Option<(char, usize)> {
    const NAMED: [(&str, char); 5] = [
        ("&amp;", '&'),
        ("&quot;", '"'),
        ("&apos;", '\''),
        ("&lt;", '<'),
        ("&gt;", '>'),
    ];
    if let Some((name, c)) = NAMED.iter().find(|(name, _)| text.starts_with(name)) {
        return Some((*c, name.len()));
    }
    let number = text.strip_prefix("&#")?;
    let (radix, digits) = match number.strip_prefix(['x', 'X']) {
        Some(hex) => (16, hex),
        None => (10, number),
    };
    let end = digits.find(';')?;
    let code = &digits[..end];
    if code.is_empty() || code.len() > 8 || !code.chars().all(|c| c.is_digit(radix)) {
        return None;
    }
    let c = char::from_u32(u32::from_str_radix(code, radix).ok()?)?;
    Some((c, text.len() - digits.len() + end + 1))
}

/// The text of an element that is one URL (a feed's `<image><url>`), held to its end and
/// signed if it is a CDN URL; longer than [`URL_TEXT_MAX`], it passes as it came.
struct UrlText {
    signer: Arc<CdnUrlSigner>,
    held: Vec<u8>,
    overlong: bool,
}

impl UrlText {
    fn new(signer: Arc<CdnUrlSigner>) -> Self {
        Self {
            signer,
            held: Vec::new(),
            overlong: false,
        }
    }
}

impl Transform for UrlText {
    fn push(&mut self, chunk: &[u8]) -> Result<Vec<u8>, BoxError> {
        if !self.overlong && self.held.len() + chunk.len() > URL_TEXT_MAX {
            self.overlong = true;
            let mut out = std::mem::take(&mut self.held);
            out.extend_from_slice(chunk);
            return Ok(out);
        }
        if self.overlong {
            return Ok(chunk.to_vec());
        }
        self.held.extend_from_slice(chunk);
        Ok(Vec::new())
    }

    fn finish(&mut self) -> Result<Vec<u8>, BoxError> {
        let held = std::mem::take(&mut self.held);
        let Ok(text) = std::str::from_utf8(&held) else {
            return Ok(held);
        };
        let url = text.trim();
        match self.signer.sign_html_attribute(url) {
            Some(signed) => Ok(text.replacen(url, &signed, 1).into_bytes()),
            None => Ok(held),
        }
    }
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
        let before = self.open_tag;
        self.track_tags(chunk);
        if self.open_tag.is_some_and(|held| held > TAG_LIMIT) {
            // The chunk is not consumed: `finish` gives back what lol_html holds as it came.
            self.open_tag = before;
            return Err(Box::new(RewriteOverflow("a tag longer than 1 MiB")));
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

    fn rewrite_bytes(t: &mut HtmlTransform, page: &[u8], piece: usize) -> Vec<u8> {
        let mut out = Vec::new();
        for chunk in page.chunks(piece) {
            out.extend(t.push(chunk).expect("rewrites"));
        }
        out.extend(t.finish().expect("ends"));
        out
    }

    fn signed(url: &str) -> String {
        signer().sign(url).expect("a CDN URL")
    }

    #[test]
    fn every_place_a_modern_framework_puts_a_file_url_is_signed() {
        let u = cdn(H);
        let page = format!(
            r#"<link rel="preload" as="image" imagesrcset="{u} 1x, {u} 2x">
<svg><image xlink:href="{u}"/><use href="{u}#icon"/></svg>
<object data="{u}"></object><embed src="{u}"><video poster="{u}"><track src="{u}"></video>
<img data-lazy-src="{u}"><img data-original="{u}"><div data-bg="{u}"></div>
<div data-bg="url('{u}')"></div><div data-hero="{u}"></div>
<noscript><img src="{u}" alt="no script"></noscript>"#
        );
        let urls =
            crate::rewrite::SiteUrls::fixture("url_attributes = [\"data-hero\"]", "s").at(NOW);
        for piece in [3, page.len()] {
            let mut t = HtmlTransform::new(Arc::clone(&urls), None).expect("builds");
            let out =
                String::from_utf8(rewrite_bytes(&mut t, page.as_bytes(), piece)).expect("utf-8");
            assert_eq!(out.matches(&u).count(), 14, "{out}");
            assert_eq!(
                out.matches("policy=").count(),
                14,
                "chunked by {piece}: {out}"
            );
            assert!(out.contains("<noscript><img src=\"https://"), "{out}");
            assert!(out.contains("#icon\" />"), "{out}");
        }
        // Without the route's extra attribute, data-hero stays as written.
        let mut t = HtmlTransform::new(signer(), None).expect("builds");
        let out = String::from_utf8(rewrite_bytes(&mut t, page.as_bytes(), 64)).expect("utf-8");
        assert!(out.contains(&format!(r#"<div data-hero="{u}">"#)), "{out}");
    }

    #[test]
    fn character_references_in_style_attributes_are_kept_and_the_urls_in_them_signed() {
        let u = cdn(H);
        let page = format!(
            r#"<p style="font-family:&quot;Helvetica Neue&quot;;background:url(&quot;{u}&quot;)">x</p><p style="font-family:&quot;Helvetica Neue&quot;">y</p>"#
        );
        let out = rewrite_in_pieces(&page, 7);
        let expected = page.replacen(
            &format!("url(&quot;{u}&quot;)"),
            &format!("url(&quot;{}&quot;)", signed(&u).replace('&', "&amp;")),
            1,
        );
        assert_eq!(out, expected);
    }

    #[test]
    fn text_without_cdn_urls_passes_byte_for_byte_whatever_its_encoding() {
        let u = cdn(H);
        // Shift_JIS named only in <meta>, in <style>, <script>, <noscript>, attributes and
        // text, and bytes invalid in it in text; one signed image among them. (lol_html
        // decodes the text it hands to a handler, so an invalid sequence inside <style>,
        // <script> or <noscript> would come out as U+FFFD: README says so.)
        let mut page = b"<html><head><meta charset=\"shift_jis\"><title>\x93\xfa\x96\x7b</title>\
<style>.a{content:\"\x83\x81\"} .b{background:url(/x.png)}</style>\
<script type=\"application/ld+json\">{\"name\":\"\x83\x81\"}</script></head>\
<body><p title=\"\x83\x81\">\xff\xfe\xe9</p><img alt=\"\x93\xfa\" src=\""
            .to_vec();
        page.extend_from_slice(u.as_bytes());
        page.extend_from_slice(b"\"><noscript>\x93\xfa</noscript></body></html>");
        let mut expected = page.clone();
        let at = expected
            .windows(u.len())
            .position(|w| w == u.as_bytes())
            .expect("the URL");
        expected.splice(
            at..at + u.len(),
            signed(&u).replace('&', "&amp;").into_bytes(),
        );
        for piece in [1, 5, page.len()] {
            let mut t = HtmlTransform::new(signer(), None).expect("builds");
            assert_eq!(
                String::from_utf8_lossy(&rewrite_bytes(&mut t, &page, piece)),
                String::from_utf8_lossy(&expected),
                "chunked by {piece}"
            );
        }
    }

    #[test]
    fn feeds_and_svg_images_have_their_file_urls_signed() {
        let u = cdn(H);
        let feed = format!(
            r#"<?xml version="1.0" encoding="UTF-8"?>
<rss version="2.0" xmlns:media="http://search.yahoo.com/mrss/"><channel>
<image><url>{u}</url><link>https://example.com/</link></image>
<item><guid>{u}</guid><enclosure url="{u}" type="image/jpeg"/><media:content url="{u}"/>
<media:thumbnail url="{u}"/><description><![CDATA[<p>photo</p>]]></description></item>
</channel></rss>"#
        );
        let mut t = HtmlTransform::for_markup(signer(), None, Markup::Xml).expect("builds");
        let out = String::from_utf8(rewrite_bytes(&mut t, feed.as_bytes(), 11)).expect("utf-8");
        let s = signed(&u).replace('&', "&amp;");
        // A tag with a signed URL is written anew by lol_html: `/>` becomes ` />`.
        let expected = feed
            .replace(&format!("<url>{u}</url>"), &format!("<url>{s}</url>"))
            .replace(&format!("url=\"{u}\""), &format!("url=\"{s}\""))
            .replace("\"/>", "\" />");
        assert_eq!(out, expected, "the guid is an identity, not a link: kept");
        let svg = format!(
            r#"<svg xmlns="http://www.w3.org/2000/svg" xmlns:xlink="http://www.w3.org/1999/xlink"><image xlink:href="{u}" width="10"/><style>rect{{fill:url({u})}}</style></svg>"#
        );
        let mut t = HtmlTransform::for_markup(signer(), None, Markup::Xml).expect("builds");
        let out = String::from_utf8(rewrite_bytes(&mut t, svg.as_bytes(), 9)).expect("utf-8");
        assert_eq!(out.matches("policy=").count(), 2, "{out}");
        assert!(out.contains("width=\"10\" />"), "{out}");
    }
}
