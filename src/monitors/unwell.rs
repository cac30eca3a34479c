//! The watched subjects that are down or degraded, across shards: what the console's home page
//! lists, read in O(unwell) rather than by walking every monitor. `signal.lua` keeps each
//! shard's index (`unwell`, scored by since when) as statuses change and `forget.lua` drops a
//! deleted subject from it; a deployment from before the index has it built once at start
//! ([`Watches::index_unwell`]).

use std::collections::HashMap;

use fred::prelude::*;

use super::state::{LiveStatus, WatchError, Watches};
use crate::model::{TenantId, WatchKind};
use crate::store::{Store, StoreError};

/// A subject that is down or degraded.
#[derive(Debug, Clone)]
pub struct Unwell {
    pub id: String,
    pub tenant: TenantId,
    pub kind: WatchKind,
    pub name: String,
    pub status: LiveStatus,
    pub since_ms: u64,
}

/// Why the index could not be built.
#[derive(Debug, thiserror::Error)]
pub enum IndexError {
    #[error(transparent)]
    Watch(#[from] WatchError),
    #[error(transparent)]
    Store(#[from] StoreError),
}

impl From<fred::error::Error> for IndexError {
    fn from(e: fred::error::Error) -> IndexError {
        IndexError::Watch(WatchError::Redis(e))
    }
}

/// The status a live state's hash holds, if it is one that makes a subject unwell.
fn unwell_status(text: Option<&str>) -> Option<LiveStatus> {
    match text {
        Some("down") => Some(LiveStatus::Down),
        Some("degraded") => Some(LiveStatus::Degraded),
        _ => None,
    }
}

impl Watches {
    /// Up to `limit` unwell subjects, longest unwell first, and how many there are in all.
    /// An entry whose state is gone or no longer unwell (a race with a signal) is left out.
    pub async fn unwell(
        &self,
        shards: u16,
        limit: usize,
    ) -> Result<(Vec<Unwell>, u64), WatchError> {
        let (redis, keys) = self.redis_and_keys();
        let pipeline = redis.pipeline();
        for shard in 0..shards {
            let _: () = pipeline.zcard(keys.unwell(shard)).await?;
            let _: () = pipeline
                .zrange(
                    keys.unwell(shard),
                    0,
                    limit as i64 - 1,
                    None,
                    false,
                    None,
                    true,
                )
                .await?;
        }
        let answers: Vec<Value> = pipeline.all().await?;
        let mut total = 0u64;
        let mut listed: Vec<(u16, String, u64)> = Vec::new();
        for (shard, pair) in (0..shards).zip(answers.chunks(2)) {
            total += pair[0].as_u64().unwrap_or(0);
            let members: Vec<(String, f64)> = pair[1].clone().convert().unwrap_or_default();
            listed.extend(
                members
                    .into_iter()
                    .map(|(id, since)| (shard, id, since.max(0.0) as u64)),
            );
        }
        listed.sort_by_key(|(_, id, since)| (*since, id.clone()));
        listed.truncate(limit);
        if listed.is_empty() {
            return Ok((Vec::new(), total));
        }
        let pipeline = redis.pipeline();
        for (shard, id, _) in &listed {
            let _: () = pipeline
                .hmget(
                    keys.watch(*shard, id),
                    vec!["status", "tenant", "kind", "name"],
                )
                .await?;
        }
        let states: Vec<Vec<Option<String>>> = pipeline.all().await?;
        Ok((
            listed
                .into_iter()
                .zip(states)
                .filter_map(|((_, id, since_ms), st)| {
                    let mut st = st.into_iter();
                    let status = unwell_status(st.next().flatten().as_deref())?;
                    let tenant = TenantId::parse(&st.next().flatten()?).ok()?;
                    let kind = WatchKind::parse(&st.next().flatten()?)?;
                    let name = st.next().flatten().unwrap_or_default();
                    Some(Unwell {
                        id,
                        tenant,
                        kind,
                        name,
                        status,
                        since_ms,
                    })
                })
                .collect(),
            total,
        ))
    }

    /// Indexes the subjects that were unwell before this version kept the index, once per
    /// deployment (a marker key remembers it is done). Answers how many it indexed.
    pub async fn index_unwell(&self, store: &Store, shards: u16) -> Result<usize, IndexError> {
        let (redis, keys) = self.redis_and_keys();
        let marker = keys.upgrade_done("unwell_index");
        if redis.exists::<i64, _>(&marker).await? > 0 {
            return Ok(0);
        }
        let mut indexed = 0;
        let mut after: Option<TenantId> = None;
        loop {
            let (page, more) = store.list_tenants(after.as_ref(), 200).await?;
            for t in &page {
                let shard = crate::redis::keyspace::shard_of(&t.id, shards);
                let mut ids: Vec<String> = store
                    .monitors_of(&t.id)
                    .await?
                    .into_iter()
                    .map(|m| m.id.to_string())
                    .collect();
                ids.extend(
                    store
                        .sources_of(&t.id)
                        .await?
                        .into_iter()
                        .map(|s| s.id.to_string()),
                );
                if ids.is_empty() {
                    continue;
                }
                let pipeline = redis.pipeline();
                for id in &ids {
                    let _: () = pipeline
                        .hmget(keys.watch(shard, id), vec!["status", "since"])
                        .await?;
                }
                let states: Vec<Vec<Option<String>>> = pipeline.all().await?;
                let mut members: HashMap<String, f64> = HashMap::new();
                for (id, st) in ids.into_iter().zip(states) {
                    let mut st = st.into_iter();
                    if unwell_status(st.next().flatten().as_deref()).is_some() {
                        let since = st.next().flatten().and_then(|s| s.parse::<f64>().ok());
                        members.insert(id, since.unwrap_or(0.0));
                    }
                }
                if !members.is_empty() {
                    indexed += members.len();
                    let scored: Vec<(f64, String)> =
                        members.into_iter().map(|(id, s)| (s, id)).collect();
                    let _: i64 = redis
                        .zadd(keys.unwell(shard), None, None, false, false, scored)
                        .await?;
                }
            }
            after = page.last().map(|t| t.id.clone());
            if !more || after.is_none() {
                break;
            }
        }
        let _: () = redis.set(&marker, 1, None, None, false).await?;
        Ok(indexed)
    }
}
