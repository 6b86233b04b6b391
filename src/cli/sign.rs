//! `signgate sign`: print credentials for one route as a JSON line.

use std::process::ExitCode;

use serde::Serialize;

use super::{EXIT_OK, EXIT_USAGE};
use crate::clock::{Clock, SystemClock};
use crate::config::{Config, Route, RouteKind};
use crate::filelink::{FileRef, Handle, signed_url};
use crate::signer::RouteSigner;

#[derive(Serialize)]
struct Output {
    policy: String,
    signature: String,
    expiry: u64,
    #[serde(skip_serializing_if = "Option::is_none")]
    url: Option<String>,
}

/// Where a route's signed URLs point: the CDN for proxy and redirect routes, the first of
/// `rewrite_hosts` for a site route (its upstream is the site, not the CDN), none for an upload
/// policy or a verify route (its upstream is the private origin; clients reach the route at an
/// address the config does not know).
fn cdn_base(route: &Route) -> Option<String> {
    match &route.kind {
        RouteKind::Proxy(proxy) => Some(proxy.fetch.upstream.base().to_owned()),
        RouteKind::Redirect(redirect) => Some(redirect.upstream.base().to_owned()),
        RouteKind::Site(site) => site
            .rewrite
            .hosts
            .first()
            .map(|host| format!("https://{host}")),
        RouteKind::UploadPolicy(_) | RouteKind::Verify(_) => None,
    }
}

/// Prints `{"policy","signature","expiry","url"}` for `route_name`; `url` when the route points
/// at a CDN and a handle was given.
pub fn run(
    config: &Config,
    route_name: &str,
    handle: Option<&str>,
    expiry: Option<u64>,
) -> ExitCode {
    let Some(route) = config.route(route_name) else {
        let names: Vec<&str> = config.routes.iter().map(|r| r.name.as_str()).collect();
        eprintln!(
            "signgate: no route named {route_name:?} (routes: {})",
            names.join(", ")
        );
        return ExitCode::from(EXIT_USAGE);
    };
    let handle = match handle.map(Handle::parse).transpose() {
        Ok(h) => h,
        Err(e) => {
            eprintln!("signgate: --handle: {e}: expected 20 characters of A-Z, a-z, 0-9, _ or -");
            return ExitCode::from(EXIT_USAGE);
        }
    };
    let signer = RouteSigner::for_route(route);
    let now = SystemClock.now_unix();
    let expiry = match expiry {
        None => signer.expiry_at(now),
        Some(expiry) if expiry <= now => {
            eprintln!(
                "signgate: --expiry: {expiry} is in the past (now is {now}); give a unix time after now, or leave it out for now + ttl"
            );
            return ExitCode::from(EXIT_USAGE);
        }
        Some(expiry) => match route.signing.deadline_at(now) {
            Some(at) if expiry > at => {
                eprintln!(
                    "signgate: --expiry: {expiry} is after the route's switch_at ({at}): the secret in use now is replaced then; give a unix time at or before it"
                );
                return ExitCode::from(EXIT_USAGE);
            }
            _ => expiry,
        },
    };
    let credentials = signer.sign_uncached(now, expiry, handle);
    let url = match (cdn_base(route), handle) {
        (Some(base), Some(handle)) => Some(signed_url(
            &base,
            &FileRef {
                tasks: Vec::new(),
                handle,
            },
            None,
            &credentials,
            route.signing.url_style,
        )),
        _ => None,
    };
    let output = Output {
        policy: credentials.policy,
        signature: credentials.signature,
        expiry,
        url,
    };
    match serde_json::to_string(&output) {
        Ok(line) => {
            println!("{line}");
            ExitCode::from(EXIT_OK)
        }
        Err(e) => {
            eprintln!("signgate: {e}");
            ExitCode::from(EXIT_USAGE)
        }
    }
}
