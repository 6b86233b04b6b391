//! A sharded LRU of values that hold for one expiry bucket (signed credentials, signed URLs,
//! authorization decisions), so cores do not queue on one lock.
//!
//! Bounded twice: by entries and, for a cache given a weigher, by bytes. A shard drops every
//! entry once a newer bucket's value arrives, so nothing outlives the bucket it was made for.

use std::borrow::Borrow;
use std::hash::{BuildHasher, Hash, RandomState};
use std::num::NonZeroUsize;
use std::sync::atomic::AtomicI64;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};

use lru::LruCache;

use crate::filelink::Handle;
use crate::metrics::CacheMetrics;
use crate::policy::{Call, Credentials};

/// What credentials are cached under within one route: the file and the calls they grant, so a
/// bare URL's `read` credentials and a thumbnail's `read`+`convert` ones are never shared.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct CacheKey {
    /// The file, or none for an upload policy.
    pub handle: Option<Handle>,
    /// The calls granted: exactly these, or none for the route's whole `calls` list.
    pub calls: Option<&'static [Call]>,
}

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

struct Shard<K, V> {
    /// Each value with the expiry it was made for.
    lru: LruCache<K, (u64, Arc<V>)>,
    hits: u64,
    misses: u64,
    /// What [`BucketCache::weigh`] says the entries weigh.
    bytes: usize,
    /// The latest expiry stored: an insert for a later one clears the shard.
    newest: u64,
}

/// How many bytes an entry holds, key and value, heap and bookkeeping.
pub type Weigher<K, V> = fn(&K, &V) -> usize;

/// Values per key, reused while they carry the current expiry, bounded to `capacity` entries.
///
/// A std `Mutex` is right here: the critical section is a hash lookup, never held across an
/// `.await`, and cheaper than an async lock.
pub struct BucketCache<K, V> {
    shards: Box<[Mutex<Shard<K, V>>]>,
    hasher: RandomState,
    weigh: Weigher<K, V>,
    /// Bytes each shard may hold, by `weigh`.
    shard_budget: usize,
    /// Lookups, evictions and entries, for `/metrics` (unregistered unless given).
    metrics: CacheMetrics,
    /// What this cache added to `metrics.entries`, taken back when it is dropped (a reload
    /// that builds a route's cache afresh), so the gauge counts only caches in use.
    counted: AtomicI64,
}

impl<K, V> Drop for BucketCache<K, V> {
    fn drop(&mut self) {
        self.metrics.entries.dec_by(*self.counted.get_mut());
    }
}

/// Signed credentials per handle, for one route.
pub type CredentialCache = BucketCache<CacheKey, Credentials>;

impl<K: Hash + Eq, V> BucketCache<K, V> {
    /// A cache of at most `capacity` entries, split over a few shards per core.
    pub fn new(capacity: NonZeroUsize) -> Self {
        Self::weighed(capacity, usize::MAX, |_, _| 0)
    }

