//! Portal links: signed, expiring, single-tenant, revocable links into the tenant portal.
//!
//! A link's text is `<link id>.<expires_ms>.<signature>`, the signature a MAC (under a key
//! derived from the master key) over the tenant, the id and the expiry. Redis keeps the link's
//! record (tenant and expiry) until it expires; revoking deletes it. A link is honoured only
//! when its signature is right for the record's tenant, its expiry is the record's and is
//! still ahead, and the record is there. A single-use link is exchanged for a session once:
//! its first use claims a marker (`SET NX`, living as long as the link), and a second use
//! finds it taken. The record stays, so revoking still ends the session it opened. Each
//! tenant's live links are indexed by expiry, for listing.

use fred::prelude::*;
use serde::{Deserialize, Serialize};

use super::error::StoreError;
use super::handle::Store;
use crate::crypto::secrets_equal;
use crate::model::{PortalLinkId, TenantId};

/// A portal link's record.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct PortalLink {
    pub id: PortalLinkId,
    pub tenant: TenantId,
    pub expires_ms: u64,
    /// Issued at (ms); absent on links issued before it was recorded.
    #[serde(default)]
    pub created_ms: u64,
    /// Whether its first use is its only one (links issued before the setting were reusable).
    #[serde(default)]
    pub single_use: bool,
}

/// What opening a link found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Opened {
    /// Genuine, live, and not used up: a session may start.
    Valid(PortalLink),
    /// Genuine and live, but single-use and already exchanged for a session.
    Used,
    /// Unknown, altered, expired or revoked.
    Invalid,
}

/// A live link as listed: its record and when it was first used.
#[derive(Debug, Clone)]
pub struct ListedLink {
    pub link: PortalLink,
    pub used_ms: Option<u64>,
}

impl Store {
    fn portal_link_key(&self, id: &PortalLinkId) -> String {
        format!("{}:{{m}}:portal_link:{id}", self.keys.prefix())
    }

    fn portal_link_used_key(&self, id: &PortalLinkId) -> String {
        format!("{}:{{m}}:portal_link_used:{id}", self.keys.prefix())
    }

    fn tenant_portal_links_key(&self, tenant: &TenantId) -> String {
        format!("{}:{{m}}:tenant_portal_links:{tenant}", self.keys.prefix())
    }

    fn link_message(tenant: &TenantId, id: &PortalLinkId, expires_ms: u64) -> String {
        format!("{tenant}|{id}|{expires_ms}")
    }

    /// Issues a link into `tenant`'s portal, valid `ttl_s`; answers it and its text.
    pub async fn create_portal_link(
        &self,
        tenant: &TenantId,
        ttl_s: u64,
        single_use: bool,
    ) -> Result<(PortalLink, String), StoreError> {
        let now = self.clock.now_ms();
        let link = PortalLink {
            id: PortalLinkId::generate(),
            tenant: tenant.clone(),
            expires_ms: now.saturating_add(ttl_s.saturating_mul(1000)),
            created_ms: now,
            single_use,
        };
        let value = serde_json::to_string(&link)?;
        let index = self.tenant_portal_links_key(tenant);
        let pipe = self.redis.pipeline();
        let _: () = pipe
            .set(
                self.portal_link_key(&link.id),
                value,
                Some(Expiration::PX((ttl_s.saturating_mul(1000)) as i64)),
                None,
                false,
            )
            .await?;
        // The index lives as long as its longest-lived link; expired members go when listed.
        let _: () = pipe
            .zadd(
                &index,
                None,
                None,
                false,
                false,
                (link.expires_ms as f64, link.id.as_str()),
            )
            .await?;
        let _: () = pipe
            .zremrangebyscore(&index, f64::NEG_INFINITY, now as f64)
            .await?;
        // NX gives a new index its lifetime; GT lengthens it (GT alone skips a key with none).
        for option in [
            fred::types::ExpireOptions::NX,
            fred::types::ExpireOptions::GT,
        ] {
            let _: () = pipe
                .pexpire_at(&index, link.expires_ms as i64, Some(option))
                .await?;
        }
        let _: Vec<Value> = pipe.all().await?;
        let signature =
            self.crypto
                .sign_link(&Self::link_message(tenant, &link.id, link.expires_ms));
        let text = format!("{}.{}.{signature}", link.id, link.expires_ms);
        Ok((link, text))
    }

