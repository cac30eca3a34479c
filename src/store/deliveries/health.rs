//! How each target fares: attempts and failures over the last hour, its newest attempt, when
//! it last delivered, and since when it fails. `record.lua` keeps it, once per target and
//! call, in one hash per tenant in the tenant's shard slot (`thealth`), so one read answers
//! for all of a tenant's targets and the console's home page reads one key per tenant, not an
//! event log.
//!
//! Attempts are counted in ten-minute buckets, a ring of 12 per target (`<target>:b<k>` =
//! `<bucket start ms>:<attempts>:<failed>`); a slot that holds an older bucket starts again
//! when written, and a read ignores the buckets older than [`WINDOW_MS`]. The window is the
//! current bucket and the six before it: between 60 and 70 minutes, and a view says from when.

use std::collections::HashMap;

use fred::prelude::*;

use super::{AttemptRecord, Deliveries};
use crate::model::{TargetId, TenantId};
use crate::store::error::StoreError;

/// The span of one bucket, in ms (`bucket_ms` in `record.lua`).
pub const BUCKET_MS: u64 = 600_000;
/// Buckets kept per target (`% 12` in `record.lua`).
pub const BUCKETS: u64 = 12;
/// The shortest span the window covers: the last hour.
pub const WINDOW_MS: u64 = 3_600_000;
/// Below this share of successful attempts a delivering target is `degraded`.
pub const DEGRADED_BELOW: f64 = 0.9;

/// How one target fares.
#[derive(Debug, Clone, Default)]
pub struct TargetHealth {
    /// Where the window starts (ms): the start of its oldest bucket.
    pub window_start_ms: u64,
    /// Attempts in the window.
    pub attempts: u64,
    /// Attempts in the window that did not deliver.
    pub failed: u64,
    /// Its newest attempt, whenever it was.
    pub last: Option<AttemptRecord>,
    /// When an attempt last delivered.
    pub last_success_ms: Option<u64>,
    /// When it started failing: its first failed attempt after its last success, while its
    /// newest attempt failed.
    pub failing_since_ms: Option<u64>,
    /// Its circuit breaker (closed when never written).
    pub breaker: super::gate::Breaker,
    /// The breaker's counts over its current and previous window, while closed: attempts
    /// and failures.
    pub breaker_window: (u64, u64),
    /// Until when a 429's Retry-After holds its deliveries (ms), if it was sent one.
    pub paused_until_ms: Option<u64>,
    /// The in-flight limit a dispatcher last reported for it.
    pub concurrency_limit: Option<u32>,
}

/// A target's health in one word.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum HealthState {
    /// Disabled (by an operator, or by the gateway after a 410).
    Disabled,
    /// Its newest attempt failed.
    Failing,
    /// Its newest attempt delivered, but fewer than 90 % in the window did.
    Degraded,
    /// Delivering.
    Healthy,
    /// No attempt in the window, and its last one (if any) delivered.
    Idle,
}

impl HealthState {
    /// Whether an operator should look at it.
    pub fn is_bad(self) -> bool {
        matches!(self, HealthState::Failing | HealthState::Degraded)
    }
}

impl TargetHealth {
    /// Nothing known yet: a target without attempts.
    pub fn none(now_ms: u64) -> TargetHealth {
        TargetHealth {
            window_start_ms: window_start(now_ms),
            ..TargetHealth::default()
        }
    }

    /// The share of the window's attempts that delivered; `None` without attempts.
    pub fn success_ratio(&self) -> Option<f64> {
        (self.attempts > 0)
            .then(|| self.attempts.saturating_sub(self.failed) as f64 / self.attempts as f64)
    }

    pub fn state(&self, active: bool) -> HealthState {
        if !active {
            return HealthState::Disabled;
        }
        if self.failing_since_ms.is_some() {
            return HealthState::Failing;
        }
        match self.success_ratio() {
            None => HealthState::Idle,
            Some(r) if r < DEGRADED_BELOW => HealthState::Degraded,
            Some(_) => HealthState::Healthy,
        }
    }
}

/// The start of the window read at `now_ms`.
pub fn window_start(now_ms: u64) -> u64 {
    let buckets_back = WINDOW_MS / BUCKET_MS;
    (now_ms / BUCKET_MS).saturating_sub(buckets_back) * BUCKET_MS
}

/// The health of every target named in a tenant's hash, as read at `now_ms`. A field this
/// version cannot read is left out (the rest of the hash still answers).
pub fn parse(fields: HashMap<String, String>, now_ms: u64) -> HashMap<TargetId, TargetHealth> {
    let from = window_start(now_ms);
    let mut out: HashMap<TargetId, TargetHealth> = HashMap::new();
    for (field, value) in fields {
        let Some((target, what)) = field.rsplit_once(':') else {
            continue;
        };
        let Ok(target) = TargetId::parse(target) else {
            continue;
        };
        let h = out
            .entry(target)
            .or_insert_with(|| TargetHealth::none(now_ms));
        match what {
            "last" => h.last = AttemptRecord::decode(&value),
            "ok_at" => h.last_success_ms = value.parse().ok(),
            "fail_since" => h.failing_since_ms = value.parse().ok(),
            "br" => h.breaker = super::gate::Breaker::decode(&value).unwrap_or_default(),
            "bw" => {
                let n: Vec<u64> = value.split(':').filter_map(|n| n.parse().ok()).collect();
                if let [_, a, f, pa, pf] = n[..] {
                    h.breaker_window = (a + pa, (f + pf).min(a + pa));
                }
            }
            "cl" => h.concurrency_limit = value.parse().ok(),
            "pause" => h.paused_until_ms = value.parse().ok().filter(|p| *p > now_ms),
            bucket if bucket.starts_with('b') => {
                let mut p = value.splitn(3, ':').map(|n| n.parse::<u64>().ok());
                if let (Some(Some(start)), Some(Some(a)), Some(Some(f))) =
                    (p.next(), p.next(), p.next())
                    && start >= from
                    && start <= now_ms
                {
                    h.attempts += a;
                    h.failed += f.min(a);
                }
            }
            _ => {}
        }
    }
    out
}

