//! Portal links: signed, expiring, single-tenant, revocable links into the tenant portal.
//!
//! A link's text is `<link id>.<expires_ms>.<signature>`, the signature a MAC (under a key
//! derived from the master key) over the tenant, the id and the expiry. Redis keeps the link's
//! record (tenant and expiry) until it expires; revoking deletes it. A link is honoured only
//! when its signature is right for the record's tenant, its expiry is the record's and is
//! still ahead, and the record is there.

use fred::prelude::*;
use serde::{Deserialize, Serialize};

use super::error::StoreError;
use super::handle::Store;
use crate::crypto::secrets_equal;
use crate::model::time::now_ms;
use crate::model::{PortalLinkId, TenantId};

/// A portal link's record.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct PortalLink {
    pub id: PortalLinkId,
    pub tenant: TenantId,
    pub expires_ms: u64,
}

impl Store {
    fn portal_link_key(&self, id: &PortalLinkId) -> String {
        format!("{}:{{m}}:portal_link:{id}", self.keys.prefix())
    }

    fn link_message(tenant: &TenantId, id: &PortalLinkId, expires_ms: u64) -> String {
        format!("{tenant}|{id}|{expires_ms}")
    }

    /// Issues a link into `tenant`'s portal, valid `ttl_s`; answers it and its text.
    pub async fn create_portal_link(
        &self,
        tenant: &TenantId,
        ttl_s: u64,
    ) -> Result<(PortalLink, String), StoreError> {
        let link = PortalLink {
            id: PortalLinkId::generate(),
            tenant: tenant.clone(),
            expires_ms: now_ms().saturating_add(ttl_s.saturating_mul(1000)),
        };
        let value = serde_json::to_string(&link)?;
        let _: () = self
            .redis
            .set(
                self.portal_link_key(&link.id),
                value,
                Some(Expiration::PX((ttl_s.saturating_mul(1000)) as i64)),
                None,
                false,
            )
            .await?;
        let signature =
            self.crypto
                .sign_link(&Self::link_message(tenant, &link.id, link.expires_ms));
        let text = format!("{}.{}.{signature}", link.id, link.expires_ms);
        Ok((link, text))
    }

    /// The link `text` stands for, when it is genuine, unexpired and not revoked.
    pub async fn open_portal_link(&self, text: &str) -> Result<Option<PortalLink>, StoreError> {
        let mut parts = text.splitn(3, '.');
        let (Some(id), Some(expires), Some(signature)) = (parts.next(), parts.next(), parts.next())
        else {
            return Ok(None);
        };
        let (Ok(id), Ok(expires_ms)) = (PortalLinkId::parse(id), expires.parse::<u64>()) else {
            return Ok(None);
        };
        let Some(link) = self.portal_link(&id).await? else {
            return Ok(None);
        };
        let expected = self
            .crypto
            .sign_link(&Self::link_message(&link.tenant, &id, expires_ms));
        let genuine = secrets_equal(signature.as_bytes(), expected.as_bytes());
        if !genuine || expires_ms != link.expires_ms || expires_ms <= now_ms() {
            return Ok(None);
        }
        Ok(Some(link))
    }

    /// The record of link `id`, while it lives.
    pub async fn portal_link(&self, id: &PortalLinkId) -> Result<Option<PortalLink>, StoreError> {
        let value: Option<String> = self.redis.get(self.portal_link_key(id)).await?;
        let Some(value) = value else { return Ok(None) };
        let link: PortalLink = serde_json::from_str(&value).map_err(|e| StoreError::Corrupt {
            key: self.portal_link_key(id),
            reason: e.to_string(),
        })?;
        Ok((link.expires_ms > now_ms()).then_some(link))
    }

    /// Revokes `tenant`'s link `id`; `false` when it has no such live link.
    pub async fn revoke_portal_link(
        &self,
        tenant: &TenantId,
        id: &PortalLinkId,
    ) -> Result<bool, StoreError> {
        match self.portal_link(id).await? {
            Some(link) if link.tenant == *tenant => {
                let _: i64 = self.redis.del(self.portal_link_key(id)).await?;
                Ok(true)
            }
            _ => Ok(false),
        }
    }
}
