//! End to end through a real broker: produce with a real client, run the real binary,
//! read the results back from its API, its metrics and the dead-letter topic.

mod common;

use std::time::Duration;

use chrono::Utc;
use common::*;

const RULES: &str = r#"
[[rule]]
id = "kazakhstan"
name = "Kazakhstan"
countries = ["KZ"]

[[rule]]
id = "football"
name = "Football"
keywords = ["football", "Ligue 1"]
"#;

fn feed(prefix: &str, n_kz: usize, n_foot: usize) -> Vec<Vec<u8>> {
    let now = Utc::now();
    let mut v = Vec::new();
    for i in 0..n_kz {
        v.push(article(
            &format!("{prefix}-kz-{i}"),
            &format!("Manifestations à Almaty, jour {i}"),
            &format!("Le président kazakh a parlé (dépêche {prefix} {i})."),
            now - chrono::Duration::minutes(20 - (i % 15) as i64),
        ));
    }
    for i in 0..n_foot {
        v.push(article(
            &format!("{prefix}-fb-{i}"),
            &format!("Ligue 1 : résultat du match {i}"),
            &format!("Le football français en fête ({prefix} {i})."),
            now - chrono::Duration::minutes(10),
        ));
    }
    v
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn articles_are_counted_bad_messages_dead_lettered_and_restarts_lose_nothing() {
    let brokers = broker();
    let topic = unique("articles");
    create_topic(&brokers, &topic, 2).await;
    let cfg = TestConfig::new(&brokers, &topic, "", RULES, "");
    // std::fs::write is enough to raise the message limit for this test.
    let toml = std::fs::read_to_string(cfg.path().join("vigie.toml"))
        .unwrap()
        .replace(
            "batch_timeout_ms = 50",
            "batch_timeout_ms = 50\nmax_message_bytes = 4000",
        );
    std::fs::write(cfg.path().join("vigie.toml"), toml).unwrap();

    // 20 Kazakhstan and 10 football articles, with five bad messages among them.
    let mut payloads = feed("a", 20, 10);
    payloads.insert(3, b"{\"title\": \"broken".to_vec());
    payloads.insert(7, vec![0xff, 0xfe, 0x00]);
    payloads.insert(11, Vec::new());
    payloads.insert(
        15,
        serde_json::to_vec(&serde_json::json!({"title": "x", "body": "y".repeat(5000)})).unwrap(),
    );
    payloads.insert(19, br#"{"title": 42, "body": "wrong type"}"#.to_vec());
    produce(&brokers, &topic, &payloads).await;

    let vigie = Vigie::start(&cfg, "first");
    wait_for(
        "30 articles processed",
        Duration::from_secs(60),
        async || {
            metric(&cfg, "vigie_articles_processed_total", "")
                .await
                .filter(|v| *v >= 30.0)
        },
    )
    .await;
    assert_eq!(
        metric(&cfg, "vigie_articles_processed_total", "").await,
        Some(30.0)
    );
    assert_eq!(
        metric(&cfg, "vigie_dead_lettered_total", "").await,
        Some(5.0)
    );
    assert_eq!(series_total(&cfg, "kazakhstan", "articles").await, Some(20));
    assert_eq!(series_total(&cfg, "football", "articles").await, Some(10));
    let ready = reqwest::get(cfg.url("/readyz")).await.unwrap();
    assert_eq!(ready.status(), 200, "{}", ready.text().await.unwrap());

    let dead = read_all(
        &brokers,
        &format!("{topic}.dlq"),
        5,
        Duration::from_secs(20),
    );
    let mut reasons: Vec<String> = dead
        .iter()
        .filter_map(|(_, h)| {
            h.iter()
                .find(|(k, _)| k == "vigie.reason")
                .map(|(_, v)| v.clone())
        })
        .collect();
    reasons.sort();
    assert_eq!(
        reasons,
        [
            "empty",
            "invalid_json",
            "invalid_utf8",
            "too_large",
            "wrong_type"
        ]
    );
    assert!(
        dead.iter().any(|(p, _)| p == &vec![0xff, 0xfe, 0x00]),
        "the payload is kept verbatim"
    );

    // A clean stop within 15 s.
    let (status, took) = vigie.terminate();
    assert!(status.success(), "exit status {status:?}");
    assert!(took < Duration::from_secs(15), "shutdown took {took:?}");

    // More articles while vigie is down, then a restart: only the new ones are processed.
    produce(&brokers, &topic, &feed("b", 10, 0)).await;
    let _vigie = Vigie::start(&cfg, "second");
    wait_for("10 more articles", Duration::from_secs(60), async || {
        metric(&cfg, "vigie_articles_processed_total", "")
            .await
            .filter(|v| *v >= 10.0)
    })
    .await;
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert_eq!(
        metric(&cfg, "vigie_articles_processed_total", "").await,
        Some(10.0),
        "nothing reprocessed"
    );
    assert_eq!(
        series_total(&cfg, "kazakhstan", "articles").await,
        Some(30),
        "nothing lost, nothing counted twice"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_9_mid_stream_then_restart_counts_every_article_once() {
    let brokers = broker();
    let topic = unique("kill9");
    create_topic(&brokers, &topic, 3).await;
    let cfg = TestConfig::new(&brokers, &topic, "", RULES, "");
    let total = 3000;
    let payloads = feed("k", total, 0);
    produce(&brokers, &topic, &payloads[..1000]).await;
    let vigie = Vigie::start(&cfg, "killed");
    wait_for("some progress", Duration::from_secs(60), async || {
        metric(&cfg, "vigie_articles_processed_total", "")
            .await
            .filter(|v| *v >= 1.0)
    })
    .await;
    // Keep producing while it consumes, then kill it without warning.
    produce(&brokers, &topic, &payloads[1000..2000]).await;
    vigie.kill9();
    produce(&brokers, &topic, &payloads[2000..]).await;
    let _vigie = Vigie::start(&cfg, "restarted");
    wait_for(
        "every article counted",
        Duration::from_secs(90),
        async || {
            series_total(&cfg, "kazakhstan", "articles")
                .await
                .filter(|n| *n >= total as u64)
        },
    )
    .await;
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert_eq!(
        series_total(&cfg, "kazakhstan", "articles").await,
        Some(total as u64)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn warmup_from_history_starts_with_warm_baselines_and_sends_no_stale_alerts() {
    let brokers = broker();
    let topic = unique("warmup");
    create_topic(&brokers, &topic, 3).await;
    // Six days of coverage whose Kazakhstan surge began twelve hours ago.
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_vigie"))
        .args(["generate", "--seed", "5", "--days", "6", "--rate", "10"])
        .args(["--surge-hours", "12", "--end", &Utc::now().to_rfc3339()])
        .output()
        .unwrap();
    assert!(out.status.success());
    let payloads: Vec<Vec<u8>> = String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(|l| l.as_bytes().to_vec())
        .collect();
    produce(&brokers, &topic, &payloads).await;
    let cfg = TestConfig::new(&brokers, &topic, "", RULES, "");
    let toml = std::fs::read_to_string(cfg.path().join("vigie.toml"))
        .unwrap()
        .replace(
            "batch_timeout_ms = 50",
            "batch_timeout_ms = 50\nwarmup_from = \"8d\"",
        );
    std::fs::write(cfg.path().join("vigie.toml"), toml).unwrap();

    let vigie = Vigie::start(&cfg, "warm");
    let n = payloads.len() as f64;
    wait_for(
        "the history processed",
        Duration::from_secs(90),
        async || {
            metric(&cfg, "vigie_articles_processed_total", "")
                .await
                .filter(|v| *v >= n)
        },
    )
    .await;
    assert!(vigie.log_text().contains("warm-up from history done"));
    // The surge's start was decided in the replay: recorded, shown by the API, not sent.
    let alerts = reqwest::get(cfg.url("/api/alerts"))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(alerts.contains("kazakhstan:1:started"), "{alerts}");
    let db = rusqlite::Connection::open(cfg.path().join("state/vigie.db")).unwrap();
    let queued: i64 = db
        .query_row(
            "SELECT count(*) FROM outbox WHERE event_id = 'kazakhstan:1:started'",
            [],
            |r| r.get(0),
        )
        .unwrap();
    assert_eq!(queued, 0, "a twelve-hour-old onset is not mailed");
    // Every article was counted once, and the consumer went on from the history's end.
    assert_eq!(
        metric(&cfg, "vigie_articles_processed_total", "").await,
        Some(n)
    );
    wait_ready(&cfg, "ready").await;
    let (status, _) = vigie.terminate();
    assert!(status.success());
    let again = Vigie::start(&cfg, "again");
    wait_ready(&cfg, "ready again").await;
    assert!(again.log_text().contains("warm-up skipped"));
    assert_eq!(
        metric(&cfg, "vigie_articles_processed_total", "")
            .await
            .unwrap_or(0.0),
        0.0,
        "nothing read twice"
    );
}
