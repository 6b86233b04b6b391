//! The upstream's clock against this machine's: signgate computes every expiry from its own
//! clock and the CDN checks it against its own, so a drift between the two shortens (or
//! stretches) every URL handed out. Each answer's `Date` says where the upstream's clock is.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, UNIX_EPOCH};

use http::HeaderMap;
use http::header::DATE;
use prometheus_client::metrics::gauge::Gauge;

/// How often a warning about the same route's skew may be logged.
const WARN_EVERY: Duration = Duration::from_secs(60);

/// One route's view of its upstream's clock: a gauge of the skew, and a warning past
/// `max_clock_skew`. A `Date` is read at most once a second (it has whole seconds), so an
/// answer otherwise costs one atomic swap.
pub struct ClockSkew {
    route: Arc<str>,
    max: Duration,
    gauge: Gauge,
    /// The Unix second of the last `Date` read.
    last_read: AtomicU64,
    /// The Unix second of the last warning (0: none yet).
    last_warned: AtomicU64,
}

impl ClockSkew {
    /// Watches route `route`'s upstream: the skew goes to `gauge`, a skew past `max` is logged.
    pub fn new(route: &str, max: Duration, gauge: Gauge) -> Self {
        Self {
            route: Arc::from(route),
            max,
            gauge,
            last_read: AtomicU64::new(0),
            last_warned: AtomicU64::new(0),
        }
    }

    /// Notes the `Date` of an answer to a request signed at `now` (Unix seconds, from the
    /// clock every expiry is computed from), if this second has none noted yet. Returns the
    /// skew read (the upstream's clock less that one, in seconds), if any.
    pub fn observe(&self, headers: &HeaderMap, local: u64) -> Option<i64> {
        if self.last_read.swap(local, Ordering::Relaxed) == local {
            return None;
        }
        let date = headers.get(DATE)?.to_str().ok()?;
        let upstream = httpdate::parse_http_date(date)
            .ok()?
            .duration_since(UNIX_EPOCH)
            .ok()?
            .as_secs();
        let skew = i64::try_from(upstream).ok()? - i64::try_from(local).ok()?;
        self.gauge.set(skew);
        if skew.unsigned_abs() > self.max.as_secs() {
            let last = self.last_warned.load(Ordering::Relaxed);
            if last == 0 || local.saturating_sub(last) >= WARN_EVERY.as_secs() {
                self.last_warned.store(local, Ordering::Relaxed);
                tracing::warn!(
                    route = %self.route,
                    skew_seconds = skew,
                    max_clock_skew_seconds = self.max.as_secs(),
                    "the upstream's clock is off from this machine's: the URLs signed here expire that much early or late at the CDN; check NTP on both"
                );
            }
        }
        Some(skew)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::SystemTime;

    fn dated(at: u64) -> HeaderMap {
        let mut headers = HeaderMap::new();
        let at: SystemTime = UNIX_EPOCH + Duration::from_secs(at);
        headers.insert(
            DATE,
            httpdate::fmt_http_date(at).parse().expect("a header value"),
        );
        headers
    }

    #[test]
    fn the_skew_is_read_once_a_second_and_kept_in_the_gauge() {
        let gauge = Gauge::default();
        let skew = ClockSkew::new("r", Duration::from_secs(30), gauge.clone());
        let now = 1_800_000_000;
        assert_eq!(skew.observe(&dated(now + 300), now), Some(300));
        assert_eq!(gauge.get(), 300);
        // The same second again: not read.
        let behind = dated(now - 90);
        assert_eq!(skew.observe(&behind, now), None);
        assert_eq!(gauge.get(), 300);
        // The next second: read.
        assert_eq!(skew.observe(&behind, now + 1), Some(-91));
        assert_eq!(gauge.get(), -91);
        // No `Date`, or one that does not parse: nothing changes.
        assert_eq!(skew.observe(&HeaderMap::new(), now + 2), None);
        let mut garbled = HeaderMap::new();
        garbled.insert(DATE, "yesterday".parse().expect("a header value"));
        assert_eq!(skew.observe(&garbled, now + 3), None);
        assert_eq!(gauge.get(), -91);
    }
}
