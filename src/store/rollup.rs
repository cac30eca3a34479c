//! Hourly rollups of the per-minute counters ([`super::series`]), kept eight days, so a chart
//! reaches back a week while the per-minute hashes live only 49 hours.
//!
//! Each day of rollups is one hash per tenant ([`Keyspace::series_day`]) and one per shard
//! ([`Keyspace::series_all_day`]), fields `<hour of the day>:<metric>`: 24 hours × 5 metrics,
//! small enough for Redis's compact encoding. They are written off the delivery path, by
//! [`Store::roll_up_due`] (every instance runs it; a marker per hour lets one do each hour):
//! an hour is rolled [`SETTLE_MS`] after it ends, from its per-minute hashes, with `HSET` of
//! the hour's sums, so rolling an hour twice (a crash between the writes and the marker, two
//! instances) writes the same values. Reads ([`Store::series_hours`]) take the last 48 hours
//! from the per-minute hashes, exact, and older hours from the rollups.
//!
//! [`Keyspace::series_day`]: crate::redis::keyspace::Keyspace::series_day
//! [`Keyspace::series_all_day`]: crate::redis::keyspace::Keyspace::series_all_day

use std::collections::HashMap;

use fred::prelude::*;
use fred::types::{Expiration, SetOptions};

use super::error::{RangeError, StoreError};
use super::handle::Store;
use super::series::{HOUR_MS, MAX_RANGE_MS, MINUTE_MS, MinuteCounts, SeriesScope};
use crate::model::TenantId;
use crate::redis::keyspace::shard_of;

/// One day, in ms: the span of one rollup hash.
pub const DAY_MS: u64 = 24 * HOUR_MS;
/// The longest range [`Store::series_hours`] reads: a week.
pub const MAX_HOURS_RANGE_MS: u64 = 7 * DAY_MS;
/// Lifetime of a day's rollups: a week back from its last hour, and the day itself.
pub const ROLLUP_TTL_S: u64 = 8 * 24 * 3600 + 3600;
/// How long after an hour ends it is rolled up: an outcome recorded just after the hour, with
/// the hour's `now`, still lands in it first.
pub const SETTLE_MS: u64 = 5 * MINUTE_MS;
/// How long one instance may take to roll an hour before another takes it over.
const CLAIM_S: i64 = 600;
/// Tenants read per page of the tenant index.
const TENANT_PAGE: i64 = 1000;
/// The hours [`Store::roll_up_due`] looks back over: what the per-minute hashes still hold.
const LOOK_BACK_HOURS: u64 = 47;

/// An hour's sums, by metric (`r`, `s`, `f`, `a`, `l`).
type Sums = HashMap<String, u64>;

/// Sums the per-minute fields (`<minute>:<metric>`) of one hour's hash by metric.
fn sum_hour(fields: HashMap<String, String>) -> Sums {
    let mut sums = Sums::new();
    for (name, value) in fields {
        let Some((_, metric)) = name.split_once(':') else {
            continue;
        };
        let by = value.parse::<u64>().unwrap_or(0);
        let slot = sums.entry(metric.to_owned()).or_default();
        *slot = slot.saturating_add(by);
    }
    sums
}

/// The rollup fields (`<hour of day>:<metric>`) of `hour`'s sums.
fn rollup_fields(hour: u64, sums: &Sums) -> Vec<(String, String)> {
    sums.iter()
        .map(|(metric, n)| (format!("{}:{metric}", hour % 24), n.to_string()))
        .collect()
}

impl Store {
    /// Rolls up every finished hour of the last [`LOOK_BACK_HOURS`] that no instance has
    /// rolled yet; how many this call rolled.
    pub async fn roll_up_due(&self, shards: u16, now_ms: u64) -> Result<u32, StoreError> {
        let finished = now_ms.saturating_sub(SETTLE_MS) / HOUR_MS;
        let mut rolled = 0;
        for hour in finished.saturating_sub(LOOK_BACK_HOURS)..finished {
            let marker = self.keys.rollup_marker(hour);
            let claimed: Option<String> = self
                .redis
                .set(
                    &marker,
                    "running",
                    Some(Expiration::EX(CLAIM_S)),
                    Some(SetOptions::NX),
                    false,
                )
                .await?;
            if claimed.is_none() {
                continue; // rolled, or being rolled
            }
            // On failure the claim lapses and another pass (here or elsewhere) rolls it.
            self.roll_up(shards, hour).await?;
            let _: () = self
                .redis
                .set(
                    &marker,
                    "done",
                    Some(Expiration::EX(ROLLUP_TTL_S as i64)),
                    None,
                    false,
                )
                .await?;
            rolled += 1;
        }
        Ok(rolled)
    }

    /// Writes `hour`'s rollups: every shard's, then every tenant's, a page of the tenant index
    /// at a time (one pipelined read and one pipelined write per page).
    pub async fn roll_up(&self, shards: u16, hour: u64) -> Result<(), StoreError> {
        let day = hour * HOUR_MS / DAY_MS;
        let mut pairs: Vec<(String, String)> = (0..shards.max(1))
            .map(|s| {
                (
                    self.keys.series_all(s, hour),
                    self.keys.series_all_day(s, day),
                )
            })
            .collect();
        self.roll_pairs(hour, &pairs).await?;
        let mut start = "-".to_owned();
        loop {
            let ids: Vec<String> = self
                .redis
                .zrangebylex(self.keys.tenants(), &start, "+", Some((0, TENANT_PAGE)))
                .await?;
            let Some(last) = ids.last() else {
                return Ok(());
            };
            start = format!("({last}");
            pairs = ids
                .iter()
                .filter_map(|id| TenantId::parse(id).ok())
                .map(|t| {
                    let shard = shard_of(&t, shards);
                    (
                        self.keys.series(shard, &t, hour),
                        self.keys.series_day(shard, &t, day),
                    )
                })
                .collect();
            self.roll_pairs(hour, &pairs).await?;
            if (ids.len() as i64) < TENANT_PAGE {
                return Ok(());
            }
        }
    }

