//! What a target's failures and pace are allowed to do: its circuit breaker's settings (the
//! deployment's `[dispatch.breaker]`, each overridable per target) and how long it may fail
//! before the gateway disables it (`disable_after_h`); and the breaker itself as Redis keeps
//! it (`record.lua`, `breaker_probe.lua`) and as the dispatcher tells and reads it.

use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use super::bounded::Bounded;
use super::invalid::Invalid;

/// Longest window, open time and auto-disable delay one can set: a week, in seconds.
const WEEK_S: u64 = 7 * 86_400;

/// A circuit breaker's settings, complete (the deployment's, or a target's merged onto them).
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct BreakerSettings {
    /// `false`: failures never hold a target's deliveries.
    pub enabled: bool,
    /// The sliding window over which the failure ratio is measured, in seconds.
    pub window_s: u64,
    /// Fewest attempts in the window before the ratio can open the breaker.
    pub min_requests: u32,
    /// The share of failed attempts (network errors, timeouts, 5xx) that opens it.
    pub failure_ratio: f64,
    /// How long it stays open the first time, in seconds; doubled at each re-open.
    pub open_s: u64,
    /// The longest it stays open at once, in seconds.
    pub max_open_s: u64,
    /// Deliveries let through as probes when the open time ends (1 to 5); all must succeed
    /// to close it, any failure opens it again.
    pub probe_requests: u32,
}

impl Default for BreakerSettings {
    fn default() -> Self {
        BreakerSettings {
            enabled: true,
            window_s: 300,
            min_requests: 10,
            failure_ratio: 0.7,
            open_s: 30,
            max_open_s: 3600,
            probe_requests: 1,
        }
    }
}

impl BreakerSettings {
    /// The bounds of every field, each refusal naming its field.
    pub fn check(&self) -> Result<(), Invalid> {
        let whole = |field: &str, v: u64, lo: u64, hi: u64| {
            if (lo..=hi).contains(&v) {
                Ok(())
            } else {
                Err(Invalid::at(field, format!("must be between {lo} and {hi}")))
            }
        };
        whole("window_s", self.window_s, 1, WEEK_S)?;
        whole("min_requests", u64::from(self.min_requests), 1, 1_000_000)?;
        check_ratio(self.failure_ratio).map_err(|e| e.within("failure_ratio"))?;
        whole("open_s", self.open_s, 1, WEEK_S)?;
        whole("max_open_s", self.max_open_s, 1, WEEK_S)?;
        whole("probe_requests", u64::from(self.probe_requests), 1, 5)?;
        if self.max_open_s < self.open_s {
            return Err(Invalid::at(
                "max_open_s",
                format!("must be at least open_s ({})", self.open_s),
            ));
        }
        Ok(())
    }

    /// These settings with a target's overrides applied. A target that names `open_s` beyond
    /// the deployment's `max_open_s` (or the reverse) gets the longer of the two as its cap.
    pub fn with(&self, o: Option<&BreakerOverride>) -> BreakerSettings {
        let Some(o) = o else { return *self };
        let open_s = o.open_s.map_or(self.open_s, |v| v.get());
        let max_open_s = o.max_open_s.map_or(self.max_open_s, |v| v.get());
        BreakerSettings {
            enabled: o.enabled.unwrap_or(self.enabled),
            window_s: o.window_s.map_or(self.window_s, |v| v.get()),
            min_requests: o.min_requests.map_or(self.min_requests, |v| v.get() as u32),
            failure_ratio: o.failure_ratio.map_or(self.failure_ratio, |r| r.0),
            open_s,
            max_open_s: max_open_s.max(open_s),
            probe_requests: o
                .probe_requests
                .map_or(self.probe_requests, |v| v.get() as u32),
        }
    }
}

fn check_ratio(r: f64) -> Result<f64, Invalid> {
    if (0.01..=1.0).contains(&r) {
        Ok(r)
    } else {
        Err(Invalid::new("must be a number from 0.01 to 1"))
    }
}

/// A share of attempts, from 0.01 to 1.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
#[serde(transparent)]
pub struct Ratio(f64);

