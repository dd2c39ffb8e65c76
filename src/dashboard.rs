//! The dashboard: server-rendered HTML pages over the same state the JSON API reads, for
//! the people who watch the rules rather than the machines that call the API.
//!
//! | route                              | what                                                  |
//! |------------------------------------|-------------------------------------------------------|
//! | `GET /`                            | alerting now, the week's events, rules, delivery      |
//! | `GET /rules/{id}`                  | one rule: chart, figures, settings, its alerts        |
//! | `GET /rules/{id}/chart.png?hours=N`| stories per bucket, expected band, alerts shaded      |
//!
//! No script and no external asset: the pages refresh themselves every minute and work
//! behind any proxy. They sit behind the same `http.api_token` as `/api/*`; a browser
//! gives it as the password of HTTP basic authentication (any user name).

use std::sync::OnceLock;

use axum::extract::{Path, Query, State};
use axum::http::{header, StatusCode};
use axum::response::{Html, IntoResponse, Response};
use chrono::{DateTime, Utc};
use minijinja::Environment;
use serde::Deserialize;
use serde_json::{json, Value};

use crate::engine::AlertEvent;
use crate::http::{channel_views, rule_views, series_of, with_store, AppState};

/// Open alerts shown in full on the overview; the rules table lists the others.
const OPEN_SHOWN: usize = 20;
/// Alert events listed on the overview, newest first, from the last week of event time.
const RECENT_SHOWN: usize = 50;
/// Deliveries given up on, newest first, listed on the overview.
const DEAD_SHOWN: usize = 10;
/// Rules listed on the overview unless `?limit=` says otherwise.
const RULES_SHOWN: usize = 100;

fn templates() -> &'static Environment<'static> {
    static ENV: OnceLock<Environment<'static>> = OnceLock::new();
    ENV.get_or_init(|| {
        // Names ending in .html are auto-escaped: rule names and article titles come
        // from users and from the feed.
        let mut env = Environment::new();
        for (name, text) in [
            ("base.html", include_str!("dashboard/base.html")),
            ("overview.html", include_str!("dashboard/overview.html")),
            ("rule.html", include_str!("dashboard/rule.html")),
            ("evidence.html", include_str!("dashboard/evidence.html")),
        ] {
            env.add_template(name, text)
                .expect("the dashboard's templates are checked by its tests");
        }
        env
    })
}

fn page(name: &str, ctx: Value) -> Response {
    match templates().get_template(name).and_then(|t| t.render(ctx)) {
        Ok(html) => Html(html).into_response(),
        Err(e) => {
            tracing::error!(template = name, error = %e, "dashboard page failed to render");
            (StatusCode::INTERNAL_SERVER_ERROR, "page failed to render\n").into_response()
        }
    }
}

fn when(t: DateTime<Utc>) -> String {
    t.format("%Y-%m-%d %H:%M UTC").to_string()
}

/// "Tokayev (12), Almaty (8)".
fn counted(list: &[(String, u32)]) -> String {
    let parts: Vec<String> = list.iter().map(|(k, n)| format!("{k} ({n})")).collect();
    parts.join(", ")
}

/// One alert event as the pages show it, numbers formatted.
fn event_view(e: &AlertEvent) -> Value {
    let articles: Vec<Value> = (e.top_articles.iter())
        .map(|a| {
            // Only web links: a `javascript:` URL from the feed would run in the page.
            let url = (a.url.as_deref()).filter(|u| {
                let u = u.trim_start().to_ascii_lowercase();
                u.starts_with("https://") || u.starts_with("http://")
            });
            json!({
                "title": a.title, "url": url, "source": a.source,
                "at": when(a.published_at),
            })
        })
        .collect();
    json!({
        "alert_id": e.alert_id, "rule": e.rule, "rule_name": e.rule_name,
        "kind": e.kind.as_str(), "at": when(e.at), "started_at": when(e.started_at),
        "window": format!("{} – {}", when(e.window_start), e.window_end.format("%H:%M")),
        "observed": e.observed, "expected": format!("{:.1}", e.expected),
        "ratio": format!("{:.1}×", e.ratio),
        "p_value": if e.p_value.is_finite() { format!("{:.1e}", e.p_value) } else { "—".into() },
        "articles": e.articles, "sources": e.sources,
        "feed_factor": format!("{:.2}", e.feed_factor),
        "top_articles": articles,
        "entities": counted(&e.top_entities), "countries": counted(&e.top_countries),
        "keywords": counted(&e.top_keywords),
    })
}

