//! `signgate explain`: decode a CDN URL, say what it asks for and what its policy grants, and
//! check its signature when a secret is at hand.
//!
//! The secret comes from `--secret-env VAR` or `--secret-file FILE` (never from the command line
//! itself), or else from the config's routes (`--config F`, or `gateway.toml` when there is one).
//! Without a secret the URL is still decoded and every check but the signature is made; the
//! output says the signature was not checked, and why.
//!
//! Exit codes:
//! - 0: valid: the signature matches a secret, the policy has not expired, and it grants every
//!   call the URL needs (`read`; `convert` too with transformation tasks; `stat` for metadata;
//!   `store` for an upload).
//! - 1: not shown valid: credentials missing or malformed, a bad signature, expired, for another
//!   handle, short of a call, or no secret to check the signature with.
//! - 2: the input is not a URL, or a usage or config error.

use std::cell::RefCell;
use std::fmt::{Display, Write as _};
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::{Duration, UNIX_EPOCH};

use super::explain_scheme::{self, SchemeRoutes};
use super::{DEFAULT_CONFIG, EXIT_INVALID, EXIT_OK, EXIT_USAGE};
use crate::clock::{Clock, SystemClock};
use crate::config::Config;
use crate::policy::{Call, DecodedPolicy};
use crate::secret::Secret;
use crate::verify::{Invalid, ParsedUrl, Target, check_policy, parse_url, url_pattern_matches};

/// The exit codes, for `--help`.
pub const EXIT_CODES: &str = "Exit codes: 0 valid (signature checked); 1 credentials missing or \
invalid, or the signature not checked for want of a secret; 2 not a URL, or a usage or config error.";

/// `signgate explain` arguments.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// The URL (or path and query) to explain, or an Akamai token as a cookie carries it
    /// (`hdnts=TOKEN`, or the token alone). Quote it: the shell cuts an unquoted URL at `&`.
    pub url: String,
    /// Check the signature with the secret in this environment variable, instead of a config's.
    #[arg(long, value_name = "VAR", conflicts_with = "secret_file")]
    pub secret_env: Option<String>,
    /// Check the signature with the secret in this file (a final newline is ignored).
    #[arg(long, value_name = "FILE")]
    pub secret_file: Option<PathBuf>,
}

/// Explains `args.url` with the secrets of `config` (`--config`; default `gateway.toml` if it
/// exists) or of `--secret-env`/`--secret-file`, and returns the exit code (see the module doc).
pub fn run(args: &Args, config: Option<&Path>) -> ExitCode {
    let input = match Input::read(&args.url) {
        Ok(input) => input,
        Err(e) => {
            eprintln!("signgate: {e}");
            return ExitCode::from(EXIT_USAGE);
        }
    };
    let keys = match Keys::from_args(args, config) {
        Ok(keys) => keys,
        Err(e) => {
            eprintln!("signgate: {e}");
            return ExitCode::from(EXIT_USAGE);
        }
    };
    let report = explain(&input, &keys, SystemClock.now_unix());
    print!("{}", report.text);
    ExitCode::from(report.code)
}

/// The input, read as a URL, and what had to be done to read it.
#[derive(Debug, PartialEq, Eq)]
struct Input {
    url: String,
    notes: Vec<&'static str>,
}

/// Why the input is not a URL at all (exit 2).
#[derive(Debug, PartialEq, Eq, thiserror::Error)]
enum NotUrl {
    #[error("not a URL: the input is empty")]
    Empty,
    #[error(
        "not a URL: expected https://HOST/…, HOST/…, a path starting with /, or an Akamai token"
    )]
    Shape,
    #[error("not a URL: {0}:// is not http or https")]
    Scheme(String),
    #[error("not a URL: no host after {0}://")]
    NoHost(String),
    #[error("not a URL: it holds a space or a control character")]
    Whitespace,
}

