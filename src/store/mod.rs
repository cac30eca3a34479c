//! Tenants and their bearer tokens, kept in Redis under the [`Keyspace`](crate::keyspace).
//!
//! Invariants:
//! - a token is stored only as its keyed hash ([`Keys::hash_token`]); its text is returned once,
//!   at creation, and never again;
//! - a tenant's external id (often a company registration number) is stored sealed, and found
//!   through a keyed blind index, which also makes it unique;
//! - every change that can narrow access (disable, delete, revoke) is published on the
//!   invalidation channel after it is written, so every instance's auth cache drops the entry.
//!
//! Multi-key changes run as Lua scripts over keys of the one `{m}` slot, so they are atomic on a
//! single Redis and on a cluster alike.

pub mod deliveries;
pub mod monitors;
mod scripts;
pub mod sources;
pub mod targets;
pub mod tenants;
pub mod tokens;

use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use fred::prelude::*;

use crate::crypto::{CryptoError, Keys};
use crate::keyspace::Keyspace;

pub use targets::{Mode, Target, TargetAuth, TargetPatch, TargetSpec};
pub use tenants::{NewTenant, Tenant, TenantPatch, TenantRecord};
pub use tokens::{IssuedToken, TokenInfo, TokenOwner};

/// Failures of the store, each mapped to one HTTP status by [`crate::error`].
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("{0} not found")]
    NotFound(&'static str),
    #[error("{0}")]
    Conflict(String),
    #[error("{0}")]
    Invalid(String),
    #[error("redis: {0}")]
    Redis(#[from] fred::error::Error),
    #[error(transparent)]
    Crypto(#[from] CryptoError),
    #[error("stored record {key} is corrupt: {reason}")]
    Corrupt { key: String, reason: String },
}

/// Handle to the tenant and token records. Cheap to clone.
#[derive(Clone, Debug)]
pub struct Store {
    /// Shared command client.
    redis: Client,
    /// Key layout.
    keys: Keyspace,
    /// Keys derived from the master key.
    crypto: Arc<Keys>,
}

impl Store {
    pub fn new(redis: Client, keys: Keyspace, crypto: Arc<Keys>) -> Store {
        Store {
            redis,
            keys,
            crypto,
        }
    }

    /// The key layout, for components that publish on the store's channels.
    pub fn keyspace(&self) -> &Keyspace {
        &self.keys
    }

    /// The derived keys.
    pub fn crypto(&self) -> &Keys {
        &self.crypto
    }

    /// Tells every instance's auth cache to drop `entry` (`tenant:<id>` or `token:<hash>`).
    /// Invalidations are numbered, so a subscriber that missed one (its connection dropped)
    /// knows to drop its whole cache. The write that made the change has already succeeded; a
    /// failed publish is logged and covered by the cache TTL.
    async fn publish_invalidation(&self, entry: String) {
        let keys = vec![self.keys.invalidation_seq()];
        let args = vec![self.keys.invalidation_channel(), entry];
        let published: Result<i64, _> = scripts::PUBLISH_INVALIDATION
            .evalsha_with_reload(&self.redis, keys, args)
            .await;
        if let Err(e) = published {
            tracing::warn!(error = %e, "could not publish an auth-cache invalidation; other instances will see the change when their cache entry expires");
        }
    }

    /// Writes a document reached by a URL token (source, monitor) and its index entries in one
    /// atomic step, if the stored document is still `expected` (`None`: there must be none).
    /// `keys`: document, token entry, tenant's index, tenant, old token entry (the new one
    /// again when the token did not change).
    async fn save_tokened(
        &self,
        keys: [String; 5],
        id: &str,
        json: &str,
        tenant: &str,
        expected: Option<&str>,
    ) -> Result<(), StoreError> {
        let status: String = scripts::SAVE_TOKENED
            .evalsha_with_reload(
                &self.redis,
                keys.to_vec(),
                vec![
                    id.to_owned(),
                    json.to_owned(),
                    tenant.to_owned(),
                    expected.unwrap_or_default().to_owned(),
                ],
            )
            .await?;
        match status.as_str() {
            "ok" => Ok(()),
            "no_tenant" => Err(StoreError::NotFound("tenant")),
            "changed" if expected.is_none() => {
                Err(StoreError::Conflict(format!("`{id}` already exists")))
            }
            "changed" => Err(StoreError::Conflict(format!(
                "`{id}` was changed or deleted meanwhile; read it again and retry"
            ))),
            other => Err(tenants::unexpected(other)),
        }
    }

    /// Deletes a document reached by a URL token. `keys`: document, token entry, tenant's index.
    async fn delete_tokened(&self, keys: [String; 3], id: &str) -> Result<(), StoreError> {
        let _: i64 = scripts::DELETE_TOKENED
            .evalsha_with_reload(&self.redis, keys.to_vec(), vec![id.to_owned()])
            .await?;
        Ok(())
    }

    /// The number of the last invalidation published (0 when none, or after Redis lost its data).
    pub async fn invalidation_seq(&self) -> Result<u64, StoreError> {
        let n: Option<u64> = self.redis.get(self.keys.invalidation_seq()).await?;
        Ok(n.unwrap_or(0))
    }
}

/// Tells an explicit `null` (`Some(None)`: remove) from an absent field (`None`: keep).
pub fn present<'de, D, T>(d: D) -> Result<Option<Option<T>>, D::Error>
where
    D: serde::Deserializer<'de>,
    T: serde::Deserialize<'de>,
{
    <Option<T> as serde::Deserialize>::deserialize(d).map(Some)
}

/// Milliseconds since the Unix epoch.
pub fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or(Duration::ZERO)
        .as_millis() as u64
}

/// RFC 3339 (UTC, milliseconds) of a Unix time in milliseconds.
pub fn rfc3339(ms: u64) -> String {
    humantime::format_rfc3339_millis(UNIX_EPOCH + Duration::from_millis(ms)).to_string()
}

/// `redis.prefix`: letters, digits and `_.:-`, at most 64, no braces (they would change the
/// cluster hash tags).
pub fn validate_prefix(prefix: &str) -> Result<(), String> {
    let ok = !prefix.is_empty()
        && prefix.len() <= 64
        && prefix
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'.' | b':' | b'-'));
    if ok {
        Ok(())
    } else {
        Err("must be 1 to 64 of A-Z a-z 0-9 _ . : -".into())
    }
}

