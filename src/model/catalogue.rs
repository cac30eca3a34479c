//! The event catalogue: the event types a tenant declares, who owns each, and the JSON Schemas
//! their bodies follow, by version.
//!
//! A schema is compiled when it is written (the API, the config file, an import), so a type is
//! never saved with a schema that cannot validate; the refusal names the version and the JSON
//! pointer into the schema at fault. Schemas follow JSON Schema draft 7 or 2020-12 (chosen by
//! their `$schema`, 2020-12 without one); `format` is asserted in both, so `"format": "email"`
//! means what its writer expects. A `$ref` reaches only the schema itself: remote and file
//! references are never fetched (the schema crate is built without its resolvers and asked to
//! stay offline), since a schema is tenant input and a fetch would be a server-side request
//! forgery.
//!
//! What a stored schema is compiled into for ingest is [`CompiledSchema`]; what validation
//! found wrong is a list of [`SchemaError`]s, at most [`MAX_ERRORS`].

use std::collections::BTreeMap;
use std::sync::Arc;

use serde::{Deserialize, Serialize};
use serde_json::Value;
use utoipa::ToSchema;

use super::event_type::EventType;
use super::invalid::Invalid;
use super::text::Name;

/// Most schema versions of one event type.
pub const MAX_VERSIONS: usize = 50;
/// Highest version number.
pub const MAX_VERSION: u32 = 999_999;
/// Largest schema, as compact JSON (bytes).
pub const MAX_SCHEMA_BYTES: usize = 64 * 1024;
/// Most event types in one tenant's catalogue (archived ones included).
pub const MAX_TYPES: usize = 2_000;
/// Most errors reported for one body.
pub const MAX_ERRORS: usize = 10;
/// Longest description.
pub const MAX_DESCRIPTION: usize = 2_000;
/// Longest repository URL.
pub const MAX_URL: usize = 2_048;

const DRAFT_7: &str = "http://json-schema.org/draft-07/schema";
const DRAFT_2020_12: &str = "https://json-schema.org/draft/2020-12/schema";

/// One thing found wrong with an event against the catalogue: the JSON pointer into the body
/// (`/amount`; empty for the body as a whole or for its type) and what is wrong there.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct SchemaError {
    pub pointer: String,
    pub message: String,
}

/// A schema as written, with its compiled validator.
#[derive(Clone)]
pub struct CompiledSchema {
    source: Value,
    validator: Arc<jsonschema::Validator>,
}

impl CompiledSchema {
    /// Compiles `source`; the refusal names the JSON pointer into the schema at fault.
    pub fn compile(source: Value) -> Result<CompiledSchema, Invalid> {
        let Value::Object(members) = &source else {
            return Err(Invalid::new("must be a JSON Schema object"));
        };
        if let Some(dialect) = members.get("$schema") {
            let known = dialect
                .as_str()
                .map(|d| d.trim_end_matches('#'))
                .is_some_and(|d| d == DRAFT_7 || d == DRAFT_2020_12);
            if !known {
                return Err(Invalid::new(format!(
                    "$schema must be draft 7 ({DRAFT_7}#) or 2020-12 ({DRAFT_2020_12})"
                )));
            }
        }
        let size = serde_json::to_vec(&source).map(|b| b.len()).unwrap_or(0);
        if size > MAX_SCHEMA_BYTES {
            return Err(Invalid::new(format!(
                "is {size} bytes as JSON; at most {MAX_SCHEMA_BYTES}"
            )));
        }
        let validator = jsonschema::options()
            .offline()
            .should_validate_formats(true)
            .build(&source)
            .map_err(|e| {
                let pointer = e.instance_path().as_str().to_owned();
                let at = if pointer.is_empty() {
                    String::new()
                } else {
                    format!("at {pointer}: ")
                };
                Invalid::new(format!("does not compile: {at}{e}"))
            })?;
        Ok(CompiledSchema {
            source,
            validator: Arc::new(validator),
        })
    }

    /// The schema as written.
    pub fn source(&self) -> &Value {
        &self.source
    }

    /// Whether `body` follows the schema.
    pub fn is_valid(&self, body: &Value) -> bool {
        self.validator.is_valid(body)
    }

    /// What is wrong with `body`, at most [`MAX_ERRORS`] things (none: it follows the schema).
    pub fn errors(&self, body: &Value) -> Vec<SchemaError> {
        self.validator
            .iter_errors(body)
            .take(MAX_ERRORS)
            .map(|e| SchemaError {
                pointer: e.instance_path().as_str().to_owned(),
                message: e.to_string(),
            })
            .collect()
    }
}

