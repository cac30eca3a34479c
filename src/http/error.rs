//! The one mapping from failures to the contract's HTTP errors:
//! `{"error": {"code": "<snake_case>", "message": "<sentence>"}}` with a fitting status.
//!
//! Client errors (4xx) are not logged above debug. Server errors (5xx) log their cause chain
//! here and answer with a generic sentence, so nothing internal leaks to the caller: a fault
//! of the gateway (a record it cannot read, a script answer it does not understand, a stopped
//! batcher) is a 500, Redis out of reach is a 503, and only the caller's own input is a 4xx.
//!
//! The response sets at the end ([`ReadErrors`], [`WriteErrors`], …) document these statuses
//! in the OpenAPI description, one set per kind of route.

use std::sync::Arc;
use std::time::Duration;

use axum::response::{IntoResponse, Response};
use bytes::Bytes;
use http::header::{CONTENT_TYPE, HeaderValue, RETRY_AFTER, WWW_AUTHENTICATE};
use http::{HeaderMap, StatusCode};
use serde::Serialize;

use crate::auth::AuthError;
use crate::history::HistoryError;
use crate::http::body::{BodyError, JsonError};
use crate::log_store::LogStoreError;
use crate::model::Invalid;
use crate::model::catalogue::SchemaError;
use crate::monitors::state::{SignalError, WatchError};
use crate::queue::QueueError;
use crate::store::StoreError;
use crate::telemetry::{ErrorChain, current_request_id};

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
    /// What a schema found wrong (`422 schema_mismatch`), in the error's `errors`.
    pub errors: Option<Vec<SchemaError>>,
}

/// The body of every error answer.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct ErrorBody {
    pub error: ErrorDetail,
}

/// What went wrong.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct ErrorDetail {
    /// Stable, machine-readable: `invalid_target`, `not_found`, `rate_limited`, …
    pub code: String,
    /// A sentence for people.
    pub message: String,
    /// `schema_mismatch` only: what the schema found wrong, at most 10, each with the JSON
    /// pointer into the body.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub errors: Option<Vec<SchemaError>>,
}

#[derive(Serialize)]
struct Envelope<'a> {
    error: Inner<'a>,
}

#[derive(Serialize)]
struct Inner<'a> {
    code: &'a str,
    message: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    errors: Option<&'a [SchemaError]>,
}

impl ApiError {
    pub fn new(status: StatusCode, code: &'static str, message: impl Into<String>) -> ApiError {
        ApiError {
            status,
            code,
            message: message.into(),
            retry_after: None,
            close: false,
            errors: None,
        }
    }

    pub fn bad_request(code: &'static str, message: impl Into<String>) -> ApiError {
        ApiError::new(StatusCode::BAD_REQUEST, code, message)
    }

    /// Input that breaks a rule: the message names the field at fault.
    pub fn invalid(code: &'static str, e: &Invalid) -> ApiError {
        ApiError::bad_request(code, e.to_string())
    }

    /// A path that is not valid UTF-8 once percent-decoded.
    pub fn invalid_path() -> ApiError {
        ApiError::bad_request(
            "invalid_path",
            "the path is not valid UTF-8 once percent-decoded",
        )
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
        ApiError::fault()
    }

