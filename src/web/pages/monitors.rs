//! A tenant's monitors: the status board (updating itself), one monitor's page (incident
//! timeline, recent checks, uptime per day, settings), creation and token rotation.

use axum::extract::State;
use axum::response::{IntoResponse, Response};
use maud::{Markup, html};
use serde_json::{Map, Value, json};

use super::ctx::{Ctx, Item, Kept};
use crate::api::monitors::{
    HistoryQuery, MonitorView, MonitorWithToken, create_monitor, delete_monitor, list_monitors,
    monitor_checks, monitor_incidents, read_monitor, rotate_monitor_token, update_monitor,
};
use crate::model::time::parse_rfc3339;
use crate::model::{MonitorPatch, MonitorSpec};
use crate::monitors::state::{Incident, LiveStatus};
use crate::web::error::WebError;
use crate::web::form::{Form, Params, decode};
use crate::web::href::seg;
use crate::web::layout::{at, badge, csrf_field, notice, page, see_other, stamp};
use crate::web::state::WebState;

/// The questions its destructive actions ask first (in the browser, or as a page).
const ASK_ROTATE: &str = "Rotate the token? The old URLs stop working at once.";
const ASK_DELETE: &str = "Delete this monitor and its history?";

/// Seconds between the board's refreshes.
const REFRESH_S: u32 = 5;
/// Incidents the timeline lists (the uptime strip reads further back).
const INCIDENTS_SHOWN: usize = 50;
/// Pages of 100 incidents the uptime strip reads at most.
const INCIDENT_PAGES: usize = 10;
/// Days the uptime strip covers.
const UPTIME_DAYS: u64 = 30;
const DAY_MS: u64 = 86_400_000;

/// The tile class of a status: from a fixed set.
fn tile_class(status: LiveStatus) -> &'static str {
    match status {
        LiveStatus::Up => "tile up",
        LiveStatus::Down => "tile down",
        LiveStatus::Degraded => "tile degraded",
        LiveStatus::New => "tile",
    }
}

/// The board's tiles; they ask to be refreshed every few seconds.
fn tiles_markup(ctx: &Ctx, monitors: &[MonitorView]) -> Markup {
    html! {
        div.board id="board" hx-get=(ctx.page("/monitors/tiles")) hx-trigger={ "every " (REFRESH_S) "s" } hx-swap="outerHTML" {
            @for m in monitors {
                a class=(tile_class(m.status)) href=(ctx.page(&format!("/monitors/{}", seg(m.id.as_str())))) data-status=(m.status.as_str()) {
                    h3 { (m.name.as_str()) }
                    (badge(m.status.as_str()))
                    p.muted {
                        "Last heartbeat: " (at(m.last_heartbeat.as_deref())) br;
                        "Next deadline: " (at(m.next_deadline.as_deref()))
                    }
                }
            }
            @if monitors.is_empty() { p { "No monitors yet." } }
        }
    }
}

/// `GET …/monitors`: the board, and the form of a new monitor.
pub async fn board(
    State(state): State<WebState>,
    ctx: Ctx,
    Params(p): Params,
) -> Result<Response, WebError> {
    let monitors = list_monitors(&state.core, &ctx.scope).await?.data;
    let body = html! {
        (notice(p.opt("notice")))
        h1 { "Monitors" }
        (tiles_markup(&ctx, &monitors))
        section.card {
            h2 { "New monitor" }
            form.stack method="post" action=(ctx.page("/monitors")) id="new-monitor" {
                (csrf_field(&ctx.csrf))
                (monitor_fields(None))
                div { button type="submit" { "Create monitor" } }
            }
        }
    };
    Ok(page(&ctx.shell("Monitors", "/monitors"), body).into_response())
}

/// `GET …/monitors/tiles`: the board alone, for its refresh.
pub async fn tiles(State(state): State<WebState>, ctx: Ctx) -> Result<Response, WebError> {
    let monitors = list_monitors(&state.core, &ctx.scope).await?.data;
    Ok(tiles_markup(&ctx, &monitors).into_response())
}

