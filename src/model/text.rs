//! Texts with rules: display names, external ids, HTTP header names and values, and the
//! text made of bytes a sender or a receiver controls.
//!
//! Lengths count characters (Unicode scalar values), as JSON Schema's `maxLength` does, so the
//! published schema and the server agree on every string.
//!
//! Names and external ids refuse what makes one text pass for another: controls, bidirectional
//! controls (which reorder what is shown) and invisible characters. External ids are unique in
//! a normalised form ([`ExternalId::key`]: NFKC, case-folded), and a word of one may not mix
//! Latin, Greek and Cyrillic letters (`aсme` with a Cyrillic `с`), so no two of them read alike.

use std::borrow::Cow;
use std::fmt;

use serde::Deserialize;

use super::invalid::Invalid;
use super::schema::string_schema;

/// Characters never allowed in a name or an external id: the C0 and C1 controls and DEL, the
/// bidirectional controls, and the invisible characters that are not joiners.
const CONTROL: &str = r"\u0000-\u001F\u007F-\u009F\u00AD\u061C\u115F\u1160\u180E\u200B\u200E\u200F\u202A-\u202E\u2060-\u2064\u2066-\u2069\u3164\uFEFF\uFFA0";
/// What an external id refuses besides [`CONTROL`]: the zero-width joiners, which names keep
/// (Persian, Indic scripts and emoji sequences need them) but an identifier never does.
const JOINERS: &str = r"\u200C\u200D";

/// Whether `c` is one of [`CONTROL`]'s characters.
fn is_refused(c: char) -> bool {
    c.is_control()
        || matches!(c as u32,
            0xAD | 0x61C | 0x115F | 0x1160 | 0x180E | 0x200B | 0x200E | 0x200F
            | 0x202A..=0x202E | 0x2060..=0x2064 | 0x2066..=0x2069 | 0x3164 | 0xFEFF | 0xFFA0)
}

/// Whether `c` is one of [`JOINERS`]' characters.
fn is_joiner(c: char) -> bool {
    matches!(c, '\u{200C}' | '\u{200D}')
}
/// Characters that do not make a name non-blank: controls and Unicode white space.
const BLANK: &str = r"\u0000-\u0020\u007F-\u00A0\u1680\u2000-\u200A\u2028\u2029\u202F\u205F\u3000";

/// Whether `c` is one of [`BLANK`]'s characters.
fn is_blank(c: char) -> bool {
    c.is_control() || c.is_whitespace()
}

/// Longest display name.
pub const MAX_NAME: usize = 200;
/// Longest external id.
pub const MAX_EXTERNAL_ID: usize = 256;

fn name_pattern() -> String {
    format!("^[^{CONTROL}]*[^{BLANK}{CONTROL}][^{CONTROL}]*$")
}

fn external_id_pattern() -> String {
    format!("^[^{CONTROL}{JOINERS}]+$")
}

/// A display name: 1 to 200 characters, no control, bidirectional control or invisible
/// characters (joiners aside), not only white space.
#[derive(Clone, PartialEq, Eq, serde::Serialize)]
#[serde(transparent)]
pub struct Name(String);

impl Name {
    pub fn parse(text: &str) -> Result<Name, Invalid> {
        let n = text.chars().count();
        if n == 0 || n > MAX_NAME || text.chars().all(is_blank) {
            return Err(Invalid::new(format!(
                "must be 1 to {MAX_NAME} printable characters, not all blank"
            )));
        }
        if let Some(c) = text.chars().find(|c| is_refused(*c)) {
            return Err(refused(c));
        }
        Ok(Name(text.to_owned()))
    }

    /// A name as a record of an earlier version may hold it: the rules of then (no control
    /// characters), so a name stored before invisible characters were refused still reads.
    pub fn stored(text: &str) -> Result<Name, Invalid> {
        if text.is_empty() || text.chars().any(char::is_control) {
            return Err(Invalid::new("must be printable characters"));
        }
        Ok(Name(text.to_owned()))
    }

