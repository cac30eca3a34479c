//! What a transformation's output may ask for, read into a request (or a cancel). What it may
//! not do is refused with the field at fault: set a header the gateway owns (the signature's,
//! `Host`, `Content-Length`…), use a method other than POST, PUT or PATCH, or point the URL at
//! another scheme. A changed host goes through the same address rules as a target's own URL
//! (the SSRF guard), here and again when the request is sent.

use serde_json::{Map, Value};

use super::invalid::Invalid;
use super::target::check_url;
use super::text::{check_header_name, check_header_value};

/// Headers a program may not set or remove: the signature's, and what HTTP framing owns.
pub const OWNED_HEADERS: [&str; 9] = [
    "webhook-id",
    "webhook-timestamp",
    "webhook-signature",
    "host",
    "content-length",
    "transfer-encoding",
    "connection",
    "upgrade",
    "te",
];

/// A method a transformed delivery may use.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Method {
    Post,
    Put,
    Patch,
}

impl Method {
    pub fn as_str(self) -> &'static str {
        match self {
            Method::Post => "POST",
            Method::Put => "PUT",
            Method::Patch => "PATCH",
        }
    }
}

/// The body a transformed delivery sends.
#[derive(Debug, Clone, PartialEq)]
pub enum OutputBody {
    /// The event's body, byte for byte (the program left `body` out).
    Unchanged,
    /// Text, sent as its UTF-8 bytes with the content type the headers say.
    Text(String),
    /// JSON, sent compact, as `application/json` unless the headers say otherwise.
    Json(Value),
}

/// What a program's output asks for.
#[derive(Debug, Clone, PartialEq)]
pub enum Output {
    Cancel,
    Send(Request),
}

/// A request as a program shaped it.
#[derive(Debug, Clone, PartialEq)]
pub struct Request {
    /// The event type (the `estafeta-event-type` header).
    pub event_type: String,
    pub url: String,
    pub method: Method,
    /// Every header the program leaves on, lowercase names (the gateway adds its own).
    pub headers: Vec<(String, String)>,
    pub body: OutputBody,
}

/// Reads a program's output; the refusal names what is wrong with it.
pub fn read_output(out: &Value, allow_private: bool) -> Result<Output, Invalid> {
    let Value::Object(map) = out else {
        return Err(Invalid::new(
            "the output must be an object: {type, body, headers, url, method} or {cancel: true}",
        ));
    };
    if map.get("cancel") == Some(&Value::Bool(true)) {
        return Ok(Output::Cancel);
    }
    if let Some(key) = map.keys().find(|k| {
        !matches!(
            k.as_str(),
            "type" | "body" | "headers" | "url" | "method" | "cancel"
        )
    }) {
        return Err(Invalid::at(
            key.as_str(),
            "is not a field of a request (type, body, headers, url, method, cancel)",
        ));
    }
    let text = |key: &str| -> Result<Option<&str>, Invalid> {
        match map.get(key) {
            None | Some(Value::Null) => Ok(None),
            Some(Value::String(s)) => Ok(Some(s)),
            Some(_) => Err(Invalid::at(key, "must be a string")),
        }
    };
    let event_type = text("type")?.unwrap_or_default().to_owned();
    if !event_type.is_empty() && !super::event_type::is_valid(&event_type) {
        return Err(Invalid::at("type", "must be 1 to 128 of A-Z a-z 0-9 _ . -"));
    }
    let url = text("url")?
        .ok_or_else(|| Invalid::at("url", "is missing: keep the input's url or set one"))?;
    check_url(url, allow_private).map_err(|p| p.invalid().within("url"))?;
    let method = match text("method")?.unwrap_or("POST") {
        "POST" => Method::Post,
        "PUT" => Method::Put,
        "PATCH" => Method::Patch,
        other => {
            return Err(Invalid::at(
                "method",
                format!("must be POST, PUT or PATCH, not {other:?}"),
            ));
        }
    };
    let headers = match map.get("headers") {
        None | Some(Value::Null) => Vec::new(),
        Some(Value::Object(h)) => read_headers(h)?,
        Some(_) => return Err(Invalid::at("headers", "must be an object of name → value")),
    };
    let body = match map.get("body") {
        None => OutputBody::Unchanged,
        Some(Value::String(s)) => OutputBody::Text(s.clone()),
        Some(v) => OutputBody::Json(v.clone()),
    };
    Ok(Output::Send(Request {
        event_type,
        url: url.to_owned(),
        method,
        headers,
        body,
    }))
}

fn read_headers(h: &Map<String, Value>) -> Result<Vec<(String, String)>, Invalid> {
    let mut out = Vec::with_capacity(h.len());
    for (name, value) in h {
        let at = format!("headers.{name}");
        check_header_name(name).map_err(|e| e.within(&at))?;
        let lower = name.to_ascii_lowercase();
        if OWNED_HEADERS.contains(&lower.as_str()) {
            return Err(Invalid::at(
                at,
                "is set by the gateway; a program cannot change it",
            ));
        }
        match value {
            // null leaves the header off.
            Value::Null => {}
            Value::String(v) => {
                check_header_value(v, 0, 8192).map_err(|e| e.within(&at))?;
                out.push((lower, v.clone()));
            }
            _ => return Err(Invalid::at(at, "must be a string or null")),
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn request(v: Value) -> Result<Request, String> {
        match read_output(&v, false) {
            Ok(Output::Send(r)) => Ok(r),
            Ok(Output::Cancel) => Err("cancel".into()),
            Err(e) => Err(e.to_string()),
        }
    }

    #[test]
    fn outputs_are_read_with_their_rules() {
        let ok = request(
            json!({"type": "t", "url": "https://example.com/a?b=1", "method": "PUT",
            "headers": {"X-A": "b", "x-gone": null}, "body": {"k": 1}}),
        );
        let Ok(r) = ok else { panic!("{ok:?}") };
        assert_eq!(r.method, Method::Put);
        assert_eq!(r.headers, vec![("x-a".to_owned(), "b".to_owned())]);
        assert_eq!(r.body, OutputBody::Json(json!({"k": 1})));
        assert_eq!(request(json!({"cancel": true})), Err("cancel".into()));
        let refused = |v: Value, says: &str| {
            let e = request(v).err().unwrap_or_default();
            assert!(e.contains(says), "{says}: {e}");
        };
        refused(
            json!({"url": "https://e.com/", "headers": {"Webhook-Signature": "x"}}),
            "set by the gateway",
        );
        refused(
            json!({"url": "https://e.com/", "headers": {"host": "evil"}}),
            "set by the gateway",
        );
        refused(
            json!({"url": "https://e.com/", "headers": {"content-length": "1"}}),
            "set by the gateway",
        );
        refused(
            json!({"url": "https://e.com/", "headers": {"x": "a\nb"}}),
            "control",
        );
        refused(
            json!({"url": "https://e.com/", "method": "GET"}),
            "POST, PUT or PATCH",
        );
        refused(json!({"url": "http://127.0.0.1/admin"}), "url");
        refused(json!({"url": "http://169.254.169.254/latest"}), "url");
        refused(json!({"url": "file:///etc/passwd"}), "url");
        refused(json!({"body": 1}), "url is missing");
        refused(json!({"url": "https://e.com/", "verb": "PUT"}), "verb");
        refused(json!([1]), "object");
        assert!(
            read_output(&json!({"url": "http://127.0.0.1/x"}), true).is_ok(),
            "private allowed"
        );
    }
}
