//! `canary_handle`, `canary_interval` and `canary_gates_readiness`: a file the gateway fetches
//! from a route's CDN with the route's own signing, on a timer, so a secret the CDN no longer
//! accepts is caught by the gateway before users meet it (see [`crate::canary`]).

use std::time::Duration;

use super::raw::RawRoute;
use super::route::Mode;
use super::units::parse_duration;
use super::{ConfigError, invalid};
use crate::filelink::Handle;
use crate::policy::{Call, PolicyTemplate};

/// Default `canary_interval`: a refused secret is seen within a minute, at one request a minute
/// per route and replica.
pub const DEFAULT_CANARY_INTERVAL: Duration = Duration::from_secs(60);
/// Shortest `canary_interval`.
pub const MIN_CANARY_INTERVAL: Duration = Duration::from_secs(1);
/// Longest `canary_interval`: a canary is there to catch a change within minutes.
pub const MAX_CANARY_INTERVAL: Duration = Duration::from_secs(3600);

/// A route's canary, valid by construction.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Canary {
    /// `canary_handle`: a file on the route's CDN that the canary fetches (`HEAD`, or a one-byte
    /// ranged `GET` where `HEAD` gets 405) with credentials the route signs.
    pub handle: Handle,
    /// `canary_interval`: time between two checks. Default 60s, from 1s to 1h.
    pub interval: Duration,
    /// `canary_gates_readiness`: `/readyz` answers 503 while the last check was refused (401 or
    /// 403). Default false: a refusal is logged and counted, and the gateway stays ready.
    pub gates_readiness: bool,
}

/// The route's canary, if it sets `canary_handle` (the table of keys per mode in [`super::raw`]
/// keeps it to proxy and redirect routes: their upstream is the CDN their signatures are for).
pub(super) fn build_canary(
    raw: &RawRoute,
    policy: &PolicyTemplate,
    key: &dyn Fn(&str) -> String,
) -> Result<Option<Canary>, ConfigError> {
    let Some(text) = raw.canary_handle.as_deref() else {
        for (name, set) in [
            ("canary_interval", raw.canary_interval.is_some()),
            (
                "canary_gates_readiness",
                raw.canary_gates_readiness.is_some(),
            ),
        ] {
            if set {
                return Err(invalid(
                    key(name),
                    "only applies with `canary_handle`: set it, or remove this key",
                ));
            }
        }
        return Ok(None);
    };
    let handle = Handle::parse(text).map_err(|_| {
        invalid(
            key("canary_handle"),
            format!(
                "must be a file handle: 20 characters of A-Z, a-z, 0-9, '_' and '-', got {text:?}"
            ),
        )
    })?;
    if !policy.allows(Call::Read) {
        return Err(invalid(
            key("canary_handle"),
            "the canary reads its file, and the route's `calls` do not hold \"read\": add it, or remove the canary",
        ));
    }
    let interval = match raw.canary_interval.as_deref() {
        None => DEFAULT_CANARY_INTERVAL,
        Some(text) => parse_duration(text).map_err(|r| invalid(key("canary_interval"), r))?,
    };
    if !(MIN_CANARY_INTERVAL..=MAX_CANARY_INTERVAL).contains(&interval) {
        return Err(invalid(
            key("canary_interval"),
            format!(
                "must be between 1s and 1h, got {:?}",
                raw.canary_interval.as_deref().unwrap_or_default()
            ),
        ));
    }
    Ok(Some(Canary {
        handle,
        interval,
        gates_readiness: raw.canary_gates_readiness.unwrap_or(false),
    }))
}

