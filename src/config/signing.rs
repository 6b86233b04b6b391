//! `[signing]` and its per-route overrides: the secret, expiry and cache settings of a route.

use std::num::NonZeroUsize;
use std::time::Duration;

use super::raw::RawSigning;
use super::secret_source::{SecretsNeeded, load_secret};
use super::units::parse_duration;
use super::{
    ConfigError, DEFAULT_BUCKET, DEFAULT_CACHE_SIZE, DEFAULT_MAX_CLOCK_SKEW, DEFAULT_TTL,
    MAX_BUCKET, MAX_TTL, invalid,
};
use crate::filelink::UrlStyle;
use crate::secret::Secret;

/// How a route signs. Equal signings sign alike (a reload keeps the cache of a route whose
/// signing is unchanged).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Signing {
    /// The app secret (from `secret_env` or `secret_file`).
    pub secret: Secret,
    /// `ttl`: every URL handed out is valid at least this long. Default 1h.
    pub ttl: Duration,
    /// `bucket`: expiries are rounded up to a multiple of this, a whole number of seconds.
    /// Default 5m.
    pub bucket: Duration,
    /// `min_validity`: the least life a signed URL keeps in any cached copy of an answer that
    /// carries it; cache lifetimes are capped to `expiry - now - min_validity`. Default `ttl / 4`.
    pub min_validity: Duration,
    /// `cache_size`: signed credentials kept per route, in each worker (every worker builds its
    /// own routes, so the process holds up to `workers` times this). Default 100000.
    pub cache_size: NonZeroUsize,
    /// `url_style`: query or task form. Default query.
    pub url_style: UrlStyle,
    /// `max_clock_skew`: how far an upstream answer's `Date` may be from this machine's clock
    /// before a warning is logged (expiries are computed from this clock, and checked against
    /// the CDN's). Default 30s.
    pub max_clock_skew: Duration,
    /// `skew_margin`: added to every expiry, so that a CDN whose clock runs up to this far
    /// ahead still accepts each URL for the whole `ttl`; cache lifetimes and redirects'
    /// `max-age` do not count it. At most `ttl`. Default 0.
    pub skew_margin: Duration,
}

