//! Live state of watched subjects (monitors, and sources with a silence watch), kept in the
//! tenant's shard slot so that one script records a signal, moves the deadline, records the
//! check and the incident, and appends the alert event to the shard's stream: one round trip,
//! atomic, and cluster-safe (every key shares the `{q<n>}` tag).
//!
//! Deadlines live in one sorted set per shard; the checker reads only what is overdue, and the
//! timeout runs through the same script, which first claims the subject by removing it from
//! the set, so with several checkers each overdue subject is handled once.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, LazyLock};
use std::time::Duration;

use futures_util::future::join_all;
use tokio::sync::{Semaphore, mpsc, oneshot};

use fred::prelude::*;
use fred::types::scripts::Script;

use crate::keyspace::Keyspace;
use crate::queue::new_event_id;
use crate::store::{StoreError, new_id, now_ms, rfc3339};

/// Records signals of subjects of one shard, in order. KEYS: due set, stream, counts, then per
/// subject its watch hash, checks and incidents. ARGV: checks kept, incidents kept, then per
/// subject [`ARGS_PER_SIGNAL`] values: subject, signal, wanted status ('' for
/// `start`), kind ('' for a timeout), window (ms), and, newline-separated in one value (only
/// split when the status changes, so a routine heartbeat does not pay for them): tenant, name,
/// event id, incident id, time (RFC 3339), reason, extra JSON members.
/// Answers per subject `{status, last_heartbeat, changed, duration_ms, event_type, kind}`,
/// `{'skip'}` when a timeout finds the subject no longer overdue, or `{'gone'}` when a signal
/// names a subject with no state (deleted). Times are Redis's (`TIME`).
static SIGNAL: LazyLock<Script> = LazyLock::new(|| {
    Script::from_lua(
        r#"
local due, stream, counts = KEYS[1], KEYS[2], KEYS[3]
local keep_checks, keep_incidents = tonumber(ARGV[1]), tonumber(ARGV[2])
-- Redis's clock, not each instance's: deadlines and run durations stay consistent whichever
-- instance takes the signal.
local clock = redis.call('TIME')
local now = tonumber(clock[1]) * 1000 + math.floor(tonumber(clock[2]) / 1000)
-- What a signal rarely needs travels packed in one argument, split only when used.
local function unpack_more(p)
  local t = {}
  for f in string.gmatch(p .. '\n', '([^\n]*)\n') do t[#t + 1] = f end
  return t
end
local function one(w, ck, ik, a)
  local subject, signal, want = ARGV[a], ARGV[a + 1], ARGV[a + 2]
  local more = nil
  local function m(i)
    if not more then more = unpack_more(ARGV[a + 5]) end
    return more[i]
  end
  local tenant, kind, name, reason = nil, ARGV[a + 3], nil, nil
  local st = redis.call('HMGET', w, 'status', 'started_at', 'incident', 'last_heartbeat',
    'tenant', 'kind', 'name', 'by')
  if signal == 'timeout' then
    local d = redis.call('ZSCORE', due, subject)
    if not d or tonumber(d) > now then return {'skip'} end
    redis.call('ZREM', due, subject)
    if not st[5] or not st[6] then return {'skip'} end
    kind = st[6]
    if kind == 'source' then reason = 'silent' end
  else
    -- The state is made by DESCRIBE when the subject is created and removed when it is
    -- deleted: a signal never brings a deleted subject back.
    if not st[6] then return {'gone'} end
    redis.call('ZADD', due, now + tonumber(ARGV[a + 4]), subject)
  end
  local prev = st[1]
  if not prev then
    prev = 'new'
    redis.call('HSET', w, 'status', prev, 'since', now)
    redis.call('HINCRBY', counts, kind .. ':' .. prev, 1)
  end
  local hb = st[4] or ''
  if signal == 'start' then
    redis.call('HSET', w, 'started_at', now, 'last_signal', now)
    return {prev, hb, '0', '', '', kind}
  end
  local dur = ''
  if signal == 'heartbeat' or signal == 'fail' or signal == 'exit' then
    hb = tostring(now)
    if st[2] then
      dur = tostring(now - tonumber(st[2]))
      redis.call('HSET', w, 'last_signal', now, 'last_heartbeat', now, 'last_duration_ms', dur)
      redis.call('HDEL', w, 'started_at')
    else
      redis.call('HSET', w, 'last_signal', now, 'last_heartbeat', now)
    end
  elseif signal ~= 'timeout' then
    redis.call('HSET', w, 'last_signal', now)
  end
  local extra = ''
  if signal == 'status' or signal == 'exit' then
    local x = m(7)
    if x ~= '' then extra = ',' .. x end
  end
  if dur ~= '' then extra = extra .. ',"duration_ms":' .. dur end
  -- A status the service pushed is changed by its next push, a failure or a timeout; a
  -- routine heartbeat does not override it (no degraded/up flapping).
  if want == 'up' and st[8] == 'push' and signal ~= 'status' then want = prev end
  if want == prev and signal ~= 'status' then return {want, hb, '0', dur, '', kind} end
  reason = reason or m(6)
  tenant, name = st[5] or m(1), st[7] or m(2)
  if want ~= prev or signal == 'status' then
    redis.call('LPUSH', ck, '{"at":"' .. m(5) .. '","signal":"' .. signal .. '","status":"' .. want
      .. '","previous_status":"' .. prev .. '","reason":"' .. reason .. '"' .. extra .. '}')
    redis.call('LTRIM', ck, 0, keep_checks - 1)
  end
  if want == prev then return {want, hb, '0', dur, '', kind} end
  local by = 'signal'
  if signal == 'status' then by = 'push' end
  redis.call('HSET', w, 'status', want, 'since', now, 'by', by)
  redis.call('HINCRBY', counts, kind .. ':' .. prev, -1)
  redis.call('HINCRBY', counts, kind .. ':' .. want, 1)
  local incident = st[3] or ''
  if want == 'up' then
    if incident ~= '' then
      local head = redis.call('LINDEX', ik, 0)
      if head then
        local i = cjson.decode(head)
        if i.id == incident then
          i.resolved_at = m(5)
          i.resolved_reason = reason
          i.duration_ms = now - i.opened_ms
          redis.call('LSET', ik, 0, cjson.encode(i))
        end
      end
      redis.call('HSET', w, 'incident', '')
    end
  elseif incident == '' then
    incident = m(4)
    redis.call('LPUSH', ik, cjson.encode({id = incident, status = want, reason = reason,
      opened_at = m(5), opened_ms = now}))
    redis.call('LTRIM', ik, 0, keep_incidents - 1)
    redis.call('HSET', w, 'incident', incident)
  else
    local head = redis.call('LINDEX', ik, 0)
    if head then
      local i = cjson.decode(head)
      if i.id == incident then
        i.status = want
        redis.call('LSET', ik, 0, cjson.encode(i))
      end
    end
  end
  -- The first signal of a new subject only starts the watch: nothing was wrong before it.
  if prev == 'new' and want == 'up' then return {want, hb, '1', dur, '', kind} end
  local etype = kind .. '.' .. want
  if kind == 'source' then
    if want == 'up' then etype = 'source.resumed' else etype = 'source.silent' end
  end
  local inc = 'null'
  if incident ~= '' then inc = '"' .. incident .. '"' end
  local body = '{"type":"' .. etype .. '","' .. kind .. '":' .. cjson.encode({id = subject, name = name})
    .. ',"status":"' .. want .. '","previous_status":"' .. prev .. '","reason":"' .. reason
    .. '","incident_id":' .. inc .. ',"at":"' .. m(5) .. '"' .. extra .. '}'
  redis.call('XADD', stream, '*', 'v', '1', 'id', m(3), 'tenant', tenant, 'type', etype,
    'ct', 'application/json', 'body', body)
  return {want, hb, '1', dur, etype, kind}
end
local out = {}
for i = 0, (#KEYS - 3) / 3 - 1 do
  out[i + 1] = one(KEYS[4 + i * 3], KEYS[5 + i * 3], KEYS[6 + i * 3], 3 + i * 6)
end
return out
"#,
    )
});

/// Values per subject in [`SIGNAL`]'s ARGV.
const ARGS_PER_SIGNAL: usize = 6;

/// Creates a subject's state (status `new`) or, when it exists, renames it and moves its
/// deadline to its last signal plus the new window. KEYS: watch hash, due set, counts.
/// ARGV: subject, tenant, kind, name, window (ms).
static DESCRIBE: LazyLock<Script> = LazyLock::new(|| {
    Script::from_lua(
        r#"
if redis.call('EXISTS', KEYS[1]) == 0 then
  local clock = redis.call('TIME')
  redis.call('HSET', KEYS[1], 'tenant', ARGV[2], 'kind', ARGV[3], 'name', ARGV[4],
    'status', 'new', 'since', tonumber(clock[1]) * 1000 + math.floor(tonumber(clock[2]) / 1000))
  redis.call('HINCRBY', KEYS[3], ARGV[3] .. ':new', 1)
  return 1
end
redis.call('HSET', KEYS[1], 'name', ARGV[4])
local last = redis.call('HGET', KEYS[1], 'last_signal')
if last and redis.call('ZSCORE', KEYS[2], ARGV[1]) then
  redis.call('ZADD', KEYS[2], tonumber(last) + tonumber(ARGV[5]), ARGV[1])
end
return 0
"#,
    )
});

/// Removes a subject's state, deadline and history. KEYS: watch hash, due set, checks,
/// incidents, counts. ARGV: subject.
static FORGET: LazyLock<Script> = LazyLock::new(|| {
    Script::from_lua(
        r#"
local h = redis.call('HMGET', KEYS[1], 'kind', 'status')
if h[1] and h[2] then redis.call('HINCRBY', KEYS[5], h[1] .. ':' .. h[2], -1) end
redis.call('ZREM', KEYS[2], ARGV[1])
return redis.call('DEL', KEYS[1], KEYS[3], KEYS[4])
"#,
    )
});

/// What is watched.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Monitor,
    Source,
}

impl Kind {
    pub fn as_str(self) -> &'static str {
        match self {
            Kind::Monitor => "monitor",
            Kind::Source => "source",
        }
    }
}

