//! External URL sources: files the CDN fetches from elsewhere and transforms
//! (`/APIKEY/resize=width:300/https://images.example.org/a.jpg`), and the route's list of the
//! sources it may sign (`external_sources`).
//!
//! Signing such a URL spends the app's transformation quota and makes the CDN fetch it, so a
//! source is signed only when it is written plainly (no user info, no encoded slash, dot or
//! backslash, no dot segments, no query or fragment) and lies under one of the route's
//! prefixes: same scheme, same host, same port, and a path under the prefix's on a segment
//! boundary. Its policy's `url` is the source itself, regex-escaped and anchored, so the
//! credentials are good for that one source only.

use std::fmt;

use crate::filelink::parse_tasks;
use crate::policy::Credentials;

/// Why a text is not a source signgate signs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum SourceError {
    /// Not `http://` or `https://`.
    #[error("an external source must start with https:// (or http://)")]
    Scheme,
    /// User info, an empty, non-ASCII or oddly spelled host, or a bad port.
    #[error("an external source's host must be a plain host name or IPv4 address")]
    Host,
    /// A character outside the plain path alphabet (a `%` escape, `;`, a space), a dot-only or
    /// empty segment, a query or a fragment.
    #[error(
        "an external source's path must be plain: letters, digits and -._~!$&'()*+,=:@ only, no % escapes or dot segments, no query"
    )]
    Path,
    /// A quote at one end of the source only.
    #[error("an external source's quotes must be at both ends")]
    Quote,
    /// A segment before the source is not a transformation task.
    #[error("not a transformation task")]
    Task,
}

/// An external source as a client names it after the route's prefix (and any API key):
/// transformation tasks, then the source, quoted or not.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ExternalRef<'a> {
    /// Transformation tasks in order, client credentials removed.
    pub tasks: Vec<&'a str>,
    /// The source, without quotes.
    pub source: Source<'a>,
    /// Whether it was written in double quotes (`"https://…"`, as filestack-js writes it).
    pub quoted: bool,
}

impl<'a> ExternalRef<'a> {
    /// Parses `[TASKS/]SOURCE`; `Ok(None)` when the path names no external source (a handle,
    /// then). The source runs to the end of the path: a request's query is never part of it.
    pub fn parse(path: &'a str) -> Result<Option<Self>, SourceError> {
        let Some(start) = source_start(path) else {
            return Ok(None);
        };
        let tasks = match path[..start].strip_suffix('/') {
            None => Vec::new(),
            Some(tasks) => parse_tasks(tasks).map_err(|_| SourceError::Task)?,
        };
        let (source, quoted) = unquote_source(&path[start..]).ok_or(SourceError::Quote)?;
        Ok(Some(Self {
            tasks,
            source: Source::parse(source)?,
            quoted,
        }))
    }

    /// The URL of this source, signed with `credentials`, on the CDN at `base`: the API key,
    /// the tasks, the `security` task, then the source (in quotes if it was written in them),
    /// and the client's `query` (already stripped of credentials).
    pub fn signed_url(
        &self,
        base: &str,
        api_key: &str,
        query: Option<&str>,
        credentials: &Credentials,
    ) -> String {
        let source = self.source.as_str();
        let mut url = String::with_capacity(
            base.len() + api_key.len() + source.len() + 32 + credentials.policy.len() + 64,
        );
        url.push_str(base);
        url.push('/');
        url.push_str(api_key);
        for task in &self.tasks {
            url.push('/');
            url.push_str(task);
        }
        url.push_str("/security=p:");
        url.push_str(&credentials.policy);
        url.push_str(",s:");
        url.push_str(&credentials.signature);
        url.push('/');
        if self.quoted {
            url.push('"');
            url.push_str(source);
            url.push('"');
        } else {
            url.push_str(source);
        }
        if let Some(query) = query.filter(|q| !q.is_empty()) {
            url.push('?');
            url.push_str(query);
        }
        url
    }
}

/// A plain `http(s)://host[:port]/path` URL, checked; borrowed from the text it was read from.
#[derive(Clone, Copy, PartialEq, Eq)]
pub struct Source<'a> {
    text: &'a str,
    https: bool,
    /// Host as written (compared without case).
    host: &'a str,
    port: u16,
    /// From the first `/` after the authority; `/` at least.
    path: &'a str,
}

