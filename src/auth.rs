//! Bearer-token authentication through an in-process cache, kept coherent across instances.
//!
//! The hot path hashes the token (HMAC-SHA256) and reads two moka caches: token hash → tenant
//! id, and tenant id → what ingest needs (active, shard, rate limiter). Only a miss goes to
//! Redis; concurrent misses for one key share one lookup, and unknown tokens are remembered for
//! `auth.negative_ttl_ms` so a flood of bad tokens costs Redis one lookup per token and period.
//!
//! Coherence: the store publishes numbered `tenant:<id>` / `token:<hash>` messages on the
//! invalidation channel after every change that narrows access; [`Invalidations::run`] drops the
//! entry here, and looks again one Redis timeout later: an entry whose read started before the
//! message arrived may hold the value from before the change, and is dropped too. A gap in the numbers (or a counter
//! that moved while the subscription was down) means messages were missed: then every entry is
//! dropped. A counter that went back means Redis lost its data; cached entries then live out
//! their TTL, so a Redis restart without persistence does not lock every tenant out at once.

use std::num::NonZeroU32;
use std::sync::Arc;
use std::time::{Duration, Instant};

use fred::clients::SubscriberClient;
use fred::prelude::*;
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

/// A cached token lookup: its owner, or `None` for an unknown token.
#[derive(Clone)]
struct TokenEntry {
    owner: Option<Arc<str>>,
    /// When the Redis read behind this entry started.
    read_at: Instant,
}

/// A cached tenant lookup: the tenant, or `None` for a missing one.
#[derive(Clone)]
struct TenantEntry {
    tenant: Option<Arc<TenantAuth>>,
    /// When the Redis read behind this entry started.
    read_at: Instant,
}

/// Positive entries live `positive`, negative ones `negative`.
struct Ttl {
    positive: Duration,
    negative: Duration,
}

impl Expiry<TokenHash, TokenEntry> for Ttl {
    fn expire_after_create(&self, _: &TokenHash, v: &TokenEntry, _: Instant) -> Option<Duration> {
        Some(if v.owner.is_some() {
            self.positive
        } else {
            self.negative
        })
    }
}

