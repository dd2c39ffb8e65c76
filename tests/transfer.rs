//! A rule's learned state moves from one state file to another (`vigie state export` and
//! `import`) and goes on there as it would have where it was: same baseline and buckets,
//! the same alert events on the next articles, and no story counted twice when the new
//! owner reads again articles the old one had counted; an alert open at the hand-over goes
//! on at the new owner as the same alert.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use vigie::config::Config;
use vigie::engine::{Engine, EngineSettings};
use vigie::pipeline::{ClockMode, LoopSettings, Processor};
use vigie::source::{MemoryDeadLetters, MemorySource};
use vigie::state::Store;
use vigie::transfer::{self, ImportOptions, TransferError};

const RULES: &str = r#"
[[rule]]
id = "kazakhstan"
name = "Kazakhstan"
countries = ["KZ"]

[[rule]]
id = "russia"
name = "Russia"
countries = ["RU"]
"#;

/// A config directory with the two rules and its own state file.
fn config_dir(root: &Path, name: &str) -> PathBuf {
    let dir = root.join(name);
    std::fs::create_dir_all(dir.join("rules")).unwrap();
    std::fs::write(
        dir.join("vigie.toml"),
        format!(
            "[state]\npath = \"{}\"\n\n[detector]\nwarmup_hours = 24\n",
            dir.join("state.db").display()
        ),
    )
    .unwrap();
    std::fs::write(dir.join("rules/rules.toml"), RULES).unwrap();
    dir
}

/// The engine of `dir` as `vigie run` would restore it from its state file.
fn engine(dir: &Path) -> Engine {
    let cfg = Config::load(dir).unwrap();
    let matcher = vigie::service::load_matcher(dir, &cfg).unwrap();
    let store = Store::open(&cfg.state.path).unwrap();
    vigie::service::restored_engine(&cfg, Arc::new(matcher), &store).unwrap()
}

/// Feeds `payloads` through the pipeline into `dir`'s state file, in event time; returns
/// the alert events decided, as (event id, observed stories).
async fn feed(dir: &Path, payloads: &[Vec<u8>]) -> Vec<(String, u64)> {
    let cfg = Config::load(dir).unwrap();
    let store = Store::open(&cfg.state.path).unwrap();
    let processor = Processor::new(
        engine(dir),
        Some(store),
        vec!["log".into()],
        ClockMode::EventTime,
        1 << 20,
    );
    let events = Mutex::new(Vec::new());
    let mut source = MemorySource::from_payloads("articles", payloads.to_vec());
    let (_trigger, shutdown) = vigie::shutdown::channel();
    vigie::pipeline::run(
        &mut source,
        &MemoryDeadLetters::default(),
        Arc::new(Mutex::new(processor)),
        LoopSettings {
            batch_size: 300,
            poll: Duration::from_millis(10),
        },
        shutdown,
        |report| {
            let mut ev = events.lock().unwrap();
            ev.extend((report.events.iter()).map(|e| (e.event_id.clone(), e.observed)));
        },
    )
    .await
    .unwrap();
    events.into_inner().unwrap()
}

fn state_of(dir: &Path) -> Store {
    Store::open(&Config::load(dir).unwrap().state.path).unwrap()
}

fn export(dir: &Path, pattern: &str) -> Result<Vec<transfer::RuleExport>, TransferError> {
    let s = EngineSettings::default();
    let story_secs = s.story_window_secs + s.lateness_secs;
    transfer::export(&state_of(dir), pattern, s.memory_secs, story_secs)
}

/// Stories per bucket of one rule, as the state file holds them.
fn stories(dir: &Path, rule: &str) -> Vec<(i64, u32)> {
    (state_of(dir).rule_buckets(rule, 0).unwrap().into_iter())
        .map(|(b, c)| (b, c.stories))
        .collect()
}

/// Four days of feed ending at 2022-01-07 12:00 UTC, with a Kazakhstan surge over the last
/// 20 hours; and that end.
fn surge_feed() -> (Vec<Vec<u8>>, chrono::DateTime<chrono::Utc>) {
    let end = chrono::DateTime::parse_from_rfc3339("2022-01-07T12:00:00Z")
        .unwrap()
        .to_utc();
    let mut payloads = Vec::new();
    let opts = vigie::generate::GenerateOptions {
        seed: 7,
        end,
        days: 4,
        rate: 20.0,
        surge_hours: 20,
        ..Default::default()
    };
    vigie::generate::generate(&opts, &mut |a| {
        payloads.push(serde_json::to_vec(&a).unwrap())
    })
    .unwrap();
    (payloads, end)
}

