//! The dispatcher's view of each tenant's targets: loaded from the store once, compiled into a
//! [`Matcher`], cached, and dropped when the store announces a change
//! ([`Invalidation::Targets`]) or after a TTL, which also covers a missed announcement.

use std::sync::Arc;
use std::time::Instant;

use futures_util::future::BoxFuture;

use super::matcher::Matcher;
use crate::model::event_meta;
use crate::model::filter::Subject;
use crate::model::notice as notices;
use crate::model::time::rfc3339;
use crate::model::{TargetId, TenantId};
use crate::queue::StoredEvent;
use crate::redis::cache::{Cache, CacheSettings};
use crate::redis::invalidation::{Invalidate, Invalidation};
use crate::store::{Store, StoreError, Target};
use crate::telemetry::CacheName;

/// A tenant's targets, compiled for matching.
#[derive(Debug)]
pub struct TenantTargets {
    pub targets: Vec<Arc<Target>>,
    matcher: Matcher,
}

impl TenantTargets {
    pub fn new(targets: Vec<Target>) -> TenantTargets {
        let matcher = Matcher::new(targets.iter().map(|t| t.events.as_slice()));
        TenantTargets {
            targets: targets.into_iter().map(Arc::new).collect(),
            matcher,
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

    /// The active targets that want `event`: by its type, then by their payload filters. The
    /// body is parsed once, and only when a filter looks into it.
    pub fn matching_event(&self, event: &StoredEvent) -> Vec<Arc<Target>> {
        let mut targets = self.matching(event.event_type.as_str());
        // An operational event is never delivered to the target it is about: a failing
        // target would be told of its own failures, and fail them too.
        if let Some(about) = notices::about_target(event.event_type.as_str(), &event.body) {
            targets.retain(|t| t.id.as_str() != about);
        }
        if targets.iter().all(|t| t.filter.is_none()) {
            return targets;
        }
        let body: Option<serde_json::Value> = targets
            .iter()
            .any(|t| t.filter.as_ref().is_some_and(|f| f.filter().reads_body()))
            .then(|| serde_json::from_slice(&event.body).ok())
            .flatten();
        let received_at = rfc3339(event.id.received_at_ms().unwrap_or(0));
        let headers = serde_json::Value::Object(
            event
                .content_type
                .as_deref()
                .map(event_meta::headers_json)
                .unwrap_or_default(),
        );
        let subject = Subject {
            event_type: event.event_type.as_str(),
            body: body.as_ref(),
            headers: &headers,
            received_at: &received_at,
        };
        targets.retain(|t| {
            t.filter
                .as_ref()
                .is_none_or(|f| f.filter().matches(&subject))
        });
        targets
    }

    pub fn by_id(&self, id: &TargetId) -> Option<&Arc<Target>> {
        self.targets.iter().find(|t| t.id == *id)
    }
}

/// Tenant id → compiled targets. Cheap to clone.
#[derive(Debug, Clone)]
pub struct TargetCache {
    store: Store,
    cache: Cache<TenantId, Arc<TenantTargets>>,
}

impl TargetCache {
    pub fn new(store: Store, settings: CacheSettings) -> TargetCache {
        TargetCache {
            store,
            cache: Cache::new(CacheName::Targets, settings),
        }
    }

    /// The tenant's targets (loaded on a miss; concurrent misses share one load).
    pub async fn get(&self, tenant: &TenantId) -> Result<Arc<TenantTargets>, Arc<StoreError>> {
        let store = self.store.clone();
        let id = tenant.clone();
        let found = self
            .cache
            .get_or_load(tenant.clone(), async move {
                let targets = store.targets_of(&id).await?;
                Ok::<_, StoreError>(Some(Arc::new(TenantTargets::new(targets))))
            })
            .await?;
        Ok(found.unwrap_or_else(|| Arc::new(TenantTargets::new(Vec::new()))))
    }
}

impl TargetCache {
    /// Drops this process's copy of `tenant`'s targets at once (the other processes hear of
    /// the change through the invalidation channel).
    pub async fn forget(&self, tenant: &TenantId) {
        self.cache.invalidate(tenant).await;
    }

    /// Whether one of `tenant`'s targets other than `about` wants an event of `event_type`:
    /// an operational event nobody asked for is not written (it would only fill the stream
    /// and the counters). When the targets cannot be read, it is written.
    pub async fn wanted(&self, tenant: &TenantId, event_type: &str, about: &TargetId) -> bool {
        match self.get(tenant).await {
            Ok(t) => t.matching(event_type).iter().any(|t| t.id != *about),
            Err(_) => true,
        }
    }
}

impl Invalidate for TargetCache {
    fn invalidate<'a>(&'a self, message: &'a Invalidation) -> BoxFuture<'a, ()> {
        Box::pin(async move {
            if let Invalidation::Targets(tenant) = message {
                self.cache.invalidate(tenant).await;
            }
        })
    }

    fn recheck<'a>(&'a self, message: &'a Invalidation, changed_at: Instant) -> BoxFuture<'a, ()> {
        Box::pin(async move {
            if let Invalidation::Targets(tenant) = message {
                self.cache
                    .invalidate_if_read_before(tenant, changed_at)
                    .await;
            }
        })
    }

    fn invalidate_all(&self) {
        self.cache.invalidate_all();
    }
}
