//! Recognising bare CDN URLs and signing them: single URLs, `srcset` lists and CSS `url(...)`.

use std::borrow::Cow;
use std::num::NonZeroUsize;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use crate::cache::{BucketCache, Weigher};
use crate::config::{Config, RewriteRules, RouteKind};
use crate::external::ExternalRef;
use crate::filelink::{FileRef, HANDLE_LEN, signed_url, strip_api_key, strip_client_credentials};
use crate::scheme::{is_plain_object_path, object_url};
use crate::signer::RouteSigner;

/// Most signed URLs a site route keeps (a few hundred bytes each, so a few MiB at most).
const SIGNED_URL_CACHE_MAX: NonZeroUsize = NonZeroUsize::new(20_000).expect("20000 is not zero");

/// Bytes the signed-attribute cache of one route may hold per worker.
const SIGNED_URL_CACHE_BYTES: usize = 8 << 20;

/// Attribute values longer than this are signed each time, never cached: CDN URLs are far
/// shorter, and a long value a page reflects would only take room.
const CACHED_ATTRIBUTE_MAX_LEN: usize = 1024;

/// One cached attribute's weight: both strings and the bookkeeping around them (LRU node,
/// `Arc`, string headers: 128 bytes).
const ATTRIBUTE_WEIGHT: Weigher<String, String> =
    |raw, signed| raw.capacity() + signed.capacity() + 128;

/// One site route's URL signing: its signers, which URLs to sign, and the signed forms of the
/// attribute values its pages carry, per expiry bucket, so a page served again is rewritten
/// from cache.
pub struct SiteUrls {
    /// Signs URLs on `rewrite_hosts`.
    signer: Arc<RouteSigner>,
    /// Signs URLs on each `[[route.cdn]]`'s hosts: one per entry of `rules.cdns`, in order.
    cdn_signers: Vec<Arc<RouteSigner>>,
    rules: RewriteRules,
    /// `rewrite_hosts` and every entry's hosts.
    hosts: Vec<String>,
    /// Whether a URL it signs may be named by any short text: an object's path, where a
    /// scheme other than Filestack's signs (the route's own or an entry's), or an external
    /// source's file name, where the route lists `external_sources`. Every request is then
    /// kept to compare with.
    guards_every_request: bool,
    signed_attributes: BucketCache<String, String>,
}

impl SiteUrls {
    /// Signing with `signer` the URLs on `rules`' `rewrite_hosts`, and with a signer of its own
    /// those on each `[[route.cdn]]`'s hosts (counted in `signer`'s metrics); up to
    /// `cache_size` signed attribute values (at most 20,000) are kept. Errors name what is
    /// wrong with an entry's key.
    pub fn new(
        signer: Arc<RouteSigner>,
        rules: RewriteRules,
        cache_size: NonZeroUsize,
    ) -> Result<Self, String> {
        let cdn_signers: Vec<Arc<RouteSigner>> = rules
            .cdns
            .iter()
            .map(|cdn| RouteSigner::for_cdn(cdn, signer.metrics().clone()).map(Arc::new))
            .collect::<Result<_, _>>()?;
        Ok(Self {
            guards_every_request: signer.scheme().is_some()
                || !cdn_signers.is_empty()
                || signer
                    .app()
                    .is_some_and(|app| !app.sources.prefixes().is_empty()),
            cdn_signers,
            hosts: rules.all_hosts().map(str::to_owned).collect(),
            rules,
            // In front of the signer's credential cache: a page served again is signed from
            // here, and counts as the hits it is.
            signed_attributes: BucketCache::weighed(
                cache_size.min(SIGNED_URL_CACHE_MAX),
                SIGNED_URL_CACHE_BYTES,
                ATTRIBUTE_WEIGHT,
            )
            .with_metrics(signer.metrics().cache.in_front()),
            signer,
        })
    }

    /// The signer for URLs on `host`, if the route signs them.
    fn signer_for_host(&self, host: &str) -> Option<&RouteSigner> {
        if self.rules.is_rewrite_host(host) {
            return Some(&self.signer);
        }
        let index = self.rules.cdns.iter().position(|cdn| cdn.has_host(host))?;
        self.cdn_signers.get(index).map(|signer| &**signer)
    }

    /// Every signer of the route: its own, then each entry's.
    fn signers(&self) -> impl Iterator<Item = &RouteSigner> {
        std::iter::once(&*self.signer).chain(self.cdn_signers.iter().map(|s| &**s))
    }