    /// [`Name::stored`] for serde, on stored documents.
    pub fn deserialize_stored<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Name, D::Error> {
        let text = <std::borrow::Cow<'de, str>>::deserialize(d)?;
        Name::stored(&text).map_err(serde::de::Error::custom)
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// An external id: the tenant's id in the operator's own systems (often a company registration
/// number): 1 to 256 characters, no control, bidirectional control or invisible characters, no
/// word mixing Latin, Greek and Cyrillic letters. Stored sealed, unique by [`ExternalId::key`].
#[derive(Clone, PartialEq, Eq, serde::Serialize)]
#[serde(transparent)]
pub struct ExternalId(String);

impl ExternalId {
    pub fn parse(text: &str) -> Result<ExternalId, Invalid> {
        let n = text.chars().count();
        if n == 0 || n > MAX_EXTERNAL_ID {
            return Err(Invalid::new(format!(
                "must be 1 to {MAX_EXTERNAL_ID} printable characters"
            )));
        }
        if let Some(c) = text.chars().find(|c| is_refused(*c) || is_joiner(*c)) {
            return Err(refused(c));
        }
        if let Some(word) = mixed_script_word(text) {
            return Err(Invalid::new(format!(
                "the word {word:?} mixes Latin, Greek or Cyrillic letters, so it can pass for another id"
            )));
        }
        Ok(ExternalId(text.to_owned()))
    }

    /// An external id as a record of an earlier version may hold it (see [`Name::stored`]).
    pub fn stored(text: &str) -> Result<ExternalId, Invalid> {
        if text.is_empty() || text.chars().any(char::is_control) {
            return Err(Invalid::new("must be printable characters"));
        }
        Ok(ExternalId(text.to_owned()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// The form uniqueness compares: NFKC, case-folded, NFKC again (Unicode's
    /// `toNFKC_Casefold` in effect), so `ACME`, `acme` and fullwidth `ａｃｍｅ` are one id, and
    /// `acmé` is one id whether it was sent composed or decomposed.
    pub fn key(&self) -> String {
        use unicode_normalization::UnicodeNormalization;
        let folded = caseless::default_case_fold_str(&self.0.nfkc().collect::<String>());
        folded.nfkc().collect()
    }
}

/// The refusal of one character, named by its code point (it may not show).
fn refused(c: char) -> Invalid {
    Invalid::new(format!(
        "must not hold U+{:04X}: control, bidirectional control and invisible characters make one text pass for another",
        c as u32
    ))
}

/// The first word of `text` whose letters come from more than one of the Latin, Greek and
/// Cyrillic scripts (whose letters look alike), if any.
fn mixed_script_word(text: &str) -> Option<&str> {
    use unicode_script::{Script, UnicodeScript};
    text.split(|c: char| !c.is_alphanumeric()).find(|word| {
        let mut seen: Option<Script> = None;
        word.chars().any(|c| {
            let script = c.script();
            if !matches!(script, Script::Latin | Script::Greek | Script::Cyrillic) {
                return false;
            }
            match seen {
                None => {
                    seen = Some(script);
                    false
                }
                Some(s) => s != script,
            }
        })
    })
}

/// Text made of bytes a sender or a receiver controls, safe to store and show anywhere: invalid
/// UTF-8 and NUL become U+FFFD, so a reader sees that something was replaced (PostgreSQL's
/// `text` refuses NUL, and a NUL cuts C strings short).
pub fn visible_text(bytes: &[u8]) -> String {
    match String::from_utf8_lossy(bytes) {
        Cow::Borrowed(text) => without_nul(text).into_owned(),
        Cow::Owned(text) => match without_nul(&text) {
            Cow::Borrowed(_) => text,
            Cow::Owned(clean) => clean,
        },
    }
}

/// `text` with each NUL replaced by U+FFFD.
pub fn without_nul(text: &str) -> Cow<'_, str> {
    if text.contains('\0') {
        Cow::Owned(text.replace('\0', "\u{FFFD}"))
    } else {
        Cow::Borrowed(text)
    }
}

macro_rules! text_impls {
    ($name:ident, $schema:expr) => {
        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(&self.0)
            }
        }

        impl fmt::Debug for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                write!(f, "{}({:?})", stringify!($name), self.0)
            }
        }

        impl<'de> serde::Deserialize<'de> for $name {
            fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<$name, D::Error> {
                let text = <std::borrow::Cow<'de, str>>::deserialize(d)?;
                $name::parse(&text).map_err(serde::de::Error::custom)
            }
        }

        impl utoipa::PartialSchema for $name {
            fn schema() -> utoipa::openapi::RefOr<utoipa::openapi::schema::Schema> {
                $schema
            }
        }

        impl utoipa::ToSchema for $name {
            fn name() -> std::borrow::Cow<'static, str> {
                stringify!($name).into()
            }
        }
    };
}

