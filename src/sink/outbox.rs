//! The outbox worker: sends pending deliveries, each (event × channel) on its own.
//!
//! Guarantees: a row is marked `sent` only after the receiver acknowledged it, so after a
//! crash a delivery may be repeated once, never lost; the repeat carries the same
//! Idempotency-Key. One channel's outcome never touches another channel's row, nor its
//! pace: each send is settled as soon as it ends, and new rows go out while a slow
//! receiver still holds earlier ones (at most [`IN_FLIGHT_PER_CHANNEL`] sends per channel,
//! so a hung receiver is not sent ever more requests it cannot answer).
//!
//! Each row that falls due passes, in order: silences (set aside), the channel's floor
//! (set aside), its digest (held until the next digest time), its quiet hours (held, or
//! set aside). Rows released from a hold go out together, one notification per channel.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures::stream::{FuturesUnordered, StreamExt};
use tokio::sync::Notify;

use super::retry::RetryPolicy;
use super::{Notifier, SendError};
use crate::engine::AlertEvent;
use crate::quiet::{Digest, QuietAction, QuietHours};
use crate::shutdown::Shutdown;
use crate::silence::{self, Silence};
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
    /// Channels with quiet hours ([`crate::quiet`]).
    pub quiet: HashMap<String, QuietHours>,
    /// Channels told of large alerts only ([`Floor`]).
    pub floors: HashMap<String, Floor>,
    /// Channels told at set times only, of everything since ([`crate::quiet::DigestTime`]).
    pub digests: HashMap<String, Digest>,
    /// The dashboard's address as people reach it, for each event's link to its rule.
    pub dashboard_url: Option<String>,
}

/// A channel's floor (`min_ratio`, `min_stories`): which alerts are large enough for it.
///
/// Decided when a delivery falls due, after silences and before quiet hours: a `started`
/// or `updated` event under the floor is marked `silenced` with the reason; an alert that
/// grows past it later reaches the channel then, marked `unannounced`. A `resolved` event
/// goes only to a channel that was told of the alert.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Floor {
    pub min_ratio: Option<f64>,
    pub min_stories: Option<u64>,
}

impl Floor {
    /// Why a `started` or `updated` event stays under the floor, or None when it reaches
    /// the channel. (A `resolved` event depends on what the channel was told instead.)
    pub fn holds_back(&self, e: &AlertEvent) -> Option<String> {
        if let Some(r) = self.min_ratio.filter(|r| e.ratio < *r) {
            return Some(format!(
                "ratio {:.1} under the channel's min_ratio {r}",
                e.ratio
            ));
        }
        if let Some(n) = self.min_stories.filter(|n| e.observed < *n) {
            return Some(format!(
                "{} stories under the channel's min_stories {n}",
                e.observed
            ));
        }
        None
    }
}

/// Most sends in flight to one channel at once.
pub const IN_FLIGHT_PER_CHANNEL: usize = 4;

/// How long a stop waits for sends in flight to end.
const STOP_GRACE: Duration = Duration::from_secs(2);

/// Rows most read from the outbox per round.
const ROUND_ROWS: usize = 64;

/// The rows being sent, by id and per channel.
#[derive(Default)]
struct InFlight {
    rows: HashSet<i64>,
    per_channel: HashMap<String, usize>,
}

impl InFlight {
    fn start(&mut self, rows: &[Delivery]) {
        self.rows.extend(rows.iter().map(|d| d.id));
        *self.per_channel.entry(rows[0].channel.clone()).or_default() += 1;
    }

    fn end(&mut self, rows: &[Delivery]) {
        for d in rows {
            self.rows.remove(&d.id);
        }
        if let Some(n) = self.per_channel.get_mut(&rows[0].channel) {
            *n -= 1;
            if *n == 0 {
                self.per_channel.remove(&rows[0].channel);
            }
        }
    }

    /// The rows being sent, and the channels with no room left: what the next reads of
    /// the outbox leave out.
    fn exclusions(&self, per_channel: usize) -> (Vec<i64>, Vec<String>) {
        let full = (self.per_channel.keys())
            .filter(|c| self.room(c, per_channel) == 0)
            .cloned()
            .collect();
        (self.rows.iter().copied().collect(), full)
    }

    fn room(&self, channel: &str, per_channel: usize) -> usize {
        per_channel.saturating_sub(self.per_channel.get(channel).copied().unwrap_or(0))
    }
}

