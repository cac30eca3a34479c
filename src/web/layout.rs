//! The page shell and the small pieces pages share. Every value goes through maud, which
//! escapes it; nothing here builds HTML from strings.

use axum::response::{IntoResponse, Response};
use http::{StatusCode, header};
use maud::{DOCTYPE, Markup, html};
use serde_json::Value;

use super::error::WebError;
use super::face::Ui;

/// What the shell needs to know of the page it wraps.
#[derive(Debug, Clone)]
pub struct Shell<'a> {
    pub ui: Ui,
    pub title: &'a str,
    /// The signed-in session's CSRF token (for the sign-out form); `None` signed out.
    pub csrf: Option<&'a str>,
    /// The tenant the page is about, with its pages' base path: shows the tenant's tabs.
    pub tenant: Option<(&'a str, &'a str)>,
    /// Which tab is current.
    pub tab: &'a str,
}

/// The tabs of a tenant's pages: (path under the base, label).
const TENANT_TABS: &[(&str, &str)] = &[
    ("", "Overview"),
    ("/targets", "Targets"),
    ("/event-types", "Catalogue"),
    ("/events", "Events"),
    ("/dead-letters", "Error queue"),
    ("/sources", "Sources"),
    ("/monitors", "Monitors"),
];

/// A whole page.
pub fn page(shell: &Shell<'_>, body: Markup) -> Markup {
    let root = shell.ui.root();
    let product = match shell.ui {
        Ui::Console => "Estafeta console",
        Ui::Portal => "Webhooks portal",
    };
    html! {
        (DOCTYPE)
        html lang="en" {
            head {
                meta charset="utf-8";
                meta name="viewport" content="width=device-width, initial-scale=1";
                meta name="htmx-config" content=r#"{"includeIndicatorStyles":false,"allowEval":false,"allowScriptTags":false}"#;
                title { (shell.title) " · " (product) }
                link rel="icon" type="image/svg+xml" href={ (root) "/assets/favicon.svg" };
                link rel="stylesheet" href={ (root) "/assets/app.css" };
                link rel="stylesheet" href={ (root) "/assets/uPlot.min.css" };
                script src={ (root) "/assets/htmx.min.js" } defer {}
                script src={ (root) "/assets/uPlot.iife.min.js" } defer {}
                script src={ (root) "/assets/app.js" } defer {}
            }
            body {
                header.top {
                    a.brand href=(root) { (product) }
                    @if let Some(csrf) = shell.csrf {
                        nav.main {
                            @if shell.ui == Ui::Console {
                                a href="/console" aria-current=[(shell.tab == "home").then_some("page")] { "Health" }
                                a href="/console/tenants" aria-current=[(shell.tab == "tenants").then_some("page")] { "Tenants" }
                                a href="/console/system" aria-current=[(shell.tab == "system").then_some("page")] { "System" }
                            }
                            form.inline method="post" action={ (root) "/logout" } {
                                input type="hidden" name="_csrf" value=(csrf);
                                button.link type="submit" id="sign-out" { "Sign out" }
                            }
                        }
                    }
                }
                @if let Some((name, base)) = shell.tenant {
                    nav.tabs aria-label="Tenant" {
                        span.tenant-name { (name) }
                        @for (path, label) in TENANT_TABS {
                            a href={ (base) (path) } aria-current=[(shell.tab == *path).then_some("page")] { (label) }
                        }
                    }
                }
                main id="main" { (body) }
            }
        }
    }
}

/// The page of a failure: plain when the face is not known, else styled, with a way home.
pub fn error_page(ui: Option<Ui>, status: StatusCode, message: &str) -> Markup {
    let product = match ui {
        Some(Ui::Console) => "Estafeta console",
        Some(Ui::Portal) => "Webhooks portal",
        None => "Estafeta",
    };
    html! {
        (DOCTYPE)
        html lang="en" {
            head {
                meta charset="utf-8";
                meta name="viewport" content="width=device-width, initial-scale=1";
                title { (status.as_u16()) " · " (product) }
                @if let Some(ui) = ui {
                    link rel="icon" type="image/svg+xml" href={ (ui.root()) "/assets/favicon.svg" };
                    link rel="stylesheet" href={ (ui.root()) "/assets/app.css" };
                }
            }
            body {
                @if let Some(ui) = ui {
                    header.top { a.brand href=(ui.root()) { (product) } }
                }
                main id="main" {
                    h1 { (status.as_u16()) " " (status.canonical_reason().unwrap_or("Error")) }
                    p.error role="alert" { (message) }
                    @match (ui, status) {
                        (Some(ui), StatusCode::NOT_FOUND) => p { a href=(ui.root()) id="home" { "Go to the start page" } },
                        (Some(ui), _) => p { "Go back, correct what the message names, and try again, or " a href=(ui.root()) id="home" { "go to the start page" } "." },
                        (None, _) => p { "Go back, correct what the message names, and try again." },
                    }
                }
            }
        }
    }
}

/// What a failed page said, kept on its answer so the face's layer, which knows the face,
/// can render it styled.
#[derive(Debug, Clone)]
pub struct PageError(pub String);

