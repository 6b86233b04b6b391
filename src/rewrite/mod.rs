//! Rewriting bare CDN URLs into signed ones in site answers: HTML while it streams (lol_html),
//! JSON up to a size limit, and the `Location`, `Content-Location` and `Link` headers.

pub mod decompress;
pub mod url;

use std::borrow::Cow;
use std::pin::Pin;
use std::sync::{Arc, Mutex, PoisonError};
use std::task::{Context, Poll, ready};

use bytes::Bytes;
use http::HeaderMap;
use http::header::{self, HeaderValue};
use hyper::body::{Body, Frame, SizeHint};
use lol_html::html_content::{ContentType, TextChunk};
use lol_html::send::{Element, ElementContentHandlers, HtmlRewriter, Settings};
use lol_html::{AsciiCompatibleEncoding, MemorySettings, Selector};

use crate::body::{BoxError, ResponseBody};
use decompress::Decompressor;
pub use url::CdnUrlSigner;

/// A step applied to a body chunk by chunk.
pub trait Transform: Send {
    /// Takes the next input chunk; returns output ready so far (possibly empty).
    fn push(&mut self, chunk: &[u8]) -> Result<Vec<u8>, BoxError>;
    /// The input ended; returns the rest of the output.
    fn finish(&mut self) -> Result<Vec<u8>, BoxError>;
}

/// A body whose data passes through a [`Transform`]. Trailers are dropped.
pub struct TransformBody<T> {
    inner: ResponseBody,
    transform: T,
    done: bool,
}

impl<T: Transform> TransformBody<T> {
    /// Wraps `inner`.
    pub fn new(inner: ResponseBody, transform: T) -> Self {
        Self {
            inner,
            transform,
            done: false,
        }
    }
}

impl<T: Transform + Unpin> Body for TransformBody<T> {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        let this = &mut *self;
        loop {
            if this.done {
                return Poll::Ready(None);
            }
            let output = match ready!(Pin::new(&mut this.inner).poll_frame(cx)) {
                Some(Ok(frame)) => match frame.into_data() {
                    Ok(data) => this.transform.push(&data),
                    Err(_trailers) => continue,
                },
                Some(Err(e)) => return Poll::Ready(Some(Err(e))),
                None => {
                    this.done = true;
                    this.transform.finish()
                }
            };
            match output {
                Ok(bytes) if bytes.is_empty() => continue,
                Ok(bytes) => return Poll::Ready(Some(Ok(Frame::data(Bytes::from(bytes))))),
                Err(e) => {
                    this.done = true;
                    return Poll::Ready(Some(Err(e)));
                }
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        self.done
    }

    fn size_hint(&self) -> SizeHint {
        SizeHint::default()
    }
}

/// Two transforms, one after the other.
pub struct Chain<A, B>(pub A, pub B);

impl<A: Transform, B: Transform> Transform for Chain<A, B> {
    fn push(&mut self, chunk: &[u8]) -> Result<Vec<u8>, BoxError> {
        let middle = self.0.push(chunk)?;
        if middle.is_empty() {
            return Ok(middle);
        }
        self.1.push(&middle)
    }

    fn finish(&mut self) -> Result<Vec<u8>, BoxError> {
        let middle = self.0.finish()?;
        let mut out = if middle.is_empty() {
            Vec::new()
        } else {
            self.1.push(&middle)?
        };
        out.extend(self.1.finish()?);
        Ok(out)
    }
}

impl Transform for Decompressor {
    fn push(&mut self, chunk: &[u8]) -> Result<Vec<u8>, BoxError> {
        Ok(Decompressor::push(self, chunk)?)
    }

