//! Failures of the store, each mapped to one HTTP status by [`crate::http::error`]: a missing record
//! or a conflict is the caller's, a change that breaks a rule is the caller's input, Redis out
//! of reach is a 503, and anything else (a record this version cannot read, a script answer it
//! does not understand) is a fault of the gateway.

use crate::crypto::CryptoError;
use crate::model::Invalid;
use crate::redis::scripts::ScriptError;

/// Failures of the store, each mapped to one HTTP status by [`crate::http::error`].
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("{0} not found")]
    NotFound(&'static str),
    #[error("{0}")]
    Conflict(String),
    /// A change that breaks a rule once applied to the stored record (a patch).
    #[error(transparent)]
    Invalid(#[from] Invalid),
    /// A time range a read refuses.
    #[error(transparent)]
    Range(#[from] RangeError),
    #[error("redis: {0}")]
    Redis(#[from] fred::error::Error),
    #[error(transparent)]
    Crypto(#[from] CryptoError),
    #[error("stored record {key} is corrupt: {reason}")]
    Corrupt { key: String, reason: String },
    #[error("cannot encode a record: {0}")]
    Encode(#[from] serde_json::Error),
    /// A script answered something this version does not understand.
    #[error("{0}")]
    Reply(String),
    /// Redis refused to write a record for what its keys hold (a key of another type): the
    /// same write can never succeed.
    #[error("redis refused the record: {0}")]
    Refused(String),
}

impl StoreError {
    /// Whether Redis refused the command for what the records it touched hold (see
    /// [`crate::redis::connection::is_data_fault`]): the same command can never succeed.
    pub fn is_data_fault(&self) -> bool {
        match self {
            StoreError::Redis(e) => crate::redis::connection::is_data_fault(e),
            StoreError::Refused(_) => true,
            _ => false,
        }
    }
}

/// A time range a read refuses (see [`crate::store::series`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum RangeError {
    #[error("the range ends before it starts")]
    Reversed,
    #[error("the range spans more than 48 hours")]
    TooLong,
}

impl From<ScriptError> for StoreError {
    fn from(e: ScriptError) -> StoreError {
        match e {
            ScriptError::Redis(e) => StoreError::Redis(e),
            other @ ScriptError::Answer { .. } => StoreError::Reply(other.to_string()),
        }
    }
}

/// An answer a script should never give.
pub(crate) fn unexpected(script: &str, status: &str) -> StoreError {
    StoreError::Reply(format!("script {script} answered {status:?}"))
}
