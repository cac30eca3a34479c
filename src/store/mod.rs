//! Persistence of the control plane and of delivery records, in Redis under the
//! [`Keyspace`](crate::keyspace). Nothing here decides what is valid (that is
//! [`crate::model`]'s); the store keeps records, their indexes and their secrets.
//!
//! Invariants:
//! - a token is stored only as its keyed hash ([`Keys::hash_token`]); its text is returned once,
//!   at creation, and never again;
//! - recoverable secrets (signing secrets, target credentials, sender and monitor secrets, a
//!   tenant's external id) are sealed with AES-256-GCM, bound to their record;
//! - every change that another instance's cache may hold is published as an
//!   [`Invalidation`](crate::invalidation::Invalidation) after it is written.
//!
//! Multi-key changes run as scripts ([`crate::scripts`]) over keys of one slot, so they are
//! atomic on a single Redis and on a cluster alike.
//!
//! - [`tenants`], [`tokens`]: tenants, their bearer tokens, config-declared tenants;
//! - [`targets`]: delivery targets (versioned documents, optimistic updates);
//! - [`sources`], [`monitors`]: documents reached by a URL token;
//! - [`deliveries`]: expansion records, delivery states, attempts, the retry schedule, the
//!   error queue and the per-tenant counters, in the tenant's shard slot.

pub mod deliveries;
pub mod monitors;
pub mod sources;
pub mod targets;
pub mod tenants;
pub mod tokens;

use std::sync::Arc;

use fred::prelude::*;

use crate::crypto::{CryptoError, Keys};
use crate::invalidation::{Invalidation, Publisher};
use crate::keyspace::Keyspace;
use crate::model::Invalid;
use crate::scripts::{self, ScriptError};

pub use deliveries::Deliveries;
pub use monitors::Monitor;
pub use sources::Source;
pub use targets::Target;
pub use tenants::TenantRecord;
pub use tokens::{IssuedToken, TokenInfo, TokenOwner};

/// Failures of the store, each mapped to one HTTP status by [`crate::error`].
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("{0} not found")]
    NotFound(&'static str),
    #[error("{0}")]
    Conflict(String),
    /// A change that breaks a rule once applied to the stored record (a patch).
    #[error(transparent)]
    Invalid(#[from] Invalid),
    #[error("redis: {0}")]
    Redis(#[from] fred::error::Error),
    #[error(transparent)]
    Crypto(#[from] CryptoError),
    #[error("stored record {key} is corrupt: {reason}")]
    Corrupt { key: String, reason: String },
    #[error("cannot encode a record: {0}")]
    Encode(#[from] serde_json::Error),
    /// A script answered something this version does not understand.
    #[error("{0}")]
    Reply(String),
}

impl From<ScriptError> for StoreError {
    fn from(e: ScriptError) -> StoreError {
        match e {
            ScriptError::Redis(e) => StoreError::Redis(e),
            other @ ScriptError::Answer { .. } => StoreError::Reply(other.to_string()),
        }
    }
}

/// An answer a script should never give.
pub(crate) fn unexpected(script: &str, status: &str) -> StoreError {
    StoreError::Reply(format!("script {script} answered {status:?}"))
}

/// Attempts of an optimistic update before giving up with a conflict.
const OPTIMISTIC_ATTEMPTS: usize = 8;

/// Handle to the control-plane records. Cheap to clone.
#[derive(Clone, Debug)]
pub struct Store {
    /// Shared command client.
    redis: Client,
    /// Key layout.
    keys: Keyspace,
    /// Keys derived from the master key.
    crypto: Arc<Keys>,
    /// Announces changes to every instance's caches.
    publisher: Publisher,
}

impl Store {
    pub fn new(redis: Client, keys: Keyspace, crypto: Arc<Keys>) -> Store {
        let publisher = Publisher::new(redis.clone(), &keys);
        Store {
            redis,
            keys,
            crypto,
            publisher,
        }
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

    async fn publish(&self, change: Invalidation) {
        self.publisher.publish(&change).await;
    }

    /// Writes a document reached by a URL token (source, monitor) and its index entries in one
    /// atomic step, if the stored document is still `expected` (`None`: there must be none).
    async fn save_tokened(&self, w: TokenedWrite<'_>) -> Result<(), StoreError> {
        let status: scripts::Status = scripts::SAVE_TOKENED
            .run(
                &self.redis,
                vec![w.doc_key, w.token_entry, w.tenant_index, w.tenant_key, w.old_token_entry],
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
    async fn delete_tokened(
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
struct TokenedWrite<'a> {
    doc_key: String,
    token_entry: String,
    tenant_index: String,
    tenant_key: String,
    /// The old token's entry, or `token_entry` again when the token did not change.
    old_token_entry: String,
    id: &'a str,
    json: &'a str,
    tenant: &'a str,
    expected: Option<&'a str>,
}

/// A JSON document read from `key`, or `Corrupt`.
fn decode_doc<T: serde::de::DeserializeOwned>(key: &str, json: &str) -> Result<T, StoreError> {
    serde_json::from_str(json).map_err(|e| StoreError::Corrupt {
        key: key.to_owned(),
        reason: e.to_string(),
    })
}
