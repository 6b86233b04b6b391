//! One client connection's requests in flight, so that a connection with none for a while can
//! be closed: HTTP/1.1 has its header timeout between requests, HTTP/2 nothing of its own.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::time::Duration;

use tokio::sync::OwnedSemaphorePermit;
use tokio::time::Instant;

/// Counts the requests of one connection from the moment its head arrives until its response
/// body is done or dropped, and holds the connection's place under `max_connections` for as
/// long as anything needs it: a WebSocket joined from one of its requests outlives the
/// connection's own task.
///
/// Requests only count and note the time the last one ended: whoever waits for the connection
/// to go idle looks at that when its own timer fires, so a request arms no timer and wakes no
/// one (it did both before, about 2,000 instructions per request under callgrind).
#[derive(Debug)]
pub struct Activity {
    in_flight: AtomicUsize,
    /// When the connection opened: what `idle_since` counts from.
    opened: Instant,
    /// Nanoseconds from `opened` to the end of the last request (0: none yet).
    idle_since: AtomicU64,
    _connection_slot: Option<OwnedSemaphorePermit>,
}

impl Default for Activity {
    fn default() -> Self {
        Self {
            in_flight: AtomicUsize::new(0),
            opened: Instant::now(),
            idle_since: AtomicU64::new(0),
            _connection_slot: None,
        }
    }
}

/// One request in flight; dropping it (with the response body that holds it) ends it, and
/// gives back the worker's request slot it holds, if any.
#[derive(Debug)]
pub struct InFlight {
    activity: Arc<Activity>,
    slot: Option<OwnedSemaphorePermit>,
}

impl InFlight {
    /// Holds `slot` (one of the worker's requests in flight) until the request ends.
    pub fn hold_slot(&mut self, slot: OwnedSemaphorePermit) {
        self.slot = Some(slot);
    }
}

impl Activity {
    /// The activity of a connection that holds `slot` until the last of its requests (and
    /// the connection's task) lets go.
    pub fn holding(slot: OwnedSemaphorePermit) -> Self {
        Self {
            _connection_slot: Some(slot),
            ..Self::default()
        }
    }

    /// Counts a request in until the returned guard is dropped.
    pub fn begin(self: &Arc<Self>) -> InFlight {
        self.in_flight.fetch_add(1, Ordering::AcqRel);
        InFlight {
            activity: Arc::clone(self),
            slot: None,
        }
    }

    /// Requests in flight now.
    pub fn in_flight(&self) -> usize {
        self.in_flight.load(Ordering::Acquire)
    }

    /// Resolves once no request has been in flight for `timeout` in a row.
    pub async fn idle_for(&self, timeout: Duration) {
        let mut deadline = self.idle_since() + timeout;
        loop {
            tokio::time::sleep_until(deadline).await;
            if self.in_flight() > 0 {
                // Busy: nothing can end the wait before a whole timeout after the last request.
                deadline = Instant::now() + timeout;
                continue;
            }
            let idle_until = self.idle_since() + timeout;
            if idle_until <= Instant::now() {
                return;
            }
            deadline = idle_until;
        }
    }

    /// When the last request ended, or the connection opened if none has.
    fn idle_since(&self) -> Instant {
        self.opened + Duration::from_nanos(self.idle_since.load(Ordering::Acquire))
    }

    /// Notes that the last request in flight ended now.
    fn went_idle(&self) {
        let since = u64::try_from(self.opened.elapsed().as_nanos()).unwrap_or(u64::MAX);
        self.idle_since.store(since, Ordering::Release);
    }
}

impl Drop for InFlight {
    fn drop(&mut self) {
        if self.activity.in_flight.fetch_sub(1, Ordering::AcqRel) == 1 {
            self.activity.went_idle();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn idle_only_after_the_last_request_ends_and_the_timeout_passes() {
        let activity = Arc::new(Activity::default());
        let started = tokio::time::Instant::now();
        activity.idle_for(Duration::from_secs(10)).await;
        assert_eq!(
            started.elapsed(),
            Duration::from_secs(10),
            "idle from the start"
        );

        let request = activity.begin();
        let watcher = {
            let activity = Arc::clone(&activity);
            tokio::spawn(async move { activity.idle_for(Duration::from_secs(10)).await })
        };
        tokio::time::sleep(Duration::from_secs(60)).await;
        assert!(!watcher.is_finished(), "a request in flight is not idle");
        let ended = tokio::time::Instant::now();
        drop(request);
        watcher.await.expect("watcher");
        assert_eq!(ended.elapsed(), Duration::from_secs(10));
        assert_eq!(activity.in_flight(), 0);
    }

    #[tokio::test(start_paused = true)]
    async fn a_request_that_came_and_went_while_waiting_restarts_the_timeout() {
        let activity = Arc::new(Activity::default());
        let started = tokio::time::Instant::now();
        let watcher = {
            let activity = Arc::clone(&activity);
            tokio::spawn(async move { activity.idle_for(Duration::from_secs(10)).await })
        };
        tokio::time::sleep(Duration::from_secs(4)).await;
        let request = activity.begin();
        tokio::time::sleep(Duration::from_secs(3)).await;
        drop(request);
        watcher.await.expect("watcher");
        assert_eq!(
            started.elapsed(),
            Duration::from_secs(17),
            "a whole timeout after the request ended"
        );
    }
}
