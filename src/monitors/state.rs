//! Live state of watched subjects (monitors, and sources with a silence watch), kept in the
//! tenant's shard slot so that one script (`signal`) records a signal, moves the deadline,
//! records the check and the incident, and appends the alert event to the shard's stream: one
//! round trip, atomic, and cluster-safe (every key shares the `{q<n>}` tag).
//!
//! Deadlines live in one sorted set per shard; the checker reads only what is overdue, and the
//! timeout runs through the same script, which first claims the subject by removing it from
//! the set, so with several checkers each overdue subject is handled once.
//!
//! Concurrent signals of a shard ride in one script call ([`crate::batch`]): one command, one
//! write and one reply carry many heartbeats under load, and one when idle.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::time::Duration;

use fred::prelude::*;
use serde::{Deserialize, Serialize};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::batch::{BatchError, Batcher, Flush, Limits};
use crate::model::time::{Clock, rfc3339};
use crate::model::{EventId, IncidentId, Status, TenantId, WatchKind};
use crate::queue::entry::LAYOUT;
use crate::redis::keyspace::Keyspace;
use crate::redis::scripts::{DESCRIBE, FORGET, SIGNAL, ScriptError};
use crate::store::{Monitor, Source};

/// Why live state could not be read or changed.
#[derive(Debug, Clone, thiserror::Error)]
pub enum WatchError {
    #[error("redis: {0}")]
    Redis(#[from] fred::error::Error),
    #[error("redis did not answer in time")]
    Timeout,
    #[error("{0}")]
    Reply(String),
    #[error("too many signals are waiting for Redis")]
    Overloaded,
    #[error("the signal batcher has stopped")]
    Stopped,
}

impl From<ScriptError> for WatchError {
    fn from(e: ScriptError) -> WatchError {
        match e {
            ScriptError::Redis(e) => WatchError::Redis(e),
            other @ ScriptError::Answer { .. } => WatchError::Reply(other.to_string()),
        }
    }
}

impl From<BatchError> for WatchError {
    fn from(e: BatchError) -> WatchError {
        match e {
            BatchError::Overloaded | BatchError::Expired => WatchError::Overloaded,
            BatchError::Stopped => WatchError::Stopped,
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
    Exit(u8),
    /// A status push; `extra` holds its message and metadata as JSON object members.
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
    pub kind: WatchKind,
    pub id: &'a str,
    pub tenant: &'a TenantId,
    pub name: &'a str,
    pub shard: u16,
    /// Interval plus grace.
    pub window: Duration,
}

impl<'a> Subject<'a> {
    /// A monitor of `shard` (its tenant's).
    pub fn monitor(m: &'a Monitor, shard: u16) -> Subject<'a> {
        Subject {
            kind: WatchKind::Monitor,
            id: m.id.as_str(),
            tenant: &m.tenant,
            name: m.name.as_str(),
            shard,
            window: m.window().duration(),
        }
    }

    /// A source of `shard`, if it has a silence watch.
    pub fn source(s: &'a Source, shard: u16) -> Option<Subject<'a>> {
        s.watch.map(|w| Subject {
            kind: WatchKind::Source,
            id: s.id.as_str(),
            tenant: &s.tenant,
            name: s.name.as_str(),
            shard,
            window: w.window().duration(),
        })
    }
}

/// A subject's status, as its live state holds it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum LiveStatus {
    /// Created, no signal yet.
    New,
    Up,
    Down,
    Degraded,
}

impl LiveStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            LiveStatus::New => "new",
            LiveStatus::Up => "up",
            LiveStatus::Down => "down",
            LiveStatus::Degraded => "degraded",
        }
    }
}

/// What a signal did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Recorded {
    /// The status after the signal.
    pub status: LiveStatus,
    /// Last heartbeat (ms), if any.
    pub last_heartbeat_ms: Option<u64>,
    /// Whether the status changed.
    pub changed: bool,
    /// The type of the alert appended to the stream, if any.
    pub alert: Option<String>,
    pub duration_ms: Option<u64>,
}

/// One subject's answer of `signal`.
#[derive(Debug, Deserialize)]
struct Answer {
    #[serde(default)]
    skip: bool,
    #[serde(default)]
    gone: bool,
    status: Option<LiveStatus>,
    last_heartbeat: Option<u64>,
    #[serde(default)]
    changed: bool,
    duration_ms: Option<u64>,
    alert: Option<String>,
    kind: Option<String>,
    /// Redis refused what the subject's keys hold (nothing of the signal was applied past it).
    failed: Option<String>,
}

