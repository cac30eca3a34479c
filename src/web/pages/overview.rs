//! A tenant's first page: its counters, its charts per minute and, in the console, the
//! operator's settings of it.

use axum::extract::State;
use axum::response::{IntoResponse, Response};
use maud::{Markup, html};
use serde_json::{Value, json};

use super::ctx::Ctx;
use super::tenants;
use crate::web::error::WebError;
use crate::web::face::Ui;
use crate::web::form::Params;
use crate::web::layout::{badge, chart, fields, items, notice, page, text};
use crate::web::state::WebState;

/// Minutes the charts cover.
pub const CHART_MINUTES: u64 = 180;

/// `GET …/` (a tenant's overview).
pub async fn show(
    State(state): State<WebState>,
    ctx: Ctx,
    Params(p): Params,
) -> Result<Response, WebError> {
    let tenant = state.api.get(&ctx.api("")).await?;
    let stats = state.api.get(&ctx.api("/stats")).await?;
    let series = state
        .api
        .get(&ctx.api(&format!("/stats/series?minutes={CHART_MINUTES}")))
        .await?;
    let operator = match ctx.ui {
        Ui::Console => Some(tenants::operator_section(&state, &ctx, &tenant).await?),
        Ui::Portal => None,
    };
    let active = tenant.get("active") == Some(&Value::Bool(true));
    let body = html! {
        (notice(p.opt("notice")))
        h1 { (ctx.tenant_name) " " (badge(if active { "active" } else { "disabled" })) }
        section.card {
            h2 { "Counters" }
            dl.fields id="stats" {
                dt { "Events received" } dd { (text(&stats, "events_received")) }
                dt { "Deliveries succeeded" } dd { (text(&stats, "deliveries_succeeded")) }
                dt { "Deliveries failed" } dd { (text(&stats, "deliveries_failed")) }
                dt { "In retry" } dd { (text(&stats, "in_retry")) }
                dt { "In the error queue" } dd { (text(&stats, "dead_letters")) }
                dt { "Average response" } dd { (text(&stats, "avg_response_ms")) " ms" }
            }
        }
        (charts("tenant", &series))
        section.card {
            h2 { "Tenant" }
            @match ctx.ui {
                Ui::Console => (fields(&tenant, &["name", "active"])),
                // A tenant sees its name and id, not the operator's settings of it.
                Ui::Portal => (fields(&tenant, &["name", "active", "external_id", "rate_limit", "origin"])),
            }
        }
        @if let Some(op) = operator { (op) }
    };
    Ok(page(&ctx.shell(&ctx.tenant_name, ""), body).into_response())
}

/// The per-minute charts of a `…/stats/series` answer: events received, deliveries by
/// outcome, and the mean attempt latency.
pub fn charts(prefix: &str, series: &Value) -> Markup {
    let rows = items(series);
    let col = |f: &dyn Fn(&Value) -> Value| -> Vec<Value> { rows.iter().map(f).collect() };
    let num = |r: &Value, k: &str| r.get(k).and_then(Value::as_u64).unwrap_or(0);
    let x = col(&|r| json!(num(r, "minute_ms") / 1000));
    let received = json!({
        "series": ["events received"],
        "data": [x, col(&|r| json!(num(r, "received")))],
        "unit": "per minute",
    });
    let outcomes = json!({
        "series": ["succeeded", "failed attempts"],
        "colors": ["#16a34a", "#dc2626"],
        "data": [x, col(&|r| json!(num(r, "succeeded"))), col(&|r| json!(num(r, "failed")))],
        "unit": "per minute",
    });
    let latency = json!({
        "series": ["mean attempt latency"],
        "data": [x, col(&|r| {
            let a = num(r, "attempts");
            if a == 0 { Value::Null } else { json!(num(r, "latency_ms_sum") as f64 / a as f64) }
        })],
        "unit": "ms",
    });
    let total = |k: &str| rows.iter().map(|r| num(r, k)).sum::<u64>();
    html! {
        section.card {
            h2 { "The last " (CHART_MINUTES / 60) " hours, per minute" }
            p.muted {
                (total("received")) " events received, "
                (total("succeeded")) " deliveries succeeded, "
                (total("failed")) " failed attempts."
            }
            div.charts {
                (chart(&format!("{prefix}-received"), "Events received", &received))
                (chart(&format!("{prefix}-outcomes"), "Deliveries", &outcomes))
                (chart(&format!("{prefix}-latency"), "Delivery latency", &latency))
            }
        }
    }
}