    /// A cache of at most `capacity` entries and `budget` bytes as `weigh` counts them. An
    /// entry heavier than a shard's share of the budget is not cached.
    pub fn weighed(capacity: NonZeroUsize, budget: usize, weigh: Weigher<K, V>) -> Self {
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
                    bytes: 0,
                    newest: 0,
                })
            })
            .collect();
        Self {
            shards,
            hasher: RandomState::new(),
            weigh,
            shard_budget: budget / shard_count,
            metrics: CacheMetrics::default(),
            counted: AtomicI64::new(0),
        }
    }

    /// Counts this cache's lookups, evictions and entries in `metrics`; call it while the
    /// cache is empty.
    pub fn with_metrics(mut self, metrics: CacheMetrics) -> Self {
        self.metrics = metrics;
        self
    }

    /// Returns the value cached for `key` if it was made for `expiry`, or makes a new one with
    /// `make` (outside the lock) and caches it. `make` may decline (`None`): nothing is cached.
    pub fn get_or_make<Q>(
        &self,
        key: &Q,
        expiry: u64,
        make: impl FnOnce() -> Option<V>,
    ) -> Option<(Arc<V>, CacheOutcome)>
    where
        K: Borrow<Q>,
        Q: Hash + Eq + ToOwned<Owned = K> + ?Sized,
    {
        if let Some(found) = self.get(key, expiry) {
            return Some((found, CacheOutcome::Hit));
        }
        let fresh = self.insert(key, expiry, make()?);
        Some((fresh, CacheOutcome::Miss))
    }

    /// [`BucketCache::get_or_make`] with a maker that always makes a value.
    pub fn get_or_sign<Q>(
        &self,
        key: &Q,
        expiry: u64,
        make: impl FnOnce() -> V,
    ) -> (Arc<V>, CacheOutcome)
    where
        K: Borrow<Q>,
        Q: Hash + Eq + ToOwned<Owned = K> + ?Sized,
    {
        match self.get(key, expiry) {
            Some(found) => (found, CacheOutcome::Hit),
            None => (self.insert(key, expiry, make()), CacheOutcome::Miss),
        }
    }

    /// The value cached for `key` if it was made for `expiry`; counts the hit or the miss.
    pub fn get<Q>(&self, key: &Q, expiry: u64) -> Option<Arc<V>>
    where
        K: Borrow<Q>,
        Q: Hash + Eq + ?Sized,
    {
        let mut guard = lock(self.shard(key));
        let found = guard
            .lru
            .get(key)
            .filter(|(made_for, _)| *made_for == expiry)
            .map(|(_, value)| Arc::clone(value));
        if found.is_some() {
            guard.hits += 1;
            self.metrics.hits.inc();
        } else {
            guard.misses += 1;
            self.metrics.misses.inc();
        }
        found
    }

    /// Caches `value` for `key` and `expiry`, for a value made where a closure cannot make it
    /// (after an `.await`). Two requests missing at once both make it and both store it; for
    /// signed credentials the values are byte-identical.
    pub fn insert<Q>(&self, key: &Q, expiry: u64, value: V) -> Arc<V>
    where
        K: Borrow<Q>,
        Q: Hash + Eq + ToOwned<Owned = K> + ?Sized,
    {
        let value = Arc::new(value);
        let key = key.to_owned();
        let weight = (self.weigh)(&key, &value);
        if weight > self.shard_budget {
            return value;
        }
        let mut shard = lock(self.shard(&key));
        let mut evicted = 0;
        if expiry > shard.newest {
            // Every entry was made for an earlier bucket and can never be served again.
            evicted += shard.lru.len();
            shard.lru.clear();
            shard.bytes = 0;
            shard.newest = expiry;
        }
        let replacing = shard.lru.contains(Borrow::<Q>::borrow(&key));
        if let Some((old_key, (_, old))) = shard.lru.push(key, (expiry, Arc::clone(&value))) {
            // The same key's earlier value, or the least recently used entry pushed out.
            shard.bytes -= (self.weigh)(&old_key, &old);
            evicted += usize::from(!replacing);
        }
        shard.bytes += weight;
        while shard.bytes > self.shard_budget {
            let Some((old_key, (_, old))) = shard.lru.pop_lru() else {
                break;
            };
            shard.bytes -= (self.weigh)(&old_key, &old);
            evicted += 1;
        }
        drop(shard);
        let added = i64::from(!replacing);
        let evicted = i64::try_from(evicted).unwrap_or(i64::MAX);
        if added != evicted {
            self.metrics.entries.inc_by(added - evicted);
            self.counted
                .fetch_add(added - evicted, std::sync::atomic::Ordering::Relaxed);
        }
        if evicted > 0 {
            self.metrics.evictions.inc_by(evicted.unsigned_abs());
        }
        value
    }

    /// Bytes held now, as the weigher counts them.
    pub fn bytes(&self) -> usize {
        self.shards.iter().map(|s| lock(s).bytes).sum()
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

    fn shard<Q: Hash + ?Sized>(&self, key: &Q) -> &Mutex<Shard<K, V>> {
        let hash = self.hasher.hash_one(key);
        // Truncating the hash is fine: any bits spread keys evenly.
        &self.shards[(hash as usize) % self.shards.len()]
    }
}

