//! Per-minute counters for charts: events received, deliveries succeeded, attempts, failed
//! attempts and their latency, per tenant and per shard, over the last 48 hours.
//!
//! Each hour of counters is one hash per tenant ([`Keyspace::series`]) and one per shard
//! ([`Keyspace::series_all`]), in the shard's slot, with fields `<minute of the hour>:<metric>`
//! ([`RECEIVED`], [`SUCCEEDED`], [`FAILED`], [`ATTEMPTS`], [`LATENCY`]). [`Store::series`]
//! reads a range with one pipelined `HGETALL` per hour (and shard), not one per minute.
//!
//! Invariants:
//! - the counters are written only by calls the dispatch path makes anyway (`expand.lua`,
//!   `record.lua` and the pipeline counting record-less events), one `HINCRBY` per field and
//!   one `EXPIRE` per hash and call: ingest never pays for them, and no call gains a round trip;
//! - a writer names its hour keys from the `now` it hands its script, which takes the minute
//!   from that same `now`, so a field always lands in the hash of its own hour;
//! - every write renews the hash's lifetime to [`TTL_S`], longer than [`MAX_RANGE_MS`], so a
//!   read of the longest range finds every hour it covers.
//!
//! [`Keyspace::series`]: crate::redis::keyspace::Keyspace::series
//! [`Keyspace::series_all`]: crate::redis::keyspace::Keyspace::series_all

use std::collections::HashMap;

use fred::prelude::*;
use serde::Serialize;

use super::error::{RangeError, StoreError};
use super::handle::Store;
use crate::model::TenantId;

/// One minute, in ms.
pub const MINUTE_MS: u64 = 60_000;
/// One hour, in ms: the span of one hash.
pub const HOUR_MS: u64 = 3_600_000;
/// The longest range [`Store::series`] reads, in ms.
pub const MAX_RANGE_MS: u64 = 48 * HOUR_MS;
/// Lifetime of an hour's hash after its last write, in seconds: the longest range a read
/// covers, plus the hour being written.
pub const TTL_S: u64 = 49 * 3600;

/// Metric of events received (counted where the tenant's `events_received` moves).
pub const RECEIVED: &str = "r";
/// Metric of deliveries that succeeded.
pub const SUCCEEDED: &str = "s";
/// Metric of attempts that did not deliver, whether retried or final.
pub const FAILED: &str = "f";
/// Metric of attempts made.
pub const ATTEMPTS: &str = "a";
/// Metric of the attempts' latency, summed, in ms.
pub const LATENCY: &str = "l";

/// The hour whose hash holds the counters of `ms`.
pub fn hour_of(ms: u64) -> u64 {
    ms / HOUR_MS
}

/// The field of `metric` for the minute of `ms` (the same one the scripts compute in Lua).
pub fn field(ms: u64, metric: &str) -> String {
    format!("{}:{metric}", (ms / MINUTE_MS) % 60)
}

/// The counters of one minute.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, utoipa::ToSchema)]
pub struct MinuteCounts {
    /// The minute's start (ms since the Unix epoch).
    pub minute_ms: u64,
    /// Events received.
    pub received: u64,
    /// Deliveries that succeeded.
    pub succeeded: u64,
    /// Attempts that did not deliver (retried or final).
    pub failed: u64,
    /// Attempts made.
    pub attempts: u64,
    /// The attempts' latency, summed, in ms (`latency_ms_sum / attempts` is their mean).
    pub latency_ms_sum: u64,
}

impl MinuteCounts {
    /// Adds another row's counts (a minute's into its hour).
    pub(super) fn absorb(&mut self, other: &MinuteCounts) {
        self.received = self.received.saturating_add(other.received);
        self.succeeded = self.succeeded.saturating_add(other.succeeded);
        self.failed = self.failed.saturating_add(other.failed);
        self.attempts = self.attempts.saturating_add(other.attempts);
        self.latency_ms_sum = self.latency_ms_sum.saturating_add(other.latency_ms_sum);
    }

    /// Adds the value of one hash field's metric (a minute's or a rollup's).
    pub(super) fn add(&mut self, metric: &str, by: u64) {
        let slot = match metric {
            RECEIVED => &mut self.received,
            SUCCEEDED => &mut self.succeeded,
            FAILED => &mut self.failed,
            ATTEMPTS => &mut self.attempts,
            LATENCY => &mut self.latency_ms_sum,
            // A metric of a later version: not ours to show.
            _ => return,
        };
        *slot = slot.saturating_add(by);
    }
}

/// Whose counters a read sums.
#[derive(Debug, Clone, Copy)]
pub enum SeriesScope<'a> {
    /// One tenant's, in its shard.
    Tenant { tenant: &'a TenantId, shard: u16 },
    /// Every tenant's: the shard-wide hashes of shards `0..shards`.
    All { shards: u16 },
}

