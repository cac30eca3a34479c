//! Logs and metrics.
//!
//! Logs: a `tracing` subscriber writing text or JSON lines to stderr, filtered by `RUST_LOG` or
//! `log.level`. No token, secret or payload is ever a log field.
//!
//! Metrics: one process-wide Prometheus recorder, rendered at the admin listener's `/metrics`.
//! Labels stay low-cardinality: route templates, never paths; outcome words, never tenant ids.
//! Every metric the gateway emits is recorded through a function here, so names live in one place.
//! Handles of per-request metrics are resolved once and kept: they must be resolved after
//! [`prometheus`] installed the recorder, which `app::run` does first.

use std::collections::HashMap;
use std::sync::{LazyLock, OnceLock, RwLock};
use std::time::Duration;

use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusHandle};
use tracing_subscriber::EnvFilter;
use tracing_subscriber::fmt::format::FmtSpan;

use crate::config::{LogConfig, LogFormat};

/// Latency buckets (seconds) shared by every duration histogram: 100 µs to 30 s.
const LATENCY_BUCKETS: &[f64] = &[
    0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5,
    5.0, 10.0, 30.0,
];
/// Batch-size buckets.
const BATCH_BUCKETS: &[f64] = &[
    1.0, 2.0, 4.0, 8.0, 16.0, 32.0, 64.0, 128.0, 256.0, 512.0, 1024.0,
];

/// Installs the log subscriber. Later calls (tests building several apps) are no-ops.
pub fn init_logging(cfg: &LogConfig) {
    let filter = EnvFilter::try_from_default_env()
        .or_else(|_| EnvFilter::try_new(&cfg.level))
        .unwrap_or_else(|_| EnvFilter::new("info"));
    // One global filter: as cheap as logs can be. Exported spans do not pass through here
    // (`traces::Span` is the OpenTelemetry API's own).
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_span_events(FmtSpan::NONE);
    let _ = match cfg.format {
        LogFormat::Json => builder
            .json()
            .flatten_event(true)
            .with_current_span(true)
            .with_span_list(false)
            .try_init(),
        LogFormat::Text => builder.try_init(),
    };
    install_panic_hook();
}

/// Logs a panic as one error line, with its location and request id. The default hook would
/// capture and symbolize a backtrace whenever `RUST_BACKTRACE` is inherited from the
/// environment, which loads the debug info: one panic took the resident set from 31 MB to
/// 203 MB. A backtrace is taken only when `ESTAFETA_PANIC_BACKTRACE=1` asks for one.
fn install_panic_hook() {
    let backtrace = std::env::var_os("ESTAFETA_PANIC_BACKTRACE").is_some_and(|v| v == "1");
    std::panic::set_hook(Box::new(move |info| {
        let payload = info.payload();
        let message = payload
            .downcast_ref::<&str>()
            .copied()
            .or_else(|| payload.downcast_ref::<String>().map(String::as_str))
            .unwrap_or("(not a string)");
        let location = info
            .location()
            .map(|l| format!("{}:{}", l.file(), l.line()))
            .unwrap_or_default();
        let request_id = current_request_id();
        if backtrace {
            let trace = std::backtrace::Backtrace::force_capture();
            tracing::error!(%request_id, %location, panic = message, %trace, "panicked");
        } else {
            tracing::error!(%request_id, %location, panic = message, "panicked");
        }
    }));
}

static PROMETHEUS: OnceLock<PrometheusHandle> = OnceLock::new();

/// The process-wide Prometheus handle, installing the recorder on first use.
pub fn prometheus() -> PrometheusHandle {
    PROMETHEUS
        .get_or_init(|| {
            let builder = PrometheusBuilder::new()
                .set_buckets_for_metric(Matcher::Suffix("_seconds".into()), LATENCY_BUCKETS)
                .and_then(|b| {
                    b.set_buckets_for_metric(Matcher::Suffix("_batch_size".into()), BATCH_BUCKETS)
                });
            let recorder = match builder {
                Ok(b) => b.build_recorder(),
                // Only a bucket list can fail to build, and ours are constant and non-empty.
                Err(_) => PrometheusBuilder::new().build_recorder(),
            };
            let handle = recorder.handle();
            if metrics::set_global_recorder(recorder).is_err() {
                tracing::warn!("a metrics recorder was already installed; /metrics will be empty");
            }
            describe();
            handle
        })
        .clone()
}

