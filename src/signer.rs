//! Signing for one route: bucketed expiry, the route's policy template, which file references it
//! signs, and its credential cache.

use std::sync::Arc;

use crate::cache::{BucketCache, CacheKey, CacheOutcome, CredentialCache};
use crate::config::{AppKey, Route, SchemeConfig, Signing, SiteCdn};
use crate::external::{ExternalRef, Source};
use crate::filelink::{FileRef, Handle};
use crate::metrics::SigningMetrics;
use crate::policy::{Call, Credentials, Policy, PolicyLimits, PolicyTemplate};
use crate::scheme::{SchemeError, SignsUrls, Validity};
use crate::tasks::TaskAllowlist;

/// Bytes the signed-URL cache of one route's scheme (or one `[[route.cdn]]` entry's) may hold
/// per worker: its keys are whole URLs, queries and all, which a client or a page may make
/// as long as it likes.
pub(crate) const SCHEME_URL_CACHE_BYTES: usize = 16 << 20;

/// One cached signed URL's weight: both strings and the bookkeeping around them (LRU node,
/// `Arc`, string headers: 128 bytes).
const SCHEME_URL_WEIGHT: crate::cache::Weigher<String, String> =
    |url, signed| url.capacity() + signed.capacity() + 128;

/// Bytes the credential cache of one route's external sources may hold per worker: its keys
/// are whole source URLs, as long as a client or a page makes them, and each policy carries
/// its source's pattern.
pub(crate) const EXTERNAL_CACHE_BYTES: usize = 16 << 20;

/// One cached source's weight: the source, the policy and signature, and the bookkeeping
/// around them (128 bytes).
const EXTERNAL_WEIGHT: crate::cache::Weigher<String, Credentials> = |source, credentials| {
    source.capacity() + credentials.policy.capacity() + credentials.signature.capacity() + 128
};

/// Why a route does not sign a file reference.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refusal {
    /// The URL needs a call the route's `calls` do not hold (`convert`, for tasks).
    Call(Call),
    /// The URL carries a task the route's `tasks` do not list.
    Task,
    /// The URL's external source is not under the route's `external_sources`.
    Source,
}

/// Signs credentials for one route, reusing them while their expiry bucket holds.
pub struct RouteSigner {
    signing: Signing,
    template: PolicyTemplate,
    tasks: TaskAllowlist,
    cache: CredentialCache,
    metrics: SigningMetrics,
    /// `api_key` and `external_sources`, when the route sets them.
    app: Option<AppKey>,
    /// Credentials per external source, made only for a route with sources.
    external_cache: Option<BucketCache<String, Credentials>>,
    /// The route's scheme when it is not Filestack's: its config, its signer, and the signed
    /// URLs per object URL and bucket.
    scheme: Option<SchemeSigning>,
}

/// An object URL signed with a route's scheme.
pub struct SignedObject {
    /// The signed URL.
    pub url: Arc<String>,
    /// Whether it came from the cache.
    pub cache: CacheOutcome,
    /// When it expires.
    pub expiry: u64,
}

/// A route's signing in a scheme other than Filestack's.
struct SchemeSigning {
    config: SchemeConfig,
    signer: Arc<dyn SignsUrls>,
    cache: BucketCache<String, String>,
}

impl RouteSigner {
    /// A signer with an empty cache of `signing.cache_size` entries, signing file references
    /// whose tasks are all in `tasks`.
    pub fn new(signing: Signing, template: PolicyTemplate, tasks: TaskAllowlist) -> Self {
        let cache = CredentialCache::new(signing.cache_size);
        Self {
            signing,
            template,
            tasks,
            cache,
            metrics: SigningMetrics::default(),
            app: None,
            external_cache: None,
            scheme: None,
        }
    }

    /// Signs object URLs with `signer`, the scheme `config` names, instead of Filestack's
    /// policies ([`RouteSigner::scheme_url`]).
    pub fn with_scheme(mut self, config: SchemeConfig, signer: Arc<dyn SignsUrls>) -> Self {
        let cache = BucketCache::weighed(
            self.signing.cache_size,
            SCHEME_URL_CACHE_BYTES,
            SCHEME_URL_WEIGHT,
        )
        .with_metrics(self.metrics.cache.clone());
        self.scheme = Some(SchemeSigning {
            config,
            signer,
            cache,
        });
        self
    }

