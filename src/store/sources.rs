//! Inbound sources: a URL token (stored only as its keyed hash), the sender's signature scheme
//! and secret (sealed), where the event type comes from, and the silence watch.

use fred::prelude::*;
use serde::{Deserialize, Serialize};

use super::error::StoreError;
use super::handle::{Store, TokenedWrite, decode_doc};
use crate::crypto::{TokenHash, random_token};
use crate::model::source::Tolerance;
use crate::model::{
    EventTypeRule, Name, Scheme, SecretText, SilenceWatch, SourceId, SourceSpec, TenantId,
};
use crate::redis::invalidation::Invalidation;

/// Prefix of source URL tokens.
const TOKEN_PREFIX: &str = "hk_";

/// The stored document.
#[derive(Debug, Serialize, Deserialize)]
struct SourceDoc {
    tenant: TenantId,
    #[serde(deserialize_with = "Name::deserialize_stored")]
    name: Name,
    scheme: Scheme,
    #[serde(default)]
    secret: Option<String>,
    #[serde(default)]
    header: Option<String>,
    #[serde(default)]
    tolerance_s: Option<Tolerance>,
    event_type: EventTypeRule,
    #[serde(default)]
    watch: Option<SilenceWatch>,
    token_hash: String,
    created_at_ms: u64,
    updated_at_ms: u64,
}

/// A source, secret opened.
#[derive(Debug, Clone)]
pub struct Source {
    pub id: SourceId,
    pub tenant: TenantId,
    pub name: Name,
    pub scheme: Scheme,
    /// The sender's secret (empty for scheme `none`).
    pub secret: SecretText,
    /// The signature header of `hmac_sha256_hex`, when chosen.
    pub header: Option<String>,
    pub tolerance_s: Option<Tolerance>,
    pub event_type: EventTypeRule,
    pub watch: Option<SilenceWatch>,
    pub token_hash: TokenHash,
    pub created_at_ms: u64,
    pub updated_at_ms: u64,
}

fn secret_context(id: &SourceId) -> String {
    format!("source:{id}:secret")
}

impl Store {
    fn open_source(&self, id: &SourceId, doc: &str) -> Result<Source, StoreError> {
        let key = self.keys.source(id);
        let corrupt = |reason: &str| StoreError::Corrupt {
            key: key.clone(),
            reason: reason.to_owned(),
        };
        let d: SourceDoc = decode_doc(&key, doc)?;
        let secret = match &d.secret {
            Some(sealed) => {
                let plain = self.crypto.open(sealed, &secret_context(id))?;
                String::from_utf8(plain).map_err(|_| corrupt("secret is not UTF-8"))?
            }
            None => String::new(),
        };
        Ok(Source {
            id: id.clone(),
            token_hash: TokenHash::from_hex(&d.token_hash)
                .ok_or_else(|| corrupt("token_hash is not 64 hex digits"))?,
            tenant: d.tenant,
            name: d.name,
            scheme: d.scheme,
            secret: SecretText::new(secret),
            header: d.header,
            tolerance_s: d.tolerance_s,
            event_type: d.event_type,
            watch: d.watch,
            created_at_ms: d.created_at_ms,
            updated_at_ms: d.updated_at_ms,
        })
    }

    async fn save_source(
        &self,
        id: &SourceId,
        doc: &SourceDoc,
        old_token_hash: Option<&str>,
        expected: Option<&str>,
    ) -> Result<String, StoreError> {
        let json = serde_json::to_string(doc)?;
        let token_entry = |hex: &str| {
            TokenHash::from_hex(hex)
                .map(|h| self.keys.source_token(&h))
                .ok_or_else(|| StoreError::Corrupt {
                    key: self.keys.source(id),
                    reason: "token_hash is not 64 hex digits".into(),
                })
        };
        self.save_tokened(TokenedWrite {
            doc_key: self.keys.source(id),
            token_entry: token_entry(&doc.token_hash)?,
            tenant_index: self.keys.tenant_sources(&doc.tenant),
            tenant_key: self.keys.tenant(&doc.tenant),
            old_token_entry: token_entry(old_token_hash.unwrap_or(&doc.token_hash))?,
            id: id.as_str(),
            json: &json,
            tenant: doc.tenant.as_str(),
            expected,
        })
        .await?;
        Ok(json)
    }