fn monitor_fields(current: Option<&MonitorView>) -> Markup {
    let interval = current.map_or(300, |m| m.heartbeat_interval_s.get());
    let grace = current.map_or(60, |m| m.grace_s.get());
    html! {
        label { "Name" input type="text" name="name" value=[current.map(|m| m.name.as_str())] required; }
        label { "Heartbeat interval (seconds)" input type="number" name="heartbeat_interval_s" min="1" value=(interval); }
        label { "Grace (seconds)" input type="number" name="grace_s" min="0" value=(grace); }
        label { "Secret for signed status pushes (optional" @if current.is_some() { "; empty keeps it" } ")"
            input type="password" name="secret" autocomplete="off";
        }
    }
}

fn monitor_body(form: &Form) -> Result<Value, WebError> {
    let mut m = Map::new();
    m.insert("name".into(), json!(form.get("name")));
    if let Some(i) = form.number("heartbeat_interval_s", "Heartbeat interval")? {
        m.insert("heartbeat_interval_s".into(), json!(i));
    }
    if let Some(g) = form.number("grace_s", "Grace")? {
        m.insert("grace_s".into(), json!(g));
    }
    if let Some(sec) = form.opt("secret") {
        m.insert("secret".into(), json!(sec));
    }
    Ok(Value::Object(m))
}

/// A monitor's URLs and token, shown at creation and rotation.
fn with_token(ctx: &Ctx, title: &str, m: &MonitorWithToken) -> Response {
    let back = ctx.page(&format!("/monitors/{}", seg(m.monitor.id.as_str())));
    ctx.shown_once(
        &format!("{title}: {}", m.monitor.name.as_str()),
        "/monitors",
        Kept::Hashed,
        &[
            ("Heartbeat URL", "heartbeat-url", &m.heartbeat_url),
            ("Status URL", "status-url", &m.status_url),
            ("Token", "monitor-token", &m.token),
        ],
        &back,
    )
}

/// `POST …/monitors`.
pub async fn create(
    State(state): State<WebState>,
    ctx: Ctx,
    form: Form,
) -> Result<Response, WebError> {
    let spec: MonitorSpec = decode(monitor_body(&form)?)?;
    let created = create_monitor(&state.core, &ctx.scope, &spec).await?;
    Ok(with_token(&ctx, "Monitor created", &created))
}

/// The monitor's incidents, newest first, back to the start of the uptime strip (or as far
/// as [`INCIDENT_PAGES`] go), and from when on they are complete: days before that are
/// unknown, not up.
async fn incident_history(
    state: &WebState,
    ctx: &Ctx,
    id: &str,
) -> Result<(Vec<Incident>, u64), WebError> {
    let horizon = state
        .core
        .store
        .clock()
        .now_ms()
        .saturating_sub(UPTIME_DAYS * DAY_MS);
    let mut all: Vec<Incident> = Vec::new();
    let mut before: Option<String> = None;
    for _ in 0..INCIDENT_PAGES {
        let q = HistoryQuery {
            limit: Some(100),
            before: before.take(),
        };
        let rows = monitor_incidents(&state.core, &ctx.scope, id, &q)
            .await?
            .data;
        let full = rows.len() == 100;
        let oldest = rows.last().map(|i| i.opened_at.clone());
        all.extend(rows);
        match oldest {
            Some(o) if full && parse_rfc3339(&o).is_some_and(|t| t > horizon) => before = Some(o),
            // Fewer than a page, or past the horizon: complete.
            _ => return Ok((all, 0)),
        }
    }
    let known_from = all
        .last()
        .and_then(|i| parse_rfc3339(&i.opened_at))
        .unwrap_or(0);
    Ok((all, known_from))
}

/// The spans (ms) the incidents cover; an open one lasts until `now`.
fn spans(incidents: &[Incident], now: u64) -> Vec<(u64, u64)> {
    incidents
        .iter()
        .filter_map(|i| {
            let from = parse_rfc3339(&i.opened_at)?;
            let to = i
                .resolved_at
                .as_deref()
                .and_then(parse_rfc3339)
                .unwrap_or(now);
            Some((from, to))
        })
        .collect()
}

