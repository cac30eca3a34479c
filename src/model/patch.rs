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
