//! The console's system page: shard streams, consumers and their liveness, Redis
//! durability, version and configuration (secrets redacted).

use axum::extract::State;
use axum::response::{IntoResponse, Response};
use maud::html;
use serde_json::Value;

use super::overview::{charts, window};
use crate::web::error::WebError;
use crate::web::face::Ui;
use crate::web::form::Params;
use crate::web::guard::Signed;
use crate::web::layout::{Shell, badge, page, s, text};
use crate::web::state::WebState;

/// `GET /console/system`.
pub async fn show(
    State(state): State<WebState>,
    signed: Signed,
    Params(p): Params,
) -> Result<Response, WebError> {
    let sys = state.api.get("/admin/system").await?;
    let w = window(&p);
    let series = state
        .api
        .get(&format!("/admin/stats/series?minutes={}", w.1))
        .await?;
    let shards = sys
        .get("shards")
        .and_then(Value::as_array)
        .cloned()
        .unwrap_or_default();
    let redis = sys.get("redis").cloned().unwrap_or_default();
    let durable = match redis.get("durable") {
        Some(Value::Bool(true)) => "ok",
        Some(Value::Bool(false)) => "error",
        _ => "unknown",
    };
    let body = html! {
        h1 { "System" }
        (charts("all", &series, w, "/console/system"))
        section.card id="durability" {
            h2 { "Redis durability " (badge(durable)) }
            p { (s(&redis, "verdict")) }
            dl.fields {
                dt { "Version" } dd { (text(&redis, "version")) }
                dt { "appendonly" } dd { (text(&redis, "appendonly")) }
                dt { "appendfsync" } dd { (text(&redis, "appendfsync")) }
                dt { "maxmemory-policy" } dd { (text(&redis, "maxmemory_policy")) }
            }
        }
        section.card id="shards" {
            h2 { "Shards" }
            div.table-wrap { table {
                thead { tr { th { "Shard" } th { "Entries" } th { "Lag (unread)" } th { "Pending" } th { "Consumers" } } }
                tbody {
                    @for sh in &shards {
                        tr {
                            td { (text(sh, "shard")) }
                            td { (text(sh, "length")) }
                            td { (text(sh, "lag")) }
                            td { (text(sh, "pending")) }
                            td {
                                @for c in sh.get("consumers").and_then(Value::as_array).map(Vec::as_slice).unwrap_or_default() {
                                    div {
                                        code { (s(c, "name")) } " "
                                        (badge(if c.get("alive") == Some(&Value::Bool(true)) { "active" } else { "disabled" }))
                                        " " span.muted { (text(c, "pending")) " pending, idle " (c.get("idle_ms").and_then(Value::as_u64).unwrap_or(0) / 1000) " s" }
                                    }
                                }
                            }
                        }
                    }
                }
            } }
        }
        section.card {
            h2 { "Version " (s(&sys, "version")) }
            h3 { "Effective configuration (secrets redacted)" }
            pre.body id="config" { (s(&sys, "config")) }
        }
    };
    let shell = Shell {
        ui: Ui::Console,
        title: "System",
        csrf: Some(&signed.session.csrf),
        tenant: None,
        tab: "system",
    };
    Ok(page(&shell, body).into_response())
}