    /// The 500 of a fault whose cause was logged where it happened.
    pub fn fault() -> ApiError {
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

    /// A failed lookup through a cache, whose loads share one error (`what` names it in logs).
    pub fn from_shared_store(e: &Arc<StoreError>, what: &str) -> ApiError {
        match &**e {
            StoreError::Redis(cause) => {
                crate::telemetry::redis_error("store");
                tracing::warn!(request_id = %current_request_id(), error = %cause, "{what} failed");
                ApiError::unavailable("the store is unreachable; retry shortly")
            }
            other => ApiError::internal(other),
        }
    }

    /// The JSON body.
    pub fn body(&self) -> Bytes {
        let envelope = Envelope {
            error: Inner {
                code: self.code,
                message: &self.message,
                errors: self.errors.as_deref(),
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

impl From<AuthError> for ApiError {
    fn from(e: AuthError) -> ApiError {
        match e {
            AuthError::Missing => ApiError::unauthorized(
                "missing_token",
                "send the token as `Authorization: Bearer <token>`",
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
            AuthError::Store(cause) => ApiError::from_shared_store(&cause, "token lookup"),
        }
    }
}

impl From<StoreError> for ApiError {
    fn from(e: StoreError) -> ApiError {
        match e {
            StoreError::NotFound(what) => ApiError::not_found(what),
            StoreError::Conflict(m) => ApiError::conflict(m),
            StoreError::Invalid(ref i) => ApiError::invalid("invalid", i),
            StoreError::Range(r) => ApiError::bad_request("invalid_range", r.to_string()),
            StoreError::Redis(ref cause) => {
                crate::telemetry::redis_error("store");
                tracing::warn!(request_id = %current_request_id(), error = %cause, "store command failed");
                ApiError::unavailable("the store is unreachable; retry shortly")
            }
            StoreError::Crypto(_)
            | StoreError::Corrupt { .. }
            | StoreError::Encode(_)
            | StoreError::Reply(_)
            | StoreError::Refused(_) => ApiError::internal(&e),
        }
    }
}

impl From<LogStoreError> for ApiError {
    fn from(e: LogStoreError) -> ApiError {
        match e {
            LogStoreError::Postgres(_) | LogStoreError::Pool(_) => {
                tracing::warn!(request_id = %current_request_id(), error = %e, "log store query failed");
                ApiError::new(
                    StatusCode::SERVICE_UNAVAILABLE,
                    "log_store_unavailable",
                    "the log store is unreachable; recent events are still readable, retry shortly for older ones",
                )
            }
            LogStoreError::Url(_)
            | LogStoreError::Tls(_)
            | LogStoreError::Build(_)
            | LogStoreError::Migrate(_)
            | LogStoreError::Data(_) => ApiError::internal(&e),
        }
    }
}

impl From<HistoryError> for ApiError {
    fn from(e: HistoryError) -> ApiError {
        match e {
            HistoryError::Store(e) => e.into(),
            HistoryError::Log(e) => e.into(),
            HistoryError::Redis(cause) => StoreError::Redis(cause).into(),
        }
    }
}

impl From<WatchError> for ApiError {
    fn from(e: WatchError) -> ApiError {
        match e {
            WatchError::Redis(ref cause) => {
                crate::telemetry::redis_error("watch");
                tracing::warn!(request_id = %current_request_id(), error = %cause, "monitor state command failed");
                ApiError::unavailable("the monitor store is unreachable; retry shortly")
            }
            WatchError::Overloaded => {
                ApiError::unavailable("too many signals are waiting for Redis; retry shortly")
            }
            WatchError::Timeout => {
                crate::telemetry::redis_error("watch");
                ApiError::unavailable("the monitor store did not answer in time; retry shortly")
            }
            WatchError::Stopped => ApiError::new(
                StatusCode::SERVICE_UNAVAILABLE,
                "shutting_down",
                "the gateway is shutting down; retry on another instance",
            ),
            WatchError::Reply(_) => ApiError::internal(&e),
        }
    }
}

impl From<SignalError<StoreError>> for ApiError {
    fn from(e: SignalError<StoreError>) -> ApiError {
        match e {
            SignalError::Watch(w) => w.into(),
            SignalError::Store(s) => s.into(),
        }
    }
}

/// The answer to a write that was sent and not confirmed: a timed-out write can still land.
pub const MAY_HAVE_LANDED: &str = "the event queue did not confirm the write in time; the event may have been accepted. \
     Retrying with the same Idempotency-Key is safe (it answers the first event if that one landed); \
     a retry without one may store the event twice";

impl From<QueueError> for ApiError {
    fn from(e: QueueError) -> ApiError {
        match e {
            QueueError::IdempotencyConflict => ApiError::new(
                StatusCode::CONFLICT,
                "idempotency_key_reused",
                "this Idempotency-Key was used in the last 24 h for a different request",
            ),
            QueueError::Unconfirmed(_) => {
                crate::telemetry::redis_error("enqueue");
                tracing::warn!(request_id = %current_request_id(), error = %e, "enqueue unconfirmed");
                ApiError::unavailable(MAY_HAVE_LANDED)
            }
            QueueError::Refused(_) | QueueError::Timeout | QueueError::Overloaded => {
                crate::telemetry::redis_error("enqueue");
                tracing::warn!(request_id = %current_request_id(), error = %e, "enqueue failed");
                ApiError::unavailable(
                    "the event queue did not take the event; it was not accepted, retry shortly",
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
            JsonError::Syntax(m) => ApiError::bad_request("invalid_body", m),
            JsonError::Invalid(m) => ApiError::bad_request("invalid_body", m),
        }
    }
}

/// Documents one error status of [`ErrorBody`].
macro_rules! error_responses {
    ($(#[$doc:meta])* $name:ident { $($variant:ident = $status:literal: $desc:literal $(, headers($($h:tt)*))?;)* }) => {
        $(#[$doc])*
        #[derive(Debug, utoipa::IntoResponses)]
        #[allow(dead_code)]
        pub enum $name {
            $(
                #[response(status = $status, description = $desc, content_type = "application/json" $(, headers($($h)*))?)]
                $variant(ErrorBody),
            )*
        }
    };
}

error_responses!(
    /// Errors of a route that reads.
    ReadErrors {
        BadRequest = 400: "The path or the query is malformed.";
        Unauthorized = 401: "Missing or invalid credentials.", headers(("WWW-Authenticate" = String, description = "`Bearer`"));
        Forbidden = 403: "The tenant is disabled.";
        NotFound = 404: "No such resource.";
        Internal = 500: "A fault of the gateway; the request id identifies it in the logs.";
        Unavailable = 503: "Redis is unreachable, or the gateway is shutting down.", headers(("Retry-After" = u64, description = "Seconds to wait"));
    }
);

error_responses!(
    /// Errors of a route that takes a JSON body.
    WriteErrors {
        BadRequest = 400: "The body, the path or the query breaks a rule; the message names the field.";
        Unauthorized = 401: "Missing or invalid credentials.", headers(("WWW-Authenticate" = String, description = "`Bearer`"));
        Forbidden = 403: "The tenant is disabled.";
        NotFound = 404: "No such resource.";
        Timeout = 408: "The body arrived too slowly.";
        Conflict = 409: "The change conflicts with the stored state (taken, or changed meanwhile).";
        TooLarge = 413: "The body is too large.";
        Internal = 500: "A fault of the gateway; the request id identifies it in the logs.";
        Unavailable = 503: "Redis is unreachable, or the gateway is shutting down.", headers(("Retry-After" = u64, description = "Seconds to wait"));
    }
);

error_responses!(
    /// Errors of `POST /v1/events/{event_type}`.
    IngestErrors {
        BadRequest = 400: "Invalid event type, Idempotency-Key or body.";
        Unauthorized = 401: "Missing or invalid tenant token.", headers(("WWW-Authenticate" = String, description = "`Bearer`"));
        Forbidden = 403: "The tenant is disabled.";
        Timeout = 408: "The body arrived too slowly.";
        Conflict = 409: "The Idempotency-Key was used in the last 24 h for a different request.";
        TooLarge = 413: "The body is larger than `edge.max_body_bytes`.";
        Unprocessable = 422: "The tenant's catalogue is enforced, and the event type is not in it or is archived (`unknown_event_type`), the schema version named does not exist (`unknown_schema_version`), or the body does not follow the schema (`schema_mismatch`, with up to 10 `errors`, each a JSON `pointer` into the body and a `message`).";
        RateLimited = 429: "The tenant is over its rate limit.", headers(("Retry-After" = u64, description = "Seconds to wait"));
        Internal = 500: "A fault of the gateway; the request id identifies it in the logs.";
        Unavailable = 503: "The event queue did not take or confirm the write. The event may have been accepted all the same (a timed-out write can still land): a retry with the same `Idempotency-Key` is always safe.", headers(("Retry-After" = u64, description = "Seconds to wait"));
    }
);

error_responses!(
    /// Errors of `POST /v1/hooks/{source_token}`.
    HookErrors {
        BadRequest = 400: "No valid event type where the source says to find it, or a malformed path or body.";
        Unauthorized = 401: "The sender's signature could not be verified.", headers(("WWW-Authenticate" = String, description = "`Bearer`"));
        Forbidden = 403: "The tenant is disabled.";
        NotFound = 404: "No source has this token.";
        Timeout = 408: "The body arrived too slowly.";
        Conflict = 409: "The sender's delivery id was used for a different request.";
        TooLarge = 413: "The body is larger than `edge.max_body_bytes`.";
        Unprocessable = 422: "The tenant's catalogue is enforced and the event breaks it (see `post_event`).";
        RateLimited = 429: "The tenant is over its rate limit.", headers(("Retry-After" = u64, description = "Seconds to wait"));
        Internal = 500: "A fault of the gateway; the request id identifies it in the logs.";
        Unavailable = 503: "The event queue did not take or confirm the write. The event may have been accepted all the same (a timed-out write can still land): a retry with the same `Idempotency-Key` is always safe.", headers(("Retry-After" = u64, description = "Seconds to wait"));
    }
);

error_responses!(
    /// Errors of a monitor's status push.
    PushErrors {
        BadRequest = 400: "The body is not a valid status push, or the path is malformed.";
        Unauthorized = 401: "A missing or wrong signature (monitor with a secret), or an invalid tenant token.", headers(("WWW-Authenticate" = String, description = "`Bearer`"));
        Forbidden = 403: "The tenant is disabled.";
        NotFound = 404: "No monitor has this token (or, with a tenant token, this id).";
        Timeout = 408: "The body arrived too slowly.";
        TooLarge = 413: "The body is too large.";
        RateLimited = 429: "The tenant is over its rate limit.", headers(("Retry-After" = u64, description = "Seconds to wait"));
        Unprocessable = 422: "The monitor's status map failed on the pushed document, or its output is not a status (`status_map_failed`).";
        Internal = 500: "A fault of the gateway; the request id identifies it in the logs.";
        Unavailable = 503: "Redis is unreachable, or the gateway is shutting down.", headers(("Retry-After" = u64, description = "Seconds to wait"));
    }
);

error_responses!(
    /// Errors of a heartbeat or a job signal.
    SignalErrors {
        BadRequest = 400: "The signal is not `start`, `fail` or an exit code, or the path is malformed.";
        Unauthorized = 401: "An invalid tenant token.", headers(("WWW-Authenticate" = String, description = "`Bearer`"));
        Forbidden = 403: "The tenant is disabled.";
        NotFound = 404: "No monitor has this token (or, with a tenant token, this id).";
        RateLimited = 429: "The tenant is over its rate limit.", headers(("Retry-After" = u64, description = "Seconds to wait"));
        Internal = 500: "A fault of the gateway; the request id identifies it in the logs.";
        Unavailable = 503: "Redis is unreachable, or the gateway is shutting down.", headers(("Retry-After" = u64, description = "Seconds to wait"));
    }
);

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
    fn faults_of_the_gateway_are_5xx_and_input_is_4xx() {
        assert_eq!(
            ApiError::from(AuthError::Missing).status,
            StatusCode::UNAUTHORIZED
        );
        assert_eq!(
            ApiError::from(AuthError::Disabled).status,
            StatusCode::FORBIDDEN
        );
        let corrupt = StoreError::Corrupt {
            key: "k".into(),
            reason: "r".into(),
        };
        assert_eq!(
            ApiError::from(corrupt).status,
            StatusCode::INTERNAL_SERVER_ERROR
        );
        let reply = StoreError::Reply("script x answered y".into());
        assert_eq!(
            ApiError::from(reply).status,
            StatusCode::INTERNAL_SERVER_ERROR
        );
        assert_eq!(
            ApiError::from(WatchError::Stopped).status,
            StatusCode::SERVICE_UNAVAILABLE
        );
        assert_eq!(
            ApiError::from(WatchError::Reply("x".into())).status,
            StatusCode::INTERNAL_SERVER_ERROR
        );
        let range = ApiError::from(StoreError::Range(crate::store::RangeError::TooLong));
        assert_eq!(
            (range.status, range.code),
            (StatusCode::BAD_REQUEST, "invalid_range")
        );
        let invalid = StoreError::Invalid(Invalid::at("url", "is bad"));
        let e = ApiError::from(invalid);
        assert_eq!(
            (e.status, e.message.as_str()),
            (StatusCode::BAD_REQUEST, "url is bad")
        );
    }
}
