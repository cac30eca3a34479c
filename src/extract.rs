//! Request extractors of the HTTP APIs that refuse with the contract's errors: a typed path
//! ([`ApiPath`]), a typed query ([`ApiQuery`]) and a typed JSON body read within the
//! listener's bounds ([`ApiJson`]). axum's own extractors answer `text/plain`; these answer
//! `{"error": …}`, name the field at fault, and never turn a bad id into a Redis key.

pub mod client;
use axum::extract::rejection::{PathRejection, QueryRejection};
use axum::extract::{FromRequest, FromRequestParts, Path, Query, Request};
use http::request::Parts;
use serde::de::DeserializeOwned;

use crate::body::{BodyLimits, JsonError, decode_json};
use crate::error::ApiError;

/// Path parameters of a route, and what they name when they name nothing (`404 <what> not
/// found`: an id that breaks the id grammar cannot exist).
pub trait PathParams: DeserializeOwned + Send {
    const WHAT: &'static str;
}

/// A route's typed path parameters.
#[derive(Debug)]
pub struct ApiPath<T>(pub T);

impl<S: Send + Sync, T: PathParams> FromRequestParts<S> for ApiPath<T> {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, ApiError> {
        match Path::<T>::from_request_parts(parts, state).await {
            Ok(Path(value)) => Ok(ApiPath(value)),
            Err(PathRejection::FailedToDeserializePathParams(e)) => Err(match e.kind() {
                axum::extract::path::ErrorKind::InvalidUtf8InPathParam { .. } => {
                    ApiError::invalid_path()
                }
                _ => ApiError::not_found(T::WHAT),
            }),
            Err(other) => Err(ApiError::internal(&other)),
        }
    }
}

/// A route's typed query.
#[derive(Debug)]
pub struct ApiQuery<T>(pub T);

impl<S: Send + Sync, T: DeserializeOwned> FromRequestParts<S> for ApiQuery<T> {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, ApiError> {
        Query::<T>::from_request_parts(parts, state)
            .await
            .map(|Query(q)| ApiQuery(q))
            .map_err(|e: QueryRejection| ApiError::bad_request("invalid_query", e.body_text()))
    }
}

/// A state that knows the body bounds of its routes.
pub trait BodyLimited {
    fn body_limits(&self) -> &BodyLimits;
}

/// A JSON body, and the code of its refusal when a field breaks a rule (`invalid_target`).
pub trait JsonBody: DeserializeOwned + Send {
    const INVALID: &'static str;
}

/// A route's typed JSON body, read within bounds. An empty body reads as `{}`.
#[derive(Debug)]
pub struct ApiJson<T>(pub T);

impl<S: BodyLimited + Send + Sync, T: JsonBody> FromRequest<S> for ApiJson<T> {
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &S) -> Result<Self, ApiError> {
        let (parts, body) = req.into_parts();
        let bytes = crate::body::read(body, &parts.headers, state.body_limits()).await?;
        match decode_json(&bytes) {
            Ok(value) => Ok(ApiJson(value)),
            Err(JsonError::Invalid(m)) => Err(ApiError::bad_request(T::INVALID, m)),
            Err(other) => Err(other.into()),
        }
    }
}
