//! Reading request bodies within bounds: a size cap enforced while streaming (never buffering
//! past it), a limit on the pause between two pieces, and a limit on the whole read. hyper has
//! neither timeout, so slow-body clients are cut off here.

use std::time::Duration;

use bytes::{Bytes, BytesMut};
use futures_util::FutureExt;
use http::HeaderMap;
use http_body_util::BodyExt;
use tokio::time::{Instant, timeout_at};

/// Limits of one body read.
#[derive(Debug, Clone, Copy)]
pub struct BodyLimits {
    /// Largest body accepted.
    pub max_bytes: u64,
    /// Longest pause between two frames.
    pub idle: Duration,
    /// Longest whole read.
    pub total: Duration,
}

/// Why a body was not read.
#[derive(Debug, thiserror::Error)]
pub enum BodyError {
    #[error("body larger than {limit} bytes")]
    TooLarge { limit: u64 },
    #[error("body arrived too slowly")]
    Timeout,
    #[error("{0}")]
    Read(String),
}

/// Refuses a body whose declared length is over the cap, before reading any of it.
pub fn check_declared_length(headers: &HeaderMap, limits: &BodyLimits) -> Result<(), BodyError> {
    let declared = headers
        .get(http::header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    match declared {
        Some(n) if n > limits.max_bytes => Err(BodyError::TooLarge {
            limit: limits.max_bytes,
        }),
        _ => Ok(()),
    }
}

/// Reads `body` whole within `limits`.
pub async fn read<B>(body: B, headers: &HeaderMap, limits: &BodyLimits) -> Result<Bytes, BodyError>
where
    B: http_body::Body<Data = Bytes> + Unpin,
    B::Error: std::fmt::Display,
{
    check_declared_length(headers, limits)?;
    let mut body = body;
    // Set when the body first makes us wait: a body that is all there costs no clock read.
    let mut deadline: Option<Instant> = None;
    // Most bodies arrive in one frame: keep it without copying.
    let mut first: Option<Bytes> = None;
    let mut buf: Option<BytesMut> = None;
    let mut len: u64 = 0;
    loop {
        // What the body declares (its chunks so far, see `edge::framing`) may already be
        // more than the cap, before the bytes that would exceed it arrive.
        if http_body::Body::size_hint(&body).lower() > limits.max_bytes {
            return Err(BodyError::TooLarge {
                limit: limits.max_bytes,
            });
        }
        // Small bodies are usually in the socket buffer already: take a frame that is ready
        // without arming a timer, and only wait (with the deadlines) when none is.
        let next = match body.frame().now_or_never() {
            Some(ready) => ready,
            None => {
                let now = Instant::now();
                let total = *deadline.get_or_insert(now + limits.total);
                let idle_deadline = (now + limits.idle).min(total);
                timeout_at(idle_deadline, body.frame())
                    .await
                    .map_err(|_| BodyError::Timeout)?
            }
        };
        let frame = match next {
            None => break,
            Some(Err(e)) => return Err(BodyError::Read(e.to_string())),
            Some(Ok(frame)) => frame,
        };
        let Ok(data) = frame.into_data() else {
            continue; // trailers carry nothing we keep
        };
        len += data.len() as u64;
        if len > limits.max_bytes {
            return Err(BodyError::TooLarge {
                limit: limits.max_bytes,
            });
        }
        match (&mut first, &mut buf) {
            (None, None) => first = Some(data),
            (Some(f), None) => {
                let mut b = BytesMut::with_capacity((f.len() + data.len()).max(8 * 1024));
                b.extend_from_slice(f);
                b.extend_from_slice(&data);
                first = None;
                buf = Some(b);
            }
            (_, Some(b)) => b.extend_from_slice(&data),
        }
    }
    Ok(match (first, buf) {
        (_, Some(b)) => b.freeze(),
        (Some(f), None) => f,
        (None, None) => Bytes::new(),
    })
}

/// Reads a JSON body within `limits` and decodes it; an empty body, or `null`, decodes as `{}`.
pub async fn read_json<T, B>(
    body: B,
    headers: &HeaderMap,
    limits: &BodyLimits,
) -> Result<T, JsonError>
where
    T: serde::de::DeserializeOwned,
    B: http_body::Body<Data = Bytes> + Unpin,
    B::Error: std::fmt::Display,
{
    let bytes = read(body, headers, limits).await?;
    decode_json(&bytes)
}

/// Decodes a JSON body already read; an empty body, or `null`, decodes as `{}` (no fields).
/// Every document is an object: serde would otherwise read a struct from an array of its
/// fields in order (`[null, null]`), a form no client means.
pub fn decode_json<T: serde::de::DeserializeOwned>(bytes: &[u8]) -> Result<T, JsonError> {
    let trimmed = bytes.trim_ascii();
    let bytes: &[u8] = if trimmed.is_empty() || trimmed == b"null" {
        b"{}"
    } else if trimmed.first() == Some(&b'[') {
        return Err(JsonError::Invalid("the body must be a JSON object".into()));
    } else {
        bytes
    };
    refuse_duplicate_keys(bytes)?;
    // The path names the field at fault (`mode: unknown variant…`), not just a column.
    let mut de = serde_json::Deserializer::from_slice(bytes);
    let value = serde_path_to_error::deserialize(&mut de).map_err(|e| {
        let path = e.path().to_string();
        let sent = number_as_sent(bytes, e.path());
        let inner = e.into_inner();
        let syntax = !inner.is_data();
        // A field's own message needs no position: the path names the field.
        let text = inner.to_string();
        let position = format!(" at line {} column {}", inner.line(), inner.column());
        let text = if syntax {
            text
        } else {
            text.strip_suffix(&position)
                .map(str::to_owned)
                .unwrap_or(text)
        };
        // A number serde read as a double is shown as the client wrote it, not as the
        // double's digits (`18446744073709551616`, not `18446744073709552000`).
        let text = match sent {
            Some((raw, shown)) if raw != shown => text.replace(&shown, &raw),
            _ => text,
        };
        let message = if path == "." || path.is_empty() {
            text
        } else {
            format!("{path}: {text}")
        };
        if syntax {
            JsonError::Syntax(format!("invalid JSON body: {message}"))
        } else {
            JsonError::Invalid(message)
        }
    })?;
    de.end()
        .map_err(|e| JsonError::Syntax(format!("invalid JSON body: {e}")))?;
    Ok(value)
}

/// The number at `path` in `bytes` as the client wrote it, and as a double prints it; `None`
/// when the value there is not a number.
fn number_as_sent(bytes: &[u8], path: &serde_path_to_error::Path) -> Option<(String, String)> {
    use serde_json::value::RawValue;
    use serde_path_to_error::Segment;
    let mut raw: &RawValue = serde_json::from_slice(bytes).ok()?;
    for segment in path.iter() {
        raw = match segment {
            Segment::Map { key } => {
                let map: std::collections::HashMap<String, &RawValue> =
                    serde_json::from_str(raw.get()).ok()?;
                map.get(key.as_str()).copied()?
            }
            Segment::Seq { index } => {
                let list: Vec<&RawValue> = serde_json::from_str(raw.get()).ok()?;
                list.get(*index).copied()?
            }
            _ => return None,
        };
    }
    let text = raw.get().trim();
    if !text.starts_with(|c: char| c == '-' || c.is_ascii_digit()) {
        return None;
    }
    let double: f64 = text.parse().ok()?;
    Some((text.to_owned(), double.to_string()))
}

/// The first key found twice in one object of a JSON document, at any depth (`None` when
/// there is none; a document that is not JSON is left to the caller's parser). Parsers
/// disagree on which of two equal keys counts: serde keeps the last, others the first, so a
/// document a JSON pointer or a filter reads (an event type, a status) could route one way
/// here and mean another to its receiver. Keys compare unescaped: `"a"` and `"\u0061"` are one.
pub fn duplicate_key(bytes: &[u8]) -> Option<String> {
    use serde::de::{DeserializeSeed, MapAccess, SeqAccess, Visitor};
    use std::borrow::Cow;
    use std::collections::HashSet;

    /// Visits a document, remembering the first repeated key.
    struct Scan<'s>(&'s mut Option<String>);

    /// A key, borrowed from the document unless it holds an escape (serde's own `Cow`
    /// always copies).
    struct Key;

    impl<'de> DeserializeSeed<'de> for Key {
        type Value = Cow<'de, str>;
        fn deserialize<D: serde::Deserializer<'de>>(self, d: D) -> Result<Cow<'de, str>, D::Error> {
            d.deserialize_str(self)
        }
    }

    impl<'de> Visitor<'de> for Key {
        type Value = Cow<'de, str>;
        fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            f.write_str("a key")
        }
        fn visit_borrowed_str<E>(self, v: &'de str) -> Result<Cow<'de, str>, E> {
            Ok(Cow::Borrowed(v))
        }
        fn visit_str<E>(self, v: &str) -> Result<Cow<'de, str>, E> {
            Ok(Cow::Owned(v.to_owned()))
        }
    }

    impl<'de> DeserializeSeed<'de> for Scan<'_> {
        type Value = ();
        fn deserialize<D: serde::Deserializer<'de>>(self, d: D) -> Result<(), D::Error> {
            d.deserialize_any(self)
        }
    }

    impl<'de> Visitor<'de> for Scan<'_> {
        type Value = ();
        fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            f.write_str("JSON")
        }
        fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<(), A::Error> {
            let mut seen: HashSet<Cow<'de, str>> = HashSet::new();
            while let Some(key) = map.next_key_seed(Key)? {
                if self.0.is_none() && seen.contains(&key) {
                    *self.0 = Some(key.into_owned());
                } else {
                    seen.insert(key);
                }
                map.next_value_seed(Scan(&mut *self.0))?;
            }
            Ok(())
        }
        fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<(), A::Error> {
            while seq.next_element_seed(Scan(&mut *self.0))?.is_some() {}
            Ok(())
        }
        fn visit_bool<E>(self, _: bool) -> Result<(), E> {
            Ok(())
        }
        fn visit_i64<E>(self, _: i64) -> Result<(), E> {
            Ok(())
        }
        fn visit_u64<E>(self, _: u64) -> Result<(), E> {
            Ok(())
        }
        fn visit_f64<E>(self, _: f64) -> Result<(), E> {
            Ok(())
        }
        fn visit_str<E>(self, _: &str) -> Result<(), E> {
            Ok(())
        }
        fn visit_unit<E>(self) -> Result<(), E> {
            Ok(())
        }
    }

    let mut found = None;
    let mut de = serde_json::Deserializer::from_slice(bytes);
    // Deeply nested documents are refused by serde_json's recursion limit, as by the parse.
    let _ = Scan(&mut found).deserialize(&mut de);
    found
}

