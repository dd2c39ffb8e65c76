//! The outbox against real receivers: an HTTP server that fails on purpose and a real SMTP
//! server that is down, then up.

#[path = "support/receiver.rs"]
mod receiver;
#[path = "support/smtp.rs"]
mod smtp;

use std::collections::HashMap;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use chrono::Utc;
use tokio::sync::Notify;
use vigie::detect::{DetectorKind, EventKind};
use vigie::engine::{AlertEvent, ArticleRef, Changes};
use vigie::sink::outbox::OutboxWorker;
use vigie::sink::retry::RetryPolicy;
use vigie::sink::Notifier;
use vigie::state::Store;

fn event(rule: &str) -> AlertEvent {
    let now = Utc::now();
    AlertEvent {
        event_id: format!("{rule}:1:started"),
        alert_id: format!("{rule}:1"),
        rule: rule.into(),
        rule_name: "Kazakhstan\r\nBcc: evil@example.org".into(),
        kind: EventKind::Started,
        at: now,
        started_at: now,
        window_start: now - chrono::Duration::hours(1),
        window_end: now,
        detector: DetectorKind::Baseline,
        observed: 30,
        expected: 2.5,
        ratio: 8.9,
        p_value: 1e-9,
        feed_factor: 1.0,
        articles: 41,
        sources: 12,
        top_articles: vec![ArticleRef {
            id: "a1".into(),
            title: "Manifestations à Almaty".into(),
            url: Some("https://news.example/a1".into()),
            source: Some("news.example".into()),
            published_at: now,
            entities: vec!["tokayev".into()],
            countries: vec!["KZ".into()],
            terms: vec![],
            new_story: true,
        }],
        top_entities: vec![("tokayev".into(), 7)],
        top_countries: vec![("KZ".into(), 30)],
        top_keywords: vec![],
        notify: vec![],
        chart: vigie::engine::ChartSeries {
            start: (now - chrono::Duration::hours(48)).timestamp(),
            bucket_secs: 300,
            stories: (0..576)
                .map(|i| if i > 560 { 12 } else { (i % 3) as u32 })
                .collect(),
            expected: vec![1.0; 576],
        },
        templates: Default::default(),
        unannounced: false,
        link: None,
    }
}

/// A state file holding one alert event with an outbox row per channel.
fn store_with(dir: &std::path::Path, e: &AlertEvent, channels: &[&str]) -> std::path::PathBuf {
    store_with_all(dir, std::slice::from_ref(e), channels)
}

/// A state file holding alert events with an outbox row per event and channel.
fn store_with_all(
    dir: &std::path::Path,
    events: &[AlertEvent],
    channels: &[&str],
) -> std::path::PathBuf {
    let path = dir.join("state.db");
    let mut s = Store::open(&path).unwrap();
    let changes = Changes {
        events: events.to_vec(),
        watermark: events[0].at.timestamp(),
        ..Default::default()
    };
    let rows: Vec<(String, String)> = events
        .iter()
        .flat_map(|e| channels.iter().map(|c| (e.event_id.clone(), c.to_string())))
        .collect();
    s.commit(&changes, &[], &rows).unwrap();
    path
}

fn worker(path: &std::path::Path, notifiers: HashMap<String, Arc<dyn Notifier>>) -> OutboxWorker {
    OutboxWorker {
        store: Arc::new(Mutex::new(Store::open(path).unwrap())),
        notifiers,
        policy: RetryPolicy {
            base: Duration::from_millis(50),
            max: Duration::from_millis(200),
            give_up_after: Duration::from_secs(60),
        },
        wake: Arc::new(Notify::new()),
        group_wait: HashMap::new(),
        quiet: HashMap::new(),
        floors: HashMap::new(),
        digests: HashMap::new(),
        dashboard_url: None,
    }
}

async fn drain_until(
    w: &OutboxWorker,
    path: &std::path::Path,
    done: impl Fn(&vigie::state::OutboxStats) -> bool,
) -> vigie::state::OutboxStats {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        w.drain_once().await;
        let stats = Store::open(path).unwrap().outbox_stats().unwrap();
        if done(&stats) {
            return stats;
        }
        assert!(
            Instant::now() < deadline,
            "outbox did not settle: {stats:?}"
        );
        tokio::time::sleep(Duration::from_millis(30)).await;
    }
}

fn webhook(url: String) -> Arc<dyn Notifier> {
    webhook_with_timeout(url, Duration::from_secs(5))
}

fn webhook_with_timeout(url: String, timeout: Duration) -> Arc<dyn Notifier> {
    Arc::new(
        vigie::sink::webhook::WebhookNotifier::new(
            url,
            Some(vigie::config::Secret::new("s3cret")),
            Default::default(),
            None,
            timeout,
            false,
        )
        .unwrap(),
    )
}