impl Input {
    fn read(raw: &str) -> Result<Self, NotUrl> {
        let text = raw.trim();
        let mut notes = Vec::new();
        let mut url = if let Some((scheme, rest)) = text.split_once("://") {
            if !scheme.eq_ignore_ascii_case("http") && !scheme.eq_ignore_ascii_case("https") {
                return Err(NotUrl::Scheme(scheme.chars().take(20).collect()));
            }
            if rest
                .split(['/', '?', '#'])
                .next()
                .unwrap_or_default()
                .is_empty()
            {
                return Err(NotUrl::NoHost(scheme.to_owned()));
            }
            text.to_owned()
        } else if text.starts_with('/') {
            text.to_owned()
        } else if text.is_empty() {
            return Err(NotUrl::Empty);
        } else if explain_scheme::is_token_text(text) {
            // An Akamai token from a cookie, read by `explain_scheme::explain_token`; what
            // follows a `;` is the attributes of a pasted `Set-Cookie`.
            text.split(';').next().unwrap_or(text).trim().to_owned()
        } else if text
            .split_once('/')
            .is_some_and(|(host, _)| looks_like_host(host))
        {
            notes.push("no scheme: read as https://");
            format!("https://{text}")
        } else {
            return Err(NotUrl::Shape);
        };
        if url.chars().any(|c| c.is_whitespace() || c.is_control()) {
            return Err(NotUrl::Whitespace);
        }
        if url.contains("&amp;") {
            // HTML source writes `&` as `&amp;` inside attributes; view-source copies keep it.
            notes.push("the URL holds `&amp;`, as HTML source writes `&`: read as `&`");
            url = url.replace("&amp;", "&");
        }
        Ok(Self { url, notes })
    }
}

/// `cdn.example.com`, `localhost:8080`, `127.0.0.1:3000`: enough to tell a scheme-less URL from
/// random text.
fn looks_like_host(text: &str) -> bool {
    let (name, port) = text.split_once(':').unwrap_or((text, ""));
    !name.is_empty()
        && (name.contains('.') || name.eq_ignore_ascii_case("localhost"))
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'.' || b == b'-')
        && port.bytes().all(|b| b.is_ascii_digit())
}

/// The secrets a signature is checked with, each named for the output, and why others are not
/// at hand.
#[derive(Debug, Default)]
struct Keys {
    secrets: Vec<(String, Secret)>,
    unavailable: Vec<String>,
    /// The routes that sign with another scheme, for URLs of those schemes.
    schemes: SchemeRoutes,
}

impl Keys {
    fn from_args(args: &Args, config: Option<&Path>) -> Result<Self, String> {
        if config.is_some() && (args.secret_env.is_some() || args.secret_file.is_some()) {
            return Err(
                "give --config or --secret-env/--secret-file, not both: the secret comes from one"
                    .into(),
            );
        }
        if let Some(var) = &args.secret_env {
            let value = std::env::var(var)
                .map_err(|_| format!("--secret-env: environment variable {var} is not set"))?;
            return Self::one(format!("the secret in {var}"), value)
                .map_err(|()| format!("--secret-env: environment variable {var} is empty"));
        }
        if let Some(file) = &args.secret_file {
            let text = std::fs::read_to_string(file)
                .map_err(|e| format!("--secret-file: cannot read {}: {e}", file.display()))?;
            let text = text.strip_suffix('\n').unwrap_or(&text);
            let text = text.strip_suffix('\r').unwrap_or(text);
            return Self::one(format!("the secret in {}", file.display()), text.to_owned())
                .map_err(|()| format!("--secret-file: {} is empty", file.display()));
        }
        let path = config.unwrap_or(Path::new(DEFAULT_CONFIG));
        match std::fs::read_to_string(path) {
            Ok(text) => Self::from_config(&text).map_err(|e| format!("{}: {e}", path.display())),
            Err(e) if config.is_none() && e.kind() == std::io::ErrorKind::NotFound => Ok(Self {
                secrets: Vec::new(),
                unavailable: vec![format!(
                    "no secret: no --secret-env or --secret-file, and no {DEFAULT_CONFIG} here"
                )],
                schemes: SchemeRoutes::default(),
            }),
            Err(e) => Err(format!("cannot read {}: {e}", path.display())),
        }
    }

