//! A tenant's first page: its counters, its charts per minute and, in the console, the
//! operator's settings of it.

use axum::extract::State;
use axum::response::{IntoResponse, Response};
use maud::{Markup, html};
use serde_json::{Value, json};

use super::ctx::Ctx;
use super::tenants;
use crate::api::events::{Series, SeriesQuery, read_stats, read_stats_series};
use crate::store::series::MinuteCounts;
use crate::web::error::WebError;
use crate::web::face::Ui;
use crate::web::form::Params;
use crate::web::layout::{badge, chart, notice, page, stamp};
use crate::web::state::WebState;

/// The windows a chart may cover: (`window` parameter, minutes, label). Up to 48 hours the
/// chart reads the per-minute counters; a week reads them by the hour (the older days from
/// the hourly rollups).
pub const WINDOWS: &[(&str, u64, &str)] = &[
    ("1h", 60, "1 hour"),
    ("3h", 180, "3 hours"),
    ("6h", 360, "6 hours"),
    ("24h", 1440, "24 hours"),
    ("48h", 2880, "48 hours"),
    ("7d", 10080, "7 days"),
];

/// The series query of window `w` (per minute up to 48 hours, by the hour beyond).
pub fn series_query(w: (&str, u64, &str)) -> SeriesQuery {
    SeriesQuery { minutes: Some(w.1) }
}

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
    let tenant = crate::api::tenants::read_tenant(&state.core, &ctx.tenant).await?;
    let stats = read_stats(&state.core, &ctx.scope).await?;
    let w = window(&p);
    let series = read_stats_series(&state.core, Some(&ctx.scope), &series_query(w)).await?;
    // What needs looking at in this tenant, from the same typed overview as the home page.
    let attention = crate::api::overview::build(&state.core, Some(&ctx.scope)).await?;
    let console = ctx.ui == Ui::Console;
    let operator = match ctx.ui {
        Ui::Console => Some(tenants::operator_section(&state, &ctx, &tenant).await?),
        Ui::Portal => None,
    };
    let active = tenant.active;
    let body = html! {
        (notice(p.opt("notice")))
        h1 { (ctx.tenant_name) " " (badge(if active { "active" } else { "disabled" })) }
        section.card {
            h2 { "Counters" }
            dl.fields id="stats" {
                dt { "Events received" } dd { (stats.events_received) }
                dt { "Deliveries succeeded" } dd { (stats.deliveries_succeeded) }
                dt { "Deliveries failed" } dd { (stats.deliveries_failed) }
                dt { "In retry" } dd { (stats.in_retry) }
                dt { "In the error queue" } dd { (stats.dead_letters) }
                dt { "Average response" } dd { (stats.avg_response_ms) " ms" }
            }
        }
        (super::home::troubled(&attention.troubled_targets, attention.troubled_targets_total, console))
        (super::home::unwell(&attention, console))
        (charts("tenant", &series, w, &ctx.page("")))
        section.card {
            h2 { "Tenant" }
            dl.fields id="tenant-details" {
                dt { "Id" } dd { code { (tenant.id.as_str()) } }
                // A tenant sees its name and id, not the operator's settings of it.
                @if console {
                    dt { "External id" } dd { (tenant.external_id.as_ref().map_or("—", |e| e.as_str())) }
                    dt { "Rate limit" } dd { (tenants::rate(tenant.rate_limit.as_ref())) }
                    dt { "Declared by" } dd { (tenant.origin.as_str()) }
                }
                dt { "Created" } dd { (stamp(&tenant.created_at)) }
                dt { "Changed" } dd { (stamp(&tenant.updated_at)) }
            }
        }
        @if let Some(op) = operator { (op) }
    };
    Ok(page(&ctx.shell(&ctx.tenant_name, ""), body).into_response())
}

/// Rows summed in buckets of `step` rows, each at its first minute (seconds):
/// `[time, received, succeeded, failed, attempts, latency_ms_sum]`.
fn bucketed(rows: &[MinuteCounts], step: usize) -> Vec<[u64; 6]> {
    rows.chunks(step.max(1))
        .map(|c| {
            let sum = |f: fn(&MinuteCounts) -> u64| c.iter().map(f).sum::<u64>();
            [
                c.first().map_or(0, |r| r.minute_ms / 1000),
                sum(|r| r.received),
                sum(|r| r.succeeded),
                sum(|r| r.failed),
                sum(|r| r.attempts),
                sum(|r| r.latency_ms_sum),
            ]
        })
        .collect()
}

/// The charts of a `…/stats/series` answer over window `w` (of [`WINDOWS`]): events received,
/// deliveries by outcome, and the mean attempt latency, in buckets of one minute or more (at
/// most 180 points a chart); `here` is the page the window links go to. Times are UTC, like
/// the tables.
pub fn charts(prefix: &str, series: &Series, w: (&str, u64, &str), here: &str) -> Markup {
    let row = series.step_minutes.max(1);
    let rows_per_bucket = (w.1 / 180 / row).max(1);
    let buckets = bucketed(&series.data, rows_per_bucket as usize);
    let step = rows_per_bucket * row;
    let col = |i: usize| -> Vec<Value> { buckets.iter().map(|b| json!(b[i])).collect() };
    let per = match step {
        1 => "per minute".to_owned(),
        60 => "per hour".to_owned(),
        _ => format!("per {step} minutes"),
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
        let rows: Vec<MinuteCounts> = (0..1440u64)
            .map(|m| MinuteCounts {
                minute_ms: m * 60_000,
                received: 1,
                attempts: 2,
                latency_ms_sum: 10,
                ..MinuteCounts::default()
            })
            .collect();
        let b = bucketed(&rows, 1440 / 180);
        assert_eq!(b.len(), 180);
        assert_eq!(b[1], [8 * 60, 8, 0, 0, 16, 80]);
        assert_eq!(bucketed(&rows[..60], 1).len(), 60);
        assert_eq!(window(&crate::web::form::Form::default()).1, 180);
    }
}