impl PartialEq for CompiledSchema {
    fn eq(&self, other: &CompiledSchema) -> bool {
        self.source == other.source
    }
}

impl std::fmt::Debug for CompiledSchema {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "CompiledSchema({})", self.source)
    }
}

impl Serialize for CompiledSchema {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        self.source.serialize(s)
    }
}

impl<'de> Deserialize<'de> for CompiledSchema {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<CompiledSchema, D::Error> {
        CompiledSchema::compile(Value::deserialize(d)?).map_err(serde::de::Error::custom)
    }
}

/// An event type's schemas by version (1 to 999,999; JSON keys are the numbers as text).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Schemas(BTreeMap<u32, CompiledSchema>);

impl Serialize for Schemas {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        use serde::ser::SerializeMap;
        // Keys as text, as JSON and TOML need them.
        let mut map = s.serialize_map(Some(self.0.len()))?;
        for (version, schema) in &self.0 {
            map.serialize_entry(&version.to_string(), schema)?;
        }
        map.end()
    }
}

impl Schemas {
    pub fn new(map: BTreeMap<u32, CompiledSchema>) -> Result<Schemas, Invalid> {
        if map.len() > MAX_VERSIONS {
            return Err(Invalid::new(format!(
                "must hold at most {MAX_VERSIONS} versions"
            )));
        }
        Ok(Schemas(map))
    }

    pub fn get(&self, version: u32) -> Option<&CompiledSchema> {
        self.0.get(&version)
    }

    /// The highest version and its schema.
    pub fn latest(&self) -> Option<(u32, &CompiledSchema)> {
        self.0.iter().next_back().map(|(v, s)| (*v, s))
    }

    pub fn versions(&self) -> impl Iterator<Item = u32> + '_ {
        self.0.keys().copied()
    }

    pub fn iter(&self) -> impl Iterator<Item = (u32, &CompiledSchema)> {
        self.0.iter().map(|(v, s)| (*v, s))
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    pub fn into_map(self) -> BTreeMap<u32, CompiledSchema> {
        self.0
    }
}

/// Reads a version key: a whole number from 1 to [`MAX_VERSION`], written plainly.
pub fn parse_version(text: &str) -> Result<u32, Invalid> {
    let refused = || {
        Invalid::new(format!(
            "schema versions are whole numbers from 1 to {MAX_VERSION}, such as \"1\" (got {text:?})"
        ))
    };
    if text.is_empty() || text.starts_with('0') || !text.bytes().all(|b| b.is_ascii_digit()) {
        return Err(refused());
    }
    text.parse::<u32>()
        .ok()
        .filter(|v| (1..=MAX_VERSION).contains(v))
        .ok_or_else(refused)
}

/// Reads a JSON object of versions, each value read by `each`; a refusal names the version.
fn read_versions<'de, D, T>(
    d: D,
    each: impl Fn(Value) -> Result<T, Invalid>,
) -> Result<BTreeMap<u32, T>, D::Error>
where
    D: serde::Deserializer<'de>,
{
    use serde::de::Error;
    let raw = BTreeMap::<String, Value>::deserialize(d)?;
    let mut map = BTreeMap::new();
    for (key, value) in raw {
        let version = parse_version(&key).map_err(D::Error::custom)?;
        let read =
            each(value).map_err(|e| D::Error::custom(format!("version {key} {}", e.message)))?;
        map.insert(version, read);
    }
    Ok(map)
}

/// The published schema of an object of versions.
fn versions_schema(
    values: utoipa::openapi::RefOr<utoipa::openapi::schema::Schema>,
    max: Option<usize>,
    description: &str,
) -> utoipa::openapi::RefOr<utoipa::openapi::schema::Schema> {
    use utoipa::openapi::schema::{AdditionalProperties, ObjectBuilder, Type};
    ObjectBuilder::new()
        .schema_type(Type::Object)
        .property_names(Some(
            ObjectBuilder::new()
                .schema_type(Type::String)
                .pattern(Some("^[1-9][0-9]{0,5}$")),
        ))
        .additional_properties(Some(AdditionalProperties::RefOr(values)))
        .max_properties(max)
        .description(Some(description))
        .into()
}

