//! The Kafka source, dead-letter producer and small admin helpers, on rdkafka.
//!
//! Offsets: the state file is the source of truth. On every partition assignment the
//! rebalance callback seeks each partition to the next offset stored in the state file
//! (falling back to the group's committed offset, then `auto.offset.reset`). After each
//! durable state commit the same offsets are committed to Kafka too, so lag tools and a
//! fresh state file see sensible positions. Assignment uses the eager protocol.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant};

use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::DefaultClientContext;
use rdkafka::config::ClientConfig;
use rdkafka::consumer::{BaseConsumer, CommitMode, Consumer, ConsumerContext, StreamConsumer};
use rdkafka::message::{Header, Message, OwnedHeaders};
use rdkafka::producer::{FutureProducer, FutureRecord};
use rdkafka::types::RDKafkaRespErr;
use rdkafka::{ClientContext, Offset, TopicPartitionList};

use super::{DeadLetters, Record, SourceError};
use crate::article::Reject;
use crate::config::KafkaConfig;

/// Offsets by (topic, partition), shared between the pipeline and the rebalance callback.
pub type OffsetMap = Arc<RwLock<HashMap<(String, i32), i64>>>;

/// Consumer context: applies stored offsets on assignment and tracks what is assigned.
pub struct VigieContext {
    /// Next offsets from the state file, kept current by the pipeline after each commit.
    stored: OffsetMap,
    /// Partitions currently assigned (for readiness and lag).
    assigned: Arc<RwLock<BTreeSet<(String, i32)>>>,
}

impl ClientContext for VigieContext {}

impl ConsumerContext for VigieContext {
    fn rebalance(
        &self,
        consumer: &BaseConsumer<Self>,
        err: RDKafkaRespErr,
        tpl: &mut TopicPartitionList,
    ) {
        match err {
            RDKafkaRespErr::RD_KAFKA_RESP_ERR__ASSIGN_PARTITIONS => {
                let parts: Vec<(String, i32)> = tpl
                    .elements()
                    .iter()
                    .map(|e| (e.topic().to_string(), e.partition()))
                    .collect();
                let stored = self.stored.read().map(|m| m.clone()).unwrap_or_default();
                for (topic, partition) in &parts {
                    if let Some(&next) = stored.get(&(topic.clone(), *partition)) {
                        let _ = tpl.set_partition_offset(topic, *partition, Offset::Offset(next));
                    }
                }
                if let Err(e) = consumer.assign(tpl) {
                    tracing::error!(error = %e, "cannot assign partitions");
                }
                tracing::info!(partitions = ?parts, "partitions assigned");
                if let Ok(mut a) = self.assigned.write() {
                    a.extend(parts);
                }
            }
            RDKafkaRespErr::RD_KAFKA_RESP_ERR__REVOKE_PARTITIONS => {
                tracing::info!(partitions = tpl.count(), "partitions revoked");
                let _ = consumer.unassign();
                if let Ok(mut a) = self.assigned.write() {
                    a.clear();
                }
            }
            other => {
                tracing::error!(error = ?other, "rebalance error");
                let _ = consumer.unassign();
                if let Ok(mut a) = self.assigned.write() {
                    a.clear();
                }
            }
        }
    }
}

/// Base client properties shared by consumers, producers and admin clients.
pub fn client_config(k: &KafkaConfig) -> ClientConfig {
    let mut c = ClientConfig::new();
    c.set("bootstrap.servers", &k.brokers);
    for (key, value) in &k.properties {
        c.set(key, value);
    }
    c
}

/// Properties that only make sense for consumers; removed from producer/admin configs.
const CONSUMER_ONLY: &[&str] = &[
    "session.timeout.ms",
    "heartbeat.interval.ms",
    "max.poll.interval.ms",
    "auto.offset.reset",
    "group.id",
    "fetch.min.bytes",
    "fetch.wait.max.ms",
    "enable.auto.commit",
    "partition.assignment.strategy",
    "group.instance.id",
];

