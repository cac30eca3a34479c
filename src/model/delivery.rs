//! What a delivery record holds, and its compact text: each delivery's state, each attempt
//! and its headers, an event's record and its status summed over its deliveries, and the
//! filter of event listings. Nothing here touches a store: the Redis store
//! (`store::deliveries`) and the log store both read and write these.

use bytes::Bytes;
use serde::{Deserialize, Serialize};

use super::{DeadLetterId, EventId, EventType, TargetId, TenantId};

/// An event's delivery record: what it was, and where each of its deliveries stands.
#[derive(Debug, Clone)]
pub struct EventRecord {
    pub id: EventId,
    pub event_type: Option<String>,
    pub content_type: Option<String>,
    pub received_at_ms: u64,
    /// Each target it was expanded to, with its state (`None`: no outcome yet).
    pub deliveries: Vec<(TargetId, Option<DeliveryState>)>,
    /// The recent attempts, oldest first.
    pub attempts: Vec<AttemptRecord>,
}

/// Where one delivery stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum State {
    /// Expanded, no outcome yet.
    Pending,
    Succeeded,
    /// Failed; another attempt is scheduled.
    Retrying,
    /// Parked in the error queue.
    DeadLettered,
    /// Fire-and-forget: sent, response not recorded.
    Sent,
    /// The target's transformation asked for nothing to be sent.
    Cancelled,
}

impl State {
    /// The state's name in the APIs and the log store.
    pub fn as_str(self) -> &'static str {
        match self {
            State::Pending => "pending",
            State::Succeeded => "succeeded",
            State::Retrying => "retrying",
            State::DeadLettered => "dead_lettered",
            State::Sent => "sent",
            State::Cancelled => "cancelled",
        }
    }

    pub fn parse(text: &str) -> Option<State> {
        Some(match text {
            "pending" => State::Pending,
            "succeeded" => State::Succeeded,
            "retrying" => State::Retrying,
            "dead_lettered" => State::DeadLettered,
            "sent" => State::Sent,
            "cancelled" => State::Cancelled,
            _ => return None,
        })
    }

    /// The one-letter kind of the compact encoding (shared with `delivery.lua`).
    fn letter(self) -> char {
        match self {
            State::Pending => 'p',
            State::Retrying => 'r',
            State::Succeeded => 's',
            State::DeadLettered => 'd',
            State::Sent => 'n',
            State::Cancelled => 'c',
        }
    }

    fn from_letter(c: char) -> Option<State> {
        Some(match c {
            'p' => State::Pending,
            'r' => State::Retrying,
            's' => State::Succeeded,
            'd' => State::DeadLettered,
            'n' => State::Sent,
            'c' => State::Cancelled,
            _ => return None,
        })
    }

    /// Whether nothing more will happen to the delivery (unless it is replayed).
    pub fn is_final(self) -> bool {
        matches!(
            self,
            State::Succeeded | State::DeadLettered | State::Sent | State::Cancelled
        )
    }
}

/// Where an event stands as a whole, over its deliveries.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum EventStatus {
    /// A delivery is pending or waiting for a retry.
    InProgress,
    /// Every delivery succeeded (or was sent, fire-and-forget).
    Succeeded,
    /// Every delivery is finished and at least one ended in the error queue.
    Failed,
    /// No target wanted the event.
    NoTargets,
}

impl EventStatus {
    /// The status of an event whose deliveries stand at `states` (`None`: no outcome yet).
    pub fn of(states: impl Iterator<Item = Option<State>>) -> EventStatus {
        let mut any = false;
        let mut failed = false;
        for s in states {
            any = true;
            match s {
                None | Some(State::Pending | State::Retrying) => return EventStatus::InProgress,
                Some(State::DeadLettered) => failed = true,
                Some(State::Succeeded | State::Sent | State::Cancelled) => {}
            }
        }
        match (any, failed) {
            (false, _) => EventStatus::NoTargets,
            (true, true) => EventStatus::Failed,
            (true, false) => EventStatus::Succeeded,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            EventStatus::InProgress => "in_progress",
            EventStatus::Succeeded => "succeeded",
            EventStatus::Failed => "failed",
            EventStatus::NoTargets => "no_targets",
        }
    }

    pub fn parse(text: &str) -> Option<EventStatus> {
        Some(match text {
            "in_progress" => EventStatus::InProgress,
            "succeeded" => EventStatus::Succeeded,
            "failed" => EventStatus::Failed,
            "no_targets" => EventStatus::NoTargets,
            _ => return None,
        })
    }

