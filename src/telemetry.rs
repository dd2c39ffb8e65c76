//! Metric names (documented in docs/operations.md) and logging setup.
//!
//! Names follow Prometheus conventions: `vigie_` prefix, `_total` for counters, base units
//! (seconds) in the name.

use metrics_exporter_prometheus::{Matcher as MetricMatcher, PrometheusBuilder, PrometheusHandle};

/// Valid articles fully processed (counted, state committed).
pub const ARTICLES_PROCESSED: &str = "vigie_articles_processed_total";
/// Messages sent to the dead-letter topic, by `reason`.
pub const DEAD_LETTERED: &str = "vigie_dead_lettered_total";
/// Articles too late for their bucket.
pub const ARTICLES_LATE: &str = "vigie_articles_late_total";
/// Article matches, by `rule`.
pub const RULE_MATCHES: &str = "vigie_rule_matches_total";
/// Alert events, by `kind`.
pub const ALERT_EVENTS: &str = "vigie_alert_events_total";
/// Delivery attempts, by `channel` and `outcome` (sent, retry, dead).
pub const DELIVERIES: &str = "vigie_deliveries_total";
/// Outbox rows waiting to be sent, held ones included.
pub const OUTBOX_PENDING: &str = "vigie_outbox_pending";
/// Of the pending rows, those held for their channel's quiet hours or digest time: waiting
/// by design, not for a receiver.
pub const OUTBOX_HELD: &str = "vigie_outbox_held";
/// Consumer lag in messages, by `partition`.
pub const CONSUMER_LAG: &str = "vigie_consumer_lag";
/// Time to count and detect one batch (the engine's part of it; the other steps are in
/// [`STAGE_SECONDS`]).
pub const BATCH_SECONDS: &str = "vigie_batch_processing_seconds";
/// Wall-clock seconds of each step of the pipeline, by `stage`: `fetch` (waiting for the source),
/// `prepare` (parsing and matching a batch), `prepare_wait` (the loop waiting for a
/// look-ahead batch still being prepared), `apply` (counting and detection), `write` (the
/// state transaction), `apply_wait` and `write_wait` (the loop waiting for the batch's apply
/// or for the previous write). Stages
/// overlap (module docs of `pipeline`, "Overlap"), so the sum exceeds the elapsed time;
/// the `_wait` stages show which one holds the loop back (compare their `_sum`s).
pub const STAGE_SECONDS: &str = "vigie_pipeline_stage_seconds";
/// Batches taken from the source (articles per batch = records / batches).
pub const BATCHES: &str = "vigie_batches_total";
/// Rules currently loaded.
pub const RULES_LOADED: &str = "vigie_rules_loaded";
/// Rule reloads that failed validation.
pub const RELOAD_FAILURES: &str = "vigie_rule_reload_failures_total";
/// State commits that failed (the batch is retried; offsets are not committed).
pub const STATE_ERRORS: &str = "vigie_state_errors_total";
/// 1 while a Kafka broker answers metadata requests, 0 while none does.
pub const KAFKA_UP: &str = "vigie_kafka_up";
/// Event-time watermark, unix seconds.
pub const WATERMARK: &str = "vigie_watermark_seconds";

/// Every metric vigie exports: the spec that docs/operations.md and the Prometheus rules
/// in deploy/prometheus are checked against (tests/metrics_spec.rs).
pub const ALL: &[&str] = &[
    ARTICLES_PROCESSED,
    DEAD_LETTERED,
    ARTICLES_LATE,
    RULE_MATCHES,
    ALERT_EVENTS,
    DELIVERIES,
    OUTBOX_PENDING,
    OUTBOX_HELD,
    CONSUMER_LAG,
    BATCH_SECONDS,
    STAGE_SECONDS,
    BATCHES,
    RULES_LOADED,
    RELOAD_FAILURES,
    STATE_ERRORS,
    KAFKA_UP,
    WATERMARK,
];

/// Installs the Prometheus recorder once per process and returns its handle.
pub fn prometheus() -> PrometheusHandle {
    static HANDLE: std::sync::OnceLock<PrometheusHandle> = std::sync::OnceLock::new();
    HANDLE
        .get_or_init(|| {
            let builder = PrometheusBuilder::new()
                .set_buckets_for_metric(
                    MetricMatcher::Full(BATCH_SECONDS.into()),
                    &[
                        0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0,
                    ],
                )
                .expect("static buckets are valid")
                .set_buckets_for_metric(
                    MetricMatcher::Full(STAGE_SECONDS.into()),
                    &[0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 1.0],
                )
                .expect("static buckets are valid");
            let recorder = builder.build_recorder();
            let handle = recorder.handle();
            // Another recorder may exist in tests; the handle still renders ours.
            let _ = metrics::set_global_recorder(recorder);
            handle
        })
        .clone()
}

/// Log output format.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum LogFormat {
    Text,
    Json,
}

/// Sets up tracing with `VIGIE_LOG` (or `RUST_LOG`) as the filter, default `info`.
pub fn init_logging(format: LogFormat) {
    use tracing_subscriber::EnvFilter;
    let filter = EnvFilter::try_from_env("VIGIE_LOG")
        .or_else(|_| EnvFilter::try_from_default_env())
        .unwrap_or_else(|_| EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    let _ = match format {
        LogFormat::Text => builder.try_init(),
        LogFormat::Json => builder.json().flatten_event(true).try_init(),
    };
}