fn producer_config(k: &KafkaConfig) -> ClientConfig {
    let mut c = ClientConfig::new();
    c.set("bootstrap.servers", &k.brokers);
    for (key, value) in &k.properties {
        if !CONSUMER_ONLY.contains(&key.as_str()) {
            c.set(key, value);
        }
    }
    c
}

pub struct KafkaSource {
    consumer: Arc<StreamConsumer<VigieContext>>,
    stored: OffsetMap,
    assigned: Arc<RwLock<BTreeSet<(String, i32)>>>,
    /// How long a batch keeps filling after its first record.
    linger: Duration,
}

impl KafkaSource {
    pub fn new(
        k: &KafkaConfig,
        stored: HashMap<(String, i32), i64>,
    ) -> Result<KafkaSource, SourceError> {
        let stored: OffsetMap = Arc::new(RwLock::new(stored));
        let assigned = Arc::new(RwLock::new(BTreeSet::new()));
        let ctx = VigieContext {
            stored: stored.clone(),
            assigned: assigned.clone(),
        };
        let mut c = client_config(k);
        c.set("group.id", &k.group_id)
            .set("enable.auto.commit", "false")
            .set("enable.partition.eof", "false")
            .set("auto.offset.reset", &k.auto_offset_reset)
            .set(
                "message.max.bytes",
                (k.max_message_bytes.max(1_000_000) * 2).to_string(),
            )
            // How long a fetch may wait at the broker for data. librdkafka's 500 ms is
            // fine where the broker answers a waiting fetch as soon as data arrives; where
            // it does not (Tansu, measured), every article waited up to that long, and the
            // produce-to-webhook p99 was 2 s. 50 ms costs at most 20 idle fetches a second.
            .set("fetch.wait.max.ms", "50")
            // Once the prefetch queue is full, librdkafka waits `fetch.queue.backoff.ms`
            // (1 s) before it fetches again. vigie drains 64 MiB of 3 KB articles in
            // under a second, so the queue ran dry and every record waited for the
            // backoff: stalls of 400–460 ms every 1.3 s, 28% of a 100,000-article run
            // (measured with `vigie_pipeline_stage_seconds{stage="fetch"}`). At 50 ms the
            // queue refills before it empties: 1,000 rules, 23,800 → 33,100 articles/s.
            .set("fetch.queue.backoff.ms", "50")
            // With the refill that quick, a 16 MiB queue (5,000 articles, a quarter of a
            // second of work) is as fast as librdkafka's 64 MiB and 40 MB lighter
            // (1,000 rules: peak RSS 157 → 117 MB, same rate). Both can be overridden in
            // `[kafka.properties]`.
            .set("queued.max.messages.kbytes", "16384");
        for (key, value) in &k.properties {
            c.set(key, value);
        }
        let consumer: StreamConsumer<VigieContext> = c.create_with_context(ctx)?;
        consumer.subscribe(&[&k.topic])?;
        Ok(KafkaSource {
            consumer: Arc::new(consumer),
            stored,
            assigned,
            linger: Duration::from_millis(k.batch_timeout_ms),
        })
    }

    /// Shared view of assigned partitions.
    pub fn assigned(&self) -> Arc<RwLock<BTreeSet<(String, i32)>>> {
        self.assigned.clone()
    }

    /// A handle that measures lag from another task.
    pub fn probe(&self) -> LagProbe {
        LagProbe {
            consumer: self.consumer.clone(),
            stored: self.stored.clone(),
            assigned: self.assigned.clone(),
        }
    }

    /// Leaves the group cleanly.
    pub fn close(&self) {
        self.consumer.unsubscribe();
    }
}

/// Measures consumer lag beside the pipeline.
#[derive(Clone)]
pub struct LagProbe {
    consumer: Arc<StreamConsumer<VigieContext>>,
    stored: OffsetMap,
    assigned: Arc<RwLock<BTreeSet<(String, i32)>>>,
}

