//! Faults of the machine under a running service.
//!
//! A full disk under the state file: vigie must stop consuming without committing offsets
//! it could not persist, say so, and after space returns a restart must count every article
//! exactly once from an intact state file. The disk is a real tmpfs of a few megabytes
//! (mounting needs root, which the CI machines have; set VIGIE_NO_MOUNT=1 to skip there).
//!
//! A disk that turns read-only under the service: an ext4 file system on a loop device,
//! mounted `errors=remount-ro` as servers usually are, is sent an error through
//! `/sys/fs/ext4/<dev>/trigger_fs_error`, so every later write fails as on a failing disk.
//! (A plain `mount -o remount,ro` is refused while SQLite holds the file open for writing.)

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use common::*;

const RULES: &str = KAZAKHSTAN_RULE;

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

/// An ext4 file system in a file, on a loop device; unmounted on drop.
struct LoopDisk {
    image: tempfile::NamedTempFile,
    dir: tempfile::TempDir,
}

impl LoopDisk {
    fn create(mib: u32) -> LoopDisk {
        let image = tempfile::NamedTempFile::new().unwrap();
        image.as_file().set_len(u64::from(mib) << 20).unwrap();
        run(
            "mkfs.ext4",
            &["-q", "-F", &image.path().display().to_string()],
        );
        let disk = LoopDisk {
            image,
            dir: tempfile::tempdir().unwrap(),
        };
        disk.mount("rw");
        disk
    }

    fn mount(&self, mode: &str) {
        run(
            "mount",
            &[
                "-o",
                &format!("loop,{mode},errors=remount-ro"),
                &self.image.path().display().to_string(),
                &self.dir.path().display().to_string(),
            ],
        );
    }

    fn unmount(&self) {
        run("umount", &[&self.dir.path().display().to_string()]);
    }

    /// The loop device's name (`loop3`), read from the mount table.
    fn device(&self) -> String {
        let mounts = std::fs::read_to_string("/proc/self/mounts").unwrap();
        let dir = self.dir.path().display().to_string();
        let line = mounts
            .lines()
            .find(|l| l.split(' ').nth(1) == Some(dir.as_str()))
            .expect("the loop disk is mounted");
        line.split(' ')
            .next()
            .unwrap()
            .trim_start_matches("/dev/")
            .to_string()
    }

    /// What a failing disk does to a server's file system: an error, after which ext4
    /// refuses every write.
    fn fail(&self) {
        let knob = format!("/sys/fs/ext4/{}/trigger_fs_error", self.device());
        std::fs::write(&knob, "vigie fault test\n").expect("trigger an ext4 error");
    }

    /// What an operator does after such an error: unmount, check and repair, mount again.
    fn repair(&self) {
        self.unmount();
        let st = Command::new("e2fsck")
            .args(["-f", "-y"])
            .arg(self.image.path())
            .status()
            .unwrap();
        // 0: clean; 1: errors corrected.
        assert!(matches!(st.code(), Some(0 | 1)), "e2fsck: {st}");
    }

    fn path(&self) -> &Path {
        self.dir.path()
    }
}

impl Drop for LoopDisk {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg(self.dir.path()).status();
    }
}

fn run(cmd: &str, args: &[&str]) {
    let st = Command::new(cmd).args(args).status().expect(cmd);
    assert!(
        st.success(),
        "{cmd} {args:?}: {st} (needs root; VIGIE_NO_MOUNT=1 skips)"
    );
}

/// A test config whose state file lives at `state`.
fn config_with_state(brokers: &str, topic: &str, state: &Path) -> TestConfig {
    let cfg = TestConfig::new(brokers, topic, "", RULES, "");
    let toml = std::fs::read_to_string(cfg.path().join("vigie.toml"))
        .unwrap()
        .replace(
            &format!("path = \"{}\"", cfg.path().join("state/vigie.db").display()),
            &format!("path = \"{}\"", state.display()),
        );
    std::fs::write(cfg.path().join("vigie.toml"), toml).unwrap();
    cfg
}

