//! `signgate explain`: decode a signed URL and say whether it is valid, and why not.

use std::process::ExitCode;
use std::time::{Duration, UNIX_EPOCH};

use super::{EXIT_INVALID, EXIT_OK};
use crate::clock::{Clock, SystemClock};
use crate::config::Config;
use crate::policy::{Call, DecodedPolicy};
use crate::verify::{Invalid, Target, parse_url, verify_at};

/// Prints the URL's policy, expiry and signed string, then checks it against every route's
/// secret. Exit 0 when valid for some route, 1 otherwise.
pub fn run(config: &Config, url: &str) -> ExitCode {
    let now = SystemClock.now_unix();
    let parsed = match parse_url(url) {
        Ok(parsed) => parsed,
        Err(reason) => return invalid(&reason),
    };
    match &parsed.target {
        Some(Target::Handle(h)) => println!("handle:        {h}"),
        Some(Target::External(u)) => println!("external url:  {u}"),
        None => println!("handle:        (none)"),
    }
    if !parsed.tasks.is_empty() {
        println!("tasks:         {}", parsed.tasks.join("/"));
    }
    let Some(policy) = parsed.policy.as_deref() else {
        return invalid(&Invalid::Missing("policy"));
    };
    println!("signed string: {policy}");
    match DecodedPolicy::decode(policy) {
        Ok(decoded) => {
            println!("policy json:   {}", decoded.json);
            let date =
                humantime::format_rfc3339_seconds(UNIX_EPOCH + Duration::from_secs(decoded.expiry));
            let relative = if decoded.expiry > now {
                format!("in {}s", decoded.expiry - now)
            } else {
                format!("{}s ago", now - decoded.expiry)
            };
            println!("expiry:        {} ({date}, {relative})", decoded.expiry);
        }
        Err(e) => println!("policy json:   ({e})"),
    }

    // The reason to report: a secret that matched but failed later says more than "bad signature".
    let mut reason = Invalid::BadSignature;
    for route in &config.routes {
        match verify_at(url, &route.signing.secret, now, Call::Read) {
            Ok(_) => {
                println!("valid:         yes, for route `{}`'s secret", route.name);
                return ExitCode::from(EXIT_OK);
            }
            Err(Invalid::BadSignature) => {}
            Err(other) => {
                if reason == Invalid::BadSignature {
                    reason = other;
                }
            }
        }
    }
    invalid(&reason)
}

fn invalid(reason: &Invalid) -> ExitCode {
    println!("valid:         no: {reason}");
    ExitCode::from(EXIT_INVALID)
}