    /// The delivery states that give one delivery this status (for a filter by target).
    pub fn delivery_states(self) -> &'static [State] {
        match self {
            EventStatus::InProgress => &[State::Pending, State::Retrying],
            EventStatus::Succeeded => &[State::Succeeded, State::Sent, State::Cancelled],
            EventStatus::Failed => &[State::DeadLettered],
            EventStatus::NoTargets => &[],
        }
    }

    /// Whether one delivery in `state` gives this status.
    pub fn matches_delivery(self, state: State) -> bool {
        self.delivery_states().contains(&state)
    }
}

/// Which events a listing shows.
#[derive(Debug, Clone, Default)]
pub struct EventFilter {
    /// An event type, `prefix.*` or `*`.
    pub event_type: Option<crate::model::EventPattern>,
    /// The event's status or, with `target_id`, that delivery's.
    pub status: Option<EventStatus>,
    /// Only events expanded to this target.
    pub target_id: Option<TargetId>,
    /// Received at or after (ms).
    pub since_ms: Option<u64>,
    /// Received at or before (ms).
    pub until_ms: Option<u64>,
    /// Only events older than this one (the cursor of the previous page).
    pub before: Option<EventId>,
}

impl EventFilter {
    /// Whether an event passes the filter.
    pub fn admits(&self, e: &EventSummary) -> bool {
        if self
            .event_type
            .as_ref()
            .is_some_and(|p| !p.matches(&e.event_type))
        {
            return false;
        }
        if self.since_ms.is_some_and(|s| e.received_at_ms < s)
            || self.until_ms.is_some_and(|u| e.received_at_ms > u)
            || self.before.as_ref().is_some_and(|b| e.id >= *b)
        {
            return false;
        }
        match (&self.target_id, self.status) {
            (Some(t), status) => e
                .deliveries
                .iter()
                .find(|(id, _, _)| id == t)
                .is_some_and(|(_, s, _)| status.is_none_or(|st| st.matches_delivery(*s))),
            (None, Some(status)) => e.status == status,
            (None, None) => true,
        }
    }
}

/// One event of a listing.
#[derive(Debug, Clone)]
pub struct EventSummary {
    pub id: EventId,
    pub event_type: String,
    pub content_type: Option<String>,
    pub received_at_ms: u64,
    pub status: EventStatus,
    /// Target, state and attempts of each delivery.
    pub deliveries: Vec<(TargetId, State, u32)>,
}

/// A finished event with everything the log store keeps of it.
#[derive(Debug, Clone)]
pub struct LoggedEvent {
    pub tenant: TenantId,
    pub id: EventId,
    pub received_at_ms: u64,
    pub event_type: String,
    pub content_type: Option<String>,
    /// Empty when only the stream entry holds it (see [`super::ship::ShipCandidate::entry`]).
    pub body: Bytes,
    pub deliveries: Vec<(TargetId, DeliveryState)>,
    pub attempts: Vec<AttemptRecord>,
}

impl LoggedEvent {
    /// Where the event stands as a whole.
    pub fn status(&self) -> EventStatus {
        EventStatus::of(self.deliveries.iter().map(|(_, s)| Some(s.state)))
    }
}

/// What replaying one delivery did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Replayed {
    /// Back on the schedule.
    Replayed,
    /// Not dead-lettered (succeeded, or still being tried): left alone.
    Skipped,
    /// The event's record is not in Redis.
    Missing,
}

/// The state of one (event, target) delivery, as stored.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct DeliveryState {
    pub state: State,
    pub attempts: u32,
    pub last_status: Option<u16>,
    pub last_error: Option<String>,
    pub next_retry_at_ms: Option<u64>,
    pub updated_at_ms: u64,
    /// Times the delivery was put back unsent because its target was saturated.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub deferrals: u32,
}

fn is_zero(n: &u32) -> bool {
    *n == 0
}

impl DeliveryState {
    /// A delivery with no outcome yet.
    pub fn pending() -> DeliveryState {
        DeliveryState {
            state: State::Pending,
            attempts: 0,
            last_status: None,
            last_error: None,
            next_retry_at_ms: None,
            updated_at_ms: 0,
            deferrals: 0,
        }
    }

