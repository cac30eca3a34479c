//! List answers: `{"data": […]}`, and pages of longer lists.

use axum::response::{IntoResponse, Response};
use serde::Serialize;

/// A list answer: `{"data": […]}`.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct Listing<T> {
    pub data: Vec<T>,
}

impl<T: Serialize> IntoResponse for Listing<T> {
    fn into_response(self) -> Response {
        axum::Json(self).into_response()
    }
}

/// A page of a longer list: `{"data": […], "next": …}`.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct Page<T> {
    pub data: Vec<T>,
    /// Pass as `after` for the next page; `null` on the last one.
    pub next: Option<String>,
}
