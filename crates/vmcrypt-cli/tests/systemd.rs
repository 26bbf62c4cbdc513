//! The systemd units in dist/systemd are what systemd accepts, and the processes they start
//! do what the units promise: the agent takes the socket systemd listens on (socket
//! activation) and leaves it for the next start, and the agent and `vmcrypt serve` report
//! READY=1 and STOPPING=1 (`Type=notify`). Activation is done the way systemd does it, by a
//! small activator (Python, which the suite already needs) that binds the socket, passes it as
//! descriptor 3 and sets LISTEN_PID and LISTEN_FDS.

mod common;

use std::io::{BufRead, BufReader};
use std::os::unix::net::{UnixDatagram, UnixStream};
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, ChildStdout, Command, Stdio};
use std::time::{Duration, Instant};

use common::*;

fn unit(name: &str) -> String {
    let p = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../../dist/systemd")
        .join(name);
    std::fs::read_to_string(&p).unwrap_or_else(|e| panic!("{}: {e}", p.display()))
}

/// `key=value` of a unit's section, in order (a key may repeat).
fn section(text: &str, name: &str) -> Vec<(String, String)> {
    let mut inside = false;
    let mut out = Vec::new();
    for line in text.lines().map(str::trim) {
        if line.starts_with('[') {
            inside = line == format!("[{name}]");
        } else if inside && !line.is_empty() && !line.starts_with('#') {
            let (k, v) = line.split_once('=').expect("key=value");
            out.push((k.trim().to_string(), v.trim().to_string()));
        }
    }
    out
}

fn value(text: &str, sect: &str, key: &str) -> String {
    section(text, sect)
        .into_iter()
        .find(|(k, _)| k == key)
        .map(|(_, v)| v)
        .unwrap_or_else(|| panic!("no {key}= in [{sect}]"))
}

/// Every unit parses as `[Section]` and `key=value` lines, names the binary where a package
/// puts it, and sets what docs/agent.md promises; with systemd-analyze on the machine, systemd
/// itself verifies them (any warning fails the test).
#[test]
fn the_units_are_well_formed_and_systemd_verifies_them() {
    let agent = unit("vmcrypt-agent.service");
    let socket = unit("vmcrypt-agent.socket");
    let serve = unit("vmcrypt-serve@.service");
    for (name, text) in [("agent", &agent), ("socket", &socket), ("serve", &serve)] {
        for line in text.lines().map(str::trim) {
            assert!(
                line.is_empty()
                    || line.starts_with('#')
                    || (line.starts_with('[') && line.ends_with(']'))
                    || line.contains('='),
                "{name}: not a unit line: {line:?}"
            );
        }
    }
    assert_eq!(value(&agent, "Service", "Type"), "notify");
    assert_eq!(value(&serve, "Service", "Type"), "notify");
    assert_eq!(
        value(&agent, "Service", "ExecStart"),
        "/usr/bin/vmcrypt agent serve --socket /run/vmcrypt/agent.sock"
    );
    assert_eq!(
        value(&socket, "Socket", "ListenStream"),
        "/run/vmcrypt/agent.sock"
    );
    assert_eq!(value(&socket, "Socket", "SocketMode"), "0600");
    for (k, v) in [
        ("NoNewPrivileges", "yes"),
        ("ProtectSystem", "strict"),
        ("PrivateTmp", "yes"),
        ("MemoryDenyWriteExecute", "yes"),
        ("LimitCORE", "0"),
    ] {
        assert_eq!(value(&agent, "Service", k), v, "agent {k}");
    }
    assert!(value(&agent, "Service", "LimitMEMLOCK").ends_with('M'));
    assert_eq!(value(&serve, "Service", "MemoryDenyWriteExecute"), "yes");
    let Ok(o) = Command::new("systemd-analyze").arg("--version").output() else {
        eprintln!(
            "systemd-analyze is not installed: the units were checked by the parser above only"
        );
        return;
    };
    assert!(o.status.success());
    // systemd checks that ExecStart's binary exists: point the units at this build's.
    let dir = tempfile::tempdir().expect("tempdir");
    let bin = env!("CARGO_BIN_EXE_vmcrypt");
    let mut files = Vec::new();
    for (name, text) in [
        ("vmcrypt-agent.service", &agent),
        ("vmcrypt-agent.socket", &socket),
        ("vmcrypt-serve@-vms-web01-disk.img.service", &serve),
    ] {
        let p = dir.path().join(name);
        std::fs::write(&p, text.replace("/usr/bin/vmcrypt", bin)).expect("write unit");
        files.push(p);
    }
    let o = Command::new("systemd-analyze")
        .args(["verify", "--man=no"])
        .args(&files)
        .output()
        .expect("systemd-analyze verify");
    let said = String::from_utf8_lossy(&o.stderr);
    assert!(
        o.status.success() && said.trim().is_empty(),
        "systemd-analyze verify: {said}"
    );
}

