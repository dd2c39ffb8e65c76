//! The command line as users run it: `check`, `match`, `generate`, `backtest`, `silence`,
//! `notify-test`.

#[path = "support/receiver.rs"]
mod receiver;
#[path = "support/smtp.rs"]
mod smtp;

use std::path::PathBuf;
use std::process::Command;

fn vigie() -> Command {
    Command::new(env!("CARGO_BIN_EXE_vigie"))
}

fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// Runs a command that must succeed and prints one JSON object per line.
fn json_lines(cmd: &mut Command) -> Vec<serde_json::Value> {
    let out = cmd.output().unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}

fn seeds() -> PathBuf {
    let p = repo().join("../shared/seeds");
    assert!(
        p.is_dir(),
        "the seed articles are expected in ../shared/seeds"
    );
    p
}

#[test]
fn check_accepts_the_example_config() {
    let out = vigie()
        .args(["check", "--config"])
        .arg(repo().join("config"))
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(String::from_utf8_lossy(&out.stdout).contains("rules"));
}

#[test]
fn check_says_what_each_channel_is_told_and_when() {
    let d = tempfile::tempdir().unwrap();
    std::fs::write(
        d.path().join("vigie.toml"),
        "[channels.pager]\ntype = \"webhook\"\nurl = \"http://127.0.0.1:9/\"\nevents = [\"started\"]\nmin_ratio = 5\n\
         timezone = \"Europe/Paris\"\nquiet_hours = [\"22:00-07:00\", \"sat,sun\"]\nquiet_action = \"drop\"\n",
    )
    .unwrap();
    let out = vigie()
        .args(["check", "--config"])
        .arg(d.path())
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        stdout.contains(
            "channel pager: started; alerts of 5× their expectation or more; quiet 22:00-07:00, sat,sun (Europe/Paris) (dropped)"
        ),
        "{stdout}"
    );
}

fn config_with_rule(rule: &str) -> tempfile::TempDir {
    let d = tempfile::tempdir().unwrap();
    std::fs::create_dir_all(d.path().join("rules")).unwrap();
    std::fs::write(d.path().join("rules/watch.toml"), rule).unwrap();
    d
}

#[test]
fn check_names_file_and_line_for_unknown_keys_and_syntax_errors() {
    let d = config_with_rule("[[rule]]\nid = \"kz\"\nkeywrods = [\"Almaty\"]\n");
    let out = vigie()
        .args(["check", "--config"])
        .arg(d.path())
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("watch.toml:3:"), "{err}");
    assert!(err.contains("did you mean `keywords`"), "{err}");

    let d = config_with_rule("[[rule]]\nid = \"kz\"\ncountries = [\"KZ\"\nname = \"x\"\n");
    let out = vigie()
        .args(["check", "--config"])
        .arg(d.path())
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("watch.toml:"), "{err}");
}

#[test]
fn check_validates_alert_templates() {
    let d = config_with_rule("[[rule]]\nid = \"kz\"\ncountries = [\"KZ\"]\n\n[rule.templates]\nsubject = \"{{ e.rule_name | nosuchfilter }}\"\n");
    let out = vigie()
        .args(["check", "--config"])
        .arg(d.path())
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("watch.toml:1:") && err.contains("template `subject`"),
        "{err}"
    );
    let d = config_with_rule("[[rule]]\nid = \"kz\"\ncountries = [\"KZ\"]\n\n[rule.templates]\nsubject = \"{{ e.rule_name }}: x{{ e.ratio }}\"\n");
    let out = vigie()
        .args(["check", "--config"])
        .arg(d.path())
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn match_finds_kazakhstan_and_entities_in_every_seed() {
    let lines = json_lines(
        vigie()
            .args(["match", "--config"])
            .arg(repo().join("config"))
            .arg(seeds()),
    );
    assert_eq!(lines.len(), 5);
    for l in &lines {
        let countries: Vec<&str> = l["countries"]
            .as_array()
            .unwrap()
            .iter()
            .filter_map(|c| c.as_str())
            .collect();
        assert!(countries.contains(&"KZ"), "{}: {countries:?}", l["file"]);
        assert!(l["rules"]
            .as_array()
            .unwrap()
            .iter()
            .any(|r| r == "kazakhstan"));
        assert!(!l["evidence"].as_array().unwrap().is_empty());
        // Abbreviations count only in capitals: the French "eu" (il a eu) of three seeds
        // once tagged them as about the United States (`É.-U.`).
        for ev in l["evidence"].as_array().unwrap() {
            let surface = ev["surface"].as_str().unwrap();
            assert!(
                !(ev["what"] == "country:US" && surface == "eu"),
                "{}: {ev}",
                l["file"]
            );
        }
    }
    // The seeds name Tokayev (as Tokaïev or Tokayev) and Putin (as Poutine).
    let with = |id: &str| {
        lines
            .iter()
            .filter(|l| l["entities"].as_array().unwrap().iter().any(|e| e == id))
            .count()
    };
    assert!(with("tokayev") >= 3, "tokayev in {}", with("tokayev"));
    assert!(with("putin") >= 1);
}

