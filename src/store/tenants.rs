//! Tenants: records with a sealed external id (found through a keyed blind index, which also
//! makes it unique), created, changed and deleted by scripts on the `{m}` slot.

use std::collections::HashMap;

use fred::prelude::*;

use super::error::{StoreError, unexpected};
use super::handle::{OPTIMISTIC_ATTEMPTS, Store};
use crate::crypto::TokenHash;
use crate::model::{
    CatalogueMode, ExternalId, KeepHeaders, Name, Origin, RateLimit, TenantId, TenantPatch,
    TenantSpec, TokenId,
};
use crate::redis::invalidation::Invalidation;
use crate::redis::scripts::{self, CREATE_TENANT, DELETE_TENANT, UPDATE_TENANT};

/// Blind-index domain of external ids.
/// Blind-index domain of external ids in their normalised form ([`ExternalId::key`]): `ACME`,
/// `acme` and fullwidth `ａｃｍｅ` are one index entry, so one tenant.
const EXT_DOMAIN: &str = "tenant_external_id_nfkc_cf";
/// Blind-index domain of external ids as earlier versions indexed them (the text as sent).
/// A tenant indexed so is found through it until [`Store::index_external_ids_normalised`]
/// moves it.
const EXT_DOMAIN_RAW: &str = "tenant_external_id";

/// A tenant as the store holds it, external id opened.
#[derive(Debug, Clone, PartialEq)]
pub struct TenantRecord {
    pub id: TenantId,
    pub name: Name,
    pub external_id: Option<ExternalId>,
    pub active: bool,
    pub rate_limit: Option<RateLimit>,
    pub created_at_ms: u64,
    pub updated_at_ms: u64,
    /// Who created the tenant.
    pub origin: Origin,
    /// How ingest holds its events to its event catalogue.
    pub catalogue: CatalogueMode,
    /// The ingest request headers kept with each event.
    pub keep_headers: KeepHeaders,
    /// Blind index of the external id, for optimistic updates.
    ext_idx: String,
}

fn ext_context(id: &TenantId) -> String {
    format!("tenant:{id}:external_id")
}

fn rate_limit_args(limit: Option<&RateLimit>) -> (String, String) {
    match limit {
        Some(l) => (l.per_second().to_string(), l.effective_burst().to_string()),
        None => (String::new(), String::new()),
    }
}

fn flag(b: bool) -> String {
    if b { "1" } else { "0" }.to_owned()
}

impl Store {
    fn ext_index_key(&self, idx: &str) -> String {
        // A placeholder keeps script argument positions fixed; it is never written.
        let idx = if idx.is_empty() { "-" } else { idx };
        self.keys.tenant_by_external_id(idx)
    }

    fn blind_ext(&self, ext: Option<&ExternalId>) -> String {
        ext.map(|e| self.crypto.blind_index(EXT_DOMAIN, &e.key()))
            .unwrap_or_default()
    }

    /// Creates a tenant (`id` chosen by the config file, else generated), with its first token
    /// when `token` is given.
    pub async fn create_tenant(
        &self,
        id: Option<TenantId>,
        spec: &TenantSpec,
        origin: Origin,
        token: Option<(&TokenId, &TokenHash)>,
    ) -> Result<TenantRecord, StoreError> {
        let id = id.unwrap_or_else(TenantId::generate);
        let now = self.clock.now_ms();
        let ext_idx = self.blind_ext(spec.external_id.as_ref());
        let sealed_ext = match &spec.external_id {
            Some(e) => self.crypto.seal(e.as_str().as_bytes(), &ext_context(&id))?,
            None => String::new(),
        };
        let (rl_ps, rl_burst) = rate_limit_args(spec.rate_limit.as_ref());
        let (token_id, token_hash) = match token {
            Some((id, hash)) => (id.to_string(), hash.to_hex()),
            None => (String::new(), String::new()),
        };
        let token_key = self.keys.token_hex(if token_hash.is_empty() {
            "-"
        } else {
            &token_hash
        });
        let keys = vec![
            self.keys.tenant(&id),
            self.keys.tenants(),
            self.ext_index_key(&ext_idx),
            token_key,
            self.keys.tenant_tokens(&id),
        ];
        let args = vec![
            id.to_string(),
            spec.name.as_str().to_owned(),
            sealed_ext,
            ext_idx.clone(),
            flag(spec.active),
            rl_ps,
            rl_burst,
            now.to_string(),
            origin.as_str().to_owned(),
            token_id,
            token_hash,
            spec.catalogue.as_str().to_owned(),
            spec.keep_headers.to_stored(),
        ];
        let answer: scripts::Status = CREATE_TENANT.run(&self.redis, keys, args).await?;
        match answer.status.as_str() {
            "ok" => Ok(TenantRecord {
                id,
                name: spec.name.clone(),
                external_id: spec.external_id.clone(),
                active: spec.active,
                rate_limit: spec.rate_limit,
                created_at_ms: now,
                updated_at_ms: now,
                origin,
                catalogue: spec.catalogue,
                keep_headers: spec.keep_headers.clone(),
                ext_idx,
            }),
            "exists" => Err(StoreError::Conflict(format!("tenant {id} already exists"))),
            "external_id_taken" => Err(StoreError::Conflict(
                "another tenant has this external_id".into(),
            )),
            other => Err(unexpected("create_tenant", other)),
        }
    }

