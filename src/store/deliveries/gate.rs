//! A target's gate in Redis, shared by every dispatcher: its circuit breaker (moved by
//! `record.lua` with the target's health, and asked by `breaker_probe.lua` once its open time
//! is over), the pause a 429's `Retry-After` puts on all its deliveries, and its rate limit
//! (`rate_limit.lua`, a GCRA on Redis's clock).

use std::time::Duration;

use super::Deliveries;
pub use crate::model::target_health::{Breaker, BreakerState, Class, GateNote, GateReport, News};
use crate::model::{RateLimit, TargetId, TenantId};
use crate::redis::scripts::{BREAKER_PROBE, RATE_LIMIT};
use crate::store::error::StoreError;
use fred::prelude::*;

/// The breaker's answer to a delivery that wants to go.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Probe {
    /// Closed: go.
    Pass,
    /// Go, as one of the half-open breaker's probes.
    Probe,
    /// Wait until then (ms).
    WaitUntil(u64),
}

impl Deliveries {
    /// Asks a target's breaker whether a delivery may go now (`breaker_probe.lua`).
    pub async fn probe_breaker(
        &self,
        shard: u16,
        tenant: &TenantId,
        target: &TargetId,
        probes: u32,
        probe_timeout: Duration,
    ) -> Result<Probe, StoreError> {
        let now = self.clock.now_ms();
        let answer: String = BREAKER_PROBE
            .run(
                &self.redis,
                vec![self.keys.target_health(shard, tenant)],
                vec![
                    target.to_string(),
                    now.to_string(),
                    probes.to_string(),
                    (probe_timeout.as_millis() as u64).to_string(),
                ],
            )
            .await?;
        let wait = |v: &str| v.parse::<u64>().map(Probe::WaitUntil).ok();
        Ok(match answer.split_once(':') {
            None if answer == "p" => Probe::Probe,
            Some(("o" | "h", at)) => wait(at).unwrap_or(Probe::Pass),
            _ => Probe::Pass,
        })
    }

    /// One delivery against a target's shared rate limit: `None` when it may go, else how
    /// long until a cell frees.
    pub async fn rate_wait(
        &self,
        shard: u16,
        tenant: &TenantId,
        target: &TargetId,
        limit: &RateLimit,
    ) -> Result<Option<Duration>, StoreError> {
        let period_us = (1_000_000.0 / limit.per_second()).round().max(1.0) as u64;
        let wait_us: u64 = RATE_LIMIT
            .run(
                &self.redis,
                vec![self.keys.target_rate(shard, tenant, target)],
                vec![period_us.to_string(), limit.effective_burst().to_string()],
            )
            .await?;
        Ok((wait_us > 0).then(|| Duration::from_micros(wait_us)))
    }

    /// A target's breaker and pause as Redis holds them now.
    pub async fn gate_of(
        &self,
        shard: u16,
        tenant: &TenantId,
        target: &TargetId,
    ) -> Result<(Breaker, u64), StoreError> {
        let (br, pause): (Option<String>, Option<String>) = self
            .redis
            .hmget(
                self.keys.target_health(shard, tenant),
                vec![format!("{target}:br"), format!("{target}:pause")],
            )
            .await?;
        Ok((
            br.as_deref().and_then(Breaker::decode).unwrap_or_default(),
            pause.and_then(|p| p.parse().ok()).unwrap_or(0),
        ))
    }

    /// Forgets a target's breaker, window and pause: an operator enabled it again, and it
    /// starts closed.
    pub async fn reset_gate(
        &self,
        shard: u16,
        tenant: &TenantId,
        target: &TargetId,
    ) -> Result<(), StoreError> {
        let _: i64 = self
            .redis
            .hdel(
                self.keys.target_health(shard, tenant),
                vec![
                    format!("{target}:br"),
                    format!("{target}:bw"),
                    format!("{target}:pause"),
                    format!("{target}:fail_since"),
                ],
            )
            .await?;
        Ok(())
    }
}
