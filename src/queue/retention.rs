//! Consumer groups and stream retention.
//!
//! Groups are created from id `0`, so entries written before the group existed (an edge that
//! started before any dispatcher, or a stream recreated after a flush) are still delivered.
//!
//! Retention trims each stream by age (`XTRIM MINID ~`), but never past what the dispatcher
//! group has not finished: the cut is the oldest of the age limit, the group's oldest pending
//! entry and its last-delivered id. A stream without the group is not trimmed at all.

use std::time::Duration;

use fred::prelude::*;
use fred::types::streams::XCap;
use tokio_util::sync::CancellationToken;

use crate::model::time::Clock;
use crate::redis::connection::info_field;
use crate::redis::keyspace::{DISPATCH_GROUP, Keyspace};

/// Creates the dispatcher group on every shard stream (and the stream if missing).
pub async fn ensure_groups(
    redis: &Client,
    keys: &Keyspace,
    shards: u16,
) -> Result<(), fred::error::Error> {
    for shard in 0..shards {
        ensure_group(redis, keys, shard).await?;
    }
    Ok(())
}

/// Creates the dispatcher group on one shard stream (and the stream if missing), reading from
/// the start of what the stream holds; `true` when it was missing.
pub async fn ensure_group(
    redis: &Client,
    keys: &Keyspace,
    shard: u16,
) -> Result<bool, fred::error::Error> {
    let created: Result<(), _> = redis
        .xgroup_create(keys.stream(shard), DISPATCH_GROUP, "0", true)
        .await;
    match created {
        Ok(()) => Ok(true),
        Err(e) if e.details().starts_with("BUSYGROUP") => Ok(false),
        Err(e) => Err(e),
    }
}

/// The periodic trimming task.
#[derive(Debug)]
pub struct Retention {
    redis: Client,
    keys: Keyspace,
    shards: u16,
    /// Age beyond which entries go: the retention, or with a log store the hot window.
    max_age: Duration,
    /// Time between passes.
    every: Duration,
    /// With a log store: never trim past an event that is unfinished or not yet shipped (the
    /// stream may hold its only copy of the body).
    logged: bool,
    /// The time ages are judged by.
    clock: Clock,
}

impl Retention {
    pub fn new(
        redis: Client,
        keys: Keyspace,
        shards: u16,
        max_age: Duration,
        every: Duration,
        logged: bool,
    ) -> Retention {
        Retention {
            redis,
            keys,
            shards,
            max_age,
            every,
            logged,
            clock: Clock::system(),
        }
    }

    /// The same retention on `clock`.
    pub fn with_clock(mut self, clock: Clock) -> Retention {
        self.clock = clock;
        self
    }

    /// Trims every shard once; returns the number of entries removed.
    pub async fn trim_once(&self) -> Result<u64, fred::error::Error> {
        let age_cut = self
            .clock
            .now_ms()
            .saturating_sub(self.max_age.as_millis() as u64);
        let mut removed = 0;
        for shard in 0..self.shards {
            let key = self.keys.stream(shard);
            let mut age_cut = age_cut;
            if self.logged {
                for held in [self.keys.unfinished(shard), self.keys.ship(shard)] {
                    if let Some(first) = self.first_position(&held).await? {
                        age_cut = age_cut.min(first);
                    }
                }
            }
            let Some(cut) = self.safe_cut(&key, age_cut).await? else {
                continue;
            };
            let cap = XCap::try_from(("MINID", "~", cut.as_str(), None))?;
            let n: u64 = self.redis.xtrim(&key, cap).await?;
            removed += n;
        }
        Ok(removed)
    }

    /// The stream position (ms) of the first event of a sorted set scored by position.
    async fn first_position(&self, key: &str) -> Result<Option<u64>, fred::error::Error> {
        let first: Vec<(String, f64)> = self
            .redis
            .zrange(key, 0, 0, None, false, None, true)
            .await?;
        Ok(first.first().map(|(_, score)| score.max(0.0) as u64))
    }

    /// The highest id below which entries may go, or `None` when nothing may.
    async fn safe_cut(
        &self,
        key: &str,
        age_cut_ms: u64,
    ) -> Result<Option<String>, fred::error::Error> {
        let groups: Vec<Value> = match self.redis.xinfo_groups(key).await {
            Ok(g) => g,
            Err(e) if e.details().contains("no such key") => return Ok(None),
            Err(e) => return Err(e),
        };
        let Some(last_delivered) = groups.iter().find_map(group_last_delivered) else {
            return Ok(None); // no dispatcher group yet: every entry is undelivered
        };
        let mut cut = StreamId::new(age_cut_ms, 0);
        cut = cut.min(last_delivered);
        // The oldest entry read but not yet acknowledged.
        let pending: Value = self.redis.xpending(key, DISPATCH_GROUP, ()).await?;
        if let Some(oldest) = pending_oldest(&pending) {
            cut = cut.min(oldest);
        }
        Ok(Some(cut.to_string()))
    }

