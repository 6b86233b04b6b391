//! `scheme` and the keys of each URL-signing scheme: which signature a route's URLs carry.

use super::raw::{RawRoute, RawSigning};
use super::route::Upstream;
use super::secret_source::{SecretsNeeded, load_key_material};
use super::{ConfigError, Mode, invalid};
use crate::secret::KeyMaterial;

/// How a route's URLs are signed.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub enum SchemeConfig {
    /// `filestack` (the default): a policy and its HMAC-SHA256 signature.
    #[default]
    Filestack,
    /// `s3`: an S3-compatible presigned GET (AWS Signature Version 4); `upstream` is the
    /// bucket's endpoint, virtual-hosted (`https://BUCKET.s3.REGION.amazonaws.com`) or path
    /// style (`https://ENDPOINT/BUCKET`).
    S3 {
        /// `access_key_id`.
        access_key_id: String,
        /// `region` (`auto` for R2).
        region: String,
        /// The secret access key (`secret_env`/`secret_file`).
        secret: KeyMaterial,
    },
    /// `cloudfront`: a signed URL with a canned policy (`Expires`, `Signature`,
    /// `Key-Pair-Id`).
    CloudFront {
        /// `key_pair_id`: the public key's ID in CloudFront.
        key_pair_id: String,
        /// The private key, PEM (`secret_file`).
        private_key: KeyMaterial,
        /// `policy_resource`: a wildcard resource (`https://d111.cloudfront.net/images/*`); URLs
        /// it covers carry one custom policy per bucket instead of a canned one each. Default
        /// none.
        resource: Option<String>,
    },
    /// `imgix`: the `s` parameter, with an `expires` parameter when `expires_param` is set.
    Imgix {
        /// The source's secure URL token (`secret_env`/`secret_file`).
        token: KeyMaterial,
        /// `expires_param`: add a bucketed `expires`. Default true.
        expires: bool,
    },
    /// `akamai`: an EdgeAuth token in the query parameter `token_name`.
    Akamai {
        /// The token key, hex (`secret_env`/`secret_file`).
        key: KeyMaterial,
        /// `token_name`: the query parameter that carries the token, or the cookie on a
        /// redirect route with `token_cookie_domain`. Default `hdnts`.
        token_name: String,
        /// `token_algorithm`: `sha256` (default), `sha1` or `md5`.
        algorithm: String,
    },
}

impl SchemeConfig {
    /// The name `scheme` takes for this one.
    pub fn name(&self) -> &'static str {
        match self {
            SchemeConfig::Filestack => "filestack",
            SchemeConfig::S3 { .. } => "s3",
            SchemeConfig::CloudFront { .. } => "cloudfront",
            SchemeConfig::Imgix { .. } => "imgix",
            SchemeConfig::Akamai { .. } => "akamai",
        }
    }
}

/// The scheme names `scheme` takes.
const SCHEMES: [&str; 5] = ["filestack", "s3", "cloudfront", "imgix", "akamai"];

