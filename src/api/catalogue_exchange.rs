//! The catalogue in and out as an OpenAPI 3.1 document's `webhooks` (both scopes; see
//! [`super`]).
//!
//! Each webhook is one event type: its key (or its operation's `x-estafeta-event-type`) is the
//! name; the `post` operation's `description` (else `summary`), first tag and `deprecated` are
//! the type's description, group and deprecation; its JSON request body's schema is the
//! type's schema. A schema's `$ref`s into `#/components/schemas` are carried along as `$defs`,
//! so each stored schema stands alone. What OpenAPI has no word for rides in extensions the
//! export writes and the import reads back, so a catalogue makes a round trip unchanged:
//! `x-estafeta-schemas` (every version), `x-estafeta-owner`, `x-estafeta-archived`.
//!
//! Without `x-estafeta-schemas`, an imported schema that differs from every stored version of
//! its type becomes the type's next version; one equal to a stored version changes nothing.

use std::collections::{BTreeMap, BTreeSet};

use axum::Json;
use axum::extract::State;
use axum::response::{IntoResponse, Response};
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value, json};
use utoipa::{IntoParams, ToSchema};

use super::scope::{ApiState, TenantScope};
use crate::http::error::{ApiError, ReadErrors, WriteErrors};
use crate::http::extract::{ApiJson, ApiQuery, JsonBody};
use crate::model::catalogue::{
    CompiledSchema, Description, EventTypeSpec, MAX_VERSION, Owner, Schemas,
};
use crate::model::time::rfc3339;
use crate::model::{EventType, Invalid, Name, Origin};
use crate::store::event_types::{EventTypeRecord, Written};

const OWNER: &str = "x-estafeta-owner";
const SCHEMAS: &str = "x-estafeta-schemas";
const ARCHIVED: &str = "x-estafeta-archived";
const EVENT_TYPE: &str = "x-estafeta-event-type";

/// An OpenAPI 3.1 document, as sent.
#[derive(Debug, Deserialize)]
#[serde(transparent)]
pub struct OpenApiDocument(pub Value);

impl utoipa::PartialSchema for OpenApiDocument {
    fn schema() -> utoipa::openapi::RefOr<utoipa::openapi::schema::Schema> {
        use utoipa::openapi::schema::{ObjectBuilder, Type};
        ObjectBuilder::new()
            .schema_type(Type::Object)
            .required("openapi")
            .required("webhooks")
            .description(Some("An OpenAPI 3.1 document; its `webhooks` are read."))
            .into()
    }
}

impl ToSchema for OpenApiDocument {
    fn name() -> std::borrow::Cow<'static, str> {
        "OpenApiDocument".into()
    }
}

impl JsonBody for OpenApiDocument {
    const INVALID: &'static str = "invalid_document";
    const MAX_BYTES: Option<u64> = Some(MAX_DOCUMENT_BYTES);
}

/// Largest document an import reads.
pub const MAX_DOCUMENT_BYTES: u64 = 8 * 1024 * 1024;

/// How an import is applied.
#[derive(Debug, Default, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct ImportQuery {
    /// Say what would change, and change nothing.
    #[serde(default)]
    pub dry_run: bool,
    /// Archive the catalogue's types that the document does not have.
    #[serde(default)]
    pub replace_all: bool,
}

/// What an import did (or, in a dry run, would do), by event type.
#[derive(Debug, Default, Serialize, ToSchema)]
pub struct ImportReport {
    pub dry_run: bool,
    pub created: Vec<EventType>,
    pub updated: Vec<EventType>,
    pub unchanged: Vec<EventType>,
    /// With `replace_all`: the types the document no longer has.
    pub archived: Vec<EventType>,
}

/// Imports event types from an OpenAPI 3.1 document's `webhooks`.
#[utoipa::path(
    post,
    path = "/event-types/import",
    tag = "event-types",
    operation_id = "import_event_types",
    params(ImportQuery),
    request_body(content = OpenApiDocument, description = "An OpenAPI 3.1 document with `webhooks`."),
    responses((status = 200, description = "What changed (or would).", body = ImportReport), WriteErrors),
)]
pub async fn import(
    State(s): State<ApiState>,
    scope: TenantScope,
    ApiQuery(q): ApiQuery<ImportQuery>,
    ApiJson(doc): ApiJson<OpenApiDocument>,
) -> Result<Response, ApiError> {
    Ok(Json(import_event_types(&s, &scope, &q, &doc.0).await?).into_response())
}

