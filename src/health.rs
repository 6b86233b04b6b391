//! Readiness: whether every worker is accepting, whether the gateway is draining, and what the
//! CDN canaries found; what the admin listener's `/readyz` answers from. Shared by `Arc` between
//! the workers, the canaries and the admin listener, never a global.

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};

use crate::canary::CanaryBoard;

/// Where the gateway is in its life, for `/readyz` and the status page.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Readiness {
    /// Not every worker accepts yet.
    Starting,
    /// Every worker accepts connections.
    Ready,
    /// Shutting down: listeners closed, requests in flight finishing.
    Draining,
}

impl Readiness {
    /// `starting`, `ready` or `draining`.
    pub fn as_str(self) -> &'static str {
        match self {
            Readiness::Starting => "starting",
            Readiness::Ready => "ready",
            Readiness::Draining => "draining",
        }
    }
}

/// The workers' states, as they report them from their accept loops.
#[derive(Debug)]
pub struct Health {
    workers: usize,
    accepting: AtomicUsize,
    draining: AtomicBool,
    canaries: CanaryBoard,
}

impl Health {
    /// Health for `workers` accept loops, none accepting yet.
    pub fn new(workers: usize) -> Self {
        Self {
            workers: workers.max(1),
            accepting: AtomicUsize::new(0),
            draining: AtomicBool::new(false),
            canaries: CanaryBoard::default(),
        }
    }

    /// The CDN canaries' last checks: a refusal on one that gates readiness makes `/readyz`
    /// answer 503 (see [`crate::canary`]).
    pub fn canaries(&self) -> &CanaryBoard {
        &self.canaries
    }

    /// A worker's accept loop has started.
    pub fn worker_accepting(&self) {
        self.accepting.fetch_add(1, Ordering::AcqRel);
    }

    /// A worker stopped accepting and is draining: from now on the gateway is not ready, and
    /// never will be again.
    pub fn worker_draining(&self) {
        self.draining.store(true, Ordering::Release);
        // Never below zero, even for a loop that stops before it started.
        let _ = self
            .accepting
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| n.checked_sub(1));
    }

    /// Where the gateway is now.
    pub fn readiness(&self) -> Readiness {
        if self.draining.load(Ordering::Acquire) {
            Readiness::Draining
        } else if self.accepting.load(Ordering::Acquire) >= self.workers {
            Readiness::Ready
        } else {
            Readiness::Starting
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ready_once_every_worker_accepts_and_never_again_after_draining_begins() {
        let health = Health::new(2);
        assert_eq!(health.readiness(), Readiness::Starting);
        health.worker_accepting();
        assert_eq!(health.readiness(), Readiness::Starting);
        health.worker_accepting();
        assert_eq!(health.readiness(), Readiness::Ready);
        health.worker_draining();
        assert_eq!(health.readiness(), Readiness::Draining);
        health.worker_accepting();
        assert_eq!(health.readiness(), Readiness::Draining);
    }
}
