//! Writing an event's deliveries when its stream entry is read: the record and its
//! expansion guard, or (without deliveries or a log store) only the received counters.

use std::collections::BTreeMap;

use fred::prelude::*;
use serde::Deserialize;

use super::Deliveries;
use crate::model::delivery::Expansion;
use crate::model::{TargetId, TenantId};
use crate::redis::scripts::EXPAND;
use crate::store::error::StoreError;
use crate::store::series::{self, hour_of};

impl Deliveries {
    /// Records the expansion of events read from `shard`'s stream, in one call; per event,
    /// `None` for a duplicate seen in another entry, else the targets whose delivery needs
    /// nothing more (empty on a first read; on a re-read, those with an outcome recorded).
    ///
    /// Without a log store, an event that matches no target gets no record: it only counts as
    /// received (once per read of its entry), and its view and listing row come from the
    /// stream entry. Nothing is delivered for it, so a second entry holding it (a re-sent
    /// `XADD`) has nothing to repeat; the guard against that is the record, which only
    /// events with deliveries need.
    pub async fn expand(
        &self,
        shard: u16,
        events: &[Expansion<'_>],
    ) -> Result<Vec<Option<Vec<String>>>, StoreError> {
        #[derive(Deserialize)]
        struct Expanded {
            #[serde(deserialize_with = "crate::redis::scripts::list")]
            owned: Vec<bool>,
            #[serde(deserialize_with = "crate::redis::scripts::list")]
            settled: Vec<String>,
        }
        let (recorded, counted): (Vec<&Expansion<'_>>, Vec<&Expansion<'_>>) =
            events.iter().partition(|e| self.needs_record(e));
        let mut received: BTreeMap<&TenantId, u64> = BTreeMap::new();
        for e in &counted {
            *received.entry(e.tenant).or_default() += 1;
        }
        // One `now` names the series' hour here and their minute in the script.
        let now = self.clock.now_ms();
        let hour = hour_of(now);
        if recorded.is_empty() {
            self.count_received(shard, &received, now).await?;
            return Ok(events.iter().map(|_| Some(Vec::new())).collect());
        }
        let mut keys: Vec<String> = Vec::with_capacity(3 * recorded.len() + 3 + 2 * received.len());
        keys.extend(
            recorded
                .iter()
                .map(|e| self.keys.event_record(shard, e.event_id)),
        );
        keys.extend(recorded.iter().map(|e| self.keys.stats(shard, e.tenant)));
        keys.extend(
            recorded
                .iter()
                .map(|e| self.keys.series(shard, e.tenant, hour)),
        );
        keys.push(self.keys.unfinished(shard));
        keys.push(self.keys.ship(shard));
        keys.push(self.keys.series_all(shard, hour));
        for t in received.keys() {
            keys.push(self.keys.stats(shard, t));
            keys.push(self.keys.series(shard, t, hour));
        }
        let mut args: Vec<String> = Vec::with_capacity(5 + recorded.len() * 8 + received.len());
        args.push(self.ttl_secs.to_string());
        args.push(recorded.len().to_string());
        args.push(self.logged_flag().to_owned());
        args.push(now.to_string());
        args.push(series::TTL_S.to_string());
        let joined = |ids: &[&TargetId]| {
            let ids: Vec<&str> = ids.iter().map(|t| t.as_str()).collect();
            ids.join(",")
        };
        for e in &recorded {
            args.push(e.entry_id.to_owned());
            args.push(e.event_id.to_string());
            args.push(e.tenant.to_string());
            args.push(e.event_type.to_string());
            args.push(crate::model::text::visible_text(e.content_type));
            args.push(e.received_at_ms.to_string());
            args.push(joined(&e.targets));
            args.push(joined(&e.unrecorded));
        }
        args.extend(received.values().map(u64::to_string));
        let answer: Expanded = EXPAND.run(&self.redis, keys, args).await?;
        if answer.owned.len() != recorded.len() || answer.settled.len() != recorded.len() {
            return Err(StoreError::Reply(format!(
                "expand answered {} flags and {} settled lists for {} events",
                answer.owned.len(),
                answer.settled.len(),
                recorded.len()
            )));
        }
        let mut answers = answer.owned.into_iter().zip(answer.settled);
        Ok(events
            .iter()
            .map(|e| {
                if !self.needs_record(e) {
                    return Some(Vec::new());
                }
                let (owned, settled) = answers.next()?;
                owned.then(|| {
                    settled
                        .split(',')
                        .filter(|t| !t.is_empty())
                        .map(str::to_owned)
                        .collect()
                })
            })
            .collect())
    }

    /// Whether the expansion of `e` writes a record: with deliveries, or with a log store
    /// (which ships every event from its record).
    fn needs_record(&self, e: &Expansion<'_>) -> bool {
        self.logged || !e.targets.is_empty() || !e.unrecorded.is_empty()
    }

    /// Counts events as received without a record (see [`Deliveries::expand`]), in the
    /// tenants' counters and in the series of the minute of `now_ms`, in one round trip.
    async fn count_received(
        &self,
        shard: u16,
        received: &BTreeMap<&TenantId, u64>,
        now_ms: u64,
    ) -> Result<(), StoreError> {
        if received.is_empty() {
            return Ok(());
        }
        let hour = hour_of(now_ms);
        let field = series::field(now_ms, series::RECEIVED);
        let ttl = series::TTL_S as i64;
        let pipeline = self.redis.pipeline();
        let mut total: i64 = 0;
        for (tenant, n) in received {
            let n = *n as i64;
            total += n;
            let _: () = pipeline
                .hincrby(self.keys.stats(shard, tenant), "events_received", n)
                .await?;
            let key = self.keys.series(shard, tenant, hour);
            let _: () = pipeline.hincrby(key.as_str(), field.as_str(), n).await?;
            let _: () = pipeline.expire(key, ttl, None).await?;
        }
        let all = self.keys.series_all(shard, hour);
        let _: () = pipeline
            .hincrby(all.as_str(), field.as_str(), total)
            .await?;
        let _: () = pipeline.expire(all, ttl, None).await?;
        let _: Vec<Value> = pipeline.all().await?;
        Ok(())
    }
}