/// Drains histogram samples into their buckets; call periodically.
pub fn upkeep_interval() -> Duration {
    Duration::from_secs(5)
}

/// The kind of an exported metric.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MetricKind {
    Counter,
    Gauge,
    /// Exported as `_bucket`, `_sum` and `_count` series.
    Histogram,
}

/// One metric the gateway exports: the one list behind `/metrics`' HELP lines, the README
/// and the Grafana dashboard's test.
#[derive(Debug, Clone, Copy)]
pub struct MetricSpec {
    pub name: &'static str,
    pub kind: MetricKind,
    /// Labels its series carry.
    pub labels: &'static [&'static str],
    pub help: &'static str,
}

const fn spec(
    name: &'static str,
    kind: MetricKind,
    labels: &'static [&'static str],
    help: &'static str,
) -> MetricSpec {
    MetricSpec {
        name,
        kind,
        labels,
        help,
    }
}

use MetricKind::{Counter, Gauge, Histogram};

/// Every metric the gateway exports.
pub const METRICS: &[MetricSpec] = &[
    spec(
        "estafeta_log_store_lag_seconds",
        Gauge,
        &[],
        "Age of the oldest finished event not yet stored in the log store (0: caught up).",
    ),
    spec(
        "estafeta_log_store_shipped_total",
        Counter,
        &[],
        "Events stored in the log store by this process's shipper.",
    ),
    spec(
        "estafeta_log_store_ship_seconds",
        Histogram,
        &[],
        "Time to store one batch of events in the log store.",
    ),
    spec(
        "estafeta_quarantined_total",
        Counter,
        &["consumer"],
        "Records a consumer could not process and set aside (log store quarantine table, or the shard's quarantine stream in Redis) instead of retrying forever.",
    ),
    spec(
        "estafeta_http_requests_total",
        Counter,
        &["listener", "route", "status"],
        "HTTP requests by listener, route template and status",
    ),
    spec(
        "estafeta_http_request_duration_seconds",
        Histogram,
        &["listener", "route"],
        "HTTP request latency by listener and route template",
    ),
    spec(
        "estafeta_ingest_duration_seconds",
        Histogram,
        &[],
        "Time from a request's arrival at the queue to its event being durable in Redis",
    ),
    spec(
        "estafeta_events_enqueued_total",
        Counter,
        &["result"],
        "Events written to the queue (result=new) or recognised as idempotent repeats (result=duplicate)",
    ),
    spec(
        "estafeta_enqueue_batch_size",
        Histogram,
        &[],
        "Events per pipelined Redis batch",
    ),
    spec(
        "estafeta_auth_cache_total",
        Counter,
        &["cache", "result"],
        "In-process cache lookups by cache (token, tenant, targets, sources, monitors) and result (hit, miss)",
    ),
    spec(
        "estafeta_redis_errors_total",
        Counter,
        &["op"],
        "Failed Redis operations by operation",
    ),
    spec(
        "estafeta_connections",
        Gauge,
        &["listener"],
        "Open client connections by listener",
    ),
    spec(
        "estafeta_connections_rejected_total",
        Counter,
        &["listener", "reason"],
        "Connections closed before serving by listener and reason (tls_handshake_timeout, tls_error)",
    ),
    spec(
        "estafeta_rate_limited_total",
        Counter,
        &[],
        "Requests refused with 429",
    ),
    spec(
        "estafeta_deliveries_total",
        Counter,
        &["outcome"],
        "Delivery attempts by outcome (delivered, retry, dead_letter, deferred, sent)",
    ),
    spec(
        "estafeta_deliveries_held_total",
        Counter,
        &["reason"],
        "Deliveries parked in the retry schedule without an attempt, by reason (breaker, retry_after, rate_limit, unknown)",
    ),
    spec(
        "estafeta_breaker_transitions_total",
        Counter,
        &["to"],
        "Circuit breakers this dispatcher saw move, by new state (open, closed)",
    ),
    spec(
        "estafeta_target_concurrency_limit",
        Histogram,
        &[],
        "Adaptive per-target in-flight limits, recorded at each change (each target's own is in its view)",
    ),
    spec(
        "estafeta_targets_auto_disabled_total",
        Counter,
        &[],
        "Targets disabled after failing for disable_after_h",
    ),
    spec(
        "estafeta_heal_probes_total",
        Counter,
        &["outcome"],
        "Probes (estafeta.ping) of targets disabled for failing, by outcome (ok, failed)",
    ),
    spec(
        "estafeta_targets_healed_total",
        Counter,
        &[],
        "Targets enabled again after two probes in a row answered 2xx",
    ),
    spec(
        "estafeta_trace_spans_total",
        Counter,
        &["outcome"],
        "Spans sent to the OTLP collector, by outcome (exported, failed)",
    ),
    spec(
        "estafeta_oauth2_token_fetches_total",
        Counter,
        &["outcome"],
        "OAuth2 tokens asked of targets' token endpoints, by outcome (ok, failed)",
    ),
    spec(
        "estafeta_delivery_attempt_seconds",
        Histogram,
        &[],
        "Duration of one delivery attempt, connect to response",
    ),
    spec(
        "estafeta_stream_lag",
        Gauge,
        &["shard"],
        "Stream entries not yet read by the dispatcher, by shard",
    ),
    spec(
        "estafeta_retry_queue_depth",
        Gauge,
        &["shard"],
        "Deliveries waiting for a retry, by shard",
    ),
    spec(
        "estafeta_dead_letters",
        Gauge,
        &["shard"],
        "Deliveries in the error queue, by shard",
    ),
    spec(
        "estafeta_panics_total",
        Counter,
        &["listener"],
        "Request handlers that panicked, by listener (each answered 500 and counted as such)",
    ),
    spec(
        "estafeta_entries_reclaimed_total",
        Counter,
        &[],
        "Stream entries taken over from a stopped consumer",
    ),
    spec(
        "estafeta_watched",
        Gauge,
        &["kind", "status"],
        "Monitors and silence-watched sources by kind and status (new, up, down, degraded)",
    ),
    spec(
        "estafeta_watch_transitions_total",
        Counter,
        &["kind", "status"],
        "Status changes of monitors and watched sources, by kind and new status",
    ),
    spec(
        "estafeta_monitor_check_seconds",
        Histogram,
        &[],
        "Duration of one overdue-checker pass over every shard",
    ),
    spec(
        "estafeta_monitor_timeouts_total",
        Counter,
        &[],
        "Monitors and sources turned down by the overdue checker",
    ),
];

