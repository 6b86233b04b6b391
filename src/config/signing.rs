//! `[signing]` and its per-route overrides: the secret, expiry and cache settings of a route.

use std::num::NonZeroUsize;
use std::time::Duration;

use super::raw::RawSigning;
use super::secret_source::{SecretsNeeded, load_next_secret, load_secret};
use super::units::{parse_duration, parse_moment};
use super::{
    ConfigError, DEFAULT_BUCKET, DEFAULT_CACHE_SIZE, DEFAULT_MAX_CLOCK_SKEW, DEFAULT_TTL,
    MAX_BUCKET, MAX_TTL, invalid,
};
use crate::filelink::UrlStyle;
use crate::policy::bucketed_expiry;
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
    /// `secret_next_env`/`secret_next_file` and `switch_at`: a change of secret, planned or
    /// under way. Default none.
    pub rotation: Rotation,
}

/// A change of secret: what `secret_next_env`/`secret_next_file` and `switch_at` say together.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Rotation {
    /// Neither key: one secret.
    None,
    /// `secret_next_*` without `switch_at`: the secret signs, and wherever signgate verifies
    /// (verify routes, `explain`) a URL signed with either secret is accepted. For rotations
    /// where signgate holds both ends.
    Overlap {
        /// The next secret.
        next: Secret,
    },
    /// `switch_at` and `secret_next_*`: the secret signs until `at` and nothing it signs expires
    /// after `at`; from `at` on the next secret signs, and only it is accepted.
    Scheduled {
        /// `switch_at`, unix seconds.
        at: u64,
        /// The next secret.
        next: Secret,
    },
    /// `switch_at` alone: nothing signed before `at` expires after it; the new secret arrives
    /// by a change to `secret_file` (or a reload) once it exists on the CDN.
    Deadline {
        /// `switch_at`, unix seconds.
        at: u64,
    },
}

impl Rotation {
    /// `switch_at`, if set.
    pub fn switch_at(&self) -> Option<u64> {
        match self {
            Rotation::Scheduled { at, .. } | Rotation::Deadline { at } => Some(*at),
            Rotation::None | Rotation::Overlap { .. } => None,
        }
    }

    /// The next secret, if set.
    pub fn next(&self) -> Option<&Secret> {
        match self {
            Rotation::Overlap { next } | Rotation::Scheduled { next, .. } => Some(next),
            Rotation::None | Rotation::Deadline { .. } => None,
        }
    }
}

/// Which of a route's secrets is in use.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SecretRole {
    /// `secret_env`/`secret_file`.
    Current,
    /// `secret_next_env`/`secret_next_file`.
    Next,
}

impl SecretRole {
    /// The label metrics and `explain` use: `current` or `next`.
    pub fn as_str(self) -> &'static str {
        match self {
            SecretRole::Current => "current",
            SecretRole::Next => "next",
        }
    }
}

impl Signing {
    /// Which secret signs at `now`: the next one from a scheduled `switch_at` on.
    pub fn role_at(&self, now: u64) -> SecretRole {
        match &self.rotation {
            Rotation::Scheduled { at, .. } if now >= *at => SecretRole::Next,
            _ => SecretRole::Current,
        }
    }

    /// The secret that signs at `now`.
    pub fn secret_at(&self, now: u64) -> &Secret {
        match (self.role_at(now), self.rotation.next()) {
            (SecretRole::Next, Some(next)) => next,
            _ => &self.secret,
        }
    }

    /// The secrets a URL may be signed with at `now`, the one that signs first: both while an
    /// overlap lasts or a scheduled switch is ahead, only the next one from the switch on.
    pub fn accepted_secrets(&self, now: u64) -> impl Iterator<Item = (SecretRole, &Secret)> {
        let (first, second) = match &self.rotation {
            Rotation::None | Rotation::Deadline { .. } => {
                ((SecretRole::Current, &self.secret), None)
            }
            Rotation::Overlap { next } => (
                (SecretRole::Current, &self.secret),
                Some((SecretRole::Next, next)),
            ),
            Rotation::Scheduled { at, next } if now >= *at => ((SecretRole::Next, next), None),
            Rotation::Scheduled { next, .. } => (
                (SecretRole::Current, &self.secret),
                Some((SecretRole::Next, next)),
            ),
        };
        std::iter::once(first).chain(second)
    }

    /// The expiry credentials handed out at `now` carry: at least `ttl` and `skew_margin` on,
    /// rounded up to a bucket; while a `switch_at` is ahead, never after it: rounded down to
    /// the last bucket before it, or the moment itself once that bucket has begun.
    pub fn expiry_at(&self, now: u64) -> u64 {
        let expiry = bucketed_expiry(now, self.ttl + self.skew_margin, self.bucket);
        match self.deadline_at(now) {
            Some(at) if expiry > at => {
                let bucket = self.bucket.as_secs().max(1);
                let last_bucket = at - at % bucket;
                if last_bucket > now { last_bucket } else { at }
            }
            _ => expiry,
        }
    }

