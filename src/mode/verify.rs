//! verify mode: check the credentials a request carries, as the CDN would, in front of a
//! private origin (a file server, an S3-compatible store), and forward only valid requests,
//! without their credentials, streaming the answer back as proxy mode does.
//!
//! Every spelling the SDKs write is read ([`crate::verify::parse_url`]: query or task form,
//! short or long keys in either order, quoted values, either base64 alphabet). The checks, in
//! order, each with the name the access log and `signgate_verify_total` give its failure:
//! - `target`: the path is `[TASKS/]HANDLE` (400 otherwise: an external URL, metadata, an
//!   upload path, a task outside the task alphabet);
//! - `missing`, `malformed`: a policy and a signature, once each, the policy at most
//!   [`MAX_POLICY_LEN`] bytes;
//! - `signature`: HMAC-SHA256 of the policy string as sent, compared in constant time, under
//!   one of the secrets the route accepts now ([`accepted_secrets`]: during a rotation, the
//!   current and the next before `switch_at`, the next alone after it);
//! - `malformed`, `expired`, `handle`, `call`: the policy decodes, has not expired (give or take
//!   `expiry_grace`), names this handle if it names one, and grants `read`, and `convert` too
//!   when the URL has tasks;
//! - `path`, `container`: a policy's `path` pattern matches the file's path on the origin
//!   (`/HANDLE`), its `container` pattern the route's `origin_container`;
//! - `task`: every task is one the route's `tasks` list (none by default: a file server cannot
//!   transform).
//!
//! Only then is the origin asked, for a path built from the checked handle and tasks alone
//! (never the client's own bytes): `GET`/`HEAD` of `BASE[/TASKS]/HANDLE`, no query, the
//! allowlisted client headers of proxy mode. A [`VerifiedFile`] can only be made by
//! [`check`], so no other path leads to the origin.

use http::uri::PathAndQuery;
use http::{Request, StatusCode};
use hyper::body::Incoming;
use regex::RegexBuilder;

use super::proxy::{fetch_file, preflight_or_read};
use super::{Handled, RequestContext};
use crate::config::{Signing, VerifyChecks};
use crate::error::ProxyError;
use crate::filelink::{Handle, is_task};
use crate::policy::{Call, DecodedPolicy};
use crate::router::ActiveVerify;
use crate::secret::Secret;
use crate::tasks::TaskAllowlist;
use crate::verify::{Invalid, ParsedUrl, Target, check_policy, parse_url};

/// The longest policy string taken. The SDKs' policies are a few hundred bytes; a longer one is
/// refused before its HMAC is computed, so a request cannot make the route hash 64 KiB.
pub const MAX_POLICY_LEN: usize = 8 * 1024;

/// Most bytes of a `path` or `container` pattern's compiled program: patterns come from a
/// policy whose signature was checked, and are still held to a bound.
const PATTERN_SIZE_LIMIT: usize = 256 * 1024;

/// A check a request failed on a verify route: its name is the access log's `verify` field and
/// the `result` label of `signgate_verify_total`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Check {
    /// The path is not `[TASKS/]HANDLE`: 400.
    Target,
    /// No policy or no signature.
    Missing,
    /// Credentials given twice, a malformed `security=` task, a policy that is too long, not
    /// base64 or not a JSON object with an expiry.
    Malformed,
    /// The signature is not the HMAC of the policy under a secret the route accepts.
    Signature,
    /// The policy's expiry (plus `expiry_grace`) has passed: the route's `expired_status`.
    Expired,
    /// The policy names another handle.
    Handle,
    /// The policy does not grant `read`, or `convert` for a URL with tasks.
    Call,
    /// The policy's `path` does not match the file's path on the origin.
    Path,
    /// The policy's `container` does not match the route's `origin_container` (or the route
    /// names none).
    Container,
    /// A task the route's `tasks` do not list.
    Task,
}

impl Check {
    /// Every check, in label order after `valid` (the index plus one is the label's).
    pub const ALL: [Check; 10] = [
        Check::Target,
        Check::Missing,
        Check::Malformed,
        Check::Signature,
        Check::Expired,
        Check::Handle,
        Check::Call,
        Check::Path,
        Check::Container,
        Check::Task,
    ];

