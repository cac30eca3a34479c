//! What each source received and refused, for the people who run it: the time of its last
//! accepted webhook and its last refused deliveries (time, reason, sender address). Written
//! after the sender has its answer, never on the way to it; each record lives 30 days past
//! its last write, so a deleted source's activity goes by itself.

use fred::prelude::*;
use serde::{Deserialize, Serialize};

use super::error::StoreError;
use super::handle::Store;
use crate::model::SourceId;

/// Refusals kept per source.
pub const REFUSALS_KEPT: i64 = 20;
/// How long activity outlives its last write.
const LIFETIME_S: i64 = 30 * 24 * 3600;

/// A refused delivery of a source.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct Refusal {
    /// When (ms).
    pub at_ms: u64,
    /// Why, in the gateway's words (never the expected signature).
    pub reason: String,
    /// The sender's address, as the edge saw it.
    pub sender_ip: Option<String>,
}

/// A source's activity.
#[derive(Debug, Clone, Default)]
pub struct Activity {
    pub last_received_ms: Option<u64>,
    /// Newest first.
    pub refusals: Vec<Refusal>,
}

impl Store {
    fn source_last_key(&self, id: &SourceId) -> String {
        format!("{}:{{m}}:source_last:{id}", self.keys.prefix())
    }

    fn source_refusals_key(&self, id: &SourceId) -> String {
        format!("{}:{{m}}:source_refusals:{id}", self.keys.prefix())
    }

    /// Notes that `id` accepted a webhook at `at_ms`.
    pub async fn source_received(&self, id: &SourceId, at_ms: u64) -> Result<(), StoreError> {
        let _: () = self
            .redis
            .set(
                self.source_last_key(id),
                at_ms,
                Some(Expiration::EX(LIFETIME_S)),
                None,
                false,
            )
            .await?;
        Ok(())
    }

    /// Notes a refused delivery of `id`, keeping the last [`REFUSALS_KEPT`].
    pub async fn source_refused(&self, id: &SourceId, refusal: &Refusal) -> Result<(), StoreError> {
        let key = self.source_refusals_key(id);
        let pipe = self.redis.pipeline();
        let _: () = pipe.lpush(&key, serde_json::to_string(refusal)?).await?;
        let _: () = pipe.ltrim(&key, 0, REFUSALS_KEPT - 1).await?;
        let _: () = pipe.expire(&key, LIFETIME_S, None).await?;
        let _: Vec<Value> = pipe.all().await?;
        Ok(())
    }

    /// What `id` received and refused.
    pub async fn source_activity(&self, id: &SourceId) -> Result<Activity, StoreError> {
        let pipe = self.redis.pipeline();
        let _: () = pipe.get(self.source_last_key(id)).await?;
        let _: () = pipe
            .lrange(self.source_refusals_key(id), 0, REFUSALS_KEPT - 1)
            .await?;
        let (seen, refused): (Option<u64>, Vec<String>) = pipe.all().await?;
        Ok(Activity {
            last_received_ms: seen,
            // A record this version cannot read is left out, not the whole list.
            refusals: refused
                .iter()
                .filter_map(|r| serde_json::from_str(r).ok())
                .collect(),
        })
    }
}
