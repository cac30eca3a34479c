//! The dispatcher's view of each tenant's targets: loaded from the store once, compiled into a
//! [`Matcher`], cached, and dropped when the store announces a change (`targets:<tenant>` on the
//! invalidation channel) or after a TTL, which also covers a missed announcement.

use std::sync::Arc;
use std::time::{Duration, Instant};

use super::matcher::Matcher;
use crate::store::{Store, StoreError, Target};

/// A tenant's targets, compiled for matching.
#[derive(Debug)]
pub struct TenantTargets {
    pub targets: Vec<Arc<Target>>,
    matcher: Matcher,
    read_at: Instant,
}

impl TenantTargets {
    pub fn new(targets: Vec<Target>) -> TenantTargets {
        let matcher = Matcher::new(targets.iter().map(|t| t.events.iter().map(String::as_str)));
        TenantTargets {
            targets: targets.into_iter().map(Arc::new).collect(),
            matcher,
            read_at: Instant::now(),
        }
    }

    /// The active targets that want `event_type`.
    pub fn matching(&self, event_type: &str) -> Vec<Arc<Target>> {
        self.matcher
            .matches(event_type)
            .into_iter()
            .filter_map(|i| self.targets.get(i))
            .filter(|t| t.active)
            .cloned()
            .collect()
    }

    pub fn by_id(&self, id: &str) -> Option<&Arc<Target>> {
        self.targets.iter().find(|t| t.id == id)
    }
}

/// Tenant id → compiled targets.
#[derive(Debug, Clone)]
pub struct TargetCache {
    store: Store,
    cache: moka::future::Cache<String, Arc<TenantTargets>>,
}

impl TargetCache {
    pub fn new(store: Store, ttl: Duration) -> TargetCache {
        TargetCache {
            store,
            cache: moka::future::Cache::builder()
                .max_capacity(100_000)
                .time_to_live(ttl)
                .build(),
        }
    }

    /// The tenant's targets (loaded on a miss; concurrent misses share one load).
    pub async fn get(&self, tenant: &str) -> Result<Arc<TenantTargets>, Arc<StoreError>> {
        let store = self.store.clone();
        let id = tenant.to_owned();
        self.cache
            .try_get_with(tenant.to_owned(), async move {
                let targets = store.targets_of(&id).await?;
                Ok::<_, StoreError>(Arc::new(TenantTargets::new(targets)))
            })
            .await
    }

    /// Drops a tenant's entry (`targets:<tenant>` announced).
    pub async fn invalidate(&self, tenant: &str) {
        self.cache.invalidate(tenant).await;
    }

    /// Drops the entry again if it was read before `changed_at`.
    pub async fn recheck(&self, tenant: &str, changed_at: Instant) {
        if self
            .cache
            .get(tenant)
            .await
            .is_some_and(|e| e.read_at < changed_at)
        {
            self.cache.invalidate(tenant).await;
        }
    }

    pub fn invalidate_all(&self) {
        self.cache.invalidate_all();
    }
}
