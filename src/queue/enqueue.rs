//! Batched, durable writes of new events.
//!
//! Requests hand their event to the [`Batcher`] and wait for its outcome; each batch becomes
//! one stream entry per shard it touches (one command, one socket write, one reply for many
//! events). Batches with idempotency keys go through the `append_batch` script, which checks
//! and records the keys in the same atomic step as the append (the keys share the stream's
//! slot); the others are a plain `XADD`.
//!
//! With `wait_aof`, each batch ends with one `WAITAOF 1 0`, so the fsync is shared by the batch
//! and no event is acknowledged before it is on disk.

use std::collections::BTreeMap;
use std::time::Duration;

use fred::prelude::*;
use fred::types::{ClusterHash, CustomCommand, Key};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use bytes::Bytes;

use super::entry::{self, LAYOUT};
use crate::batch::{BatchError, Batcher, Flush, Limits};
pub use crate::config::MAX_BATCH_EVENTS;
use crate::model::{EventId, EventType, TenantId};
use crate::redis::keyspace::Keyspace;
use crate::redis::scripts::{APPEND_BATCH, ScriptError};
use crate::telemetry;

/// Why an event was not enqueued, and whether it may be in the stream all the same.
#[derive(Debug, Clone, thiserror::Error)]
pub enum QueueError {
    /// Redis answered the write with an error (out of memory, a refused script): nothing of
    /// it was written.
    #[error("redis refused the write: {0}")]
    Refused(String),
    /// The write was sent and no answer came (a timeout, a connection lost on the way): Redis
    /// may have executed it, so the event may be in the stream.
    #[error("redis did not confirm the write: {0}")]
    Unconfirmed(String),
    /// The event waited for its batch past its deadline and was never sent.
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
    /// The request's span, when its trace is kept: the batch's `append` span links to it.
    pub trace: Option<crate::traces::Link>,
}

impl QueueError {
    /// Whether the event may be in the stream although the write failed: a retry must then
    /// carry the same `Idempotency-Key` to be safe.
    pub fn may_have_landed(&self) -> bool {
        matches!(self, QueueError::Unconfirmed(_))
    }

    /// The failure of a write that was sent: Redis's own error answer means nothing was
    /// written; anything else (a timeout, a lost connection) leaves it unknown.
    /// (A command that fails fast because the connection is down is never sent, but fred
    /// answers it as it answers a connection lost with the command on the wire: unknown.)
    fn of_sent(e: &fred::error::Error) -> QueueError {
        if is_error_reply(e) {
            QueueError::Refused(e.to_string())
        } else {
            QueueError::Unconfirmed(e.to_string())
        }
    }
}

