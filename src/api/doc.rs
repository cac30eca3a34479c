//! The OpenAPI description of both listeners, derived from the handlers' annotations
//! (`utoipa`): every route the routers serve is added to the description by the same call that
//! adds it to a router ([`utoipa_axum::router::OpenApiRouter`]), so the two cannot drift.
//!
//! What annotations cannot say is added here, once, by walking the document: the tenant
//! resources are mounted twice, so their copies under `/admin/tenants/{id}` get the `id` path
//! parameter, the admin token as their security and `admin_` operation ids, and lose the
//! `403` (a disabled tenant is still managed by its operator); the copies under `/v1` get the
//! tenant token and `tenant_` operation ids. Every create's `201` links to the operations on
//! what it made (the new `id` fills the next path segment), so a client, or schemathesis'
//! stateful phase, can follow them.

use utoipa::OpenApi;
use utoipa::openapi::RefOr;
use utoipa::openapi::extensions::Extensions;
use utoipa::openapi::link::LinkBuilder;
use utoipa::openapi::path::{Operation, Parameter, ParameterBuilder, ParameterIn, PathItem};
use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityRequirement, SecurityScheme};
use utoipa::openapi::{OpenApi as Document, Required};

use crate::http::error::{ErrorBody, ErrorDetail};

/// The prefix of the tenant resources in the admin API.
const ADMIN_TENANT_PREFIX: &str = "/admin/tenants/{id}/";
/// Security scheme of the admin API.
pub const ADMIN_TOKEN: &str = "admin_token";
/// Security scheme of the tenant API.
pub const TENANT_TOKEN: &str = "tenant_token";

#[derive(OpenApi)]
#[openapi(
    info(
        title = "Estafeta",
        description = "Webhook gateway. The edge API (tenant bearer tokens, URL tokens of sources and monitors) is served on the edge listeners; the admin API (the admin token), `/metrics` and this description on the admin listener. Every non-2xx answer has the body `{\"error\": {\"code\", \"message\"}}`.",
        license(name = "Apache-2.0"),
    ),
    components(schemas(ErrorBody, ErrorDetail)),
    tags(
        (name = "events", description = "Events a tenant sends, and their deliveries."),
        (name = "targets", description = "Where a tenant's events are delivered."),
        (name = "dead_letters", description = "The error queue: deliveries that kept failing."),
        (name = "sources", description = "External platforms that can only be given a URL."),
        (name = "monitors", description = "Passive monitors: heartbeats, status pushes, incidents."),
        (name = "tenants", description = "Tenants and their tokens (admin)."),
        (name = "health", description = "Liveness and readiness."),
        (name = "system", description = "Metrics and this description."),
    ),
)]
struct ApiDoc;

/// The whole description, as `/openapi.json` serves it.
pub fn document() -> Document {
    let mut doc = ApiDoc::openapi();
    doc.info.version = env!("CARGO_PKG_VERSION").to_owned();
    for part in super::routes::route_docs() {
        doc.merge(part);
    }
    let components = doc.components.get_or_insert_with(Default::default);
    let bearer = |description: &str| {
        SecurityScheme::Http(
            HttpBuilder::new()
                .scheme(HttpAuthScheme::Bearer)
                .description(Some(description))
                .build(),
        )
    };
    components.add_security_scheme(ADMIN_TOKEN, bearer("The admin token (`admin.token`)."));
    components.add_security_scheme(TENANT_TOKEN, bearer("A tenant token (`est_…`)."));
    for (path, item) in doc.paths.paths.iter_mut() {
        scope(path, item);
        one_id_per_method(item);
        for op in operations(item) {
            optional_raw_body(op);
        }
    }
    link_creations(&mut doc);
    doc
}