text_impls!(
    Name,
    string_schema(
        &name_pattern(),
        1,
        MAX_NAME,
        "A display name: printable characters, not all blank."
    )
);
text_impls!(
    ExternalId,
    string_schema(
        &external_id_pattern(),
        1,
        MAX_EXTERNAL_ID,
        "The tenant's id in the operator's own systems; unique."
    )
);

/// The characters of an HTTP token (header names), RFC 9110.
pub const HEADER_NAME_PATTERN: &str = r"^[!#$%&'*+.^_`|~0-9A-Za-z-]+$";
/// Longest custom header name.
pub const MAX_HEADER_NAME: usize = 256;

/// Checks an HTTP header name.
pub fn check_header_name(name: &str) -> Result<(), Invalid> {
    let token = !name.is_empty()
        && name.len() <= MAX_HEADER_NAME
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"!#$%&'*+.^_`|~-".contains(&b));
    if token {
        Ok(())
    } else {
        Err(Invalid::new(format!(
            "{name:?} is not a valid HTTP header name"
        )))
    }
}

/// What an HTTP header value may hold: anything but control characters (tab aside).
pub const HEADER_VALUE_CHARS: &str = r"[^\u0000-\u0008\u000A-\u001F\u007F]";

/// Checks an HTTP header value of at most `max` characters (`min` at least).
pub fn check_header_value(value: &str, min: usize, max: usize) -> Result<(), Invalid> {
    let n = value.chars().count();
    let ok = n >= min
        && n <= max
        && value
            .chars()
            .all(|c| c == '\t' || !(c.is_ascii_control() || c == '\u{7f}'));
    if ok {
        Ok(())
    } else {
        Err(Invalid::new(format!(
            "must be {min} to {max} characters with no control characters"
        )))
    }
}

/// Longest bearer or URL token.
pub const MAX_TOKEN: usize = 256;