impl<'de> Deserialize<'de> for Schemas {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Schemas, D::Error> {
        let map = read_versions(d, CompiledSchema::compile)?;
        Schemas::new(map).map_err(serde::de::Error::custom)
    }
}

impl utoipa::PartialSchema for Schemas {
    fn schema() -> utoipa::openapi::RefOr<utoipa::openapi::schema::Schema> {
        use utoipa::openapi::schema::{ObjectBuilder, Type};
        versions_schema(
            ObjectBuilder::new().schema_type(Type::Object).into(),
            Some(MAX_VERSIONS),
            "JSON Schemas (draft 7 or 2020-12) by version: `{\"1\": {…}, \"2\": {…}}`.",
        )
    }
}

impl ToSchema for Schemas {
    fn name() -> std::borrow::Cow<'static, str> {
        "Schemas".into()
    }
}

/// A description: up to 2,000 characters; line breaks and tabs are the only controls kept.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
#[serde(transparent)]
pub struct Description(String);

impl Description {
    pub fn parse(text: &str) -> Result<Description, Invalid> {
        if text.chars().count() > MAX_DESCRIPTION {
            return Err(Invalid::new(format!(
                "must be at most {MAX_DESCRIPTION} characters"
            )));
        }
        if text
            .chars()
            .any(|c| c.is_control() && c != '\n' && c != '\t')
        {
            return Err(Invalid::new(
                "must not hold control characters other than line breaks and tabs",
            ));
        }
        Ok(Description(text.to_owned()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl<'de> Deserialize<'de> for Description {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Description, D::Error> {
        Description::parse(&String::deserialize(d)?).map_err(serde::de::Error::custom)
    }
}

impl utoipa::PartialSchema for Description {
    fn schema() -> utoipa::openapi::RefOr<utoipa::openapi::schema::Schema> {
        super::schema::string_schema(
            r"^[^\u0000-\u0008\u000B-\u001F\u007F-\u009F]*$",
            0,
            MAX_DESCRIPTION,
            "Free text; line breaks and tabs are the only control characters kept.",
        )
    }
}

impl ToSchema for Description {
    fn name() -> std::borrow::Cow<'static, str> {
        "Description".into()
    }
}

/// A repository URL: `http` or `https`, at most 2,048 characters.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(transparent)]
pub struct RepositoryUrl(String);

impl RepositoryUrl {
    pub fn parse(text: &str) -> Result<RepositoryUrl, Invalid> {
        let ok = text.len() <= MAX_URL
            && url::Url::parse(text)
                .is_ok_and(|u| matches!(u.scheme(), "http" | "https") && u.host().is_some());
        if ok {
            Ok(RepositoryUrl(text.to_owned()))
        } else {
            Err(Invalid::new(format!(
                "must be an http or https URL of at most {MAX_URL} characters"
            )))
        }
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl<'de> Deserialize<'de> for RepositoryUrl {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<RepositoryUrl, D::Error> {
        RepositoryUrl::parse(&String::deserialize(d)?).map_err(serde::de::Error::custom)
    }
}

impl utoipa::PartialSchema for RepositoryUrl {
    fn schema() -> utoipa::openapi::RefOr<utoipa::openapi::schema::Schema> {
        super::schema::string_schema(
            "^[Hh][Tt][Tt][Pp][Ss]?://[^/?#]+",
            8,
            MAX_URL,
            "The owning code's repository (http or https).",
        )
    }
}

impl ToSchema for RepositoryUrl {
    fn name() -> std::borrow::Cow<'static, str> {
        "RepositoryUrl".into()
    }
}

/// Who owns an event type (seed 000: the service that emits it, its repository, its team).
/// Read from a JSON object only (serde would take an array of its fields too).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields, try_from = "OwnerObject")]
pub struct Owner {
    #[serde(default)]
    pub service: Option<Name>,
    #[serde(default)]
    pub team: Option<Name>,
    #[serde(default)]
    pub repository_url: Option<RepositoryUrl>,
}

/// An owner as it arrives: an object, its fields checked by [`Owner`]'s own rules.
#[derive(Deserialize)]
struct OwnerObject(serde_json::Map<String, Value>);

/// The fields of an [`Owner`], read from the object.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct OwnerFields {
    #[serde(default)]
    service: Option<Name>,
    #[serde(default)]
    team: Option<Name>,
    #[serde(default)]
    repository_url: Option<RepositoryUrl>,
}

impl TryFrom<OwnerObject> for Owner {
    type Error = String;
    fn try_from(o: OwnerObject) -> Result<Owner, String> {
        let f: OwnerFields =
            serde_json::from_value(Value::Object(o.0)).map_err(|e| e.to_string())?;
        Ok(Owner {
            service: f.service,
            team: f.team,
            repository_url: f.repository_url,
        })
    }
}

/// An event type as a PUT writes it (or the config file declares it): every field but the
/// name, which is in the path (a `name` in the body must be the path's).
#[derive(Debug, Clone, Default, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct EventTypeSpec {
    /// Must equal the name in the path when given.
    #[serde(default)]
    pub name: Option<EventType>,
    #[serde(default)]
    pub description: Description,
    #[serde(default)]
    pub owner: Owner,
    /// A label that groups types in the catalogue's views (`billing`).
    #[serde(default)]
    pub group: Option<Name>,
    #[serde(default)]
    pub schemas: Schemas,
    /// Still accepted, with a `Deprecation` header on ingest.
    #[serde(default)]
    pub deprecated: bool,
    /// Refused on ingest by an enforcing catalogue; hidden from listings unless asked for.
    #[serde(default)]
    pub archived: bool,
}

/// A change to an event type: absent fields stay; `group: null` removes the group; in
/// `schemas`, a version with a schema adds or replaces it and a version with `null` removes it.
#[derive(Debug, Clone, Default, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct EventTypePatch {
    #[serde(default)]
    pub description: Option<Description>,
    #[serde(default)]
    pub owner: Option<Owner>,
    #[serde(default, deserialize_with = "super::patch::present")]
    pub group: Option<Option<Name>>,
    #[serde(default)]
    pub schemas: Option<SchemaChanges>,
    #[serde(default)]
    pub deprecated: Option<bool>,
    #[serde(default)]
    pub archived: Option<bool>,
}

/// Versions to add, replace (a schema) or remove (`null`).
#[derive(Debug, Clone, Default)]
pub struct SchemaChanges(pub BTreeMap<u32, Option<CompiledSchema>>);

impl SchemaChanges {
    /// Makes these changes to `schemas` (stored schemas by version, already valid).
    pub fn apply(&self, schemas: &mut BTreeMap<u32, Value>) -> Result<(), Invalid> {
        for (version, change) in &self.0 {
            match change {
                Some(s) => {
                    schemas.insert(*version, s.source().clone());
                }
                None => {
                    schemas.remove(version);
                }
            }
        }
        if schemas.len() > MAX_VERSIONS {
            return Err(Invalid::at(
                "schemas",
                format!("must hold at most {MAX_VERSIONS} versions"),
            ));
        }
        Ok(())
    }
}

impl<'de> Deserialize<'de> for SchemaChanges {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<SchemaChanges, D::Error> {
        let map = read_versions(d, |v| match v {
            Value::Null => Ok(None),
            source => CompiledSchema::compile(source).map(Some),
        })?;
        Ok(SchemaChanges(map))
    }
}

impl utoipa::PartialSchema for SchemaChanges {
    fn schema() -> utoipa::openapi::RefOr<utoipa::openapi::schema::Schema> {
        use utoipa::openapi::schema::{ObjectBuilder, Type};
        versions_schema(
            ObjectBuilder::new()
                .schema_type(utoipa::openapi::schema::SchemaType::from_iter([
                    Type::Object,
                    Type::Null,
                ]))
                .into(),
            None,
            "Versions to add or replace (a JSON Schema) or remove (`null`).",
        )
    }
}

impl ToSchema for SchemaChanges {
    fn name() -> std::borrow::Cow<'static, str> {
        "SchemaChanges".into()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn refused(v: Value) -> String {
        CompiledSchema::compile(v)
            .err()
            .map(|e| e.message)
            .unwrap_or_default()
    }

