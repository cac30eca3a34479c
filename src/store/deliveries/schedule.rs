//! The retry schedule: claiming due deliveries under a lease, setting aside what cannot be
//! claimed, dropping deliveries whose target is gone.

use bytes::Bytes;
use fred::prelude::*;
use serde::Deserialize;

use super::{Deliveries, DeliveryState, State};
use crate::model::delivery::{DueDelivery, Next, Outcome};
use crate::model::{EventId, EventType, TargetId, TenantId};
use crate::redis::scripts::CLAIM_DUE;
use crate::store::error::StoreError;

impl Deliveries {
    /// Claims up to `limit` due deliveries of `shard`, leased until `lease_until_ms`, and loads
    /// what they need. Deliveries whose event record expired are dropped from the schedule.
    pub async fn claim_due(
        &self,
        shard: u16,
        now_ms: u64,
        lease_until_ms: u64,
        limit: usize,
    ) -> Result<Vec<DueDelivery>, StoreError> {
        #[derive(Deserialize)]
        struct Claimed {
            #[serde(deserialize_with = "crate::redis::scripts::list")]
            members: Vec<String>,
        }
        let retries = self.keys.retries(shard);
        let claimed: Claimed = CLAIM_DUE
            .run(
                &self.redis,
                vec![retries.clone()],
                vec![
                    now_ms.to_string(),
                    lease_until_ms.to_string(),
                    limit.to_string(),
                ],
            )
            .await?;
        if claimed.members.is_empty() {
            return Ok(Vec::new());
        }
        let pipeline = self.redis.pipeline();
        let mut parsed = Vec::with_capacity(claimed.members.len());
        for m in claimed.members {
            let ids = m
                .split_once(':')
                .and_then(|(e, t)| Some((EventId::parse(e).ok()?, TargetId::parse(t).ok()?)));
            let Some((event, target)) = ids else {
                self.set_aside_due(shard, &m, "a malformed member of the retry schedule")
                    .await?;
                continue;
            };
            let fields = vec![
                "tenant".to_owned(),
                "type".into(),
                "ct".into(),
                "body".into(),
                format!("d:{target}"),
            ];
            let _: () = pipeline
                .hmget(self.keys.event_record(shard, &event), fields)
                .await?;
            parsed.push((m, event, target));
        }
        if parsed.is_empty() {
            return Ok(Vec::new());
        }
        // Each read on its own: one record of the wrong type must not hold up the others.
        let rows: Vec<Result<Vec<Value>, fred::error::Error>> = pipeline.try_all().await;
        let mut out = Vec::with_capacity(parsed.len());
        for ((member, event_id, target_id), row) in parsed.into_iter().zip(rows) {
            let row = match row {
                Ok(row) => row,
                Err(e) if crate::redis::connection::is_data_fault(&e) => {
                    self.set_aside_due(shard, &member, &e.to_string()).await?;
                    continue;
                }
                Err(e) => return Err(e.into()),
            };
            let text = |i: usize| row.get(i).and_then(|v| v.as_string());
            let loaded = (|| {
                Some((
                    TenantId::parse(&text(0)?).ok()?,
                    EventType::parse(&text(1)?).ok()?,
                    row.get(3)?.as_bytes().map(Bytes::copy_from_slice)?,
                ))
            })();
            let Some((tenant, event_type, body)) = loaded else {
                tracing::warn!(
                    event_id = %event_id,
                    target_id = %target_id,
                    "a scheduled delivery's event record has expired; dropping it"
                );
                let _: i64 = self.redis.zrem(&retries, member.clone()).await?;
                continue;
            };
            let content_type = row
                .get(2)
                .and_then(|v| v.as_bytes())
                .filter(|b| !b.is_empty())
                .map(Bytes::copy_from_slice);
            let state = text(4).and_then(|s| DeliveryState::decode(&s));
            out.push(DueDelivery {
                member,
                event_id,
                target_id,
                tenant,
                event_type,
                content_type,
                body,
                attempts_so_far: state.as_ref().map(|s| s.attempts).unwrap_or(0),
                deferrals_so_far: state.as_ref().map(|s| s.deferrals).unwrap_or(0),
            });
        }
        Ok(out)
    }

    /// Takes a member of the retry schedule that cannot be processed off it, into the shard's
    /// quarantine: it would otherwise come back at every lease's end.
    async fn set_aside_due(
        &self,
        shard: u16,
        member: &str,
        reason: &str,
    ) -> Result<(), StoreError> {
        // In the quarantine first: a failure between the two steps leaves it on the schedule.
        crate::store::quarantine::put(
            &self.redis,
            &self.keys,
            shard,
            "retries",
            member,
            reason,
            Vec::new(),
        )
        .await?;
        let _: i64 = self.redis.zrem(self.keys.retries(shard), member).await?;
        if let Some(event) = member
            .split_once(':')
            .and_then(|(e, _)| EventId::parse(e).ok())
        {
            self.release_unfinished(shard, &event).await?;
        }
        Ok(())
    }

    /// Stops counting `event` as unfinished, once what held it open was set aside: stream
    /// retention and shipping never wait for it again.
    pub async fn release_unfinished(&self, shard: u16, event: &EventId) -> Result<(), StoreError> {
        let _: i64 = self
            .redis
            .zrem(self.keys.unfinished(shard), event.as_str())
            .await?;
        Ok(())
    }

    /// Drops a delivery whose target is gone: off the schedule, and finished in its record
    /// (dead-lettered, with no error queue entry), so its event can be shipped.
    pub async fn unschedule(
        &self,
        shard: u16,
        tenant: &TenantId,
        event_id: &EventId,
        target_id: &TargetId,
        attempts: u32,
    ) -> Result<(), StoreError> {
        let now = self.clock.now_ms();
        let outcome = Outcome {
            shard,
            tenant: tenant.clone(),
            event_id: event_id.clone(),
            target_id: target_id.clone(),
            state: DeliveryState {
                state: State::DeadLettered,
                attempts,
                last_status: None,
                last_error: Some("the target was deleted".into()),
                next_retry_at_ms: None,
                updated_at_ms: now,
                deferrals: 0,
            },
            attempt: None,
            next: Next::Dropped,
            body: Bytes::new(),
            content_type: None,
            gate: None,
        };
        self.record(&outcome).await
    }

    /// Deliveries waiting in `shard`'s schedule.
    pub async fn scheduled(&self, shard: u16) -> Result<u64, StoreError> {
        Ok(self.redis.zcard(self.keys.retries(shard)).await?)
    }
}
