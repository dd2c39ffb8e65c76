//! A real SMTP server for tests: aiosmtpd (Python) writing a Maildir.
#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

pub struct Smtp {
    pub port: u16,
    pub maildir: PathBuf,
    child: Option<Child>,
}

impl Smtp {
    /// Starts aiosmtpd on `port`, storing mail under `maildir`.
    pub fn start(port: u16, maildir: &Path) -> Smtp {
        let mut s = Smtp {
            port,
            maildir: maildir.to_path_buf(),
            child: None,
        };
        s.restart();
        s
    }

    pub fn restart(&mut self) {
        for sub in ["new", "cur", "tmp"] {
            std::fs::create_dir_all(self.maildir.join(sub)).unwrap();
        }
        let child = Command::new(std::env::var("PYTHON").unwrap_or_else(|_| "python3".into()))
            .args([
                "-m",
                "aiosmtpd",
                "-n",
                "-l",
                &format!("127.0.0.1:{}", self.port),
                "-c",
                "aiosmtpd.handlers.Mailbox",
            ])
            .arg(&self.maildir)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start aiosmtpd (pip install aiosmtpd)");
        self.child = Some(child);
        let deadline = Instant::now() + Duration::from_secs(15);
        while std::net::TcpStream::connect(("127.0.0.1", self.port)).is_err() {
            assert!(Instant::now() < deadline, "aiosmtpd did not start");
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    pub fn stop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// Raw messages received so far.
    pub fn messages(&self) -> Vec<String> {
        let mut out = Vec::new();
        for sub in ["new", "cur"] {
            if let Ok(rd) = std::fs::read_dir(self.maildir.join(sub)) {
                for e in rd.flatten() {
                    out.push(std::fs::read_to_string(e.path()).unwrap_or_default());
                }
            }
        }
        out
    }
}

impl Drop for Smtp {
    fn drop(&mut self) {
        self.stop();
    }
}