    /// The compact text kept in Redis: `<kind>|<attempts>|<last status>|<next retry ms>|
    /// <updated ms>|<deferrals>|<last error>`. Short enough that an event's record stays a
    /// listpack (every value under 64 bytes) unless an error message is long.
    pub fn encode(&self) -> String {
        fn opt<T: std::fmt::Display>(v: Option<T>) -> String {
            v.map(|v| v.to_string()).unwrap_or_default()
        }
        format!(
            "{}|{}|{}|{}|{}|{}|{}",
            self.state.letter(),
            self.attempts,
            opt(self.last_status),
            opt(self.next_retry_at_ms),
            self.updated_at_ms,
            self.deferrals,
            self.last_error.as_deref().unwrap_or_default()
        )
    }

    /// Reads the compact text, the bare kind a new delivery starts with (`p`), or the JSON of
    /// earlier versions.
    pub fn decode(text: &str) -> Option<DeliveryState> {
        if text.starts_with('{') {
            return serde_json::from_str(text).ok();
        }
        let mut parts = text.splitn(7, '|');
        let mut chars = parts.next()?.chars();
        let state = State::from_letter(chars.next()?)?;
        if chars.next().is_some() {
            return None;
        }
        let mut out = DeliveryState {
            state,
            ..DeliveryState::pending()
        };
        let Some(attempts) = parts.next() else {
            return Some(out); // the bare kind
        };
        out.attempts = attempts.parse().ok()?;
        let num = |p: Option<&str>| -> Option<Option<u64>> {
            match p? {
                "" => Some(None),
                t => t.parse().ok().map(Some),
            }
        };
        out.last_status = num(parts.next())?.and_then(|s| u16::try_from(s).ok());
        out.next_retry_at_ms = num(parts.next())?;
        out.updated_at_ms = num(parts.next())?.unwrap_or(0);
        out.deferrals = num(parts.next())?.unwrap_or(0).min(u64::from(u32::MAX)) as u32;
        out.last_error = parts.next().filter(|e| !e.is_empty()).map(str::to_owned);
        Some(out)
    }
}

/// One attempt, kept in the event's bounded attempt log.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct AttemptRecord {
    pub target_id: TargetId,
    pub attempt: u32,
    pub at_ms: u64,
    pub status: Option<u16>,
    pub latency_ms: u64,
    pub error: Option<String>,
    /// The first bytes of the response body (lossy UTF-8).
    pub response: Option<String>,
    /// The request's and the response's headers, when they were kept
    /// (`dispatch.attempt_headers`).
    #[serde(default)]
    pub headers: Option<AttemptHeaders>,
    /// The version of the target's transformation that shaped the request, when one did.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub transform_version: Option<u32>,
    /// The batch the event was sent in, for a batched target.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub batch_id: Option<String>,
}

/// The line of an attempt's header text that notes its transformation's version. Readers of
/// earlier versions skip lines that are neither `>` nor `<`.
const TRANSFORM_NOTE: &str = "#transform: ";
/// The line of an attempt's header text that names the batch it was part of.
const BATCH_NOTE: &str = "#batch: ";

/// The headers of one attempt: what was sent (secrets redacted) and what came back, each
/// `(name, value)` in order, names in lower case, values as visible text.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct AttemptHeaders {
    pub request: Vec<(String, String)>,
    pub response: Vec<(String, String)>,
}

impl AttemptHeaders {
    /// One line per header, `>name: value` sent and `<name: value` received: a header name
    /// or value holds no line break (the client refuses to send one, and what is received is
    /// made visible text with line breaks replaced).
    pub fn encode(&self) -> String {
        let mut out = String::new();
        for (mark, list) in [('>', &self.request), ('<', &self.response)] {
            for (name, value) in list {
                if !out.is_empty() {
                    out.push('\n');
                }
                out.push(mark);
                out.push_str(name);
                out.push_str(": ");
                out.push_str(value);
            }
        }
        out
    }

    /// Reads [`AttemptHeaders::encode`]'s text; a line it cannot read is left out.
    pub fn decode(text: &str) -> AttemptHeaders {
        let mut h = AttemptHeaders::default();
        for line in text.split('\n') {
            let (list, rest) = match line.split_at_checked(1) {
                Some((">", rest)) => (&mut h.request, rest),
                Some(("<", rest)) => (&mut h.response, rest),
                _ => continue,
            };
            if let Some((name, value)) = rest.split_once(": ") {
                list.push((name.to_owned(), value.to_owned()));
            }
        }
        h
    }
}

