//! Patches: a field absent from a patch keeps its value; `null` removes it.

/// Tells an explicit `null` (`Some(None)`: remove) from an absent field (`None`: keep), for
/// patches; use with `#[serde(default, deserialize_with = "present")]`.
pub fn present<'de, D, T>(d: D) -> Result<Option<Option<T>>, D::Error>
where
    D: serde::Deserializer<'de>,
    T: serde::Deserialize<'de>,
{
    <Option<T> as serde::Deserialize>::deserialize(d).map(Some)
}

/// A value that serde's derive would also take from a sequence of its fields
/// (`[null, null]` for a struct whose fields are all optional), taken from an object only.
struct ObjectOnly<T>(T);

impl<'de, T: serde::Deserialize<'de>> serde::Deserialize<'de> for ObjectOnly<T> {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct Visit<T>(std::marker::PhantomData<T>);
        impl<'de, T: serde::Deserialize<'de>> serde::de::Visitor<'de> for Visit<T> {
            type Value = T;
            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("an object")
            }
            fn visit_map<A: serde::de::MapAccess<'de>>(self, map: A) -> Result<T, A::Error> {
                T::deserialize(serde::de::value::MapAccessDeserializer::new(map))
            }
        }
        d.deserialize_map(Visit(std::marker::PhantomData))
            .map(ObjectOnly)
    }
}

/// An optional object; use with `#[serde(default, deserialize_with = "object")]`.
pub fn object<'de, D, T>(d: D) -> Result<Option<T>, D::Error>
where
    D: serde::Deserializer<'de>,
    T: serde::Deserialize<'de>,
{
    <Option<ObjectOnly<T>> as serde::Deserialize>::deserialize(d).map(|o| o.map(|v| v.0))
}

/// [`present`] for an object.
pub fn present_object<'de, D, T>(d: D) -> Result<Option<Option<T>>, D::Error>
where
    D: serde::Deserializer<'de>,
    T: serde::Deserialize<'de>,
{
    object(d).map(Some)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug, serde::Deserialize, PartialEq)]
    struct Loose {
        a: Option<u8>,
    }

    #[derive(Debug, serde::Deserialize)]
    struct Holder {
        #[serde(default, deserialize_with = "object")]
        x: Option<Loose>,
    }

    #[test]
    fn an_object_is_taken_and_a_sequence_refused() {
        let ok: Holder = serde_json::from_str(r#"{"x": {"a": 1}}"#).unwrap_or(Holder { x: None });
        assert_eq!(ok.x, Some(Loose { a: Some(1) }));
        assert!(serde_json::from_str::<Holder>(r#"{"x": [null]}"#).is_err());
        assert!(serde_json::from_str::<Holder>(r#"{"x": null}"#).is_ok_and(|h| h.x.is_none()));
        assert!(serde_json::from_str::<Holder>(r#"{}"#).is_ok_and(|h| h.x.is_none()));
    }
}