/// The first and last minute (minutes since the epoch) of a range, both included.
fn minutes(from_ms: u64, to_ms: u64) -> Result<(u64, u64), RangeError> {
    if to_ms < from_ms {
        return Err(RangeError::Reversed);
    }
    let (first, last) = (from_ms / MINUTE_MS, to_ms / MINUTE_MS);
    if (last - first) * MINUTE_MS > MAX_RANGE_MS {
        return Err(RangeError::TooLong);
    }
    Ok((first, last))
}

impl Store {
    /// Every field of each hash named, in order, with one pipelined `HGETALL` each (a missing
    /// hash reads as empty).
    pub(super) async fn read_hashes<'a>(
        &self,
        keys: impl Iterator<Item = &'a str> + Clone,
    ) -> Result<Vec<HashMap<String, String>>, StoreError> {
        let pipeline = self.redis.pipeline();
        for key in keys.clone() {
            let _: () = pipeline.hgetall(key).await?;
        }
        // One result per command, even for a single one (`all` would unwrap it).
        let replies = pipeline.try_all::<Value>().await;
        keys.zip(replies)
            .map(|(key, reply)| match reply? {
                Value::Null => Ok(HashMap::new()),
                v => v.convert().map_err(|e| StoreError::Corrupt {
                    key: key.to_owned(),
                    reason: e.to_string(),
                }),
            })
            .collect()
    }

    /// The counters of every minute from `from_ms` to `to_ms` (both floored to their minute,
    /// both included), oldest first, zero where nothing happened; refuses a reversed range
    /// or one over 48 h ([`RangeError`]). One pipelined `HGETALL` per hour and shard.
    pub async fn series(
        &self,
        scope: SeriesScope<'_>,
        from_ms: u64,
        to_ms: u64,
    ) -> Result<Vec<MinuteCounts>, StoreError> {
        let (first, last) = minutes(from_ms, to_ms)?;
        let hours = first / 60..=last / 60;
        let keys: Vec<(u64, String)> = match scope {
            SeriesScope::Tenant { tenant, shard } => hours
                .map(|h| (h, self.keys.series(shard, tenant, h)))
                .collect(),
            SeriesScope::All { shards } => (0..shards.max(1))
                .flat_map(|s| hours.clone().map(move |h| (h, s)))
                .map(|(h, s)| (h, self.keys.series_all(s, h)))
                .collect(),
        };
        let hashes = self
            .read_hashes(keys.iter().map(|(_, k)| k.as_str()))
            .await?;
        let mut rows: Vec<MinuteCounts> = (first..=last)
            .map(|m| MinuteCounts {
                minute_ms: m * MINUTE_MS,
                ..MinuteCounts::default()
            })
            .collect();
        for ((hour, _), fields) in keys.iter().zip(hashes) {
            for (name, value) in fields {
                let Some((minute, metric)) = name.split_once(':') else {
                    continue;
                };
                let Ok(minute) = minute.parse::<u64>() else {
                    continue;
                };
                let at = hour * 60 + minute;
                if !(first..=last).contains(&at) {
                    continue;
                }
                // HINCRBY keeps every field a whole number; a negative one is a fault to skip.
                let by = value.parse::<u64>().unwrap_or(0);
                if let Some(row) = usize::try_from(at - first)
                    .ok()
                    .and_then(|i| rows.get_mut(i))
                {
                    row.add(metric, by);
                }
            }
        }
        Ok(rows)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ranges_are_floored_to_minutes_and_bounded() {
        assert_eq!(minutes(125_000, 185_000), Ok((2, 3)));
        assert_eq!(minutes(60_000, 60_000), Ok((1, 1)));
        assert_eq!(minutes(10, 5), Err(RangeError::Reversed));
        assert_eq!(minutes(0, MAX_RANGE_MS), Ok((0, 2880)));
        // 48 h and one minute: refused, however the ends fall within their minutes.
        assert_eq!(
            minutes(59_999, MAX_RANGE_MS + MINUTE_MS),
            Err(RangeError::TooLong)
        );
    }

    #[test]
    fn fields_name_the_minute_of_the_hour() {
        let ms = 493_000 * HOUR_MS + 17 * MINUTE_MS + 59_999;
        assert_eq!(hour_of(ms), 493_000);
        assert_eq!(field(ms, RECEIVED), "17:r");
        assert_eq!(field(493_000 * HOUR_MS, LATENCY), "0:l");
    }

    #[test]
    fn unknown_metrics_are_ignored() {
        let mut m = MinuteCounts::default();
        m.add(SUCCEEDED, 2);
        m.add("z", 9);
        m.add(LATENCY, 40);
        assert_eq!(
            m,
            MinuteCounts {
                succeeded: 2,
                latency_ms_sum: 40,
                ..MinuteCounts::default()
            }
        );
    }
}