/// A rule's alerts, newest first, from its events (grouped as notifications group them,
/// [`crate::sink::render::by_alert`]): each with its onset, its end (if resolved), its
/// peak and its latest event.
fn alerts_of(events: &[AlertEvent]) -> Vec<Value> {
    let alerts = crate::sink::render::by_alert(events);
    (alerts.iter().rev())
        .map(|(last, earlier)| {
            let all = || earlier.iter().copied().chain([*last]);
            let peak = all()
                .max_by(|a, b| a.ratio.total_cmp(&b.ratio))
                .unwrap_or(last);
            let ended = all().find(|e| e.kind == crate::detect::EventKind::Resolved);
            json!({
                "alert_id": last.alert_id, "started_at": when(last.started_at),
                "ended_at": ended.map(|e| when(e.at)), "events": earlier.len() + 1,
                "peak_ratio": format!("{:.1}×", peak.ratio), "peak_observed": peak.observed,
                "latest": event_view(last),
            })
        })
        .collect()
}

/// Spans of `events`' alerts for a chart: onset to end, or to `now` while open.
fn spans(events: &[AlertEvent], now: i64) -> Vec<(i64, i64)> {
    (crate::sink::render::by_alert(events).into_iter())
        .map(|(last, _)| {
            let end = match last.kind {
                crate::detect::EventKind::Resolved => last.at.timestamp(),
                _ => now,
            };
            (last.started_at.timestamp(), end)
        })
        .collect()
}

#[derive(Deserialize)]
pub struct OverviewQuery {
    /// Only rules whose id or name contains this (case-insensitive).
    q: Option<String>,
    limit: Option<usize>,
}

/// `GET /`: what is alerting now, the week's alert events, and the rules by how far each
/// is above its expectation.
pub async fn overview(State(s): State<AppState>, Query(q): Query<OverviewQuery>) -> Response {
    let (mut rules, watermark) = match rule_views(&s, None).await {
        Ok(v) => v,
        Err(r) => return r,
    };
    let total = rules.len();
    let ratio = |r: &Value| r["ratio"].as_f64().unwrap_or(0.0);
    let alerting = |r: &Value| r["state"] == "alerting";
    // Alerting rules first, then the most surging.
    rules.sort_by(|a, b| (alerting(b).cmp(&alerting(a))).then(ratio(b).total_cmp(&ratio(a))));
    let open_ids: Vec<String> = (rules.iter())
        .filter(|r| alerting(r))
        .filter_map(|r| r["alert_id"].as_str().map(String::from))
        .collect();
    let open_count = open_ids.len();
    let since = watermark.unwrap_or_else(Utc::now).timestamp() - 7 * 86_400;
    let found = with_store(&s, move |st| {
        let mut open = Vec::new();
        for id in open_ids.iter().take(OPEN_SHOWN) {
            open.extend(alerts_of(&st.alert_events_of(id)?));
        }
        let recent = st.latest_alerts(since, RECENT_SHOWN)?;
        let dead = st.dead_deliveries(DEAD_SHOWN)?;
        Ok::<_, crate::state::StateError>((open, recent, dead))
    })
    .await;
    let (open, recent, dead) = match found {
        Ok(v) => v,
        Err(r) => return r,
    };
    let recent: Vec<Value> = recent.iter().map(event_view).collect();
    let needle = q.q.as_deref().map(str::trim).unwrap_or("").to_lowercase();
    if !needle.is_empty() {
        rules.retain(|r| {
            [&r["id"], &r["name"]].iter().any(|v| {
                v.as_str()
                    .is_some_and(|t| t.to_lowercase().contains(&needle))
            })
        });
    }
    let matching = rules.len();
    let channels = match channel_views(&s).await {
        Ok(v) => v,
        Err(r) => return r,
    };
    let dead: Vec<Value> = (dead.into_iter())
        .map(
            |(event, channel, error)| json!({ "event": event, "channel": channel, "error": error }),
        )
        .collect();
    rules.truncate(q.limit.unwrap_or(RULES_SHOWN).clamp(1, 10_000));
    page(
        "overview.html",
        json!({
            "title": "vigie",
            "watermark": watermark.map(when),
            "now": when(Utc::now()),
            "rules_total": total, "rules_matching": matching, "rules": rules, "q": needle,
            "open_count": open_count, "open": open, "open_shown": OPEN_SHOWN,
            "recent": recent, "channels": channels, "dead": dead,
        }),
    )
}

