//! What an event keeps of its request besides the body: its `Content-Type` and the request
//! headers its tenant chose to keep (`keep_headers`), packed into one value.
//!
//! The packed form is the content type, then one line per kept header, `name: value`, each line
//! starting with `\n`: `application/json\nx-github-event: push`. An event without kept headers
//! packs to its content type alone, byte for byte as before kept headers existed, so every
//! place that stores the content type (the stream entry's `ct`, the event record's `ct`, the
//! log store's `content_type` column) stores the packed form unchanged, and an event without a
//! content type but with headers starts with `\n`. It is unambiguous because an HTTP header
//! value cannot hold a line feed (hyper refuses it, as RFC 9110 does). A gateway of an earlier
//! version that reads a packed value takes it all for the content type, which it cannot send
//! as a header value: it leaves the `Content-Type` out, nothing worse.
//!
//! The gateway's own notes about the request ride the same way, on lines whose name starts
//! with `:` (no header name can): `:schema-errors: [...]` holds what a `warn` catalogue found
//! wrong with the body, as compact JSON (which holds no line feed); `:traceparent: 00-…` the
//! W3C trace context of the request's `ingest` span, when traces are exported, so that every
//! delivery of the event continues its trace.
//!
//! Filters and views unpack it with [`content_type`], [`headers`] and [`schema_errors`].

use bytes::Bytes;

/// Most headers a tenant keeps.
pub const MAX_KEPT: usize = 20;

/// Longest value of one kept header (bytes); a longer one is cut here.
pub const MAX_VALUE_BYTES: usize = 1024;

/// The note holding schema errors.
const SCHEMA_ERRORS: &[u8] = b":schema-errors";
/// The note holding the trace context the event's spans continue.
const TRACEPARENT: &[u8] = b":traceparent";

/// Packs a content type, kept headers (lowercase names, values as sent) and the schema errors
/// of a `warn` catalogue (compact JSON) into one value; `None` when there is none of them.
pub fn pack<'a>(
    content_type: Option<&[u8]>,
    headers: impl IntoIterator<Item = (&'a str, &'a [u8])>,
    schema_errors: Option<&str>,
) -> Option<Bytes> {
    let mut out = content_type.map(<[u8]>::to_vec).unwrap_or_default();
    let mut line = |name: &[u8], value: &[u8]| {
        out.push(b'\n');
        out.extend_from_slice(name);
        out.extend_from_slice(b": ");
        out.extend_from_slice(value);
    };
    for (name, value) in headers {
        line(name.as_bytes(), &value[..value.len().min(MAX_VALUE_BYTES)]);
    }
    if let Some(errors) = schema_errors {
        // Compact JSON escapes every line feed; a stray one would only cut the note short.
        line(SCHEMA_ERRORS, errors.replace('\n', " ").as_bytes());
    }
    (!out.is_empty()).then(|| Bytes::from(out))
}

/// Every `name: value` line after the content type.
fn lines(packed: &[u8]) -> impl Iterator<Item = (&[u8], &[u8])> {
    packed.split(|b| *b == b'\n').skip(1).filter_map(|line| {
        let colon = line.iter().skip(1).position(|b| *b == b':')? + 1;
        let value = line.get(colon + 1..).unwrap_or_default();
        let value = value.strip_prefix(b" ").unwrap_or(value);
        Some((&line[..colon], value))
    })
}

/// The content type of a packed value; `None` when the request had none.
pub fn content_type(packed: &[u8]) -> Option<&[u8]> {
    let end = packed
        .iter()
        .position(|b| *b == b'\n')
        .unwrap_or(packed.len());
    (end > 0).then(|| &packed[..end])
}

/// The content type of a packed value read as text.
pub fn content_type_text(packed: &str) -> Option<&str> {
    let first = packed.split('\n').next().unwrap_or_default();
    (!first.is_empty()).then_some(first)
}

/// The kept headers of a packed value, in the order they were kept: `(name, value)`.
pub fn headers(packed: &[u8]) -> impl Iterator<Item = (&[u8], &[u8])> {
    lines(packed).filter(|(name, _)| !name.starts_with(b":"))
}

/// The schema errors a `warn` catalogue noted, as the JSON they were packed as.
pub fn schema_errors(packed: &[u8]) -> Option<&[u8]> {
    lines(packed)
        .find(|(name, _)| *name == SCHEMA_ERRORS)
        .map(|(_, value)| value)
}

