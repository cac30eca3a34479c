//! A target's transformation applied to one delivery: the program's input built from the
//! event, run in the sandbox, and its output read into the request to send (or a cancel).
//! The API's simulation runs the same steps, so what it shows is what would be sent.

use bytes::Bytes;
use serde_json::{Map, Value, json};

use crate::model::event_meta;
use crate::model::shaped::{Output, OutputBody, read_output};
use crate::sandbox::{Sandbox, SandboxError};
use crate::store::Target;

/// A request as the transformation shaped it, ready for the client.
#[derive(Debug, Clone)]
pub struct Shaped {
    /// The event type the receiver is told (`estafeta-event-type`).
    pub event_type: String,
    pub url: String,
    pub method: http::Method,
    /// Every other header the program leaves on (not the content type), lowercase names.
    pub headers: Vec<(String, String)>,
    pub content_type: Option<String>,
    pub body: Bytes,
    /// Which version of the program shaped it.
    pub version: u32,
}

/// What a transformation made of a delivery.
#[derive(Debug, Clone)]
pub enum Transformed {
    /// The target has no enabled transformation: send the event as it is.
    Untouched,
    Send(Shaped),
    /// The program asked for nothing to be sent.
    Cancel {
        version: u32,
    },
    /// No request could be made; `retry` when another try may give another answer (a timeout,
    /// a crashed sandbox), else the failure is final (the program refused this input).
    Fail {
        version: u32,
        error: String,
        retry: bool,
    },
}

/// The event a transformation sees.
#[derive(Debug, Clone, Copy)]
pub struct EventInput<'a> {
    pub event_type: &'a str,
    /// The packed content type and kept headers ([`event_meta`]).
    pub meta: Option<&'a [u8]>,
    pub body: &'a [u8],
}

/// The program's input: `{"type", "body", "headers", "url", "method"}`. A body that is JSON
/// is given as JSON, any other UTF-8 body as a string; one that is neither cannot be given.
pub fn input(event: EventInput<'_>, target: &Target) -> Result<Value, String> {
    let body = match serde_json::from_slice::<Value>(event.body) {
        Ok(v) => v,
        Err(_) => match std::str::from_utf8(event.body) {
            Ok(text) => Value::String(text.to_owned()),
            Err(_) => {
                return Err(
                    "the body is neither JSON nor UTF-8 text, so a program cannot read it".into(),
                );
            }
        },
    };
    let meta = event.meta.unwrap_or_default();
    let mut headers: Map<String, Value> = event_meta::headers_json(meta);
    for (name, value) in target.headers.iter() {
        headers.insert(name.to_ascii_lowercase(), Value::String(value.clone()));
    }
    if let Some(ct) = event_meta::content_type(meta) {
        headers.insert(
            "content-type".into(),
            Value::String(String::from_utf8_lossy(ct).into_owned()),
        );
    }
    Ok(json!({
        "type": event.event_type,
        "body": body,
        "headers": headers,
        "url": target.url.as_str(),
        "method": "POST",
    }))
}

/// Runs the target's transformation with `program` (its own when `None`) on `event`.
pub async fn apply(
    sandbox: &Sandbox,
    target: &Target,
    program: Option<&str>,
    event: EventInput<'_>,
    allow_private: bool,
) -> Transformed {
    let (program, version) = match (program, &target.transform) {
        (Some(p), Some(t)) if t.program.as_str() == p => (p, target.transform_version),
        // A program tried before it is saved would be the next version.
        (Some(p), _) => (p, target.transform_version.saturating_add(1)),
        (None, Some(t)) if t.enabled => (t.program.as_str(), target.transform_version),
        (None, _) => return Transformed::Untouched,
    };
    let fail = |error: String, retry: bool| Transformed::Fail {
        version,
        error: format!("transform_failed: {error}"),
        retry,
    };
    let input = match input(event, target) {
        Ok(i) => i,
        Err(e) => return fail(e, false),
    };
    let output = match sandbox.run(program, input).await {
        Ok(o) => o,
        // A timeout or a crash is worth another try: on a busy host a program fast enough can
        // still miss its bound once. A refusal by the program itself is final.
        Err(SandboxError::Timeout(_)) => return fail("timeout".into(), true),
        Err(e) => return fail(e.to_string(), !e.is_final()),
    };
    match read_output(&output, allow_private) {
        Ok(Output::Cancel) => Transformed::Cancel { version },
        Ok(Output::Send(r)) => {
            let mut content_type = None;
            let headers = r
                .headers
                .into_iter()
                .filter_map(|(name, value)| {
                    if name == "content-type" {
                        content_type = Some(value);
                        None
                    } else {
                        Some((name, value))
                    }
                })
                .collect();
            let body = match r.body {
                OutputBody::Unchanged => Bytes::copy_from_slice(event.body),
                OutputBody::Text(t) => Bytes::from(t),
                OutputBody::Json(v) => {
                    content_type.get_or_insert_with(|| "application/json".to_owned());
                    Bytes::from(serde_json::to_vec(&v).unwrap_or_default())
                }
            };
            let method = match r.method {
                crate::model::shaped::Method::Post => http::Method::POST,
                crate::model::shaped::Method::Put => http::Method::PUT,
                crate::model::shaped::Method::Patch => http::Method::PATCH,
            };
            Transformed::Send(Shaped {
                event_type: if r.event_type.is_empty() {
                    event.event_type.to_owned()
                } else {
                    r.event_type
                },
                url: r.url,
                method,
                headers,
                content_type,
                body,
                version,
            })
        }
        Err(e) => fail(format!("the output {e}"), false),
    }
}