fn describe() {
    use metrics::{Unit, describe_counter, describe_gauge, describe_histogram};
    for m in METRICS {
        let seconds = m.name.ends_with("_seconds");
        match (m.kind, seconds) {
            (Counter, _) => describe_counter!(m.name, m.help),
            (Gauge, true) => describe_gauge!(m.name, Unit::Seconds, m.help),
            (Gauge, false) => describe_gauge!(m.name, m.help),
            (Histogram, true) => describe_histogram!(m.name, Unit::Seconds, m.help),
            (Histogram, false) => describe_histogram!(m.name, m.help),
        }
    }
}

/// The counter and histogram of one (listener, route, status) of a hot route.
type RequestHandles = (metrics::Counter, metrics::Histogram);

/// Handles of hot-route request metrics, resolved once: the registry lookup (hashing the key
/// and its labels) costs more than the increment.
static HOT_REQUESTS: LazyLock<RwLock<HashMap<HotKey, RequestHandles>>> =
    LazyLock::new(|| RwLock::new(HashMap::new()));

/// (listener, route template, status).
type HotKey = (&'static str, &'static str, u16);

/// A request to a hot route (static template) finished.
pub fn hot_request(listener: &'static str, route: &'static str, status: u16, elapsed: Duration) {
    let key = (listener, route, status);
    let cached = HOT_REQUESTS.read().ok().and_then(|m| m.get(&key).cloned());
    let (counter, histogram) = match cached {
        Some(h) => h,
        None => {
            let handles = request_handles(listener, route.into(), status);
            if let Ok(mut m) = HOT_REQUESTS.write() {
                m.insert(key, handles.clone());
            }
            handles
        }
    };
    counter.increment(1);
    histogram.record(elapsed.as_secs_f64());
}