    /// Sums each `(hour hash, day hash)` pair's hour into its day hash.
    async fn roll_pairs(&self, hour: u64, pairs: &[(String, String)]) -> Result<(), StoreError> {
        if pairs.is_empty() {
            return Ok(());
        }
        let hours = self
            .read_hashes(pairs.iter().map(|(from, _)| from.as_str()))
            .await?;
        let write = self.redis.pipeline();
        let mut writes = 0;
        for ((_, to), fields) in pairs.iter().zip(hours) {
            let sums = sum_hour(fields);
            if sums.is_empty() {
                continue;
            }
            let _: () = write.hset(to.as_str(), rollup_fields(hour, &sums)).await?;
            let _: () = write.expire(to.as_str(), ROLLUP_TTL_S as i64, None).await?;
            writes += 1;
        }
        if writes > 0 {
            for r in write.try_all::<Value>().await {
                r?;
            }
        }
        Ok(())
    }

    /// The counters of every hour from `from_ms` to `to_ms` (both floored to their hour, both
    /// included; at most a week), oldest first, each row at its hour's first minute, zero where
    /// nothing happened: the last 48 hours from the per-minute hashes, older ones from the
    /// rollups. `now_ms` says which is which.
    pub async fn series_hours(
        &self,
        scope: SeriesScope<'_>,
        from_ms: u64,
        to_ms: u64,
        now_ms: u64,
    ) -> Result<Vec<MinuteCounts>, StoreError> {
        if to_ms < from_ms {
            return Err(RangeError::Reversed.into());
        }
        let (first, last) = (from_ms / HOUR_MS, to_ms / HOUR_MS);
        if (last - first) * HOUR_MS > MAX_HOURS_RANGE_MS {
            return Err(RangeError::TooLong.into());
        }
        let mut rows: Vec<MinuteCounts> = (first..=last)
            .map(|h| MinuteCounts {
                minute_ms: h * HOUR_MS,
                ..MinuteCounts::default()
            })
            .collect();
        // The hours the per-minute hashes surely still hold: the last 48.
        let fine_from = (now_ms.saturating_sub(MAX_RANGE_MS) / HOUR_MS + 1).max(first);
        if fine_from <= last {
            let minutes = self
                .series(scope, fine_from * HOUR_MS, (last + 1) * HOUR_MS - 1)
                .await?;
            for m in minutes {
                let i = (m.minute_ms / HOUR_MS - first) as usize;
                if let Some(row) = rows.get_mut(i) {
                    row.absorb(&m);
                }
            }
        }
        if first < fine_from {
            let days = first * HOUR_MS / DAY_MS..=(fine_from - 1) * HOUR_MS / DAY_MS;
            let keys: Vec<(u64, String)> = match scope {
                SeriesScope::Tenant { tenant, shard } => days
                    .map(|d| (d, self.keys.series_day(shard, tenant, d)))
                    .collect(),
                SeriesScope::All { shards } => (0..shards.max(1))
                    .flat_map(|s| days.clone().map(move |d| (d, s)))
                    .map(|(d, s)| (d, self.keys.series_all_day(s, d)))
                    .collect(),
            };
            let hashes = self
                .read_hashes(keys.iter().map(|(_, k)| k.as_str()))
                .await?;
            for ((day, _), fields) in keys.iter().zip(hashes) {
                for (name, value) in fields {
                    let Some((hour_of_day, metric)) = name.split_once(':') else {
                        continue;
                    };
                    let Ok(h) = hour_of_day.parse::<u64>() else {
                        continue;
                    };
                    let hour = day * 24 + h;
                    if hour < first || hour >= fine_from {
                        continue;
                    }
                    if let Some(row) = rows.get_mut((hour - first) as usize) {
                        row.add(metric, value.parse::<u64>().unwrap_or(0));
                    }
                }
            }
        }
        Ok(rows)
    }
}

/// How often [`run`] looks for hours to roll up.
const EVERY: std::time::Duration = std::time::Duration::from_secs(300);

/// Rolls up finished hours now and every [`EVERY`] until `stop`; a failure is logged and the
/// next pass tries again (the per-minute hashes hold an hour for two days).
pub async fn run(store: Store, shards: u16, stop: tokio_util::sync::CancellationToken) {
    let mut tick = tokio::time::interval(EVERY);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = stop.cancelled() => return,
            _ = tick.tick() => {}
        }
        match store.roll_up_due(shards, store.clock().now_ms()).await {
            Ok(0) => {}
            Ok(n) => tracing::debug!(hours = n, "counters rolled up by the hour"),
            Err(e) => tracing::warn!(error = %e, "could not roll the counters up by the hour"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_hour_is_summed_by_metric_into_its_hour_of_the_day() {
        let fields: HashMap<String, String> = [
            ("0:r", "2"),
            ("59:r", "3"),
            ("7:l", "40"),
            ("junk", "9"),
            ("8:a", "x"),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_owned(), v.to_owned()))
        .collect();
        let sums = sum_hour(fields);
        assert_eq!(sums.get("r"), Some(&5));
        assert_eq!(sums.get("l"), Some(&40));
        assert_eq!(sums.get("a"), Some(&0));
        let mut out = rollup_fields(24 * 100 + 13, &sums);
        out.sort();
        assert!(
            out.contains(&("13:r".to_owned(), "5".to_owned())),
            "{out:?}"
        );
        assert!(
            out.contains(&("13:l".to_owned(), "40".to_owned())),
            "{out:?}"
        );
    }
}