impl LagProbe {
    /// Whether a broker answers a metadata request for `topic` within `timeout`.
    /// Blocking: call from a blocking thread.
    pub fn reachable(&self, topic: &str, timeout: Duration) -> bool {
        self.consumer.fetch_metadata(Some(topic), timeout).is_ok()
    }

    /// Consumer lag per partition: high watermark minus our next offset. Blocking: call
    /// from a blocking thread.
    pub fn lag(&self) -> BTreeMap<i32, i64> {
        let parts: Vec<(String, i32)> = self
            .assigned
            .read()
            .map(|a| a.iter().cloned().collect())
            .unwrap_or_default();
        let stored = self.stored.read().map(|m| m.clone()).unwrap_or_default();
        let mut out = BTreeMap::new();
        for (topic, p) in parts {
            if let Ok((_, high)) = self
                .consumer
                .fetch_watermarks(&topic, p, Duration::from_secs(2))
            {
                let next = stored.get(&(topic.clone(), p)).copied().unwrap_or(0);
                out.insert(p, (high - next).max(0));
            }
        }
        out
    }
}

impl super::Source for KafkaSource {
    async fn next_batch(&mut self, max: usize, wait: Duration) -> Result<Vec<Record>, SourceError> {
        let mut out = Vec::new();
        let first = match tokio::time::timeout(wait, self.consumer.recv()).await {
            Err(_) => return Ok(out),
            Ok(Err(e)) => {
                tracing::warn!(error = %e, "kafka receive error");
                return Ok(out);
            }
            Ok(Ok(m)) => to_record(&m),
        };
        out.push(first);
        // A zero wait asks for what is already buffered, without lingering for more.
        let greedy = wait.is_zero();
        let deadline = Instant::now() + self.linger;
        while out.len() < max {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() && !greedy {
                break;
            }
            let left = if greedy { Duration::ZERO } else { left };
            match tokio::time::timeout(left, self.consumer.recv()).await {
                Err(_) => break,
                Ok(Err(e)) => {
                    tracing::warn!(error = %e, "kafka receive error");
                    break;
                }
                Ok(Ok(m)) => out.push(to_record(&m)),
            }
        }
        Ok(out)
    }

    async fn commit(&mut self, offsets: &[(String, i32, i64)]) -> Result<(), SourceError> {
        if offsets.is_empty() {
            return Ok(());
        }
        if let Ok(mut m) = self.stored.write() {
            for (t, p, o) in offsets {
                m.insert((t.clone(), *p), *o);
            }
        }
        let mut tpl = TopicPartitionList::new();
        for (t, p, o) in offsets {
            tpl.add_partition_offset(t, *p, Offset::Offset(*o))?;
        }
        // Kafka's copy of the offsets is advisory (the state file is the truth), so an
        // async commit that fails during a rebalance or outage is only logged.
        if let Err(e) = self.consumer.commit(&tpl, CommitMode::Async) {
            tracing::debug!(error = %e, "kafka offset commit failed");
        }
        Ok(())
    }
}

impl KafkaSource {
    /// Synchronous final commit of the latest stored offsets (on shutdown).
    pub fn commit_sync(&self) {
        let stored = self.stored.read().map(|m| m.clone()).unwrap_or_default();
        let assigned = self.assigned.read().map(|a| a.clone()).unwrap_or_default();
        let mut tpl = TopicPartitionList::new();
        for ((t, p), o) in stored {
            if assigned.contains(&(t.clone(), p)) {
                let _ = tpl.add_partition_offset(&t, p, Offset::Offset(o));
            }
        }
        if tpl.count() > 0 {
            if let Err(e) = self.consumer.commit(&tpl, CommitMode::Sync) {
                tracing::warn!(error = %e, "final kafka offset commit failed");
            }
        }
    }
}