/// An HTTP request to a routed path finished. `route` is its template.
pub fn http_request(
    listener: &'static str,
    route: metrics::SharedString,
    status: u16,
    elapsed: Duration,
) {
    let (counter, histogram) = request_handles(listener, route, status);
    counter.increment(1);
    histogram.record(elapsed.as_secs_f64());
}

fn request_handles(
    listener: &'static str,
    route: metrics::SharedString,
    status: u16,
) -> RequestHandles {
    let counter = metrics::counter!(
        "estafeta_http_requests_total",
        "listener" => listener,
        "route" => route.clone(),
        "status" => status_label(status),
    );
    let histogram = metrics::histogram!(
        "estafeta_http_request_duration_seconds",
        "listener" => listener,
        "route" => route,
    );
    (counter, histogram)
}

fn status_label(status: u16) -> &'static str {
    match status {
        200 => "200",
        201 => "201",
        202 => "202",
        204 => "204",
        400 => "400",
        401 => "401",
        403 => "403",
        404 => "404",
        405 => "405",
        408 => "408",
        409 => "409",
        413 => "413",
        415 => "415",
        429 => "429",
        500 => "500",
        503 => "503",
        s if s < 300 => "2xx",
        s if s < 400 => "3xx",
        s if s < 500 => "4xx",
        _ => "5xx",
    }
}

/// An event batch went to Redis.
pub fn enqueue_batch(size: usize) {
    metrics::histogram!("estafeta_enqueue_batch_size").record(size as f64);
}

/// Handles of the per-event metrics, resolved once.
struct EventHandles {
    new: metrics::Counter,
    duplicate: metrics::Counter,
    latency: metrics::Histogram,
    /// Hits and misses of each cache, in [`CacheName`] order.
    caches: [(metrics::Counter, metrics::Counter); 6],
}

static EVENT_HANDLES: LazyLock<EventHandles> = LazyLock::new(|| {
    let enqueued = |result: &'static str| metrics::counter!("estafeta_events_enqueued_total", "result" => result);
    let cache = |cache: CacheName| {
        let name = cache.as_str();
        (
            metrics::counter!("estafeta_auth_cache_total", "cache" => name, "result" => "hit"),
            metrics::counter!("estafeta_auth_cache_total", "cache" => name, "result" => "miss"),
        )
    };
    EventHandles {
        new: enqueued("new"),
        duplicate: enqueued("duplicate"),
        latency: metrics::histogram!("estafeta_ingest_duration_seconds"),
        caches: CacheName::ALL.map(cache),
    }
});

/// An event was enqueued (or recognised as a repeat) in `elapsed`.
pub fn event_enqueued(duplicate: bool, elapsed: Duration) {
    let h = &*EVENT_HANDLES;
    if duplicate { &h.duplicate } else { &h.new }.increment(1);
    h.latency.record(elapsed.as_secs_f64());
}

/// A lookup in one of the in-process caches.
pub fn cache_lookup(cache: CacheName, hit: bool) {
    let (hits, misses) = &EVENT_HANDLES.caches[cache as usize];
    if hit { hits } else { misses }.increment(1);
}

