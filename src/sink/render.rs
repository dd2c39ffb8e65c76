//! What alerts say: subject, plain-text and HTML bodies, and webhook payloads.
//!
//! Bodies are minijinja templates (defaults below) rendered with the alert event as
//! context, so they can be overridden without code. The webhook JSON schema is documented
//! in docs/alerts.md and versioned with `schema`.

use minijinja::{context, Environment};
use serde_json::{json, Value};

use crate::engine::AlertEvent;

/// Schema version of the webhook payload.
pub const WEBHOOK_SCHEMA: u32 = 1;

pub const DEFAULT_TEXT: &str = r#"{{ headline }}
{% if e.unannounced %}
This alert started at {{ e.started_at }}; this channel was not told of its start.
{% endif %}
Rule:      {{ e.rule_name }} ({{ e.rule }})
Window:    {{ e.window_start }} to {{ e.window_end }}
Observed:  {{ e.observed }} stories ({{ e.articles }} articles from {{ e.sources }} sources)
Expected:  {{ "%.1f"|format(e.expected) }}
Ratio:     {{ "%.1f"|format(e.ratio) }}x{% if e.p_value is not none %}   p-value: {{ "%.2e"|format(e.p_value) }}{% endif %}
{% if e.feed_factor > 1.1 or e.feed_factor < 0.9 %}Feed:      {{ "%.1f"|format(e.feed_factor) }}x its usual volume; the expectation is scaled to match
{% endif %}Since:     {{ e.started_at }}
{% if e.top_articles %}
Top articles:
{% for a in e.top_articles %}  - {{ a.title }}{% if a.source %} ({{ a.source }}){% endif %}, {{ a.published_at }}{% if a.url %}
    {{ a.url }}{% endif %}
{% endfor %}{% endif %}{% if e.top_entities %}
Entities:  {% for x in e.top_entities %}{{ x[0] }} ({{ x[1] }}){% if not loop.last %}, {% endif %}{% endfor %}{% endif %}{% if e.top_countries %}
Countries: {% for x in e.top_countries %}{{ x[0] }} ({{ x[1] }}){% if not loop.last %}, {% endif %}{% endfor %}{% endif %}{% if e.top_keywords %}
Keywords:  {% for x in e.top_keywords %}{{ x[0] }} ({{ x[1] }}){% if not loop.last %}, {% endif %}{% endfor %}{% endif %}

Alert {{ e.alert_id }} / event {{ e.event_id }}{% if e.link %}
On the dashboard: {{ e.link }}{% endif %}
"#;

pub const DEFAULT_HTML: &str = r#"<html><body style="font-family: sans-serif">
<h2>{{ headline }}</h2>
{% if e.unannounced %}<p><b>This alert started at {{ e.started_at }}</b>; this channel was not told of its start.</p>
{% endif %}<table>
<tr><td>Rule</td><td><b>{{ e.rule_name }}</b> ({{ e.rule }})</td></tr>
<tr><td>Window</td><td>{{ e.window_start }} &ndash; {{ e.window_end }}</td></tr>
<tr><td>Observed</td><td>{{ e.observed }} stories ({{ e.articles }} articles, {{ e.sources }} sources)</td></tr>
<tr><td>Expected</td><td>{{ "%.1f"|format(e.expected) }}</td></tr>
<tr><td>Ratio</td><td>{{ "%.1f"|format(e.ratio) }}&times;</td></tr>
{% if e.feed_factor > 1.1 or e.feed_factor < 0.9 %}<tr><td>Feed</td><td>{{ "%.1f"|format(e.feed_factor) }}&times; its usual volume; the expectation is scaled to match</td></tr>
{% endif %}<tr><td>Since</td><td>{{ e.started_at }}</td></tr>
</table>
{% if e.chart.stories %}<p><img src="cid:chart" alt="Stories per 5 minutes over 48 hours: bars, red in the alert window; blue line and band: expected" width="720" height="240"></p>{% endif %}
{% if e.top_articles %}<h3>Top articles</h3><ul>
{% for a in e.top_articles %}<li>{% if a.url %}<a href="{{ a.url }}">{{ a.title }}</a>{% else %}{{ a.title }}{% endif %}{% if a.source %} &mdash; {{ a.source }}{% endif %}, {{ a.published_at }}</li>
{% endfor %}</ul>{% endif %}
{% if e.top_entities %}<p>Entities: {% for x in e.top_entities %}{{ x[0] }} ({{ x[1] }}){% if not loop.last %}, {% endif %}{% endfor %}</p>{% endif %}
{% if e.top_countries %}<p>Countries: {% for x in e.top_countries %}{{ x[0] }} ({{ x[1] }}){% if not loop.last %}, {% endif %}{% endfor %}</p>{% endif %}
{% if e.link %}<p><a href="{{ e.link }}">The rule on the dashboard</a>: its chart, what would start an alert now, its alerts.</p>
{% endif %}<p style="color:#888">Alert {{ e.alert_id }} / event {{ e.event_id }}</p>
</body></html>
"#;

