//! What the log store writes into its `text` columns: [`PgText`], text PostgreSQL cannot refuse.
//!
//! PostgreSQL's `text` takes valid UTF-8 without NUL. Rust strings are valid UTF-8 already; a
//! NUL is what a sender (a header value, a signal's message) or a receiver (its response) can
//! still put in one, and a single refused row would otherwise stop the shipping of its whole
//! shard. Every text column is bound as a [`PgText`], whose only constructors replace NUL with
//! U+FFFD, so no row of ours is refused for its characters. Bodies are `bytea`, byte for byte.

use bytes::BytesMut;
use tokio_postgres::types::{IsNull, ToSql, Type, to_sql_checked};

use crate::model::text::without_nul;

/// Text without NUL, as a `text` parameter.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PgText(String);

impl PgText {
    /// `text` with each NUL replaced by U+FFFD.
    pub fn new(text: &str) -> PgText {
        PgText(without_nul(text).into_owned())
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl From<&str> for PgText {
    fn from(text: &str) -> PgText {
        PgText::new(text)
    }
}

impl From<&String> for PgText {
    fn from(text: &String) -> PgText {
        PgText::new(text)
    }
}

impl ToSql for PgText {
    fn to_sql(
        &self,
        ty: &Type,
        out: &mut BytesMut,
    ) -> Result<IsNull, Box<dyn std::error::Error + Sync + Send>> {
        self.0.as_str().to_sql(ty, out)
    }

    fn accepts(ty: &Type) -> bool {
        <&str as ToSql>::accepts(ty)
    }

    to_sql_checked!();
}

/// An optional text column's value.
pub fn opt(text: Option<&str>) -> Option<PgText> {
    text.map(PgText::new)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nul_is_replaced_visibly_and_nothing_else_changes() {
        assert_eq!(PgText::new("ok\0").as_str(), "ok\u{FFFD}");
        assert_eq!(PgText::new("\0\0").as_str(), "\u{FFFD}\u{FFFD}");
        let every: String = (1u32..0x800).filter_map(char::from_u32).collect();
        assert_eq!(PgText::new(&every).as_str(), every);
        assert_eq!(opt(None), None);
    }
}
