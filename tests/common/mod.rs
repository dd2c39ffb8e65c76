//! Helpers for integration tests: a real broker, a real vigie process, real receivers.
#![allow(dead_code)]

use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use rdkafka::config::ClientConfig;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::message::{Headers, Message};
use rdkafka::producer::{FutureProducer, FutureRecord};
use rdkafka::{Offset, TopicPartitionList};

pub fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// The broker's bootstrap address: `KAFKA_BOOTSTRAP`, or a Tansu started by scripts/broker.sh.
pub fn broker() -> String {
    if let Ok(b) = std::env::var("KAFKA_BOOTSTRAP") {
        return b;
    }
    let out = Command::new("bash")
        .arg(repo().join("scripts/broker.sh"))
        .arg("start")
        .output()
        .expect("run scripts/broker.sh");
    assert!(
        out.status.success(),
        "broker did not start: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

/// A topic name no other test uses.
pub fn unique(prefix: &str) -> String {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_nanos();
    format!("{prefix}-{}-{nanos}", std::process::id())
}

pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

pub fn kafka_config(brokers: &str, topic: &str) -> vigie::config::KafkaConfig {
    vigie::config::KafkaConfig {
        brokers: brokers.into(),
        topic: topic.into(),
        ..Default::default()
    }
}

pub async fn create_topic(brokers: &str, topic: &str, partitions: i32) {
    vigie::source::kafka::ensure_topic(&kafka_config(brokers, topic), topic, partitions)
        .await
        .expect("create topic");
}

/// Produces payloads (key = index) and waits for every acknowledgement.
pub async fn produce(brokers: &str, topic: &str, payloads: &[Vec<u8>]) {
    let p: FutureProducer = ClientConfig::new()
        .set("bootstrap.servers", brokers)
        .set("message.max.bytes", "20000000")
        .create()
        .unwrap();
    for (i, payload) in payloads.iter().enumerate() {
        let key = format!("k{i}");
        p.send(
            FutureRecord::to(topic).key(&key).payload(payload),
            Duration::from_secs(30),
        )
        .await
        .map_err(|(e, _)| e)
        .expect("produce");
    }
}

/// A message read back: payload and headers.
pub type DeadLetter = (Vec<u8>, Vec<(String, String)>);

/// Reads every message of a one-partition topic: (payload, headers).
pub fn read_all(brokers: &str, topic: &str, expect: usize, timeout: Duration) -> Vec<DeadLetter> {
    let c: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", brokers)
        .set("group.id", unique("reader"))
        .set("enable.auto.commit", "false")
        .create()
        .unwrap();
    let mut tpl = TopicPartitionList::new();
    tpl.add_partition_offset(topic, 0, Offset::Beginning)
        .unwrap();
    c.assign(&tpl).unwrap();
    let mut out = Vec::new();
    let deadline = Instant::now() + timeout;
    while out.len() < expect && Instant::now() < deadline {
        if let Some(Ok(m)) = c.poll(Duration::from_millis(200)) {
            let headers = m
                .headers()
                .map(|h| {
                    h.iter()
                        .map(|h| {
                            (
                                h.key.to_string(),
                                String::from_utf8_lossy(h.value.unwrap_or_default()).to_string(),
                            )
                        })
                        .collect()
                })
                .unwrap_or_default();
            out.push((m.payload().unwrap_or_default().to_vec(), headers));
        }
    }
    out
}

/// A config directory for one test.
pub struct TestConfig {
    pub dir: tempfile::TempDir,
    pub http: u16,
}

impl TestConfig {
    /// Writes vigie.toml (with `extra` appended) and the given rule and entity files.
    pub fn new(brokers: &str, topic: &str, extra: &str, rules: &str, entities: &str) -> TestConfig {
        let dir = tempfile::tempdir().unwrap();
        let http = free_port();
        let state = dir.path().join("state/vigie.db");
        let toml = format!(
            "[kafka]\nbrokers = \"{brokers}\"\ntopic = \"{topic}\"\ngroup_id = \"{group}\"\nauto_offset_reset = \"earliest\"\nbatch_timeout_ms = 50\n\n[kafka.properties]\n\"session.timeout.ms\" = \"6000\"\n\n[http]\nlisten = \"127.0.0.1:{http}\"\n\n[state]\npath = \"{state}\"\n\n{extra}\n",
            group = unique("g"),
            state = state.display()
        );
        std::fs::write(dir.path().join("vigie.toml"), toml).unwrap();
        std::fs::create_dir_all(dir.path().join("rules")).unwrap();
        std::fs::create_dir_all(dir.path().join("entities")).unwrap();
        std::fs::write(dir.path().join("rules/rules.toml"), rules).unwrap();
        std::fs::write(dir.path().join("entities/entities.toml"), entities).unwrap();
        TestConfig { dir, http }
    }

    pub fn path(&self) -> &Path {
        self.dir.path()
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://127.0.0.1:{}{path}", self.http)
    }
}

/// A running `vigie run` process; killed on drop.
pub struct Vigie {
    pub child: Child,
    pub log: PathBuf,
}

impl Vigie {
    pub fn start(cfg: &TestConfig, tag: &str) -> Vigie {
        let log = cfg.path().join(format!("vigie-{tag}.log"));
        let f = std::fs::File::create(&log).unwrap();
        let child = Command::new(env!("CARGO_BIN_EXE_vigie"))
            .args(["run", "--config"])
            .arg(cfg.path())
            .env("VIGIE_LOG", "info,librdkafka=warn,rdkafka=warn")
            .stdout(Stdio::null())
            .stderr(f)
            .spawn()
            .expect("spawn vigie");
        Vigie { child, log }
    }

    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// SIGTERM, then waits; returns the exit status and how long it took.
    pub fn terminate(mut self) -> (std::process::ExitStatus, Duration) {
        let started = Instant::now();
        unsafe_kill(self.child.id(), "TERM");
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            if let Some(s) = self.child.try_wait().unwrap() {
                return (s, started.elapsed());
            }
            if Instant::now() > deadline {
                let _ = self.child.kill();
                panic!("vigie did not stop within 30 s:\n{}", self.log_text());
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// SIGKILL: no chance to flush anything.
    pub fn kill9(mut self) {
        unsafe_kill(self.child.id(), "KILL");
        let _ = self.child.wait();
    }
}

impl Drop for Vigie {
    fn drop(&mut self) {
        if std::thread::panicking() {
            let log = self.log_text();
            let tail: Vec<&str> = log.lines().rev().take(40).collect();
            eprintln!("--- last lines of {} ---", self.log.display());
            for l in tail.iter().rev() {
                eprintln!("{l}");
            }
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn unsafe_kill(pid: u32, sig: &str) {
    let _ = Command::new("kill")
        .arg(format!("-{sig}"))
        .arg(pid.to_string())
        .status();
}

/// Polls `f` until it returns Some or the timeout passes.
pub async fn wait_for<T>(
    what: &str,
    timeout: Duration,
    mut f: impl AsyncFnMut() -> Option<T>,
) -> T {
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(v) = f().await {
            return v;
        }
        if Instant::now() > deadline {
            panic!("timed out waiting for {what}");
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// A metric's value from /metrics (sum over label sets matching `labels`).
pub async fn metric(cfg: &TestConfig, name: &str, labels: &str) -> Option<f64> {
    let body = reqwest::get(cfg.url("/metrics"))
        .await
        .ok()?
        .text()
        .await
        .ok()?;
    let mut total = None;
    for line in body.lines() {
        if let Some(rest) = line.strip_prefix(name) {
            if (rest.starts_with(' ') || rest.starts_with('{')) && rest.contains(labels) {
                let v: f64 = rest.rsplit(' ').next()?.parse().ok()?;
                total = Some(total.unwrap_or(0.0) + v);
            }
        }
    }
    total
}

/// An article of the feed contract as JSON bytes.
pub fn article(
    id: &str,
    title: &str,
    body: &str,
    published_at: chrono::DateTime<chrono::Utc>,
) -> Vec<u8> {
    serde_json::to_vec(&serde_json::json!({
        "id": id, "url": format!("https://news.example/{id}"), "title": title, "body": body,
        "published_at": published_at.to_rfc3339(), "source": "news.example", "language": "fr",
    }))
    .unwrap()
}

/// Waits until `/readyz` answers 2xx.
pub async fn wait_ready(cfg: &TestConfig, what: &str) {
    wait_for(what, Duration::from_secs(60), async || {
        reqwest::get(cfg.url("/readyz"))
            .await
            .ok()
            .filter(|r| r.status().is_success())
    })
    .await;
}

/// Sum of `field` over a rule's series from the API.
pub async fn series_total(cfg: &TestConfig, rule: &str, field: &str) -> Option<u64> {
    let v: serde_json::Value = reqwest::get(cfg.url(&format!("/api/rules/{rule}/series?hours=48")))
        .await
        .ok()?
        .json()
        .await
        .ok()?;
    Some(
        v["buckets"]
            .as_array()?
            .iter()
            .map(|b| b[field].as_u64().unwrap_or(0))
            .sum(),
    )
}

/// A body whose wording differs from every other `i`, so articles count as distinct stories.
pub fn distinct_body(topic: &str, i: usize) -> String {
    const WORDS: &[&str] = &[
        "gouvernement",
        "manifestants",
        "police",
        "capitale",
        "ministre",
        "annonce",
        "réunion",
        "frontière",
        "économie",
        "prix",
        "carburant",
        "élections",
        "opposition",
        "armée",
        "aéroport",
        "banque",
        "hôpital",
        "école",
        "route",
        "usine",
        "village",
        "région",
        "député",
        "syndicat",
        "grève",
        "tribunal",
        "enquête",
        "rapport",
        "budget",
        "exportations",
        "pétrole",
        "gaz",
        "réforme",
        "sommet",
        "accord",
        "sanctions",
        "diplomate",
        "ambassade",
        "journaliste",
        "témoin",
    ];
    let words: Vec<&str> = (0..12)
        .map(|k| WORDS[(i * 7 + k * 13 + i / 40) % WORDS.len()])
        .collect();
    format!("{topic} : {} (dépêche {i}).", words.join(" "))
}

/// `n` distinct articles about Kazakhstan (ids `prefix-i`), dated over the last 50 minutes.
pub fn kazakhstan_articles(prefix: &str, n: usize) -> Vec<Vec<u8>> {
    let now = chrono::Utc::now();
    (0..n)
        .map(|i| {
            article(
                &format!("{prefix}-{i}"),
                &format!("Kazakhstan: report {prefix} {i}"),
                &distinct_body(prefix, i),
                now - chrono::Duration::minutes((i % 50) as i64),
            )
        })
        .collect()
}

/// Waits until `rule` has counted `n` articles, lets two more seconds pass, and checks the
/// count is exactly `n`: none lost, none counted twice.
pub async fn assert_counted_exactly(cfg: &TestConfig, rule: &str, n: u64, timeout: Duration) {
    wait_for(&format!("{n} articles"), timeout, async || {
        series_total(cfg, rule, "articles")
            .await
            .filter(|c| *c >= n)
    })
    .await;
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert_eq!(
        series_total(cfg, rule, "articles").await,
        Some(n),
        "every article counted exactly once"
    );
}

/// One rule, `kazakhstan`, on the keyword Kazakhstan (what [`kazakhstan_articles`] hits).
pub const KAZAKHSTAN_RULE: &str = r#"
[[rule]]
id = "kazakhstan"
name = "Kazakhstan"
keywords = ["Kazakhstan"]
"#;
