//! Hostile and malformed input through a real broker: every bad message goes to the
//! dead-letter topic with its reason, the valid messages around them are counted, and the
//! service stays up.

mod common;

use std::time::Duration;

use chrono::Utc;
use common::*;

const RULES: &str = r#"
[[rule]]
id = "kazakhstan"
name = "Kazakhstan"
keywords = ["Kazakhstan", "Almaty"]
"#;

/// (payload, reason code expected on the dead letter)
fn corpus() -> Vec<(Vec<u8>, &'static str)> {
    let ok = |title: &str, body: &str| -> Vec<u8> {
        serde_json::to_vec(&serde_json::json!({"title": title, "body": body})).unwrap()
    };
    let deep = "[".repeat(100_000) + &"]".repeat(100_000);
    let deep_object = format!(
        "{{\"title\": \"x\", \"body\": {}\"y\"{}}}",
        "{\"a\":".repeat(5_000),
        "}".repeat(5_000)
    );
    vec![
        (Vec::new(), "empty"),
        (b"{\"title\": \"Almaty".to_vec(), "invalid_json"),
        (vec![0xff, 0xfe, 0xfd, b'{'], "invalid_utf8"),
        (
            [b"{\"title\": \"Kazakhstan \xc3\x28\"}".as_slice()].concat(),
            "invalid_utf8",
        ),
        (b"[1, 2, 3]".to_vec(), "not_an_object"),
        (b"\"Kazakhstan\"".to_vec(), "not_an_object"),
        (b"null".to_vec(), "not_an_object"),
        (br#"{"title": 42, "body": "x"}"#.to_vec(), "wrong_type"),
        (
            br#"{"title": "Almaty", "published_at": {"$date": 1}}"#.to_vec(),
            "wrong_type",
        ),
        (br#"{"title": "", "body": "   "}"#.to_vec(), "no_text"),
        (
            br#"{"title": "Almaty", "published_at": "the day before yesterday"}"#.to_vec(),
            "bad_date",
        ),
        (
            br#"{"title": "Almaty", "published_at": "99999-99-99T99:99:99Z"}"#.to_vec(),
            "bad_date",
        ),
        (
            br#"{"title": "Almaty", "published_at": 1e300}"#.to_vec(),
            "bad_date",
        ),
        (deep.into_bytes(), "invalid_json"),
        (deep_object.into_bytes(), "invalid_json"),
        // 10 MB of text: over the 1 MiB limit.
        (ok("Kazakhstan", &"Almaty ".repeat(1_500_000)), "too_large"),
        // A huge array inside the limit but of the wrong type.
        (
            serde_json::to_vec(&serde_json::json!({
                "title": "Almaty", "entities": (0..100_000).collect::<Vec<u32>>()
            }))
            .unwrap(),
            "wrong_type",
        ),
    ]
}

/// Valid but nasty: processed, not dead-lettered.
fn nasty_but_valid() -> Vec<Vec<u8>> {
    let now = Utc::now();
    vec![
        // The watched keyword repeated 90,000 times (a "billion laughs" of matches).
        article(
            "laughs",
            "Kazakhstan Kazakhstan Kazakhstan",
            &"Kazakhstan Almaty ".repeat(50_000),
            now,
        ),
        // Control characters, bidi overrides, NULs and a BOM in the text.
        article(
            "controls",
            "Almaty\u{0}\u{7}\u{202e}\u{feff} news",
            "Kazakhstan\u{1b}[31m red \u{0}\r\n\u{2028}",
            now,
        ),
        // A date far in the future is clamped to the clock, not refused.
        article(
            "future",
            "Kazakhstan from the future",
            "Almaty",
            now + chrono::Duration::days(3650),
        ),
        // 100,000 upstream entity ids, as strings, inside the size limit.
        serde_json::to_vec(&serde_json::json!({
            "title": "Almaty", "body": "Kazakhstan",
            "entities": (0..100_000).map(|i| format!("e{i}")).collect::<Vec<_>>()
        }))
        .unwrap(),
    ]
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hostile_messages_are_dead_lettered_and_the_stream_goes_on() {
    let brokers = broker();
    let topic = unique("hostile");
    create_topic(&brokers, &topic, 1).await;
    let cfg = TestConfig::new(&brokers, &topic, "", RULES, "");
    let bad = corpus();
    let nasty = nasty_but_valid();
    // Valid articles between every hostile one.
    let now = Utc::now();
    let mut payloads = Vec::new();
    let mut valid = 0;
    for (i, (p, _)) in bad.iter().enumerate() {
        payloads.push(article(
            &format!("v{i}"),
            &format!("Almaty: day {i}"),
            &format!("Kazakhstan report number {i}"),
            now - chrono::Duration::minutes(5),
        ));
        valid += 1;
        payloads.push(p.clone());
    }
    payloads.extend(nasty.iter().cloned());
    valid += nasty.len();
    produce(&brokers, &topic, &payloads).await;

    let vigie = Vigie::start(&cfg, "hostile");
    let total = (valid + bad.len()) as f64;
    wait_for(
        "every message handled",
        Duration::from_secs(90),
        async || {
            let done = metric(&cfg, "vigie_articles_processed_total", "")
                .await
                .unwrap_or(0.0)
                + metric(&cfg, "vigie_dead_lettered_total", "")
                    .await
                    .unwrap_or(0.0);
            (done >= total).then_some(())
        },
    )
    .await;
    assert_eq!(
        metric(&cfg, "vigie_articles_processed_total", "").await,
        Some(valid as f64)
    );
    let letters = read_all(
        &brokers,
        &format!("{topic}.dlq"),
        bad.len(),
        Duration::from_secs(30),
    );
    assert_eq!(letters.len(), bad.len());
    for ((payload, reason), (got, headers)) in bad.iter().zip(&letters) {
        let header = |k: &str| {
            headers
                .iter()
                .find(|(h, _)| h == k)
                .map(|(_, v)| v.as_str())
        };
        assert_eq!(
            header("vigie.reason"),
            Some(*reason),
            "{:?}",
            header("vigie.error")
        );
        assert_eq!(got.len(), payload.len(), "the payload is kept whole");
    }
    // Still alive, ready and counting: the valid articles are all in the series.
    assert!(reqwest::get(cfg.url("/readyz"))
        .await
        .unwrap()
        .status()
        .is_success());
    assert_eq!(
        series_total(&cfg, "kazakhstan", "articles").await,
        Some(valid as u64)
    );
    let (status, _) = vigie.terminate();
    assert!(status.success());
}
