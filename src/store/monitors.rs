//! Passive monitors: the definition a tenant manages (name, heartbeat interval, grace, optional
//! secret) and the URL token its pushers use, stored only as its keyed hash. The live state
//! (status, last heartbeat, incidents) is kept apart, in the tenant's shard slot, by
//! [`crate::monitors::state`].

use std::time::Duration;

use fred::prelude::*;
use serde::{Deserialize, Serialize};

use super::{Store, StoreError, now_ms, rfc3339};
use crate::monitors::state::{Kind, Subject};
use crate::sources::verify::{Scheme, Verifier};

/// Longest heartbeat interval or grace period: a year.
const MAX_PERIOD_S: u64 = 366 * 86_400;
/// Header of a status push's signature.
pub const SIGNATURE_HEADER: &str = "x-webhook-signature";

/// Default heartbeat interval (s), for the API and the config file.
pub fn default_interval() -> u64 {
    300
}

/// Default grace (s), for the API and the config file.
pub fn default_grace() -> u64 {
    60
}

/// A new monitor, as the API and the config file take it.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MonitorSpec {
    pub name: String,
    #[serde(default = "default_interval")]
    pub heartbeat_interval_s: u64,
    #[serde(default = "default_grace")]
    pub grace_s: u64,
    #[serde(default)]
    pub secret: Option<String>,
}

/// A partial update: absent fields stay; `"secret": null` removes the secret.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MonitorPatch {
    pub name: Option<String>,
    pub heartbeat_interval_s: Option<u64>,
    pub grace_s: Option<u64>,
    #[serde(default, deserialize_with = "super::present")]
    pub secret: Option<Option<String>>,
}

/// A watch window: how often a signal is expected (`every_key` names the field) and the grace
/// after it; shared by monitors and source silence watches.
pub(super) fn validate_window(every_key: &str, every_s: u64, grace_s: u64) -> Result<(), String> {
    if every_s == 0 || every_s > MAX_PERIOD_S {
        return Err(format!("{every_key} must be between 1 and {MAX_PERIOD_S}"));
    }
    if grace_s > MAX_PERIOD_S {
        return Err(format!("grace_s must be at most {MAX_PERIOD_S}"));
    }
    Ok(())
}

fn validate_secret(secret: Option<&str>) -> Result<(), String> {
    match secret {
        Some(s) if s.is_empty() || s.len() > 512 => {
            Err("secret must be 1 to 512 bytes (or absent)".into())
        }
        _ => Ok(()),
    }
}

impl MonitorSpec {
    pub fn validate(&self) -> Result<(), String> {
        super::validate_name(&self.name).map_err(|m| format!("name {m}"))?;
        validate_window(
            "heartbeat_interval_s",
            self.heartbeat_interval_s,
            self.grace_s,
        )?;
        validate_secret(self.secret.as_deref())
    }
}

impl MonitorPatch {
    pub fn validate(&self) -> Result<(), String> {
        if let Some(n) = &self.name {
            super::validate_name(n).map_err(|m| format!("name {m}"))?;
        }
        validate_window(
            "heartbeat_interval_s",
            self.heartbeat_interval_s.unwrap_or(1),
            self.grace_s.unwrap_or(0),
        )?;
        validate_secret(self.secret.as_ref().and_then(Option::as_deref))
    }
}

/// The stored document.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct MonitorDoc {
    tenant: String,
    name: String,
    interval_s: u64,
    grace_s: u64,
    #[serde(default)]
    secret: Option<String>,
    token_hash: String,
    created_at_ms: u64,
    updated_at_ms: u64,
    origin: String,
}

/// A monitor's definition, secret opened.
#[derive(Debug, Clone)]
pub struct Monitor {
    pub id: String,
    pub tenant: String,
    pub name: String,
    /// The name as a JSON string, for answers written by hand.
    pub name_json: String,
    pub interval_s: u64,
    pub grace_s: u64,
    /// Verifies status pushes when the monitor has a secret.
    pub verifier: Option<Verifier>,
    pub token_hash: String,
    pub created_at_ms: u64,
    pub updated_at_ms: u64,
    /// `api` or `config`.
    pub origin: String,
    /// The secret as stored (sealed), kept for rewrites of the document.
    sealed_secret: Option<String>,
    /// The stored JSON, which a change must still find in place.
    stored: String,
}

impl Monitor {
    /// How long after a signal the monitor is overdue: interval plus grace.
    pub fn window(&self) -> Duration {
        Duration::from_secs(self.interval_s + self.grace_s)
    }

    /// The JSON view of the definition (no secret, no token).
    pub fn view(&self) -> serde_json::Value {
        serde_json::json!({
            "id": self.id,
            "tenant_id": self.tenant,
            "name": self.name,
            "heartbeat_interval_s": self.interval_s,
            "grace_s": self.grace_s,
            "has_secret": self.verifier.is_some(),
            "origin": self.origin,
            "created_at": rfc3339(self.created_at_ms),
            "updated_at": rfc3339(self.updated_at_ms),
        })
    }

