//! Passive monitors: what a tenant defines (name, heartbeat interval, grace, optional secret),
//! the window a watched subject is judged by, and the statuses it can have.

use std::time::Duration;

use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use super::bounded::Bounded;
use super::invalid::Invalid;
use super::secret::SecretText;
use super::text::Name;

/// Longest heartbeat interval or grace period: a year.
pub const MAX_PERIOD_S: u64 = 366 * 86_400;
/// Longest monitor secret.
pub const MAX_SECRET: usize = 512;

/// How often a signal is expected, in seconds: 1 s to a year.
pub type Every = Bounded<1, MAX_PERIOD_S>;
/// How long after that the subject is overdue, in seconds: up to a year.
pub type Grace = Bounded<0, MAX_PERIOD_S>;

/// Default heartbeat interval (s).
pub const DEFAULT_INTERVAL: Every = Every::clamped(300);
/// Default grace (s).
pub const DEFAULT_GRACE: Grace = Grace::clamped(60);

/// What is watched.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum WatchKind {
    Monitor,
    Source,
}

impl WatchKind {
    pub fn as_str(self) -> &'static str {
        match self {
            WatchKind::Monitor => "monitor",
            WatchKind::Source => "source",
        }
    }

    pub fn parse(text: &str) -> Option<WatchKind> {
        match text {
            "monitor" => Some(WatchKind::Monitor),
            "source" => Some(WatchKind::Source),
            _ => None,
        }
    }
}

/// A status a subject can report or be given.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum Status {
    Up,
    Down,
    Degraded,
}

impl Status {
    pub fn as_str(self) -> &'static str {
        match self {
            Status::Up => "up",
            Status::Down => "down",
            Status::Degraded => "degraded",
        }
    }
}

/// How long after its last signal a subject is overdue: its interval plus its grace.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct WatchWindow {
    pub every: Every,
    pub grace: Grace,
}

impl WatchWindow {
    pub fn duration(&self) -> Duration {
        Duration::from_secs(self.every.get() + self.grace.get())
    }
}

/// A monitor's secret (signs its status pushes): 1 to 512 characters.
fn check_secret(secret: &SecretText) -> Result<(), Invalid> {
    let n = secret.expose().chars().count();
    if n == 0 || n > MAX_SECRET {
        return Err(Invalid::at(
            "secret",
            format!("must be 1 to {MAX_SECRET} characters (or absent)"),
        ));
    }
    Ok(())
}

/// A new monitor, as the API and the config file take it.
#[derive(Debug, Clone, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct MonitorSpec {
    pub name: Name,
    /// Seconds between expected heartbeats (default 300).
    #[serde(default = "default_interval")]
    #[schema(inline, default = 300)]
    pub heartbeat_interval_s: Every,
    /// Seconds after a missed heartbeat before the monitor is down (default 60).
    #[serde(default = "default_grace")]
    #[schema(inline, default = 60)]
    pub grace_s: Grace,
    /// Signs status pushes (`X-Webhook-Signature: <hex HMAC-SHA256>`).
    #[serde(default)]
    #[schema(value_type = Option<String>, min_length = 1, max_length = 512)]
    pub secret: Option<SecretText>,
    /// A jq program that turns whatever JSON is pushed to the status URL (an Alertmanager,
    /// Grafana or GitHub webhook) into `{"status", "message"?}` (or `{"ignore": true}`).
    #[serde(default)]
    pub status_map: Option<super::transform::JqProgram>,
}

fn default_interval() -> Every {
    DEFAULT_INTERVAL
}

fn default_grace() -> Grace {
    DEFAULT_GRACE
}

impl MonitorSpec {
    pub fn validate(&self) -> Result<(), Invalid> {
        self.secret.as_ref().map_or(Ok(()), check_secret)
    }

    pub fn window(&self) -> WatchWindow {
        WatchWindow {
            every: self.heartbeat_interval_s,
            grace: self.grace_s,
        }
    }
}

/// A change to a monitor: absent fields stay; `"secret": null` removes the secret.
#[derive(Debug, Clone, Default, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct MonitorPatch {
    #[serde(default)]
    pub name: Option<Name>,
    #[serde(default)]
    #[schema(inline)]
    pub heartbeat_interval_s: Option<Every>,
    #[serde(default)]
    #[schema(inline)]
    pub grace_s: Option<Grace>,
    #[serde(default, deserialize_with = "super::patch::present")]
    #[schema(value_type = Option<String>, min_length = 1, max_length = 512)]
    pub secret: Option<Option<SecretText>>,
    /// `null` removes the status map.
    #[serde(default, deserialize_with = "super::patch::present")]
    pub status_map: Option<Option<super::transform::JqProgram>>,
}

impl MonitorPatch {
    pub fn validate(&self) -> Result<(), Invalid> {
        match &self.secret {
            Some(Some(s)) => check_secret(s),
            _ => Ok(()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn specs_take_defaults_and_bounds() {
        let s: Result<MonitorSpec, _> = serde_json::from_str(r#"{"name": "api"}"#);
        assert!(
            s.as_ref()
                .is_ok_and(|s| s.window().duration().as_secs() == 360),
            "{s:?}"
        );
        assert!(
            serde_json::from_str::<MonitorSpec>(r#"{"name": "a", "heartbeat_interval_s": 0}"#)
                .is_err()
        );
        assert!(
            serde_json::from_str::<MonitorSpec>(r#"{"name": "a", "grace_s": 99999999999}"#)
                .is_err()
        );
        let empty = serde_json::from_str::<MonitorSpec>(r#"{"name": "a", "secret": ""}"#);
        assert!(empty.is_ok_and(|s| s.validate().is_err()));
        let p: Result<MonitorPatch, _> = serde_json::from_str(r#"{"secret": null}"#);
        assert!(p.is_ok_and(|p| matches!(p.secret, Some(None))));
    }
}
