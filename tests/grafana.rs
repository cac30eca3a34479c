//! The Grafana dashboard (`deploy/grafana/estafeta.json`) queries only what the gateway
//! exports: every metric it names is in `telemetry::METRICS`, with the labels it filters and
//! groups by; and what a running gateway's `/metrics` shows is that list, label for label.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use std::collections::BTreeSet;

use estafeta::telemetry::{METRICS, MetricKind, MetricSpec};
use serde_json::Value as Json;
use support::Gateway;

/// Labels Prometheus adds to every series it scrapes.
const TARGET_LABELS: [&str; 2] = ["job", "instance"];

fn dashboard() -> Json {
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/deploy/grafana/estafeta.json");
    serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap()
}

/// The spec of a series name (`_bucket`, `_sum`, `_count` of a histogram included), and
/// whether it is a histogram's bucket series.
fn spec_of(series: &str) -> Option<(&'static MetricSpec, bool)> {
    if let Some(m) = METRICS.iter().find(|m| m.name == series) {
        return Some((m, false));
    }
    for suffix in ["_bucket", "_sum", "_count"] {
        let Some(base) = series.strip_suffix(suffix) else {
            continue;
        };
        if let Some(m) = METRICS
            .iter()
            .find(|m| m.name == base && m.kind == MetricKind::Histogram)
        {
            return Some((m, suffix == "_bucket"));
        }
    }
    None
}

fn word_at(text: &str, from: usize) -> &str {
    let end = text[from..]
        .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
        .map_or(text.len(), |n| from + n);
    &text[from..end]
}

/// The metric names an expression reads, each with the label names of its selector.
fn selectors(expr: &str) -> Vec<(String, Vec<String>)> {
    let mut out = Vec::new();
    let mut at = 0;
    while let Some(found) = expr[at..].find("estafeta_") {
        let start = at + found;
        let name = word_at(expr, start).to_owned();
        at = start + name.len();
        let mut labels = Vec::new();
        if expr[at..].starts_with('{') {
            let close = at + expr[at..].find('}').unwrap();
            for matcher in expr[at + 1..close].split(',') {
                let label = matcher.split(['=', '!']).next().unwrap().trim();
                labels.push(label.to_owned());
            }
            at = close;
        }
        out.push((name, labels));
    }
    out
}

/// The labels of every `by (...)` clause of an expression.
fn grouped_by(expr: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut rest = expr;
    while let Some(i) = rest.find("by (") {
        let inner = &rest[i + 4..];
        let close = inner.find(')').unwrap();
        out.extend(inner[..close].split(',').map(|l| l.trim().to_owned()));
        rest = &inner[close..];
    }
    out
}

#[test]
fn every_dashboard_query_names_exported_metrics_and_their_labels() {
    let d = dashboard();
    assert_eq!(d["uid"], "estafeta");
    let panels = d["panels"].as_array().unwrap();
    let mut named = BTreeSet::new();
    for panel in panels {
        let title = panel["title"].as_str().unwrap();
        assert!(
            panel["datasource"]["uid"].is_string(),
            "{title}: datasource"
        );
        let targets = panel["targets"].as_array().unwrap();
        assert!(!targets.is_empty(), "{title}: no query");
        for t in targets {
            let expr = t["expr"].as_str().unwrap();
            let mut allowed: BTreeSet<&str> = TARGET_LABELS.into_iter().collect();
            let read = selectors(expr);
            assert!(!read.is_empty(), "{title}: {expr} reads no metric");
            for (series, labels) in &read {
                let (spec, bucket) =
                    spec_of(series).unwrap_or_else(|| panic!("{title}: {series} is not exported"));
                named.insert(spec.name);
                let own: BTreeSet<&str> = spec
                    .labels
                    .iter()
                    .copied()
                    .chain(TARGET_LABELS)
                    .chain(bucket.then_some("le"))
                    .collect();
                for label in labels {
                    assert!(
                        own.contains(label.as_str()),
                        "{title}: {series} has no label {label}"
                    );
                }
                allowed.extend(own);
            }
            for label in grouped_by(expr) {
                assert!(
                    allowed.contains(label.as_str()),
                    "{title}: groups by {label}, which {expr} does not carry"
                );
            }
        }
    }
    // What the issue asks the dashboard to show.
    for wanted in [
        "estafeta_events_enqueued_total",
        "estafeta_ingest_duration_seconds",
        "estafeta_deliveries_total",
        "estafeta_retry_queue_depth",
        "estafeta_dead_letters",
        "estafeta_stream_lag",
        "estafeta_watched",
    ] {
        assert!(
            named.contains(wanted),
            "the dashboard does not show {wanted}"
        );
    }
}

#[test]
fn the_expression_reader_finds_names_selectors_and_groupings() {
    let expr =
        r#"sum by (le, route) (rate(estafeta_x_bucket{job=~"$job",route!="a"}[5m])) / estafeta_y"#;
    assert_eq!(
        selectors(expr),
        vec![
            (
                "estafeta_x_bucket".to_owned(),
                vec!["job".to_owned(), "route".to_owned()]
            ),
            ("estafeta_y".to_owned(), vec![]),
        ]
    );
    assert_eq!(grouped_by(expr), vec!["le", "route"]);
}

/// A scrape of a gateway that served an event: each series is in [`METRICS`], with no label
/// the list does not name (so the list, and the dashboard checked against it, stay true).
#[tokio::test]
async fn a_scrape_shows_only_listed_metrics_and_labels() {
    let gw = Gateway::start("grafana").await;
    let (_, token) = gw.tenant("acme").await;
    assert_eq!(gw.post_event(&token, "a", b"{}").await.status, 202);
    let text = gw.metrics_showing("estafeta_stream_lag").await;
    let mut seen = 0;
    for line in text.lines().filter(|l| l.starts_with("estafeta_")) {
        let series = word_at(line, 0);
        let (spec, bucket) = spec_of(series).unwrap_or_else(|| panic!("{series} is not listed"));
        if let Some(open) = line.find('{') {
            let close = line.rfind('}').unwrap();
            for pair in line[open + 1..close].split("\",") {
                let label = pair.split('=').next().unwrap().trim();
                assert!(
                    spec.labels.contains(&label) || (bucket && label == "le"),
                    "{series} carries {label}, which METRICS does not list"
                );
            }
        }
        seen += 1;
    }
    assert!(seen > 20, "{text}");
    gw.stop().await.unwrap();
}