/// One line saying what happened, for subjects and chat messages.
pub fn headline(e: &AlertEvent) -> String {
    let what = match e.kind {
        crate::detect::EventKind::Started => "coverage spike started",
        crate::detect::EventKind::Updated => "coverage spike growing",
        crate::detect::EventKind::Resolved => "coverage spike resolved",
    };
    format!(
        "{}: {what} — {} stories in the window vs {:.1} expected ({:.1}×)",
        e.rule_name, e.observed, e.expected, e.ratio
    )
}

/// User templates that replace the defaults, from a rule (`[rule.templates]`) or a channel
/// (`[channels.NAME.templates]`); a rule's win over its channel's. Each is a minijinja
/// template rendered with `e` (the alert event, fields as in docs/alerts.md) and `headline`.
#[derive(Debug, Clone, Default, serde::Deserialize, serde::Serialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct Templates {
    pub subject: Option<String>,
    pub text: Option<String>,
    pub html: Option<String>,
    /// A webhook body; must render to JSON.
    pub webhook: Option<String>,
}

impl Templates {
    pub fn is_empty(&self) -> bool {
        self.subject.is_none()
            && self.text.is_none()
            && self.html.is_none()
            && self.webhook.is_none()
    }

    /// Checks every template by rendering it with a sample event; the error names the part.
    pub fn validate(&self) -> Result<(), String> {
        let e = sample_event();
        for (name, t) in [
            ("subject", &self.subject),
            ("text", &self.text),
            ("html.html", &self.html),
            ("webhook", &self.webhook),
        ] {
            if let Some(t) = t {
                let out = render(name, t, &e).map_err(|err| {
                    format!("template `{}`: {err:#}", name.trim_end_matches(".html"))
                })?;
                if name == "webhook" {
                    serde_json::from_str::<Value>(&out).map_err(|err| {
                        format!("template `webhook` does not render to JSON: {err}")
                    })?;
                }
            }
        }
        Ok(())
    }
}

/// The first template of `pick` among the overrides, in order.
fn first<'a>(
    overrides: &[&'a Templates],
    pick: impl Fn(&'a Templates) -> &'a Option<String>,
) -> Option<&'a str> {
    overrides.iter().find_map(|t| pick(t).as_deref())
}

/// Email subject. Control characters from rule names or articles cannot reach headers.
pub fn subject(e: &AlertEvent, overrides: &[&Templates]) -> String {
    let s = match first(overrides, |t| &t.subject).map(|t| render("subject", t, e)) {
        Some(Ok(s)) => s,
        _ => format!("[vigie] {}", headline(e)),
    };
    s.chars()
        .map(|c| if c.is_control() { ' ' } else { c })
        .collect()
}

/// A fixed event for validating templates.
pub fn sample_event() -> AlertEvent {
    serde_json::from_value(json!({
        "event_id": "sample:1:started", "alert_id": "sample:1", "rule": "sample", "rule_name": "Sample", "kind": "started",
        "at": "2022-01-05T12:00:00Z", "started_at": "2022-01-05T12:00:00Z",
        "window_start": "2022-01-05T11:00:00Z", "window_end": "2022-01-05T12:05:00Z", "detector": "baseline",
        "observed": 30, "expected": 2.0, "ratio": 10.3, "p_value": 1e-9, "feed_factor": 1.6, "articles": 41, "sources": 9,
        "top_articles": [{"id": "a", "title": "Title", "url": "https://example.org/a", "source": "example.org",
                          "published_at": "2022-01-05T11:30:00Z", "entities": ["e"], "countries": ["KZ"], "terms": [], "new_story": true}],
        "top_entities": [["e", 3]], "top_countries": [["KZ", 30]], "top_keywords": [], "notify": []
    }))
    .expect("the sample event matches AlertEvent")
}