/// The route's scheme and its keys: each scheme's keys only with it, the Filestack-only keys
/// only without another, and the secret the scheme needs from where the route's secret comes.
pub(super) fn build_scheme(
    raw: &RawRoute,
    defaults: &RawSigning,
    mode: Mode,
    env: &dyn Fn(&str) -> Option<String>,
    needed: SecretsNeeded,
    key: &dyn Fn(&str) -> String,
) -> Result<SchemeConfig, ConfigError> {
    let name = raw.scheme.as_deref().unwrap_or("filestack");
    if !SCHEMES.contains(&name) {
        return Err(invalid(
            key("scheme"),
            format!("must be one of {}, got {name:?}", SCHEMES.join(", ")),
        ));
    }
    if name != "filestack" && !matches!(mode, Mode::Proxy | Mode::Redirect | Mode::Site) {
        return Err(invalid(
            key("scheme"),
            format!(
                "{name:?} signs proxy, redirect and site routes; {} routes speak Filestack's \
                 policies only",
                mode.as_str()
            ),
        ));
    }
    let scheme_keys: [(&str, bool, &[&str]); 8] = [
        ("access_key_id", raw.access_key_id.is_some(), &["s3"]),
        ("region", raw.region.is_some(), &["s3"]),
        ("key_pair_id", raw.key_pair_id.is_some(), &["cloudfront"]),
        (
            "policy_resource",
            raw.policy_resource.is_some(),
            &["cloudfront"],
        ),
        ("expires_param", raw.expires_param.is_some(), &["imgix"]),
        ("token_name", raw.token_name.is_some(), &["akamai"]),
        (
            "token_algorithm",
            raw.token_algorithm.is_some(),
            &["akamai"],
        ),
        (
            "token_cookie_domain",
            raw.token_cookie_domain.is_some(),
            &["akamai"],
        ),
    ];
    for (k, set, schemes) in scheme_keys {
        if set && !schemes.contains(&name) {
            return Err(invalid(
                key(k),
                format!(
                    "is for scheme = {:?} routes, and this route's scheme is {name:?}: remove it",
                    schemes[0]
                ),
            ));
        }
    }
    if name == "filestack" {
        return Ok(SchemeConfig::Filestack);
    }
    let filestack_keys = [
        ("calls", raw.calls.is_some()),
        ("tasks", raw.tasks.is_some()),
        ("url_style", raw.url_style.is_some()),
        ("api_key", raw.api_key.is_some()),
        ("external_sources", raw.external_sources.is_some()),
        ("canary_handle", raw.canary_handle.is_some()),
    ];
    if let Some((k, _)) = filestack_keys.iter().find(|(_, set)| *set) {
        return Err(invalid(
            key(k),
            format!("is Filestack's, and this route's scheme is {name:?}: remove it"),
        ));
    }
    let signing = raw.signing_overrides();
    let (source, at) = if signing.secret_env.is_some() || signing.secret_file.is_some() {
        (&signing, format!("route `{}`: ", raw.name))
    } else {
        (defaults, "signing.".to_owned())
    };
    let secret_key = |k: &str| {
        if at.starts_with("route") {
            key(k)
        } else {
            format!("`signing.{k}`")
        }
    };
    // Rotation switches Filestack's HMAC secret; another scheme's key would go on signing with
    // the first one while the route said it had switched.
    if let Some(k) = super::signing::rotation_key_set(source) {
        return Err(invalid(
            secret_key(k),
            format!(
                "rotates a Filestack secret, and scheme = {name:?} signs with its own key: \
                 rotate it on the CDN's side (a second key), then point `secret_env` or \
                 `secret_file` at the new one and reload{}",
                if at.starts_with("route") {
                    ""
                } else {
                    "; or give this route its own `secret_env` or `secret_file`"
                }
            ),
        ));
    }
    let material = load_key_material(source, env, &at, needed)?;
    let hex_key = material.as_ref().is_none_or(|material| {
        material.expose().len().is_multiple_of(2)
            && material.expose().bytes().all(|b| b.is_ascii_hexdigit())
    });
    // Where the secret is not available (`signgate check` in CI), a stand-in the scheme never
    // signs with: the route's `Secret` is a placeholder too, and nothing serves from it.
    let material = match material {
        Some(material) => material,
        None => KeyMaterial::new(NOT_AVAILABLE.to_owned())
            .map_err(|_| invalid(key("scheme"), "no secret"))?,
    };
    let required = |value: &Option<String>, k: &str, what: &str| {
        value
            .clone()
            .filter(|v| !v.trim().is_empty())
            .ok_or_else(|| {
                invalid(
                    key(k),
                    format!("is required with scheme = {name:?}: {what}"),
                )
            })
    };
    let available = material.expose() != NOT_AVAILABLE;
    let config = match name {
        "s3" => SchemeConfig::S3 {
            access_key_id: required(
                &raw.access_key_id,
                "access_key_id",
                "the access key ID whose secret access key `secret_env` or `secret_file` holds",
            )?,
            region: required(&raw.region, "region", "the bucket's region (`auto` for R2)")?,
            secret: material,
        },
        "cloudfront" => {
            if source.secret_file.is_none() {
                return Err(invalid(
                    secret_key("secret_file"),
                    "scheme = \"cloudfront\" reads its private key from a PEM file: set \
                     `secret_file`",
                ));
            }
            let resource = raw.policy_resource.clone();
            if let Some(resource) = &resource {
                let plain = (resource.starts_with("https://") || resource.starts_with("http://"))
                    && resource.contains('*')
                    && !resource.contains(['"', '\\', ' ']);
                if !plain {
                    return Err(invalid(
                        key("policy_resource"),
                        format!(
                            "must be a URL pattern with a `*`, such as \
                             \"https://d111111abcdef8.cloudfront.net/images/*\", got {resource:?}"
                        ),
                    ));
                }
            }
            SchemeConfig::CloudFront {
                key_pair_id: required(
                    &raw.key_pair_id,
                    "key_pair_id",
                    "the ID CloudFront gave the public key",
                )?,
                private_key: material,
                resource,
            }
        }
        "imgix" => SchemeConfig::Imgix {
            token: material,
            expires: raw.expires_param.unwrap_or(true),
        },
        _ => {
            let algorithm = raw
                .token_algorithm
                .clone()
                .unwrap_or_else(|| "sha256".to_owned());
            if !["sha256", "sha1", "md5"].contains(&algorithm.as_str()) {
                return Err(invalid(
                    key("token_algorithm"),
                    format!("must be sha256, sha1 or md5, got {algorithm:?}"),
                ));
            }
            let token_name = raw.token_name.clone().unwrap_or_else(|| "hdnts".to_owned());
            let plain = !token_name.is_empty()
                && token_name
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-');
            if !plain {
                return Err(invalid(
                    key("token_name"),
                    "must be a query parameter name of letters, digits, `_` and `-`",
                ));
            }
            if !hex_key {
                let k = if source.secret_file.is_some() {
                    "secret_file"
                } else {
                    "secret_env"
                };
                return Err(invalid(
                    secret_key(k),
                    "scheme = \"akamai\" needs the token key in hex, as Akamai's property \
                     shows it",
                ));
            }
            SchemeConfig::Akamai {
                key: material,
                token_name,
                algorithm,
            }
        }
    };
    // The key itself, where it is here: a PEM that is not an RSA key, a key too short.
    if available && let Err(reason) = crate::scheme::signer_for(&config) {
        let k = if source.secret_file.is_some() {
            "secret_file"
        } else {
            "secret_env"
        };
        return Err(invalid(secret_key(k), reason));
    }
    Ok(config)
}

