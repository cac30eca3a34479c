//! Cross-instance cache invalidation: one typed message, one encoding, one listener.
//!
//! Writers (the store) publish an [`Invalidation`] after every change that a cache elsewhere
//! may hold: a tenant disabled or deleted, a token revoked, a tenant's targets changed, a
//! source's or a monitor's definition or URL token changed, a tenant's event catalogue changed. Messages are numbered by a counter
//! in Redis (the `publish_invalidation` script) and published on the invalidation channel as
//! `<seq> <message>`.
//!
//! Every process runs one [`Listener`], with the caches registered by `app`. Each cache
//! implements [`Invalidate`]: it drops what a message names, and drops it again one Redis
//! timeout later if its read started before the message arrived (a read racing the change may
//! hold the value from before it). A gap in the numbers (or a counter that moved while the
//! subscription was down) means messages were missed: every cache drops everything. A counter
//! that went back means Redis lost its data; entries then live out their TTL, so a Redis restart
//! without persistence does not lock every tenant out at once.

use std::sync::Arc;
use std::time::{Duration, Instant};

use fred::clients::SubscriberClient;
use fred::prelude::*;
use futures_util::future::BoxFuture;
use tokio_util::sync::CancellationToken;
use tokio_util::time::DelayQueue;

use crate::crypto::TokenHash;
use crate::model::{MonitorId, TenantId};
use crate::redis::keyspace::Keyspace;
use crate::redis::scripts::{self, ScriptError};

/// What changed, as far as a cache is concerned.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Invalidation {
    /// A tenant changed in a way that narrows access (disabled, deleted, a new rate limit).
    Tenant(TenantId),
    /// A token was revoked.
    Token(TokenHash),
    /// A tenant's targets changed.
    Targets(TenantId),
    /// A source changed or was deleted; named by its URL token's hash.
    Source(TokenHash),
    /// A monitor changed or was deleted: its id and its URL token's hash.
    Monitor { id: MonitorId, token: TokenHash },
    /// A tenant's event catalogue changed.
    Catalogue(TenantId),
}

impl Invalidation {
    /// The wire form: `tenant:<id>`, `token:<hash>`, `targets:<tenant>`, `source:<hash>`,
    /// `monitor:<id>:<hash>`, `catalogue:<tenant>`.
    pub fn encode(&self) -> String {
        match self {
            Invalidation::Tenant(id) => format!("tenant:{id}"),
            Invalidation::Token(h) => format!("token:{}", h.to_hex()),
            Invalidation::Targets(id) => format!("targets:{id}"),
            Invalidation::Source(h) => format!("source:{}", h.to_hex()),
            Invalidation::Monitor { id, token } => format!("monitor:{id}:{}", token.to_hex()),
            Invalidation::Catalogue(id) => format!("catalogue:{id}"),
        }
    }

    /// Reads the wire form back; `None` for anything else.
    pub fn decode(text: &str) -> Option<Invalidation> {
        let (kind, rest) = text.split_once(':')?;
        Some(match kind {
            "tenant" => Invalidation::Tenant(TenantId::parse(rest).ok()?),
            "token" => Invalidation::Token(TokenHash::from_hex(rest)?),
            "targets" => Invalidation::Targets(TenantId::parse(rest).ok()?),
            "catalogue" => Invalidation::Catalogue(TenantId::parse(rest).ok()?),
            "source" => Invalidation::Source(TokenHash::from_hex(rest)?),
            "monitor" => {
                let (id, hash) = rest.split_once(':')?;
                Invalidation::Monitor {
                    id: MonitorId::parse(id).ok()?,
                    token: TokenHash::from_hex(hash)?,
                }
            }
            _ => return None,
        })
    }
}

/// A cache kept coherent by invalidations.
pub trait Invalidate: Send + Sync {
    /// Drops the entries `message` names (none, when it concerns another cache).
    fn invalidate<'a>(&'a self, message: &'a Invalidation) -> BoxFuture<'a, ()>;