/// The console's or the portal's 404 page, for a path under it that names no page: the
/// face's layer styles it and sets its headers.
pub async fn page_not_found() -> WebError {
    WebError::Api {
        status: StatusCode::NOT_FOUND,
        code: "not_found".into(),
        message: "There is no such page.".into(),
    }
}

/// A `303 See Other` to `to` (after a form: the browser then loads `to` with GET).
pub fn see_other(to: &str) -> Response {
    (StatusCode::SEE_OTHER, [(header::LOCATION, to.to_owned())]).into_response()
}

/// A notice above a page's content, from a redirect's `?notice=`: one of a fixed set, so
/// a link cannot put words on the page.
pub fn notice(key: Option<&str>) -> Markup {
    let text = match key.unwrap_or_default() {
        "saved" => "Saved.",
        "deleted" => "Deleted.",
        "enabled" => "Enabled.",
        "disabled" => "Disabled.",
        "revoked" => "Revoked.",
        "replayed" => "Replayed: the deliveries go out again.",
        "resent" => "Sent again.",
        "version_added" => {
            "Schema version added: bodies are checked against it unless a request names another."
        }
        "deprecated" => "Deprecated: its events are still accepted, with a Deprecation header.",
        "archived" => "Archived: an enforcing catalogue refuses its events.",
        "restored" => "Restored.",
        "nothing" => {
            "Nothing to send again: every delivery of this event succeeded or is under way."
        }
        _ => return html! {},
    };
    html! { p.notice role="status" { (text) } }
}

/// A hidden CSRF field.
pub fn csrf_field(csrf: &str) -> Markup {
    html! { input type="hidden" name="_csrf" value=(csrf); }
}

/// A value to copy, with its copy button.
pub fn copyable(id: &str, value: &str) -> Markup {
    html! {
        span.copyable {
            code id=(id) { (value) }
            button.copy type="button" data-copy=(id) aria-label="Copy" { "Copy" }
        }
    }
}

/// A status badge: the class comes from a fixed set, the text is escaped.
pub fn badge(status: &str) -> Markup {
    let class = match status {
        "up" | "delivered" | "succeeded" | "active" | "ok" | "healthy" | "closed" => "good",
        "down" | "failed" | "dead_lettered" | "disabled" | "error" | "failing" | "open" => "bad",
        "degraded" | "retrying" | "in_progress" | "pending" | "late" | "running" | "half_open" => {
            "warn"
        }
        _ => "neutral",
    };
    html! { span class={ "badge " (class) } { (status.replace('_', " ")) } }
}

/// An optional time of a view, shorter (`—` when absent).
pub fn at(rfc3339: Option<&str>) -> String {
    rfc3339.map_or_else(|| "—".to_owned(), stamp)
}

/// An optional value as display text (`—` when absent).
pub fn or_dash<T: std::fmt::Display>(v: Option<T>) -> String {
    v.map_or_else(|| "—".to_owned(), |v| v.to_string())
}

/// An RFC 3339 time (UTC) as the tables show it: `2026-12-01 10:00:00`.
pub fn stamp(rfc3339: &str) -> String {
    rfc3339
        .replacen('T', " ", 1)
        .trim_end_matches('Z')
        .to_owned()
}

/// A chart: its data rides in a JSON block (not script: the CSP would not run it anyway)
/// that our script hands to uPlot.
pub fn chart(id: &str, title: &str, data: &Value) -> Markup {
    html! {
        figure.chart {
            figcaption { (title) }
            div.plot id=(id) data-chart={ (id) "-data" } {}
            script type="application/json" id={ (id) "-data" } { (maud::PreEscaped(json_for_script(data))) }
        }
    }
}

/// JSON safe inside a `<script>` element: `<`, `>` and `&` escaped as Unicode escapes, so
/// no text in it can close the element.
fn json_for_script(v: &Value) -> String {
    v.to_string()
        .replace('<', "\\u003c")
        .replace('>', "\\u003e")
        .replace('&', "\\u0026")
}

impl IntoResponse for WebError {
    fn into_response(self) -> Response {
        if let WebError::SignedOut(ui) = self {
            return see_other(&format!("{}/login", ui.root()));
        }
        let status = self.status();
        if status.is_server_error() {
            tracing::warn!(error = %self, "page failed");
        }
        let message = self.to_string();
        let mut response = (status, error_page(None, status, &message)).into_response();
        response.extensions_mut().insert(PageError(message));
        if let WebError::Throttled { retry_after_s } = self {
            response.headers_mut().insert(
                http::header::RETRY_AFTER,
                http::HeaderValue::from(retry_after_s),
            );
        }
        response
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn chart_data_cannot_close_its_script_element() {
        let v = serde_json::json!({"label": "</script><script>alert(1)</script>"});
        let out = json_for_script(&v);
        assert!(!out.contains("</script"), "{out}");
        let back: Value = serde_json::from_str(&out)
            .map_err(|e| e.to_string())
            .unwrap_or_default();
        assert_eq!(back, v);
    }
}
