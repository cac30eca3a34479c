//! The one codec of stream entries: every writer of the event streams (the enqueuer's `XADD`,
//! the `append_batch` and `signal` scripts) and their one reader (the dispatcher) use this
//! module's layout.
//!
//! An entry holds a batch of events of one shard: a version field, then five fields per event,
//! in arrival order:
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
//! Scripts that append entries do not spell the layout out: they receive [`LAYOUT`] as their
//! first argument and fill an event's values in its order.

use std::sync::LazyLock;

use bytes::Bytes;
use fred::types::Value;

use crate::model::{EventId, EventType, TenantId};

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

/// An event's field names, in the order its values follow [`values`].
pub const EVENT_FIELDS: [&str; 5] = [
    field::ID,
    field::TENANT,
    field::TYPE,
    field::CONTENT_TYPE,
    field::BODY,
];

/// The layout as scripts take it: the version field and value, then [`EVENT_FIELDS`],
/// newline-separated.
pub static LAYOUT: LazyLock<String> = LazyLock::new(|| {
    let mut parts = vec![field::VERSION, ENTRY_VERSION];
    parts.extend(EVENT_FIELDS);
    parts.join("\n")
});

/// An event as it is written.
#[derive(Debug, Clone, Copy)]
pub struct EventRef<'a> {
    pub id: &'a EventId,
    pub tenant: &'a TenantId,
    pub event_type: &'a EventType,
    pub content_type: Option<&'a Bytes>,
    pub body: &'a Bytes,
}

/// An event's values in [`EVENT_FIELDS`] order.
pub fn values(e: EventRef<'_>) -> [Value; 5] {
    [
        Value::from(e.id.as_str()),
        Value::from(e.tenant.as_str()),
        Value::from(e.event_type.as_str()),
        Value::Bytes(e.content_type.cloned().unwrap_or_default()),
        Value::Bytes(e.body.clone()),
    ]
}

/// The fields of one entry holding `events`, for `XADD`.
pub fn fields<'a>(
    events: impl ExactSizeIterator<Item = EventRef<'a>>,
) -> Vec<(&'static str, Value)> {
    let mut out = Vec::with_capacity(1 + events.len() * EVENT_FIELDS.len());
    out.push((field::VERSION, Value::from(ENTRY_VERSION)));
    for e in events {
        out.extend(EVENT_FIELDS.into_iter().zip(values(e)));
    }
    out
}

/// An event as read back from its stream entry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredEvent {
    pub id: EventId,
    pub tenant: TenantId,
    pub event_type: EventType,
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
pub fn decode(fields: &[(Bytes, Bytes)]) -> Result<Vec<StoredEvent>, EntryError> {
    decode_each(fields)?
        .into_iter()
        .map(|e| e.map_err(|(why, _)| why))
        .collect()
}

/// One event of an entry, read on its own: an event that cannot be read comes with why and
/// its raw fields, and does not take the entry's other events with it.
pub type EventRead<'a> = Result<StoredEvent, (EntryError, &'a [(Bytes, Bytes)])>;