/// `import_event_types`.
pub async fn import_event_types(
    s: &ApiState,
    scope: &TenantScope,
    q: &ImportQuery,
    doc: &Value,
) -> Result<ImportReport, ApiError> {
    let read = read_document(doc).map_err(|e| ApiError::invalid("invalid_document", &e))?;
    let current: BTreeMap<EventType, EventTypeRecord> = s
        .store
        .event_types_of(&scope.tenant)
        .await?
        .into_iter()
        .map(|r| (r.name.clone(), r))
        .collect();
    let mut report = ImportReport {
        dry_run: q.dry_run,
        ..ImportReport::default()
    };
    let mut plans = Vec::with_capacity(read.len());
    for imported in read {
        let spec = imported
            .spec(current.get(&imported.name))
            .map_err(|e| ApiError::invalid("invalid_document", &e.within(&imported.at)))?;
        plans.push((imported.name, spec));
    }
    for (name, spec) in &plans {
        let outcome = match current.get(name) {
            None => Written::Created,
            Some(r) if same(r, spec) => Written::Unchanged,
            Some(_) => Written::Replaced,
        };
        let outcome = if q.dry_run || outcome == Written::Unchanged {
            outcome
        } else {
            s.store
                .put_event_type(&scope.tenant, name, spec, Origin::Api)
                .await?
                .1
        };
        match outcome {
            Written::Created => report.created.push(name.clone()),
            Written::Replaced => report.updated.push(name.clone()),
            Written::Unchanged => report.unchanged.push(name.clone()),
        }
    }
    if q.replace_all {
        let kept: BTreeSet<&EventType> = plans.iter().map(|(n, _)| n).collect();
        for (name, r) in &current {
            if kept.contains(name) || r.archived_at_ms.is_some() {
                continue;
            }
            if !q.dry_run {
                let archive = crate::model::catalogue::EventTypePatch {
                    archived: Some(true),
                    ..Default::default()
                };
                s.store
                    .patch_event_type(&scope.tenant, name, &archive)
                    .await?;
            }
            report.archived.push(name.clone());
        }
    }
    Ok(report)
}

/// Whether a stored record already says what `spec` says.
fn same(r: &EventTypeRecord, spec: &EventTypeSpec) -> bool {
    r.description == spec.description
        && r.owner == spec.owner
        && r.group == spec.group
        && r.deprecated_at_ms.is_some() == spec.deprecated
        && r.archived_at_ms.is_some() == spec.archived
        && r.schemas.len() == spec.schemas.iter().count()
        && spec
            .schemas
            .iter()
            .all(|(v, s)| r.schemas.get(&v) == Some(s.source()))
}

/// One webhook of a document, read.
struct Imported {
    /// Where it is in the document, for refusals.
    at: String,
    name: EventType,
    description: Description,
    owner: Owner,
    group: Option<Name>,
    deprecated: bool,
    archived: bool,
    /// `x-estafeta-schemas`, when the document has them.
    versions: Option<Schemas>,
    /// Else the request body's schema, if any.
    schema: Option<CompiledSchema>,
}

impl Imported {
    /// The spec to write, given the stored type.
    fn spec(&self, current: Option<&EventTypeRecord>) -> Result<EventTypeSpec, Invalid> {
        let schemas = match (&self.versions, &self.schema) {
            (Some(all), _) => all.clone(),
            (None, None) => Schemas::default(),
            (None, Some(schema)) => {
                let mut map: BTreeMap<u32, CompiledSchema> = BTreeMap::new();
                let stored = current.map(|c| &c.schemas);
                for (v, source) in stored.into_iter().flatten() {
                    map.insert(*v, CompiledSchema::compile(source.clone())?);
                }
                if !map.values().any(|s| s == schema) {
                    let next = map.keys().next_back().map(|v| v + 1).unwrap_or(1);
                    if next > MAX_VERSION {
                        return Err(Invalid::new("has no version number left"));
                    }
                    map.insert(next, schema.clone());
                }
                Schemas::new(map)?
            }
        };
        Ok(EventTypeSpec {
            name: Some(self.name.clone()),
            description: self.description.clone(),
            owner: self.owner.clone(),
            group: self.group.clone(),
            schemas,
            deprecated: self.deprecated,
            archived: self.archived,
        })
    }
}