impl Answer {
    /// `None` for a subject skipped (no longer overdue) or gone (no state).
    fn recorded(self) -> Result<Option<Recorded>, WatchError> {
        if let Some(why) = self.failed {
            return Err(WatchError::Reply(format!(
                "Redis refused the subject's stored state: {why}"
            )));
        }
        if self.skip || self.gone {
            return Ok(None);
        }
        let status = self
            .status
            .ok_or_else(|| WatchError::Reply("signal answered no status".into()))?;
        if self.changed {
            crate::telemetry::watch_transition(self.kind.as_deref().unwrap_or(""), status.as_str());
        }
        Ok(Some(Recorded {
            status,
            last_heartbeat_ms: self.last_heartbeat,
            changed: self.changed,
            alert: self.alert,
            duration_ms: self.duration_ms,
        }))
    }
}

/// `signal`'s answer.
#[derive(Debug, Deserialize)]
struct Answers {
    #[serde(deserialize_with = "crate::redis::scripts::list")]
    subjects: Vec<Answer>,
}

/// Values per subject in `signal`'s ARGV.
const ARGS_PER_SIGNAL: usize = 6;

/// One subject's part of a `signal` call: its keys and arguments.
#[derive(Debug)]
struct Call {
    shard: u16,
    subject_keys: [String; 3],
    args: [String; ARGS_PER_SIGNAL],
}

/// An incident of a subject, as its history holds it.
#[derive(Debug, Clone, Serialize, Deserialize, utoipa::ToSchema)]
pub struct Incident {
    pub id: IncidentId,
    /// The worst status while it lasted (`down` or `degraded`).
    pub status: LiveStatus,
    pub reason: String,
    /// RFC 3339.
    pub opened_at: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub resolved_at: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub resolved_reason: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub duration_ms: Option<u64>,
}

/// A status record of a subject (every status push and every change).
#[derive(Debug, Clone, Serialize, Deserialize, utoipa::ToSchema)]
pub struct Check {
    /// RFC 3339.
    pub at: String,
    /// What was received: `heartbeat`, `fail`, `exit`, `status`, `event`, `timeout`.
    pub signal: String,
    pub status: LiveStatus,
    pub previous_status: LiveStatus,
    pub reason: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Option<Object>)]
    pub metadata: Option<serde_json::Map<String, serde_json::Value>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub exit_code: Option<u8>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub duration_ms: Option<u64>,
}

/// A subject's live state.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LiveState {
    pub status: LiveStatus,
    pub status_since_ms: Option<u64>,
    pub last_heartbeat_ms: Option<u64>,
    pub last_signal_ms: Option<u64>,
    pub last_duration_ms: Option<u64>,
    pub running_since_ms: Option<u64>,
    pub open_incident: Option<IncidentId>,
    pub next_deadline_ms: Option<u64>,
}

/// Most signals per batch, batches in flight, and signals waiting.
const MAX_BATCH: usize = 128;
const MAX_INFLIGHT: usize = 4;
const CAPACITY: usize = 16 * 1024;

/// Live state of watched subjects. Cheap to clone.
#[derive(Debug, Clone)]
pub struct Watches {
    inner: Arc<WatchesInner>,
    /// Batches concurrent signals into one script call per shard.
    batcher: Batcher<Arc<WatchesInner>>,
}

#[derive(Debug)]
struct WatchesInner {
    redis: Client,
    keys: Keyspace,
    checks_kept: u32,
    incidents_kept: u32,
    /// Whether a log store takes the history (the script then appends it to the shard's
    /// history stream).
    logged: bool,
    clock: Clock,
}

/// The settings of [`Watches`].
#[derive(Debug, Clone)]
pub struct WatchSettings {
    /// Status records kept per subject.
    pub checks_kept: u32,
    /// Incidents kept per subject.
    pub incidents_kept: u32,
    /// Longest a signal waits for its batch (the Redis command timeout).
    pub deadline: Duration,
    /// Whether a log store takes the history.
    pub logged: bool,
    /// The time deadlines are judged by (Redis's `TIME`, moved as far as this clock is).
    pub clock: Clock,
}

impl Flush for Arc<WatchesInner> {
    type Item = Call;
    type Output = Result<Option<Recorded>, WatchError>;