    /// A site route's URL signing from `route_keys` (TOML lines added to a site route on
    /// `http://127.0.0.1:3000`) and `secret`: the one fixture the unit tests, property tests,
    /// fuzz targets and benches share.
    ///
    /// # Panics
    /// When `route_keys` make the route invalid: it is for tests.
    #[doc(hidden)]
    pub fn fixture(route_keys: &str, secret: &str) -> Arc<Self> {
        let toml = format!(
            "[signing]\nsecret_env = \"S\"\n[[route]]\nname = \"site\"\nprefix = \"/\"\n\
             mode = \"site\"\nupstream = \"http://127.0.0.1:3000\"\n{route_keys}\n"
        );
        let config =
            Config::from_toml_str(&toml, |_| Some(secret.to_owned())).expect("a valid site route");
        let route = &config.routes[0];
        let RouteKind::Site(site) = &route.kind else {
            unreachable!("the fixture's route is a site route")
        };
        let signer = Arc::new(RouteSigner::for_route(route));
        Arc::new(
            Self::new(signer, site.rewrite.clone(), route.signing.cache_size)
                .expect("the route's keys sign"),
        )
    }

    /// What signs the URLs of one answer, at `now`, with no request to guard against.
    pub fn at(self: &Arc<Self>, now: u64) -> Arc<CdnUrlSigner> {
        self.answer(now, None, false)
    }

    /// What signs the URLs of the answer to a request for `target` (its path and query), at
    /// `now`. With the route's `reflection_guard` on, a URL whose handle, source or object
    /// `target` names is left unsigned: the page may only be echoing what the client wrote.
    pub fn for_request(self: &Arc<Self>, now: u64, target: &str) -> Arc<CdnUrlSigner> {
        let (reflected, names_file) = if self.rules.reflection_guard {
            let text = reflection_forms(target);
            let names_file = could_name_a_file(&text);
            // A handle is 20 characters and a whole source starts with `//`, but an object's
            // path (`a/b.pdf`) or a source's host and path or file name (a page may write the
            // `https://` itself) may be any short text: on a route that signs those, whatever
            // the request holds is kept to compare with.
            (
                (names_file || self.guards_every_request).then_some(text),
                names_file,
            )
        } else {
            (None, false)
        };
        self.answer(now, reflected, names_file)
    }

    /// The signer of one answer at `now`, its cache generation worked out once for all its
    /// URLs: the sum of the expiries the route's signers give at `now`. Each only grows, so
    /// the sum changes (and grows) whenever any of them moves to a new bucket.
    fn answer(
        self: &Arc<Self>,
        now: u64,
        reflected: Option<String>,
        names_file: bool,
    ) -> Arc<CdnUrlSigner> {
        let generation = self
            .signers()
            .map(|signer| signer.expiry_at(now))
            .fold(0, u64::saturating_add);
        Arc::new(CdnUrlSigner {
            urls: Arc::clone(self),
            now,
            generation,
            reflected,
            names_file,
            signed_any: AtomicBool::new(false),
        })
    }

    /// The rewrite rules.
    pub fn rules(&self) -> &RewriteRules {
        &self.rules
    }
}

/// Signs URLs on a site route's `rewrite_hosts` with that route's signer, at one instant: one
/// per answer.
pub struct CdnUrlSigner {
    urls: Arc<SiteUrls>,
    now: u64,
    /// What the signed attribute values are cached for ([`SiteUrls::answer`]).
    generation: u64,
    /// The request's path and query as a page could echo them ([`reflection_forms`]), when the
    /// route guards against reflection and the request could name a handle or source, or the
    /// route signs objects.
    reflected: Option<String>,
    /// Whether the request could name a handle or a whole source ([`could_name_a_file`]): the
    /// signed-attribute cache is then bypassed, as whether a value may be signed depends on the
    /// request. (Otherwise an object's or source's URL is cached whoever asks, and checked
    /// against the request as it leaves the cache.)
    names_file: bool,
    /// Whether any URL was signed (for the headers: the body is streamed after them).
    signed_any: AtomicBool,
}

impl CdnUrlSigner {
    /// What the signed attribute values are cached for ([`SiteUrls::answer`]).
    fn generation(&self) -> u64 {
        self.generation
    }

    /// How long, in seconds from now, a cache may keep an answer carrying URLs signed here and
    /// still find them valid for their `min_validity`: the shortest among the route's
    /// signers, whichever scheme signs the URLs the answer carries.
    pub fn cache_limit(&self) -> u64 {
        self.urls
            .signers()
            .map(|signer| {
                signer
                    .usable_until(signer.expiry_at(self.now))
                    .saturating_sub(self.now)
                    .saturating_sub(signer.signing().min_validity.as_secs())
            })
            .min()
            .unwrap_or(0)
    }

    /// Every host whose URLs are signed here.
    pub fn hosts(&self) -> &[String] {
        &self.urls.hosts
    }

    /// Whether this signer has signed any URL so far.
    pub fn signed_any(&self) -> bool {
        self.signed_any.load(Ordering::Relaxed)
    }

    /// The current unix time this signer signs at.
    pub fn now(&self) -> u64 {
        self.now
    }

