//! Signing for one route: bucketed expiry, the route's policy template, which file references it
//! signs, and its credential cache.

use std::sync::Arc;

use crate::cache::{CacheKey, CacheOutcome, CredentialCache};
use crate::config::{Route, Signing};
use crate::filelink::{FileRef, Handle};
use crate::metrics::SigningMetrics;
use crate::policy::{Call, Credentials, Policy, PolicyTemplate};
use crate::tasks::TaskAllowlist;

/// Why a route does not sign a file reference.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refusal {
    /// The URL needs a call the route's `calls` do not hold (`convert`, for tasks).
    Call(Call),
    /// The URL carries a task the route's `tasks` do not list.
    Task,
}

/// Signs credentials for one route, reusing them while their expiry bucket holds.
pub struct RouteSigner {
    signing: Signing,
    template: PolicyTemplate,
    tasks: TaskAllowlist,
    cache: CredentialCache,
    metrics: SigningMetrics,
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
        }
    }

    /// Counts this signer's cache, the credentials it mints and the validity of those it hands
    /// out in `metrics`; call it before the first signature.
    pub fn with_metrics(mut self, metrics: SigningMetrics) -> Self {
        self.cache = self.cache.with_metrics(metrics.cache.clone());
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