/// Builds a route's signing from its own keys, falling back to `[signing]` key by key; errors
/// name whichever of the two the value came from. Returns a warning with a placeholder secret.
pub(super) fn build_signing(
    route: &RawSigning,
    defaults: &RawSigning,
    env: &dyn Fn(&str) -> Option<String>,
    route_name: &str,
    needed: SecretsNeeded,
) -> Result<(Signing, Option<String>), ConfigError> {
    let pick = |route_value: bool, k: &str| {
        if route_value {
            format!("route `{route_name}`: `{k}`")
        } else {
            format!("`signing.{k}`")
        }
    };
    let (secret, warning) = if route.secret_env.is_some() || route.secret_file.is_some() {
        load_secret(route, env, &format!("route `{route_name}`: "), needed)?
    } else if defaults.secret_env.is_some() || defaults.secret_file.is_some() {
        load_secret(defaults, env, "signing.", needed)?
    } else {
        return Err(invalid(
            format!("route `{route_name}`"),
            "no secret: set `secret_env` or `secret_file` in [signing] or in the route",
        ));
    };
    let duration = |own: &Option<String>, default_text: &Option<String>, k: &str, default| match own
        .as_deref()
        .or(default_text.as_deref())
    {
        None => Ok(default),
        Some(text) => parse_duration(text).map_err(|r| invalid(pick(own.is_some(), k), r)),
    };
    let ttl = duration(&route.ttl, &defaults.ttl, "ttl", DEFAULT_TTL)?;
    let bucket = duration(&route.bucket, &defaults.bucket, "bucket", DEFAULT_BUCKET)?;
    if ttl.as_secs() == 0 || ttl > MAX_TTL {
        return Err(invalid(
            pick(route.ttl.is_some(), "ttl"),
            format!(
                "{} is out of range: expected at least 1s and at most {}",
                as_seconds(ttl),
                as_seconds(MAX_TTL)
            ),
        ));
    }
    if bucket.as_secs() == 0 || bucket.subsec_nanos() != 0 || bucket > MAX_BUCKET {
        return Err(invalid(
            pick(route.bucket.is_some(), "bucket"),
            format!(
                "must be a whole number of seconds, at least 1s and at most {}",
                as_seconds(MAX_BUCKET)
            ),
        ));
    }
    if bucket > ttl {
        return Err(invalid(
            pick(route.bucket.is_some(), "bucket"),
            format!(
                "{} is longer than `ttl` ({}): rounding would stretch every URL's life by up to \
                 the bucket; expected a bucket no longer than ttl (a tenth of it is usual)",
                as_seconds(bucket),
                as_seconds(ttl)
            ),
        ));
    }
    let min_validity = duration(
        &route.min_validity,
        &defaults.min_validity,
        "min_validity",
        ttl / 4,
    )?;
    if min_validity >= ttl {
        return Err(invalid(
            pick(route.min_validity.is_some(), "min_validity"),
            format!(
                "{} is not shorter than `ttl` ({}): cached answers could not be kept at all; \
                 expected less than ttl (default ttl / 4)",
                as_seconds(min_validity),
                as_seconds(ttl)
            ),
        ));
    }
    let cache_size = route
        .cache_size
        .or(defaults.cache_size)
        .unwrap_or(DEFAULT_CACHE_SIZE);
    let cache_size = NonZeroUsize::new(cache_size).ok_or_else(|| {
        invalid(
            pick(route.cache_size.is_some(), "cache_size"),
            "must be at least 1",
        )
    })?;
    let max_clock_skew = duration(
        &route.max_clock_skew,
        &defaults.max_clock_skew,
        "max_clock_skew",
        DEFAULT_MAX_CLOCK_SKEW,
    )?;
    if max_clock_skew < Duration::from_secs(1) {
        return Err(invalid(
            pick(route.max_clock_skew.is_some(), "max_clock_skew"),
            "must be at least 1s: an upstream's `Date` has whole seconds",
        ));
    }
    let skew_margin = duration(
        &route.skew_margin,
        &defaults.skew_margin,
        "skew_margin",
        Duration::ZERO,
    )?;
    if skew_margin > ttl {
        return Err(invalid(
            pick(route.skew_margin.is_some(), "skew_margin"),
            format!(
                "{} is longer than `ttl` ({}): expected a margin for clock skew, seconds or \
                 minutes",
                as_seconds(skew_margin),
                as_seconds(ttl)
            ),
        ));
    }
    let signing = Signing {
        secret,
        ttl,
        bucket,
        min_validity,
        cache_size,
        max_clock_skew,
        skew_margin,
        url_style: route
            .url_style
            .or(defaults.url_style)
            .unwrap_or(UrlStyle::Query),
    };
    Ok((signing, warning))
}

