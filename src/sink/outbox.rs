//! The outbox worker: sends pending deliveries, each (event × channel) on its own.
//!
//! Guarantees: a row is marked `sent` only after the receiver acknowledged it, so after a
//! crash a delivery may be repeated once, never lost; the repeat carries the same
//! Idempotency-Key. One channel's outcome never touches another channel's row.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::Notify;

use super::retry::RetryPolicy;
use super::{Notifier, SendError};
use crate::engine::AlertEvent;
use crate::shutdown::Shutdown;
use crate::state::{Delivery, Store};
use crate::telemetry as m;

pub struct OutboxWorker {
    /// Its own connection to the state file.
    pub store: Arc<Mutex<Store>>,
    pub notifiers: HashMap<String, Arc<dyn Notifier>>,
    pub policy: RetryPolicy,
    /// Woken after each state commit that may have added rows.
    pub wake: Arc<Notify>,
    /// Channels that group events arriving within this long into one notification.
    pub group_wait: HashMap<String, Duration>,
}

fn now_ms() -> i64 {
    chrono::Utc::now().timestamp_millis()
}

impl OutboxWorker {
    async fn with_store<T: Send + 'static>(
        &self,
        f: impl FnOnce(&Store) -> T + Send + 'static,
    ) -> Option<T> {
        let store = self.store.clone();
        tokio::task::spawn_blocking(move || store.lock().ok().map(|s| f(&s)))
            .await
            .ok()
            .flatten()
    }

    /// Sends everything due now; returns how many rows were handled. On channels with a
    /// `group_wait`, the due rows wait until the oldest is that old, then go as one
    /// notification.
    pub async fn drain_once(&self) -> usize {
        let due = match self.with_store(|s| s.due(now_ms(), 64)).await {
            Some(Ok(d)) => d,
            Some(Err(e)) => {
                tracing::error!(error = %e, "cannot read the outbox");
                return 0;
            }
            None => return 0,
        };
        let mut batches: Vec<Vec<Delivery>> = Vec::new();
        let mut grouped: BTreeMap<String, Vec<Delivery>> = BTreeMap::new();
        for d in due {
            match self.group_wait.get(&d.channel) {
                Some(w) if !w.is_zero() => grouped.entry(d.channel.clone()).or_default().push(d),
                _ => batches.push(vec![d]),
            }
        }
        for (channel, rows) in grouped {
            let wait = self.group_wait.get(&channel).copied().unwrap_or_default();
            let oldest = rows.iter().map(|d| d.created_ms).min().unwrap_or(0);
            if now_ms() - oldest >= wait.as_millis() as i64 {
                batches.push(rows);
            }
        }
        let n = batches.iter().map(Vec::len).sum();
        let sends = batches.into_iter().map(|rows| async move {
            let channel = rows[0].channel.clone();
            let result = match self.notifiers.get(&channel) {
                Some(n) if rows.len() == 1 => n.send(&rows[0].event).await,
                Some(n) => {
                    let events: Vec<AlertEvent> = rows.iter().map(|d| d.event.clone()).collect();
                    n.send_group(&events).await
                }
                None => Err(SendError::Permanent(format!(
                    "channel `{channel}` is not configured"
                ))),
            };
            (rows, result)
        });
        for (rows, result) in futures::future::join_all(sends).await {
            for d in rows {
                self.settle(d, result.clone()).await;
            }
        }
        if let Some(Ok(stats)) = self.with_store(|s| s.outbox_stats()).await {
            metrics::gauge!(m::OUTBOX_PENDING).set(stats.pending as f64);
        }
        n
    }

    /// Records one row's outcome: sent, retry later, or dead.
    async fn settle(&self, d: Delivery, result: Result<(), SendError>) {
        let (id, channel, event_id) = (d.id, d.channel.clone(), d.event_id.clone());
        let outcome = match result {
            Ok(()) => {
                tracing::info!(channel = %channel, event = %event_id, attempts = d.attempts + 1, "alert delivered");
                let _ = self.with_store(move |s| s.mark_sent(id)).await;
                "sent"
            }
            Err(SendError::Retryable {
                message,
                retry_after,
            }) => {
                let age = Duration::from_millis((now_ms() - d.created_ms).max(0) as u64);
                if self.policy.keep_trying(age) {
                    let delay = self.policy.delay(d.attempts, retry_after);
                    tracing::warn!(channel = %channel, event = %event_id, attempts = d.attempts + 1, retry_in_ms = delay.as_millis() as u64, error = %message, "alert delivery failed, will retry");
                    let next = now_ms() + delay.as_millis() as i64;
                    let _ = self
                        .with_store(move |s| s.mark_retry(id, next, &message))
                        .await;
                    "retry"
                } else {
                    tracing::error!(channel = %channel, event = %event_id, attempts = d.attempts + 1, error = %message, "alert delivery given up");
                    let _ = self
                        .with_store(move |s| s.mark_dead(id, &format!("gave up: {message}")))
                        .await;
                    "dead"
                }
            }
            Err(SendError::Permanent(message)) => {
                tracing::error!(channel = %channel, event = %event_id, error = %message, "alert delivery refused, not retrying");
                let _ = self.with_store(move |s| s.mark_dead(id, &message)).await;
                "dead"
            }
        };
        metrics::counter!(m::DELIVERIES, "channel" => channel, "outcome" => outcome).increment(1);
    }

    /// Runs until shutdown.
    pub async fn run(self, mut shutdown: Shutdown) {
        loop {
            let handled = self.drain_once().await;
            if handled > 0 {
                continue;
            }
            let wait = match self.with_store(|s| s.next_due_ms()).await {
                Some(Ok(Some(t))) => Duration::from_millis((t - now_ms()).clamp(10, 1000) as u64),
                _ => Duration::from_secs(1),
            };
            tokio::select! {
                _ = shutdown.recv() => return,
                _ = self.wake.notified() => {}
                _ = tokio::time::sleep(wait) => {}
            }
        }
    }
}
