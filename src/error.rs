//! The one mapping from failures to the contract's HTTP errors:
//! `{"error": {"code": "<snake_case>", "message": "<sentence>"}}` with a fitting status.
//!
//! Client errors (4xx) are not logged above debug. Server errors (5xx) log their cause chain
//! here and answer with a generic sentence, so nothing internal leaks to the caller.

use std::time::Duration;

use axum::response::{IntoResponse, Response};
use bytes::Bytes;
use http::header::{CONTENT_TYPE, HeaderValue, RETRY_AFTER, WWW_AUTHENTICATE};
use http::{HeaderMap, StatusCode};
use serde::Serialize;

use crate::auth::AuthError;
use crate::body::{BodyError, JsonError};
use crate::observe::current_request_id;
use crate::queue::QueueError;
use crate::store::StoreError;

/// An error answer of any API.
#[derive(Debug)]
pub struct ApiError {
    /// HTTP status.
    pub status: StatusCode,
    /// Stable machine-readable code.
    pub code: &'static str,
    /// Human sentence.
    pub message: String,
    /// Seconds for `Retry-After` (429, 503).
    pub retry_after: Option<u64>,
    /// Close the connection after answering (the request body was not read to its end).
    pub close: bool,
}

#[derive(Serialize)]
struct Envelope<'a> {
    error: Inner<'a>,
}

#[derive(Serialize)]
struct Inner<'a> {
    code: &'a str,
    message: &'a str,
}

impl ApiError {
    pub fn new(status: StatusCode, code: &'static str, message: impl Into<String>) -> ApiError {
        ApiError {
            status,
            code,
            message: message.into(),
            retry_after: None,
            close: false,
        }
    }

    pub fn bad_request(code: &'static str, message: impl Into<String>) -> ApiError {
        ApiError::new(StatusCode::BAD_REQUEST, code, message)
    }

    pub fn not_found(what: &str) -> ApiError {
        ApiError::new(
            StatusCode::NOT_FOUND,
            "not_found",
            format!("{what} not found"),
        )
    }

    pub fn conflict(message: impl Into<String>) -> ApiError {
        ApiError::new(StatusCode::CONFLICT, "conflict", message)
    }

    pub fn unauthorized(code: &'static str, message: impl Into<String>) -> ApiError {
        ApiError::new(StatusCode::UNAUTHORIZED, code, message)
    }

    /// The queue or store cannot be reached: never a 2xx in that case.
    pub fn unavailable(message: impl Into<String>) -> ApiError {
        ApiError {
            retry_after: Some(1),
            ..ApiError::new(StatusCode::SERVICE_UNAVAILABLE, "unavailable", message)
        }
    }

    /// A server fault: logs `cause` and answers without details.
    pub fn internal(cause: &dyn std::error::Error) -> ApiError {
        tracing::error!(request_id = %current_request_id(), error = %ErrorChain(cause), "internal error");
        ApiError::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            "internal",
            "internal error; the request id identifies it in the logs",
        )
    }

    pub fn rate_limited(wait: Duration) -> ApiError {
        ApiError {
            retry_after: Some(wait.as_secs_f64().ceil().max(1.0) as u64),
            ..ApiError::new(
                StatusCode::TOO_MANY_REQUESTS,
                "rate_limited",
                "rate limit exceeded; retry after the number of seconds in Retry-After",
            )
        }
    }

    pub fn method_not_allowed() -> ApiError {
        ApiError::new(
            StatusCode::METHOD_NOT_ALLOWED,
            "method_not_allowed",
            "method not allowed on this path",
        )
    }

    /// The JSON body.
    pub fn body(&self) -> Bytes {
        let envelope = Envelope {
            error: Inner {
                code: self.code,
                message: &self.message,
            },
        };
        serde_json::to_vec(&envelope)
            .map(Bytes::from)
            .unwrap_or_else(|_| {
                Bytes::from_static(br#"{"error":{"code":"internal","message":"internal error"}}"#)
            })
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        if self.status.is_client_error() {
            tracing::debug!(
                status = self.status.as_u16(),
                code = self.code,
                "client error"
            );
        }
        let mut headers = HeaderMap::new();
        headers.insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
        if self.status == StatusCode::UNAUTHORIZED {
            headers.insert(WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
        }
        if let Some(secs) = self.retry_after {
            headers.insert(RETRY_AFTER, HeaderValue::from(secs));
        }
        if self.close {
            headers.insert(http::header::CONNECTION, HeaderValue::from_static("close"));
        }
        (self.status, headers, self.body()).into_response()
    }
}

/// Displays an error with its sources: `a: b: c`.
#[derive(Debug)]
pub struct ErrorChain<'a>(pub &'a dyn std::error::Error);