/// A canary on a site route, refused with the reason: its `upstream` is the site, and the CDN
/// its signatures are for is only named by `rewrite_hosts`, reached by browsers, not by the
/// gateway. Checked before the table of keys per mode, whose message says no more than which
/// modes take the key.
pub(super) fn refuse_on_site(
    raw: &RawRoute,
    mode: Mode,
    key: &dyn Fn(&str) -> String,
) -> Result<(), ConfigError> {
    if mode == Mode::Site && raw.canary_handle.is_some() {
        return Err(invalid(
            key("canary_handle"),
            "does not apply to site routes: their `upstream` is the site, not the CDN their signatures are for; \
             put the canary on a proxy or redirect route that signs for the same CDN with the same secret",
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use crate::config::{Config, ConfigError};

    const H: &str = "KW9EJhYtS6y48Whm2S6D";

    fn parse(mode: &str, keys: &str) -> Result<Config, ConfigError> {
        Config::from_toml_str(
            &format!(
                "[signing]\nsecret_env = \"S\"\n[[route]]\nname = \"r\"\nprefix = \"/r/\"\n\
                 mode = \"{mode}\"\n{keys}\n"
            ),
            |_| Some("secret".into()),
        )
    }

    fn error(mode: &str, keys: &str) -> String {
        parse(mode, keys).expect_err("refused").to_string()
    }

    const CDN: &str = "upstream = \"https://cdn.example\"\n";

    #[test]
    fn a_canary_defaults_to_a_minute_and_does_not_gate_readiness() {
        for mode in ["proxy", "redirect"] {
            let config = parse(mode, &format!("{CDN}canary_handle = \"{H}\"")).expect("valid");
            let canary = config.routes[0].canary.as_ref().expect("a canary");
            assert_eq!(canary.handle.as_str(), H);
            assert_eq!(canary.interval, super::DEFAULT_CANARY_INTERVAL);
            assert!(!canary.gates_readiness);
        }
        let config = parse(
            "proxy",
            &format!(
                "{CDN}canary_handle = \"{H}\"\ncanary_interval = \"1s\"\ncanary_gates_readiness = true"
            ),
        )
        .expect("valid");
        let canary = config.routes[0].canary.as_ref().expect("a canary");
        assert_eq!(canary.interval, std::time::Duration::from_secs(1));
        assert!(canary.gates_readiness);
        assert!(
            parse("proxy", CDN).expect("valid").routes[0]
                .canary
                .is_none()
        );
    }

    #[test]
    fn canary_keys_are_refused_where_they_cannot_work_naming_the_key() {
        let cases = [
            (
                "proxy",
                format!("{CDN}canary_handle = \"short\""),
                "route `r`: `canary_handle`: must be a file handle",
            ),
            (
                "proxy",
                format!("{CDN}canary_handle = \"{H}\"\ncanary_interval = \"500ms\""),
                "route `r`: `canary_interval`: must be between 1s and 1h, got \"500ms\"",
            ),
            (
                "proxy",
                format!("{CDN}canary_handle = \"{H}\"\ncanary_interval = \"2h\""),
                "route `r`: `canary_interval`: must be between 1s and 1h",
            ),
            (
                "proxy",
                format!("{CDN}canary_handle = \"{H}\"\ncanary_interval = \"soon\""),
                "route `r`: `canary_interval`: must be a duration",
            ),
            (
                "redirect",
                format!("{CDN}canary_interval = \"5s\""),
                "route `r`: `canary_interval`: only applies with `canary_handle`",
            ),
            (
                "proxy",
                format!("{CDN}canary_gates_readiness = true"),
                "route `r`: `canary_gates_readiness`: only applies with `canary_handle`",
            ),
            (
                "proxy",
                format!("{CDN}calls = [\"convert\"]\ncanary_handle = \"{H}\""),
                "route `r`: `canary_handle`: the canary reads its file, and the route's `calls` do not hold \"read\"",
            ),
            (
                "site",
                format!("{CDN}canary_handle = \"{H}\""),
                "route `r`: `canary_handle`: does not apply to site routes: their `upstream` is the site",
            ),
            (
                "upload-policy",
                format!("canary_handle = \"{H}\""),
                "route `r`: `canary_handle`: does not apply to upload-policy routes; it is for proxy and redirect routes",
            ),
            (
                "upload-policy",
                "canary_gates_readiness = false".to_owned(),
                "route `r`: `canary_gates_readiness`: does not apply to upload-policy routes",
            ),
        ];
        for (mode, keys, expected) in cases {
            let message = error(mode, &keys);
            assert!(message.starts_with(expected), "{keys}: {message}");
        }
    }
}