/// With `dashboard_url`, each event goes out with a link to its rule's page there (in the
/// JSON body; the email and chat bodies print it); never stored.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_event_links_to_its_rule_on_the_dashboard() {
    let hook = receiver::start("s3cret", 0, 200).await;
    let d = tempfile::tempdir().unwrap();
    let path = store_with(d.path(), &event("kz"), &["hook"]);
    let mut w = worker(
        &path,
        HashMap::from([("hook".to_string(), webhook(hook.url()))]),
    );
    w.dashboard_url = Some("https://vigie.example.org/".into());
    drain_until(&w, &path, |s| s.sent == 1).await;
    let got = hook.accepted.lock().unwrap().clone();
    assert_eq!(got[0].body["link"], "https://vigie.example.org/rules/kz");
    let stored = Store::open(&path).unwrap().alert_events_of("kz:1").unwrap();
    assert_eq!(stored[0].link, None, "the link is not part of the event");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_receiver_answering_503_three_times_gets_exactly_one_accepted_delivery() {
    let hook = receiver::start("s3cret", 3, 503).await;
    let d = tempfile::tempdir().unwrap();
    let e = event("kz");
    let path = store_with(d.path(), &e, &["hook"]);
    let w = worker(
        &path,
        HashMap::from([("hook".to_string(), webhook(hook.url()))]),
    );
    let stats = drain_until(&w, &path, |s| s.pending == 0).await;
    assert_eq!((stats.sent, stats.dead), (1, 0));
    assert_eq!(hook.attempts.load(Ordering::SeqCst), 4);
    let accepted = hook.accepted.lock().unwrap().clone();
    assert_eq!(accepted.len(), 1);
    assert!(accepted[0].signature_ok);
    assert_eq!(accepted[0].idempotency_key, "kz:1:started");
    // Draining again sends nothing more.
    w.drain_once().await;
    assert_eq!(hook.attempts.load(Ordering::SeqCst), 4);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_receiver_slower_than_the_timeout_is_retried_under_the_same_idempotency_key() {
    // Two requests take 3 s against a 1 s timeout; the third is answered at once.
    let hook = receiver::start_with("s3cret", 0, 200, (2, Duration::from_secs(3))).await;
    let d = tempfile::tempdir().unwrap();
    let e = event("kz");
    let path = store_with(d.path(), &e, &["hook"]);
    let slow = webhook_with_timeout(hook.url(), Duration::from_secs(1));
    let w = worker(&path, HashMap::from([("hook".to_string(), slow)]));
    let started = Instant::now();
    let stats = drain_until(&w, &path, |s| s.pending == 0).await;
    assert_eq!((stats.sent, stats.dead), (1, 0));
    assert_eq!(hook.attempts.load(Ordering::SeqCst), 3);
    // Each timed-out attempt was given up after about the timeout, not the receiver's 3 s.
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "{:?}",
        started.elapsed()
    );
    // The abandoned requests were cancelled with their connections (axum drops the handler);
    // a receiver that finished them anyway would see the same Idempotency-Key again.
    tokio::time::sleep(Duration::from_secs(3)).await;
    let accepted = hook.accepted.lock().unwrap().clone();
    assert_eq!(accepted.len(), 1);
    assert!(accepted[0].signature_ok);
    assert_eq!(accepted[0].idempotency_key, "kz:1:started");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_4xx_is_not_retried_and_one_channel_does_not_affect_another() {
    let bad = receiver::start("s3cret", 100, 400).await;
    let good = receiver::start("s3cret", 0, 200).await;
    let d = tempfile::tempdir().unwrap();
    let path = store_with(d.path(), &event("kz"), &["bad", "good"]);
    let w = worker(
        &path,
        HashMap::from([
            ("bad".to_string(), webhook(bad.url())),
            ("good".to_string(), webhook(good.url())),
        ]),
    );
    let stats = drain_until(&w, &path, |s| s.pending == 0).await;
    assert_eq!((stats.sent, stats.dead), (1, 1));
    assert_eq!(
        bad.attempts.load(Ordering::SeqCst),
        1,
        "no retry after a 400"
    );
    assert_eq!(good.accepted.lock().unwrap().len(), 1);
    let dead = Store::open(&path).unwrap().dead_deliveries(10).unwrap();
    assert_eq!(dead[0].1, "bad");
    assert!(dead[0].2.contains("400"));
}

/// A free port on loopback, for an SMTP server started later or not at all.
fn free_port() -> u16 {
    let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    l.local_addr().unwrap().port()
}

/// An email channel to desk@example.org through the SMTP server on `port`.
fn email_to_desk(port: u16, timeout_secs: u64) -> Arc<dyn Notifier> {
    let smtp_cfg: vigie::config::SmtpConfig = toml::from_str(&format!("host = \"127.0.0.1\"\nport = {port}\ntls = \"none\"\nfrom = \"vigie <vigie@example.org>\"\ntimeout_secs = {timeout_secs}\n")).unwrap();
    Arc::new(
        vigie::sink::email::EmailNotifier::new(
            &smtp_cfg,
            None,
            &["desk@example.org".to_string()],
            Default::default(),
        )
        .unwrap(),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn email_waits_for_a_down_smtp_server_across_a_restart() {
    let d = tempfile::tempdir().unwrap();
    let port = free_port();
    let mail = || HashMap::from([("mail".to_string(), email_to_desk(port, 2))]);
    let path = store_with(d.path(), &event("kz"), &["mail"]);

    // SMTP server down: the delivery is kept for a retry.
    let first = worker(&path, mail());
    first.drain_once().await;
    let stats = Store::open(&path).unwrap().outbox_stats().unwrap();
    assert_eq!((stats.pending, stats.sent), (1, 0));
    drop(first); // vigie stops

    // The server comes back; a new worker (vigie restarted) delivers it, once.
    let server = smtp::Smtp::start(port, &d.path().join("maildir"));
    let second = worker(&path, mail());
    let stats = drain_until(&second, &path, |s| s.sent == 1).await;
    assert_eq!(stats.pending, 0);
    let messages = server.messages();
    assert_eq!(messages.len(), 1);
    let m = &messages[0];
    assert!(m.contains("Subject: [vigie]"), "{m}");
    let headers = m.split("\n\n").next().unwrap();
    assert!(
        !headers.lines().any(|l| l.starts_with("Bcc:")),
        "no header injected from a rule name:\n{headers}"
    );
    assert!(m.contains("Content-Type: text/plain") && m.contains("Content-Type: text/html"));
    assert!(
        m.contains("Content-Type: image/png") && m.contains("cid:chart"),
        "the chart is inline"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn events_within_group_wait_go_out_as_one_notification() {
    let hook = receiver::start("s3cret", 0, 200).await;
    let d = tempfile::tempdir().unwrap();
    let path = store_with_all(d.path(), &[event("kz"), event("tokayev")], &["hook"]);
    let mut w = worker(
        &path,
        HashMap::from([("hook".to_string(), webhook(hook.url()))]),
    );
    w.group_wait = HashMap::from([("hook".to_string(), Duration::from_millis(800))]);
    assert_eq!(w.drain_once().await, 0, "waits for group_wait");
    assert_eq!(hook.attempts.load(Ordering::SeqCst), 0);
    tokio::time::sleep(Duration::from_millis(900)).await;
    let stats = drain_until(&w, &path, |s| s.pending == 0).await;
    assert_eq!(stats.sent, 2);
    let accepted = hook.accepted.lock().unwrap().clone();
    assert_eq!(accepted.len(), 1, "one notification");
    assert!(accepted[0].signature_ok);
    assert_eq!(accepted[0].body["grouped"], true);
    let rules: Vec<&str> = accepted[0].body["events"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["rule"].as_str().unwrap())
        .collect();
    assert_eq!(rules.len(), 2);
    assert!(rules.contains(&"kz") && rules.contains(&"tokayev"));
}

/// The running worker (not only `drain_once`) holds a channel's rows for its
/// `group_wait` and then sends them as one notification, while another channel's rows go
/// at once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_running_worker_sends_a_group_once_its_wait_has_passed() {
    let grouped = receiver::start("s3cret", 0, 200).await;
    let single = receiver::start("s3cret", 0, 200).await;
    let d = tempfile::tempdir().unwrap();
    let path = store_with_all(
        d.path(),
        &[event("kz"), event("tokayev")],
        &["grouped", "single"],
    );
    let mut w = worker(
        &path,
        HashMap::from([
            ("grouped".to_string(), webhook(grouped.url())),
            ("single".to_string(), webhook(single.url())),
        ]),
    );
    w.group_wait = HashMap::from([("grouped".to_string(), Duration::from_secs(5))]);
    let (trigger, shutdown) = vigie::shutdown::channel();
    let started = Instant::now();
    let task = tokio::spawn(w.run(shutdown));
    accepted_within_3s(&single, 2, "the ungrouped channel waited").await;
    assert_eq!(grouped.attempts.load(Ordering::SeqCst), 0, "sent early");
    accepted_within(
        &grouped,
        1,
        Duration::from_secs(10),
        "the group was never sent",
    )
    .await;
    assert!(started.elapsed() >= Duration::from_millis(4500));
    let accepted = grouped.accepted.lock().unwrap().clone();
    assert_eq!(accepted.len(), 1, "one notification");
    assert_eq!(accepted[0].body["events"].as_array().unwrap().len(), 2);
    trigger.fire();
    task.await.unwrap();
    let stats = Store::open(&path).unwrap().outbox_stats().unwrap();
    assert_eq!((stats.sent, stats.pending), (4, 0), "{stats:?}");
}

/// A worker sending to a `hung` receiver (answers after `timeout`, if ever) and a `good` one.
fn hung_and_good(
    path: &std::path::Path,
    hung: &receiver::Receiver,
    good: &receiver::Receiver,
    timeout: Duration,
) -> OutboxWorker {
    worker(
        path,
        HashMap::from([
            (
                "hung".to_string(),
                webhook_with_timeout(hung.url(), timeout),
            ),
            ("good".to_string(), webhook(good.url())),
        ]),
    )
}

/// Waits until `hook` has accepted `n` deliveries; fails with `what` after 3 s.
async fn accepted_within_3s(hook: &receiver::Receiver, n: usize, what: &str) {
    accepted_within(hook, n, Duration::from_secs(3), what).await
}

/// Waits until `hook` has accepted `n` deliveries; fails with `what` after `limit`.
async fn accepted_within(hook: &receiver::Receiver, n: usize, limit: Duration, what: &str) {
    let done = || hook.accepted.lock().unwrap().len() >= n;
    assert!(wait_for(limit, done).await, "{what}");
}

/// Polls `done` every 20 ms until it holds (true) or `limit` has passed (false).
async fn wait_for(limit: Duration, done: impl Fn() -> bool) -> bool {
    let deadline = Instant::now() + limit;
    while !done() {
        if Instant::now() >= deadline {
            return false;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    true
}

/// Waits until the outbox's counts satisfy `done` (a running worker records a delivery
/// just after the receiver has answered it); fails after `limit`.
async fn outbox_within(
    path: &std::path::Path,
    limit: Duration,
    done: impl Fn(&vigie::state::OutboxStats) -> bool,
) -> vigie::state::OutboxStats {
    let stats = || Store::open(path).unwrap().outbox_stats().unwrap();
    wait_for(limit, || done(&stats())).await;
    stats()
}

/// Waits up to 3 s for `n` requests to have reached `hook`, answered or not.
async fn attempted_within_3s(hook: &receiver::Receiver, n: usize) {
    let done = || hook.attempts.load(Ordering::SeqCst) >= n;
    wait_for(Duration::from_secs(3), done).await;
}

/// A receiver that takes its whole timeout holds up only its own channel: while its first
/// request hangs, a later alert to another channel goes out at once (the worker used to
/// wait for every send of a round before reading the outbox again).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hung_receiver_does_not_hold_up_another_channel() {
    let hung = receiver::start_with("s3cret", 0, 200, (1, Duration::from_secs(30))).await;
    let good = receiver::start("s3cret", 0, 200).await;
    let d = tempfile::tempdir().unwrap();
    let path = store_with(d.path(), &event("kz"), &["hung", "good"]);
    let w = hung_and_good(&path, &hung, &good, Duration::from_secs(8));
    let wake = w.wake.clone();
    let (trigger, shutdown) = vigie::shutdown::channel();
    let task = tokio::spawn(w.run(shutdown));
    accepted_within_3s(&good, 1, "not delivered within 3 s").await;
    // The hung receiver has the first alert's request and sits on it.
    attempted_within_3s(&hung, 1).await;
    assert_eq!(hung.attempts.load(Ordering::SeqCst), 1);
    // A second alert, to the good channel only, while that request still hangs.
    let mut e = event("tokayev");
    e.event_id = "tokayev:1:started".into();
    let changes = Changes {
        events: vec![e.clone()],
        watermark: e.at.timestamp(),
        ..Default::default()
    };
    Store::open(&path)
        .unwrap()
        .commit(&changes, &[], &[(e.event_id.clone(), "good".to_string())])
        .unwrap();
    let asked = Instant::now();
    wake.notify_one();
    accepted_within_3s(&good, 2, "not delivered within 3 s").await;
    assert!(asked.elapsed() < Duration::from_secs(3));
    // The worker records the send just after the receiver's answer (on a loaded machine
    // the test once read the outbox in between: sent 1, pending 2).
    let stats = outbox_within(&path, Duration::from_secs(3), |s| s.sent >= 2).await;
    assert_eq!((stats.sent, stats.pending), (2, 1), "{stats:?}");
    // The row in flight was not sent a second time meanwhile.
    assert_eq!(hung.attempts.load(Ordering::SeqCst), 1);
    trigger.fire();
    task.await.unwrap();
}

/// A receiver that answers nothing gets at most `IN_FLIGHT_PER_CHANNEL` requests at once,
/// not one per pending alert, and the rows it holds do not keep another channel's from
/// being read.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hung_receiver_gets_a_bounded_number_of_requests() {
    let hung = receiver::start_with("s3cret", 0, 200, (100, Duration::from_secs(30))).await;
    let good = receiver::start("s3cret", 0, 200).await;
    let d = tempfile::tempdir().unwrap();
    let events: Vec<AlertEvent> = (0..7).map(|i| event(&format!("r{i}"))).collect();
    let path = store_with_all(d.path(), &events, &["hung", "good"]);
    let w = hung_and_good(&path, &hung, &good, Duration::from_secs(20));
    let (trigger, shutdown) = vigie::shutdown::channel();
    let task = tokio::spawn(w.run(shutdown));
    accepted_within_3s(&good, 7, "the good channel was held up").await;
    // Once the bound is reached, no more come.
    attempted_within_3s(&hung, vigie::sink::outbox::IN_FLIGHT_PER_CHANNEL).await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(
        hung.attempts.load(Ordering::SeqCst),
        vigie::sink::outbox::IN_FLIGHT_PER_CHANNEL
    );
    trigger.fire();
    task.await.unwrap();
}

/// A silence of one channel for `rule` (a pattern), in force from now for a day.
fn silence(path: &std::path::Path, rule: &str, channel: Option<&str>, starts_in: i64) -> i64 {
    let now = Utc::now() + chrono::Duration::seconds(starts_in);
    let spec = vigie::silence::SilenceSpec {
        rule: rule.into(),
        channel: channel.map(String::from),
        starts_at: now,
        ends_at: now + chrono::Duration::days(1),
        comment: "known story".into(),
        created_by: Some("test".into()),
    };
    Store::open(path).unwrap().add_silence(&spec).unwrap().id
}

fn keys(hook: &receiver::Receiver) -> Vec<String> {
    let mut k: Vec<String> = (hook.accepted.lock().unwrap().iter())
        .map(|r| r.idempotency_key.clone())
        .collect();
    k.sort();
    k
}

/// A silence mutes exactly the rules and channel it names, from the moment rows fall due:
/// the other channel, the other rule, and a silence still to come are not touched; once it
/// is ended, the rule's next event goes out.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_silence_mutes_its_rules_on_its_channel_only() {
    let (hook, ops) = (
        receiver::start("s3cret", 0, 200).await,
        receiver::start("s3cret", 0, 200).await,
    );
    let d = tempfile::tempdir().unwrap();
    let path = store_with_all(d.path(), &[event("kz"), event("ua")], &["hook", "ops"]);
    let muted = silence(&path, "k*", Some("hook"), 0);
    silence(&path, "*", None, 3600); // from in an hour: not yet in force
    let w = worker(
        &path,
        HashMap::from([
            ("hook".to_string(), webhook(hook.url())),
            ("ops".to_string(), webhook(ops.url())),
        ]),
    );
    let stats = drain_until(&w, &path, |s| s.pending == 0).await;
    assert_eq!((stats.sent, stats.silenced, stats.dead), (3, 1, 0));
    assert_eq!(keys(&hook), ["ua:1:started"]);
    assert_eq!(keys(&ops), ["kz:1:started", "ua:1:started"]);
    assert_eq!(hook.attempts.load(Ordering::SeqCst), 1);

    // Ended, the silence no longer holds the rule's next event back.
    let s = Store::open(&path).unwrap();
    assert!(s.expire_silence(muted).unwrap());
    assert!(!s.expire_silence(muted).unwrap(), "already ended");
    let mut next = event("kz");
    next.event_id = "kz:1:resolved".into();
    next.kind = EventKind::Resolved;
    let changes = Changes {
        events: vec![next],
        watermark: Utc::now().timestamp(),
        ..Default::default()
    };
    let mut s = s;
    s.commit(&changes, &[], &[("kz:1:resolved".into(), "hook".into())])
        .unwrap();
    let stats = drain_until(&w, &path, |s| s.pending == 0).await;
    assert_eq!((stats.sent, stats.silenced), (4, 1));
    assert_eq!(keys(&hook), ["kz:1:resolved", "ua:1:started"]);
    // The hook was never told that kz's alert started: the resolved event says so.
    let resolved = (hook.accepted.lock().unwrap().iter())
        .find(|r| r.idempotency_key == "kz:1:resolved")
        .map(|r| r.body.clone())
        .unwrap();
    assert_eq!(resolved["unannounced"], true, "{resolved}");
}

/// An update whose start goes out in the same round (or went out before) is not flagged.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_update_is_flagged_only_when_its_channel_missed_the_start() {
    let hook = receiver::start("s3cret", 0, 200).await;
    let d = tempfile::tempdir().unwrap();
    let mut update = event("kz");
    update.event_id = "kz:1:updated".into();
    update.kind = EventKind::Updated;
    let path = store_with_all(d.path(), &[event("kz"), update], &["hook"]);
    let w = worker(
        &path,
        HashMap::from([("hook".to_string(), webhook(hook.url()))]),
    );
    drain_until(&w, &path, |s| s.sent == 2).await;
    let got = hook.accepted.lock().unwrap().clone();
    assert_eq!(got.len(), 2);
    assert!(got.iter().all(|r| r.body.get("unannounced").is_none()));
}

/// A silence made while a delivery is being retried stops the retries: the row is marked
/// silenced when it next falls due, and the receiver is not asked again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_silence_stops_the_retries_of_a_pending_delivery() {
    let hook = receiver::start("s3cret", 1_000, 503).await;
    let d = tempfile::tempdir().unwrap();
    let path = store_with(d.path(), &event("kz"), &["hook"]);
    let w = worker(
        &path,
        HashMap::from([("hook".to_string(), webhook(hook.url()))]),
    );
    drain_until(&w, &path, |_| hook.attempts.load(Ordering::SeqCst) >= 2).await;
    silence(&path, "kz", None, 0);
    let stats = drain_until(&w, &path, |s| s.pending == 0).await;
    assert_eq!((stats.sent, stats.silenced, stats.dead), (0, 1, 0));
    let tried = hook.attempts.load(Ordering::SeqCst);
    tokio::time::sleep(Duration::from_millis(400)).await; // past the longest backoff
    w.drain_once().await;
    assert_eq!(hook.attempts.load(Ordering::SeqCst), tried);
    assert!(hook.accepted.lock().unwrap().is_empty());
}

/// Quiet hours (UTC) that hold now and the whole of tomorrow: today's and tomorrow's
/// weekdays, whole days. Gives them with the instant they end.
fn quiet_now(
    action: vigie::quiet::QuietAction,
) -> (vigie::quiet::QuietHours, chrono::DateTime<Utc>) {
    use chrono::Datelike;
    let today = Utc::now().date_naive();
    let days = format!(
        "{},{}",
        today.weekday().to_string().to_lowercase(),
        today.weekday().succ().to_string().to_lowercase()
    );
    let end = (today + chrono::Duration::days(2))
        .and_time(chrono::NaiveTime::MIN)
        .and_utc();
    let q = vigie::quiet::QuietHours {
        windows: vec![days.parse().unwrap()],
        tz: chrono_tz::UTC,
        action,
    };
    (q, end)
}

/// Moves the clock of the outbox past a hold: what happens when the quiet period ends,
/// without waiting for it. Returns how many rows were held.
fn end_the_night(path: &std::path::Path) -> usize {
    let c = rusqlite::Connection::open(path).unwrap();
    c.execute(
        "UPDATE outbox SET next_attempt_ms = ?1, held_ms = ?1 WHERE held_ms IS NOT NULL",
        [Utc::now().timestamp_millis()],
    )
    .unwrap()
}

/// Quiet hours hold a channel's deliveries, and only that channel's, until the quiet
/// period ends; then the night's events go out as one notification.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn quiet_hours_hold_a_channel_and_release_the_night_as_one_notification() {
    let (desk, ops) = (
        receiver::start("s3cret", 0, 200).await,
        receiver::start("s3cret", 0, 200).await,
    );
    let d = tempfile::tempdir().unwrap();
    let path = store_with_all(d.path(), &[event("kz"), event("ua")], &["desk", "ops"]);
    let (quiet, end) = quiet_now(vigie::quiet::QuietAction::Hold);
    let notifiers = || {
        HashMap::from([
            ("desk".to_string(), webhook(desk.url())),
            ("ops".to_string(), webhook(ops.url())),
        ])
    };
    let mut w = worker(&path, notifiers());
    w.quiet = HashMap::from([("desk".to_string(), quiet)]);
    let stats = drain_until(&w, &path, |s| s.sent == 2).await;
    assert_eq!((stats.pending, stats.held, stats.silenced), (2, 2, 0));
    assert_eq!(keys(&ops), ["kz:1:started", "ua:1:started"]);
    assert_eq!(
        desk.attempts.load(Ordering::SeqCst),
        0,
        "sent in quiet hours"
    );
    // Held until the end of the quiet period, which the API shows.
    let s = Store::open(&path).unwrap();
    assert_eq!(
        s.next_due_ms(&[], &[]).unwrap(),
        Some(end.timestamp_millis())
    );
    let shown = s.deliveries_of(&["kz:1:started"]).unwrap();
    let desk_row = shown["kz:1:started"]
        .iter()
        .find(|r| r.channel == "desk")
        .unwrap();
    assert_eq!(
        (desk_row.status.as_str(), desk_row.held_until),
        ("pending", Some(end))
    );
    w.drain_once().await;
    assert_eq!(
        desk.attempts.load(Ordering::SeqCst),
        0,
        "sent before the end"
    );

    // The night is over: both events in one notification.
    assert_eq!(end_the_night(&path), 2);
    let mut w = worker(&path, notifiers());
    w.quiet = HashMap::new();
    let stats = drain_until(&w, &path, |s| s.pending == 0).await;
    assert_eq!((stats.sent, stats.held), (4, 0));
    let accepted = desk.accepted.lock().unwrap().clone();
    assert_eq!(accepted.len(), 1, "one notification for the night");
    assert!(accepted[0].signature_ok);
    assert_eq!(accepted[0].body["events"].as_array().unwrap().len(), 2);
}

