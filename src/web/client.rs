//! The pages' way to the API: every read and change goes through the admin API's own
//! handlers, in process, so the console and the portal apply exactly the rules the JSON API
//! does (validation, tenant scoping, auth-cache invalidation) and render what it answers.

use axum::Router;
use axum::body::Body;
use http::{Method, Request, StatusCode, header};
use serde_json::Value;
use tower::ServiceExt;

use super::error::WebError;
use crate::config::Secret;

/// Largest API answer a page reads (the biggest listings are a few hundred kB).
const MAX_ANSWER: usize = 16 * 1024 * 1024;

/// The admin API, called in process with the admin token.
#[derive(Clone)]
pub struct ApiClient {
    router: Router,
    token: Secret,
}

impl std::fmt::Debug for ApiClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("ApiClient")
    }
}

impl ApiClient {
    pub fn new(router: Router, token: Secret) -> ApiClient {
        ApiClient { router, token }
    }

    /// The admin token (the console's sign-in compares with it).
    pub fn admin_token(&self) -> &Secret {
        &self.token
    }

    /// `GET path`: its JSON answer.
    pub async fn get(&self, path: &str) -> Result<Value, WebError> {
        self.call(Method::GET, path, None).await
    }

    /// `POST path` with `body`: its JSON answer (`null` for 204).
    pub async fn post(&self, path: &str, body: Value) -> Result<Value, WebError> {
        self.call(Method::POST, path, Some(body)).await
    }

    pub async fn patch(&self, path: &str, body: Value) -> Result<Value, WebError> {
        self.call(Method::PATCH, path, Some(body)).await
    }

    pub async fn delete(&self, path: &str) -> Result<Value, WebError> {
        self.call(Method::DELETE, path, None).await
    }

    async fn call(
        &self,
        method: Method,
        path: &str,
        body: Option<Value>,
    ) -> Result<Value, WebError> {
        let mut req = Request::builder().method(method).uri(path).header(
            header::AUTHORIZATION,
            format!("Bearer {}", self.token.expose()),
        );
        let body = match body {
            Some(v) => {
                req = req.header(header::CONTENT_TYPE, "application/json");
                Body::from(serde_json::to_vec(&v).map_err(WebError::internal)?)
            }
            None => Body::empty(),
        };
        let req = req.body(body).map_err(WebError::internal)?;
        let res = self
            .router
            .clone()
            .oneshot(req)
            .await
            .map_err(WebError::internal)?;
        let status = res.status();
        let bytes = axum::body::to_bytes(res.into_body(), MAX_ANSWER)
            .await
            .map_err(WebError::internal)?;
        if status == StatusCode::NO_CONTENT || bytes.is_empty() {
            return if status.is_success() {
                Ok(Value::Null)
            } else {
                Err(WebError::Api {
                    status,
                    code: "error".into(),
                    message: status.canonical_reason().unwrap_or("error").into(),
                })
            };
        }
        let value: Value = serde_json::from_slice(&bytes).map_err(WebError::internal)?;
        if status.is_success() {
            return Ok(value);
        }
        let text = |k: &str| {
            value
                .pointer(&format!("/error/{k}"))
                .and_then(Value::as_str)
                .unwrap_or_default()
                .to_owned()
        };
        Err(WebError::Api {
            status,
            code: text("code"),
            message: text("message"),
        })
    }
}

/// What a path segment keeps as is: letters, digits, `-`, `_` and `~` (ids stay readable);
/// `.` is encoded too, so no segment can read as `..`.
const SEGMENT: &percent_encoding::AsciiSet = &percent_encoding::NON_ALPHANUMERIC
    .remove(b'-')
    .remove(b'_')
    .remove(b'~');

/// One path segment, percent-encoded, so that nothing a user typed can leave the segment it
/// was put in (`/`, `?`, `..` included).
pub fn seg(s: &str) -> String {
    percent_encoding::utf8_percent_encode(s, SEGMENT).to_string()
}

/// A query string from pairs, values percent-encoded; empty values are left out.
pub fn query(pairs: &[(&str, &str)]) -> String {
    let mut out = url::form_urlencoded::Serializer::new(String::new());
    for (k, v) in pairs {
        if !v.is_empty() {
            out.append_pair(k, v);
        }
    }
    let q = out.finish();
    if q.is_empty() { q } else { format!("?{q}") }
}
