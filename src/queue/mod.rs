//! The durable event queue: Redis Streams, sharded.
//!
//! Layout (see [`crate::redis::keyspace`]): `queue.shards` streams `P:{q<n>}:events`, each with the
//! dispatcher's consumer group. A tenant's events all go to shard
//! [`shard_of`](crate::redis::keyspace::shard_of)`(tenant)`, so one tenant's events keep their order;
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
//! - [`notices`]: the gateway's own operational events, appended to a tenant's stream;
//! - [`retention`]: consumer groups and trimming by age, never past unfinished entries;
//! - [`sizing`]: the Redis memory a retention needs, projected at start.

pub mod consume;
pub mod enqueue;
pub mod entry;
pub mod notices;
pub mod retention;
pub mod sizing;

pub use consume::{RawEntry, StreamReader};
pub use enqueue::{
    Enqueued, Enqueuer, EnqueuerConfig, IDEMPOTENCY_TTL_SECS, Idempotency, MAX_BATCH_EVENTS,
    NewEvent, QueueError,
};
pub use entry::{StoredEvent, decode};
pub use retention::{Retention, ensure_group, ensure_groups};