    /// Runs passes until `shutdown`.
    pub async fn run(self, shutdown: CancellationToken) {
        let mut tick = tokio::time::interval(self.every);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                _ = shutdown.cancelled() => return,
                _ = tick.tick() => {}
            }
            match self.trim_once().await {
                Ok(0) => {}
                Ok(n) => tracing::info!(removed = n, "trimmed event streams past retention"),
                Err(e) => {
                    crate::telemetry::redis_error("trim");
                    tracing::warn!(error = %e, "stream trimming failed; will retry");
                }
            }
        }
    }
}

/// A stream entry id `ms-seq`, ordered.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct StreamId {
    ms: u64,
    seq: u64,
}

impl StreamId {
    pub fn new(ms: u64, seq: u64) -> StreamId {
        StreamId { ms, seq }
    }

    /// The next id after this one.
    pub fn successor(self) -> StreamId {
        match self.seq.checked_add(1) {
            Some(seq) => StreamId { ms: self.ms, seq },
            None => StreamId {
                ms: self.ms + 1,
                seq: 0,
            },
        }
    }

    /// Zero-padded text, whose text order is id order.
    pub fn padded(self) -> String {
        format!("{:020}-{:020}", self.ms, self.seq)
    }

    pub fn parse(s: &str) -> Option<StreamId> {
        let (ms, seq) = s.split_once('-')?;
        Some(StreamId {
            ms: ms.parse().ok()?,
            seq: seq.parse().ok()?,
        })
    }
}

impl std::fmt::Display for StreamId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}-{}", self.ms, self.seq)
    }
}

/// `last-delivered-id` of the dispatcher group in one `XINFO GROUPS` item.
fn group_last_delivered(group: &Value) -> Option<StreamId> {
    if info_field(group, "name")?.as_str().as_deref() != Some(DISPATCH_GROUP) {
        return None;
    }
    info_field(group, "last-delivered-id")?
        .as_str()
        .and_then(|s| StreamId::parse(&s))
}

/// Smallest pending id from the `XPENDING key group` summary `[count, min, max, consumers]`.
fn pending_oldest(summary: &Value) -> Option<StreamId> {
    let Value::Array(items) = summary else {
        return None;
    };
    if items.first().and_then(Value::as_u64).unwrap_or(0) == 0 {
        return None;
    }
    items
        .get(1)
        .and_then(|v| v.as_str())
        .and_then(|s| StreamId::parse(&s))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stream_ids_order_and_parse() {
        let a = StreamId::parse("1700000000000-5");
        assert_eq!(a, Some(StreamId::new(1_700_000_000_000, 5)));
        assert!(StreamId::new(1, 9) < StreamId::new(2, 0));
        assert_eq!(StreamId::new(3, 1).to_string(), "3-1");
        assert_eq!(StreamId::parse("x-1"), None);
        assert_eq!(StreamId::new(3, 1).successor(), StreamId::new(3, 2));
        assert_eq!(StreamId::new(3, u64::MAX).successor(), StreamId::new(4, 0));
        assert!(StreamId::new(9, 10).padded() > StreamId::new(9, 9).padded());
        assert!(StreamId::new(10, 0).padded() > StreamId::new(9, 99).padded());
    }

    #[test]
    fn reads_group_and_pending_replies() {
        let group = Value::Array(vec![
            "name".into(),
            DISPATCH_GROUP.into(),
            "consumers".into(),
            Value::Integer(1),
            "last-delivered-id".into(),
            "10-2".into(),
        ]);
        assert_eq!(group_last_delivered(&group), Some(StreamId::new(10, 2)));
        let pending = Value::Array(vec![
            Value::Integer(2),
            "5-0".into(),
            "9-0".into(),
            Value::Null,
        ]);
        assert_eq!(pending_oldest(&pending), Some(StreamId::new(5, 0)));
        let none = Value::Array(vec![
            Value::Integer(0),
            Value::Null,
            Value::Null,
            Value::Null,
        ]);
        assert_eq!(pending_oldest(&none), None);
    }
}