/// A status a subject can report or be given.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Status {
    Up,
    Down,
    Degraded,
}

impl Status {
    fn as_str(self) -> &'static str {
        match self {
            Status::Up => "up",
            Status::Down => "down",
            Status::Degraded => "degraded",
        }
    }
}

/// One signal from (or about) a subject.
#[derive(Debug, Clone)]
pub enum Signal {
    /// A plain heartbeat (success).
    Heartbeat,
    /// A job started: its duration is measured to the next heartbeat, fail or exit code.
    Start,
    /// A job failed.
    Fail,
    /// A job ended with this exit code (0: success).
    Exit(i64),
    /// A status push; `extra` holds its message and metadata as JSON members.
    Status { status: Status, extra: String },
    /// An inbound event of a watched source.
    Event,
}

/// What the script needs of a signal: its name, the status it asks for, the reason recorded,
/// and extra JSON members.
type SignalParts<'a> = (&'static str, &'static str, &'static str, String);

/// A missed deadline, as the checker reports it (the script words it `silent` for sources).
const TIMEOUT: SignalParts = ("timeout", "down", "heartbeat_missed", String::new());

impl Signal {
    fn parts(&self) -> SignalParts<'static> {
        match self {
            Signal::Heartbeat => ("heartbeat", "up", "heartbeat", String::new()),
            Signal::Start => ("start", "", "start", String::new()),
            Signal::Fail => ("fail", "down", "fail_signal", String::new()),
            Signal::Exit(code) => (
                "exit",
                if *code == 0 { "up" } else { "down" },
                "exit_code",
                format!(r#""exit_code":{code}"#),
            ),
            Signal::Status { status, extra } => {
                ("status", status.as_str(), "status_push", extra.clone())
            }
            Signal::Event => ("event", "up", "event_received", String::new()),
        }
    }
}