/// Checks the text of a bearer or URL token: visible ASCII only, at most 256 bytes. Tokens
/// the gateway makes are longer than any id and of base64url; tokens declared in the config
/// may be anything of this alphabet.
pub fn check_token(token: &str) -> Result<(), Invalid> {
    if token.is_empty() || token.len() > MAX_TOKEN || !token.bytes().all(|b| b.is_ascii_graphic()) {
        return Err(Invalid::new(format!(
            "must be 1 to {MAX_TOKEN} visible ASCII characters"
        )));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names() {
        assert!(Name::parse("Açme Ltda.").is_ok());
        assert!(Name::parse(" ").is_err());
        assert!(Name::parse("\u{3000}").is_err());
        assert!(Name::parse("a\nb").is_err());
        assert!(Name::parse("").is_err());
        assert!(Name::parse(&"é".repeat(200)).is_ok());
        assert!(Name::parse(&"é".repeat(201)).is_err());
        assert!(ExternalId::parse(" x ").is_ok());
        assert!(ExternalId::parse("").is_err());
    }

    #[test]
    fn external_ids_compare_normalised_and_refuse_lookalikes() {
        let key = |t: &str| ExternalId::parse(t).map(|e| e.key());
        let acme = key("acme").ok();
        assert_eq!(key("ACME").ok(), acme);
        assert_eq!(key("ａｃｍｅ").ok(), acme, "fullwidth");
        assert_eq!(key("Straße").ok(), key("STRASSE").ok(), "full case folding");
        assert_eq!(
            key("acm\u{e9}").ok(),
            key("acme\u{301}").ok(),
            "NFC and NFD"
        );
        assert_ne!(key("acme-1").ok(), acme);
        for invisible in [
            "acme\u{200B}",
            "ac\u{200D}me",
            "\u{202E}emca",
            "acme\u{2066}",
            "\u{FEFF}acme",
        ] {
            assert!(ExternalId::parse(invisible).is_err(), "{invisible:?}");
        }
        assert!(
            ExternalId::parse("a\u{441}me").is_err(),
            "Latin with a Cyrillic с"
        );
        assert!(
            ExternalId::parse("\u{430}\u{441}\u{43c}\u{435}").is_ok(),
            "all Cyrillic is one script"
        );
        assert!(
            ExternalId::parse("acme \u{41c}\u{43e}\u{441}\u{43a}\u{432}\u{430}").is_ok(),
            "two words, two scripts"
        );
        assert!(ExternalId::parse("12.345.678/0001-90").is_ok());
        // What earlier versions stored still reads.
        assert!(ExternalId::stored("acme\u{200B}").is_ok());
    }

    #[test]
    fn names_refuse_bidirectional_controls_and_invisible_characters() {
        for bad in [
            "a\u{202E}b",
            "a\u{2066}b",
            "a\u{200B}b",
            "a\u{FEFF}",
            "a\u{2060}b",
            "\u{200E}a",
        ] {
            assert!(Name::parse(bad).is_err(), "{bad:?}");
            assert!(Name::stored(bad).is_ok(), "{bad:?} as stored before");
        }
        // Joiners belong to scripts and emoji sequences.
        assert!(Name::parse("\u{645}\u{6cc}\u{200C}\u{62e}\u{648}\u{627}\u{647}\u{645}").is_ok());
        assert!(Name::parse("\u{1F469}\u{200D}\u{1F4BB} team").is_ok());
        let pattern = name_pattern();
        assert!(pattern.contains(r"\u202A-\u202E") && pattern.contains(r"\u2066-\u2069"));
    }

    #[test]
    fn refused_class_matches_rust_rules() {
        // The schema's class (CONTROL) must hold exactly the characters `is_refused` refuses.
        let listed = |c: char| {
            let u = c as u32;
            u <= 0x1f
                || (0x7f..=0x9f).contains(&u)
                || [
                    0xAD, 0x61C, 0x115F, 0x1160, 0x180E, 0x200B, 0x200E, 0x200F, 0x3164, 0xFEFF,
                    0xFFA0,
                ]
                .contains(&u)
                || (0x202A..=0x202E).contains(&u)
                || (0x2060..=0x2064).contains(&u)
                || (0x2066..=0x2069).contains(&u)
        };
        for u in 0..=0x10FFFFu32 {
            if let Some(c) = char::from_u32(u) {
                assert_eq!(listed(c), is_refused(c), "U+{u:04X}");
            }
        }
    }

    #[test]
    fn blank_class_matches_rust_rules() {
        // The schema's blank class must hold exactly the characters `is_blank` refuses.
        let listed = |c: char| {
            let u = c as u32;
            u <= 0x20
                || (0x7f..=0xa0).contains(&u)
                || u == 0x1680
                || (0x2000..=0x200a).contains(&u)
                || u == 0x2028
                || u == 0x2029
                || u == 0x202f
                || u == 0x205f
                || u == 0x3000
        };
        for u in 0..=0x10FFFFu32 {
            if let Some(c) = char::from_u32(u) {
                assert_eq!(listed(c), is_blank(c), "U+{u:04X}");
            }
        }
    }

    #[test]
    fn headers() {
        assert!(check_header_name("X-Key").is_ok());
        assert!(check_header_name("bad header").is_err());
        assert!(check_header_name("").is_err());
        assert!(check_header_value("a\tb", 1, 10).is_ok());
        assert!(check_header_value("a\nb", 1, 10).is_err());
        assert!(check_header_value("", 1, 10).is_err());
        assert!(check_header_value("é", 1, 1).is_ok());
    }
}
