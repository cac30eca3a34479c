//! A configuration secret: a literal, or `env:NAME` read from the environment at load time.
//!
//! The value never leaves this type by `Debug` or `Serialize`: both print where the secret comes
//! from (`env:NAME`) or `[redacted]`, so `check-config` and logs can show a config safely.

use std::fmt;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// Shortest accepted admin token and config-declared tenant token.
pub const MIN_SECRET_TOKEN_LEN: usize = 24;

/// Where a secret's value was read from.
#[derive(Clone, PartialEq, Eq)]
pub enum SecretSource {
    /// Written in the file (or an `ESTAFETA_*` override) as is.
    Literal,
    /// Read from the named environment variable.
    Env(String),
}

/// A secret string from the config. Compare it with [`Secret::expose`] only where needed.
#[derive(Clone)]
pub struct Secret {
    value: String,
    source: SecretSource,
}

/// Why a secret could not be read.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SecretError {
    #[error("`env:` needs a variable name, as in `env:ESTAFETA_ADMIN_TOKEN`")]
    NoName,
    #[error("environment variable {0} is empty")]
    Empty(String),
    #[error("environment variable {0} is not set")]
    Unset(String),
}

impl Secret {
    /// The secret's value. Callers must not log it.
    pub fn expose(&self) -> &str {
        &self.value
    }

    /// Whether the value was written literally in the config rather than taken from the environment.
    pub fn is_literal(&self) -> bool {
        self.source == SecretSource::Literal
    }

    /// Resolves `env:NAME` indirection; anything else is a literal.
    pub fn resolve(raw: &str) -> Result<Self, SecretError> {
        match raw.strip_prefix("env:") {
            Some("") => Err(SecretError::NoName),
            Some(name) => match std::env::var(name) {
                Ok(value) if !value.is_empty() => Ok(Secret {
                    value,
                    source: SecretSource::Env(name.to_owned()),
                }),
                Ok(_) => Err(SecretError::Empty(name.to_owned())),
                Err(_) => Err(SecretError::Unset(name.to_owned())),
            },
            None => Ok(Secret {
                value: raw.to_owned(),
                source: SecretSource::Literal,
            }),
        }
    }

    /// A literal secret, for code that builds configs (tests, benches).
    pub fn literal(value: impl Into<String>) -> Self {
        Secret {
            value: value.into(),
            source: SecretSource::Literal,
        }
    }

    fn describe(&self) -> String {
        match &self.source {
            SecretSource::Literal => "[redacted]".to_owned(),
            SecretSource::Env(name) => format!("env:{name}"),
        }
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Secret({})", self.describe())
    }
}

impl Serialize for Secret {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(&self.describe())
    }
}

impl<'de> Deserialize<'de> for Secret {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let raw = String::deserialize(deserializer)?;
        Secret::resolve(&raw).map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn literal_is_redacted_in_debug_and_serialize() -> anyhow::Result<()> {
        let s = Secret::resolve("hunter2-very-secret")?;
        assert_eq!(s.expose(), "hunter2-very-secret");
        assert!(s.is_literal());
        assert!(!format!("{s:?}").contains("hunter2"));
        assert_eq!(serde_json::to_string(&s)?, "\"[redacted]\"");
        Ok(())
    }

    #[test]
    fn env_indirection_names_the_variable_not_the_value() -> anyhow::Result<()> {
        // PATH is set in every test environment; its value must not leak through Debug.
        let s = Secret::resolve("env:PATH")?;
        assert!(!s.is_literal());
        assert_eq!(serde_json::to_string(&s)?, "\"env:PATH\"");
        assert!(!format!("{s:?}").contains(s.expose()));
        Ok(())
    }

    #[test]
    fn missing_variable_is_an_error_naming_it() {
        let err = Secret::resolve("env:ESTAFETA_SURELY_NOT_SET_123").err();
        assert!(err.is_some_and(|e| e.to_string().contains("ESTAFETA_SURELY_NOT_SET_123")));
        assert_eq!(Secret::resolve("env:").err(), Some(SecretError::NoName));
    }
}
