//! The HTTP server: health, readiness, Prometheus metrics and the JSON API.
//!
//! | route                               | what                                              |
//! |-------------------------------------|---------------------------------------------------|
//! | `GET /healthz`                      | the process is alive                              |
//! | `GET /readyz`                       | partitions assigned, state writable, rules loaded |
//! | `GET /metrics`                      | Prometheus text format                            |
//! | `GET /api/rules`                    | rules: window count, expected, state, silences    |
//! | `GET /api/rules/{id}`               | one rule, with what would start an alert now      |
//! | `GET /api/rules/{id}/series?hours=N`| buckets: start, articles, stories, expected       |
//! | `GET /api/alerts?since=RFC3339`     | alert events by event time                        |
//! | `GET /api/alerts/{alert_id}`        | one alert: its events, deliveries, open or ended  |
//! | `POST /api/reload`                  | reload rules, entities and channels now           |
//! | `GET /api/silences`                 | silences not yet ended (`?expired=true`: 30 days) |
//! | `POST /api/silences`                | mute rules' notifications for a while (201)       |
//! | `DELETE /api/silences/{id}`         | end a silence now                                 |
//! | `GET /api/channels`                 | channels: settings, quiet hours, outbox counts    |
//! | `POST /api/channels/{name}/test`    | send a test notification through a channel now    |
//!
//! The dashboard's pages (`GET /`, `GET /rules/{id}`, its chart) are in `crate::dashboard`.
//!
//! When `http.api_token` is set, `/api/*` and the dashboard need `Authorization: Bearer
//! <token>`, or the token as the password of basic authentication (for browsers).

use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

use axum::extract::{Path, Query, Request, State};
use axum::http::{header, StatusCode};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{delete, get, post};
use axum::{Json, Router};
use metrics_exporter_prometheus::PrometheusHandle;
use serde::Deserialize;
use serde_json::json;

use crate::config::Secret;
use crate::detect::EventKind;
use crate::pipeline::Processor;
use crate::shutdown::Shutdown;
use crate::silence::NewSilence;
use crate::state::Store;

/// What readiness is made of.
#[derive(Default)]
pub struct Readiness {
    /// Partitions assigned by the group (None for sources without partitions).
    pub assigned: Option<crate::pipeline::Assigned>,
    pub rules_loaded: AtomicBool,
    /// Cleared when a state commit fails.
    pub state_ok: AtomicBool,
    /// Cleared while no broker answers (checked every few seconds beside the pipeline):
    /// the service is alive and will resume by itself, but is not doing its job.
    pub broker_ok: AtomicBool,
}

/// Reloads rules; returns the number of rules loaded or the errors.
pub type ReloadFn =
    Arc<dyn Fn() -> Pin<Box<dyn Future<Output = Result<usize, Vec<String>>> + Send>> + Send + Sync>;

#[derive(Clone)]
pub struct AppState {
    pub processor: Arc<Mutex<Processor>>,
    /// The server's own connection to the state file (readers run beside the writer in WAL).
    pub store: Arc<Mutex<Store>>,
    pub readiness: Arc<Readiness>,
    pub prometheus: PrometheusHandle,
    pub api_token: Option<Secret>,
    pub reload: ReloadFn,
    /// The channels' settings and senders, for `GET /api/channels`, test sends and the
    /// channel names a silence may name. Swapped by a reload that changes them.
    pub outputs: Arc<arc_swap::ArcSwap<Outputs>>,
}

/// The configured channels: what `GET /api/channels` shows and what a test send goes
/// through (the same senders the outbox worker uses).
pub struct Outputs {
    pub config: std::collections::BTreeMap<String, crate::config::ChannelConfig>,
    pub notifiers: std::collections::HashMap<String, Arc<dyn crate::sink::Notifier>>,
}