    /// The monitor as a watched subject of `shard` (its tenant's).
    pub fn subject(&self, shard: u16) -> Subject<'_> {
        Subject {
            kind: Kind::Monitor,
            id: &self.id,
            tenant: &self.tenant,
            name: &self.name,
            shard,
            window: self.window(),
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
            token_hash: self.token_hash.clone(),
            created_at_ms: self.created_at_ms,
            updated_at_ms: self.updated_at_ms,
            origin: self.origin.clone(),
        }
    }

    /// The entry that drops this monitor from every instance's cache.
    pub fn invalidation(&self) -> String {
        format!("monitor:{}:{}", self.id, self.token_hash)
    }
}

fn secret_context(id: &str) -> String {
    format!("monitor:{id}:secret")
}

impl Store {
    fn open_monitor(&self, id: &str, json: &str) -> Result<Monitor, StoreError> {
        let corrupt = |reason: String| StoreError::Corrupt {
            key: self.keys.monitor(id),
            reason,
        };
        let doc: MonitorDoc = serde_json::from_str(json).map_err(|e| corrupt(e.to_string()))?;
        let verifier = match &doc.secret {
            Some(sealed) => {
                let plain = self.crypto.open(sealed, &secret_context(id))?;
                let secret =
                    String::from_utf8(plain).map_err(|_| corrupt("secret is not UTF-8".into()))?;
                Some(
                    Verifier::new(Scheme::HmacSha256Hex, &secret, Some(SIGNATURE_HEADER), None)
                        .map_err(corrupt)?,
                )
            }
            None => None,
        };
        Ok(Monitor {
            id: id.to_owned(),
            name_json: serde_json::Value::from(doc.name.as_str()).to_string(),
            tenant: doc.tenant,
            name: doc.name,
            interval_s: doc.interval_s,
            grace_s: doc.grace_s,
            verifier,
            token_hash: doc.token_hash,
            created_at_ms: doc.created_at_ms,
            updated_at_ms: doc.updated_at_ms,
            origin: doc.origin,
            sealed_secret: doc.secret,
            stored: json.to_owned(),
        })
    }

    fn seal_monitor_secret(
        &self,
        id: &str,
        secret: Option<&str>,
    ) -> Result<Option<String>, StoreError> {
        secret
            .map(|s| self.crypto.seal(s.as_bytes(), &secret_context(id)))
            .transpose()
            .map_err(StoreError::from)
    }

    async fn save_monitor(
        &self,
        id: &str,
        doc: &MonitorDoc,
        old_token_hash: Option<&str>,
        expected: Option<&str>,
    ) -> Result<Monitor, StoreError> {
        let json = serde_json::to_string(doc).map_err(|e| StoreError::Invalid(e.to_string()))?;
        self.save_tokened(
            [
                self.keys.monitor(id),
                self.keys.monitor_token(&doc.token_hash),
                self.keys.tenant_monitors(&doc.tenant),
                self.keys.tenant(&doc.tenant),
                self.keys
                    .monitor_token(old_token_hash.unwrap_or(&doc.token_hash)),
            ],
            id,
            &json,
            &doc.tenant,
            expected,
        )
        .await?;
        self.open_monitor(id, &json)
    }

    /// Creates a monitor (spec validated), with `id` and URL `token` when the config file
    /// chooses them. Returns it and its URL token, shown this once.
    pub async fn create_monitor(
        &self,
        tenant: &str,
        spec: &MonitorSpec,
        id: Option<&str>,
        token: Option<&str>,
        origin: &str,
    ) -> Result<(Monitor, String), StoreError> {
        let id = id.map_or_else(|| super::new_id("mon"), str::to_owned);
        let token = match token {
            Some(t) => t.to_owned(),
            None => crate::crypto::random_token("mt_")?,
        };
        let now = now_ms();
        let doc = MonitorDoc {
            tenant: tenant.to_owned(),
            name: spec.name.clone(),
            interval_s: spec.heartbeat_interval_s,
            grace_s: spec.grace_s,
            secret: self.seal_monitor_secret(&id, spec.secret.as_deref())?,
            token_hash: self.crypto.hash_token(&token).to_hex(),
            created_at_ms: now,
            updated_at_ms: now,
            origin: origin.to_owned(),
        };
        let saved = self.save_monitor(&id, &doc, None, None).await?;
        // Another instance may remember this (declared) token as unknown.
        self.publish_invalidation(saved.invalidation()).await;
        Ok((saved, token))
    }

    /// A monitor by id, whatever its tenant (callers check the tenant).
    pub async fn monitor_by_id(&self, id: &str) -> Result<Option<Monitor>, StoreError> {
        let doc: Option<String> = self.redis.hget(self.keys.monitor(id), "doc").await?;
        doc.map(|d| self.open_monitor(id, &d)).transpose()
    }