/// Whether `e` is an error answer of Redis itself (`OOM …`, `ERR …`), as opposed to a failure
/// of the client or the connection.
fn is_error_reply(e: &fred::error::Error) -> bool {
    let first = e.details().split_whitespace().next().unwrap_or("");
    !first.is_empty() && first.bytes().all(|b| b.is_ascii_uppercase())
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

/// The shortest wait given to a batch's command, so a batch flushed at its first event's
/// deadline still gets a chance instead of failing unsent.
const MIN_COMMAND_TIMEOUT: Duration = Duration::from_millis(5);

/// Values per event in `append_batch`'s ARGV: the entry's five, key index, fingerprint.
const ARGS_PER_EVENT: usize = 7;
/// A batch stops growing past this many body bytes (one large event still goes alone).
pub const MAX_BATCH_BYTES: usize = 1024 * 1024;

/// Tuning of the enqueue path.
#[derive(Debug, Clone)]
pub struct EnqueuerConfig {
    /// Most events per batch.
    pub max_batch: usize,
    /// Most batches in flight.
    pub max_inflight: usize,
    /// Most events waiting for a batch; beyond it requests get 503 at once.
    pub capacity: usize,
    /// Deadline of one batch (the Redis command timeout), and longest wait for a batch.
    pub command_timeout: Duration,
    /// End each batch with `WAITAOF 1 0`.
    pub wait_aof: bool,
    /// Number of shards (stream keys are built once).
    pub shards: u16,
}

/// The handle requests use to enqueue. Cheap to clone.
#[derive(Clone, Debug)]
pub struct Enqueuer {
    batcher: Batcher<Writer>,
}

impl Enqueuer {
    /// Starts the batcher on `tracker`; it flushes what it holds and stops when `stop` fires.
    pub fn start(
        redis: Client,
        keys: &Keyspace,
        cfg: EnqueuerConfig,
        tracker: &TaskTracker,
        stop: CancellationToken,
    ) -> Enqueuer {
        let writer = Writer {
            streams: (0..cfg.shards).map(|s| Key::from(keys.stream(s))).collect(),
            keys: keys.clone(),
            redis,
            command_timeout: cfg.command_timeout,
            wait_aof: cfg.wait_aof,
        };
        let limits = Limits {
            max_items: cfg.max_batch.clamp(1, MAX_BATCH_EVENTS),
            max_bytes: MAX_BATCH_BYTES,
            max_inflight: cfg.max_inflight,
            capacity: cfg.capacity,
            deadline: cfg.command_timeout,
        };
        Enqueuer {
            batcher: Batcher::start(writer, limits, tracker, stop),
        }
    }

    /// Writes `event` durably, or says why not. Never returns `Ok` unless Redis acknowledged.
    ///
    /// An event still waiting for its batch at the Redis command timeout is answered
    /// `Timeout` unsent, and a batch waits for Redis only until its oldest event's deadline,
    /// so an answer comes within that timeout (a few milliseconds more at most).
    pub async fn enqueue(&self, event: NewEvent) -> Result<Enqueued, QueueError> {
        match self.batcher.submit(event).await {
            Ok(outcome) => outcome,
            Err(BatchError::Overloaded) => Err(QueueError::Overloaded),
            Err(BatchError::Stopped) => Err(QueueError::Closed),
            Err(BatchError::Expired) => Err(QueueError::Timeout),
        }
    }
}

#[derive(Debug)]
struct Writer {
    redis: Client,
    keys: Keyspace,
    /// Stream key of each shard.
    streams: Vec<Key>,
    command_timeout: Duration,
    wait_aof: bool,
}

impl Flush for Writer {
    type Item = NewEvent;
    type Output = Result<Enqueued, QueueError>;

    fn weight(event: &NewEvent) -> usize {
        event.body.len()
    }

    async fn flush(
        &self,
        events: Vec<NewEvent>,
        deadline: tokio::time::Instant,
    ) -> Vec<Result<Enqueued, QueueError>> {
        self.write(events, deadline).await
    }
}

/// `EVALSHA`, routed on a cluster by its first key (argument 2, after the hash and key count).
fn evalsha() -> CustomCommand {
    CustomCommand::new_static("EVALSHA", ClusterHash::Offset(2), false)
}

fn waitaof() -> CustomCommand {
    CustomCommand::new_static("WAITAOF", ClusterHash::Random, false)
}

fn is_noscript(r: &Result<Value, fred::error::Error>) -> bool {
    matches!(r, Err(e) if e.details().starts_with("NOSCRIPT"))
}

impl Writer {
    fn stream(&self, shard: u16) -> Key {
        // The shard was computed modulo the same count; fall back to building the key.
        self.streams
            .get(shard as usize)
            .cloned()
            .unwrap_or_else(|| Key::from(self.keys.stream(shard)))
    }

    /// The `EVALSHA` arguments of `append_batch` for `events` (all of one shard).
    fn script_args(&self, shard: u16, events: &[&NewEvent]) -> Vec<Value> {
        let mut keys: Vec<Value> = vec![Value::Bytes(self.stream(shard).into_bytes())];
        let mut argv: Vec<Value> = Vec::with_capacity(2 + events.len() * ARGS_PER_EVENT);
        argv.push(Value::from(LAYOUT.as_str()));
        argv.push(Value::from(IDEMPOTENCY_TTL_SECS as i64));
        for e in events {
            argv.extend(entry::values(e.as_entry()));
            match &e.idempotency {
                Some(idem) => {
                    keys.push(Value::from(self.keys.idempotency(
                        shard,
                        &e.tenant,
                        &idem.key_digest,
                    )));
                    argv.push(Value::from(keys.len() as i64));
                    argv.push(Value::from(idem.fingerprint.as_str()));
                }
                None => {
                    argv.push(Value::from(0));
                    argv.push(Value::from(""));
                }
            }
        }
        let mut out = Vec::with_capacity(2 + keys.len() + argv.len());
        out.push(Value::from(APPEND_BATCH.sha1()));
        out.push(Value::from(keys.len() as i64));
        out.extend(keys);
        out.extend(argv);
        out
    }

    async fn append(
        &self,
        client: &fred::clients::WithOptions<Client>,
        shard: u16,
        events: &[&NewEvent],
    ) -> Result<Value, fred::error::Error> {
        if events.iter().any(|e| e.idempotency.is_some()) {
            let first = client
                .custom(evalsha(), self.script_args(shard, events))
                .await;
            if !is_noscript(&first) {
                return first;
            }
            // After a Redis restart or flush the script is gone: load it and run it again.
            APPEND_BATCH.load(&self.redis).await?;
            client
                .custom(evalsha(), self.script_args(shard, events))
                .await
        } else {
            client
                .xadd(
                    self.stream(shard),
                    false,
                    None::<()>,
                    "*",
                    entry::fields(events.iter().map(|e| e.as_entry())),
                )
                .await
        }
    }

    /// Appends `events` (and waits for the fsync), giving up at `deadline`: the first event of
    /// the batch was accepted `command_timeout` before it, so no request waits longer than
    /// that for its answer, however long it waited for the batch.
    async fn write(
        &self,
        events: Vec<NewEvent>,
        deadline: tokio::time::Instant,
    ) -> Vec<Result<Enqueued, QueueError>> {
        // Positions of each shard's events, so answers go back in the order events came.
        let mut groups: BTreeMap<u16, Vec<usize>> = BTreeMap::new();
        for (i, e) in events.iter().enumerate() {
            groups.entry(e.shard).or_default().push(i);
        }
        telemetry::enqueue_batch(events.len());
        let span = self.span(&events);
        // A command timeout below the floor is honoured as it is.
        let floor = MIN_COMMAND_TIMEOUT.min(self.command_timeout);
        let remaining = || {
            deadline
                .saturating_duration_since(tokio::time::Instant::now())
                .clamp(floor, self.command_timeout)
        };
        let client = self.bounded(remaining());
        let grouped: Vec<(u16, Vec<&NewEvent>)> = groups
            .iter()
            .map(|(shard, at)| (*shard, at.iter().map(|&i| &events[i]).collect()))
            .collect();
        let replies = futures_util::future::join_all(
            grouped
                .iter()
                .map(|(shard, evs)| self.append(&client, *shard, evs)),
        )
        .await;
        let fsync_ok = !self.wait_aof || self.wait_for_fsync(remaining()).await;
        let mut out: Vec<Result<Enqueued, QueueError>> =
            vec![Err(QueueError::Refused("not written".into())); events.len()];
        for ((at, (_, evs)), reply) in groups.values().zip(&grouped).zip(replies) {
            for (&i, outcome) in at.iter().zip(outcomes(evs, reply, fsync_ok)) {
                out[i] = outcome;
            }
        }
        if let Some(span) = span
            && out.iter().any(|o| o.is_err())
        {
            span.fail("");
        }
        out
    }

    /// The batch's `append` span, when some of its events' traces are kept: one span for the
    /// one write, linked to each of their `ingest` spans.
    fn span(&self, events: &[NewEvent]) -> Option<crate::traces::Span> {
        use opentelemetry::KeyValue;
        if !crate::traces::on() {
            return None;
        }
        let links: Vec<_> = events.iter().filter_map(|e| e.trace.clone()).collect();
        let size = KeyValue::new("estafeta.batch_events", events.len() as i64);
        crate::traces::Span::batch(
            "append",
            opentelemetry::trace::SpanKind::Client,
            links,
            vec![size],
        )
    }

    /// The client for one step of a batch, waiting at most `timeout`.
    fn bounded(&self, timeout: Duration) -> fred::clients::WithOptions<Client> {
        self.redis.with_options(&Options {
            timeout: Some(timeout),
            // With the connection down, fail at once instead of queueing inside the client:
            // the request gets its 503 now and no write happens behind its back later.
            fail_fast: true,
            ..Default::default()
        })
    }

    async fn wait_for_fsync(&self, timeout: Duration) -> bool {
        let client = self.bounded(timeout);
        let timeout_ms = Value::from(timeout.as_millis() as i64);
        let reply: Result<Value, _> = client
            .custom(waitaof(), vec![Value::from(1), Value::from(0), timeout_ms])
            .await;
        // `WAITAOF` answers `[local fsyncs, replica fsyncs]`; we asked for the local one.
        matches!(reply, Ok(Value::Array(items)) if items.first().and_then(Value::as_i64).is_some_and(|n| n >= 1))
    }
}

/// `append_batch`'s answer.
#[derive(Debug, serde::Deserialize)]
struct Appended {
    #[serde(deserialize_with = "crate::redis::scripts::list")]
    stored: Vec<String>,
}

/// Each event's outcome from its group's reply: the entry id of a plain append, or the
/// script's per-event answers.
fn outcomes(
    events: &[&NewEvent],
    reply: Result<Value, fred::error::Error>,
    fsync_ok: bool,
) -> Vec<Result<Enqueued, QueueError>> {
    let failed = |e: QueueError| events.iter().map(|_| Err(e.clone())).collect();
    let reply = match reply {
        Ok(v) => v,
        Err(e) => return failed(QueueError::of_sent(&e)),
    };
    if !fsync_ok {
        // Appended, not known to be on disk: it may well be delivered.
        return failed(QueueError::Unconfirmed(
            "Redis did not confirm the AOF fsync".into(),
        ));
    }
    if events.iter().all(|e| e.idempotency.is_none()) {
        // A plain XADD answers with the entry id: every event of the group is in.
        return match reply {
            Value::String(_) | Value::Bytes(_) => events
                .iter()
                .map(|e| Ok(Enqueued::New { id: e.id.clone() }))
                .collect(),
            _ => failed(QueueError::Unconfirmed(
                "unexpected reply to an append".into(),
            )),
        };
    }
    let answer: Result<Appended, ScriptError> = match reply.as_str() {
        Some(text) => APPEND_BATCH.decode(&text),
        None => {
            return failed(QueueError::Unconfirmed(
                "unexpected reply to an append".into(),
            ));
        }
    };
    match answer {
        Ok(a) if a.stored.len() == events.len() => events
            .iter()
            .zip(a.stored)
            .map(|(e, stored)| outcome_of(e, &stored))
            .collect(),
        Ok(_) => failed(QueueError::Unconfirmed(
            "unexpected reply to an append".into(),
        )),
        Err(e) => failed(QueueError::Unconfirmed(e.to_string())),
    }
}

/// What the script's answer for `event` means.
fn outcome_of(event: &NewEvent, stored: &str) -> Result<Enqueued, QueueError> {
    let new = || {
        Ok(Enqueued::New {
            id: event.id.clone(),
        })
    };
    let Some(idem) = &event.idempotency else {
        return new();
    };
    if stored.is_empty() {
        return new();
    }
    let (prev_id, prev_fingerprint) = stored.split_once(' ').unwrap_or((stored, ""));
    if prev_id == event.id.as_str() {
        // Our own append, re-sent by the client after a reconnect: still this request's event.
        new()
    } else if prev_fingerprint == idem.fingerprint {
        match EventId::parse(prev_id) {
            Ok(id) => Ok(Enqueued::Duplicate { id }),
            Err(_) => Err(QueueError::Refused(
                "a stored idempotency record is corrupt".into(),
            )),
        }
    } else {
        Err(QueueError::IdempotencyConflict)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn event(idem: Option<&str>) -> NewEvent {
        NewEvent {
            id: EventId::parse("evt_1").unwrap_or_else(|_| EventId::generate()),
            tenant: TenantId::generate(),
            shard: 0,
            event_type: EventType::parse("t").unwrap_or_else(|_| unreachable!()),
            content_type: None,
            body: bytes::Bytes::new(),
            idempotency: idem.map(|fp| Idempotency {
                key_digest: "k".into(),
                fingerprint: fp.into(),
            }),
            trace: None,
        }
    }

    #[test]
    fn script_answers_map_to_outcomes() {
        let new = Enqueued::New { id: event(None).id };
        assert_eq!(outcome_of(&event(None), "").ok(), Some(new.clone()));
        assert_eq!(outcome_of(&event(Some("fp")), "").ok(), Some(new.clone()));
        // The stored id is this event's own: a re-sent script, not a duplicate.
        assert_eq!(outcome_of(&event(Some("fp")), "evt_1 fp").ok(), Some(new));
        assert!(matches!(
            outcome_of(&event(Some("fp")), "evt_0 fp"),
            Ok(Enqueued::Duplicate { id }) if id.as_str() == "evt_0"
        ));
        assert!(matches!(
            outcome_of(&event(Some("fp")), "evt_0 other"),
            Err(QueueError::IdempotencyConflict)
        ));
    }
}
