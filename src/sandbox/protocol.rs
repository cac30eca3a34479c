//! What the gateway and a worker process say to each other: one request, one answer, each a
//! JSON document behind its length (4 bytes, big-endian).

use serde::{Deserialize, Serialize};
use serde_json::Value;

/// Largest frame either side reads (bytes).
pub const MAX_FRAME: usize = 64 * 1024 * 1024;

/// Compile `program` and, with an `input`, run it on it.
#[derive(Debug, Serialize, Deserialize)]
pub struct Request {
    pub program: String,
    /// Absent for a compile-only request; `null` is an input like any other.
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        deserialize_with = "present"
    )]
    pub input: Option<Value>,
}

fn present<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Option<Value>, D::Error> {
    Value::deserialize(d).map(Some)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_null_input_is_not_a_compile_only_request() {
        for input in [
            None,
            Some(Value::Null),
            Some(serde_json::json!([0, "\u{0}\u{ff}"])),
        ] {
            let frame = serde_json::to_vec(&Request {
                program: ".".into(),
                input: input.clone(),
            })
            .unwrap_or_default();
            let back: Result<Request, _> = serde_json::from_slice(&frame);
            assert_eq!(back.ok().and_then(|r| r.input), input);
        }
    }
}

/// A worker's answer. The gateway reads the output as a value; the worker writes it already
/// serialized (`Answer<Box<RawValue>>`), as it was measured against the output cap.
#[derive(Debug, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Answer<V = Value> {
    /// The program's first output (`null` for a compile-only request).
    Ok(V),
    /// The program does not compile.
    Invalid(String),
    /// The program failed on this input.
    Error(String),
}
