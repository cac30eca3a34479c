//! The stream side of the dispatcher: read entries of each shard, match and expand their
//! events, start their deliveries, and take over what stopped consumers left pending. The
//! commands are [`crate::queue::consume`]'s; this module decides when to issue them.

use std::sync::Arc;
use std::time::Duration;

use fred::prelude::*;

use super::delivery::{Delivery, EventData};
use super::hold::EntryHold;
use super::state::Inner;
use super::worker;
use crate::model::Mode;
use crate::queue::consume::ReadError;
use crate::queue::entry::decode_each;
use crate::queue::{RawEntry, StoredEvent};
use crate::store::Target;
use crate::store::deliveries::Expansion;
use crate::store::deliveries::batches::Gathered;

/// Reads new entries of one shard until the dispatcher stops; `conn` is the shard's own
/// connection for blocking reads.
pub(super) async fn read_loop(inner: Arc<Inner>, shard: u16, conn: Client) {
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
        let read = inner
            .reader
            .read(
                &conn,
                shard,
                inner.settings.read_batch,
                inner.settings.block,
            )
            .await;
        if inner.stop.is_cancelled() {
            if let Ok(entries) = read {
                let ids = entries.into_iter().map(|(id, _)| id).collect();
                inner.entries.release(shard, ids).await;
            }
            break;
        }
        match read {
            Ok(entries) => {
                failures = 0;
                process_entries(&inner, shard, entries).await;
            }
            Err(ReadError::NoGroup) => {
                failures += 1;
                repair_group(&inner, shard).await;
            }
            Err(ReadError::Redis(e)) => {
                failures += 1;
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
    let _ = conn.quit().await;
}

/// Recreates the group (and the stream) after Redis lost them (restart without persistence,
/// flush). New entries are read from the start of what the stream holds now.
async fn repair_group(inner: &Inner, shard: u16) {
    match inner.reader.repair(shard).await {
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

/// Consumers idle this long with nothing pending belong to processes that are gone.
const STALE_CONSUMER: Duration = Duration::from_secs(3600);

/// Takes over entries idle past `reclaim_idle` (their consumer stopped) and keeps this
/// consumer's own open entries from looking idle.
pub(super) async fn reclaim_loop(inner: Arc<Inner>, shard: u16) {
    let every = (inner.settings.reclaim_idle / 3).max(Duration::from_millis(100));
    let mut rounds: u64 = 0;
    loop {
        if !inner.pause(every).await {
            break;
        }
        touch_open_entries(&inner, shard).await;
        rounds += 1;
        if rounds % 64 == 0 {
            let min_idle = STALE_CONSUMER.max(inner.settings.reclaim_idle * 10);
            for name in inner.reader.prune(shard, min_idle).await {
                tracing::info!(shard, consumer = %name, "removed a consumer left by a stopped process");
            }
        }
        let mut cursor = "0-0".to_owned();
        loop {
            if inner.stop.is_cancelled() || inner.admission.available_permits() == 0 {
                break;
            }
            let claimed = inner
                .reader
                .reclaim(shard, inner.settings.reclaim_idle, &cursor, 64)
                .await;
            let (next, entries) = match claimed {
                Ok(c) => c,
                Err(ReadError::NoGroup) => {
                    repair_group(&inner, shard).await;
                    break;
                }
                Err(ReadError::Redis(e)) => {
                    crate::telemetry::redis_error("xautoclaim");
                    tracing::debug!(shard, error = %e, "reclaim failed");
                    break;
                }
            };
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

async fn touch_open_entries(inner: &Inner, shard: u16) {
    let ids = inner.entries.of_shard(shard);
    if let Err(e) = inner.reader.touch(shard, &ids).await {
        tracing::debug!(shard, error = %e, "could not refresh open entries");
    }
}

/// One entry's deliveries, expanded and ready to start.
struct Prepared {
    entry_id: String,
    deliveries: Vec<(Arc<EventData>, Arc<Target>)>,
}

/// The events of one entry, each with the targets it matches.
type Matched = (String, Vec<(StoredEvent, Vec<Arc<Target>>)>);

/// Events per expansion call: bounds how long one script holds Redis.
const EXPAND_CHUNK: usize = 512;

/// Expands the entries of one read together, in one script call per [`EXPAND_CHUNK`] events,
/// acknowledges in one command those with nothing to deliver, then starts the others'
/// deliveries in entry order. Returns once every delivery holds its memory permit, so the
/// reader slows down when memory is full.
///
/// Each entry is held from here on, so the sweep of this consumer's own pending entries
/// ([`super::takeover`]) leaves it alone; an entry some other path of this process holds
/// already is skipped.
pub(super) async fn process_entries(inner: &Arc<Inner>, shard: u16, entries: Vec<RawEntry>) {
    let mut finished: Vec<String> = Vec::new();
    let mut decoded: Vec<Matched> = Vec::with_capacity(entries.len());
    // The events whose traces are exported, for the read's one `expand` span to link to.
    let mut traced: Vec<crate::traces::Link> = Vec::new();
    let mut events_read = 0usize;
    for (entry_id, fields) in entries {
        if !inner.entries.open(shard, entry_id.clone()) {
            continue;
        }
        let Some(events) = readable_events(inner, shard, &entry_id, &fields).await else {
            // Setting it aside failed (Redis): it stays pending and comes back.
            inner.entries.drop_hold(shard, &entry_id);
            continue;
        };
        if events.is_empty() {
            finished.push(entry_id);
            continue;
        }
        events_read += events.len();
        if crate::traces::on() {
            traced.extend(
                events
                    .iter()
                    .filter_map(|e| crate::traces::Link::of_event_meta(e.content_type.as_deref())),
            );
        }
        // A store failure keeps retrying; stopping leaves the entries pending.
        let Some(matched) = match_targets(inner, shard, events).await else {
            return;
        };
        decoded.push((entry_id, matched));
    }
    let spans = expand_spans(traced, events_read);
    let Some(owned) = expand_all(inner, shard, &decoded).await else {
        return;
    };
    let mut expanded = 0usize;
    let mut owned = owned.into_iter();
    let mut prepared = Vec::new();
    // Deliveries to batched targets: gathered in Redis, not sent from here.
    let mut gathered: Vec<(Arc<EventData>, Arc<Target>)> = Vec::new();
    for (entry_id, matched) in decoded {
        let mut deliveries = Vec::new();
        for (event, targets) in matched {
            let Some(settled) = owned.next().flatten() else {
                tracing::debug!(event = %event.id, "event already expanded by another entry; skipping the repeat");
                continue;
            };
            let targets: Vec<Arc<Target>> = targets
                .into_iter()
                .filter(|t| !settled.iter().any(|s| s == t.id.as_str()))
                .collect();
            expanded += targets.len();
            if targets.is_empty() {
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
                if target.batch.is_some() && target.mode != Mode::FireAndForget {
                    gathered.push((data.clone(), target));
                } else {
                    deliveries.push((data.clone(), target));
                }
            }
        }
        if deliveries.is_empty() {
            finished.push(entry_id);
        } else {
            prepared.push(Prepared {
                entry_id,
                deliveries,
            });
        }
    }
    for span in spans {
        span.set(opentelemetry::KeyValue::new(
            "estafeta.deliveries",
            i64::try_from(expanded).unwrap_or(i64::MAX),
        ));
    }
    // Before any entry is acknowledged: a gathered delivery lives in Redis from then on.
    if !gather_all(inner, shard, &gathered).await {
        return;
    }
    inner.entries.ack(shard, finished).await;
    for p in prepared {
        start_entry(inner, shard, p).await;
    }
}

/// The `expand` spans of one read (finding the targets of its `events` events): like a
/// batch's `append`, one span for work done for many events, the child of the first traced
/// event's `ingest` and linked to each traced event's, one span per `MAX_BATCH_EVENTS` traced
/// events (the links a span keeps). A span per event doubled what traces cost the dispatcher
/// (README, benchmarks). Empty when no trace is exported.
fn expand_spans(traced: Vec<crate::traces::Link>, events: usize) -> Vec<crate::traces::Span> {
    traced
        .chunks(crate::config::MAX_BATCH_EVENTS)
        .filter_map(|links| {
            crate::traces::Span::batch(
                "expand",
                opentelemetry::trace::SpanKind::Internal,
                links.to_vec(),
                vec![opentelemetry::KeyValue::new(
                    "estafeta.batch_events",
                    i64::try_from(events).unwrap_or(i64::MAX),
                )],
            )
        })
        .collect()
}

/// Puts the deliveries to batched targets in their gathering lists, retrying while Redis
/// fails; `false` when stopping (the entries stay pending and are read again).
async fn gather_all(inner: &Inner, shard: u16, gathered: &[(Arc<EventData>, Arc<Target>)]) -> bool {
    let items: Vec<Gathered<'_>> = gathered
        .iter()
        .filter_map(|(e, t)| {
            let b = t.batch?;
            Some(Gathered {
                event_id: &e.id,
                tenant: &e.tenant,
                target: &t.id,
                body: &e.body,
                content_type: e.content_type.as_ref(),
                max_events: b.max_events.get(),
                max_wait_ms: b.max_wait_ms.get(),
            })
        })
        .collect();
    for chunk in items.chunks(EXPAND_CHUNK) {
        loop {
            match inner.deliveries.gather(shard, chunk).await {
                Ok(_) => break,
                Err(e) => {
                    crate::telemetry::redis_error("gather");
                    tracing::warn!(shard, error = %e, "cannot gather events for batched targets; retrying");
                    if !inner.pause(Duration::from_millis(500)).await {
                        return false;
                    }
                }
            }
        }
    }
    true
}

/// The events of an entry that can be read. What cannot be read (the whole entry, or some of
/// its events) is set aside in the shard's quarantine with its entry id: nothing can ever read
/// it, so keeping it pending would retry it forever, and acknowledging it alone would lose it.
/// `None` when setting it aside failed.
async fn readable_events(
    inner: &Inner,
    shard: u16,
    entry_id: &str,
    fields: &[(bytes::Bytes, bytes::Bytes)],
) -> Option<Vec<StoredEvent>> {
    if fields.is_empty() {
        // An entry deleted (trimmed) after it was read: nothing to deliver, nothing to keep.
        return Some(Vec::new());
    }
    let (events, unreadable) = match decode_each(fields) {
        Ok(each) => {
            let mut events = Vec::with_capacity(each.len());
            let mut unreadable: Vec<(bytes::Bytes, bytes::Bytes)> = Vec::new();
            let mut why = None;
            for e in each {
                match e {
                    Ok(event) => events.push(event),
                    Err((reason, raw)) => {
                        why.get_or_insert(reason);
                        unreadable.extend_from_slice(raw);
                    }
                }
            }
            (events, why.map(|w| (w, unreadable)))
        }
        Err(reason) => (Vec::new(), Some((reason, fields.to_vec()))),
    };
    if let Some((reason, raw)) = unreadable {
        let reason = reason.to_string();
        if let Err(e) = inner.reader.set_aside(shard, entry_id, &reason, &raw).await {
            crate::telemetry::redis_error("quarantine");
            tracing::warn!(shard, entry = %entry_id, error = %e, "cannot set an unreadable stream entry aside; it stays pending");
            return None;
        }
    }
    Some(events)
}

/// The targets each event matches; `None` when stopping while the store is failing.
async fn match_targets(
    inner: &Inner,
    shard: u16,
    events: Vec<StoredEvent>,
) -> Option<Vec<(StoredEvent, Vec<Arc<Target>>)>> {
    let mut matched = Vec::with_capacity(events.len());
    for event in events {
        let targets = loop {
            match inner.targets.get(&event.tenant).await {
                Ok(t) => break t.matching_event(&event),
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
    Some(matched)
}

/// Records the expansion of every event of `decoded`, retrying while Redis fails; per event in
/// order, what [`crate::store::Deliveries::expand`] answers. `None` when stopping.
async fn expand_all(
    inner: &Inner,
    shard: u16,
    decoded: &[Matched],
) -> Option<Vec<Option<Vec<String>>>> {
    let now = inner.deliveries.clock().now_ms();
    let expansions: Vec<Expansion<'_>> = decoded
        .iter()
        .flat_map(|(entry_id, matched)| {
            matched.iter().map(move |(e, targets)| Expansion {
                entry_id,
                event_id: &e.id,
                tenant: &e.tenant,
                event_type: &e.event_type,
                content_type: e.content_type.as_deref().unwrap_or_default(),
                received_at_ms: e.id.received_at_ms().unwrap_or(now),
                targets: targets
                    .iter()
                    .filter(|t| t.mode != Mode::FireAndForget)
                    .map(|t| &t.id)
                    .collect(),
                unrecorded: targets
                    .iter()
                    .filter(|t| t.mode == Mode::FireAndForget)
                    .map(|t| &t.id)
                    .collect(),
            })
        })
        .collect();
    let mut owned = Vec::with_capacity(expansions.len());
    for chunk in expansions.chunks(EXPAND_CHUNK) {
        loop {
            match inner.deliveries.expand(shard, chunk).await {
                Ok(flags) => {
                    owned.extend(flags);
                    break;
                }
                Err(e) => {
                    crate::telemetry::redis_error("expand");
                    tracing::warn!(shard, error = %e, "cannot record the expansion; retrying");
                    if !inner.pause(Duration::from_millis(500)).await {
                        return None;
                    }
                }
            }
        }
    }
    Some(owned)
}

/// Starts the deliveries of a prepared entry; the last outcome acks it.
async fn start_entry(inner: &Arc<Inner>, shard: u16, p: Prepared) {
    let Prepared {
        entry_id,
        deliveries,
    } = p;
    let hold = Arc::new(EntryHold::new(shard, entry_id, deliveries.len()));
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
            entry: Some(hold.clone()),
        };
        worker::start(inner, d, permit, true).await;
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
            let lag = inner.reader.lag(shard).await;
            crate::telemetry::shard_backlog(shard, lag, scheduled, dead);
        }
    }
}
