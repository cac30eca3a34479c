//! Bearer-token authentication through in-process caches.
//!
//! The hot path hashes the token (HMAC-SHA256) and reads two [`Cache`]s: token hash → tenant
//! id, and tenant id → what ingest needs (active, shard, rate limiter). Only a miss goes to
//! Redis; concurrent misses for one key share one lookup, and unknown tokens are remembered
//! for `auth.negative_ttl_ms`, so a flood of bad tokens costs Redis one lookup per token and
//! period. The caches stay coherent with other instances through [`crate::redis::invalidation`]:
//! [`Auth`] drops what [`Invalidation::Tenant`] and [`Invalidation::Token`] name.

use std::num::NonZeroU32;
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures_util::future::BoxFuture;
use governor::{DefaultDirectRateLimiter, Quota, RateLimiter};
use tokio::sync::Semaphore;

use crate::config::AuthConfig;
use crate::crypto::TokenHash;
use crate::model::{CatalogueMode, KeepHeaders, RateLimit, TenantId};
use crate::redis::cache::{Cache, CacheSettings};
use crate::redis::invalidation::{Invalidate, Invalidation};
use crate::redis::keyspace::shard_of;
use crate::store::{Store, StoreError};
use crate::telemetry::CacheName;

/// Why a request is not authenticated.
#[derive(Debug, thiserror::Error)]
pub enum AuthError {
    #[error("missing bearer token")]
    Missing,
    #[error("the Authorization header must be `Bearer <token>`")]
    Malformed,
    #[error("unknown or revoked token")]
    Invalid,
    #[error("tenant is disabled")]
    Disabled,
    /// The token store could not answer (Redis away, or a record it cannot read).
    #[error("token store: {0}")]
    Store(#[source] Arc<StoreError>),
}

/// What the edge needs to know about an authenticated tenant.
#[derive(Debug)]
pub struct TenantAuth {
    pub id: TenantId,
    /// Whether the tenant may send events.
    pub active: bool,
    /// Shard stream of the tenant's events.
    pub shard: u16,
    /// How ingest holds the tenant's events to its catalogue.
    pub catalogue: CatalogueMode,
    /// The request headers kept with each event.
    pub keep_headers: KeepHeaders,
    /// The tenant's rate limiter, if it has a limit.
    limiter: Option<Arc<Limiter>>,
}

impl TenantAuth {
    /// `Err(retry_after)` when the tenant is over its rate limit.
    pub fn check_rate(&self) -> Result<(), Duration> {
        match &self.limiter {
            None => Ok(()),
            Some(l) => l.limiter.check().map_err(|not_until| {
                not_until.wait_time_from(governor::clock::Clock::now(
                    &governor::clock::DefaultClock::default(),
                ))
            }),
        }
    }
}

/// A limiter together with the limit it enforces, so a changed limit gets a new limiter and an
/// unchanged one keeps its state across cache reloads.
#[derive(Debug)]
struct Limiter {
    limit: RateLimit,
    limiter: DefaultDirectRateLimiter,
}

/// The authenticator shared by every edge request.
pub struct Auth {
    /// Source of truth.
    store: Store,
    /// Token hash → owner.
    tokens: Cache<TokenHash, TenantId>,
    /// Tenant id → auth view.
    tenants: Cache<TenantId, Arc<TenantAuth>>,
    /// Rate limiters by tenant, outliving tenant-cache reloads.
    limiters: moka::sync::Cache<TenantId, Arc<Limiter>>,
    /// Limit of tenants without their own.
    default_rate_limit: Option<RateLimit>,
    /// Number of shard streams.
    shards: u16,
    /// Bounds concurrent Redis lookups on cache misses.
    miss_lookups: Semaphore,
}

impl std::fmt::Debug for Auth {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Auth")
            .field("tokens", &self.tokens.len())
            .field("tenants", &self.tenants.len())
            .finish()
    }
}

/// Most Redis lookups in flight for cache misses; further misses wait their turn.
const MAX_MISS_LOOKUPS: usize = 64;