impl Expiry<Arc<str>, TenantEntry> for Ttl {
    fn expire_after_create(&self, _: &Arc<str>, v: &TenantEntry, _: Instant) -> Option<Duration> {
        Some(if v.tenant.is_some() {
            self.positive
        } else {
            self.negative
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
        let Some(tenant_id) = self.token_entry(hash).await?.owner else {
            return Err(AuthError::Invalid);
        };
        match self.tenant_entry(tenant_id).await?.tenant {
            Some(t) if t.active => Ok(t),
            Some(_) => Err(AuthError::Disabled),
            // The token outlived its tenant (deleted concurrently): it is no longer valid.
            None => Err(AuthError::Invalid),
        }
    }

    /// The tenant `id` as the edge sees it (for requests authenticated otherwise than by a
    /// bearer token, such as a source's URL token): disabled → `Disabled`, unknown → `Invalid`.
    pub async fn tenant_by_id(&self, id: &str) -> Result<Arc<TenantAuth>, AuthError> {
        match self.tenant_entry(id.into()).await?.tenant {
            Some(t) if t.active => Ok(t),
            Some(_) => Err(AuthError::Disabled),
            None => Err(AuthError::Invalid),
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
            let read_at = Instant::now();
            let owner = self.store.token_owner(&hash).await?;
            Ok::<_, StoreError>(TokenEntry {
                owner: owner.map(|o| o.tenant_id.into()),
                read_at,
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
            let read_at = Instant::now();
            let record = self.store.tenant(&id).await?;
            Ok::<_, StoreError>(TenantEntry {
                tenant: record.map(|record| {
                    Arc::new(TenantAuth {
                        shard: shard_of(&record.id, self.shards),
                        active: record.active,
                        limiter: self
                            .limiter_for(&id, record.rate_limit.or(self.default_rate_limit)),
                        id: id.clone(),
                    })
                }),
                read_at,
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

    /// Drops the entry again if its Redis read started before `changed_at` (when the change
    /// was announced): such a read may have seen the value from before the change.
    pub async fn recheck(&self, entry: &str, changed_at: Instant) {
        let stale = if let Some(id) = entry.strip_prefix("tenant:") {
            self.tenants
                .get(id)
                .await
                .is_some_and(|e| e.read_at < changed_at)
        } else if let Some(hash) = entry.strip_prefix("token:").and_then(TokenHash::from_hex) {
            self.tokens
                .get(&hash)
                .await
                .is_some_and(|e| e.read_at < changed_at)
        } else {
            false
        };
        if stale {
            self.invalidate(entry).await;
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
    /// Reads the invalidation counter after a reconnect.
    store: Store,
    /// The channel name.
    channel: String,
    /// How long after a message its entry is dropped a second time.
    recheck_after: Duration,
    /// Which invalidations this instance has seen.
    seq: SeqTracker,
    /// The dispatcher's target cache, kept coherent by the same messages (`targets:<tenant>`).
    targets: Option<crate::dispatch::TargetCache>,
    /// The inbound source cache (`source:<token hash>`).
    sources: Option<crate::sources::hooks::SourceCache>,
    /// The monitor cache (`monitor:<id>:<token hash>`).
    monitors: Option<crate::monitors::push::MonitorCache>,
}

impl Invalidations {
    pub fn new(
        auth: Arc<Auth>,
        subscriber: SubscriberClient,
        store: Store,
        recheck_after: Duration,
    ) -> Invalidations {
        let channel = store.keyspace().invalidation_channel();
        Invalidations {
            auth,
            subscriber,
            store,
            channel,
            recheck_after,
            seq: SeqTracker::default(),
            targets: None,
            sources: None,
            monitors: None,
        }
    }

    /// Keeps the monitor cache coherent too.
    pub fn with_monitors(mut self, cache: crate::monitors::push::MonitorCache) -> Invalidations {
        self.monitors = Some(cache);
        self
    }

    /// Keeps the inbound source cache coherent too.
    pub fn with_sources(mut self, cache: crate::sources::hooks::SourceCache) -> Invalidations {
        self.sources = Some(cache);
        self
    }

    /// Keeps the dispatcher's target cache coherent too.
    pub fn with_targets(mut self, cache: crate::dispatch::TargetCache) -> Invalidations {
        self.targets = Some(cache);
        self
    }

    /// Routes an entry to the cache that holds it: `targets:<tenant>`, `source:<hash>` and
    /// `monitor:<id>:<hash>` to theirs, everything else (`tenant:`, `token:`) to the auth cache.
    async fn drop_entry(&self, entry: &str) {
        if let Some(tenant) = entry.strip_prefix("targets:") {
            if let Some(t) = &self.targets {
                t.invalidate(tenant).await;
            }
        } else if let Some(hash) = entry.strip_prefix("source:") {
            if let Some(s) = &self.sources {
                s.invalidate(hash).await;
            }
        } else if let Some(id_and_hash) = entry.strip_prefix("monitor:") {
            if let Some(m) = &self.monitors {
                m.invalidate(id_and_hash).await;
            }
        } else {
            self.auth.invalidate(entry).await;
        }
    }

    async fn recheck_entry(&self, entry: &str, changed_at: Instant) {
        if let Some(tenant) = entry.strip_prefix("targets:") {
            if let Some(t) = &self.targets {
                t.recheck(tenant, changed_at).await;
            }
        } else if entry.starts_with("source:") || entry.starts_with("monitor:") {
            // Sources and monitors keep no read time: a read before the change may hold the old
            // token, so the entry is dropped again.
            self.drop_entry(entry).await;
        } else {
            self.auth.recheck(entry, changed_at).await;
        }
    }

    fn drop_all(&self) {
        self.auth.invalidate_all();
        if let Some(t) = &self.targets {
            t.invalidate_all();
        }
        if let Some(s) = &self.sources {
            s.invalidate_all();
        }
        if let Some(m) = &self.monitors {
            m.invalidate_all();
        }
    }

    /// Subscribes, so that changes made after this returns reach the cache.
    pub async fn subscribe(&mut self) -> Result<(), StoreError> {
        self.subscriber.subscribe(self.channel.clone()).await?;
        self.seq.last = self.store.invalidation_seq().await?;
        Ok(())
    }

    /// Applies invalidation messages until `shutdown`.
    pub async fn run(mut self, shutdown: CancellationToken) {
        let resubscriber = self.subscriber.manage_subscriptions();
        let mut messages = self.subscriber.message_rx();
        let mut reconnects = self.subscriber.reconnect_rx();
        let mut rechecks: DelayQueue<(String, Instant)> = DelayQueue::new();
        loop {
            tokio::select! {
                _ = shutdown.cancelled() => break,
                msg = messages.recv() => match msg {
                    Ok(message) => {
                        let Some(text) = message.value.as_str() else { continue };
                        let Some((n, entry)) = parse_message(&text) else {
                            tracing::debug!("ignoring a malformed invalidation");
                            continue;
                        };
                        self.drop_entry(entry).await;
                        rechecks.insert((entry.to_owned(), Instant::now()), self.recheck_after);
                        if self.seq.on_message(n) == Seen::Gap {
                            tracing::warn!("auth invalidations were missed; dropping the whole cache");
                            self.drop_all();
                        }
                    }
                    Err(tokio::sync::broadcast::error::RecvError::Lagged(n)) => {
                        tracing::warn!(missed = n, "auth invalidations lagged; dropping the whole cache");
                        self.drop_all();
                    }
                    Err(tokio::sync::broadcast::error::RecvError::Closed) => break,
                },
                Ok(_) = reconnects.recv() => self.after_reconnect().await,
                Some(expired) = futures_util::StreamExt::next(&mut rechecks), if !rechecks.is_empty() => {
                    let (entry, changed_at) = expired.into_inner();
                    self.recheck_entry(&entry, changed_at).await;
                }
            }
        }
        resubscriber.abort();
        let _ = self.subscriber.quit().await;
    }

    /// While the subscription was down, invalidations may have been published and missed: the
    /// counter tells. Only then is the whole cache dropped, so a Redis restart alone does not
    /// turn every request into a cache miss.
    async fn after_reconnect(&mut self) {
        let current = match self.store.invalidation_seq().await {
            Ok(n) => n,
            Err(e) => {
                tracing::warn!(error = %e, "cannot read the invalidation counter after a reconnect; dropping the whole auth cache");
                self.drop_all();
                return;
            }
        };
        match self.seq.on_reconnect(current) {
            Seen::InOrder => {
                tracing::info!("invalidation subscription reconnected; nothing was missed")
            }
            Seen::Gap => {
                tracing::info!(
                    "invalidations were published while disconnected; dropping the whole auth cache"
                );
                self.drop_all();
            }
            Seen::Reset => tracing::warn!(
                "the invalidation counter went back: Redis lost its data (restart without persistence, or a flush); cached tokens stay valid until they expire"
            ),
        }
    }
}

/// `<seq> <entry>`.
fn parse_message(text: &str) -> Option<(u64, &str)> {
    let (n, entry) = text.split_once(' ')?;
    Some((n.parse().ok()?, entry))
}

/// What a sequence number says about the messages before it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Seen {
    /// Nothing was missed.
    InOrder,
    /// At least one invalidation was missed.
    Gap,
    /// The counter restarted below what was seen: Redis lost its data.
    Reset,
}

/// The highest invalidation number seen.
#[derive(Debug, Default)]
struct SeqTracker {
    last: u64,
}

impl SeqTracker {
    fn on_message(&mut self, n: u64) -> Seen {
        let seen = if n > self.last + 1 {
            Seen::Gap
        } else {
            Seen::InOrder
        };
        self.last = self.last.max(n);
        seen
    }

    fn on_reconnect(&mut self, current: u64) -> Seen {
        let seen = match current.cmp(&self.last) {
            std::cmp::Ordering::Equal => Seen::InOrder,
            std::cmp::Ordering::Greater => Seen::Gap,
            std::cmp::Ordering::Less => Seen::Reset,
        };
        self.last = current;
        seen
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn invalidation_sequence_detects_gaps_and_resets() {
        let mut t = SeqTracker { last: 4 };
        assert_eq!(t.on_message(5), Seen::InOrder);
        assert_eq!(t.on_message(7), Seen::Gap);
        assert_eq!(t.on_reconnect(7), Seen::InOrder);
        assert_eq!(t.on_reconnect(9), Seen::Gap);
        assert_eq!(t.on_reconnect(0), Seen::Reset);
        assert_eq!(t.on_message(1), Seen::InOrder);
        assert_eq!(parse_message("12 token:ab"), Some((12, "token:ab")));
        assert_eq!(parse_message("x token:ab"), None);
        assert_eq!(parse_message("12"), None);
    }

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
        let wait = l.check().err().map(|nu| {
            nu.wait_time_from(governor::clock::Clock::now(
                &governor::clock::DefaultClock::default(),
            ))
        });
        assert!(
            wait.is_some_and(|w| w > Duration::from_millis(1500) && w <= Duration::from_secs(2))
        );
    }
}