    /// The name logged and counted.
    pub fn as_str(self) -> &'static str {
        match self {
            Check::Target => "target",
            Check::Missing => "missing",
            Check::Malformed => "malformed",
            Check::Signature => "signature",
            Check::Expired => "expired",
            Check::Handle => "handle",
            Check::Call => "call",
            Check::Path => "path",
            Check::Container => "container",
            Check::Task => "task",
        }
    }
}

/// The outcome of a verify route's checks, carried in the response's extensions for the access
/// log and the metrics: `None` when every check passed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct VerifyMark(pub Option<Check>);

impl VerifyMark {
    /// `valid`, or the failed check's name.
    pub fn as_str(self) -> &'static str {
        self.0.map_or("valid", Check::as_str)
    }

    /// The index of this outcome among `valid` and [`Check::ALL`].
    pub fn index(self) -> usize {
        self.0.map_or(0, |check| check as usize + 1)
    }

    /// Every outcome's name, `valid` first, then each check's.
    pub fn labels() -> [&'static str; 11] {
        let mut labels = ["valid"; 11];
        for (slot, check) in labels.iter_mut().skip(1).zip(Check::ALL) {
            *slot = check.as_str();
        }
        labels
    }
}

/// Why a verify route refused a request: the check, and what the answer says.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Refused {
    /// The check that failed.
    pub check: Check,
    /// The file the URL names, once it is known to be a handle: the body names it, as the
    /// CDN's does.
    pub handle: Option<Handle>,
    /// The CDN's wording of the reason: fixed text, never a credential or the client's bytes.
    pub detail: &'static str,
    /// The route's `expired_status`, for [`Check::Expired`].
    pub expired_status: StatusCode,
}

impl Refused {
    /// The status: 400 for a path that names no file, the route's `expired_status` for an
    /// expired policy, 403 for every other refusal (as the CDN answers).
    pub fn status(&self) -> StatusCode {
        match self.check {
            Check::Target => StatusCode::BAD_REQUEST,
            Check::Expired => self.expired_status,
            Check::Missing
            | Check::Malformed
            | Check::Signature
            | Check::Handle
            | Check::Call
            | Check::Path
            | Check::Container
            | Check::Task => StatusCode::FORBIDDEN,
        }
    }

    /// The short body: `file HANDLE policy error: REASON`, as the CDN words it.
    pub fn body(&self) -> String {
        match self.handle {
            Some(handle) => format!("file {handle} policy error: {}\n", self.detail),
            None => format!("{}\n", self.detail),
        }
    }
}

/// A file whose credentials passed every check: made only by [`check`].
#[derive(Debug, PartialEq, Eq)]
pub struct VerifiedFile {
    handle: Handle,
    /// Transformation tasks the route passes on, each in the task alphabet.
    tasks: Vec<String>,
}

impl VerifiedFile {
    /// The path asked of the origin: its base path, the tasks, the handle; no query.
    pub fn origin_path(&self, base_path: &str) -> String {
        let mut path = String::with_capacity(base_path.len() + 64);
        path.push_str(base_path);
        for task in &self.tasks {
            path.push('/');
            path.push_str(task);
        }
        path.push('/');
        path.push_str(self.handle.as_str());
        path
    }
}

/// Serves `GET`/`HEAD PREFIX[TASKS/]HANDLE` with credentials: checks them ([`check`]) and
/// streams the file from the private origin, served as a proxy route serves files.
pub async fn handle(
    signing: &Signing,
    tasks: &TaskAllowlist,
    verify: &ActiveVerify,
    rest: &str,
    request: Request<Incoming>,
    ctx: RequestContext,
) -> Result<Handled, ProxyError> {
    let (parts, _body) = request.into_parts();
    if let Some(preflight) = preflight_or_read(&parts, &verify.serving.cors_origins)? {
        return Ok(preflight);
    }
    let file = check(
        rest,
        parts.uri.query(),
        signing,
        tasks,
        &verify.checks,
        ctx.now,
    )
    .map_err(|refused| ProxyError::Unverified(Box::new(refused)))?;
    // A checked handle and tasks in the task alphabet: always a valid path.
    let path = PathAndQuery::try_from(file.origin_path(verify.client.upstream().base_path()))
        .map_err(|_| ProxyError::BadTarget)?;
    let mut response = fetch_file(&verify.client, &verify.serving, &parts, path, &ctx).await?;
    response.extensions_mut().insert(VerifyMark(None));
    Ok(Handled {
        response,
        cache: None,
        tunnel: None,
    })
}

