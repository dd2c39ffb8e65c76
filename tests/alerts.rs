//! A generated Kazakhstan surge flows through a real broker into vigie, which sends one
//! signed webhook and one email per alert event to real receivers.

mod common;
#[path = "support/receiver.rs"]
mod receiver;
#[path = "support/smtp.rs"]
mod smtp;

use std::time::Duration;

use chrono::Utc;
use common::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_kazakhstan_surge_alerts_by_webhook_and_email() {
    let brokers = broker();
    let topic = unique("surge");
    create_topic(&brokers, &topic, 4).await;
    let hook = receiver::start("s3cret", 0, 200).await;
    // A channel in its quiet hours for the whole test (today and tomorrow, UTC).
    let night = receiver::start("s3cret", 0, 200).await;
    let quiet_days = {
        use chrono::Datelike;
        let today = Utc::now().weekday();
        format!("{},{}", today, today.succ()).to_lowercase()
    };
    let smtp_port = free_port();
    let tmp = tempfile::tempdir().unwrap();

    let extra = format!(
        r#"
[detector]
warmup_hours = 24

[alerts]
default_notify = ["mail", "hook", "night"]
retry_max_secs = 2

[smtp]
host = "127.0.0.1"
port = {smtp_port}
tls = "none"
from = "vigie <vigie@example.org>"

[channels.mail]
type = "email"
to = ["desk@example.org"]
events = ["started", "resolved"]

[channels.hook]
type = "webhook"
url = "{}"
secret = "s3cret"

[channels.night]
type = "webhook"
url = "{}"
secret = "s3cret"
timezone = "Asia/Almaty"
quiet_hours = ["{quiet_days}"]
"#,
        hook.url(),
        night.url()
    );
    let rules = "[[rule]]\nid = \"kazakhstan\"\nname = \"Kazakhstan\"\ncountries = [\"KZ\"]\n";
    let cfg = TestConfig::new(&brokers, &topic, &extra, rules, "");

    let end = Utc::now();
    let opts = vigie::generate::GenerateOptions {
        seed: 3,
        end,
        days: 4,
        rate: 20.0,
        surge_hours: 20,
        ..Default::default()
    };
    let mut payloads = Vec::new();
    vigie::generate::generate(&opts, &mut |a| {
        payloads.push(serde_json::to_vec(&a).unwrap())
    })
    .unwrap();
    produce(&brokers, &topic, &payloads).await;

    // The SMTP server is down at first: the webhook goes out, the email waits.
    let vigie = Vigie::start(&cfg, "alerts");
    let started = wait_for("a started webhook", Duration::from_secs(120), async || {
        hook.accepted
            .lock()
            .unwrap()
            .iter()
            .find(|r| r.body["kind"] == "started")
            .cloned()
    })
    .await;
    assert!(started.signature_ok, "signature verifies");
    assert_eq!(
        started.idempotency_key,
        started.body["event_id"].as_str().unwrap()
    );
    assert_eq!(started.body["rule"], "kazakhstan");
    assert_eq!(started.body["schema"], 1);
    let at = vigie::article::parse_date(started.body["at"].as_str().unwrap()).unwrap();
    assert!(
        at >= end - chrono::Duration::hours(20),
        "no alert before the surge (at {at})"
    );
    assert!(
        started.body["observed"].as_u64().unwrap() as f64
            >= 3.0 * started.body["expected"].as_f64().unwrap()
    );
    assert!(!started.body["top_articles"].as_array().unwrap().is_empty());
    wait_for(
        "a failed email attempt",
        Duration::from_secs(30),
        async || {
            metric(
                &cfg,
                "vigie_deliveries_total",
                "channel=\"mail\",outcome=\"retry\"",
            )
            .await
        },
    )
    .await;
    let (status, took) = vigie.terminate();
    assert!(status.success() && took < Duration::from_secs(15));

    // The server comes back; vigie restarts and delivers the pending email.
    let smtp = smtp::Smtp::start(smtp_port, &tmp.path().join("maildir"));
    let _vigie = Vigie::start(&cfg, "restarted");
    let mail = wait_for("an alert email", Duration::from_secs(60), async || {
        smtp.messages()
            .into_iter()
            .find(|m| m.contains("coverage spike started"))
    })
    .await;
    assert!(mail.contains("Subject: [vigie] Kazakhstan"), "{mail}");
    assert!(mail.contains("To: desk@example.org"), "{mail}");
    assert!(mail.contains("text/html"));
    assert!(
        mail.contains("Content-Type: image/png"),
        "the chart is attached inline"
    );
    assert_eq!(
        smtp.messages()
            .iter()
            .filter(|m| m.contains("coverage spike started"))
            .count(),
        1
    );

    // Give the pipeline time to finish the feed: still one started event per onset.
    tokio::time::sleep(Duration::from_secs(3)).await;
    let starts = hook
        .accepted
        .lock()
        .unwrap()
        .iter()
        .filter(|r| r.body["kind"] == "started")
        .count();
    assert_eq!(starts, 1);
    let api: serde_json::Value = reqwest::get(cfg.url("/api/alerts"))
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let kinds: Vec<&str> = (api["alerts"].as_array().unwrap().iter())
        .map(|a| a["kind"].as_str().unwrap())
        .collect();
    assert!(kinds.contains(&"started"), "{kinds:?}");
    // The mail channel takes onsets and ends only: the surge's growth went to the
    // webhook alone.
    assert!(kinds.contains(&"updated"), "{kinds:?}");
    wait_for("the updated webhook", Duration::from_secs(10), async || {
        (hook.accepted.lock().unwrap().iter())
            .find(|r| r.body["kind"] == "updated")
            .map(|_| ())
    })
    .await;
    assert!(
        !smtp
            .messages()
            .iter()
            .any(|m| m.contains("coverage spike growing")),
        "no updated email"
    );
    // Each event says where its deliveries stand: the onset went to both channels, the
    // growth to the webhook alone (the mail channel has no row for it).
    let api: serde_json::Value = reqwest::get(cfg.url("/api/alerts"))
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let channels = |kind: &str| -> Vec<(String, String)> {
        let e = (api["alerts"].as_array().unwrap().iter())
            .find(|a| a["kind"] == kind)
            .unwrap();
        (e["deliveries"].as_array().unwrap().iter())
            .map(|d| {
                let field = |k: &str| d[k].as_str().unwrap().to_string();
                (field("channel"), field("status"))
            })
            .collect()
    };
    assert_eq!(
        channels("started"),
        [
            ("hook".into(), "sent".into()),
            ("mail".into(), "sent".into()),
            ("night".into(), "pending".into())
        ]
    );
    // The quiet channel was told nothing; its rows wait for the end of its quiet hours.
    assert_eq!(night.attempts.load(std::sync::atomic::Ordering::SeqCst), 0);
    assert!(
        api["outbox"]["held"].as_i64().unwrap() >= 2,
        "{}",
        api["outbox"]
    );
    let held = (api["alerts"].as_array().unwrap().iter())
        .flat_map(|a| a["deliveries"].as_array().unwrap())
        .filter(|d| d["channel"] == "night")
        .map(|d| d["held_until"].as_str().unwrap_or("none").to_string())
        .collect::<std::collections::BTreeSet<_>>();
    assert_eq!(held.len(), 1, "one end for the quiet period: {held:?}");
    assert!(channels("updated").iter().all(|(c, _)| c != "mail"));

    // One alert by the id the email names: its events in order, with their deliveries.
    let alert_id = started.body["alert_id"].as_str().unwrap();
    let one: serde_json::Value = reqwest::get(cfg.url(&format!("/api/alerts/{alert_id}")))
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(one["rule"], "kazakhstan");
    assert_eq!(one["started_at"], started.body["started_at"]);
    let kinds: Vec<&str> = (one["events"].as_array().unwrap().iter())
        .map(|e| e["kind"].as_str().unwrap())
        .collect();
    assert_eq!(kinds[0], "started", "{kinds:?}");
    assert!(kinds.contains(&"updated"), "{kinds:?}");
    assert_eq!(one["open"], !kinds.contains(&"resolved"));
    assert!(one["peak_observed"].as_u64().unwrap() >= started.body["observed"].as_u64().unwrap());
    assert_eq!(one["events"][0]["deliveries"].as_array().unwrap().len(), 3);
    let missing = reqwest::get(cfg.url("/api/alerts/kazakhstan:0"))
        .await
        .unwrap();
    assert_eq!(missing.status(), 404);

    // The dashboard shows the same alert: on the overview (open, or among the week's
    // events), on the rule's page with its top articles, and shaded on its chart.
    let page = |path: &str| {
        let url = cfg.url(path);
        async move {
            let r = reqwest::get(url).await.unwrap();
            (r.status().as_u16(), r.text().await.unwrap())
        }
    };
    let (status, home) = page("/").await;
    assert_eq!(status, 200);
    assert!(
        home.contains("href=\"/rules/kazakhstan\">Kazakhstan</a>"),
        "{home}"
    );
    assert!(
        home.contains("<span class=\"tag started\">started</span>"),
        "{home}"
    );
    // Delivery: the quiet channel's rows are held, and the table says until when.
    let night = home
        .split("<tr><td>night</td>")
        .nth(1)
        .expect("the night channel's row");
    let night = night.split("</tr>").next().unwrap();
    assert!(night.contains("quiet until"), "{night}");
    let (status, rule_page) = page("/rules/kazakhstan?hours=72").await;
    assert_eq!(status, 200);
    // The page shows the alert's latest event's top articles, escaped as HTML.
    let escape = |t: &str| {
        (t.replace('&', "&amp;")
            .replace('<', "&lt;")
            .replace('>', "&gt;"))
        .replace('"', "&quot;")
        .replace('\'', "&#x27;")
        .replace('/', "&#x2f;")
    };
    let titles: Vec<String> = (one["events"].as_array().unwrap().iter())
        .flat_map(|e| e["top_articles"].as_array().unwrap())
        .map(|a| escape(a["title"].as_str().unwrap()))
        .collect();
    assert!(
        titles.iter().any(|t| rule_page.contains(t)),
        "none of {titles:?} in {rule_page}"
    );
    assert!(
        rule_page.contains(&format!("/api/alerts/{alert_id}")),
        "{rule_page}"
    );
    assert!(rule_page.contains("/rules/kazakhstan/chart.png?hours=72"));
    assert!(
        rule_page.contains("What would start an alert now"),
        "{rule_page}"
    );
    // The same gate in the API: per window, the stories that would start an alert now.
    let one_rule: serde_json::Value = reqwest::get(cfg.url("/api/rules/kazakhstan"))
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let windows = one_rule["rule"]["gate"]["windows"].as_array().unwrap();
    let minutes: Vec<u64> = windows
        .iter()
        .map(|w| w["minutes"].as_u64().unwrap())
        .collect();
    assert_eq!(minutes, [60, 15, 240]);
    assert!(
        windows.iter().all(|w| w["needed"].as_u64().unwrap() >= 3),
        "{one_rule}"
    );
    assert_eq!(page("/api/rules/nope").await.0, 404);
    assert_eq!(page("/rules/nope").await.0, 404);
    let chart = reqwest::get(cfg.url("/rules/kazakhstan/chart.png?hours=72"))
        .await
        .unwrap();
    assert_eq!(chart.headers()["content-type"], "image/png");
    let bytes = chart.bytes().await.unwrap();
    let mut reader = png::Decoder::new(&bytes[..]).read_info().unwrap();
    let mut rgb = vec![0; reader.output_buffer_size()];
    let info = reader.next_frame(&mut rgb).unwrap();
    assert_eq!((info.width, info.height), (960, 240));
    // The alert's span is shaded in the chart's light red.
    let shaded = rgb.chunks(3).filter(|p| *p == [255, 220, 220]).count();
    assert!(shaded > 1000, "{shaded} shaded pixels");
}
