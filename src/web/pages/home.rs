//! The console's home page: what needs looking at across tenants (troubled targets, monitors
//! down, sources silent, error queues, the shards' backlog, Redis and the log store), each
//! linking to its page, and the search box that finds anything by id. It renders the typed
//! [`Overview`] of [`crate::api::overview`], not JSON picked by field name.

use axum::extract::State;
use axum::response::{IntoResponse, Response};
use maud::{Markup, html};

use crate::api::find::{FoundKind, locate};
use crate::api::overview::{Overview, TroubledTarget, build};
use crate::model::WatchKind;
use crate::web::error::WebError;
use crate::web::face::Ui;
use crate::web::form::Params;
use crate::web::guard::Signed;
use crate::web::href::{query, seg};
use crate::web::layout::{Shell, badge, page, see_other, stamp};
use crate::web::state::WebState;

/// `GET /console`.
pub async fn show(
    State(state): State<WebState>,
    signed: Signed,
    Params(p): Params,
) -> Result<Response, WebError> {
    let o = build(&state.core, None).await?;
    let body = html! {
        h1 { "Health" }
        (search_box(p.opt("q"), p.opt("missing").is_some()))
        (summary(&o))
        (troubled(&o.troubled_targets, o.troubled_targets_total, true))
        (unwell(&o, true))
        (queues(&o))
        (backlog(&o))
    };
    let shell = Shell {
        ui: Ui::Console,
        title: "Health",
        csrf: Some(&signed.session.csrf),
        tenant: None,
        tab: "home",
    };
    Ok(page(&shell, body).into_response())
}

/// `GET /console/find?q=`: the page of what the id names, or home saying nothing has it.
pub async fn find(State(state): State<WebState>, Params(p): Params) -> Result<Response, WebError> {
    let q = p.opt("q").unwrap_or_default().trim().to_owned();
    if q.is_empty() {
        return Ok(see_other("/console"));
    }
    let Some(f) = locate(&state.core, &q).await? else {
        return Ok(see_other(&format!(
            "/console{}",
            query(&[("q", &q), ("missing", "1")])
        )));
    };
    let base = format!("/console/tenants/{}", seg(f.tenant_id.as_str()));
    let to = match f.kind {
        FoundKind::Tenant => base,
        FoundKind::Target => format!("{base}/targets/{}", seg(&f.id)),
        FoundKind::Event => format!("{base}/events/{}", seg(&f.id)),
        FoundKind::Source => format!("{base}/sources/{}", seg(&f.id)),
        FoundKind::Monitor => format!("{base}/monitors/{}", seg(&f.id)),
    };
    Ok(see_other(&to))
}

fn search_box(q: Option<&str>, missing: bool) -> Markup {
    html! {
        form.search method="get" action="/console/find" role="search" {
            label { "Find by id "
                input type="search" name="q" value=(q.unwrap_or_default()) required
                    placeholder="evt_…, tgt_…, ten_…, mon_…, src_… or an external id";
            }
            button type="submit" { "Find" }
        }
        @if missing {
            p.notice.bad id="find-missing" { "Nothing has the id " code { (q.unwrap_or_default()) } "." }
        }
    }
}

fn summary(o: &Overview) -> Markup {
    let storage = o.storage.as_ref();
    html! {
        section.card id="summary" {
            dl.fields {
                dt { "Tenants" } dd { (o.tenants) }
                dt { "Targets in trouble" } dd { (count_badge(o.troubled_targets_total)) }
                dt { "Monitors and sources unwell" } dd { (count_badge(o.unwell_total)) }
                dt { "In error queues" } dd { (o.error_queue_total) }
                @if let Some(st) = storage {
                    dt { "Redis" } dd id="redis-state" { (badge(if st.redis == "ok" { "ok" } else { "error" })) @if st.redis != "ok" { " " (st.redis) } }
                    dt { "Log store" } dd id="log-store-state" {
                        @match &st.log_store {
                            None => span.muted { "none (Redis holds everything)" },
                            Some(state) => {
                                (badge(if state == "ok" { "ok" } else if state == "behind" { "degraded" } else { "error" }))
                                " " (state)
                                @if let Some(lag) = st.log_store_lag_s { span.muted { " · " (format!("{lag:.0}")) " s behind" } }
                                @if let Some(e) = &st.log_store_error { div.muted { (e) } }
                            }
                        }
                    }
                }
                dt { "As of" } dd { (stamp(&o.at)) " UTC" }
            }
        }
    }
}

fn count_badge(n: u64) -> Markup {
    html! { @if n == 0 { (badge("ok")) " none" } @else { span class="badge bad" { (n) } } }
}

/// The troubled targets; `console` links them into each tenant's pages.
pub fn troubled(list: &[TroubledTarget], total: u64, console: bool) -> Markup {
    html! {
        section.card id="troubled-targets" {
            h2 { "Targets in trouble" @if total > list.len() as u64 { span.muted { " (the worst " (list.len()) " of " (total) ")" } } }
            @if list.is_empty() {
                p.muted { "Every target delivered its last attempt, and at least 90 % over the last hour." }
            } @else {
                div.table-wrap { table {
                    thead { tr {
                        @if console { th { "Tenant" } }
                        th { "Target" } th { "State" } th { "Last hour" } th { "Last attempt" } th { "Failing since" }
                    } }
                    tbody {
                        @for t in list {
                            @let base = if console { format!("/console/tenants/{}", seg(t.tenant_id.as_str())) } else { "/portal".to_owned() };
                            tr {
                                @if console { td { a href=(base) { (t.tenant_name) } } }
                                td { a href=(format!("{base}/targets/{}", seg(t.target_id.as_str()))) { (t.url) } }
                                td { (health_badge(&t.health)) @if let Some(r) = &t.disabled_reason { " " span.muted { (r) } } }
                                td { (ratio_text(&t.health)) }
                                td { (last_attempt_text(&t.health)) }
                                td { @match &t.health.failing_since { Some(s) => (stamp(s)), None => "—" } }
                            }
                        }
                    }
                } }
            }
        }
    }
}