/// With `quiet_action = "drop"` the deliveries falling due in quiet hours are marked
/// silenced, with the reason, and never sent.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn quiet_hours_that_drop_mark_the_delivery_silenced() {
    let (desk, ops) = (
        receiver::start("s3cret", 0, 200).await,
        receiver::start("s3cret", 0, 200).await,
    );
    let d = tempfile::tempdir().unwrap();
    let path = store_with(d.path(), &event("kz"), &["desk", "ops"]);
    let mut w = worker(
        &path,
        HashMap::from([
            ("desk".to_string(), webhook(desk.url())),
            ("ops".to_string(), webhook(ops.url())),
        ]),
    );
    w.quiet = HashMap::from([(
        "desk".to_string(),
        quiet_now(vigie::quiet::QuietAction::Drop).0,
    )]);
    let stats = drain_until(&w, &path, |s| s.pending == 0).await;
    assert_eq!((stats.sent, stats.silenced, stats.held), (1, 1, 0));
    assert_eq!(keys(&ops), ["kz:1:started"]);
    assert_eq!(desk.attempts.load(Ordering::SeqCst), 0);
    let shown = Store::open(&path)
        .unwrap()
        .deliveries_of(&["kz:1:started"])
        .unwrap();
    let desk_row = shown["kz:1:started"]
        .iter()
        .find(|r| r.channel == "desk")
        .unwrap();
    assert_eq!(desk_row.status, "silenced");
    let why = desk_row.last_error.as_deref().unwrap();
    assert!(
        why.contains("quiet hours") && why.contains("(UTC)"),
        "{why}"
    );
}

