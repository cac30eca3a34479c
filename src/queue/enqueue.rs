//! Batched writes of new events.
//!
//! Requests hand their event to a bounded channel and wait for its outcome. One collector task
//! takes whatever is waiting (up to `max_batch` events or [`MAX_BATCH_BYTES`]) and writes it,
//! with up to `max_inflight` batches in flight. While they are, new events pile up and the next
//! batch is larger: batching adapts to load, with no added delay when the gateway is idle.
//!
//! A batch becomes one stream entry per shard it touches (the layout is in [`super`]): one
//! command, one socket write, one reply and one stream entry for many events. Measured against
//! one `XADD` per event, this halves Redis's CPU per event, and Redis is the part every
//! instance shares. Batches with idempotency keys go through [`APPEND_BATCH`], which checks and
//! records the keys in the same atomic step as the append (the keys share the stream's slot).
//!
//! With `wait_aof`, each batch ends with one `WAITAOF 1 0`, so the fsync is shared by the batch
//! and no event is acknowledged before it is on disk.

use std::collections::BTreeMap;
use std::sync::{Arc, LazyLock};
use std::time::Duration;

use fred::prelude::*;
use fred::types::scripts::Script;
use fred::types::{ClusterHash, CustomCommand, Key};
use tokio::sync::{Semaphore, mpsc, oneshot};
use tokio::time::Instant;
use tokio_util::task::TaskTracker;

use super::{ENTRY_VERSION, Enqueued, IDEMPOTENCY_TTL_SECS, NewEvent, QueueError, field};
use crate::keyspace::Keyspace;
use crate::telemetry;