    /// One monitor of `tenant`.
    pub async fn monitor(&self, tenant: &str, id: &str) -> Result<Option<Monitor>, StoreError> {
        Ok(self.monitor_by_id(id).await?.filter(|m| m.tenant == tenant))
    }

    /// The monitor whose URL token hashes to `hash_hex`.
    pub async fn monitor_by_token(&self, hash_hex: &str) -> Result<Option<Monitor>, StoreError> {
        let id: Option<String> = self.redis.get(self.keys.monitor_token(hash_hex)).await?;
        let Some(id) = id else { return Ok(None) };
        // A token whose hash no longer matches the document was rotated away.
        Ok(self
            .monitor_by_id(&id)
            .await?
            .filter(|m| m.token_hash == hash_hex))
    }

    /// Every monitor of `tenant`.
    pub async fn monitors_of(&self, tenant: &str) -> Result<Vec<Monitor>, StoreError> {
        let ids: Vec<String> = self
            .redis
            .zrangebylex(self.keys.tenant_monitors(tenant), "-", "+", None)
            .await?;
        let mut out = Vec::with_capacity(ids.len());
        for id in ids {
            if let Some(m) = self.monitor(tenant, &id).await? {
                out.push(m);
            }
        }
        Ok(out)
    }

    /// Applies a patch (validated); `None` when the monitor is not there for this tenant.
    pub async fn update_monitor(
        &self,
        tenant: &str,
        id: &str,
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
            doc.secret = self.seal_monitor_secret(id, secret.as_deref())?;
        }
        doc.updated_at_ms = now_ms();
        let saved = self
            .save_monitor(id, &doc, None, Some(&current.stored))
            .await?;
        self.publish_invalidation(current.invalidation()).await;
        Ok(Some(saved))
    }

    /// Replaces the URL token (with `token`, or a new random one); the old one stops working
    /// at once. Returns the monitor and its new token.
    pub async fn rotate_monitor_token(
        &self,
        tenant: &str,
        id: &str,
        token: Option<&str>,
    ) -> Result<Option<(Monitor, String)>, StoreError> {
        let Some(current) = self.monitor(tenant, id).await? else {
            return Ok(None);
        };
        let token = match token {
            Some(t) => t.to_owned(),
            None => crate::crypto::random_token("mt_")?,
        };
        let mut doc = current.doc();
        doc.token_hash = self.crypto.hash_token(&token).to_hex();
        doc.updated_at_ms = now_ms();
        let saved = self
            .save_monitor(id, &doc, Some(&current.token_hash), Some(&current.stored))
            .await?;
        self.publish_invalidation(current.invalidation()).await;
        self.publish_invalidation(saved.invalidation()).await;
        Ok(Some((saved, token)))
    }

    /// Deletes a monitor's definition; `None` when it is not there (for this tenant). The
    /// caller forgets its live state.
    pub async fn delete_monitor(
        &self,
        tenant: &str,
        id: &str,
    ) -> Result<Option<Monitor>, StoreError> {
        let Some(m) = self.monitor(tenant, id).await? else {
            return Ok(None);
        };
        self.delete_tokened(
            [
                self.keys.monitor(id),
                self.keys.monitor_token(&m.token_hash),
                self.keys.tenant_monitors(tenant),
            ],
            id,
        )
        .await?;
        self.publish_invalidation(m.invalidation()).await;
        Ok(Some(m))
    }

    /// Makes a config-declared monitor match its declaration (idempotent): created when
    /// missing, updated when it differs; its URL token replaced when one is declared and the
    /// stored one differs. Returns the monitor as it now is.
    pub async fn apply_declared_monitor(
        &self,
        tenant: &str,
        id: &str,
        spec: &MonitorSpec,
        token: Option<&str>,
    ) -> Result<Monitor, StoreError> {
        let Some(mut current) = self.monitor(tenant, id).await? else {
            let (created, _) = self
                .create_monitor(tenant, spec, Some(id), token, "config")
                .await?;
            return Ok(created);
        };
        let secret_same = match (&current.verifier, &spec.secret) {
            (None, None) => true,
            (Some(v), Some(s)) => v.secret_is(s),
            _ => false,
        };
        if current.name != spec.name
            || current.interval_s != spec.heartbeat_interval_s
            || current.grace_s != spec.grace_s
            || !secret_same
        {
            let patch = MonitorPatch {
                name: Some(spec.name.clone()),
                heartbeat_interval_s: Some(spec.heartbeat_interval_s),
                grace_s: Some(spec.grace_s),
                secret: Some(spec.secret.clone()),
            };
            if let Some(updated) = self.update_monitor(tenant, id, &patch).await? {
                current = updated;
            }
        }
        if let Some(t) = token {
            if self.crypto.hash_token(t).to_hex() != current.token_hash {
                if let Some((rotated, _)) = self.rotate_monitor_token(tenant, id, Some(t)).await? {
                    current = rotated;
                }
            }
        }
        Ok(current)
    }
}