    /// Whether the request named `file` (a handle, or an external source without its scheme)
    /// itself.
    fn is_reflected(&self, file: &str) -> bool {
        self.reflected
            .as_deref()
            .is_some_and(|target| target.contains(file))
    }

    /// Whether the request named the object at `written` (its path as the page wrote it, no
    /// leading `/`), as written or percent-decoded.
    fn is_reflected_object(&self, written: &str) -> bool {
        if self.reflected.is_none() {
            return false;
        }
        self.is_reflected(written)
            || match percent_encoding::percent_decode_str(written).decode_utf8_lossy() {
                Cow::Owned(decoded) => self.is_reflected(&decoded),
                Cow::Borrowed(_) => false,
            }
    }

    /// Whether the request named `external`'s source: whole (without its scheme), or its file
    /// name alone (a page may build the rest).
    fn is_reflected_source(&self, external: &ExternalRef<'_>) -> bool {
        let file_name = external.source.as_str().rsplit('/').next().unwrap_or("");
        self.is_reflected(external.source.without_scheme())
            || (file_name.len() >= 4 && self.is_reflected(file_name))
    }

    /// Whether `url`, on one of the route's hosts, is an object's URL another scheme signs or
    /// an external source's, and the request named that object or source.
    fn names_reflected_file(&self, url: &str) -> bool {
        let Some(parts) = split_url(url) else {
            return false;
        };
        let Some(signer) = self.urls.signer_for_host(parts.host) else {
            return false;
        };
        let Some(written) = parts.path.strip_prefix('/') else {
            return false;
        };
        if signer.scheme().is_some() {
            return self.is_reflected_object(written);
        }
        let path = strip_api_key(written, signer.app().map(|app| app.key.as_str()));
        matches!(ExternalRef::parse(path), Ok(Some(external)) if self.is_reflected_source(&external))
    }

    /// The signed form of `url` if it is a file URL on one of the route's hosts, else `None`.
    ///
    /// Credentials already in the URL are replaced, never doubled. It is signed with only the
    /// calls it needs, and only where the route's `calls` hold them and its `tasks` list every
    /// task it carries; otherwise it is left as written. Fragment and other query parameters
    /// are kept.
    pub fn sign(&self, url: &str) -> Option<String> {
        let parts = split_url(url)?;
        let signer = self.urls.signer_for_host(parts.host)?;
        let api_key = signer.app().map(|app| app.key.as_str());
        let written = parts.path.strip_prefix('/')?;
        let path = strip_api_key(written, api_key);
        let query = parts.query.map(strip_client_credentials);
        // A signature is a bearer credential: it does not travel in the clear unless the route
        // says its CDN has no https.
        let origin = match parts.origin.get(..7) {
            Some(scheme)
                if !self.urls.rules.keep_http && scheme.eq_ignore_ascii_case("http://") =>
            {
                Cow::Owned(format!("https://{}", &parts.origin[7..]))
            }
            _ => Cow::Borrowed(parts.origin),
        };
        let mut signed = if let Some(scheme) = signer.scheme() {
            // Another scheme (S3, CloudFront, imgix, Akamai): the object's whole URL is signed.
            if !is_plain_object_path(written) || self.is_reflected_object(written) {
                return None;
            }
            // The URL the browser asks for, which the scheme signs: its scheme and host in
            // lowercase (SigV4 signs the host, CloudFront the whole URL), and a
            // protocol-relative one on https, unless the route keeps http (it may then be
            // either).
            let origin = match origin.strip_prefix("//") {
                Some(_) if self.urls.rules.keep_http => return None,
                Some(host) => format!("https://{host}"),
                None => origin.into_owned(),
            };
            let url = object_url(&origin.to_ascii_lowercase(), written, parts.query, scheme);
            signer
                .scheme_url(self.now, &url)?
                .ok()?
                .url
                .as_str()
                .to_owned()
        } else {
            match ExternalRef::parse(path).ok()? {
                // What `client.transform()` writes for a picture kept elsewhere: signed where the
                // route lists its source, left alone otherwise.
                Some(external) => {
                    signer.check_external(&external).ok()?;
                    if self.is_reflected_source(&external) {
                        return None;
                    }
                    let (credentials, _) =
                        signer.external_credentials(self.now, &external.source)?;
                    // As in proxy and redirect routes: a source carries no query.
                    if parts.query.is_some() {
                        return None;
                    }
                    external.signed_url(&origin, api_key?, None, &credentials)
                }
                None => {
                    let file = FileRef::parse(path).ok()?;
                    let calls = signer.check_file(&file).ok()?;
                    if self.is_reflected(file.handle.as_str()) {
                        return None;
                    }
                    let (credentials, _outcome) =
                        signer.file_credentials(self.now, file.handle, calls);
                    // The API key stays where the page wrote it.
                    let base = match (api_key, path.len() < written.len()) {
                        (Some(key), true) => Cow::Owned(format!("{origin}/{key}")),
                        _ => origin,
                    };
                    signed_url(
                        &base,
                        &file,
                        query.as_deref(),
                        &credentials,
                        signer.signing().url_style,
                    )
                }
            }
        };
        self.signed_any.store(true, Ordering::Relaxed);
        // A fragment never reaches the CDN; one that looks like credentials is dropped anyway,
        // so a signed URL never reads as carrying two sets.
        let fragment = parts.fragment.filter(|f| {
            let lower = f.to_ascii_lowercase();
            !["policy", "signature", "security"]
                .iter()
                .any(|w| lower.contains(w))
        });
        if let Some(fragment) = fragment {
            signed.push('#');
            signed.push_str(fragment);
        }
        Some(signed)
    }