/// Appends one entry holding the events whose idempotency key (if any) was not seen, and
/// records their keys.
/// KEYS[1]: the stream; KEYS[2..]: idempotency keys.
/// ARGV[1]: idempotency TTL (s); then per event: id, tenant, type, ct, body, index of its
/// idempotency key in KEYS (0: none), request fingerprint.
/// Answers per event `''` when appended, else the stored `<event id> <fingerprint>`.
static APPEND_BATCH: LazyLock<Script> = LazyLock::new(|| {
    Script::from_lua(
        r#"
local out = {}
local fields = {'v', '1'}
local keep = {}
local n = (#ARGV - 1) / 7
for i = 0, n - 1 do
  local b = 2 + i * 7
  local k = tonumber(ARGV[b + 5])
  local prev = false
  if k > 0 then
    prev = redis.call('GET', KEYS[k])
    -- a second use of one key within this batch
    if not prev then prev = keep[KEYS[k]] or false end
  end
  if prev then
    out[i + 1] = prev
  else
    local f = #fields
    fields[f + 1] = 'id'; fields[f + 2] = ARGV[b]
    fields[f + 3] = 'tenant'; fields[f + 4] = ARGV[b + 1]
    fields[f + 5] = 'type'; fields[f + 6] = ARGV[b + 2]
    fields[f + 7] = 'ct'; fields[f + 8] = ARGV[b + 3]
    fields[f + 9] = 'body'; fields[f + 10] = ARGV[b + 4]
    if k > 0 then keep[KEYS[k]] = ARGV[b] .. ' ' .. ARGV[b + 6] end
    out[i + 1] = ''
  end
end
if #fields > 2 then
  redis.call('XADD', KEYS[1], '*', unpack(fields))
  for key, v in pairs(keep) do redis.call('SET', key, v, 'EX', ARGV[1]) end
end
return out
"#,
    )
});

/// Values per event in [`APPEND_BATCH`]'s ARGV.
const ARGS_PER_EVENT: usize = 7;
/// A batch stops growing past this many body bytes (one large event still goes alone).
pub const MAX_BATCH_BYTES: usize = 1024 * 1024;
/// Largest `max_batch`: a script's `unpack` of the entry's fields must stay far below Lua's
/// stack limit (8000).
pub const MAX_BATCH_EVENTS: usize = 512;

/// Tuning of the enqueue path.
#[derive(Debug, Clone)]
pub struct EnqueuerConfig {
    /// Most events per batch.
    pub max_batch: usize,
    /// Most batches in flight.
    pub max_inflight: usize,
    /// Most events waiting for a batch; beyond it requests get 503 at once.
    pub capacity: usize,
    /// Deadline of one batch (the Redis command timeout), and longest wait in the channel.
    pub command_timeout: Duration,
    /// End each batch with `WAITAOF 1 0`.
    pub wait_aof: bool,
    /// Number of shards (stream keys are built once).
    pub shards: u16,
}

struct Job {
    event: NewEvent,
    reply: oneshot::Sender<Result<Enqueued, QueueError>>,
    /// After this the request has given up waiting: the event is not sent.
    deadline: Instant,
}

/// The handle requests use to enqueue. Cheap to clone; the collector stops when every handle
/// is dropped, after finishing the batches it holds.
#[derive(Clone, Debug)]
pub struct Enqueuer {
    tx: mpsc::Sender<Job>,
    /// Longest wait in the channel before a job is answered `Timeout` unsent.
    queue_wait: Duration,
}

impl Enqueuer {
    /// Starts the collector on `tracker`.
    pub fn start(
        redis: Client,
        keys: &Keyspace,
        cfg: EnqueuerConfig,
        tracker: &TaskTracker,
    ) -> Enqueuer {
        let (tx, rx) = mpsc::channel(cfg.capacity.max(1));
        let writer = Arc::new(Writer {
            streams: (0..cfg.shards).map(|s| Key::from(keys.stream(s))).collect(),
            keys: keys.clone(),
            redis,
            command_timeout: cfg.command_timeout,
            wait_aof: cfg.wait_aof,
        });
        let max_batch = cfg.max_batch.clamp(1, MAX_BATCH_EVENTS);
        tracker.spawn(collect(
            rx,
            writer,
            max_batch,
            cfg.max_inflight.max(1),
            tracker.clone(),
        ));
        Enqueuer {
            tx,
            queue_wait: cfg.command_timeout,
        }
    }

    /// Writes `event` durably, or says why not. Never returns `Ok` unless Redis acknowledged.
    ///
    /// The wait is bounded without a timer per request: a job still queued at its deadline is
    /// answered `Timeout` instead of being sent, and every batch carries the Redis command
    /// timeout, so an answer comes within twice that timeout.
    pub async fn enqueue(&self, event: NewEvent) -> Result<Enqueued, QueueError> {
        let (reply, outcome) = oneshot::channel();
        let job = Job {
            event,
            reply,
            deadline: Instant::now() + self.queue_wait,
        };
        match self.tx.try_send(job) {
            Ok(()) => {}
            Err(mpsc::error::TrySendError::Full(_)) => return Err(QueueError::Overloaded),
            Err(mpsc::error::TrySendError::Closed(_)) => return Err(QueueError::Closed),
        }
        outcome.await.unwrap_or(Err(QueueError::Closed))
    }

    /// Loads the batch script so the first keyed batch does not pay for it.
    pub async fn preload(redis: &Client) -> Result<(), fred::error::Error> {
        APPEND_BATCH.load(redis).await
    }
}

async fn collect(
    mut rx: mpsc::Receiver<Job>,
    writer: Arc<Writer>,
    max_batch: usize,
    max_inflight: usize,
    tracker: TaskTracker,
) {
    let inflight = Arc::new(Semaphore::new(max_inflight));
    while let Some(first) = rx.recv().await {
        let mut batch = Batch::new(first, max_batch);
        batch.fill(&mut rx);
        let Ok(permit) = inflight.clone().acquire_owned().await else {
            break; // the semaphore is never closed
        };
        // Events that arrived while every batch slot was busy join this batch.
        batch.fill(&mut rx);
        let writer = writer.clone();
        tracker.spawn(async move {
            writer.write(batch.jobs).await;
            drop(permit);
        });
    }
}

struct Batch {
    jobs: Vec<Job>,
    bytes: usize,
    max: usize,
}

impl Batch {
    fn new(first: Job, max: usize) -> Batch {
        let bytes = first.event.body.len();
        let mut jobs = Vec::with_capacity(max.min(64));
        jobs.push(first);
        Batch { jobs, bytes, max }
    }

    fn fill(&mut self, rx: &mut mpsc::Receiver<Job>) {
        while self.jobs.len() < self.max && self.bytes < MAX_BATCH_BYTES {
            match rx.try_recv() {
                Ok(job) => {
                    self.bytes += job.event.body.len();
                    self.jobs.push(job);
                }
                Err(_) => break,
            }
        }
    }
}

struct Writer {
    redis: Client,
    keys: Keyspace,
    /// Stream key of each shard.
    streams: Vec<Key>,
    command_timeout: Duration,
    wait_aof: bool,
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

    /// The fields of one entry holding `jobs`.
    fn entry_fields(jobs: &[Job]) -> Vec<(&'static str, Value)> {
        let mut fields = Vec::with_capacity(1 + jobs.len() * 5);
        fields.push((field::VERSION, Value::from(ENTRY_VERSION)));
        for job in jobs {
            let e = &job.event;
            fields.push((field::ID, Value::from(e.id.as_str())));
            fields.push((field::TENANT, Value::from(&*e.tenant)));
            fields.push((field::TYPE, Value::from(e.event_type.as_str())));
            fields.push((
                field::CONTENT_TYPE,
                Value::Bytes(e.content_type.clone().unwrap_or_default()),
            ));
            fields.push((field::BODY, Value::Bytes(e.body.clone())));
        }
        fields
    }

    /// The `EVALSHA` arguments of [`APPEND_BATCH`] for `jobs` (all of one shard).
    fn script_args(&self, shard: u16, jobs: &[Job]) -> Vec<Value> {
        let mut keys: Vec<Value> = vec![Value::Bytes(self.stream(shard).into_bytes())];
        let mut argv: Vec<Value> = Vec::with_capacity(1 + jobs.len() * ARGS_PER_EVENT);
        argv.push(Value::from(IDEMPOTENCY_TTL_SECS as i64));
        for job in jobs {
            let e = &job.event;
            argv.push(Value::from(e.id.as_str()));
            argv.push(Value::from(&*e.tenant));
            argv.push(Value::from(e.event_type.as_str()));
            argv.push(Value::Bytes(e.content_type.clone().unwrap_or_default()));
            argv.push(Value::Bytes(e.body.clone()));
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
        out.push(Value::from(APPEND_BATCH.sha1().clone()));
        out.push(Value::from(keys.len() as i64));
        out.extend(keys);
        out.extend(argv);
        out
    }

    async fn append(
        &self,
        client: &fred::clients::WithOptions<Client>,
        shard: u16,
        jobs: &[Job],
    ) -> Result<Value, fred::error::Error> {
        if jobs.iter().any(|j| j.event.idempotency.is_some()) {
            let first = client
                .custom(evalsha(), self.script_args(shard, jobs))
                .await;
            if !is_noscript(&first) {
                return first;
            }
            // After a Redis restart or flush the script is gone: load it and run it again.
            APPEND_BATCH.load(&self.redis).await?;
            client
                .custom(evalsha(), self.script_args(shard, jobs))
                .await
        } else {
            client
                .xadd(
                    self.stream(shard),
                    false,
                    None::<()>,
                    "*",
                    Self::entry_fields(jobs),
                )
                .await
        }
    }

    async fn write(&self, jobs: Vec<Job>) {
        let now = Instant::now();
        let mut groups: BTreeMap<u16, Vec<Job>> = BTreeMap::new();
        for job in jobs {
            if job.deadline <= now {
                let _ = job.reply.send(Err(QueueError::Timeout));
            } else {
                groups.entry(job.event.shard).or_default().push(job);
            }
        }
        if groups.is_empty() {
            return;
        }
        telemetry::enqueue_batch(groups.values().map(Vec::len).sum());
        let options = Options {
            timeout: Some(self.command_timeout),
            // With the connection down, fail at once instead of queueing inside the client:
            // the request gets its 503 now and no write happens behind its back later.
            fail_fast: true,
            ..Default::default()
        };
        let client = self.redis.with_options(&options);
        let replies = futures_util::future::join_all(
            groups
                .iter()
                .map(|(shard, jobs)| self.append(&client, *shard, jobs)),
        )
        .await;
        let fsync_ok = !self.wait_aof || self.wait_for_fsync(&client).await;
        for ((_, jobs), reply) in groups.into_iter().zip(replies) {
            let outcomes = outcomes(&jobs, reply, fsync_ok);
            for (job, outcome) in jobs.into_iter().zip(outcomes) {
                let _ = job.reply.send(outcome);
            }
        }
    }

    async fn wait_for_fsync(&self, client: &fred::clients::WithOptions<Client>) -> bool {
        let timeout_ms = Value::from(self.command_timeout.as_millis() as i64);
        let reply: Result<Value, _> = client
            .custom(waitaof(), vec![Value::from(1), Value::from(0), timeout_ms])
            .await;
        // `WAITAOF` answers `[local fsyncs, replica fsyncs]`; we asked for the local one.
        matches!(reply, Ok(Value::Array(items)) if items.first().and_then(Value::as_i64).is_some_and(|n| n >= 1))
    }
}

/// Each job's outcome from its group's reply: the entry id of a plain append, or the script's
/// per-event answers.
fn outcomes(
    jobs: &[Job],
    reply: Result<Value, fred::error::Error>,
    fsync_ok: bool,
) -> Vec<Result<Enqueued, QueueError>> {
    let failed = |e: QueueError| jobs.iter().map(|_| Err(e.clone())).collect();
    let reply = match reply {
        Ok(v) => v,
        Err(e) => return failed(QueueError::Unavailable(e.to_string())),
    };
    if !fsync_ok {
        return failed(QueueError::Unavailable(
            "Redis did not confirm the AOF fsync".into(),
        ));
    }
    match reply {
        Value::Array(items) if items.len() == jobs.len() => jobs
            .iter()
            .zip(items)
            .map(|(job, item)| outcome_of(&job.event, &item))
            .collect(),
        // A plain XADD answers with the entry id: every event of the group is in.
        Value::String(_) | Value::Bytes(_)
            if jobs.iter().all(|j| j.event.idempotency.is_none()) =>
        {
            jobs.iter()
                .map(|j| {
                    Ok(Enqueued::New {
                        id: j.event.id.clone(),
                    })
                })
                .collect()
        }
        _ => failed(QueueError::Unavailable(
            "unexpected reply to an append".into(),
        )),
    }
}

/// What the script's answer for `event` means.
fn outcome_of(event: &NewEvent, item: &Value) -> Result<Enqueued, QueueError> {
    let stored = item.as_str().map(|s| s.into_owned()).unwrap_or_default();
    let Some(idem) = &event.idempotency else {
        return Ok(Enqueued::New {
            id: event.id.clone(),
        });
    };
    if stored.is_empty() {
        return Ok(Enqueued::New {
            id: event.id.clone(),
        });
    }
    let (prev_id, prev_fingerprint) = stored.split_once(' ').unwrap_or((stored.as_str(), ""));
    if prev_id == event.id {
        // Our own append, re-sent by the client after a reconnect: still this request's event.
        Ok(Enqueued::New {
            id: event.id.clone(),
        })
    } else if prev_fingerprint == idem.fingerprint {
        Ok(Enqueued::Duplicate {
            id: prev_id.to_owned(),
        })
    } else {
        Err(QueueError::IdempotencyConflict)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::queue::Idempotency;

    fn event(idem: Option<&str>) -> NewEvent {
        NewEvent {
            id: "evt_1".into(),
            tenant: "ten_1".into(),
            shard: 0,
            event_type: "t".into(),
            content_type: None,
            body: bytes::Bytes::new(),
            idempotency: idem.map(|fp| Idempotency {
                key_digest: "k".into(),
                fingerprint: fp.into(),
            }),
        }
    }

    #[test]
    fn script_answers_map_to_outcomes() {
        let new = Enqueued::New { id: "evt_1".into() };
        assert_eq!(
            outcome_of(&event(None), &Value::from("")).ok(),
            Some(new.clone())
        );
        assert_eq!(
            outcome_of(&event(Some("fp")), &Value::from("")).ok(),
            Some(new.clone())
        );
        // The stored id is this event's own: a re-sent script, not a duplicate.
        assert_eq!(
            outcome_of(&event(Some("fp")), &Value::from("evt_1 fp")).ok(),
            Some(new)
        );
        assert_eq!(
            outcome_of(&event(Some("fp")), &Value::from("evt_0 fp")).ok(),
            Some(Enqueued::Duplicate { id: "evt_0".into() })
        );
        assert!(matches!(
            outcome_of(&event(Some("fp")), &Value::from("evt_0 other")),
            Err(QueueError::IdempotencyConflict)
        ));
    }
}
