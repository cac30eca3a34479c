//! Bearer-token authentication through an in-process cache, kept coherent across instances.
//!
//! The hot path hashes the token (HMAC-SHA256) and reads two moka caches: token hash → tenant
//! id, and tenant id → what ingest needs (active, shard, rate limiter). Only a miss goes to
//! Redis; concurrent misses for one key share one lookup, and unknown tokens are remembered for
//! `auth.negative_ttl_ms` so a flood of bad tokens costs Redis one lookup per token and period.
//!
//! Coherence: the store publishes `tenant:<id>` / `token:<hash>` on the invalidation channel
//! after every change that narrows access; [`Invalidations::run`] drops the entry here, and
//! again one Redis timeout later, which covers a lookup that read the old value just before the
//! change and finished after the message. When the subscription drops, messages may have been
//! missed, so every entry is dropped on reconnect.

use std::num::NonZeroU32;
use std::sync::Arc;
use std::time::{Duration, Instant};

use fred::prelude::*;
use fred::clients::SubscriberClient;
use governor::{DefaultDirectRateLimiter, Quota, RateLimiter};
use moka::Expiry;
use tokio::sync::Semaphore;
use tokio_util::sync::CancellationToken;
use tokio_util::time::DelayQueue;

use crate::config::{AuthConfig, RateLimit};
use crate::crypto::TokenHash;
use crate::queue::shard_of;
use crate::store::{Store, StoreError, validate_token_text};
use crate::telemetry::{self, AuthCache};

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
    #[error("token store unavailable: {0}")]
    Unavailable(#[source] Arc<StoreError>),
}

/// What the edge needs to know about an authenticated tenant.
#[derive(Debug)]
pub struct TenantAuth {
    /// Tenant id.
    pub id: Arc<str>,
    /// Whether the tenant may send events.
    pub active: bool,
    /// Shard stream of the tenant's events.
    pub shard: u16,
    /// The tenant's rate limiter, if it has a limit.
    limiter: Option<Arc<Limiter>>,
}

