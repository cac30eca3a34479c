//! Appending operational events (see [`crate::model::notice`]) to a tenant's shard stream,
//! one entry each, through the one entry codec.

use bytes::Bytes;
use fred::prelude::*;
use serde_json::Value as Json;

use super::entry::{self, EventRef};
use crate::model::notice::{DELIVERY_FAILING, FAILING_EVERY};
use crate::model::time::rfc3339;
use crate::model::{EventId, EventType, TenantId};
use crate::redis::keyspace::Keyspace;
use crate::store::{Store, StoreError};

/// Appends operational events. Cheap to clone.
#[derive(Debug, Clone)]
pub struct Notices {
    redis: Client,
    keys: Keyspace,
    clock: crate::model::time::Clock,
}

impl Notices {
    pub fn new(store: &Store) -> Notices {
        Notices {
            redis: store.redis().clone(),
            keys: store.keyspace().clone(),
            clock: store.clock().clone(),
        }
    }

    /// Appends an operational event of `event_type` for `tenant` to its shard's stream:
    /// `fields` and `type`, `at` (now) in its JSON body.
    pub async fn notify(
        &self,
        shard: u16,
        tenant: &TenantId,
        event_type: &'static str,
        fields: Json,
    ) -> Result<EventId, StoreError> {
        let id = EventId::generate();
        let mut body = match fields {
            Json::Object(m) => m,
            _ => serde_json::Map::new(),
        };
        body.insert("type".into(), event_type.into());
        body.insert("at".into(), rfc3339(self.clock.now_ms()).into());
        let body = Bytes::from(serde_json::to_vec(&Json::Object(body))?);
        let event_type =
            EventType::parse(event_type).map_err(|e| StoreError::Refused(e.to_string()))?;
        let content_type = Bytes::from_static(b"application/json");
        let entry = EventRef {
            id: &id,
            tenant,
            event_type: &event_type,
            content_type: Some(&content_type),
            body: &body,
        };
        let _: String = self
            .redis
            .xadd(
                self.keys.stream(shard),
                false,
                None::<()>,
                "*",
                entry::fields(std::iter::once(entry)),
            )
            .await?;
        Ok(id)
    }

    /// [`Store::notify`] of `estafeta.delivery.failing`, unless one was told about the same
    /// target within the hour.
    pub async fn notify_failing(
        &self,
        shard: u16,
        tenant: &TenantId,
        target: &str,
        fields: Json,
    ) -> Result<Option<EventId>, StoreError> {
        let first: Option<String> = self
            .redis
            .set(
                self.keys.notice_bound(shard, tenant, target, "failing"),
                "1",
                Some(Expiration::EX(FAILING_EVERY.as_secs() as i64)),
                Some(SetOptions::NX),
                false,
            )
            .await?;
        if first.is_none() {
            return Ok(None);
        }
        self.notify(shard, tenant, DELIVERY_FAILING, fields)
            .await
            .map(Some)
    }

    /// Tells a notice, logging (not failing) when Redis cannot take it.
    pub async fn tell(
        &self,
        shard: u16,
        tenant: &TenantId,
        event_type: &'static str,
        fields: Json,
    ) {
        if let Err(e) = self.notify(shard, tenant, event_type, fields).await {
            crate::telemetry::redis_error("notice");
            tracing::warn!(tenant = %tenant, event_type, error = %e, "could not append an operational event");
        }
    }
}
