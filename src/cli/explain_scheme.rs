//! `signgate explain` for URLs signed with another scheme (S3 presigned, CloudFront, imgix,
//! Akamai EdgeAuth): what the URL carries, and whether it verifies with the key of a configured
//! route of that scheme.

use std::time::{Duration, UNIX_EPOCH};

use crate::config::{Config, RouteKind, SchemeConfig};
use crate::scheme::akamai::{Algorithm, EdgeAuth};
use crate::scheme::cloudfront::{CloudFrontSigner, SignedUrl};
use crate::scheme::imgix::ImgixSigner;
use crate::scheme::s3::{S3Presigned, S3Signer};
use crate::secret::KeyMaterial;

/// The routes of the config that sign with another scheme, each with its name.
#[derive(Debug, Default)]
pub struct SchemeRoutes(Vec<(String, SchemeConfig)>);

impl SchemeRoutes {
    /// The routes of `config` whose scheme is not Filestack's, and every site route's
    /// `[[route.cdn]]` entries (named by the route and the entry's first host).
    pub fn of(config: &Config) -> Self {
        let mut routes = Vec::new();
        for route in &config.routes {
            if route.scheme != SchemeConfig::Filestack {
                routes.push((route.name.clone(), route.scheme.clone()));
            }
            if let RouteKind::Site(site) = &route.kind {
                for cdn in &site.rewrite.cdns {
                    let host = cdn.hosts.first().map_or("", String::as_str);
                    routes.push((format!("{} ({host})", route.name), cdn.scheme.clone()));
                }
            }
        }
        Self(routes)
    }
}

impl SchemeRoutes {
    /// `verify`'s verdict for each route it applies to (it answers `None` for the others).
    fn check(
        &self,
        mut verify: impl FnMut(&SchemeConfig) -> Option<Result<(), String>>,
    ) -> Vec<(String, Result<(), String>)> {
        self.0
            .iter()
            .filter_map(|(name, scheme)| Some((name.clone(), verify(scheme)?)))
            .collect()
    }
}

