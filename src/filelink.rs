//! File references on the CDN (`[TASKS/]HANDLE`) and the signed URLs built from them.

use std::fmt;

use serde::Deserialize;

use crate::policy::{Call, Credentials};

/// Length of every CDN file handle.
pub const HANDLE_LEN: usize = 20;

/// A CDN file handle: exactly 20 characters of `[A-Za-z0-9_-]`.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Handle([u8; HANDLE_LEN]);

impl Handle {
    /// Checks and copies a handle.
    pub fn parse(text: &str) -> Result<Self, FileRefError> {
        let bytes: [u8; HANDLE_LEN] = text
            .as_bytes()
            .try_into()
            .map_err(|_| FileRefError::BadHandle)?;
        if bytes
            .iter()
            .all(|b| b.is_ascii_alphanumeric() || *b == b'_' || *b == b'-')
        {
            Ok(Self(bytes))
        } else {
            Err(FileRefError::BadHandle)
        }
    }

    /// The handle's text.
    pub fn as_str(&self) -> &str {
        std::str::from_utf8(&self.0).expect("a Handle holds ASCII, checked in Handle::parse")
    }
}

impl fmt::Debug for Handle {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Handle({})", self.as_str())
    }
}

impl fmt::Display for Handle {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Why a path is not a file reference.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum FileRefError {
    /// The last segment is not a 20-character handle.
    #[error("not a file handle")]
    BadHandle,
    /// A segment before the handle is not a transformation task.
    #[error("not a transformation task")]
    BadTask,
}

/// A file on the CDN as a client names it: transformation tasks, then the handle.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FileRef<'a> {
    /// Transformation tasks in order (`resize=width:300`), client credentials removed.
    pub tasks: Vec<&'a str>,
    /// The file.
    pub handle: Handle,
}

impl<'a> FileRef<'a> {
    /// Parses `[TASK/]...HANDLE`, the part of a request path after the route prefix.
    ///
    /// `security=` tasks are the client's own credentials: they are dropped, never forwarded.
    pub fn parse(path: &'a str) -> Result<Self, FileRefError> {
        let (tasks, handle) = match path.rsplit_once('/') {
            Some((tasks, handle)) => (Some(tasks), handle),
            None => (None, path),
        };
        let handle = Handle::parse(handle)?;
        let tasks = match tasks {
            None => Vec::new(),
            // `/HANDLE`: an empty segment is no task.
            Some("") => return Err(FileRefError::BadTask),
            Some(tasks) => parse_tasks(tasks)?,
        };
        Ok(Self { tasks, handle })
    }

    /// Whether the reference carries transformation tasks (which need the `convert` call).
    pub fn has_tasks(&self) -> bool {
        !self.tasks.is_empty()
    }

    /// The calls the CDN checks for this URL, and so all its policy grants: `read` for the file
    /// as stored, `read` and `convert` with transformation tasks (what
    /// [`crate::verify::ParsedUrl::needed_calls`] asks of a URL). A signature lifted from a
    /// bare URL then cannot run transformations.
    pub fn needed_calls(&self) -> &'static [Call] {
        if self.has_tasks() {
            &[Call::Read, Call::Convert]
        } else {
            &[Call::Read]
        }
    }
}

/// The transformation tasks in `text` (`resize=width:300/flip`, or empty), in order, with the
/// client's own credential tasks dropped; an error when a segment is not a task.
pub fn parse_tasks(text: &str) -> Result<Vec<&str>, FileRefError> {
    let mut kept = Vec::new();
    if text.is_empty() {
        return Ok(kept);
    }
    for task in text.split('/') {
        if !is_task(task) {
            return Err(FileRefError::BadTask);
        }
        if !is_credential_task(task) {
            kept.push(task);
        }
    }
    Ok(kept)
}

/// `path` without a leading `API_KEY/` segment when it starts with `api_key`'s: the form
/// `client.transform()` writes (`APIKEY/resize=…/HANDLE`). The same file either way.
pub fn strip_api_key<'a>(path: &'a str, api_key: Option<&str>) -> &'a str {
    api_key
        .and_then(|key| path.strip_prefix(key))
        .and_then(|rest| rest.strip_prefix('/'))
        .unwrap_or(path)
}

/// Whether a task segment is the `security=` task that carries credentials, in any case.
pub fn is_security_task(task: &str) -> bool {
    task.get(..9)
        .is_some_and(|name| name.eq_ignore_ascii_case("security="))
}

