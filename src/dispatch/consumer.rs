//! The stream side of the dispatcher: reading, expanding, acknowledging and reclaiming entries.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use bytes::Bytes;
use fred::prelude::*;

use super::worker::{Delivery, EventData};
use super::{Inner, worker};
use crate::keyspace::DISPATCH_GROUP;
use crate::queue::ensure_group;
use crate::queue::{StoredEvent, decode_entry};
use crate::redis::info_field;
use crate::store::deliveries::Expansion;
use crate::store::now_ms;

/// One stream entry: id and fields in order.
pub(super) type RawEntry = (String, Vec<(Bytes, Bytes)>);

/// The deliveries of one entry that have no recorded outcome yet; the last one acks it.
#[derive(Debug)]
pub(super) struct EntryTracker {
    shard: u16,
    id: String,
    open: AtomicUsize,
}

impl EntryTracker {
    /// One delivery of the entry has its outcome in Redis.
    pub(super) async fn finish(&self, inner: &Inner) {
        if self.open.fetch_sub(1, Ordering::AcqRel) == 1 {
            ack(inner, self.shard, &self.id).await;
        }
    }

    /// A delivery could not record its outcome (Redis gone, shutting down): the entry stays
    /// pending for a reclaim, and stops being kept alive.
    pub(super) async fn abandon(&self, inner: &Inner) {
        let was_open = match inner.open_entries.lock() {
            Ok(mut open) => open.remove(&(self.shard, self.id.clone())).is_some(),
            Err(_) => false,
        };
        if was_open && inner.stop.is_cancelled() {
            // Shutting down with Redis reachable: let another dispatcher take it at once.
            release(inner, self.shard, vec![self.id.clone()]).await;
        }
    }
}

async fn ack(inner: &Inner, shard: u16, id: &str) {
    if let Ok(mut open) = inner.open_entries.lock() {
        open.remove(&(shard, id.to_owned()));
    }
    let acked: Result<i64, _> = inner
        .redis
        .xack(inner.keys.stream(shard), DISPATCH_GROUP, id)
        .await;
    if let Err(e) = acked {
        // The outcomes are recorded; a reclaim will find them done and ack then.
        crate::telemetry::redis_error("xack");
        tracing::warn!(shard, entry = id, error = %e, "could not ack a finished entry");
    }
}

/// Reads new entries of one shard until the dispatcher stops.
pub(super) async fn read_loop(inner: Arc<Inner>, shard: u16, reader: Client) {
    let stream = inner.keys.stream(shard);
    let block = inner.settings.block.as_millis() as u64;
    let mut failures = 0u32;
    loop {
        if inner.stop.is_cancelled() {
            break;
        }
        // Backpressure: read only while memory has room for a batch's deliveries.
        if inner.admission.available_permits() == 0 {
            if !inner.pause(Duration::from_millis(5)).await {
                break;
            }
            continue;
        }
        // Not raced against the stop signal: a read abandoned mid-way would still hand its
        // entries to this consumer. It returns within `block`; what it got is released below.
        let read = reader
            .xreadgroup::<Value, _, _, _, _>(
                DISPATCH_GROUP,
                inner.consumer.as_str(),
                Some(inner.settings.read_batch as u64),
                Some(block),
                false,
                stream.as_str(),
                ">",
            )
            .await;
        if inner.stop.is_cancelled() {
            if let Ok(value) = read {
                let ids: Vec<String> = parse_read(value).into_iter().map(|(id, _)| id).collect();
                release(&inner, shard, ids).await;
            }
            break;
        }
        match read {
            Ok(value) => {
                failures = 0;
                process_entries(&inner, shard, parse_read(value)).await;
            }
            Err(e) => {
                failures += 1;
                if e.details().contains("NOGROUP") {
                    repair_group(&inner, shard).await;
                    continue;
                }
                crate::telemetry::redis_error("xreadgroup");
                if failures == 1 || failures % 50 == 0 {
                    tracing::warn!(shard, error = %e, "reading the stream failed; retrying");
                }
                let pause = Duration::from_millis((100 * u64::from(failures)).min(2000));
                if !inner.pause(pause).await {
                    break;
                }
            }
        }
    }
    let _ = reader.quit().await;
}

