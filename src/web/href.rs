//! Links between pages: path segments and query strings built so that nothing a user typed
//! can leave the place it was put in.

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