impl Outputs {
    /// Every channel name, `log` included, sorted.
    pub fn names(&self) -> Vec<String> {
        let mut names: Vec<String> = self.notifiers.keys().cloned().collect();
        names.sort();
        names
    }
}

pub fn router(state: AppState) -> Router {
    let api = Router::new()
        .route("/api/rules", get(rules))
        .route("/api/rules/{id}", get(rule))
        .route("/api/rules/{id}/series", get(series))
        .route("/api/alerts", get(alerts))
        .route("/api/alerts/{id}", get(alert))
        .route("/api/reload", post(reload))
        .route("/api/silences", get(silences).post(add_silence))
        .route("/api/silences/{id}", delete(expire_silence))
        .route("/api/channels", get(channels))
        .route("/api/channels/{name}/test", post(test_channel))
        .route("/", get(crate::dashboard::overview))
        .route("/rules/{id}", get(crate::dashboard::rule))
        .route("/rules/{id}/chart.png", get(crate::dashboard::chart))
        .route_layer(middleware::from_fn_with_state(state.clone(), auth));
    Router::new()
        .route("/healthz", get(|| async { "ok\n" }))
        .route("/readyz", get(readyz))
        .route("/metrics", get(metrics_text))
        .merge(api)
        .with_state(state)
}

/// Serves until shutdown.
pub async fn serve(
    listener: tokio::net::TcpListener,
    state: AppState,
    mut shutdown: Shutdown,
) -> std::io::Result<()> {
    axum::serve(listener, router(state))
        .with_graceful_shutdown(async move { shutdown.recv().await })
        .await
}