impl<'a> Source<'a> {
    /// Checks `text` as a source. A source without a path (`https://host`) is refused: the CDN
    /// fetches files, not sites.
    pub fn parse(text: &'a str) -> Result<Self, SourceError> {
        Self::read(text, false)
    }

    /// Checks `text` as a prefix of sources: as [`Source::parse`], but `https://host` alone
    /// stands for the whole host.
    pub fn parse_prefix(text: &'a str) -> Result<Self, SourceError> {
        Self::read(text, true)
    }

    fn read(text: &'a str, whole_host: bool) -> Result<Self, SourceError> {
        let (https, rest) = if let Some(rest) = strip_prefix_ignore_case(text, "https://") {
            (true, rest)
        } else if let Some(rest) = strip_prefix_ignore_case(text, "http://") {
            (false, rest)
        } else {
            return Err(SourceError::Scheme);
        };
        let (authority, path) = match rest.find('/') {
            Some(end) => rest.split_at(end),
            None if whole_host => (rest, "/"),
            None => return Err(SourceError::Path),
        };
        let (host, port) = match authority.rsplit_once(':') {
            Some((host, port)) => {
                let port = (!port.is_empty()
                    && port.len() <= 5
                    && port.bytes().all(|b| b.is_ascii_digit()))
                .then(|| port.parse::<u16>().ok())
                .flatten()
                .filter(|port| *port != 0)
                .ok_or(SourceError::Host)?;
                (host, port)
            }
            None => (authority, if https { 443 } else { 80 }),
        };
        if !is_plain_host(host) {
            return Err(SourceError::Host);
        }
        if !is_plain_path(path) {
            return Err(SourceError::Path);
        }
        Ok(Self {
            text,
            https,
            host,
            port,
            path,
        })
    }

    /// The source as written.
    pub fn as_str(&self) -> &'a str {
        self.text
    }

    /// The source without its scheme (`host/path`): what a page reflecting it would hold even
    /// if it dropped or changed the scheme.
    pub fn without_scheme(&self) -> &'a str {
        self.text
            .split_once("://")
            .map_or(self.text, |(_, rest)| rest)
    }

    /// The policy `url` that allows this source and no other: the source with every regular
    /// expression metacharacter escaped, between `^` and `$`.
    pub fn url_pattern(&self) -> String {
        let mut pattern = String::with_capacity(self.text.len() + 16);
        pattern.push('^');
        for c in self.text.chars() {
            if matches!(
                c,
                '\\' | '.' | '+' | '*' | '?' | '(' | ')' | '|' | '[' | ']' | '{' | '}' | '^' | '$'
            ) {
                pattern.push('\\');
            }
            pattern.push(c);
        }
        pattern.push('$');
        pattern
    }

    /// Whether this source lies under `prefix`: same scheme, host (without case) and port, and
    /// a path equal to the prefix's or under it on a segment boundary.
    fn is_under(&self, prefix: &Source<'_>) -> bool {
        self.https == prefix.https
            && self.host.eq_ignore_ascii_case(prefix.host)
            && self.port == prefix.port
            && self.path.strip_prefix(prefix.path).is_some_and(|after| {
                prefix.path.ends_with('/') || after.is_empty() || after.starts_with('/')
            })
    }
}

impl fmt::Debug for Source<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Source({})", self.text)
    }
}

/// A route's `external_sources`: the prefixes under which external URLs may be signed.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct SourceList {
    /// Each prefix as written; each parses as a [`Source`].
    prefixes: Vec<String>,
}

impl SourceList {
    /// Checks each prefix; the error names the first bad one and why.
    pub fn new(prefixes: Vec<String>) -> Result<Self, String> {
        for prefix in &prefixes {
            Source::parse_prefix(prefix).map_err(|e| format!("{prefix:?}: {e}"))?;
        }
        Ok(Self { prefixes })
    }

    /// Whether `source` lies under one of the prefixes.
    pub fn allows(&self, source: &Source<'_>) -> bool {
        self.prefixes
            .iter()
            .filter_map(|prefix| Source::parse_prefix(prefix).ok())
            .any(|prefix| source.is_under(&prefix))
    }

    /// The prefixes as written.
    pub fn prefixes(&self) -> &[String] {
        &self.prefixes
    }
}