    /// One script call per shard, given up at `deadline` (the oldest signal's), so every
    /// caller hears back within the command timeout.
    async fn flush(&self, calls: Vec<Call>, deadline: tokio::time::Instant) -> Vec<Self::Output> {
        let n = calls.len();
        let mut by_shard: BTreeMap<u16, Vec<(usize, Call)>> = BTreeMap::new();
        for (i, call) in calls.into_iter().enumerate() {
            by_shard.entry(call.shard).or_default().push((i, call));
        }
        let results = futures_util::future::join_all(by_shard.into_iter().map(|(shard, calls)| {
            let (at, calls): (Vec<usize>, Vec<Call>) = calls.into_iter().unzip();
            async move {
                let ran =
                    tokio::time::timeout_at(deadline, self.run_protected(shard, &calls, false))
                        .await;
                (at, ran.unwrap_or(Err(WatchError::Timeout)))
            }
        }))
        .await;
        let mut out: Vec<Self::Output> = (0..n).map(|_| Err(WatchError::Stopped)).collect();
        for (at, result) in results {
            match result {
                Ok(answers) => {
                    for (i, a) in at.into_iter().zip(answers) {
                        out[i] = a.recorded();
                    }
                }
                Err(e) => {
                    for i in at {
                        out[i] = Err(e.clone());
                    }
                }
            }
        }
        out
    }
}

impl WatchesInner {
    /// `calls` (all of `shard`) in one `signal` call. A subject whose keys Redis refuses fails
    /// alone in the script and answers an error; with `quarantine` (the checker) it is also
    /// set aside, off the deadline set into the shard's quarantine, when the refusal is its
    /// own: another subject of the call went through, or one of its own keys is of another
    /// type. A key the whole shard shares going bad is no subject's fault: those are retried
    /// by the next pass, loudly.
    async fn run_protected(
        &self,
        shard: u16,
        calls: &[Call],
        quarantine: bool,
    ) -> Result<Vec<Answer>, WatchError> {
        let refs: Vec<&Call> = calls.iter().collect();
        let answers = self.run(shard, &refs).await?;
        if !quarantine {
            return Ok(answers);
        }
        let some_ok = answers.iter().any(|a| a.failed.is_none());
        for (a, call) in answers.iter().zip(calls) {
            let Some(why) = &a.failed else { continue };
            let subject = call.args[0].as_str();
            if some_ok || self.foreign_keys(call).await? {
                self.set_aside(shard, call, why).await?;
            } else {
                tracing::error!(shard, subject, reason = %why, "Redis refuses to time out this shard's monitors and no key of the monitor's own is at fault (a key the shard shares may be of another type); retrying next pass");
            }
        }
        Ok(answers)
    }

    /// Whether one of the subject's own keys is of another type than it should be.
    async fn foreign_keys(&self, call: &Call) -> Result<bool, WatchError> {
        let [watch, checks, incidents] = &call.subject_keys;
        for (key, want) in [(watch, "hash"), (checks, "list"), (incidents, "list")] {
            let kind: String = self.redis.r#type(key).await?;
            if kind != want && kind != "none" {
                return Ok(true);
            }
        }
        Ok(false)
    }

    /// Takes a subject off the deadline set into the shard's quarantine (the quarantine first:
    /// a failure between the two leaves it overdue, to be tried again).
    async fn set_aside(&self, shard: u16, call: &Call, why: &str) -> Result<(), WatchError> {
        let subject = call.args[0].as_str();
        crate::store::quarantine::put(
            &self.redis,
            &self.keys,
            shard,
            "checker",
            subject,
            why,
            vec![(
                bytes::Bytes::from_static(b"watch_key"),
                bytes::Bytes::from(call.subject_keys[0].clone()),
            )],
        )
        .await?;
        let _: i64 = self.redis.zrem(self.keys.due(shard), subject).await?;
        Ok(())
    }
}

impl Watches {
    /// Starts the signal batcher on `tracker`; it stops when `stop` fires, after writing what
    /// it holds.
    pub fn new(
        redis: Client,
        keys: Keyspace,
        settings: WatchSettings,
        tracker: &TaskTracker,
        stop: CancellationToken,
    ) -> Watches {
        let inner = Arc::new(WatchesInner {
            redis,
            keys,
            checks_kept: settings.checks_kept.max(1),
            incidents_kept: settings.incidents_kept.max(1),
            logged: settings.logged,
            clock: settings.clock,
        });
        let limits = Limits {
            max_items: MAX_BATCH,
            max_bytes: usize::MAX,
            max_inflight: MAX_INFLIGHT,
            capacity: CAPACITY,
            deadline: settings.deadline,
        };
        let batcher = Batcher::start(inner.clone(), limits, tracker, stop);
        Watches { inner, batcher }
    }