/// The in-process caches, as metrics name them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CacheName {
    Token = 0,
    Tenant = 1,
    Targets = 2,
    Sources = 3,
    Monitors = 4,
    Catalogue = 5,
}

impl CacheName {
    const ALL: [CacheName; 6] = [
        CacheName::Token,
        CacheName::Tenant,
        CacheName::Targets,
        CacheName::Sources,
        CacheName::Monitors,
        CacheName::Catalogue,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            CacheName::Token => "token",
            CacheName::Tenant => "tenant",
            CacheName::Targets => "targets",
            CacheName::Sources => "sources",
            CacheName::Monitors => "monitors",
            CacheName::Catalogue => "catalogue",
        }
    }
}

/// Displays an error with its sources: `a: b: c`.
#[derive(Debug)]
pub struct ErrorChain<'a>(pub &'a dyn std::error::Error);

impl std::fmt::Display for ErrorChain<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}", self.0)?;
        let mut source = self.0.source();
        while let Some(s) = source {
            write!(f, ": {s}")?;
            source = s.source();
        }
        Ok(())
    }
}

tokio::task_local! {
    /// The id of the request the current task serves.
    static REQUEST_ID: http::HeaderValue;
}

/// Runs `f` with `id` as the current request id, so every line it logs can name it.
pub async fn with_request_id<F: std::future::Future>(id: http::HeaderValue, f: F) -> F::Output {
    REQUEST_ID.scope(id, f).await
}

/// The id of the request being served, for log lines (`-` outside a request).
pub fn current_request_id() -> String {
    REQUEST_ID
        .try_with(|id| id.to_str().unwrap_or("-").to_owned())
        .unwrap_or_else(|_| "-".to_owned())
}

/// A Redis operation failed.
pub fn redis_error(op: &'static str) {
    metrics::counter!("estafeta_redis_errors_total", "op" => op).increment(1);
}

/// A connection opened (+1) or closed (-1) on `listener`.
pub fn connection(listener: &'static str, delta: f64) {
    metrics::gauge!("estafeta_connections", "listener" => listener).increment(delta);
}

/// A request handler panicked (answered 500).
pub fn panicked(listener: &'static str) {
    metrics::counter!("estafeta_panics_total", "listener" => listener).increment(1);
}

/// A connection was closed before it served anything.
pub fn connection_rejected(listener: &'static str, reason: &'static str) {
    metrics::counter!(
        "estafeta_connections_rejected_total",
        "listener" => listener,
        "reason" => reason,
    )
    .increment(1);
}

/// A request was refused by a rate limit.
pub fn rate_limited() {
    metrics::counter!("estafeta_rate_limited_total").increment(1);
}

/// A request to the jq sandbox ended with `result` (`ok`, `invalid`, `failed`, `timeout`,
/// `crashed`, `unavailable`).
pub fn sandbox(result: &'static str) {
    metrics::counter!("estafeta_jq_runs_total", "result" => result).increment(1);
}

/// A batch of `size` events was cut for a batched target.
pub fn batch_cut(size: u64) {
    metrics::counter!("estafeta_batches_total").increment(1);
    metrics::histogram!("estafeta_batch_events").record(size as f64);
}

/// An event broke its tenant's catalogue (`mode`: `warn` accepted it, `enforce` refused it).
pub fn catalogue_breach(mode: &'static str) {
    metrics::counter!("estafeta_catalogue_breaches_total", "mode" => mode).increment(1);
}

/// A delivery attempt ended with `outcome` (`delivered`, `retry`, `dead_letter`, `deferred`,
/// `sent`) after `elapsed` (deferred deliveries made no attempt and record no latency).
pub fn delivery(outcome: &'static str, elapsed: Option<Duration>) {
    metrics::counter!("estafeta_deliveries_total", "outcome" => outcome).increment(1);
    if let Some(e) = elapsed {
        metrics::histogram!("estafeta_delivery_attempt_seconds").record(e.as_secs_f64());
    }
}

