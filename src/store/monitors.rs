//! Passive monitors: the definition a tenant manages (name, heartbeat interval, grace,
//! optional secret) and the URL token its pushers use, stored only as its keyed hash. The live
//! state (status, last heartbeat, incidents) is kept apart, in the tenant's shard slot, by
//! [`crate::monitors::state`].

use fred::prelude::*;
use serde::{Deserialize, Serialize};

use super::error::StoreError;
use super::handle::{Store, TokenedWrite, decode_doc};
use crate::crypto::{TokenHash, random_token, secrets_equal};
use crate::model::monitor::{Every, Grace};
use crate::model::transform::JqProgram;
use crate::model::{
    MonitorId, MonitorPatch, MonitorSpec, Name, Origin, SecretText, TenantId, WatchWindow,
};
use crate::redis::invalidation::Invalidation;

/// Prefix of monitor URL tokens.
const TOKEN_PREFIX: &str = "mt_";

/// The stored document.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct MonitorDoc {
    tenant: TenantId,
    #[serde(deserialize_with = "Name::deserialize_stored")]
    name: Name,
    interval_s: Every,
    grace_s: Grace,
    #[serde(default)]
    secret: Option<String>,
    token_hash: String,
    created_at_ms: u64,
    updated_at_ms: u64,
    origin: Origin,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    status_map: Option<JqProgram>,
}

/// A monitor's definition, secret opened.
#[derive(Debug, Clone)]
pub struct Monitor {
    pub id: MonitorId,
    pub tenant: TenantId,
    pub name: Name,
    /// The name as a JSON string, for answers written by hand.
    pub name_json: String,
    pub interval_s: Every,
    pub grace_s: Grace,
    /// Signs status pushes, when set.
    pub secret: Option<SecretText>,
    pub token_hash: TokenHash,
    pub created_at_ms: u64,
    pub updated_at_ms: u64,
    pub origin: Origin,
    /// Turns a pushed JSON document into a status.
    pub status_map: Option<JqProgram>,
    /// The secret as stored (sealed), kept for rewrites of the document.
    sealed_secret: Option<String>,
    /// The stored JSON, which a change must still find in place.
    stored: String,
}

impl Monitor {
    pub fn window(&self) -> WatchWindow {
        WatchWindow {
            every: self.interval_s,
            grace: self.grace_s,
        }
    }

    /// The stored document, for a rewrite.
    fn doc(&self) -> MonitorDoc {
        MonitorDoc {
            tenant: self.tenant.clone(),
            name: self.name.clone(),
            interval_s: self.interval_s,
            grace_s: self.grace_s,
            secret: self.sealed_secret.clone(),
            token_hash: self.token_hash.to_hex(),
            created_at_ms: self.created_at_ms,
            updated_at_ms: self.updated_at_ms,
            origin: self.origin,
            status_map: self.status_map.clone(),
        }
    }

    /// What drops this monitor from every instance's cache.
    pub fn invalidation(&self) -> Invalidation {
        Invalidation::Monitor {
            id: self.id.clone(),
            token: self.token_hash,
        }
    }
}

fn secret_context(id: &MonitorId) -> String {
    format!("monitor:{id}:secret")
}

impl Store {
    fn open_monitor(&self, id: &MonitorId, json: &str) -> Result<Monitor, StoreError> {
        let key = self.keys.monitor(id);
        let corrupt = |reason: &str| StoreError::Corrupt {
            key: key.clone(),
            reason: reason.to_owned(),
        };
        let doc: MonitorDoc = decode_doc(&key, json)?;
        let secret = match &doc.secret {
            Some(sealed) => {
                let plain = self.crypto.open(sealed, &secret_context(id))?;
                Some(SecretText::new(
                    String::from_utf8(plain).map_err(|_| corrupt("secret is not UTF-8"))?,
                ))
            }
            None => None,
        };
        Ok(Monitor {
            id: id.clone(),
            name_json: serde_json::Value::from(doc.name.as_str()).to_string(),
            token_hash: TokenHash::from_hex(&doc.token_hash)
                .ok_or_else(|| corrupt("token_hash is not 64 hex digits"))?,
            tenant: doc.tenant,
            name: doc.name,
            interval_s: doc.interval_s,
            grace_s: doc.grace_s,
            secret,
            created_at_ms: doc.created_at_ms,
            updated_at_ms: doc.updated_at_ms,
            origin: doc.origin,
            status_map: doc.status_map,
            sealed_secret: doc.secret,
            stored: json.to_owned(),
        })
    }