/// Links the `201` of each `POST P` to every operation under `P/{x}`: the new resource's `id`
/// fills `{x}`, and the parameters of `P` itself (the tenant's `id` of an admin copy) carry
/// over from the request.
fn link_creations(doc: &mut Document) {
    let paths: Vec<(String, Vec<String>)> = doc
        .paths
        .paths
        .iter()
        .map(|(path, item)| {
            let mut item = item.clone();
            let ids = operations(&mut item)
                .filter_map(|op| op.operation_id.clone())
                .collect();
            (path.clone(), ids)
        })
        .collect();
    for (path, item) in doc.paths.paths.iter_mut() {
        let Some(created) = item
            .post
            .as_mut()
            .and_then(|op| op.responses.responses.get_mut("201"))
        else {
            continue;
        };
        let RefOr::T(created) = created else { continue };
        let prefix = format!("{path}/{{");
        for (other, ids) in &paths {
            let Some(param) = other
                .strip_prefix(&prefix)
                .and_then(|rest| rest.split_once('}'))
                .map(|(name, _)| name)
            else {
                continue;
            };
            for id in ids {
                // utoipa 5 writes `Link::operation_id` as `operation_id`, a key OpenAPI does
                // not know (6 fixes that, but breaks inline schemas with a description): the
                // field goes in through the flattened extensions, under its real name.
                let operation = Extensions::from_iter([("operationId", id.clone())]);
                // A route that takes the resource's URL token (a monitor's push routes) is
                // filled from the `token` the creation answers, not from its `id`.
                let field = if param.ends_with("_token") {
                    "token"
                } else {
                    "id"
                };
                let mut link = LinkBuilder::new()
                    .extensions(Some(operation))
                    .parameter(param, format!("$response.body#/{field}"));
                for carried in path_params(path) {
                    link = link.parameter(carried, format!("$request.path.{carried}"));
                }
                created.links.insert(id.clone(), RefOr::T(link.build()));
            }
        }
    }
}

/// The names of a path template's parameters.
fn path_params(path: &str) -> impl Iterator<Item = &str> {
    path.split('/')
        .filter_map(|segment| segment.strip_prefix('{')?.strip_suffix('}'))
}

/// One handler served for several methods (`method(get, post)`) is one operation per method
/// in the document, each needing an id of its own: the method is appended to the shared one.
fn one_id_per_method(item: &mut PathItem) {
    let methods = [
        ("get", &mut item.get),
        ("put", &mut item.put),
        ("post", &mut item.post),
        ("delete", &mut item.delete),
        ("patch", &mut item.patch),
    ];
    let mut seen = std::collections::HashMap::<String, usize>::new();
    for (_, op) in &methods {
        if let Some(id) = op.as_ref().and_then(|o| o.operation_id.clone()) {
            *seen.entry(id).or_default() += 1;
        }
    }
    for (method, op) in methods {
        if let Some(id) = op.as_mut().and_then(|o| o.operation_id.as_mut()) {
            if seen.get(id.as_str()).is_some_and(|n| *n > 1) {
                *id = format!("{id}_{method}");
            }
        }
    }
}

/// A raw body (an event's, a hook's: any content type, kept byte for byte) may be empty.
fn optional_raw_body(op: &mut Operation) {
    if let Some(body) = op.request_body.as_mut() {
        if body.content.contains_key("application/octet-stream") {
            body.required = Some(Required::False);
        }
    }
}

/// What a deployment's description states of its own settings.
#[derive(Debug, Clone, Copy)]
pub struct Deployed {
    /// `web.portal_link_max_ttl_s`: the longest lifetime a portal link may be given here.
    pub portal_link_max_ttl_s: u64,
}

/// The description as JSON, stating this deployment's bounds where they are settings.
pub fn document_json(deployed: Deployed) -> String {
    let mut doc = match serde_json::to_value(document()) {
        Ok(v) => v,
        Err(_) => {
            return r#"{"openapi":"3.1.0","info":{"title":"Estafeta","version":"unknown"},"paths":{}}"#
                .to_owned();
        }
    };
    if let Some(ttl) = doc.pointer_mut("/components/schemas/PortalLinkSpec/properties/ttl_s") {
        set_maximum(ttl, deployed.portal_link_max_ttl_s);
        if let Some(obj) = ttl.as_object_mut() {
            obj.insert(
                "description".into(),
                format!(
                    "Seconds the link stays valid (default 3600, at most {} here: \
                     `web.portal_link_max_ttl_s`).",
                    deployed.portal_link_max_ttl_s
                )
                .into(),
            );
        }
    }
    cross_field_rules(&mut doc);
    doc.to_string()
}