impl Auth {
    pub fn new(
        store: Store,
        cfg: &AuthConfig,
        default_rate_limit: Option<RateLimit>,
        shards: u16,
    ) -> Auth {
        let settings = CacheSettings {
            capacity: cfg.cache_capacity,
            ttl: Duration::from_millis(cfg.cache_ttl_ms),
            negative_ttl: Duration::from_millis(cfg.negative_ttl_ms),
        };
        Auth {
            store,
            tokens: Cache::new(CacheName::Token, settings),
            tenants: Cache::new(CacheName::Tenant, settings),
            limiters: moka::sync::Cache::builder()
                .max_capacity(cfg.cache_capacity)
                .time_to_idle(Duration::from_secs(600))
                .build(),
            default_rate_limit,
            shards,
            miss_lookups: Semaphore::new(MAX_MISS_LOOKUPS),
        }
    }

    /// Authenticates the value of an `Authorization` header.
    pub async fn authenticate_header(
        &self,
        header: Option<&[u8]>,
    ) -> Result<Arc<TenantAuth>, AuthError> {
        let raw = header.ok_or(AuthError::Missing)?;
        let token = bearer_token(raw).ok_or(AuthError::Malformed)?;
        self.authenticate(token).await
    }

    /// Authenticates a bearer token and checks that its tenant is active.
    pub async fn authenticate(&self, token: &str) -> Result<Arc<TenantAuth>, AuthError> {
        if crate::model::text::check_token(token).is_err() {
            return Err(AuthError::Invalid);
        }
        let hash = self.store.crypto().hash_token(token);
        let store = &self.store;
        let owner = self
            .tokens
            .get_or_load(hash, async {
                let _permit = self.miss_lookups.acquire().await;
                Ok::<_, StoreError>(store.token_owner(&hash).await?.map(|o| o.tenant_id))
            })
            .await
            .map_err(AuthError::Store)?;
        let Some(tenant_id) = owner else {
            return Err(AuthError::Invalid);
        };
        match self.tenant(tenant_id).await? {
            Some(t) if t.active => Ok(t),
            Some(_) => Err(AuthError::Disabled),
            // The token outlived its tenant (deleted concurrently): it is no longer valid.
            None => Err(AuthError::Invalid),
        }
    }

    /// The tenant `id` as the edge sees it (for requests authenticated otherwise than by a
    /// bearer token, such as a source's URL token): disabled → `Disabled`, unknown → `Invalid`.
    pub async fn tenant_by_id(&self, id: &TenantId) -> Result<Arc<TenantAuth>, AuthError> {
        match self.tenant(id.clone()).await? {
            Some(t) if t.active => Ok(t),
            Some(_) => Err(AuthError::Disabled),
            None => Err(AuthError::Invalid),
        }
    }

    async fn tenant(&self, id: TenantId) -> Result<Option<Arc<TenantAuth>>, AuthError> {
        let loaded = id.clone();
        self.tenants
            .get_or_load(id, async {
                let _permit = self.miss_lookups.acquire().await;
                let record = self.store.tenant(&loaded).await?;
                Ok::<_, StoreError>(record.map(|record| {
                    Arc::new(TenantAuth {
                        shard: shard_of(&record.id, self.shards),
                        active: record.active,
                        catalogue: record.catalogue,
                        keep_headers: record.keep_headers.clone(),
                        limiter: self
                            .limiter_for(&loaded, record.rate_limit.or(self.default_rate_limit)),
                        id: loaded.clone(),
                    })
                }))
            })
            .await
            .map_err(AuthError::Store)
    }

    fn limiter_for(&self, id: &TenantId, limit: Option<RateLimit>) -> Option<Arc<Limiter>> {
        let Some(limit) = limit else {
            self.limiters.invalidate(id);
            return None;
        };
        if let Some(existing) = self.limiters.get(id) {
            if existing.limit == limit {
                return Some(existing);
            }
        }
        let limiter = Arc::new(Limiter {
            limit,
            limiter: RateLimiter::direct(quota(&limit)),
        });
        self.limiters.insert(id.clone(), limiter.clone());
        Some(limiter)
    }