    /// Drops them again if their read started before `changed_at`.
    fn recheck<'a>(&'a self, message: &'a Invalidation, changed_at: Instant) -> BoxFuture<'a, ()>;

    /// Drops every entry.
    fn invalidate_all(&self);
}

/// Publishes invalidations. Cheap to clone.
#[derive(Debug, Clone)]
pub struct Publisher {
    redis: Client,
    seq_key: String,
    channel: String,
}

impl Publisher {
    pub fn new(redis: Client, keys: &Keyspace) -> Publisher {
        Publisher {
            redis,
            seq_key: keys.invalidation_seq(),
            channel: keys.invalidation_channel(),
        }
    }

    /// Tells every instance's caches about `change`. The write that made the change has
    /// already succeeded; a failed publish is logged and covered by the caches' TTLs.
    pub async fn publish(&self, change: &Invalidation) {
        #[derive(serde::Deserialize)]
        struct Published {
            #[allow(dead_code)]
            seq: u64,
        }
        let published: Result<Published, ScriptError> = scripts::PUBLISH_INVALIDATION
            .run(
                &self.redis,
                vec![self.seq_key.clone()],
                vec![self.channel.clone(), change.encode()],
            )
            .await;
        if let Err(e) = published {
            tracing::warn!(error = %e, "could not publish a cache invalidation; other instances will see the change when their cache entry expires");
        }
    }

    /// The number of the last invalidation published (0 when none, or after Redis lost data).
    pub async fn current(&self) -> Result<u64, fred::error::Error> {
        let n: Option<u64> = self.redis.get(&self.seq_key).await?;
        Ok(n.unwrap_or(0))
    }
}

/// The listener that keeps this instance's caches coherent with the others.
pub struct Listener {
    /// A connection dedicated to the subscription.
    subscriber: SubscriberClient,
    /// Reads the counter after a reconnect.
    publisher: Publisher,
    /// The registered caches.
    caches: Vec<Arc<dyn Invalidate>>,
    /// How long after a message its entries are looked at again.
    recheck_after: Duration,
    /// Which invalidations this instance has seen.
    seq: SeqTracker,
}

impl std::fmt::Debug for Listener {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Listener")
            .field("caches", &self.caches.len())
            .field("last_seq", &self.seq.last)
            .finish()
    }
}

impl Listener {
    pub fn new(
        subscriber: SubscriberClient,
        publisher: Publisher,
        recheck_after: Duration,
    ) -> Listener {
        Listener {
            subscriber,
            publisher,
            caches: Vec::new(),
            recheck_after,
            seq: SeqTracker::default(),
        }
    }

    /// Keeps `cache` coherent too.
    pub fn register(&mut self, cache: Arc<dyn Invalidate>) {
        self.caches.push(cache);
    }

    /// Subscribes, so that changes made after this returns reach the caches.
    pub async fn subscribe(&mut self) -> Result<(), fred::error::Error> {
        self.subscriber
            .subscribe(self.publisher.channel.clone())
            .await?;
        self.seq.last = self.publisher.current().await?;
        Ok(())
    }

    async fn invalidate(&self, message: &Invalidation) {
        for c in &self.caches {
            c.invalidate(message).await;
        }
    }

    async fn recheck(&self, message: &Invalidation, changed_at: Instant) {
        for c in &self.caches {
            c.recheck(message, changed_at).await;
        }
    }

    fn invalidate_all(&self) {
        for c in &self.caches {
            c.invalidate_all();
        }
    }

