//! The bytes all of one worker's held rewrites may take at once. A JSON answer is held whole
//! before it is signed; many streams asking for large ones at the same time must not add up to
//! more than this. Past it, an answer passes through unrewritten, counted and logged.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use tokio::sync::{OwnedSemaphorePermit, Semaphore};

/// One worker's budget for held answer bytes.
#[derive(Debug)]
pub struct HoldBudget {
    bytes: Arc<Semaphore>,
    refused: AtomicU64,
}

/// Bytes taken from a [`HoldBudget`], given back when dropped (with the answer's body).
#[derive(Debug, Default)]
pub struct Held(Option<OwnedSemaphorePermit>);

impl HoldBudget {
    /// A budget of `bytes`.
    pub fn new(bytes: usize) -> Self {
        Self {
            bytes: Arc::new(Semaphore::new(bytes.min(Semaphore::MAX_PERMITS))),
            refused: AtomicU64::new(0),
        }
    }

    /// Adds `more` bytes to `held`, or says no (and counts it) when the budget has not that
    /// many left.
    pub fn take(&self, held: &mut Held, more: usize) -> bool {
        let taken = u32::try_from(more)
            .ok()
            .and_then(|n| Arc::clone(&self.bytes).try_acquire_many_owned(n).ok());
        match (taken, &mut held.0) {
            (Some(taken), Some(permit)) => permit.merge(taken),
            (Some(taken), none) => *none = Some(taken),
            (None, _) => {
                self.refused.fetch_add(1, Ordering::Relaxed);
                return false;
            }
        }
        true
    }

    /// Bytes free now.
    pub fn available(&self) -> usize {
        self.bytes.available_permits()
    }

    /// Answers passed through unrewritten because the budget was spent.
    pub fn refused(&self) -> u64 {
        self.refused.load(Ordering::Relaxed)
    }
}

impl Held {
    /// Gives the bytes back now.
    pub fn release(&mut self) {
        self.0 = None;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bytes_are_taken_until_the_budget_is_spent_and_given_back_on_drop() {
        let budget = HoldBudget::new(100);
        let mut a = Held::default();
        assert!(budget.take(&mut a, 60));
        assert!(budget.take(&mut a, 30));
        let mut b = Held::default();
        assert!(!budget.take(&mut b, 20), "only 10 left");
        assert_eq!((budget.available(), budget.refused()), (10, 1));
        drop(a);
        assert!(budget.take(&mut b, 20));
        b.release();
        assert_eq!(budget.available(), 100);
    }
}