fn env() -> Environment<'static> {
    let mut env = Environment::new();
    env.set_auto_escape_callback(|name| {
        if name.ends_with(".html") {
            minijinja::AutoEscape::Html
        } else {
            minijinja::AutoEscape::None
        }
    });
    env
}

/// Renders a template (validated by `vigie check` when user-supplied).
pub fn render(name: &str, template: &str, e: &AlertEvent) -> Result<String, minijinja::Error> {
    let mut env = env();
    env.add_template_owned(name.to_string(), template.to_string())?;
    env.get_template(name)?
        .render(context! { e => e, headline => headline(e) })
}

pub fn text_body(e: &AlertEvent, overrides: &[&Templates]) -> String {
    render(
        "body.txt",
        first(overrides, |t| &t.text).unwrap_or(DEFAULT_TEXT),
        e,
    )
    .unwrap_or_else(|err| format!("{}\n\n(template error: {err})", headline(e)))
}

pub fn html_body(e: &AlertEvent, overrides: &[&Templates]) -> String {
    render(
        "body.html",
        first(overrides, |t| &t.html).unwrap_or(DEFAULT_HTML),
        e,
    )
    .unwrap_or_else(|_| format!("<p>{}</p>", html_escape(&headline(e))))
}

pub(crate) fn html_escape(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
}

/// The webhook body: a user template if any, else the preset: `vigie` (default), `slack`
/// or `teams`.
pub fn webhook_body(
    e: &AlertEvent,
    preset: Option<&str>,
    overrides: &[&Templates],
) -> Result<Value, String> {
    if let Some(t) = first(overrides, |t| &t.webhook) {
        let out = render("webhook", t, e).map_err(|err| format!("webhook template: {err}"))?;
        return serde_json::from_str(&out)
            .map_err(|err| format!("webhook template does not render to JSON: {err}"));
    }
    Ok(match preset {
        Some("slack") => json!({ "text": format!("*{}*\n{}", headline(e), top_lines(e)) }),
        Some("teams") => json!({
            "@type": "MessageCard", "@context": "https://schema.org/extensions",
            "summary": headline(e), "title": headline(e), "text": top_lines(e).replace('\n', "<br>"),
        }),
        _ => {
            let mut v = serde_json::to_value(e).unwrap_or(Value::Null);
            if let Value::Object(m) = &mut v {
                m.insert("schema".into(), json!(WEBHOOK_SCHEMA));
                m.insert("summary".into(), json!(headline(e)));
                m.remove("templates");
            }
            v
        }
    })
}

/// The chat presets' lines: the start of an alert the channel was not told of, then the
/// top articles.
fn top_lines(e: &AlertEvent) -> String {
    let start = (e.unannounced).then(|| {
        format!(
            "(started {}; this channel was not told of its start)",
            e.started_at
                .to_rfc3339_opts(chrono::SecondsFormat::Secs, true)
        )
    });
    let link = (e.link.as_ref()).map(|l| format!("On the dashboard: {l}"));
    start
        .into_iter()
        .chain(e.top_articles.iter().map(|a| match &a.url {
            Some(u) => format!("• {} — {}", a.title, u),
            None => format!("• {}", a.title),
        }))
        .chain(link)
        .collect::<Vec<_>>()
        .join("\n")
}

/// A grouped notification's events by alert, in the order their alerts first appear:
/// each alert's latest event, then its earlier ones. A digest, or a night held back by
/// quiet hours, may hold an alert's start, growth and end; a reader wants the alert once,
/// as it stands, and what happened to it before.
pub fn by_alert(events: &[AlertEvent]) -> Vec<(&AlertEvent, Vec<&AlertEvent>)> {
    let mut out: Vec<(&AlertEvent, Vec<&AlertEvent>)> = Vec::new();
    for e in events {
        match out
            .iter_mut()
            .find(|(latest, _)| latest.alert_id == e.alert_id)
        {
            Some((latest, earlier)) => {
                let (newer, older) = if (e.at, e.kind) >= (latest.at, latest.kind) {
                    (e, *latest)
                } else {
                    (*latest, e)
                };
                earlier.push(older);
                *latest = newer;
            }
            None => out.push((e, Vec::new())),
        }
    }
    for (_, earlier) in &mut out {
        earlier.sort_by_key(|e| (e.at, e.kind));
    }
    out
}