/// Uptime per day over the last [`UPTIME_DAYS`] days, from the incidents' spans: the share
/// of each day (UTC) outside an incident. Days before the monitor existed are `None`.
fn uptime(spans: &[(u64, u64)], created_ms: u64, now: u64) -> Vec<(u64, Option<f64>)> {
    let today = now / DAY_MS * DAY_MS;
    (0..UPTIME_DAYS)
        .rev()
        .map(|back| {
            let start = today.saturating_sub(back * DAY_MS);
            let end = (start + DAY_MS).min(now);
            let from = start.max(created_ms);
            if from >= end {
                return (start, None);
            }
            let down: u64 = spans
                .iter()
                .map(|&(a, b)| b.min(end).saturating_sub(a.max(from)))
                .sum();
            let total = end - from;
            (start, Some(1.0 - (down.min(total) as f64 / total as f64)))
        })
        .collect()
}

fn uptime_strip(days: &[(u64, Option<f64>)]) -> Markup {
    html! {
        div.uptime id="uptime" aria-label="Uptime per day" {
            @for (start, share) in days {
                @let day = crate::model::time::rfc3339(*start);
                @match share {
                    None => span.none title={ (&day[..10]) ": no monitor yet" } { "" },
                    Some(f) => {
                        @let class = if *f >= 0.999 { "full" } else if *f >= 0.95 { "partial" } else { "low" };
                        span class=(class) title={ (&day[..10]) ": " (format!("{:.2}", f * 100.0)) " %" } { (format!("{:.0}", f * 100.0)) }
                    }
                }
            }
        }
    }
}

/// `GET …/monitors/{monitor_id}`.
pub async fn show(
    State(state): State<WebState>,
    ctx: Ctx,
    Item(id): Item,
    Params(p): Params,
) -> Result<Response, WebError> {
    let m = read_monitor(&state.core, &ctx.scope, &id).await?;
    let (incidents, known_from) = incident_history(&state, &ctx, &id).await?;
    let recent = HistoryQuery::default();
    let checks = monitor_checks(&state.core, &ctx.scope, &id, &recent)
        .await?
        .data;
    let created = parse_rfc3339(&m.created_at).unwrap_or(0);
    let now = state.core.store.clock().now_ms();
    let days = uptime(&spans(&incidents, now), created.max(known_from), now);
    let csrf = &ctx.csrf;
    let body = html! {
        (notice(p.opt("notice")))
        h1 { (m.name.as_str()) " " (badge(m.status.as_str())) }
        section.card {
            dl.fields id="monitor-state" {
                dt { "Status since" } dd { (at(m.status_since.as_deref())) }
                dt { "Last heartbeat" } dd { (at(m.last_heartbeat.as_deref())) }
                dt { "Last signal" } dd { (at(m.last_signal.as_deref())) }
                dt { "Next deadline" } dd { (at(m.next_deadline.as_deref())) }
                dt { "Running since" } dd { (at(m.running_since.as_deref())) }
                dt { "Interval / grace" } dd { (m.heartbeat_interval_s.get()) " s / " (m.grace_s.get()) " s" }
                dt { "Signed pushes" } dd { @if m.has_secret { "required" } @else { "no" } }
            }
            p.muted { "Its URLs hold its token, which is shown only at creation and rotation; rotate it to see new ones." }
        }
        section.card {
            h2 { "Uptime per day (the last " (UPTIME_DAYS) " days, UTC)" }
            (uptime_strip(&days))
        }
        section.card {
            h2 { "Incidents" }
            div.table-wrap { table id="incidents" {
                thead { tr { th { "Opened (UTC)" } th { "Status" } th { "Reason" } th { "Resolved (UTC)" } th { "Duration" } } }
                tbody {
                    @for i in incidents.iter().take(INCIDENTS_SHOWN) {
                        tr {
                            td { (stamp(&i.opened_at)) }
                            td { (badge(i.status.as_str())) }
                            td { (i.reason) }
                            td { (at(i.resolved_at.as_deref())) }
                            td { @if let Some(d) = i.duration_ms { (d / 1000) " s" } @else { "open" } }
                        }
                    }
                    @if incidents.is_empty() { tr { td colspan="5" { "No incidents." } } }
                }
            } }
        }
        section.card {
            h2 { "Recent checks" }
            div.table-wrap { table id="checks" {
                thead { tr { th { "At (UTC)" } th { "Signal" } th { "Status" } th { "Reason" } th { "Message" } } }
                tbody {
                    @for c in &checks {
                        tr {
                            td { (stamp(&c.at)) }
                            td { (c.signal) }
                            td { (badge(c.status.as_str())) }
                            td { (c.reason) }
                            td { (c.message.as_deref().unwrap_or("—")) }
                        }
                    }
                }
            } }
        }
        section.card {
            h2 { "Settings" }
            form.stack method="post" action=(ctx.page(&format!("/monitors/{id}"))) id="monitor-form" {
                (csrf_field(csrf))
                (monitor_fields(Some(&m)))
                div { button type="submit" { "Save" } }
            }
            div.actions {
                form.inline method="post" action=(ctx.page(&format!("/monitors/{id}/rotate"))) data-confirm=(ASK_ROTATE) {
                    (csrf_field(csrf))
                    button.secondary type="submit" id="rotate-token" { "Rotate token" }
                }
                form.inline method="post" action=(ctx.page(&format!("/monitors/{id}/delete"))) data-confirm=(ASK_DELETE) {
                    (csrf_field(csrf))
                    button.danger type="submit" { "Delete" }
                }
            }
        }
    };
    Ok(page(&ctx.shell("Monitor", "/monitors"), body).into_response())
}