/// Reads each event of one stream entry; `Err` when the entry's own layout (its version, its
/// field count) is wrong, so no event of it can be read.
pub fn decode_each(fields: &[(Bytes, Bytes)]) -> Result<Vec<EventRead<'_>>, EntryError> {
    fn text<'a>(b: &'a Bytes, what: &'static str) -> Result<&'a str, EntryError> {
        std::str::from_utf8(b).map_err(|_| EntryError::Malformed(what))
    }
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
    if rest.len() % EVENT_FIELDS.len() != 0 {
        return Err(EntryError::Malformed(
            "field count is not a whole number of events",
        ));
    }
    let one = |ev: &[(Bytes, Bytes)]| -> Result<StoredEvent, EntryError> {
        if ev
            .iter()
            .zip(EVENT_FIELDS)
            .any(|((name, _), want)| name != want)
        {
            return Err(EntryError::Malformed("fields out of order"));
        }
        Ok(StoredEvent {
            id: EventId::parse(text(&ev[0].1, "id")?).map_err(|_| EntryError::Malformed("id"))?,
            tenant: TenantId::parse(text(&ev[1].1, "tenant")?)
                .map_err(|_| EntryError::Malformed("tenant"))?,
            event_type: EventType::parse(text(&ev[2].1, "type")?)
                .map_err(|_| EntryError::Malformed("type"))?,
            content_type: (!ev[3].1.is_empty()).then(|| ev[3].1.clone()),
            body: ev[4].1.clone(),
        })
    };
    Ok(rest
        .chunks(EVENT_FIELDS.len())
        .map(|ev| one(ev).map_err(|why| (why, ev)))
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pair(k: &str, v: &[u8]) -> (Bytes, Bytes) {
        (
            Bytes::copy_from_slice(k.as_bytes()),
            Bytes::copy_from_slice(v),
        )
    }

    fn as_bytes(v: &Value) -> Bytes {
        match v {
            Value::Bytes(b) => b.clone(),
            Value::String(s) => Bytes::copy_from_slice(s.as_bytes()),
            _ => Bytes::new(),
        }
    }

    #[test]
    fn what_is_encoded_decodes() -> anyhow::Result<()> {
        let (id, tenant, t) = (
            EventId::generate(),
            TenantId::parse("ten_a")?,
            EventType::parse("a.b")?,
        );
        let ct = Bytes::from_static(b"application/json");
        let bodies = [Bytes::from_static(b"{}"), Bytes::from_static(&[0, 255])];
        let events = [
            EventRef {
                id: &id,
                tenant: &tenant,
                event_type: &t,
                content_type: Some(&ct),
                body: &bodies[0],
            },
            EventRef {
                id: &id,
                tenant: &tenant,
                event_type: &t,
                content_type: None,
                body: &bodies[1],
            },
        ];
        let encoded: Vec<(Bytes, Bytes)> = fields(events.into_iter())
            .iter()
            .map(|(k, v)| (Bytes::from_static(k.as_bytes()), as_bytes(v)))
            .collect();
        let decoded = decode(&encoded)?;
        assert_eq!(decoded.len(), 2);
        assert_eq!(
            decoded[0].content_type.as_deref(),
            Some(&b"application/json"[..])
        );
        assert_eq!(decoded[1].content_type, None);
        assert_eq!(&decoded[1].body[..], &[0, 255]);
        assert_eq!(*LAYOUT, "v\n1\nid\ntenant\ntype\nct\nbody");
        Ok(())
    }

    #[test]
    fn malformed_entries_are_named() -> anyhow::Result<()> {
        assert!(matches!(
            decode(&[pair("v", b"9")]),
            Err(EntryError::Version(_))
        ));
        assert!(decode(&[]).is_err());
        let short = [pair("v", b"1"), pair("id", b"evt_1"), pair("tenant", b"t")];
        assert_eq!(
            decode(&short),
            Err(EntryError::Malformed(
                "field count is not a whole number of events"
            ))
        );
        let bad_id = [
            pair("v", b"1"),
            pair("id", b"../x"),
            pair("tenant", b"t"),
            pair("type", b"a"),
            pair("ct", b""),
            pair("body", b""),
            pair("id", b"evt_1"),
            pair("tenant", b"t"),
            pair("type", b"a"),
            pair("ct", b""),
            pair("body", b"\0\xff"),
        ];
        assert_eq!(decode(&bad_id), Err(EntryError::Malformed("id")));
        // Read one by one, the bad event is set apart and the good one kept.
        let each = decode_each(&bad_id)?;
        assert_eq!(each.len(), 2);
        assert!(
            matches!(&each[0], Err((EntryError::Malformed("id"), fields)) if fields.len() == 5 && fields[0].1.as_ref() == b"../x")
        );
        assert!(matches!(&each[1], Ok(e) if e.body.as_ref() == b"\0\xff"));
        Ok(())
    }
}