/// A number schema with its bounds.
fn number_schema(min: f64, max: f64) -> utoipa::openapi::RefOr<utoipa::openapi::schema::Schema> {
    use utoipa::openapi::schema::{ObjectBuilder, Type};
    ObjectBuilder::new()
        .schema_type(Type::Number)
        .minimum(Some(min))
        .maximum(Some(max))
        .into()
}

impl utoipa::PartialSchema for Ratio {
    fn schema() -> utoipa::openapi::RefOr<utoipa::openapi::schema::Schema> {
        number_schema(0.01, 1.0)
    }
}

impl ToSchema for Ratio {}

impl<'de> Deserialize<'de> for Ratio {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let v = f64::deserialize(d)?;
        check_ratio(v).map(Ratio).map_err(serde::de::Error::custom)
    }
}

/// A target's own breaker settings: each field absent takes the deployment's.
#[derive(Debug, Clone, Copy, PartialEq, Default, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct BreakerOverride {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub enabled: Option<bool>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Option<u64>, minimum = 1, maximum = 604800)]
    pub window_s: Option<Bounded<1, WEEK_S>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Option<u64>, minimum = 1, maximum = 1000000)]
    pub min_requests: Option<Bounded<1, 1_000_000>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub failure_ratio: Option<Ratio>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Option<u64>, minimum = 1, maximum = 604800)]
    pub open_s: Option<Bounded<1, WEEK_S>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Option<u64>, minimum = 1, maximum = 604800)]
    pub max_open_s: Option<Bounded<1, WEEK_S>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Option<u64>, minimum = 1, maximum = 5)]
    pub probe_requests: Option<Bounded<1, 5>>,
}

impl BreakerOverride {
    /// The rule between fields: both given, the cap is not below the first open time.
    pub fn check(&self) -> Result<(), Invalid> {
        if let (Some(o), Some(m)) = (self.open_s, self.max_open_s)
            && m < o
        {
            return Err(Invalid::at(
                "max_open_s",
                format!("must be at least open_s ({o})"),
            ));
        }
        Ok(())
    }
}

/// How many deliveries to a target may be in flight at once (per dispatcher): `"adaptive"`
/// (the default: found from its latency and its 429/503 answers, between 1 and
/// `dispatch.per_target_concurrency`) or a fixed number.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Concurrency {
    #[default]
    Adaptive,
    Fixed(u32),
}

impl Concurrency {
    pub const MAX: u32 = 100_000;
}

impl Serialize for Concurrency {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        match self {
            Concurrency::Adaptive => s.serialize_str("adaptive"),
            Concurrency::Fixed(n) => s.serialize_u32(*n),
        }
    }
}

impl<'de> Deserialize<'de> for Concurrency {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        #[derive(Deserialize)]
        #[serde(untagged)]
        enum Raw {
            Word(String),
            Number(f64),
        }
        let refuse = || {
            serde::de::Error::custom(format!(
                "must be \"adaptive\" or a whole number from 1 to {}",
                Concurrency::MAX
            ))
        };
        match Raw::deserialize(d).map_err(|_| refuse())? {
            Raw::Word(w) if w == "adaptive" => Ok(Concurrency::Adaptive),
            Raw::Number(n)
                if n.fract() == 0.0 && (1.0..=f64::from(Concurrency::MAX)).contains(&n) =>
            {
                Ok(Concurrency::Fixed(n as u32))
            }
            _ => Err(refuse()),
        }
    }
}

impl utoipa::PartialSchema for Concurrency {
    fn schema() -> utoipa::openapi::RefOr<utoipa::openapi::schema::Schema> {
        use utoipa::openapi::schema::{ObjectBuilder, OneOfBuilder, Type};
        OneOfBuilder::new()
            .item(
                ObjectBuilder::new()
                    .schema_type(Type::String)
                    .enum_values(Some(["adaptive"])),
            )
            .item(
                ObjectBuilder::new()
                    .schema_type(Type::Integer)
                    .minimum(Some(1.0))
                    .maximum(Some(f64::from(Concurrency::MAX))),
            )
            .into()
    }
}

