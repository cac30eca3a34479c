//! The shard quarantine: what a consumer of the shard could not process, set aside so the
//! pipeline moves on instead of retrying it forever (a stream entry that cannot be decoded, a
//! delivery outcome or a monitor that a script refuses for what its keys hold, a malformed
//! member of the retry schedule).
//!
//! Each record is one entry of the shard's quarantine stream (`P:{q<n>}:quarantine`, capped
//! at about [`KEPT`] entries): `consumer`, `id` (what it was: an entry id, an event and target,
//! a subject), `reason`, then the record's own fields as the consumer held them, byte for byte.
//! Every record is also logged with its id and counted in `estafeta_quarantined_total`.

use bytes::Bytes;
use fred::prelude::*;
use fred::types::streams::{XCap, XCapKind, XCapTrim};

use crate::redis::keyspace::Keyspace;

/// Records kept per shard (approximately: Redis trims whole nodes).
pub const KEPT: i64 = 10_000;

/// One record set aside, as read back.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Quarantined {
    /// The quarantine stream's entry id (when it was set aside).
    pub seq: String,
    pub consumer: String,
    pub id: String,
    pub reason: String,
    /// The record's fields, as the consumer held them.
    pub fields: Vec<(Bytes, Bytes)>,
}

/// Sets a record aside in `shard`'s quarantine: `consumer` names who could not process it
/// (a `estafeta_quarantined_total` label), `id` what it was.
pub async fn put(
    redis: &Client,
    keys: &Keyspace,
    shard: u16,
    consumer: &'static str,
    id: &str,
    reason: &str,
    record: Vec<(Bytes, Bytes)>,
) -> Result<(), fred::error::Error> {
    let mut fields: Vec<(Bytes, Bytes)> = Vec::with_capacity(3 + record.len());
    fields.push((Bytes::from_static(b"consumer"), Bytes::from(consumer)));
    fields.push((
        Bytes::from_static(b"id"),
        Bytes::copy_from_slice(id.as_bytes()),
    ));
    fields.push((
        Bytes::from_static(b"reason"),
        Bytes::copy_from_slice(reason.as_bytes()),
    ));
    fields.extend(record);
    let cap = XCap::try_from((XCapKind::MaxLen, XCapTrim::AlmostExact, KEPT))?;
    let _: Value = redis
        .xadd(keys.quarantine(shard), false, cap, "*", fields)
        .await?;
    tracing::error!(
        shard,
        consumer,
        record = id,
        reason,
        "a record could not be processed; it is set aside in the shard's quarantine"
    );
    crate::telemetry::quarantined(consumer);
    Ok(())
}

/// Records set aside in `shard`'s quarantine.
pub async fn len(redis: &Client, keys: &Keyspace, shard: u16) -> Result<u64, fred::error::Error> {
    redis.xlen(keys.quarantine(shard)).await
}

/// The newest `count` records of `shard`'s quarantine, newest first.
pub async fn newest(
    redis: &Client,
    keys: &Keyspace,
    shard: u16,
    count: u64,
) -> Result<Vec<Quarantined>, fred::error::Error> {
    let entries =
        crate::redis::connection::newest_of(redis, &keys.quarantine(shard), count).await?;
    Ok(entries
        .into_iter()
        .map(|(seq, fields)| {
            let text = |name: &str| {
                fields
                    .iter()
                    .find(|(k, _)| k.as_ref() == name.as_bytes())
                    .map(|(_, v)| crate::model::text::visible_text(v))
                    .unwrap_or_default()
            };
            Quarantined {
                consumer: text("consumer"),
                id: text("id"),
                reason: text("reason"),
                fields: fields
                    .iter()
                    .filter(|(k, _)| !matches!(k.as_ref(), b"consumer" | b"id" | b"reason"))
                    .cloned()
                    .collect(),
                seq,
            }
        })
        .collect())
}
