//! The durable event queue: Redis Streams, sharded.
//!
//! Layout (see [`crate::keyspace`]): `queue.shards` streams `P:{q<n>}:events`, each with the
//! dispatcher's consumer group. A tenant's events all go to shard [`shard_of`]`(tenant)`, so one
//! tenant's events keep their order; shards spread tenants over Redis Cluster slots.
//!
//! **Entries hold batches.** The enqueuer writes the events that arrive together (for one
//! shard) as one entry: a version field, then five fields per event, in arrival order:
//!
//! | field | value |
//! | --- | --- |
//! | `v` | entry format, [`ENTRY_VERSION`] |
//! | `id` | the event id (`evt_<ULID>`), chosen by the gateway *before* the write |
//! | `tenant` | tenant id |
//! | `type` | event type |
//! | `ct` | the request's `Content-Type`, empty if none |
//! | `body` | the raw body, byte for byte |
//!
//! (`id` to `body` repeat for each event.) One entry per batch is one command, one reply and one
//! stream write for many events: it halves Redis's CPU per event against an `XADD` per event.
//! [`decode_entry`] reads an entry back into its events. A consumer acknowledges an entry once
//! every event in it has a recorded outcome.
//!
//! Because ids are chosen before the write, a command that the Redis client re-sends after a
//! reconnect shows up as a second entry with the *same* event ids, which the dispatcher
//! expands only once; it can never become a second event with a new identity.

mod enqueue;
mod retention;

use bytes::Bytes;

pub use enqueue::{Enqueuer, EnqueuerConfig, MAX_BATCH_EVENTS};
pub use retention::{Retention, ensure_group, ensure_groups};

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
    /// `evt_<ULID>`.
    pub id: String,
    /// Owner.
    pub tenant: std::sync::Arc<str>,
    /// Shard of the owner.
    pub shard: u16,
    /// Validated event type.
    pub event_type: String,
    /// The request's content type, if any.
    pub content_type: Option<Bytes>,
    /// Raw body.
    pub body: Bytes,
    /// Set when the request carried an `Idempotency-Key`.
    pub idempotency: Option<Idempotency>,
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
    New { id: String },
    /// An earlier request with the same idempotency key wrote this event.
    Duplicate { id: String },
}

/// Format version of stream entries.
pub const ENTRY_VERSION: &str = "1";

/// Field names of stream entries.
pub mod field {
    pub const VERSION: &str = "v";
    pub const ID: &str = "id";
    pub const TENANT: &str = "tenant";
    pub const TYPE: &str = "type";
    pub const CONTENT_TYPE: &str = "ct";
    pub const BODY: &str = "body";
}

/// An event as read back from its stream entry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredEvent {
    pub id: String,
    pub tenant: String,
    pub event_type: String,
    /// `None` when the request had no `Content-Type`.
    pub content_type: Option<Bytes>,
    pub body: Bytes,
}

/// Why an entry could not be read.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum EntryError {
    #[error("entry format {0:?} is not supported")]
    Version(String),
    #[error("entry is malformed: {0}")]
    Malformed(&'static str),
}

/// Reads the events of one stream entry, given its fields in order.
pub fn decode_entry(fields: &[(Bytes, Bytes)]) -> Result<Vec<StoredEvent>, EntryError> {
    let text = |b: &Bytes, what: &'static str| {
        std::str::from_utf8(b)
            .map(str::to_owned)
            .map_err(|_| EntryError::Malformed(what))
    };
    let Some((first, rest)) = fields.split_first() else {
        return Err(EntryError::Malformed("no fields"));
    };
    if first.0 != field::VERSION {
        return Err(EntryError::Malformed("no version field"));
    }
    if first.1 != ENTRY_VERSION {
        return Err(EntryError::Version(
            String::from_utf8_lossy(&first.1).into_owned(),
        ));
    }
    if rest.len() % 5 != 0 {
        return Err(EntryError::Malformed(
            "field count is not a whole number of events",
        ));
    }
    rest.chunks(5)
        .map(|ev| {
            let names = [
                field::ID,
                field::TENANT,
                field::TYPE,
                field::CONTENT_TYPE,
                field::BODY,
            ];
            if ev.iter().zip(names).any(|((name, _), want)| name != want) {
                return Err(EntryError::Malformed("fields out of order"));
            }
            Ok(StoredEvent {
                id: text(&ev[0].1, "id")?,
                tenant: text(&ev[1].1, "tenant")?,
                event_type: text(&ev[2].1, "type")?,
                content_type: (!ev[3].1.is_empty()).then(|| ev[3].1.clone()),
                body: ev[4].1.clone(),
            })
        })
        .collect()
}

