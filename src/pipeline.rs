//! The pipeline: source → parse → match → count/detect → durable commit → offsets.
//!
//! # Delivery semantics
//!
//! For each batch of records:
//!
//! 1. Every record is parsed. Refused records are sent to the dead-letter sink and the
//!    pipeline waits for the acknowledgement (retrying while the sink is down) — a refused
//!    record's offset is never stored before its dead letter is durable.
//! 2. Valid articles are matched (in parallel, off the async reactor), counted and the
//!    watermark advanced; the detectors decide alert events.
//! 3. Counts, detector state, alert events, outbox rows and the batch's next offsets are
//!    written to the state file in one transaction.
//! 4. Only then are the offsets committed to the source.
//!
//! A crash anywhere before 3 completes loses nothing: the records are read again from the
//! stored offsets and the state is exactly as before them. A crash between 3 and 4 is also
//! harmless because the stored offsets, not Kafka's, decide where consumption resumes. A
//! dead letter may be written twice in that case (at-least-once for the dead-letter topic).
//!
//! If the state file cannot be written (disk full, read-only), the pipeline stops with an
//! error rather than consume what it could not persist.
//!
//! # Overlap
//!
//! Parsing and matching (steps 1–2, the costly half, spread over every core) need only the
//! matcher, not the engine, so [`run`] prepares the next batch — what the consumer has
//! already buffered — while the current one is counted and committed. The prepared batch
//! carries the matcher it was matched with; if a rule reload swapped the matcher in
//! between, it is matched again, so rule indices always refer to the live rules. Nothing
//! of a prepared batch is stored or committed before its turn, so the semantics above hold
//! unchanged: a stop or crash simply drops it. Because the look-ahead fetches before the
//! current batch is committed, a rebalance at that moment seeks back to the state file's
//! offsets and the current batch's records arrive again; the loop remembers the next
//! offset it has taken in per partition and drops anything below it.
//!
//! Receiving records from the consumer costs microseconds each, so the loop also fetches
//! one batch further ahead while the current batch is applied: at any moment batch N is
//! applied, N+1 prepared and N+2 already received. `vigie_pipeline_stage_seconds` shows
//! which step holds the loop back.
//!
//! The state file is written behind, too: [`run`] applies batch N+1 to the engine while
//! batch N's transaction (step 3, with its fsync) is written on another thread. The writes
//! stay in order — N+1's starts only after N's has finished — and step 4 and the outbox
//! wake-up for a batch come only after its own write. A crash while N is being written
//! leaves the file at N−1 or N, each a consistent state with its own offsets; N+1 existed
//! only in memory and is read again.
//!
//! # Group commit
//!
//! When batch N+1 is applied before batch N's write has finished, its write is not queued
//! as a transaction of its own: it waits in a backlog, and the writes of the batches
//! applied meanwhile (up to [`MAX_BACKLOG`]) are folded into it, later values of a bucket
//! or a rule replacing earlier ones. When N's write ends, the backlog is written as one
//! transaction with the largest offsets of its batches; then those offsets are committed
//! and each batch is reported. A slow disk or a heavy write thus costs fewer, larger
//! transactions (the same buckets and rules rewritten once, one fsync) rather than holding
//! up the apply. The state file still only ever holds a state that some batch boundary had,
//! with that boundary's offsets, so a crash at any point loses nothing.
//!
//! While the source is behind — the batch just applied was full and another is already in
//! hand — the folded writes do not start as soon as the previous write ends but once they
//! hold [`MAX_BACKLOG`] batches: consecutive batches of a backlog touch mostly the same
//! buckets, and each write rewrites all the buckets its batches touched. (The previous write's
//! offsets are committed, and its batches reported, when the next write starts.) A live
//! feed, whose batches are not full, or a batch after which nothing is in hand, is written
//! at once as before, so neither alert latency nor a quiet feed waits for the fold.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use chrono::{DateTime, TimeZone, Utc};
use rayon::prelude::*;

use crate::article::{self, Article, ParseContext, Reject};
use crate::detect::EventKind;
use crate::engine::{AlertEvent, Engine, Ingested};
use crate::matcher::{ArticleMatch, Matcher};
use crate::shutdown::Shutdown;
use crate::source::{DeadLetters, Record, Source, SourceError};
use crate::state::{StateError, Store};
use crate::telemetry as m;

