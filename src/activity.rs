//! One client connection's requests in flight, so that a connection with none for a while can
//! be closed: HTTP/1.1 has its header timeout between requests, HTTP/2 nothing of its own.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use tokio::sync::{Notify, OwnedSemaphorePermit};

/// Counts the requests of one connection from the moment its head arrives until its response
/// body is done or dropped, and holds the connection's place under `max_connections` for as
/// long as anything needs it: a WebSocket joined from one of its requests outlives the
/// connection's own task.
#[derive(Debug, Default)]
pub struct Activity {
    in_flight: AtomicUsize,
    changed: Notify,
    _connection_slot: Option<OwnedSemaphorePermit>,
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
        self.changed.notify_waiters();
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
        loop {
            let changed = self.changed.notified();
            tokio::pin!(changed);
            // Registered before the count is read, so no change between the two is missed.
            changed.as_mut().enable();
            if self.in_flight() == 0 {
                tokio::select! {
                    () = tokio::time::sleep(timeout) => return,
                    () = &mut changed => {}
                }
            } else {
                changed.await;
            }
        }
    }
}

impl Drop for InFlight {
    fn drop(&mut self) {
        self.activity.in_flight.fetch_sub(1, Ordering::AcqRel);
        self.activity.changed.notify_waiters();
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
}
