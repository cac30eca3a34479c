//! Transformations: a jq program a target runs on each delivery before it is sent, and what
//! its output may change.
//!
//! The program gets `{"type", "body", "headers", "url", "method"}`: the event's type, its body
//! (JSON when it is JSON, else its text), the headers the delivery would carry that a program
//! may change (the target's custom headers, the content type, and the ingest headers the
//! tenant keeps), the target's URL and `POST`. It answers the same shape, or
//! `{"cancel": true}` to send nothing. Whether it compiles is checked by the sandbox that runs
//! it ([`crate::sandbox`] is not below this module: the API asks it), so here a program is
//! text within bounds.
//!
//! What a program's output may ask for is [`super::shaped`]'s.

use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use super::invalid::Invalid;

/// Longest program (bytes).
pub const MAX_PROGRAM_BYTES: usize = 16 * 1024;

/// A jq program's text: 1 to 16,384 bytes, no NUL.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(transparent)]
pub struct JqProgram(String);

impl JqProgram {
    pub fn parse(text: &str) -> Result<JqProgram, Invalid> {
        if text.trim().is_empty() || text.len() > MAX_PROGRAM_BYTES || text.contains('\0') {
            return Err(Invalid::new(format!(
                "must be a jq program of 1 to {MAX_PROGRAM_BYTES} bytes without NUL"
            )));
        }
        Ok(JqProgram(text.to_owned()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl<'de> Deserialize<'de> for JqProgram {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<JqProgram, D::Error> {
        JqProgram::parse(&String::deserialize(d)?).map_err(serde::de::Error::custom)
    }
}

impl utoipa::PartialSchema for JqProgram {
    fn schema() -> utoipa::openapi::RefOr<utoipa::openapi::schema::Schema> {
        super::schema::string_schema(
            r"^[^\u0000]*\S[^\u0000]*$",
            1,
            MAX_PROGRAM_BYTES,
            "A jq program (jaq's dialect, without effects: no env, input, clock or halt).",
        )
    }
}

impl ToSchema for JqProgram {
    fn name() -> std::borrow::Cow<'static, str> {
        "JqProgram".into()
    }
}

/// A target's transformation.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct TargetTransform {
    pub program: JqProgram,
    /// Off keeps the program (and its versions) without running it.
    #[serde(default = "yes")]
    #[schema(default = true)]
    pub enabled: bool,
}

fn yes() -> bool {
    true
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn programs_are_bounded_text() {
        assert!(JqProgram::parse(".").is_ok());
        assert!(JqProgram::parse("  ").is_err());
        assert!(JqProgram::parse("a\0b").is_err());
        assert!(JqProgram::parse(&".".repeat(MAX_PROGRAM_BYTES + 1)).is_err());
    }
}
