//! A bounded soak: sustained publishing at a fixed rate for a few minutes while the rules
//! are reloaded, one webhook receiver is slower than its timeout and another flaps between
//! down (503) and up every 20 s. Memory must stay flat, lag bounded, counts exact, and the
//! flapping receiver must end up with every alert event.
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
notify = ["hook", "flappy"]
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
    // Down for 10 s, up for 10 s, over and over.
    let flappy = receiver::flapping("s3cret", Duration::from_secs(20)).await;
    let extra = format!(
        "[detector]\nwarmup_hours = 0\nmin_count = 3\n\n[alerts]\nretry_max_secs = 5\n\n[channels.hook]\ntype = \"webhook\"\nurl = \"{}\"\nsecret = \"s3cret\"\ntimeout_secs = 1\n\n[channels.flappy]\ntype = \"webhook\"\nurl = \"{}\"\nsecret = \"s3cret\"\n",
        hook.url(),
        flappy.url()
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
                "\n[[rule]]\nid = \"weather\"\nname = \"Weather\"\nkeywords = [\"weather\"]\nnotify = [\"flappy\"]\n"
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
    // The flapping receiver ends up with every alert event vigie decided, each once.
    let flapped = || -> Vec<String> {
        flappy
            .accepted
            .lock()
            .unwrap()
            .iter()
            .map(|r| r.idempotency_key.clone())
            .collect()
    };
    let events = metric(&cfg, "vigie_alert_events_total", "")
        .await
        .unwrap_or(0.0) as usize;
    assert!(events > 0, "the soak raised no alert event");
    let deadline = Instant::now() + Duration::from_secs(60);
    while flapped().len() < events {
        assert!(
            Instant::now() < deadline,
            "the flapping receiver got {} of {events} events",
            flapped().len()
        );
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    let got = flapped();
    let unique: std::collections::BTreeSet<&String> = got.iter().collect();
    assert_eq!(
        unique.len(),
        events,
        "one accepted delivery per event: {got:?}"
    );
    let attempts = flappy.attempts.load(std::sync::atomic::Ordering::SeqCst);
    eprintln!("flapping receiver: {attempts} attempts, {events} events, each accepted once");
    assert!(
        attempts > events,
        "the receiver was down at least once when vigie called"
    );
    let (status, _) = vigie.terminate();
    assert!(status.success());
}