/// `POST …/monitors/{monitor_id}`: saves the settings.
pub async fn update(
    State(state): State<WebState>,
    ctx: Ctx,
    Item(id): Item,
    form: Form,
) -> Result<Response, WebError> {
    let patch: MonitorPatch = decode(monitor_body(&form)?)?;
    update_monitor(&state.core, &ctx.scope, &id, &patch).await?;
    Ok(see_other(
        &ctx.page(&format!("/monitors/{id}?notice=saved")),
    ))
}

/// `POST …/monitors/{monitor_id}/rotate`: a new token and URLs, shown this once.
pub async fn rotate(
    State(state): State<WebState>,
    ctx: Ctx,
    Item(id): Item,
    form: Form,
) -> Result<Response, WebError> {
    let action = ctx.page(&format!("/monitors/{id}/rotate"));
    if let Some(ask) = ctx.confirm_first(&form, ASK_ROTATE, &action) {
        return Ok(ask);
    }
    let rotated = rotate_monitor_token(&state.core, &ctx.scope, &id).await?;
    Ok(with_token(&ctx, "Token rotated", &rotated))
}

/// `POST …/monitors/{monitor_id}/delete`.
pub async fn remove(
    State(state): State<WebState>,
    ctx: Ctx,
    Item(id): Item,
    form: Form,
) -> Result<Response, WebError> {
    let action = ctx.page(&format!("/monitors/{id}/delete"));
    if let Some(ask) = ctx.confirm_first(&form, ASK_DELETE, &action) {
        return Ok(ask);
    }
    delete_monitor(&state.core, &ctx.scope, &id).await?;
    Ok(see_other(&ctx.page("/monitors?notice=deleted")))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn uptime_is_the_share_of_each_day_outside_incidents() {
        let now = 10 * DAY_MS + DAY_MS / 2;
        let created = 8 * DAY_MS;
        // Down a quarter of day 9 (resolved), and from the middle of day 10 (today) on.
        let incidents = [
            (9 * DAY_MS, 9 * DAY_MS + DAY_MS / 4),
            (10 * DAY_MS + DAY_MS / 4, now),
        ];
        let days = uptime(&incidents, created, now);
        assert_eq!(days.len() as u64, UPTIME_DAYS);
        let tail: Vec<Option<f64>> = days.iter().rev().take(4).map(|d| d.1).collect();
        assert_eq!(
            tail[0],
            Some(0.5),
            "today: up a quarter of the half day gone"
        );
        assert_eq!(tail[1], Some(0.75));
        assert_eq!(tail[2], Some(1.0));
        assert_eq!(tail[3], None, "before the monitor existed");
    }
}
