//! The records read back: one event's, listing summaries, the operator's search by id, a
//! tenant's counters.

use std::collections::HashMap;

use fred::prelude::*;

use super::attempts::attempts_of;
use super::{Deliveries, DeliveryState, EventRecord, EventStatus, EventSummary};
use crate::model::delivery::Counters;
use crate::model::{EventId, TargetId, TenantId};
use crate::store::error::StoreError;

impl Deliveries {
    /// The tenant whose event `event_id` is, while Redis holds its record: the operator's
    /// search by id, which does not know the shard (one pipelined read per shard).
    pub async fn event_tenant(
        &self,
        shards: u16,
        event_id: &EventId,
    ) -> Result<Option<TenantId>, StoreError> {
        let pipeline = self.redis.pipeline();
        for shard in 0..shards {
            let _: () = pipeline
                .hget(self.keys.event_record(shard, event_id), "tenant")
                .await?;
        }
        let owners: Vec<Option<String>> = pipeline.all().await?;
        Ok(owners
            .into_iter()
            .flatten()
            .find_map(|t| TenantId::parse(&t).ok()))
    }

    /// The delivery record of one event of `tenant`; `None` when unknown (or another tenant's).
    pub async fn event(
        &self,
        shard: u16,
        tenant: &TenantId,
        event_id: &EventId,
    ) -> Result<Option<EventRecord>, StoreError> {
        let record: HashMap<String, Value> = self
            .redis
            .hgetall(self.keys.event_record(shard, event_id))
            .await?;
        let Some(parsed) = Parsed::of(&record).filter(|p| p.tenant == tenant.as_str()) else {
            return Ok(None);
        };
        // Records of earlier versions kept their attempts in a list of their own.
        let listed: Vec<String> = self
            .redis
            .lrange(self.keys.attempts(shard, event_id), 0, -1)
            .await?;
        let attempts = attempts_of(&record, &listed);
        Ok(Some(EventRecord {
            id: event_id.clone(),
            event_type: Some(parsed.event_type),
            content_type: parsed.content_type,
            received_at_ms: parsed.received_at_ms,
            deliveries: parsed.deliveries,
            attempts,
        }))
    }

    /// Listing summaries of these events of `tenant`, in order; `None` for an event whose
    /// record is gone or is another tenant's.
    pub async fn summaries(
        &self,
        shard: u16,
        tenant: &TenantId,
        ids: &[EventId],
    ) -> Result<Vec<Option<EventSummary>>, StoreError> {
        if ids.is_empty() {
            return Ok(Vec::new());
        }
        let pipeline = self.redis.pipeline();
        for id in ids {
            let _: () = pipeline.hgetall(self.keys.event_record(shard, id)).await?;
        }
        let rows: Vec<Value> = pipeline.all().await?;
        Ok(ids
            .iter()
            .zip(rows)
            .map(|(id, row)| {
                let fields = hash_fields(row);
                let p = Parsed::of(&fields).filter(|p| p.tenant == tenant.as_str())?;
                Some(p.summary(id.clone()))
            })
            .collect())
    }

    /// The tenant's counters.
    pub async fn counters(&self, shard: u16, tenant: &TenantId) -> Result<Counters, StoreError> {
        let c: HashMap<String, i64> = self.redis.hgetall(self.keys.stats(shard, tenant)).await?;
        let dead: u64 = self
            .redis
            .hlen(self.keys.dead_letters(shard, tenant))
            .await?;
        let get = |k: &str| c.get(k).copied().unwrap_or(0).max(0) as u64;
        Ok(Counters {
            events_received: get("events_received"),
            succeeded: get("succeeded"),
            failed: get("failed"),
            in_retry: get("in_retry"),
            dead_letters: dead,
            responses: get("responses"),
            response_ms_total: get("response_ms_total"),
        })
    }
}

/// The fields of an `HGETALL` reply (a RESP3 map or a RESP2 flat array).
pub(super) fn hash_fields(v: Value) -> HashMap<String, Value> {
    match v {
        Value::Map(m) => m
            .inner()
            .into_iter()
            .filter_map(|(k, v)| Some((k.as_str()?.to_string(), v)))
            .collect(),
        Value::Array(flat) => {
            let mut out = HashMap::with_capacity(flat.len() / 2);
            let mut it = flat.into_iter();
            while let (Some(k), Some(v)) = (it.next(), it.next()) {
                if let Some(k) = k.as_string() {
                    out.insert(k, v);
                }
            }
            out
        }
        _ => HashMap::new(),
    }
}

/// An event record's fields, read.
pub(super) struct Parsed {
    pub(super) tenant: String,
    pub(super) event_type: String,
    pub(super) content_type: Option<String>,
    pub(super) received_at_ms: u64,
    pub(super) deliveries: Vec<(TargetId, Option<DeliveryState>)>,
}

impl Parsed {
    /// `None` for a record without a tenant (gone, or not a record).
    pub(super) fn of(record: &HashMap<String, Value>) -> Option<Parsed> {
        let text = |k: &str| record.get(k).and_then(|v| v.as_string());
        let tenant = text("tenant")?;
        let mut deliveries: Vec<(TargetId, Option<DeliveryState>)> = record
            .iter()
            .filter_map(|(k, v)| {
                let t = TargetId::parse(k.strip_prefix("d:")?).ok()?;
                Some((t, v.as_string().and_then(|s| DeliveryState::decode(&s))))
            })
            .collect();
        // Records of earlier versions list their targets; a target without a state is pending.
        for t in text("targets").unwrap_or_default().split(',') {
            if let Ok(t) = TargetId::parse(t) {
                if !deliveries.iter().any(|(d, _)| *d == t) {
                    deliveries.push((t, None));
                }
            }
        }
        deliveries.sort_by(|a, b| a.0.cmp(&b.0));
        Some(Parsed {
            tenant,
            event_type: text("type").unwrap_or_default(),
            content_type: text("ct").filter(|c| !c.is_empty()),
            received_at_ms: text("at").and_then(|s| s.parse::<u64>().ok()).unwrap_or(0),
            deliveries,
        })
    }

    pub(super) fn summary(self, id: EventId) -> EventSummary {
        EventSummary {
            status: EventStatus::of(
                self.deliveries
                    .iter()
                    .map(|(_, s)| s.as_ref().map(|s| s.state)),
            ),
            id,
            event_type: self.event_type,
            content_type: self.content_type,
            received_at_ms: self.received_at_ms,
            deliveries: self
                .deliveries
                .into_iter()
                .map(|(t, s)| {
                    let s = s.unwrap_or_else(DeliveryState::pending);
                    (t, s.state, s.attempts)
                })
                .collect(),
        }
    }
}
