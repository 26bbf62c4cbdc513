//! Real PyKMIP servers for the tests.

use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use crate::pki::Pki;

const REQUIREMENTS: &str = include_str!("../python/requirements.txt");
const LAUNCHER: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/python/kmip_server.py");
/// Servers stop by themselves after this long even if the test process survives.
const LIFETIME_SECS: u32 = 1800;

/// A running cluster: `servers` share one database, so a key created through one is served by
/// all. Stopped on drop; also stops by itself when the test process exits.
pub struct Cluster {
    pub servers: Vec<String>,
    pub pki: Pki,
    pub dir: PathBuf,
    children: Vec<Child>,
    _tmp: tempfile::TempDir,
}

/// The interpreter to run PyKMIP with, and the PYTHONPATH it needs (if not a venv).
fn python_env() -> (PathBuf, Option<PathBuf>) {
    let venv = crate::target_dir().join("pykmip-venv");
    let stamp = venv.join(".requirements");
    let ready = || {
        let py = venv.join("bin/python");
        if py.exists() {
            (py, None)
        } else {
            (PathBuf::from("python3"), Some(venv.join("site")))
        }
    };
    if std::fs::read_to_string(&stamp).is_ok_and(|s| s == REQUIREMENTS) {
        return ready();
    }
    std::fs::create_dir_all(&venv).expect("create target/pykmip-venv");
    // One installer at a time across test processes.
    let lock = std::fs::File::create(venv.with_extension("lock")).expect("lock file");
    lock.lock().expect("lock target/pykmip-venv");
    if std::fs::read_to_string(&stamp).is_ok_and(|s| s == REQUIREMENTS) {
        return ready();
    }
    let req = venv.join("requirements.txt");
    std::fs::write(&req, REQUIREMENTS).expect("requirements");
    let pip_env = [
        ("PIP_DISABLE_PIP_VERSION_CHECK", "1"),
        ("PIP_ROOT_USER_ACTION", "ignore"),
    ];
    let venv_ok = Command::new("python3")
        .args(["-m", "venv"])
        .arg(&venv)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .unwrap_or_else(|e| {
            panic!(
                "python3 is needed to run the PyKMIP test servers ({e}); install python3 and pip"
            )
        })
        .success()
        && venv.join("bin/pip").exists();
    let out = if venv_ok {
        Command::new(venv.join("bin/python"))
            .args([
                "-m",
                "pip",
                "install",
                "--quiet",
                "--only-binary",
                "cryptography,cffi",
                "-r",
            ])
            .arg(&req)
            .envs(pip_env)
            .output()
    } else {
        // Debian without python3-venv: a plain target directory on PYTHONPATH.
        let _ = std::fs::remove_dir_all(venv.join("bin"));
        Command::new("python3")
            .args([
                "-m",
                "pip",
                "install",
                "--quiet",
                "--no-warn-script-location",
                "--only-binary",
                "cryptography,cffi",
                "--target",
            ])
            .arg(venv.join("site"))
            .arg("-r")
            .arg(&req)
            .envs(pip_env)
            .output()
    }
    .expect("run pip");
    assert!(
        out.status.success(),
        "installing PyKMIP into {} failed (needs python3 with pip and PyPI access): {}",
        venv.display(),
        String::from_utf8_lossy(&out.stderr)
    );
    std::fs::write(&stamp, REQUIREMENTS).expect("stamp");
    ready()
}

/// A port nothing listens on right now.
pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("free port")
        .port()
}

impl Cluster {
    /// Starts `count` servers sharing one database, with a fresh PKI.
    pub fn start(count: usize) -> Cluster {
        let tmp = tempfile::Builder::new()
            .prefix("vmcrypt-kms-")
            .tempdir()
            .expect("tempdir");
        let dir = tmp.path().to_path_buf();
        let pki = Pki::generate(&dir.join("pki"));
        let (python, pythonpath) = python_env();
        let db = dir.join("kms.db");
        std::fs::create_dir_all(dir.join("logs")).expect("logs dir");
        let mut children = Vec::new();
        let mut port_files = Vec::new();
        for i in 0..count {
            let port_file = dir.join(format!("port-{i}"));
            let log = dir.join("logs").join(format!("server-{i}.log"));
            let mut cmd = Command::new(&python);
            cmd.arg(LAUNCHER)
                .arg("--port-file")
                .arg(&port_file)
                .arg("--cert")
                .arg(&pki.server_cert)
                .arg("--key")
                .arg(&pki.server_key)
                .arg("--ca")
                .arg(&pki.ca)
                .arg("--db")
                .arg(&db)
                .arg("--log")
                .arg(&log)
                .arg("--policies")
                .arg(dir.join("policies"))
                .args([
                    "--owner",
                    &std::process::id().to_string(),
                    "--lifetime",
                    &LIFETIME_SECS.to_string(),
                ])
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(
                    std::fs::File::create(dir.join("logs").join(format!("stderr-{i}.log")))
                        .expect("stderr log"),
                );
            if let Some(pp) = &pythonpath {
                cmd.env("PYTHONPATH", pp);
            }
            children.push(cmd.spawn().expect("start PyKMIP"));
            port_files.push(port_file);
        }
        let mut c = Cluster {
            servers: Vec::new(),
            pki,
            dir,
            children,
            _tmp: tmp,
        };
        c.wait_ready(&port_files, Duration::from_secs(90));
        c
    }

