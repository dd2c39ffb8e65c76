//! Where records come from.
//!
//! A [`Source`] yields batches of raw [`Record`]s and is told, with [`Source::commit`],
//! which offsets are durably reflected in the state file. Delivery semantics are
//! at-least-once towards the state store, made exactly-once for counts by storing offsets
//! in the same transaction as the counts (see [`crate::state`]). Records the parser refuses
//! go to a [`DeadLetters`] sink before their offset is stored, so nothing is lost.

pub mod file;
pub mod kafka;

use std::future::Future;
use std::time::Duration;

use crate::article::Reject;

/// One message as read from the feed.
#[derive(Debug, Clone, PartialEq)]
pub struct Record {
    pub topic: String,
    pub partition: i32,
    pub offset: i64,
    pub key: Option<Vec<u8>>,
    /// None for a tombstone (treated as an empty message).
    pub payload: Option<Vec<u8>>,
    /// The record's timestamp, milliseconds since the epoch.
    pub timestamp_ms: Option<i64>,
}

#[derive(Debug, thiserror::Error)]
pub enum SourceError {
    #[error("kafka: {0}")]
    Kafka(#[from] rdkafka::error::KafkaError),
    #[error("input {path}: {source}")]
    Io {
        path: String,
        source: std::io::Error,
    },
    #[error("{0}")]
    Other(String),
}

/// A feed of records.
pub trait Source: Send {
    /// Up to `max` records, waiting at most `wait` for the first one. An empty batch means
    /// the source is idle (or, for finite sources, finished: see [`Source::finished`]).
    /// A zero `wait` asks for what is ready now, without waiting for more (the pipeline's
    /// look-ahead uses it).
    fn next_batch(
        &mut self,
        max: usize,
        wait: Duration,
    ) -> impl Future<Output = Result<Vec<Record>, SourceError>> + Send;

    /// Called after the effects of records up to these next offsets are durable.
    fn commit(
        &mut self,
        offsets: &[(String, i32, i64)],
    ) -> impl Future<Output = Result<(), SourceError>> + Send;

    /// True once a finite source has nothing more to give.
    fn finished(&self) -> bool {
        false
    }
}

/// Where refused records go.
pub trait DeadLetters: Send + Sync {
    /// Stores `record` with its reason; returns once it is durable (acknowledged).
    fn send(
        &self,
        record: &Record,
        reason: &Reject,
    ) -> impl Future<Output = Result<(), SourceError>> + Send;
}

/// Keeps dead letters in memory (tests, backtests).
#[derive(Debug, Default)]
pub struct MemoryDeadLetters {
    pub records: std::sync::Mutex<Vec<(Record, String)>>,
}

impl DeadLetters for MemoryDeadLetters {
    async fn send(&self, record: &Record, reason: &Reject) -> Result<(), SourceError> {
        self.records
            .lock()
            .map_err(|_| SourceError::Other("poisoned".into()))?
            .push((record.clone(), reason.code().to_string()));
        Ok(())
    }
}

/// A finite source over records held in memory.
#[derive(Debug, Default)]
pub struct MemorySource {
    pub records: std::collections::VecDeque<Record>,
    pub committed: Vec<(String, i32, i64)>,
}

impl MemorySource {
    pub fn from_payloads(topic: &str, payloads: impl IntoIterator<Item = Vec<u8>>) -> Self {
        let records = payloads
            .into_iter()
            .enumerate()
            .map(|(i, p)| Record {
                topic: topic.into(),
                partition: 0,
                offset: i as i64,
                key: None,
                payload: Some(p),
                timestamp_ms: None,
            })
            .collect();
        MemorySource {
            records,
            committed: Vec::new(),
        }
    }
}

impl Source for MemorySource {
    async fn next_batch(
        &mut self,
        max: usize,
        _wait: Duration,
    ) -> Result<Vec<Record>, SourceError> {
        let n = max.min(self.records.len());
        Ok(self.records.drain(..n).collect())
    }

    async fn commit(&mut self, offsets: &[(String, i32, i64)]) -> Result<(), SourceError> {
        self.committed.extend_from_slice(offsets);
        Ok(())
    }

    fn finished(&self) -> bool {
        self.records.is_empty()
    }
}