/// Hands entries back: marks them idle for `reclaim_idle`, so another consumer's next reclaim
/// takes them at once instead of after the idle time.
pub(super) async fn release(inner: &Inner, shard: u16, ids: Vec<String>) {
    if ids.is_empty() {
        return;
    }
    let idle = inner.settings.reclaim_idle.as_millis() as u64;
    let released: Result<Value, _> = inner
        .redis
        .xclaim(
            inner.keys.stream(shard),
            DISPATCH_GROUP,
            inner.consumer.as_str(),
            0,
            ids,
            Some(idle),
            None,
            None,
            false,
            true,
        )
        .await;
    if let Err(e) = released {
        tracing::debug!(shard, error = %e, "could not release entries; they are reclaimed after the idle time");
    }
}

/// Recreates the group (and the stream) after Redis lost them (restart without persistence,
/// flush). New entries are read from the start of what the stream holds now.
async fn repair_group(inner: &Inner, shard: u16) {
    match ensure_group(&inner.redis, &inner.keys, shard).await {
        Ok(true) => tracing::warn!(
            shard,
            "the consumer group was missing (Redis lost its data?); recreated it"
        ),
        Ok(false) => {}
        Err(e) => {
            tracing::warn!(shard, error = %e, "could not recreate the consumer group");
            inner.pause(Duration::from_millis(500)).await;
        }
    }
}

/// Takes over entries idle past `reclaim_idle` (their consumer stopped) and keeps this
/// consumer's own open entries from looking idle.
pub(super) async fn reclaim_loop(inner: Arc<Inner>, shard: u16) {
    let every = (inner.settings.reclaim_idle / 3).max(Duration::from_millis(100));
    let stream = inner.keys.stream(shard);
    let mut rounds: u64 = 0;
    loop {
        if !inner.pause(every).await {
            break;
        }
        touch_open_entries(&inner, shard, &stream).await;
        rounds += 1;
        if rounds % 64 == 0 {
            prune_consumers(&inner, shard, &stream).await;
        }
        let mut cursor = "0-0".to_owned();
        loop {
            if inner.stop.is_cancelled() || inner.admission.available_permits() == 0 {
                break;
            }
            let claimed: Result<Value, _> = inner
                .redis
                .xautoclaim(
                    stream.as_str(),
                    DISPATCH_GROUP,
                    inner.consumer.as_str(),
                    inner.settings.reclaim_idle.as_millis() as u64,
                    cursor.as_str(),
                    Some(64),
                    false,
                )
                .await;
            let value = match claimed {
                Ok(v) => v,
                Err(e) => {
                    if e.details().contains("NOGROUP") {
                        repair_group(&inner, shard).await;
                    } else {
                        crate::telemetry::redis_error("xautoclaim");
                        tracing::debug!(shard, error = %e, "reclaim failed");
                    }
                    break;
                }
            };
            let (next, entries) = parse_autoclaim(value);
            if !entries.is_empty() {
                crate::telemetry::reclaimed(entries.len());
                tracing::info!(
                    shard,
                    entries = entries.len(),
                    "reclaimed entries of a stopped consumer"
                );
            }
            // Our own open entries are touched above and never idle long enough to be here.
            process_entries(&inner, shard, entries).await;
            if next == "0-0" || next.is_empty() {
                break;
            }
            cursor = next;
        }
    }
}

/// Consumers idle this long with nothing pending belong to processes that are gone.
const STALE_CONSUMER: Duration = Duration::from_secs(3600);

/// Removes the group's consumers left by processes that stopped (each process joins under a
/// new name, so they would pile up). Only those with no pending entries: anything they held
/// has been reclaimed first.
async fn prune_consumers(inner: &Inner, shard: u16, stream: &str) {
    let min_idle = STALE_CONSUMER.max(inner.settings.reclaim_idle * 10);
    let reply: Value = match inner.redis.xinfo_consumers(stream, DISPATCH_GROUP).await {
        Ok(v) => v,
        Err(_) => return,
    };
    for name in stale_consumers(reply, &inner.consumer, min_idle) {
        let removed: Result<i64, _> = inner
            .redis
            .xgroup_delconsumer(stream, DISPATCH_GROUP, name.as_str())
            .await;
        if removed.is_ok() {
            tracing::info!(shard, consumer = %name, "removed a consumer left by a stopped process");
        }
    }
}

/// The consumers of an `XINFO CONSUMERS` reply that are not `me`, have nothing pending and
/// were idle at least `min_idle`.
fn stale_consumers(reply: Value, me: &str, min_idle: Duration) -> Vec<String> {
    let Value::Array(consumers) = reply else {
        return Vec::new();
    };
    consumers
        .iter()
        .filter_map(|c| {
            let name = info_field(c, "name")?.as_string()?;
            let pending = info_field(c, "pending")?.as_u64()?;
            let idle = info_field(c, "idle")?.as_u64()?;
            (name != me && pending == 0 && idle >= min_idle.as_millis() as u64).then_some(name)
        })
        .collect()
}