/// A tenant id (generated `ten_…`, or chosen in the config): `[A-Za-z0-9_-]{1,64}`.
pub fn validate_tenant_id(id: &str) -> Result<(), String> {
    if is_id(id) {
        Ok(())
    } else {
        Err("must be 1 to 64 of A-Z a-z 0-9 _ -".into())
    }
}

/// Ids of every kind share one alphabet, safe in keys, paths and logs.
pub fn is_id(id: &str) -> bool {
    !id.is_empty()
        && id.len() <= 64
        && id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
}

/// A display name: 1 to 200 characters, no control characters.
pub fn validate_name(name: &str) -> Result<(), String> {
    let n = name.chars().count();
    if n == 0 || n > 200 || name.chars().any(char::is_control) || name.trim().is_empty() {
        return Err("must be 1 to 200 printable characters".into());
    }
    Ok(())
}

/// An external id: 1 to 256 printable characters.
pub fn validate_external_id(ext: &str) -> Result<(), String> {
    let n = ext.chars().count();
    if n == 0 || n > 256 || ext.chars().any(char::is_control) {
        return Err("must be 1 to 256 printable characters".into());
    }
    Ok(())
}

/// The text of a bearer token: visible ASCII only, at most 256 bytes.
pub fn validate_token_text(token: &str) -> Result<(), String> {
    if token.is_empty() || token.len() > 256 || !token.bytes().all(|b| b.is_ascii_graphic()) {
        return Err("must be 1 to 256 visible ASCII characters".into());
    }
    Ok(())
}

/// A new unique id with a kind prefix: `ten_01J…`. ULIDs sort by creation time; within one
/// millisecond a monotonic generator keeps this process's ids in creation order too (plain
/// ULIDs of one millisecond sort at random).
pub fn new_id(kind: &str) -> String {
    static GENERATOR: std::sync::Mutex<ulid::Generator> =
        std::sync::Mutex::new(ulid::Generator::new());
    let next = match GENERATOR.lock() {
        Ok(mut g) => g.generate().ok(),
        Err(poisoned) => poisoned.into_inner().generate().ok(),
    };
    // The generator fails only when 2^80 ids were made in one millisecond.
    format!("{kind}_{}", next.unwrap_or_else(ulid::Ulid::new))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_and_names() {
        assert!(validate_tenant_id("acme-1_x").is_ok());
        assert!(validate_tenant_id("a b").is_err());
        assert!(validate_tenant_id(&"a".repeat(65)).is_err());
        assert!(validate_name("Açme Ltda.").is_ok());
        assert!(validate_name(" ").is_err());
        assert!(validate_name("a\nb").is_err());
        assert!(validate_prefix("est:prod").is_ok());
        assert!(validate_prefix("est{x}").is_err());
        let id = new_id("ten");
        assert!(id.starts_with("ten_") && is_id(&id));
    }

    #[test]
    fn ids_made_in_one_millisecond_keep_their_order() {
        let ids: Vec<String> = (0..2000).map(|_| new_id("ten")).collect();
        let mut sorted = ids.clone();
        sorted.sort();
        assert_eq!(ids, sorted);
    }

    #[test]
    fn rfc3339_is_utc_millis() {
        assert_eq!(rfc3339(0), "1970-01-01T00:00:00.000Z");
        assert_eq!(rfc3339(1_700_000_000_123), "2023-11-14T22:13:20.123Z");
    }
}
