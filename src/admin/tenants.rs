//! Tenant and token management handlers.

use axum::Json;
use axum::body::Body;
use axum::extract::rejection::QueryRejection;
use axum::extract::{Path, Query, State};
use axum::response::{IntoResponse, Response};
use http::{HeaderMap, StatusCode};
use serde::{Deserialize, Serialize};

use super::AdminState;
use crate::body::read_json;
use crate::config::RateLimit;
use crate::error::ApiError;
use crate::monitors::state::Kind;
use crate::observe::current_request_id;
use crate::store::{NewTenant, Tenant, TenantPatch, is_id, validate_external_id, validate_name};

/// Largest page of a listing.
const MAX_PAGE: usize = 500;
/// Default page of a listing.
const DEFAULT_PAGE: usize = 100;

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CreateTenant {
    name: String,
    #[serde(default)]
    external_id: Option<String>,
    #[serde(default)]
    rate_limit: Option<RateLimit>,
    #[serde(default)]
    active: Option<bool>,
}

#[derive(Debug, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct UpdateTenant {
    #[serde(default)]
    name: Option<String>,
    #[serde(default)]
    active: Option<bool>,
    #[serde(default, deserialize_with = "crate::store::present")]
    rate_limit: Option<Option<RateLimit>>,
    #[serde(default, deserialize_with = "crate::store::present")]
    external_id: Option<Option<String>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ListQuery {
    #[serde(default)]
    external_id: Option<String>,
    #[serde(default)]
    after: Option<String>,
    #[serde(default)]
    limit: Option<usize>,
}

#[derive(Serialize)]
struct Created {
    #[serde(flatten)]
    tenant: Tenant,
    token: String,
    token_id: String,
}

#[derive(Serialize)]
struct Page<T> {
    data: Vec<T>,
    /// Pass as `after` for the next page; `null` on the last one.
    next: Option<String>,
}

fn check_name(name: &str) -> Result<(), ApiError> {
    validate_name(name).map_err(|m| ApiError::bad_request("invalid_name", format!("name {m}")))
}

fn check_external_id(ext: &str) -> Result<(), ApiError> {
    validate_external_id(ext)
        .map_err(|m| ApiError::bad_request("invalid_external_id", format!("external_id {m}")))
}

fn check_rate_limit(limit: &RateLimit) -> Result<(), ApiError> {
    limit
        .validate()
        .map_err(|m| ApiError::bad_request("invalid_rate_limit", format!("rate_limit.{m}")))
}

/// Ids in paths are checked before they reach a Redis key.
fn check_id(id: &str, what: &str) -> Result<(), ApiError> {
    if is_id(id) {
        Ok(())
    } else {
        Err(ApiError::not_found(what))
    }
}

pub async fn create(
    State(s): State<AdminState>,
    headers: HeaderMap,
    body: Body,
) -> Result<Response, ApiError> {
    let req: CreateTenant = read_json(body, &headers, &s.body_limits).await?;
    check_name(&req.name)?;
    if let Some(ext) = &req.external_id {
        check_external_id(ext)?;
    }
    if let Some(limit) = &req.rate_limit {
        check_rate_limit(limit)?;
    }
    let (token_id, token) = crate::store::tokens::generate_token()?;
    let hash = s.store.crypto().hash_token(&token);
    let new = NewTenant {
        id: None,
        name: req.name,
        external_id: req.external_id,
        active: req.active.unwrap_or(true),
        rate_limit: req.rate_limit,
    };
    let record = s
        .store
        .create_tenant(&new, "api", Some((&token_id, &hash.to_hex())))
        .await?;
    tracing::info!(request_id = %current_request_id(), tenant = %record.id, "tenant created");
    let body = Created {
        tenant: Tenant::from(&record),
        token,
        token_id,
    };
    Ok((StatusCode::CREATED, Json(body)).into_response())
}

pub async fn list(
    State(s): State<AdminState>,
    query: Result<Query<ListQuery>, QueryRejection>,
) -> Result<Response, ApiError> {
    let Query(q) = query.map_err(|e| ApiError::bad_request("invalid_query", e.body_text()))?;
    if let Some(ext) = &q.external_id {
        check_external_id(ext)?;
        let found = s.store.tenant_by_external_id(ext).await?;
        let data: Vec<Tenant> = found.iter().map(Tenant::from).collect();
        return Ok(Json(Page { data, next: None }).into_response());
    }
    let limit = q.limit.unwrap_or(DEFAULT_PAGE);
    if limit == 0 || limit > MAX_PAGE {
        return Err(ApiError::bad_request(
            "invalid_query",
            format!("limit must be between 1 and {MAX_PAGE}"),
        ));
    }
    if let Some(after) = &q.after {
        if !is_id(after) {
            return Err(ApiError::bad_request(
                "invalid_query",
                "after must be a tenant id",
            ));
        }
    }
    let (records, more) = s.store.list_tenants(q.after.as_deref(), limit).await?;
    let next = if more {
        records.last().map(|r| r.id.clone())
    } else {
        None
    };
    let data = records.iter().map(Tenant::from).collect();
    Ok(Json(Page { data, next }).into_response())
}

