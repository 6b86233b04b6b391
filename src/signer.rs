//! Signing for one route: bucketed expiry, the route's limits, and its credential cache.

use std::sync::Arc;

use crate::cache::{CacheKey, CacheOutcome, CredentialCache};
use crate::config::{Route, Signing};
use crate::filelink::Handle;
use crate::policy::{Credentials, Policy, bucketed_expiry};

/// Signs credentials for one route, reusing them while their expiry bucket holds.
pub struct RouteSigner {
    signing: Signing,
    /// The route's policy with `expiry` and `handle` left to fill in.
    template: Policy,
    cache: CredentialCache,
}

impl RouteSigner {
    /// A signer with an empty cache for `route`.
    pub fn new(route: &Route) -> Self {
        let limits = &route.limits;
        let template = Policy {
            expiry: 0,
            call: limits.calls.clone(),
            handle: None,
            url: limits.url.clone(),
            max_size: limits.max_size,
            min_size: limits.min_size,
            path: limits.path.clone(),
            container: limits.container.clone(),
        };
        Self {
            signing: route.signing.clone(),
            template,
            cache: CredentialCache::new(route.signing.cache_size),
        }
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
        let cached = self.cache.get_or_make(&CacheKey(handle), expiry, || {
            Some(self.sign_uncached(expiry, handle))
        });
        // The maker above never declines; signing directly covers the type, not a real case.
        cached.unwrap_or_else(|| {
            (
                Arc::new(self.sign_uncached(expiry, handle)),
                CacheOutcome::Miss,
            )
        })
    }

    /// Signs with an explicit expiry, bypassing the cache (for `signgate sign --expiry`).
    pub fn sign_uncached(&self, expiry: u64, handle: Option<Handle>) -> Credentials {
        let policy = self.policy(expiry, handle);
        policy.sign(&self.signing.secret)
    }

    /// The policy this route signs for `handle` at `expiry`.
    pub fn policy(&self, expiry: u64, handle: Option<Handle>) -> Policy {
        Policy {
            expiry,
            handle: handle.map(|h| h.as_str().to_owned()),
            ..self.template.clone()
        }
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