/// The secrets a URL may be signed with at `now`: every HMAC check of a verify route goes
/// through here. During a rotation (`secret_next_*` and `switch_at` in `[signing]`), the
/// current and the next secret before the switch, only the next after it; with a next secret
/// and no `switch_at`, both.
fn accepted_secrets(signing: &Signing, now: u64) -> impl Iterator<Item = &Secret> {
    signing.accepted_secrets(now).map(|(_, secret)| secret)
}

/// Checks the request `rest` (the path after the route's prefix) and `query` carry for a plain
/// read (or a read with the `tasks` the route passes on) at `now`: see the module
/// documentation for the checks and their order. Pure: no I/O, time is an argument.
pub fn check(
    rest: &str,
    query: Option<&str>,
    signing: &Signing,
    tasks: &TaskAllowlist,
    checks: &VerifyChecks,
    now: u64,
) -> Result<VerifiedFile, Refused> {
    let refuse = |check: Check, handle: Option<Handle>, detail: &'static str| Refused {
        check,
        handle,
        detail,
        expired_status: checks.expired_status,
    };
    let mut target = String::with_capacity(rest.len() + query.map_or(0, str::len) + 2);
    target.push('/');
    target.push_str(rest);
    if let Some(query) = query {
        target.push('?');
        target.push_str(query);
    }
    let parsed = match parse_url(&target) {
        Ok(parsed) => parsed,
        // Credentials given twice or a malformed `security=` task: the file is not known yet.
        Err(_) => return Err(refuse(Check::Malformed, None, "malformed credentials")),
    };
    let handle = file_of(&parsed).ok_or_else(|| {
        refuse(
            Check::Target,
            None,
            "bad request: not a file handle (expected [TASKS/]HANDLE)",
        )
    })?;
    let refuse = |check: Check, detail: &'static str| refuse(check, Some(handle), detail);
    let (policy, signature) = match (&parsed.policy, &parsed.signature) {
        (Some(policy), Some(signature)) => (policy, signature),
        (None, None) => {
            return Err(refuse(
                Check::Missing,
                "proper credentials were not provided: (signature: \"\"; policy \"\")",
            ));
        }
        _ => {
            return Err(refuse(
                Check::Missing,
                "proper credentials were not provided",
            ));
        }
    };
    if policy.len() > MAX_POLICY_LEN {
        return Err(refuse(Check::Malformed, "malformed credentials"));
    }
    if !accepted_secrets(signing, now).any(|secret| secret.verify_hex(policy.as_bytes(), signature))
    {
        return Err(refuse(Check::Signature, "bad signature"));
    }
    // Expired when `expiry + grace <= now`, as the CDN's `expiry <= now` with a grace.
    let judged_at = now.saturating_sub(checks.expiry_grace.as_secs());
    let decoded =
        check_policy(&parsed, judged_at, &parsed.needed_calls()).map_err(
            |invalid| match invalid {
                Invalid::Expired { .. } => refuse(Check::Expired, "policy expired"),
                Invalid::WrongHandle { .. } => {
                    refuse(Check::Handle, "policy is for another handle")
                }
                Invalid::CallNotAllowed(Call::Convert) => {
                    refuse(Check::Call, "call convert not allowed by the policy")
                }
                Invalid::CallNotAllowed(_) => {
                    refuse(Check::Call, "call read not allowed by the policy")
                }
                Invalid::Missing(_)
                | Invalid::Conflicting(_)
                | Invalid::MalformedTask
                | Invalid::BadSignature
                | Invalid::MalformedBase64
                | Invalid::NotJson(_)
                // External sources are refused before this (`file_of`).
                | Invalid::SourceNotMatched { .. } => refuse(Check::Malformed, "malformed policy"),
            },
        )?;
    check_limits(&decoded, handle, checks).map_err(|(check, detail)| refuse(check, detail))?;
    let task_names: Vec<&str> = parsed.tasks.iter().map(String::as_str).collect();
    if tasks.first_refused(&task_names).is_some() {
        return Err(refuse(Check::Task, "task not allowed on this route"));
    }
    Ok(VerifiedFile {
        handle,
        tasks: parsed.tasks,
    })
}