#[derive(Deserialize)]
pub struct ChartQuery {
    hours: Option<u32>,
}

/// `GET /rules/{id}`: one rule's chart, figures, settings and alerts of the last 30 days.
pub async fn rule(
    State(s): State<AppState>,
    Path(id): Path<String>,
    Query(q): Query<ChartQuery>,
) -> Response {
    let (rules, watermark) = match rule_views(&s, Some(id.clone())).await {
        Ok(v) => v,
        Err(r) => return r,
    };
    let Some(view) = rules.into_iter().find(|r| r["id"] == id.as_str()) else {
        return not_found(&id);
    };
    let settings = serde_json::to_string_pretty(&view["detector"]).unwrap_or_default();
    let since = watermark.unwrap_or_else(Utc::now).timestamp() - 30 * 86_400;
    let rule_id = id.clone();
    let events =
        match with_store(&s, move |st| st.alert_events_of_rule(&rule_id, since, 1000)).await {
            Ok(v) => v,
            Err(r) => return r,
        };
    let hours = q.hours.unwrap_or(48).clamp(1, 24 * 35);
    page(
        "rule.html",
        json!({
            "title": format!("{} · vigie", view["name"].as_str().unwrap_or(&id)),
            "rule": view, "settings": settings, "hours": hours,
            "watermark": watermark.map(when),
            "alerts": alerts_of(&events),
        }),
    )
}

fn not_found(id: &str) -> Response {
    let body = page(
        "base.html",
        json!({ "title": "not found · vigie", "missing": id }),
    );
    (StatusCode::NOT_FOUND, body).into_response()
}

