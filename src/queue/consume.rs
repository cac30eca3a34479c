//! The reading half of the queue protocol: consumer-group reads, acknowledgements, releases,
//! reclaims of entries a stopped consumer left pending, and the group's upkeep. The
//! dispatcher drives it; this module knows the commands and their replies (RESP2 nested arrays
//! or RESP3 maps), nothing about deliveries.
//!
//! Invariants: an entry is acknowledged only by its consumer once every event in it has a
//! recorded outcome (the caller's rule); a released entry is made to look idle for the reclaim
//! threshold, so the next reclaim of any consumer takes it at once; a consumer is removed from
//! the group only when it has nothing pending.

use std::time::Duration;

use bytes::Bytes;
use fred::prelude::*;

use crate::redis::connection::info_field;
use crate::redis::keyspace::{DISPATCH_GROUP, Keyspace};

pub use crate::redis::connection::RawEntry;
use crate::redis::connection::stream_entries;

/// Why a read failed.
#[derive(Debug, thiserror::Error)]
pub enum ReadError {
    /// The group (or the stream) is missing: Redis lost its data, or was flushed.
    #[error("the consumer group is missing")]
    NoGroup,
    #[error("redis: {0}")]
    Redis(fred::error::Error),
}

impl From<fred::error::Error> for ReadError {
    fn from(e: fred::error::Error) -> ReadError {
        if e.details().contains("NOGROUP") {
            ReadError::NoGroup
        } else {
            ReadError::Redis(e)
        }
    }
}

/// One consumer of the dispatcher group, on every shard stream. Cheap to clone.
#[derive(Debug, Clone)]
pub struct StreamReader {
    /// The shared command client (acks, claims, upkeep); blocking reads take their own.
    redis: Client,
    keys: Keyspace,
    /// This consumer's name in the group.
    consumer: String,
}

impl StreamReader {
    pub fn new(redis: Client, keys: Keyspace, consumer: String) -> StreamReader {
        StreamReader {
            redis,
            keys,
            consumer,
        }
    }

    pub fn consumer(&self) -> &str {
        &self.consumer
    }

    /// Reads up to `count` new entries of `shard`, blocking up to `block`, on `conn` (a
    /// connection of its own: a blocking read would hold up every command behind it).
    pub async fn read(
        &self,
        conn: &Client,
        shard: u16,
        count: usize,
        block: Duration,
    ) -> Result<Vec<RawEntry>, ReadError> {
        let value = conn
            .xreadgroup::<Value, _, _, _, _>(
                DISPATCH_GROUP,
                self.consumer.as_str(),
                Some(count as u64),
                Some(block.as_millis() as u64),
                false,
                self.keys.stream(shard),
                ">",
            )
            .await?;
        Ok(parse_read(value))
    }

    /// Renews this consumer's liveness lease for `ttl`.
    pub async fn renew_lease(&self, ttl: Duration) -> Result<(), fred::error::Error> {
        self.redis
            .set::<(), _, _>(
                self.keys.consumer_lease(&self.consumer),
                1,
                Some(Expiration::PX(ttl.as_millis() as i64)),
                None,
                false,
            )
            .await
    }

    /// Gives up this consumer's lease (a clean stop), so others take over what it left at once.
    pub async fn drop_lease(&self) -> Result<(), fred::error::Error> {
        self.redis
            .del::<(), _>(self.keys.consumer_lease(&self.consumer))
            .await
    }

    /// Whether `consumer`'s liveness lease is held.
    pub async fn lease_held(&self, consumer: &str) -> Result<bool, fred::error::Error> {
        let n: i64 = self
            .redis
            .exists(self.keys.consumer_lease(consumer))
            .await?;
        Ok(n > 0)
    }

    /// The group's consumers of `shard`.
    pub async fn consumers(&self, shard: u16) -> Result<Vec<ConsumerInfo>, ReadError> {
        let reply: Value = self
            .redis
            .xinfo_consumers(self.keys.stream(shard), DISPATCH_GROUP)
            .await?;
        Ok(parse_consumers(reply))
    }

    /// Ids of up to `count` entries of `shard` pending for `consumer`, idle at least
    /// `min_idle`, in id order after `after` (from the start when `None`).
    pub async fn pending_of(
        &self,
        shard: u16,
        consumer: &str,
        min_idle: Duration,
        after: Option<&str>,
        count: usize,
    ) -> Result<Vec<String>, ReadError> {
        let start = after.map_or_else(|| "-".to_owned(), |id| format!("({id}"));
        let reply: Value = self
            .redis
            .xpending(
                self.keys.stream(shard),
                DISPATCH_GROUP,
                (
                    min_idle.as_millis() as u64,
                    start.as_str(),
                    "+",
                    count as u64,
                    consumer,
                ),
            )
            .await?;
        Ok(pending_ids(reply).collect())
    }