    fn one(name: String, secret: String) -> Result<Self, ()> {
        let secret = Secret::new(secret).map_err(|_| ())?;
        Ok(Self {
            secrets: vec![(name, secret)],
            unavailable: Vec::new(),
            schemes: SchemeRoutes::default(),
        })
    }

    /// Every route's secret, in route order. A `secret_env` variable that is not set in this
    /// shell does not stop the config from loading: it is named in `unavailable`.
    fn from_config(text: &str) -> Result<Self, crate::config::ConfigError> {
        let unset = RefCell::new(Vec::<String>::new());
        let config = Config::from_toml_str(text, |var| {
            std::env::var(var).ok().or_else(|| {
                unset.borrow_mut().push(var.to_owned());
                Some(stand_in(var))
            })
        })?;
        // A route whose secret is a stand-in signs a probe as the stand-in does.
        const PROBE: &[u8] = b"signgate explain probe";
        let unset: Vec<(String, String)> = unset
            .into_inner()
            .into_iter()
            .filter_map(|var| {
                let probe = Secret::new(stand_in(&var)).ok()?.sign_hex(PROBE);
                Some((var, probe))
            })
            .collect();
        let mut keys = Self {
            schemes: SchemeRoutes::of(&config),
            ..Self::default()
        };
        let mut routes_per_var: Vec<(&str, Vec<&str>)> = Vec::new();
        for route in &config.routes {
            let next = route.signing.rotation.next().map(|next| {
                let whose = format!("route `{}`'s next secret (`secret_next_*`)", route.name);
                (whose, next)
            });
            let current = (
                format!("route `{}`'s secret", route.name),
                &route.signing.secret,
            );
            for (whose, secret) in std::iter::once(current).chain(next) {
                let probe = secret.sign_hex(PROBE);
                match unset.iter().find(|(_, p)| *p == probe) {
                    Some((var, _)) => match routes_per_var.iter_mut().find(|(v, _)| v == var) {
                        Some((_, routes)) => routes.push(&route.name),
                        None => routes_per_var.push((var, vec![&route.name])),
                    },
                    None => keys.secrets.push((whose, secret.clone())),
                }
            }
        }
        for (var, routes) in routes_per_var {
            let routes = routes
                .iter()
                .map(|r| format!("`{r}`"))
                .collect::<Vec<_>>()
                .join(", ");
            let s = if routes.contains(',') { "s" } else { "" };
            keys.unavailable.push(format!(
                "{var} is not set in this shell (route{s} {routes}): set it, or pass \
                 --secret-env VAR or --secret-file FILE"
            ));
        }
        Ok(keys)
    }
}

/// A value that stands in for an unset secret variable, so the rest of the config still loads.
fn stand_in(var: &str) -> String {
    format!("signgate explain: {var} is not set")
}

/// What to print and the exit code.
#[derive(Debug)]
struct Report {
    text: String,
    code: u8,
}

impl Report {
    fn line(&mut self, label: &str, value: impl Display) {
        let label = format!("{label}:");
        // Writing to a String cannot fail.
        let _ = writeln!(self.text, "{label:<15}{value}");
    }

    fn invalid(mut self, reason: impl Display) -> Self {
        self.line("valid", format_args!("no: {reason}"));
        self.code = EXIT_INVALID;
        self
    }
}

