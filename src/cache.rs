//! A sharded LRU of signed credentials, so cores do not queue on one lock.

use std::hash::{BuildHasher, RandomState};
use std::num::NonZeroUsize;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};

use lru::LruCache;

use crate::filelink::Handle;
use crate::policy::Credentials;

/// What credentials are cached under within one route: the handle, or none for upload policies.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct CacheKey(pub Option<Handle>);

/// Whether a lookup found usable credentials.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CacheOutcome {
    /// Reused cached credentials.
    Hit,
    /// Signed afresh (nothing cached, or the cached expiry was another bucket's).
    Miss,
}

impl CacheOutcome {
    /// `"hit"` or `"miss"`, for the access log.
    pub fn as_str(self) -> &'static str {
        match self {
            CacheOutcome::Hit => "hit",
            CacheOutcome::Miss => "miss",
        }
    }
}

struct Shard {
    lru: LruCache<CacheKey, Arc<Credentials>>,
    hits: u64,
    misses: u64,
}

/// Signed credentials per key, bounded to `capacity` entries in all.
///
/// A std `Mutex` is right here: the critical section is a hash lookup, never held across an
/// `.await`, and cheaper than an async lock.
pub struct CredentialCache {
    shards: Box<[Mutex<Shard>]>,
    hasher: RandomState,
}

impl CredentialCache {
    /// A cache of at most `capacity` entries, split over a few shards per core.
    pub fn new(capacity: NonZeroUsize) -> Self {
        let cores = std::thread::available_parallelism().map_or(1, NonZeroUsize::get);
        let shard_count = (cores * 4).next_power_of_two().min(capacity.get());
        let base = capacity.get() / shard_count;
        let extra = capacity.get() % shard_count;
        let shards = (0..shard_count)
            .map(|i| {
                let size = base + usize::from(i < extra);
                let size = NonZeroUsize::new(size)
                    .expect("shard_count <= capacity, so each shard holds at least one");
                Mutex::new(Shard {
                    lru: LruCache::new(size),
                    hits: 0,
                    misses: 0,
                })
            })
            .collect();
        Self {
            shards,
            hasher: RandomState::new(),
        }
    }

    /// Returns the cached credentials for `key` if they carry `expiry`, or signs new ones with
    /// `sign` (outside the lock) and caches them.
    pub fn get_or_sign(
        &self,
        key: CacheKey,
        expiry: u64,
        sign: impl FnOnce() -> Credentials,
    ) -> (Arc<Credentials>, CacheOutcome) {
        let shard = self.shard(&key);
        {
            let mut guard = lock(shard);
            if let Some(found) = guard.lru.get(&key).filter(|c| c.expiry == expiry).cloned() {
                guard.hits += 1;
                return (found, CacheOutcome::Hit);
            }
            guard.misses += 1;
        }
        // Two requests missing at once both sign; the results are byte-identical, so either wins.
        let fresh = Arc::new(sign());
        lock(shard).lru.put(key, Arc::clone(&fresh));
        (fresh, CacheOutcome::Miss)
    }

    /// Entries held now.
    pub fn len(&self) -> usize {
        self.shards.iter().map(|s| lock(s).lru.len()).sum()
    }

    /// Whether nothing is cached.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Lookups answered from the cache so far.
    pub fn hits(&self) -> u64 {
        self.shards.iter().map(|s| lock(s).hits).sum()
    }

    /// Lookups that had to sign so far.
    pub fn misses(&self) -> u64 {
        self.shards.iter().map(|s| lock(s).misses).sum()
    }

    fn shard(&self, key: &CacheKey) -> &Mutex<Shard> {
        let hash = self.hasher.hash_one(key);
        // Truncating the hash is fine: any bits spread keys evenly.
        &self.shards[(hash as usize) % self.shards.len()]
    }
}

/// A panic while holding a shard cannot leave it inconsistent (puts are atomic), so a poisoned
/// lock is still usable.
fn lock(shard: &Mutex<Shard>) -> MutexGuard<'_, Shard> {
    shard.lock().unwrap_or_else(PoisonError::into_inner)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn creds(expiry: u64, tag: &str) -> Credentials {
        Credentials {
            policy: tag.into(),
            signature: tag.into(),
            expiry,
        }
    }

    fn key(i: usize) -> CacheKey {
        CacheKey(Some(
            Handle::parse(&format!("{i:0>20}")).expect("digits are a valid handle"),
        ))
    }

    #[test]
    fn reuses_while_the_expiry_holds_and_resigns_after() {
        let cache = CredentialCache::new(NonZeroUsize::new(10).expect("non-zero"));
        let (a, outcome) = cache.get_or_sign(key(1), 100, || creds(100, "a"));
        assert_eq!(outcome, CacheOutcome::Miss);
        let (b, outcome) = cache.get_or_sign(key(1), 100, || creds(100, "b"));
        assert_eq!(outcome, CacheOutcome::Hit);
        assert!(Arc::ptr_eq(&a, &b));
        let (c, outcome) = cache.get_or_sign(key(1), 200, || creds(200, "c"));
        assert_eq!(outcome, CacheOutcome::Miss);
        assert_eq!(c.policy, "c");
        assert_eq!((cache.hits(), cache.misses()), (1, 2));
    }

    #[test]
    fn never_holds_more_than_its_capacity() {
        for capacity in [1, 3, 7, 64, 1000] {
            let cache = CredentialCache::new(NonZeroUsize::new(capacity).expect("non-zero"));
            for i in 0..capacity * 5 {
                cache.get_or_sign(key(i), 1, || creds(1, "x"));
            }
            assert!(cache.len() <= capacity, "{} > {capacity}", cache.len());
            assert!(!cache.is_empty());
        }
    }
}