/// A delivery held all night retries from its release, not from its event: with the
/// receiver down at release, it is tried again instead of given up as too old.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_held_delivery_keeps_trying_from_its_release() {
    let desk = receiver::start("s3cret", 1, 503).await;
    let d = tempfile::tempdir().unwrap();
    let path = store_with(d.path(), &event("kz"), &["desk"]);
    let mut w = worker(
        &path,
        HashMap::from([("desk".to_string(), webhook(desk.url()))]),
    );
    w.quiet = HashMap::from([(
        "desk".to_string(),
        quiet_now(vigie::quiet::QuietAction::Hold).0,
    )]);
    drain_until(&w, &path, |s| s.held == 1).await;
    // Released now, made two minutes ago: older than the worker's 60 s to keep trying.
    assert_eq!(end_the_night(&path), 1);
    let c = rusqlite::Connection::open(&path).unwrap();
    c.execute(
        "UPDATE outbox SET created_ms = ?1",
        [Utc::now().timestamp_millis() - 120_000],
    )
    .unwrap();
    w.quiet = HashMap::new();
    let stats = drain_until(&w, &path, |s| s.pending == 0).await;
    assert_eq!((stats.sent, stats.dead), (1, 0), "{stats:?}");
    assert_eq!(desk.attempts.load(Ordering::SeqCst), 2);
    assert_eq!(keys(&desk), ["kz:1:started"]);
}

