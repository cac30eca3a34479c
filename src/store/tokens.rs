//! Bearer tokens: issue, revoke, list, and lookup by keyed hash.

use std::collections::HashMap;

use fred::prelude::*;
use serde::Serialize;

use super::scripts::{ISSUE_TOKEN, REVOKE_TOKEN};
use super::tenants::unexpected;
use super::{Store, StoreError, now_ms, rfc3339};
use crate::crypto::{TokenHash, random_token};

/// Prefix of generated tenant tokens, so a leaked one is recognisable by secret scanners.
pub const TOKEN_PREFIX: &str = "est_";
/// Id prefix of tokens declared in the config file; their ids derive from their hash so a
/// restart finds the same ones.
const CONFIG_TOKEN_ID_PREFIX: &str = "tok_cfg_";
/// Most live tokens per tenant.
pub const MAX_TOKENS_PER_TENANT: usize = 100;

/// A newly issued token: the only time its text is available.
#[derive(Debug, Serialize)]
pub struct IssuedToken {
    pub id: String,
    pub token: String,
}

/// A token as listed (never with its text).
#[derive(Debug, Serialize)]
pub struct TokenInfo {
    pub id: String,
    pub created_at: Option<String>,
}

/// Who a token belongs to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TokenOwner {
    pub tenant_id: String,
    pub token_id: String,
}

/// A fresh random token and its id.
pub fn generate_token() -> Result<(String, String), StoreError> {
    Ok((super::new_id("tok"), random_token(TOKEN_PREFIX)?))
}

impl Store {
    /// Issues a new random token for `tenant`; `None` when the tenant does not exist.
    pub async fn issue_token(&self, tenant: &str) -> Result<Option<IssuedToken>, StoreError> {
        let (id, token) = generate_token()?;
        let hash = self.crypto.hash_token(&token);
        match self.register_token(tenant, &id, &hash).await? {
            Registered::Ok => Ok(Some(IssuedToken { id, token })),
            Registered::NoTenant => Ok(None),
            // 256 random bits cannot collide with a registered token.
            Registered::Exists | Registered::Taken => Err(unexpected("token collision")),
        }
    }

    async fn register_token(
        &self,
        tenant: &str,
        id: &str,
        hash: &TokenHash,
    ) -> Result<Registered, StoreError> {
        let keys = vec![
            self.keys.tenant(tenant),
            self.keys.token(hash),
            self.keys.tenant_tokens(tenant),
        ];
        let args = vec![
            tenant.to_owned(),
            id.to_owned(),
            hash.to_hex(),
            now_ms().to_string(),
            MAX_TOKENS_PER_TENANT.to_string(),
        ];
        let status: String = ISSUE_TOKEN
            .evalsha_with_reload(&self.redis, keys, args)
            .await?;
        match status.as_str() {
            "ok" => Ok(Registered::Ok),
            "exists" => Ok(Registered::Exists),
            "not_found" => Ok(Registered::NoTenant),
            "taken" => Ok(Registered::Taken),
            "too_many" => Err(StoreError::Conflict(format!(
                "the tenant already has {MAX_TOKENS_PER_TENANT} tokens; revoke one first"
            ))),
            other => Err(unexpected(other)),
        }
    }

    /// Revokes a token of `tenant`; the auth-cache entry to drop (`token:<hash>`), or `None`
    /// when there is no such token.
    pub async fn revoke_token(
        &self,
        tenant: &str,
        token_id: &str,
    ) -> Result<Option<String>, StoreError> {
        let hash: Option<String> = self
            .redis
            .hget(self.keys.tenant_tokens(tenant), token_id)
            .await?;
        let Some(hash) = hash else {
            return Ok(None);
        };
        let keys = vec![self.keys.tenant_tokens(tenant), self.keys.token_hex(&hash)];
        let status: String = REVOKE_TOKEN
            .evalsha_with_reload(&self.redis, keys, vec![token_id.to_owned(), hash.clone()])
            .await?;
        match status.as_str() {
            "ok" => {
                let entry = format!("token:{hash}");
                self.publish_invalidation(entry.clone()).await;
                Ok(Some(entry))
            }
            "not_found" => Ok(None),
            other => Err(unexpected(other)),
        }
    }

    /// The tenant's tokens (ids and creation times).
    pub async fn list_tokens(&self, tenant: &str) -> Result<Vec<TokenInfo>, StoreError> {
        let tokens: HashMap<String, String> =
            self.redis.hgetall(self.keys.tenant_tokens(tenant)).await?;
        let mut ids: Vec<(String, String)> = tokens.into_iter().collect();
        ids.sort();
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
                created_at: at.map(rfc3339),
            })
            .collect())
    }

    /// Who owns the token with this hash, if anyone.
    pub async fn token_owner(&self, hash: &TokenHash) -> Result<Option<TokenOwner>, StoreError> {
        let (tenant, id): (Option<String>, Option<String>) = self
            .redis
            .hmget(self.keys.token(hash), vec!["tenant", "id"])
            .await?;
        Ok(match (tenant, id) {
            (Some(tenant_id), Some(token_id)) => Some(TokenOwner {
                tenant_id,
                token_id,
            }),
            _ => None,
        })
    }

    /// Registers the config-declared tokens of `tenant` and revokes its config tokens that are
    /// no longer declared. Tokens issued through the API are left alone.
    pub(super) async fn sync_config_tokens(
        &self,
        tenant: &str,
        declared: &[&str],
    ) -> Result<(), StoreError> {
        let mut keep = Vec::with_capacity(declared.len());
        for token in declared {
            let hash = self.crypto.hash_token(token);
            let id = format!("{CONFIG_TOKEN_ID_PREFIX}{}", &hash.to_hex()[..16]);
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
            if id.starts_with(CONFIG_TOKEN_ID_PREFIX) && !keep.contains(id) {
                self.revoke_token(tenant, id).await?;
            }
        }
        Ok(())
    }
}

enum Registered {
    Ok,
    Exists,
    NoTenant,
    Taken,
}
