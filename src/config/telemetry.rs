//! `[telemetry]`: where traces go (OTLP), and how many. Off unless the file or the standard
//! `OTEL_*` variables name a collector; a value in the file wins over the variable.

use serde::{Deserialize, Serialize};

use super::error::{ConfigError, invalid};

/// How spans travel to the collector.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum OtlpProtocol {
    /// OTLP/gRPC (port 4317).
    Grpc,
    /// OTLP/HTTP with protobuf bodies (port 4318, `…/v1/traces`).
    Http,
}

/// `[telemetry]` as written.
#[derive(Debug, Default, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct TelemetryConfig {
    /// The collector: `http://collector:4317` (gRPC) or `http://collector:4318/v1/traces`
    /// (HTTP). Else `OTEL_EXPORTER_OTLP_TRACES_ENDPOINT` / `OTEL_EXPORTER_OTLP_ENDPOINT`.
    pub otlp_endpoint: Option<String>,
    /// Else `OTEL_EXPORTER_OTLP_TRACES_PROTOCOL` / `OTEL_EXPORTER_OTLP_PROTOCOL`
    /// (`grpc`, `http/protobuf`); `grpc` when neither says.
    pub otlp_protocol: Option<OtlpProtocol>,
    /// The share of new traces kept (0 to 1); a sender's sampled trace is always continued.
    /// Else `OTEL_TRACES_SAMPLER_ARG` (with a ratio `OTEL_TRACES_SAMPLER`); 1 when neither.
    pub sample_ratio: Option<f64>,
    /// Else `OTEL_SERVICE_NAME`; `estafeta` when neither.
    pub service_name: Option<String>,
}

/// The settings traces are exported with, the file and the environment merged.
#[derive(Debug, Clone, PartialEq)]
pub struct Tracing {
    /// `None`: the exporter reads the `OTEL_EXPORTER_OTLP_*ENDPOINT` variable itself.
    pub endpoint: Option<String>,
    pub protocol: OtlpProtocol,
    pub sample_ratio: f64,
    pub service_name: String,
}

impl TelemetryConfig {
    /// The file's own values, checked whether or not they turn traces on.
    pub fn check(&self) -> Result<(), ConfigError> {
        let with_endpoint = TelemetryConfig {
            otlp_endpoint: Some(
                self.otlp_endpoint
                    .clone()
                    .unwrap_or_else(|| "http://127.0.0.1:4317".into()),
            ),
            ..self.clone()
        };
        with_endpoint.resolve(|_| None).map(|_| ())
    }