    /// Reads one tenant; `None` when it does not exist.
    pub async fn tenant(&self, id: &TenantId) -> Result<Option<TenantRecord>, StoreError> {
        let key = self.keys.tenant(id);
        let fields: HashMap<String, String> = self.redis.hgetall(&key).await?;
        if fields.is_empty() {
            return Ok(None);
        }
        self.parse_tenant(id, &key, fields).map(Some)
    }

    fn parse_tenant(
        &self,
        id: &TenantId,
        key: &str,
        mut f: HashMap<String, String>,
    ) -> Result<TenantRecord, StoreError> {
        let corrupt = |reason: String| StoreError::Corrupt {
            key: key.to_owned(),
            reason,
        };
        let ms = |v: Option<&String>| v.and_then(|s| s.parse::<u64>().ok()).unwrap_or(0);
        let sealed = f.remove("ext").unwrap_or_default();
        let external_id = if sealed.is_empty() {
            None
        } else {
            let plain = self.crypto.open(&sealed, &ext_context(id))?;
            let text =
                String::from_utf8(plain).map_err(|_| corrupt("external id is not UTF-8".into()))?;
            Some(ExternalId::stored(&text).map_err(|e| corrupt(format!("external id {e}")))?)
        };
        let rate_limit = match f.get("rl_ps").map(String::as_str) {
            None | Some("") => None,
            Some(ps) => {
                let per_second: f64 = ps
                    .parse()
                    .map_err(|_| corrupt("rl_ps is not a number".into()))?;
                // Written under older, looser rules, a limit is brought within today's
                // bounds rather than refused: refusing would lock the tenant out.
                Some(RateLimit::clamped(
                    per_second,
                    f.get("rl_burst").and_then(|b| b.parse().ok()),
                ))
            }
        };
        let name = f.remove("name").ok_or_else(|| corrupt("no name".into()))?;
        Ok(TenantRecord {
            id: id.clone(),
            name: Name::stored(&name).map_err(|e| corrupt(format!("name {e}")))?,
            external_id,
            active: f.get("active").map(String::as_str) == Some("1"),
            rate_limit,
            created_at_ms: ms(f.get("created_at")),
            updated_at_ms: ms(f.get("updated_at")),
            origin: Origin::parse(f.get("origin").map(String::as_str).unwrap_or("api")),
            catalogue: CatalogueMode::stored(f.get("catalogue").map(String::as_str).unwrap_or("")),
            keep_headers: KeepHeaders::stored(
                f.get("keep_headers").map(String::as_str).unwrap_or(""),
            ),
            ext_idx: f.remove("ext_idx").unwrap_or_default(),
        })
    }

