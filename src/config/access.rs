//! Who may get a signature from a route: `tasks` (what a file URL may ask for) and
//! `authorize_url` with its timeout and cache (who may ask), built from the raw keys.

use std::time::Duration;

use http::Uri;

use super::raw::RawRoute;
use super::units::parse_duration;
use super::{ConfigError, DEFAULT_AUTHORIZE_TIMEOUT, Mode, invalid};
use crate::tasks::TaskAllowlist;

/// `authorize_url` and its settings: the service asked, like nginx's `auth_request`, before a
/// route signs anything for a client.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Authorize {
    /// `authorize_url`: an absolute http(s) URL, asked with `GET`; its own query is kept and
    /// `handle`, `tasks` and `route` are added to it.
    pub url: Uri,
    /// `authorize_timeout`: how long the whole answer may take (headers and a denial's body);
    /// past it the client gets 504. Default 2s.
    pub timeout: Duration,
    /// `authorize_cache`: how long an allow or deny decision is reused for the same client
    /// credentials and file. Default 0s: every request is asked about.
    pub cache: Duration,
}

/// The route's `tasks`, or the default: the read-only transformations where signgate signs,
/// none on a verify route (whose origin, a file server or a store, cannot transform: a URL with
/// tasks is refused unless the route lists them, to pass them on).
pub(super) fn build_tasks(
    raw: &RawRoute,
    mode: Mode,
    key: &dyn Fn(&str) -> String,
) -> Result<TaskAllowlist, ConfigError> {
    match raw.tasks.as_deref() {
        Some(names) => TaskAllowlist::parse(names).map_err(|r| invalid(key("tasks"), r)),
        None if mode == Mode::Verify => Ok(TaskAllowlist::none()),
        None => Ok(TaskAllowlist::default()),
    }
}

/// The route's `authorize_url` and settings, if it sets one.
pub(super) fn build_authorize(
    raw: &RawRoute,
    key: &dyn Fn(&str) -> String,
) -> Result<Option<Authorize>, ConfigError> {
    let Some(text) = raw.authorize_url.as_deref() else {
        for (name, set) in [
            ("authorize_timeout", raw.authorize_timeout.is_some()),
            ("authorize_cache", raw.authorize_cache.is_some()),
        ] {
            if set {
                return Err(invalid(
                    key(name),
                    "only applies with `authorize_url`: set it, or remove this key",
                ));
            }
        }
        return Ok(None);
    };
    let url = parse_authorize_url(text).map_err(|r| invalid(key("authorize_url"), r))?;
    let timeout = raw
        .authorize_timeout
        .as_deref()
        .map_or(Ok(DEFAULT_AUTHORIZE_TIMEOUT), parse_duration)
        .map_err(|r| invalid(key("authorize_timeout"), r))?;
    let cache = raw
        .authorize_cache
        .as_deref()
        .map_or(Ok(Duration::ZERO), parse_cache_duration)
        .map_err(|r| invalid(key("authorize_cache"), r))?;
    Ok(Some(Authorize {
        url,
        timeout,
        cache,
    }))
}

/// An absolute http(s) URL without credentials in it; a query is allowed.
fn parse_authorize_url(text: &str) -> Result<Uri, String> {
    let bad = || {
        format!(
            "must be an absolute http(s) URL such as \"http://127.0.0.1:3000/authz\", got {text:?}"
        )
    };
    let uri: Uri = text.parse().map_err(|_| bad())?;
    if !matches!(uri.scheme_str(), Some("http" | "https")) {
        return Err(bad());
    }
    let authority = uri.authority().ok_or_else(bad)?;
    if authority.host().is_empty() {
        return Err(bad());
    }
    if authority.as_str().contains('@') {
        return Err(format!(
            "must not carry credentials (user@host), got {text:?}"
        ));
    }
    Ok(uri)
}

/// A duration of whole seconds, `"0s"` included (no caching).
fn parse_cache_duration(text: &str) -> Result<Duration, String> {
    let duration = match humantime::parse_duration(text) {
        Ok(zero) if zero.is_zero() => return Ok(zero),
        _ => parse_duration(text)?,
    };
    if duration.subsec_nanos() != 0 {
        return Err(format!(
            "must be whole seconds such as \"30s\" or \"0s\" (no caching), got {text:?}"
        ));
    }
    Ok(duration)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn authorize_urls_must_be_absolute_http() {
        assert!(parse_authorize_url("http://127.0.0.1:3000/authz?app=1").is_ok());
        assert!(parse_authorize_url("https://auth.example/check").is_ok());
        for bad in [
            "/authz",
            "auth.example/authz",
            "ftp://auth.example/",
            "https://user:pw@auth.example/",
        ] {
            assert!(parse_authorize_url(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn the_decision_cache_takes_zero_and_whole_seconds() {
        assert_eq!(parse_cache_duration("0s"), Ok(Duration::ZERO));
        assert_eq!(parse_cache_duration("30s"), Ok(Duration::from_secs(30)));
        assert!(parse_cache_duration("1500ms").is_err());
        assert!(parse_cache_duration("soon").is_err());
    }
}