/// Whether a task could carry client credentials: `security=`, or any task whose name mentions
/// `security`, `policy` or `signature` in any case (`fsecurity=p:…,s:…` included). Dropped.
fn is_credential_task(task: &str) -> bool {
    let name = task
        .split_once('=')
        .map_or(task, |(name, _)| name)
        .to_ascii_lowercase();
    ["security", "policy", "signature"]
        .iter()
        .any(|word| name.contains(word))
}

/// A transformation task: a lowercase name, optionally `=` and parameters, in a strict alphabet.
///
/// Quotes, slashes, percent signs and spaces are refused, so a task cannot smuggle a URL or a
/// second path segment past the handle check.
pub(crate) fn is_task(task: &str) -> bool {
    let (name, params) = task.split_once('=').unwrap_or((task, ""));
    !name.is_empty()
        && name.len() <= 64
        && name.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_')
        && params.bytes().all(|b| {
            b.is_ascii_alphanumeric()
                || matches!(b, b':' | b',' | b'.' | b'_' | b'-' | b'[' | b']' | b'=')
        })
}

/// Removes every query parameter that could carry client credentials: any whose decoded name,
/// in any case, mentions `policy`, `signature` or `security`, or whose decoded value holds
/// `policy=`, `signature=` or `security=`. Only signgate signs.
pub fn strip_client_credentials(query: &str) -> String {
    query
        .split('&')
        .filter(|pair| {
            let (name, value) = pair.split_once('=').unwrap_or((pair, ""));
            let decode = |text: &str| {
                percent_encoding::percent_decode_str(text)
                    .decode_utf8_lossy()
                    .to_ascii_lowercase()
            };
            let (name, value) = (decode(name), decode(value));
            // A value hiding `policy=` behind an encoded `&` would be a second set to any
            // parser that decodes twice: it goes too.
            !pair.is_empty()
                && !["policy", "signature", "security"]
                    .iter()
                    .any(|banned| name.contains(banned) || value.contains(&format!("{banned}=")))
        })
        .collect::<Vec<_>>()
        .join("&")
}

/// `url` without any credentials it carries: credential query parameters (as
/// [`strip_client_credentials`]) and `security=`-like path segments. `None` when it carries none.
///
/// For URLs going back to a client from an upstream (`Location`, `Content-Location`): what the
/// gateway signed to fetch a file is never handed to whoever asked for it.
pub fn strip_url_credentials(url: &str) -> Option<String> {
    let (rest, fragment) = match url.split_once('#') {
        Some((rest, fragment)) => (rest, Some(fragment)),
        None => (url, None),
    };
    let (path, query) = match rest.split_once('?') {
        Some((path, query)) => (path, Some(query)),
        None => (rest, None),
    };
    let kept_query = query.map(strip_client_credentials);
    let mut segments = path.split('/');
    // The scheme and authority of an absolute URL are kept as they are.
    let mut out = String::with_capacity(url.len());
    let mut changed = kept_query.as_deref() != query;
    if let Some(first) = segments.next() {
        out.push_str(first);
    }
    for segment in segments {
        if segment.contains('=') && is_credential_task(segment) {
            changed = true;
            continue;
        }
        out.push('/');
        out.push_str(segment);
    }
    if !changed {
        return None;
    }
    if let Some(query) = kept_query.filter(|q| !q.is_empty()) {
        out.push('?');
        out.push_str(&query);
    }
    if let Some(fragment) = fragment {
        out.push('#');
        out.push_str(fragment);
    }
    Some(out)
}

/// Where a signed URL carries its credentials.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum UrlStyle {
    /// `HANDLE?policy=P&signature=S`
    Query,
    /// `security=p:P,s:S/HANDLE`
    Task,
}

/// Builds the signed URL for `file` under `base` (an origin such as `https://cdn.example.com`,
/// with no trailing slash), keeping the client's `query` (already stripped of credentials).
pub fn signed_url(
    base: &str,
    file: &FileRef<'_>,
    query: Option<&str>,
    credentials: &Credentials,
    style: UrlStyle,
) -> String {
    let mut url = String::with_capacity(base.len() + 48 + credentials.policy.len() * 2);
    url.push_str(base);
    for task in &file.tasks {
        url.push('/');
        url.push_str(task);
    }
    if style == UrlStyle::Task {
        url.push_str("/security=p:");
        url.push_str(&credentials.policy);
        url.push_str(",s:");
        url.push_str(&credentials.signature);
    }
    url.push('/');
    url.push_str(file.handle.as_str());
    let query = query.filter(|q| !q.is_empty());
    match style {
        UrlStyle::Query => {
            url.push('?');
            if let Some(query) = query {
                url.push_str(query);
                url.push('&');
            }
            url.push_str("policy=");
            url.push_str(&credentials.policy_for_query());
            url.push_str("&signature=");
            url.push_str(&credentials.signature);
        }
        UrlStyle::Task => {
            if let Some(query) = query {
                url.push('?');
                url.push_str(query);
            }
        }
    }
    url
}