    fn seal_monitor_secret(
        &self,
        id: &MonitorId,
        secret: Option<&SecretText>,
    ) -> Result<Option<String>, StoreError> {
        secret
            .map(|s| self.crypto.seal(s.expose().as_bytes(), &secret_context(id)))
            .transpose()
            .map_err(StoreError::from)
    }

    async fn save_monitor(
        &self,
        id: &MonitorId,
        doc: &MonitorDoc,
        old_token_hash: Option<&TokenHash>,
        expected: Option<&str>,
    ) -> Result<Monitor, StoreError> {
        let json = serde_json::to_string(doc)?;
        let new_hash = TokenHash::from_hex(&doc.token_hash).ok_or_else(|| StoreError::Corrupt {
            key: self.keys.monitor(id),
            reason: "token_hash is not 64 hex digits".into(),
        })?;
        self.save_tokened(TokenedWrite {
            doc_key: self.keys.monitor(id),
            token_entry: self.keys.monitor_token(&new_hash),
            tenant_index: self.keys.tenant_monitors(&doc.tenant),
            tenant_key: self.keys.tenant(&doc.tenant),
            old_token_entry: self.keys.monitor_token(old_token_hash.unwrap_or(&new_hash)),
            id: id.as_str(),
            json: &json,
            tenant: doc.tenant.as_str(),
            expected,
        })
        .await?;
        self.open_monitor(id, &json)
    }

    /// Creates a monitor (spec validated), with `id` and URL `token` when the config file
    /// chooses them. Returns it and its URL token, shown this once.
    pub async fn create_monitor(
        &self,
        tenant: &TenantId,
        spec: &MonitorSpec,
        id: Option<MonitorId>,
        token: Option<&str>,
        origin: Origin,
    ) -> Result<(Monitor, String), StoreError> {
        let id = id.unwrap_or_else(MonitorId::generate);
        let token = match token {
            Some(t) => t.to_owned(),
            None => random_token(TOKEN_PREFIX)?,
        };
        let now = self.clock.now_ms();
        let doc = MonitorDoc {
            tenant: tenant.clone(),
            name: spec.name.clone(),
            interval_s: spec.heartbeat_interval_s,
            grace_s: spec.grace_s,
            secret: self.seal_monitor_secret(&id, spec.secret.as_ref())?,
            token_hash: self.crypto.hash_token(&token).to_hex(),
            created_at_ms: now,
            updated_at_ms: now,
            origin,
            status_map: spec.status_map.clone(),
        };
        let saved = self.save_monitor(&id, &doc, None, None).await?;
        // Another instance may remember this (declared) token as unknown.
        self.publish(saved.invalidation()).await;
        Ok((saved, token))
    }

    /// A monitor by id, whatever its tenant (callers check the tenant).
    pub async fn monitor_by_id(&self, id: &MonitorId) -> Result<Option<Monitor>, StoreError> {
        let doc: Option<String> = self.redis.hget(self.keys.monitor(id), "doc").await?;
        doc.map(|d| self.open_monitor(id, &d)).transpose()
    }

    /// One monitor of `tenant`.
    pub async fn monitor(
        &self,
        tenant: &TenantId,
        id: &MonitorId,
    ) -> Result<Option<Monitor>, StoreError> {
        Ok(self
            .monitor_by_id(id)
            .await?
            .filter(|m| m.tenant == *tenant))
    }

    /// The monitor whose URL token hashes to `hash`.
    pub async fn monitor_by_token(&self, hash: &TokenHash) -> Result<Option<Monitor>, StoreError> {
        let id: Option<String> = self.redis.get(self.keys.monitor_token(hash)).await?;
        let Some(id) = id.and_then(|i| MonitorId::parse(&i).ok()) else {
            return Ok(None);
        };
        // A token whose hash no longer matches the document was rotated away.
        Ok(self
            .monitor_by_id(&id)
            .await?
            .filter(|m| m.token_hash == *hash))
    }

    /// Every monitor of `tenant`.
    pub async fn monitors_of(&self, tenant: &TenantId) -> Result<Vec<Monitor>, StoreError> {
        let ids: Vec<String> = self
            .redis
            .zrangebylex(self.keys.tenant_monitors(tenant), "-", "+", None)
            .await?;
        let mut out = Vec::with_capacity(ids.len());
        for id in ids.iter().filter_map(|i| MonitorId::parse(i).ok()) {
            if let Some(m) = self.monitor(tenant, &id).await? {
                out.push(m);
            }
        }
        Ok(out)
    }

