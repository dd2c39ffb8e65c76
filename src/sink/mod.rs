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

use std::time::Duration;

use futures::future::BoxFuture;

use crate::engine::AlertEvent;

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
