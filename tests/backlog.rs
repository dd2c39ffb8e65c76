//! A backlog read from Kafka decides what a backtest of the same articles decides.
//!
//! The feed here is a labelled synthetic stream of three weeks on a topic of four
//! partitions, skewed the way a keyed topic can be: one partition holds most of the
//! articles, the other three a tenth each. Read from the earliest offset, the three thin
//! partitions run days ahead in event time (the consumer fetches partitions by bytes, not
//! by time), and once they are done the thick one moves the watermark days per batch. The
//! per-rule counts in the state file must still be exact, and the alerts those of
//! `vigie backtest`, which reads the same articles a minute of event time at a time.

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use common::*;
use rdkafka::config::ClientConfig;
use rdkafka::producer::{FutureProducer, FutureRecord};
use vigie::evaluation::{self, StreamOptions};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_skewed_backlog_counts_exactly_and_alerts_as_its_backtest() {
    let brokers = broker();
    let topic = unique("backlog");
    create_topic(&brokers, &topic, 4).await;
    let stream = evaluation::synthesize(&StreamOptions {
        seed: 2,
        days: 21,
        topics: 6,
        background_per_hour: 10.0,
        ..Default::default()
    });
    let rules: String = (stream.topics.iter())
        .map(|t| {
            format!(
                "[[rule]]\nid = \"{}\"\nname = \"topic {}\"\nkeywords = [\"{}\"]\n\n",
                t.id, t.id, t.keyword
            )
        })
        .collect();
    let cfg = TestConfig::new(&brokers, &topic, "", &rules, "");
    // Batches of 5,000 (a setting a user may choose) span days of this sparse feed, so the
    // watermark passes the engine's two days of memory within one batch.
    let toml = std::fs::read_to_string(cfg.path().join("vigie.toml")).unwrap();
    let toml = toml.replace(
        "batch_timeout_ms = 50",
        "batch_timeout_ms = 50\nbatch_size = 5000",
    );
    std::fs::write(cfg.path().join("vigie.toml"), toml).unwrap();
    let lines: Vec<String> = (stream.articles.iter())
        .map(|a| serde_json::to_string(a).unwrap())
        .collect();
    let input = cfg.path().join("stream.jsonl");
    std::fs::write(&input, lines.join("\n")).unwrap();

    // The reference: a backtest of the same articles.
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_vigie"))
        .args(["backtest", "--config"])
        .arg(cfg.path())
        .arg("--input")
        .arg(&input)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let started = |kinds_and_ids: Vec<(String, String)>| -> BTreeSet<String> {
        (kinds_and_ids.into_iter())
            .filter(|(kind, _)| kind == "started")
            .map(|(_, id)| id)
            .collect()
    };
    let backtest = started(
        String::from_utf8_lossy(&out.stdout)
            .lines()
            .map(|l| {
                let v: serde_json::Value = serde_json::from_str(l).unwrap();
                (
                    v["kind"].as_str().unwrap().to_string(),
                    v["alert_id"].as_str().unwrap().to_string(),
                )
            })
            .collect(),
    );
    assert!(
        backtest.len() >= 5,
        "too few alerts to compare: {backtest:?}"
    );

    // The exact counts: every (rule, bucket) of the matched articles.
    let prepared = evaluation::prepare(&stream);
    let mut expected: BTreeMap<(String, i64), u32> = BTreeMap::new();
    for (a, m) in stream.articles.iter().zip(&prepared.matches) {
        let b = a.published_at.timestamp().div_euclid(300) * 300;
        for &ri in &m.rule_indices {
            *expected
                .entry((prepared.matcher.rules[ri].id.clone(), b))
                .or_default() += 1;
        }
    }

    // Seven articles in ten to partition 0, a tenth to each other one, each partition in
    // event-time order.
    let producer: FutureProducer = ClientConfig::new()
        .set("bootstrap.servers", &brokers)
        .set("linger.ms", "20")
        .create()
        .unwrap();
    for chunk in lines.chunks(2000) {
        let sends = chunk.iter().map(|line| {
            let h = xxhash_rust::xxh3::xxh3_64(line.as_bytes()) % 10;
            let partition = if h < 7 { 0 } else { h as i32 - 6 };
            producer.send(
                FutureRecord::<(), str>::to(&topic)
                    .partition(partition)
                    .payload(line.as_str()),
                Duration::from_secs(30),
            )
        });
        for r in futures::future::join_all(sends).await {
            r.map_err(|(e, _)| e).expect("produce");
        }
    }

    let vigie = Vigie::start(&cfg, "backlog");
    let n = lines.len() as f64;
    wait_for("the whole backlog", Duration::from_secs(240), async || {
        metric(&cfg, "vigie_articles_processed_total", "")
            .await
            .filter(|v| *v >= n)
    })
    .await;
    let (status, _) = vigie.terminate();
    assert!(status.success());

    let store = vigie::state::Store::open(&cfg.path().join("state/vigie.db")).unwrap();
    let stored: BTreeMap<(String, i64), u32> = (store.buckets_since(i64::MIN).unwrap())
        .into_iter()
        .map(|(rule, b, bucket)| ((rule, b), bucket.articles))
        .collect();
    let wrong: Vec<_> = (expected.iter())
        .filter(|(k, v)| stored.get(*k) != Some(*v))
        .map(|(k, v)| (k.clone(), *v, stored.get(k).copied()))
        .collect();
    assert!(
        wrong.is_empty() && stored.len() == expected.len(),
        "{} of {} (rule, bucket) counts wrong, e.g. {:?}",
        wrong.len(),
        expected.len(),
        &wrong[..wrong.len().min(5)]
    );
    let run = started(
        (store.alerts_at_since(i64::MIN, 100_000).unwrap())
            .into_iter()
            .map(|e| (e.kind.as_str().to_string(), e.alert_id))
            .collect(),
    );
    assert_eq!(
        run, backtest,
        "alerts started by the run and by the backtest"
    );
}
