//! Live state of watched subjects (monitors, and sources with a silence watch), kept in the
//! tenant's shard slot so that one script records a signal, moves the deadline, records the
//! check and the incident, and appends the alert event to the shard's stream: one round trip,
//! atomic, and cluster-safe (every key shares the `{q<n>}` tag).
//!
//! Deadlines live in one sorted set per shard; the checker reads only what is overdue, and the
//! timeout runs through the same script, which first claims the subject by removing it from
//! the set, so with several checkers each overdue subject is handled once.

use std::collections::HashMap;
use std::sync::LazyLock;
use std::time::Duration;

use fred::prelude::*;
use fred::types::scripts::Script;

use crate::keyspace::Keyspace;
use crate::queue::new_event_id;
use crate::store::{StoreError, new_id, now_ms, rfc3339};

/// Records one signal. KEYS: watch hash, due set, checks, incidents, stream, counts.
/// ARGV: now (ms), subject, signal, wanted status ('' for `start`), window (ms), tenant, kind,
/// name, event id, incident id, time (RFC 3339), reason, extra JSON members ('' for none),
/// checks kept, incidents kept.
/// Answers `{status, last_heartbeat, changed, duration_ms, event_type, kind}` or `{'skip'}` when a
/// timeout finds the subject no longer overdue.
static SIGNAL: LazyLock<Script> = LazyLock::new(|| {
    Script::from_lua(
        r#"
local now = tonumber(ARGV[1])
local subject, signal, want = ARGV[2], ARGV[3], ARGV[4]
local tenant, kind, name = ARGV[6], ARGV[7], ARGV[8]
local reason, extra = ARGV[12], ARGV[13]
if signal == 'timeout' then
  local d = redis.call('ZSCORE', KEYS[2], subject)
  if not d or tonumber(d) > now then return {'skip'} end
  redis.call('ZREM', KEYS[2], subject)
  local h = redis.call('HMGET', KEYS[1], 'tenant', 'kind', 'name')
  if not h[1] then return {'skip'} end
  tenant, kind, name = h[1], h[2], h[3]
  if kind == 'source' then reason = 'silent' end
else
  redis.call('ZADD', KEYS[2], now + tonumber(ARGV[5]), subject)
  redis.call('HSET', KEYS[1], 'tenant', tenant, 'kind', kind, 'name', name, 'last_signal', now)
end
local st = redis.call('HMGET', KEYS[1], 'status', 'started_at', 'incident', 'last_heartbeat')
local prev = st[1]
if not prev then
  prev = 'new'
  redis.call('HSET', KEYS[1], 'status', prev, 'since', now)
  redis.call('HINCRBY', KEYS[6], kind .. ':' .. prev, 1)
end
local hb = st[4] or ''
if signal == 'start' then
  redis.call('HSET', KEYS[1], 'started_at', now)
  return {prev, hb, '0', '', '', kind}
end
local dur = ''
if signal == 'heartbeat' or signal == 'fail' or signal == 'exit' then
  hb = tostring(now)
  redis.call('HSET', KEYS[1], 'last_heartbeat', now)
  if st[2] then
    dur = tostring(now - tonumber(st[2]))
    redis.call('HSET', KEYS[1], 'last_duration_ms', dur)
    redis.call('HDEL', KEYS[1], 'started_at')
  end
end
if extra ~= '' then extra = ',' .. extra end
if dur ~= '' then extra = extra .. ',"duration_ms":' .. dur end
if want ~= prev or signal == 'status' then
  redis.call('LPUSH', KEYS[3], '{"at":"' .. ARGV[11] .. '","signal":"' .. signal .. '","status":"' .. want
    .. '","previous_status":"' .. prev .. '","reason":"' .. reason .. '"' .. extra .. '}')
  redis.call('LTRIM', KEYS[3], 0, tonumber(ARGV[14]) - 1)
end
if want == prev then return {want, hb, '0', dur, '', kind} end
redis.call('HSET', KEYS[1], 'status', want, 'since', now)
redis.call('HINCRBY', KEYS[6], kind .. ':' .. prev, -1)
redis.call('HINCRBY', KEYS[6], kind .. ':' .. want, 1)
local incident = st[3] or ''
if want == 'up' then
  if incident ~= '' then
    local head = redis.call('LINDEX', KEYS[4], 0)
    if head then
      local i = cjson.decode(head)
      if i.id == incident then
        i.resolved_at = ARGV[11]
        i.resolved_reason = reason
        i.duration_ms = now - i.opened_ms
        redis.call('LSET', KEYS[4], 0, cjson.encode(i))
      end
    end
    redis.call('HSET', KEYS[1], 'incident', '')
  end
elseif incident == '' then
  incident = ARGV[10]
  redis.call('LPUSH', KEYS[4], cjson.encode({id = incident, status = want, reason = reason,
    opened_at = ARGV[11], opened_ms = now}))
  redis.call('LTRIM', KEYS[4], 0, tonumber(ARGV[15]) - 1)
  redis.call('HSET', KEYS[1], 'incident', incident)
else
  local head = redis.call('LINDEX', KEYS[4], 0)
  if head then
    local i = cjson.decode(head)
    if i.id == incident then
      i.status = want
      redis.call('LSET', KEYS[4], 0, cjson.encode(i))
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
  .. '","incident_id":' .. inc .. ',"at":"' .. ARGV[11] .. '"' .. extra .. '}'
redis.call('XADD', KEYS[5], '*', 'v', '1', 'id', ARGV[9], 'tenant', tenant, 'type', etype,
  'ct', 'application/json', 'body', body)
return {want, hb, '1', dur, etype, kind}
"#,
    )
});