impl ToSchema for Concurrency {}

/// How long a target may fail before the gateway disables it, in hours (fractional: 0.001
/// is 3.6 s), from more than 0 to a year.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
#[serde(transparent)]
pub struct Hours(f64);

impl utoipa::PartialSchema for Hours {
    fn schema() -> utoipa::openapi::RefOr<utoipa::openapi::schema::Schema> {
        number_schema(Hours::MIN, Hours::MAX)
    }
}

impl ToSchema for Hours {}

impl Hours {
    pub const MIN: f64 = 0.0001;
    pub const MAX: f64 = 8760.0;

    pub fn new(h: f64) -> Result<Hours, Invalid> {
        if (Self::MIN..=Self::MAX).contains(&h) {
            Ok(Hours(h))
        } else {
            Err(Invalid::new(format!(
                "must be a number of hours from {} to {}",
                Self::MIN,
                Self::MAX
            )))
        }
    }

    pub fn get(self) -> f64 {
        self.0
    }

    /// In whole milliseconds.
    pub fn as_ms(self) -> u64 {
        (self.0 * 3_600_000.0).round() as u64
    }
}

impl<'de> Deserialize<'de> for Hours {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let v = f64::deserialize(d)?;
        Hours::new(v).map_err(serde::de::Error::custom)
    }
}

/// Where a target's circuit breaker stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum BreakerState {
    /// Deliveries go.
    #[default]
    Closed,
    /// Deliveries wait in the retry schedule until `until`, without spending attempts.
    Open,
    /// Probes are let through; their outcome closes or re-opens it.
    HalfOpen,
}

impl BreakerState {
    fn from_letter(s: &str) -> Option<BreakerState> {
        match s {
            "c" => Some(BreakerState::Closed),
            "o" => Some(BreakerState::Open),
            "h" => Some(BreakerState::HalfOpen),
            _ => None,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            BreakerState::Closed => "closed",
            BreakerState::Open => "open",
            BreakerState::HalfOpen => "half_open",
        }
    }
}

/// A breaker as stored (`<target>:br`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Breaker {
    pub state: BreakerState,
    /// When it entered its state (ms).
    pub since_ms: u64,
    /// Until when an open breaker holds deliveries (ms).
    pub until_ms: u64,
    /// How many times it opened since it was last closed.
    pub opens: u32,
}

impl Breaker {
    /// `state:since:until:opens:granted:probes_ok`; `None` when unreadable.
    pub fn decode(v: &str) -> Option<Breaker> {
        let mut p = v.split(':');
        let state = BreakerState::from_letter(p.next()?)?;
        let since_ms = p.next()?.parse().ok()?;
        let until_ms = p.next()?.parse().ok()?;
        let opens = p.next()?.parse().ok()?;
        Some(Breaker {
            state,
            since_ms,
            until_ms,
            opens,
        })
    }
}

/// How an attempt counts for its target's breaker.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Class {
    /// It answered: 2xx, or a 4xx other than 429 (the receiver is up; the request was bad).
    Success,
    /// A network error, a timeout or a 5xx.
    Failure,
    /// Neither: a 429 (rate information), or a failure of our own making.
    Uncounted,
}

/// What an attempt means to its target's gate, as `record.lua` reads it.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct GateNote {
    pub class: Class,
    /// It went through a half-open breaker as a probe.
    pub probe: bool,
    /// A 429's Retry-After: the target's deliveries wait until then (ms; 0 none).
    pub pause_until_ms: u64,
    /// The target's breaker settings (the deployment's with its overrides).
    pub breaker: BreakerSettings,
    /// How long it may fail before it is disabled (ms; 0 never).
    pub disable_after_ms: u64,
    /// The dispatcher's in-flight limit for it now (shown in its view).
    pub concurrency_limit: u32,
}

