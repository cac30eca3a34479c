//! The error queue's reads: entries in the order they failed, paged by key, filtered, and
//! counted. Each tenant's entries live in a hash (id → JSON) beside an index of their ids
//! (`dlq_at`, a sorted set of score 0): ids are ULIDs minted at the instant of failure, so
//! their lexical order is the order of failure, a page ends exactly at the last id it
//! showed, and a time range is a range of ids.

use fred::prelude::*;

use super::{DeadLetter, Deliveries};
use crate::model::{DeadLetterId, EventId, EventPattern, TargetId, TenantId};
use crate::redis::scripts::{DELETE_DEAD_LETTER, REINDEX_DEAD_LETTERS};
use crate::store::error::StoreError;

/// Ids read per round trip while scanning.
const CHUNK: i64 = 500;

/// Which entries.
#[derive(Debug, Clone, Default)]
pub struct DeadLetterFilter {
    pub target_id: Option<TargetId>,
    pub event_type: Option<EventPattern>,
    pub event_id: Option<EventId>,
    /// Failed at or after (ms).
    pub since_ms: Option<u64>,
    /// Failed at or before (ms).
    pub until_ms: Option<u64>,
}

impl DeadLetterFilter {
    /// Whether it looks inside entries (else the index alone answers counts).
    fn reads_entries(&self) -> bool {
        self.target_id.is_some() || self.event_type.is_some() || self.event_id.is_some()
    }

    fn admits(&self, d: &DeadLetter) -> bool {
        self.target_id.as_ref().is_none_or(|t| &d.target_id == t)
            && self
                .event_type
                .as_ref()
                .is_none_or(|p| p.matches(d.event_type.as_str()))
            && self.event_id.as_ref().is_none_or(|e| &d.event_id == e)
    }

    /// The range of ids the filter's times allow, inclusive, as `ZRANGEBYLEX` bounds. An
    /// event's entries failed after it was received, so an event id narrows it too.
    fn bounds(&self) -> (String, String) {
        let since = self
            .since_ms
            .into_iter()
            .chain(self.event_id.as_ref().and_then(EventId::received_at_ms))
            .max();
        let low = since.map_or("-".to_owned(), |ms| {
            format!("[{}", DeadLetterId::first_of(ms))
        });
        let high = self.until_ms.map_or("+".to_owned(), |ms| {
            format!("[{}", DeadLetterId::last_of(ms))
        });
        (low, high)
    }
}

/// Which way a page runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Order {
    #[default]
    NewestFirst,
    OldestFirst,
}

/// A page of the error queue.
#[derive(Debug)]
pub struct DeadLetterPage {
    pub entries: Vec<DeadLetter>,
    /// The last entry's id when more follow: the next page starts after it.
    pub next: Option<DeadLetterId>,
    /// How many entries the filter selects, on every page.
    pub total: u64,
}

impl Deliveries {
    /// A page of the tenant's error queue: up to `limit` entries after `after` (an id a
    /// previous page ended with), in `order`.
    pub async fn dead_letter_page(
        &self,
        shard: u16,
        tenant: &TenantId,
        filter: &DeadLetterFilter,
        order: Order,
        after: Option<&DeadLetterId>,
        limit: usize,
    ) -> Result<DeadLetterPage, StoreError> {
        self.index_dead_letters(shard, tenant).await?;
        let mut entries = Vec::with_capacity(limit.min(1000) + 1);
        let total = if filter.reads_entries() {
            // The count needs every selected entry: one pass over the range from its start,
            // counting all and keeping the page past `after`.
            let mut total = 0u64;
            let mut scan = DeadLetterScan::new(filter.clone(), order, None);
            while let Some(chunk) = self.scan_chunk(shard, tenant, &mut scan).await? {
                for d in chunk {
                    total += 1;
                    let past = after.is_none_or(|a| match order {
                        Order::NewestFirst => d.id < *a,
                        Order::OldestFirst => d.id > *a,
                    });
                    if past && entries.len() <= limit {
                        entries.push(d);
                    }
                }
            }
            total
        } else {
            let mut scan = DeadLetterScan::new(filter.clone(), order, after.cloned());
            while entries.len() <= limit {
                let Some(chunk) = self.scan_chunk(shard, tenant, &mut scan).await? else {
                    break;
                };
                entries.extend(chunk);
            }
            let (low, high) = filter.bounds();
            self.redis
                .zlexcount(self.keys.dead_letter_order(shard, tenant), low, high)
                .await?
        };
        let next = if entries.len() > limit {
            entries.truncate(limit);
            entries.last().map(|d| d.id.clone())
        } else {
            None
        };
        Ok(DeadLetterPage {
            entries,
            next,
            total,
        })
    }

