//! Daily partitions: `<table>_pYYYYMMDD` holds the events received that UTC day (and their
//! deliveries and attempts), the checks made and the incidents opened that day. The upkeep creates the days around now ahead of need, a write
//! creates any other day it needs first, and retention drops whole days: no `DELETE` scan.

use std::collections::BTreeSet;
use std::sync::Mutex;
use std::time::{Duration, UNIX_EPOCH};

use super::connect::LogStoreError;

/// The partitioned tables, in the order partitions are created.
pub const TABLES: [&str; 5] = ["events", "deliveries", "attempts", "checks", "incidents"];
/// Days created ahead of today.
const DAYS_AHEAD: i64 = 3;
const DAY_MS: u64 = 86_400_000;
/// Key of the advisory lock that serialises partition changes of several processes.
const PARTITION_LOCK: i64 = 0x6573_7461_7061_7274;

/// The UTC day (days since the epoch) of a Unix time in milliseconds.
pub fn day_of(ms: u64) -> i64 {
    (ms / DAY_MS) as i64
}

/// `YYYY-MM-DD` of a day number.
pub fn date_of(day: i64) -> String {
    let secs = (day.max(0) as u64) * 86_400;
    let text = humantime::format_rfc3339_seconds(UNIX_EPOCH + Duration::from_secs(secs));
    text.to_string()[..10].to_owned()
}

/// The partition of `table` for `day`.
pub fn partition_name(table: &str, day: i64) -> String {
    format!("{table}_p{}", date_of(day).replace('-', ""))
}

/// The day a partition name stands for, if it is one of ours.
pub fn day_of_partition(table: &str, name: &str) -> Option<i64> {
    let digits = name.strip_prefix(table)?.strip_prefix("_p")?;
    if digits.len() != 8 || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let text = format!(
        "{}-{}-{}T00:00:00Z",
        &digits[..4],
        &digits[4..6],
        &digits[6..]
    );
    let t = humantime::parse_rfc3339(&text).ok()?;
    let ms = t.duration_since(UNIX_EPOCH).ok()?.as_millis() as u64;
    Some(day_of(ms))
}

/// The days known to have partitions, so a write checks only new ones.
#[derive(Debug, Default)]
pub struct Partitions {
    known: Mutex<BTreeSet<i64>>,
}

impl Partitions {
    fn is_known(&self, day: i64) -> bool {
        match self.known.lock() {
            Ok(k) => k.contains(&day),
            Err(p) => p.into_inner().contains(&day),
        }
    }

    fn learn(&self, days: &[i64]) {
        let mut k = match self.known.lock() {
            Ok(k) => k,
            Err(p) => p.into_inner(),
        };
        k.extend(days.iter().copied());
    }

    /// Forgets every known day, so the next write checks (and creates) its partitions again:
    /// after PostgreSQL said one is missing.
    pub fn forget_all(&self) {
        self.forget_before(i64::MAX);
    }

    fn forget_before(&self, day: i64) {
        let mut k = match self.known.lock() {
            Ok(k) => k,
            Err(p) => p.into_inner(),
        };
        k.retain(|d| *d >= day);
    }

    /// Makes sure the partitions of `days` exist.
    pub async fn ensure(
        &self,
        client: &tokio_postgres::Client,
        days: &[i64],
    ) -> Result<usize, LogStoreError> {
        let missing: Vec<i64> = days
            .iter()
            .copied()
            .filter(|d| !self.is_known(*d))
            .collect();
        if missing.is_empty() {
            return Ok(0);
        }
        let mut sql = format!("BEGIN; SELECT pg_advisory_xact_lock({PARTITION_LOCK});");
        for day in &missing {
            for table in TABLES {
                sql.push_str(&format!(
                    "CREATE TABLE IF NOT EXISTS {name} PARTITION OF {table} FOR VALUES FROM ('{from} 00:00:00+00') TO ('{to} 00:00:00+00');",
                    name = partition_name(table, *day),
                    from = date_of(*day),
                    to = date_of(day + 1),
                ));
            }
        }
        sql.push_str("COMMIT;");
        if let Err(e) = client.batch_execute(&sql).await {
            let _ = client.batch_execute("ROLLBACK").await;
            return Err(e.into());
        }
        self.learn(&missing);
        Ok(missing.len())
    }

    /// Creates yesterday's (as of `now_ms`) to a few days ahead, and drops the days entirely past retention;
    /// how many days were created and dropped.
    pub async fn maintain(
        &self,
        client: &tokio_postgres::Client,
        retention: Duration,
        now_ms: u64,
    ) -> Result<(usize, usize), LogStoreError> {
        let today = day_of(now_ms);
        let days: Vec<i64> = (today - 1..=today + DAYS_AHEAD).collect();
        let created = self.ensure(client, &days).await?;
        // A day goes once its last millisecond is older than the retention.
        let oldest_kept = day_of(now_ms.saturating_sub(retention.as_millis() as u64));
        let rows = client
            .query(
                "SELECT c.relname::text FROM pg_inherits i \
                 JOIN pg_class c ON c.oid = i.inhrelid \
                 JOIN pg_class p ON p.oid = i.inhparent \
                 WHERE p.relname = ANY($1)",
                &[&TABLES.to_vec()],
            )
            .await?;
        let mut doomed = Vec::new();
        for row in rows {
            let name: String = row.try_get(0)?;
            let day = TABLES.iter().find_map(|t| day_of_partition(t, &name));
            if day.is_some_and(|d| d < oldest_kept) {
                doomed.push(name);
            }
        }
        let dropped_days: BTreeSet<&str> = doomed
            .iter()
            .filter_map(|n| n.rsplit_once("_p").map(|(_, d)| d))
            .collect();
        let dropped = dropped_days.len();
        if !doomed.is_empty() {
            let mut sql = format!("BEGIN; SELECT pg_advisory_xact_lock({PARTITION_LOCK});");
            for name in &doomed {
                sql.push_str(&format!("DROP TABLE IF EXISTS {name};"));
            }
            sql.push_str("COMMIT;");
            if let Err(e) = client.batch_execute(&sql).await {
                let _ = client.batch_execute("ROLLBACK").await;
                return Err(e.into());
            }
            tracing::info!(
                partitions = doomed.len(),
                "dropped log store partitions past retention"
            );
        }
        self.forget_before(oldest_kept);
        Ok((created, dropped))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_and_days_round_trip() {
        let day = day_of(1_764_547_200_000); // 2025-12-01T00:00:00Z
        assert_eq!(date_of(day), "2025-12-01");
        assert_eq!(partition_name("events", day), "events_p20251201");
        assert_eq!(day_of_partition("events", "events_p20251201"), Some(day));
        assert_eq!(day_of_partition("events", "deliveries_p20251201"), None);
        assert_eq!(day_of_partition("events", "events_p2025120"), None);
        assert_eq!(day_of_partition("events", "events_default"), None);
        assert_eq!(date_of(day + 31), "2026-01-01");
    }
}
