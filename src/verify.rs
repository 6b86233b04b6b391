//! Verification of signed CDN URLs in every spelling the official SDKs write, as the CDN does.
//!
//! Used by the stand-in CDNs (tests and demo) and by `signgate explain`. Pure: time is an argument.

use percent_encoding::percent_decode_str;

use crate::policy::{Call, DecodeError, DecodedPolicy};
use crate::secret::Secret;

/// What a URL points at.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Target {
    /// A file handle (the last path segment).
    Handle(String),
    /// An external URL to transform (`…/"https://example.com/a.jpg"`).
    External(String),
}

/// The credentials and target read out of a URL, before any check.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct ParsedUrl {
    /// The policy string exactly as sent (percent-decoded, quotes removed).
    pub policy: Option<String>,
    /// The signature as sent.
    pub signature: Option<String>,
    /// Transformation tasks (`resize=width:300`), in order.
    pub tasks: Vec<String>,
    /// The file or external URL, if the path names one.
    pub target: Option<Target>,
    /// Whether the URL asks for the file's metadata (`HANDLE/metadata`), which is the `stat` call.
    pub metadata: bool,
    /// An upload through the store API (`/api/store/S3?…`): then `target` is `None`.
    pub upload: Option<Upload>,
}

/// An upload URL of the store API: `POST /api/store/LOCATION?key=…&path=…&policy=…&signature=…`.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Upload {
    /// The storage location, as the path names it (`S3`, `azure`, `gcs`, `dropbox`, `rackspace`).
    pub location: String,
    /// The `path` query parameter: where in the storage the file goes.
    pub path: Option<String>,
    /// The `container` query parameter: the bucket or container.
    pub container: Option<String>,
    /// The `filename` query parameter.
    pub filename: Option<String>,
    /// The `key` query parameter: the app's public API key.
    pub api_key: Option<String>,
}

impl ParsedUrl {
    /// The calls the CDN requires of the policy for this URL: `store` for an upload, `stat` for
    /// metadata, `read` for a download, and `convert` as well for transformation tasks or an
    /// external target.
    pub fn needed_calls(&self) -> Vec<Call> {
        if self.upload.is_some() {
            return vec![Call::Store];
        }
        // The CDN fetches an external source to transform it: `convert` alone (as the SDKs'
        // policies for one grant).
        if matches!(self.target, Some(Target::External(_))) {
            return vec![Call::Convert];
        }
        let base = if self.metadata {
            Call::Stat
        } else {
            Call::Read
        };
        self.with_convert(base)
    }

    /// `call`, and `convert` too when the URL transforms.
    fn with_convert(&self, call: Call) -> Vec<Call> {
        let mut calls = vec![call];
        if !self.tasks.is_empty() || matches!(self.target, Some(Target::External(_))) {
            calls.push(Call::Convert);
        }
        calls
    }

    /// The policy and signature, or which of them is missing.
    pub fn credentials(&self) -> Result<(&str, &str), Invalid> {
        let policy = self.policy.as_deref().ok_or(Invalid::Missing("policy"))?;
        let signature = self
            .signature
            .as_deref()
            .ok_or(Invalid::Missing("signature"))?;
        Ok((policy, signature))
    }
}