    /// [`RouteSigner::with_scheme`] with `config`'s signer, unless `config` is Filestack's,
    /// which this signer signs itself. Errors name what is wrong with the scheme's key.
    pub fn with_scheme_of(self, config: &SchemeConfig) -> Result<Self, String> {
        Ok(match crate::scheme::signer_for(config)? {
            Some(scheme) => self.with_scheme(config.clone(), scheme),
            None => self,
        })
    }

    /// The scheme the route signs with, when it is not Filestack's.
    pub fn scheme(&self) -> Option<&dyn SignsUrls> {
        self.scheme.as_ref().map(|scheme| &*scheme.signer)
    }

    /// The route's scheme config: Filestack's unless [`RouteSigner::with_scheme`] set another.
    pub fn scheme_config(&self) -> &SchemeConfig {
        self.scheme
            .as_ref()
            .map_or(&SchemeConfig::Filestack, |scheme| &scheme.config)
    }

    /// `url` (an object's absolute URL, credentials stripped) signed with the route's scheme
    /// for the bucket `now` falls in, and the expiry it carries: from the cache while this
    /// bucket's is there. `None` for a Filestack route.
    pub fn scheme_url(&self, now: u64, url: &str) -> Option<Result<SignedObject, SchemeError>> {
        let scheme = self.scheme.as_ref()?;
        let expiry = self.expiry_at(now);
        let bucket = self.signing.bucket.as_secs().max(1);
        let validity = Validity {
            start: now - now % bucket,
            expiry,
        };
        if let Some(signed) = scheme.cache.get(url, expiry) {
            self.observe_validity(now, expiry);
            return Some(Ok(SignedObject {
                url: signed,
                cache: CacheOutcome::Hit,
                expiry,
            }));
        }
        Some(scheme.signer.sign_url(url, validity).map(|signed| {
            self.metrics.minted.inc();
            self.observe_validity(now, expiry);
            SignedObject {
                url: scheme.cache.insert(url, expiry, signed),
                cache: CacheOutcome::Miss,
                expiry,
            }
        }))
    }

    /// Reads file references after the app's API key, and signs external sources under
    /// `app.sources`.
    pub fn with_app(mut self, app: Option<AppKey>) -> Self {
        self.external_cache = app
            .as_ref()
            .filter(|app| !app.sources.prefixes().is_empty())
            .map(|_| {
                BucketCache::weighed(
                    self.signing.cache_size,
                    EXTERNAL_CACHE_BYTES,
                    EXTERNAL_WEIGHT,
                )
            });
        self.app = app;
        self
    }

    /// Counts this signer's cache, the credentials it mints and the validity of those it hands
    /// out in `metrics`; call it before the first signature.
    pub fn with_metrics(mut self, metrics: SigningMetrics) -> Self {
        self.cache = self.cache.with_metrics(metrics.cache.clone());
        self.external_cache = self
            .external_cache
            .map(|cache| cache.with_metrics(metrics.cache.clone()));
        self.metrics = metrics;
        self
    }

    /// A signer for `route`'s signing settings, policy and tasks.
    pub fn for_route(route: &Route) -> Self {
        Self::new(
            route.signing.clone(),
            route.policy.clone(),
            route.tasks.clone(),
        )
        .with_app(route.app.clone())
    }

    /// A signer for a site route's `[[route.cdn]]` entry, counting into the route's
    /// `metrics`. Errors name what is wrong with the entry's key.
    pub fn for_cdn(cdn: &SiteCdn, metrics: SigningMetrics) -> Result<Self, String> {
        Self::new(
            cdn.signing.clone(),
            PolicyTemplate::default(),
            TaskAllowlist::default(),
        )
        .with_metrics(metrics)
        .with_scheme_of(&cdn.scheme)
    }

