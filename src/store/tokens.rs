//! Bearer tokens: issue, revoke, list, and lookup by keyed hash.

use std::collections::HashMap;

use fred::prelude::*;

use super::error::{StoreError, unexpected};
use super::handle::Store;
use crate::crypto::{TokenHash, random_token};
use crate::model::{TenantId, TokenId};
use crate::redis::invalidation::Invalidation;
use crate::redis::scripts::{self, ISSUE_TOKEN, REVOKE_TOKEN};

/// Prefix of generated tenant tokens, so a leaked one is recognisable by secret scanners.
pub const TOKEN_PREFIX: &str = "est_";
/// Id prefix of tokens declared in the config file; their ids derive from their hash so a
/// restart finds the same ones.
const CONFIG_TOKEN_ID_PREFIX: &str = "tok_cfg_";
/// Most live tokens per tenant.
pub const MAX_TOKENS_PER_TENANT: usize = 100;

/// A newly issued token: the only time its text is available.
#[derive(Debug)]
pub struct IssuedToken {
    pub id: TokenId,
    pub token: String,
}

/// A token as listed (never with its text).
#[derive(Debug)]
pub struct TokenInfo {
    pub id: TokenId,
    pub created_at_ms: Option<u64>,
}

/// Who a token belongs to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TokenOwner {
    pub tenant_id: TenantId,
    pub token_id: TokenId,
}

/// A fresh random token and its id.
pub fn generate_token() -> Result<(TokenId, String), StoreError> {
    Ok((TokenId::generate(), random_token(TOKEN_PREFIX)?))
}

enum Registered {
    Ok,
    Exists,
    NoTenant,
    Taken,
}

impl Store {
    /// Issues a new random token for `tenant`; `None` when the tenant does not exist.
    pub async fn issue_token(&self, tenant: &TenantId) -> Result<Option<IssuedToken>, StoreError> {
        let (id, token) = generate_token()?;
        let hash = self.crypto.hash_token(&token);
        match self.register_token(tenant, &id, &hash).await? {
            Registered::Ok => Ok(Some(IssuedToken { id, token })),
            Registered::NoTenant => Ok(None),
            // 256 random bits cannot collide with a registered token.
            Registered::Exists | Registered::Taken => Err(unexpected("issue_token", "collision")),
        }
    }

    async fn register_token(
        &self,
        tenant: &TenantId,
        id: &TokenId,
        hash: &TokenHash,
    ) -> Result<Registered, StoreError> {
        let keys = vec![
            self.keys.tenant(tenant),
            self.keys.token(hash),
            self.keys.tenant_tokens(tenant),
        ];
        let args = vec![
            tenant.to_string(),
            id.to_string(),
            hash.to_hex(),
            self.clock.now_ms().to_string(),
            MAX_TOKENS_PER_TENANT.to_string(),
        ];
        let answer: scripts::Status = ISSUE_TOKEN.run(&self.redis, keys, args).await?;
        match answer.status.as_str() {
            "ok" => Ok(Registered::Ok),
            "exists" => Ok(Registered::Exists),
            "not_found" => Ok(Registered::NoTenant),
            "taken" => Ok(Registered::Taken),
            "too_many" => Err(StoreError::Conflict(format!(
                "the tenant already has {MAX_TOKENS_PER_TENANT} tokens; revoke one first"
            ))),
            other => Err(unexpected("issue_token", other)),
        }
    }

