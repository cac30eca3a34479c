//! What the retention will cost in Redis memory, said at start when Redis holds everything
//! (no log store): the projected memory for `queue.retention_hours` at the stated or the
//! observed event rate, against `maxmemory` (or, unset, the host's memory).

use std::time::Duration;

use fred::prelude::*;

use super::consume::newest_entries;
use super::entry::decode;
use crate::redis::keyspace::Keyspace;

/// Redis bytes per retained event without a log store, one target, small JSON bodies
/// (measured by `benches/memory.sh`; see the README's sizing table). Larger bodies add
/// their size.
pub const BYTES_PER_EVENT: u64 = 640;
/// Entries per shard looked at to observe the rate.
const SAMPLE_ENTRIES: u64 = 200;

/// The projection, for the start-up line.
#[derive(Debug, Clone, PartialEq)]
pub struct Projection {
    /// Events per second it assumes.
    pub rate: f64,
    /// Whether `rate` was stated in the config (else observed).
    pub stated: bool,
    pub projected_bytes: u64,
    /// `maxmemory`, or the host's memory when unset (0: unknown).
    pub limit_bytes: u64,
    /// Whether the limit is `maxmemory` (else the host's memory).
    pub limit_is_maxmemory: bool,
}

impl Projection {
    pub fn exceeds_limit(&self) -> bool {
        self.limit_bytes > 0 && self.projected_bytes > self.limit_bytes
    }
}

/// The events per second the newest entries of the streams show (0 when they are empty).
pub async fn observed_rate(
    redis: &Client,
    keys: &Keyspace,
    shards: u16,
) -> Result<f64, fred::error::Error> {
    let mut total = 0.0;
    for shard in 0..shards {
        let entries = newest_entries(redis, keys, shard, "+", "-", SAMPLE_ENTRIES).await?;
        let times: Vec<u64> = entries
            .iter()
            .filter_map(|(id, _)| id.split_once('-')?.0.parse().ok())
            .collect();
        let (Some(newest), Some(oldest)) = (times.first(), times.last()) else {
            continue;
        };
        let events: usize = entries
            .iter()
            .map(|(_, fields)| decode(fields).map(|e| e.len()).unwrap_or(0))
            .sum();
        let span_s = (newest.saturating_sub(*oldest) as f64 / 1000.0).max(1.0);
        total += events as f64 / span_s;
    }
    Ok(total)
}

/// Projects the memory the retention needs.
pub async fn project(
    redis: &Client,
    keys: &Keyspace,
    shards: u16,
    retention: Duration,
    stated_rate: Option<f64>,
) -> Result<Projection, fred::error::Error> {
    let (rate, stated) = match stated_rate {
        Some(r) => (r, true),
        None => (observed_rate(redis, keys, shards).await?, false),
    };
    let projected_bytes = (rate * retention.as_secs_f64() * BYTES_PER_EVENT as f64) as u64;
    let info: String = redis.info(Some(fred::types::InfoKind::Memory)).await?;
    let field = |name: &str| -> u64 {
        info.lines()
            .find_map(|l| l.strip_prefix(name)?.strip_prefix(':'))
            .and_then(|v| v.trim().parse().ok())
            .unwrap_or(0)
    };
    let maxmemory = field("maxmemory");
    let (limit_bytes, limit_is_maxmemory) = if maxmemory > 0 {
        (maxmemory, true)
    } else {
        (field("total_system_memory"), false)
    };
    Ok(Projection {
        rate,
        stated,
        projected_bytes,
        limit_bytes,
        limit_is_maxmemory,
    })
}

/// Bytes for people: `1.5 GB`.
pub fn human_bytes(n: u64) -> String {
    const UNITS: [&str; 5] = ["B", "KB", "MB", "GB", "TB"];
    let mut v = n as f64;
    let mut unit = 0;
    while v >= 1000.0 && unit < UNITS.len() - 1 {
        v /= 1000.0;
        unit += 1;
    }
    if unit == 0 {
        format!("{n} B")
    } else {
        format!("{v:.1} {}", UNITS[unit])
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bytes_read_well_and_limits_compare() {
        assert_eq!(human_bytes(999), "999 B");
        assert_eq!(human_bytes(1_500_000_000), "1.5 GB");
        let p = Projection {
            rate: 1.0,
            stated: true,
            projected_bytes: 10,
            limit_bytes: 5,
            limit_is_maxmemory: true,
        };
        assert!(p.exceeds_limit());
        assert!(
            !Projection {
                limit_bytes: 0,
                ..p.clone()
            }
            .exceeds_limit()
        );
    }
}