async fn touch_open_entries(inner: &Inner, shard: u16, stream: &str) {
    let ids: Vec<String> = match inner.open_entries.lock() {
        Ok(open) => open
            .keys()
            .filter(|(s, _)| *s == shard)
            .map(|(_, id)| id.clone())
            .collect(),
        Err(_) => return,
    };
    for chunk in ids.chunks(256) {
        // XCLAIM to ourselves resets the idle time; JUSTID leaves the delivery count alone.
        let touched: Result<Value, _> = inner
            .redis
            .xclaim(
                stream,
                DISPATCH_GROUP,
                inner.consumer.as_str(),
                0,
                chunk.to_vec(),
                None,
                None,
                None,
                false,
                true,
            )
            .await;
        if let Err(e) = touched {
            tracing::debug!(shard, error = %e, "could not refresh open entries");
        }
    }
}

/// One entry's deliveries, expanded and ready to start.
struct Prepared {
    entry_id: String,
    deliveries: Vec<(Arc<EventData>, Arc<crate::store::Target>)>,
}

/// Expands the entries of one read together (their Redis round trips overlap, so the last
/// entry of a batch does not wait for the others' expansions), then starts their deliveries in
/// entry order. Returns once every delivery holds its memory permit, so the reader slows down
/// when memory is full.
async fn process_entries(inner: &Arc<Inner>, shard: u16, entries: Vec<RawEntry>) {
    let prepared =
        futures_util::future::join_all(entries.into_iter().map(|e| prepare_entry(inner, shard, e)))
            .await;
    for p in prepared.into_iter().flatten() {
        start_entry(inner, shard, p).await;
    }
}

/// Decodes an entry, matches its events and records the expansion; `None` when there is
/// nothing to start (acked already, or stopping).
async fn prepare_entry(
    inner: &Arc<Inner>,
    shard: u16,
    (entry_id, fields): RawEntry,
) -> Option<Prepared> {
    let events = match decode_entry(&fields) {
        Ok(e) => e,
        Err(e) => {
            // Nothing can ever read it; keeping it pending would retry it forever.
            tracing::error!(shard, entry = %entry_id, error = %e, "unreadable stream entry; acknowledging it without delivery");
            ack(inner, shard, &entry_id).await;
            return None;
        }
    };
    // Targets of each event; a store failure leaves the entry pending, to be reclaimed.
    let mut matched: Vec<(StoredEvent, Vec<Arc<crate::store::Target>>)> =
        Vec::with_capacity(events.len());
    for event in events {
        let targets = loop {
            match inner.targets.get(&event.tenant).await {
                Ok(t) => break t.matching(&event.event_type),
                Err(e) => {
                    crate::telemetry::redis_error("targets");
                    tracing::warn!(shard, error = %e, "cannot load targets; retrying");
                    if !inner.pause(Duration::from_millis(500)).await {
                        return None;
                    }
                }
            }
        };
        matched.push((event, targets));
    }
    let now = now_ms();
    let expansions: Vec<Expansion<'_>> = matched
        .iter()
        .map(|(e, targets)| Expansion {
            event_id: &e.id,
            tenant: &e.tenant,
            event_type: &e.event_type,
            content_type: e.content_type.as_deref().unwrap_or_default(),
            received_at_ms: received_at(&e.id).unwrap_or(now),
            targets: targets.iter().map(|t| t.id.as_str()).collect(),
        })
        .collect();
    let owned = loop {
        match inner.deliveries.expand(shard, &entry_id, &expansions).await {
            Ok(flags) => break flags,
            Err(e) => {
                crate::telemetry::redis_error("expand");
                tracing::warn!(shard, error = %e, "cannot record the expansion; retrying");
                if !inner.pause(Duration::from_millis(500)).await {
                    return None;
                }
            }
        }
    };
    drop(expansions);
    let mut deliveries = Vec::new();
    for ((event, targets), mine) in matched.into_iter().zip(owned) {
        if !mine {
            tracing::debug!(event = %event.id, "event already expanded by another entry; skipping the repeat");
            continue;
        }
        let data = Arc::new(EventData {
            id: event.id,
            tenant: event.tenant,
            event_type: event.event_type,
            content_type: event.content_type,
            body: event.body,
        });
        for target in targets {
            deliveries.push((data.clone(), target));
        }
    }
    if deliveries.is_empty() {
        ack(inner, shard, &entry_id).await;
        return None;
    }
    Some(Prepared {
        entry_id,
        deliveries,
    })
}

