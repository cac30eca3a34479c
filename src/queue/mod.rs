//! The durable event queue: Redis Streams, sharded.
//!
//! Layout (see [`crate::keyspace`]): `queue.shards` streams `P:{q<n>}:events`, each with the
//! dispatcher's consumer group. A tenant's events all go to shard
//! [`shard_of`](crate::keyspace::shard_of)`(tenant)`, so one tenant's events keep their order;
//! shards spread tenants over Redis Cluster slots.
//!
//! **Entries hold batches** ([`entry`]): the enqueuer writes the events that arrive together
//! for one shard as one entry. One entry per batch is one command, one reply and one stream
//! write for many events: it halves Redis's CPU per event against an `XADD` per event.
//!
//! Because ids are chosen before the write, a command that the Redis client re-sends after a
//! reconnect shows up as a second entry with the *same* event ids, which the dispatcher
//! expands only once; it can never become a second event with a new identity.
//!
//! - [`entry`]: the entry layout, its encoder and decoder;
//! - [`enqueue`]: batched, durable writes of new events (with idempotency keys);
//! - [`consume`]: the reading half: consumer-group reads, acks, releases, reclaims;
//! - [`retention`]: consumer groups and trimming by age, never past unfinished entries.

pub mod consume;
pub mod entry;
pub mod enqueue;
pub mod retention;

use bytes::Bytes;

pub use consume::{RawEntry, StreamReader};
pub use enqueue::{Enqueuer, EnqueuerConfig, MAX_BATCH_EVENTS};
pub use entry::{StoredEvent, decode};
pub use retention::{Retention, ensure_group, ensure_groups};

use crate::model::{EventId, EventType, TenantId};

/// Why an event was not enqueued.
#[derive(Debug, Clone, thiserror::Error)]
pub enum QueueError {
    #[error("redis: {0}")]
    Unavailable(String),
    #[error("redis did not answer in time")]
    Timeout,
    #[error("too many events waiting for redis")]
    Overloaded,
    #[error("the queue is closed")]
    Closed,
    #[error("idempotency key reused for a different request")]
    IdempotencyConflict,
}

/// An event ready to be written.
#[derive(Debug, Clone)]
pub struct NewEvent {
    /// Chosen before the write, so a re-sent write is recognisable.
    pub id: EventId,
    pub tenant: TenantId,
    /// Shard of the owner.
    pub shard: u16,
    pub event_type: EventType,
    /// The request's content type, if any.
    pub content_type: Option<Bytes>,
    /// Raw body.
    pub body: Bytes,
    /// Set when the request carried an `Idempotency-Key`.
    pub idempotency: Option<Idempotency>,
}

impl NewEvent {
    fn as_entry(&self) -> entry::EventRef<'_> {
        entry::EventRef {
            id: &self.id,
            tenant: &self.tenant,
            event_type: &self.event_type,
            content_type: self.content_type.as_ref(),
            body: &self.body,
        }
    }
}

/// The idempotency data of a request.
#[derive(Debug, Clone)]
pub struct Idempotency {
    /// SHA-256 of the key (bounded length, safe in a Redis key).
    pub key_digest: String,
    /// SHA-256 of what the request asked for, to refuse a reused key with a different request.
    pub fingerprint: String,
}

/// Outcome of an enqueue.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Enqueued {
    /// Written now.
    New { id: EventId },
    /// An earlier request with the same idempotency key wrote this event.
    Duplicate { id: EventId },
}

/// How long an idempotency key is remembered.
pub const IDEMPOTENCY_TTL_SECS: u64 = 24 * 3600;