/// Why a URL's credentials are not valid. Messages are safe to show: no secret, no signature.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Invalid {
    /// No policy or no signature.
    #[error("credentials missing: {0}")]
    Missing(&'static str),
    /// Two sets of credentials, or one parameter given twice.
    #[error("conflicting credentials: {0} given more than once")]
    Conflicting(&'static str),
    /// The security task is not `key:value` pairs.
    #[error("malformed security task")]
    MalformedTask,
    /// The signature is not the HMAC of the policy string under this secret.
    #[error("bad signature")]
    BadSignature,
    /// The policy string is not base64.
    #[error("malformed policy: not base64")]
    MalformedBase64,
    /// The policy is base64 but not a JSON object with an expiry.
    #[error("malformed policy: {0}")]
    NotJson(String),
    /// The policy's expiry is not after `now`.
    #[error("expired at {expiry} ({ago}s ago)")]
    Expired {
        /// The policy's expiry.
        expiry: u64,
        /// How long ago, in seconds.
        ago: u64,
    },
    /// The policy names another handle than the URL's.
    #[error("policy is for handle {policy:?}, URL asks for {url:?}")]
    WrongHandle {
        /// The policy's handle.
        policy: String,
        /// The URL's handle (or external URL).
        url: String,
    },
    /// The policy's `call` list does not include a call the URL needs.
    #[error("call {0} not allowed by the policy")]
    CallNotAllowed(Call),
    /// The policy's `url` pattern does not match the URL's external source (or is not a
    /// regular expression).
    #[error("policy url {pattern:?} does not match the source {url:?}")]
    SourceNotMatched {
        /// The policy's `url`.
        pattern: String,
        /// The URL's external source.
        url: String,
    },
}

impl From<DecodeError> for Invalid {
    fn from(e: DecodeError) -> Self {
        match e {
            DecodeError::Base64 => Invalid::MalformedBase64,
            DecodeError::Json(m) => Invalid::NotJson(m),
        }
    }
}

/// Reads the credentials and target out of a URL or a path (`/HANDLE?policy=…`), any spelling:
/// query or task form, short or long task keys in either order, quoted values, either alphabet.
pub fn parse_url(url: &str) -> Result<ParsedUrl, Invalid> {
    let path_and_query = strip_origin(url);
    let (path, query) = split_query(path_and_query);
    // The fragment never reaches the CDN.
    let query = query.map(|q| q.split_once('#').map_or(q, |(q, _)| q));
    let path = path.split_once('#').map_or(path, |(p, _)| p);
    let mut parsed = ParsedUrl::default();
    // Read for every URL, kept only for an upload.
    let mut upload = Upload::default();

    if let Some(query) = query {
        for pair in query.split('&').filter(|p| !p.is_empty()) {
            let (name, value) = pair.split_once('=').unwrap_or((pair, ""));
            let value = percent_decode_str(value).decode_utf8_lossy().into_owned();
            match percent_decode_str(name).decode_utf8_lossy().as_ref() {
                "policy" => set_once(&mut parsed.policy, value, "policy")?,
                "signature" => set_once(&mut parsed.signature, value, "signature")?,
                "path" => upload.path = Some(value),
                "container" => upload.container = Some(value),
                "filename" => upload.filename = Some(value),
                "key" => upload.api_key = Some(value),
                _ => {}
            }
        }
    }

    let path = percent_decode_str(path).decode_utf8_lossy();
    // An external source runs to the end of the path, slashes and all (`…/https://a.b/c.jpg`).
    let (path, external) = match crate::external::source_start(path.trim_start_matches('/')) {
        Some(start) => {
            let start = start + (path.len() - path.trim_start_matches('/').len());
            (&path[..start], Some(unquote(&path[start..]).to_owned()))
        }
        None => (&path[..], None),
    };
    let mut segments = Vec::new();
    for segment in split_outside_quotes(path, '/') {
        if crate::filelink::is_security_task(segment) {
            read_security_task(&segment["security=".len()..], &mut parsed)?;
        } else if !segment.is_empty() {
            segments.push(segment);
        }
    }

    if let ["api", "store", location] = segments[..] {
        upload.location = location.to_owned();
        parsed.upload = Some(upload);
        return Ok(parsed);
    }
    if segments.last() == Some(&"metadata") && segments.len() >= 2 {
        parsed.metadata = true;
        segments.pop();
    }
    if let Some(source) = external {
        parsed.target = Some(Target::External(source));
    } else if let Some(last) = segments.pop() {
        parsed.target = Some(if last.starts_with('"') || last.contains("://") {
            Target::External(unquote(last).to_owned())
        } else {
            Target::Handle(last.to_owned())
        });
    }
    // An API key may stand first (`/APIKEY/resize=…/HANDLE`). Task names are lowercase words;
    // keys are long and mixed-case.
    if segments
        .first()
        .is_some_and(|first| looks_like_api_key(first))
    {
        segments.remove(0);
    }
    parsed.tasks = segments.into_iter().map(str::to_owned).collect();
    Ok(parsed)
}

/// Checks a URL's credentials for `call` at time `now`, as the CDN would.
///
/// `Call::Read` stands for "what the URL asks for" ([`ParsedUrl::needed_calls`]): `stat` for a
/// metadata URL, `store` for an upload. Transformation tasks or an external target also need
/// `convert`. On success, returns the decoded policy (for size or path checks).
pub fn verify_at(
    url: &str,
    secret: &Secret,
    now: u64,
    call: Call,
) -> Result<DecodedPolicy, Invalid> {
    let parsed = parse_url(url)?;
    let needed = if call == Call::Read {
        parsed.needed_calls()
    } else {
        parsed.with_convert(call)
    };
    verify_parsed(&parsed, secret, now, &needed)
}

/// Checks already-parsed credentials for every call in `needed` at time `now`.
pub fn verify_parsed(
    parsed: &ParsedUrl,
    secret: &Secret,
    now: u64,
    needed: &[Call],
) -> Result<DecodedPolicy, Invalid> {
    let (policy, signature) = parsed.credentials()?;
    if !secret.verify_hex(policy.as_bytes(), signature) {
        return Err(Invalid::BadSignature);
    }
    check_policy(parsed, now, needed)
}

/// Everything [`verify_parsed`] checks except the signature: the policy decodes, has not expired,
/// names the URL's handle (when it names one) and grants every call in `needed`. For looking at
/// a URL without the secret; a pass here says nothing about who wrote the policy.
pub fn check_policy(
    parsed: &ParsedUrl,
    now: u64,
    needed: &[Call],
) -> Result<DecodedPolicy, Invalid> {
    let policy = parsed.policy.as_deref().ok_or(Invalid::Missing("policy"))?;
    let decoded = DecodedPolicy::decode(policy)?;
    if decoded.expiry <= now {
        return Err(Invalid::Expired {
            expiry: decoded.expiry,
            ago: now - decoded.expiry,
        });
    }
    if let Some(policy_handle) = &decoded.handle {
        let url_target = match &parsed.target {
            Some(Target::Handle(h)) | Some(Target::External(h)) => h.as_str(),
            None => "",
        };
        let matches = matches!(&parsed.target, Some(Target::Handle(h)) if h == policy_handle)
            || parsed.target.is_none();
        if !matches {
            return Err(Invalid::WrongHandle {
                policy: policy_handle.clone(),
                url: url_target.to_owned(),
            });
        }
    }
    if let (Some(pattern), Some(Target::External(source))) = (&decoded.limits.url, &parsed.target)
        && !url_pattern_matches(pattern, source)
    {
        return Err(Invalid::SourceNotMatched {
            pattern: pattern.clone(),
            url: source.clone(),
        });
    }
    if let Some(&refused) = needed.iter().find(|&&call| !decoded.allows(call)) {
        return Err(Invalid::CallNotAllowed(refused));
    }
    Ok(decoded)
}

/// Whether a policy's `url` pattern allows `source`, as the CDN reads it: a regular expression
/// found anywhere in the source unless anchored (the docs' `https://upload\\.wikimedia\\.org/…`
/// is not). signgate's own patterns are anchored at both ends. A pattern that is not a regular
/// expression allows nothing.
pub fn url_pattern_matches(pattern: &str, source: &str) -> bool {
    regex::Regex::new(pattern).is_ok_and(|pattern| pattern.is_match(source))
}

fn set_once(slot: &mut Option<String>, value: String, name: &'static str) -> Result<(), Invalid> {
    if slot.is_some() {
        return Err(Invalid::Conflicting(name));
    }
    *slot = Some(value);
    Ok(())
}

/// Reads `p:P,s:S` (or `policy:`/`signature:`, any order, values optionally quoted).
fn read_security_task(body: &str, parsed: &mut ParsedUrl) -> Result<(), Invalid> {
    for pair in split_outside_quotes(body, ',') {
        let (key, value) = pair.split_once(':').ok_or(Invalid::MalformedTask)?;
        let value = unquote(value).to_owned();
        match key {
            "p" | "policy" => set_once(&mut parsed.policy, value, "policy")?,
            "s" | "signature" => set_once(&mut parsed.signature, value, "signature")?,
            _ => return Err(Invalid::MalformedTask),
        }
    }
    Ok(())
}

fn looks_like_api_key(segment: &str) -> bool {
    segment.len() >= 10
        && segment
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_')
        && segment
            .bytes()
            .any(|b| b.is_ascii_uppercase() || b.is_ascii_digit())
}

fn unquote(value: &str) -> &str {
    value
        .strip_prefix('"')
        .and_then(|v| v.strip_suffix('"'))
        .unwrap_or(value)
}

fn strip_origin(url: &str) -> &str {
    match url.split_once("://") {
        Some((scheme, rest)) if !scheme.contains(['/', '"', '?']) => {
            rest.find('/').map_or("/", |slash| &rest[slash..])
        }
        _ => url,
    }
}

/// Splits at the first `?` that is not inside double quotes.
fn split_query(url: &str) -> (&str, Option<&str>) {
    let mut quoted = false;
    for (i, c) in url.char_indices() {
        match c {
            '"' => quoted = !quoted,
            '?' if !quoted => return (&url[..i], Some(&url[i + 1..])),
            _ => {}
        }
    }
    (url, None)
}

fn split_outside_quotes(text: &str, separator: char) -> Vec<&str> {
    let mut parts = Vec::new();
    let mut quoted = false;
    let mut start = 0;
    for (i, c) in text.char_indices() {
        if c == '"' {
            quoted = !quoted;
        } else if c == separator && !quoted {
            parts.push(&text[start..i]);
            start = i + c.len_utf8();
        }
    }
    parts.push(&text[start..]);
    parts
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::policy::Policy;

    const H: &str = "KW9EJhYtS6y48Whm2S6D";

    fn secret() -> Secret {
        Secret::new("s3cr3t".into()).expect("not empty")
    }

    fn signed(policy: &Policy) -> (String, String) {
        let c = policy.sign(&secret());
        (c.policy, c.signature)
    }

    fn read_policy() -> Policy {
        Policy {
            expiry: 1000,
            call: vec![Call::Read],
            handle: Some(H.into()),
            ..Policy::default()
        }
    }

    #[test]
    fn accepts_query_and_both_task_spellings() {
        let (p, s) = signed(&read_policy());
        let pq = p.replace('=', "%3D");
        for url in [
            format!("https://cdn.example/{H}?policy={pq}&signature={s}"),
            format!("/{H}?dl=true&signature={s}&policy={p}"),
            format!("https://cdn.example/security=p:{p},s:{s}/{H}"),
            format!("https://cdn.example/security=signature:{s},policy:\"{p}\"/{H}"),
            format!("https://cdn.example/APIKEY12345/security=policy:{p},signature:{s}/{H}"),
        ] {
            assert!(verify_at(&url, &secret(), 999, Call::Read).is_ok(), "{url}");
        }
    }

    #[test]
    fn names_each_failure() {
        let (p, s) = signed(&read_policy());
        let check = |url: String, now| verify_at(&url, &secret(), now, Call::Read);
        assert_eq!(check(format!("/{H}"), 0), Err(Invalid::Missing("policy")));
        assert_eq!(
            check(format!("/{H}?policy={p}"), 0),
            Err(Invalid::Missing("signature"))
        );
        assert_eq!(
            check(format!("/{H}?policy={p}&policy={p}&signature={s}"), 0),
            Err(Invalid::Conflicting("policy"))
        );
        assert_eq!(
            check(format!("/security=p:{p},s:{s}/{H}?policy={p}"), 0),
            Err(Invalid::Conflicting("policy"))
        );
        assert_eq!(
            check(format!("/{H}?policy={p}&signature={}", "0".repeat(64)), 0),
            Err(Invalid::BadSignature)
        );
        assert_eq!(
            check(format!("/{H}?policy={p}&signature={s}"), 1000),
            Err(Invalid::Expired {
                expiry: 1000,
                ago: 0
            })
        );
        assert!(matches!(
            check(format!("/AAAAAAAAAAAAAAAAAAAA?policy={p}&signature={s}"), 0),
            Err(Invalid::WrongHandle { .. })
        ));
        assert_eq!(
            check(format!("/resize=width:3/{H}?policy={p}&signature={s}"), 0),
            Err(Invalid::CallNotAllowed(Call::Convert))
        );
        assert_eq!(
            check(format!("/{H}/metadata?policy={p}&signature={s}"), 0),
            Err(Invalid::CallNotAllowed(Call::Stat))
        );
        let garbage = secret().sign_hex(b"!!notbase64");
        assert_eq!(
            check(format!("/{H}?policy=!!notbase64&signature={garbage}"), 0),
            Err(Invalid::MalformedBase64)
        );
        assert_eq!(
            check(format!("/security=x:1/{H}"), 0),
            Err(Invalid::MalformedTask)
        );
    }

    #[test]
    fn a_policy_without_handle_or_call_allows_any() {
        let (p, s) = signed(&Policy {
            expiry: 10,
            ..Policy::default()
        });
        let url = format!("/resize=width:3/{H}?policy={p}&signature={s}");
        assert!(verify_at(&url, &secret(), 0, Call::Read).is_ok());
    }

    #[test]
    fn upload_urls_name_their_storage_and_need_store() {
        let parsed = parse_url(
            "https://www.filestackapi.com/api/store/S3?key=AhTgLagciQByzXpFGRI0Az&policy=p&signature=s&path=%2Fgallery%2F&filename=a.png",
        )
        .expect("parses");
        assert_eq!(parsed.target, None);
        assert!(parsed.tasks.is_empty());
        assert_eq!(
            parsed.upload,
            Some(Upload {
                location: "S3".into(),
                path: Some("/gallery/".into()),
                container: None,
                filename: Some("a.png".into()),
                api_key: Some("AhTgLagciQByzXpFGRI0Az".into()),
            })
        );
        assert_eq!(parsed.needed_calls(), vec![Call::Store]);

        let (p, s) = signed(&read_policy());
        let store = format!("/api/store/S3?policy={p}&signature={s}");
        assert_eq!(
            verify_at(&store, &secret(), 0, Call::Read),
            Err(Invalid::CallNotAllowed(Call::Store))
        );
        let (p, s) = signed(&Policy {
            expiry: 10,
            call: vec![Call::Pick, Call::Store],
            ..Policy::default()
        });
        let store = format!("/api/store/S3?policy={p}&signature={s}");
        assert!(verify_at(&store, &secret(), 0, Call::Read).is_ok());
    }

    #[test]
    fn each_url_needs_the_calls_the_cdn_asks_for() {
        let needed = |url: &str| parse_url(url).expect("parses").needed_calls();
        assert_eq!(needed(&format!("/{H}")), vec![Call::Read]);
        assert_eq!(
            needed(&format!("/resize=width:3/{H}")),
            vec![Call::Read, Call::Convert]
        );
        assert_eq!(needed(&format!("/{H}/metadata")), vec![Call::Stat]);
        assert_eq!(needed("/api/store/azure"), vec![Call::Store]);
    }

    #[test]
    fn policy_checks_run_without_the_secret() {
        let (p, _) = signed(&read_policy());
        let parsed = parse_url(&format!("/resize=width:3/{H}?policy={p}")).expect("parses");
        assert_eq!(
            check_policy(&parsed, 0, &parsed.needed_calls()),
            Err(Invalid::CallNotAllowed(Call::Convert))
        );
        assert_eq!(
            check_policy(&parsed, 0, &[Call::Read]).map(|d| d.expiry),
            Ok(1000)
        );
        assert!(matches!(
            check_policy(&parsed, 1000, &[Call::Read]),
            Err(Invalid::Expired { .. })
        ));
    }

    #[test]
    fn reads_quoted_external_targets() {
        let parsed = parse_url(
            "https://cdn.example/MY_API_KEY/resize=width:300/security=p:x,s:y/\"https://example.com/a.jpg?x=1\"",
        )
        .expect("parses");
        assert_eq!(parsed.tasks, vec!["resize=width:300".to_owned()]);
        assert_eq!(
            parsed.target,
            Some(Target::External("https://example.com/a.jpg?x=1".into()))
        );
        assert_eq!(parsed.policy.as_deref(), Some("x"));
    }
}