    /// [`CdnUrlSigner::sign`] for an HTML attribute value as written (`&amp;` and all, spaces
    /// around it ignored): the new value to write, escaped for HTML. Cached per route for the expiry bucket, so a page
    /// served again is rewritten from cache.
    ///
    /// While guarding a request that could name a handle, the cache is bypassed: whether a
    /// value may be signed then depends on the request, not on the value alone. An object's or
    /// external source's URL found in the cache is left unsigned when the request names it.
    pub fn sign_html_attribute(&self, raw: &str) -> Option<Arc<String>> {
        let make = || {
            let value = super::html::decode_char_refs(raw);
            self.sign(value.trim())
                .map(|signed| signed.replace('&', "&amp;"))
        };
        // Guarding a request, whether a value may be signed depends on the request too; a long
        // value is not worth its room.
        if self.names_file || raw.len() > CACHED_ATTRIBUTE_MAX_LEN {
            return make().map(Arc::new);
        }
        let signed = self
            .urls
            .signed_attributes
            .get_or_make(raw, self.generation(), make)
            .map(|(signed, _)| signed)
            .filter(|_| {
                self.reflected.is_none()
                    || !self.names_reflected_file(super::html::decode_char_refs(raw).trim())
            });
        if signed.is_some() {
            self.signed_any.store(true, Ordering::Relaxed);
        }
        signed
    }

    /// Signs every candidate URL of a `srcset` value; `None` if none changed.
    pub fn sign_srcset(&self, srcset: &str) -> Option<String> {
        let mut out = String::with_capacity(srcset.len() + 256);
        let mut changed = false;
        for candidate in srcset_candidates(srcset) {
            match candidate {
                SrcsetPiece::Url(url) => match self.sign(url) {
                    Some(signed) => {
                        out.push_str(&signed);
                        changed = true;
                    }
                    None => out.push_str(url),
                },
                SrcsetPiece::Other(text) => out.push_str(text),
            }
        }
        changed.then_some(out)
    }

    /// Signs every `url(...)` in CSS text; `None` if none changed.
    pub fn sign_css(&self, css: &str) -> Option<String> {
        let out = super::css::sign_css_bytes(css.as_bytes(), self);
        if out == css.as_bytes() {
            return None;
        }
        String::from_utf8(out).ok()
    }

    /// The rewrite rules of the route signing here.
    pub fn rules(&self) -> &RewriteRules {
        self.urls.rules()
    }
}

/// `target` as a page could echo it: as it came, percent-decoded (once and twice), then with
/// HTML character references, JSON and JavaScript escapes (`\/`, `\uXXXX`) undone and
/// backslashes read as slashes, as an application that decodes or normalises its input (or
/// does not) would write it.
///
/// A heuristic: input the application decodes in other ways (base64, its own templates that
/// join fragments of it) is out of its reach, which is why a site that echoes input should
/// serve files through a proxy route with `authorize_url` (README, "Who may get a signature").
fn reflection_forms(target: &str) -> String {
    let percent = |text: &str| {
        percent_encoding::percent_decode_str(text)
            .decode_utf8_lossy()
            .into_owned()
    };
    let once = percent(target);
    let twice = percent(&once);
    let mut text = String::with_capacity(target.len() * 5);
    text.push_str(target);
    text.push(' ');
    for variant in [once, twice] {
        let unescaped = unescape_js(&super::html::decode_char_refs(&variant)).replace('\\', "/");
        let slashed = variant.replace('\\', "/");
        for form in [variant, slashed, unescaped] {
            if !text.contains(&form) {
                text.push_str(&form);
                text.push(' ');
            }
        }
    }
    text
}

/// Whether `text` ([`reflection_forms`]) holds a run of handle characters long enough to be
/// one, or a `//` that could start an external source. Else a route that signs handles alone
/// has nothing to guard.
fn could_name_a_file(text: &str) -> bool {
    let longest_run = text
        .split(|c: char| !c.is_ascii_alphanumeric())
        .map(str::len)
        .max()
        .unwrap_or(0);
    longest_run >= HANDLE_LEN || text.contains("//")
}

