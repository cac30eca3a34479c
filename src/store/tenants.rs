//! Tenant records: create, read, list, update, delete, and the idempotent apply of tenants
//! declared in the config file.

use std::collections::HashMap;

use fred::prelude::*;
use serde::Serialize;

use super::scripts::{CREATE_TENANT, DELETE_TENANT, UPDATE_TENANT};
use super::{Store, StoreError, now_ms, rfc3339};
use crate::config::{RateLimit, TenantDecl};

/// Blind-index domain of external ids.
const EXT_DOMAIN: &str = "tenant-external-id";
/// Attempts of an optimistic script before giving up with a conflict.
const OPTIMISTIC_ATTEMPTS: usize = 8;

/// A tenant as the store holds it, external id opened.
#[derive(Debug, Clone, PartialEq)]
pub struct TenantRecord {
    pub id: String,
    pub name: String,
    pub external_id: Option<String>,
    pub active: bool,
    pub rate_limit: Option<RateLimit>,
    pub created_at_ms: u64,
    pub updated_at_ms: u64,
    /// `api` or `config`: who created the tenant.
    pub origin: String,
    /// Blind index of the external id, for optimistic updates.
    ext_idx: String,
}

/// The JSON view of a tenant.
#[derive(Debug, Serialize)]
pub struct Tenant {
    pub id: String,
    pub name: String,
    pub external_id: Option<String>,
    pub active: bool,
    pub rate_limit: Option<RateLimit>,
    pub created_at: String,
    pub updated_at: String,
}

impl From<&TenantRecord> for Tenant {
    fn from(r: &TenantRecord) -> Tenant {
        Tenant {
            id: r.id.clone(),
            name: r.name.clone(),
            external_id: r.external_id.clone(),
            active: r.active,
            rate_limit: r.rate_limit,
            created_at: rfc3339(r.created_at_ms),
            updated_at: rfc3339(r.updated_at_ms),
        }
    }
}

/// What creating a tenant needs (validated by the caller).
#[derive(Debug, Clone)]
pub struct NewTenant {
    pub id: Option<String>,
    pub name: String,
    pub external_id: Option<String>,
    pub active: bool,
    pub rate_limit: Option<RateLimit>,
}

/// A partial update; `None` leaves a field as it is.
#[derive(Debug, Clone, Default)]
pub struct TenantPatch {
    pub name: Option<String>,
    pub active: Option<bool>,
    /// `Some(None)` removes the tenant's own limit.
    pub rate_limit: Option<Option<RateLimit>>,
    /// `Some(None)` removes the external id.
    pub external_id: Option<Option<String>>,
}

impl TenantPatch {
    fn narrows_access(&self) -> bool {
        // Disabling, or changing the limit, must reach every instance's cache now.
        self.active.is_some() || self.rate_limit.is_some()
    }
}

fn ext_context(id: &str) -> String {
    format!("tenant:{id}:external_id")
}

fn rate_limit_args(limit: &Option<RateLimit>) -> (String, String) {
    match limit {
        Some(l) => (l.per_second.to_string(), l.effective_burst().to_string()),
        None => (String::new(), String::new()),
    }
}

impl Store {
    fn ext_index_key(&self, idx: &str) -> String {
        // A placeholder keeps script argument positions fixed; it is never written.
        let idx = if idx.is_empty() { "-" } else { idx };
        self.keys.tenant_by_external_id(idx)
    }

    fn blind_ext(&self, ext: &Option<String>) -> String {
        ext.as_deref()
            .map(|e| self.crypto.blind_index(EXT_DOMAIN, e))
            .unwrap_or_default()
    }

    /// Creates a tenant, with its first token when `token` is given (id, hash hex).
    pub async fn create_tenant(
        &self,
        new: &NewTenant,
        origin: &str,
        token: Option<(&str, &str)>,
    ) -> Result<TenantRecord, StoreError> {
        let id = new.id.clone().unwrap_or_else(|| super::new_id("ten"));
        let now = now_ms();
        let ext_idx = self.blind_ext(&new.external_id);
        let sealed_ext = match &new.external_id {
            Some(e) => self.crypto.seal(e.as_bytes(), &ext_context(&id))?,
            None => String::new(),
        };
        let (rl_ps, rl_burst) = rate_limit_args(&new.rate_limit);
        let (token_id, token_hash) = token.unwrap_or(("", ""));
        let token_key = if token_hash.is_empty() {
            self.keys.token_hex("-")
        } else {
            self.keys.token_hex(token_hash)
        };
        let keys = vec![
            self.keys.tenant(&id),
            self.keys.tenants(),
            self.ext_index_key(&ext_idx),
            token_key,
            self.keys.tenant_tokens(&id),
        ];
        let args = vec![
            id.clone(),
            new.name.clone(),
            sealed_ext,
            ext_idx.clone(),
            if new.active { "1" } else { "0" }.to_owned(),
            rl_ps,
            rl_burst,
            now.to_string(),
            origin.to_owned(),
            token_id.to_owned(),
            token_hash.to_owned(),
        ];
        let status: String = CREATE_TENANT
            .evalsha_with_reload(&self.redis, keys, args)
            .await?;
        match status.as_str() {
            "ok" => Ok(TenantRecord {
                id,
                name: new.name.clone(),
                external_id: new.external_id.clone(),
                active: new.active,
                rate_limit: new.rate_limit,
                created_at_ms: now,
                updated_at_ms: now,
                origin: origin.to_owned(),
                ext_idx,
            }),
            "exists" => Err(StoreError::Conflict(format!("tenant {id} already exists"))),
            "external_id_taken" => Err(StoreError::Conflict(
                "another tenant has this external_id".into(),
            )),
            other => Err(unexpected(other)),
        }
    }