/// "Earlier in this notification: started at 05:49 UTC (7 stories), updated at 07:10 UTC
/// (19 stories)." for an alert's earlier events; None when it has none.
pub fn earlier_line(earlier: &[&AlertEvent]) -> Option<String> {
    if earlier.is_empty() {
        return None;
    }
    let parts: Vec<String> = (earlier.iter())
        .map(|e| {
            format!(
                "{} at {} ({} stories)",
                e.kind.as_str(),
                e.at.format("%Y-%m-%d %H:%M UTC"),
                e.observed
            )
        })
        .collect();
    Some(format!(
        "Earlier in this notification: {}.",
        parts.join(", ")
    ))
}

/// Subject of a grouped notification: each alert once, as it stands.
pub fn group_subject(events: &[AlertEvent]) -> String {
    let alerts = by_alert(events);
    let names: Vec<String> = (alerts.iter())
        .map(|(e, _)| format!("{} ({})", e.rule_name, e.kind.as_str()))
        .collect();
    let s = if alerts.len() == events.len() {
        let plural = if events.len() == 1 { "" } else { "s" };
        format!(
            "[vigie] {} alert event{plural}: {}",
            events.len(),
            names.join(", ")
        )
    } else {
        format!(
            "[vigie] {} alerts ({} events): {}",
            alerts.len(),
            events.len(),
            names.join(", ")
        )
    };
    s.chars()
        .map(|c| if c.is_control() { ' ' } else { c })
        .collect()
}