#[test]
fn generate_is_reproducible_and_backtest_alerts_only_during_the_surge() {
    let d = tempfile::tempdir().unwrap();
    let a = d.path().join("a.jsonl");
    let b = d.path().join("b.jsonl");
    for p in [&a, &b] {
        let st = vigie()
            .args([
                "generate",
                "--scenario",
                "kazakhstan-unrest",
                "--seed",
                "7",
                "--end",
                "2022-01-08T12:00:00Z",
                "--days",
                "8",
                "-o",
            ])
            .arg(p)
            .status()
            .unwrap();
        assert!(st.success());
    }
    assert_eq!(
        std::fs::read(&a).unwrap(),
        std::fs::read(&b).unwrap(),
        "byte-for-byte reproducible"
    );
    let cfg = config_with_rule(
        "[[rule]]\nid = \"kazakhstan\"\nname = \"Kazakhstan\"\ncountries = [\"KZ\"]\n",
    );
    let charts = d.path().join("charts");
    let events = json_lines(
        vigie()
            .args(["backtest", "--config"])
            .arg(cfg.path())
            .arg("--input")
            .arg(&a)
            .arg("--chart")
            .arg(&charts),
    );
    let png = std::fs::read(charts.join("kazakhstan.png")).expect("a chart per rule");
    assert_eq!(&png[..8], b"\x89PNG\r\n\x1a\n");
    let starts: Vec<&serde_json::Value> = events
        .iter()
        .filter(|e| e["kind"] == "started" && e["rule"] == "kazakhstan")
        .collect();
    assert_eq!(starts.len(), 1, "{events:?}");
    // The surge starts 48 hours before the end (2022-01-06T12:00Z).
    let at = vigie::article::parse_date(starts[0]["at"].as_str().unwrap()).unwrap();
    let surge = vigie::article::parse_date("2022-01-06T12:00:00Z").unwrap();
    assert!(
        at >= surge && at <= surge + chrono::Duration::hours(6),
        "started at {at}"
    );
    for field in [
        "rule", "kind", "at", "observed", "expected", "ratio", "p_value",
    ] {
        assert!(starts[0].get(field).is_some(), "missing {field}");
    }
}

/// `vigie silence` on a state file: added with the rules it covers, listed, refused with a
/// reason, ended; and the outbox worker reads what it wrote.
#[test]
fn silence_adds_lists_and_ends_silences_in_the_state_file() {
    let d = tempfile::tempdir().unwrap();
    let state = d.path().join("state.db");
    let run = |args: &[&str]| {
        let mut c = vigie();
        c.args(["silence"])
            .args(args)
            .arg("--config")
            .arg(repo().join("config"))
            .env("VIGIE_STATE__PATH", &state);
        c
    };
    let add = [
        "add",
        "--rule",
        "kaz*",
        "--for",
        "3d",
        "--comment",
        "known story",
        "--by",
        "desk",
    ];
    let made = json_lines(&mut run(&add)).remove(0);
    assert_eq!(made["state"], "active");
    assert_eq!(made["rules"], serde_json::json!(["kazakhstan"]));
    let id = made["id"].as_i64().unwrap();
    let stored = vigie::state::Store::open(&state).unwrap();
    let now = chrono::Utc::now().timestamp_millis();
    assert_eq!(
        stored.silences(now, None).unwrap()[0].spec.comment,
        "known story"
    );

    let refused = run(&["add", "--rule", "kaz*", "--for", "3 days", "--comment", "x"])
        .output()
        .unwrap();
    assert_eq!(refused.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&refused.stderr).contains("duration"));

    assert_eq!(json_lines(&mut run(&["list"])).len(), 1);
    json_lines(&mut run(&["expire", &id.to_string()]));
    assert!(json_lines(&mut run(&["list"])).is_empty());
    let all = json_lines(&mut run(&["list", "--expired"]));
    assert_eq!(all[0]["state"], "expired");
    assert_eq!(
        run(&["expire", &id.to_string()])
            .output()
            .unwrap()
            .status
            .code(),
        Some(2)
    );
}