impl GateNote {
    /// The script's `gate` argument.
    pub fn encode(&self) -> String {
        let b = &self.breaker;
        format!(
            "{},{},{},{},{},{},{},{},{},{},{},{}",
            match self.class {
                Class::Success => 'o',
                Class::Failure => 'f',
                Class::Uncounted => 'n',
            },
            u8::from(self.probe),
            self.pause_until_ms,
            u8::from(b.enabled),
            b.window_s.saturating_mul(1000),
            b.min_requests,
            // A plain decimal: the script's pattern takes digits and a point only.
            format_args!("{:.4}", b.failure_ratio),
            b.open_s.saturating_mul(1000),
            b.max_open_s.saturating_mul(1000),
            b.probe_requests,
            self.disable_after_ms,
            self.concurrency_limit,
        )
    }
}

/// How a breaker moved in a recording call.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum News {
    Opened,
    /// A failed probe opened it again, for longer.
    Reopened,
    Closed,
}

/// A target of a recording call whose gate the dispatcher must know about.
#[derive(Debug, Clone, PartialEq)]
pub struct GateReport {
    pub target: String,
    pub breaker: Breaker,
    pub news: Option<News>,
    /// It has failed for its `disable_after`: disable it (`failing`).
    pub disable: bool,
    pub pause_until_ms: u64,
    pub failing_since_ms: Option<u64>,
}

