//! Operating the service: every HTTP endpoint on a running vigie fed through a real broker,
//! the API token, and hot reloads (broken file, edited rule, POST /api/reload).

mod common;
#[path = "support/receiver.rs"]
mod receiver;

use std::time::Duration;

use chrono::Utc;
use common::*;

const RULES: &str = r#"
[[rule]]
id = "kazakhstan"
name = "Kazakhstan"
countries = ["KZ"]

[[rule]]
id = "sport"
name = "Sport"
keywords = ["football"]
"#;

async fn get(cfg: &TestConfig, path: &str, token: Option<&str>) -> (u16, serde_json::Value) {
    let mut req = reqwest::Client::new().get(cfg.url(path));
    if let Some(t) = token {
        req = req.bearer_auth(t);
    }
    let resp = req.send().await.unwrap();
    let status = resp.status().as_u16();
    (status, resp.json().await.unwrap_or(serde_json::Value::Null))
}

fn rule_field(rules: &serde_json::Value, id: &str, field: &str) -> serde_json::Value {
    rules["rules"]
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["id"] == id)
        .map(|r| r[field].clone())
        .unwrap_or(serde_json::Value::Null)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn endpoints_token_and_hot_reload() {
    let brokers = broker();
    let topic = unique("ops");
    create_topic(&brokers, &topic, 2).await;
    // A channel in its quiet hours (today and tomorrow, UTC), for the channels API.
    let hook = receiver::start("s3cret", 0, 200).await;
    let quiet_days = {
        use chrono::Datelike;
        let today = Utc::now().weekday();
        format!("{},{}", today, today.succ()).to_lowercase()
    };
    let channels = format!(
        "[channels.hook]\ntype = \"webhook\"\nurl = \"{}\"\nsecret = \"s3cret\"\nquiet_hours = [\"{quiet_days}\"]\n",
        hook.url()
    );
    let cfg = TestConfig::new(&brokers, &topic, &channels, RULES, "");
    let toml = std::fs::read_to_string(cfg.path().join("vigie.toml"))
        .unwrap()
        .replace("[http]\n", "[http]\napi_token = \"t0ken\"\n");
    std::fs::write(cfg.path().join("vigie.toml"), toml).unwrap();

    let now = Utc::now();
    let mut payloads = Vec::new();
    for i in 0..12 {
        payloads.push(article(
            &format!("kz{i}"),
            &format!("Almaty, jour {i}"),
            &distinct_body("Kazakhstan", i as usize),
            now - chrono::Duration::minutes(30 - i),
        ));
    }
    // Older coverage, so the baseline has finished buckets to learn from.
    for i in 0..6 {
        payloads.push(article(
            &format!("old{i}"),
            &format!("Astana, il y a {i} heures"),
            &distinct_body("Kazakhstan", 100 + i as usize),
            now - chrono::Duration::minutes(150 + 20 * i),
        ));
    }
    for i in 0..4 {
        payloads.push(article(
            &format!("fb{i}"),
            &format!("Football, match {i}"),
            "Un match de football.",
            now - chrono::Duration::minutes(20),
        ));
    }
    produce(&brokers, &topic, &payloads).await;
    let _vigie = Vigie::start(&cfg, "ops");
    wait_for("22 articles", Duration::from_secs(60), async || {
        metric(&cfg, "vigie_articles_processed_total", "")
            .await
            .filter(|v| *v >= 22.0)
    })
    .await;

    // Health, readiness, metrics: no token needed.
    let health = reqwest::get(cfg.url("/healthz")).await.unwrap();
    assert_eq!(health.status(), 200);
    let (status, ready) = get(&cfg, "/readyz", None).await;
    assert_eq!(status, 200, "{ready}");
    assert_eq!(ready["rules_loaded"], true);
    let metrics = reqwest::get(cfg.url("/metrics"))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    for name in [
        "vigie_articles_processed_total",
        "vigie_rule_matches_total",
        "vigie_rules_loaded",
        "vigie_batch_processing_seconds_bucket",
        "vigie_watermark_seconds",
    ] {
        assert!(metrics.contains(name), "missing {name}");
    }

    // The API needs the token.
    assert_eq!(get(&cfg, "/api/rules", None).await.0, 401);
    assert_eq!(get(&cfg, "/api/rules", Some("wrong")).await.0, 401);
    let (status, rules) = get(&cfg, "/api/rules", Some("t0ken")).await;
    assert_eq!(status, 200);
    assert_eq!(rule_field(&rules, "kazakhstan", "window_count"), 12);
    assert_eq!(rule_field(&rules, "sport", "state"), "quiet");
    assert!(rule_field(&rules, "kazakhstan", "expected").is_number());
    let (status, series) = get(&cfg, "/api/rules/kazakhstan/series?hours=2", Some("t0ken")).await;
    assert_eq!(status, 200);
    let buckets = series["buckets"].as_array().unwrap();
    assert_eq!(buckets.len(), 24);
    assert!(buckets.iter().all(|b| b["start"].is_string()
        && b["articles"].is_u64()
        && b["stories"].is_u64()
        && b["expected"].is_number()));
    assert_eq!(
        buckets
            .iter()
            .map(|b| b["articles"].as_u64().unwrap())
            .sum::<u64>(),
        12
    );
    let (_, long) = get(&cfg, "/api/rules/kazakhstan/series?hours=6", Some("t0ken")).await;
    assert_eq!(
        long["buckets"]
            .as_array()
            .unwrap()
            .iter()
            .map(|b| b["articles"].as_u64().unwrap())
            .sum::<u64>(),
        18
    );
    assert_eq!(
        get(&cfg, "/api/rules/nope/series", Some("t0ken")).await.0,
        404
    );
    let (status, alerts) = get(
        &cfg,
        &format!(
            "/api/alerts?since={}",
            (now - chrono::Duration::days(1)).to_rfc3339()
        ),
        Some("t0ken"),
    )
    .await;
    assert_eq!(status, 200);
    assert!(alerts["alerts"].is_array() && alerts["outbox"].is_object());
    assert_eq!(
        get(&cfg, "/api/alerts?since=yesterday", Some("t0ken"))
            .await
            .0,
        400
    );

    // Silences: made, listed with the rules they cover, ended; bad ones refused with why.
    let post = |body: serde_json::Value, token: Option<&'static str>| {
        let mut req = reqwest::Client::new()
            .post(cfg.url("/api/silences"))
            .json(&body);
        if let Some(t) = token {
            req = req.bearer_auth(t);
        }
        async move {
            let resp = req.send().await.unwrap();
            let status = resp.status().as_u16();
            (
                status,
                resp.json::<serde_json::Value>().await.unwrap_or_default(),
            )
        }
    };
    let asked = serde_json::json!({
        "rule": "kaz*", "duration": "2h", "comment": "known story", "created_by": "desk"
    });
    assert_eq!(post(asked.clone(), None).await.0, 401);
    let (status, made) = post(asked, Some("t0ken")).await;
    assert_eq!(status, 201, "{made}");
    assert_eq!(made["state"], "active");
    assert_eq!(made["rules"], serde_json::json!(["kazakhstan"]));
    assert_eq!(made["rules_covered"], 1);
    assert_eq!(made["created_by"], "desk");
    let id = made["id"].as_i64().unwrap();
    let (_, rules) = get(&cfg, "/api/rules", Some("t0ken")).await;
    assert_eq!(
        rule_field(&rules, "kazakhstan", "silenced_by"),
        serde_json::json!([id])
    );
    assert_eq!(
        rule_field(&rules, "sport", "silenced_by"),
        serde_json::json!([])
    );
    for (body, why) in [
        (
            serde_json::json!({"rule": "kaz*", "duration": "2h"}),
            "comment",
        ),
        (
            serde_json::json!({"rule": "kaz*", "duration": "2h", "comment": " "}),
            "comment",
        ),
        (
            serde_json::json!({"rule": "kaz*", "duration": "2 hours", "comment": "x"}),
            "duration",
        ),
        (
            serde_json::json!({"rule": "kaz*", "comment": "x"}),
            "ends_at or duration",
        ),
        (
            serde_json::json!({"rule": "kaz*", "duration": "2h", "comment": "x", "channel": "pager"}),
            "not a configured channel",
        ),
    ] {
        let (status, err) = post(body, Some("t0ken")).await;
        assert_eq!(status, 422, "{err}");
        assert!(err["error"].as_str().unwrap().contains(why), "{err}");
    }
    let (status, list) = get(&cfg, "/api/silences", Some("t0ken")).await;
    assert_eq!(status, 200);
    assert_eq!(list["silences"].as_array().unwrap().len(), 1);
    assert_eq!(list["silences"][0]["id"], id);
    let delete = |path: String| {
        let req = reqwest::Client::new()
            .delete(cfg.url(&path))
            .bearer_auth("t0ken");
        async move { req.send().await.unwrap().status().as_u16() }
    };
    assert_eq!(delete(format!("/api/silences/{id}")).await, 200);
    assert_eq!(delete(format!("/api/silences/{id}")).await, 404);
    let (_, list) = get(&cfg, "/api/silences", Some("t0ken")).await;
    assert!(list["silences"].as_array().unwrap().is_empty(), "{list}");
    let (_, list) = get(&cfg, "/api/silences?expired=true", Some("t0ken")).await;
    assert_eq!(list["silences"][0]["state"], "expired", "{list}");

    // Channels: their settings, quiet hours and outbox counts; a test notification goes
    // through one now, quiet hours or not.
    let (status, list) = get(&cfg, "/api/channels", Some("t0ken")).await;
    assert_eq!(status, 200, "{list}");
    let names: Vec<&str> = (list["channels"].as_array().unwrap().iter())
        .map(|c| c["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["hook", "log"]);
    let ch = &list["channels"][0];
    assert_eq!(ch["type"], "webhook");
    assert_eq!(ch["quiet_hours"][0], quiet_days.as_str());
    assert_eq!(ch["timezone"], "UTC");
    assert_eq!(ch["quiet_action"], "hold");
    let until = vigie::article::parse_date(ch["quiet_until"].as_str().unwrap()).unwrap();
    assert!(until > Utc::now() + chrono::Duration::hours(24), "{ch}");
    assert_eq!(ch["outbox"]["pending"], 0);
    assert_eq!(get(&cfg, "/api/channels", None).await.0, 401);
    // The dashboard is behind the same token. A browser is asked for it by basic
    // authentication and gives it as the password.
    let html = |path: &str, auth: Option<(&str, &str)>| {
        let mut req = reqwest::Client::new().get(cfg.url(path));
        if let Some((user, password)) = auth {
            req = req.basic_auth(user, Some(password));
        }
        async move {
            let r = req.send().await.unwrap();
            let challenge =
                (r.headers().get("www-authenticate")).map(|v| v.to_str().unwrap().to_string());
            (r.status().as_u16(), challenge, r.text().await.unwrap())
        }
    };
    let (status, challenge, _) = html("/", None).await;
    assert_eq!(status, 401);
    assert!(challenge.unwrap().starts_with("Basic realm=\"vigie\""));
    assert_eq!(html("/", Some(("desk", "wrong"))).await.0, 401);
    let (status, _, home) = html("/", Some(("desk", "t0ken"))).await;
    assert_eq!(status, 200);
    assert!(
        home.contains("href=\"/rules/kazakhstan\">Kazakhstan</a>"),
        "{home}"
    );
    assert!(home.contains("href=\"/rules/sport\">Sport</a>"), "{home}");
    let (_, _, filtered) = html("/?q=SPO", Some(("desk", "t0ken"))).await;
    assert!(filtered.contains("href=\"/rules/sport\""), "{filtered}");
    assert!(
        !filtered.contains("href=\"/rules/kazakhstan\""),
        "{filtered}"
    );
    let (status, _, page) = html("/rules/sport", Some(("", "t0ken"))).await;
    assert_eq!(status, 200);
    assert!(page.contains("&quot;window_minutes&quot;: 60"), "{page}");
    assert_eq!(html("/rules/sport/chart.png", None).await.0, 401);
    // Basic credentials read; they change nothing (a cross-site form would carry them).
    let by_basic = reqwest::Client::new()
        .post(cfg.url("/api/reload"))
        .basic_auth("desk", Some("t0ken"))
        .send()
        .await
        .unwrap();
    assert_eq!(by_basic.status().as_u16(), 401);
    let test = |name: &str, token: Option<&'static str>| {
        let mut req = reqwest::Client::new().post(cfg.url(&format!("/api/channels/{name}/test")));
        if let Some(t) = token {
            req = req.bearer_auth(t);
        }
        async move {
            let r = req.send().await.unwrap();
            (
                r.status().as_u16(),
                r.json::<serde_json::Value>().await.unwrap(),
            )
        }
    };
    assert_eq!(test("hook", None).await.0, 401);
    assert!(hook.accepted.lock().unwrap().is_empty());
    let (status, sent) = test("hook", Some("t0ken")).await;
    assert_eq!(
        (status, &sent["ok"]),
        (200, &serde_json::json!(true)),
        "{sent}"
    );
    let got = hook.accepted.lock().unwrap().clone();
    assert_eq!(got.len(), 1);
    assert!(got[0].signature_ok);
    assert_eq!(got[0].body["rule"], vigie::sink::TEST_RULE);
    assert_eq!(test("nowhere", Some("t0ken")).await.0, 404);

    // A broken rule file: the old rules stay live, the error is counted and reported.
    let baseline_before = rule_field(&rules, "kazakhstan", "baseline_buckets")
        .as_u64()
        .unwrap();
    assert!(
        baseline_before > 0,
        "the baseline has learned finished buckets"
    );
    let rules_file = cfg.path().join("rules/rules.toml");
    std::fs::write(
        &rules_file,
        RULES.replace("keywords = [\"football\"]", "keywrods = [\"football\"]"),
    )
    .unwrap();
    wait_for("a refused reload", Duration::from_secs(20), async || {
        metric(&cfg, "vigie_rule_reload_failures_total", "")
            .await
            .filter(|v| *v >= 1.0)
    })
    .await;
    let resp = reqwest::Client::new()
        .post(cfg.url("/api/reload"))
        .bearer_auth("t0ken")
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 422);
    let body: serde_json::Value = resp.json().await.unwrap();
    let err = body["errors"][0].as_str().unwrap();
    assert!(
        err.contains("rules.toml:") && err.contains("keywords"),
        "{err}"
    );
    let (_, rules) = get(&cfg, "/api/rules", Some("t0ken")).await;
    assert_eq!(
        rules["rules"].as_array().unwrap().len(),
        2,
        "old rules still live"
    );
    assert_eq!(metric(&cfg, "vigie_rules_loaded", "").await, Some(2.0));

    // Editing a rule's keywords takes effect without a restart, other baselines intact.
    std::fs::write(
        &rules_file,
        RULES.replace("keywords = [\"football\"]", "keywords = [\"rugby\"]"),
    )
    .unwrap();
    wait_for("the edited rule", Duration::from_secs(20), async || {
        let (_, r) = get(&cfg, "/api/rules", Some("t0ken")).await;
        (rule_field(&r, "sport", "window_count") == 0).then_some(())
    })
    .await;
    produce(
        &brokers,
        &topic,
        &[article(
            "rg1",
            "Rugby : le XV de France",
            "Un match de rugby.",
            Utc::now(),
        )],
    )
    .await;
    wait_for("a rugby match", Duration::from_secs(30), async || {
        let (_, r) = get(&cfg, "/api/rules", Some("t0ken")).await;
        (rule_field(&r, "sport", "window_count") == 1).then_some(())
    })
    .await;
    let (_, rules) = get(&cfg, "/api/rules", Some("t0ken")).await;
    assert_eq!(
        rule_field(&rules, "kazakhstan", "window_count"),
        12,
        "the other rule kept its counts"
    );
    assert!(
        rule_field(&rules, "kazakhstan", "baseline_buckets")
            .as_u64()
            .unwrap()
            >= baseline_before,
        "and its baseline"
    );

    // POST /api/reload with a valid set.
    let resp = reqwest::Client::new()
        .post(cfg.url("/api/reload"))
        .bearer_auth("t0ken")
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);

    // Channels reload with the rules. A broken vigie.toml is refused with its line, and
    // the channels stay as they were.
    let reload = || async {
        let r = reqwest::Client::new()
            .post(cfg.url("/api/reload"))
            .bearer_auth("t0ken")
            .send()
            .await
            .unwrap();
        (
            r.status().as_u16(),
            r.json::<serde_json::Value>().await.unwrap(),
        )
    };
    let channel_names = || async {
        let (_, list) = get(&cfg, "/api/channels", Some("t0ken")).await;
        (list["channels"].as_array().unwrap().iter())
            .map(|c| c["name"].as_str().unwrap().to_string())
            .collect::<Vec<_>>()
    };
    let toml_path = cfg.path().join("vigie.toml");
    let toml = std::fs::read_to_string(&toml_path).unwrap();
    std::fs::write(
        &toml_path,
        format!("{toml}\n[channels.bad]\ntype = \"webhook\"\nurl = \"http://x\"\nretries = 3\n"),
    )
    .unwrap();
    let (status, body) = reload().await;
    assert_eq!(status, 422, "{body}");
    let err = body["errors"][0].as_str().unwrap();
    assert!(
        err.contains("vigie.toml:") && err.contains("retries"),
        "{err}"
    );
    assert_eq!(channel_names().await, ["hook", "log"]);
    // A new channel, and `hook`'s quiet hours lifted.
    let late = receiver::start("s3cret", 0, 200).await;
    let toml = toml.replace(&format!("quiet_hours = [\"{quiet_days}\"]\n"), "");
    std::fs::write(
        &toml_path,
        format!(
            "{toml}\n[channels.late]\ntype = \"webhook\"\nurl = \"{}\"\nsecret = \"s3cret\"\n",
            late.url()
        ),
    )
    .unwrap();
    let (status, body) = reload().await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(channel_names().await, ["hook", "late", "log"]);
    let (_, list) = get(&cfg, "/api/channels", Some("t0ken")).await;
    assert!(list["channels"][0]["quiet_until"].is_null(), "{list}");
    // The outbox worker was replaced too: an event for the new channel, written to the
    // state file as the pipeline writes them, goes out to it (the old worker, which did
    // not know the channel, would have given it up as not configured).
    let event = vigie::sink::test_event(Utc::now());
    let changes = vigie::engine::Changes {
        events: vec![event.clone()],
        watermark: i64::MIN,
        ..Default::default()
    };
    let state = cfg.path().join("state/vigie.db");
    vigie::state::Store::open(&state)
        .unwrap()
        .commit(&changes, &[], &[(event.event_id.clone(), "late".into())])
        .unwrap();
    wait_for(
        "the new channel's delivery",
        Duration::from_secs(10),
        async || {
            let got = late.accepted.lock().unwrap().clone();
            got.first().map(|r| r.body["event_id"].clone())
        },
    )
    .await;
    assert_eq!(
        late.accepted.lock().unwrap()[0].body["event_id"],
        event.event_id.as_str()
    );

    // A secret rotated in place (same file, new contents; vigie.toml untouched) is read
    // again by the next reload: the receiver, which knows only the new key, then accepts
    // the signature.
    let key_file = cfg.path().join("rot.key");
    std::fs::write(&key_file, "old-key\n").unwrap();
    let rot = receiver::start("new-key", 0, 200).await;
    let toml = std::fs::read_to_string(&toml_path).unwrap();
    std::fs::write(
        &toml_path,
        format!(
            "{toml}\n[channels.rot]\ntype = \"webhook\"\nurl = \"{}\"\nsecret_file = \"{}\"\n",
            rot.url(),
            key_file.display()
        ),
    )
    .unwrap();
    assert_eq!(reload().await.0, 200);
    let signed = async || {
        assert_eq!(test("rot", Some("t0ken")).await.0, 200);
        let got = rot.accepted.lock().unwrap().clone();
        got.last().unwrap().signature_ok
    };
    assert!(!signed().await, "signed with the old key");
    std::fs::write(&key_file, "new-key\n").unwrap();
    assert_eq!(reload().await.0, 200);
    assert!(signed().await, "the rotated key was not read again");
}