    #[test]
    fn schemas_that_do_not_compile_are_refused_with_their_pointer() {
        let e = refused(json!({"properties": {"amount": {"minimum": "x"}}}));
        assert!(e.contains("at /properties/amount/minimum"), "{e}");
        assert!(refused(json!({"type": 12})).contains("at /type"));
        assert!(
            refused(json!({"$schema": "http://json-schema.org/draft-04/schema#"}))
                .contains("draft 7")
        );
        assert!(refused(json!([1])).contains("object"));
        let big = json!({"description": "x".repeat(MAX_SCHEMA_BYTES)});
        assert!(refused(big).contains("bytes"));
    }

    #[test]
    fn remote_references_are_never_fetched() {
        for r in [
            "https://example.com/x.json",
            "http://127.0.0.1:1/x.json",
            "file:///etc/passwd",
        ] {
            let e = refused(json!({"$ref": r}));
            assert!(e.contains("does not compile"), "{r}: {e}");
        }
        // A reference inside the schema itself works.
        let local = CompiledSchema::compile(json!({
            "$defs": {"amount": {"type": "integer", "minimum": 0}},
            "properties": {"amount": {"$ref": "#/$defs/amount"}}
        }));
        assert!(local.is_ok_and(|s| !s.is_valid(&json!({"amount": -1}))));
    }