    /// The next chunk of the entries a scan selects; `None` once it has seen them all.
    /// Entries replayed or deleted between chunks do not disturb it.
    pub async fn next_dead_letters(
        &self,
        shard: u16,
        tenant: &TenantId,
        scan: &mut DeadLetterScan,
    ) -> Result<Option<Vec<DeadLetter>>, StoreError> {
        if !scan.indexed {
            self.index_dead_letters(shard, tenant).await?;
            scan.indexed = true;
        }
        self.scan_chunk(shard, tenant, scan).await
    }

    /// The entries a filter selects, oldest first (at most `limit`).
    pub async fn dead_letters(
        &self,
        shard: u16,
        tenant: &TenantId,
        filter: &DeadLetterFilter,
        limit: usize,
    ) -> Result<Vec<DeadLetter>, StoreError> {
        let mut out = Vec::new();
        let mut scan = DeadLetterScan::new(filter.clone(), Order::OldestFirst, None);
        self.index_dead_letters(shard, tenant).await?;
        while out.len() < limit {
            let Some(chunk) = self.scan_chunk(shard, tenant, &mut scan).await? else {
                break;
            };
            out.extend(chunk);
        }
        out.truncate(limit);
        Ok(out)
    }

    /// The tenant's entries of these ids, in their order; ids it does not have are left out.
    pub async fn dead_letters_by_id(
        &self,
        shard: u16,
        tenant: &TenantId,
        ids: &[DeadLetterId],
    ) -> Result<Vec<DeadLetter>, StoreError> {
        let mut out = Vec::with_capacity(ids.len());
        for chunk in ids.chunks(CHUNK as usize) {
            let names: Vec<&str> = chunk.iter().map(DeadLetterId::as_str).collect();
            let values: Vec<Option<String>> = self
                .redis
                .hmget(self.keys.dead_letters(shard, tenant), names)
                .await?;
            out.extend(
                values
                    .into_iter()
                    .flatten()
                    .filter_map(|v| serde_json::from_str::<DeadLetter>(&v).ok()),
            );
        }
        Ok(out)
    }

    /// Removes one error queue entry; `false` when it is not there.
    pub async fn delete_dead_letter(
        &self,
        shard: u16,
        tenant: &TenantId,
        id: &DeadLetterId,
    ) -> Result<bool, StoreError> {
        #[derive(serde::Deserialize)]
        struct Deleted {
            deleted: u64,
        }
        let keys = vec![
            self.keys.dead_letters(shard, tenant),
            self.keys.dead_letter_total(shard),
            self.keys.dead_letter_order(shard, tenant),
        ];
        let d: Deleted = DELETE_DEAD_LETTER
            .run(&self.redis, keys, vec![id.to_string()])
            .await?;
        Ok(d.deleted == 1)
    }

    /// Entries in `shard`'s error queues.
    pub async fn dead_letter_total(&self, shard: u16) -> Result<u64, StoreError> {
        let n: Option<i64> = self.redis.get(self.keys.dead_letter_total(shard)).await?;
        Ok(n.unwrap_or(0).max(0) as u64)
    }

    /// Brings the index in line with the entries when their counts differ: entries written
    /// before the index existed, or an index key lost on its own.
    async fn index_dead_letters(&self, shard: u16, tenant: &TenantId) -> Result<(), StoreError> {
        let entries = self.keys.dead_letters(shard, tenant);
        let order = self.keys.dead_letter_order(shard, tenant);
        let pipe = self.redis.pipeline();
        let _: () = pipe.hlen(&entries).await?;
        let _: () = pipe.zcard(&order).await?;
        let (held, indexed): (u64, u64) = pipe.all().await?;
        if held != indexed {
            #[derive(serde::Deserialize)]
            struct Reindexed {
                entries: u64,
            }
            let r: Reindexed = REINDEX_DEAD_LETTERS
                .run(&self.redis, vec![entries, order], Vec::<String>::new())
                .await?;
            tracing::info!(%tenant, shard, entries = r.entries, indexed, "error queue indexed");
        }
        Ok(())
    }

