//! The store's handle, which each record module (tenants, tokens, targets, sources,
//! monitors) extends with its own methods, and the document writes they share.

use std::sync::Arc;

use fred::prelude::*;

use super::error::{StoreError, unexpected};
use crate::crypto::Keys;
use crate::model::time::Clock;
use crate::redis::invalidation::{Invalidation, Publisher};
use crate::redis::keyspace::Keyspace;
use crate::redis::scripts;

/// Attempts of an optimistic update before giving up with a conflict.
pub(super) const OPTIMISTIC_ATTEMPTS: usize = 8;

/// Handle to the control-plane records. Cheap to clone.
#[derive(Clone, Debug)]
pub struct Store {
    /// Shared command client.
    pub(super) redis: Client,
    /// Key layout.
    pub(super) keys: Keyspace,
    /// Keys derived from the master key.
    pub(super) crypto: Arc<Keys>,
    /// Announces changes to every instance's caches.
    publisher: Publisher,
    /// The time its records are stamped and judged by.
    pub(super) clock: Clock,
}

impl Store {
    pub fn new(redis: Client, keys: Keyspace, crypto: Arc<Keys>) -> Store {
        let publisher = Publisher::new(redis.clone(), &keys);
        Store {
            redis,
            keys,
            crypto,
            publisher,
            clock: Clock::system(),
        }
    }

    /// The same store on `clock`.
    pub fn with_clock(mut self, clock: Clock) -> Store {
        self.clock = clock;
        self
    }

    /// The time it decides by.
    pub fn clock(&self) -> &Clock {
        &self.clock
    }

    /// The key layout.
    pub fn keyspace(&self) -> &Keyspace {
        &self.keys
    }

    /// The derived keys.
    pub fn crypto(&self) -> &Keys {
        &self.crypto
    }

    /// The command client.
    pub fn redis(&self) -> &Client {
        &self.redis
    }

    /// The publisher of invalidations, for the listener's counter reads.
    pub fn publisher(&self) -> &Publisher {
        &self.publisher
    }

    pub(super) async fn publish(&self, change: Invalidation) {
        self.publisher.publish(&change).await;
    }

    /// Writes a document reached by a URL token (source, monitor) and its index entries in one
    /// atomic step, if the stored document is still `expected` (`None`: there must be none).
    pub(super) async fn save_tokened(&self, w: TokenedWrite<'_>) -> Result<(), StoreError> {
        let status: scripts::Status = scripts::SAVE_TOKENED
            .run(
                &self.redis,
                vec![
                    w.doc_key,
                    w.token_entry,
                    w.tenant_index,
                    w.tenant_key,
                    w.old_token_entry,
                ],
                vec![
                    w.id.to_owned(),
                    w.json.to_owned(),
                    w.tenant.to_owned(),
                    w.expected.unwrap_or_default().to_owned(),
                ],
            )
            .await?;
        match status.status.as_str() {
            "ok" => Ok(()),
            "no_tenant" => Err(StoreError::NotFound("tenant")),
            "changed" if w.expected.is_none() => {
                Err(StoreError::Conflict(format!("`{}` already exists", w.id)))
            }
            "changed" => Err(StoreError::Conflict(format!(
                "`{}` was changed or deleted meanwhile; read it again and retry",
                w.id
            ))),
            other => Err(unexpected("save_tokened", other)),
        }
    }

    /// Deletes a document reached by a URL token, its token entry and its index entry.
    pub(super) async fn delete_tokened(
        &self,
        doc_key: String,
        token_entry: String,
        tenant_index: String,
        id: &str,
    ) -> Result<(), StoreError> {
        #[derive(serde::Deserialize)]
        struct Deleted {
            #[allow(dead_code)]
            deleted: u64,
        }
        let _: Deleted = scripts::DELETE_TOKENED
            .run(
                &self.redis,
                vec![doc_key, token_entry, tenant_index],
                vec![id.to_owned()],
            )
            .await?;
        Ok(())
    }
}

/// One write of a document reached by a URL token.
pub(super) struct TokenedWrite<'a> {
    pub(super) doc_key: String,
    pub(super) token_entry: String,
    pub(super) tenant_index: String,
    pub(super) tenant_key: String,
    /// The old token's entry, or `token_entry` again when the token did not change.
    pub(super) old_token_entry: String,
    pub(super) id: &'a str,
    pub(super) json: &'a str,
    pub(super) tenant: &'a str,
    pub(super) expected: Option<&'a str>,
}

/// A JSON document read from `key`, or `Corrupt`.
pub(super) fn decode_doc<T: serde::de::DeserializeOwned>(
    key: &str,
    json: &str,
) -> Result<T, StoreError> {
    serde_json::from_str(json).map_err(|e| StoreError::Corrupt {
        key: key.to_owned(),
        reason: e.to_string(),
    })
}