/// Reads every webhook of an OpenAPI 3.1 document.
fn read_document(doc: &Value) -> Result<Vec<Imported>, Invalid> {
    let version = doc.get("openapi").and_then(Value::as_str).unwrap_or("");
    if !version.starts_with("3.1") {
        return Err(Invalid::new(
            "is not an OpenAPI 3.1 document (its `openapi` must be 3.1.x; 3.0 has no webhooks)",
        ));
    }
    let Some(webhooks) = doc.get("webhooks").and_then(Value::as_object) else {
        return Err(Invalid::at("webhooks", "must be an object of webhooks"));
    };
    let components = doc
        .pointer("/components/schemas")
        .and_then(Value::as_object)
        .cloned()
        .unwrap_or_default();
    let mut out = Vec::with_capacity(webhooks.len());
    let mut seen = BTreeSet::new();
    for (key, item) in webhooks {
        let at = format!("webhooks.{key}");
        let one = read_webhook(key, item, &components).map_err(|e| e.within(&at))?;
        if !seen.insert(one.name.clone()) {
            return Err(Invalid::at(at, format!("names {} a second time", one.name)));
        }
        out.push(Imported { at, ..one });
    }
    Ok(out)
}

fn read_webhook(
    key: &str,
    item: &Value,
    components: &Map<String, Value>,
) -> Result<Imported, Invalid> {
    let op = item
        .get("post")
        .ok_or_else(|| Invalid::new("has no `post` operation"))?;
    let text = |field: &str| op.get(field).and_then(Value::as_str);
    let name_text = text(EVENT_TYPE).unwrap_or(key);
    let name = EventType::parse(name_text).map_err(|e| {
        Invalid::new(format!(
            "names the event type {name_text:?}, which {} (set `{EVENT_TYPE}` on the operation to name another)",
            e.message
        ))
    })?;
    // The export writes the name as the summary: that is no description.
    let description = text("description")
        .or_else(|| text("summary").filter(|s| *s != name.as_str()))
        .map(Description::parse)
        .transpose()
        .map_err(|e| e.within("post.description"))?
        .unwrap_or_default();
    let group = op
        .pointer("/tags/0")
        .and_then(Value::as_str)
        .map(Name::parse)
        .transpose()
        .map_err(|e| e.within("post.tags"))?;
    let owner = match op.get(OWNER) {
        None => Owner::default(),
        Some(o) => serde_json::from_value(o.clone())
            .map_err(|e| Invalid::at(format!("post.{OWNER}"), e.to_string()))?,
    };
    let versions = match op.get(SCHEMAS) {
        None => None,
        Some(v) => Some(
            serde_json::from_value::<Schemas>(with_components(v.clone(), components, true))
                .map_err(|e| Invalid::at(format!("post.{SCHEMAS}"), e.to_string()))?,
        ),
    };
    let schema = match body_schema(op) {
        None => None,
        Some(s) => Some(
            CompiledSchema::compile(with_components(s.clone(), components, false))
                .map_err(|e| e.within("post.requestBody"))?,
        ),
    };
    Ok(Imported {
        at: String::new(),
        name,
        description,
        owner,
        group,
        deprecated: op
            .get("deprecated")
            .and_then(Value::as_bool)
            .unwrap_or(false),
        archived: op.get(ARCHIVED).and_then(Value::as_bool).unwrap_or(false),
        versions,
        schema,
    })
}

/// The JSON request body's schema of an operation.
fn body_schema(op: &Value) -> Option<&Value> {
    let content = op.pointer("/requestBody/content")?.as_object()?;
    content
        .get("application/json")
        .or_else(|| {
            content
                .iter()
                .find(|(ct, _)| ct.ends_with("+json") || ct.ends_with("/json"))
                .map(|(_, v)| v)
        })?
        .get("schema")
}

