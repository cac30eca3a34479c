//! How the gateway authenticates to a target: a bearer token, basic credentials, a header
//! of the target's naming (never one the gateway itself sets), or an OAuth2 client (client
//! credentials grant), and the masked view of each.

use serde::{Deserialize, Serialize};
use utoipa::ToSchema;
use utoipa::openapi::schema::{ObjectBuilder, Schema, Type};
use utoipa::openapi::{RefOr, schema::OneOfBuilder};

use super::invalid::Invalid;
use super::schema::string_schema;
use super::secret::SecretText;
use super::target_url::TargetUrl;
use super::text::{HEADER_NAME_PATTERN, HEADER_VALUE_CHARS, check_header_name, check_header_value};

/// Longest credential (bearer token, user name, password, auth header value).
pub const MAX_CREDENTIAL: usize = 1024;

/// How the gateway authenticates to a target.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(
    rename_all = "snake_case",
    deny_unknown_fields,
    try_from = "AuthFields"
)]
pub enum TargetAuth {
    /// `Authorization: Bearer <token>`.
    Bearer(SecretText),
    /// `Authorization: Basic <base64 of username:password>`.
    Basic {
        username: String,
        password: SecretText,
    },
    /// A header of the target's choosing.
    Header { name: String, value: SecretText },
    /// A bearer token from an OAuth2 token endpoint (client credentials grant).
    #[serde(rename = "oauth2")]
    OAuth2(OAuth2Client),
}

/// An OAuth2 client of the client credentials grant (RFC 6749 §4.4).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct OAuth2Client {
    /// The token endpoint: https (unless the deployment allows private targets), and never a
    /// private address (the SSRF guard).
    pub token_url: TargetUrl,
    pub client_id: String,
    pub client_secret: SecretText,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub scope: Option<String>,
    /// Sent as `audience` (Auth0, Okta and others ask for it).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub audience: Option<String>,
    #[serde(default)]
    pub method: ClientAuthMethod,
}

/// How the client authenticates to the token endpoint.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum ClientAuthMethod {
    /// HTTP Basic with the form-encoded id and secret (the one every server must support).
    #[default]
    ClientSecretBasic,
    /// `client_id` and `client_secret` in the form body.
    ClientSecretPost,
}

impl OAuth2Client {
    /// The token endpoint's own rule: https unless the deployment allows private targets
    /// (a local token server in a test), and the SSRF guard's.
    pub fn check_reachable(&self, allow_private: bool) -> Result<(), Invalid> {
        self.token_url
            .check_reachable(allow_private)
            .map_err(|p| p.invalid().within("token_url"))?;
        if !allow_private && !self.token_url.is_https() {
            return Err(Invalid::at("token_url", "must use https"));
        }
        Ok(())
    }
}

impl TargetAuth {
    /// The OAuth2 token endpoint's rule, when the auth is OAuth2.
    pub fn check_reachable(&self, allow_private: bool) -> Result<(), Invalid> {
        match self {
            TargetAuth::OAuth2(o) => o
                .check_reachable(allow_private)
                .map_err(|e| e.within("oauth2")),
            _ => Ok(()),
        }
    }
}

/// [`TargetAuth`] as it arrives, before its check.
#[derive(Deserialize)]
#[serde(rename_all = "snake_case", deny_unknown_fields)]
enum AuthFields {
    Bearer(SecretText),
    Basic {
        username: String,
        password: SecretText,
    },
    Header {
        name: String,
        value: SecretText,
    },
    #[serde(rename = "oauth2")]
    OAuth2(OAuth2Client),
}

impl TryFrom<AuthFields> for TargetAuth {
    type Error = Invalid;
    fn try_from(f: AuthFields) -> Result<TargetAuth, Invalid> {
        let credential = |path: &str, v: &str| {
            check_header_value(v, 1, MAX_CREDENTIAL).map_err(|e| e.within(path))
        };
        Ok(match f {
            AuthFields::Bearer(t) => {
                credential("bearer", t.expose())?;
                TargetAuth::Bearer(t)
            }
            AuthFields::Basic { username, password } => {
                credential("basic.username", &username)?;
                if username.contains(':') {
                    return Err(Invalid::at("basic.username", "must not contain `:`"));
                }
                if password.expose().chars().count() > MAX_CREDENTIAL {
                    return Err(Invalid::at(
                        "basic.password",
                        format!("must be at most {MAX_CREDENTIAL} characters"),
                    ));
                }
                TargetAuth::Basic { username, password }
            }
            AuthFields::Header { name, value } => {
                check_custom_header_name(&name).map_err(|e| e.within("header.name"))?;
                credential("header.value", value.expose())?;
                TargetAuth::Header { name, value }
            }
            AuthFields::OAuth2(o) => {
                credential("oauth2.client_id", &o.client_id)?;
                credential("oauth2.client_secret", o.client_secret.expose())?;
                for (field, v) in [("oauth2.scope", &o.scope), ("oauth2.audience", &o.audience)] {
                    if let Some(v) = v {
                        credential(field, v)?;
                    }
                }
                TargetAuth::OAuth2(o)
            }
        })
    }
}