/// Creates a subject's state (status `new`) or, when it exists, renames it and moves its
/// deadline to its last signal plus the new window. KEYS: watch hash, due set, counts.
/// ARGV: subject, tenant, kind, name, now, window (ms).
static DESCRIBE: LazyLock<Script> = LazyLock::new(|| {
    Script::from_lua(
        r#"
if redis.call('EXISTS', KEYS[1]) == 0 then
  redis.call('HSET', KEYS[1], 'tenant', ARGV[2], 'kind', ARGV[3], 'name', ARGV[4],
    'status', 'new', 'since', ARGV[5])
  redis.call('HINCRBY', KEYS[3], ARGV[3] .. ':new', 1)
  return 1
end
redis.call('HSET', KEYS[1], 'name', ARGV[4])
local last = redis.call('HGET', KEYS[1], 'last_signal')
if last and redis.call('ZSCORE', KEYS[2], ARGV[1]) then
  redis.call('ZADD', KEYS[2], tonumber(last) + tonumber(ARGV[6]), ARGV[1])
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

impl Signal {
    fn parts(&self) -> (&'static str, &'static str, &'static str, String) {
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

/// Live state of watched subjects.
#[derive(Debug, Clone)]
pub struct Watches {
    redis: Client,
    keys: Keyspace,
    checks_kept: u32,
    incidents_kept: u32,
}

impl Watches {
    pub fn new(redis: Client, keys: Keyspace, checks_kept: u32, incidents_kept: u32) -> Watches {
        Watches {
            redis,
            keys,
            checks_kept: checks_kept.max(1),
            incidents_kept: incidents_kept.max(1),
        }
    }

    /// Loads the scripts, so the first heartbeat after a start needs no reload round trip.
    pub async fn preload(&self) -> Result<(), StoreError> {
        for script in [&*SIGNAL, &*DESCRIBE, &*FORGET] {
            script.load(&self.redis).await?;
        }
        Ok(())
    }

    fn signal_keys(&self, shard: u16, subject: &str) -> Vec<String> {
        vec![
            self.keys.watch(shard, subject),
            self.keys.due(shard),
            self.keys.checks(shard, subject),
            self.keys.incidents(shard, subject),
            self.keys.stream(shard),
            self.keys.watch_counts(shard),
        ]
    }

    async fn run_signal(
        &self,
        keys: Vec<String>,
        args: Vec<String>,
    ) -> Result<Option<Recorded>, StoreError> {
        let out: Vec<String> = SIGNAL.evalsha_with_reload(&self.redis, keys, args).await?;
        let mut it = out.into_iter();
        let status = it.next().unwrap_or_default();
        if status == "skip" || status.is_empty() {
            return Ok(None);
        }
        let hb = it.next().unwrap_or_default();
        let changed = it.next().is_some_and(|c| c == "1");
        let duration = it.next().unwrap_or_default();
        let alert = it.next().filter(|e| !e.is_empty());
        let kind = it.next().unwrap_or_default();
        let recorded = Recorded {
            status,
            last_heartbeat_ms: hb.parse().ok(),
            changed,
            alert,
            duration_ms: duration.parse().ok(),
        };
        if recorded.changed {
            crate::telemetry::watch_transition(&kind, &recorded.status);
        }
        Ok(Some(recorded))
    }

    /// Records `signal` for `subject`: one round trip.
    pub async fn signal(
        &self,
        subject: Subject<'_>,
        signal: &Signal,
    ) -> Result<Recorded, StoreError> {
        let now = now_ms();
        let (name, want, reason, extra) = signal.parts();
        let args = vec![
            now.to_string(),
            subject.id.to_owned(),
            name.to_owned(),
            want.to_owned(),
            (subject.window.as_millis() as u64).to_string(),
            subject.tenant.to_owned(),
            subject.kind.as_str().to_owned(),
            subject.name.to_owned(),
            new_event_id(),
            new_id("inc"),
            rfc3339(now),
            reason.to_owned(),
            extra,
            self.checks_kept.to_string(),
            self.incidents_kept.to_string(),
        ];
        self.run_signal(self.signal_keys(subject.shard, subject.id), args)
            .await?
            .ok_or_else(|| StoreError::Invalid("signal script skipped a live signal".into()))
    }

    /// Subjects of `shard` whose deadline is before `now`, at most `limit`.
    pub async fn overdue(
        &self,
        shard: u16,
        now: u64,
        limit: i64,
    ) -> Result<Vec<String>, StoreError> {
        Ok(self
            .redis
            .zrangebyscore(
                self.keys.due(shard),
                "-inf",
                now as f64,
                false,
                Some((0, limit)),
            )
            .await?)
    }

    /// Turns an overdue subject `down`, if it still is overdue (another checker may have
    /// handled it, or a signal arrived): `None` then.
    pub async fn time_out(
        &self,
        shard: u16,
        subject: &str,
        now: u64,
    ) -> Result<Option<Recorded>, StoreError> {
        let args = vec![
            now.to_string(),
            subject.to_owned(),
            "timeout".into(),
            "down".into(),
            "0".into(),
            String::new(),
            String::new(),
            String::new(),
            new_event_id(),
            new_id("inc"),
            rfc3339(now),
            "heartbeat_missed".into(),
            String::new(),
            self.checks_kept.to_string(),
            self.incidents_kept.to_string(),
        ];
        self.run_signal(self.signal_keys(shard, subject), args)
            .await
    }

    /// Creates a subject's state at status `new`, or renames it and applies a new window.
    pub async fn describe(&self, subject: Subject<'_>) -> Result<(), StoreError> {
        let keys = vec![
            self.keys.watch(subject.shard, subject.id),
            self.keys.due(subject.shard),
            self.keys.watch_counts(subject.shard),
        ];
        let args = vec![
            subject.id.to_owned(),
            subject.tenant.to_owned(),
            subject.kind.as_str().to_owned(),
            subject.name.to_owned(),
            now_ms().to_string(),
            (subject.window.as_millis() as u64).to_string(),
        ];
        let _: i64 = DESCRIBE
            .evalsha_with_reload(&self.redis, keys, args)
            .await?;
        Ok(())
    }

    /// Removes a subject's state and history.
    pub async fn forget(&self, shard: u16, subject: &str) -> Result<(), StoreError> {
        let keys = vec![
            self.keys.watch(shard, subject),
            self.keys.due(shard),
            self.keys.checks(shard, subject),
            self.keys.incidents(shard, subject),
            self.keys.watch_counts(shard),
        ];
        let _: i64 = FORGET
            .evalsha_with_reload(&self.redis, keys, vec![subject.to_owned()])
            .await?;
        Ok(())
    }

    /// The live state as JSON members: status, since, last heartbeat and signal, last run
    /// duration, open incident, next deadline.
    pub async fn view(&self, shard: u16, subject: &str) -> Result<serde_json::Value, StoreError> {
        let (h, due): (HashMap<String, String>, Option<f64>) = {
            let pipe = self.redis.pipeline();
            let _: () = pipe.hgetall(self.keys.watch(shard, subject)).await?;
            let _: () = pipe.zscore(self.keys.due(shard), subject).await?;
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
        let items: Vec<String> = self.redis.lrange(key, 0, limit - 1).await?;
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
        self.history(self.keys.incidents(shard, subject), limit)
            .await
    }

    /// Recent status records, newest first.
    pub async fn checks(
        &self,
        shard: u16,
        subject: &str,
        limit: i64,
    ) -> Result<Vec<serde_json::Value>, StoreError> {
        self.history(self.keys.checks(shard, subject), limit).await
    }

    /// Subjects per `(kind, status)` over `shards`.
    pub async fn counts(&self, shards: u16) -> Result<HashMap<String, i64>, StoreError> {
        let mut total: HashMap<String, i64> = HashMap::new();
        for shard in 0..shards {
            let h: HashMap<String, i64> = self.redis.hgetall(self.keys.watch_counts(shard)).await?;
            for (k, v) in h {
                *total.entry(k).or_default() += v;
            }
        }
        Ok(total)
    }
}