    /// Claims the entries `ids` of `shard` for this consumer, each only if still idle at least
    /// `min_idle` (so of two processes claiming the same entries, one gets each); the entries
    /// claimed, with their fields. Entries deleted meanwhile are dropped by Redis.
    pub async fn claim(
        &self,
        shard: u16,
        ids: Vec<String>,
        min_idle: Duration,
    ) -> Result<Vec<RawEntry>, ReadError> {
        if ids.is_empty() {
            return Ok(Vec::new());
        }
        let reply: Value = self
            .redis
            .xclaim(
                self.keys.stream(shard),
                DISPATCH_GROUP,
                self.consumer.as_str(),
                min_idle.as_millis() as u64,
                ids,
                None,
                None,
                None,
                false,
                false,
            )
            .await?;
        Ok(stream_entries(reply))
    }

    /// Sets what cannot be read of entry `entry_id` (the whole entry, or some of its events'
    /// fields) aside in `shard`'s quarantine, so it is never retried and never lost.
    pub async fn set_aside(
        &self,
        shard: u16,
        entry_id: &str,
        reason: &str,
        fields: &[(Bytes, Bytes)],
    ) -> Result<(), fred::error::Error> {
        crate::store::quarantine::put(
            &self.redis,
            &self.keys,
            shard,
            "stream_reader",
            entry_id,
            reason,
            fields.to_vec(),
        )
        .await
    }

    /// Acknowledges finished entries, in one command.
    pub async fn ack(&self, shard: u16, ids: Vec<String>) -> Result<(), fred::error::Error> {
        if ids.is_empty() {
            return Ok(());
        }
        let _: i64 = self
            .redis
            .xack(self.keys.stream(shard), DISPATCH_GROUP, ids)
            .await?;
        Ok(())
    }

    /// Hands entries back: marks them idle for `idle`, so another consumer's next reclaim
    /// takes them at once instead of after the idle time.
    pub async fn release(
        &self,
        shard: u16,
        ids: Vec<String>,
        idle: Duration,
    ) -> Result<(), fred::error::Error> {
        self.claim_own(shard, &ids, Some(idle.as_millis() as u64))
            .await
    }

    /// Keeps this consumer's own open entries from looking idle (`XCLAIM` to itself resets
    /// the idle time).
    pub async fn touch(&self, shard: u16, ids: &[String]) -> Result<(), fred::error::Error> {
        self.claim_own(shard, ids, None).await
    }

    /// `XCLAIM`s entries to this consumer with their idle time set to `idle_ms` (none: zero);
    /// `JUSTID` leaves their delivery counts alone. In chunks, so one command stays small.
    async fn claim_own(
        &self,
        shard: u16,
        ids: &[String],
        idle_ms: Option<u64>,
    ) -> Result<(), fred::error::Error> {
        for chunk in ids.chunks(256) {
            let _: Value = self
                .redis
                .xclaim(
                    self.keys.stream(shard),
                    DISPATCH_GROUP,
                    self.consumer.as_str(),
                    0,
                    chunk.to_vec(),
                    idle_ms,
                    None,
                    None,
                    false,
                    true,
                )
                .await?;
        }
        Ok(())
    }

    /// Takes over up to `count` entries of `shard` idle at least `min_idle`, from `cursor`;
    /// answers the next cursor (`0-0` at the end) and the entries.
    pub async fn reclaim(
        &self,
        shard: u16,
        min_idle: Duration,
        cursor: &str,
        count: usize,
    ) -> Result<(String, Vec<RawEntry>), ReadError> {
        let value: Value = self
            .redis
            .xautoclaim(
                self.keys.stream(shard),
                DISPATCH_GROUP,
                self.consumer.as_str(),
                min_idle.as_millis() as u64,
                cursor,
                Some(count as u64),
                false,
            )
            .await?;
        Ok(parse_autoclaim(value))
    }

    /// Removes the group's consumers of `shard` that are not this one, have nothing pending
    /// and were idle at least `min_idle`: processes that stopped (each process joins under a
    /// new name, so they would pile up). Answers the names removed.
    pub async fn prune(&self, shard: u16, min_idle: Duration) -> Vec<String> {
        let stream = self.keys.stream(shard);
        let reply: Value = match self.redis.xinfo_consumers(&stream, DISPATCH_GROUP).await {
            Ok(v) => v,
            Err(_) => return Vec::new(),
        };
        let mut removed = Vec::new();
        for name in stale_consumers(parse_consumers(reply), &self.consumer, min_idle) {
            let gone: Result<i64, _> = self
                .redis
                .xgroup_delconsumer(&stream, DISPATCH_GROUP, name.as_str())
                .await;
            if gone.is_ok() {
                removed.push(name);
            }
        }
        removed
    }