    /// Drops what `change` names from this instance's caches now (the change's own instance
    /// does not wait for the published message).
    pub async fn forget(&self, change: &Invalidation) {
        self.invalidate(change).await;
    }
}

impl Invalidate for Auth {
    fn invalidate<'a>(&'a self, message: &'a Invalidation) -> BoxFuture<'a, ()> {
        Box::pin(async move {
            match message {
                Invalidation::Tenant(id) => self.tenants.invalidate(id).await,
                Invalidation::Token(hash) => self.tokens.invalidate(hash).await,
                _ => {}
            }
        })
    }

    fn recheck<'a>(&'a self, message: &'a Invalidation, changed_at: Instant) -> BoxFuture<'a, ()> {
        Box::pin(async move {
            match message {
                Invalidation::Tenant(id) => {
                    self.tenants.invalidate_if_read_before(id, changed_at).await
                }
                Invalidation::Token(hash) => {
                    self.tokens
                        .invalidate_if_read_before(hash, changed_at)
                        .await
                }
                _ => {}
            }
        })
    }

    fn invalidate_all(&self) {
        self.tokens.invalidate_all();
        self.tenants.invalidate_all();
    }
}

/// The GCRA quota of a limit: one cell every `1 / per_second`, with the limit's burst.
fn quota(limit: &RateLimit) -> Quota {
    let burst = NonZeroU32::new(limit.effective_burst()).unwrap_or(NonZeroU32::MIN);
    // `period` is never zero, which is all `with_period` refuses.
    Quota::with_period(limit.period())
        .unwrap_or_else(|| Quota::per_second(NonZeroU32::MIN))
        .allow_burst(burst)
}

/// The token of a `Bearer <token>` header value (scheme case-insensitive).
pub fn bearer_token(raw: &[u8]) -> Option<&str> {
    let text = std::str::from_utf8(raw).ok()?;
    let (scheme, token) = text.split_once(' ')?;
    if !scheme.eq_ignore_ascii_case("bearer") {
        return None;
    }
    let token = token.trim();
    (!token.is_empty()).then_some(token)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bearer_header_parsing() {
        assert_eq!(bearer_token(b"Bearer abc"), Some("abc"));
        assert_eq!(bearer_token(b"bearer  abc "), Some("abc"));
        assert_eq!(bearer_token(b"Basic abc"), None);
        assert_eq!(bearer_token(b"Bearer "), None);
        assert_eq!(bearer_token(b"Bearer"), None);
        assert_eq!(bearer_token(&[0xff, 0xfe]), None);
    }

    fn limit(per_second: f64, burst: Option<u32>) -> RateLimit {
        RateLimit::try_new(per_second, burst).unwrap_or_else(|_| RateLimit::clamped(1.0, None))
    }

    #[test]
    fn quota_allows_burst_then_refuses() {
        let l = RateLimiter::direct(quota(&limit(1.0, Some(3))));
        assert!(l.check().is_ok());
        assert!(l.check().is_ok());
        assert!(l.check().is_ok());
        assert!(l.check().is_err());
    }

    #[test]
    fn fractional_rates_have_long_periods() {
        let l = RateLimiter::direct(quota(&limit(0.5, None)));
        assert!(l.check().is_ok());
        let wait = l.check().err().map(|nu| {
            nu.wait_time_from(governor::clock::Clock::now(
                &governor::clock::DefaultClock::default(),
            ))
        });
        assert!(
            wait.is_some_and(|w| w > Duration::from_millis(1500) && w <= Duration::from_secs(2))
        );
    }

    #[test]
    fn the_slowest_and_fastest_limits_make_quotas_without_panicking() {
        for l in [
            RateLimit::clamped(1e-12, Some(1)),
            RateLimit::clamped(f64::NAN, None),
            RateLimit::clamped(1e9, None),
        ] {
            let q = RateLimiter::direct(quota(&l));
            assert!(q.check().is_ok());
        }
    }
}