/// `vigie notify-test` sends one test event through each channel, past the outbox, to a
/// real webhook receiver and a real SMTP server, and names the channel whose receiver is
/// down or refuses, with exit code 1.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn notify_test_reaches_real_receivers_and_names_the_failures() {
    let hook = receiver::start("s3cret", 0, 200).await;
    let refusing = receiver::start("s3cret", usize::MAX, 403).await;
    let free_port = || {
        std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port()
    };
    let (smtp_port, closed_port) = (free_port(), free_port());
    let d = tempfile::tempdir().unwrap();
    let smtp = smtp::Smtp::start(smtp_port, &d.path().join("maildir"));
    std::fs::write(
        d.path().join("vigie.toml"),
        format!(
            r#"
[state]
path = "{state}"

[smtp]
host = "127.0.0.1"
port = {smtp_port}
tls = "none"
from = "vigie <vigie@example.org>"

[channels.desk]
type = "email"
to = ["desk@example.org"]
quiet_hours = ["mon-sun 00:00-23:59"]

[channels.hook]
type = "webhook"
url = "{hook}"
secret = "s3cret"

[channels.down]
type = "webhook"
url = "http://127.0.0.1:{closed_port}/"

[channels.refusing]
type = "webhook"
url = "{refusing}"
"#,
            state = d.path().join("state.db").display(),
            hook = hook.url(),
            refusing = refusing.url(),
        ),
    )
    .unwrap();
    let run = |channels: &[&str]| {
        let mut c = vigie();
        c.arg("notify-test").arg("--config").arg(d.path());
        for ch in channels {
            c.args(["--channel", ch]);
        }
        c
    };
    // The receivers run on this test's runtime: wait for the command off it.
    let output = |mut c: Command| async move {
        tokio::task::spawn_blocking(move || c.output().unwrap())
            .await
            .unwrap()
    };
    let out = output(run(&["desk", "hook"])).await;
    let stdout = String::from_utf8_lossy(&out.stdout).to_string();
    assert!(
        out.status.success(),
        "{stdout}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(stdout.contains("ok: desk: accepted in"), "{stdout}");
    assert!(stdout.contains("ok: hook: accepted in"), "{stdout}");
    // Quiet hours do not hold a test back: it is a probe, sent now.
    let mail = smtp.messages();
    assert_eq!(mail.len(), 1);
    assert!(mail[0].contains("vigie test notification"), "{}", mail[0]);
    let got = hook.accepted.lock().unwrap().clone();
    assert_eq!(got.len(), 1);
    assert!(got[0].signature_ok);
    assert_eq!(got[0].body["rule"], vigie::sink::TEST_RULE);
    assert_eq!(
        got[0].idempotency_key,
        got[0].body["event_id"].as_str().unwrap()
    );

    // Every channel: the two that fail are named with what went wrong.
    let out = output(run(&[])).await;
    let stdout = String::from_utf8_lossy(&out.stdout).to_string();
    assert_eq!(out.status.code(), Some(1), "{stdout}");
    assert!(
        stdout.contains("failed: down: ") && stdout.contains("would be retried"),
        "{stdout}"
    );
    assert!(
        stdout.contains("failed: refusing: ") && stdout.contains("403"),
        "{stdout}"
    );
    assert!(stdout.contains("would not be retried"), "{stdout}");
    assert_eq!(
        stdout.lines().filter(|l| l.starts_with("ok: ")).count(),
        2,
        "{stdout}"
    );
    assert_eq!(hook.accepted.lock().unwrap().len(), 2);

    let out = run(&["nowhere"]).output().unwrap();
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("no channel `nowhere`"));
}