/// A listener for sd_notify messages, as systemd's NOTIFY_SOCKET.
struct Notify {
    sock: UnixDatagram,
    path: PathBuf,
}

impl Notify {
    fn new(dir: &Path) -> Notify {
        let path = dir.join("notify.sock");
        let sock = UnixDatagram::bind(&path).expect("bind notify socket");
        sock.set_read_timeout(Some(Duration::from_secs(20)))
            .expect("timeout");
        Notify { sock, path }
    }

    /// The next message, which must hold `line`.
    fn expect(&self, line: &str, log: &Path) -> String {
        let mut buf = [0u8; 4096];
        let n = self.sock.recv(&mut buf).unwrap_or_else(|e| {
            panic!(
                "no {line} from the service ({e}); its log: {}",
                std::fs::read_to_string(log).unwrap_or_default()
            )
        });
        let msg = String::from_utf8_lossy(&buf[..n]).into_owned();
        assert!(msg.lines().any(|l| l == line), "{msg:?} lacks {line}");
        msg
    }
}

/// Binds `socket`, then runs `args` with it as descriptor 3 the way systemd does, as many
/// times as `starts` says, one after the other, on the same listening socket.
const ACTIVATOR: &str = r#"
import os, socket, sys
path, starts, args = sys.argv[1], int(sys.argv[2]), sys.argv[3:]
s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
s.bind(path)
os.chmod(path, 0o600)
s.listen(16)
print("listening", flush=True)
code = 0
for _ in range(starts):
    sys.stdin.readline()
    pid = os.fork()
    if pid == 0:
        os.dup2(s.fileno(), 3)
        os.set_inheritable(3, True)
        os.environ["LISTEN_PID"] = str(os.getpid())
        os.environ["LISTEN_FDS"] = "1"
        os.execv(args[0], args)
    _, status = os.waitpid(pid, 0)
    code = os.waitstatus_to_exitcode(status)
    print("exited", code, flush=True)
sys.exit(code)
"#;

/// The activator and the service it started: both killed if a test fails half way, so that
/// no agent outlives its test.
struct Activated(Child);

impl Activated {
    /// Binds `socket` and waits for the activator to say it listens; each line written to
    /// the returned stdin starts `argv` once; the returned stdout says how each exited.
    fn start(
        socket: &Path,
        starts: usize,
        argv: &[String],
        notify: Option<&Path>,
        log: &Path,
    ) -> (Activated, ChildStdin, BufReader<ChildStdout>) {
        let mut c = Command::new("python3");
        c.args([
            "-c",
            ACTIVATOR,
            socket.to_str().expect("utf8"),
            &starts.to_string(),
        ])
        .args(argv)
        .env_remove("VMCRYPT_AGENT")
        .env_remove("RUST_LOG")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(std::fs::File::create(log).expect("log"));
        if let Some(n) = notify {
            c.env("NOTIFY_SOCKET", n);
        }
        let mut a = Activated(c.spawn().expect("python3 (the activator)"));
        let to = a.0.stdin.take().expect("stdin");
        let mut from = BufReader::new(a.0.stdout.take().expect("stdout"));
        let mut line = String::new();
        from.read_line(&mut line).expect("activator");
        assert_eq!(line.trim(), "listening");
        (a, to, from)
    }
}