fn now_ms() -> i64 {
    chrono::Utc::now().timestamp_millis()
}

/// What one read of the outbox found.
#[derive(Default)]
struct Round {
    /// Notifications to send now.
    batches: Vec<Vec<Delivery>>,
    /// Channels whose due rows wait for their `group_wait` to pass, with the time each
    /// group is ready (ms since the epoch).
    gathering: Vec<(String, i64)>,
}

/// How long the worker sleeps when nothing wakes it: until the next row falls due or the
/// next group is ready, at least 10 ms (rows due now but not sent have no room) and at
/// most a second (a row written by another process, with no wake-up).
fn wake_after(now: i64, next_due: Option<i64>, ready_at: Option<i64>) -> Duration {
    match next_due.into_iter().chain(ready_at).min() {
        Some(t) => Duration::from_millis((t - now).clamp(10, 1000) as u64),
        None => Duration::from_secs(1),
    }
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

    /// Sends everything due now and waits for every send to end; returns how many rows
    /// were handled. On channels with a `group_wait`, the due rows wait until the oldest is
    /// that old, then go as one notification. (For tests and one-shot drains; the service
    /// runs [`OutboxWorker::run`], which does not wait for one send to start another.)
    pub async fn drain_once(&self) -> usize {
        let batches = self
            .due_batches(&InFlight::default(), usize::MAX)
            .await
            .batches;
        let n = batches.iter().map(Vec::len).sum();
        let sends = batches.into_iter().map(|rows| self.send(rows));
        for (rows, result) in futures::future::join_all(sends).await {
            self.settle(rows, result).await;
        }
        self.update_pending().await;
        n
    }

    /// The due rows not already being sent, as notifications to send: one row each, or
    /// one group per channel with a `group_wait` that has passed. At most `per_channel`
    /// sends in flight per channel, counting `busy`. Groups still gathering are named in
    /// the answer with the time each is ready.
    async fn due_batches(&self, busy: &InFlight, per_channel: usize) -> Round {
        let mut round = Round::default();
        let (ids, full) = busy.exclusions(per_channel);
        let read = self.with_store(move |s| {
            let now = now_ms();
            Ok::<_, crate::state::StateError>((
                s.due(now, ROUND_ROWS, &ids, &full)?,
                s.silences(now, None)?,
            ))
        });
        let (due, silences) = match read.await {
            Some(Ok(d)) => d,
            Some(Err(e)) => {
                tracing::error!(error = %e, "cannot read the outbox");
                return round;
            }
            None => return round,
        };
        let mut due = self.silence(due, &silences).await;
        if let Some(base) = &self.dashboard_url {
            for d in &mut due {
                d.event.link = Some(format!(
                    "{}/rules/{}",
                    base.trim_end_matches('/'),
                    d.event.rule
                ));
            }
        }
        let due = self.floor(due).await;
        let due = self.digest(due).await;
        let due = self.quiet(due).await;
        let mut batches: Vec<Vec<Delivery>> = Vec::new();
        let mut grouped: BTreeMap<String, Vec<Delivery>> = BTreeMap::new();
        // Rows that quiet hours held back go out together when released, whatever the
        // channel's `group_wait`: they have waited long enough.
        let mut released: BTreeMap<String, Vec<Delivery>> = BTreeMap::new();
        for d in due {
            if d.held_ms.is_some() {
                released.entry(d.channel.clone()).or_default().push(d);
                continue;
            }
            match self.group_wait.get(&d.channel) {
                Some(w) if !w.is_zero() => grouped.entry(d.channel.clone()).or_default().push(d),
                _ => batches.push(vec![d]),
            }
        }
        batches.extend(released.into_values());
        for (channel, rows) in grouped {
            let wait = self.group_wait.get(&channel).copied().unwrap_or_default();
            let oldest = rows.iter().map(|d| d.created_ms).min().unwrap_or(0);
            let ready = oldest.saturating_add(wait.as_millis() as i64);
            if now_ms() >= ready {
                batches.push(rows);
            } else {
                round.gathering.push((channel, ready));
            }
        }
        // Keep to each channel's room, oldest rows first (the order `due` gave).
        let mut room: HashMap<String, usize> = HashMap::new();
        batches.retain(|rows| {
            let left = (room.entry(rows[0].channel.clone()))
                .or_insert_with(|| busy.room(&rows[0].channel, per_channel));
            let keep = *left > 0;
            *left = left.saturating_sub(1);
            keep
        });
        round.batches = batches;
        round
    }

    /// Marks the rows an active silence covers as silenced (see [`crate::silence`]) and
    /// gives back the others. Taken when a row falls due, so it covers retries too.
    async fn silence(&self, due: Vec<Delivery>, silences: &[Silence]) -> Vec<Delivery> {
        if silences.is_empty() {
            return due;
        }
        let now = chrono::Utc::now();
        let (mut keep, mut muted) = (Vec::with_capacity(due.len()), Vec::new());
        for d in due {
            match silence::muting(silences, &d.event.rule, &d.channel, now) {
                Some(s) => muted.push((d, s.id)),
                None => keep.push(d),
            }
        }
        for (d, silence) in muted {
            self.set_aside(d, format!("silenced by silence {silence}"))
                .await;
        }
        keep
    }

    /// Marks a due row `silenced`, not to be sent, for `why`: a silence, a channel's floor,
    /// quiet hours that drop.
    async fn set_aside(&self, d: Delivery, why: String) {
        tracing::info!(channel = %d.channel, event = %d.event_id, rule = %d.event.rule, reason = %why, "alert delivery silenced");
        let id = d.id;
        let _ = self.with_store(move |s| s.mark_silenced(id, &why)).await;
        metrics::counter!(m::DELIVERIES, "channel" => d.channel, "outcome" => "silenced")
            .increment(1);
    }

    /// Marks the rows under their channel's [`Floor`] as silenced and gives back the others.
    async fn floor(&self, due: Vec<Delivery>) -> Vec<Delivery> {
        if self.floors.is_empty() {
            return due;
        }
        let mut keep = Vec::with_capacity(due.len());
        for d in due {
            let Some(floor) = self.floors.get(&d.channel) else {
                keep.push(d);
                continue;
            };
            let why = if d.event.kind == crate::detect::EventKind::Resolved {
                // Asked now, row by row: an earlier row of this round (the start, after an
                // outage) may just have been held back.
                let (alert, channel, id) = (d.event.alert_id.clone(), d.channel.clone(), d.id);
                let told = self.with_store(move |s| s.told_of_alert(&alert, &channel, id));
                let told = told.await.and_then(Result::ok).unwrap_or(true);
                (!told).then(|| "the channel was not told of this alert".to_string())
            } else {
                floor.holds_back(&d.event)
            };
            match why {
                Some(why) => self.set_aside(d, why).await,
                None => keep.push(d),
            }
        }
        keep
    }

    /// Holds back (or drops) the rows of channels in their quiet hours and gives back the
    /// others. Taken when a row falls due, like [`OutboxWorker::silence`].
    async fn quiet(&self, due: Vec<Delivery>) -> Vec<Delivery> {
        if self.quiet.is_empty() {
            return due;
        }
        let now = chrono::Utc::now();
        let mut keep = Vec::with_capacity(due.len());
        for d in due {
            let Some((q, until)) =
                (self.quiet.get(&d.channel)).and_then(|q| Some((q, q.until(now)?)))
            else {
                keep.push(d);
                continue;
            };
            if q.action == QuietAction::Drop {
                let why = format!("dropped in quiet hours {}", q.describe());
                self.set_aside(d, why).await;
                continue;
            }
            self.hold(d, until, "quiet hours").await;
        }
        keep
    }

    /// Holds each new row of a channel with a digest until its next digest time and gives
    /// back the others. A row held before (`held_ms`) is being released: it goes on, to
    /// quiet hours and then out with the others released with it, as one notification.
    async fn digest(&self, due: Vec<Delivery>) -> Vec<Delivery> {
        if self.digests.is_empty() {
            return due;
        }
        let now = chrono::Utc::now();
        let mut keep = Vec::with_capacity(due.len());
        for d in due {
            let next = match self.digests.get(&d.channel) {
                Some(digest) if d.held_ms.is_none() => digest.next(now),
                _ => None,
            };
            match next {
                Some(at) => self.hold(d, at, "digest").await,
                None => keep.push(d),
            }
        }
        keep
    }

    /// Holds a due row until `until` (quiet hours, a digest): it falls due again then,
    /// released, with its retries counted from there.
    async fn hold(&self, d: Delivery, until: chrono::DateTime<chrono::Utc>, why: &'static str) {
        let (id, until_ms) = (d.id, until.timestamp_millis());
        tracing::info!(channel = %d.channel, event = %d.event_id, rule = %d.event.rule, until = %until.to_rfc3339(), reason = why, "alert delivery held");
        let _ = self.with_store(move |s| s.hold(id, until_ms)).await;
        metrics::counter!(m::DELIVERIES, "channel" => d.channel, "outcome" => "held").increment(1);
    }

    /// Sends one notification; gives back its rows with the outcome.
    async fn send(&self, rows: Vec<Delivery>) -> (Vec<Delivery>, Result<(), SendError>) {
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
    }

    async fn update_pending(&self) {
        if let Some(Ok(stats)) = self.with_store(|s| s.outbox_stats()).await {
            metrics::gauge!(m::OUTBOX_PENDING).set(stats.pending as f64);
            metrics::gauge!(m::OUTBOX_HELD).set(stats.held as f64);
        }
    }

    /// Records the outcome of one notification for each of its rows.
    async fn settle(&self, rows: Vec<Delivery>, result: Result<(), SendError>) {
        for d in rows {
            self.settle_one(d, result.clone()).await;
        }
    }

    /// Records one row's outcome: sent, retry later, or dead.
    async fn settle_one(&self, d: Delivery, result: Result<(), SendError>) {
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
                let age = Duration::from_millis((now_ms() - d.trying_since_ms()).max(0) as u64);
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

    /// Runs until shutdown. Sends go out as rows fall due and are settled as each ends,
    /// so a receiver that takes its whole timeout delays only its own channel's rows.
    /// At shutdown, sends in flight get [`STOP_GRACE`] to end; those still open then are
    /// dropped unsettled: their rows stay pending and go again, with the same
    /// Idempotency-Key, after the restart.
    pub async fn run(self, mut shutdown: Shutdown) {
        let mut busy = InFlight::default();
        let mut sending = FuturesUnordered::new();
        loop {
            let round = self.due_batches(&busy, IN_FLIGHT_PER_CHANNEL).await;
            for rows in round.batches {
                busy.start(&rows);
                sending.push(self.send(rows));
            }
            // A gathering group's rows are due already; left in the next-due read they
            // would wake the loop every few milliseconds until the group is ready.
            let ready_at = round.gathering.iter().map(|(_, ready)| *ready).min();
            let (ids, mut full) = busy.exclusions(IN_FLIGHT_PER_CHANNEL);
            full.extend(round.gathering.into_iter().map(|(channel, _)| channel));
            let wait = match (self.with_store(move |s| s.next_due_ms(&ids, &full))).await {
                Some(Ok(next)) => wake_after(now_ms(), next, ready_at),
                _ => Duration::from_secs(1),
            };
            tokio::select! {
                _ = shutdown.recv() => {
                    // Sends already answered or about to be are settled rather than
                    // repeated after the restart; a hung one is not waited for.
                    let _ = tokio::time::timeout(STOP_GRACE, async {
                        while let Some((rows, result)) = sending.next().await {
                            self.settle(rows, result).await;
                        }
                    })
                    .await;
                    return;
                }
                Some((rows, result)) = sending.next(), if !sending.is_empty() => {
                    busy.end(&rows);
                    self.settle(rows, result).await;
                    self.update_pending().await;
                }
                _ = self.wake.notified() => {}
                _ = tokio::time::sleep(wait) => {}
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_gathering_group_is_slept_on_until_it_is_ready() {
        let now = 1_000_000;
        // Only a group gathering, ready in 700 ms: sleep 700 ms, not the 10 ms floor.
        assert_eq!(
            wake_after(now, None, Some(now + 700)),
            Duration::from_millis(700)
        );
        // A retry due sooner comes first; one due later waits for the group.
        assert_eq!(
            wake_after(now, Some(now + 300), Some(now + 700)),
            Duration::from_millis(300)
        );
        assert_eq!(
            wake_after(now, Some(now + 900), Some(now + 700)),
            Duration::from_millis(700)
        );
        // Rows due now that could not be sent: the floor. Nothing at all: a second.
        assert_eq!(
            wake_after(now, Some(now - 50), None),
            Duration::from_millis(10)
        );
        assert_eq!(wake_after(now, None, None), Duration::from_secs(1));
    }
}
