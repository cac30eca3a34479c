//! The one in-process cache type, in front of every lookup the hot paths make (tokens, tenants,
//! targets, sources, monitors): moka underneath, bounded in entries, with a time to live for
//! found values and a shorter one for values found missing (so a flood of unknown tokens costs
//! Redis one lookup per token and period, and a newly created one is seen soon).
//!
//! Concurrent misses for one key share one load. Each entry remembers when the Redis read
//! behind it started, so an invalidation can drop again an entry whose read raced the change
//! it announces ([`Cache::invalidate_if_read_before`]). Coherence across instances is the job
//! of [`crate::redis::invalidation`]; each resource's cache says there which messages concern it.

use std::hash::Hash;
use std::sync::Arc;
use std::time::{Duration, Instant};

use moka::Expiry;

use crate::telemetry::{self, CacheName};

/// The size and lifetimes of one cache.
#[derive(Debug, Clone, Copy)]
pub struct CacheSettings {
    /// Most entries.
    pub capacity: u64,
    /// How long a found value stays (changes arrive sooner, by invalidation).
    pub ttl: Duration,
    /// How long a value found missing stays.
    pub negative_ttl: Duration,
}

#[derive(Clone)]
struct Entry<V> {
    value: Option<V>,
    /// When the Redis read behind this entry started.
    read_at: Instant,
}

struct Lifetimes {
    positive: Duration,
    negative: Duration,
}

impl<K, V> Expiry<K, Entry<V>> for Lifetimes {
    fn expire_after_create(&self, _: &K, v: &Entry<V>, _: Instant) -> Option<Duration> {
        Some(if v.value.is_some() {
            self.positive
        } else {
            self.negative
        })
    }
}

/// Key → found value, or `None` for a value known to be missing.
pub struct Cache<K, V> {
    name: CacheName,
    entries: moka::future::Cache<K, Entry<V>>,
}

impl<K, V> Clone for Cache<K, V>
where
    K: Hash + Eq + Send + Sync + 'static,
    V: Clone + Send + Sync + 'static,
{
    fn clone(&self) -> Self {
        Cache {
            name: self.name,
            entries: self.entries.clone(),
        }
    }
}

impl<K, V> std::fmt::Debug for Cache<K, V>
where
    K: Hash + Eq + Send + Sync + 'static,
    V: Clone + Send + Sync + 'static,
{
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Cache")
            .field("name", &self.name)
            .field("entries", &self.entries.entry_count())
            .finish()
    }
}

impl<K, V> Cache<K, V>
where
    K: Hash + Eq + Clone + Send + Sync + 'static,
    V: Clone + Send + Sync + 'static,
{
    pub fn new(name: CacheName, settings: CacheSettings) -> Cache<K, V> {
        Cache {
            name,
            entries: moka::future::Cache::builder()
                .max_capacity(settings.capacity)
                .expire_after(Lifetimes {
                    positive: settings.ttl,
                    negative: settings.negative_ttl,
                })
                .build(),
        }
    }

    /// The value for `key`: cached, or loaded by `load` (concurrent misses share one load).
    pub async fn get_or_load<E, F>(&self, key: K, load: F) -> Result<Option<V>, Arc<E>>
    where
        E: Send + Sync + 'static,
        F: Future<Output = Result<Option<V>, E>> + Send,
    {
        if let Some(e) = self.entries.get(&key).await {
            telemetry::cache_lookup(self.name, true);
            return Ok(e.value);
        }
        telemetry::cache_lookup(self.name, false);
        // Boxed: moka's loader future is large, and every lookup would otherwise carry (and
        // copy) it for a miss that happens once per key and lifetime.
        let entry = Box::pin(self.entries.try_get_with(key, async {
            let read_at = Instant::now();
            load.await.map(|value| Entry { value, read_at })
        }))
        .await?;
        Ok(entry.value)
    }

    /// Drops `key`'s entry.
    pub async fn invalidate(&self, key: &K) {
        self.entries.invalidate(key).await;
    }

    /// Drops `key`'s entry if its Redis read started before `changed_at`: such a read may
    /// have seen the value from before the change.
    pub async fn invalidate_if_read_before(&self, key: &K, changed_at: Instant) {
        let stale = self
            .entries
            .get(key)
            .await
            .is_some_and(|e| e.read_at < changed_at);
        if stale {
            self.entries.invalidate(key).await;
        }
    }

    /// Drops every entry.
    pub fn invalidate_all(&self) {
        self.entries.invalidate_all();
    }

    /// Entries held (approximate).
    pub fn len(&self) -> u64 {
        self.entries.entry_count()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicUsize, Ordering};

    fn settings() -> CacheSettings {
        CacheSettings {
            capacity: 100,
            ttl: Duration::from_secs(60),
            negative_ttl: Duration::from_millis(50),
        }
    }

    #[tokio::test]
    async fn loads_once_then_answers_from_memory() {
        let cache: Cache<u32, u32> = Cache::new(CacheName::Targets, settings());
        let loads = AtomicUsize::new(0);
        for _ in 0..3 {
            let v = cache
                .get_or_load(1, async {
                    loads.fetch_add(1, Ordering::SeqCst);
                    Ok::<_, ()>(Some(10))
                })
                .await;
            assert_eq!(v.ok().flatten(), Some(10));
        }
        assert_eq!(loads.load(Ordering::SeqCst), 1);
        cache.invalidate(&1).await;
        let _ = cache.get_or_load(1, async { Ok::<_, ()>(Some(11)) }).await;
        assert_eq!(
            cache
                .get_or_load(1, async { Ok::<_, ()>(None) })
                .await
                .ok()
                .flatten(),
            Some(11)
        );
    }

    #[tokio::test]
    async fn missing_values_are_remembered_briefly_and_errors_not_at_all() {
        let cache: Cache<u32, u32> = Cache::new(CacheName::Sources, settings());
        assert_eq!(
            cache
                .get_or_load(1, async { Ok::<_, ()>(None) })
                .await
                .ok()
                .flatten(),
            None
        );
        let cached = cache.get_or_load(1, async { Ok::<_, ()>(Some(5)) }).await;
        assert_eq!(cached.ok().flatten(), None, "the miss is remembered");
        tokio::time::sleep(Duration::from_millis(80)).await;
        let later = cache.get_or_load(1, async { Ok::<_, ()>(Some(5)) }).await;
        assert_eq!(
            later.ok().flatten(),
            Some(5),
            "…for its negative lifetime only"
        );
        assert!(
            cache
                .get_or_load(2, async { Err::<Option<u32>, _>("down") })
                .await
                .is_err()
        );
        let after = cache.get_or_load(2, async { Ok::<_, &str>(Some(1)) }).await;
        assert_eq!(after.ok().flatten(), Some(1));
    }

    #[tokio::test]
    async fn a_read_that_raced_a_change_is_dropped_again() {
        let cache: Cache<u32, u32> = Cache::new(CacheName::Monitors, settings());
        let _ = cache.get_or_load(1, async { Ok::<_, ()>(Some(1)) }).await;
        let changed_at = Instant::now();
        cache.invalidate_if_read_before(&1, changed_at).await;
        let v = cache.get_or_load(1, async { Ok::<_, ()>(Some(2)) }).await;
        assert_eq!(v.ok().flatten(), Some(2));
        cache.invalidate_if_read_before(&1, changed_at).await;
        let kept = cache.get_or_load(1, async { Ok::<_, ()>(Some(3)) }).await;
        assert_eq!(
            kept.ok().flatten(),
            Some(2),
            "a read after the change is kept"
        );
    }
}