    /// The latest expiry a URL handed out at `now` may carry: `switch_at`, while it is ahead.
    pub fn deadline_at(&self, now: u64) -> Option<u64> {
        self.rotation.switch_at().filter(|at| now < *at)
    }
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
    let own_secret = route.secret_env.is_some() || route.secret_file.is_some();
    let (secret, warning, rotation) = if own_secret {
        let at = format!("route `{route_name}`: ");
        let (secret, warning) = load_secret(route, env, &at, needed)?;
        let (rotation, next_warning) = build_rotation(route, env, &at, needed)?;
        (secret, warning.or(next_warning), rotation)
    } else if let Some(key) = rotation_key_set(route) {
        return Err(invalid(
            format!("route `{route_name}`: `{key}`"),
            "rotates the route's own secret, and the route has none: set `secret_env` or \
             `secret_file` in the route too, or put the key in [signing] beside its secret",
        ));
    } else if defaults.secret_env.is_some() || defaults.secret_file.is_some() {
        let (secret, warning) = load_secret(defaults, env, "signing.", needed)?;
        let (rotation, next_warning) = build_rotation(defaults, env, "signing.", needed)?;
        (secret, warning.or(next_warning), rotation)
    } else if let Some(key) = rotation_key_set(defaults) {
        return Err(invalid(
            format!("`signing.{key}`"),
            "rotates `[signing]`'s secret, and it has none: set `secret_env` or `secret_file` \
             there too",
        ));
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
        rotation,
        url_style: route
            .url_style
            .or(defaults.url_style)
            .unwrap_or(UrlStyle::Query),
    };
    Ok((signing, warning))
}

/// The first rotation key `raw` sets, if any.
pub(super) fn rotation_key_set(raw: &RawSigning) -> Option<&'static str> {
    [
        ("secret_next_env", raw.secret_next_env.is_some()),
        ("secret_next_file", raw.secret_next_file.is_some()),
        ("switch_at", raw.switch_at.is_some()),
    ]
    .into_iter()
    .find_map(|(key, set)| set.then_some(key))
}