/// Decodes `input`, checks it with `keys` at `now`, and says what it found.
fn explain(input: &Input, keys: &Keys, now: u64) -> Report {
    let mut report = Report {
        text: String::new(),
        code: EXIT_INVALID,
    };
    for note in &input.notes {
        report.line("note", note);
    }
    let scheme = explain_scheme::explain_token(&input.url, &keys.schemes, now)
        .or_else(|| explain_scheme::explain(&input.url, &keys.schemes, now));
    if let Some(scheme) = scheme {
        for (label, value) in &scheme.lines {
            report.line(label, value);
        }
        if scheme.valid == Some(true) {
            report.code = EXIT_OK;
        }
        return report;
    }
    let parsed = match parse_url(&input.url) {
        Ok(parsed) => parsed,
        Err(reason) => return report.invalid(reason),
    };
    describe_request(&mut report, &parsed);
    let needed = parsed.needed_calls();
    report.line("calls needed", list(&needed));

    let (policy, signature) = match parsed.credentials() {
        Ok(credentials) => credentials,
        Err(reason) => {
            let cut = parsed.policy.is_some() && input.url.contains("?policy=");
            return report.invalid(if cut {
                format!("{reason} (typed without quotes? the shell cuts a URL at `&`)")
            } else {
                reason.to_string()
            });
        }
    };
    report.line("signed string", policy);
    describe_policy(&mut report, policy, now);

    let matched = keys
        .secrets
        .iter()
        .find(|(_, secret)| secret.verify_hex(policy.as_bytes(), signature));
    if let Some((whose, _)) = matched {
        report.line("signature", format_args!("matches {whose}"));
        return match check_policy(&parsed, now, &needed) {
            Ok(_) => {
                report.line("valid", format_args!("yes, for {whose}"));
                report.code = EXIT_OK;
                report
            }
            Err(reason) => report.invalid(reason),
        };
    }
    if !keys.secrets.is_empty() {
        let tried: Vec<&str> = keys.secrets.iter().map(|(name, _)| name.as_str()).collect();
        report.line(
            "signature",
            format_args!("matches none of: {}", tried.join(", ")),
        );
    }
    for why in &keys.unavailable {
        report.line("signature", format_args!("not checked: {why}"));
    }
    if !keys.secrets.is_empty() {
        return report.invalid(Invalid::BadSignature);
    }
    match check_policy(&parsed, now, &needed) {
        Err(reason) => report.invalid(reason),
        Ok(_) => {
            report.line(
                "valid",
                "unknown: the policy grants what the URL asks for, but the signature was not checked",
            );
            report
        }
    }
}

fn describe_request(report: &mut Report, parsed: &ParsedUrl) {
    if let Some(upload) = &parsed.upload {
        report.line("kind", "upload (store API), not a file");
        report.line("storage", &upload.location);
        let fields = [
            ("upload path", &upload.path),
            ("container", &upload.container),
            ("filename", &upload.filename),
            ("api key", &upload.api_key),
        ];
        for (label, value) in fields {
            if let Some(value) = value {
                report.line(label, value);
            }
        }
        return;
    }
    let kind = match (parsed.metadata, parsed.tasks.is_empty()) {
        (true, _) => "file metadata",
        (false, true) => "file download",
        (false, false) => "file download, transformed",
    };
    match &parsed.target {
        Some(Target::Handle(handle)) => {
            report.line("kind", kind);
            report.line("handle", handle);
        }
        Some(Target::External(url)) => {
            report.line("kind", "transformation of an external URL");
            report.line("external url", url);
            if let Some(policy) = parsed.policy.as_deref() {
                describe_source(report, policy, url);
            }
        }
        None => report.line("handle", "(none)"),
    }
    if !parsed.tasks.is_empty() {
        report.line("tasks", parsed.tasks.join("/"));
    }
}

/// Whether the policy's `url` pattern allows the external source `url`.
fn describe_source(report: &mut Report, policy: &str, url: &str) {
    let Ok(decoded) = DecodedPolicy::decode(policy) else {
        return;
    };
    match &decoded.limits.url {
        Some(pattern) if url_pattern_matches(pattern, url) => report.line(
            "source",
            format_args!("allowed by the policy's url {pattern:?}"),
        ),
        Some(pattern) => report.line(
            "source",
            format_args!("NOT allowed by the policy's url {pattern:?}"),
        ),
        None => report.line("source", "any (the policy has no `url` pattern)"),
    }
}