impl AttemptRecord {
    /// The compact text kept in the event's record: `<target>|<attempt>|<at ms>|<status>|
    /// <latency ms>|<error length>[,<headers length>]|<error><headers><response>` (a
    /// successful attempt without headers stays under the 64 bytes that keep the record a
    /// listpack). Without headers it is the format of earlier versions.
    pub fn encode(&self) -> String {
        let error = self.error.as_deref().unwrap_or_default();
        let headers = self.headers_text().unwrap_or_default();
        let error_len = if self.error.is_some() {
            error.len().to_string()
        } else {
            String::new()
        };
        let lengths = if self.headers.is_some()
            || self.transform_version.is_some()
            || self.batch_id.is_some()
        {
            format!("{error_len},{}", headers.len())
        } else {
            error_len
        };
        format!(
            "{}|{}|{}|{}|{}|{}|{}{}{}",
            self.target_id,
            self.attempt,
            self.at_ms,
            self.status.map(|s| s.to_string()).unwrap_or_default(),
            self.latency_ms,
            lengths,
            error,
            headers,
            self.response.as_deref().unwrap_or_default()
        )
    }

    /// Reads the compact text, or the JSON of earlier versions.
    pub fn decode(text: &str) -> Option<AttemptRecord> {
        if text.starts_with('{') {
            return serde_json::from_str(text).ok();
        }
        let mut p = text.splitn(7, '|');
        let target_id = TargetId::parse(p.next()?).ok()?;
        let attempt = p.next()?.parse().ok()?;
        let at_ms = p.next()?.parse().ok()?;
        let status = match p.next()? {
            "" => None,
            s => Some(s.parse().ok()?),
        };
        let latency_ms = p.next()?.parse().ok()?;
        let lengths = p.next()?;
        let rest = p.next()?;
        let (error_len, headers_len) = match lengths.split_once(',') {
            Some((e, h)) => (e, Some(h.parse::<usize>().ok()?)),
            None => (lengths, None),
        };
        let (error, rest) = match error_len {
            "" => (None, rest),
            n => {
                let n: usize = n.parse().ok()?;
                let (e, r) = (rest.get(..n)?, rest.get(n..)?);
                (Some(e.to_owned()), r)
            }
        };
        let (headers, notes, response) = match headers_len {
            None => (None, Notes::default(), rest),
            Some(n) => {
                let (h, notes) = AttemptRecord::read_headers_text(rest.get(..n)?);
                (h, notes, rest.get(n..)?)
            }
        };
        Some(AttemptRecord {
            target_id,
            attempt,
            at_ms,
            status,
            latency_ms,
            error,
            response: (!response.is_empty()).then(|| response.to_owned()),
            headers,
            transform_version: notes.transform_version,
            batch_id: notes.batch_id,
        })
    }

    /// The attempt's header text, as the log store keeps it too: its headers, then its notes
    /// (the transformation's version, the batch); `None` when it has none of them.
    pub fn headers_text(&self) -> Option<String> {
        let mut text = self.headers.as_ref().map(AttemptHeaders::encode);
        let notes = [
            (
                TRANSFORM_NOTE,
                self.transform_version.map(|v| v.to_string()),
            ),
            (BATCH_NOTE, self.batch_id.clone()),
        ];
        for (note, value) in notes {
            let Some(value) = value else { continue };
            let t = text.get_or_insert_with(String::new);
            if !t.is_empty() {
                t.push('\n');
            }
            t.push_str(note);
            t.push_str(&value);
        }
        text
    }

    /// Reads a header text back: the headers (`None` when it holds only notes) and the notes.
    pub fn read_headers_text(text: &str) -> (Option<AttemptHeaders>, Notes) {
        let note = |prefix: &str| text.split('\n').find_map(|l| l.strip_prefix(prefix));
        let notes = Notes {
            transform_version: note(TRANSFORM_NOTE).and_then(|v| v.parse().ok()),
            batch_id: note(BATCH_NOTE).map(str::to_owned),
        };
        let has_headers = text
            .split('\n')
            .any(|l| l.starts_with('>') || l.starts_with('<'));
        let only_notes = notes.transform_version.is_some() || notes.batch_id.is_some();
        let headers = (has_headers || !only_notes).then(|| AttemptHeaders::decode(text));
        (headers, notes)
    }
}

/// What an attempt's header text notes besides the headers.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Notes {
    pub transform_version: Option<u32>,
    pub batch_id: Option<String>,
}

/// An error queue entry.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct DeadLetter {
    pub id: DeadLetterId,
    pub event_id: EventId,
    pub target_id: TargetId,
    pub event_type: EventType,
    pub attempts: u32,
    pub last_status: Option<u16>,
    pub last_error: Option<String>,
    pub failed_at_ms: u64,
}