/// The rules between two fields of a body that JSON Schema 2020-12 can state, so clients
/// generated from the description, and conformance runs, know them: a source's `grace_s`
/// belongs to its silence watch (`expect_every_s`, not null), an ordered target needs a mode that waits.
fn cross_field_rules(doc: &mut serde_json::Value) {
    let rules = [
        (
            "SourceSpec",
            serde_json::json!({"dependentSchemas": {"grace_s": {
                "required": ["expect_every_s"],
                "properties": {"expect_every_s": {"not": {"type": "null"}}}
            }}}),
        ),
        (
            "TargetSpec",
            serde_json::json!({
                "if": {"properties": {"ordered": {"const": true}}, "required": ["ordered"]},
                "then": {"properties": {"mode": {"not": {"const": "fire_and_forget"}}}}
            }),
        ),
    ];
    for (name, rule) in rules {
        let Some(schema) = doc
            .pointer_mut(&format!("/components/schemas/{name}"))
            .and_then(serde_json::Value::as_object_mut)
        else {
            continue;
        };
        if let serde_json::Value::Object(rule) = rule {
            schema.extend(rule);
        }
    }
}

/// Sets every `maximum` of a schema (and of the alternatives it is made of) to `max`.
fn set_maximum(schema: &mut serde_json::Value, max: u64) {
    match schema {
        serde_json::Value::Object(obj) => {
            if obj.contains_key("maximum") {
                obj.insert("maximum".into(), max.into());
            }
            for v in obj.values_mut() {
                set_maximum(v, max);
            }
        }
        serde_json::Value::Array(items) => items.iter_mut().for_each(|v| set_maximum(v, max)),
        _ => {}
    }
}

fn operations(item: &mut PathItem) -> impl Iterator<Item = &mut Operation> {
    [
        &mut item.get,
        &mut item.put,
        &mut item.post,
        &mut item.delete,
        &mut item.patch,
        &mut item.head,
        &mut item.options,
        &mut item.trace,
    ]
    .into_iter()
    .flatten()
}

/// Finishes the operations of one path by the scope it is served in.
fn scope(path: &str, item: &mut PathItem) {
    let admin = path.starts_with("/admin/");
    let admin_tenant_copy = path.starts_with(ADMIN_TENANT_PREFIX);
    let tenant_api = path.starts_with("/v1/");
    for op in operations(item) {
        if admin {
            op.security = Some(vec![SecurityRequirement::new(
                ADMIN_TOKEN,
                Vec::<String>::new(),
            )]);
            // A disabled tenant is still managed by its operator.
            op.responses.responses.remove("403");
        }
        if admin_tenant_copy {
            let params = op.parameters.get_or_insert_with(Vec::new);
            if !params.iter().any(|p| p.name == "id") {
                params.insert(0, tenant_id_param());
            }
            prefix_id(op, "admin_");
        } else if tenant_api && op.security.is_none() {
            op.security = Some(vec![SecurityRequirement::new(
                TENANT_TOKEN,
                Vec::<String>::new(),
            )]);
            prefix_id(op, "tenant_");
        }
    }
}

fn prefix_id(op: &mut Operation, prefix: &str) {
    if let Some(id) = op.operation_id.as_mut() {
        if !id.starts_with(prefix) {
            *id = format!("{prefix}{id}");
        }
    }
}