    /// Reads one tenant; `None` when it does not exist.
    pub async fn tenant(&self, id: &str) -> Result<Option<TenantRecord>, StoreError> {
        let key = self.keys.tenant(id);
        let fields: HashMap<String, String> = self.redis.hgetall(&key).await?;
        if fields.is_empty() {
            return Ok(None);
        }
        self.parse_tenant(id, &key, fields).map(Some)
    }

    fn parse_tenant(
        &self,
        id: &str,
        key: &str,
        mut f: HashMap<String, String>,
    ) -> Result<TenantRecord, StoreError> {
        let corrupt = |reason: &str| StoreError::Corrupt {
            key: key.to_owned(),
            reason: reason.to_owned(),
        };
        let ms = |v: Option<&String>| v.and_then(|s| s.parse::<u64>().ok()).unwrap_or(0);
        let sealed = f.remove("ext").unwrap_or_default();
        let external_id = if sealed.is_empty() {
            None
        } else {
            let plain = self.crypto.open(&sealed, &ext_context(id))?;
            Some(String::from_utf8(plain).map_err(|_| corrupt("external id is not UTF-8"))?)
        };
        let rate_limit = match f.get("rl_ps").map(String::as_str) {
            None | Some("") => None,
            Some(ps) => Some(RateLimit {
                per_second: ps.parse().map_err(|_| corrupt("rl_ps is not a number"))?,
                burst: f.get("rl_burst").and_then(|b| b.parse().ok()),
            }),
        };
        Ok(TenantRecord {
            id: id.to_owned(),
            name: f.remove("name").ok_or_else(|| corrupt("no name"))?,
            external_id,
            active: f.get("active").map(String::as_str) == Some("1"),
            rate_limit,
            created_at_ms: ms(f.get("created_at")),
            updated_at_ms: ms(f.get("updated_at")),
            origin: f.remove("origin").unwrap_or_else(|| "api".into()),
            ext_idx: f.remove("ext_idx").unwrap_or_default(),
        })
    }

    /// The tenant whose external id is `ext`, if any.
    pub async fn tenant_by_external_id(
        &self,
        ext: &str,
    ) -> Result<Option<TenantRecord>, StoreError> {
        let idx = self.crypto.blind_index(EXT_DOMAIN, ext);
        let id: Option<String> = self
            .redis
            .get(self.keys.tenant_by_external_id(&idx))
            .await?;
        match id {
            Some(id) => self.tenant(&id).await,
            None => Ok(None),
        }
    }

    /// Up to `limit` tenants with ids after `after`, in id order, and whether more follow.
    pub async fn list_tenants(
        &self,
        after: Option<&str>,
        limit: usize,
    ) -> Result<(Vec<TenantRecord>, bool), StoreError> {
        let start = match after {
            Some(a) => format!("({a}"),
            None => "-".to_owned(),
        };
        let ids: Vec<String> = self
            .redis
            .zrangebylex(self.keys.tenants(), start, "+", Some((0, limit as i64 + 1)))
            .await?;
        let more = ids.len() > limit;
        let pipeline = self.redis.pipeline();
        let shown: Vec<&String> = ids.iter().take(limit).collect();
        for id in &shown {
            let _: () = pipeline.hgetall(self.keys.tenant(id)).await?;
        }
        let rows: Vec<HashMap<String, String>> = if shown.is_empty() {
            Vec::new()
        } else {
            pipeline.all().await?
        };
        let mut out = Vec::with_capacity(rows.len());
        for (id, fields) in shown.into_iter().zip(rows) {
            // A tenant deleted between the index read and this one is simply not listed.
            if !fields.is_empty() {
                out.push(self.parse_tenant(id, &self.keys.tenant(id), fields)?);
            }
        }
        Ok((out, more))
    }