    /// Waits for each server to report the port it bound (the kernel picks it: a port chosen
    /// here could be taken by another test process before the server binds it), then to
    /// accept connections.
    fn wait_ready(&mut self, port_files: &[PathBuf], limit: Duration) {
        let deadline = Instant::now() + limit;
        for (i, file) in port_files.iter().enumerate() {
            let port = loop {
                if let Some(port) = std::fs::read_to_string(file)
                    .ok()
                    .and_then(|s| s.trim().parse::<u16>().ok())
                {
                    break port;
                }
                if let Ok(Some(status)) = self.children[i].try_wait() {
                    panic!("PyKMIP server {i} exited ({status}): {}", self.log(i));
                }
                assert!(
                    Instant::now() < deadline,
                    "PyKMIP server {i} did not bind a port after {limit:?}: {}",
                    self.log(i)
                );
                std::thread::sleep(Duration::from_millis(50));
            };
            self.servers.push(format!("127.0.0.1:{port}"));
        }
        for (i, s) in self.servers.clone().iter().enumerate() {
            loop {
                if TcpStream::connect_timeout(&s.parse().expect("addr"), Duration::from_millis(200))
                    .is_ok()
                {
                    break;
                }
                if let Ok(Some(status)) = self.children[i].try_wait() {
                    panic!("PyKMIP server {s} exited ({status}): {}", self.log(i));
                }
                assert!(
                    Instant::now() < deadline,
                    "PyKMIP server {s} not ready after {limit:?}: {}",
                    self.log(i)
                );
                std::thread::sleep(Duration::from_millis(50));
            }
        }
    }

    /// The stderr and log of server `i`, for failure messages.
    pub fn log(&self, i: usize) -> String {
        let read = |p: &Path| std::fs::read_to_string(p).unwrap_or_default();
        format!(
            "{}\n{}",
            read(&self.dir.join("logs").join(format!("stderr-{i}.log"))),
            read(&self.dir.join("logs").join(format!("server-{i}.log")))
        )
    }

    /// Stops server `i` (it then refuses connections).
    pub fn stop_server(&mut self, i: usize) {
        stop(&mut self.children[i]);
    }

    /// Stops every server and deletes the cluster's database: the KMS is lost for good.
    pub fn destroy(&mut self) {
        for c in &mut self.children {
            stop(c);
        }
        let db = self.dir.join("kms.db");
        std::fs::remove_file(&db).expect("delete the KMS database");
        assert!(!db.exists());
    }
}

fn stop(child: &mut Child) {
    use rustix::process::{Pid, Signal, kill_process_group};
    if let Ok(Some(_)) = child.try_wait() {
        return;
    }
    // The launcher leads its own process group: stop it with its helpers. (Not through
    // kill(1): procps reads `kill -INT -1234` as signal 1234's prefix and pid -1, which
    // signals every process of the user.)
    let group = i32::try_from(child.id()).ok().and_then(Pid::from_raw);
    if let Some(pgid) = group {
        let _ = kill_process_group(pgid, Signal::INT);
        for _ in 0..50 {
            if let Ok(Some(_)) = child.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        let _ = kill_process_group(pgid, Signal::KILL);
    }
    let _ = child.kill();
    let _ = child.wait();
}

/// Sends SIGTERM to a child (a clean-shutdown request).
pub fn terminate(child: &Child) {
    use rustix::process::{Pid, Signal, kill_process};
    if let Some(pid) = i32::try_from(child.id()).ok().and_then(Pid::from_raw) {
        let _ = kill_process(pid, Signal::TERM);
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        for c in &mut self.children {
            stop(c);
        }
    }
}

/// One cluster of three servers per test process, started on first use. Statics are never
/// dropped: the servers notice the test process is gone and exit by themselves.
pub fn shared() -> &'static Cluster {
    static CLUSTER: OnceLock<Cluster> = OnceLock::new();
    CLUSTER.get_or_init(|| Cluster::start(3))
}
