//! The routes of both faces: the tenant pages mounted twice, the console's own pages, and
//! the pages that need no session.

use axum::Router;
use axum::middleware::from_fn_with_state;
use axum::routing::{any, get, post};

use super::ctx::tenant_ctx;
use super::{
    catalogue, dead_letters, events, home, monitors, overview, routing, signin, sources, system,
    targets, tenants,
};
use crate::web::assets;
use crate::web::face::Ui;
use crate::web::guard::{require_session, security_headers};
use crate::web::layout::page_not_found;
use crate::web::state::WebState;

/// The tenant pages, relative to their base.
fn tenant_pages() -> Router<WebState> {
    Router::new()
        .route("/", get(overview::show))
        .route("/targets", get(targets::list).post(targets::create))
        .route("/targets/new", get(targets::new_form))
        .route(
            "/targets/{target_id}",
            get(targets::show).post(targets::update),
        )
        .route("/targets/{target_id}/rotate", post(targets::rotate))
        .route("/targets/{target_id}/toggle", post(targets::toggle))
        .route("/targets/{target_id}/delete", post(targets::remove))
        .route("/targets/{target_id}/recover", post(targets::recover))
        .route("/targets/{target_id}/test", post(targets::test))
        .route("/targets/{target_id}/filter-try", post(routing::filter_try))
        .route("/targets/{target_id}/simulate", post(routing::simulate))
        .route("/event-types", get(catalogue::list).post(catalogue::save))
        .route(
            "/event-types/{name}",
            get(catalogue::show).post(catalogue::act),
        )
        .route("/events", get(events::list))
        .route("/events/rows", get(events::rows))
        .route("/events/{event}", get(events::show))
        .route("/events/{event}/resend", post(events::resend))
        .route("/dead-letters", get(dead_letters::list))
        .route("/dead-letters/replay", post(dead_letters::replay))
        .route("/dead-letters/delete", post(dead_letters::remove))
        .route("/sources", get(sources::list).post(sources::create))
        .route("/sources/{source_id}", get(sources::show))
        .route("/sources/{source_id}/rotate", post(sources::rotate))
        .route("/sources/{source_id}/delete", post(sources::remove))
        .route("/monitors", get(monitors::board).post(monitors::create))
        .route("/monitors/tiles", get(monitors::tiles))
        .route(
            "/monitors/{monitor_id}",
            get(monitors::show).post(monitors::update),
        )
        .route("/monitors/{monitor_id}/rotate", post(monitors::rotate))
        .route("/monitors/{monitor_id}/delete", post(monitors::remove))
}

/// The pages that need no session: sign-in and the assets.
fn open_routes(ui: Ui) -> Router<WebState> {
    let root = ui.root();
    // Only the assets are compressed: a page holds its session's CSRF token beside what the
    // request reflects (filters, notices), and compressing both together is what BREACH
    // measures. The assets are most of a page's weight anyway.
    let r = Router::new().route(
        &format!("{root}/assets/{{file}}"),
        get(assets::serve).layer(tower_http::compression::CompressionLayer::new()),
    );
    match ui {
        Ui::Portal => r
            .route(
                "/portal/login",
                get(signin::portal_form).post(signin::portal_submit),
            )
            .route("/portal/link/{link}", get(signin::enter_link)),
        Ui::Console => r.route(
            "/console/login",
            get(signin::console_form).post(signin::console_submit),
        ),
    }
}

/// The console: `/console…` on the admin listener.
pub fn console_routes(state: WebState) -> Router {
    let ui = Ui::Console;
    let tenant = tenant_pages()
        .merge(tenants::operator_routes())
        .route_layer(from_fn_with_state((state.clone(), ui), tenant_ctx))
        .fallback(page_not_found);
    let signed = Router::new()
        .route("/console", get(home::show))
        .route("/console/find", get(home::find))
        .route("/console/tenants", get(tenants::list).post(tenants::create))
        .route("/console/system", get(system::show))
        .route("/console/logout", post(signin::console_logout))
        .nest("/console/tenants/{id}", tenant)
        .route_layer(from_fn_with_state((state.clone(), ui), require_session));
    signed
        .merge(open_routes(ui))
        // Any other path under the console is the console's 404 page, not the API's JSON.
        .route("/console/{*rest}", any(page_not_found))
        .layer(from_fn_with_state((state.clone(), ui), security_headers))
        .with_state(state)
}

/// The portal: `/portal…` on the edge listeners.
pub fn portal_routes(state: WebState) -> Router {
    let ui = Ui::Portal;
    let signed = Router::new()
        .route("/portal/logout", post(signin::portal_logout))
        .nest(
            "/portal",
            tenant_pages()
                .route_layer(from_fn_with_state((state.clone(), ui), tenant_ctx))
                .fallback(page_not_found),
        )
        .route_layer(from_fn_with_state((state.clone(), ui), require_session));
    signed
        .merge(open_routes(ui))
        .layer(from_fn_with_state((state.clone(), ui), security_headers))
        .with_state(state)
}