/// [`reflection_forms`] of `target` when [`could_name_a_file`] holds.
#[cfg(test)]
fn reflection_text(target: &str) -> Option<String> {
    let text = reflection_forms(target);
    could_name_a_file(&text).then_some(text)
}

/// `text` with JSON and JavaScript string escapes undone: `\/`, `\"`, `\\` and `\uXXXX`.
fn unescape_js(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut chars = text.chars().peekable();
    while let Some(c) = chars.next() {
        if c != '\\' {
            out.push(c);
            continue;
        }
        match chars.peek().copied() {
            Some('/') | Some('"') | Some('\\') => {
                out.extend(chars.next());
            }
            Some('u') => {
                let hex: String = chars.clone().skip(1).take(4).collect();
                match u32::from_str_radix(&hex, 16).ok().and_then(char::from_u32) {
                    Some(decoded) if hex.len() == 4 => {
                        out.push(decoded);
                        for _ in 0..5 {
                            chars.next();
                        }
                    }
                    _ => out.push(c),
                }
            }
            _ => out.push(c),
        }
    }
    out
}

/// The pieces of an absolute or protocol-relative URL signgate cares about.
struct UrlParts<'a> {
    /// `https://host[:port]` or `//host`, as written.
    origin: &'a str,
    host: &'a str,
    path: &'a str,
    query: Option<&'a str>,
    fragment: Option<&'a str>,
}

fn split_url(url: &str) -> Option<UrlParts<'_>> {
    let starts_with = |prefix: &str| {
        url.get(..prefix.len())
            .is_some_and(|head| head.eq_ignore_ascii_case(prefix))
    };
    let after_scheme = if starts_with("https://") {
        8
    } else if starts_with("http://") {
        7
    } else if url.starts_with("//") {
        2
    } else {
        return None;
    };
    let rest = &url[after_scheme..];
    let host_end = rest.find(['/', '?', '#']).unwrap_or(rest.len());
    let host = &rest[..host_end];
    if host.is_empty() || host.contains(['@', '\\', ' ']) {
        return None;
    }
    let origin = &url[..after_scheme + host_end];
    let rest = &rest[host_end..];
    let (rest, fragment) = match rest.split_once('#') {
        Some((r, f)) => (r, Some(f)),
        None => (rest, None),
    };
    let (path, query) = match rest.split_once('?') {
        Some((p, q)) => (p, Some(q)),
        None => (rest, None),
    };
    Some(UrlParts {
        origin,
        host,
        path,
        query,
        fragment,
    })
}

enum SrcsetPiece<'a> {
    Url(&'a str),
    Other(&'a str),
}

/// Splits a `srcset` into URLs and everything else (whitespace, descriptors, commas), following
/// the HTML parsing rules: a URL is a run of non-whitespace, and may itself contain commas.
fn srcset_candidates(srcset: &str) -> Vec<SrcsetPiece<'_>> {
    let mut pieces = Vec::new();
    let bytes = srcset.as_bytes();
    let mut i = 0;
    while i < bytes.len() {
        let start = i;
        while i < bytes.len() && (bytes[i].is_ascii_whitespace() || bytes[i] == b',') {
            i += 1;
        }
        if i > start {
            pieces.push(SrcsetPiece::Other(&srcset[start..i]));
        }
        if i >= bytes.len() {
            break;
        }
        let url_start = i;
        while i < bytes.len() && !bytes[i].is_ascii_whitespace() {
            i += 1;
        }
        // Trailing commas end the candidate rather than belong to the URL.
        let mut url_end = i;
        while url_end > url_start && bytes[url_end - 1] == b',' {
            url_end -= 1;
        }
        pieces.push(SrcsetPiece::Url(&srcset[url_start..url_end]));
        if url_end < i {
            pieces.push(SrcsetPiece::Other(&srcset[url_end..i]));
            continue;
        }
        // Descriptors run to the next comma.
        let desc_start = i;
        while i < bytes.len() && bytes[i] != b',' {
            i += 1;
        }
        if i > desc_start {
            pieces.push(SrcsetPiece::Other(&srcset[desc_start..i]));
        }
    }
    pieces
}

#[cfg(test)]
mod tests {
    #[test]
    fn the_reflection_guard_reads_what_a_page_could_decode_from_the_request() {
        let guarded = |target: &str, file: &str| {
            super::reflection_text(target).is_some_and(|text| text.contains(file))
        };
        let source = "images.example.org/gallery/secret.png";
        for target in [
            "/search?q=https://images.example.org/gallery/secret.png",
            "/search?q=https%3A%2F%2Fimages.example.org%2Fgallery%2Fsecret.png",
            r#"/graphql?variables={"u":"https:\/\/images.example.org\/gallery\/secret.png"}"#,
            "/echo?u=https:&#47;&#47;images.example.org&#47;gallery&#47;secret.png",
            r"/echo?u=https:\\images.example.org\gallery\secret.png",
        ] {
            assert!(guarded(target, source), "{target}");
        }
        let handle = "KW9EJhYtS6y48Whm2S6D";
        assert!(guarded(r"/echo?h=\u004bW9EJhYtS6y48Whm2S6D", handle));
        assert!(super::reflection_text("/gallery?page=2").is_none());
    }

