//! One route's metric handles, taken from the shared families once at start. Each handle shares
//! its value with the family's series (prometheus-client's metrics are `Arc`s), so every worker
//! counting through its own copy adds to one number. A handle made with `Default` counts into
//! nothing registered: for signers and caches outside a served gateway (`signgate sign`, tests).

use std::sync::Arc;
use std::time::Duration;

use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram;

use super::{duration_histogram, validity_histogram};
use crate::config::Mode;
use crate::error::UpstreamErrorKind;
use crate::mode::verify::VerifyMark;

/// The `status_class` label values, in order: the index is the status's first digit minus one.
pub const STATUS_CLASSES: [&str; 5] = ["1xx", "2xx", "3xx", "4xx", "5xx"];

/// Everything counted for one route.
pub struct RouteMetrics {
    /// The route's `name`.
    pub name: String,
    /// The route's mode: the `mode` label of its request counts.
    pub mode: Mode,
    /// Requests, durations, bytes.
    pub requests: Arc<RequestMetrics>,
    /// Upstream failures and refusals.
    pub upstream: UpstreamMetrics,
    /// Signing and its cache.
    pub signing: SigningMetrics,
    /// A verify route's outcomes (counting into nothing registered on other routes).
    pub verify: VerifyMetrics,
}

impl RouteMetrics {
    /// Handles for route `name` of `mode` that count into nothing registered.
    pub fn unregistered(name: &str, mode: Mode) -> Self {
        Self {
            name: name.to_owned(),
            mode,
            requests: Arc::default(),
            upstream: UpstreamMetrics::default(),
            signing: SigningMetrics::default(),
            verify: VerifyMetrics::default(),
        }
    }
}

/// `signgate_verify_total` of one verify route: one counter per outcome, `valid` and each
/// failed check, in [`VerifyMark::labels`] order.
#[derive(Clone, Default)]
pub struct VerifyMetrics {
    /// Indexed by [`VerifyMark::index`].
    pub results: [Counter; 11],
}

impl VerifyMetrics {
    /// Counts one request's outcome.
    pub fn count(&self, mark: VerifyMark) {
        self.results[mark.index()].inc();
    }
}

/// What every request adds when its answer ends: `signgate_requests_total`,
/// `signgate_request_duration_seconds`, `signgate_response_bytes_total`.
pub struct RequestMetrics {
    /// One counter per [`STATUS_CLASSES`] entry.
    pub by_class: [Counter; 5],
    /// Arrival to last byte.
    pub duration: Histogram,
    /// Body bytes sent.
    pub bytes: Counter,
}

impl Default for RequestMetrics {
    fn default() -> Self {
        Self {
            by_class: Default::default(),
            duration: duration_histogram(),
            bytes: Counter::default(),
        }
    }
}

impl RequestMetrics {
    /// Counts one answered request.
    pub fn record(&self, status: u16, bytes: u64, elapsed: Duration) {
        self.by_class[status_class_index(status)].inc();
        self.duration.observe(elapsed.as_secs_f64());
        self.bytes.inc_by(bytes);
    }

    /// Requests counted so far, every class together.
    pub fn total(&self) -> u64 {
        self.by_class.iter().map(Counter::get).sum()
    }

    /// Requests counted so far whose status was `5xx`.
    pub fn server_errors(&self) -> u64 {
        self.by_class[4].get()
    }
}

/// The index into [`STATUS_CLASSES`] of `status` (HTTP statuses are 100 to 999; hyper never
/// makes another, and anything from 600 up counts as `5xx`).
fn status_class_index(status: u16) -> usize {
    usize::from(status / 100).clamp(1, 5) - 1
}

/// `signgate_upstream_errors_total` and `signgate_upstream_403_total` of one route.
#[derive(Clone, Default)]
pub struct UpstreamMetrics {
    /// One counter per [`UpstreamErrorKind::ALL`] entry.
    pub errors: [Counter; 5],
    /// Upstream answers with status 403.
    pub forbidden: Counter,
    /// The upstream's clock less this machine's, in seconds, from its last answer's `Date`.
    pub clock_skew: Gauge,
}

impl UpstreamMetrics {
    /// Counts a request that failed at the upstream.
    pub fn count_error(&self, kind: UpstreamErrorKind) {
        self.errors[kind as usize].inc();
    }
}

/// A route's signing: its cache, what it signs, and the validity of what it hands out.
#[derive(Clone)]
pub struct SigningMetrics {
    /// The signature cache.
    pub cache: CacheMetrics,
    /// `signgate_credentials_minted_total`.
    pub minted: Counter,
    /// `signgate_url_validity_seconds`.
    pub validity: Histogram,
}

impl Default for SigningMetrics {
    fn default() -> Self {
        Self {
            cache: CacheMetrics::default(),
            minted: Counter::default(),
            validity: validity_histogram(),
        }
    }
}

/// What a signature cache counts: lookups, evictions and entries held (every worker's cache
/// adding to the same series).
#[derive(Clone, Default)]
pub struct CacheMetrics {
    /// Lookups answered from the cache.
    pub hits: Counter,
    /// Lookups that had to make the value.
    pub misses: Counter,
    /// Entries dropped for room or because a newer expiry bucket began.
    pub evictions: Counter,
    /// Entries held now.
    pub entries: Gauge,
}

impl CacheMetrics {
    /// The handles for a cache in front of this one (a site route's signed attribute values,
    /// in front of its credentials): its hits, evictions and entries count with this cache's,
    /// but not its misses, which go on to this cache and are counted there as a hit or a miss.
    pub fn in_front(&self) -> Self {
        Self {
            misses: Counter::default(),
            ..self.clone()
        }
    }

    /// Lookups counted so far that were hits, and all lookups.
    pub fn lookups(&self) -> (u64, u64) {
        let hits = self.hits.get();
        (hits, hits + self.misses.get())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn statuses_fall_in_their_class() {
        for (status, class) in [
            (100, "1xx"),
            (204, "2xx"),
            (307, "3xx"),
            (404, "4xx"),
            (503, "5xx"),
            (999, "5xx"),
        ] {
            assert_eq!(
                STATUS_CLASSES[status_class_index(status)],
                class,
                "{status}"
            );
        }
    }
}