    /// What the link `text` stands for: valid when it is genuine, unexpired, not revoked and
    /// (single-use) not used yet, in which case this use is its one.
    pub async fn open_portal_link(&self, text: &str) -> Result<Opened, StoreError> {
        let mut parts = text.splitn(3, '.');
        let (Some(id), Some(expires), Some(signature)) = (parts.next(), parts.next(), parts.next())
        else {
            return Ok(Opened::Invalid);
        };
        let (Ok(id), Ok(expires_ms)) = (PortalLinkId::parse(id), expires.parse::<u64>()) else {
            return Ok(Opened::Invalid);
        };
        let Some(link) = self.portal_link(&id).await? else {
            return Ok(Opened::Invalid);
        };
        let expected = self
            .crypto
            .sign_link(&Self::link_message(&link.tenant, &id, expires_ms));
        let genuine = secrets_equal(signature.as_bytes(), expected.as_bytes());
        let now = self.clock.now_ms();
        if !genuine || expires_ms != link.expires_ms || expires_ms <= now {
            return Ok(Opened::Invalid);
        }
        if link.single_use {
            let claimed: Option<String> = self
                .redis
                .set(
                    self.portal_link_used_key(&id),
                    now,
                    Some(Expiration::PXAT(link.expires_ms as i64)),
                    Some(SetOptions::NX),
                    false,
                )
                .await?;
            if claimed.is_none() {
                return Ok(Opened::Used);
            }
        }
        Ok(Opened::Valid(link))
    }

    /// `tenant`'s live links, soonest to expire first, with when each was first used.
    pub async fn portal_links(&self, tenant: &TenantId) -> Result<Vec<ListedLink>, StoreError> {
        let now = self.clock.now_ms();
        let ids: Vec<String> = self
            .redis
            .zrangebyscore(
                self.tenant_portal_links_key(tenant),
                now as f64,
                f64::INFINITY,
                false,
                None,
            )
            .await?;
        let mut out = Vec::with_capacity(ids.len());
        for id in ids {
            let Ok(id) = PortalLinkId::parse(&id) else {
                continue;
            };
            let Some(link) = self.portal_link(&id).await? else {
                continue;
            };
            if link.tenant != *tenant {
                continue;
            }
            let used: Option<u64> = self.redis.get(self.portal_link_used_key(&id)).await?;
            out.push(ListedLink {
                link,
                used_ms: used,
            });
        }
        Ok(out)
    }

    /// The record of link `id`, while it lives.
    pub async fn portal_link(&self, id: &PortalLinkId) -> Result<Option<PortalLink>, StoreError> {
        let value: Option<String> = self.redis.get(self.portal_link_key(id)).await?;
        let Some(value) = value else { return Ok(None) };
        let link: PortalLink = serde_json::from_str(&value).map_err(|e| StoreError::Corrupt {
            key: self.portal_link_key(id),
            reason: e.to_string(),
        })?;
        Ok((link.expires_ms > self.clock.now_ms()).then_some(link))
    }

    /// Revokes `tenant`'s link `id`; `false` when it has no such live link.
    pub async fn revoke_portal_link(
        &self,
        tenant: &TenantId,
        id: &PortalLinkId,
    ) -> Result<bool, StoreError> {
        match self.portal_link(id).await? {
            Some(link) if link.tenant == *tenant => {
                let _: i64 = self
                    .redis
                    .del(vec![
                        self.portal_link_key(id),
                        self.portal_link_used_key(id),
                    ])
                    .await?;
                let _: i64 = self
                    .redis
                    .zrem(self.tenant_portal_links_key(tenant), id.as_str())
                    .await?;
                Ok(true)
            }
            _ => Ok(false),
        }
    }
}
