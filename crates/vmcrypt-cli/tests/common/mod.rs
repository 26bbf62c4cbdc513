//! Shared helpers for the CLI tests: a private config per test, images made by qemu-img,
//! file digests to prove "unchanged".
#![allow(dead_code)]

use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

mod served;
#[allow(unused_imports)]
pub use served::*;

pub struct Env {
    pub dir: tempfile::TempDir,
}

impl Env {
    pub fn new() -> Env {
        Env {
            dir: tempfile::tempdir().expect("tempdir"),
        }
    }

    /// A copy of another test directory (config, keystores, disks and all).
    pub fn copy_of(other: &Env) -> Env {
        let e = Env::new();
        copy_dir(other.dir.path(), e.dir.path());
        // The config names keystores by absolute path: point them at the copy.
        let cfg = e.config();
        if let Ok(text) = std::fs::read_to_string(&cfg) {
            let from = other.dir.path().to_str().expect("utf8");
            let to = e.dir.path().to_str().expect("utf8");
            std::fs::write(&cfg, text.replace(from, to)).expect("rewrite config");
        }
        e
    }

    pub fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    pub fn config(&self) -> PathBuf {
        self.path("cfg/config.toml")
    }

    /// Runs vmcrypt with this test's config, no inherited VMCRYPT_* variables.
    pub fn run(&self, args: &[&str]) -> Output {
        self.run_env(args, &[])
    }

    pub fn run_env(&self, args: &[&str], env: &[(&str, &str)]) -> Output {
        self.command(args, env).output().expect("run vmcrypt")
    }

    /// The command [`Env::run_env`] runs, to spawn it instead.
    pub fn command(&self, args: &[&str], env: &[(&str, &str)]) -> Command {
        let mut c = Command::new(env!("CARGO_BIN_EXE_vmcrypt"));
        c.arg("--config")
            .arg(self.config())
            .args(args)
            .current_dir(self.dir.path());
        c.env_remove("VMCRYPT_PASSPHRASE")
            .env_remove("VMCRYPT_CONFIG")
            .env_remove("RUST_LOG");
        for (k, v) in env {
            c.env(k, v);
        }
        c
    }

    /// Runs and asserts the exit code, returning stdout.
    pub fn ok(&self, args: &[&str]) -> String {
        self.expect(args, 0)
    }

    pub fn expect(&self, args: &[&str], code: i32) -> String {
        let o = self.run(args);
        assert_eq!(
            o.status.code(),
            Some(code),
            "vmcrypt {args:?}\nstdout: {}\nstderr: {}",
            String::from_utf8_lossy(&o.stdout),
            String::from_utf8_lossy(&o.stderr)
        );
        String::from_utf8_lossy(&o.stdout).into_owned()
    }

    /// A raw image of `size` bytes made by qemu-img and filled with a pattern.
    pub fn raw_image(&self, name: &str, size: u64) -> PathBuf {
        let p = self.path(name);
        qemu_img(&[
            "create",
            "-q",
            "-f",
            "raw",
            p.to_str().expect("utf8"),
            &size.to_string(),
        ]);
        fill(&p, size, name.len() as u8);
        p
    }

    /// A monolithicFlat VMDK made by qemu-img, its extent filled with a pattern.
    pub fn vmdk(&self, name: &str, size: u64) -> PathBuf {
        let p = self.path(name);
        qemu_img(&[
            "create",
            "-q",
            "-f",
            "vmdk",
            "-o",
            "subformat=monolithicFlat",
            p.to_str().expect("utf8"),
            &size.to_string(),
        ]);
        let base = p.file_name().and_then(|n| n.to_str()).expect("utf8 name");
        let flat = p.with_file_name(format!("{}-flat.vmdk", base.trim_end_matches(".vmdk")));
        fill(&flat, size, 0x5a);
        p
    }
}

/// Writes a non-trivial pattern over the first `size` bytes (every sector distinct).
pub fn fill(p: &Path, size: u64, seed: u8) {
    let data: Vec<u8> = (0..size)
        .map(|i| ((i / 512) as u8).wrapping_mul(37) ^ (i as u8) ^ seed)
        .collect();
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .open(p)
        .expect("open image");
    std::io::Write::write_all(&mut f, &data).expect("fill image");
}

pub fn qemu_img(args: &[&str]) -> Output {
    let o = Command::new("qemu-img").args(args).output().unwrap_or_else(|e| {
        panic!("qemu-img is needed by these tests and could not be run ({e}); install it with `apt-get install qemu-utils`")
    });
    assert!(
        o.status.success(),
        "qemu-img {args:?}: {}",
        String::from_utf8_lossy(&o.stderr)
    );
    o
}

/// `qemu-img compare` says identical.
pub fn assert_identical(a: &Path, b: &Path) {
    let o = qemu_img(&[
        "compare",
        a.to_str().expect("utf8"),
        b.to_str().expect("utf8"),
    ]);
    assert!(
        String::from_utf8_lossy(&o.stdout).contains("identical"),
        "{:?}",
        o
    );
}

/// Every file in a directory with a digest of its bytes and its mode, to prove nothing changed.
pub fn snapshot(dir: &Path) -> Vec<(String, u64, u32)> {
    use std::hash::{Hash, Hasher};
    use std::os::unix::fs::PermissionsExt;
    let mut v: Vec<(String, u64, u32)> = walk(dir)
        .into_iter()
        .map(|p| {
            let mut h = std::collections::hash_map::DefaultHasher::new();
            std::fs::read(&p).expect("read").hash(&mut h);
            let mode = std::fs::metadata(&p).expect("meta").permissions().mode();
            (
                p.strip_prefix(dir).expect("prefix").display().to_string(),
                h.finish(),
                mode,
            )
        })
        .collect();
    v.sort();
    v
}