impl utoipa::PartialSchema for TargetAuth {
    fn schema() -> RefOr<Schema> {
        let credential = || credential_schema(1);
        let one = |key: &str, inner: RefOr<Schema>| -> RefOr<Schema> {
            ObjectBuilder::new()
                .property(key, inner)
                .required(key)
                .additional_properties(Some(
                    utoipa::openapi::schema::AdditionalProperties::FreeForm(false),
                ))
                .into()
        };
        let basic = ObjectBuilder::new()
            .property(
                "username",
                string_schema(
                    &format!("^[^\\u0000-\\u0008\\u000A-\\u001F\\u007F:]{{1,{MAX_CREDENTIAL}}}$"),
                    1,
                    MAX_CREDENTIAL,
                    "User name (no `:`).",
                ),
            )
            .required("username")
            .property(
                "password",
                ObjectBuilder::new()
                    .schema_type(Type::String)
                    .max_length(Some(MAX_CREDENTIAL)),
            )
            .required("password")
            .additional_properties(Some(
                utoipa::openapi::schema::AdditionalProperties::FreeForm(false),
            ));
        let header = ObjectBuilder::new()
            .property("name", custom_header_name_schema())
            .required("name")
            .property("value", credential())
            .required("value")
            .additional_properties(Some(
                utoipa::openapi::schema::AdditionalProperties::FreeForm(false),
            ));
        let optional_credential = || super::schema::nullable(credential_schema(1));
        let oauth2 = ObjectBuilder::new()
            .property("token_url", TargetUrl::schema())
            .required("token_url")
            .property("client_id", credential())
            .required("client_id")
            .property("client_secret", credential())
            .required("client_secret")
            .property("scope", optional_credential())
            .property("audience", optional_credential())
            .property("method", ClientAuthMethod::schema())
            .additional_properties(Some(
                utoipa::openapi::schema::AdditionalProperties::FreeForm(false),
            ));
        OneOfBuilder::new()
            .item(one("bearer", credential()))
            .item(one("basic", basic.into()))
            .item(one("header", header.into()))
            .item(one("oauth2", oauth2.into()))
            .description(Some(
                "How the gateway authenticates to the target. Answers show it with the secret parts masked.",
            ))
            .into()
    }
}

impl ToSchema for TargetAuth {
    fn name() -> std::borrow::Cow<'static, str> {
        "TargetAuth".into()
    }
}

fn credential_schema(min: usize) -> RefOr<Schema> {
    string_schema(
        &format!("^{HEADER_VALUE_CHARS}{{{min},{MAX_CREDENTIAL}}}$"),
        min,
        MAX_CREDENTIAL,
        "A credential: no control characters.",
    )
}

impl TargetAuth {
    /// The auth with its secret parts masked, for answers.
    pub fn redacted(&self) -> TargetAuthView {
        match self {
            TargetAuth::Bearer(_) => TargetAuthView::Bearer(MASK.to_owned()),
            TargetAuth::Basic { username, .. } => TargetAuthView::Basic {
                username: username.clone(),
                password: MASK.to_owned(),
            },
            TargetAuth::Header { name, .. } => TargetAuthView::Header {
                name: name.clone(),
                value: MASK.to_owned(),
            },
            TargetAuth::OAuth2(o) => TargetAuthView::OAuth2 {
                token_url: o.token_url.as_str().to_owned(),
                client_id: o.client_id.clone(),
                client_secret: MASK.to_owned(),
                scope: o.scope.clone(),
                audience: o.audience.clone(),
                method: o.method,
            },
        }
    }
}

/// What answers show of a secret.
const MASK: &str = "***";

/// A target's auth as answers show it: secret parts are `***`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum TargetAuthView {
    Bearer(String),
    Basic {
        username: String,
        password: String,
    },
    Header {
        name: String,
        value: String,
    },
    #[serde(rename = "oauth2")]
    OAuth2 {
        token_url: String,
        client_id: String,
        client_secret: String,
        #[serde(skip_serializing_if = "Option::is_none")]
        scope: Option<String>,
        #[serde(skip_serializing_if = "Option::is_none")]
        audience: Option<String>,
        method: ClientAuthMethod,
    },
}

/// Headers the gateway sets itself; a target may not override them.
const RESERVED_HEADERS: &[&str] = &[
    "host",
    "content-length",
    "content-type",
    "transfer-encoding",
    "connection",
    "te",
    "upgrade",
    "keep-alive",
    "proxy-connection",
    "trailer",
];
/// Prefixes of headers the gateway sets itself.
const RESERVED_PREFIXES: &[&str] = &["webhook-", "estafeta-"];

/// A header name a target may set: valid, and not one the gateway sets.
pub fn check_custom_header_name(name: &str) -> Result<(), Invalid> {
    check_header_name(name)?;
    let lower = name.to_ascii_lowercase();
    if RESERVED_HEADERS.contains(&lower.as_str())
        || RESERVED_PREFIXES.iter().any(|p| lower.starts_with(p))
    {
        return Err(Invalid::new(format!(
            "header {name:?} is set by the gateway and cannot be overridden"
        )));
    }
    Ok(())
}

/// `[Hh][Oo][Ss][Tt]`: a case-insensitive literal in ECMA-262 regex, which has no `(?i)`.
fn any_case(word: &str) -> String {
    word.chars()
        .map(|c| {
            if c.is_ascii_alphabetic() {
                format!("[{}{}]", c.to_ascii_uppercase(), c.to_ascii_lowercase())
            } else if c == '-' {
                "-".to_owned()
            } else {
                c.to_string()
            }
        })
        .collect()
}

pub(super) fn custom_header_name_schema() -> RefOr<Schema> {
    let words: Vec<String> = RESERVED_HEADERS.iter().map(|w| any_case(w)).collect();
    let prefixes: Vec<String> = RESERVED_PREFIXES.iter().map(|p| any_case(p)).collect();
    let token = HEADER_NAME_PATTERN
        .trim_start_matches('^')
        .trim_end_matches('$')
        .trim_end_matches('+');
    let pattern = format!(
        "^(?!(?:{})$)(?!(?:{}))(?:{token}){{1,256}}$",
        words.join("|"),
        prefixes.join("|")
    );
    string_schema(
        &pattern,
        1,
        256,
        "A header name, other than those the gateway sets (Host, Content-*, webhook-*, estafeta-*, …).",
    )
}
