//! A target's transformation (both scopes; see [`super`]): its versions, and a simulation of
//! what it makes of an event, run in the same sandbox and through the same steps as a
//! delivery (`dispatch::transform`), so what it shows is what would be sent.

use axum::Json;
use axum::extract::State;
use axum::response::{IntoResponse, Response};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use super::listing::Listing;
use super::scope::{ApiState, TenantScope};
use super::targets::TargetPath;
use crate::dispatch::transform::{self, EventInput, Transformed};
use crate::http::error::{ApiError, ReadErrors, WriteErrors};
use crate::http::extract::{ApiJson, ApiPath, JsonBody};
use crate::model::event_meta;
use crate::model::time::rfc3339;
use crate::model::transform::JqProgram;
use crate::model::{EventId, EventType, TargetId};
use crate::store::Target;

/// One version of a transformation.
#[derive(Debug, Serialize, ToSchema)]
pub struct TransformVersionView {
    pub version: u32,
    pub program: String,
    pub enabled: bool,
    #[schema(format = DateTime)]
    pub saved_at: String,
}

/// The target's last 20 transformations, newest first.
#[utoipa::path(
    get,
    path = "/targets/{target_id}/transform/versions",
    tag = "targets",
    operation_id = "list_transform_versions",
    params(TargetPath),
    responses((status = 200, description = "Newest first.", body = Listing<TransformVersionView>), ReadErrors),
)]
pub async fn versions(
    State(s): State<ApiState>,
    scope: TenantScope,
    ApiPath(p): ApiPath<TargetPath>,
) -> Result<Response, ApiError> {
    Ok(list_transform_versions(&s, &scope, &p.target_id)
        .await?
        .into_response())
}

/// `list_transform_versions`.
pub async fn list_transform_versions(
    s: &ApiState,
    scope: &TenantScope,
    id: &TargetId,
) -> Result<Listing<TransformVersionView>, ApiError> {
    target_of(s, scope, id).await?;
    let versions = s.store.transform_versions(id).await?;
    Ok(Listing {
        data: versions
            .into_iter()
            .map(|v| TransformVersionView {
                version: v.version,
                program: v.program,
                enabled: v.enabled,
                saved_at: rfc3339(v.saved_at_ms),
            })
            .collect(),
    })
}

/// An event written out for a simulation.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct SimulatedEvent {
    #[serde(rename = "type")]
    pub event_type: EventType,
    /// The body: JSON is sent as JSON, a string as its text.
    #[schema(value_type = Object)]
    pub body: serde_json::Value,
    /// Kept ingest headers, name → value.
    #[serde(default)]
    #[schema(value_type = Object)]
    pub headers: std::collections::BTreeMap<String, String>,
    /// The content type it came with; `application/json` for a JSON body when absent.
    #[serde(default)]
    pub content_type: Option<String>,
}

/// What to simulate.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct Simulate {
    /// A program to try; the target's own when absent.
    #[serde(default)]
    pub program: Option<JqProgram>,
    /// A stored event of the tenant's.
    #[serde(default)]
    pub event_id: Option<EventId>,
    /// Or an event written out.
    #[serde(default)]
    pub event: Option<SimulatedEvent>,
}

impl JsonBody for Simulate {
    const INVALID: &'static str = "invalid_simulation";
}

/// How a simulated body is shown.
#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum Encoding {
    Utf8,
    Base64,
}

/// The request a transformation would send.
#[derive(Debug, Serialize, ToSchema)]
pub struct SimulatedRequest {
    pub url: String,
    pub method: String,
    pub content_type: Option<String>,
    /// The headers the program leaves on; the gateway adds its own (`webhook-id`,
    /// `webhook-timestamp`, `webhook-signature` over this body, `estafeta-event-type`,
    /// `user-agent`, the target's authentication).
    pub headers: Vec<super::events::HeaderView>,
    pub body: String,
    pub body_encoding: Encoding,
}

/// What the transformation made of the event.
#[derive(Debug, Serialize, ToSchema)]
pub struct Simulated {
    /// `send`, `cancel` (the program cancelled the delivery), `fail` (it could not be made),
    /// or `untouched` (the transformation is disabled: the event goes as it came).
    pub outcome: &'static str,
    /// The program's version (the next one for a program tried before it is saved).
    pub version: Option<u32>,
    pub request: Option<SimulatedRequest>,
    /// Why no request could be made (`fail`).
    pub error: Option<String>,
}

