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

Rule:      {{ e.rule_name }} ({{ e.rule }})
Window:    {{ e.window_start }} to {{ e.window_end }}
Observed:  {{ e.observed }} stories ({{ e.articles }} articles from {{ e.sources }} sources)
Expected:  {{ "%.1f"|format(e.expected) }}
Ratio:     {{ "%.1f"|format(e.ratio) }}x{% if e.p_value is not none %}   p-value: {{ "%.2e"|format(e.p_value) }}{% endif %}
Since:     {{ e.started_at }}
{% if e.top_articles %}
Top articles:
{% for a in e.top_articles %}  - {{ a.title }}{% if a.source %} ({{ a.source }}){% endif %}, {{ a.published_at }}{% if a.url %}
    {{ a.url }}{% endif %}
{% endfor %}{% endif %}{% if e.top_entities %}
Entities:  {% for x in e.top_entities %}{{ x[0] }} ({{ x[1] }}){% if not loop.last %}, {% endif %}{% endfor %}{% endif %}{% if e.top_countries %}
Countries: {% for x in e.top_countries %}{{ x[0] }} ({{ x[1] }}){% if not loop.last %}, {% endif %}{% endfor %}{% endif %}{% if e.top_keywords %}
Keywords:  {% for x in e.top_keywords %}{{ x[0] }} ({{ x[1] }}){% if not loop.last %}, {% endif %}{% endfor %}{% endif %}

Alert {{ e.alert_id }} / event {{ e.event_id }}
"#;

pub const DEFAULT_HTML: &str = r#"<html><body style="font-family: sans-serif">
<h2>{{ headline }}</h2>
<table>
<tr><td>Rule</td><td><b>{{ e.rule_name }}</b> ({{ e.rule }})</td></tr>
<tr><td>Window</td><td>{{ e.window_start }} &ndash; {{ e.window_end }}</td></tr>
<tr><td>Observed</td><td>{{ e.observed }} stories ({{ e.articles }} articles, {{ e.sources }} sources)</td></tr>
<tr><td>Expected</td><td>{{ "%.1f"|format(e.expected) }}</td></tr>
<tr><td>Ratio</td><td>{{ "%.1f"|format(e.ratio) }}&times;</td></tr>
<tr><td>Since</td><td>{{ e.started_at }}</td></tr>
</table>
{% if e.chart.stories %}<p><img src="cid:chart" alt="Stories per 5 minutes over 48 hours: bars, red in the alert window; blue line and band: expected" width="720" height="240"></p>{% endif %}
{% if e.top_articles %}<h3>Top articles</h3><ul>
{% for a in e.top_articles %}<li>{% if a.url %}<a href="{{ a.url }}">{{ a.title }}</a>{% else %}{{ a.title }}{% endif %}{% if a.source %} &mdash; {{ a.source }}{% endif %}, {{ a.published_at }}</li>
{% endfor %}</ul>{% endif %}
{% if e.top_entities %}<p>Entities: {% for x in e.top_entities %}{{ x[0] }} ({{ x[1] }}){% if not loop.last %}, {% endif %}{% endfor %}</p>{% endif %}
{% if e.top_countries %}<p>Countries: {% for x in e.top_countries %}{{ x[0] }} ({{ x[1] }}){% if not loop.last %}, {% endif %}{% endfor %}</p>{% endif %}
<p style="color:#888">Alert {{ e.alert_id }} / event {{ e.event_id }}</p>
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

/// Email subject. Control characters from rule names or articles cannot reach headers.
pub fn subject(e: &AlertEvent) -> String {
    let s = format!("[vigie] {}", headline(e));
    s.chars()
        .map(|c| if c.is_control() { ' ' } else { c })
        .collect()
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

pub fn text_body(e: &AlertEvent) -> String {
    render("body.txt", DEFAULT_TEXT, e)
        .unwrap_or_else(|err| format!("{}\n\n(template error: {err})", headline(e)))
}

pub fn html_body(e: &AlertEvent) -> String {
    render("body.html", DEFAULT_HTML, e)
        .unwrap_or_else(|_| format!("<p>{}</p>", html_escape(&headline(e))))
}

fn html_escape(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
}

/// The webhook body for a preset: `vigie` (default), `slack` or `teams`.
pub fn webhook_body(e: &AlertEvent, preset: Option<&str>) -> Value {
    match preset {
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
            }
            v
        }
    }
}

fn top_lines(e: &AlertEvent) -> String {
    e.top_articles
        .iter()
        .map(|a| match &a.url {
            Some(u) => format!("• {} — {}", a.title, u),
            None => format!("• {}", a.title),
        })
        .collect::<Vec<_>>()
        .join("\n")
}