/// The subject a signal is about.
#[derive(Debug, Clone, Copy)]
pub struct Subject<'a> {
    pub kind: Kind,
    pub id: &'a str,
    pub tenant: &'a str,
    pub name: &'a str,
    pub shard: u16,
    /// Interval plus grace.
    pub window: Duration,
}

/// What a signal did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Recorded {
    /// The status after the signal: `new`, `up`, `down` or `degraded`.
    pub status: String,
    /// Last heartbeat (ms), if any.
    pub last_heartbeat_ms: Option<u64>,
    /// Whether the status changed.
    pub changed: bool,
    /// The alert appended to the stream, if any.
    pub alert: Option<String>,
    pub duration_ms: Option<u64>,
}

/// One subject's part of a [`SIGNAL`] call: its keys and arguments.
#[derive(Debug)]
struct Call {
    subject_keys: [String; 3],
    args: [String; ARGS_PER_SIGNAL],
}

/// A signal waiting for the batch it rides in.
#[derive(Debug)]
struct Job {
    shard: u16,
    call: Call,
    reply: oneshot::Sender<Result<Option<Recorded>, fred::error::Error>>,
}

/// Most signals per batch, and batches in flight: as with the event queue, signals that arrive
/// while batches are in flight make the next one larger, so one script call (one command, one
/// write, one reply) carries many heartbeats under load and one when idle.
const MAX_BATCH: usize = 128;
const MAX_INFLIGHT: usize = 4;