    use super::*;
    use crate::policy::Call;
    use crate::secret::Secret;
    use crate::verify::verify_at;

    const H: &str = "KW9EJhYtS6y48Whm2S6D";
    const NOW: u64 = 1_800_000_000;

    fn signer(extra: &str) -> Arc<CdnUrlSigner> {
        let keys =
            format!("rewrite_hosts = [\"cdn.filestackcontent.com\", \"cdn.local:9000\"]\n{extra}");
        SiteUrls::fixture(&keys, "s").at(NOW)
    }

    fn valid(url: &str) -> bool {
        let secret = Secret::new("s".into()).expect("secret");
        verify_at(url, &secret, NOW, Call::Read).is_ok()
    }

    #[test]
    fn signs_bare_cdn_urls_and_keeps_the_rest() {
        let s = signer("");
        let signed = s
            .sign(&format!("https://cdn.filestackcontent.com/{H}"))
            .expect("signed");
        assert!(signed.starts_with(&format!("https://cdn.filestackcontent.com/{H}?policy=")));
        assert!(valid(&signed));
        let signed = s
            .sign(&format!(
                "HTTPS://CDN.filestackcontent.com/resize=width:300/{H}?dl=true#top"
            ))
            .expect("signed");
        assert!(
            signed.contains("?dl=true&policy=") && signed.ends_with("#top"),
            "{signed}"
        );
        assert!(valid(&signed));
        assert!(
            s.sign(&format!("//cdn.local:9000/{H}"))
                .expect("signed")
                .starts_with("//cdn.local:9000/")
        );
    }

    #[test]
    fn replaces_existing_credentials_instead_of_adding_a_second_set() {
        let s = signer("");
        let once = s
            .sign(&format!("https://cdn.filestackcontent.com/{H}"))
            .expect("signed");
        let again = s.sign(&once).expect("re-signed");
        assert_eq!(again, once, "rewriting is idempotent");
        let task = s
            .sign(&format!(
                "https://cdn.filestackcontent.com/security=p:old,s:old/{H}"
            ))
            .expect("signed");
        assert!(
            !task.contains("old") && task.matches("policy=").count() == 1,
            "{task}"
        );
    }

    #[test]
    fn leaves_other_hosts_relative_urls_and_non_files_alone() {
        let s = signer("");
        for url in [
            format!("https://example.com/{H}"),
            format!("https://cdn.filestackcontent.com.evil.com/{H}"),
            format!("https://user@cdn.filestackcontent.com/{H}"),
            format!("/{H}"),
            "https://cdn.filestackcontent.com/".to_owned(),
            "https://cdn.filestackcontent.com/not-a-handle".to_owned(),
            "data:image/png;base64,AAAA".to_owned(),
            format!("https://cdn.local/{H}"),
        ] {
            assert_eq!(s.sign(&url), None, "{url}");
        }
        let no_convert = signer("calls = [\"read\"]");
        assert_eq!(
            no_convert.sign(&format!(
                "https://cdn.filestackcontent.com/resize=width:3/{H}"
            )),
            None
        );
    }

    #[test]
    fn tasks_the_route_does_not_list_are_left_unsigned() {
        let url = |tasks: &str| format!("https://cdn.filestackcontent.com/{tasks}/{H}");
        let s = signer("");
        for tasks in ["store", "watermark=file:CupXxkCQZ22cS5FdMSaB", "flip/zip"] {
            assert_eq!(s.sign(&url(tasks)), None, "{tasks}");
        }
        assert!(s.sign(&url("flip")).is_some());
        let listed = signer("tasks = [\"store\"]");
        assert!(valid(
            &listed.sign(&url("store")).expect("listed, so signed")
        ));
        assert_eq!(listed.sign(&url("flip")), None);
    }

    #[test]
    fn each_url_is_signed_with_only_the_calls_it_needs() {
        let s = signer("");
        let granted = |url: String| {
            let signed = s.sign(&url).expect("signed");
            let secret = Secret::new("s".into()).expect("secret");
            verify_at(&signed, &secret, NOW, Call::Read)
                .expect("valid")
                .call
                .expect("a call list")
        };
        let bare = granted(format!("https://cdn.filestackcontent.com/{H}"));
        assert_eq!(bare, ["read"]);
        let resized = granted(format!(
            "https://cdn.filestackcontent.com/resize=width:3/{H}"
        ));
        assert_eq!(resized, ["read", "convert"]);
    }

