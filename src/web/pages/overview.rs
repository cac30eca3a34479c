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

/// The windows a chart may cover: (`window` parameter, minutes, label). The per-minute
/// counters live 49 hours, so no window is longer than 48.
pub const WINDOWS: &[(&str, u64, &str)] = &[
    ("1h", 60, "1 hour"),
    ("3h", 180, "3 hours"),
    ("6h", 360, "6 hours"),
    ("24h", 1440, "24 hours"),
    ("48h", 2880, "48 hours"),
];

/// The window a page's `?window=` asks for (3 hours unless it names one of [`WINDOWS`]).
pub fn window(p: &crate::web::form::Form) -> (&'static str, u64, &'static str) {
    let asked = p.opt("window").unwrap_or("3h");
    WINDOWS
        .iter()
        .copied()
        .find(|(key, _, _)| *key == asked)
        .unwrap_or(WINDOWS[1])
}

/// `GET …/` (a tenant's overview).
pub async fn show(
    State(state): State<WebState>,
    ctx: Ctx,
    Params(p): Params,
) -> Result<Response, WebError> {
    let tenant = state.api.get(&ctx.api("")).await?;
    let stats = state.api.get(&ctx.api("/stats")).await?;
    let w = window(&p);
    let series = state
        .api
        .get(&ctx.api(&format!("/stats/series?minutes={}", w.1)))
        .await?;
    // What needs looking at in this tenant, from the same typed overview as the home page.
    let scope = crate::api::scope::TenantScope {
        shard: crate::keyspace::shard_of(&ctx.tenant, state.core.shards),
        tenant: ctx.tenant.clone(),
    };
    let attention = crate::api::overview::build(&state.core, Some(&scope)).await?;
    let console = ctx.ui == Ui::Console;
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
        (super::home::troubled(&attention.troubled_targets, attention.troubled_targets_total, console))
        (super::home::unwell(&attention, console))
        (charts("tenant", &series, w, &ctx.page("")))
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

/// Per-minute rows summed in buckets of `step` minutes, each at its first minute (seconds):
/// `[time, received, succeeded, failed, attempts, latency_ms_sum]`.
fn bucketed(rows: &[Value], step: usize) -> Vec<[u64; 6]> {
    let num = |r: &Value, k: &str| r.get(k).and_then(Value::as_u64).unwrap_or(0);
    rows.chunks(step.max(1))
        .map(|c| {
            let sum = |k: &str| c.iter().map(|r| num(r, k)).sum::<u64>();
            [
                c.first().map_or(0, |r| num(r, "minute_ms") / 1000),
                sum("received"),
                sum("succeeded"),
                sum("failed"),
                sum("attempts"),
                sum("latency_ms_sum"),
            ]
        })
        .collect()
}

/// The charts of a `…/stats/series` answer over window `w` (of [`WINDOWS`]): events received,
/// deliveries by outcome, and the mean attempt latency, in buckets of one minute or more (at
/// most 180 points a chart); `here` is the page the window links go to. Times are UTC, like
/// the tables.
pub fn charts(prefix: &str, series: &Value, w: (&str, u64, &str), here: &str) -> Markup {
    let step = (w.1 / 180).max(1) as usize;
    let buckets = bucketed(items(series), step);
    let col = |i: usize| -> Vec<Value> { buckets.iter().map(|b| json!(b[i])).collect() };
    let per = if step == 1 {
        "per minute".to_owned()
    } else {
        format!("per {step} minutes")
    };
    let received = json!({
        "series": ["events received"],
        "data": [col(0), col(1)],
        "unit": format!("events {per}"),
    });
    let outcomes = json!({
        "series": ["succeeded", "failed attempts"],
        "colors": ["#16a34a", "#dc2626"],
        "data": [col(0), col(2), col(3)],
        "unit": format!("deliveries {per}"),
    });
    let latency = json!({
        "series": ["mean attempt latency"],
        "data": [col(0), buckets.iter().map(|b| {
            if b[4] == 0 { Value::Null } else { json!(b[5] as f64 / b[4] as f64) }
        }).collect::<Vec<_>>()],
        "unit": "ms",
    });
    let total = |i: usize| buckets.iter().map(|b| b[i]).sum::<u64>();
    html! {
        section.card {
            h2 { "The last " (w.2) ", " (per) " (UTC)" }
            nav.windows aria-label="Chart window" {
                @for (key, _, label) in WINDOWS {
                    a href=(format!("{here}?window={key}")) aria-current=[(*key == w.0).then_some("page")] { (label) }
                    " "
                }
            }
            p.muted {
                (total(1)) " events received, "
                (total(2)) " deliveries succeeded, "
                (total(3)) " failed attempts."
            }
            div.charts {
                (chart(&format!("{prefix}-received"), "Events received", &received))
                (chart(&format!("{prefix}-outcomes"), "Deliveries", &outcomes))
                (chart(&format!("{prefix}-latency"), "Delivery latency", &latency))
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_long_window_is_summed_in_buckets_of_several_minutes() {
        let rows: Vec<Value> = (0..1440u64)
            .map(|m| json!({"minute_ms": m * 60_000, "received": 1, "attempts": 2, "latency_ms_sum": 10}))
            .collect();
        let b = bucketed(&rows, 1440 / 180);
        assert_eq!(b.len(), 180);
        assert_eq!(b[1], [8 * 60, 8, 0, 0, 16, 80]);
        assert_eq!(bucketed(&rows[..60], 1).len(), 60);
        assert_eq!(window(&crate::web::form::Form::default()).1, 180);
    }
}