/// The index of the first article published at or after `t`.
fn first_at(payloads: &[Vec<u8>], t: chrono::DateTime<chrono::Utc>) -> usize {
    (payloads.iter())
        .position(|p| {
            let v: serde_json::Value = serde_json::from_slice(p).unwrap();
            vigie::article::parse_date(v["published_at"].as_str().unwrap()).unwrap() >= t
        })
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_moved_rule_goes_on_as_it_would_have_where_it_was() {
    let root = tempfile::tempdir().unwrap();
    let (old, new) = (
        config_dir(root.path(), "old"),
        config_dir(root.path(), "new"),
    );
    // Four days of feed with a Kazakhstan surge over the last 20 hours.
    let (payloads, end) = surge_feed();
    // The old owner reads up to the hand-over, an hour before the surge.
    let before_surge = end - chrono::Duration::hours(21);
    let handover = first_at(&payloads, before_surge);
    feed(&old, &payloads[..handover]).await;

    let exports = export(&old, "kaz*").unwrap();
    assert_eq!(exports.len(), 1, "only the rule asked for");
    let e = &exports[0];
    assert_eq!(e.rule, "kazakhstan");
    assert!(
        e.state.baseline.buckets_seen > 500,
        "{}",
        e.state.baseline.buckets_seen
    );
    assert!(!e.buckets.is_empty() && !e.stories.is_empty() && !e.evidence.is_empty());
    // Through the text an operator moves between machines.
    let text: String = exports
        .iter()
        .map(|e| serde_json::to_string(e).unwrap() + "\n")
        .collect();
    let read = transfer::read(&text).unwrap();
    let imported = transfer::import(&mut state_of(&new), &read, ImportOptions::default()).unwrap();
    assert_eq!(imported, ["kazakhstan"]);

    // Restored, the new owner has the rule exactly as the old one does.
    let (a, b) = (engine(&old), engine(&new));
    let (ra, rb) = (&a.rules["kazakhstan"], &b.rules["kazakhstan"]);
    assert_eq!(
        serde_json::to_value(ra).unwrap(),
        serde_json::to_value(rb).unwrap()
    );
    assert_eq!(ra.buckets, rb.buckets);
    assert_eq!(
        ra.recent.values().map(|v| v.len()).sum::<usize>(),
        rb.recent.values().map(|v| v.len()).sum::<usize>()
    );
    assert!(!b.rules.contains_key("russia") || b.rules["russia"].baseline.buckets_seen == 0);

    // The next articles: the new owner also reads again the last 400 the old one had
    // counted (it takes the partitions over from slightly earlier offsets). It decides the
    // same events, and counts no story twice.
    let after_old = feed(&old, &payloads[handover..]).await;
    let after_new = feed(&new, &payloads[handover - 400..]).await;
    let kz = |v: &[(String, u64)]| -> Vec<(String, u64)> {
        v.iter()
            .filter(|(id, _)| id.starts_with("kazakhstan:"))
            .cloned()
            .collect()
    };
    assert!(
        !kz(&after_old).is_empty(),
        "the surge goes on: {after_old:?}"
    );
    assert_eq!(kz(&after_old), kz(&after_new));
    let (sa, sb) = (stories(&old, "kazakhstan"), stories(&new, "kazakhstan"));
    let since = sb[0].0;
    let sa: Vec<(i64, u32)> = sa.into_iter().filter(|(b, _)| *b >= since).collect();
    assert_eq!(sa, sb);
}

/// A rule handed over in the middle of a surge brings its open alert: the new owner lists
/// it from its start, sends nothing the old owner sent, and its later events go out as to
/// channels that know the alert. Without it they would be `unannounced`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_open_alert_moves_with_its_rule_and_its_channels_stay_told() {
    let root = tempfile::tempdir().unwrap();
    let (old, new, bare) = (
        config_dir(root.path(), "old"),
        config_dir(root.path(), "new"),
        config_dir(root.path(), "bare"),
    );
    let (payloads, end) = surge_feed();
    // The hand-over, an hour and a half into the surge.
    let midway = end - chrono::Duration::minutes(18 * 60 + 30);
    let handover = first_at(&payloads, midway);
    feed(&old, &payloads[..handover]).await;
    let mut exports = export(&old, "kazakhstan").unwrap();
    let open = exports[0]
        .open_alert
        .clone()
        .expect("an alert open at the hand-over");
    let started = &open.events[0];
    assert_eq!(started.kind, vigie::detect::EventKind::Started);
    assert!(
        open.told
            .contains(&(started.event_id.clone(), "log".into())),
        "{:?}",
        open.told
    );
    let text = serde_json::to_string(&exports[0]).unwrap();
    let read = transfer::read(&text).unwrap();
    assert_eq!(read[0].open_alert.as_ref(), Some(&open));
    transfer::import(&mut state_of(&new), &read, ImportOptions::default()).unwrap();
    exports[0].open_alert = None;
    transfer::import(&mut state_of(&bare), &exports, ImportOptions::default()).unwrap();

    // The alert from its start, its deliveries done by the old owner.
    let alert = started.alert_id.clone();
    let s = state_of(&new);
    assert_eq!(s.alert_events_of(&alert).unwrap().len(), open.events.len());
    let done = s.deliveries_of(&[started.event_id.as_str()]).unwrap();
    assert_eq!(done[&started.event_id][0].status, "sent");
    assert!(
        s.due(i64::MAX, 100, &[], &[]).unwrap().is_empty(),
        "nothing sent twice"
    );

    // The surge goes on at the new owner: its later events are of the same alert, told
    // as to a channel that knows it; where the alert was not carried, unannounced.
    feed(&new, &payloads[handover..]).await;
    feed(&bare, &payloads[handover..]).await;
    let later = |dir: &Path| -> Vec<(String, bool)> {
        (state_of(dir)
            .due(i64::MAX, 1000, &[], &[])
            .unwrap()
            .into_iter())
        .filter(|d| d.event.alert_id == alert)
        .map(|d| (d.event_id, d.event.unannounced))
        .collect()
    };
    let (told, untold) = (later(&new), later(&bare));
    assert!(!told.is_empty(), "the alert goes on at the new owner");
    assert!(told.iter().all(|(_, u)| !u), "{told:?}");
    assert_eq!(told.len(), untold.len());
    assert!(untold.iter().all(|(_, u)| *u), "{untold:?}");
}