fn to_record<M: Message>(m: &M) -> Record {
    Record {
        topic: m.topic().to_string(),
        partition: m.partition(),
        offset: m.offset(),
        key: m.key().map(|k| k.to_vec()),
        payload: m.payload().map(|p| p.to_vec()),
        timestamp_ms: m.timestamp().to_millis(),
    }
}

/// Sends refused records to the dead-letter topic, with the reason in headers.
pub struct KafkaDeadLetters {
    producer: FutureProducer,
    topic: String,
}

impl KafkaDeadLetters {
    pub fn new(k: &KafkaConfig) -> Result<Self, SourceError> {
        let mut c = producer_config(k);
        c.set("message.timeout.ms", "30000").set(
            "message.max.bytes",
            (k.max_message_bytes.max(1_000_000) * 12).to_string(),
        );
        Ok(KafkaDeadLetters {
            producer: c.create()?,
            topic: k.dlq_topic(),
        })
    }
}

impl DeadLetters for KafkaDeadLetters {
    async fn send(&self, r: &Record, reason: &Reject) -> Result<(), SourceError> {
        let detail = reason.to_string();
        let offset = r.offset.to_string();
        let partition = r.partition.to_string();
        let headers = OwnedHeaders::new()
            .insert(Header {
                key: "vigie.reason",
                value: Some(reason.code()),
            })
            .insert(Header {
                key: "vigie.error",
                value: Some(detail.as_str()),
            })
            .insert(Header {
                key: "vigie.source.topic",
                value: Some(r.topic.as_str()),
            })
            .insert(Header {
                key: "vigie.source.partition",
                value: Some(partition.as_str()),
            })
            .insert(Header {
                key: "vigie.source.offset",
                value: Some(offset.as_str()),
            });
        let payload: &[u8] = r.payload.as_deref().unwrap_or(&[]);
        let mut rec: FutureRecord<'_, [u8], [u8]> = FutureRecord::to(&self.topic)
            .payload(payload)
            .headers(headers);
        if let Some(k) = &r.key {
            rec = rec.key(k.as_slice());
        }
        self.producer
            .send(rec, Duration::from_secs(30))
            .await
            .map_err(|(e, _)| SourceError::Kafka(e))?;
        Ok(())
    }
}

/// Checks that the brokers answer a metadata request within `timeout` (blocking).
pub fn reachable(k: &KafkaConfig, timeout: Duration) -> Result<(), SourceError> {
    use rdkafka::producer::{BaseProducer, Producer};
    let p: BaseProducer = producer_config(k).create()?;
    p.client()
        .fetch_metadata(None, timeout)
        .map(|_| ())
        .map_err(|e| SourceError::Other(format!("cannot reach the brokers at {}: {e}", k.brokers)))
}

/// Creates `topic` with `partitions` partitions unless it exists.
pub async fn ensure_topic(
    k: &KafkaConfig,
    topic: &str,
    partitions: i32,
) -> Result<(), SourceError> {
    let admin: AdminClient<DefaultClientContext> = producer_config(k).create()?;
    let new = NewTopic::new(topic, partitions, TopicReplication::Fixed(1));
    let res = admin
        .create_topics(
            [&new],
            &AdminOptions::new().operation_timeout(Some(Duration::from_secs(10))),
        )
        .await?;
    for r in res {
        if let Err((t, code)) = r {
            if code != rdkafka::types::RDKafkaErrorCode::TopicAlreadyExists {
                return Err(SourceError::Other(format!(
                    "cannot create topic {t}: {code}"
                )));
            }
        }
    }
    Ok(())
}

