//! Form bodies (`application/x-www-form-urlencoded`), with repeated fields (check boxes).

use axum::extract::{FromRequest, Request};

use super::error::WebError;

/// Largest form body a page accepts.
pub const MAX_FORM: usize = 256 * 1024;

/// A form's fields, in order.
#[derive(Debug, Clone, Default)]
pub struct Form(pub Vec<(String, String)>);

impl Form {
    pub fn parse(bytes: &[u8]) -> Form {
        Form(url::form_urlencoded::parse(bytes).into_owned().collect())
    }

    /// The first value of `name`, trimmed; `""` when absent.
    pub fn get(&self, name: &str) -> &str {
        self.0
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.trim())
            .unwrap_or_default()
    }

    /// The value of `name`, trimmed, or `None` when absent or empty.
    pub fn opt(&self, name: &str) -> Option<&str> {
        Some(self.get(name)).filter(|v| !v.is_empty())
    }

    /// Every value of `name` (a group of check boxes).
    pub fn all(&self, name: &str) -> Vec<&str> {
        self.0
            .iter()
            .filter(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
            .collect()
    }

    /// Whether check box `name` is ticked.
    pub fn checked(&self, name: &str) -> bool {
        matches!(self.get(name), "on" | "true" | "1" | "yes")
    }

    /// `name` as a whole number, when given; a clear error when it is not one.
    pub fn number(&self, name: &str, label: &str) -> Result<Option<u64>, WebError> {
        match self.opt(name) {
            None => Ok(None),
            Some(v) => v
                .parse::<u64>()
                .map(Some)
                .map_err(|_| WebError::BadRequest(format!("{label} must be a whole number"))),
        }
    }
}

impl<S: Send + Sync> FromRequest<S> for Form {
    type Rejection = WebError;

    async fn from_request(req: Request, _: &S) -> Result<Form, WebError> {
        let bytes = axum::body::to_bytes(req.into_body(), MAX_FORM)
            .await
            .map_err(|_| WebError::BadRequest("the form is too large".into()))?;
        Ok(Form::parse(&bytes))
    }
}

/// A page's query string, read like a form (filters, `?notice=`).
#[derive(Debug, Clone, Default)]
pub struct Params(pub Form);

impl<S: Send + Sync> axum::extract::FromRequestParts<S> for Params {
    type Rejection = WebError;

    async fn from_request_parts(
        parts: &mut http::request::Parts,
        _: &S,
    ) -> Result<Params, WebError> {
        Ok(Params(Form::parse(
            parts.uri.query().unwrap_or_default().as_bytes(),
        )))
    }
}

/// The spec or patch a form describes (built as the API's JSON), decoded by the API's own
/// rules: a form and a request obey one rule set, with one message per field.
pub fn decode<T: crate::http::extract::JsonBody>(v: serde_json::Value) -> Result<T, WebError> {
    let bytes = serde_json::to_vec(&v).map_err(WebError::internal)?;
    Ok(crate::http::extract::decode_body(&bytes)?)
}