    /// Recreates the group (and the stream) of `shard`; `true` when it was missing.
    pub async fn repair(&self, shard: u16) -> Result<bool, fred::error::Error> {
        super::retention::ensure_group(&self.redis, &self.keys, shard).await
    }

    /// Entries of `shard` the group has not read yet.
    pub async fn lag(&self, shard: u16) -> Option<u64> {
        let groups: Value = self
            .redis
            .xinfo_groups(self.keys.stream(shard))
            .await
            .ok()?;
        let Value::Array(groups) = groups else {
            return None;
        };
        groups
            .iter()
            .find(|g| {
                info_field(g, "name").and_then(|v| v.as_string()).as_deref() == Some(DISPATCH_GROUP)
            })
            .and_then(|g| info_field(g, "lag")?.as_u64())
    }
}

/// The ids of the entries of `shard` between `start` and `end` (inclusive ids) that the
/// dispatch group has read and not finished, up to `count`.
pub async fn pending_between(
    redis: &Client,
    keys: &Keyspace,
    shard: u16,
    start: &str,
    end: &str,
    count: u64,
) -> Result<std::collections::HashSet<String>, fred::error::Error> {
    let reply: Value = match redis
        .xpending(keys.stream(shard), DISPATCH_GROUP, (start, end, count))
        .await
    {
        Ok(v) => v,
        // No stream or no group yet: nothing is pending.
        Err(e) if e.details().contains("NOGROUP") || e.details().contains("no such key") => {
            return Ok(Default::default());
        }
        Err(e) => return Err(e),
    };
    Ok(pending_ids(reply).collect())
}

/// The entry ids of an extended `XPENDING` reply (one `[id, consumer, idle, deliveries]` row
/// per entry).
fn pending_ids(reply: Value) -> impl Iterator<Item = String> {
    let rows = match reply {
        Value::Array(rows) => rows,
        _ => Vec::new(),
    };
    rows.into_iter().filter_map(|row| match row {
        Value::Array(mut fields) if !fields.is_empty() => fields.swap_remove(0).as_string(),
        _ => None,
    })
}

/// An entry id as `(ms, seq)`, to compare positions in a stream.
pub fn entry_position(id: &str) -> Option<(u64, u64)> {
    let (ms, seq) = id.split_once('-')?;
    Some((ms.parse().ok()?, seq.parse().ok()?))
}

/// The position of the last entry of `shard`'s stream the dispatch group has read (`None`
/// without stream or group): entries after it wait for their first read.
pub async fn last_read(
    redis: &Client,
    keys: &Keyspace,
    shard: u16,
) -> Result<Option<(u64, u64)>, fred::error::Error> {
    let groups: Value = match redis.xinfo_groups(keys.stream(shard)).await {
        Ok(v) => v,
        // No stream yet: nothing was written, nothing waits.
        Err(e) if e.details().contains("no such key") => return Ok(None),
        Err(e) => return Err(e),
    };
    let Value::Array(groups) = groups else {
        return Ok(None);
    };
    Ok(groups
        .iter()
        .find(|g| {
            info_field(g, "name").and_then(|v| v.as_string()).as_deref() == Some(DISPATCH_GROUP)
        })
        .and_then(|g| info_field(g, "last-delivered-id")?.as_string())
        .and_then(|id| entry_position(&id)))
}

/// The fields of the entries with these ids of `shard`'s stream, in order of `ids`; `None`
/// for an entry that is gone (trimmed or deleted).
pub async fn entries_by_id(
    redis: &Client,
    keys: &Keyspace,
    shard: u16,
    ids: &[&str],
) -> Result<Vec<Option<Vec<(Bytes, Bytes)>>>, fred::error::Error> {
    if ids.is_empty() {
        return Ok(Vec::new());
    }
    let key = keys.stream(shard);
    let pipeline = redis.pipeline();
    for id in ids {
        let _: () = pipeline.xrange(&key, *id, *id, Some(1)).await?;
    }
    let replies: Vec<Value> = pipeline.all().await?;
    Ok(replies
        .into_iter()
        .map(|r| {
            stream_entries(r)
                .into_iter()
                .next()
                .map(|(_, fields)| fields)
                .filter(|f| !f.is_empty())
        })
        .collect())
}

/// Up to `count` entries of any stream `key` from `start` on (XRANGE), oldest first.
pub async fn oldest_entries(
    redis: &Client,
    key: &str,
    start: &str,
    count: u64,
) -> Result<Vec<RawEntry>, fred::error::Error> {
    entries_from(redis, key, start, "+", count).await
}

