//! Who made a record.

/// Who made a record: the API, or the config file (applied at start).
#[derive(
    Debug,
    Clone,
    Copy,
    PartialEq,
    Eq,
    Default,
    serde::Serialize,
    serde::Deserialize,
    utoipa::ToSchema,
)]
#[serde(rename_all = "snake_case")]
pub enum Origin {
    #[default]
    Api,
    Config,
}

impl Origin {
    pub fn as_str(self) -> &'static str {
        match self {
            Origin::Api => "api",
            Origin::Config => "config",
        }
    }

    /// Reads a stored origin; anything unknown was made by the API.
    pub fn parse(text: &str) -> Origin {
        if text == "config" {
            Origin::Config
        } else {
            Origin::Api
        }
    }
}