    /// The calls `file` is signed with, if the route signs it: the route's `calls` must hold
    /// every call it needs, and its `tasks` every task it carries.
    pub fn check_file(&self, file: &FileRef<'_>) -> Result<&'static [Call], Refusal> {
        let calls = file.needed_calls();
        if let Some(missing) = calls.iter().find(|call| !self.template.allows(**call)) {
            return Err(Refusal::Call(*missing));
        }
        if self.tasks.first_refused(&file.tasks).is_some() {
            return Err(Refusal::Task);
        }
        Ok(calls)
    }

    /// Credentials for `handle` granting exactly `calls` (what [`RouteSigner::check_file`]
    /// returned), valid at least `ttl` from `now`: from the cache when this bucket's are there,
    /// else freshly signed.
    pub fn file_credentials(
        &self,
        now: u64,
        handle: Handle,
        calls: &'static [Call],
    ) -> (Arc<Credentials>, CacheOutcome) {
        let expiry = self.expiry_at(now);
        let key = CacheKey {
            handle: Some(handle),
            calls: Some(calls),
        };
        let found = self.cache.get_or_sign(&key, expiry, || {
            self.metrics.minted.inc();
            let mut policy = self.policy(expiry, Some(handle));
            policy.call = calls.to_vec();
            policy.sign(self.signing.secret_at(now))
        });
        self.observe_validity(now, expiry);
        found
    }

    /// Whether the route signs `file`, an external source: it must be under the route's
    /// `external_sources`, and the route's `calls` must hold `convert` and its `tasks` every
    /// task the URL carries.
    pub fn check_external(&self, file: &ExternalRef<'_>) -> Result<(), Refusal> {
        let allowed = self
            .app
            .as_ref()
            .is_some_and(|app| app.sources.allows(&file.source));
        if !allowed {
            return Err(Refusal::Source);
        }
        if !self.template.allows(Call::Convert) {
            return Err(Refusal::Call(Call::Convert));
        }
        if self.tasks.first_refused(&file.tasks).is_some() {
            return Err(Refusal::Task);
        }
        Ok(())
    }

    /// Credentials for the external `source` (checked with [`RouteSigner::check_external`]):
    /// `{"expiry","call":["convert"],"url":PATTERN}` where the pattern matches that source and
    /// no other, valid at least `ttl` from `now`; from the cache while this bucket's are there.
    pub fn external_credentials(
        &self,
        now: u64,
        source: &Source<'_>,
    ) -> Option<(Arc<Credentials>, CacheOutcome)> {
        let cache = self.external_cache.as_ref()?;
        let expiry = self.expiry_at(now);
        let found = cache.get_or_sign(source.as_str(), expiry, || {
            self.metrics.minted.inc();
            Policy {
                expiry,
                call: vec![Call::Convert],
                handle: None,
                limits: PolicyLimits {
                    url: Some(source.url_pattern()),
                    ..PolicyLimits::default()
                },
            }
            .sign(self.signing.secret_at(now))
        });
        self.observe_validity(now, expiry);
        Some(found)
    }

    /// The route's `api_key` and `external_sources`, if it sets them.
    pub fn app(&self) -> Option<&AppKey> {
        self.app.as_ref()
    }

    /// Records the validity left on credentials for `expiry` handed out at `now`.
    fn observe_validity(&self, now: u64, expiry: u64) {
        self.metrics
            .validity
            .observe(expiry.saturating_sub(now) as f64);
    }

    /// The expiry credentials handed out at `now` carry ([`Signing::expiry_at`]).
    pub fn expiry_at(&self, now: u64) -> u64 {
        self.signing.expiry_at(now)
    }

    /// Until when, on this machine's clock, a URL expiring at `expiry` is sure to be accepted
    /// by a CDN whose clock runs up to `skew_margin` ahead: what cache lifetimes count from.
    pub fn usable_until(&self, expiry: u64) -> u64 {
        expiry.saturating_sub(self.signing.skew_margin.as_secs())
    }

    /// Credentials granting the route's whole `calls` list for `handle` (or the route alone,
    /// for upload policies) valid at least `ttl` from `now`: from the cache when this bucket's
    /// are there, else freshly signed.
    pub fn credentials(
        &self,
        now: u64,
        handle: Option<Handle>,
    ) -> (Arc<Credentials>, CacheOutcome) {
        let expiry = self.expiry_at(now);
        let key = CacheKey {
            handle,
            calls: None,
        };
        let found = self.cache.get_or_sign(&key, expiry, || {
            self.metrics.minted.inc();
            self.sign_uncached(now, expiry, handle)
        });
        self.observe_validity(now, expiry);
        found
    }

    /// Signs with an explicit expiry, bypassing the cache (for `signgate sign --expiry`), with
    /// the secret that signs at `now`.
    pub fn sign_uncached(&self, now: u64, expiry: u64, handle: Option<Handle>) -> Credentials {
        self.policy(expiry, handle)
            .sign(self.signing.secret_at(now))
    }

    /// The policy this route signs for `handle` at `expiry`.
    pub fn policy(&self, expiry: u64, handle: Option<Handle>) -> Policy {
        self.template
            .policy(expiry, handle.as_ref().map(Handle::as_str))
    }

    /// What the route's policies carry.
    pub fn template(&self) -> &PolicyTemplate {
        &self.template
    }

    /// The transformation tasks the route signs.
    pub fn tasks(&self) -> &TaskAllowlist {
        &self.tasks
    }

    /// The route's signing settings.
    pub fn signing(&self) -> &Signing {
        &self.signing
    }

    /// The route's metric handles for signing.
    pub fn metrics(&self) -> &SigningMetrics {
        &self.metrics
    }

    /// The route's credential cache (for hit and miss counts).
    pub fn cache(&self) -> &CredentialCache {
        &self.cache
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Config;

    /// A redirect route signing S3 URLs, as the router builds it.
    fn s3_signer() -> RouteSigner {
        let config = Config::from_toml_str(
            "[signing]\nsecret_env = \"S\"\n[[route]]\nname = \"b\"\nprefix = \"/\"\n\
             mode = \"redirect\"\nupstream = \"https://b.s3.eu-west-1.amazonaws.com\"\n\
             scheme = \"s3\"\naccess_key_id = \"AKIAEXAMPLE\"\nregion = \"eu-west-1\"\n",
            |_| Some("wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY".to_owned()),
        )
        .expect("a valid route");
        let route = &config.routes[0];
        let scheme = crate::scheme::signer_for(&route.scheme)
            .expect("the key signs")
            .expect("not Filestack's");
        RouteSigner::for_route(route).with_scheme(route.scheme.clone(), scheme)
    }

    #[test]
    fn the_credential_cache_of_external_sources_is_bounded_by_bytes_not_by_entries() {
        let config = Config::from_toml_str(
            "[signing]\nsecret_env = \"S\"\n[[route]]\nname = \"p\"\nprefix = \"/\"\n\
             mode = \"redirect\"\nupstream = \"https://cdn.filestackcontent.com\"\n\
             api_key = \"AbCdEfGhIjKlMnOpQrStUvW\"\n\
             external_sources = [\"https://images.example.org/gallery/\"]\n\
             calls = [\"read\", \"convert\"]\n",
            |_| Some("s".to_owned()),
        )
        .expect("a valid route");
        let signer = RouteSigner::for_route(&config.routes[0]);
        let now = 1_800_000_000;
        // Distinct long sources, as a client of a proxy or redirect route writes them: each
        // policy carries its source's pattern, as long again.
        let long = 20_000;
        for i in 0..2_000 {
            let path = format!(
                "https://images.example.org/gallery/{i}{}.png",
                "x".repeat(long)
            );
            let external = ExternalRef::parse(&path)
                .expect("a source")
                .expect("external");
            signer
                .external_credentials(now, &external.source)
                .expect("the route lists sources");
        }
        let cache = signer.external_cache.as_ref().expect("sources");
        let held = cache.len() * 2 * long;
        assert!(
            held <= EXTERNAL_CACHE_BYTES,
            "{} sources of {long} bytes kept, with their policies: {held} bytes",
            cache.len()
        );
        assert!(!cache.is_empty(), "credentials are still cached");
    }

    #[test]
    fn the_signed_url_cache_of_a_scheme_is_bounded_by_bytes_not_by_entries() {
        let signer = s3_signer();
        let now = 1_800_000_000;
        // Distinct long queries, as a client of a proxy or redirect route (or a page) writes
        // them: each signed URL is as long again.
        let long = 20_000;
        for i in 0..2_000 {
            let url = format!(
                "https://b.s3.eu-west-1.amazonaws.com/a.jpg?v={i}{}",
                "x".repeat(long)
            );
            signer
                .scheme_url(now, &url)
                .expect("a scheme")
                .expect("signed");
        }
        let cache = &signer.scheme.as_ref().expect("a scheme").cache;
        let held = cache.len() * 2 * long;
        assert!(
            held <= SCHEME_URL_CACHE_BYTES,
            "{} URLs of {long} bytes kept, signed and unsigned: {held} bytes",
            cache.len()
        );
        assert!(!cache.is_empty(), "URLs are still cached");
    }
}