#[derive(Debug, thiserror::Error)]
pub enum PipelineError {
    #[error(transparent)]
    State(#[from] StateError),
    #[error(transparent)]
    Source(#[from] SourceError),
    #[error("processing task failed: {0}")]
    Join(String),
}

/// How the watermark follows time.
#[derive(Debug, Clone, Copy)]
pub enum ClockMode {
    /// Event time only (backtests): the watermark is the largest event time seen.
    EventTime,
    /// A live feed: the watermark is the slowest active partition's event time; partitions
    /// silent for `idle_after` are ignored; when the whole feed is silent that long, the
    /// watermark follows the wall clock. Future dates are clamped to the wall clock.
    Live { idle_after: Duration },
}

/// Partitions the source has assigned to us, when it knows (Kafka).
pub type Assigned = Arc<std::sync::RwLock<std::collections::BTreeSet<(String, i32)>>>;

/// Per-partition event-time progress.
#[derive(Debug, Default)]
struct PartitionClock {
    parts: HashMap<(String, i32), (i64, Instant)>,
    /// When the first record arrived: assigned partitions not heard from by
    /// `idle_after` after that are taken as empty.
    first_record: Option<Instant>,
}

impl PartitionClock {
    fn observe(&mut self, topic: &str, partition: i32, t: i64) {
        let e = self
            .parts
            .entry((topic.to_string(), partition))
            .or_insert((t, Instant::now()));
        e.0 = e.0.max(t);
        e.1 = Instant::now();
        self.first_record.get_or_insert_with(Instant::now);
    }

    fn watermark(&self, mode: ClockMode, assigned: Option<&Assigned>) -> Option<i64> {
        match mode {
            ClockMode::EventTime => self.parts.values().map(|p| p.0).max(),
            ClockMode::Live { idle_after } => {
                // A partition we own but have not heard from yet may hold older articles:
                // hold the watermark until it speaks or has been silent for `idle_after`.
                let starting = self.first_record.is_none_or(|f| f.elapsed() < idle_after);
                if let (true, Some(assigned)) = (starting, assigned) {
                    let unseen = assigned
                        .read()
                        .map(|a| a.iter().any(|p| !self.parts.contains_key(p)))
                        .unwrap_or(false);
                    if unseen {
                        return None;
                    }
                }
                let active = self
                    .parts
                    .values()
                    .filter(|p| p.1.elapsed() < idle_after)
                    .map(|p| p.0)
                    .min();
                active.or_else(|| self.parts.values().map(|p| p.0).max())
            }
        }
    }
}

/// Outcome of one batch.
#[derive(Debug, Default)]
pub struct BatchReport {
    pub articles: usize,
    pub late: usize,
    pub rejected: usize,
    pub events: Vec<AlertEvent>,
}

/// The synchronous half of the pipeline: everything after parsing and dead-lettering.
pub struct Processor {
    pub engine: Engine,
    /// None for in-memory runs (backtest, tests). Shared with the writer thread of [`run`],
    /// which writes batch N while batch N+1 is applied.
    store: Option<Arc<Mutex<Store>>>,
    /// Channels for events whose rule names none.
    default_notify: Vec<String>,
    clock: PartitionClock,
    mode: ClockMode,
    /// Largest accepted message.
    pub max_bytes: usize,
    /// When the source last delivered a record (for the idle clock).
    last_record: Instant,
    /// Partitions assigned by the source, when it has them.
    pub assigned: Option<Assigned>,
    /// Events decided at an event time before this (unix seconds) are stored but not sent:
    /// a warm-up replay of history should not mail last week's alerts.
    pub notify_after: Option<i64>,
    /// The event kinds each channel is told of (`[channels.X] events`); a channel not
    /// named here is told of all of them.
    pub channel_events: HashMap<String, Vec<EventKind>>,
    /// Per-rule match counters, by rule index, for the matcher they were made for, each
    /// registered at the rule's first match (so the metrics page lists rules that matched,
    /// not all 10,000). A handle per rule instead of a registry lookup (and an id copied
    /// for its label) per match: at 10,000 rules an article matches about 35.
    rule_matches: Option<(Arc<Matcher>, Vec<Option<metrics::Counter>>)>,
}

impl Processor {
    pub fn new(
        engine: Engine,
        store: Option<Store>,
        default_notify: Vec<String>,
        mode: ClockMode,
        max_bytes: usize,
    ) -> Self {
        Processor {
            engine,
            store: store.map(|s| Arc::new(Mutex::new(s))),
            default_notify,
            clock: PartitionClock::default(),
            mode,
            max_bytes,
            last_record: Instant::now(),
            assigned: None,
            notify_after: None,
            channel_events: HashMap::new(),
            rule_matches: None,
        }
    }

    /// Sets where events go: the channels of rules that name none, and the event kinds
    /// each channel takes (a reload that changed the channels).
    pub fn set_notify(
        &mut self,
        default_notify: Vec<String>,
        channel_events: HashMap<String, Vec<EventKind>>,
    ) {
        self.default_notify = default_notify;
        self.channel_events = channel_events;
    }

    /// Parses records; returns per record the article or the reason it was refused.
    pub fn parse(&self, records: &[Record], now: DateTime<Utc>) -> Vec<Result<Article, Reject>> {
        parse_records(records, self.max_bytes, now)
    }

    /// What preparing a batch needs: the live matcher and the size limit.
    pub fn preparer(&self) -> Preparer {
        Preparer {
            matcher: self.engine.matcher().clone(),
            max_bytes: self.max_bytes,
        }
    }

    /// Parses records and orders them by event time, as the feed would have delivered them
    /// (refused records first): how `backtest` and the warm-up replay history.
    pub fn parse_in_event_time_order(
        &self,
        records: Vec<Record>,
        now: DateTime<Utc>,
    ) -> Vec<(Record, Result<Article, Reject>)> {
        let parsed = self.parse(&records, now);
        let mut rows: Vec<_> = records.into_iter().zip(parsed).collect();
        rows.sort_by_key(|(_, p)| p.as_ref().map(|a| a.published_at).ok());
        rows
    }

    /// Matches, counts, detects and commits one parsed batch.
    pub fn apply(
        &mut self,
        records: &[Record],
        parsed: Vec<Result<Article, Reject>>,
        now: DateTime<Utc>,
    ) -> Result<BatchReport, PipelineError> {
        let prepared = Prepared {
            parsed,
            matched: None,
        };
        self.apply_prepared(records, prepared, now)
    }

    /// Counts, detects and commits one prepared batch (matching it first if it was not
    /// matched, or was matched with a matcher a reload has since replaced).
    pub fn apply_prepared(
        &mut self,
        records: &[Record],
        prepared: Prepared,
        now: DateTime<Utc>,
    ) -> Result<BatchReport, PipelineError> {
        let (report, write) = self.apply_deferred(records, prepared, now);
        self.write_now(&write)?;
        metrics::counter!(m::ARTICLES_PROCESSED).increment(report.articles as u64);
        Ok(report)
    }

    /// Applies a batch to the engine and returns, besides the report, the state write that
    /// makes it durable, for the caller to carry out (in order, before committing the
    /// batch's offsets to the source).
    pub fn apply_deferred(
        &mut self,
        records: &[Record],
        prepared: Prepared,
        now: DateTime<Utc>,
    ) -> (BatchReport, StateWrite) {
        let started = Instant::now();
        let clamp = match self.mode {
            ClockMode::Live { .. } => Some(now.timestamp()),
            ClockMode::EventTime => None,
        };
        let matcher = self.engine.matcher().clone();
        let articles: Vec<(usize, Article)> = prepared
            .parsed
            .into_iter()
            .enumerate()
            .filter_map(|(i, p)| p.ok().map(|a| (i, a)))
            .collect();
        let matches: Vec<ArticleMatch> = match prepared.matched {
            Some((m, matches)) if Arc::ptr_eq(&m, &matcher) => matches,
            _ => match_all(&matcher, articles.iter().map(|(_, a)| a)),
        };
        let mut report = BatchReport {
            rejected: records.len() - articles.len(),
            ..Default::default()
        };
        if !self
            .rule_matches
            .as_ref()
            .is_some_and(|(m, _)| Arc::ptr_eq(m, &matcher))
        {
            self.rule_matches = Some((matcher.clone(), vec![None; matcher.rules.len()]));
        }
        let mut counters = self.rule_matches.as_mut().map(|(_, c)| c);
        for (i, a) in &articles {
            let r = &records[*i];
            let mut t = a.published_at.timestamp();
            if let Some(c) = clamp {
                t = t.min(c);
            }
            self.clock.observe(&r.topic, r.partition, t);
        }
        let batch: Vec<(&Article, &ArticleMatch)> =
            articles.iter().map(|(_, a)| a).zip(&matches).collect();
        let ingested = self.engine.ingest_batch(&batch, clamp);
        for (outcome, mm) in ingested.iter().zip(&matches) {
            match outcome {
                Ingested::Late => {
                    report.late += 1;
                    metrics::counter!(m::ARTICLES_LATE).increment(1);
                }
                Ingested::Counted { .. } => {
                    for &ri in &mm.rule_indices {
                        if let Some(slot) = counters.as_mut().and_then(|c| c.get_mut(ri)) {
                            slot.get_or_insert_with(|| {
                                let id = matcher.rules[ri].id.clone();
                                metrics::counter!(m::RULE_MATCHES, "rule" => id)
                            })
                            .increment(1);
                        }
                    }
                }
            }
            report.articles += 1;
        }
        if !records.is_empty() {
            self.last_record = Instant::now();
        }
        if let Some(wm) = self.clock.watermark(self.mode, self.assigned.as_ref()) {
            report.events = self.engine.advance(wm);
        }
        let write = self.take_write(records);
        metrics::histogram!(m::BATCH_SECONDS).record(started.elapsed().as_secs_f64());
        for e in &report.events {
            metrics::counter!(m::ALERT_EVENTS, "kind" => e.kind.as_str()).increment(1);
            tracing::info!(rule = %e.rule, kind = e.kind.as_str(), alert = %e.alert_id, observed = e.observed, expected = e.expected, ratio = e.ratio, p_value = e.p_value, at = %e.at, "alert event");
        }
        (report, write)
    }

    /// The state file, for a writer beside the processor (`None` for in-memory runs).
    pub fn store(&self) -> Option<Arc<Mutex<Store>>> {
        self.store.clone()
    }

    /// Writes a batch's transaction on this thread (nothing for in-memory runs).
    fn write_now(&self, w: &StateWrite) -> Result<(), PipelineError> {
        match &self.store {
            Some(store) => write_state(store, w),
            None => Ok(()),
        }
    }

    /// With a live clock, lets the watermark follow the wall clock once the feed has been
    /// silent for `idle_after`, so alerts resolve when coverage stops.
    pub fn idle_tick(&mut self, now: DateTime<Utc>) -> Result<Vec<AlertEvent>, PipelineError> {
        let ClockMode::Live { idle_after } = self.mode else {
            return Ok(Vec::new());
        };
        if self.last_record.elapsed() < idle_after
            || self.engine.watermark().is_none_or(|w| w >= now)
        {
            return Ok(Vec::new());
        }
        let events = self.engine.advance(now.timestamp());
        let write = self.take_write(&[]);
        self.write_now(&write)?;
        Ok(events)
    }

    /// The outbox rows of `events`: one per event and channel (the rule's, else the
    /// default ones) that is told of its kind, none for events before `notify_after`.
    fn deliveries(&self, events: &[AlertEvent]) -> Vec<(String, String)> {
        let mut out = Vec::new();
        for e in events {
            if self.notify_after.is_some_and(|t| e.at.timestamp() < t) {
                continue;
            }
            let channels = if e.notify.is_empty() {
                &self.default_notify
            } else {
                &e.notify
            };
            for c in channels {
                let told = (self.channel_events.get(c)).is_none_or(|kinds| kinds.contains(&e.kind));
                if told {
                    out.push((e.event_id.clone(), c.clone()));
                }
            }
        }
        out
    }

    /// Takes everything the engine changed since the last write, with the offsets of
    /// `records` and the outbox rows of the new events.
    fn take_write(&mut self, records: &[Record]) -> StateWrite {
        let changes = self.engine.take_changes();
        let offsets = next_offsets(records);
        let deliveries = self.deliveries(&changes.events);
        metrics::gauge!(m::WATERMARK).set(changes.watermark.max(0) as f64);
        StateWrite {
            changes,
            offsets,
            deliveries,
        }
    }
}

/// One batch's transaction for the state file: what the engine changed, the batch's next
/// offsets, and the outbox rows of its events.
pub struct StateWrite {
    changes: crate::engine::Changes,
    /// Per topic and partition, the next offset to read: also committed to the source once
    /// this write is durable.
    pub offsets: Vec<(String, i32, i64)>,
    deliveries: Vec<(String, String)>,
}

impl StateWrite {
    /// Folds a later batch's write into this one (see [`crate::engine::Changes::merge`]):
    /// one transaction then makes both durable.
    fn merge(&mut self, later: StateWrite) {
        self.changes.merge(later.changes);
        for (topic, partition, next) in later.offsets {
            match (self.offsets.iter_mut()).find(|(t, p, _)| *t == topic && *p == partition) {
                Some(o) => o.2 = o.2.max(next),
                None => self.offsets.push((topic, partition, next)),
            }
        }
        self.offsets.sort();
        self.deliveries.extend(later.deliveries);
    }
}

/// Writes one batch's transaction; an error stops consumption.
fn write_state(store: &Mutex<Store>, w: &StateWrite) -> Result<(), PipelineError> {
    let mut store = store
        .lock()
        .map_err(|_| PipelineError::Join("state store lock poisoned".into()))?;
    store
        .commit(&w.changes, &w.offsets, &w.deliveries)
        .inspect_err(|e| {
            metrics::counter!(m::STATE_ERRORS).increment(1);
            tracing::error!(error = %e, "cannot write the state file; stopping consumption");
        })?;
    Ok(())
}

/// A batch parsed and, usually, matched: the half of the work that needs no engine.
pub struct Prepared {
    /// Per record, the article or the reason it was refused.
    pub parsed: Vec<Result<Article, Reject>>,
    /// The matches of the parsed articles, in order, and the matcher that made them.
    matched: Option<(Arc<Matcher>, Vec<ArticleMatch>)>,
}

/// Prepares batches without the processor: a matcher and the size limit.
#[derive(Clone)]
pub struct Preparer {
    matcher: Arc<Matcher>,
    max_bytes: usize,
}

impl Preparer {
    /// Parses and matches a batch, in parallel.
    pub fn prepare(&self, records: &[Record], now: DateTime<Utc>) -> Prepared {
        let parsed = parse_records(records, self.max_bytes, now);
        let matches = match_all(&self.matcher, parsed.iter().filter_map(|p| p.as_ref().ok()));
        Prepared {
            parsed,
            matched: Some((self.matcher.clone(), matches)),
        }
    }
}

fn parse_records(
    records: &[Record],
    max_bytes: usize,
    now: DateTime<Utc>,
) -> Vec<Result<Article, Reject>> {
    records
        .par_iter()
        .map(|r| {
            let ctx = ParseContext {
                max_bytes,
                record_time: r
                    .timestamp_ms
                    .and_then(|ms| Utc.timestamp_millis_opt(ms).single()),
                now,
            };
            article::parse(r.payload.as_deref().unwrap_or(&[]), &ctx)
        })
        .collect()
}

fn match_all<'a>(
    matcher: &Matcher,
    articles: impl Iterator<Item = &'a Article>,
) -> Vec<ArticleMatch> {
    let articles: Vec<&Article> = articles.collect();
    articles
        .par_iter()
        .map(|a| matcher.match_article(a))
        .collect()
}

/// Keeps the records of `batch` not taken in yet and marks them taken (see `taken` in
/// [`run`]).
fn take_in(batch: Vec<Record>, taken: &mut HashMap<String, HashMap<i32, i64>>) -> Vec<Record> {
    let before = batch.len();
    let kept: Vec<Record> = batch
        .into_iter()
        .filter(|r| {
            taken
                .get(&r.topic)
                .and_then(|t| t.get(&r.partition))
                .is_none_or(|&next| r.offset >= next)
        })
        .collect();
    if kept.len() < before {
        tracing::info!(
            dropped = before - kept.len(),
            "records delivered again after a rebalance, already taken in; skipped"
        );
    }
    for (topic, partition, next) in next_offsets(&kept) {
        let n = taken
            .entry(topic)
            .or_default()
            .entry(partition)
            .or_insert(next);
        *n = (*n).max(next);
    }
    kept
}

/// The next offset to read per partition after these records.
pub fn next_offsets(records: &[Record]) -> Vec<(String, i32, i64)> {
    let mut m: HashMap<(String, i32), i64> = HashMap::new();
    for r in records {
        let e = m
            .entry((r.topic.clone(), r.partition))
            .or_insert(r.offset + 1);
        *e = (*e).max(r.offset + 1);
    }
    let mut v: Vec<_> = m.into_iter().map(|((t, p), o)| (t, p, o)).collect();
    v.sort();
    v
}

/// Settings of the async loop.
#[derive(Debug, Clone)]
pub struct LoopSettings {
    pub batch_size: usize,
    /// Longest wait for a first record before an idle tick.
    pub poll: Duration,
}

/// Runs the pipeline until the source is finished or shutdown fires. `after_commit` is
/// called after every durable commit (the outbox worker uses it to wake up).
pub async fn run<S: Source, D: DeadLetters>(
    source: &mut S,
    dead: &D,
    processor: Arc<Mutex<Processor>>,
    settings: LoopSettings,
    mut shutdown: Shutdown,
    after_commit: impl Fn(&BatchReport),
) -> Result<u64, PipelineError> {
    let mut total = 0u64;
    // The pipeline holds up to three batches at once (module docs, "Overlap"): batch i
    // being applied, batch i+1 being parsed and matched (`ahead`), and batch i+2 fetched
    // from what the consumer had buffered (`queued`), handed to the preparer as soon as
    // batch i+1 is taken.
    let mut ahead: Option<tokio::task::JoinHandle<(Vec<Record>, Prepared)>> = None;
    let mut queued: Option<Vec<Record>> = None;
    // The live matcher as of the last apply, to prepare the next batch with.
    let mut preparer: Option<Preparer> = None;
    // Per topic and partition, the next offset not yet taken in. With the look-ahead a
    // rebalance can happen while a batch is fetched but not yet committed; the assignment
    // then seeks to the state file's offsets, before that batch, and its records arrive
    // again. They are dropped here, so nothing is counted twice whatever the source does.
    let mut taken: HashMap<String, HashMap<i32, i64>> = HashMap::new();
    // The previous batch's state write, running while the current batch is applied
    // (module docs, "Overlap"); finished before the next write starts and before returning.
    let mut writing: Option<Writing> = None;
    // Batches applied while that write was still running, folded into one write to start
    // when it ends (module docs, "Group commit").
    let mut backlog: Option<Backlog> = None;
    loop {
        if (source.finished() && ahead.is_none() && queued.is_none()) || shutdown.is_fired() {
            flush(
                &mut writing,
                &mut backlog,
                source,
                &mut total,
                &after_commit,
            )
            .await?;
            return Ok(total);
        }
        let (batch, prepared) = match ahead.take() {
            Some(h) => {
                let waited = Instant::now();
                let r = h.await.map_err(|e| PipelineError::Join(e.to_string()))?;
                stage("prepare_wait", waited);
                r
            }
            None => {
                let batch = match queued.take() {
                    Some(b) => b,
                    None => {
                        // Nothing else in hand: what is applied is made durable, its
                        // offsets committed and its events handed to the outbox before
                        // waiting on the source, so a quiet feed never holds them back.
                        if writing.is_some() || backlog.is_some() {
                            flush(
                                &mut writing,
                                &mut backlog,
                                source,
                                &mut total,
                                &after_commit,
                            )
                            .await?;
                        }
                        let fetching = Instant::now();
                        let batch = tokio::select! {
                            _ = shutdown.recv() => {
                                flush(&mut writing, &mut backlog, source, &mut total, &after_commit).await?;
                                return Ok(total);
                            }
                            b = source.next_batch(settings.batch_size, settings.poll) => b?,
                        };
                        stage("fetch", fetching);
                        let fetched = batch.len();
                        let batch = take_in(batch, &mut taken);
                        if fetched > 0 && batch.is_empty() {
                            continue;
                        }
                        batch
                    }
                };
                let now = Utc::now();
                if batch.is_empty() {
                    // The idle tick writes on its own: after the pending write, in order.
                    flush(
                        &mut writing,
                        &mut backlog,
                        source,
                        &mut total,
                        &after_commit,
                    )
                    .await?;
                    let p = processor.clone();
                    let events = tokio::task::spawn_blocking(move || {
                        p.lock()
                            .map_err(|_| PipelineError::Join("poisoned".into()))?
                            .idle_tick(now)
                    })
                    .await
                    .map_err(|e| PipelineError::Join(e.to_string()))??;
                    if !events.is_empty() {
                        after_commit(&BatchReport {
                            events,
                            ..Default::default()
                        });
                    }
                    continue;
                }
                // Parsing and matching are CPU work: off the reactor.
                let p = processor.clone();
                tokio::task::spawn_blocking(move || {
                    let preparer = p
                        .lock()
                        .map_err(|_| PipelineError::Join("poisoned".into()))?
                        .preparer();
                    let preparing = Instant::now();
                    let prepared = preparer.prepare(&batch, now);
                    stage("prepare", preparing);
                    Ok::<_, PipelineError>((batch, prepared))
                })
                .await
                .map_err(|e| PipelineError::Join(e.to_string()))??
            }
        };
        metrics::counter!(m::BATCHES).increment(1);
        // The next batch starts being prepared now, beside this one's apply: the one
        // fetched during the last apply or, when there was none, what the consumer holds.
        if queued.is_none() && preparer.is_some() {
            queued = fetch_buffered(source, settings.batch_size, &mut taken).await?;
        }
        if let Some(prep) = &preparer {
            if let Some(next) = queued.take() {
                ahead = Some(prepare_ahead(prep.clone(), next));
            }
        }
        for (r, p) in batch.iter().zip(&prepared.parsed) {
            if let Err(reason) = p {
                tracing::warn!(topic = %r.topic, partition = r.partition, offset = r.offset, reason = reason.code(), error = %reason, "message refused, sending to dead-letter topic");
                let mut delay = Duration::from_millis(200);
                loop {
                    match dead.send(r, reason).await {
                        Ok(()) => break,
                        Err(e) => {
                            tracing::error!(error = %e, retry_in_ms = delay.as_millis() as u64, "dead-letter write failed");
                            tokio::select! {
                                _ = shutdown.recv() => {
                                    flush(&mut writing, &mut backlog, source, &mut total, &after_commit).await?;
                                    return Ok(total);
                                }
                                _ = tokio::time::sleep(delay) => {}
                            }
                            delay = (delay * 2).min(Duration::from_secs(30));
                        }
                    }
                }
                metrics::counter!(m::DEAD_LETTERED, "reason" => reason.code()).increment(1);
            }
        }
        // The batch is applied on a blocking thread while this task fetches the one after
        // next and commits the previous write's offsets: receiving records from the
        // consumer costs microseconds each, too much to sit between two applies.
        let full = batch.len() >= settings.batch_size;
        let p = processor.clone();
        let applying = tokio::task::spawn_blocking(move || {
            let mut p = p
                .lock()
                .map_err(|_| PipelineError::Join("poisoned".into()))?;
            let applying = Instant::now();
            let (report, write) = p.apply_deferred(&batch, prepared, Utc::now());
            stage("apply", applying);
            Ok::<_, PipelineError>((report, write, p.preparer(), p.store()))
        });
        if queued.is_none() {
            queued = fetch_buffered(source, settings.batch_size, &mut taken).await?;
        }
        let waited = Instant::now();
        let (report, write, next_preparer, store) = applying
            .await
            .map_err(|e| PipelineError::Join(e.to_string()))??;
        stage("apply_wait", waited);
        // With nothing being prepared, the fetched batch starts now rather than at the
        // next turn (the first batches, or after a quiet spell).
        if ahead.is_none() {
            if let Some(next) = queued.take() {
                ahead = Some(prepare_ahead(next_preparer.clone(), next));
            }
        }
        preparer = Some(next_preparer);
        match &mut backlog {
            Some(b) => {
                b.write.merge(write);
                b.reports.push(report);
            }
            None => {
                backlog = Some(Backlog {
                    write,
                    reports: vec![report],
                    store,
                })
            }
        }
        // The backlog waits while the previous write runs, unless it has grown to
        // `MAX_BACKLOG` batches; then the loop waits for the write instead of applying more.
        // While the source is behind (full batches, more in hand) it waits until it holds
        // `MAX_BACKLOG` batches in any case (module docs, "Group commit").
        let busy = writing.as_ref().is_some_and(|w| !w.handle.is_finished());
        let folded = backlog.as_ref().map_or(0, |b| b.reports.len());
        let catching_up = full && (ahead.is_some() || queued.is_some());
        if (!busy && !catching_up) || folded >= MAX_BACKLOG {
            finish_write(&mut writing, source, &mut total, &after_commit).await?;
            writing = backlog.take().map(start_write);
        }
    }
}

/// Most batches folded into one state write while the previous write runs: bounds the
/// memory of the backlog and how long a batch's offsets wait for their commit. While a
/// backlog is read, also how many a write waits for (module docs, "Group commit"): each
/// write rewrites every bucket its batches touched, and consecutive batches of a backlog
/// touch mostly the same buckets. Measured on the benchmark harness's topic
/// (docs/BENCHMARKS.md, "What changed"): waiting for 4 batches instead of none took the
/// writes per 100,000 articles from 37–40 to 22–24 and the CPU per article down 6–9% at
/// 10,000 rules; 8 (13 writes) took it down 7–9% more.
const MAX_BACKLOG: usize = 8;

/// Batches applied but not yet being written: their writes folded into one.
struct Backlog {
    write: StateWrite,
    /// One per batch, reported once the write is durable.
    reports: Vec<BatchReport>,
    store: Option<Arc<Mutex<Store>>>,
}

/// Starts writing a backlog on a blocking thread.
fn start_write(b: Backlog) -> Writing {
    let offsets = b.write.offsets.clone();
    let write = b.write;
    let store = b.store;
    let handle = tokio::task::spawn_blocking(move || match store {
        Some(store) => {
            let writing = Instant::now();
            let r = write_state(&store, &write);
            stage("write", writing);
            r
        }
        None => Ok(()),
    });
    Writing {
        handle,
        offsets,
        reports: b.reports,
    }
}

/// Waits for the running write, then writes the backlog and waits for it too: everything
/// applied is durable and committed when this returns.
async fn flush<S: Source>(
    writing: &mut Option<Writing>,
    backlog: &mut Option<Backlog>,
    source: &mut S,
    total: &mut u64,
    after_commit: &impl Fn(&BatchReport),
) -> Result<(), PipelineError> {
    finish_write(writing, source, total, after_commit).await?;
    *writing = backlog.take().map(start_write);
    finish_write(writing, source, total, after_commit).await
}

/// What the consumer has already buffered, up to `max` records not taken in yet (marked
/// taken), without waiting for more; `None` when there is nothing.
async fn fetch_buffered<S: Source>(
    source: &mut S,
    max: usize,
    taken: &mut HashMap<String, HashMap<i32, i64>>,
) -> Result<Option<Vec<Record>>, PipelineError> {
    let fetching = Instant::now();
    let next = source.next_batch(max, Duration::ZERO).await?;
    stage("fetch", fetching);
    let next = take_in(next, taken);
    Ok((!next.is_empty()).then_some(next))
}

/// Parses and matches a batch on a blocking thread, for the loop to take when its turn
/// comes.
fn prepare_ahead(
    prep: Preparer,
    batch: Vec<Record>,
) -> tokio::task::JoinHandle<(Vec<Record>, Prepared)> {
    tokio::task::spawn_blocking(move || {
        let preparing = Instant::now();
        let prepared = prep.prepare(&batch, Utc::now());
        stage("prepare", preparing);
        (batch, prepared)
    })
}

/// Adds the time since `since` to a stage's counter (see [`m::STAGE_SECONDS`]).
fn stage(name: &'static str, since: Instant) {
    metrics::histogram!(m::STAGE_SECONDS, "stage" => name).record(since.elapsed().as_secs_f64());
}

/// A state write under way, of one batch or several folded together, and what follows
/// once it is durable.
struct Writing {
    handle: tokio::task::JoinHandle<Result<(), PipelineError>>,
    /// The next offsets of its batches, committed to the source after the write.
    offsets: Vec<(String, i32, i64)>,
    /// One per batch, reported after the write.
    reports: Vec<BatchReport>,
}

/// Waits for the pending state write, if any; once it is durable, commits its batch's
/// offsets to the source and reports the batch.
async fn finish_write<S: Source>(
    writing: &mut Option<Writing>,
    source: &mut S,
    total: &mut u64,
    after_commit: &impl Fn(&BatchReport),
) -> Result<(), PipelineError> {
    let Some(Writing {
        handle,
        offsets,
        reports,
    }) = writing.take()
    else {
        return Ok(());
    };
    let waited = Instant::now();
    handle
        .await
        .map_err(|e| PipelineError::Join(e.to_string()))??;
    stage("write_wait", waited);
    source.commit(&offsets).await?;
    for report in &reports {
        // Counted only now that its state write is durable (the metric's promise).
        metrics::counter!(m::ARTICLES_PROCESSED).increment(report.articles as u64);
        *total += report.articles as u64;
        after_commit(report);
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::engine::EngineSettings;
    use crate::source::{MemoryDeadLetters, MemorySource};

    /// A processor with one rule (`kz`: kazakhstan), in event time, messages up to 1000
    /// bytes.
    fn kz_processor(store: Option<Store>, notify: Vec<String>) -> Arc<Mutex<Processor>> {
        let matcher = crate::matcher::testing::matcher(vec![crate::matcher::testing::rule(
            "kz",
            "kazakhstan",
        )]);
        let engine = Engine::new(EngineSettings::default(), matcher);
        Arc::new(Mutex::new(Processor::new(
            engine,
            store,
            notify,
            ClockMode::EventTime,
            1000,
        )))
    }

    /// Articles `0..n` about Kazakhstan, a minute apart, as a one-partition source.
    fn kz_articles(n: usize) -> MemorySource {
        let payloads: Vec<Vec<u8>> = (0..n)
            .map(|i| format!(r#"{{"id":"{i}","title":"Kazakhstan {i}","body":"b{i}","published_at":"2022-01-05T{:02}:{:02}:00Z"}}"#, 10 + i / 60, i % 60).into_bytes())
            .collect();
        MemorySource::from_payloads("articles", payloads)
    }

    /// Runs the loop over `source` until it is finished, in batches of `batch_size`.
    async fn run_through<S: Source>(
        source: &mut S,
        processor: Arc<Mutex<Processor>>,
        batch_size: usize,
    ) -> u64 {
        let (_t, shutdown) = crate::shutdown::channel();
        run(
            source,
            &MemoryDeadLetters::default(),
            processor,
            LoopSettings {
                batch_size,
                poll: Duration::from_millis(10),
            },
            shutdown,
            |_| {},
        )
        .await
        .unwrap()
    }

    #[test]
    fn each_channel_is_told_of_the_event_kinds_it_asks_for() {
        let processor = kz_processor(None, vec!["mail".into(), "pager".into()]);
        let mut p = processor.lock().unwrap();
        p.channel_events = HashMap::from([("pager".to_string(), vec![EventKind::Started])]);
        let mut started = crate::sink::render::sample_event();
        started.event_id = "a:started".into();
        started.kind = EventKind::Started;
        let mut resolved = started.clone();
        resolved.event_id = "a:resolved".into();
        resolved.kind = EventKind::Resolved;
        // A rule naming its own channels: the same filter applies to them.
        let mut own = resolved.clone();
        own.event_id = "b:resolved".into();
        own.notify = vec!["pager".into(), "ops".into()];
        let rows = p.deliveries(&[started, resolved, own]);
        let pairs: Vec<(&str, &str)> = rows.iter().map(|(e, c)| (&**e, &**c)).collect();
        assert_eq!(
            pairs,
            [
                ("a:started", "mail"),
                ("a:started", "pager"),
                ("a:resolved", "mail"),
                ("b:resolved", "ops"),
            ]
        );
    }

    #[tokio::test]
    async fn records_delivered_again_after_a_seek_back_are_counted_once() {
        let processor = kz_processor(None, vec![]);
        let payloads: Vec<Vec<u8>> = (0..6)
            .map(|i| format!(r#"{{"id":"{i}","title":"Kazakhstan {i}","body":"b","published_at":"2022-01-05T10:0{i}:00Z"}}"#).into_bytes())
            .collect();
        let mut source = MemorySource::from_payloads("articles", payloads);
        // A rebalance sought back: offsets 2..6 arrive a second time, after the first pass.
        let again: Vec<Record> = source.records.iter().skip(2).cloned().collect();
        source.records.extend(again);
        let (_t, shutdown) = crate::shutdown::channel();
        let n = run(
            &mut source,
            &MemoryDeadLetters::default(),
            processor.clone(),
            LoopSettings {
                batch_size: 4,
                poll: Duration::from_millis(10),
            },
            shutdown,
            |_| {},
        )
        .await
        .unwrap();
        assert_eq!(n, 6, "each record taken in once");
    }

    #[tokio::test]
    async fn every_record_passes_through_the_look_ahead_once_and_in_order() {
        let d = tempfile::tempdir().unwrap();
        let store = Store::open(&d.path().join("s.db")).unwrap();
        let processor = kz_processor(Some(store), vec![]);
        // Enough batches that the loop runs with a batch applied, one prepared and one
        // fetched at once, and uneven so the last batch is short.
        let mut source = kz_articles(41);
        let n = run_through(&mut source, processor.clone(), 3).await;
        assert_eq!(n, 41);
        let committed: Vec<i64> = source.committed.iter().map(|c| c.2).collect();
        assert!(
            committed.windows(2).all(|w| w[0] < w[1]),
            "offsets committed in order: {committed:?}"
        );
        assert_eq!(committed.last(), Some(&41));
        let s = Store::open(&d.path().join("s.db")).unwrap();
        let articles: u32 = s
            .buckets_since(0)
            .unwrap()
            .iter()
            .map(|b| b.2.articles)
            .sum();
        assert_eq!(articles, 41, "each article counted once");
    }

    #[tokio::test]
    async fn a_backlog_is_written_in_folds_of_several_batches() {
        let d = tempfile::tempdir().unwrap();
        let store = Store::open(&d.path().join("s.db")).unwrap();
        let processor = kz_processor(Some(store), vec![]);
        // 13 full batches of 3 and a short one: a backlog, with more in hand after each
        // full batch until the last.
        let mut source = kz_articles(41);
        run_through(&mut source, processor.clone(), 3).await;
        // One commit per write, of the next offset after its last batch.
        let committed: Vec<i64> = source.committed.iter().map(|c| c.2).collect();
        // Without the fold the first write would hold the first batch alone (nothing was
        // being written when it was applied), and most writes one or two batches. With it,
        // 8 batches (24 records), then the rest once the short last batch is applied.
        assert_eq!(committed, vec![24, 41]);
    }

    /// A source that hands over at most three records a call, whatever the batch size: a
    /// live feed, whose batches do not fill.
    struct Trickle(MemorySource);

    impl Source for Trickle {
        async fn next_batch(
            &mut self,
            max: usize,
            wait: Duration,
        ) -> Result<Vec<Record>, SourceError> {
            self.0.next_batch(max.min(3), wait).await
        }

        async fn commit(&mut self, offsets: &[(String, i32, i64)]) -> Result<(), SourceError> {
            self.0.commit(offsets).await
        }

        fn finished(&self) -> bool {
            self.0.finished()
        }
    }

    #[tokio::test]
    async fn a_live_feed_is_not_held_back_to_fold_writes() {
        let d = tempfile::tempdir().unwrap();
        let store = Store::open(&d.path().join("s.db")).unwrap();
        let processor = kz_processor(Some(store), vec![]);
        let mut source = Trickle(kz_articles(24));
        run_through(&mut source, processor.clone(), 4).await;
        // Batches of 3 against a size of 4 are never full: the first is written as soon as
        // it is applied, with more in hand, rather than waiting for others to fold into it.
        let committed: Vec<i64> = source.0.committed.iter().map(|c| c.2).collect();
        assert_eq!(committed.first(), Some(&3), "{committed:?}");
        assert_eq!(committed.last(), Some(&24));
    }

    #[tokio::test]
    async fn bad_messages_go_to_dead_letters_and_the_stream_goes_on() {
        let d = tempfile::tempdir().unwrap();
        let store = Store::open(&d.path().join("s.db")).unwrap();
        let processor = kz_processor(Some(store), vec!["log".into()]);
        let mut payloads: Vec<Vec<u8>> = Vec::new();
        for i in 0..5 {
            payloads.push(format!(r#"{{"id":"{i}","title":"Kazakhstan {i}","body":"b","published_at":"2022-01-05T10:0{i}:00Z"}}"#).into_bytes());
            payloads.push(b"{broken".to_vec());
        }
        payloads.push(vec![0xff, 0xfe]);
        payloads.push(vec![b'x'; 2000]);
        let mut source = MemorySource::from_payloads("articles", payloads);
        let dead = MemoryDeadLetters::default();
        let (_t, shutdown) = crate::shutdown::channel();
        let n = run(
            &mut source,
            &dead,
            processor.clone(),
            LoopSettings {
                batch_size: 3,
                poll: Duration::from_millis(10),
            },
            shutdown,
            |_| {},
        )
        .await
        .unwrap();
        assert_eq!(n, 5);
        let reasons: Vec<String> = dead
            .records
            .lock()
            .unwrap()
            .iter()
            .map(|(_, r)| r.clone())
            .collect();
        assert_eq!(reasons.len(), 7);
        assert!(
            reasons.contains(&"invalid_utf8".to_string())
                && reasons.contains(&"too_large".to_string())
        );
        assert_eq!(
            source.committed.last().unwrap().2,
            12,
            "the last offset is committed like any other"
        );
        let s = Store::open(&d.path().join("s.db")).unwrap();
        let stories: u32 = s
            .buckets_since(0)
            .unwrap()
            .iter()
            .map(|b| b.2.articles)
            .sum();
        assert_eq!(stories, 5);
        assert_eq!(s.offsets().unwrap()[&("articles".to_string(), 0)], 12);
    }
}