/// The fields a target owns in its tenant's hash.
fn fields_of(target: &TargetId) -> Vec<String> {
    let mut f: Vec<String> = (0..BUCKETS).map(|k| format!("{target}:b{k}")).collect();
    for what in [
        "last",
        "ok_at",
        "fail_since",
        "br",
        "bw",
        "pause",
        "cl",
        "heal",
    ] {
        f.push(format!("{target}:{what}"));
    }
    f
}

impl Deliveries {
    /// How each of a tenant's targets fares (those without attempts are absent).
    pub async fn target_health(
        &self,
        shard: u16,
        tenant: &TenantId,
        now_ms: u64,
    ) -> Result<HashMap<TargetId, TargetHealth>, StoreError> {
        let fields: HashMap<String, String> = self
            .redis
            .hgetall(self.keys.target_health(shard, tenant))
            .await?;
        Ok(parse(fields, now_ms))
    }

    /// The same for many tenants in one round trip, in their order.
    pub async fn targets_health_of(
        &self,
        tenants: &[(u16, &TenantId)],
        now_ms: u64,
    ) -> Result<Vec<HashMap<TargetId, TargetHealth>>, StoreError> {
        if tenants.is_empty() {
            return Ok(Vec::new());
        }
        let pipeline = self.redis.pipeline();
        for (shard, tenant) in tenants {
            let _: () = pipeline
                .hgetall(self.keys.target_health(*shard, tenant))
                .await?;
        }
        let all: Vec<HashMap<String, String>> = pipeline.all().await?;
        Ok(all.into_iter().map(|f| parse(f, now_ms)).collect())
    }

    /// Forgets a deleted target's health.
    pub async fn forget_target_health(
        &self,
        shard: u16,
        tenant: &TenantId,
        target: &TargetId,
    ) -> Result<(), StoreError> {
        let _: i64 = self
            .redis
            .hdel(self.keys.target_health(shard, tenant), fields_of(target))
            .await?;
        Ok(())
    }

    /// Forgets the health of every target of a deleted tenant.
    pub async fn forget_tenant_health(
        &self,
        shard: u16,
        tenant: &TenantId,
    ) -> Result<(), StoreError> {
        let _: i64 = self
            .redis
            .del(self.keys.target_health(shard, tenant))
            .await?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn t(id: &str) -> TargetId {
        TargetId::parse(id).unwrap()
    }

    #[test]
    fn window_covers_the_last_hour_in_whole_buckets() {
        let now = 100 * BUCKET_MS + 123;
        assert_eq!(window_start(now), 94 * BUCKET_MS);
        assert!(now - window_start(now) >= WINDOW_MS);
        assert!(now - window_start(now) < WINDOW_MS + BUCKET_MS);
        assert_eq!(window_start(5), 0);
    }

    #[test]
    fn buckets_outside_the_window_and_unreadable_fields_are_ignored() {
        let now = 100 * BUCKET_MS + 5;
        let fields = HashMap::from([
            ("tgt_a:b4".to_owned(), format!("{}:10:2", 100 * BUCKET_MS)),
            ("tgt_a:b3".to_owned(), format!("{}:5:5", 99 * BUCKET_MS)),
            // Older than the window: a ring slot not yet written again.
            ("tgt_a:b5".to_owned(), format!("{}:7:7", 89 * BUCKET_MS)),
            ("tgt_a:b6".to_owned(), "garbage".to_owned()),
            ("tgt_a:ok_at".to_owned(), "1234".to_owned()),
            ("not a target:last".to_owned(), "x".to_owned()),
            ("tgt_b:fail_since".to_owned(), "99".to_owned()),
        ]);
        let h = parse(fields, now);
        let a = &h[&t("tgt_a")];
        assert_eq!((a.attempts, a.failed), (15, 7));
        assert_eq!(a.last_success_ms, Some(1234));
        assert_eq!(a.failing_since_ms, None);
        assert_eq!(a.state(true), HealthState::Degraded);
        assert_eq!(a.state(false), HealthState::Disabled);
        let b = &h[&t("tgt_b")];
        assert_eq!(b.state(true), HealthState::Failing);
        assert_eq!(b.success_ratio(), None);
        assert_eq!(h.len(), 2);
    }

    #[test]
    fn states_follow_the_ratio_and_the_newest_attempt() {
        let mut h = TargetHealth::none(0);
        assert_eq!(h.state(true), HealthState::Idle);
        h.attempts = 10;
        h.failed = 1;
        assert_eq!(h.state(true), HealthState::Healthy);
        h.failed = 2;
        assert_eq!(h.state(true), HealthState::Degraded);
        h.failed = 0;
        h.failing_since_ms = Some(1);
        assert_eq!(h.state(true), HealthState::Failing);
        assert!(HealthState::Failing.is_bad() && !HealthState::Idle.is_bad());
    }

    #[test]
    fn a_target_owns_twenty_fields() {
        let f = fields_of(&t("tgt_x"));
        assert_eq!(f.len(), 20);
        assert!(f.contains(&"tgt_x:b11".to_owned()) && f.contains(&"tgt_x:fail_since".to_owned()));
        assert!(
            f.contains(&"tgt_x:heal".to_owned()),
            "its probes end with it"
        );
    }
}