/// What a recorded outcome does to the schedule.
#[derive(Debug, Clone)]
pub enum Next {
    /// Delivered: done.
    Done,
    /// Try again at this time (ms), from the shared schedule.
    RetryAt(u64),
    /// Try again at this time (ms), held by this process: an ordered target's head, which
    /// must block the deliveries behind it rather than go to the schedule.
    HeldUntil(u64),
    /// Park in the error queue.
    DeadLetter(DeadLetter),
    /// Give up without a trace in the error queue: the target is gone.
    Dropped,
}

/// What recording a batch of outcomes did.
#[derive(Debug, Default)]
pub struct Recorded {
    /// Outcomes Redis refused (their position in the batch, and why): nothing of them is
    /// recorded, nor counted.
    pub failed: Vec<(usize, String)>,
    /// Counter and series keys Redis refused: those counts of the call are lost.
    pub counters_failed: Vec<String>,
    /// The targets of the call whose breaker is not closed, moved, or that are paused or
    /// due to be disabled.
    pub gates: Vec<crate::model::target_health::GateReport>,
    /// The time (ms) the call recorded at: what it says of the breakers was true then.
    pub at_ms: u64,
}

/// The outcome of one delivery, to record.
#[derive(Debug, Clone)]
pub struct Outcome {
    pub shard: u16,
    pub tenant: TenantId,
    pub event_id: EventId,
    pub target_id: TargetId,
    pub state: DeliveryState,
    pub attempt: Option<AttemptRecord>,
    pub next: Next,
    /// Needed when the event must outlive its stream entry (retry, error queue).
    pub body: Bytes,
    pub content_type: Option<Bytes>,
    /// What the attempt means to the target's breaker, pause and auto-disable; `None` when
    /// no attempt was made.
    pub gate: Option<crate::model::target_health::GateNote>,
}

/// An event as one expansion writes it.
#[derive(Debug, Clone)]
pub struct Expansion<'a> {
    /// The stream entry holding the event.
    pub entry_id: &'a str,
    pub event_id: &'a EventId,
    pub tenant: &'a TenantId,
    pub event_type: &'a EventType,
    pub content_type: &'a [u8],
    pub received_at_ms: u64,
    /// Targets whose outcome is recorded.
    pub targets: Vec<&'a TargetId>,
    /// Fire-and-forget targets: sent, never recorded.
    pub unrecorded: Vec<&'a TargetId>,
}

/// A delivery due for another attempt, loaded from its record.
#[derive(Debug, Clone)]
pub struct DueDelivery {
    pub member: String,
    pub event_id: EventId,
    pub target_id: TargetId,
    pub tenant: TenantId,
    pub event_type: EventType,
    pub content_type: Option<Bytes>,
    pub body: Bytes,
    pub attempts_so_far: u32,
    pub deferrals_so_far: u32,
}