    /// One subject's part of a `signal` call. A timeout passes no kind, window, tenant or
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
            EventId::generate().as_str(),
            IncidentId::generate().as_str(),
            &rfc3339(now),
            reason,
            &extra,
        ]
        .join("\n");
        Call {
            shard,
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
    ) -> Result<Option<Recorded>, WatchError> {
        let call = self.call(
            subject.shard,
            subject.id,
            subject.kind.as_str(),
            subject.window,
            subject.tenant.as_str(),
            subject.name,
            signal.parts(),
            self.inner.clock.now_ms(),
        );
        self.batcher.submit(call).await?
    }

    /// Records `signal` for a subject that should exist: when its state is missing, `exists`
    /// (the store's word) decides between a subject deleted meanwhile (`None`) and one whose
    /// creation stopped between its definition and its state (made now, then signalled).
    pub async fn signal_existing<E>(
        &self,
        subject: Subject<'_>,
        signal: &Signal,
        exists: impl Future<Output = Result<bool, E>>,
    ) -> Result<Option<Recorded>, SignalError<E>> {
        if let Some(r) = self.signal(subject, signal).await? {
            return Ok(Some(r));
        }
        if !exists.await.map_err(SignalError::Store)? {
            return Ok(None);
        }
        self.describe(subject).await?;
        Ok(self.signal(subject, signal).await?)
    }

    /// Redis's clock (ms), which the signal script uses for deadlines, moved as far as this
    /// process's clock is.
    pub async fn clock(&self) -> Result<u64, WatchError> {
        let t: Vec<String> = self
            .inner
            .redis
            .custom(fred::cmd!("TIME"), Vec::<String>::new())
            .await?;
        let part = |i: usize| t.get(i).and_then(|v| v.parse::<u64>().ok());
        match (part(0), part(1)) {
            (Some(s), Some(us)) => Ok(self.inner.clock.shift(s * 1000 + us / 1000)),
            _ => Err(WatchError::Reply("TIME answered something else".into())),
        }
    }

    /// This process's clock, for when Redis's cannot be read.
    pub fn local_clock(&self) -> &Clock {
        &self.inner.clock
    }

    /// Subjects of `shard` whose deadline is before `now`, at most `limit`.
    pub async fn overdue(
        &self,
        shard: u16,
        now: u64,
        limit: i64,
    ) -> Result<Vec<String>, WatchError> {
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
    ) -> Result<Vec<Option<Recorded>>, WatchError> {
        let calls = subjects
            .iter()
            .map(|id| self.call(shard, id, "", Duration::ZERO, "", "", TIMEOUT, now))
            .collect::<Vec<_>>();
        // A subject whose state the script cannot process is set aside, not retried forever
        // (it would hold up every subject behind it on the page); it answers `None` here.
        Ok(self
            .inner
            .run_protected(shard, &calls, true)
            .await?
            .into_iter()
            .map(|a| a.recorded().ok().flatten())
            .collect())
    }

    /// Creates a subject's state at status `new`, or renames it and applies a new window.
    pub async fn describe(&self, subject: Subject<'_>) -> Result<(), WatchError> {
        #[derive(Deserialize)]
        struct Described {
            #[allow(dead_code)]
            created: bool,
        }
        let keys = vec![
            self.inner.keys.watch(subject.shard, subject.id),
            self.inner.keys.due(subject.shard),
            self.inner.keys.watch_counts(subject.shard),
        ];
        let args = vec![
            subject.id.to_owned(),
            subject.tenant.to_string(),
            subject.kind.as_str().to_owned(),
            subject.name.to_owned(),
            (subject.window.as_millis() as u64).to_string(),
            self.inner.clock.ahead_ms().to_string(),
        ];
        let _: Described = DESCRIBE.run(&self.inner.redis, keys, args).await?;
        Ok(())
    }

    /// Removes a subject's state and history.
    pub async fn forget(&self, shard: u16, subject: &str) -> Result<(), WatchError> {
        #[derive(Deserialize)]
        struct Forgotten {
            #[allow(dead_code)]
            deleted: u64,
        }
        let keys = vec![
            self.inner.keys.watch(shard, subject),
            self.inner.keys.due(shard),
            self.inner.keys.checks(shard, subject),
            self.inner.keys.incidents(shard, subject),
            self.inner.keys.watch_counts(shard),
            self.inner.keys.unwell(shard),
        ];
        let _: Forgotten = FORGET
            .run(&self.inner.redis, keys, vec![subject.to_owned()])
            .await?;
        Ok(())
    }

    /// A subject's live state.
    pub async fn live(&self, shard: u16, subject: &str) -> Result<LiveState, WatchError> {
        let (h, due): (HashMap<String, String>, Option<f64>) = {
            let pipe = self.inner.redis.pipeline();
            let _: () = pipe.hgetall(self.inner.keys.watch(shard, subject)).await?;
            let _: () = pipe.zscore(self.inner.keys.due(shard), subject).await?;
            pipe.all().await?
        };
        let ms = |field: &str| h.get(field).and_then(|v| v.parse::<u64>().ok());
        let status = match h.get("status").map(String::as_str) {
            Some("up") => LiveStatus::Up,
            Some("down") => LiveStatus::Down,
            Some("degraded") => LiveStatus::Degraded,
            _ => LiveStatus::New,
        };
        Ok(LiveState {
            status,
            status_since_ms: ms("since"),
            last_heartbeat_ms: ms("last_heartbeat"),
            last_signal_ms: ms("last_signal"),
            last_duration_ms: ms("last_duration_ms"),
            running_since_ms: ms("started_at"),
            open_incident: h.get("incident").and_then(|i| IncidentId::parse(i).ok()),
            next_deadline_ms: due.filter(|d| d.is_finite() && *d >= 0.0).map(|d| d as u64),
        })
    }

    async fn history<T: serde::de::DeserializeOwned>(
        &self,
        key: String,
        limit: i64,
    ) -> Result<Vec<T>, WatchError> {
        // A negative limit: all of it.
        let end = if limit < 0 { -1 } else { limit - 1 };
        let items: Vec<String> = self.inner.redis.lrange(key, 0, end).await?;
        // A record this version cannot read is left out rather than failing the whole list.
        Ok(items
            .iter()
            .filter_map(|i| serde_json::from_str::<T>(i).ok())
            .collect())
    }

    /// Incident history, newest first.
    pub async fn incidents(
        &self,
        shard: u16,
        subject: &str,
        limit: i64,
    ) -> Result<Vec<Incident>, WatchError> {
        self.history(self.inner.keys.incidents(shard, subject), limit)
            .await
    }

    /// Recent status records, newest first.
    pub async fn checks(
        &self,
        shard: u16,
        subject: &str,
        limit: i64,
    ) -> Result<Vec<Check>, WatchError> {
        self.history(self.inner.keys.checks(shard, subject), limit)
            .await
    }

    /// The command client and key layout, for the other readers of live state.
    pub(super) fn redis_and_keys(&self) -> (&Client, &Keyspace) {
        (&self.inner.redis, &self.inner.keys)
    }

    /// Subjects per `(kind, status)` over `shards`.
    pub async fn counts(&self, shards: u16) -> Result<HashMap<String, i64>, WatchError> {
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

/// Why [`Watches::signal_existing`] failed: the live state, or the store's word on the
/// subject.
#[derive(Debug, thiserror::Error)]
pub enum SignalError<E> {
    #[error(transparent)]
    Watch(#[from] WatchError),
    #[error(transparent)]
    Store(E),
}

impl WatchesInner {
    /// One `signal` call for `calls` (all of `shard`).
    async fn run(&self, shard: u16, calls: &[&Call]) -> Result<Vec<Answer>, WatchError> {
        let n = calls.len();
        let mut keys = Vec::with_capacity(5 + n * 3);
        keys.extend([
            self.keys.due(shard),
            self.keys.stream(shard),
            self.keys.watch_counts(shard),
            self.keys.history(shard),
            self.keys.unwell(shard),
        ]);
        let mut args = Vec::with_capacity(5 + n * ARGS_PER_SIGNAL);
        args.extend([
            LAYOUT.clone(),
            self.checks_kept.to_string(),
            self.incidents_kept.to_string(),
            if self.logged { "1" } else { "" }.to_owned(),
            self.clock.ahead_ms().to_string(),
        ]);
        for call in calls {
            keys.extend(call.subject_keys.iter().cloned());
            args.extend(call.args.iter().cloned());
        }
        let answers: Answers = SIGNAL.run(&self.redis, keys, args).await?;
        if answers.subjects.len() != n {
            return Err(WatchError::Reply(format!(
                "signal answered {} subjects for {n}",
                answers.subjects.len()
            )));
        }
        Ok(answers.subjects)
    }
}
