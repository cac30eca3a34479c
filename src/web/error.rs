//! Why a page could not be served; [`crate::web::layout`] renders each as its answer.

use http::StatusCode;

use super::face::Ui;

/// Why a page could not be served. Each maps to a status and an HTML page (or, signed out,
/// to the sign-in page).
#[derive(Debug, thiserror::Error)]
pub enum WebError {
    /// The API refused or failed; its status and message are shown.
    #[error("{message}")]
    Api {
        status: StatusCode,
        code: String,
        message: String,
    },
    /// No live session: go and sign in.
    #[error("sign in first")]
    SignedOut(Ui),
    /// A state-changing form without this session's CSRF token.
    #[error("this form has expired or did not come from this site; reload the page and try again")]
    Csrf,
    #[error("{0}")]
    BadRequest(String),
    #[error("{0} not found")]
    NotFound(&'static str),
    #[error("the queue is unreachable: {0}")]
    Redis(#[from] fred::error::Error),
    #[error("{0}")]
    Internal(String),
    /// Too many failed sign-ins from this address or with this credential.
    #[error("too many failed sign-ins; try again in {retry_after_s} s")]
    Throttled { retry_after_s: u64 },
}

impl WebError {
    pub fn internal(e: impl std::fmt::Display) -> WebError {
        WebError::Internal(e.to_string())
    }

    pub fn status(&self) -> StatusCode {
        match self {
            WebError::Api { status, .. } => *status,
            WebError::SignedOut(_) => StatusCode::UNAUTHORIZED,
            WebError::Csrf => StatusCode::FORBIDDEN,
            WebError::BadRequest(_) => StatusCode::BAD_REQUEST,
            WebError::NotFound(_) => StatusCode::NOT_FOUND,
            WebError::Redis(_) => StatusCode::SERVICE_UNAVAILABLE,
            WebError::Internal(_) => StatusCode::INTERNAL_SERVER_ERROR,
            WebError::Throttled { .. } => StatusCode::TOO_MANY_REQUESTS,
        }
    }
}

impl From<crate::store::StoreError> for WebError {
    fn from(e: crate::store::StoreError) -> WebError {
        match e {
            crate::store::StoreError::Redis(e) => WebError::Redis(e),
            other => WebError::internal(other),
        }
    }
}

impl From<crate::crypto::CryptoError> for WebError {
    fn from(e: crate::crypto::CryptoError) -> WebError {
        WebError::internal(e)
    }
}

/// A typed API operation's refusal, shown like the in-process API's.
impl From<crate::http::error::ApiError> for WebError {
    fn from(e: crate::http::error::ApiError) -> WebError {
        WebError::Api {
            status: e.status,
            code: e.code.to_owned(),
            message: e.message,
        }
    }
}
