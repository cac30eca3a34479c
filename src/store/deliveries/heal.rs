//! Targets the gateway disabled for failing, and their probes: each waits in the shard's
//! heal schedule (leased like the retry schedule, so one dispatcher probes it at a time)
//! with its progress in the tenant's health hash (`<target>:heal`).

use super::Deliveries;
use crate::model::{TargetId, TenantId};
use crate::redis::scripts::CLAIM_DUE;
use crate::store::error::StoreError;
use fred::prelude::*;

/// Where a disabled target's probing stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Healing {
    /// The wait before the next probe after a failed one (doubled each time).
    pub wait_ms: u64,
    /// 2xx answers in a row.
    pub oks: u32,
    /// Since when it failed: the start of the gap replayed when it is enabled again.
    pub since_ms: u64,
}

impl Healing {
    fn encode(&self) -> String {
        format!("{}:{}:{}", self.wait_ms, self.oks, self.since_ms)
    }

    fn decode(v: &str) -> Option<Healing> {
        let mut p = v.split(':').map(|n| n.parse::<u64>().ok());
        match (p.next(), p.next(), p.next(), p.next()) {
            (Some(Some(wait_ms)), Some(Some(oks)), Some(Some(since_ms)), None) => Some(Healing {
                wait_ms,
                oks: u32::try_from(oks).ok()?,
                since_ms,
            }),
            _ => None,
        }
    }
}

fn member(tenant: &TenantId, target: &TargetId) -> String {
    format!("{tenant} {target}")
}

impl Deliveries {
    /// Puts `target` on the heal schedule, probed at `due_ms`, with `healing` as its progress.
    pub async fn schedule_heal(
        &self,
        shard: u16,
        tenant: &TenantId,
        target: &TargetId,
        healing: Healing,
        due_ms: u64,
    ) -> Result<(), StoreError> {
        let tx = self.redis.multi();
        let _: () = tx
            .hset(
                self.keys.target_health(shard, tenant),
                (format!("{target}:heal"), healing.encode()),
            )
            .await?;
        let _: () = tx
            .zadd(
                self.keys.heal(shard),
                None,
                None,
                false,
                false,
                (due_ms as f64, member(tenant, target)),
            )
            .await?;
        let _: Value = tx.exec(true).await?;
        Ok(())
    }

    /// Takes `target` off the heal schedule (enabled, deleted, or disabled by an operator).
    pub async fn end_heal(
        &self,
        shard: u16,
        tenant: &TenantId,
        target: &TargetId,
    ) -> Result<(), StoreError> {
        let tx = self.redis.multi();
        let _: () = tx
            .hdel(
                self.keys.target_health(shard, tenant),
                format!("{target}:heal"),
            )
            .await?;
        let _: () = tx
            .zrem(self.keys.heal(shard), member(tenant, target))
            .await?;
        let _: Value = tx.exec(true).await?;
        Ok(())
    }

    /// Claims up to `limit` targets due for a probe, leased until `lease_until_ms`, with their
    /// progress (`None` when it was lost: the caller starts it again).
    pub async fn claim_heals(
        &self,
        shard: u16,
        now_ms: u64,
        lease_until_ms: u64,
        limit: usize,
    ) -> Result<Vec<(TenantId, TargetId, Option<Healing>)>, StoreError> {
        #[derive(serde::Deserialize)]
        struct Claimed {
            members: Vec<String>,
        }
        let claimed: Claimed = CLAIM_DUE
            .run(
                &self.redis,
                vec![self.keys.heal(shard)],
                vec![
                    now_ms.to_string(),
                    lease_until_ms.to_string(),
                    limit.to_string(),
                ],
            )
            .await?;
        let mut out = Vec::with_capacity(claimed.members.len());
        for m in claimed.members {
            let parsed = m.split_once(' ').and_then(|(tenant, target)| {
                Some((TenantId::parse(tenant).ok()?, TargetId::parse(target).ok()?))
            });
            let Some((tenant, target)) = parsed else {
                // Not written by this code: nothing can probe it.
                tracing::warn!(shard, member = %m, "dropping an unreadable heal schedule member");
                let _: i64 = self.redis.zrem(self.keys.heal(shard), m).await?;
                continue;
            };
            let state: Option<String> = self
                .redis
                .hget(
                    self.keys.target_health(shard, &tenant),
                    format!("{target}:heal"),
                )
                .await?;
            let healing = state.as_deref().and_then(Healing::decode);
            out.push((tenant, target, healing));
        }
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn progress_reads_back_and_refuses_what_it_did_not_write() {
        let h = Healing {
            wait_ms: 120_000,
            oks: 1,
            since_ms: 1_733_549_000_000,
        };
        assert_eq!(Healing::decode(&h.encode()), Some(h));
        for bad in ["", "1:2", "1:2:3:4", "a:1:2", "1:-1:2", "1:99999999999:2"] {
            assert_eq!(Healing::decode(bad), None, "{bad}");
        }
    }
}