fn describe_policy(report: &mut Report, policy: &str, now: u64) {
    let decoded = match DecodedPolicy::decode(policy) {
        Ok(decoded) => decoded,
        Err(e) => return report.line("policy json", format_args!("({e})")),
    };
    report.line("policy json", &decoded.json);
    let date = humantime::format_rfc3339_seconds(UNIX_EPOCH + Duration::from_secs(decoded.expiry));
    let relative = if decoded.expiry > now {
        format!("in {}s", decoded.expiry - now)
    } else {
        format!("{}s ago", now - decoded.expiry)
    };
    report.line(
        "expiry",
        format_args!("{} ({date}, {relative})", decoded.expiry),
    );
    match &decoded.call {
        Some(calls) if calls.is_empty() => report.line("calls granted", "none"),
        Some(calls) => report.line("calls granted", calls.join(", ")),
        None => report.line("calls granted", "any (the policy has no `call` list)"),
    }
}

fn list(calls: &[Call]) -> String {
    calls
        .iter()
        .map(|c| c.as_str())
        .collect::<Vec<_>>()
        .join(", ")
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::policy::Policy;

    const H: &str = "KW9EJhYtS6y48Whm2S6D";

    fn secret() -> Secret {
        Secret::new("explain-secret".into()).expect("not empty")
    }

    fn keys() -> Keys {
        Keys {
            secrets: vec![("route `images`'s secret".into(), secret())],
            ..Keys::default()
        }
    }

    fn query_url(path: &str, calls: Vec<Call>, handle: Option<&str>) -> String {
        let credentials = Policy {
            expiry: 2000,
            call: calls,
            handle: handle.map(str::to_owned),
            ..Policy::default()
        }
        .sign(&secret());
        format!(
            "https://cdn.example{path}?policy={}&signature={}",
            credentials.policy_for_query(),
            credentials.signature
        )
    }

    fn run(url: &str, keys: &Keys) -> Report {
        explain(&Input::read(url).expect("a URL"), keys, 1000)
    }

    #[test]
    fn input_that_is_not_a_url_is_refused() {
        assert_eq!(Input::read(""), Err(NotUrl::Empty));
        assert_eq!(Input::read("  \n"), Err(NotUrl::Empty));
        assert_eq!(Input::read("hello world"), Err(NotUrl::Shape));
        assert_eq!(Input::read("KW9EJhYtS6y48Whm2S6D"), Err(NotUrl::Shape));
        assert_eq!(
            Input::read("ftp://cdn.example/x"),
            Err(NotUrl::Scheme("ftp".into()))
        );
        assert_eq!(Input::read("https://"), Err(NotUrl::NoHost("https".into())));
        assert_eq!(Input::read("/a b"), Err(NotUrl::Whitespace));
        let bare = Input::read("cdn.example.com/KW9EJhYtS6y48Whm2S6D").expect("a URL");
        assert_eq!(bare.url, "https://cdn.example.com/KW9EJhYtS6y48Whm2S6D");
        assert_eq!(bare.notes.len(), 1);
        assert!(Input::read("/KW9EJhYtS6y48Whm2S6D").is_ok());
    }

    #[test]
    fn html_escaped_ampersands_are_noted_and_read_as_ampersands() {
        let url = query_url(&format!("/{H}"), vec![Call::Read], Some(H));
        let input = Input::read(&url.replace('&', "&amp;")).expect("a URL");
        assert_eq!(input.url, url);
        assert!(input.notes[0].contains("&amp;"));
        let report = explain(&input, &keys(), 1000);
        assert_eq!(report.code, EXIT_OK, "{}", report.text);
        assert!(
            report.text.starts_with("note:          "),
            "{}",
            report.text
        );
    }

    #[test]
    fn the_calls_granted_are_read_from_the_policy() {
        let url = query_url(&format!("/resize=width:3/{H}"), vec![Call::Read], Some(H));
        let report = run(&url, &keys());
        assert_eq!(report.code, EXIT_INVALID, "{}", report.text);
        assert!(report.text.contains("calls needed:  read, convert\n"));
        assert!(report.text.contains("calls granted: read\n"));
        assert!(
            report
                .text
                .contains("valid:         no: call convert not allowed")
        );

        let url = query_url(&format!("/{H}/metadata"), vec![Call::Stat], Some(H));
        let report = run(&url, &keys());
        assert_eq!(report.code, EXIT_OK, "{}", report.text);
        assert!(report.text.contains("kind:          file metadata\n"));

        let url = query_url(&format!("/{H}"), Vec::new(), None);
        let report = run(&url, &keys());
        assert!(
            report.text.contains("calls granted: any"),
            "{}",
            report.text
        );
    }

    #[test]
    fn upload_urls_are_read_as_uploads_that_need_store() {
        let path = "/api/store/S3";
        let store = query_url(path, vec![Call::Pick, Call::Store], None) + "&path=%2Fgallery%2F";
        let report = run(&store, &keys());
        assert_eq!(report.code, EXIT_OK, "{}", report.text);
        let text = &report.text;
        assert!(text.contains("kind:          upload (store API)"), "{text}");
        assert!(text.contains("storage:       S3\n"), "{text}");
        assert!(text.contains("upload path:   /gallery/\n"), "{text}");
        assert!(text.contains("calls needed:  store\n"), "{text}");
        assert!(!text.contains("handle:"), "{text}");

        let read_only = query_url(path, vec![Call::Read], None);
        let report = run(&read_only, &keys());
        assert_eq!(report.code, EXIT_INVALID);
        assert!(report.text.contains("no: call store not allowed"));
    }

    #[test]
    fn without_a_secret_everything_but_the_signature_is_checked() {
        let none = Keys {
            unavailable: vec!["S is not set in this shell (route `images`)".into()],
            ..Keys::default()
        };
        let url = query_url(&format!("/{H}"), vec![Call::Read], Some(H));
        let report = run(&url, &none);
        assert_eq!(report.code, EXIT_INVALID);
        assert!(
            report
                .text
                .contains("signature:     not checked: S is not set in this shell"),
            "{}",
            report.text
        );
        assert!(report.text.contains("valid:         unknown"));
        assert!(report.text.contains("policy json:   {\"expiry\":2000"));

        // A policy that is expired or short of a call is invalid whoever signed it.
        let report = explain(&Input::read(&url).expect("a URL"), &none, 2000);
        assert!(report.text.contains("valid:         no: expired at 2000"));
    }

    #[test]
    fn a_secret_that_does_not_match_is_a_bad_signature() {
        let url = query_url(&format!("/{H}"), vec![Call::Read], Some(H));
        let other = Keys {
            secrets: vec![(
                "route `x`'s secret".into(),
                Secret::new("other".into()).expect("not empty"),
            )],
            ..Keys::default()
        };
        let report = run(&url, &other);
        assert_eq!(report.code, EXIT_INVALID);
        assert!(report.text.contains("matches none of: route `x`'s secret"));
        assert!(report.text.contains("valid:         no: bad signature"));
    }

    #[test]
    fn a_config_loads_without_its_secret_variable_and_names_it() {
        let toml = "[signing]\nsecret_env = \"SIGNGATE_EXPLAIN_UNIT_UNSET\"\n\
                    [[route]]\nname = \"a\"\nprefix = \"/a/\"\nmode = \"upload-policy\"\n\
                    [[route]]\nname = \"b\"\nprefix = \"/b/\"\nmode = \"upload-policy\"\n";
        let keys = Keys::from_config(toml).expect("loads");
        assert!(keys.secrets.is_empty());
        assert_eq!(keys.unavailable.len(), 1, "{:?}", keys.unavailable);
        assert!(
            keys.unavailable[0].starts_with(
                "SIGNGATE_EXPLAIN_UNIT_UNSET is not set in this shell (routes `a`, `b`)"
            ),
            "{:?}",
            keys.unavailable
        );
    }

    #[test]
    fn a_url_cut_at_the_ampersand_hints_at_quoting() {
        let url = query_url(&format!("/{H}"), vec![Call::Read], Some(H));
        let cut = url.split('&').next().expect("before &");
        let report = run(cut, &keys());
        assert!(
            report
                .text
                .contains("credentials missing: signature (typed without quotes?"),
            "{}",
            report.text
        );
    }
}