/// Runs a transformation (the target's, or one to try) on an event, sending nothing.
#[utoipa::path(
    post,
    path = "/targets/{target_id}/transform/simulate",
    tag = "targets",
    operation_id = "simulate_transform",
    params(TargetPath),
    request_body = Simulate,
    responses((status = 200, description = "What would be sent, or why nothing would.", body = Simulated), WriteErrors),
)]
pub async fn simulate(
    State(s): State<ApiState>,
    scope: TenantScope,
    ApiPath(p): ApiPath<TargetPath>,
    ApiJson(req): ApiJson<Simulate>,
) -> Result<Response, ApiError> {
    Ok(Json(simulate_transform(&s, &scope, &p.target_id, &req).await?).into_response())
}

/// `simulate_transform`.
pub async fn simulate_transform(
    s: &ApiState,
    scope: &TenantScope,
    id: &TargetId,
    req: &Simulate,
) -> Result<Simulated, ApiError> {
    let invalid = |m: &str| ApiError::bad_request("invalid_simulation", m.to_owned());
    let target = target_of(s, scope, id).await?;
    if req.program.is_none() && target.transform.is_none() {
        return Err(invalid(
            "the target has no transformation: name a program to try",
        ));
    }
    if let Some(p) = &req.program {
        super::targets::check_transform(
            s,
            Some(&crate::model::transform::TargetTransform {
                program: p.clone(),
                enabled: true,
            }),
        )
        .await?;
    }
    let (event_type, meta, body) = match (&req.event_id, &req.event) {
        (Some(_), Some(_)) | (None, None) => {
            return Err(invalid("name either event_id or event"));
        }
        (Some(event_id), None) => {
            let record = s
                .history
                .event(scope.shard, &scope.tenant, event_id)
                .await?
                .ok_or_else(|| ApiError::not_found("event"))?;
            let (meta, body) = s
                .history
                .body(scope.shard, &scope.tenant, event_id)
                .await?
                .ok_or_else(|| ApiError::not_found("event body"))?;
            (
                record.event_type.unwrap_or_default(),
                meta.map(|m| m.into_bytes()),
                body,
            )
        }
        (None, Some(e)) => {
            let (body, default_ct) = match &e.body {
                serde_json::Value::String(text) => (bytes::Bytes::from(text.clone()), None),
                other => (
                    bytes::Bytes::from(serde_json::to_vec(other).unwrap_or_default()),
                    Some("application/json"),
                ),
            };
            let ct = e.content_type.as_deref().or(default_ct);
            let lower: Vec<(String, String)> = e
                .headers
                .iter()
                .map(|(k, v)| (k.to_ascii_lowercase(), v.clone()))
                .collect();
            let meta = event_meta::pack(
                ct.map(str::as_bytes),
                lower.iter().map(|(k, v)| (k.as_str(), v.as_bytes())),
                None,
            );
            (e.event_type.to_string(), meta.map(|m| m.to_vec()), body)
        }
    };
    let input = EventInput {
        event_type: &event_type,
        meta: meta.as_deref(),
        body: &body,
    };
    let program = req.program.as_ref().map(JqProgram::as_str);
    let shaped =
        transform::apply(&s.sandbox, &target, program, input, s.allow_private_targets).await;
    Ok(match shaped {
        Transformed::Untouched => Simulated {
            outcome: "untouched",
            version: Some(target.transform_version),
            request: None,
            error: None,
        },
        Transformed::Cancel { version } => Simulated {
            outcome: "cancel",
            version: Some(version),
            request: None,
            error: None,
        },
        Transformed::Fail { version, error, .. } => Simulated {
            outcome: "fail",
            version: Some(version),
            request: None,
            error: Some(error),
        },
        Transformed::Send(r) => {
            use base64::Engine;
            let (body, body_encoding) = match std::str::from_utf8(&r.body) {
                Ok(t) => (t.to_owned(), Encoding::Utf8),
                Err(_) => (
                    base64::engine::general_purpose::STANDARD.encode(&r.body),
                    Encoding::Base64,
                ),
            };
            Simulated {
                outcome: "send",
                version: Some(r.version),
                request: Some(SimulatedRequest {
                    url: r.url,
                    method: r.method.to_string(),
                    content_type: r.content_type,
                    headers: r
                        .headers
                        .into_iter()
                        .map(|(name, value)| super::events::HeaderView { name, value })
                        .collect(),
                    body,
                    body_encoding,
                }),
                error: None,
            }
        }
    })
}

async fn target_of(s: &ApiState, scope: &TenantScope, id: &TargetId) -> Result<Target, ApiError> {
    s.store
        .target(&scope.tenant, id)
        .await?
        .ok_or_else(|| ApiError::not_found("target"))
}