fn walk(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    for e in std::fs::read_dir(dir).expect("read_dir") {
        let p = e.expect("entry").path();
        if p.is_dir() {
            out.extend(walk(&p));
        } else if p.is_file() {
            // Regular files only: an agent's socket has no bytes to compare.
            out.push(p);
        }
    }
    out
}

pub fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

pub fn json(s: &str) -> serde_json::Value {
    serde_json::from_str(s.trim()).unwrap_or_else(|e| panic!("not JSON ({e}): {s}"))
}

fn copy_dir(from: &Path, to: &Path) {
    use std::os::unix::fs::PermissionsExt;
    std::fs::create_dir_all(to).expect("mkdir");
    for e in std::fs::read_dir(from).expect("read_dir") {
        let p = e.expect("entry").path();
        let dst = to.join(p.file_name().expect("name"));
        if p.is_dir() {
            copy_dir(&p, &dst);
        } else {
            std::fs::copy(&p, &dst).expect("copy");
            let mode = std::fs::metadata(&p).expect("meta").permissions().mode();
            std::fs::set_permissions(&dst, std::fs::Permissions::from_mode(mode)).expect("chmod");
        }
    }
}

/// Changes one base64 character of a locator's pair data, at or after `from`, skipping `%xx`
/// escapes, so the data stays valid base64 and only the wrapped bytes change.
pub fn flip_base64_char(locator: &str, from: usize) -> String {
    let b = locator.as_bytes();
    let pos = (from..b.len())
        .find(|&i| b[i].is_ascii_alphanumeric() && b[i - 1] != b'%' && b[i - 2] != b'%')
        .expect("a base64 character to change");
    let mut out = b.to_vec();
    out[pos] = if out[pos] == b'A' { b'B' } else { b'A' };
    String::from_utf8(out).expect("ascii")
}

/// A vmcrypt job held at its `locked` pause point (just after it took its locks), and the
/// file whose removal lets it go on.
pub struct Held {
    pub child: Child,
    file: PathBuf,
    _dir: tempfile::TempDir,
}

pub fn hold(e: &Env, args: &[&str]) -> Held {
    let dir = tempfile::tempdir().expect("tempdir");
    let file = dir.path().join("paused");
    let f = file.to_str().expect("utf8").to_string();
    let mut child = e
        .command(
            args,
            &[("VMCRYPT_PAUSE_AT", "locked"), ("VMCRYPT_PAUSE_FILE", &f)],
        )
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn vmcrypt");
    let until = Instant::now() + Duration::from_secs(60);
    while !file.exists() {
        if let Some(status) = child.try_wait().expect("wait") {
            let mut err = String::new();
            if let Some(mut s) = child.stderr.take() {
                let _ = s.read_to_string(&mut err);
            }
            panic!("vmcrypt {args:?} ended ({status}) before it held its locks: {err}");
        }
        assert!(
            Instant::now() < until,
            "vmcrypt {args:?} never reached its locks"
        );
        std::thread::sleep(Duration::from_millis(5));
    }
    Held {
        child,
        file,
        _dir: dir,
    }
}

/// Sends SIGINT to a held job (it stays held until released).
pub fn interrupt(h: &Held) {
    let ok = Command::new("kill")
        .args(["-INT", &h.child.id().to_string()])
        .status()
        .expect("kill");
    assert!(ok.success());
}

pub fn release(h: Held) -> Output {
    std::fs::remove_file(&h.file).expect("release");
    h.child.wait_with_output().expect("wait")
}

/// A small xorshift: random offsets and crash points, repeatable from the seed.
pub struct Rng(pub u64);

impl Rng {
    pub fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
}

/// `vmcrypt [ARGS...] agent serve --socket SOCKET [SERVE_ARGS...]` with this test's config,
/// once it accepts connections; stopped with SIGTERM (or killed) on drop.
pub struct AgentServer {
    pub child: Child,
}

impl AgentServer {
    pub fn start(e: &Env, global: &[&str], socket: &Path, serve: &[&str]) -> AgentServer {
        let child = Command::new(env!("CARGO_BIN_EXE_vmcrypt"))
            .arg("--config")
            .arg(e.config())
            .args(global)
            .args(["agent", "serve", "--socket"])
            .arg(socket)
            .args(serve)
            .env_remove("VMCRYPT_AGENT")
            .env_remove("RUST_LOG")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start the agent");
        let a = AgentServer { child };
        let deadline = Instant::now() + Duration::from_secs(20);
        while std::os::unix::net::UnixStream::connect(socket).is_err() {
            assert!(Instant::now() < deadline, "the agent did not start");
            std::thread::sleep(Duration::from_millis(20));
        }
        a
    }

    /// SIGTERM, and wait for the agent to exit.
    pub fn stop(mut self) {
        let _ = Command::new("kill")
            .arg(self.child.id().to_string())
            .status();
        let _ = self.child.wait();
    }
}

impl Drop for AgentServer {
    fn drop(&mut self) {
        if matches!(self.child.try_wait(), Ok(None)) {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

/// A test cluster's CA, client certificate and client key, for `provider add-kmip`'s
/// `--ca`, `--cert` and `--key`.
pub fn tls_files(c: &vmcrypt_testkit::pykmip::Cluster) -> (&str, &str, &str) {
    (
        c.pki.ca.to_str().expect("utf8"),
        c.pki.client_cert.to_str().expect("utf8"),
        c.pki.client_key.to_str().expect("utf8"),
    )
}