/// A tenant's delivery counters.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Counters {
    pub events_received: u64,
    pub succeeded: u64,
    pub failed: u64,
    pub in_retry: u64,
    pub dead_letters: u64,
    pub responses: u64,
    pub response_ms_total: u64,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn compact_states_and_attempts_read_back() {
        let s = DeliveryState {
            state: State::Retrying,
            attempts: 3,
            last_status: Some(503),
            last_error: Some("HTTP 503 | busy".into()),
            next_retry_at_ms: Some(1_800_000_000_000),
            updated_at_ms: 1_799_999_999_000,
            deferrals: 2,
        };
        let text = s.encode();
        let back = DeliveryState::decode(&text).unwrap();
        assert_eq!(back.state, State::Retrying);
        assert_eq!(back.last_error.as_deref(), Some("HTTP 503 | busy"));
        assert_eq!(back.next_retry_at_ms, Some(1_800_000_000_000));
        assert_eq!((back.attempts, back.deferrals), (3, 2));
        assert_eq!(DeliveryState::decode("p").unwrap().state, State::Pending);
        assert_eq!(DeliveryState::decode("n").unwrap().state, State::Sent);
        let json = r#"{"state":"succeeded","attempts":1,"last_status":200,"last_error":null,"next_retry_at_ms":null,"updated_at_ms":5}"#;
        assert_eq!(DeliveryState::decode(json).unwrap().state, State::Succeeded);
        for bad in ["", "x", "pp", "s|x", "s|1|2|3"] {
            assert!(DeliveryState::decode(bad).is_none(), "{bad}");
        }
        let ok = DeliveryState {
            state: State::Succeeded,
            attempts: 1,
            last_status: Some(200),
            last_error: None,
            next_retry_at_ms: None,
            updated_at_ms: 1_799_999_999_000,
            deferrals: 0,
        };
        assert!(ok.encode().len() < 64, "{}", ok.encode());

        let target = TargetId::parse("tgt_01JABCDEFGHJKMNPQRSTVWXYZ0").unwrap();
        let a = AttemptRecord {
            target_id: target.clone(),
            attempt: 2,
            at_ms: 1_799_999_999_123,
            status: Some(500),
            latency_ms: 17,
            error: Some("HTTP 500|x".into()),
            response: Some("oops|body".into()),
            headers: None,
            transform_version: None,
            batch_id: None,
        };
        let back = AttemptRecord::decode(&a.encode()).unwrap();
        assert_eq!(back.error.as_deref(), Some("HTTP 500|x"));
        assert_eq!(back.response.as_deref(), Some("oops|body"));
        assert_eq!(
            (back.attempt, back.status, back.latency_ms),
            (2, Some(500), 17)
        );
        let quiet = AttemptRecord {
            error: None,
            response: None,
            status: Some(200),
            ..a
        };
        assert!(quiet.encode().len() < 64, "{}", quiet.encode());
        let back = AttemptRecord::decode(&quiet.encode()).unwrap();
        assert_eq!((&back.error, &back.response), (&None, &None));
        assert!(AttemptRecord::decode("tgt_1|x").is_none());
        assert!(AttemptRecord::decode("tgt_1|1|2||3|99|short").is_none());

        // Headers ride between the error and the response; `|`, `:` and `,` in them or
        // around them read back as they were.
        let headers = AttemptHeaders {
            request: vec![
                ("webhook-id".into(), "evt_1".into()),
                ("authorization".into(), "[redacted]".into()),
            ],
            response: vec![
                ("x-note".into(), "a|b: c,d".into()),
                ("x-empty".into(), String::new()),
            ],
        };
        let full = AttemptRecord {
            headers: Some(headers.clone()),
            ..back.clone()
        };
        let read = AttemptRecord::decode(&full.encode()).unwrap();
        assert_eq!(read.headers.as_ref(), Some(&headers));
        assert_eq!((read.error, read.response), (None, None));
        let failed = AttemptRecord {
            error: Some("HTTP 500|x".into()),
            response: Some("oops|body".into()),
            ..full
        };
        let read = AttemptRecord::decode(&failed.encode()).unwrap();
        assert_eq!(read.headers, Some(headers));
        assert_eq!(read.error.as_deref(), Some("HTTP 500|x"));
        assert_eq!(read.response.as_deref(), Some("oops|body"));
        // A record written before headers existed still reads, without them.
        let old = "tgt_01JABCDEFGHJKMNPQRSTVWXYZ0|1|5|503|3|4|busyoops";
        let read = AttemptRecord::decode(old).unwrap();
        assert_eq!(read.headers, None);
        assert_eq!(read.error.as_deref(), Some("busy"));
        assert!(AttemptRecord::decode("tgt_1|1|2||3|,x|short").is_none());
        assert!(AttemptRecord::decode("tgt_1|1|2||3|,99|short").is_none());
    }

    #[test]
    fn event_status_sums_up_its_deliveries() {
        use State::*;
        let of = |s: &[Option<State>]| EventStatus::of(s.iter().copied());
        assert_eq!(of(&[]), EventStatus::NoTargets);
        assert_eq!(of(&[Some(Succeeded), Some(Sent)]), EventStatus::Succeeded);
        assert_eq!(
            of(&[Some(Succeeded), Some(DeadLettered)]),
            EventStatus::Failed
        );
        assert_eq!(
            of(&[Some(DeadLettered), Some(Retrying)]),
            EventStatus::InProgress
        );
        assert_eq!(of(&[None]), EventStatus::InProgress);
        for s in [
            EventStatus::InProgress,
            EventStatus::Succeeded,
            EventStatus::Failed,
            EventStatus::NoTargets,
        ] {
            assert_eq!(EventStatus::parse(s.as_str()), Some(s));
        }
        for s in [Pending, Retrying, Succeeded, DeadLettered, Sent, Cancelled] {
            assert_eq!(State::parse(s.as_str()), Some(s));
        }
    }
}
