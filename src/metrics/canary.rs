//! The canaries' series ([`crate::canary`]): checks by outcome, whether the last one passed, and
//! when it ran. Made for a route when its canary starts; the gauges go when a reload removes it,
//! so an alert on them does not read a canary that no longer runs.

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;

use super::RouteLabel;
use crate::canary::Outcome;

/// `{route, outcome}` of `signgate_canary_checks_total`.
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct CanaryLabels {
    /// The route's `name`.
    pub route: String,
    /// [`Outcome::as_str`].
    pub outcome: &'static str,
}

/// The canary families, registered once.
pub(super) struct CanaryFamilies {
    checks: Family<CanaryLabels, Counter>,
    ok: Family<RouteLabel, Gauge>,
    last_check: Family<RouteLabel, Gauge>,
}

impl CanaryFamilies {
    pub(super) fn register(registry: &mut Registry) -> Self {
        let families = Self {
            checks: Family::default(),
            ok: Family::default(),
            last_check: Family::default(),
        };
        registry.register(
            "canary_checks",
            "Canary checks of a route's CDN, by outcome: ok, refused (401/403: the CDN refuses the route's signature), http_error, unreachable, timeout",
            families.checks.clone(),
        );
        registry.register(
            "canary_ok",
            "1 when the route's last canary check passed, else 0",
            families.ok.clone(),
        );
        registry.register(
            "canary_last_check_timestamp_seconds",
            "Unix time of the route's last canary check",
            families.last_check.clone(),
        );
        families
    }

    /// Route `route`'s handles, every outcome's series at zero from now on.
    pub(super) fn handles(&self, route: &str) -> CanaryMetrics {
        let label = RouteLabel {
            route: route.to_owned(),
        };
        CanaryMetrics {
            checks: Outcome::ALL.map(|outcome| {
                self.checks.get_or_create_owned(&CanaryLabels {
                    route: route.to_owned(),
                    outcome: outcome.as_str(),
                })
            }),
            ok: self.ok.get_or_create_owned(&label),
            last_check: self.last_check.get_or_create_owned(&label),
        }
    }

    /// Drops route `route`'s gauges; its counts stay, as counters should.
    pub(super) fn forget(&self, route: &str) {
        let label = RouteLabel {
            route: route.to_owned(),
        };
        self.ok.remove(&label);
        self.last_check.remove(&label);
    }
}

/// One route's canary series.
#[derive(Clone, Default)]
pub struct CanaryMetrics {
    /// One counter per [`Outcome::ALL`] entry.
    pub checks: [Counter; Outcome::ALL.len()],
    /// `signgate_canary_ok`.
    pub ok: Gauge,
    /// `signgate_canary_last_check_timestamp_seconds`.
    pub last_check: Gauge,
}

impl CanaryMetrics {
    /// Counts a check that ended in `outcome` at `at` (Unix seconds).
    pub fn record(&self, outcome: Outcome, at: u64) {
        self.checks[outcome as usize].inc();
        self.ok.set(i64::from(outcome == Outcome::Ok));
        self.last_check.set(i64::try_from(at).unwrap_or(i64::MAX));
    }
}
