//! Sending again: one dead-lettered delivery back into the schedule, and an event read back
//! from the log store written into Redis for it.

use fred::prelude::*;
use serde::Deserialize;

use super::{Deliveries, DeliveryState, LoggedEvent, Replayed, State, member};
use crate::model::{DeadLetterId, EventId, TargetId, TenantId};
use crate::redis::scripts::{REPLAY, RESTORE};
use crate::store::error::StoreError;

/// How a delivery is sent again.
#[derive(Debug, Clone)]
pub struct Resend<'a> {
    /// Its error queue entry, removed.
    pub dl_id: Option<&'a DeadLetterId>,
    /// The status and error its record keeps showing until the next attempt.
    pub last: Option<(Option<u16>, Option<String>)>,
    /// Whether a target the event never went to is sent it (a target enabled again after
    /// the event came).
    pub fresh: bool,
    /// Its place in the retry schedule.
    pub due_ms: u64,
}

impl Deliveries {
    /// Sends one delivery again: a dead-lettered one (or, `fresh`, one never made) back into
    /// the schedule with fresh attempts.
    pub async fn send_again(
        &self,
        shard: u16,
        tenant: &TenantId,
        event_id: &EventId,
        target_id: &TargetId,
        how: &Resend<'_>,
    ) -> Result<Replayed, StoreError> {
        let Resend {
            dl_id,
            last,
            fresh,
            due_ms,
        } = how.clone();
        #[derive(Deserialize)]
        struct Answer {
            replayed: u64,
            missing: bool,
        }
        let now = self.clock.now_ms();
        let (last_status, last_error) = last.unwrap_or_default();
        let state = DeliveryState {
            state: State::Retrying,
            attempts: 0,
            last_status,
            last_error,
            next_retry_at_ms: Some(due_ms),
            updated_at_ms: now,
            deferrals: 0,
        };
        let keys = vec![
            self.keys.dead_letters(shard, tenant),
            self.keys.retries(shard),
            self.keys.stats(shard, tenant),
            self.keys.event_record(shard, event_id),
            self.keys.dead_letter_total(shard),
            self.keys.attempts(shard, event_id),
            self.keys.unfinished(shard),
            self.keys.ship(shard),
            self.keys.dead_letter_order(shard, tenant),
        ];
        let args = vec![
            dl_id.map(|d| d.to_string()).unwrap_or_default(),
            member(event_id, target_id),
            target_id.to_string(),
            state.encode(),
            now.to_string(),
            self.ttl_secs.to_string(),
            event_id.to_string(),
            if fresh { "1" } else { "0" }.to_owned(),
            due_ms.to_string(),
        ];
        let r: Answer = REPLAY.run(&self.redis, keys, args).await?;
        Ok(match (r.missing, r.replayed) {
            (true, _) => Replayed::Missing,
            (false, 1) => Replayed::Replayed,
            _ => Replayed::Skipped,
        })
    }

    /// Writes an event read back from the log store into Redis (unless its record is there);
    /// `true` when it was written.
    pub async fn restore(&self, shard: u16, e: &LoggedEvent) -> Result<bool, StoreError> {
        #[derive(Deserialize)]
        struct Answer {
            restored: bool,
        }
        let mut args: Vec<Value> = vec![
            (self.ttl_secs as i64).into(),
            self.logged_flag().into(),
            e.tenant.as_str().into(),
            e.event_type.as_str().into(),
            e.content_type.clone().unwrap_or_default().into(),
            (e.received_at_ms as i64).into(),
            Value::Bytes(e.body.clone()),
        ];
        for (target, state) in &e.deliveries {
            args.push(target.as_str().into());
            args.push(state.encode().into());
        }
        let a: Answer = RESTORE
            .run(
                &self.redis,
                vec![self.keys.event_record(shard, &e.id)],
                args,
            )
            .await?;
        Ok(a.restored)
    }
}