/// Webhook body of a grouped notification: the events as they would be sent alone.
pub fn group_webhook_body(
    events: &[AlertEvent],
    preset: Option<&str>,
    channel: &Templates,
) -> Result<Value, String> {
    Ok(match preset {
        // A chat message is read: each alert once, as it stands, with its earlier events
        // in a line. (The JSON body keeps every event: a program may want each.)
        Some("slack") | Some("teams") => {
            let mut text: Vec<String> = Vec::new();
            for (latest, earlier) in by_alert(events) {
                let body = webhook_body(latest, preset, &[&latest.templates, channel])?;
                let said = body["text"].as_str().unwrap_or_default();
                text.push(match earlier_line(&earlier) {
                    Some(line) => format!("{said}\n_{line}_"),
                    None => said.to_string(),
                });
            }
            json!({ "text": text.join("\n\n") })
        }
        _ => {
            let bodies = (events.iter())
                .map(|e| webhook_body(e, preset, &[&e.templates, channel]))
                .collect::<Result<Vec<_>, _>>()?;
            json!({ "schema": WEBHOOK_SCHEMA, "grouped": true, "summary": group_subject(events), "events": bodies })
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_linked_event_says_where_its_rule_is_on_the_dashboard() {
        let mut e = sample_event();
        let link = "https://vigie.example.org/rules/sample";
        assert!(!text_body(&e, &[]).contains("dashboard"));
        e.link = Some(link.into());
        assert!(text_body(&e, &[]).contains(&format!("On the dashboard: {link}")));
        assert!(
            html_body(&e, &[]).contains(&format!("<a href=\"{}\">", link.replace('/', "&#x2f;")))
        );
        let slack = webhook_body(&e, Some("slack"), &[]).unwrap();
        assert!(slack["text"]
            .as_str()
            .unwrap()
            .ends_with(&format!("On the dashboard: {link}")));
        assert_eq!(webhook_body(&e, None, &[]).unwrap()["link"], link);
    }

    #[test]
    fn a_group_tells_each_alert_once_by_its_latest_event() {
        use crate::detect::EventKind::*;
        let ev = |alert: &str, kind, minutes: i64| {
            let mut e = sample_event();
            e.alert_id = alert.into();
            e.rule_name = alert.to_uppercase();
            e.kind = kind;
            e.at += chrono::Duration::minutes(minutes);
            e
        };
        // Out of order, as rows of several rounds may come: the latest still wins.
        let events = [
            ev("kz", Updated, 10),
            ev("ua", Started, 5),
            ev("kz", Started, 0),
            ev("kz", Resolved, 90),
        ];
        let alerts = by_alert(&events);
        let shape: Vec<(
            &str,
            crate::detect::EventKind,
            Vec<crate::detect::EventKind>,
        )> = (alerts.iter())
            .map(|(e, earlier)| {
                (
                    e.alert_id.as_str(),
                    e.kind,
                    earlier.iter().map(|x| x.kind).collect(),
                )
            })
            .collect();
        assert_eq!(
            shape,
            [
                ("kz", Resolved, vec![Started, Updated]),
                ("ua", Started, vec![])
            ]
        );
        let line = earlier_line(&alerts[0].1).unwrap();
        assert!(
            line.starts_with("Earlier in this notification: started at "),
            "{line}"
        );
        assert!(line.contains(", updated at "), "{line}");
        assert_eq!(earlier_line(&alerts[1].1), None);
        assert_eq!(
            group_subject(&events),
            "[vigie] 2 alerts (4 events): KZ (resolved), UA (started)"
        );
        assert_eq!(
            group_subject(&events[1..2]),
            "[vigie] 1 alert event: UA (started)"
        );
        let slack = group_webhook_body(&events, Some("slack"), &Templates::default()).unwrap();
        let text = slack["text"].as_str().unwrap();
        assert_eq!(
            text.matches("Earlier in this notification").count(),
            1,
            "{text}"
        );
        let json = group_webhook_body(&events, None, &Templates::default()).unwrap();
        assert_eq!(
            json["events"].as_array().unwrap().len(),
            4,
            "a program gets every event"
        );
    }

    #[test]
    fn an_alert_whose_start_the_channel_missed_says_when_it_started() {
        let mut e = sample_event();
        e.kind = crate::detect::EventKind::Updated;
        let said = "this channel was not told of its start";
        assert!(!text_body(&e, &[]).contains(said));
        assert!(!html_body(&e, &[]).contains(said));
        assert!(!webhook_body(&e, Some("slack"), &[]).unwrap()["text"]
            .as_str()
            .unwrap()
            .contains(said));
        assert!(webhook_body(&e, None, &[])
            .unwrap()
            .get("unannounced")
            .is_none());
        e.unannounced = true;
        let text = text_body(&e, &[]);
        assert!(
            text.contains("This alert started at 2022-01-05T12:00:00Z;"),
            "{text}"
        );
        assert!(html_body(&e, &[]).contains(said));
        let slack = webhook_body(&e, Some("slack"), &[]).unwrap();
        assert!(
            slack["text"]
                .as_str()
                .unwrap()
                .contains("(started 2022-01-05T12:00:00Z; this channel"),
            "{slack}"
        );
        assert_eq!(webhook_body(&e, None, &[]).unwrap()["unannounced"], true);
    }

    #[test]
    fn overrides_win_in_order_and_are_validated() {
        let e = sample_event();
        let rule = Templates {
            subject: Some("ALERT {{ e.rule_name }} x{{ e.ratio }}".into()),
            ..Default::default()
        };
        let channel = Templates {
            subject: Some("channel".into()),
            text: Some("{{ headline }}!".into()),
            ..Default::default()
        };
        assert_eq!(subject(&e, &[&rule, &channel]), "ALERT Sample x10.3");
        assert_eq!(subject(&e, &[&channel]), "channel");
        assert!(subject(&e, &[]).starts_with("[vigie] Sample: coverage spike started"));
        assert!(text_body(&e, &[&rule, &channel]).ends_with('!'));
        assert!(rule.validate().is_ok());
        assert!(Templates {
            text: Some("{{ e.observed | nosuchfilter }}".into()),
            ..Default::default()
        }
        .validate()
        .unwrap_err()
        .contains("text"));
        assert!(Templates {
            html: Some("{% if %}".into()),
            ..Default::default()
        }
        .validate()
        .is_err());
        let hook = Templates {
            webhook: Some(r#"{"text": "{{ headline }}", "n": {{ e.observed }}}"#.into()),
            ..Default::default()
        };
        assert!(hook.validate().is_ok());
        assert_eq!(webhook_body(&e, None, &[&hook]).unwrap()["n"], 30);
        assert!(Templates {
            webhook: Some("not json".into()),
            ..Default::default()
        }
        .validate()
        .is_err());
        // Control characters never reach the subject.
        let evil = Templates {
            subject: Some("a{{ '\r\nBcc: x' }}".into()),
            ..Default::default()
        };
        assert!(!subject(&e, &[&evil]).contains('\n'));
    }
}