    /// Creates a source (spec validated); returns it and its URL token, shown this once.
    pub async fn create_source(
        &self,
        tenant: &TenantId,
        spec: &SourceSpec,
    ) -> Result<(Source, String), StoreError> {
        let id = SourceId::generate();
        let token = random_token(TOKEN_PREFIX)?;
        let now = self.clock.now_ms();
        let secret = match spec.verify.secret.as_ref().filter(|s| !s.is_empty()) {
            Some(s) => Some(
                self.crypto
                    .seal(s.expose().as_bytes(), &secret_context(&id))?,
            ),
            None => None,
        };
        let doc = SourceDoc {
            tenant: tenant.clone(),
            name: spec.name.clone(),
            scheme: spec.verify.scheme,
            secret,
            header: spec.verify.header.clone(),
            tolerance_s: spec.verify.tolerance_s,
            event_type: spec.event_type.clone(),
            watch: spec.watch(),
            token_hash: self.crypto.hash_token(&token).to_hex(),
            created_at_ms: now,
            updated_at_ms: now,
        };
        let json = self.save_source(&id, &doc, None, None).await?;
        Ok((self.open_source(&id, &json)?, token))
    }

    async fn source_doc(&self, id: &SourceId) -> Result<Option<String>, StoreError> {
        Ok(self.redis.hget(self.keys.source(id), "doc").await?)
    }

    /// One source of `tenant`.
    pub async fn source(
        &self,
        tenant: &TenantId,
        id: &SourceId,
    ) -> Result<Option<Source>, StoreError> {
        match self.source_doc(id).await? {
            Some(d) => Ok(Some(self.open_source(id, &d)?).filter(|s| s.tenant == *tenant)),
            None => Ok(None),
        }
    }

    /// A source whoever owns it: for the operator's search by id only.
    pub async fn source_by_id(&self, id: &SourceId) -> Result<Option<Source>, StoreError> {
        match self.source_doc(id).await? {
            Some(d) => Ok(Some(self.open_source(id, &d)?)),
            None => Ok(None),
        }
    }

    /// The source whose URL token hashes to `hash`.
    pub async fn source_by_token(&self, hash: &TokenHash) -> Result<Option<Source>, StoreError> {
        let id: Option<String> = self.redis.get(self.keys.source_token(hash)).await?;
        let Some(id) = id.and_then(|i| SourceId::parse(&i).ok()) else {
            return Ok(None);
        };
        match self.source_doc(&id).await? {
            // A token whose hash no longer matches the document was rotated away.
            Some(d) => Ok(Some(self.open_source(&id, &d)?).filter(|s| s.token_hash == *hash)),
            None => Ok(None),
        }
    }

    /// Every source of `tenant`.
    pub async fn sources_of(&self, tenant: &TenantId) -> Result<Vec<Source>, StoreError> {
        let ids: Vec<String> = self
            .redis
            .zrangebylex(self.keys.tenant_sources(tenant), "-", "+", None)
            .await?;
        let mut out = Vec::with_capacity(ids.len());
        for id in ids.iter().filter_map(|i| SourceId::parse(i).ok()) {
            if let Some(s) = self.source(tenant, &id).await? {
                out.push(s);
            }
        }
        Ok(out)
    }

    /// Replaces the URL token; the old one stops working at once. Returns the new token.
    pub async fn rotate_source_token(
        &self,
        tenant: &TenantId,
        id: &SourceId,
    ) -> Result<Option<(Source, String)>, StoreError> {
        let Some(stored) = self.source_doc(id).await? else {
            return Ok(None);
        };
        let mut d: SourceDoc = decode_doc(&self.keys.source(id), &stored)?;
        if d.tenant != *tenant {
            return Ok(None);
        }
        let token = random_token(TOKEN_PREFIX)?;
        let old = std::mem::replace(&mut d.token_hash, self.crypto.hash_token(&token).to_hex());
        d.updated_at_ms = self.clock.now_ms();
        let json = self.save_source(id, &d, Some(&old), Some(&stored)).await?;
        if let Some(h) = TokenHash::from_hex(&old) {
            self.publish(Invalidation::Source(h)).await;
        }
        Ok(Some((self.open_source(id, &json)?, token)))
    }

    /// Deletes a source; `false` when it is not there (for this tenant).
    pub async fn delete_source(
        &self,
        tenant: &TenantId,
        id: &SourceId,
    ) -> Result<bool, StoreError> {
        let Some(s) = self.source(tenant, id).await? else {
            return Ok(false);
        };
        self.delete_tokened(
            self.keys.source(id),
            self.keys.source_token(&s.token_hash),
            self.keys.tenant_sources(tenant),
            id.as_str(),
        )
        .await?;
        self.publish(Invalidation::Source(s.token_hash)).await;
        Ok(true)
    }
}