    /// Applies `patch`; the new record, or `None` when the tenant does not exist.
    pub async fn update_tenant(
        &self,
        id: &str,
        patch: &TenantPatch,
    ) -> Result<Option<TenantRecord>, StoreError> {
        for _ in 0..OPTIMISTIC_ATTEMPTS {
            let Some(current) = self.tenant(id).await? else {
                return Ok(None);
            };
            let (set_ext, sealed, new_idx) = match &patch.external_id {
                Some(ext) => {
                    let idx = self.blind_ext(ext);
                    let sealed = match ext {
                        Some(e) => self.crypto.seal(e.as_bytes(), &ext_context(id))?,
                        None => String::new(),
                    };
                    ("1", sealed, idx)
                }
                None => ("0", String::new(), current.ext_idx.clone()),
            };
            let (rl_ps, rl_burst) = rate_limit_args(patch.rate_limit.as_ref().unwrap_or(&None));
            let keys = vec![
                self.keys.tenant(id),
                self.ext_index_key(&current.ext_idx),
                self.ext_index_key(&new_idx),
            ];
            let flag = |b: bool| if b { "1" } else { "0" }.to_owned();
            let args = vec![
                id.to_owned(),
                current.ext_idx.clone(),
                flag(patch.name.is_some()),
                patch.name.clone().unwrap_or_default(),
                flag(patch.active.is_some()),
                flag(patch.active.unwrap_or(false)),
                flag(patch.rate_limit.is_some()),
                rl_ps,
                rl_burst,
                set_ext.to_owned(),
                sealed,
                new_idx,
                now_ms().to_string(),
            ];
            let status: String = UPDATE_TENANT
                .evalsha_with_reload(&self.redis, keys, args)
                .await?;
            match status.as_str() {
                "ok" => {
                    if patch.narrows_access() {
                        self.publish_invalidation(format!("tenant:{id}")).await;
                    }
                    return self.tenant(id).await;
                }
                "not_found" => return Ok(None),
                "external_id_taken" => {
                    return Err(StoreError::Conflict(
                        "another tenant has this external_id".into(),
                    ));
                }
                "retry" => continue,
                other => return Err(unexpected(other)),
            }
        }
        Err(StoreError::Conflict(
            "the tenant changed concurrently; try again".into(),
        ))
    }

    /// Deletes a tenant and revokes all its tokens. `false` when it did not exist.
    pub async fn delete_tenant(&self, id: &str) -> Result<bool, StoreError> {
        for _ in 0..OPTIMISTIC_ATTEMPTS {
            let Some(current) = self.tenant(id).await? else {
                return Ok(false);
            };
            let tokens: HashMap<String, String> =
                self.redis.hgetall(self.keys.tenant_tokens(id)).await?;
            let mut keys = vec![
                self.keys.tenant(id),
                self.keys.tenants(),
                self.keys.tenant_tokens(id),
                self.ext_index_key(&current.ext_idx),
            ];
            keys.extend(tokens.values().map(|h| self.keys.token_hex(h)));
            let args = vec![
                id.to_owned(),
                current.ext_idx.clone(),
                tokens.len().to_string(),
            ];
            let status: String = DELETE_TENANT
                .evalsha_with_reload(&self.redis, keys, args)
                .await?;
            match status.as_str() {
                "ok" => {
                    self.publish_invalidation(format!("tenant:{id}")).await;
                    for hash in tokens.values() {
                        self.publish_invalidation(format!("token:{hash}")).await;
                    }
                    return Ok(true);
                }
                "not_found" => return Ok(false),
                "retry" => continue,
                other => return Err(unexpected(other)),
            }
        }
        Err(StoreError::Conflict(
            "the tenant changed concurrently; try again".into(),
        ))
    }

    /// Makes the store match a tenant declared in the config: creates or updates it, registers
    /// its declared tokens and revokes config tokens it no longer declares. Idempotent.
    pub async fn apply_declared_tenant(&self, decl: &TenantDecl) -> Result<(), StoreError> {
        let existing = self.tenant(&decl.id).await?;
        match existing {
            None => {
                let new = NewTenant {
                    id: Some(decl.id.clone()),
                    name: decl.name.clone(),
                    external_id: decl.external_id.clone(),
                    active: decl.active,
                    rate_limit: decl.rate_limit,
                };
                self.create_tenant(&new, "config", None).await?;
            }
            Some(current) => {
                let wanted_ext = decl.external_id.clone();
                let patch = TenantPatch {
                    name: (current.name != decl.name).then(|| decl.name.clone()),
                    active: (current.active != decl.active).then_some(decl.active),
                    rate_limit: (current.rate_limit != decl.rate_limit).then_some(decl.rate_limit),
                    external_id: (current.external_id != wanted_ext).then_some(wanted_ext),
                };
                if patch.name.is_some()
                    || patch.active.is_some()
                    || patch.rate_limit.is_some()
                    || patch.external_id.is_some()
                {
                    self.update_tenant(&decl.id, &patch).await?;
                }
            }
        }
        let declared: Vec<&str> = decl.all_tokens().map(|s| s.expose()).collect();
        self.sync_config_tokens(&decl.id, &declared).await
    }
}

pub(super) fn unexpected(status: &str) -> StoreError {
    StoreError::Corrupt {
        key: "script".into(),
        reason: format!("unexpected script status {status:?}"),
    }
}