    /// The tenant whose external id is `ext`, if any: the one whose id is exactly `ext`, else
    /// the one whose id is `ext` once normalised. Entries of earlier versions (over the text as
    /// sent) are looked at first, and every entry found is checked against the tenant it names,
    /// so a stale one (its tenant deleted, or given another id) is never taken for it.
    pub async fn tenant_by_external_id(
        &self,
        ext: &ExternalId,
    ) -> Result<Option<TenantRecord>, StoreError> {
        let mut alike = None;
        for idx in [
            self.crypto.blind_index(EXT_DOMAIN_RAW, ext.as_str()),
            self.blind_ext(Some(ext)),
        ] {
            let key = self.keys.tenant_by_external_id(&idx);
            let Some(id) = self.redis.get::<Option<String>, _>(&key).await? else {
                continue;
            };
            let id = TenantId::parse(&id).map_err(|e| StoreError::Corrupt {
                key: key.clone(),
                reason: format!("tenant id {e}"),
            })?;
            let Some(tenant) = self.tenant(&id).await? else {
                continue;
            };
            match &tenant.external_id {
                Some(t) if t == ext => return Ok(Some(tenant)),
                Some(t) if t.key() == ext.key() && alike.is_none() => alike = Some(tenant),
                _ => {}
            }
        }
        Ok(alike)
    }

    /// Moves the external-id index entries of tenants written by earlier versions (over the
    /// text as sent) to the normalised index, once per deployment (a marker key remembers it
    /// is done). Two tenants whose ids normalise alike cannot both move: the first keeps the
    /// id, the other keeps its old entry (it stays findable) and is logged. Answers how many
    /// moved and how many could not.
    pub async fn index_external_ids_normalised(&self) -> Result<(usize, usize), StoreError> {
        let marker = self.keys.upgrade_done("external_id_index_nfkc_cf");
        if self.redis.exists::<i64, _>(&marker).await? > 0 {
            return Ok((0, 0));
        }
        let (mut moved, mut clashes) = (0, 0);
        let mut after: Option<TenantId> = None;
        loop {
            let (page, more) = self.list_tenants(after.as_ref(), 500).await?;
            for t in &page {
                let Some(ext) = &t.external_id else { continue };
                if t.ext_idx == self.blind_ext(Some(ext)) {
                    continue;
                }
                // The normalised entry is added, the old one kept: instances of the version
                // before still find the tenant by it during a rolling upgrade, and lookups
                // check every entry against its tenant.
                let idx = self.blind_ext(Some(ext));
                let key = self.keys.tenant_by_external_id(&idx);
                let claimed: bool = self
                    .redis
                    .set(
                        &key,
                        t.id.as_str(),
                        None,
                        Some(fred::types::SetOptions::NX),
                        false,
                    )
                    .await
                    .map(|r: Option<String>| r.is_some())?;
                let owner: Option<String> = self.redis.get(&key).await?;
                if claimed || owner.as_deref() == Some(t.id.as_str()) {
                    let _: i64 = self
                        .redis
                        .hset(self.keys.tenant(&t.id), ("ext_idx", idx.as_str()))
                        .await?;
                    moved += 1;
                } else {
                    clashes += 1;
                    tracing::warn!(tenant = %t.id, other = owner.as_deref().unwrap_or("?"), "this tenant's external id equals another tenant's once normalised (case, width, composition); it keeps its old index entry, and a lookup of its exact id still finds it: give one of them a new external id");
                }
            }
            after = page.last().map(|t| t.id.clone());
            if !more || after.is_none() {
                break;
            }
        }
        let _: () = self.redis.set(&marker, 1, None, None, false).await?;
        Ok((moved, clashes))
    }

