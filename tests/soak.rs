//! A bounded soak: sustained publishing at a fixed rate for a few minutes while the rules
//! are reloaded and a webhook receiver is slower than its timeout. Memory must stay flat,
//! lag bounded and counts exact.
//!
//! `VIGIE_SOAK_SECS` sets the publishing time (default 120).

mod common;
#[path = "support/receiver.rs"]
mod receiver;

use std::time::{Duration, Instant};

use chrono::Utc;
use common::*;

const RULES: &str = r#"
[[rule]]
id = "kazakhstan"
name = "Kazakhstan"
keywords = ["Kazakhstan"]
notify = ["hook"]
"#;

/// Resident memory of a process, KiB.
fn rss_kib(pid: u32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .unwrap_or_default()
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next()?.parse().ok())
        .unwrap_or(0)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sustained_load_with_reloads_and_a_slow_receiver_keeps_memory_flat_and_counts_exact() {
    let secs: u64 = std::env::var("VIGIE_SOAK_SECS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(120);
    let brokers = broker();
    let topic = unique("soak");
    create_topic(&brokers, &topic, 4).await;
    // Every webhook request takes 3 s against a 1 s timeout for the whole soak.
    let hook = receiver::start_with("s3cret", 0, 200, (usize::MAX, Duration::from_secs(3))).await;
    let extra = format!(
        "[detector]\nwarmup_hours = 0\nmin_count = 3\n\n[channels.hook]\ntype = \"webhook\"\nurl = \"{}\"\nsecret = \"s3cret\"\ntimeout_secs = 1\n",
        hook.url()
    );
    let cfg = TestConfig::new(&brokers, &topic, &extra, RULES, "");
    let vigie = Vigie::start(&cfg, "soak");
    let pid = vigie.child.id();
    wait_ready(&cfg, "ready").await;

    // 50 articles a second, one in five about Kazakhstan, in one-second batches.
    let rate = 50;
    let started = Instant::now();
    let mut sent = 0usize;
    let mut kz = 0u64;
    let mut rss = Vec::new();
    let mut max_lag = 0.0f64;
    let mut second = 0u64;
    while started.elapsed() < Duration::from_secs(secs) {
        let now = Utc::now();
        let batch: Vec<Vec<u8>> = (0..rate)
            .map(|i| {
                let n = sent + i;
                let about_kz = n % 5 == 0;
                if about_kz {
                    kz += 1;
                }
                article(
                    &format!("s{n}"),
                    &if about_kz {
                        format!("Kazakhstan: dispatch {n}")
                    } else {
                        format!("Weather report {n}")
                    },
                    &distinct_body("soak", n),
                    now,
                )
            })
            .collect();
        produce(&brokers, &topic, &batch).await;
        sent += batch.len();
        second += 1;
        if second % 15 == 0 {
            // A reload: add or remove a second rule.
            let other = if second % 30 == 0 {
                "\n[[rule]]\nid = \"weather\"\nname = \"Weather\"\nkeywords = [\"weather\"]\n"
            } else {
                ""
            };
            std::fs::write(
                cfg.path().join("rules/rules.toml"),
                format!("{RULES}{other}"),
            )
            .unwrap();
        }
        if second % 5 == 0 {
            rss.push(rss_kib(pid));
            if let Some(lag) = metric(&cfg, "vigie_consumer_lag", "").await {
                max_lag = max_lag.max(lag);
            }
        }
        let spent = started.elapsed();
        let target = Duration::from_secs(second);
        if spent < target {
            tokio::time::sleep(target - spent).await;
        }
    }
    wait_for(
        "everything processed",
        Duration::from_secs(60),
        async || {
            metric(&cfg, "vigie_articles_processed_total", "")
                .await
                .filter(|v| *v >= sent as f64)
        },
    )
    .await;
    let caught_up = started.elapsed().as_secs_f64() - secs as f64;
    assert_eq!(
        metric(&cfg, "vigie_articles_processed_total", "").await,
        Some(sent as f64)
    );
    assert_eq!(
        series_total(&cfg, "kazakhstan", "articles").await,
        Some(kz),
        "counts exact across reloads"
    );
    assert!(
        metric(&cfg, "vigie_rule_reload_failures_total", "")
            .await
            .unwrap_or(0.0)
            == 0.0
    );
    // Memory: the last third of the run no higher than 1.25× the first third's peak.
    let third = rss.len() / 3;
    let early = *rss[..third.max(1)].iter().max().unwrap();
    let late = *rss[rss.len() - third.max(1)..].iter().max().unwrap();
    eprintln!(
        "soak: {sent} articles in {secs} s; caught up {caught_up:.1} s after; max lag {max_lag}; rss KiB {rss:?}; webhook attempts {}",
        hook.attempts.load(std::sync::atomic::Ordering::SeqCst)
    );
    assert!(
        late as f64 <= early as f64 * 1.25,
        "memory grew: {early} KiB early, {late} KiB late ({rss:?})"
    );
    assert!(
        caught_up < 10.0,
        "caught up {caught_up:.1} s after publishing stopped"
    );
    assert!(max_lag <= (rate * 10) as f64, "lag reached {max_lag}");
    let (status, _) = vigie.terminate();
    assert!(status.success());
}