/// Up to `count` entries of any stream `key` from `start` to `end` (XRANGE), oldest first.
pub async fn entries_from(
    redis: &Client,
    key: &str,
    start: &str,
    end: &str,
    count: u64,
) -> Result<Vec<RawEntry>, fred::error::Error> {
    let reply: Value = redis.xrange(key, start, end, Some(count)).await?;
    Ok(stream_entries(reply))
}

/// Up to `count` entries of `shard`'s stream from `end` back to `start` (ids or `+` / `-`,
/// `(` for exclusive), newest first.
pub async fn newest_entries(
    redis: &Client,
    keys: &Keyspace,
    shard: u16,
    end: &str,
    start: &str,
    count: u64,
) -> Result<Vec<RawEntry>, fred::error::Error> {
    let reply: Value = redis
        .xrevrange(keys.stream(shard), end, start, Some(count))
        .await?;
    Ok(stream_entries(reply))
}

/// Entries of an `XREADGROUP` reply (RESP2 nested arrays or a RESP3 map).
fn parse_read(value: Value) -> Vec<RawEntry> {
    let streams: Vec<Value> = match value {
        Value::Array(a) => a
            .into_iter()
            .filter_map(|s| match s {
                Value::Array(mut pair) if pair.len() == 2 => pair.pop(),
                _ => None,
            })
            .collect(),
        Value::Map(m) => m.inner().into_values().collect(),
        _ => Vec::new(),
    };
    streams.into_iter().flat_map(stream_entries).collect()
}

/// `[next cursor, entries, deleted ids]` of `XAUTOCLAIM`.
fn parse_autoclaim(value: Value) -> (String, Vec<RawEntry>) {
    let Value::Array(mut parts) = value else {
        return (String::new(), Vec::new());
    };
    if parts.len() < 2 {
        return (String::new(), Vec::new());
    }
    let entries = stream_entries(parts.remove(1));
    let next = parts.first().and_then(Value::as_string).unwrap_or_default();
    (next, entries)
}

/// One consumer of the group, from `XINFO CONSUMERS`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConsumerInfo {
    pub name: String,
    /// Entries read and not yet acknowledged.
    pub pending: u64,
    /// Milliseconds since it last read or claimed.
    pub idle_ms: u64,
}

fn parse_consumers(reply: Value) -> Vec<ConsumerInfo> {
    let Value::Array(consumers) = reply else {
        return Vec::new();
    };
    consumers
        .iter()
        .filter_map(|c| {
            Some(ConsumerInfo {
                name: info_field(c, "name")?.as_string()?,
                pending: info_field(c, "pending")?.as_u64()?,
                idle_ms: info_field(c, "idle")?.as_u64()?,
            })
        })
        .collect()
}

/// The consumers that are not `me`, have nothing pending and were idle at least `min_idle`.
fn stale_consumers(consumers: Vec<ConsumerInfo>, me: &str, min_idle: Duration) -> Vec<String> {
    consumers
        .into_iter()
        .filter(|c| c.name != me && c.pending == 0 && c.idle_ms >= min_idle.as_millis() as u64)
        .map(|c| c.name)
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn s(x: &str) -> Value {
        Value::Bytes(Bytes::copy_from_slice(x.as_bytes()))
    }

    #[test]
    fn reads_resp2_replies() {
        let reply = Value::Array(vec![Value::Array(vec![
            s("stream"),
            Value::Array(vec![Value::Array(vec![
                s("1-0"),
                Value::Array(vec![s("v"), s("1")]),
            ])]),
        ])]);
        let entries = parse_read(reply);
        assert_eq!(entries.len(), 1);
        assert_eq!(entries[0].0, "1-0");
        assert_eq!(entries[0].1, vec![(Bytes::from("v"), Bytes::from("1"))]);
        let claimed = Value::Array(vec![
            s("5-0"),
            Value::Array(vec![Value::Array(vec![s("2-0"), Value::Null])]),
            Value::Array(vec![]),
        ]);
        let (next, entries) = parse_autoclaim(claimed);
        assert_eq!(next, "5-0");
        assert_eq!(entries.len(), 1);
        assert!(entries[0].1.is_empty());
    }

    #[test]
    fn only_idle_empty_foreign_consumers_are_stale() {
        let consumer = |name: &str, pending: i64, idle: i64| {
            Value::Array(vec![
                s("name"),
                s(name),
                s("pending"),
                Value::Integer(pending),
                s("idle"),
                Value::Integer(idle),
            ])
        };
        let reply = Value::Array(vec![
            consumer("gone", 0, 7_200_000),
            consumer("busy-gone", 3, 7_200_000),
            consumer("alive", 0, 500),
            consumer("me", 0, 7_200_000),
        ]);
        assert_eq!(
            stale_consumers(parse_consumers(reply), "me", Duration::from_secs(3600)),
            vec!["gone".to_owned()]
        );
    }
}
