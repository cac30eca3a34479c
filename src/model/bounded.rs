//! Whole numbers with bounds that travel with their type: `Bounded<1, 86400>` can only hold
//! 1 to 86400, whether it came from a request, the config file or a stored document, and the
//! published schema states the same bounds.

use std::fmt;

use super::invalid::Invalid;

/// A `u64` in `MIN..=MAX`.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, serde::Serialize)]
#[serde(transparent)]
pub struct Bounded<const MIN: u64, const MAX: u64>(u64);

impl<const MIN: u64, const MAX: u64> Bounded<MIN, MAX> {
    pub fn new(value: u64) -> Result<Self, Invalid> {
        if (MIN..=MAX).contains(&value) {
            Ok(Bounded(value))
        } else {
            Err(Invalid::new(format!("must be between {MIN} and {MAX}")))
        }
    }

    /// A value known to be within bounds (a constant default); clamped otherwise.
    pub const fn clamped(value: u64) -> Self {
        Bounded(if value < MIN {
            MIN
        } else if value > MAX {
            MAX
        } else {
            value
        })
    }

    pub fn get(self) -> u64 {
        self.0
    }
}

impl<const MIN: u64, const MAX: u64> fmt::Debug for Bounded<MIN, MAX> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.0)
    }
}

impl<const MIN: u64, const MAX: u64> fmt::Display for Bounded<MIN, MAX> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.0)
    }
}

impl<'de, const MIN: u64, const MAX: u64> serde::Deserialize<'de> for Bounded<MIN, MAX> {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let n = super::number::whole(d)?;
        Bounded::new(n).map_err(serde::de::Error::custom)
    }
}

impl<const MIN: u64, const MAX: u64> utoipa::PartialSchema for Bounded<MIN, MAX> {
    fn schema() -> utoipa::openapi::RefOr<utoipa::openapi::schema::Schema> {
        use utoipa::openapi::schema::{KnownFormat, ObjectBuilder, SchemaFormat, Type};
        ObjectBuilder::new()
            .schema_type(Type::Integer)
            .format(Some(SchemaFormat::KnownFormat(KnownFormat::Int64)))
            .minimum(Some(MIN as f64))
            .maximum(Some(MAX as f64))
            .into()
    }
}

impl<const MIN: u64, const MAX: u64> utoipa::ToSchema for Bounded<MIN, MAX> {
    fn name() -> std::borrow::Cow<'static, str> {
        format!("Bounded_{MIN}_{MAX}").into()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bounds_hold() {
        assert!(Bounded::<1, 10>::new(0).is_err());
        assert_eq!(Bounded::<1, 10>::new(10).map(Bounded::get), Ok(10));
        assert!(serde_json::from_str::<Bounded<1, 10>>("11").is_err());
        assert!(serde_json::from_str::<Bounded<1, 10>>("-1").is_err());
        assert_eq!(Bounded::<5, 10>::clamped(1).get(), 5);
    }
}