    fn finish(&mut self) -> Result<Vec<u8>, BoxError> {
        Ok(Decompressor::finish(self)?)
    }
}

/// Most memory the HTML parser may hold for one page (a hostile page with a gigantic tag
/// fails instead of growing without bound).
const HTML_MEMORY_LIMIT: usize = 8 * 1024 * 1024;

/// Attributes that hold one URL.
const URL_ATTRIBUTES: [&str; 4] = ["src", "href", "poster", "data-src"];
/// Attributes that hold a `srcset` list.
const SRCSET_ATTRIBUTES: [&str; 2] = ["srcset", "data-srcset"];

type Output = Arc<Mutex<Vec<u8>>>;
type Sink = Box<dyn FnMut(&[u8]) + Send>;

/// Streaming HTML rewriting of CDN URLs.
pub struct HtmlTransform {
    rewriter: Option<HtmlRewriter<'static, Sink>>,
    output: Output,
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
            // <style> text arrives in arbitrary chunks: hold them until the text node ends.
            let mut pending = String::new();
            let selector: Selector = "style".parse()?;
            let handlers =
                ElementContentHandlers::default().text(move |chunk: &mut TextChunk<'_>| {
                    pending.push_str(chunk.as_str());
                    if chunk.last_in_text_node() {
                        let css = std::mem::take(&mut pending);
                        let rewritten = signer.sign_css(&css).unwrap_or(css);
                        chunk.replace(&rewritten, ContentType::Html);
                    } else {
                        chunk.remove();
                    }
                    Ok(())
                });
            settings = settings.append_element_content_handler((Cow::Owned(selector), handlers));
        }
        Ok(Self {
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

impl Transform for HtmlTransform {
    fn push(&mut self, chunk: &[u8]) -> Result<Vec<u8>, BoxError> {
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

/// Signs CDN URLs in `Location`, `Content-Location` and `Link` (`<url>; rel=…`).
pub fn rewrite_url_headers(headers: &mut HeaderMap, signer: &CdnUrlSigner) {
    for name in [header::LOCATION, header::CONTENT_LOCATION] {
        let signed = headers
            .get(&name)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| signer.sign(v.trim()))
            .and_then(|s| HeaderValue::try_from(s.as_str()).ok());
        if let Some(value) = signed {
            headers.insert(name, value);
        }
    }
    let links: Vec<HeaderValue> = headers
        .get_all(header::LINK)
        .iter()
        .map(|value| {
            value
                .to_str()
                .ok()
                .and_then(|text| sign_link_header(text, signer))
                .and_then(|s| HeaderValue::try_from(s).ok())
                .unwrap_or_else(|| value.clone())
        })
        .collect();
    if !links.is_empty() {
        headers.remove(header::LINK);
        for link in links {
            headers.append(header::LINK, link);
        }
    }
}

fn sign_link_header(text: &str, signer: &CdnUrlSigner) -> Option<String> {
    let mut out = String::with_capacity(text.len() + 256);
    let mut changed = false;
    let mut rest = text;
    while let Some(open) = rest.find('<') {
        let Some(close) = rest[open..].find('>') else {
            break;
        };
        out.push_str(&rest[..=open]);
        let url = &rest[open + 1..open + close];
        match signer.sign(url) {
            Some(signed) => {
                out.push_str(&signed);
                changed = true;
            }
            None => out.push_str(url),
        }
        rest = &rest[open + close..];
    }
    out.push_str(rest);
    changed.then_some(out)
}

/// `Cache-Control` for a rewritten answer: the site's directives, with every freshness lifetime
/// capped to `limit` seconds (when the signatures in it expire) and nothing that would let a
/// cache serve it stale.
pub fn cap_cache_control(upstream: Option<&str>, limit: u64) -> String {
    let mut directives: Vec<String> = Vec::new();
    let mut max_age = None;
    let mut s_maxage = None;
    for directive in upstream.unwrap_or_default().split(',') {
        let directive = directive.trim();
        let name = directive
            .split('=')
            .next()
            .unwrap_or_default()
            .trim()
            .to_ascii_lowercase();
        let seconds = || {
            directive
                .split_once('=')
                .and_then(|(_, v)| v.trim().trim_matches('"').parse::<u64>().ok())
        };
        match name.as_str() {
            "" => {}
            "no-store" => return "no-store".to_owned(),
            "max-age" => max_age = seconds(),
            "s-maxage" => s_maxage = seconds(),
            "immutable" | "stale-while-revalidate" | "stale-if-error" => {}
            _ => directives.push(directive.to_owned()),
        }
    }
    let max_age = max_age.map_or(limit, |m| m.min(limit));
    directives.push(format!("max-age={max_age}"));
    if let Some(s) = s_maxage {
        directives.push(format!("s-maxage={}", s.min(limit)));
    }
    directives.join(", ")
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Config;
    use crate::policy::Call;
    use crate::router::Router;
    use crate::secret::Secret;
    use crate::verify::verify_at;

    const H: &str = "KW9EJhYtS6y48Whm2S6D";
    const NOW: u64 = 1_800_000_000;

    fn signer() -> Arc<CdnUrlSigner> {
        let toml = "[signing]\nsecret_env = \"S\"\n[[route]]\nname = \"site\"\nprefix = \"/\"\nmode = \"site\"\n\
                    upstream = \"http://127.0.0.1:3000\"\n";
        let config = Config::from_toml_str(toml, |_| Some("s".into())).expect("valid");
        let router = Router::new(&config).expect("router");
        Arc::new(CdnUrlSigner::new(
            router.find("/").expect("route").0.clone(),
            NOW,
        ))
    }

    fn rewrite_in_pieces(html: &str, piece: usize) -> String {
        let mut t = HtmlTransform::new(signer(), None).expect("builds");
        let mut out = Vec::new();
        for chunk in html.as_bytes().chunks(piece) {
            out.extend(t.push(chunk).expect("rewrites"));
        }
        out.extend(t.finish().expect("ends"));
        String::from_utf8(out).expect("utf-8")
    }

    fn cdn(path: &str) -> String {
        format!("https://cdn.filestackcontent.com/{path}")
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

    #[test]
    fn url_headers_are_signed() {
        let mut headers = HeaderMap::new();
        headers.insert(
            header::LOCATION,
            HeaderValue::try_from(cdn(H)).expect("value"),
        );
        headers.insert(
            header::LINK,
            HeaderValue::try_from(format!(
                "<{}>; rel=preload; as=image, </app.css>; rel=preload",
                cdn(H)
            ))
            .expect("value"),
        );
        rewrite_url_headers(&mut headers, &signer());
        assert!(
            headers[header::LOCATION]
                .to_str()
                .expect("ascii")
                .contains("policy=")
        );
        let link = headers[header::LINK].to_str().expect("ascii");
        assert!(
            link.contains("policy=") && link.ends_with("</app.css>; rel=preload"),
            "{link}"
        );
    }

    #[test]
    fn cache_lifetimes_are_capped_to_the_signatures() {
        assert_eq!(cap_cache_control(None, 3600), "max-age=3600");
        assert_eq!(
            cap_cache_control(Some("public, max-age=86400, immutable"), 3600),
            "public, max-age=3600"
        );
        assert_eq!(
            cap_cache_control(Some("private, max-age=60"), 3600),
            "private, max-age=60"
        );
        assert_eq!(
            cap_cache_control(Some("s-maxage=99999, stale-while-revalidate=30"), 100),
            "max-age=100, s-maxage=100"
        );
        assert_eq!(cap_cache_control(Some("no-store"), 100), "no-store");
        assert_eq!(
            cap_cache_control(Some("no-cache"), 100),
            "no-cache, max-age=100"
        );
    }
}