/// `schema` (or, with `each`, every schema of a version map) made to stand alone: its
/// references into `#/components/schemas/` point into its own `$defs`, which hold the
/// components it reaches.
fn with_components(schema: Value, components: &Map<String, Value>, each: bool) -> Value {
    if each {
        return match schema {
            Value::Object(map) => Value::Object(
                map.into_iter()
                    .map(|(k, v)| (k, with_components(v, components, false)))
                    .collect(),
            ),
            other => other,
        };
    }
    let mut schema = schema;
    let mut wanted: Vec<String> = Vec::new();
    rewrite_refs(&mut schema, &mut wanted);
    if wanted.is_empty() {
        return schema;
    }
    let mut defs = Map::new();
    while let Some(name) = wanted.pop() {
        if defs.contains_key(&name) {
            continue;
        }
        let Some(mut def) = components.get(&name).cloned() else {
            // Left dangling: compiling the schema refuses it with its pointer.
            continue;
        };
        rewrite_refs(&mut def, &mut wanted);
        defs.insert(name, def);
    }
    if let Value::Object(map) = &mut schema {
        let own = map
            .entry("$defs")
            .or_insert_with(|| Value::Object(Map::new()));
        if let Value::Object(own) = own {
            for (k, v) in defs {
                own.entry(k).or_insert(v);
            }
        }
    }
    schema
}

/// Rewrites `#/components/schemas/X` references to `#/$defs/X`, noting each `X`.
fn rewrite_refs(v: &mut Value, wanted: &mut Vec<String>) {
    const FROM: &str = "#/components/schemas/";
    match v {
        Value::Object(map) => {
            if let Some(Value::String(r)) = map.get_mut("$ref") {
                if let Some(name) = r.strip_prefix(FROM) {
                    let name = name.to_owned();
                    *r = format!("#/$defs/{name}");
                    wanted.push(name);
                }
            }
            for child in map.values_mut() {
                rewrite_refs(child, wanted);
            }
        }
        Value::Array(items) => items.iter_mut().for_each(|c| rewrite_refs(c, wanted)),
        _ => {}
    }
}

/// What to export.
#[derive(Debug, Default, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct ExportQuery {
    /// Export archived types too.
    #[serde(default)]
    pub include_archived: bool,
}

/// The catalogue as an OpenAPI 3.1 document's `webhooks`.
#[utoipa::path(
    get,
    path = "/event-types/export",
    tag = "event-types",
    operation_id = "export_event_types",
    params(ExportQuery),
    responses((status = 200, description = "An OpenAPI 3.1 document.", body = Object), ReadErrors),
)]
pub async fn export(
    State(s): State<ApiState>,
    scope: TenantScope,
    ApiQuery(q): ApiQuery<ExportQuery>,
) -> Result<Response, ApiError> {
    Ok(Json(export_event_types(&s, &scope, &q).await?).into_response())
}

/// `export_event_types`.
pub async fn export_event_types(
    s: &ApiState,
    scope: &TenantScope,
    q: &ExportQuery,
) -> Result<Value, ApiError> {
    let records = s.store.event_types_of(&scope.tenant).await?;
    let mut webhooks = Map::new();
    for r in records
        .iter()
        .filter(|r| q.include_archived || r.archived_at_ms.is_none())
    {
        webhooks.insert(r.name.to_string(), webhook(r));
    }
    Ok(json!({
        "openapi": "3.1.0",
        "info": {
            "title": format!("Event catalogue of {}", scope.tenant),
            "version": rfc3339(s.store.clock().now_ms()),
        },
        "webhooks": webhooks,
    }))
}

/// One event type as an OpenAPI webhook.
fn webhook(r: &EventTypeRecord) -> Value {
    let mut op = Map::new();
    op.insert("operationId".into(), json!(r.name));
    op.insert("summary".into(), json!(r.name));
    if !r.description.as_str().is_empty() {
        op.insert("description".into(), json!(r.description.as_str()));
    }
    if let Some(g) = &r.group {
        op.insert("tags".into(), json!([g]));
    }
    if r.deprecated_at_ms.is_some() {
        op.insert("deprecated".into(), json!(true));
    }
    if let Some((_, latest)) = r.schemas.iter().next_back() {
        op.insert(
            "requestBody".into(),
            json!({"required": true, "content": {"application/json": {"schema": latest}}}),
        );
        let all: Map<String, Value> = r
            .schemas
            .iter()
            .map(|(v, s)| (v.to_string(), s.clone()))
            .collect();
        op.insert(SCHEMAS.into(), Value::Object(all));
    }
    op.insert(
        "responses".into(),
        json!({"2XX": {"description": "The receiver took the event."}}),
    );
    if r.owner != Owner::default() {
        op.insert(OWNER.into(), json!(r.owner));
    }
    if r.archived_at_ms.is_some() {
        op.insert(ARCHIVED.into(), json!(true));
    }
    json!({ "post": op })
}
