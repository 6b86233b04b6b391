//! Signing for one route: bucketed expiry, the route's policy template, and its credential cache.

use std::sync::Arc;

use crate::cache::{CacheKey, CacheOutcome, CredentialCache};
use crate::config::{Route, Signing};
use crate::filelink::Handle;
use crate::policy::{Credentials, Policy, PolicyTemplate, bucketed_expiry};

/// Signs credentials for one route, reusing them while their expiry bucket holds.
pub struct RouteSigner {
    signing: Signing,
    template: PolicyTemplate,
    cache: CredentialCache,
}

impl RouteSigner {
    /// A signer with an empty cache of `signing.cache_size` entries.
    pub fn new(signing: Signing, template: PolicyTemplate) -> Self {
        let cache = CredentialCache::new(signing.cache_size);
        Self {
            signing,
            template,
            cache,
        }
    }

    /// A signer for `route`'s signing settings and policy.
    pub fn for_route(route: &Route) -> Self {
        Self::new(route.signing.clone(), route.policy.clone())
    }

    /// The expiry credentials handed out at `now` carry.
    pub fn expiry_at(&self, now: u64) -> u64 {
        bucketed_expiry(now, self.signing.ttl, self.signing.bucket)
    }

    /// Credentials for `handle` (or the route alone, for upload policies) valid at least `ttl`
    /// from `now`: from the cache when this bucket's are there, else freshly signed.
    pub fn credentials(
        &self,
        now: u64,
        handle: Option<Handle>,
    ) -> (Arc<Credentials>, CacheOutcome) {
        let expiry = self.expiry_at(now);
        self.cache.get_or_sign(&CacheKey(handle), expiry, || {
            self.sign_uncached(expiry, handle)
        })
    }

    /// Signs with an explicit expiry, bypassing the cache (for `signgate sign --expiry`).
    pub fn sign_uncached(&self, expiry: u64, handle: Option<Handle>) -> Credentials {
        self.policy(expiry, handle).sign(&self.signing.secret)
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

    /// The route's signing settings.
    pub fn signing(&self) -> &Signing {
        &self.signing
    }

    /// The route's credential cache (for hit and miss counts).
    pub fn cache(&self) -> &CredentialCache {
        &self.cache
    }
}