/// What `explain` found, as labelled lines, and whether the URL verified.
pub struct SchemeReport {
    /// `(label, value)` lines.
    pub lines: Vec<(&'static str, String)>,
    /// `Some(true)` when a configured route's key verifies it, `Some(false)` when one was tried
    /// and none did, `None` when there was no key to try.
    pub valid: Option<bool>,
}

/// The report for `url` if it carries another scheme's credentials; `None` otherwise (a
/// Filestack URL, or none).
pub fn explain(url: &str, routes: &SchemeRoutes, now: u64) -> Option<SchemeReport> {
    let query = url.split_once('?').map_or("", |(_, query)| query);
    let has = |name: &str| {
        query
            .split('&')
            .any(|pair| pair.split('=').next() == Some(name))
    };
    if has("X-Amz-Signature") {
        return Some(s3(url, routes, now));
    }
    if has("Key-Pair-Id") {
        return Some(cloudfront(url, routes, now));
    }
    if let Some(report) = akamai(url, query, routes, now) {
        return Some(report);
    }
    if has("s")
        && routes
            .0
            .iter()
            .any(|(_, s)| matches!(s, SchemeConfig::Imgix { .. }))
    {
        return Some(imgix(url, routes, now));
    }
    None
}

fn date(at: u64) -> String {
    humantime::format_rfc3339_seconds(UNIX_EPOCH + Duration::from_secs(at)).to_string()
}

/// The verdicts of every configured route of one scheme, as lines, and the overall result.
fn verdicts(
    lines: &mut Vec<(&'static str, String)>,
    tried: Vec<(String, Result<(), String>)>,
) -> Option<bool> {
    if tried.is_empty() {
        lines.push((
            "signature",
            "not checked: no route of this scheme in the config".into(),
        ));
        return None;
    }
    let mut valid = false;
    for (route, verdict) in tried {
        match verdict {
            Ok(()) => {
                valid = true;
                lines.push(("valid", format!("yes, for route `{route}`'s key")));
            }
            Err(why) => lines.push(("route", format!("`{route}`: {why}"))),
        }
    }
    Some(valid)
}

fn s3(url: &str, routes: &SchemeRoutes, now: u64) -> SchemeReport {
    let mut lines = vec![(
        "kind",
        "S3 presigned GET (AWS Signature Version 4)".to_owned(),
    )];
    match S3Presigned::decode(url) {
        Ok(presigned) => {
            lines.push(("access key id", presigned.access_key_id.clone()));
            lines.push((
                "scope",
                format!(
                    "{}/{}/{}",
                    presigned.scope_date, presigned.region, presigned.service
                ),
            ));
            lines.push(("signed at", date(presigned.signed_at)));
            lines.push(("expiry", date(presigned.expiry())));
            lines.push(("signed headers", presigned.signed_headers.join(";")));
        }
        Err(e) => lines.push(("credentials", format!("cannot be read: {e}"))),
    }
    let tried = routes.check(|scheme| match scheme {
        SchemeConfig::S3 {
            access_key_id,
            region,
            secret,
        } => Some(
            S3Signer::new(access_key_id.clone(), secret.clone(), region.clone())
                .map_err(|e| e.to_string())
                .and_then(|signer| {
                    signer
                        .verify(url, now)
                        .map(|_| ())
                        .map_err(|e| e.to_string())
                }),
        ),
        _ => None,
    });
    let valid = verdicts(&mut lines, tried);
    SchemeReport { lines, valid }
}

fn cloudfront(url: &str, routes: &SchemeRoutes, now: u64) -> SchemeReport {
    let mut lines = vec![("kind", "CloudFront signed URL".to_owned())];
    match SignedUrl::decode(url) {
        Ok(signed) => {
            lines.push((
                "policy",
                if signed.canned { "canned" } else { "custom" }.to_owned(),
            ));
            lines.push(("policy json", signed.policy_json.clone()));
            lines.push(("key pair id", signed.key_pair_id.clone()));
            lines.push(("expiry", date(signed.expiry)));
        }
        Err(e) => lines.push(("credentials", format!("cannot be read: {e}"))),
    }
    let tried = routes.check(|scheme| match scheme {
        SchemeConfig::CloudFront {
            key_pair_id,
            private_key,
            ..
        } => Some(
            CloudFrontSigner::from_pem(key_pair_id, private_key.expose())
                .map_err(|e| e.to_string())
                .and_then(|signer| {
                    signer
                        .verify(url, now)
                        .map(|_| ())
                        .map_err(|e| e.to_string())
                }),
        ),
        _ => None,
    });
    let valid = verdicts(&mut lines, tried);
    SchemeReport { lines, valid }
}

fn akamai(url: &str, query: &str, routes: &SchemeRoutes, now: u64) -> Option<SchemeReport> {
    let path = url
        .split_once("://")
        .map_or(url, |(_, rest)| rest.find('/').map_or("/", |i| &rest[i..]));
    let path = path.split_once('?').map_or(path, |(path, _)| path);
    let mut found = None;
    let tried = routes.check(|scheme| {
        let SchemeConfig::Akamai {
            key,
            token_name,
            algorithm,
        } = scheme
        else {
            return None;
        };
        let token = query
            .split('&')
            .find_map(|pair| pair.strip_prefix(&format!("{token_name}=")))?;
        found.get_or_insert_with(|| format!("{token_name}={token}"));
        Some(verify_akamai(key, algorithm, token, Some(path), now))
    });
    let mut lines = vec![
        ("kind", "Akamai EdgeAuth token".to_owned()),
        ("token", found?),
    ];
    let valid = verdicts(&mut lines, tried);
    Some(SchemeReport { lines, valid })
}

/// The fields an EdgeAuth token may start with: what tells a bare token from `NAME=TOKEN`.
const TOKEN_FIRST_FIELDS: [&str; 3] = ["ip", "st", "exp"];

/// Whether `text` is an Akamai token without its URL: a bare token, or `NAME=TOKEN` as a cookie
/// carries it (a redirect route with `token_cookie_domain` hands it out so), attributes after
/// a `;` (pasted from `Set-Cookie`) ignored.
pub fn is_token_text(text: &str) -> bool {
    token_of(text).is_some()
}

/// The token in `text` (see [`is_token_text`]).
fn token_of(text: &str) -> Option<&str> {
    if text.starts_with('/') || text.contains("://") {
        return None;
    }
    let text = text.split(';').next().unwrap_or(text).trim();
    let token = match text.split_once('=') {
        Some((name, token)) if !TOKEN_FIRST_FIELDS.contains(&name) => token,
        _ => text,
    };
    let shaped = token.contains("~hmac=") && token.split('~').any(|f| f.starts_with("exp="));
    shaped.then_some(token)
}

/// The report for an Akamai token given without its URL ([`is_token_text`]): checked with each
/// Akamai route's key for the path its own ACL names, since no URL says which path was asked
/// for. `None` when `text` is not one.
pub fn explain_token(text: &str, routes: &SchemeRoutes, now: u64) -> Option<SchemeReport> {
    let token = token_of(text)?;
    let tried = routes.check(|scheme| match scheme {
        SchemeConfig::Akamai { key, algorithm, .. } => {
            Some(verify_akamai(key, algorithm, token, None, now))
        }
        _ => None,
    });
    let mut lines = vec![
        ("kind", "Akamai EdgeAuth token, without its URL".to_owned()),
        ("token", token.to_owned()),
        (
            "path",
            "none given: checked for the path its ACL names".to_owned(),
        ),
    ];
    let valid = verdicts(&mut lines, tried);
    Some(SchemeReport { lines, valid })
}

/// Whether `token` verifies with `key` and `algorithm` for `path` at `now`; without a path, for
/// the token's first ACL pattern (a pattern matches itself).
fn verify_akamai(
    key: &KeyMaterial,
    algorithm: &str,
    token: &str,
    path: Option<&str>,
    now: u64,
) -> Result<(), String> {
    let algorithm = algorithm.parse::<Algorithm>().map_err(|e| e.to_string())?;
    let auth = EdgeAuth::new(key.expose(), algorithm).map_err(|e| e.to_string())?;
    let acl;
    let path = match path {
        Some(path) => path,
        None => {
            acl = auth.decode(token).map_err(|e| e.to_string())?.acl.ok_or(
                "a URL token: its path is in the HMAC, so explain the URL that carries it",
            )?;
            acl.split('!').next().unwrap_or_default()
        }
    };
    auth.verify(token, path, now)
        .map(|_| ())
        .map_err(|e| e.to_string())
}

fn imgix(url: &str, routes: &SchemeRoutes, now: u64) -> SchemeReport {
    let path_and_query = url
        .split_once("://")
        .map_or(url, |(_, rest)| rest.find('/').map_or("/", |i| &rest[i..]));
    let mut lines = vec![("kind", "imgix signed URL (`s`)".to_owned())];
    let tried = routes.check(|scheme| match scheme {
        SchemeConfig::Imgix { token, .. } => Some(
            ImgixSigner::new(token.clone())
                .verify(path_and_query, now)
                .map(|signed| {
                    if let Some(expires) = signed.expires {
                        lines.push(("expires", date(expires)));
                    }
                })
                .map_err(|e| e.to_string()),
        ),
        _ => None,
    });
    let valid = verdicts(&mut lines, tried);
    SchemeReport { lines, valid }
}