/// Where an external source starts in a path after the route's prefix: the index of `https://`
/// or `http://` (either case) at the start of a segment, or of the double quote before it
/// (`"https://…"`, or `%22` as a browser writes it). `None` when the path names no source.
pub fn source_start(path: &str) -> Option<usize> {
    let mut start = 0;
    loop {
        let segment = &path[start..];
        let unquoted = segment
            .strip_prefix('"')
            .or_else(|| strip_prefix_ignore_case(segment, "%22"))
            .unwrap_or(segment);
        if strip_prefix_ignore_case(unquoted, "https://").is_some()
            || strip_prefix_ignore_case(unquoted, "http://").is_some()
        {
            return Some(start);
        }
        start += segment.find('/')? + 1;
    }
}

/// The source in `segment` (from [`source_start`] to the end), without the double quotes a
/// client may put around it, and whether it had them. `None` for an unbalanced quote.
pub fn unquote_source(segment: &str) -> Option<(&str, bool)> {
    let inner = segment
        .strip_prefix('"')
        .and_then(|s| s.strip_suffix('"'))
        .or_else(|| {
            strip_prefix_ignore_case(segment, "%22")
                .and_then(|s| s.len().checked_sub(3).map(|cut| (s, cut)))
                .filter(|(s, cut)| s[*cut..].eq_ignore_ascii_case("%22"))
                .map(|(s, cut)| &s[..cut])
        });
    match inner {
        Some(inner) => Some((inner, true)),
        None if segment.starts_with('"') || segment.ends_with('"') => None,
        None => Some((segment, false)),
    }
}

fn strip_prefix_ignore_case<'a>(text: &'a str, prefix: &str) -> Option<&'a str> {
    text.get(..prefix.len())
        .filter(|head| head.eq_ignore_ascii_case(prefix))
        .map(|_| &text[prefix.len()..])
}

/// A DNS name of letters, digits and hyphens in dot-separated labels, or a dotted IPv4 address.
fn is_plain_host(host: &str) -> bool {
    !host.is_empty()
        && host.len() <= 253
        && host.split('.').all(|label| {
            !label.is_empty()
                && label.len() <= 63
                && !label.starts_with('-')
                && !label.ends_with('-')
                && label
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'-')
        })
}

/// Whether `b` may stand in a plainly written path: letters, digits, `-._~`, `!$&'()*+,=:@`
/// and `/` (no `%`, `;`, space or anything a server could read two ways).
pub(crate) fn is_plain_path_byte(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b"-._~!$&'()*+,=:@/".contains(&b)
}

