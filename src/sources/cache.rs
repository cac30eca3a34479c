//! The sources the hook route serves, by the hash of their URL token: read once from the
//! store with their verifier built, kept briefly, and dropped on every instance when a
//! source changes ([`Invalidation::Source`]).

use std::sync::Arc;
use std::time::{Duration, Instant};

use futures_util::future::BoxFuture;

use crate::crypto::TokenHash;
use crate::crypto::verify::Verifier;
use crate::redis::cache::{Cache, CacheSettings};
use crate::redis::invalidation::{Invalidate, Invalidation};
use crate::store::{Source, Store, StoreError};
use crate::telemetry::CacheName;

/// A source with its verifier, as requests use it.
#[derive(Debug)]
pub struct HookSource {
    pub source: Source,
    pub verifier: Verifier,
}

/// Sources by URL-token hash, cached briefly; changes are announced as
/// [`Invalidation::Source`]. Cheap to clone.
#[derive(Debug, Clone)]
pub struct SourceCache {
    store: Store,
    cache: Cache<TokenHash, Arc<HookSource>>,
}

impl SourceCache {
    pub fn new(store: Store, settings: CacheSettings) -> SourceCache {
        SourceCache {
            store,
            cache: Cache::new(CacheName::Sources, settings),
        }
    }

    pub(super) async fn get(
        &self,
        hash: TokenHash,
    ) -> Result<Option<Arc<HookSource>>, Arc<StoreError>> {
        let store = self.store.clone();
        self.cache
            .get_or_load(hash, async move {
                let Some(source) = store.source_by_token(&hash).await? else {
                    return Ok(None);
                };
                let verifier = Verifier::new(
                    source.scheme,
                    source.secret.expose(),
                    source.header.as_deref(),
                    source.tolerance_s.map(|t| Duration::from_secs(t.get())),
                )
                .map_err(|e| StoreError::Corrupt {
                    key: format!("source {}", source.id),
                    reason: e.to_string(),
                })?;
                Ok::<_, StoreError>(Some(Arc::new(HookSource { source, verifier })))
            })
            .await
    }
}

impl Invalidate for SourceCache {
    fn invalidate<'a>(&'a self, message: &'a Invalidation) -> BoxFuture<'a, ()> {
        Box::pin(async move {
            if let Invalidation::Source(hash) = message {
                self.cache.invalidate(hash).await;
            }
        })
    }

    fn recheck<'a>(&'a self, message: &'a Invalidation, changed_at: Instant) -> BoxFuture<'a, ()> {
        Box::pin(async move {
            if let Invalidation::Source(hash) = message {
                self.cache.invalidate_if_read_before(hash, changed_at).await;
            }
        })
    }

    fn invalidate_all(&self) {
        self.cache.invalidate_all();
    }
}