/// Why a body was not read as JSON by [`parse_unique`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Unreadable {
    /// Not JSON at all (serde_json's message).
    NotJson(String),
    /// A key stands twice in one object (the first such key).
    Duplicate(String),
}

/// Parses a JSON document into a value, in one pass, refusing a key that stands twice in one
/// object (see [`duplicate_key`]): what a schema or a program reads is what the sender meant.
pub fn parse_unique(bytes: &[u8]) -> Result<serde_json::Value, Unreadable> {
    use serde::de::{DeserializeSeed, MapAccess, SeqAccess, Visitor};
    use serde_json::map::Entry;
    use serde_json::{Map, Value};

    /// Builds a value, noting the first repeated key.
    struct Build<'s>(&'s mut Option<String>);

    impl<'de> DeserializeSeed<'de> for Build<'_> {
        type Value = Value;
        fn deserialize<D: serde::Deserializer<'de>>(self, d: D) -> Result<Value, D::Error> {
            d.deserialize_any(self)
        }
    }

    impl<'de> Visitor<'de> for Build<'_> {
        type Value = Value;
        fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            f.write_str("JSON")
        }
        fn visit_bool<E>(self, v: bool) -> Result<Value, E> {
            Ok(Value::Bool(v))
        }
        fn visit_i64<E>(self, v: i64) -> Result<Value, E> {
            Ok(Value::from(v))
        }
        fn visit_u64<E>(self, v: u64) -> Result<Value, E> {
            Ok(Value::from(v))
        }
        fn visit_f64<E>(self, v: f64) -> Result<Value, E> {
            Ok(Value::from(v))
        }
        fn visit_str<E>(self, v: &str) -> Result<Value, E> {
            Ok(Value::String(v.to_owned()))
        }
        fn visit_string<E>(self, v: String) -> Result<Value, E> {
            Ok(Value::String(v))
        }
        fn visit_unit<E>(self) -> Result<Value, E> {
            Ok(Value::Null)
        }
        fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Value, A::Error> {
            let mut out = Vec::with_capacity(seq.size_hint().unwrap_or(0));
            while let Some(v) = seq.next_element_seed(Build(&mut *self.0))? {
                out.push(v);
            }
            Ok(Value::Array(out))
        }
        fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Value, A::Error> {
            let mut out = Map::new();
            while let Some(key) = map.next_key::<String>()? {
                let value = map.next_value_seed(Build(&mut *self.0))?;
                match out.entry(key) {
                    Entry::Vacant(e) => {
                        e.insert(value);
                    }
                    Entry::Occupied(mut e) => {
                        if self.0.is_none() {
                            *self.0 = Some(e.key().clone());
                        }
                        e.insert(value);
                    }
                }
            }
            Ok(Value::Object(out))
        }
    }

    let mut repeated = None;
    let mut de = serde_json::Deserializer::from_slice(bytes);
    let value = Build(&mut repeated)
        .deserialize(&mut de)
        .and_then(|v| de.end().map(|()| v))
        .map_err(|e| Unreadable::NotJson(e.to_string()))?;
    match repeated {
        Some(key) => Err(Unreadable::Duplicate(key)),
        None => Ok(value),
    }
}

