//! The `log` channel: one structured log line per alert event. Always available.

use futures::future::BoxFuture;

use super::{Notifier, SendError};
use crate::engine::AlertEvent;

pub struct LogNotifier;

impl Notifier for LogNotifier {
    fn send<'a>(&'a self, e: &'a AlertEvent) -> BoxFuture<'a, Result<(), SendError>> {
        Box::pin(async move {
            tracing::info!(
                target: "vigie::alert",
                rule = %e.rule, kind = e.kind.as_str(), alert = %e.alert_id, observed = e.observed,
                expected = e.expected, ratio = e.ratio, window_start = %e.window_start, at = %e.at,
                "{}", super::render::subject(e, &[&e.templates])
            );
            Ok(())
        })
    }
}