    /// The settings in force, read against `env` (a variable's value by name); `None`: off.
    pub fn resolve(
        &self,
        env: impl Fn(&str) -> Option<String>,
    ) -> Result<Option<Tracing>, ConfigError> {
        let var = |names: &[&str]| {
            names
                .iter()
                .find_map(|n| env(n).filter(|v| !v.trim().is_empty()))
        };
        if var(&["OTEL_SDK_DISABLED"]).is_some_and(|v| v.trim().eq_ignore_ascii_case("true")) {
            return Ok(None);
        }
        let from_env = var(&[
            "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT",
            "OTEL_EXPORTER_OTLP_ENDPOINT",
        ]);
        let endpoint = match (&self.otlp_endpoint, from_env) {
            (Some(e), _) => Some(e.clone()),
            (None, Some(_)) => None,
            (None, None) => return Ok(None),
        };
        let protocol = match self.otlp_protocol {
            Some(p) => p,
            None => match var(&[
                "OTEL_EXPORTER_OTLP_TRACES_PROTOCOL",
                "OTEL_EXPORTER_OTLP_PROTOCOL",
            ])
            .as_deref()
            .map(str::trim)
            {
                None | Some("grpc") => OtlpProtocol::Grpc,
                Some("http/protobuf") => OtlpProtocol::Http,
                Some(other) => {
                    return Err(invalid(
                        "telemetry.otlp_protocol",
                        format!(
                            "OTEL_EXPORTER_OTLP_PROTOCOL {other:?} is not supported (grpc or http/protobuf)"
                        ),
                    ));
                }
            },
        };
        let sample_ratio = match self.sample_ratio {
            Some(r) => r,
            None => {
                let ratio_sampler = var(&["OTEL_TRACES_SAMPLER"]).is_some_and(|s| {
                    matches!(s.trim(), "traceidratio" | "parentbased_traceidratio")
                });
                match var(&["OTEL_TRACES_SAMPLER_ARG"]).filter(|_| ratio_sampler) {
                    Some(arg) => arg.trim().parse::<f64>().map_err(|_| {
                        invalid(
                            "telemetry.sample_ratio",
                            format!("OTEL_TRACES_SAMPLER_ARG {arg:?} is not a number"),
                        )
                    })?,
                    None => 1.0,
                }
            }
        };
        if !(0.0..=1.0).contains(&sample_ratio) {
            return Err(invalid("telemetry.sample_ratio", "must be between 0 and 1"));
        }
        if let Some(e) = &endpoint {
            let ok = url::Url::parse(e)
                .is_ok_and(|u| matches!(u.scheme(), "http" | "https") && u.host().is_some());
            if !ok {
                return Err(invalid(
                    "telemetry.otlp_endpoint",
                    "must be an http or https URL",
                ));
            }
        }
        let service_name = match &self.service_name {
            Some(n) => n.clone(),
            None => var(&["OTEL_SERVICE_NAME"]).unwrap_or_else(|| "estafeta".into()),
        };
        if service_name.trim().is_empty() || service_name.len() > 256 {
            return Err(invalid(
                "telemetry.service_name",
                "must be 1 to 256 characters",
            ));
        }
        Ok(Some(Tracing {
            endpoint,
            protocol,
            sample_ratio,
            service_name,
        }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env(vars: &[(&str, &str)]) -> impl Fn(&str) -> Option<String> {
        let vars: Vec<(String, String)> = vars
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        move |name| vars.iter().find(|(k, _)| k == name).map(|(_, v)| v.clone())
    }

    #[test]
    fn off_unless_a_collector_is_named() {
        let c = TelemetryConfig::default();
        assert_eq!(c.resolve(env(&[])).unwrap(), None);
        let on = c
            .resolve(env(&[
                ("OTEL_EXPORTER_OTLP_ENDPOINT", "http://collector:4317"),
                ("OTEL_SERVICE_NAME", "edge-eu"),
                ("OTEL_TRACES_SAMPLER", "parentbased_traceidratio"),
                ("OTEL_TRACES_SAMPLER_ARG", "0.25"),
                ("OTEL_EXPORTER_OTLP_PROTOCOL", "http/protobuf"),
            ]))
            .unwrap()
            .unwrap();
        assert_eq!(
            on,
            Tracing {
                endpoint: None,
                protocol: OtlpProtocol::Http,
                sample_ratio: 0.25,
                service_name: "edge-eu".into(),
            }
        );
        let off = c.resolve(env(&[
            ("OTEL_EXPORTER_OTLP_ENDPOINT", "http://collector:4317"),
            ("OTEL_SDK_DISABLED", "true"),
        ]));
        assert_eq!(off.unwrap(), None);
    }

    #[test]
    fn the_file_wins_over_the_environment_and_bad_values_name_their_key() {
        let c = TelemetryConfig {
            otlp_endpoint: Some("http://127.0.0.1:4318/v1/traces".into()),
            otlp_protocol: Some(OtlpProtocol::Http),
            sample_ratio: Some(0.5),
            service_name: Some("estafeta-test".into()),
        };
        let t = c
            .resolve(env(&[
                ("OTEL_SERVICE_NAME", "other"),
                ("OTEL_EXPORTER_OTLP_PROTOCOL", "grpc"),
            ]))
            .unwrap()
            .unwrap();
        assert_eq!(t.service_name, "estafeta-test");
        assert_eq!(t.protocol, OtlpProtocol::Http);
        assert_eq!(
            t.endpoint.as_deref(),
            Some("http://127.0.0.1:4318/v1/traces")
        );
        let bad = |c: TelemetryConfig, vars: &[(&str, &str)], key: &str| {
            let e = c.resolve(env(vars)).unwrap_err().to_string();
            assert!(e.starts_with(key), "{e}");
        };
        let on = |f: fn(&mut TelemetryConfig)| {
            let mut c = TelemetryConfig {
                otlp_endpoint: Some("http://c:4317".into()),
                ..TelemetryConfig::default()
            };
            f(&mut c);
            c
        };
        bad(
            on(|c| c.sample_ratio = Some(1.5)),
            &[],
            "telemetry.sample_ratio",
        );
        bad(
            on(|c| c.sample_ratio = Some(f64::NAN)),
            &[],
            "telemetry.sample_ratio",
        );
        bad(
            on(|c| c.otlp_endpoint = Some("collector:4317".into())),
            &[],
            "telemetry.otlp_endpoint",
        );
        bad(
            on(|c| c.service_name = Some(" ".into())),
            &[],
            "telemetry.service_name",
        );
        bad(
            on(|_| {}),
            &[("OTEL_EXPORTER_OTLP_PROTOCOL", "http/json")],
            "telemetry.otlp_protocol",
        );
    }
}
