//! `vmcrypt serve` for the tests that use a served disk: the server process, and qemu-io as
//! its client.

use std::io::Read;
use std::path::PathBuf;
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use super::{Env, stderr};

/// A running `vmcrypt serve` and its socket.
pub struct Served {
    pub child: Child,
    pub socket: PathBuf,
}

impl Served {
    pub fn start(e: &Env, disk: &str, extra: &[&str]) -> Served {
        let socket = e.path(&format!("{disk}.sock"));
        let sock = socket.to_str().expect("utf8").to_string();
        let mut args = vec!["--nbd", &sock, "--stall-timeout", "1"];
        args.extend_from_slice(extra);
        Served::start_with(e, disk, &args, &socket)
    }

    /// `vmcrypt serve DISK ARGS...`, once `socket` is listening.
    pub fn start_with(e: &Env, disk: &str, extra: &[&str], socket: &std::path::Path) -> Served {
        let socket = socket.to_path_buf();
        // A server killed with -9 leaves its socket behind: without this, the wait below
        // would see the stale socket and connect before the new server listens.
        match std::fs::remove_file(&socket) {
            Ok(()) => {}
            Err(err) if err.kind() == std::io::ErrorKind::NotFound => {}
            Err(err) => panic!("remove the stale socket {}: {err}", socket.display()),
        }
        let mut args = vec!["serve", disk];
        args.extend_from_slice(extra);
        let mut child = e
            .command(&args, &[])
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn vmcrypt serve");
        let until = Instant::now() + Duration::from_secs(30);
        // The socket appears (renamed into place) once it is listening.
        while !socket.exists() {
            if let Some(status) = child.try_wait().expect("wait") {
                let mut err = String::new();
                if let Some(mut s) = child.stderr.take() {
                    let _ = s.read_to_string(&mut err);
                }
                panic!("vmcrypt serve ended ({status}) before listening: {err}");
            }
            assert!(Instant::now() < until, "vmcrypt serve never listened");
            std::thread::sleep(Duration::from_millis(10));
        }
        Served { child, socket }
    }

    pub fn uri(&self) -> String {
        format!("nbd+unix:///?socket={}", self.socket.display())
    }

    pub fn signal(&self, sig: &str) {
        let ok = Command::new("kill")
            .args([sig, &self.child.id().to_string()])
            .status()
            .expect("kill");
        assert!(ok.success());
    }

    /// SIGTERM: the server drains, flushes, unlocks and exits 0.
    pub fn stop(self) -> Output {
        self.signal("-TERM");
        let started = Instant::now();
        let out = self.child.wait_with_output().expect("wait");
        assert!(
            started.elapsed() < Duration::from_secs(10),
            "stopping took {:?}",
            started.elapsed()
        );
        assert_eq!(out.status.code(), Some(0), "serve: {}", stderr(&out));
        assert!(!self.socket.exists(), "the socket is removed");
        out
    }
}

/// Runs qemu-io on `uri` with these commands; every one must succeed (a failed pattern check
/// is a failure).
pub fn qemu_io(uri: &str, cmds: &[String]) -> String {
    let out = qemu_io_raw(uri, cmds, &[]);
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        out.status.success() && !text.contains("failed") && !text.contains("error"),
        "qemu-io {cmds:?}: {text}"
    );
    text
}

pub fn qemu_io_raw(uri: &str, cmds: &[String], flags: &[&str]) -> Output {
    let mut c = Command::new("qemu-io");
    c.args(flags).args(["-f", "raw"]);
    for cmd in cmds {
        c.arg("-c").arg(cmd);
    }
    c.arg(uri).output().unwrap_or_else(|e| {
        panic!("qemu-io is needed by these tests and could not be run ({e}); install it with `apt-get install qemu-utils`")
    })
}