/// The dispatcher's backlog gauges of one shard.
pub fn shard_backlog(shard: u16, stream_lag: Option<u64>, scheduled: u64, dead_letters: u64) {
    let s = shard.to_string();
    if let Some(lag) = stream_lag {
        metrics::gauge!("estafeta_stream_lag", "shard" => s.clone()).set(lag as f64);
    }
    metrics::gauge!("estafeta_dead_letters", "shard" => s.clone()).set(dead_letters as f64);
    metrics::gauge!("estafeta_retry_queue_depth", "shard" => s).set(scheduled as f64);
}

/// A delivery parked without an attempt: its target's breaker, pause or rate limit.
pub fn delivery_held(reason: &'static str) {
    metrics::counter!("estafeta_deliveries_held_total", "reason" => reason).increment(1);
}

/// A target's circuit breaker moved to `to` (`open`, `closed`).
pub fn breaker_transition(to: &'static str) {
    metrics::counter!("estafeta_breaker_transitions_total", "to" => to).increment(1);
}

/// An adaptive per-target limit moved to `limit`.
pub fn concurrency_limit(limit: usize) {
    metrics::histogram!("estafeta_target_concurrency_limit").record(limit as f64);
}

/// A target was disabled for failing too long.
pub fn target_auto_disabled() {
    metrics::counter!("estafeta_targets_auto_disabled_total").increment(1);
}

/// A probe of a target disabled for failing.
pub fn heal_probe(ok: bool) {
    let outcome = if ok { "ok" } else { "failed" };
    metrics::counter!("estafeta_heal_probes_total", "outcome" => outcome).increment(1);
}

/// A target's OAuth2 token endpoint was asked for a token.
pub fn oauth2_token_fetch(ok: bool) {
    let outcome = if ok { "ok" } else { "failed" };
    metrics::counter!("estafeta_oauth2_token_fetches_total", "outcome" => outcome).increment(1);
}

/// A target enabled again by its probes.
pub fn target_healed() {
    metrics::counter!("estafeta_targets_healed_total").increment(1);
}

/// Stream entries reclaimed from consumers that stopped answering.
pub fn reclaimed(entries: usize) {
    metrics::counter!("estafeta_entries_reclaimed_total").increment(entries as u64);
}

/// A monitor or watched source changed status.
pub fn watch_transition(kind: &str, status: &str) {
    metrics::counter!("estafeta_watch_transitions_total", "kind" => kind.to_owned(), "status" => status.to_owned())
        .increment(1);
}

/// One overdue-checker pass ended.
pub fn monitor_check(elapsed: Duration, timed_out: usize) {
    metrics::histogram!("estafeta_monitor_check_seconds").record(elapsed.as_secs_f64());
    metrics::counter!("estafeta_monitor_timeouts_total").increment(timed_out as u64);
}

/// Subjects per `<kind>:<status>`, as counted in Redis.
pub fn watched(counts: &HashMap<String, i64>) {
    for (key, n) in counts {
        if let Some((kind, status)) = key.split_once(':') {
            metrics::gauge!("estafeta_watched", "kind" => kind.to_owned(), "status" => status.to_owned())
                .set(*n as f64);
        }
    }
}

/// Age of the oldest finished event not yet in the log store.
pub fn log_store_lag(lag: Duration) {
    metrics::gauge!("estafeta_log_store_lag_seconds").set(lag.as_secs_f64());
}

/// A consumer set a record aside it could not process. `consumer`: `log_store_events`,
/// `log_store_history`, `stream_reader`, `recorder`, `checker`, `retries`.
pub fn quarantined(consumer: &'static str) {
    metrics::counter!("estafeta_quarantined_total", "consumer" => consumer).increment(1);
}

/// A batch of events was stored in the log store.
pub fn log_store_shipped(events: usize, elapsed: Duration) {
    metrics::counter!("estafeta_log_store_shipped_total").increment(events as u64);
    metrics::histogram!("estafeta_log_store_ship_seconds").record(elapsed.as_secs_f64());
}