    /// Up to `limit` tenants with ids after `after`, in id order, and whether more follow.
    pub async fn list_tenants(
        &self,
        after: Option<&TenantId>,
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
        let shown: Vec<TenantId> = ids
            .iter()
            .take(limit)
            .filter_map(|id| TenantId::parse(id).ok())
            .collect();
        if shown.is_empty() {
            return Ok((Vec::new(), more));
        }
        let pipeline = self.redis.pipeline();
        for id in &shown {
            let _: () = pipeline.hgetall(self.keys.tenant(id)).await?;
        }
        let rows: Vec<HashMap<String, String>> = pipeline.all().await?;
        let mut out = Vec::with_capacity(rows.len());
        for (id, fields) in shown.iter().zip(rows) {
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
        id: &TenantId,
        patch: &TenantPatch,
    ) -> Result<Option<TenantRecord>, StoreError> {
        for _ in 0..OPTIMISTIC_ATTEMPTS {
            let Some(current) = self.tenant(id).await? else {
                return Ok(None);
            };
            let (set_ext, sealed, new_idx) = match &patch.external_id {
                Some(ext) => {
                    let idx = self.blind_ext(ext.as_ref());
                    let sealed = match ext {
                        Some(e) => self.crypto.seal(e.as_str().as_bytes(), &ext_context(id))?,
                        None => String::new(),
                    };
                    (true, sealed, idx)
                }
                None => (false, String::new(), current.ext_idx.clone()),
            };
            let (rl_ps, rl_burst) =
                rate_limit_args(patch.rate_limit.as_ref().and_then(Option::as_ref));
            let keys = vec![
                self.keys.tenant(id),
                self.ext_index_key(&current.ext_idx),
                self.ext_index_key(&new_idx),
            ];
            let args = vec![
                id.to_string(),
                current.ext_idx.clone(),
                flag(patch.name.is_some()),
                patch
                    .name
                    .as_ref()
                    .map(|n| n.as_str().to_owned())
                    .unwrap_or_default(),
                flag(patch.active.is_some()),
                flag(patch.active.unwrap_or(false)),
                flag(patch.rate_limit.is_some()),
                rl_ps,
                rl_burst,
                flag(set_ext),
                sealed,
                new_idx,
                self.clock.now_ms().to_string(),
                flag(patch.catalogue.is_some()),
                patch
                    .catalogue
                    .map(|c| c.as_str().to_owned())
                    .unwrap_or_default(),
                flag(patch.keep_headers.is_some()),
                patch
                    .keep_headers
                    .as_ref()
                    .map(KeepHeaders::to_stored)
                    .unwrap_or_default(),
            ];
            let answer: scripts::Status = UPDATE_TENANT.run(&self.redis, keys, args).await?;
            match answer.status.as_str() {
                "ok" => {
                    if patch.changes_ingest() {
                        self.publish(Invalidation::Tenant(id.clone())).await;
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
                other => return Err(unexpected("update_tenant", other)),
            }
        }
        Err(StoreError::Conflict(
            "the tenant changed concurrently; try again".into(),
        ))
    }

    /// Deletes a tenant and revokes all its tokens. `false` when it did not exist.
    pub async fn delete_tenant(&self, id: &TenantId) -> Result<bool, StoreError> {
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
                id.to_string(),
                current.ext_idx.clone(),
                tokens.len().to_string(),
            ];
            let answer: scripts::Status = DELETE_TENANT.run(&self.redis, keys, args).await?;
            match answer.status.as_str() {
                "ok" => {
                    self.publish(Invalidation::Tenant(id.clone())).await;
                    for hash in tokens.values().filter_map(|h| TokenHash::from_hex(h)) {
                        self.publish(Invalidation::Token(hash)).await;
                    }
                    return Ok(true);
                }
                "not_found" => return Ok(false),
                "retry" => continue,
                other => return Err(unexpected("delete_tenant", other)),
            }
        }
        Err(StoreError::Conflict(
            "the tenant changed concurrently; try again".into(),
        ))
    }

    /// Makes the store match a tenant declared in the config: creates or updates it, registers
    /// its declared tokens and revokes config tokens it no longer declares. Idempotent.
    pub async fn apply_declared_tenant(
        &self,
        id: &TenantId,
        spec: &TenantSpec,
        tokens: &[&str],
    ) -> Result<(), StoreError> {
        match self.tenant(id).await? {
            None => {
                self.create_tenant(Some(id.clone()), spec, Origin::Config, None)
                    .await?;
            }
            Some(current) => {
                let patch = TenantPatch {
                    name: (current.name != spec.name).then(|| spec.name.clone()),
                    active: (current.active != spec.active).then_some(spec.active),
                    rate_limit: (current.rate_limit != spec.rate_limit).then_some(spec.rate_limit),
                    external_id: (current.external_id != spec.external_id)
                        .then(|| spec.external_id.clone()),
                    catalogue: (current.catalogue != spec.catalogue).then_some(spec.catalogue),
                    keep_headers: (current.keep_headers != spec.keep_headers)
                        .then(|| spec.keep_headers.clone()),
                };
                if !patch.is_empty() {
                    self.update_tenant(id, &patch).await?;
                }
            }
        }
        self.sync_config_tokens(id, tokens).await
    }
}