    /// Applies invalidation messages until `shutdown`.
    pub async fn run(mut self, shutdown: CancellationToken) {
        let resubscriber = self.subscriber.manage_subscriptions();
        let mut messages = self.subscriber.message_rx();
        let mut reconnects = self.subscriber.reconnect_rx();
        let mut rechecks: DelayQueue<(Invalidation, Instant)> = DelayQueue::new();
        loop {
            tokio::select! {
                _ = shutdown.cancelled() => break,
                msg = messages.recv() => match msg {
                    Ok(message) => {
                        let Some(text) = message.value.as_str() else { continue };
                        let Some((n, change)) = parse_message(&text) else {
                            tracing::debug!("ignoring a malformed invalidation");
                            continue;
                        };
                        self.invalidate(&change).await;
                        rechecks.insert((change, Instant::now()), self.recheck_after);
                        if self.seq.on_message(n) == Seen::Gap {
                            tracing::warn!("cache invalidations were missed; dropping every cache");
                            self.invalidate_all();
                        }
                    }
                    Err(tokio::sync::broadcast::error::RecvError::Lagged(n)) => {
                        tracing::warn!(missed = n, "cache invalidations lagged; dropping every cache");
                        self.invalidate_all();
                    }
                    Err(tokio::sync::broadcast::error::RecvError::Closed) => break,
                },
                Ok(_) = reconnects.recv() => self.after_reconnect().await,
                Some(expired) = futures_util::StreamExt::next(&mut rechecks), if !rechecks.is_empty() => {
                    let (change, changed_at) = expired.into_inner();
                    self.recheck(&change, changed_at).await;
                }
            }
        }
        resubscriber.abort();
        let _ = self.subscriber.quit().await;
    }

    /// While the subscription was down, invalidations may have been published and missed: the
    /// counter tells. Only then is every cache dropped, so a Redis restart alone does not turn
    /// every request into a cache miss.
    async fn after_reconnect(&mut self) {
        let current = match self.publisher.current().await {
            Ok(n) => n,
            Err(e) => {
                tracing::warn!(error = %e, "cannot read the invalidation counter after a reconnect; dropping every cache");
                self.invalidate_all();
                return;
            }
        };
        match self.seq.on_reconnect(current) {
            Seen::InOrder => {
                tracing::info!("invalidation subscription reconnected; nothing was missed")
            }
            Seen::Gap => {
                tracing::info!(
                    "invalidations were published while disconnected; dropping every cache"
                );
                self.invalidate_all();
            }
            Seen::Reset => tracing::warn!(
                "the invalidation counter went back: Redis lost its data (restart without persistence, or a flush); cached entries stay valid until they expire"
            ),
        }
    }
}

/// `<seq> <message>`.
fn parse_message(text: &str) -> Option<(u64, Invalidation)> {
    let (n, message) = text.split_once(' ')?;
    Some((n.parse().ok()?, Invalidation::decode(message)?))
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
    fn sequence_detects_gaps_and_resets() {
        let mut t = SeqTracker { last: 4 };
        assert_eq!(t.on_message(5), Seen::InOrder);
        assert_eq!(t.on_message(7), Seen::Gap);
        assert_eq!(t.on_reconnect(7), Seen::InOrder);
        assert_eq!(t.on_reconnect(9), Seen::Gap);
        assert_eq!(t.on_reconnect(0), Seen::Reset);
        assert_eq!(t.on_message(1), Seen::InOrder);
    }

    #[test]
    fn messages_round_trip() {
        let hash = TokenHash([0xab; 32]);
        let all = [
            Invalidation::Tenant(TenantId::generate()),
            Invalidation::Token(hash),
            Invalidation::Targets(TenantId::generate()),
            Invalidation::Source(hash),
            Invalidation::Monitor {
                id: MonitorId::generate(),
                token: hash,
            },
        ];
        for m in all {
            assert_eq!(Invalidation::decode(&m.encode()), Some(m.clone()), "{m:?}");
        }
        assert!(
            parse_message("12 token:ab").is_none(),
            "a short hash is refused"
        );
        assert!(parse_message("x tenant:ten_1").is_none());
        assert!(parse_message("12").is_none());
        assert!(matches!(
            parse_message("12 tenant:ten_1"),
            Some((12, Invalidation::Tenant(_)))
        ));
        assert!(Invalidation::decode("tenant:bad id").is_none());
        assert!(Invalidation::decode("nope:x").is_none());
    }
}