/// Live state of watched subjects.
#[derive(Debug, Clone)]
pub struct Watches {
    inner: Arc<WatchesInner>,
    /// The batch collector's queue.
    tx: mpsc::Sender<Job>,
}

#[derive(Debug)]
struct WatchesInner {
    redis: Client,
    keys: Keyspace,
    checks_kept: u32,
    incidents_kept: u32,
}

impl Watches {
    /// Starts the batch collector (on the current runtime); it ends when the last handle drops.
    pub fn new(redis: Client, keys: Keyspace, checks_kept: u32, incidents_kept: u32) -> Watches {
        let inner = Arc::new(WatchesInner {
            redis,
            keys,
            checks_kept: checks_kept.max(1),
            incidents_kept: incidents_kept.max(1),
        });
        let (tx, rx) = mpsc::channel(16 * 1024);
        tokio::spawn(collect(rx, inner.clone()));
        Watches { inner, tx }
    }

    /// Loads the scripts, so the first heartbeat after a start needs no reload round trip.
    pub async fn preload(&self) -> Result<(), StoreError> {
        for script in [&*SIGNAL, &*DESCRIBE, &*FORGET] {
            script.load(&self.inner.redis).await?;
        }
        Ok(())
    }

    /// One subject's part of a [`SIGNAL`] call. A timeout passes no kind, window, tenant or
    /// name: the script reads them from the subject's state.
    #[allow(clippy::too_many_arguments)]
    fn call(
        &self,
        shard: u16,
        id: &str,
        kind: &str,
        window: Duration,
        tenant: &str,
        name: &str,
        (signal, want, reason, extra): SignalParts,
        now: u64,
    ) -> Call {
        let k = &self.inner.keys;
        // Names hold no control characters, ids and times are from fixed alphabets, and the
        // extra members are serialized JSON (newlines escaped): a newline separates safely.
        let packed = [
            tenant,
            name,
            &new_event_id(),
            &new_id("inc"),
            &rfc3339(now),
            reason,
            &extra,
        ]
        .join("\n");
        Call {
            subject_keys: [
                k.watch(shard, id),
                k.checks(shard, id),
                k.incidents(shard, id),
            ],
            args: [
                id.to_owned(),
                signal.to_owned(),
                want.to_owned(),
                kind.to_owned(),
                (window.as_millis() as u64).to_string(),
                packed,
            ],
        }
    }

    /// Records `signal` for `subject`, batched with concurrent signals of its shard. `None`
    /// when the subject has no state (it was deleted, or its creation did not finish).
    pub async fn signal(
        &self,
        subject: Subject<'_>,
        signal: &Signal,
    ) -> Result<Option<Recorded>, StoreError> {
        let call = self.call(
            subject.shard,
            subject.id,
            subject.kind.as_str(),
            subject.window,
            subject.tenant,
            subject.name,
            signal.parts(),
            now_ms(),
        );
        let (reply, answer) = oneshot::channel();
        let job = Job {
            shard: subject.shard,
            call,
            reply,
        };
        self.tx.try_send(job).map_err(|_| {
            StoreError::Redis(fred::error::Error::new(
                fred::error::ErrorKind::Backpressure,
                "too many signals waiting for Redis",
            ))
        })?;
        match answer.await {
            Ok(r) => Ok(r?),
            Err(_) => Err(StoreError::Invalid("the signal batcher stopped".into())),
        }
    }

    /// Records `signal` for a subject that should exist: when its state is missing, `exists`
    /// (the store's word) decides between a subject deleted meanwhile (`None`) and one whose
    /// creation stopped between its definition and its state (made now, then signalled).
    pub async fn signal_existing(
        &self,
        subject: Subject<'_>,
        signal: &Signal,
        exists: impl Future<Output = Result<bool, StoreError>>,
    ) -> Result<Option<Recorded>, StoreError> {
        if let Some(r) = self.signal(subject, signal).await? {
            return Ok(Some(r));
        }
        if !exists.await? {
            return Ok(None);
        }
        self.describe(subject).await?;
        self.signal(subject, signal).await
    }