/// Publishes payloads with keys; returns how many were acknowledged and the first error.
pub async fn publish(
    k: &KafkaConfig,
    topic: &str,
    items: Vec<(Option<String>, Vec<u8>)>,
    mut progress: impl FnMut(usize),
) -> (usize, Option<SourceError>) {
    let producer: FutureProducer = match producer_config(k)
        .set("message.timeout.ms", "30000")
        .set("linger.ms", "5")
        .create()
    {
        Ok(p) => p,
        Err(e) => return (0, Some(e.into())),
    };
    let mut ok = 0;
    let mut first_err = None;
    // Keep a bounded number of sends in flight for throughput without unbounded memory.
    let mut in_flight = futures::stream::FuturesOrdered::new();
    use futures::StreamExt;
    for (key, payload) in items {
        let producer = producer.clone();
        let topic = topic.to_string();
        in_flight.push_back(async move {
            let mut rec: FutureRecord<'_, str, [u8]> = FutureRecord::to(&topic).payload(&payload);
            if let Some(k) = &key {
                rec = rec.key(k.as_str());
            }
            producer
                .send(rec, Duration::from_secs(30))
                .await
                .map(|_| ())
                .map_err(|(e, _)| e)
        });
        if in_flight.len() >= 1000 {
            if let Some(r) = in_flight.next().await {
                match r {
                    Ok(()) => ok += 1,
                    Err(e) => {
                        first_err.get_or_insert(SourceError::Kafka(e));
                    }
                }
                progress(ok);
            }
        }
    }
    while let Some(r) = in_flight.next().await {
        match r {
            Ok(()) => ok += 1,
            Err(e) => {
                first_err.get_or_insert(SourceError::Kafka(e));
            }
        }
        progress(ok);
    }
    (ok, first_err)
}

/// Reads a topic's history without joining a consumer group: every partition from the first
/// record at or after `from_ms` (or from the beginning) up to its end as it stood when the
/// read began. Used by `backtest --input kafka://` and `run --warmup-from`.
///
/// Nothing is committed. Records come in partition order; callers sort by event time.
/// Fails when no record arrives for `timeout`.
pub fn read_history(
    k: &KafkaConfig,
    topic: &str,
    from_ms: Option<i64>,
    timeout: Duration,
) -> Result<Vec<Record>, SourceError> {
    let mut cfg = client_config(k);
    // assign() needs no group; the id only satisfies librdkafka and is never joined.
    cfg.set("group.id", format!("vigie-history-{}", std::process::id()))
        .set("enable.auto.commit", "false")
        .set("enable.partition.eof", "false");
    let consumer: BaseConsumer = cfg.create()?;
    let metadata = consumer.fetch_metadata(Some(topic), timeout)?;
    let partitions: Vec<i32> = metadata
        .topics()
        .iter()
        .filter(|t| t.name() == topic)
        .flat_map(|t| t.partitions().iter().map(|p| p.id()))
        .collect();
    if partitions.is_empty() {
        return Err(SourceError::Kafka(
            rdkafka::error::KafkaError::MetadataFetch(
                rdkafka::error::RDKafkaErrorCode::UnknownTopic,
            ),
        ));
    }
    // Where to start and where to stop, per partition.
    let mut starts = TopicPartitionList::new();
    let mut ends: HashMap<i32, i64> = HashMap::new();
    for &p in &partitions {
        let (low, high) = consumer.fetch_watermarks(topic, p, timeout)?;
        ends.insert(p, high);
        starts.add_partition_offset(topic, p, Offset::Offset(low))?;
    }
    if let Some(ms) = from_ms {
        let mut wanted = TopicPartitionList::new();
        for &p in &partitions {
            wanted.add_partition_offset(topic, p, Offset::Offset(ms))?;
        }
        let found = consumer.offsets_for_times(wanted, timeout)?;
        for e in found.elements() {
            let at = match e.offset() {
                Offset::Offset(o) => o,
                // No record at or after the time: nothing to read there.
                _ => ends.get(&e.partition()).copied().unwrap_or(0),
            };
            starts.set_partition_offset(topic, e.partition(), Offset::Offset(at))?;
        }
    }
    let mut remaining: HashMap<i32, i64> = HashMap::new();
    for e in starts.elements() {
        if let (Offset::Offset(o), Some(&end)) = (e.offset(), ends.get(&e.partition())) {
            if o < end {
                remaining.insert(e.partition(), end);
            }
        }
    }
    consumer.assign(&starts)?;
    let mut out = Vec::new();
    // The high watermark is where to stop, but not every broker reports it exactly (Tansu
    // 0.x has been seen a record or two short), so after reaching it the read goes on until
    // the topic has been quiet for a second, keeping records stamped before the read began.
    let began_ms = chrono::Utc::now().timestamp_millis();
    // The timeout counts from the last record received, so long histories finish.
    let mut last_progress = Instant::now();
    loop {
        match consumer.poll(Duration::from_millis(200)) {
            Some(Ok(m)) => {
                last_progress = Instant::now();
                let p = m.partition();
                let stamp = m.timestamp().to_millis();
                // Brokers differ in what they answer for a time past the last record, so
                // the start time is checked on every record too.
                let after_start = stamp.is_none_or(|t| from_ms.is_none_or(|f| t >= f));
                let before = stamp.is_none_or(|t| t <= began_ms);
                let within = remaining.get(&p).is_some_and(|&end| m.offset() < end);
                if after_start && (within || before) {
                    out.push(to_record(&m));
                }
                if remaining.get(&p).is_some_and(|&end| m.offset() + 1 >= end) {
                    remaining.remove(&p);
                }
            }
            Some(Err(e)) => return Err(e.into()),
            None => {
                let quiet = last_progress.elapsed();
                if remaining.is_empty() && quiet > Duration::from_secs(1) {
                    break;
                }
                if quiet > timeout {
                    return Err(SourceError::Kafka(
                        rdkafka::error::KafkaError::MessageConsumption(
                            rdkafka::error::RDKafkaErrorCode::OperationTimedOut,
                        ),
                    ));
                }
            }
        }
    }
    Ok(out)
}