impl<'de> Deserialize<'de> for GateReport {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        // cjson writes every number as a double.
        type Row = (String, String, f64, f64, f64, String, f64, f64, f64);
        let (target, state, since, until, opens, news, disable, pause, failing) =
            Row::deserialize(d)?;
        let state = BreakerState::from_letter(&state)
            .ok_or_else(|| serde::de::Error::custom(format!("unknown breaker state {state}")))?;
        Ok(GateReport {
            target,
            breaker: Breaker {
                state,
                since_ms: since as u64,
                until_ms: until as u64,
                opens: opens as u32,
            },
            news: match news.as_str() {
                "opened" => Some(News::Opened),
                "reopened" => Some(News::Reopened),
                "closed" => Some(News::Closed),
                _ => None,
            },
            disable: disable >= 1.0,
            pause_until_ms: pause as u64,
            failing_since_ms: (failing > 0.0).then_some(failing as u64),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse<T: serde::de::DeserializeOwned>(v: serde_json::Value) -> Result<T, String> {
        serde_path_to_error::deserialize(v).map_err(|e| e.to_string())
    }

    #[test]
    fn defaults_are_the_contracts_and_valid() {
        let d = BreakerSettings::default();
        assert!(d.check().is_ok());
        assert_eq!(
            (
                d.window_s,
                d.min_requests,
                d.open_s,
                d.max_open_s,
                d.probe_requests
            ),
            (300, 10, 30, 3600, 1)
        );
        assert!((d.failure_ratio - 0.7).abs() < 1e-9);
    }

    #[test]
    fn settings_out_of_range_name_their_field() {
        let bad = |s: BreakerSettings, field: &str| {
            let e = s.check().err().map(|e| e.path).unwrap_or_default();
            assert_eq!(e, field);
        };
        let d = BreakerSettings::default();
        bad(BreakerSettings { window_s: 0, ..d }, "window_s");
        bad(
            BreakerSettings {
                min_requests: 0,
                ..d
            },
            "min_requests",
        );
        bad(
            BreakerSettings {
                failure_ratio: 0.0,
                ..d
            },
            "failure_ratio",
        );
        bad(
            BreakerSettings {
                failure_ratio: f64::NAN,
                ..d
            },
            "failure_ratio",
        );
        bad(
            BreakerSettings {
                failure_ratio: 1.5,
                ..d
            },
            "failure_ratio",
        );
        bad(
            BreakerSettings {
                probe_requests: 6,
                ..d
            },
            "probe_requests",
        );
        bad(
            BreakerSettings {
                open_s: 100,
                max_open_s: 50,
                ..d
            },
            "max_open_s",
        );
    }

    #[test]
    fn overrides_refuse_out_of_range_values_with_their_path() {
        let e = parse::<BreakerOverride>(serde_json::json!({"probe_requests": 9}))
            .err()
            .unwrap_or_default();
        assert!(e.starts_with("probe_requests"), "{e}");
        let e = parse::<BreakerOverride>(serde_json::json!({"failure_ratio": 0}))
            .err()
            .unwrap_or_default();
        assert!(e.starts_with("failure_ratio"), "{e}");
        assert!(parse::<BreakerOverride>(serde_json::json!({"colour": 1})).is_err());
        let o: Result<BreakerOverride, _> =
            parse(serde_json::json!({"open_s": 60, "max_open_s": 30}));
        assert_eq!(
            o.ok().and_then(|o| o.check().err()).map(|e| e.path),
            Some("max_open_s".to_owned())
        );
    }

    #[test]
    fn overrides_merge_field_by_field() {
        let o: BreakerOverride =
            parse(serde_json::json!({"min_requests": 3, "open_s": 7200})).unwrap_or_default();
        let m = BreakerSettings::default().with(Some(&o));
        assert_eq!((m.min_requests, m.window_s, m.open_s), (3, 300, 7200));
        // The deployment's cap below the target's first open time: the longer one caps.
        assert_eq!(m.max_open_s, 7200);
        assert!(m.check().is_ok());
        assert_eq!(
            BreakerSettings::default().with(None),
            BreakerSettings::default()
        );
    }

    #[test]
    fn concurrency_is_adaptive_or_a_whole_number() {
        assert_eq!(
            parse::<Concurrency>(serde_json::json!("adaptive")),
            Ok(Concurrency::Adaptive)
        );
        assert_eq!(
            parse::<Concurrency>(serde_json::json!(8)),
            Ok(Concurrency::Fixed(8))
        );
        for bad in [
            serde_json::json!(0),
            serde_json::json!(1.5),
            serde_json::json!("fast"),
            serde_json::json!(-3),
            serde_json::json!(100_001),
        ] {
            let e = parse::<Concurrency>(bad.clone()).err().unwrap_or_default();
            assert!(e.contains("adaptive"), "{bad}: {e}");
        }
        assert_eq!(
            serde_json::to_value(Concurrency::Fixed(4)).ok(),
            Some(serde_json::json!(4))
        );
        assert_eq!(
            serde_json::to_value(Concurrency::Adaptive).ok(),
            Some(serde_json::json!("adaptive"))
        );
    }

    #[test]
    fn hours_are_fractional_and_bounded() {
        assert_eq!(Hours::new(0.001).map(Hours::as_ms), Ok(3600));
        assert_eq!(Hours::new(120.0).map(Hours::as_ms), Ok(432_000_000));
        assert!(Hours::new(0.0).is_err() && Hours::new(f64::NAN).is_err());
        assert!(Hours::new(9000.0).is_err());
        assert!(parse::<Hours>(serde_json::json!(-1)).is_err());
    }

    #[test]
    fn notes_encode_as_the_script_reads_them() {
        let note = GateNote {
            class: Class::Failure,
            probe: true,
            pause_until_ms: 0,
            breaker: BreakerSettings::default(),
            disable_after_ms: 432_000_000,
            concurrency_limit: 16,
        };
        assert_eq!(
            note.encode(),
            "f,1,0,1,300000,10,0.7000,30000,3600000,1,432000000,16"
        );
    }

    #[test]
    fn stored_breakers_decode() {
        assert_eq!(
            Breaker::decode("o:10:40:2:0:0"),
            Some(Breaker {
                state: BreakerState::Open,
                since_ms: 10,
                until_ms: 40,
                opens: 2
            })
        );
        assert_eq!(Breaker::decode("x:1:2:3:4:5"), None);
        assert_eq!(Breaker::decode("o:1"), None);
    }

    #[test]
    fn reports_read_cjsons_rows() {
        let r: Vec<GateReport> = serde_json::from_str(
            r#"[["tgt_a","o",1733550000000,1733550030000,1,"opened",0,0,1733549000000]]"#,
        )
        .unwrap_or_default();
        assert_eq!(r.len(), 1);
        assert_eq!(r[0].news, Some(News::Opened));
        assert_eq!(r[0].breaker.until_ms, 1_733_550_030_000);
        assert_eq!(r[0].failing_since_ms, Some(1_733_549_000_000));
        assert!(!r[0].disable);
    }
}