pub async fn read(
    State(s): State<AdminState>,
    Path(id): Path<String>,
) -> Result<Response, ApiError> {
    check_id(&id, "tenant")?;
    match s.store.tenant(&id).await? {
        Some(r) => Ok(Json(Tenant::from(&r)).into_response()),
        None => Err(ApiError::not_found("tenant")),
    }
}

pub async fn update(
    State(s): State<AdminState>,
    Path(id): Path<String>,
    headers: HeaderMap,
    body: Body,
) -> Result<Response, ApiError> {
    check_id(&id, "tenant")?;
    let req: UpdateTenant = read_json(body, &headers, &s.body_limits).await?;
    if let Some(name) = &req.name {
        check_name(name)?;
    }
    if let Some(Some(ext)) = &req.external_id {
        check_external_id(ext)?;
    }
    if let Some(Some(limit)) = &req.rate_limit {
        check_rate_limit(limit)?;
    }
    let patch = TenantPatch {
        name: req.name,
        active: req.active,
        rate_limit: req.rate_limit,
        external_id: req.external_id,
    };
    let record = s
        .store
        .update_tenant(&id, &patch)
        .await?
        .ok_or_else(|| ApiError::not_found("tenant"))?;
    // This instance drops its entry now; the others when the published invalidation arrives.
    s.auth.invalidate(&format!("tenant:{id}")).await;
    tracing::info!(request_id = %current_request_id(), tenant = %id, active = record.active, "tenant updated");
    Ok(Json(Tenant::from(&record)).into_response())
}

pub async fn remove(
    State(s): State<AdminState>,
    Path(id): Path<String>,
) -> Result<Response, ApiError> {
    check_id(&id, "tenant")?;
    if !s.store.delete_tenant(&id).await? {
        return Err(ApiError::not_found("tenant"));
    }
    s.auth.invalidate(&format!("tenant:{id}")).await;
    // Its targets, sources and monitors go too (the tenant is already gone, so nothing new
    // can reach them), with the monitors' live state so no alert outlives them. Each step is
    // tried even if one fails: the tenant cannot be deleted twice.
    purge_tenant(&s, &id).await;
    tracing::info!(request_id = %current_request_id(), tenant = %id, "tenant deleted");
    Ok(StatusCode::NO_CONTENT.into_response())
}

/// Deletes what belonged to a deleted tenant, logging (not stopping at) failures.
async fn purge_tenant(s: &AdminState, id: &str) {
    let shard = crate::queue::shard_of(id, s.shards);
    let failed = |what: &str, e: &crate::store::StoreError| {
        tracing::warn!(request_id = %current_request_id(), tenant = %id, error = %e, "could not delete a deleted tenant's {what}");
    };
    if let Err(e) = s.store.delete_targets_of(id).await {
        failed("targets", &e);
    }
    let sources = s
        .store
        .sources_of(id)
        .await
        .map(|v| v.into_iter().map(|x| x.id).collect());
    let monitors = s
        .store
        .monitors_of(id)
        .await
        .map(|v| v.into_iter().map(|x| x.id).collect());
    for (kind, ids) in [(Kind::Source, sources), (Kind::Monitor, monitors)] {
        let ids: Vec<String> = match ids {
            Ok(ids) => ids,
            Err(e) => {
                failed(kind.as_str(), &e);
                continue;
            }
        };
        for subject in ids {
            let deleted =
                crate::monitors::delete_watched(&s.store, &s.watches, kind, id, shard, &subject);
            if let Err(e) = deleted.await {
                failed(kind.as_str(), &e);
            }
        }
    }
}

pub async fn issue_token(
    State(s): State<AdminState>,
    Path(id): Path<String>,
) -> Result<Response, ApiError> {
    check_id(&id, "tenant")?;
    let issued = s
        .store
        .issue_token(&id)
        .await?
        .ok_or_else(|| ApiError::not_found("tenant"))?;
    tracing::info!(request_id = %current_request_id(), tenant = %id, token_id = %issued.id, "token issued");
    Ok((StatusCode::CREATED, Json(issued)).into_response())
}

pub async fn list_tokens(
    State(s): State<AdminState>,
    Path(id): Path<String>,
) -> Result<Response, ApiError> {
    check_id(&id, "tenant")?;
    if s.store.tenant(&id).await?.is_none() {
        return Err(ApiError::not_found("tenant"));
    }
    let tokens = s.store.list_tokens(&id).await?;
    Ok(Json(Page {
        data: tokens,
        next: None,
    })
    .into_response())
}

pub async fn revoke_token(
    State(s): State<AdminState>,
    Path((id, token_id)): Path<(String, String)>,
) -> Result<Response, ApiError> {
    check_id(&id, "tenant")?;
    check_id(&token_id, "token")?;
    let Some(entry) = s.store.revoke_token(&id, &token_id).await? else {
        return Err(ApiError::not_found("token"));
    };
    // This instance refuses the token at once; the others hear of it by pub/sub.
    s.auth.invalidate(&entry).await;
    tracing::info!(request_id = %current_request_id(), tenant = %id, token_id = %token_id, "token revoked");
    Ok(StatusCode::NO_CONTENT.into_response())
}