impl std::fmt::Display for ErrorChain<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}", self.0)?;
        let mut source = self.0.source();
        while let Some(s) = source {
            write!(f, ": {s}")?;
            source = s.source();
        }
        Ok(())
    }
}

impl From<AuthError> for ApiError {
    fn from(e: AuthError) -> ApiError {
        match e {
            AuthError::Missing => ApiError::unauthorized(
                "missing_token",
                "send the tenant token as `Authorization: Bearer <token>`",
            ),
            AuthError::Malformed => ApiError::unauthorized(
                "malformed_authorization",
                "the Authorization header must be `Bearer <token>`",
            ),
            AuthError::Invalid => {
                ApiError::unauthorized("invalid_token", "the token is unknown or revoked")
            }
            AuthError::Disabled => ApiError::new(
                StatusCode::FORBIDDEN,
                "tenant_disabled",
                "the tenant is disabled",
            ),
            AuthError::Unavailable(cause) => {
                tracing::warn!(request_id = %current_request_id(), error = %ErrorChain(&*cause), "token lookup failed");
                ApiError::unavailable("the token store is unreachable; retry shortly")
            }
        }
    }
}

impl From<StoreError> for ApiError {
    fn from(e: StoreError) -> ApiError {
        match e {
            StoreError::NotFound(what) => ApiError::not_found(what),
            StoreError::Conflict(m) => ApiError::conflict(m),
            StoreError::Invalid(m) => ApiError::bad_request("invalid", m),
            StoreError::Redis(ref cause) => {
                crate::telemetry::redis_error("store");
                tracing::warn!(request_id = %current_request_id(), error = %cause, "store command failed");
                ApiError::unavailable("the store is unreachable; retry shortly")
            }
            StoreError::Crypto(_) | StoreError::Corrupt { .. } => ApiError::internal(&e),
        }
    }
}

impl From<QueueError> for ApiError {
    fn from(e: QueueError) -> ApiError {
        match e {
            QueueError::IdempotencyConflict => ApiError::new(
                StatusCode::CONFLICT,
                "idempotency_key_reused",
                "this Idempotency-Key was used in the last 24 h for a different request",
            ),
            QueueError::Unavailable(_) | QueueError::Timeout | QueueError::Overloaded => {
                crate::telemetry::redis_error("enqueue");
                tracing::warn!(request_id = %current_request_id(), error = %e, "enqueue failed");
                ApiError::unavailable(
                    "the event queue is unreachable; the event was not accepted, retry shortly",
                )
            }
            QueueError::Closed => ApiError::new(
                StatusCode::SERVICE_UNAVAILABLE,
                "shutting_down",
                "the gateway is shutting down; retry on another instance",
            ),
        }
    }
}

impl From<BodyError> for ApiError {
    fn from(e: BodyError) -> ApiError {
        match e {
            BodyError::TooLarge { limit } => ApiError {
                close: true,
                ..ApiError::new(
                    StatusCode::PAYLOAD_TOO_LARGE,
                    "payload_too_large",
                    format!("the body exceeds {limit} bytes"),
                )
            },
            BodyError::Timeout => ApiError {
                close: true,
                ..ApiError::new(
                    StatusCode::REQUEST_TIMEOUT,
                    "body_timeout",
                    "the request body arrived too slowly",
                )
            },
            BodyError::Read(m) => ApiError {
                close: true,
                ..ApiError::bad_request("bad_body", format!("could not read the request body: {m}"))
            },
        }
    }
}

impl From<JsonError> for ApiError {
    fn from(e: JsonError) -> ApiError {
        match e {
            JsonError::Body(b) => b.into(),
            JsonError::Invalid(m) => ApiError::bad_request("invalid_body", m),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn error_body_has_contract_shape() -> anyhow::Result<()> {
        let e = ApiError::bad_request("invalid_event_type", "bad \"type\"");
        let v: serde_json::Value = serde_json::from_slice(&e.body())?;
        assert_eq!(v["error"]["code"], "invalid_event_type");
        assert_eq!(v["error"]["message"], "bad \"type\"");
        Ok(())
    }

    #[test]
    fn rate_limit_rounds_retry_after_up() {
        assert_eq!(
            ApiError::rate_limited(Duration::from_millis(1)).retry_after,
            Some(1)
        );
        assert_eq!(
            ApiError::rate_limited(Duration::from_millis(2100)).retry_after,
            Some(3)
        );
    }

    #[test]
    fn auth_errors_map_to_401_and_403() {
        assert_eq!(
            ApiError::from(AuthError::Missing).status,
            StatusCode::UNAUTHORIZED
        );
        assert_eq!(
            ApiError::from(AuthError::Invalid).status,
            StatusCode::UNAUTHORIZED
        );
        assert_eq!(
            ApiError::from(AuthError::Disabled).status,
            StatusCode::FORBIDDEN
        );
    }
}