/// `GET /rules/{id}/chart.png?hours=N`: the rule's stories per bucket over the last N
/// hours (48 by default), the baseline's expected band and its alerts shaded, drawn as the
/// alert emails draw theirs.
pub async fn chart(
    State(s): State<AppState>,
    Path(id): Path<String>,
    Query(q): Query<ChartQuery>,
) -> Response {
    let series = match series_of(&s, id.clone(), q.hours.unwrap_or(48)).await {
        Ok(v) => v,
        Err(r) => return r,
    };
    let c = series.chart;
    let (start, end) = (c.start, c.start + c.stories.len() as i64 * c.bucket_secs);
    let events = match with_store(&s, move |st| {
        st.alert_events_of_rule(&id, start - 7 * 86_400, 1000)
    })
    .await
    {
        Ok(v) => v,
        Err(r) => return r,
    };
    let shaded: Vec<(i64, i64)> = (spans(&events, end).into_iter())
        .filter(|&(a, b)| b >= start && a <= end)
        .collect();
    let png =
        tokio::task::spawn_blocking(move || crate::sink::chart::render(&c, &shaded, 960)).await;
    match png {
        Ok(Ok(bytes)) => (
            [
                (header::CONTENT_TYPE, "image/png"),
                (header::CACHE_CONTROL, "no-store"),
            ],
            bytes,
        )
            .into_response(),
        Ok(Err(e)) => (StatusCode::INTERNAL_SERVER_ERROR, e).into_response(),
        Err(_) => StatusCode::INTERNAL_SERVER_ERROR.into_response(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn templates_parse_and_escape_what_users_and_the_feed_write() {
        let rule = json!({
            "id": "kz", "name": "<script>alert(1)</script>", "state": "alerting",
            "window_count": 5, "expected": 1.0, "ratio": 3.0, "warming_up": false,
            "silenced_by": [], "notify": ["mail"], "file": "rules/kz.toml", "line": 3,
            "window_minutes": 60, "baseline_buckets": 10, "alert_id": "kz:1",
        });
        let event = crate::sink::test_event(Utc::now());
        let html = match templates()
            .get_template("overview.html")
            .unwrap()
            .render(json!({
                "title": "vigie", "rules": [rule.clone()], "rules_total": 1, "rules_matching": 1,
                "open": alerts_of(std::slice::from_ref(&event)), "recent": [event_view(&event)], "q": "\"><marquee>",
                "channels": [{ "name": "hook", "type": "webhook",
                    "outbox": { "pending": 3, "held": 1, "sent": 2, "silenced": 0, "dead": 1 } }],
                "dead": [{ "event": "kz:1:started", "channel": "hook", "error": "<i>403</i>" }],
            })) {
            Ok(h) => h,
            Err(e) => panic!("{e:#}"),
        };
        assert!(!html.contains("<script>alert"), "{html}");
        assert!(html.contains("&lt;script&gt;"), "{html}");
        assert!(!html.contains("\"><marquee>"), "{html}");
        // Delivery: waiting excludes the held rows; a receiver's error is escaped.
        assert!(
            html.contains("<td class=\"n\">2</td><td class=\"n\">1</td>"),
            "{html}"
        );
        assert!(html.contains("hook: &lt;i&gt;403"), "{html}");
        // The open alert's evidence, through the shared partial.
        let title = &event.top_articles[0].title;
        assert!(
            html.contains(&title.replace('\'', "&#x27;")),
            "{title} not in {html}"
        );
        let mut gated = rule.clone();
        gated["gate"] = json!({ "feed_factor": 1.0, "momentum": 1.2, "cooldown_until": null,
            "windows": [{ "minutes": 60, "observed": 2, "expected": 1.24, "needed": 7 },
                        { "minutes": 15, "observed": 0, "expected": 0.3, "needed": null }] });
        let html = templates().get_template("rule.html").unwrap();
        let html = html
            .render(
                json!({ "title": "kz", "rule": gated, "alerts": [], "hours": 48, "settings": "{}" }),
            )
            .unwrap();
        assert!(html.contains("/rules/kz/chart.png?hours=48"), "{html}");
        assert!(html.contains("<td>last 60 min</td><td class=\"n\">2</td><td class=\"n\">1.2</td><td class=\"n\">7</td>"), "{html}");
        assert!(
            html.contains("none would") && html.contains("momentum (×1.20)"),
            "{html}"
        );
    }

    #[test]
    fn an_open_alert_is_shaded_to_now_and_a_resolved_one_to_its_end() {
        let at = |t: i64| DateTime::from_timestamp(t, 0).unwrap();
        let ev = |alert: &str, kind, started: i64, t: i64| AlertEvent {
            event_id: format!("{alert}:{t}"),
            alert_id: alert.into(),
            kind,
            started_at: at(started),
            at: at(t),
            ..crate::sink::test_event(at(t))
        };
        use crate::detect::EventKind::*;
        let events = [
            ev("a", Started, 100, 100),
            ev("a", Updated, 100, 200),
            ev("a", Resolved, 100, 900),
            ev("b", Started, 1000, 1000),
        ];
        assert_eq!(spans(&events, 5000), [(100, 900), (1000, 5000)]);
        let list = alerts_of(&events);
        assert_eq!(list[0]["alert_id"], "b", "newest first");
        assert!(list[0]["ended_at"].is_null());
        assert_eq!(list[1]["events"], 3);
        assert_eq!(list[1]["latest"]["kind"], "resolved");
    }

    #[test]
    fn only_web_links_from_the_feed_are_linked() {
        let mut e = crate::sink::test_event(Utc::now());
        let mut a = e.top_articles[0].clone();
        a.url = Some(" JavaScript:alert(1)".into());
        let mut b = a.clone();
        b.url = Some("https://example.org/a".into());
        e.top_articles = vec![a, b];
        let v = event_view(&e);
        assert!(v["top_articles"][0]["url"].is_null(), "{v}");
        assert_eq!(v["top_articles"][1]["url"], "https://example.org/a");
    }
}
