//! Recording delivery outcomes: state, attempt log, counters, schedule and error queue, per
//! outcome in one script call per batch.

use bytes::Bytes;
use fred::prelude::*;
use serde::Deserialize;

use super::{Deliveries, json, member};
use crate::model::delivery::{Next, Outcome, Recorded};
use crate::redis::scripts::RECORD;
use crate::store::error::StoreError;
use crate::store::series::{self, hour_of};

/// `record.lua`'s answer.
#[derive(Debug, Deserialize)]
struct RecordAnswer {
    #[serde(default, deserialize_with = "crate::redis::scripts::list")]
    failed: Vec<(usize, String)>,
    #[serde(default, deserialize_with = "crate::redis::scripts::list")]
    counters_failed: Vec<String>,
    #[serde(default, deserialize_with = "crate::redis::scripts::list")]
    gates: Vec<super::gate::GateReport>,
}

impl Deliveries {
    /// Records outcomes of one shard in one call, each on its own (state, attempt log,
    /// counters, schedule, error queue): an outcome whose keys Redis refuses fails alone and
    /// is named in the answer, and is never applied twice (see `record.lua`).
    pub async fn record_many(
        &self,
        shard: u16,
        outcomes: &[Outcome],
    ) -> Result<Recorded, StoreError> {
        if outcomes.is_empty() {
            return Ok(Recorded::default());
        }
        // One `now` names the series' hour here and their minute in the script.
        let now = self.clock.now_ms();
        let hour = hour_of(now);
        let mut keys = Vec::with_capacity(5 + outcomes.len() * 6);
        keys.push(self.keys.retries(shard));
        keys.push(self.keys.dead_letter_total(shard));
        keys.push(self.keys.unfinished(shard));
        keys.push(self.keys.ship(shard));
        keys.push(self.keys.series_all(shard, hour));
        let mut args: Vec<Value> = Vec::with_capacity(6 + outcomes.len() * 14);
        args.push((outcomes.len() as i64).into());
        args.push(i64::from(self.attempts_kept).into());
        args.push((self.ttl_secs as i64).into());
        args.push((now as i64).into());
        args.push(self.logged_flag().into());
        args.push((series::TTL_S as i64).into());
        for o in outcomes {
            keys.push(self.keys.event_record(shard, &o.event_id));
            keys.push(self.keys.stats(shard, &o.tenant));
            keys.push(self.keys.dead_letters(shard, &o.tenant));
            keys.push(self.keys.series(shard, &o.tenant, hour));
            keys.push(self.keys.dead_letter_order(shard, &o.tenant));
            keys.push(self.keys.target_health(shard, &o.tenant));
            let (kind, due, dl_id, dl_json) = match &o.next {
                Next::Done => ("done", String::new(), String::new(), String::new()),
                Next::RetryAt(due) => ("retry", due.to_string(), String::new(), String::new()),
                Next::HeldUntil(_) => ("held", String::new(), String::new(), String::new()),
                Next::DeadLetter(dl) => ("dead", String::new(), dl.id.to_string(), json(dl)?),
                Next::Dropped => ("drop", String::new(), String::new(), String::new()),
            };
            let latency = o
                .attempt
                .as_ref()
                .filter(|a| a.status.is_some())
                .map(|a| a.latency_ms.to_string())
                .unwrap_or_default();
            // Every attempt's duration, answered or not: the series' mean is over attempts.
            // A delivery given up (its target gone, or its transformation cancelled it) made
            // no attempt to count.
            let attempt_ms = o
                .attempt
                .as_ref()
                .filter(|_| kind != "drop")
                .map(|a| a.latency_ms.to_string())
                .unwrap_or_default();
            // The body is sent only when the outcome keeps the event beyond its stream entry.
            let needs_body = matches!(kind, "retry" | "dead");
            let attempt = match &o.attempt {
                Some(a) => a.encode(),
                None => String::new(),
            };
            args.extend([
                Value::from(o.event_id.as_str()),
                Value::from(o.target_id.as_str()),
                o.state.encode().into(),
                attempt.into(),
                kind.into(),
                due.into(),
                member(&o.event_id, &o.target_id).into(),
                Value::Bytes(if needs_body {
                    o.body.clone()
                } else {
                    Bytes::new()
                }),
                Value::Bytes(o.content_type.clone().unwrap_or_default()),
                dl_id.into(),
                dl_json.into(),
                latency.into(),
                attempt_ms.into(),
                o.gate
                    .as_ref()
                    .filter(|_| kind != "drop")
                    .map(|g| g.encode())
                    .unwrap_or_default()
                    .into(),
            ]);
        }
        let answer: RecordAnswer = RECORD.run(&self.redis, keys, args).await?;
        Ok(Recorded {
            failed: answer
                .failed
                .into_iter()
                .map(|(i, why)| (i.saturating_sub(1), why))
                .collect(),
            counters_failed: answer.counters_failed,
            gates: answer.gates,
            at_ms: now,
        })
    }

    /// Records one outcome; `StoreError::Refused` when Redis refuses it for what its keys hold.
    pub async fn record(&self, o: &Outcome) -> Result<(), StoreError> {
        let recorded = self.record_many(o.shard, std::slice::from_ref(o)).await?;
        match recorded.failed.into_iter().next() {
            None => Ok(()),
            Some((_, why)) => Err(StoreError::Refused(why)),
        }
    }

    /// The types of the keys of `o`'s own (its record, its tenant's counters, error queue and
    /// its order, series of the hour, target health) that are not what they should be: what a refused outcome is at fault for, as
    /// opposed to a key the whole shard shares.
    pub async fn foreign_keys_of(&self, o: &Outcome) -> Result<Vec<(String, String)>, StoreError> {
        let hour = hour_of(self.clock.now_ms());
        let own = [
            self.keys.event_record(o.shard, &o.event_id),
            self.keys.stats(o.shard, &o.tenant),
            self.keys.dead_letters(o.shard, &o.tenant),
            self.keys.series(o.shard, &o.tenant, hour),
            self.keys.target_health(o.shard, &o.tenant),
        ];
        let mut wrong = Vec::new();
        let order = self.keys.dead_letter_order(o.shard, &o.tenant);
        for (key, expected) in own
            .into_iter()
            .map(|k| (k, "hash"))
            .chain([(order, "zset")])
        {
            let kind: String = self.redis.r#type(&key).await?;
            if kind != expected && kind != "none" {
                wrong.push((key, kind));
            }
        }
        Ok(wrong)
    }
}
