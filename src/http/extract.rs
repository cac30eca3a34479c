//! Request extractors of the HTTP APIs that refuse with the contract's errors: a typed path
//! ([`ApiPath`]), a typed query ([`ApiQuery`]) and a typed JSON body read within the
//! listener's bounds ([`ApiJson`]). axum's own extractors answer `text/plain`; these answer
//! `{"error": …}`, name the field at fault, and never turn a bad id into a Redis key.

pub mod client;
use axum::extract::rejection::PathRejection;
use axum::extract::{FromRequest, FromRequestParts, Path, Request};
use http::request::Parts;
use serde::de::DeserializeOwned;

use crate::http::body::{BodyLimits, JsonError, decode_json};
use crate::http::error::ApiError;

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

    async fn from_request_parts(parts: &mut Parts, _: &S) -> Result<Self, ApiError> {
        decode_query(parts.uri.query().unwrap_or_default()).map(ApiQuery)
    }
}

/// A query string decoded and refused as [`ApiQuery`] does: the pages' filters decode
/// through here too, so a page and a request obey one set of rules and messages.
pub fn decode_query<T: DeserializeOwned>(query: &str) -> Result<T, ApiError> {
    serde_urlencoded::from_str(query).map_err(|e| {
        ApiError::bad_request(
            "invalid_query",
            format!("Failed to deserialize query string: {e}"),
        )
    })
}

/// A state that knows the body bounds of its routes.
pub trait BodyLimited {
    fn body_limits(&self) -> &BodyLimits;
}

/// A JSON body, and the code of its refusal when a field breaks a rule (`invalid_target`).
pub trait JsonBody: DeserializeOwned + Send {
    const INVALID: &'static str;
    /// A larger bound than the listener's for this body (bytes): documents that are big by
    /// nature (JSON Schemas, an OpenAPI document to import).
    const MAX_BYTES: Option<u64> = None;
}

/// A route's typed JSON body, read within bounds. An empty body reads as `{}`.
#[derive(Debug)]
pub struct ApiJson<T>(pub T);

impl<S: BodyLimited + Send + Sync, T: JsonBody> FromRequest<S> for ApiJson<T> {
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &S) -> Result<Self, ApiError> {
        let (parts, body) = req.into_parts();
        let mut limits = *state.body_limits();
        if let Some(max) = T::MAX_BYTES {
            limits.max_bytes = limits.max_bytes.max(max);
        }
        let bytes = crate::http::body::read(body, &parts.headers, &limits).await?;
        decode_body(&bytes).map(ApiJson)
    }
}

/// A JSON body already read, decoded and refused as [`ApiJson`] does: the pages' forms
/// decode through here too, so a form and a request obey one set of rules and messages.
pub fn decode_body<T: JsonBody>(bytes: &[u8]) -> Result<T, ApiError> {
    match decode_json(bytes) {
        Ok(value) => Ok(value),
        Err(JsonError::Invalid(m)) => Err(ApiError::bad_request(T::INVALID, m)),
        Err(other) => Err(other.into()),
    }
}