/// A path of plain characters only: letters, digits, `-._~`, and `!$&'()*+,=:@`; no `%` escape
/// at all (what a server decodes differently, such as `%2e`, an overlong `%c0%ae` or a
/// fullwidth dot, cannot be checked here), no `;` (servlet containers read `..;` as `..`), no
/// space, and no segment that is empty or dots only (`.`, `..`, `...`).
fn is_plain_path(path: &str) -> bool {
    let Some(segments) = path.strip_prefix('/') else {
        return false;
    };
    let plain = path.bytes().all(is_plain_path_byte);
    // The last segment may be empty (`https://host/dir/`): a directory index is still a file.
    let segments = segments.strip_suffix('/').unwrap_or(segments);
    plain
        && (segments.is_empty()
            || segments
                .split('/')
                .all(|segment| !segment.is_empty() && !segment.bytes().all(|b| b == b'.')))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn list(prefixes: &[&str]) -> SourceList {
        SourceList::new(prefixes.iter().map(|p| (*p).to_owned()).collect()).expect("valid")
    }

    fn allowed(list: &SourceList, source: &str) -> bool {
        Source::parse(source).is_ok_and(|s| list.allows(&s))
    }

    #[test]
    fn sources_under_a_prefix_are_allowed_and_look_alikes_are_not() {
        let sources = list(&["https://images.example.org/gallery/", "https://example.com"]);
        for ok in [
            "https://images.example.org/gallery/pop-art.png",
            "https://IMAGES.example.org/gallery/a/b.jpg",
            "https://images.example.org:443/gallery/x.png",
            "https://example.com/anything.jpg",
        ] {
            assert!(allowed(&sources, ok), "{ok}");
        }
        for refused in [
            "http://images.example.org/gallery/pop-art.png",
            "https://images.example.org/galleryx/a.png",
            "https://images.example.org/other/a.png",
            "https://images.example.org.evil.net/gallery/a.png",
            "https://example.com.evil.net/a.png",
            "https://example.com@evil.net/a.png",
            "https://evil.net/https://example.com/a.png",
            "https://images.example.org:8443/gallery/a.png",
            "https://images.example.org/gallery/../secret.png",
            "https://images.example.org/gallery/%2e%2e/secret.png",
            "https://images.example.org/gallery/..%2Fsecret.png",
            "https://images.example.org/gallery%2F..%2Fx.png",
            "https://images.example.org/gallery/a%5c..%5cb.png",
            "https://images.example.org/gallery/a.png?x=1",
            "https://images.example.org/gallery/a.png#x",
            "https://images.example.org/gallery//a.png",
            "https://images.example.org\\gallery/a.png",
            "https://images.example.org/gallery/a b.png",
            "https://images.example.org/gallery/\"a.png",
            "https://images.example.org/gallery/a%252e.png",
            "https://images.example.org/gallery/..;/private/payroll.pdf",
            "https://images.example.org/gallery/.;/a.png",
            "https://images.example.org/gallery/%c0%ae%c0%ae/a.png",
            "https://images.example.org/gallery/%ef%bc%8e%ef%bc%8e/a.png",
            "https://images.example.org/gallery/..%20/a.png",
            "https://images.example.org/gallery/.../a.png",
            "https://images.example.org/gallery/my%20photo.png",
            "https://images.example.org/gallery/a;jsessionid=1.png",
            "ftp://images.example.org/gallery/a.png",
            "https://images.example.org",
        ] {
            assert!(!allowed(&sources, refused), "{refused}");
        }
        // http only where written.
        let plain = list(&["http://legacy.example.net/img/"]);
        assert!(allowed(&plain, "http://legacy.example.net/img/a.jpg"));
        assert!(!allowed(&plain, "https://legacy.example.net/img/a.jpg"));
        // A prefix without a trailing slash ends on a segment boundary.
        let exact = list(&["https://example.com/cat.jpg"]);
        assert!(allowed(&exact, "https://example.com/cat.jpg"));
        assert!(!allowed(&exact, "https://example.com/cat.jpg.evil"));
    }

    #[test]
    fn a_bad_prefix_is_named() {
        let error = SourceList::new(vec!["images.example.org/".into()]).expect_err("no scheme");
        assert!(error.starts_with("\"images.example.org/\": "), "{error}");
        assert!(SourceList::new(vec!["https://a@b/".into()]).is_err());
    }

    #[test]
    fn the_pattern_matches_the_source_only() {
        let source = Source::parse("https://example.com/images/cat.jpg").expect("plain");
        assert_eq!(
            source.url_pattern(),
            r"^https://example\.com/images/cat\.jpg$"
        );
        let odd = Source::parse("https://example.com/a+(b)*$.jpg").expect("plain");
        assert_eq!(
            odd.url_pattern(),
            r"^https://example\.com/a\+\(b\)\*\$\.jpg$"
        );
        assert!(Source::parse("https://example.com/[c].jpg").is_err());
    }

    #[test]
    fn sources_are_found_after_tasks_quoted_or_not() {
        assert_eq!(source_start("resize=width:300/https://a.b/c.jpg"), Some(17));
        assert_eq!(source_start("https://a.b/c.jpg"), Some(0));
        assert_eq!(
            source_start("resize=width:300/\"https://a.b/c.jpg\""),
            Some(17)
        );
        assert_eq!(
            source_start("resize=width:300/%22https://a.b/c.jpg%22"),
            Some(17)
        );
        assert_eq!(source_start("resize=width:300/KW9EJhYtS6y48Whm2S6D"), None);
        assert_eq!(
            unquote_source("\"https://a.b/c\""),
            Some(("https://a.b/c", true))
        );
        assert_eq!(
            unquote_source("%22https://a.b/c%22"),
            Some(("https://a.b/c", true))
        );
        assert_eq!(
            unquote_source("https://a.b/c"),
            Some(("https://a.b/c", false))
        );
        assert_eq!(unquote_source("\"https://a.b/c"), None);
    }
}
