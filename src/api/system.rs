//! `/metrics` and `/openapi.json`, on the admin listener, without auth: the listener is meant
//! for an internal network, and neither carries tenant data.

use std::sync::Arc;

use axum::extract::State;
use axum::response::{IntoResponse, Response};
use http::HeaderValue;
use http::header::CONTENT_TYPE;
use metrics_exporter_prometheus::PrometheusHandle;

/// Prometheus metrics (text format). Labels carry no tenant ids.
#[utoipa::path(
    get,
    path = "/metrics",
    tag = "system",
    operation_id = "metrics",
    responses((status = 200, description = "Prometheus text format.", body = String, content_type = "text/plain")),
)]
pub async fn metrics(State(handle): State<PrometheusHandle>) -> Response {
    (
        [(
            CONTENT_TYPE,
            HeaderValue::from_static("text/plain; version=0.0.4"),
        )],
        handle.render(),
    )
        .into_response()
}

/// This description (OpenAPI 3.1) of the edge and admin APIs.
#[utoipa::path(
    get,
    path = "/openapi.json",
    tag = "system",
    operation_id = "openapi",
    responses((status = 200, description = "The OpenAPI document.", body = Object, content_type = "application/json")),
)]
pub async fn openapi(State(document): State<Arc<String>>) -> Response {
    (
        [(CONTENT_TYPE, HeaderValue::from_static("application/json"))],
        document.as_str().to_owned(),
    )
        .into_response()
}
