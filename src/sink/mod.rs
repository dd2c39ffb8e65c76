//! Where alerts go: notifiers per channel type and the outbox worker that drives them.
//!
//! Every alert event is written to the outbox (one row per event × channel) in the same
//! transaction as the event itself (see [`crate::state`]). The [`outbox`] worker runs apart
//! from the consumer loop, so a slow receiver never stalls consumption; it retries each row
//! on its own with the shared [`retry`] policy.

pub mod chart;
pub mod email;
pub mod log;
pub mod outbox;
pub mod render;
pub mod retry;
pub mod webhook;

use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};
use futures::future::BoxFuture;

use crate::engine::{AlertEvent, ArticleRef, ChartSeries};

/// Why a delivery failed, and whether trying again may help.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum SendError {
    /// Connection errors, timeouts, 408, 429, 5xx, transient SMTP replies.
    #[error("{message}")]
    Retryable {
        message: String,
        retry_after: Option<Duration>,
    },
    /// Anything else (4xx, permanent SMTP replies, bad configuration): dead-lettered.
    #[error("{0}")]
    Permanent(String),
}

/// Sends alert events to one destination.
pub trait Notifier: Send + Sync {
    fn send<'a>(&'a self, event: &'a AlertEvent) -> BoxFuture<'a, Result<(), SendError>>;

    /// Sends several events as one notification (channels with `group_wait`). The default
    /// sends them one by one and reports the first failure.
    fn send_group<'a>(&'a self, events: &'a [AlertEvent]) -> BoxFuture<'a, Result<(), SendError>> {
        Box::pin(async move {
            for e in events {
                self.send(e).await?;
            }
            Ok(())
        })
    }
}

/// The rule id of test notifications (`vigie notify-test`, `POST /api/channels/{name}/test`),
/// so that a receiver can tell them from alerts and drop them.
pub const TEST_RULE: &str = "vigie-test";

/// A made-up `started` event that looks like a real one (numbers, top article, chart), for
/// checking a channel end to end: its rule is [`TEST_RULE`], its name and its one article
/// say it is a test, and its id (the Idempotency-Key) is new at each call.
pub fn test_event(now: DateTime<Utc>) -> AlertEvent {
    let alert_id = format!("{TEST_RULE}:{}", now.timestamp_millis());
    let bucket_secs = 300;
    let buckets = 48 * 3600 / bucket_secs;
    // A quiet day-and-night rhythm, then a surge over the last hour.
    let expected: Vec<f32> = (0..buckets)
        .map(|i| 1.0 + 0.8 * ((i as f32 / 288.0) * std::f32::consts::TAU).sin())
        .collect();
    let stories = (expected.iter().enumerate())
        .map(|(i, e)| {
            if i >= buckets as usize - 12 {
                6
            } else {
                e.round() as u32
            }
        })
        .collect();
    let mut e = render::sample_event();
    e.event_id = format!("{alert_id}:started");
    e.alert_id = alert_id;
    e.rule = TEST_RULE.into();
    e.rule_name = "vigie test notification (not an alert)".into();
    (e.at, e.started_at, e.window_end) = (now, now, now);
    e.window_start = now - chrono::Duration::hours(1);
    // No real topic: nothing co-mentioned.
    e.top_entities.clear();
    e.top_countries.clear();
    e.top_articles = vec![ArticleRef {
        id: TEST_RULE.into(),
        title: "Test notification: this channel receives vigie's alerts".into(),
        url: None,
        source: Some("vigie".into()),
        published_at: now,
        entities: vec![],
        countries: vec![],
        terms: vec![],
        new_story: true,
    }];
    e.chart = ChartSeries {
        start: now.timestamp() - buckets * bucket_secs,
        bucket_secs,
        stories,
        expected,
    };
    e
}

/// Sends [`test_event`] once through `notifier`, without the outbox (no retry: this is a
/// probe). Gives how long the receiver took to accept it, or why it did not.
pub async fn send_test(notifier: &dyn Notifier, now: DateTime<Utc>) -> Result<Duration, SendError> {
    let event = test_event(now);
    let started = Instant::now();
    notifier.send(&event).await?;
    Ok(started.elapsed())
}