/// An event of `rule`'s first alert, of `kind`, with `ratio` and `observed` stories.
fn event_of(rule: &str, kind: EventKind, ratio: f64, observed: u64) -> AlertEvent {
    let mut e = event(rule);
    e.event_id = format!("{rule}:1:{}", kind.as_str());
    (e.kind, e.ratio, e.observed) = (kind, ratio, observed);
    e
}

/// A channel with a floor is told of the large alerts only: a small start stays under it,
/// the growth past it goes out marked unannounced, and the end goes where the alert was
/// told; a small alert's end does not. A channel without a floor is told everything.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_channel_with_a_floor_is_told_of_large_alerts_only() {
    let (director, analyst) = (
        receiver::start("s3cret", 0, 200).await,
        receiver::start("s3cret", 0, 200).await,
    );
    let d = tempfile::tempdir().unwrap();
    let channels = ["director", "analyst"];
    let path = store_with_all(
        d.path(),
        &[
            event_of("kz", EventKind::Started, 2.5, 6),
            event_of("ua", EventKind::Started, 2.2, 5),
        ],
        &channels,
    );
    let mut w = worker(
        &path,
        HashMap::from([
            ("director".to_string(), webhook(director.url())),
            ("analyst".to_string(), webhook(analyst.url())),
        ]),
    );
    w.floors = HashMap::from([(
        "director".to_string(),
        vigie::sink::outbox::Floor {
            min_ratio: Some(5.0),
            min_stories: Some(10),
        },
    )]);
    let stats = drain_until(&w, &path, |s| s.pending == 0).await;
    assert_eq!((stats.sent, stats.silenced), (2, 2));
    assert!(director.accepted.lock().unwrap().is_empty());
    let shown = Store::open(&path)
        .unwrap()
        .deliveries_of(&["kz:1:started"])
        .unwrap();
    let why = (shown["kz:1:started"].iter())
        .find(|r| r.channel == "director")
        .and_then(|r| r.last_error.clone())
        .unwrap();
    assert!(
        why.contains("ratio 2.5 under the channel's min_ratio 5"),
        "{why}"
    );

    // kz grows past the floor, then ends; ua ends small.
    let later = |events: Vec<AlertEvent>| {
        let mut s = Store::open(&path).unwrap();
        let rows: Vec<(String, String)> = (events.iter())
            .flat_map(|e| channels.map(|c| (e.event_id.clone(), c.to_string())))
            .collect();
        let changes = Changes {
            events,
            watermark: i64::MIN,
            ..Default::default()
        };
        s.commit(&changes, &[], &rows).unwrap();
    };
    later(vec![event_of("kz", EventKind::Updated, 6.0, 20)]);
    drain_until(&w, &path, |s| s.pending == 0).await;
    later(vec![
        event_of("kz", EventKind::Resolved, 1.1, 3),
        event_of("ua", EventKind::Resolved, 1.0, 2),
    ]);
    let stats = drain_until(&w, &path, |s| s.pending == 0).await;
    assert_eq!((stats.sent, stats.silenced), (7, 3), "{stats:?}");
    assert_eq!(keys(&director), ["kz:1:resolved", "kz:1:updated"]);
    let told = director.accepted.lock().unwrap().clone();
    let updated = told.iter().find(|r| r.body["kind"] == "updated").unwrap();
    assert_eq!(updated.body["unannounced"], true);
    assert_eq!(keys(&analyst).len(), 5);
    let analyst_got = analyst.accepted.lock().unwrap().clone();
    assert!(analyst_got
        .iter()
        .all(|r| r.body.get("unannounced").is_none()));

    // A small alert's start and end falling due in one round (after an outage): the start
    // is held back first, so the end is not told either.
    later(vec![
        event_of("by", EventKind::Started, 2.0, 4),
        event_of("by", EventKind::Resolved, 1.0, 1),
    ]);
    let stats = drain_until(&w, &path, |s| s.pending == 0).await;
    assert_eq!((stats.sent, stats.silenced), (9, 5), "{stats:?}");
    assert_eq!(keys(&director), ["kz:1:resolved", "kz:1:updated"]);
}