impl Drop for Activated {
    fn drop(&mut self) {
        let _ = Command::new("pkill")
            .args(["-KILL", "-P", &self.0.id().to_string()])
            .status();
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn sigterm(pid: u32) {
    let ok = Command::new("kill")
        .args(["-TERM", &pid.to_string()])
        .status()
        .expect("kill");
    assert!(ok.success());
}

fn wait(child: &mut Child, what: &str) -> i32 {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        if let Some(s) = child.try_wait().expect("wait") {
            return s.code().unwrap_or(-1);
        }
        assert!(Instant::now() < deadline, "{what} did not exit");
        std::thread::sleep(Duration::from_millis(20));
    }
}

fn pid_of(msg: &str) -> u32 {
    msg.lines()
        .find_map(|l| l.strip_prefix("MAINPID="))
        .and_then(|p| p.parse().ok())
        .unwrap_or_else(|| panic!("no MAINPID in {msg:?}"))
}

#[test]
fn a_socket_activated_agent_says_ready_serves_and_leaves_the_socket_for_its_next_start() {
    use std::io::Write;
    let e = Env::new();
    e.ok(&["provider", "add-native", "n"]);
    let dir = tempfile::tempdir().expect("tempdir");
    let socket = dir.path().join("agent.sock");
    let log = dir.path().join("agent.log");
    let notify = Notify::new(dir.path());
    // The unit's own command line, with the socket moved into the test's directory.
    let exec = value(&unit("vmcrypt-agent.service"), "Service", "ExecStart");
    let exec = exec.replace("/run/vmcrypt/agent.sock", socket.to_str().expect("utf8"));
    let mut argv: Vec<String> = exec.split_whitespace().map(String::from).collect();
    argv[0] = env!("CARGO_BIN_EXE_vmcrypt").into();
    argv.splice(1..1, ["--config".into(), e.config().display().to_string()]);
    let (mut activator, mut to, mut from) =
        Activated::start(&socket, 2, &argv, Some(&notify.path), &log);
    let mut line = String::new();
    // A client may connect before the agent runs: systemd holds the connection for it.
    let early = UnixStream::connect(&socket).expect("connect before the agent started");
    drop(early);
    for round in 0..2 {
        writeln!(to, "start").expect("start");
        let ready = notify.expect("READY=1", &log);
        let pid = pid_of(&ready);
        let o = e.run(&[
            "agent",
            "status",
            "--socket",
            socket.to_str().expect("utf8"),
        ]);
        let status = String::from_utf8_lossy(&o.stdout);
        assert!(
            o.status.success(),
            "agent status: {}; the agent's log: {}",
            stderr(&o),
            std::fs::read_to_string(&log).unwrap_or_default()
        );
        assert!(status.contains(&format!("pid {pid}")), "{status}");
        // A key operation through the activated agent.
        let disk = e.raw_image(&format!("d{round}.img"), 1 << 20);
        e.ok(&[
            "--agent",
            socket.to_str().expect("utf8"),
            "encrypt",
            disk.file_name().and_then(|n| n.to_str()).expect("name"),
            "--in-place",
            "--provider",
            "n",
        ]);
        sigterm(pid);
        notify.expect("STOPPING=1", &log);
        line.clear();
        from.read_line(&mut line).expect("activator");
        assert_eq!(
            line.trim(),
            "exited 0",
            "{}",
            std::fs::read_to_string(&log).unwrap_or_default()
        );
        // systemd's socket stays for the next start.
        assert!(socket.exists(), "the agent removed the socket systemd owns");
    }
    assert_eq!(wait(&mut activator.0, "the activator"), 0);
}

#[test]
fn an_activated_agent_refuses_a_socket_that_is_not_the_one_it_was_told() {
    use std::io::Write;
    let e = Env::new();
    let dir = tempfile::tempdir().expect("tempdir");
    let bound = dir.path().join("bound.sock");
    let said = dir.path().join("other.sock");
    let log = dir.path().join("agent.log");
    let argv: Vec<String> = [
        env!("CARGO_BIN_EXE_vmcrypt"),
        "--config",
        e.config().to_str().expect("utf8"),
        "agent",
        "serve",
        "--socket",
        said.to_str().expect("utf8"),
    ]
    .map(String::from)
    .into();
    let (mut activator, mut to, _from) = Activated::start(&bound, 1, &argv, None, &log);
    writeln!(to, "start").expect("start");
    drop(to);
    assert_eq!(wait(&mut activator.0, "the activator"), 1);
    let err = std::fs::read_to_string(&log).expect("log");
    assert!(err.contains("ListenStream= and --socket"), "{err}");
    assert!(!said.exists(), "the agent bound a socket of its own");
}

#[test]
fn vmcrypt_serve_says_ready_once_it_listens_and_stopping_on_sigterm() {
    let e = Env::new();
    let disk = e.raw_image("d.img", 4 << 20);
    e.ok(&["encrypt", "d.img", "--in-place"]);
    let dir = tempfile::tempdir().expect("tempdir");
    let notify = Notify::new(dir.path());
    let sock = dir.path().join("nbd.sock");
    let log = dir.path().join("serve.log");
    let mut child = e
        .command(
            &[
                "serve",
                disk.to_str().expect("utf8"),
                "--nbd",
                sock.to_str().expect("utf8"),
            ],
            &[("NOTIFY_SOCKET", notify.path.to_str().expect("utf8"))],
        )
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(&log).expect("log"))
        .spawn()
        .expect("serve");
    let ready = notify.expect("READY=1", &log);
    assert!(ready.contains("STATUS=serving"), "{ready}");
    // Ready means ready: the export answers at once.
    UnixStream::connect(&sock).expect("the NBD socket listens when READY=1 is sent");
    sigterm(child.id());
    notify.expect("STOPPING=1", &log);
    assert_eq!(wait(&mut child, "serve"), 0);
}