/// `packed` with the trace context its event continues (a `traceparent` value, which holds no
/// line feed).
pub fn with_traceparent(packed: Option<Bytes>, traceparent: &str) -> Option<Bytes> {
    let mut out = packed.map(|b| b.to_vec()).unwrap_or_default();
    out.push(b'\n');
    out.extend_from_slice(TRACEPARENT);
    out.extend_from_slice(b": ");
    out.extend_from_slice(traceparent.replace('\n', "").as_bytes());
    Some(Bytes::from(out))
}

/// The trace context noted with the event, if traces were exported when it came.
pub fn traceparent(packed: &[u8]) -> Option<&[u8]> {
    lines(packed)
        .find(|(name, _)| *name == TRACEPARENT)
        .map(|(_, value)| value)
}

/// The kept headers as a JSON object of name → value, as filters, transformations and views
/// read them: a header sent several times is one value, joined with `, ` (RFC 9110 § 5.3);
/// bytes that are not UTF-8 become U+FFFD.
pub fn headers_json(packed: &[u8]) -> serde_json::Map<String, serde_json::Value> {
    let mut out = serde_json::Map::new();
    for (name, value) in headers(packed) {
        let name = String::from_utf8_lossy(name).into_owned();
        let value = String::from_utf8_lossy(value);
        match out.get_mut(&name) {
            Some(serde_json::Value::String(joined)) => {
                joined.push_str(", ");
                joined.push_str(&value);
            }
            _ => {
                out.insert(name, serde_json::Value::String(value.into_owned()));
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_trace_context_rides_as_a_note_unseen_by_headers() {
        let tp = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";
        let packed = with_traceparent(
            pack(Some(b"application/json"), [("x-a", &b"1"[..])], None),
            tp,
        )
        .unwrap();
        assert_eq!(traceparent(&packed), Some(tp.as_bytes()));
        assert_eq!(content_type(&packed), Some(&b"application/json"[..]));
        assert_eq!(headers(&packed).count(), 1);
        let bare = with_traceparent(None, tp).unwrap();
        assert_eq!(content_type(&bare), None);
        assert_eq!(traceparent(&bare), Some(tp.as_bytes()));
        assert_eq!(traceparent(b"application/json"), None);
    }

    #[test]
    fn without_headers_the_packed_value_is_the_content_type() {
        let packed = pack(Some(b"application/json"), [], None);
        assert_eq!(packed.as_deref(), Some(&b"application/json"[..]));
        assert_eq!(pack(None, [], None), None);
        assert_eq!(
            content_type(b"text/plain; charset=utf-8"),
            Some(&b"text/plain; charset=utf-8"[..])
        );
        assert_eq!(content_type(b""), None);
        assert_eq!(headers(b"application/json").count(), 0);
    }

    #[test]
    fn headers_round_trip_with_every_byte_a_header_value_may_hold() {
        // Every byte hyper lets into a header value: tab, 0x20–0x7E, 0x80–0xFF.
        let value: Vec<u8> = (0u8..=255)
            .filter(|b| *b == b'\t' || (0x20..0x7f).contains(b) || *b >= 0x80)
            .collect();
        let packed = pack(
            None,
            [
                ("x-github-event", &b"push"[..]),
                ("x-raw", &value[..]),
                ("x-github-event", b"ping"),
            ],
            Some(r#"[{"pointer":"/a","message":"x: y"}]"#),
        );
        let packed = packed.unwrap_or_default();
        assert_eq!(content_type(&packed), None);
        let kept: Vec<_> = headers(&packed).collect();
        assert_eq!(kept.len(), 3);
        assert_eq!(
            schema_errors(&packed),
            Some(&br#"[{"pointer":"/a","message":"x: y"}]"#[..])
        );
        assert_eq!(schema_errors(b"a/b\nx-a: b"), None);
        assert_eq!(kept[1], (&b"x-raw"[..], &value[..]));
        let json = headers_json(&packed);
        assert_eq!(json["x-github-event"], "push, ping");
        assert!(
            json["x-raw"]
                .as_str()
                .is_some_and(|v| v.contains('\u{FFFD}'))
        );
        assert_eq!(content_type_text("\nx-a: b"), None);
        assert_eq!(content_type_text("a/b\nx-a: b"), Some("a/b"));
    }

    #[test]
    fn long_values_are_cut() {
        let long = vec![b'a'; MAX_VALUE_BYTES + 10];
        let packed = pack(Some(b"a/b"), [("x-long", &long[..])], None).unwrap_or_default();
        let (_, v) = headers(&packed).next().unwrap_or_default();
        assert_eq!(v.len(), MAX_VALUE_BYTES);
    }
}