#[cfg(test)]
mod tests {
    use super::*;

    const H: &str = "KW9EJhYtS6y48Whm2S6D";

    fn creds() -> Credentials {
        Credentials {
            policy: "eyJ9=".into(),
            signature: "ab12".into(),
            expiry: 1,
        }
    }

    #[test]
    fn handles_are_twenty_characters_of_the_handle_alphabet() {
        assert!(Handle::parse(H).is_ok());
        assert!(Handle::parse("abc_-ABC0123456789xy").is_ok());
        for bad in [
            "",
            "short",
            "KW9EJhYtS6y48Whm2S6DX",
            "KW9EJhYtS6y48Whm2S6.",
            "KW9EJhYtS6y48Whm2S%2",
        ] {
            assert_eq!(Handle::parse(bad), Err(FileRefError::BadHandle), "{bad}");
        }
    }

    #[test]
    fn parses_tasks_then_handle_and_drops_client_credentials() {
        let path = format!("resize=width:300/SECURITY=p:x,s:y/flip/fsecurity=p:x,s:y/policy=x/{H}");
        let file = FileRef::parse(&path).expect("parses");
        assert_eq!(file.tasks, vec!["resize=width:300", "flip"]);
        assert_eq!(file.handle.as_str(), H);
        assert!(file.has_tasks());
        assert!(!FileRef::parse(H).expect("bare handle").has_tasks());
    }

    #[test]
    fn a_url_needs_the_calls_the_cdn_checks_for_it_and_no_more() {
        for path in [H.to_owned(), format!("resize=width:300/flip/{H}")] {
            let file = FileRef::parse(&path).expect("parses");
            let parsed = crate::verify::parse_url(&format!("https://cdn/{path}")).expect("a URL");
            assert_eq!(file.needed_calls(), parsed.needed_calls(), "{path}");
        }
        assert_eq!(
            FileRef::parse(H).expect("bare").needed_calls(),
            [Call::Read]
        );
    }

    #[test]
    fn refuses_what_is_not_a_file_reference() {
        for bad in [
            "",
            "/",
            &format!("{H}/"),
            &format!("../{H}"),
            &format!("resize=width:300//{H}"),
            &format!("a%2Fb/{H}"),
            &format!("\"https:/{H}"),
            &format!("{H}/metadata"),
        ] {
            assert!(FileRef::parse(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn client_credentials_never_survive_in_the_query() {
        assert_eq!(
            strip_client_credentials(
                "dl=true&policy=x&Signature=y&POLICY=z&%70olicy=q&a=b&&x%20policy=1&security=p:1"
            ),
            "dl=true&a=b"
        );
        assert_eq!(strip_client_credentials("policy"), "");
    }

    #[test]
    fn query_style_appends_credentials_after_the_clients_query() {
        let path = format!("resize=width:300/{H}");
        let file = FileRef::parse(&path).expect("parses");
        assert_eq!(
            signed_url(
                "https://cdn",
                &file,
                Some("dl=true"),
                &creds(),
                UrlStyle::Query
            ),
            format!("https://cdn/resize=width:300/{H}?dl=true&policy=eyJ9%3D&signature=ab12")
        );
        assert_eq!(
            signed_url("https://cdn", &file, None, &creds(), UrlStyle::Query),
            format!("https://cdn/resize=width:300/{H}?policy=eyJ9%3D&signature=ab12")
        );
    }

    #[test]
    fn task_style_puts_security_after_the_transformations() {
        let path = format!("resize=width:300/{H}");
        let file = FileRef::parse(&path).expect("parses");
        assert_eq!(
            signed_url(
                "https://cdn",
                &file,
                Some("dl=true"),
                &creds(),
                UrlStyle::Task
            ),
            format!("https://cdn/resize=width:300/security=p:eyJ9=,s:ab12/{H}?dl=true")
        );
    }

    #[test]
    fn credentials_are_stripped_from_urls_going_back_to_clients() {
        assert_eq!(
            strip_url_credentials("https://cdn.x/H?dl=1&policy=P&signature=S#f").as_deref(),
            Some("https://cdn.x/H?dl=1#f")
        );
        assert_eq!(
            strip_url_credentials("/resize=w:3/security=p:P,s:S/H?signature=S").as_deref(),
            Some("/resize=w:3/H")
        );
        assert_eq!(
            strip_url_credentials("https://cdn.x/resize=w:3/H?dl=1"),
            None
        );
        assert_eq!(strip_url_credentials("/plain"), None);
    }
}