/// The API token as a bearer token or, for reading only, as the password of HTTP basic
/// authentication (any user name), which is what a browser can send for the dashboard. A
/// 401 asks for basic authentication, so a browser prompts for it.
///
/// Changes (reload, silences, test sends) take the bearer token only: a browser sends
/// cached basic credentials with any page's cross-site form, a bearer token it never adds
/// by itself.
async fn auth(State(s): State<AppState>, req: Request, next: Next) -> Response {
    if let Some(token) = &s.api_token {
        let reading = matches!(
            *req.method(),
            axum::http::Method::GET | axum::http::Method::HEAD
        );
        let given = req
            .headers()
            .get(header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .and_then(|h| presented_token(h, reading));
        let ok = given.is_some_and(|t| constant_time_eq(t.as_bytes(), token.expose().as_bytes()));
        if !ok {
            return (
                StatusCode::UNAUTHORIZED,
                [(
                    header::WWW_AUTHENTICATE,
                    r#"Basic realm="vigie", charset="UTF-8""#,
                )],
                Json(json!({"error": "missing or wrong bearer token"})),
            )
                .into_response();
        }
    }
    next.run(req).await
}

/// The token in an `Authorization` header: `Bearer <token>`, or, when `basic` is allowed,
/// `Basic` with the token as the password.
fn presented_token(header: &str, basic: bool) -> Option<String> {
    if let Some(t) = header.strip_prefix("Bearer ") {
        return Some(t.to_string());
    }
    if !basic {
        return None;
    }
    use base64::Engine;
    let encoded = header.strip_prefix("Basic ")?;
    let decoded = base64::engine::general_purpose::STANDARD
        .decode(encoded.trim())
        .ok()?;
    let text = String::from_utf8(decoded).ok()?;
    text.split_once(':')
        .map(|(_, password)| password.to_string())
}

fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

async fn readyz(State(s): State<AppState>) -> Response {
    let partitions = s
        .readiness
        .assigned
        .as_ref()
        .map(|a| a.read().map(|a| a.len()).unwrap_or(0));
    let store = s.store.clone();
    let writable =
        tokio::task::spawn_blocking(move || store.lock().map(|st| st.writable()).unwrap_or(false))
            .await
            .unwrap_or(false);
    let rules = s.readiness.rules_loaded.load(Ordering::Relaxed);
    let state_ok = s.readiness.state_ok.load(Ordering::Relaxed) && writable;
    let assigned_ok = partitions.is_none_or(|n| n > 0);
    let broker = s.readiness.broker_ok.load(Ordering::Relaxed);
    let body = json!({ "partitions_assigned": partitions, "state_writable": state_ok, "rules_loaded": rules, "broker_reachable": broker });
    let code = if assigned_ok && state_ok && rules && broker {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    (code, Json(body)).into_response()
}

async fn metrics_text(State(s): State<AppState>) -> Response {
    (
        [(header::CONTENT_TYPE, "text/plain; version=0.0.4")],
        s.prometheus.render(),
    )
        .into_response()
}

async fn rules(State(s): State<AppState>) -> Response {
    match rule_views(&s, None).await {
        Ok((rules, watermark)) => {
            Json(json!({ "rules": rules, "watermark": watermark })).into_response()
        }
        Err(r) => r,
    }
}

/// Each rule as shown, and the engine's watermark.
pub(crate) type RuleViews = (
    Vec<serde_json::Value>,
    Option<chrono::DateTime<chrono::Utc>>,
);

/// One rule (`GET /api/rules/{id}`): as in the list, with its `gate` ([`crate::engine::Gate`]:
/// what would start an alert now, window by window) and its `detector` settings, defaults
/// filled in. 404 for a rule not loaded.
async fn rule(State(s): State<AppState>, Path(id): Path<String>) -> Response {
    match rule_views(&s, Some(id)).await {
        Ok((rules, watermark)) => match rules.into_iter().next() {
            Some(r) => Json(json!({ "rule": r, "watermark": watermark })).into_response(),
            None => (
                StatusCode::NOT_FOUND,
                Json(json!({"error": "unknown rule"})),
            )
                .into_response(),
        },
        Err(r) => r,
    }
}

/// Every rule as the API and the dashboard show it, in the rule files' order: its window
/// count against the expectation, whether it is alerting, warming up or silenced; and the
/// engine's watermark. With `only`, that rule alone (none if it is not loaded) with its
/// `gate`, which takes a search per window (too much for every rule of a large set), and
/// its `detector` settings.
pub(crate) async fn rule_views(s: &AppState, only: Option<String>) -> Result<RuleViews, Response> {
    let now = chrono::Utc::now();
    let silences = with_store(s, move |st| st.silences(now.timestamp_millis(), None)).await?;
    let p = s.processor.clone();
    let out = tokio::task::spawn_blocking(move || {
        let p = p.lock().ok()?;
        let e = &p.engine;
        let bs = e.settings.bucket_secs.max(1) as f64;
        let rules: Vec<_> = e
            .matcher()
            .rules
            .iter()
            .filter(|r| only.as_ref().is_none_or(|id| *id == r.id))
            .map(|r| {
                let detector = e.settings.detector.with(&r.spike);
                let window = detector.window_minutes;
                let (observed, expected) = e.window_figures(&r.id, window).unwrap_or((0, 0.0));
                let st = e.rules.get(&r.id);
                let active = st.and_then(|s| s.lifecycle.active.as_ref());
                let seen = st.map(|s| s.baseline.buckets_seen).unwrap_or(0);
                let mut view = json!({
                    "id": r.id, "name": r.name, "notify": r.notify,
                    "file": r.file, "line": r.line,
                    "window_minutes": window,
                    "window_count": observed, "expected": (expected * 1000.0).round() / 1000.0,
                    // Smoothed as the detector smooths it (tiny expectations give no
                    // huge ratios).
                    "ratio": ((observed as f64 + detector.smoothing) / (expected + detector.smoothing)
                        * 100.0).round() / 100.0,
                    "state": if active.is_some() { "alerting" } else { "quiet" },
                    "alert_id": active.map(|a| a.alert_id.clone()),
                    "baseline_buckets": seen,
                    "warming_up": (seen as f64) < detector.warmup_hours as f64 * 3600.0 / bs,
                    // Silences in force over this rule (on every channel or on one).
                    "silenced_by": silences.iter()
                        .filter(|sl| sl.state(now) == crate::silence::SilenceState::Active
                            && crate::silence::rule_matches(&sl.spec.rule, &r.id))
                        .map(|sl| sl.id)
                        .collect::<Vec<_>>(),
                });
                if only.is_some() {
                    view["gate"] = json!(e.gate(&r.id));
                    view["detector"] = json!(detector);
                }
                view
            })
            .collect();
        Some((rules, e.watermark()))
    })
    .await
    .ok()
    .flatten();
    out.ok_or_else(|| StatusCode::INTERNAL_SERVER_ERROR.into_response())
}

#[derive(Deserialize)]
struct SeriesQuery {
    hours: Option<u32>,
}

async fn series(
    State(s): State<AppState>,
    Path(id): Path<String>,
    Query(q): Query<SeriesQuery>,
) -> Response {
    match series_of(&s, id.clone(), q.hours.unwrap_or(48)).await {
        Ok(r) => {
            let buckets: Vec<_> = (r.chart.stories.iter().zip(&r.chart.expected).zip(&r.articles))
                .enumerate()
                .map(|(i, ((stories, expected), articles))| {
                    let start = r.chart.start + i as i64 * r.chart.bucket_secs;
                    json!({ "start": crate::engine::ts(start), "articles": articles, "stories": stories, "expected": (*expected as f64 * 1000.0).round() / 1000.0 })
                })
                .collect();
            Json(json!({ "rule": id, "bucket_seconds": r.chart.bucket_secs, "buckets": buckets }))
                .into_response()
        }
        Err(r) => r,
    }
}

/// A rule's recent buckets, for the series API and the dashboard's charts.
pub(crate) struct RuleSeries {
    /// Stories and the baseline's expectation per bucket (what the charts draw).
    pub chart: crate::engine::ChartSeries,
    /// Articles per bucket, syndicated copies included.
    pub articles: Vec<u32>,
}

/// The last `hours` (1 to 35 days' worth) of a rule's buckets up to the one after the
/// watermark's, as in the alert window: partitions run a few seconds apart, so it may
/// already hold articles. 404 for a rule not loaded.
pub(crate) async fn series_of(
    s: &AppState,
    id: String,
    hours: u32,
) -> Result<RuleSeries, Response> {
    let hours = hours.clamp(1, 24 * 35) as i64;
    let p = s.processor.clone();
    let store = s.store.clone();
    let out = tokio::task::spawn_blocking(move || -> Result<Option<RuleSeries>, String> {
        let (known, bs, end, baseline) = {
            let p = p.lock().map_err(|_| "poisoned".to_string())?;
            let e = &p.engine;
            let known = e.rules.contains_key(&id);
            let bs = e.settings.bucket_secs;
            let end = e
                .watermark()
                .map(|w| w.timestamp())
                .unwrap_or_else(|| chrono::Utc::now().timestamp());
            (
                known,
                bs,
                end.div_euclid(bs) * bs,
                e.rules.get(&id).map(|st| st.baseline.clone()),
            )
        };
        if !known {
            return Ok(None);
        }
        let end = end + bs;
        let since = end - hours * 3600 + bs;
        let rows = store
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .rule_series(&id, since)
            .map_err(|e| e.to_string())?;
        let mut by_start: std::collections::HashMap<i64, (u32, u32)> =
            rows.into_iter().map(|(b, a, st)| (b, (a, st))).collect();
        let mut out = RuleSeries {
            chart: crate::engine::ChartSeries {
                start: since,
                bucket_secs: bs,
                stories: Vec::new(),
                expected: Vec::new(),
            },
            articles: Vec::new(),
        };
        let mut b = since;
        while b <= end {
            let (articles, stories) = by_start.remove(&b).unwrap_or((0, 0));
            let expected = baseline
                .as_ref()
                .map_or(0.0, |bl| bl.expected(crate::detect::Season::of(b)));
            out.articles.push(articles);
            out.chart.stories.push(stories);
            out.chart.expected.push(expected as f32);
            b += bs;
        }
        Ok(Some(out))
    })
    .await;
    match out {
        Ok(Ok(Some(v))) => Ok(v),
        Ok(Ok(None)) => Err((
            StatusCode::NOT_FOUND,
            Json(json!({"error": "unknown rule"})),
        )
            .into_response()),
        Ok(Err(e)) => Err((
            StatusCode::INTERNAL_SERVER_ERROR,
            Json(json!({ "error": e })),
        )
            .into_response()),
        Err(_) => Err(StatusCode::INTERNAL_SERVER_ERROR.into_response()),
    }
}

#[derive(Deserialize)]
struct AlertsQuery {
    since: Option<String>,
    limit: Option<usize>,
}

async fn alerts(State(s): State<AppState>, Query(q): Query<AlertsQuery>) -> Response {
    // A `+` in an unencoded offset arrives as a space; take it back.
    let since_text = q.since.as_deref().map(|s| s.replace(' ', "+"));
    let since = match since_text.as_deref().map(crate::article::parse_date) {
        None => 0,
        Some(Some(t)) => t.timestamp(),
        Some(None) => {
            return (
                StatusCode::BAD_REQUEST,
                Json(json!({"error": "since must be an RFC 3339 date"})),
            )
                .into_response()
        }
    };
    let limit = q.limit.unwrap_or(1000).min(10_000);
    match with_store(&s, move |st| alerts_report(st, since, limit)).await {
        Ok((events, outbox, dead)) => {
            let dead: Vec<_> = dead
                .into_iter()
                .map(|(e, c, err)| json!({"event_id": e, "channel": c, "error": err}))
                .collect();
            Json(json!({ "alerts": events, "outbox": outbox, "dead_deliveries": dead }))
                .into_response()
        }
        Err(r) => r,
    }
}

/// One alert (`<rule>:<onset>`, as in each event's `alert_id` and in the alert emails):
/// its events in order, each with its deliveries, and whether it is still open. 404 when
/// no event of it is stored (or it is older than the retention).
async fn alert(State(s): State<AppState>, Path(id): Path<String>) -> Response {
    let found = with_store(&s, move |st| {
        let events = st.alert_events_of(&id)?;
        let shown = with_deliveries(st, &events)?;
        Ok::<_, crate::state::StateError>((id, events, shown))
    })
    .await;
    let (id, events, shown) = match found {
        Ok(v) => v,
        Err(r) => return r,
    };
    let Some(first) = events.first() else {
        return (
            StatusCode::NOT_FOUND,
            Json(json!({"error": format!("no alert `{id}`")})),
        )
            .into_response();
    };
    let resolved = events.iter().rev().find(|e| e.kind == EventKind::Resolved);
    let body = json!({
        "alert_id": id,
        "rule": first.rule,
        "rule_name": first.rule_name,
        "started_at": first.started_at,
        "open": resolved.is_none(),
        "resolved_at": resolved.map(|e| e.at),
        "peak_observed": events.iter().map(|e| e.observed).max(),
        "events": shown,
    });
    Json(body).into_response()
}

type AlertsReport = (
    Vec<serde_json::Value>,
    crate::state::OutboxStats,
    Vec<(String, String, String)>,
);

/// The events since `since`, each with where its deliveries stand, and the outbox's counts.
fn alerts_report(
    st: &Store,
    since: i64,
    limit: usize,
) -> Result<AlertsReport, crate::state::StateError> {
    let alerts = st.alerts_at_since(since, limit)?;
    let events = with_deliveries(st, &alerts)?;
    Ok((events, st.outbox_stats()?, st.dead_deliveries(50)?))
}

/// Events as the API shows them: each with where its deliveries stand (one query for all).
fn with_deliveries(
    st: &Store,
    events: &[crate::engine::AlertEvent],
) -> Result<Vec<serde_json::Value>, crate::state::StateError> {
    let ids: Vec<&str> = events.iter().map(|e| e.event_id.as_str()).collect();
    let mut deliveries = st.deliveries_of(&ids)?;
    let mut out = Vec::with_capacity(events.len());
    for e in events {
        let mut v = serde_json::to_value(e)?;
        v["deliveries"] = serde_json::to_value(deliveries.remove(&e.event_id).unwrap_or_default())?;
        out.push(v);
    }
    Ok(out)
}

/// Each channel: its type, the events it takes, its grouping and quiet hours (with the end
/// of the quiet period it is in now, if any), and its outbox rows by status.
async fn channels(State(s): State<AppState>) -> Response {
    match channel_views(&s).await {
        Ok(list) => Json(json!({ "channels": list })).into_response(),
        Err(r) => r,
    }
}

/// Every channel as the API and the dashboard show it, `log` included, by name.
pub(crate) async fn channel_views(s: &AppState) -> Result<Vec<serde_json::Value>, Response> {
    let stats = with_store(s, |st| st.outbox_stats_by_channel()).await?;
    let now = chrono::Utc::now();
    let outputs = s.outputs.load();
    let list: Vec<serde_json::Value> = (outputs.names().iter())
        .map(|name| {
            let outbox = stats.get(name).cloned().unwrap_or_default();
            let Some(c) = outputs.config.get(name) else {
                return json!({"name": name, "type": "log", "outbox": outbox});
            };
            let quiet = c.quiet();
            let digest = c.digest();
            json!({
                "name": name,
                "type": c.kind,
                "events": c.events,
                "group_wait_secs": c.group_wait_secs,
                "quiet_hours": c.quiet_hours,
                "timezone": (quiet.as_ref().map(|q| q.tz)).or(digest.as_ref().map(|d| d.tz)).map(|tz| tz.name()),
                "digest": c.digest,
                "next_digest": digest.and_then(|d| d.next(now)),
                "quiet_action": quiet.as_ref().map(|q| q.action),
                "quiet_until": quiet.and_then(|q| q.until(now)),
                "min_ratio": c.min_ratio,
                "min_stories": c.min_stories,
                "outbox": outbox,
            })
        })
        .collect();
    Ok(list)
}

/// Sends a test notification (`crate::sink::test_event`) through one channel now, past
/// the outbox, its silences and its quiet hours: 200 with how long the receiver took, 502
/// with its error, 404 for an unknown channel.
async fn test_channel(State(s): State<AppState>, Path(name): Path<String>) -> Response {
    let Some(n) = s.outputs.load().notifiers.get(&name).cloned() else {
        return (
            StatusCode::NOT_FOUND,
            Json(json!({"error": format!("no channel `{name}`")})),
        )
            .into_response();
    };
    match crate::sink::send_test(n.as_ref(), chrono::Utc::now()).await {
        Ok(took) => {
            tracing::info!(channel = %name, took_ms = took.as_millis() as u64, "test notification accepted");
            Json(json!({"channel": name, "ok": true, "took_ms": took.as_millis() as u64}))
                .into_response()
        }
        Err(e) => {
            tracing::warn!(channel = %name, error = %e, "test notification failed");
            let retryable = matches!(e, crate::sink::SendError::Retryable { .. });
            (
                StatusCode::BAD_GATEWAY,
                Json(json!({"channel": name, "ok": false, "error": e.to_string(), "retryable": retryable})),
            )
                .into_response()
        }
    }
}

async fn reload(State(s): State<AppState>) -> Response {
    match (s.reload)().await {
        Ok(n) => Json(json!({ "ok": true, "rules": n })).into_response(),
        Err(errors) => (
            StatusCode::UNPROCESSABLE_ENTITY,
            Json(json!({ "ok": false, "errors": errors })),
        )
            .into_response(),
    }
}

#[derive(Deserialize)]
struct SilencesQuery {
    /// Also list silences that ended in the last 30 days.
    expired: Option<bool>,
}

/// Runs `f` on the server's state connection off the reactor; a state error is a 500.
pub(crate) async fn with_store<T: Send + 'static>(
    s: &AppState,
    f: impl FnOnce(&Store) -> Result<T, crate::state::StateError> + Send + 'static,
) -> Result<T, Response> {
    let store = s.store.clone();
    let out = tokio::task::spawn_blocking(move || {
        let st = store.lock().unwrap_or_else(|p| p.into_inner());
        f(&st)
    })
    .await;
    match out {
        Ok(Ok(v)) => Ok(v),
        Ok(Err(e)) => Err((
            StatusCode::INTERNAL_SERVER_ERROR,
            Json(json!({ "error": e.to_string() })),
        )
            .into_response()),
        Err(_) => Err(StatusCode::INTERNAL_SERVER_ERROR.into_response()),
    }
}

/// The ids of the rules in force.
async fn rule_ids(s: &AppState) -> Vec<String> {
    let p = s.processor.clone();
    tokio::task::spawn_blocking(move || {
        p.lock()
            .map(|p| {
                p.engine
                    .matcher()
                    .rules
                    .iter()
                    .map(|r| r.id.clone())
                    .collect()
            })
            .unwrap_or_default()
    })
    .await
    .unwrap_or_default()
}

async fn silences(State(s): State<AppState>, Query(q): Query<SilencesQuery>) -> Response {
    let now = chrono::Utc::now();
    let since = q
        .expired
        .unwrap_or(false)
        .then(|| now.timestamp_millis() - crate::silence::KEPT_AFTER_END_MS);
    let list = match with_store(&s, move |st| st.silences(now.timestamp_millis(), since)).await {
        Ok(l) => l,
        Err(r) => return r,
    };
    let ids = rule_ids(&s).await;
    let out: Vec<_> = list.iter().map(|sl| sl.describe(now, &ids)).collect();
    Json(json!({ "silences": out })).into_response()
}

async fn add_silence(State(s): State<AppState>, body: axum::body::Bytes) -> Response {
    let bad = |msg: String| {
        (
            StatusCode::UNPROCESSABLE_ENTITY,
            Json(json!({ "error": msg })),
        )
            .into_response()
    };
    let asked: NewSilence = match serde_json::from_slice(&body) {
        Ok(a) => a,
        Err(e) => return bad(format!("silence: {e}")),
    };
    let now = chrono::Utc::now();
    let spec = match asked.check(now, &s.outputs.load().names()) {
        Ok(spec) => spec,
        Err(e) => return bad(e.to_string()),
    };
    let sl = match with_store(&s, move |st| st.add_silence(&spec)).await {
        Ok(sl) => sl,
        Err(r) => return r,
    };
    tracing::info!(silence = sl.id, rule = %sl.spec.rule, channel = ?sl.spec.channel, ends_at = %sl.spec.ends_at, comment = %sl.spec.comment, "silence added");
    let ids = rule_ids(&s).await;
    (StatusCode::CREATED, Json(sl.describe(now, &ids))).into_response()
}

async fn expire_silence(State(s): State<AppState>, Path(id): Path<i64>) -> Response {
    match with_store(&s, move |st| st.expire_silence(id)).await {
        Ok(true) => {
            tracing::info!(silence = id, "silence ended");
            Json(json!({ "ok": true, "id": id })).into_response()
        }
        Ok(false) => (
            StatusCode::NOT_FOUND,
            Json(json!({ "error": format!("no silence {id} still in force") })),
        )
            .into_response(),
        Err(r) => r,
    }
}