/// The handle a parsed URL reads, when it is `[TASKS/]HANDLE` with every task in the task
/// alphabet: not an external URL, not metadata, not an upload.
fn file_of(parsed: &ParsedUrl) -> Option<Handle> {
    if parsed.upload.is_some() || parsed.metadata {
        return None;
    }
    let Some(Target::Handle(text)) = &parsed.target else {
        return None;
    };
    let handle = Handle::parse(text).ok()?;
    parsed
        .tasks
        .iter()
        .all(|task| is_task(task))
        .then_some(handle)
}

/// A policy's `path` and `container`, where it has them: `path` must match the file's path on
/// the origin (`/HANDLE`), `container` the route's `origin_container`. Both are regular
/// expressions, matched anywhere as the CDN does; an invalid one refuses.
fn check_limits(
    decoded: &DecodedPolicy,
    handle: Handle,
    checks: &VerifyChecks,
) -> Result<(), (Check, &'static str)> {
    let matches = |pattern: &str, text: &str| {
        RegexBuilder::new(pattern)
            .size_limit(PATTERN_SIZE_LIMIT)
            .build()
            .is_ok_and(|regex| regex.is_match(text))
    };
    if let Some(path) = &decoded.limits.path {
        let file_path = format!("/{handle}");
        if !matches(path, &file_path) {
            return Err((Check::Path, "path not allowed by the policy"));
        }
    }
    if let Some(container) = &decoded.limits.container {
        let allowed = checks
            .origin_container
            .as_deref()
            .is_some_and(|name| matches(container, name));
        if !allowed {
            return Err((Check::Container, "container not allowed by the policy"));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;
    use crate::policy::{Policy, PolicyLimits};

    const H: &str = "KW9EJhYtS6y48Whm2S6D";
    const OTHER: &str = "CupXxkCQZ22cS5FdMSaB";
    const NOW: u64 = 1_000_000;

    fn signing(secret: &str) -> Signing {
        let toml = "[signing]\nsecret_env = \"S\"\n[[route]]\nname = \"v\"\nprefix = \"/\"\n\
                    mode = \"verify\"\nupstream = \"http://127.0.0.1:9\"\n";
        let config =
            crate::config::Config::from_toml_str(toml, |_| Some(secret.to_owned())).expect("valid");
        config.routes[0].signing.clone()
    }

    fn checks() -> VerifyChecks {
        VerifyChecks {
            expired_status: StatusCode::FORBIDDEN,
            expiry_grace: Duration::ZERO,
            origin_container: None,
        }
    }

    fn policy(calls: &[Call], handle: Option<&str>, limits: PolicyLimits) -> Policy {
        Policy {
            expiry: NOW + 60,
            call: calls.to_vec(),
            handle: handle.map(str::to_owned),
            limits,
        }
    }

    fn signed_query(policy: &Policy, secret: &str) -> String {
        let credentials = policy.sign(&Secret::new(secret.to_owned()).expect("not empty"));
        format!(
            "policy={}&signature={}",
            credentials.policy_for_query(),
            credentials.signature
        )
    }

    fn run(rest: &str, query: Option<&str>, tasks: &TaskAllowlist) -> Result<String, Check> {
        check(rest, query, &signing("s"), tasks, &checks(), NOW)
            .map(|file| file.origin_path("/base"))
            .map_err(|refused| refused.check)
    }

    #[test]
    fn a_valid_read_forwards_only_the_checked_handle() {
        let query = signed_query(
            &policy(&[Call::Read], Some(H), PolicyLimits::default()),
            "s",
        );
        let plain = TaskAllowlist::none();
        assert_eq!(run(H, Some(&query), &plain), Ok(format!("/base/{H}")));
        let extra = format!("{query}&dl=true&x=..%2F..%2Fetc");
        assert_eq!(run(H, Some(&extra), &plain), Ok(format!("/base/{H}")));
    }

    #[test]
    fn each_failure_names_its_check() {
        let plain = TaskAllowlist::none();
        let read = signed_query(
            &policy(&[Call::Read], Some(H), PolicyLimits::default()),
            "s",
        );
        let cases: Vec<(String, Option<String>, Check)> = vec![
            (H.into(), None, Check::Missing),
            (H.into(), Some(format!("{read}&policy=x")), Check::Malformed),
            (
                H.into(),
                Some(signed_query(
                    &policy(&[Call::Read], Some(H), PolicyLimits::default()),
                    "other",
                )),
                Check::Signature,
            ),
            (OTHER.into(), Some(read.clone()), Check::Handle),
            (format!("../{H}"), Some(read.clone()), Check::Target),
            (format!("{H}/metadata"), Some(read.clone()), Check::Target),
            ("short".into(), Some(read.clone()), Check::Target),
            (format!("resize=width:3/{H}"), Some(read), Check::Call),
            (
                H.into(),
                Some(format!(
                    "policy={}&signature=00",
                    "A".repeat(MAX_POLICY_LEN + 1)
                )),
                Check::Malformed,
            ),
        ];
        for (rest, query, expected) in cases {
            assert_eq!(
                run(&rest, query.as_deref(), &plain),
                Err(expected),
                "{rest} {query:?}"
            );
        }
    }

    #[test]
    fn tasks_need_convert_and_the_route_s_list() {
        let both = signed_query(
            &policy(
                &[Call::Read, Call::Convert],
                Some(H),
                PolicyLimits::default(),
            ),
            "s",
        );
        let rest = format!("resize=width:3/{H}");
        assert_eq!(
            run(&rest, Some(&both), &TaskAllowlist::none()),
            Err(Check::Task)
        );
        let resize = TaskAllowlist::parse(&["resize".into()]).expect("known");
        assert_eq!(
            run(&rest, Some(&both), &resize),
            Ok(format!("/base/resize=width:3/{H}"))
        );
        assert_eq!(
            run(&format!("flip/{H}"), Some(&both), &resize),
            Err(Check::Task)
        );
    }

    #[test]
    fn expiry_takes_the_grace_and_answers_the_configured_status() {
        let query = signed_query(
            &policy(&[Call::Read], Some(H), PolicyLimits::default()),
            "s",
        );
        let mut graced = checks();
        graced.expired_status = StatusCode::GONE;
        let at = |now: u64, checks: &VerifyChecks| {
            check(
                H,
                Some(&query),
                &signing("s"),
                &TaskAllowlist::none(),
                checks,
                now,
            )
        };
        assert!(at(NOW + 59, &graced).is_ok());
        let refused = at(NOW + 60, &graced).expect_err("expired at its expiry");
        assert_eq!(
            (refused.check, refused.status()),
            (Check::Expired, StatusCode::GONE)
        );
        graced.expiry_grace = Duration::from_secs(5);
        assert!(at(NOW + 64, &graced).is_ok());
        assert!(at(NOW + 65, &graced).is_err());
    }

    #[test]
    fn path_and_container_restrict_where_the_policy_has_them() {
        let plain = TaskAllowlist::none();
        let with = |path: Option<&str>, container: Option<&str>| {
            let limits = PolicyLimits {
                path: path.map(str::to_owned),
                container: container.map(str::to_owned),
                ..PolicyLimits::default()
            };
            signed_query(&policy(&[Call::Read], None, limits), "s")
        };
        assert!(run(H, Some(&with(Some(&format!("^/{H}$")), None)), &plain).is_ok());
        assert_eq!(
            run(H, Some(&with(Some("^/gallery/"), None)), &plain),
            Err(Check::Path)
        );
        assert_eq!(
            run(H, Some(&with(Some("("), None)), &plain),
            Err(Check::Path)
        );
        assert_eq!(
            run(H, Some(&with(None, Some("^photos$"))), &plain),
            Err(Check::Container)
        );
        let mut named = checks();
        named.origin_container = Some("photos".into());
        let query = with(None, Some("^photos$"));
        assert!(check(H, Some(&query), &signing("s"), &plain, &named, NOW).is_ok());
        named.origin_container = Some("private".into());
        assert!(check(H, Some(&query), &signing("s"), &plain, &named, NOW).is_err());
    }

    #[test]
    fn bodies_name_the_file_and_the_reason_only() {
        let refused = check(
            H,
            None,
            &signing("s"),
            &TaskAllowlist::none(),
            &checks(),
            NOW,
        )
        .expect_err("no credentials");
        assert_eq!(
            refused.body(),
            format!(
                "file {H} policy error: proper credentials were not provided: (signature: \"\"; policy \"\")\n"
            )
        );
        assert_eq!(refused.status(), StatusCode::FORBIDDEN);
        let labels = VerifyMark::labels();
        assert_eq!(labels[0], "valid");
        for check in Check::ALL {
            assert_eq!(labels[VerifyMark(Some(check)).index()], check.as_str());
        }
    }
}