/// Refuses a JSON document that holds a key twice in one object (see [`duplicate_key`]).
pub fn refuse_duplicate_keys(bytes: &[u8]) -> Result<(), JsonError> {
    match duplicate_key(bytes) {
        None => Ok(()),
        Some(key) => Err(JsonError::Syntax(format!(
            "invalid JSON body: the key {key:?} appears twice in one object; readers disagree on which one counts, so it is refused"
        ))),
    }
}

/// Why a JSON body was not decoded.
#[derive(Debug, thiserror::Error)]
pub enum JsonError {
    #[error(transparent)]
    Body(#[from] BodyError),
    /// Not JSON at all.
    #[error("{0}")]
    Syntax(String),
    /// JSON whose fields break the document's rules; the message names the field.
    #[error("{0}")]
    Invalid(String),
}

#[cfg(test)]
mod tests {
    use super::*;
    use futures_util::stream;
    use http_body::Frame;
    use http_body_util::StreamBody;

    fn limits(max: u64) -> BodyLimits {
        BodyLimits {
            max_bytes: max,
            idle: Duration::from_millis(200),
            total: Duration::from_secs(5),
        }
    }

    fn chunks(
        parts: Vec<&'static [u8]>,
    ) -> StreamBody<impl futures_util::Stream<Item = Result<Frame<Bytes>, std::io::Error>> + Unpin>
    {
        StreamBody::new(stream::iter(
            parts
                .into_iter()
                .map(|p| Ok(Frame::data(Bytes::from_static(p)))),
        ))
    }