/// `event(rule)`'s alert grown: its `updated` event, ten minutes on.
fn grown(rule: &str) -> AlertEvent {
    let e = event(rule);
    AlertEvent {
        event_id: format!("{rule}:1:updated:1"),
        kind: EventKind::Updated,
        at: e.at + chrono::Duration::minutes(10),
        observed: 70,
        ratio: 20.0,
        ..e
    }
}

/// A channel with a digest is told of nothing as it happens: its deliveries wait for the
/// next digest time, then go out as one notification, each alert once as it stands (by
/// email) or every event (generic JSON), while a channel without one is told at once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_digest_holds_a_channel_until_its_time_and_tells_each_alert_once() {
    let d = tempfile::tempdir().unwrap();
    let (desk, ops) = (
        receiver::start("s3cret", 0, 200).await,
        receiver::start("s3cret", 0, 200).await,
    );
    let port = free_port();
    let server = smtp::Smtp::start(port, &d.path().join("maildir"));
    let notifiers = || {
        HashMap::from([
            ("desk".to_string(), webhook(desk.url())),
            ("ops".to_string(), webhook(ops.url())),
            ("mail".to_string(), email_to_desk(port, 5)),
        ])
    };
    let mut kz = event("kz");
    kz.rule_name = "Kazakhstan".into();
    let mut kz_grown = grown("kz");
    kz_grown.rule_name = "Kazakhstan".into();
    let mut ua = event("ua");
    ua.rule_name = "Ukraine".into();
    let path = store_with_all(d.path(), &[kz, kz_grown, ua], &["desk", "ops", "mail"]);
    let digest: vigie::quiet::Digest = vigie::quiet::Digest {
        times: vec!["08:00".parse().unwrap(), "17:30".parse().unwrap()],
        tz: "Europe/Paris".parse().unwrap(),
    };
    let next = digest.next(Utc::now()).unwrap();
    let digests = || {
        HashMap::from([
            ("desk".to_string(), digest.clone()),
            ("mail".to_string(), digest.clone()),
        ])
    };
    let mut w = worker(&path, notifiers());
    w.digests = digests();
    let stats = drain_until(&w, &path, |s| s.sent == 3).await;
    assert_eq!((stats.pending, stats.held), (6, 6));
    assert_eq!(ops.accepted.lock().unwrap().len(), 3, "told at once");
    assert_eq!(desk.attempts.load(Ordering::SeqCst), 0);
    assert!(server.messages().is_empty());
    let s = Store::open(&path).unwrap();
    assert_eq!(
        s.next_due_ms(&[], &[]).unwrap(),
        Some(next.timestamp_millis())
    );
    w.drain_once().await;
    assert_eq!(
        desk.attempts.load(Ordering::SeqCst),
        0,
        "sent before its time"
    );

    // The digest time comes: one notification per channel.
    assert_eq!(end_the_night(&path), 6);
    let mut w = worker(&path, notifiers());
    w.digests = digests();
    let stats = drain_until(&w, &path, |s| s.pending == 0).await;
    assert_eq!((stats.sent, stats.held), (9, 0));
    let got = desk.accepted.lock().unwrap().clone();
    assert_eq!(got.len(), 1, "one digest");
    assert_eq!(got[0].body["events"].as_array().unwrap().len(), 3);
    assert_eq!(
        got[0].body["summary"],
        "[vigie] 2 alerts (3 events): Kazakhstan (updated), Ukraine (started)"
    );
    let mail = server.messages();
    assert_eq!(mail.len(), 1);
    let m = &mail[0];
    assert!(
        m.contains("Subject: [vigie] 2 alerts (3 events): Kazakhstan (updated), Ukraine"),
        "{m}"
    );
    // Kazakhstan once, as it stands, with its start in a line; each alert's chart inline.
    let text = m.split("Content-Type: text/html").next().unwrap();
    assert_eq!(
        text.matches("Rule:      Kazakhstan (kz)").count(),
        1,
        "{text}"
    );
    assert!(
        text.contains("Earlier in this notification: started at"),
        "{text}"
    );
    assert!(text.contains("Observed:  70 stories"), "{text}");
    assert!(
        m.contains("cid:chart-0") && m.contains("cid:chart-1"),
        "{m}"
    );
    assert_eq!(m.matches("Content-Type: image/png").count(), 2, "{m}");
}