/// The rotation `raw`'s keys describe (where `at` says they are), and a warning when the next
/// secret is a placeholder.
fn build_rotation(
    raw: &RawSigning,
    env: &dyn Fn(&str) -> Option<String>,
    at: &str,
    needed: SecretsNeeded,
) -> Result<(Rotation, Option<String>), ConfigError> {
    let next = load_next_secret(raw, env, at, needed)?;
    let switch_at = raw
        .switch_at
        .as_ref()
        .map(|value| {
            parse_moment(value).map_err(|reason| {
                let key = if at.ends_with('.') {
                    format!("`{at}switch_at`")
                } else {
                    format!("{at}`switch_at`")
                };
                invalid(key, reason)
            })
        })
        .transpose()?;
    Ok(match (next, switch_at) {
        (None, None) => (Rotation::None, None),
        (None, Some(at)) => (Rotation::Deadline { at }, None),
        (Some((next, warning)), None) => (Rotation::Overlap { next }, warning),
        (Some((next, warning)), Some(at)) => (Rotation::Scheduled { at, next }, warning),
    })
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

    /// A signing with ttl 1h and bucket 5m whose rotation is `rotation`.
    fn rotating(rotation: Rotation) -> Signing {
        Signing {
            rotation,
            ..built(&with_env(), &RawSigning::default()).expect("valid")
        }
    }

    fn next_secret() -> Secret {
        Secret::new("n3xt".into()).expect("not empty")
    }

    #[test]
    fn before_a_switch_expiries_stop_at_it_on_a_bucket_and_after_it_they_are_as_usual() {
        let at = 1_800_002_000; // 200 s into a bucket
        let signing = rotating(Rotation::Deadline { at });
        // Far ahead: as without a switch (ttl on, rounded up to a bucket).
        assert_eq!(signing.expiry_at(1_799_990_000), 1_799_993_700);
        // Within a ttl of it: the last bucket boundary before it, shared by every request.
        assert_eq!(signing.expiry_at(1_800_000_100), 1_800_001_800);
        assert_eq!(signing.expiry_at(1_800_001_799), 1_800_001_800);
        // That bucket has begun: the moment itself.
        assert_eq!(signing.expiry_at(1_800_001_800), at);
        assert_eq!(signing.expiry_at(at - 1), at);
        // From the switch on: a whole ttl again.
        assert_eq!(signing.expiry_at(at), 1_800_005_700);
        // A switch on a bucket boundary is its own last bucket.
        let on_boundary = rotating(Rotation::Deadline { at: 1_800_001_800 });
        assert_eq!(on_boundary.expiry_at(1_800_000_100), 1_800_001_800);
        assert_eq!(on_boundary.expiry_at(1_800_001_799), 1_800_001_800);
    }

    #[test]
    fn the_next_secret_signs_from_the_switch_and_alone_is_accepted_then() {
        let at = 1_800_002_000;
        let signing = rotating(Rotation::Scheduled {
            at,
            next: next_secret(),
        });
        let roles = |now| {
            signing
                .accepted_secrets(now)
                .map(|(role, _)| role)
                .collect::<Vec<_>>()
        };
        assert_eq!(signing.role_at(at - 1), SecretRole::Current);
        assert_eq!(signing.secret_at(at - 1), &signing.secret);
        assert_eq!(roles(at - 1), [SecretRole::Current, SecretRole::Next]);
        assert_eq!(signing.role_at(at), SecretRole::Next);
        assert_eq!(signing.secret_at(at), &next_secret());
        assert_eq!(roles(at), [SecretRole::Next]);
        assert_eq!(signing.deadline_at(at - 1), Some(at));
        assert_eq!(signing.deadline_at(at), None);

        let overlap = rotating(Rotation::Overlap {
            next: next_secret(),
        });
        let both: Vec<_> = overlap.accepted_secrets(at).map(|(role, _)| role).collect();
        assert_eq!(both, [SecretRole::Current, SecretRole::Next]);
        assert_eq!(overlap.secret_at(u64::MAX), &overlap.secret);
        assert_eq!(overlap.expiry_at(at), 1_800_005_700, "no deadline");
        let deadline = rotating(Rotation::Deadline { at });
        assert_eq!(deadline.secret_at(at + 1), &deadline.secret);
        assert_eq!(deadline.accepted_secrets(at - 1).count(), 1);
    }

    #[test]
    fn rotation_keys_build_each_kind_and_belong_beside_their_secret() {
        let mut next_file = tempfile::NamedTempFile::new().expect("temp file");
        std::io::Write::write_all(&mut next_file, b"n3xt\n").expect("write");
        let rotation = |raw: RawSigning| built(&raw, &RawSigning::default()).map(|s| s.rotation);
        let switch = || Some(toml::Value::String("2027-01-01T00:00:00Z".into()));
        assert_eq!(rotation(with_env()), Ok(Rotation::None));
        assert_eq!(
            rotation(RawSigning {
                switch_at: switch(),
                ..with_env()
            }),
            Ok(Rotation::Deadline { at: 1_798_761_600 })
        );
        assert_eq!(
            rotation(RawSigning {
                secret_next_file: Some(next_file.path().to_owned()),
                ..with_env()
            }),
            Ok(Rotation::Overlap {
                next: next_secret()
            })
        );
        assert_eq!(
            rotation(RawSigning {
                secret_next_file: Some(next_file.path().to_owned()),
                switch_at: switch(),
                ..with_env()
            }),
            Ok(Rotation::Scheduled {
                at: 1_798_761_600,
                next: next_secret()
            })
        );
        // A route that rotates a secret it does not have.
        let error = built(
            &RawSigning {
                switch_at: switch(),
                ..RawSigning::default()
            },
            &with_env(),
        )
        .expect_err("no own secret");
        assert!(
            error.starts_with("route `r`: `switch_at`: rotates the route's own secret"),
            "{error}"
        );
        // [signing]'s schedule goes with [signing]'s secret.
        let defaults = RawSigning {
            switch_at: switch(),
            ..with_env()
        };
        let inherited = built(&RawSigning::default(), &defaults).expect("valid");
        assert_eq!(inherited.rotation.switch_at(), Some(1_798_761_600));
        let own = built(&with_env(), &defaults).expect("valid");
        assert_eq!(
            own.rotation,
            Rotation::None,
            "a route's own secret has its own plan"
        );
        let error = built(
            &RawSigning {
                switch_at: Some(toml::Value::String("soon".into())),
                ..with_env()
            },
            &RawSigning::default(),
        )
        .expect_err("not a moment");
        assert!(
            error.starts_with("route `r`: `switch_at`: must be an RFC 3339"),
            "{error}"
        );
        let error = built(
            &RawSigning {
                secret_next_env: Some("N".into()),
                secret_next_file: Some(next_file.path().to_owned()),
                ..with_env()
            },
            &RawSigning::default(),
        )
        .expect_err("both");
        assert!(
            error.contains("set `secret_next_env` or `secret_next_file`, not both"),
            "{error}"
        );
    }
}