    #[test]
    fn numbers_are_reported_as_sent() {
        #[derive(Debug, serde::Deserialize)]
        #[allow(dead_code)]
        struct Limit {
            #[serde(deserialize_with = "crate::model::number::whole")]
            burst: u64,
        }
        #[derive(Debug, serde::Deserialize)]
        #[allow(dead_code)]
        struct Doc {
            rate_limit: Limit,
        }
        for sent in [
            "18446744073709551616",
            "1e300",
            "123456789012345678901234567890.5",
        ] {
            let body = format!(r#"{{"rate_limit": {{"burst": {sent}}}}}"#);
            let r = decode_json::<Doc>(body.as_bytes());
            let Err(JsonError::Invalid(m)) = r else {
                panic!("{sent}: {r:?}");
            };
            assert!(
                m.starts_with(&format!("rate_limit.burst: {sent} is not a whole number")),
                "{m}"
            );
        }
    }

    #[test]
    fn parse_unique_reads_json_once_and_refuses_a_repeated_key() {
        assert_eq!(
            parse_unique(br#"{"a":[1,{"b":2.5}],"c":null}"#),
            Ok(serde_json::json!({"a": [1, {"b": 2.5}], "c": null}))
        );
        assert_eq!(
            parse_unique(br#"{"t":"a","\u0074":"b"}"#),
            Err(Unreadable::Duplicate("t".into()))
        );
        assert_eq!(
            parse_unique(br#"[{"x":{"k":1,"k":2}}]"#),
            Err(Unreadable::Duplicate("k".into()))
        );
        assert!(matches!(parse_unique(b"{} x"), Err(Unreadable::NotJson(_))));
        assert!(matches!(parse_unique(b"\xff"), Err(Unreadable::NotJson(_))));
        assert_eq!(
            parse_unique(br#"{"a":1,"A":2}"#).map(|v| v.as_object().map(|o| o.len())),
            Ok(Some(2))
        );
    }

    #[test]
    fn duplicate_keys_are_found_at_any_depth_and_unescaped() {
        assert_eq!(
            duplicate_key(br#"{"type":"a","type":"b"}"#).as_deref(),
            Some("type")
        );
        assert_eq!(
            duplicate_key(br#"{"t":"a","\u0074":"b"}"#).as_deref(),
            Some("t")
        );
        assert_eq!(
            duplicate_key(br#"[{"x":{"y":[1,{"k":1,"k":2}]}}]"#).as_deref(),
            Some("k")
        );
        assert_eq!(
            duplicate_key(br#"{"a":{"k":1},"b":{"k":1}}"#),
            None,
            "same key in two objects"
        );
        assert_eq!(duplicate_key(br#"{"a":1,"A":2}"#), None);
        assert_eq!(duplicate_key(b"not json"), None);
        let r = decode_json::<serde_json::Value>(br#"{"status":"up","status":"down"}"#);
        assert!(matches!(r, Err(JsonError::Syntax(m)) if m.contains("\"status\" appears twice")));
    }

    #[tokio::test]
    async fn joins_chunks_within_cap() -> anyhow::Result<()> {
        let b = read(
            chunks(vec![b"ab", b"cd", b"e"]),
            &HeaderMap::new(),
            &limits(5),
        )
        .await?;
        assert_eq!(&b[..], b"abcde");
        Ok(())
    }

    #[tokio::test]
    async fn one_byte_over_is_too_large() {
        let r = read(chunks(vec![b"abc", b"def"]), &HeaderMap::new(), &limits(5)).await;
        assert!(matches!(r, Err(BodyError::TooLarge { limit: 5 })));
    }

    #[tokio::test]
    async fn declared_length_is_refused_before_reading() {
        let mut h = HeaderMap::new();
        h.insert(
            http::header::CONTENT_LENGTH,
            http::HeaderValue::from_static("6"),
        );
        let r = read(chunks(vec![]), &h, &limits(5)).await;
        assert!(matches!(r, Err(BodyError::TooLarge { .. })));
    }

    #[tokio::test(start_paused = true)]
    async fn stalled_body_times_out() {
        let stalled = StreamBody::new(stream::pending::<Result<Frame<Bytes>, std::io::Error>>());
        let r = read(stalled, &HeaderMap::new(), &limits(5)).await;
        assert!(matches!(r, Err(BodyError::Timeout)));
    }

    #[derive(Debug, serde::Deserialize)]
    #[serde(deny_unknown_fields)]
    struct Doc {
        name: Option<String>,
        size: Option<u64>,
    }

    #[test]
    fn empty_and_null_bodies_are_an_empty_object() -> anyhow::Result<()> {
        for body in [&b""[..], b"  ", b"null", b" null\n"] {
            let doc: Doc = decode_json(body)?;
            assert!(doc.name.is_none() && doc.size.is_none());
        }
        Ok(())
    }

    #[test]
    fn an_array_is_not_a_document() {
        // serde would read `Doc { name: None, size: None }` out of it.
        let r = decode_json::<Doc>(b" [null, null]");
        assert!(matches!(r, Err(JsonError::Invalid(m)) if m.contains("JSON object")));
    }

    #[test]
    fn field_errors_name_the_field_without_a_position() {
        let r = decode_json::<Doc>(br#"{"size": "big"}"#);
        match r {
            Err(JsonError::Invalid(m)) => {
                assert!(m.starts_with("size: "), "{m}");
                assert!(!m.contains("line"), "{m}");
            }
            other => panic!("expected a field error, got {other:?}"),
        }
        let r = decode_json::<Doc>(br#"{"colour": 1}"#);
        assert!(matches!(r, Err(JsonError::Invalid(m)) if m.contains("colour")));
    }

    #[test]
    fn broken_json_and_trailing_bytes_are_syntax_errors() {
        for body in [&br#"{"name": "#[..], br#"{"name": "a"} x"#] {
            let r = decode_json::<Doc>(body);
            assert!(matches!(r, Err(JsonError::Syntax(_))), "{r:?}");
        }
    }
}