    #[test]
    fn cached_signed_urls_never_outlive_their_bucket() {
        let urls = SiteUrls::fixture("bucket = \"5m\"", "s");
        let url = format!("https://cdn.filestackcontent.com/{H}");
        let at = |now| urls.at(now).sign_html_attribute(&url).expect("signed");
        let first = at(NOW + 1);
        let same_bucket = at(NOW + 300);
        assert!(
            Arc::ptr_eq(&first, &same_bucket),
            "served from the cache within the bucket"
        );
        let next_bucket = at(NOW + 301);
        assert_ne!(next_bucket, first);
        assert!(valid(&next_bucket.replace("&amp;", "&")));
    }

    #[test]
    fn non_ascii_input_never_panics() {
        let s = signer("");
        for input in ["ᦥ?<ஏൣ", "httpsé//x", "//ஏ/x", "url(ஏ", "ஏ 1x, ஏ"] {
            assert_eq!(s.sign(input), None);
            let _ = s.sign_srcset(input);
            let _ = s.sign_css(input);
        }
    }

    #[test]
    fn srcset_candidates_are_each_signed_even_with_commas_in_urls() {
        let s = signer("");
        let srcset = format!(
            "https://cdn.filestackcontent.com/resize=width:300,height:200/{H} 300w,\n  https://example.com/a.png 2x, https://cdn.filestackcontent.com/{H}"
        );
        let out = s.sign_srcset(&srcset).expect("changed");
        let urls: Vec<&str> = out
            .split([' ', '\n'])
            .filter(|p| p.contains("://"))
            .collect();
        assert_eq!(urls.len(), 3, "{out}");
        assert!(valid(urls[0].trim_end_matches(',')));
        assert_eq!(urls[1], "https://example.com/a.png");
        assert!(valid(urls[2]));
        assert!(
            out.contains(" 300w,\n  https://example.com/a.png 2x, "),
            "{out}"
        );
        assert_eq!(s.sign_srcset("a.png 1x, b.png 2x"), None);
    }

    #[test]
    fn css_urls_are_signed_in_every_quoting() {
        let s = signer("");
        let css = format!(
            "a{{background:url(https://cdn.filestackcontent.com/{H})}} b{{background: URL( \"https://cdn.filestackcontent.com/{H}\" )}} c{{x:url('/local.png')}}"
        );
        let out = s.sign_css(&css).expect("changed");
        assert_eq!(out.matches("policy=").count(), 2, "{out}");
        assert!(out.contains("url('/local.png')"));
        assert!(out.contains("URL( \"https://cdn.filestackcontent.com/"));
        assert_eq!(s.sign_css("x{y:url(unterminated"), None);
    }
}

#[cfg(test)]
mod cdn_entry_tests {
    use super::*;

    const NOW: u64 = 1_800_000_000;

    /// A site route on the Filestack CDN (1h buckets) with an S3 entry (1m buckets).
    fn urls() -> Arc<SiteUrls> {
        SiteUrls::fixture(
            "ttl = \"2h\"\nbucket = \"1h\"\n\
             [[route.cdn]]\nhosts = [\"photos.s3.eu-west-1.amazonaws.com\"]\nscheme = \"s3\"\n\
             access_key_id = \"AKIAEXAMPLE\"\nregion = \"eu-west-1\"\nsecret_env = \"S3\"\n\
             ttl = \"5m\"\nbucket = \"1m\"\n",
            "wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY",
        )
    }

    #[test]
    fn a_cached_attribute_is_signed_again_when_its_own_schemes_bucket_turns() {
        let urls = urls();
        let raw = "https://photos.s3.eu-west-1.amazonaws.com/gallery/cat.jpg";
        let start = NOW - NOW % 3600;
        let first = urls
            .at(start + 10)
            .sign_html_attribute(raw)
            .expect("signed");
        let again = urls
            .at(start + 20)
            .sign_html_attribute(raw)
            .expect("signed");
        assert_eq!(first, again, "the same minute: from the cache");
        // The route's own bucket (1h) holds; the entry's (1m) has turned.
        let later = urls
            .at(start + 130)
            .sign_html_attribute(raw)
            .expect("signed");
        assert_ne!(
            first, later,
            "a URL signed for a past minute was served again"
        );
        assert!(later.contains("X-Amz-Date="), "{later}");
    }