/// A panic while holding a shard cannot leave it inconsistent (puts are atomic), so a poisoned
/// lock is still usable.
fn lock<K, V>(shard: &Mutex<Shard<K, V>>) -> MutexGuard<'_, Shard<K, V>> {
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
        CacheKey {
            handle: Some(Handle::parse(&format!("{i:0>20}")).expect("digits are a valid handle")),
            calls: None,
        }
    }

    #[test]
    fn reuses_while_the_expiry_holds_and_resigns_after() {
        let cache = CredentialCache::new(NonZeroUsize::new(10).expect("non-zero"));
        let get = |expiry, tag| {
            cache
                .get_or_make(&key(1), expiry, || Some(creds(expiry, tag)))
                .expect("made")
        };
        let (a, outcome) = get(100, "a");
        assert_eq!(outcome, CacheOutcome::Miss);
        let (b, outcome) = get(100, "b");
        assert_eq!(outcome, CacheOutcome::Hit);
        assert!(Arc::ptr_eq(&a, &b));
        let (c, outcome) = get(200, "c");
        assert_eq!(outcome, CacheOutcome::Miss);
        assert_eq!(c.policy, "c");
        assert_eq!((cache.hits(), cache.misses()), (1, 2));
    }

    #[test]
    fn string_keys_are_looked_up_by_str_and_declined_values_are_not_cached() {
        let cache: BucketCache<String, String> =
            BucketCache::new(NonZeroUsize::new(4).expect("non-zero"));
        assert!(cache.get_or_make("a", 1, || None).is_none());
        assert!(cache.is_empty());
        let made = cache.get_or_make("a", 1, || Some("A".to_owned()));
        assert_eq!(
            made.map(|(v, o)| (v.to_string(), o)),
            Some(("A".into(), CacheOutcome::Miss))
        );
        let hit = cache.get_or_make("a", 1, || None);
        assert_eq!(
            hit.map(|(v, o)| (v.to_string(), o)),
            Some(("A".into(), CacheOutcome::Hit))
        );
    }

    const WEIGH_STRINGS: Weigher<String, String> = |key, value| key.len() + value.len();

    #[test]
    fn a_weighed_cache_keeps_within_its_byte_budget_and_skips_heavy_entries() {
        let capacity = NonZeroUsize::new(10_000).expect("non-zero");
        let cache: BucketCache<String, String> =
            BucketCache::weighed(capacity, 64 * 1024, WEIGH_STRINGS);
        let shards = cache.shards.len();
        for i in 0..5_000 {
            cache.insert(&format!("key-{i:06}"), 1, "v".repeat(90));
            assert!(cache.bytes() <= 64 * 1024, "{} bytes", cache.bytes());
        }
        assert!(cache.bytes() > 64 * 1024 / 2, "the budget is used");
        let summed: usize = cache
            .shards
            .iter()
            .map(|s| {
                lock(s)
                    .lru
                    .iter()
                    .map(|(k, (_, v))| WEIGH_STRINGS(k, v))
                    .sum::<usize>()
            })
            .sum();
        assert_eq!(
            summed,
            cache.bytes(),
            "the running count matches the entries"
        );
        // Heavier than one shard's share: answered, not kept.
        let heavy = "h".repeat(64 * 1024 / shards + 1);
        let before = cache.len();
        cache.insert("heavy", 1, heavy);
        assert!(cache.get("heavy", 1).is_none());
        assert_eq!(cache.len(), before);
    }

    #[test]
    fn a_newer_bucket_drops_every_entry_of_older_ones() {
        let cache: BucketCache<String, String> = BucketCache::weighed(
            NonZeroUsize::new(1_000).expect("non-zero"),
            1 << 20,
            WEIGH_STRINGS,
        );
        for i in 0..500 {
            cache.insert(&format!("k{i}"), 100, "old".to_owned());
        }
        assert_eq!(cache.len(), 500);
        // One insert per shard for the next bucket (keys land where their hash says).
        for i in 0..5_000 {
            cache.insert(&format!("n{i}"), 200, "new".to_owned());
        }
        for i in 0..500 {
            assert!(cache.get(&format!("k{i}"), 100).is_none());
        }
        let old_left: usize = cache
            .shards
            .iter()
            .map(|s| lock(s).lru.iter().filter(|(_, (e, _))| *e == 100).count())
            .sum();
        assert_eq!(
            old_left, 0,
            "past-bucket entries were dropped, not just missed"
        );
    }

    #[test]
    fn metrics_follow_lookups_evictions_and_entries() {
        let metrics = CacheMetrics::default();
        let cache: BucketCache<String, String> =
            BucketCache::new(NonZeroUsize::new(2).expect("non-zero")).with_metrics(metrics.clone());
        let shards = cache.shards.len();
        let entries = || metrics.entries.get();
        assert!(cache.get_or_make("a", 1, || Some("A".into())).is_some());
        assert!(cache.get_or_make("a", 1, || Some("A".into())).is_some());
        assert_eq!((metrics.hits.get(), metrics.misses.get()), (1, 1));
        assert_eq!(entries(), 1);
        // A stale value replaced under the same key is no eviction.
        cache.insert("a", 1, "A2".to_owned());
        assert_eq!((entries(), metrics.evictions.get()), (1, 0));
        cache.insert("b", 1, "B".to_owned());
        cache.insert("c", 1, "C".to_owned());
        assert_eq!(entries(), i64::try_from(cache.len()).expect("small"));
        assert_eq!(3 - metrics.evictions.get(), cache.len() as u64);
        // A newer bucket empties the shard it lands in.
        cache.insert("d", 2, "D".to_owned());
        assert_eq!(entries(), i64::try_from(cache.len()).expect("small"));
        assert_eq!(4 - metrics.evictions.get(), cache.len() as u64);
        assert!(shards <= 2);
        // A cache a reload dropped no longer counts.
        drop(cache);
        assert_eq!(entries(), 0);
    }

    #[test]
    fn never_holds_more_than_its_capacity() {
        for capacity in [1, 3, 7, 64, 1000] {
            let cache = CredentialCache::new(NonZeroUsize::new(capacity).expect("non-zero"));
            for i in 0..capacity * 5 {
                cache.get_or_make(&key(i), 1, || Some(creds(1, "x")));
            }
            assert!(cache.len() <= capacity, "{} > {capacity}", cache.len());
            assert!(!cache.is_empty());
        }
    }
}
