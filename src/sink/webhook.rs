//! Signed webhooks.
//!
//! Each request carries `X-Vigie-Signature: t=<unix seconds>,v1=<hex HMAC-SHA256>` over
//! `"<t>.<raw body>"` with the channel's secret, and `Idempotency-Key: <event id>`, so a
//! receiver can verify the sender and drop replays and retries it has already seen.

use std::collections::BTreeMap;
use std::time::Duration;

use futures::future::BoxFuture;
use hmac::{Hmac, Mac};
use sha2::Sha256;

use super::{retry::parse_retry_after, Notifier, SendError};
use crate::config::Secret;
use crate::engine::AlertEvent;

pub struct WebhookNotifier {
    client: reqwest::Client,
    url: String,
    secret: Option<Secret>,
    headers: BTreeMap<String, String>,
    preset: Option<String>,
    /// The channel's template overrides.
    templates: super::render::Templates,
}

/// `t=<t>,v1=<hex hmac>` for a body.
pub fn signature(secret: &str, t: i64, body: &[u8]) -> String {
    let mut mac =
        Hmac::<Sha256>::new_from_slice(secret.as_bytes()).expect("HMAC takes keys of any length");
    mac.update(t.to_string().as_bytes());
    mac.update(b".");
    mac.update(body);
    format!("t={t},v1={}", hex::encode(mac.finalize().into_bytes()))
}

/// Checks a signature header against a body (what a receiver does; used by tests).
pub fn verify(secret: &str, header: &str, body: &[u8]) -> bool {
    let mut t = None;
    let mut v1 = None;
    for part in header.split(',') {
        match part.split_once('=') {
            Some(("t", v)) => t = v.parse::<i64>().ok(),
            Some(("v1", v)) => v1 = hex::decode(v).ok(),
            _ => {}
        }
    }
    let (Some(t), Some(v1)) = (t, v1) else {
        return false;
    };
    let mut mac =
        Hmac::<Sha256>::new_from_slice(secret.as_bytes()).expect("HMAC takes keys of any length");
    mac.update(t.to_string().as_bytes());
    mac.update(b".");
    mac.update(body);
    mac.verify_slice(&v1).is_ok()
}

impl WebhookNotifier {
    pub fn new(
        url: String,
        secret: Option<Secret>,
        headers: BTreeMap<String, String>,
        preset: Option<String>,
        timeout: Duration,
        accept_invalid_certs: bool,
    ) -> Result<Self, reqwest::Error> {
        let client = reqwest::Client::builder()
            .timeout(timeout)
            .danger_accept_invalid_certs(accept_invalid_certs)
            .user_agent(concat!("vigie/", env!("CARGO_PKG_VERSION")))
            .build()?;
        Ok(WebhookNotifier {
            client,
            url,
            secret,
            headers,
            preset,
            templates: Default::default(),
        })
    }

    /// Uses these template overrides (a rule's own still win).
    pub fn with_templates(mut self, templates: super::render::Templates) -> Self {
        self.templates = templates;
        self
    }
}

impl WebhookNotifier {
    /// Signs and posts a body; classifies the answer.
    async fn post(
        &self,
        body: Vec<u8>,
        idempotency_key: &str,
        kind: &str,
    ) -> Result<(), SendError> {
        let mut req = self
            .client
            .post(&self.url)
            .header("content-type", "application/json")
            .header("idempotency-key", idempotency_key)
            .header("x-vigie-event", kind);
        for (k, v) in &self.headers {
            req = req.header(k, v);
        }
        if let Some(s) = &self.secret {
            req = req.header(
                "x-vigie-signature",
                signature(s.expose(), chrono::Utc::now().timestamp(), &body),
            );
        }
        let resp = req
            .body(body)
            .send()
            .await
            .map_err(|err| SendError::Retryable {
                message: format!("request failed: {}", without_url(&err)),
                retry_after: None,
            })?;
        let status = resp.status();
        if status.is_success() {
            return Ok(());
        }
        let retry_after = resp
            .headers()
            .get("retry-after")
            .and_then(|v| v.to_str().ok())
            .and_then(parse_retry_after);
        let message = format!("receiver answered {status}");
        if status.as_u16() == 408 || status.as_u16() == 429 || status.is_server_error() {
            Err(SendError::Retryable {
                message,
                retry_after,
            })
        } else {
            Err(SendError::Permanent(message))
        }
    }
}

impl Notifier for WebhookNotifier {
    fn send<'a>(&'a self, e: &'a AlertEvent) -> BoxFuture<'a, Result<(), SendError>> {
        Box::pin(async move {
            let overrides = [&e.templates, &self.templates];
            let body = super::render::webhook_body(e, self.preset.as_deref(), &overrides)
                .map_err(SendError::Permanent)?;
            let body =
                serde_json::to_vec(&body).map_err(|err| SendError::Permanent(err.to_string()))?;
            self.post(body, &e.event_id, e.kind.as_str()).await
        })
    }

    fn send_group<'a>(&'a self, events: &'a [AlertEvent]) -> BoxFuture<'a, Result<(), SendError>> {
        Box::pin(async move {
            let body =
                super::render::group_webhook_body(events, self.preset.as_deref(), &self.templates)
                    .map_err(SendError::Permanent)?;
            let body =
                serde_json::to_vec(&body).map_err(|err| SendError::Permanent(err.to_string()))?;
            // A stable key for the same set of events, so a repeated group deduplicates too.
            let mut ids: Vec<&str> = events.iter().map(|e| e.event_id.as_str()).collect();
            ids.sort_unstable();
            let key = format!(
                "group-{:016x}",
                xxhash_rust::xxh3::xxh3_64(ids.join(",").as_bytes())
            );
            self.post(body, &key, "group").await
        })
    }
}

/// reqwest errors print the URL, which may carry a token (Slack hooks do): keep it out of logs.
fn without_url(e: &reqwest::Error) -> String {
    let kind = if e.is_timeout() {
        "timeout"
    } else if e.is_connect() {
        "connection error"
    } else {
        "transport error"
    };
    let mut msg = kind.to_string();
    let mut src = std::error::Error::source(e);
    while let Some(s) = src {
        msg = format!("{msg}: {s}");
        src = s.source();
    }
    msg
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn signature_round_trips_and_rejects_tampering() {
        let h = signature("s3cret", 1700000000, b"{\"a\":1}");
        assert!(h.starts_with("t=1700000000,v1="));
        assert!(verify("s3cret", &h, b"{\"a\":1}"));
        assert!(!verify("s3cret", &h, b"{\"a\":2}"));
        assert!(!verify("other", &h, b"{\"a\":1}"));
    }
}
