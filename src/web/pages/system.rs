//! The console's system page: shard streams, consumers and their liveness, Redis
//! durability, version and configuration (secrets redacted).

use axum::extract::State;
use axum::response::{IntoResponse, Response};
use maud::html;

use super::overview::{charts, series_query, window};
use crate::api::events::read_stats_series;
use crate::api::system::system_status;
use crate::web::error::WebError;
use crate::web::face::Ui;
use crate::web::form::Params;
use crate::web::guard::Signed;
use crate::web::layout::{Shell, badge, or_dash, page};
use crate::web::state::WebState;

/// `GET /console/system`.
pub async fn show(
    State(state): State<WebState>,
    signed: Signed,
    Params(p): Params,
) -> Result<Response, WebError> {
    let sys = system_status(&state.core).await?;
    let w = window(&p);
    let series = read_stats_series(&state.core, None, &series_query(w)).await?;
    let redis = &sys.redis;
    let durable = match redis.durable {
        Some(true) => "ok",
        Some(false) => "error",
        None => "unknown",
    };
    let body = html! {
        h1 { "System" }
        (charts("all", &series, w, "/console/system"))
        section.card id="durability" {
            h2 { "Redis durability " (badge(durable)) }
            p { (redis.verdict) }
            dl.fields {
                dt { "Version" } dd { (or_dash(redis.version.as_ref())) }
                dt { "appendonly" } dd { (or_dash(redis.appendonly)) }
                dt { "appendfsync" } dd { (or_dash(redis.appendfsync.as_ref())) }
                dt { "maxmemory-policy" } dd { (or_dash(redis.maxmemory_policy.as_ref())) }
            }
        }
        section.card id="shards" {
            h2 { "Shards" }
            div.table-wrap { table {
                thead { tr { th { "Shard" } th { "Entries" } th { "Lag (unread)" } th { "Pending" } th { "Consumers" } } }
                tbody {
                    @for sh in &sys.shards {
                        tr {
                            td { (sh.shard) }
                            td { (sh.length) }
                            td { (or_dash(sh.lag)) }
                            td { (sh.pending) }
                            td {
                                @for c in &sh.consumers {
                                    div {
                                        code { (c.name) } " "
                                        (badge(if c.alive { "active" } else { "disabled" }))
                                        " " span.muted { (c.pending) " pending, idle " (c.idle_ms / 1000) " s" }
                                    }
                                }
                            }
                        }
                    }
                }
            } }
        }
        section.card {
            h2 { "Version " (sys.version) }
            h3 { "Effective configuration (secrets redacted)" }
            pre.body id="config" { (sys.config) }
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