    /// Redis's clock (ms), which the signal script uses for deadlines.
    pub async fn clock(&self) -> Result<u64, StoreError> {
        let t: Vec<String> = self
            .inner
            .redis
            .custom(fred::cmd!("TIME"), Vec::<String>::new())
            .await?;
        let part = |i: usize| t.get(i).and_then(|v| v.parse::<u64>().ok());
        match (part(0), part(1)) {
            (Some(s), Some(us)) => Ok(s * 1000 + us / 1000),
            _ => Err(StoreError::Invalid("TIME answered something else".into())),
        }
    }

    /// Subjects of `shard` whose deadline is before `now`, at most `limit`.
    pub async fn overdue(
        &self,
        shard: u16,
        now: u64,
        limit: i64,
    ) -> Result<Vec<String>, StoreError> {
        Ok(self
            .inner
            .redis
            .zrangebyscore(
                self.inner.keys.due(shard),
                "-inf",
                now as f64,
                false,
                Some((0, limit)),
            )
            .await?)
    }

    /// Turns overdue subjects of one shard `down`, in one script call; each is handled only if
    /// it still is overdue (another checker may have handled it, or a signal arrived): `None`
    /// for those.
    pub async fn time_out(
        &self,
        shard: u16,
        subjects: &[String],
        now: u64,
    ) -> Result<Vec<Option<Recorded>>, StoreError> {
        let calls = subjects
            .iter()
            .map(|id| self.call(shard, id, "", Duration::ZERO, "", "", TIMEOUT, now))
            .collect::<Vec<_>>();
        Ok(self.inner.run(shard, calls).await?)
    }

    /// Creates a subject's state at status `new`, or renames it and applies a new window.
    pub async fn describe(&self, subject: Subject<'_>) -> Result<(), StoreError> {
        let keys = vec![
            self.inner.keys.watch(subject.shard, subject.id),
            self.inner.keys.due(subject.shard),
            self.inner.keys.watch_counts(subject.shard),
        ];
        let args = vec![
            subject.id.to_owned(),
            subject.tenant.to_owned(),
            subject.kind.as_str().to_owned(),
            subject.name.to_owned(),
            (subject.window.as_millis() as u64).to_string(),
        ];
        let _: i64 = DESCRIBE
            .evalsha_with_reload(&self.inner.redis, keys, args)
            .await?;
        Ok(())
    }

    /// Removes a subject's state and history.
    pub async fn forget(&self, shard: u16, subject: &str) -> Result<(), StoreError> {
        let keys = vec![
            self.inner.keys.watch(shard, subject),
            self.inner.keys.due(shard),
            self.inner.keys.checks(shard, subject),
            self.inner.keys.incidents(shard, subject),
            self.inner.keys.watch_counts(shard),
        ];
        let _: i64 = FORGET
            .evalsha_with_reload(&self.inner.redis, keys, vec![subject.to_owned()])
            .await?;
        Ok(())
    }

    /// The live state as JSON members: status, since, last heartbeat and signal, last run
    /// duration, open incident, next deadline.
    pub async fn view(&self, shard: u16, subject: &str) -> Result<serde_json::Value, StoreError> {
        let (h, due): (HashMap<String, String>, Option<f64>) = {
            let pipe = self.inner.redis.pipeline();
            let _: () = pipe.hgetall(self.inner.keys.watch(shard, subject)).await?;
            let _: () = pipe.zscore(self.inner.keys.due(shard), subject).await?;
            pipe.all().await?
        };
        let time = |field: &str| {
            h.get(field)
                .and_then(|v| v.parse::<u64>().ok())
                .map(rfc3339)
        };
        Ok(serde_json::json!({
            "status": h.get("status").map_or("new", String::as_str),
            "status_since": time("since"),
            "last_heartbeat": time("last_heartbeat"),
            "last_signal": time("last_signal"),
            "last_duration_ms": h.get("last_duration_ms").and_then(|v| v.parse::<u64>().ok()),
            "running_since": time("started_at"),
            "open_incident_id": h.get("incident").filter(|i| !i.is_empty()),
            "next_deadline": due.map(|d| rfc3339(d as u64)),
        }))
    }

    async fn history(&self, key: String, limit: i64) -> Result<Vec<serde_json::Value>, StoreError> {
        let items: Vec<String> = self.inner.redis.lrange(key, 0, limit - 1).await?;
        Ok(items
            .iter()
            .filter_map(|i| serde_json::from_str::<serde_json::Value>(i).ok())
            .map(|mut v| {
                if let Some(o) = v.as_object_mut() {
                    o.remove("opened_ms");
                }
                v
            })
            .collect())
    }

