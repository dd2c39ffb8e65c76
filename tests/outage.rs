//! A broker outage. The broker is Tansu with durable storage (SQLite through libsql, built by
//! `scripts/setup.sh --durable-broker`), so its topics outlive it, as Kafka's do. It is
//! stopped while vigie is reading a burst of articles, stays down, and comes back on the
//! same port and storage. vigie must stay up, report not-ready while the broker is gone,
//! and afterwards count every article exactly once.

mod common;

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use common::*;

const RULES: &str = KAZAKHSTAN_RULE;

fn durable_tansu() -> PathBuf {
    let bin = std::env::var_os("TANSU_DURABLE_BIN")
        .map(PathBuf::from)
        .unwrap_or_else(|| repo().join("var/tansu/bin/tansu"));
    assert!(
        bin.exists(),
        "{} not found: build it with `bash scripts/setup.sh --durable-broker` \
         (cargo install tansu --features dynostore,libsql)",
        bin.display()
    );
    bin
}

/// A Tansu process on a fixed port, storing its topics in `dir/tansu.db`.
struct Broker {
    child: Child,
}

impl Broker {
    fn start(dir: &Path, port: u16, tag: &str) -> Broker {
        let log = std::fs::File::create(dir.join(format!("tansu-{tag}.log"))).unwrap();
        let url = format!("tcp://127.0.0.1:{port}");
        let child = Command::new(durable_tansu())
            // Tansu mangles an absolute sqlite path; a relative one under the working
            // directory works.
            .current_dir(dir)
            .args([
                "broker",
                "--listener-url",
                &url,
                "--advertised-listener-url",
                &url,
            ])
            .args(["--storage-engine", "sqlite://tansu.db"])
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("start tansu");
        let deadline = Instant::now() + Duration::from_secs(20);
        while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
            assert!(Instant::now() < deadline, "tansu did not listen on {port}");
            std::thread::sleep(Duration::from_millis(100));
        }
        Broker { child }
    }

    /// A clean stop (SIGTERM), waited for.
    fn stop(mut self) {
        let _ = Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status();
        let deadline = Instant::now() + Duration::from_secs(15);
        while self.child.try_wait().unwrap().is_none() {
            if Instant::now() > deadline {
                let _ = self.child.kill();
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

impl Drop for Broker {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

async fn readyz(cfg: &TestConfig) -> Option<(u16, serde_json::Value)> {
    let r = reqwest::get(cfg.url("/readyz")).await.ok()?;
    let code = r.status().as_u16();
    Some((code, r.json().await.ok()?))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_broker_outage_is_reported_and_consumption_resumes_without_loss() {
    let store = tempfile::tempdir().unwrap();
    let port = free_port();
    let brokers = format!("127.0.0.1:{port}");
    let broker = Broker::start(store.path(), port, "first");
    let topic = unique("outage");
    create_topic(&brokers, &topic, 2).await;
    let cfg = TestConfig::new(&brokers, &topic, "", RULES, "");

    produce(&brokers, &topic, &kazakhstan_articles("a", 400)).await;
    let mut vigie = Vigie::start(&cfg, "run");
    wait_ready(&cfg, "vigie ready").await;
    wait_for("400 articles", Duration::from_secs(60), async || {
        series_total(&cfg, "kazakhstan", "articles")
            .await
            .filter(|n| *n >= 400)
    })
    .await;

    // A burst, and the broker goes away while vigie is reading it.
    produce(&brokers, &topic, &kazakhstan_articles("b", 3000)).await;
    broker.stop();
    let down_at = Instant::now();
    // Not ready at once (the consumer loses its partitions), and the probe names the cause.
    let (code, _) = wait_for("not ready", Duration::from_secs(30), async || {
        readyz(&cfg).await.filter(|(code, _)| *code == 503)
    })
    .await;
    assert_eq!(code, 503);
    let noticed = down_at.elapsed();
    wait_for(
        "broker reported unreachable",
        Duration::from_secs(30),
        async || {
            readyz(&cfg)
                .await
                .filter(|(code, body)| *code == 503 && body["broker_reachable"] == false)
        },
    )
    .await;

    // Down for a while: vigie stays up and keeps saying so.
    tokio::time::sleep(Duration::from_secs(8)).await;
    assert!(
        vigie.child.try_wait().unwrap().is_none(),
        "vigie exited during the outage:\n{}",
        vigie.log_text()
    );
    assert_eq!(readyz(&cfg).await.map(|r| r.0), Some(503));
    assert_eq!(metric(&cfg, "vigie_kafka_up", "").await, Some(0.0));

    // The broker returns with its storage; more articles arrive.
    let _broker = Broker::start(store.path(), port, "second");
    let up_at = Instant::now();
    wait_ready(&cfg, "ready again").await;
    let recovered = up_at.elapsed();
    produce(&brokers, &topic, &kazakhstan_articles("c", 500)).await;
    assert_counted_exactly(&cfg, "kazakhstan", 3900, Duration::from_secs(120)).await;
    let log = vigie.log_text();
    assert!(log.contains("kafka broker unreachable"), "{log}");
    assert!(log.contains("kafka broker reachable again"), "{log}");
    assert!(vigie.child.try_wait().unwrap().is_none());
    let (status, _) = vigie.terminate();
    assert!(status.success());
    eprintln!(
        "outage: not-ready reported {:.1} s after the stop; ready {:.1} s after the restart",
        noticed.as_secs_f64(),
        recovered.as_secs_f64()
    );
}