fn tenant_id_param() -> Parameter {
    ParameterBuilder::new()
        .name("id")
        .parameter_in(ParameterIn::Path)
        .required(Required::True)
        .description(Some("The tenant's id."))
        .schema(Some(
            <crate::model::TenantId as utoipa::PartialSchema>::schema(),
        ))
        .build()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_served_description_states_the_deployments_ceiling_and_cross_field_rules()
    -> anyhow::Result<()> {
        let doc: serde_json::Value = serde_json::from_str(&document_json(Deployed {
            portal_link_max_ttl_s: 600,
        }))?;
        let ttl = &doc["components"]["schemas"]["PortalLinkSpec"]["properties"]["ttl_s"];
        assert!(ttl.to_string().contains("\"maximum\":600"), "{ttl}");
        assert!(!ttl.to_string().contains("31622400"), "{ttl}");
        let source = &doc["components"]["schemas"]["SourceSpec"];
        let watch = &source["dependentSchemas"]["grace_s"];
        assert_eq!(watch["required"][0], "expect_every_s", "{source}");
        let target = &doc["components"]["schemas"]["TargetSpec"];
        assert_eq!(target["if"]["required"][0], "ordered", "{target}");
        assert_eq!(
            target["then"]["properties"]["mode"]["not"]["const"],
            "fire_and_forget"
        );
        // Both are what the create operations take.
        let body = |path: &str| {
            doc["paths"][path]["post"]["requestBody"]["content"]["application/json"]["schema"]
                .to_string()
        };
        assert!(
            body("/v1/sources").contains("SourceSpec"),
            "{}",
            body("/v1/sources")
        );
        assert!(
            body("/v1/targets").contains("TargetSpec"),
            "{}",
            body("/v1/targets")
        );
        Ok(())
    }

    #[test]
    fn every_reference_in_the_description_resolves() -> anyhow::Result<()> {
        fn refs<'a>(v: &'a serde_json::Value, out: &mut Vec<&'a str>) {
            match v {
                serde_json::Value::Object(o) => {
                    if let Some(serde_json::Value::String(r)) = o.get("$ref") {
                        out.push(r);
                    }
                    o.values().for_each(|v| refs(v, out));
                }
                serde_json::Value::Array(a) => a.iter().for_each(|v| refs(v, out)),
                _ => {}
            }
        }
        let doc: serde_json::Value = serde_json::from_str(&document_json(Deployed {
            portal_link_max_ttl_s: 600,
        }))?;
        let mut found = Vec::new();
        refs(&doc, &mut found);
        assert!(found.len() > 50, "{} references", found.len());
        let dangling: Vec<&&str> = found
            .iter()
            .filter(|r| {
                r.strip_prefix('#')
                    .and_then(|pointer| doc.pointer(pointer))
                    .is_none()
            })
            .collect();
        assert!(dangling.is_empty(), "references to nothing: {dangling:?}");
        Ok(())
    }

    #[test]
    fn operation_ids_are_unique_and_admin_copies_name_their_tenant() {
        let doc = document();
        let mut ids = std::collections::HashSet::new();
        for (path, item) in doc.paths.paths.clone() {
            let mut item = item;
            for op in operations(&mut item) {
                let id = op.operation_id.clone().unwrap_or_default();
                assert!(ids.insert(id.clone()), "operation id {id} appears twice");
                if path.starts_with(ADMIN_TENANT_PREFIX) {
                    let params = op.parameters.clone().unwrap_or_default();
                    assert!(params.iter().any(|p| p.name == "id"), "{path}");
                    assert!(op.security.is_some(), "{path}");
                }
            }
        }
        assert!(ids.len() > 40, "{} operations", ids.len());
    }

    #[test]
    fn creates_link_to_the_operations_on_what_they_made() -> anyhow::Result<()> {
        let doc = serde_json::to_value(document())?;
        let links =
            &doc["paths"]["/admin/tenants/{id}/targets"]["post"]["responses"]["201"]["links"];
        let read = &links["admin_read_target"];
        assert_eq!(read["operationId"], "admin_read_target");
        assert!(read.get("operation_id").is_none(), "{read}");
        assert_eq!(read["parameters"]["target_id"], "$response.body#/id");
        assert_eq!(read["parameters"]["id"], "$request.path.id");
        // Deeper operations too, and only those under the created resource.
        assert!(links.get("admin_rotate_target_secret").is_some(), "{links}");
        assert!(links.get("admin_list_targets").is_none(), "{links}");
        let tenant = &doc["paths"]["/v1/monitors"]["post"]["responses"]["201"]["links"];
        assert_eq!(
            tenant["tenant_read_monitor"]["parameters"]["monitor_id"],
            "$response.body#/id"
        );
        // The push routes take the monitor's token, the hook route the source's.
        let beat = tenant
            .as_object()
            .into_iter()
            .flatten()
            .find(|(_, l)| l["parameters"].get("monitor_token").is_some())
            .map(|(_, l)| l["parameters"]["monitor_token"].clone());
        assert_eq!(beat, Some("$response.body#/token".into()), "{tenant}");
        Ok(())
    }
}
