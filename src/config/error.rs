//! A configuration that cannot be used, with the key at fault.

use std::path::PathBuf;

use crate::model::Invalid;

/// A configuration that cannot be used, with the key at fault in its message.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("config file {0} not found")]
    NotFound(PathBuf),
    #[error("{0}")]
    Parse(String),
    #[error("{key}: {message}")]
    Invalid { key: String, message: String },
}

pub(super) fn invalid(key: &str, message: impl Into<String>) -> ConfigError {
    ConfigError::Invalid {
        key: key.to_owned(),
        message: message.into(),
    }
}

/// A rule broken at `key` (the rule's own path, if any, below it).
pub(super) fn broken(key: &str, e: Invalid) -> ConfigError {
    let e = e.within(key);
    ConfigError::Invalid {
        key: e.path,
        message: e.message,
    }
}