/// A duration as whole seconds, for messages (`3600s`).
fn as_seconds(duration: Duration) -> String {
    format!("{}s", duration.as_secs())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env(_: &str) -> Option<String> {
        Some("s3cret".into())
    }

    fn with_env() -> RawSigning {
        RawSigning {
            secret_env: Some("S".into()),
            ..RawSigning::default()
        }
    }

    #[test]
    fn a_route_key_wins_over_signing_and_defaults_fill_the_rest() {
        let defaults = RawSigning {
            ttl: Some("2h".into()),
            bucket: Some("10m".into()),
            ..with_env()
        };
        let route = RawSigning {
            ttl: Some("900s".into()),
            ..RawSigning::default()
        };
        let (signing, warning) =
            build_signing(&route, &defaults, &env, "r", SecretsNeeded::Required).expect("valid");
        assert_eq!(signing.ttl, Duration::from_secs(900));
        assert_eq!(signing.bucket, Duration::from_secs(600));
        assert_eq!(signing.min_validity, Duration::from_secs(225));
        assert_eq!(signing.cache_size.get(), DEFAULT_CACHE_SIZE);
        assert_eq!(signing.url_style, UrlStyle::Query);
        assert!(warning.is_none());
    }

    #[test]
    fn errors_name_where_the_value_came_from() {
        let bad_bucket = RawSigning {
            bucket: Some("1500ms".into()),
            ..RawSigning::default()
        };
        let error = build_signing(&bad_bucket, &with_env(), &env, "r", SecretsNeeded::Required)
            .expect_err("fractional bucket")
            .to_string();
        assert!(
            error.starts_with("route `r`: `bucket`: must be a whole number"),
            "{error}"
        );
        let defaults = RawSigning {
            cache_size: Some(0),
            ..with_env()
        };
        let error = build_signing(
            &RawSigning::default(),
            &defaults,
            &env,
            "r",
            SecretsNeeded::Required,
        )
        .expect_err("empty cache")
        .to_string();
        assert!(
            error.starts_with("`signing.cache_size`: must be at least 1"),
            "{error}"
        );
        let error = build_signing(
            &RawSigning::default(),
            &RawSigning::default(),
            &env,
            "r",
            SecretsNeeded::Required,
        )
        .expect_err("no secret")
        .to_string();
        assert!(error.contains("no secret"), "{error}");
    }

    /// Route `r`'s signing from its own keys and `defaults`, or the error's text.
    fn built(route: &RawSigning, defaults: &RawSigning) -> Result<Signing, String> {
        build_signing(route, defaults, &env, "r", SecretsNeeded::Required)
            .map(|(signing, _)| signing)
            .map_err(|e| e.to_string())
    }

    #[test]
    fn ttl_and_bucket_are_bounded() {
        let check = |ttl: &str, bucket: &str, min_validity: Option<&str>| {
            let route = RawSigning {
                ttl: Some(ttl.into()),
                bucket: Some(bucket.into()),
                min_validity: min_validity.map(Into::into),
                ..with_env()
            };
            built(&route, &RawSigning::default())
        };
        let error = check("1s", "10y", None).expect_err("bucket > ttl");
        assert!(error.starts_with("route `r`: `bucket`:"), "{error}");
        let error = check("10m", "15m", None).expect_err("bucket > ttl");
        assert!(error.contains("longer than `ttl`"), "{error}");
        let error = check("500000000000y", "5m", None).expect_err("huge ttl");
        assert!(error.starts_with("route `r`: `ttl`:"), "{error}");
        let error = check("31d", "5m", None).expect_err("ttl over the maximum");
        assert!(error.contains("at most 2592000s"), "{error}");
        let error = check("1h", "5m", Some("1h")).expect_err("min_validity = ttl");
        assert!(error.starts_with("route `r`: `min_validity`:"), "{error}");
        let signing = check("30d", "1d", Some("1m")).expect("the maxima are allowed");
        assert_eq!(signing.min_validity, Duration::from_secs(60));
    }

    #[test]
    fn max_clock_skew_defaults_to_30s_is_inherited_and_is_at_least_a_second() {
        let build = |route: RawSigning, defaults: RawSigning| {
            built(&route, &defaults).map(|signing| signing.max_clock_skew)
        };
        assert_eq!(
            build(with_env(), RawSigning::default()),
            Ok(Duration::from_secs(30))
        );
        let defaults = RawSigning {
            max_clock_skew: Some("2m".into()),
            ..RawSigning::default()
        };
        assert_eq!(build(with_env(), defaults), Ok(Duration::from_secs(120)));
        let zero = RawSigning {
            max_clock_skew: Some("500ms".into()),
            ..with_env()
        };
        let error = build(zero, RawSigning::default()).expect_err("under a second");
        assert!(
            error.starts_with("route `r`: `max_clock_skew`: must be at least 1s"),
            "{error}"
        );
    }

    #[test]
    fn skew_margin_defaults_to_none_and_is_at_most_ttl() {
        let build = |margin: Option<&str>| {
            let route = RawSigning {
                skew_margin: margin.map(Into::into),
                ..with_env()
            };
            built(&route, &RawSigning::default()).map(|signing| signing.skew_margin)
        };
        assert_eq!(build(None), Ok(Duration::ZERO));
        assert_eq!(build(Some("2m")), Ok(Duration::from_secs(120)));
        let error = build(Some("2h")).expect_err("longer than ttl");
        assert!(
            error.starts_with("route `r`: `skew_margin`: 7200s is longer than `ttl`"),
            "{error}"
        );
    }
}