    /// Incident history, newest first.
    pub async fn incidents(
        &self,
        shard: u16,
        subject: &str,
        limit: i64,
    ) -> Result<Vec<serde_json::Value>, StoreError> {
        self.history(self.inner.keys.incidents(shard, subject), limit)
            .await
    }

    /// Recent status records, newest first.
    pub async fn checks(
        &self,
        shard: u16,
        subject: &str,
        limit: i64,
    ) -> Result<Vec<serde_json::Value>, StoreError> {
        self.history(self.inner.keys.checks(shard, subject), limit)
            .await
    }

    /// Subjects per `(kind, status)` over `shards`.
    pub async fn counts(&self, shards: u16) -> Result<HashMap<String, i64>, StoreError> {
        let mut total: HashMap<String, i64> = HashMap::new();
        for shard in 0..shards {
            let h: HashMap<String, i64> = self
                .inner
                .redis
                .hgetall(self.inner.keys.watch_counts(shard))
                .await?;
            for (k, v) in h {
                *total.entry(k).or_default() += v;
            }
        }
        Ok(total)
    }
}

impl WatchesInner {
    /// One [`SIGNAL`] call for `calls` (all of `shard`).
    async fn run(
        &self,
        shard: u16,
        calls: Vec<Call>,
    ) -> Result<Vec<Option<Recorded>>, fred::error::Error> {
        let mut keys = Vec::with_capacity(3 + calls.len() * 3);
        keys.extend([
            self.keys.due(shard),
            self.keys.stream(shard),
            self.keys.watch_counts(shard),
        ]);
        let mut args = Vec::with_capacity(2 + calls.len() * ARGS_PER_SIGNAL);
        args.extend([
            self.checks_kept.to_string(),
            self.incidents_kept.to_string(),
        ]);
        for call in calls {
            keys.extend(call.subject_keys);
            args.extend(call.args);
        }
        let out: Vec<Vec<String>> = SIGNAL.evalsha_with_reload(&self.redis, keys, args).await?;
        Ok(out.into_iter().map(recorded).collect())
    }
}

/// Decodes one subject's answer of [`SIGNAL`].
fn recorded(answer: Vec<String>) -> Option<Recorded> {
    let mut it = answer.into_iter();
    let status = it
        .next()
        .filter(|s| !s.is_empty() && s != "skip" && s != "gone")?;
    let hb = it.next().unwrap_or_default();
    let changed = it.next().is_some_and(|c| c == "1");
    let duration = it.next().unwrap_or_default();
    let alert = it.next().filter(|e| !e.is_empty());
    let kind = it.next().unwrap_or_default();
    if changed {
        crate::telemetry::watch_transition(&kind, &status);
    }
    Some(Recorded {
        status,
        last_heartbeat_ms: hb.parse().ok(),
        changed,
        alert,
        duration_ms: duration.parse().ok(),
    })
}

/// Gathers waiting signals into batches, one script call per shard per batch.
async fn collect(mut rx: mpsc::Receiver<Job>, inner: Arc<WatchesInner>) {
    let inflight = Arc::new(Semaphore::new(MAX_INFLIGHT));
    let fill = |jobs: &mut Vec<Job>, rx: &mut mpsc::Receiver<Job>| {
        while jobs.len() < MAX_BATCH {
            match rx.try_recv() {
                Ok(job) => jobs.push(job),
                Err(_) => break,
            }
        }
    };
    while let Some(first) = rx.recv().await {
        let mut jobs = vec![first];
        fill(&mut jobs, &mut rx);
        let Ok(permit) = inflight.clone().acquire_owned().await else {
            break; // the semaphore is never closed
        };
        fill(&mut jobs, &mut rx);
        let inner = inner.clone();
        tokio::spawn(async move {
            let mut by_shard: BTreeMap<u16, Vec<Job>> = BTreeMap::new();
            for job in jobs {
                by_shard.entry(job.shard).or_default().push(job);
            }
            join_all(by_shard.into_iter().map(|(shard, jobs)| {
                let inner = inner.clone();
                async move {
                    let (calls, replies): (Vec<Call>, Vec<_>) =
                        jobs.into_iter().map(|j| (j.call, j.reply)).unzip();
                    match inner.run(shard, calls).await {
                        Ok(answers) => {
                            let mut answers = answers.into_iter();
                            for reply in replies {
                                let _ = reply.send(Ok(answers.next().flatten()));
                            }
                        }
                        Err(e) => {
                            for reply in replies {
                                let _ = reply.send(Err(e.clone()));
                            }
                        }
                    }
                }
            }))
            .await;
            drop(permit);
        });
    }
}