    /// Applies a patch (validated); `None` when the monitor is not there for this tenant.
    pub async fn update_monitor(
        &self,
        tenant: &TenantId,
        id: &MonitorId,
        patch: &MonitorPatch,
    ) -> Result<Option<Monitor>, StoreError> {
        let Some(current) = self.monitor(tenant, id).await? else {
            return Ok(None);
        };
        let mut doc = current.doc();
        if let Some(n) = &patch.name {
            doc.name = n.clone();
        }
        doc.interval_s = patch.heartbeat_interval_s.unwrap_or(doc.interval_s);
        doc.grace_s = patch.grace_s.unwrap_or(doc.grace_s);
        if let Some(secret) = &patch.secret {
            doc.secret = self.seal_monitor_secret(id, secret.as_ref())?;
        }
        if let Some(map) = &patch.status_map {
            doc.status_map = map.clone();
        }
        doc.updated_at_ms = self.clock.now_ms();
        let saved = self
            .save_monitor(id, &doc, None, Some(&current.stored))
            .await?;
        self.publish(current.invalidation()).await;
        Ok(Some(saved))
    }

    /// Replaces the URL token (with `token`, or a new random one); the old one stops working
    /// at once. Returns the monitor and its new token.
    pub async fn rotate_monitor_token(
        &self,
        tenant: &TenantId,
        id: &MonitorId,
        token: Option<&str>,
    ) -> Result<Option<(Monitor, String)>, StoreError> {
        let Some(current) = self.monitor(tenant, id).await? else {
            return Ok(None);
        };
        let token = match token {
            Some(t) => t.to_owned(),
            None => random_token(TOKEN_PREFIX)?,
        };
        let mut doc = current.doc();
        doc.token_hash = self.crypto.hash_token(&token).to_hex();
        doc.updated_at_ms = self.clock.now_ms();
        let saved = self
            .save_monitor(id, &doc, Some(&current.token_hash), Some(&current.stored))
            .await?;
        self.publish(current.invalidation()).await;
        self.publish(saved.invalidation()).await;
        Ok(Some((saved, token)))
    }

    /// Deletes a monitor's definition; `None` when it is not there (for this tenant). The
    /// caller forgets its live state.
    pub async fn delete_monitor(
        &self,
        tenant: &TenantId,
        id: &MonitorId,
    ) -> Result<Option<Monitor>, StoreError> {
        let Some(m) = self.monitor(tenant, id).await? else {
            return Ok(None);
        };
        self.delete_tokened(
            self.keys.monitor(id),
            self.keys.monitor_token(&m.token_hash),
            self.keys.tenant_monitors(tenant),
            id.as_str(),
        )
        .await?;
        self.publish(m.invalidation()).await;
        Ok(Some(m))
    }

    /// Makes a config-declared monitor match its declaration (idempotent): created when
    /// missing, updated when it differs; its URL token replaced when one is declared and the
    /// stored one differs. Returns the monitor as it now is.
    pub async fn apply_declared_monitor(
        &self,
        tenant: &TenantId,
        id: &MonitorId,
        spec: &MonitorSpec,
        token: Option<&str>,
    ) -> Result<Monitor, StoreError> {
        let Some(mut current) = self.monitor(tenant, id).await? else {
            let (created, _) = self
                .create_monitor(tenant, spec, Some(id.clone()), token, Origin::Config)
                .await?;
            return Ok(created);
        };
        let secret_same = match (&current.secret, &spec.secret) {
            (None, None) => true,
            (Some(a), Some(b)) => secrets_equal(a.expose().as_bytes(), b.expose().as_bytes()),
            _ => false,
        };
        if current.name != spec.name
            || current.interval_s != spec.heartbeat_interval_s
            || current.grace_s != spec.grace_s
            || current.status_map != spec.status_map
            || !secret_same
        {
            let patch = MonitorPatch {
                name: Some(spec.name.clone()),
                heartbeat_interval_s: Some(spec.heartbeat_interval_s),
                grace_s: Some(spec.grace_s),
                secret: Some(spec.secret.clone()),
                status_map: Some(spec.status_map.clone()),
            };
            if let Some(updated) = self.update_monitor(tenant, id, &patch).await? {
                current = updated;
            }
        }
        if let Some(t) = token {
            if self.crypto.hash_token(t) != current.token_hash {
                if let Some((rotated, _)) = self.rotate_monitor_token(tenant, id, Some(t)).await? {
                    current = rotated;
                }
            }
        }
        Ok(current)
    }
}
