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
    #[serde(default)]
    pub input: Option<Value>,
}

/// A worker's answer.
#[derive(Debug, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Answer {
    /// The program's first output (`null` for a compile-only request).
    Ok(Value),
    /// The program does not compile.
    Invalid(String),
    /// The program failed on this input.
    Error(String),
}