    /// The next chunk of entries the scan selects; `None` when the range is exhausted. An id
    /// whose entry went away meanwhile (replayed, deleted) is skipped.
    async fn scan_chunk(
        &self,
        shard: u16,
        tenant: &TenantId,
        scan: &mut DeadLetterScan,
    ) -> Result<Option<Vec<DeadLetter>>, StoreError> {
        if scan.done {
            return Ok(None);
        }
        let key = self.keys.dead_letter_order(shard, tenant);
        let (low, high) = scan.range();
        let ids: Vec<String> = match scan.order {
            Order::OldestFirst => {
                self.redis
                    .zrangebylex(&key, low, high, Some((0, CHUNK)))
                    .await?
            }
            Order::NewestFirst => {
                self.redis
                    .zrevrangebylex(&key, high, low, Some((0, CHUNK)))
                    .await?
            }
        };
        if (ids.len() as i64) < CHUNK {
            scan.done = true;
        }
        let Some(last) = ids.last() else {
            return Ok(None);
        };
        scan.after = Some(last.clone());
        let values: Vec<Option<String>> = self
            .redis
            .hmget(self.keys.dead_letters(shard, tenant), ids.clone())
            .await?;
        let chunk = values
            .into_iter()
            .flatten()
            .filter_map(|v| serde_json::from_str::<DeadLetter>(&v).ok())
            .filter(|d| scan.filter.admits(d))
            .collect();
        Ok(Some(chunk))
    }
}

/// Where a scan of the error queue stands ([`Deliveries::next_dead_letters`]).
#[derive(Debug)]
pub struct DeadLetterScan {
    filter: DeadLetterFilter,
    order: Order,
    /// The last id read: the next chunk starts past it.
    after: Option<String>,
    done: bool,
    indexed: bool,
}

impl DeadLetterScan {
    pub fn new(
        filter: DeadLetterFilter,
        order: Order,
        after: Option<DeadLetterId>,
    ) -> DeadLetterScan {
        DeadLetterScan {
            filter,
            order,
            after: after.map(|a| a.to_string()),
            done: false,
            indexed: false,
        }
    }

    /// The inclusive-or-exclusive bounds of the next chunk, low then high.
    fn range(&self) -> (String, String) {
        let (low, high) = self.filter.bounds();
        match (&self.after, self.order) {
            (None, _) => (low, high),
            (Some(a), Order::OldestFirst) => (later(low, format!("({a}")), high),
            (Some(a), Order::NewestFirst) => (low, earlier(high, format!("({a}"))),
        }
    }
}

/// The tighter of two low bounds (`-`, `[id` or `(id`).
fn later(a: String, b: String) -> String {
    match (bound_id(&a), bound_id(&b)) {
        (None, _) => b,
        (_, None) => a,
        (Some(x), Some(y)) if x > y => a,
        (Some(x), Some(y)) if x < y => b,
        // The same id: exclusive is tighter.
        _ if a.starts_with('(') => a,
        _ => b,
    }
}

/// The tighter of two high bounds (`+`, `[id` or `(id`).
fn earlier(a: String, b: String) -> String {
    match (bound_id(&a), bound_id(&b)) {
        (None, _) => b,
        (_, None) => a,
        (Some(x), Some(y)) if x < y => a,
        (Some(x), Some(y)) if x > y => b,
        _ if a.starts_with('(') => a,
        _ => b,
    }
}

fn bound_id(b: &str) -> Option<&str> {
    b.strip_prefix('[').or_else(|| b.strip_prefix('('))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_tighter_bound_wins() {
        assert_eq!(later("-".into(), "(dl_B".into()), "(dl_B");
        assert_eq!(later("[dl_C".into(), "(dl_B".into()), "[dl_C");
        assert_eq!(later("[dl_B".into(), "(dl_B".into()), "(dl_B");
        assert_eq!(earlier("+".into(), "(dl_B".into()), "(dl_B");
        assert_eq!(earlier("[dl_A".into(), "(dl_B".into()), "[dl_A");
        assert_eq!(earlier("[dl_B".into(), "(dl_B".into()), "(dl_B");
    }

    #[test]
    fn times_become_id_ranges_and_an_event_narrows_them() {
        let f = DeadLetterFilter {
            since_ms: Some(1_000),
            until_ms: Some(2_000),
            ..DeadLetterFilter::default()
        };
        let (low, high) = f.bounds();
        let inside = DeadLetterId::parse(&format!("dl_{}", ulid::Ulid::from_parts(1_500, 9)))
            .map(|d| d.to_string())
            .unwrap_or_default();
        assert!(
            low[1..] < *inside && *inside < high[1..],
            "{low} {inside} {high}"
        );
        let event = EventId::parse(&format!("evt_{}", ulid::Ulid::from_parts(1_800, 0)))
            .expect("a valid id");
        let f = DeadLetterFilter {
            event_id: Some(event),
            ..f
        };
        let (low, _) = f.bounds();
        assert!(
            *inside < low[1..],
            "the event's own time is later than 1 500 ms"
        );
    }
}