/// A target's health state as a badge: red for failing, never green beside a low ratio.
pub fn health_badge(h: &crate::api::targets::TargetHealthView) -> Markup {
    use crate::store::deliveries::health::HealthState;
    let (class, word) = match h.state {
        HealthState::Failing => ("bad", "failing"),
        HealthState::Degraded => ("warn", "degraded"),
        HealthState::Healthy => ("good", "healthy"),
        HealthState::Idle => ("neutral", "idle"),
        HealthState::Disabled => ("bad", "disabled"),
    };
    html! { span class={ "badge " (class) } { (word) } }
}

/// "97.5 % of 40 attempts", or that there were none.
pub fn ratio_text(h: &crate::api::targets::TargetHealthView) -> String {
    match h.success_ratio {
        Some(r) => format!(
            "{:.1} % of {} attempt{}",
            r * 100.0,
            h.attempts,
            if h.attempts == 1 { "" } else { "s" }
        ),
        None => "no attempts".to_owned(),
    }
}

/// The newest attempt: status (or error) and when.
pub fn last_attempt_text(h: &crate::api::targets::TargetHealthView) -> String {
    match &h.last_attempt {
        None => "—".to_owned(),
        Some(a) => {
            let what = match (a.status, &a.error) {
                (Some(s), Some(e)) => format!("{s}: {e}"),
                (Some(s), None) => s.to_string(),
                (None, Some(e)) => e.clone(),
                (None, None) => "no answer".to_owned(),
            };
            format!("{what} at {}", stamp(&a.at))
        }
    }
}

/// Monitors down or degraded and sources silent; `console` links into each tenant's pages.
pub fn unwell(o: &Overview, console: bool) -> Markup {
    html! {
        section.card id="unwell" {
            h2 { "Monitors down, sources silent" @if o.unwell_total > o.unwell.len() as u64 { span.muted { " (the longest " (o.unwell.len()) " of " (o.unwell_total) ")" } } }
            @if o.unwell.is_empty() {
                p.muted { "Every monitor is up or new, and every watched source is receiving." }
            } @else {
                div.table-wrap { table {
                    thead { tr { @if console { th { "Tenant" } } th { "Name" } th { "Kind" } th { "Status" } th { "Since" } } }
                    tbody {
                        @for u in &o.unwell {
                            @let base = if console { format!("/console/tenants/{}", seg(u.tenant_id.as_str())) } else { "/portal".to_owned() };
                            @let (kind, path, status) = match u.kind {
                                WatchKind::Monitor => ("monitor", "monitors", u.status.as_str()),
                                WatchKind::Source => ("source", "sources", if u.status.as_str() == "down" { "silent" } else { u.status.as_str() }),
                            };
                            tr {
                                @if console { td { a href=(base) { (u.tenant_name) } } }
                                td { a href=(format!("{base}/{path}/{}", seg(&u.id))) { @if u.name.is_empty() { (u.id) } @else { (u.name) } } }
                                td { (kind) }
                                td { (badge(if status == "degraded" { "degraded" } else { "down" })) " " (status) }
                                td { (stamp(&u.since)) }
                            }
                        }
                    }
                } }
            }
        }
    }
}

fn queues(o: &Overview) -> Markup {
    html! {
        section.card id="error-queues" {
            h2 { "Error queues" }
            @if o.error_queues.is_empty() {
                p.muted { "Every error queue is empty." }
            } @else {
                div.table-wrap { table {
                    thead { tr { th { "Tenant" } th { "Entries" } } }
                    tbody {
                        @for q in &o.error_queues {
                            tr {
                                td { a href=(format!("/console/tenants/{}/dead-letters", seg(q.tenant_id.as_str()))) { (q.tenant_name) } }
                                td { (q.entries) }
                            }
                        }
                    }
                } }
            }
        }
    }
}

fn backlog(o: &Overview) -> Markup {
    let Some(shards) = &o.shards else {
        return html! {};
    };
    let lagging: Vec<_> = shards
        .iter()
        .filter(|s| s.lag.unwrap_or(0) > 0 || s.pending > 0)
        .collect();
    html! {
        section.card id="backlog" {
            h2 { "Backlog" }
            p.muted {
                (shards.iter().map(|s| s.length).sum::<u64>()) " entries in " (shards.len()) " shard streams; "
                (shards.iter().filter_map(|s| s.lag).sum::<u64>()) " not read yet, "
                (shards.iter().map(|s| s.pending).sum::<u64>()) " read and not finished. "
                a href="/console/system" { "System" }
            }
            @if !lagging.is_empty() {
                div.table-wrap { table {
                    thead { tr { th { "Shard" } th { "Entries" } th { "Not read yet" } th { "Pending" } } }
                    tbody {
                        @for s in lagging {
                            tr { td { (s.shard) } td { (s.length) } td { @match s.lag { Some(l) => (l), None => "—" } } td { (s.pending) } }
                        }
                    }
                } }
            }
        }
    }
}