impl TenantAuth {
    /// `Err(retry_after)` when the tenant is over its rate limit.
    pub fn check_rate(&self) -> Result<(), Duration> {
        match &self.limiter {
            None => Ok(()),
            Some(l) => l
                .limiter
                .check()
                .map_err(|not_until| not_until.wait_time_from(governor::clock::Clock::now(&governor::clock::DefaultClock::default()))),
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

#[derive(Clone)]
enum TokenEntry {
    Owner(Arc<str>),
    Unknown,
}

#[derive(Clone)]
enum TenantEntry {
    Found(Arc<TenantAuth>),
    Missing,
}

/// Positive entries live `positive`, negative ones `negative`.
struct Ttl {
    positive: Duration,
    negative: Duration,
}

impl Expiry<TokenHash, TokenEntry> for Ttl {
    fn expire_after_create(&self, _: &TokenHash, v: &TokenEntry, _: Instant) -> Option<Duration> {
        Some(match v {
            TokenEntry::Owner(_) => self.positive,
            TokenEntry::Unknown => self.negative,
        })
    }
}

impl Expiry<Arc<str>, TenantEntry> for Ttl {
    fn expire_after_create(&self, _: &Arc<str>, v: &TenantEntry, _: Instant) -> Option<Duration> {
        Some(match v {
            TenantEntry::Found(_) => self.positive,
            TenantEntry::Missing => self.negative,
        })
    }
}

/// The authenticator shared by every edge request.
pub struct Auth {
    /// Source of truth.
    store: Store,
    /// Token hash → owner.
    tokens: moka::future::Cache<TokenHash, TokenEntry>,
    /// Tenant id → auth view.
    tenants: moka::future::Cache<Arc<str>, TenantEntry>,
    /// Rate limiters by tenant, outliving tenant-cache reloads.
    limiters: moka::sync::Cache<Arc<str>, Arc<Limiter>>,
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
            .field("tokens", &self.tokens.entry_count())
            .field("tenants", &self.tenants.entry_count())
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
        let ttl = || Ttl {
            positive: Duration::from_millis(cfg.cache_ttl_ms),
            negative: Duration::from_millis(cfg.negative_ttl_ms),
        };
        Auth {
            store,
            tokens: moka::future::Cache::builder()
                .max_capacity(cfg.cache_capacity)
                .expire_after(ttl())
                .build(),
            tenants: moka::future::Cache::builder()
                .max_capacity(cfg.cache_capacity)
                .expire_after(ttl())
                .build(),
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
        if validate_token_text(token).is_err() {
            return Err(AuthError::Invalid);
        }
        let hash = self.store.crypto().hash_token(token);
        let tenant_id = match self.token_entry(hash).await? {
            TokenEntry::Owner(id) => id,
            TokenEntry::Unknown => return Err(AuthError::Invalid),
        };
        match self.tenant_entry(tenant_id).await? {
            TenantEntry::Found(t) if t.active => Ok(t),
            TenantEntry::Found(_) => Err(AuthError::Disabled),
            // The token outlived its tenant (deleted concurrently): it is no longer valid.
            TenantEntry::Missing => Err(AuthError::Invalid),
        }
    }

    async fn token_entry(&self, hash: TokenHash) -> Result<TokenEntry, AuthError> {
        if let Some(e) = self.tokens.get(&hash).await {
            telemetry::auth_cache(AuthCache::Token, true);
            return Ok(e);
        }
        telemetry::auth_cache(AuthCache::Token, false);
        // Boxed: moka's loader future is ~15 KB, and every request would otherwise carry (and
        // copy) it for a miss that happens once per token and TTL.
        Box::pin(self.tokens.try_get_with(hash, async {
                let _permit = self.miss_lookups.acquire().await;
                Ok::<_, StoreError>(match self.store.token_owner(&hash).await? {
                    Some(owner) => TokenEntry::Owner(owner.tenant_id.into()),
                    None => TokenEntry::Unknown,
                })
            }))
            .await
            .map_err(AuthError::Unavailable)
    }

    async fn tenant_entry(&self, id: Arc<str>) -> Result<TenantEntry, AuthError> {
        if let Some(e) = self.tenants.get(&id).await {
            telemetry::auth_cache(AuthCache::Tenant, true);
            return Ok(e);
        }
        telemetry::auth_cache(AuthCache::Tenant, false);
        Box::pin(self.tenants.try_get_with(id.clone(), async {
                let _permit = self.miss_lookups.acquire().await;
                Ok::<_, StoreError>(match self.store.tenant(&id).await? {
                    Some(record) => TenantEntry::Found(Arc::new(TenantAuth {
                        shard: shard_of(&record.id, self.shards),
                        active: record.active,
                        limiter: self.limiter_for(&id, record.rate_limit.or(self.default_rate_limit)),
                        id,
                    })),
                    None => TenantEntry::Missing,
                })
            }))
            .await
            .map_err(AuthError::Unavailable)
    }

    fn limiter_for(&self, id: &Arc<str>, limit: Option<RateLimit>) -> Option<Arc<Limiter>> {
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

    /// Drops one cache entry named as on the invalidation channel (`tenant:<id>`, `token:<hex>`).
    pub async fn invalidate(&self, entry: &str) {
        if let Some(id) = entry.strip_prefix("tenant:") {
            self.tenants.invalidate(id).await;
        } else if let Some(hex) = entry.strip_prefix("token:") {
            if let Some(hash) = TokenHash::from_hex(hex) {
                self.tokens.invalidate(&hash).await;
            }
        } else {
            tracing::debug!(entry, "ignoring an unknown invalidation");
        }
    }

    /// Drops every cached entry.
    pub fn invalidate_all(&self) {
        self.tokens.invalidate_all();
        self.tenants.invalidate_all();
    }
}

/// The GCRA quota of a limit: one cell every `1 / per_second`, with the limit's burst.
fn quota(limit: &RateLimit) -> Quota {
    let period = Duration::from_secs_f64(1.0 / limit.per_second).max(Duration::from_nanos(1));
    let burst = NonZeroU32::new(limit.effective_burst()).unwrap_or(NonZeroU32::MIN);
    // `with_period` refuses only a zero period, which `max` rules out.
    Quota::with_period(period)
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

/// The listener that keeps an instance's auth cache coherent with the others.
#[derive(Debug)]
pub struct Invalidations {
    /// The cache to keep coherent.
    auth: Arc<Auth>,
    /// A connection dedicated to the subscription.
    subscriber: SubscriberClient,
    /// The channel name.
    channel: String,
    /// How long after a message its entry is dropped a second time.
    recheck_after: Duration,
}

impl Invalidations {
    pub fn new(
        auth: Arc<Auth>,
        subscriber: SubscriberClient,
        channel: String,
        recheck_after: Duration,
    ) -> Invalidations {
        Invalidations {
            auth,
            subscriber,
            channel,
            recheck_after,
        }
    }

    /// Subscribes, so that changes made after this returns reach the cache.
    pub async fn subscribe(&self) -> Result<(), fred::error::Error> {
        self.subscriber.subscribe(self.channel.clone()).await
    }

    /// Applies invalidation messages until `shutdown`.
    pub async fn run(self, shutdown: CancellationToken) {
        let resubscriber = self.subscriber.manage_subscriptions();
        let mut messages = self.subscriber.message_rx();
        let mut reconnects = self.subscriber.reconnect_rx();
        let mut rechecks: DelayQueue<String> = DelayQueue::new();
        loop {
            tokio::select! {
                _ = shutdown.cancelled() => break,
                msg = messages.recv() => match msg {
                    Ok(message) => {
                        if let Some(entry) = message.value.as_str() {
                            self.auth.invalidate(&entry).await;
                            rechecks.insert(entry.into_owned(), self.recheck_after);
                        }
                    }
                    Err(tokio::sync::broadcast::error::RecvError::Lagged(n)) => {
                        tracing::warn!(missed = n, "auth invalidations lagged; dropping the whole cache");
                        self.auth.invalidate_all();
                    }
                    Err(tokio::sync::broadcast::error::RecvError::Closed) => break,
                },
                Ok(_) = reconnects.recv() => {
                    tracing::info!("invalidation subscription reconnected; dropping the whole auth cache");
                    self.auth.invalidate_all();
                }
                Some(expired) = futures_util::StreamExt::next(&mut rechecks), if !rechecks.is_empty() => {
                    self.auth.invalidate(expired.get_ref()).await;
                }
            }
        }
        resubscriber.abort();
        let _ = self.subscriber.quit().await;
    }
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

    #[test]
    fn quota_allows_burst_then_refuses() {
        let limit = RateLimit {
            per_second: 1.0,
            burst: Some(3),
        };
        let l = RateLimiter::direct(quota(&limit));
        assert!(l.check().is_ok());
        assert!(l.check().is_ok());
        assert!(l.check().is_ok());
        assert!(l.check().is_err());
    }

    #[test]
    fn fractional_rates_have_long_periods() {
        let limit = RateLimit {
            per_second: 0.5,
            burst: None,
        };
        let l = RateLimiter::direct(quota(&limit));
        assert!(l.check().is_ok());
        let wait = l
            .check()
            .err()
            .map(|nu| nu.wait_time_from(governor::clock::Clock::now(&governor::clock::DefaultClock::default())));
        assert!(wait.is_some_and(|w| w > Duration::from_millis(1500) && w <= Duration::from_secs(2)));
    }
}
