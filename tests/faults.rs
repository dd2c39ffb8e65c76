//! Faults of the machine under a running service.
//!
//! A full disk under the state file: vigie must stop consuming without committing offsets
//! it could not persist, say so, and after space returns a restart must count every article
//! exactly once from an intact state file. The disk is a real tmpfs of a few megabytes
//! (mounting needs root, which the CI machines have; set VIGIE_NO_MOUNT=1 to skip there).

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use chrono::Utc;
use common::*;

const RULES: &str = r#"
[[rule]]
id = "kazakhstan"
name = "Kazakhstan"
keywords = ["Kazakhstan"]
"#;

/// A small tmpfs, unmounted on drop.
struct SmallDisk {
    dir: tempfile::TempDir,
}

impl SmallDisk {
    fn mount(kib: u32) -> SmallDisk {
        let dir = tempfile::tempdir().unwrap();
        let st = Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={kib}k"), "tmpfs"])
            .arg(dir.path())
            .status()
            .expect("run mount");
        assert!(
            st.success(),
            "cannot mount a tmpfs (needs root); set VIGIE_NO_MOUNT=1 to skip this test"
        );
        SmallDisk { dir }
    }

    fn path(&self) -> &Path {
        self.dir.path()
    }

    /// Fills the disk with a file; returns its path.
    fn fill(&self) -> PathBuf {
        use std::io::Write;
        let p = self.path().join("filler");
        let mut f = std::fs::File::create(&p).unwrap();
        let block = vec![0u8; 4096];
        while f.write_all(&block).is_ok() {}
        let _ = f.sync_all();
        p
    }
}

impl Drop for SmallDisk {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg(self.dir.path()).status();
    }
}

fn batch(prefix: &str, n: usize) -> Vec<Vec<u8>> {
    let now = Utc::now();
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

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_disk_stops_consumption_and_a_restart_loses_nothing() {
    if std::env::var_os("VIGIE_NO_MOUNT").is_some() {
        eprintln!("VIGIE_NO_MOUNT set: full-disk test skipped");
        return;
    }
    let disk = SmallDisk::mount(3 * 1024);
    let brokers = broker();
    let topic = unique("fulldisk");
    create_topic(&brokers, &topic, 2).await;
    let cfg = TestConfig::new(&brokers, &topic, "", RULES, "");
    let state = disk.path().join("vigie.db");
    let toml = std::fs::read_to_string(cfg.path().join("vigie.toml"))
        .unwrap()
        .replace(
            &format!("path = \"{}\"", cfg.path().join("state/vigie.db").display()),
            &format!("path = \"{}\"", state.display()),
        );
    std::fs::write(cfg.path().join("vigie.toml"), toml).unwrap();

    produce(&brokers, &topic, &batch("a", 300)).await;
    let vigie = Vigie::start(&cfg, "before");
    wait_for("300 articles", Duration::from_secs(60), async || {
        series_total(&cfg, "kazakhstan", "articles")
            .await
            .filter(|n| *n >= 300)
    })
    .await;

    // The disk fills up; more articles arrive.
    let filler = disk.fill();
    produce(&brokers, &topic, &batch("b", 3000)).await;
    let mut vigie = vigie;
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    let status = loop {
        if let Some(st) = vigie.child.try_wait().unwrap() {
            break Some(st);
        }
        if std::time::Instant::now() > deadline {
            break None;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    let log = vigie.log_text();
    assert!(
        log.contains("cannot write the state file"),
        "the failure is reported:\n{log}"
    );
    let status = status.expect("vigie stops when it cannot persist");
    assert!(!status.success(), "and exits with a failure code");
    drop(vigie);

    // Space comes back; a restart picks up where the state file says.
    std::fs::remove_file(filler).unwrap();
    let vigie = Vigie::start(&cfg, "after");
    wait_for("3300 articles", Duration::from_secs(90), async || {
        series_total(&cfg, "kazakhstan", "articles")
            .await
            .filter(|n| *n >= 3300)
    })
    .await;
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert_eq!(
        series_total(&cfg, "kazakhstan", "articles").await,
        Some(3300),
        "every article counted exactly once"
    );
    let (status, _) = vigie.terminate();
    assert!(status.success());
    let db = rusqlite::Connection::open(&state).unwrap();
    let check: String = db
        .query_row("PRAGMA integrity_check", [], |r| r.get(0))
        .unwrap();
    assert_eq!(check, "ok");
}
