//! Pieces of hand-written OpenAPI schemas, for the types whose rules a derive cannot state.

use utoipa::openapi::RefOr;
use utoipa::openapi::schema::{ObjectBuilder, OneOfBuilder, Schema, Type};

/// A string schema with a pattern and length bounds.
pub(crate) fn string_schema(
    pattern: &str,
    min: usize,
    max: usize,
    description: &str,
) -> RefOr<Schema> {
    ObjectBuilder::new()
        .schema_type(Type::String)
        .pattern(Some(pattern))
        .min_length(Some(min))
        .max_length(Some(max))
        .description(Some(description))
        .into()
}

/// `schema` or `null`: what an optional field that may be sent as `null` takes, the same
/// shape utoipa derives for an `Option`.
pub(crate) fn nullable(schema: RefOr<Schema>) -> RefOr<Schema> {
    OneOfBuilder::new()
        .item(ObjectBuilder::new().schema_type(Type::Null))
        .item(schema)
        .into()
}