#[test]
fn an_import_refuses_what_it_would_spoil_unless_told() {
    let root = tempfile::tempdir().unwrap();
    let (old, new) = (
        config_dir(root.path(), "old"),
        config_dir(root.path(), "new"),
    );
    assert!(matches!(export(&old, "*"), Err(TransferError::NoMatch(_))));
    // A state with one learned rule.
    let state = vigie::engine::RuleState {
        learned_until: 1_641_600_000,
        ..Default::default()
    };
    let changes = vigie::engine::Changes {
        rules: vec![("kazakhstan".into(), state)],
        watermark: 1_641_600_000,
        ..Default::default()
    };
    state_of(&old).commit(&changes, &[], &[]).unwrap();
    let exports = export(&old, "kazakhstan").unwrap();

    let mut target = state_of(&new);
    transfer::import(&mut target, &exports, ImportOptions::default()).unwrap();
    let again = transfer::import(&mut target, &exports, ImportOptions::default());
    assert!(
        matches!(again, Err(TransferError::Exists(ref r)) if r == "kazakhstan"),
        "{again:?}"
    );
    let replace = ImportOptions {
        replace: true,
        ..Default::default()
    };
    transfer::import(&mut target, &exports, replace).unwrap();

    // A target a day further on: the rule would learn that day as empty.
    let ahead = vigie::engine::Changes {
        watermark: 1_641_600_000 + 86_400,
        ..Default::default()
    };
    target.commit(&ahead, &[], &[]).unwrap();
    let behind = transfer::import(&mut target, &exports, replace).unwrap_err();
    assert!(behind.to_string().contains("24.0 hours"), "{behind}");
    let forced = ImportOptions {
        replace: true,
        force: true,
    };
    transfer::import(&mut target, &exports, forced).unwrap();

    // Not an export, or one of another format: refused with the line.
    let e = transfer::read("\n{\"format\": 1}\n")
        .unwrap_err()
        .to_string();
    assert!(e.starts_with("line 2: not a rule export"), "{e}");
    let mut other = serde_json::to_value(&exports[0]).unwrap();
    other["format"] = 2.into();
    let e = transfer::read(&other.to_string()).unwrap_err().to_string();
    assert!(e.contains("format 2"), "{e}");
}

#[test]
fn the_cli_moves_a_rule_and_refuses_twice() {
    let root = tempfile::tempdir().unwrap();
    let (old, new) = (
        config_dir(root.path(), "old"),
        config_dir(root.path(), "new"),
    );
    let changes = vigie::engine::Changes {
        rules: vec![("kazakhstan".into(), Default::default())],
        watermark: 1_641_600_000,
        ..Default::default()
    };
    state_of(&old).commit(&changes, &[], &[]).unwrap();
    let vigie = || Command::new(env!("CARGO_BIN_EXE_vigie"));
    let file = root.path().join("kz.jsonl");
    let out = vigie()
        .args(["state", "export", "--rule", "kaz*", "--config"])
        .arg(&old)
        .arg("--output")
        .arg(&file)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(String::from_utf8_lossy(&out.stderr).contains("exported kazakhstan"));
    let import = || {
        vigie()
            .args(["state", "import", "--config"])
            .arg(&new)
            .arg(&file)
            .output()
            .unwrap()
    };
    let out = import();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(
        String::from_utf8_lossy(&out.stdout),
        "imported kazakhstan\n"
    );
    let out = import();
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("already has state"));
}