/// Parses where a history read starts: `earliest`, a time (RFC 3339), milliseconds since
/// the epoch, or an age before `now` such as `7d`, `36h`, `90m` or `30s`. `None` means the beginning.
pub fn parse_history_start(
    value: &str,
    now: chrono::DateTime<chrono::Utc>,
) -> Result<Option<i64>, String> {
    let v = value.trim();
    if v.is_empty() || v == "earliest" {
        return Ok(None);
    }
    if let Ok(t) = chrono::DateTime::parse_from_rfc3339(v) {
        return Ok(Some(t.timestamp_millis()));
    }
    if let Ok(ms) = v.parse::<i64>() {
        return Ok(Some(ms));
    }
    let Some(secs) = crate::config::parse_span(v) else {
        return Err(format!(
            "`{v}`: expected earliest, an RFC 3339 time, epoch milliseconds or an age like 7d, 36h, 90m"
        ));
    };
    (now.timestamp().checked_sub(secs))
        .and_then(|t| t.checked_mul(1000))
        .map(Some)
        .ok_or_else(|| format!("`{v}`: an age too far back"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn history_start_forms() {
        let now = chrono::DateTime::parse_from_rfc3339("2022-01-08T00:00:00Z")
            .unwrap()
            .with_timezone(&chrono::Utc);
        assert_eq!(parse_history_start("earliest", now), Ok(None));
        assert_eq!(
            parse_history_start("7d", now),
            Ok(Some(now.timestamp_millis() - 7 * 86_400_000))
        );
        assert_eq!(
            parse_history_start("2022-01-01T00:00:00Z", now),
            Ok(Some(1_640_995_200_000))
        );
        assert!(parse_history_start("7 days", now).is_err());
        assert!(parse_history_start("x", now).is_err());
        // A multi-byte last character is an error, not a panic (it was split mid-character).
        assert!(parse_history_start("7é", now).is_err());
        assert!(parse_history_start("é", now).is_err());
        assert!(parse_history_start("99999999999999999d", now).is_err());
        assert!(parse_history_start("9000000000000000000s", now).is_err());
    }
}
