//! Whole numbers as JSON Schema counts them: `5` and `5.0` are the same integer, so a field
//! the published schema calls an integer takes both. Query strings (`?limit=5`) arrive as
//! text and are read the same way.

use std::fmt;

use serde::de::{self, Deserializer, Visitor};

struct Whole;

impl Visitor<'_> for Whole {
    type Value = u64;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a whole number")
    }

    fn visit_u64<E: de::Error>(self, v: u64) -> Result<u64, E> {
        Ok(v)
    }

    fn visit_i64<E: de::Error>(self, v: i64) -> Result<u64, E> {
        u64::try_from(v).map_err(|_| E::custom("must not be negative"))
    }

    fn visit_f64<E: de::Error>(self, v: f64) -> Result<u64, E> {
        // 2^64 itself is not a u64; every whole double below it is.
        if v.is_finite() && v.fract() == 0.0 && (0.0..18_446_744_073_709_551_616.0).contains(&v) {
            Ok(v as u64)
        } else {
            Err(E::custom(format!(
                "{v} is not a whole number from 0 to 2^64 - 1"
            )))
        }
    }

    fn visit_str<E: de::Error>(self, v: &str) -> Result<u64, E> {
        match v.parse::<u64>() {
            Ok(n) => Ok(n),
            Err(_) => match v.parse::<f64>() {
                Ok(f) => self.visit_f64(f),
                Err(_) => Err(E::custom(format!("{v:?} is not a whole number"))),
            },
        }
    }
}

/// A whole number (`5`, `5.0`, `"5"`).
pub fn whole<'de, D: Deserializer<'de>>(d: D) -> Result<u64, D::Error> {
    d.deserialize_any(Whole)
}

/// A whole number that fits a `u32`.
pub fn whole_u32<'de, D: Deserializer<'de>>(d: D) -> Result<u32, D::Error> {
    let n = whole(d)?;
    u32::try_from(n).map_err(|_| de::Error::custom(format!("{n} is above {}", u32::MAX)))
}

/// An optional whole number (absent or `null`: none).
pub fn whole_opt<'de, D: Deserializer<'de>>(d: D) -> Result<Option<u64>, D::Error> {
    struct Opt;
    impl<'de> Visitor<'de> for Opt {
        type Value = Option<u64>;
        fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            f.write_str("a whole number or null")
        }
        fn visit_none<E: de::Error>(self) -> Result<Option<u64>, E> {
            Ok(None)
        }
        fn visit_unit<E: de::Error>(self) -> Result<Option<u64>, E> {
            Ok(None)
        }
        fn visit_some<D: Deserializer<'de>>(self, d: D) -> Result<Option<u64>, D::Error> {
            whole(d).map(Some)
        }
    }
    d.deserialize_option(Opt)
}

/// An optional whole number that fits a `u32`.
pub fn whole_u32_opt<'de, D: Deserializer<'de>>(d: D) -> Result<Option<u32>, D::Error> {
    match whole_opt(d)? {
        None => Ok(None),
        Some(n) => u32::try_from(n)
            .map(Some)
            .map_err(|_| de::Error::custom(format!("{n} is above {}", u32::MAX))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(serde::Deserialize)]
    struct N {
        #[serde(deserialize_with = "whole")]
        n: u64,
        #[serde(default, deserialize_with = "whole_u32_opt")]
        m: Option<u32>,
    }

    fn n(json: &str) -> Result<(u64, Option<u32>), String> {
        serde_json::from_str::<N>(json)
            .map(|v| (v.n, v.m))
            .map_err(|e| e.to_string())
    }

    #[test]
    fn integral_numbers_in_any_spelling() {
        assert_eq!(n(r#"{"n": 5}"#), Ok((5, None)));
        assert_eq!(n(r#"{"n": 5.0, "m": 7.0}"#), Ok((5, Some(7))));
        assert_eq!(n(r#"{"n": 5, "m": null}"#), Ok((5, None)));
        assert!(n(r#"{"n": 5.5}"#).is_err());
        assert!(n(r#"{"n": -1}"#).is_err());
        assert!(n(r#"{"n": 1e300}"#).is_err());
        assert!(n(r#"{"n": 1, "m": 4294967296}"#).is_err());
        let q: Result<N, _> = serde_urlencoded_like("n=12");
        assert_eq!(q.map(|v| v.n).ok(), Some(12));
    }

    /// What a query string's value looks like to a visitor: text.
    fn serde_urlencoded_like(text: &str) -> Result<N, serde_json::Error> {
        let (k, v) = text.split_once('=').unwrap_or_default();
        serde_json::from_value(serde_json::json!({ k: v }))
    }
}