/// Waits for the process to exit on its own; None if it is still running at the deadline.
async fn exit_within(vigie: &mut Vigie, timeout: Duration) -> Option<std::process::ExitStatus> {
    let deadline = std::time::Instant::now() + timeout;
    loop {
        if let Some(st) = vigie.child.try_wait().unwrap() {
            return Some(st);
        }
        if std::time::Instant::now() > deadline {
            return None;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// The process must stop by itself, say why, and exit with a failure code.
async fn stops_for_the_state_file(vigie: &mut Vigie) {
    let status = exit_within(vigie, Duration::from_secs(60)).await;
    let log = vigie.log_text();
    assert!(
        log.contains("cannot write the state file"),
        "the failure is reported:\n{log}"
    );
    let status = status.expect("vigie stops when it cannot persist");
    assert!(!status.success(), "and exits with a failure code");
}

fn integrity(state: &Path) -> String {
    let db = rusqlite::Connection::open(state).unwrap();
    db.query_row("PRAGMA integrity_check", [], |r| r.get(0))
        .unwrap()
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
    let state = disk.path().join("vigie.db");
    let cfg = config_with_state(&brokers, &topic, &state);

    produce(&brokers, &topic, &kazakhstan_articles("a", 300)).await;
    let vigie = Vigie::start(&cfg, "before");
    wait_for("300 articles", Duration::from_secs(60), async || {
        series_total(&cfg, "kazakhstan", "articles")
            .await
            .filter(|n| *n >= 300)
    })
    .await;

    // The disk fills up; more articles arrive.
    let filler = disk.fill();
    produce(&brokers, &topic, &kazakhstan_articles("b", 3000)).await;
    let mut vigie = vigie;
    stops_for_the_state_file(&mut vigie).await;
    drop(vigie);

    // Space comes back; a restart picks up where the state file says.
    std::fs::remove_file(filler).unwrap();
    let vigie = Vigie::start(&cfg, "after");
    assert_counted_exactly(&cfg, "kazakhstan", 3300, Duration::from_secs(90)).await;
    let (status, _) = vigie.terminate();
    assert!(status.success());
    assert_eq!(integrity(&state), "ok");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_disk_turning_read_only_stops_consumption_and_nothing_is_lost_after_repair() {
    if std::env::var_os("VIGIE_NO_MOUNT").is_some() {
        eprintln!("VIGIE_NO_MOUNT set: read-only disk test skipped");
        return;
    }
    let disk = LoopDisk::create(32);
    let brokers = broker();
    let topic = unique("rodisk");
    create_topic(&brokers, &topic, 2).await;
    let state = disk.path().join("vigie.db");
    let cfg = config_with_state(&brokers, &topic, &state);

    produce(&brokers, &topic, &kazakhstan_articles("a", 300)).await;
    let mut vigie = Vigie::start(&cfg, "before");
    wait_for("300 articles", Duration::from_secs(60), async || {
        series_total(&cfg, "kazakhstan", "articles")
            .await
            .filter(|n| *n >= 300)
    })
    .await;

    // The disk fails and ext4 turns it read-only; more articles arrive.
    disk.fail();
    produce(&brokers, &topic, &kazakhstan_articles("b", 3000)).await;
    stops_for_the_state_file(&mut vigie).await;
    drop(vigie);

    // Still read-only when the service is started again (say, by systemd): it refuses to
    // run, naming the file, instead of consuming what it could not record.
    disk.repair();
    disk.mount("ro");
    let mut vigie = Vigie::start(&cfg, "readonly");
    let status = exit_within(&mut vigie, Duration::from_secs(30))
        .await
        .expect("vigie refuses to start on a read-only state file");
    assert!(!status.success());
    let log = vigie.log_text();
    assert!(
        log.contains(&state.display().to_string()) && log.to_lowercase().contains("read-only"),
        "the error names the file and the cause:\n{log}"
    );
    drop(vigie);

    // Writable again: a restart counts every article exactly once.
    disk.unmount();
    disk.mount("rw");
    let vigie = Vigie::start(&cfg, "after");
    assert_counted_exactly(&cfg, "kazakhstan", 3300, Duration::from_secs(90)).await;
    let (status, _) = vigie.terminate();
    assert!(status.success());
    assert_eq!(integrity(&state), "ok");
}
