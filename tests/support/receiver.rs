//! A real HTTP webhook receiver for tests: verifies signatures, can fail on purpose.
#![allow(dead_code)]

use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::routing::post;
use axum::Router;

#[derive(Debug, Clone)]
pub struct Received {
    pub body: serde_json::Value,
    pub idempotency_key: String,
    pub signature_ok: bool,
}

#[derive(Clone)]
pub struct Receiver {
    pub addr: SocketAddr,
    /// Requests answered 2xx.
    pub accepted: Arc<Mutex<Vec<Received>>>,
    /// Every request seen, whatever the answer.
    pub attempts: Arc<AtomicUsize>,
}

struct Inner {
    secret: String,
    fail_first: usize,
    fail_status: u16,
    /// The first `slow_first.0` requests are answered only after `slow_first.1`.
    slow_first: (usize, std::time::Duration),
    /// Flapping: down (503) for the first half of every period, up for the second.
    flap: Option<(std::time::Instant, std::time::Duration)>,
    accepted: Arc<Mutex<Vec<Received>>>,
    attempts: Arc<AtomicUsize>,
}

/// Starts a receiver on 127.0.0.1:0 that answers `fail_status` to the first `fail_first`
/// requests, then 200.
pub async fn start(secret: &str, fail_first: usize, fail_status: u16) -> Receiver {
    start_with(
        secret,
        fail_first,
        fail_status,
        (0, std::time::Duration::ZERO),
    )
    .await
}

/// As [`start`], and the first `slow_first.0` requests wait `slow_first.1` before answering
/// (and are then accepted, as a real server that finishes its work would).
pub async fn start_with(
    secret: &str,
    fail_first: usize,
    fail_status: u16,
    slow_first: (usize, std::time::Duration),
) -> Receiver {
    serve(secret, fail_first, fail_status, slow_first, None).await
}

/// A receiver that flaps: it answers 503 for the first half of every `period`, starting
/// now, and accepts during the second half.
pub async fn flapping(secret: &str, period: std::time::Duration) -> Receiver {
    serve(
        secret,
        0,
        503,
        (0, std::time::Duration::ZERO),
        Some((std::time::Instant::now(), period)),
    )
    .await
}

async fn serve(
    secret: &str,
    fail_first: usize,
    fail_status: u16,
    slow_first: (usize, std::time::Duration),
    flap: Option<(std::time::Instant, std::time::Duration)>,
) -> Receiver {
    let accepted = Arc::new(Mutex::new(Vec::new()));
    let attempts = Arc::new(AtomicUsize::new(0));
    let inner = Arc::new(Inner {
        secret: secret.into(),
        fail_first,
        fail_status,
        slow_first,
        flap,
        accepted: accepted.clone(),
        attempts: attempts.clone(),
    });
    let app = Router::new().route("/hook", post(handle)).with_state(inner);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    Receiver {
        addr,
        accepted,
        attempts,
    }
}

async fn handle(State(s): State<Arc<Inner>>, headers: HeaderMap, body: Bytes) -> StatusCode {
    let n = s.attempts.fetch_add(1, Ordering::SeqCst);
    if n < s.fail_first {
        return StatusCode::from_u16(s.fail_status).unwrap();
    }
    if let Some((since, period)) = s.flap {
        let phase = since.elapsed().as_secs_f64() % period.as_secs_f64();
        if phase < period.as_secs_f64() / 2.0 {
            return StatusCode::SERVICE_UNAVAILABLE;
        }
    }
    if n < s.slow_first.0 {
        tokio::time::sleep(s.slow_first.1).await;
    }
    let sig = headers
        .get("x-vigie-signature")
        .and_then(|v| v.to_str().ok())
        .unwrap_or("");
    let signature_ok = vigie::sink::webhook::verify(&s.secret, sig, &body);
    let idempotency_key = headers
        .get("idempotency-key")
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
        .to_string();
    let body = serde_json::from_slice(&body).unwrap_or(serde_json::Value::Null);
    s.accepted.lock().unwrap().push(Received {
        body,
        idempotency_key,
        signature_ok,
    });
    StatusCode::OK
}

impl Receiver {
    pub fn url(&self) -> String {
        format!("http://{}/hook", self.addr)
    }
}
