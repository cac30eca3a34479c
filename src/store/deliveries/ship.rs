//! The log store's side of the records: who ships a shard (a lease), which finished events
//! are ready to ship, and marking them shipped so retention may drop them.

use bytes::Bytes;
use fred::prelude::*;
use serde::Deserialize;

use super::attempts::attempts_of;
use super::views::{Parsed, hash_fields};
use super::{Deliveries, DeliveryState, LoggedEvent};
use crate::model::{EventId, TenantId};
use crate::redis::scripts::{LEASE, SHIPPED};
use crate::store::error::StoreError;

/// An event of a shard's ship queue, as read for shipping.
#[derive(Debug, Clone)]
pub struct ShipCandidate {
    pub id: EventId,
    /// Its finish count when read ([`Deliveries::mark_shipped`] checks it did not move).
    pub fin: String,
    /// When it last finished (ms).
    pub finished_at_ms: u64,
    /// The stream entry that expanded it (`restored` for a record brought back for a replay).
    pub entry: String,
    /// `None` when its record is gone.
    pub event: Option<LoggedEvent>,
}

impl Deliveries {
    /// Takes or renews the lease of shipping `shard` for `holder`; `true` when it holds it.
    pub async fn lease_shipping(
        &self,
        shard: u16,
        holder: &str,
        lease: std::time::Duration,
    ) -> Result<bool, StoreError> {
        #[derive(Deserialize)]
        struct Answer {
            held: bool,
        }
        let a: Answer = LEASE
            .run(
                &self.redis,
                vec![self.keys.ship_lease(shard)],
                vec![holder.to_owned(), lease.as_millis().to_string()],
            )
            .await?;
        Ok(a.held)
    }

    /// The oldest events of `shard`'s ship queue, with what the log store keeps of them. The
    /// bodies that only the stream holds are left empty for the caller to fetch.
    pub async fn ship_candidates(
        &self,
        shard: u16,
        limit: usize,
    ) -> Result<Vec<ShipCandidate>, StoreError> {
        self.prune_unfinished(shard).await?;
        let members: Vec<String> = self
            .redis
            .zrange(
                self.keys.ship(shard),
                0,
                limit as i64 - 1,
                None,
                false,
                None,
                false,
            )
            .await?;
        let ids: Vec<EventId> = members
            .iter()
            .filter_map(|m| EventId::parse(m).ok())
            .collect();
        if ids.len() != members.len() {
            let bad: Vec<&String> = members
                .iter()
                .filter(|m| EventId::parse(m).is_err())
                .collect();
            tracing::warn!(
                shard,
                count = bad.len(),
                "dropping malformed members of the ship queue"
            );
            let _: i64 = self.redis.zrem(self.keys.ship(shard), bad).await?;
        }
        if ids.is_empty() {
            return Ok(Vec::new());
        }
        let pipeline = self.redis.pipeline();
        for id in &ids {
            let _: () = pipeline.hgetall(self.keys.event_record(shard, id)).await?;
            let _: () = pipeline
                .lrange(self.keys.attempts(shard, id), 0, -1)
                .await?;
        }
        let rows: Vec<Value> = pipeline.all().await?;
        let mut rows = rows.into_iter();
        let mut out = Vec::with_capacity(ids.len());
        for id in ids {
            let (Some(record), Some(attempts)) = (rows.next(), rows.next()) else {
                break;
            };
            let fields = hash_fields(record);
            let text = |k: &str| fields.get(k).and_then(|v| v.as_string());
            let fin = text("fin").unwrap_or_default();
            let finished_at_ms = text("fin_at").and_then(|t| t.parse().ok()).unwrap_or(0);
            let entry = text("entry").unwrap_or_default();
            let event = Parsed::of(&fields).and_then(|p| {
                let tenant = TenantId::parse(&p.tenant).ok()?;
                let body = fields
                    .get("body")
                    .and_then(|v| v.as_bytes())
                    .map(Bytes::copy_from_slice)
                    .unwrap_or_default();
                let listed: Vec<String> = match &attempts {
                    Value::Array(items) => items.iter().filter_map(|a| a.as_string()).collect(),
                    _ => Vec::new(),
                };
                let attempts = attempts_of(&fields, &listed);
                Some(LoggedEvent {
                    tenant,
                    id: id.clone(),
                    received_at_ms: p.received_at_ms,
                    event_type: p.event_type,
                    content_type: p.content_type,
                    body,
                    deliveries: p
                        .deliveries
                        .into_iter()
                        .map(|(t, s)| (t, s.unwrap_or_else(DeliveryState::pending)))
                        .collect(),
                    attempts,
                })
            });
            out.push(ShipCandidate {
                id,
                fin,
                finished_at_ms,
                entry,
                event,
            });
        }
        Ok(out)
    }

    /// Drops from the head of `shard`'s unfinished set the events whose records are gone
    /// (expired past retention, or a delivery dropped with its target): they must not hold
    /// back the stream's trimming.
    async fn prune_unfinished(&self, shard: u16) -> Result<(), StoreError> {
        let key = self.keys.unfinished(shard);
        let head: Vec<String> = self
            .redis
            .zrange(&key, 0, 15, None, false, None, false)
            .await?;
        if head.is_empty() {
            return Ok(());
        }
        let pipeline = self.redis.pipeline();
        let mut ids = Vec::with_capacity(head.len());
        for m in &head {
            match EventId::parse(m) {
                Ok(id) => {
                    let _: () = pipeline.exists(self.keys.event_record(shard, &id)).await?;
                    ids.push(m.clone());
                }
                Err(_) => {
                    let _: i64 = self.redis.zrem(&key, m.clone()).await?;
                }
            }
        }
        if ids.is_empty() {
            return Ok(());
        }
        let exists: Vec<i64> = pipeline.all().await?;
        let gone: Vec<String> = ids
            .into_iter()
            .zip(exists)
            .filter(|(_, e)| *e == 0)
            .map(|(m, _)| m)
            .collect();
        if !gone.is_empty() {
            let _: i64 = self.redis.zrem(&key, gone).await?;
        }
        Ok(())
    }

    /// Marks events as stored in the log store (see `shipped.lua`); how many left the queue.
    pub async fn mark_shipped(
        &self,
        shard: u16,
        marks: &[(EventId, String)],
        hot_window: std::time::Duration,
    ) -> Result<u64, StoreError> {
        #[derive(Deserialize)]
        struct Answer {
            shipped: u64,
        }
        if marks.is_empty() {
            return Ok(0);
        }
        let mut keys = Vec::with_capacity(1 + marks.len() * 2);
        keys.push(self.keys.ship(shard));
        let mut args = Vec::with_capacity(2 + marks.len() * 2);
        args.push(hot_window.as_secs().max(1).to_string());
        args.push(marks.len().to_string());
        for (id, fin) in marks {
            keys.push(self.keys.event_record(shard, id));
            keys.push(self.keys.attempts(shard, id));
            args.push(id.to_string());
            args.push(fin.clone());
        }
        let a: Answer = SHIPPED.run(&self.redis, keys, args).await?;
        Ok(a.shipped)
    }
}