/// How long an idempotency key is remembered.
pub const IDEMPOTENCY_TTL_SECS: u64 = 24 * 3600;

/// A new event id.
pub fn new_event_id() -> String {
    crate::store::new_id("evt")
}

/// The shard of a tenant. Stable across versions and processes (FNV-1a, not a seeded hash):
/// changing it, or `queue.shards`, would split a tenant's events across two streams.
pub fn shard_of(tenant: &str, shards: u16) -> u16 {
    let mut h: u64 = 0xcbf29ce484222325;
    for b in tenant.as_bytes() {
        h ^= u64::from(*b);
        h = h.wrapping_mul(0x100000001b3);
    }
    (h % u64::from(shards.max(1))) as u16
}

/// Event types: `[A-Za-z0-9_.-]{1,128}`.
pub fn valid_event_type(t: &str) -> bool {
    !t.is_empty()
        && t.len() <= 128
        && t.bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'.' | b'-'))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shard_is_stable_and_in_range() {
        // Pinned values: a change here would reorder every deployed tenant's events.
        assert_eq!(shard_of("ten_a", 16), shard_of("ten_a", 16));
        assert_eq!(shard_of("", 16), (0xcbf29ce484222325u64 % 16) as u16);
        for i in 0..1000 {
            assert!(shard_of(&format!("t{i}"), 7) < 7);
        }
        let used: std::collections::HashSet<u16> = (0..1000)
            .map(|i| shard_of(&format!("ten_{i}"), 16))
            .collect();
        assert_eq!(used.len(), 16);
    }

    fn pair(k: &str, v: &[u8]) -> (Bytes, Bytes) {
        (
            Bytes::copy_from_slice(k.as_bytes()),
            Bytes::copy_from_slice(v),
        )
    }

    #[test]
    fn entries_decode_in_order() {
        let fields = vec![
            pair("v", b"1"),
            pair("id", b"evt_1"),
            pair("tenant", b"ten_a"),
            pair("type", b"a.b"),
            pair("ct", b"application/json"),
            pair("body", b"{}"),
            pair("id", b"evt_2"),
            pair("tenant", b"ten_a"),
            pair("type", b"c"),
            pair("ct", b""),
            pair("body", &[0, 255]),
        ];
        let events = decode_entry(&fields).unwrap_or_default();
        assert_eq!(events.len(), 2);
        assert_eq!(events[0].id, "evt_1");
        assert_eq!(
            events[0].content_type.as_deref(),
            Some(&b"application/json"[..])
        );
        assert_eq!(events[1].content_type, None);
        assert_eq!(&events[1].body[..], &[0, 255]);
        assert_eq!(
            decode_entry(&fields[..4]),
            Err(EntryError::Malformed(
                "field count is not a whole number of events"
            ))
        );
        assert!(matches!(
            decode_entry(&[pair("v", b"9")]),
            Err(EntryError::Version(_))
        ));
        assert!(decode_entry(&[]).is_err());
    }

    #[test]
    fn event_types() {
        assert!(valid_event_type("order.paid"));
        assert!(valid_event_type("A-b_c.9"));
        assert!(!valid_event_type(""));
        assert!(!valid_event_type("bad type!"));
        assert!(!valid_event_type(&"a".repeat(129)));
        assert!(valid_event_type(&"a".repeat(128)));
    }
}