/// Where a redirect route with `token_cookie_domain` puts its Akamai token: a cookie the
/// browser presents to the CDN when it follows the 307, instead of a query parameter.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TokenCookie {
    /// The cookie's name: the route's `token_name` (default `hdnts`).
    pub name: String,
    /// `token_cookie_domain`, lowercase, without a leading `.`: the upstream's host is that
    /// domain or under it.
    pub domain: String,
    /// Whether the cookie is marked `Secure`: when the upstream is https.
    pub secure: bool,
}

/// `token_cookie_domain` on a proxy or site route, refused with the reason before the table of
/// modes would refuse it without one.
pub(super) fn refuse_token_cookie_off_redirect(
    raw: &RawRoute,
    mode: Mode,
    key: &dyn Fn(&str) -> String,
) -> Result<(), ConfigError> {
    let why = match mode {
        Mode::Proxy => "a proxy route fetches the object itself, with the token in the query",
        Mode::Site => "a site route's pages carry signed URLs, with the token in the query",
        Mode::Redirect | Mode::UploadPolicy | Mode::Verify => return Ok(()),
    };
    if raw.token_cookie_domain.is_none() {
        return Ok(());
    }
    Err(invalid(
        key("token_cookie_domain"),
        format!(
            "is for redirect routes, the only ones that hand a browser a URL to follow (the \
             cookie goes out with the 307); {why}: remove it, or make the route \
             mode = \"redirect\""
        ),
    ))
}

/// A redirect route's `token_cookie_domain`, for its Akamai `scheme` and `upstream`: a plain
/// domain name that is the upstream's host or a parent of it, since a browser sends a cookie
/// only to the hosts its `Domain` covers.
pub(super) fn build_token_cookie(
    raw: &RawRoute,
    scheme: &SchemeConfig,
    upstream: &Upstream,
    key: &dyn Fn(&str) -> String,
) -> Result<Option<TokenCookie>, ConfigError> {
    let Some(text) = &raw.token_cookie_domain else {
        return Ok(None);
    };
    // `build_scheme` refuses the key beside any other scheme.
    let SchemeConfig::Akamai { token_name, .. } = scheme else {
        return Err(invalid(
            key("token_cookie_domain"),
            "is for scheme = \"akamai\" routes: remove it",
        ));
    };
    let domain = text.strip_prefix('.').unwrap_or(text).to_ascii_lowercase();
    let plain = domain.split('.').all(|label| {
        !label.is_empty()
            && label
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-')
    });
    if !plain {
        return Err(invalid(
            key("token_cookie_domain"),
            format!(
                "must be a domain name such as \"example.com\" (letters, digits, `-` and `.`), \
                 got {text:?}"
            ),
        ));
    }
    let host = upstream.authority().host().to_ascii_lowercase();
    // An address is covered by itself only: `0.0.1` is no parent of `127.0.0.1`.
    let covered = host == domain
        || (host.parse::<std::net::IpAddr>().is_err() && host.ends_with(&format!(".{domain}")));
    if !covered {
        return Err(invalid(
            key("token_cookie_domain"),
            format!(
                "{domain:?} does not cover the upstream's host {host:?}: a browser sends the \
                 cookie only to that domain and the hosts under it, so the CDN would never see \
                 the token; set the upstream's host or a domain it is under"
            ),
        ));
    }
    Ok(Some(TokenCookie {
        name: token_name.clone(),
        domain,
        secure: upstream.is_https(),
    }))
}

/// What stands in for a secret not available where the config is checked.
const NOT_AVAILABLE: &str = "<not available here>";
