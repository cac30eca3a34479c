//! Find by id (`GET /admin/find?q=`): an event, target, tenant (or its external id), monitor
//! or source id, whoever owns it, answered with the kind and the owning tenant so a client (the
//! console's search box) can go there. Operator only: it crosses tenants by design.
//!
//! Each id kind has its prefix, so the text is tried as the one kind it can be, and then as
//! an external id. An event is found in Redis while its record lives (one read per shard),
//! else in the log store's partition of the day its id names.

use axum::Json;
use axum::extract::State;
use axum::response::{IntoResponse, Response};
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};

use super::scope::ApiState;
use crate::http::error::{ApiError, ReadErrors};
use crate::http::extract::ApiQuery;
use crate::model::{EventId, ExternalId, MonitorId, SourceId, TargetId, TenantId};

/// What an id names.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum FoundKind {
    Tenant,
    Target,
    Event,
    Source,
    Monitor,
}

/// What was found.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, ToSchema)]
pub struct Found {
    pub kind: FoundKind,
    /// The tenant that owns it (itself, for a tenant).
    pub tenant_id: TenantId,
    /// Its id (a tenant found by external id answers its own id).
    pub id: String,
}

/// The search.
#[derive(Debug, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct FindQuery {
    /// An id of any kind, or a tenant's external id.
    pub q: String,
}

fn found(kind: FoundKind, tenant_id: TenantId, id: &str) -> Found {
    Found {
        kind,
        tenant_id,
        id: id.to_owned(),
    }
}

/// What `q` names; `None` when nothing does.
pub async fn locate(s: &ApiState, q: &str) -> Result<Option<Found>, ApiError> {
    let q = q.trim();
    if let Ok(id) = TenantId::parse(q)
        && let Some(t) = s.store.tenant(&id).await?
    {
        return Ok(Some(found(FoundKind::Tenant, t.id, q)));
    }
    if let Ok(id) = TargetId::parse(q)
        && let Some(t) = s.store.target_by_id(&id).await?
    {
        return Ok(Some(found(FoundKind::Target, t.tenant, q)));
    }
    if let Ok(id) = EventId::parse(q) {
        if let Some(t) = s.deliveries.event_tenant(s.shards, &id).await? {
            return Ok(Some(found(FoundKind::Event, t, q)));
        }
        if let Some(log) = &s.history.log {
            let owner = log.event_tenant(&id).await.map_err(|e| {
                ApiError::unavailable(format!("the log store cannot be searched: {e}"))
            })?;
            if let Some(t) = owner {
                return Ok(Some(found(FoundKind::Event, t, q)));
            }
        }
    }
    if let Ok(id) = SourceId::parse(q)
        && let Some(src) = s.store.source_by_id(&id).await?
    {
        return Ok(Some(found(FoundKind::Source, src.tenant, q)));
    }
    if let Ok(id) = MonitorId::parse(q)
        && let Some(m) = s.store.monitor_by_id(&id).await?
    {
        return Ok(Some(found(FoundKind::Monitor, m.tenant, q)));
    }
    if let Ok(ext) = ExternalId::parse(q)
        && let Some(t) = s.store.tenant_by_external_id(&ext).await?
    {
        let id = t.id.to_string();
        return Ok(Some(found(FoundKind::Tenant, t.id, &id)));
    }
    Ok(None)
}

/// Finds what an id names, in any tenant.
#[utoipa::path(
    get,
    path = "/admin/find",
    tag = "system",
    operation_id = "find_by_id",
    params(FindQuery),
    responses(
        (status = 200, description = "What the id names, and its tenant.", body = Found),
        ReadErrors,
    ),
)]
pub async fn find(
    State(s): State<ApiState>,
    ApiQuery(q): ApiQuery<FindQuery>,
) -> Result<Response, ApiError> {
    match locate(&s, &q.q).await? {
        Some(f) => Ok(Json(f).into_response()),
        None => Err(ApiError::new(
            http::StatusCode::NOT_FOUND,
            "not_found",
            "nothing has this id (an event older than the retention without a log store is gone)",
        )),
    }
}