    #[test]
    fn errors_name_the_pointer_into_the_body_and_are_bounded() {
        let s = CompiledSchema::compile(json!({
            "$schema": "http://json-schema.org/draft-07/schema#",
            "type": "object",
            "required": ["id"],
            "properties": {
                "amount": {"type": "integer", "minimum": 0},
                "email": {"type": "string", "format": "email"},
                "items": {"type": "array", "items": {"type": "integer"}}
            }
        }));
        let Ok(s) = s else {
            panic!("the schema compiles")
        };
        let errors = s.errors(&json!({"amount": -5, "email": "nope", "items": [1, "x"]}));
        let pointers: Vec<&str> = errors.iter().map(|e| e.pointer.as_str()).collect();
        for p in ["", "/amount", "/email", "/items/1"] {
            assert!(pointers.contains(&p), "{pointers:?}");
        }
        let many = json!({"type": "array", "items": {"type": "integer"}});
        let Ok(many) = CompiledSchema::compile(many) else {
            panic!("compiles")
        };
        let body = Value::Array((0..50).map(|i| json!(format!("{i}"))).collect());
        assert_eq!(many.errors(&body).len(), MAX_ERRORS);
        assert!(many.is_valid(&json!([1, 2])));
    }

    #[test]
    fn versions_are_plain_whole_numbers() {
        assert_eq!(parse_version("1"), Ok(1));
        assert_eq!(parse_version("999999"), Ok(999_999));
        for bad in ["0", "01", "-1", "1.0", "", "1000000", "x"] {
            assert!(parse_version(bad).is_err(), "{bad}");
        }
        let spec: Result<EventTypeSpec, _> =
            serde_json::from_value(json!({"schemas": {"2": {"type": "object"}, "1": true}}));
        assert!(spec.is_err(), "a schema must be an object");
        let spec: Result<EventTypeSpec, _> =
            serde_json::from_value(json!({"schemas": {"2": {"type": "object"}, "10": {}}}));
        assert_eq!(
            spec.ok().and_then(|s| s.schemas.latest().map(|(v, _)| v)),
            Some(10)
        );
    }

    #[test]
    fn an_owner_is_an_object_of_known_fields() {
        let owner: Result<Owner, _> =
            serde_json::from_value(json!({"service": "billing", "team": "Payments"}));
        assert_eq!(
            owner.ok().and_then(|o| o.team).map(|t| t.to_string()),
            Some("Payments".to_string())
        );
        for bad in [
            json!(["billing", "Payments", null]),
            json!({"service": "billing", "squad": "x"}),
            json!("billing"),
        ] {
            assert!(
                serde_json::from_value::<Owner>(bad.clone()).is_err(),
                "{bad}"
            );
        }
    }

    #[test]
    fn schemas_serialize_with_text_keys() {
        let s: Schemas =
            serde_json::from_value(json!({"2": {}, "10": {"type": "object"}})).unwrap_or_default();
        let back = serde_json::to_value(&s).unwrap_or_default();
        assert_eq!(back, json!({"2": {}, "10": {"type": "object"}}));
        assert!(toml::to_string(&std::collections::BTreeMap::from([("schemas", &s)])).is_ok());
    }

    #[test]
    fn patches_add_and_remove_versions() {
        let mut schemas = BTreeMap::from([(1, json!({})), (2, json!({"type": "object"}))]);
        let change: SchemaChanges =
            serde_json::from_value(json!({"1": null, "3": {"type": "array"}})).unwrap_or_default();
        assert!(change.apply(&mut schemas).is_ok());
        assert_eq!(schemas.keys().copied().collect::<Vec<_>>(), vec![2, 3]);
        assert!(serde_json::from_value::<SchemaChanges>(json!({"1": {"type": 3}})).is_err());
    }
}