    /// Revokes a token of `tenant`; its hash (the caller drops it from its own cache at once),
    /// or `None` when there is no such token.
    pub async fn revoke_token(
        &self,
        tenant: &TenantId,
        token_id: &TokenId,
    ) -> Result<Option<TokenHash>, StoreError> {
        let hash: Option<String> = self
            .redis
            .hget(self.keys.tenant_tokens(tenant), token_id.as_str())
            .await?;
        let Some(hash) = hash else {
            return Ok(None);
        };
        let keys = vec![self.keys.tenant_tokens(tenant), self.keys.token_hex(&hash)];
        let answer: scripts::Status = REVOKE_TOKEN
            .run(&self.redis, keys, vec![token_id.to_string(), hash.clone()])
            .await?;
        match answer.status.as_str() {
            "ok" => {
                let parsed = TokenHash::from_hex(&hash).ok_or_else(|| StoreError::Corrupt {
                    key: self.keys.tenant_tokens(tenant),
                    reason: "a token hash is not 64 hex digits".into(),
                })?;
                self.publish(Invalidation::Token(parsed)).await;
                Ok(Some(parsed))
            }
            "not_found" => Ok(None),
            other => Err(unexpected("revoke_token", other)),
        }
    }

    /// The tenant's tokens (ids and creation times).
    pub async fn list_tokens(&self, tenant: &TenantId) -> Result<Vec<TokenInfo>, StoreError> {
        let tokens: HashMap<String, String> =
            self.redis.hgetall(self.keys.tenant_tokens(tenant)).await?;
        let mut ids: Vec<(TokenId, String)> = tokens
            .into_iter()
            .filter_map(|(id, hash)| Some((TokenId::parse(&id).ok()?, hash)))
            .collect();
        ids.sort_by(|a, b| a.0.cmp(&b.0));
        if ids.is_empty() {
            return Ok(Vec::new());
        }
        let pipeline = self.redis.pipeline();
        for (_, hash) in &ids {
            let _: () = pipeline
                .hget(self.keys.token_hex(hash), "created_at")
                .await?;
        }
        let created: Vec<Option<u64>> = pipeline.all().await?;
        Ok(ids
            .into_iter()
            .zip(created)
            .map(|((id, _), at)| TokenInfo {
                id,
                created_at_ms: at,
            })
            .collect())
    }

    /// Who owns the token with this hash, if anyone.
    pub async fn token_owner(&self, hash: &TokenHash) -> Result<Option<TokenOwner>, StoreError> {
        let (tenant, id): (Option<String>, Option<String>) = self
            .redis
            .hmget(self.keys.token(hash), vec!["tenant", "id"])
            .await?;
        let (Some(tenant), Some(id)) = (tenant, id) else {
            return Ok(None);
        };
        let corrupt = |what: &str| StoreError::Corrupt {
            key: self.keys.token(hash),
            reason: format!("{what} is not an id"),
        };
        Ok(Some(TokenOwner {
            tenant_id: TenantId::parse(&tenant).map_err(|_| corrupt("tenant"))?,
            token_id: TokenId::parse(&id).map_err(|_| corrupt("id"))?,
        }))
    }

    /// Registers the config-declared tokens of `tenant` and revokes its config tokens that are
    /// no longer declared. Tokens issued through the API are left alone.
    pub(super) async fn sync_config_tokens(
        &self,
        tenant: &TenantId,
        declared: &[&str],
    ) -> Result<(), StoreError> {
        let mut keep = Vec::with_capacity(declared.len());
        for token in declared {
            let hash = self.crypto.hash_token(token);
            let id = TokenId::parse(&format!("{CONFIG_TOKEN_ID_PREFIX}{}", &hash.to_hex()[..16]))
                .map_err(|e| StoreError::Reply(format!("config token id {e}")))?;
            match self.register_token(tenant, &id, &hash).await? {
                Registered::Ok | Registered::Exists => keep.push(id),
                Registered::NoTenant => return Err(StoreError::NotFound("tenant")),
                Registered::Taken => {
                    return Err(StoreError::Conflict(format!(
                        "a token declared for tenant `{tenant}` already belongs to another tenant"
                    )));
                }
            }
        }
        let current: HashMap<String, String> =
            self.redis.hgetall(self.keys.tenant_tokens(tenant)).await?;
        for id in current.keys() {
            if !id.starts_with(CONFIG_TOKEN_ID_PREFIX) {
                continue;
            }
            if let Ok(id) = TokenId::parse(id) {
                if !keep.contains(&id) {
                    self.revoke_token(tenant, &id).await?;
                }
            }
        }
        Ok(())
    }
}
