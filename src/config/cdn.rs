//! `[[route.cdn]]`: more hosts a site route signs, each with its own scheme and key, so one page
//! can carry Filestack handles and an S3 bucket's objects (or CloudFront's, imgix's, Akamai's).

use super::raw::{RawRoute, RawSigning};
use super::route::{check_hosts, check_scheme_lifetime};
use super::scheme::{SchemeConfig, build_scheme};
use super::secret_source::SecretsNeeded;
use super::signing::{Signing, build_signing};
use super::{ConfigError, Mode, invalid};

/// One `[[route.cdn]]` of a site route: hosts whose URLs are signed with their own scheme.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SiteCdn {
    /// `hosts`: lowercase; none is in the route's `rewrite_hosts` or another entry's.
    pub hosts: Vec<String>,
    /// `scheme` and its keys: never Filestack's, which the route itself signs.
    pub scheme: SchemeConfig,
    /// The entry's own key (`secret_env`/`secret_file`), and `ttl`, `bucket`, `min_validity`,
    /// `cache_size`, `max_clock_skew` and `skew_margin` where it sets them, else the route's.
    pub signing: Signing,
}

impl SiteCdn {
    /// Whether `host` is one of this entry's.
    pub fn has_host(&self, host: &str) -> bool {
        self.hosts.iter().any(|h| h.eq_ignore_ascii_case(host))
    }
}

/// The schemes an entry may name.
const ENTRY_SCHEMES: &str = "s3, cloudfront, imgix or akamai";

/// A site route's `[[route.cdn]]` entries, none sharing a host with `rewrite_hosts` or with
/// each other.
pub(super) fn build_cdns(
    raw: &RawRoute,
    defaults: &RawSigning,
    env: &dyn Fn(&str) -> Option<String>,
    needed: SecretsNeeded,
    rewrite_hosts: &[String],
) -> Result<Vec<SiteCdn>, ConfigError> {
    let Some(entries) = &raw.cdn else {
        return Ok(Vec::new());
    };
    let inherited = inherited_signing(&raw.signing_overrides(), defaults);
    let mut taken: Vec<String> = rewrite_hosts.to_vec();
    let mut cdns = Vec::with_capacity(entries.len());
    for (index, entry) in entries.iter().enumerate() {
        let whole = format!("route `{}`: [[route.cdn]] #{}", raw.name, index + 1);
        let hosts = match &entry.hosts {
            Some(hosts) if !hosts.is_empty() => {
                check_hosts(hosts).map_err(|reason| invalid(format!("{whole}: `hosts`"), reason))?
            }
            _ => {
                return Err(invalid(
                    whole,
                    "needs `hosts`: the hosts whose URLs it signs, such as \
                     [\"photos.s3.eu-west-1.amazonaws.com\"]",
                ));
            }
        };
        // Messages name an entry by the route and its first host, with the key after it:
        // "route `gallery`, [[route.cdn]] `photos.s3…`: `region`".
        let label = format!("{}`, [[route.cdn]] `{}", raw.name, hosts[0]);
        let key = |k: &str| format!("route `{label}`: `{k}`");
        if let Some(host) = hosts.iter().find(|h| taken.iter().any(|t| same_host(t, h))) {
            return Err(invalid(
                key("hosts"),
                format!(
                    "{host:?} is already signed by the route's `rewrite_hosts` or an earlier \
                     [[route.cdn]]: a host has one scheme"
                ),
            ));
        }
        taken.extend(hosts.iter().cloned());
        match entry.scheme.as_deref() {
            None => {
                return Err(invalid(
                    key("scheme"),
                    format!("is required in [[route.cdn]]: {ENTRY_SCHEMES}"),
                ));
            }
            Some("filestack") => {
                return Err(invalid(
                    key("scheme"),
                    format!(
                        "a site route signs Filestack's URLs on its `rewrite_hosts` itself; \
                         [[route.cdn]] is for another scheme: {ENTRY_SCHEMES}"
                    ),
                ));
            }
            Some(_) => {}
        }
        if entry.secret_env.is_none() && entry.secret_file.is_none() {
            return Err(invalid(
                key("secret_env"),
                "each [[route.cdn]] signs with its own key: set `secret_env` or `secret_file` \
                 (a PEM file for cloudfront)",
            ));
        }
        let as_route = entry.as_route(label.clone());
        let scheme = build_scheme(&as_route, &inherited, Mode::Site, env, needed, &key)?;
        let (signing, _) = build_signing(
            &as_route.signing_overrides(),
            &inherited,
            env,
            &label,
            needed,
        )?;
        check_scheme_lifetime(&scheme, &signing, &key)?;
        cdns.push(SiteCdn {
            hosts,
            scheme,
            signing,
        });
    }
    Ok(cdns)
}

/// Whether `a` and `b` (lowercase, as `hosts` keeps them) name the host a browser connects
/// to alike: a trailing dot and a default port (`:443`, `:80`) name the same host as the bare
/// name, so each scheme's signature would reach the other's CDN.
fn same_host(a: &str, b: &str) -> bool {
    let bare = |host: &str| {
        let name = host
            .strip_suffix(":443")
            .or_else(|| host.strip_suffix(":80"))
            .unwrap_or(host);
        name.strip_suffix('.').unwrap_or(name).to_owned()
    };
    bare(a) == bare(b)
}

/// What an entry takes from its route when it does not set it: the route's `ttl`, `bucket`,
/// `min_validity`, `cache_size`, `max_clock_skew` and `skew_margin` (its own, else
/// `[signing]`'s). Never the secret or its rotation: those sign another CDN's URLs.
fn inherited_signing(route: &RawSigning, defaults: &RawSigning) -> RawSigning {
    RawSigning {
        ttl: route.ttl.clone().or_else(|| defaults.ttl.clone()),
        bucket: route.bucket.clone().or_else(|| defaults.bucket.clone()),
        min_validity: route
            .min_validity
            .clone()
            .or_else(|| defaults.min_validity.clone()),
        cache_size: route.cache_size.or(defaults.cache_size),
        max_clock_skew: route
            .max_clock_skew
            .clone()
            .or_else(|| defaults.max_clock_skew.clone()),
        skew_margin: route
            .skew_margin
            .clone()
            .or_else(|| defaults.skew_margin.clone()),
        ..RawSigning::default()
    }
}
