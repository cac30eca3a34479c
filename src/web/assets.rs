//! The scripts and styles of the pages, compiled into the binary (no CDN, no build step):
//! htmx 2 (0BSD) and uPlot 1.6 (MIT), with their licences beside them in `assets/`, and our
//! own `app.js`, `app.css` and `favicon.svg`.

use axum::extract::Path;
use axum::response::{IntoResponse, Response};
use http::header;

/// (name, content type, bytes).
const FILES: &[(&str, &str, &[u8])] = &[
    (
        "htmx.min.js",
        "text/javascript; charset=utf-8",
        include_bytes!("assets/htmx.min.js"),
    ),
    (
        "uPlot.iife.min.js",
        "text/javascript; charset=utf-8",
        include_bytes!("assets/uPlot.iife.min.js"),
    ),
    (
        "uPlot.min.css",
        "text/css; charset=utf-8",
        include_bytes!("assets/uPlot.min.css"),
    ),
    (
        "app.js",
        "text/javascript; charset=utf-8",
        include_bytes!("assets/app.js"),
    ),
    (
        "app.css",
        "text/css; charset=utf-8",
        include_bytes!("assets/app.css"),
    ),
    (
        "favicon.svg",
        "image/svg+xml",
        include_bytes!("assets/favicon.svg"),
    ),
];

/// `GET …/assets/{file}`.
pub async fn serve(Path(file): Path<String>) -> Response {
    match FILES.iter().find(|(name, _, _)| *name == file) {
        Some((_, content_type, bytes)) => (
            [
                (header::CONTENT_TYPE, *content_type),
                // Assets change only with the binary; an hour keeps a restart's update visible soon.
                (header::CACHE_CONTROL, "public, max-age=3600"),
            ],
            *bytes,
        )
            .into_response(),
        // The contract's error shape, like every other unknown resource.
        None => crate::http::error::ApiError::not_found("asset").into_response(),
    }
}