    #[test]
    fn an_object_the_request_names_is_unsigned_even_when_its_url_is_cached() {
        let urls = urls();
        let raw = "https://photos.s3.eu-west-1.amazonaws.com/gallery/cat.jpg";
        let cached = urls.at(NOW).sign_html_attribute(raw).expect("signed");
        for target in [
            "/photo/gallery/cat.jpg",
            "/view?img=gallery%2Fcat.jpg",
            "/view?img=gallery/cat%2Ejpg",
        ] {
            assert_eq!(
                urls.for_request(NOW, target).sign_html_attribute(raw),
                None,
                "{target}"
            );
        }
        // The page wrote it percent-encoded, the request named it decoded.
        let encoded = "https://photos.s3.eu-west-1.amazonaws.com/gallery/caf%C3%A9.jpg";
        let guarded = urls.for_request(NOW, "/photo/gallery/café.jpg");
        assert_eq!(guarded.sign(encoded), None);
        // Another request still gets it from the cache.
        let other = urls
            .for_request(NOW, "/gallery?page=2")
            .sign_html_attribute(raw)
            .expect("signed");
        assert!(Arc::ptr_eq(&cached, &other));
    }

    #[test]
    fn a_route_that_signs_handles_alone_guards_only_requests_that_could_name_one() {
        let urls = SiteUrls::fixture("", "s");
        assert!(urls.for_request(NOW, "/gallery?page=2").reflected.is_none());
        assert!(
            urls.for_request(NOW, "/search?q=KW9EJhYtS6y48Whm2S6D")
                .reflected
                .is_some()
        );
    }

    #[test]
    fn an_entrys_url_is_signed_as_the_browser_asks_for_it() {
        let s = urls().at(NOW);
        let signed = s
            .sign("https://photos.s3.eu-west-1.amazonaws.com/gallery/cat.jpg")
            .expect("signed");
        // A browser lowercases the scheme and host, and SigV4 signs the host: signed as
        // written, the URL would be refused.
        for spelling in [
            "HTTPS://PHOTOS.S3.EU-WEST-1.AMAZONAWS.COM/gallery/cat.jpg",
            "https://Photos.S3.eu-west-1.amazonaws.com/gallery/cat.jpg",
            // Protocol-relative: signed for https, never left unsigned.
            "//photos.s3.eu-west-1.amazonaws.com/gallery/cat.jpg",
        ] {
            assert_eq!(
                s.sign(spelling).as_deref(),
                Some(signed.as_str()),
                "{spelling}"
            );
        }
        // With keep_http a protocol-relative URL may be fetched either way: left alone.
        let keep_http = SiteUrls::fixture(
            "keep_http = true\n[[route.cdn]]\nhosts = [\"photos.s3.eu-west-1.amazonaws.com\"]\n\
             scheme = \"s3\"\naccess_key_id = \"AKIAEXAMPLE\"\nregion = \"eu-west-1\"\n\
             secret_env = \"S3\"\n",
            "wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY",
        );
        assert_eq!(
            keep_http
                .at(NOW)
                .sign("//photos.s3.eu-west-1.amazonaws.com/gallery/cat.jpg"),
            None
        );
    }

    #[test]
    fn the_cache_generation_turns_with_every_signers_expiry_across_a_rotation() {
        // The route's Filestack secret switches at 08:33:20 (1h buckets, expiries capped at
        // the switch until then); the S3 entry turns every minute.
        let urls = SiteUrls::fixture(
            "ttl = \"2h\"\nbucket = \"1h\"\nsecret_env = \"S\"\nsecret_next_env = \"N\"\n\
             switch_at = \"2027-01-15T08:33:20Z\"\n\
             [[route.cdn]]\nhosts = [\"photos.s3.eu-west-1.amazonaws.com\"]\nscheme = \"s3\"\n\
             access_key_id = \"AKIAEXAMPLE\"\nregion = \"eu-west-1\"\nsecret_env = \"S3\"\n\
             ttl = \"5m\"\nbucket = \"1m\"\n",
            "wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY",
        );
        let expiries = |now: u64| {
            urls.signers()
                .map(|signer| signer.expiry_at(now))
                .collect::<Vec<_>>()
        };
        let (mut last, mut last_generation) =
            (expiries(NOW - 7200), urls.at(NOW - 7200).generation());
        for now in NOW - 7200..NOW + 7200 {
            let (each, generation) = (expiries(now), urls.at(now).generation());
            assert!(
                each.iter().zip(&last).all(|(e, l)| e >= l),
                "an expiry went back at {now}: {last:?} -> {each:?}"
            );
            assert_eq!(
                generation == last_generation,
                each == last,
                "at {now}: {last:?} -> {each:?}"
            );
            (last, last_generation) = (each, generation);
        }
    }

    #[test]
    fn the_cache_limit_is_the_shortest_among_the_routes_signers() {
        let urls = urls();
        let start = NOW - NOW % 3600;
        // The S3 entry: expiry at most 5m + 1m ahead, less min_validity (75s).
        let limit = urls.at(start + 10).cache_limit();
        assert!(limit <= 360 - 75, "{limit}");
        assert!(limit > 0);
    }
}