/// Starts the deliveries of a prepared entry; the last outcome acks it.
async fn start_entry(inner: &Arc<Inner>, shard: u16, p: Prepared) {
    let Prepared {
        entry_id,
        deliveries,
    } = p;
    let tracker = Arc::new(EntryTracker {
        shard,
        id: entry_id.clone(),
        open: AtomicUsize::new(deliveries.len()),
    });
    if let Ok(mut open) = inner.open_entries.lock() {
        open.insert((shard, entry_id), ());
    }
    for (event, target) in deliveries {
        let Some(permit) = inner.admit(&event.tenant).await else {
            return;
        };
        let d = Delivery {
            shard,
            event,
            target,
            attempt: 1,
            deferrals: 0,
            entry: Some(tracker.clone()),
        };
        worker::start(inner, d, permit, true).await;
    }
}

/// The receive time encoded in an `evt_<ULID>` id.
fn received_at(event_id: &str) -> Option<u64> {
    let ulid = event_id.strip_prefix("evt_")?;
    ulid::Ulid::from_string(ulid).ok().map(|u| u.timestamp_ms())
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
    streams.into_iter().flat_map(parse_entries).collect()
}

/// `[next cursor, entries, deleted ids]` of `XAUTOCLAIM`.
fn parse_autoclaim(value: Value) -> (String, Vec<RawEntry>) {
    let Value::Array(mut parts) = value else {
        return (String::new(), Vec::new());
    };
    if parts.len() < 2 {
        return (String::new(), Vec::new());
    }
    let entries = parse_entries(parts.remove(1));
    let next = parts.first().and_then(Value::as_string).unwrap_or_default();
    (next, entries)
}

fn parse_entries(list: Value) -> Vec<RawEntry> {
    let Value::Array(items) = list else {
        return Vec::new();
    };
    items
        .into_iter()
        .filter_map(|item| {
            let Value::Array(mut pair) = item else {
                return None;
            };
            if pair.len() != 2 {
                return None;
            }
            let fields = pair.pop()?;
            let id = pair.pop()?.as_string()?;
            let flat: Vec<Value> = match fields {
                Value::Array(f) => f,
                // A deleted entry's fields come back as nil: nothing to deliver, but it must be
                // acked, which an empty field list achieves through the unreadable-entry path.
                _ => Vec::new(),
            };
            let fields = flat
                .chunks(2)
                .filter_map(|kv| Some((to_bytes(&kv[0])?, to_bytes(kv.get(1)?)?)))
                .collect();
            Some((id, fields))
        })
        .collect()
}

fn to_bytes(v: &Value) -> Option<Bytes> {
    match v {
        Value::Bytes(b) => Some(b.clone()),
        Value::String(s) => Some(Bytes::copy_from_slice(s.as_bytes())),
        Value::Integer(i) => Some(Bytes::from(i.to_string())),
        _ => None,
    }
}

/// Periodically publishes stream lag and schedule depth per shard.
pub(super) async fn gauges_loop(inner: Arc<Inner>) {
    loop {
        if !inner.pause(Duration::from_secs(5)).await {
            break;
        }
        for shard in 0..inner.settings.shards {
            let scheduled = inner.deliveries.scheduled(shard).await.unwrap_or(0);
            let dead = inner.deliveries.dead_letter_total(shard).await.unwrap_or(0);
            let lag = stream_lag(&inner, shard).await;
            crate::telemetry::shard_backlog(shard, lag, scheduled, dead);
        }
    }
}

async fn stream_lag(inner: &Inner, shard: u16) -> Option<u64> {
    let groups: Value = inner
        .redis
        .xinfo_groups(inner.keys.stream(shard))
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
            stale_consumers(reply, "me", Duration::from_secs(3600)),
            vec!["gone".to_owned()]
        );
    }

    #[test]
    fn receive_time_comes_from_the_id() {
        let id = format!("evt_{}", ulid::Ulid::from_parts(1_700_000_000_000, 7));
        assert_eq!(received_at(&id), Some(1_700_000_000_000));
        assert_eq!(received_at("nope"), None);
    }
}
