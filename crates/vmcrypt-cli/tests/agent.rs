//! The host agent end to end, with real PyKMIP clusters: VMs keep working through a total KMS
//! outage, a VM is rescued from a KMS lost for good, the socket admits only its user, garbage
//! does not stop the agent, and hedging beats a hung server's timeout.

mod common;

use std::io::{Read, Write};
use std::os::unix::fs::PermissionsExt;
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use common::*;
use vmcrypt_testkit::faults::{self, Behavior};
use vmcrypt_testkit::pykmip::Cluster;

const MIB: u64 = 1024 * 1024;

/// A running `vmcrypt agent serve`, stopped with SIGTERM on drop.
struct AgentProc {
    child: Child,
    socket: PathBuf,
    log: PathBuf,
    // Socket and log live outside the test directory, whose files the tests compare.
    _dir: tempfile::TempDir,
}

impl AgentProc {
    fn start(e: &Env) -> AgentProc {
        let dir = tempfile::tempdir().expect("agent dir");
        let socket = dir.path().join("agent.sock");
        let log = dir.path().join("agent.log");
        let child = Command::new(env!("CARGO_BIN_EXE_vmcrypt"))
            .arg("--config")
            .arg(e.config())
            .args(["-v", "agent", "serve", "--socket"])
            .arg(&socket)
            .env_remove("VMCRYPT_AGENT")
            .env_remove("RUST_LOG")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&log).expect("agent log"))
            .spawn()
            .expect("start the agent");
        let a = AgentProc {
            child,
            socket,
            log,
            _dir: dir,
        };
        let deadline = Instant::now() + Duration::from_secs(20);
        while UnixStream::connect(&a.socket).is_err() {
            assert!(Instant::now() < deadline, "agent not up: {}", a.log());
            std::thread::sleep(Duration::from_millis(20));
        }
        a
    }

    fn sock(&self) -> &str {
        self.socket.to_str().expect("utf8")
    }

    fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// SIGTERM, then the exit status and the log.
    fn stop(&mut self) -> (std::process::ExitStatus, String) {
        vmcrypt_testkit::pykmip::terminate(&self.child);
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            if let Some(s) = self.child.try_wait().expect("wait") {
                return (s, self.log());
            }
            assert!(
                Instant::now() < deadline,
                "agent ignored SIGTERM: {}",
                self.log()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for AgentProc {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn add_kmip(e: &Env, c: &Cluster, name: &str, servers: &[&str], extra: &[&str]) {
    let mut args = vec!["provider", "add-kmip", name];
    for s in servers {
        args.extend(["--server", s]);
    }
    let (ca, cert, key) = (
        c.pki.ca.to_str().expect("utf8"),
        c.pki.client_cert.to_str().expect("utf8"),
        c.pki.client_key.to_str().expect("utf8"),
    );
    args.extend(["--ca", ca, "--cert", cert, "--key", key]);
    args.extend(extra);
    e.ok(&args);
}

/// A VM in its own directory `dir`: a VMX and two VMDKs; returns the VMX path (relative to
/// the test directory) and the original flat files' contents.
fn make_vm(e: &Env, dir: &str) -> (String, Vec<(PathBuf, Vec<u8>)>) {
    std::fs::create_dir_all(e.path(dir)).expect("vm dir");
    let vmx = format!("{dir}/{dir}.vmx");
    let text = format!(
        "displayName = \"{dir}\"\nscsi0:0.fileName = \"{dir}.vmdk\"\nscsi0:1.fileName = \"{dir}_b.vmdk\"\nannotation = \"owner: ops\"\n"
    );
    std::fs::write(e.path(&vmx), &text).expect("vmx");
    let mut flats = Vec::new();
    for d in [format!("{dir}.vmdk"), format!("{dir}_b.vmdk")] {
        e.vmdk(&format!("{dir}/{d}"), MIB);
        let flat = e.path(&format!("{dir}/{}-flat.vmdk", d.trim_end_matches(".vmdk")));
        let bytes = std::fs::read(&flat).expect("flat");
        flats.push((flat, bytes));
    }
    (vmx, flats)
}

fn assert_plain(flats: &[(PathBuf, Vec<u8>)]) {
    for (p, want) in flats {
        assert!(
            std::fs::read(p).expect("flat") == *want,
            "{} differs from the original",
            p.display()
        );
    }
}

fn assert_encrypted(flats: &[(PathBuf, Vec<u8>)]) {
    for (p, want) in flats {
        assert!(
            std::fs::read(p).expect("flat") != *want,
            "{} is still plaintext",
            p.display()
        );
    }
}

/// A test directory with the native provider and `name`, a KMIP provider on both servers of
/// a new two-server cluster.
fn two_server_setup(name: &str) -> (Cluster, Env) {
    let c = Cluster::start(2);
    let e = Env::new();
    e.ok(&["provider", "add-native", "native"]);
    add_kmip(
        &e,
        &c,
        name,
        &[&c.servers[0], &c.servers[1]],
        &["--timeout", "5"],
    );
    (c, e)
}

#[test]
fn with_every_kms_down_a_warm_agent_keeps_cached_vms_working() {
    let (mut c, e) = two_server_setup("kms");
    let (warm_a, flats_a) = make_vm(&e, "vma");
    let (warm_b, flats_b) = make_vm(&e, "vmb");
    let (cold, flats_cold) = make_vm(&e, "vmcold");
    let mut agent = AgentProc::start(&e);
    let via = ["--agent", agent.sock()];
    // Two VMs encrypted through the agent (their KEKs are cached), one without it.
    for vmx in [&warm_a, &warm_b] {
        e.ok(&[&via[..], &["vm", "encrypt", vmx, "--provider", "kms"]].concat());
    }
    e.ok(&["vm", "encrypt", &cold, "--provider", "kms"]);
    for f in [&flats_a, &flats_b, &flats_cold] {
        assert_encrypted(f);
    }
    let status = json(&e.ok(&[&via[..], &["--json", "agent", "status"]].concat()));
    assert_eq!(status["agent"]["cached"].as_array().map(Vec::len), Some(2));
    assert_eq!(status["agent"]["dumpable"], false);

    // The whole KMS goes away.
    c.stop_server(0);
    c.stop_server(1);

    // Inspect, decrypt and a shallow rekey (to the native provider) of cached VMs work.
    let j = json(&e.ok(&[&via[..], &["--json", "vm", "inspect", &warm_a]].concat()));
    assert_eq!(j["keys"][0]["provider"], "kms");
    e.ok(&[&via[..], &["vm", "decrypt", &warm_a]].concat());
    assert_plain(&flats_a);
    e.ok(&[
        &via[..],
        &["vm", "rekey", &warm_b, "--shallow", "--provider", "native"],
    ]
    .concat());
    let j = json(&e.ok(&["--json", "vm", "inspect", &warm_b]));
    assert_eq!(j["keys"][0]["provider"], "native");
    // Without the agent, the rekeyed VM opens from the native provider alone.
    e.ok(&["vm", "decrypt", &warm_b]);
    assert_plain(&flats_b);

    // A VM whose key the agent never saw: exit 3, a clear message, nothing changed.
    let before = snapshot(e.dir.path());
    let o = e.run(&[&via[..], &["vm", "decrypt", &cold]].concat());
    let err = stderr(&o);
    assert_eq!(o.status.code(), Some(3), "{err}");
    assert!(
        err.contains("kms") && err.contains("through the agent"),
        "{err}"
    );
    for s in &c.servers {
        assert!(err.contains(s.as_str()), "names every server tried: {err}");
    }
    assert_eq!(
        snapshot(e.dir.path()),
        before,
        "a failed decrypt changed files"
    );
    assert_encrypted(&flats_cold);

    let (code, log) = agent.stop();
    assert!(code.success(), "agent exit {code:?}: {log}");
    assert!(log.contains("cache zeroed"), "{log}");
    assert!(!agent.socket.exists(), "socket removed on shutdown");
}

#[test]
fn rescue_vms_from_a_lost_kms_to_native_and_to_another_cluster() {
    let (mut lost, e) = two_server_setup("old-kms");
    let (to_native, flats_n) = make_vm(&e, "vmn");
    let (to_kms, flats_k) = make_vm(&e, "vmk");
    let mut agent = AgentProc::start(&e);
    let via = ["--agent", agent.sock()];
    for vmx in [&to_native, &to_kms] {
        e.ok(&[&via[..], &["vm", "encrypt", vmx, "--provider", "old-kms"]].concat());
    }

    // The KMS is lost for good: every server stopped, its database deleted.
    lost.destroy();
    let o = e.run(&["vm", "decrypt", &to_native]);
    assert_eq!(
        o.status.code(),
        Some(3),
        "without the agent the key is gone"
    );

    // A new cluster, added to the configuration while the agent runs.
    let fresh = Cluster::start(1);
    add_kmip(
        &e,
        &fresh,
        "new-kms",
        &[&fresh.servers[0]],
        &["--timeout", "5"],
    );

    // Rescue, through the agent, before anything powers off.
    e.ok(&[
        &via[..],
        &[
            "vm",
            "rekey",
            &to_native,
            "--shallow",
            "--provider",
            "native",
        ],
    ]
    .concat());
    e.ok(&[
        &via[..],
        &["vm", "rekey", &to_kms, "--shallow", "--provider", "new-kms"],
    ]
    .concat());
    let (code, log) = agent.stop();
    assert!(code.success(), "{log}");

    // No agent from here on: each VM opens from its new provider.
    for (vmx, provider) in [(&to_native, "native"), (&to_kms, "new-kms")] {
        let j = json(&e.ok(&["--json", "vm", "inspect", vmx]));
        assert_eq!(j["keys"][0]["provider"], provider);
        assert_eq!(j["consistent"], true);
    }
    e.ok(&["vm", "decrypt", &to_native]);
    e.ok(&["vm", "decrypt", &to_kms]);
    assert_plain(&flats_n);
    assert_plain(&flats_k);
}

/// Runs the vmcrypt binary (copied where `nobody` can run it) as uid/gid 65534.
fn as_nobody(bin: &Path, args: &[&str]) -> std::process::Output {
    use std::os::unix::process::CommandExt;
    Command::new(bin)
        .args(args)
        .uid(65534)
        .gid(65534)
        .env_remove("VMCRYPT_AGENT")
        .env("HOME", "/")
        .output()
        .expect("run vmcrypt as nobody")
}

#[test]
fn only_the_same_user_or_root_may_use_the_socket_and_garbage_does_not_stop_it() {
    assert_eq!(
        rustix_uid(),
        0,
        "this test runs a second user's client and needs root (CI runs as root)"
    );
    let e = Env::new();
    e.ok(&["provider", "add-native", "native"]);
    e.raw_image("d.img", MIB);
    let agent = AgentProc::start(&e);
    let mode = std::fs::metadata(&agent.socket)
        .expect("socket")
        .permissions()
        .mode();
    assert_eq!(mode & 0o777, 0o600, "socket mode {mode:o}");

    // Another user, even given a path it can reach: refused by the file mode...
    for dir in [e.dir.path(), agent._dir.path()] {
        std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o755)).expect("chmod");
    }
    let bin = e.path("vmcrypt-copy");
    std::fs::copy(env!("CARGO_BIN_EXE_vmcrypt"), &bin).expect("copy binary");
    std::fs::set_permissions(&bin, std::fs::Permissions::from_mode(0o755)).expect("chmod");
    let o = as_nobody(&bin, &["agent", "status", "--socket", agent.sock()]);
    assert_eq!(o.status.code(), Some(3), "{}", stderr(&o));
    assert!(stderr(&o).contains("Permission denied"), "{}", stderr(&o));
    // ... and, when an operator loosens the mode, by the SO_PEERCRED check.
    std::fs::set_permissions(&agent.socket, std::fs::Permissions::from_mode(0o666)).expect("chmod");
    let o = as_nobody(&bin, &["agent", "status", "--socket", agent.sock()]);
    assert_eq!(o.status.code(), Some(3), "{}", stderr(&o));
    assert!(
        stderr(&o).contains("permission denied: this agent serves its own user and root"),
        "{}",
        stderr(&o)
    );
    assert!(
        agent.log().contains("refused a peer of another user"),
        "{}",
        agent.log()
    );

    // Garbage of every shape, including a connection that says nothing at all.
    let idle = UnixStream::connect(&agent.socket).expect("connect");
    let mut seed = 0x1234_5678u32;
    for round in 0..200 {
        let mut s = UnixStream::connect(&agent.socket).expect("connect");
        let mut junk = vec![0u8; (round * 37) % 300];
        for b in &mut junk {
            seed = seed.wrapping_mul(1_103_515_245).wrapping_add(12345);
            *b = (seed >> 16) as u8;
        }
        let frame: Vec<u8> = match round % 5 {
            0 => junk,
            1 => [&(junk.len() as u32).to_be_bytes()[..], &junk].concat(),
            2 => [&u32::MAX.to_be_bytes()[..], &junk].concat(),
            3 => [&100u32.to_be_bytes()[..], &junk[..junk.len().min(50)]].concat(),
            _ => [&[0, 0, 0, 3, 1, 1][..], &junk].concat(),
        };
        let _ = s.write_all(&frame);
        let _ = s.shutdown(std::net::Shutdown::Write);
        let mut sink = Vec::new();
        let _ = s.set_read_timeout(Some(Duration::from_secs(5)));
        let _ = s.read_to_end(&mut sink);
    }
    drop(idle);
    // Still serving, and still correct.
    let via = ["--agent", agent.sock()];
    e.ok(&[&via[..], &["encrypt", "d.img", "--output", "d.enc"]].concat());
    e.ok(&[&via[..], &["decrypt", "d.enc", "--output", "d.back"]].concat());
    assert_identical(&e.path("d.img"), &e.path("d.back"));
    let j = json(&e.ok(&[&via[..], &["--json", "agent", "status"]].concat()));
    assert_eq!(j["agent"]["cached"].as_array().map(Vec::len), Some(1));
}

fn rustix_uid() -> u32 {
    // The test binary's own uid, read from /proc (no extra dependency).
    let status = std::fs::read_to_string("/proc/self/status").expect("status");
    status
        .lines()
        .find_map(|l| l.strip_prefix("Uid:"))
        .and_then(|v| v.split_whitespace().nth(1)?.parse().ok())
        .expect("Uid line")
}

/// Lists provider "kms" again (same name, so existing keySafes still name it) with a server
/// that accepts and never answers before the cluster's server.
fn hung_server_first(e: &Env, c: &Cluster, settings: &[&str]) -> faults::Peer {
    let hang = faults::tcp(Behavior::Hang);
    e.ok(&["provider", "remove", "kms"]);
    add_kmip(e, c, "kms", &[&hang.addr, &c.servers[0]], settings);
    hang
}

#[test]
fn a_hedged_get_through_the_agent_costs_the_hedge_delay_not_the_timeout() {
    let c = Cluster::start(1);
    let e = Env::new();
    e.raw_image("d.img", MIB);
    // The key is created while only the real server is listed (Create never hedges).
    add_kmip(&e, &c, "kms", &[&c.servers[0]], &["--timeout", "60"]);
    e.ok(&["encrypt", "d.img", "--output", "d.enc", "--provider", "kms"]);
    // Now the first server hangs (accepts, never answers) with the default 60 s timeout.
    let hang = hung_server_first(&e, &c, &["--timeout", "60", "--hedge-ms", "300"]);
    let agent = AgentProc::start(&e);
    let t = Instant::now();
    e.ok(&[
        "--agent",
        agent.sock(),
        "decrypt",
        "d.enc",
        "--output",
        "d.back",
    ]);
    let took = t.elapsed();
    assert_identical(&e.path("d.img"), &e.path("d.back"));
    assert!(
        took >= Duration::from_millis(300) && took < Duration::from_secs(5),
        "hedged Get took {took:?} (hedge 300 ms, timeout 60 s)"
    );
    assert!(hang.connections() >= 1, "the hung server was asked first");
    assert!(agent.log().contains("hedging"), "{}", agent.log());
}

#[test]
fn a_server_that_failed_is_tried_last_for_a_while() {
    let c = Cluster::start(1);
    let e = Env::new();
    e.raw_image("a.img", MIB);
    e.raw_image("b.img", MIB);
    add_kmip(&e, &c, "kms", &[&c.servers[0]], &["--timeout", "2"]);
    e.ok(&["encrypt", "a.img", "--output", "a.enc", "--provider", "kms"]);
    e.ok(&["encrypt", "b.img", "--output", "b.enc", "--provider", "kms"]);
    // No hedging: only demotion is at work.
    let hang = hung_server_first(
        &e,
        &c,
        &["--timeout", "2", "--hedge-ms", "0", "--demote-secs", "300"],
    );
    let agent = AgentProc::start(&e);
    let via = ["--agent", agent.sock()];
    let t = Instant::now();
    e.ok(&[&via[..], &["decrypt", "a.enc", "--output", "a.back"]].concat());
    let first = t.elapsed();
    assert!(
        first >= Duration::from_secs(2),
        "first fetch waits out the hung server: {first:?}"
    );
    let t = Instant::now();
    e.ok(&[&via[..], &["decrypt", "b.enc", "--output", "b.back"]].concat());
    let second = t.elapsed();
    assert!(
        second < Duration::from_secs(1),
        "second fetch goes to the healthy server first: {second:?}"
    );
    assert_eq!(hang.connections(), 1, "the hung server was not asked again");
    assert_identical(&e.path("a.img"), &e.path("a.back"));
    assert_identical(&e.path("b.img"), &e.path("b.back"));
}

#[test]
fn sigterm_stops_the_agent_even_when_its_socket_file_is_gone() {
    let e = Env::new();
    e.ok(&["provider", "add-native", "native"]);
    let mut agent = AgentProc::start(&e);
    // Someone removed the socket file: waking the accept by connecting is impossible now.
    std::fs::remove_file(&agent.socket).expect("remove socket");
    let (code, log) = agent.stop();
    assert!(code.success(), "{log}");
    assert!(log.contains("cache zeroed"), "{log}");
}

#[test]
fn forget_drops_a_key_the_agent_would_otherwise_keep_serving() {
    let mut c = Cluster::start(1);
    let e = Env::new();
    add_kmip(&e, &c, "kms", &[&c.servers[0]], &["--timeout", "5"]);
    e.raw_image("d.img", MIB);
    let agent = AgentProc::start(&e);
    let via = ["--agent", agent.sock()];
    e.ok(&[
        &via[..],
        &["encrypt", "d.img", "--output", "d.enc", "--provider", "kms"],
    ]
    .concat());
    let key_id = json(&e.ok(&["--json", "inspect", "d.enc"]))["keys"][0]["key_id"]
        .as_str()
        .expect("key id")
        .to_string();
    // The KMS can no longer give the key (as after a revocation): the agent still serves its
    // cached copy...
    c.stop_server(0);
    e.ok(&[&via[..], &["decrypt", "d.enc", "--output", "d.back"]].concat());
    assert_identical(&e.path("d.img"), &e.path("d.back"));
    // ...until it is told to forget it.
    let j = json(
        &e.ok(&[
            &via[..],
            &[
                "--json",
                "agent",
                "forget",
                "--provider",
                "kms",
                "--key-id",
                &key_id,
            ],
        ]
        .concat()),
    );
    assert_eq!(j["forgotten"], 1);
    let j = json(&e.ok(&[&via[..], &["--json", "agent", "status"]].concat()));
    assert_eq!(j["agent"]["cached"].as_array().map(Vec::len), Some(0));
    let o = e.run(&[&via[..], &["decrypt", "d.enc", "--output", "d.back2"]].concat());
    assert_eq!(o.status.code(), Some(3), "{}", stderr(&o));
    assert!(!e.path("d.back2").exists());
    // The flags are checked: a key id needs its provider.
    let o = e.run(&[&via[..], &["agent", "forget", "--key-id", &key_id]].concat());
    assert_eq!(o.status.code(), Some(2), "{}", stderr(&o));
    assert!(
        agent.log().contains("cached keys forgotten on request"),
        "{}",
        agent.log()
    );
}

#[test]
fn slow_clients_are_cut_off_by_a_frame_deadline_and_never_block_new_ones() {
    let e = Env::new();
    e.ok(&["provider", "add-native", "native"]);
    let agent = AgentProc::start(&e);
    // 1024 clients that start a request and never finish it (one byte of a length prefix).
    let mut slow = Vec::new();
    for _ in 0..1024 {
        let mut s = UnixStream::connect(&agent.socket).expect("connect");
        s.write_all(&[0]).expect("first byte");
        slow.push(s);
    }
    // And one that trickles a byte a second: each read is quick, the frame never is.
    let mut trickle = UnixStream::connect(&agent.socket).expect("connect");
    let started = Instant::now();
    // A new client is served at once beside them.
    let t = Instant::now();
    let j = json(&e.ok(&["--agent", agent.sock(), "--json", "agent", "status"]));
    assert!(j["agent"]["pid"].as_u64().is_some(), "{j}");
    assert!(
        t.elapsed() < Duration::from_secs(3),
        "served in {:?}",
        t.elapsed()
    );
    let mut cut_after = None;
    for i in 0..12u8 {
        if trickle.write_all(&[i]).is_err() {
            cut_after = Some(started.elapsed());
            break;
        }
        std::thread::sleep(Duration::from_secs(1));
    }
    let cut_after = cut_after.expect("the trickling client was never cut off");
    // The whole frame has 5 s (FRAME_DEADLINE), however slowly it comes.
    assert!(
        cut_after >= Duration::from_secs(4) && cut_after < Duration::from_secs(9),
        "cut off after {cut_after:?}"
    );
    // Every stalled client was closed by then.
    for (i, s) in slow.iter_mut().enumerate() {
        s.set_read_timeout(Some(Duration::from_secs(5)))
            .expect("timeout");
        let mut b = [0u8; 64];
        match s.read(&mut b) {
            Ok(0) | Err(_) => {}
            Ok(n) => panic!("stalled client {i} got {n} bytes instead of being closed"),
        }
    }
    e.ok(&["--agent", agent.sock(), "agent", "status"]);
}

/// Kilobytes of locked memory of process `pid` (VmLck in /proc/PID/status, readable even for
/// a non-dumpable process).
fn locked_kib(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).expect("status");
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmLck:"))
        .and_then(|v| v.split_whitespace().next()?.parse().ok())
        .expect("a VmLck line")
}

#[test]
fn a_disk_served_through_the_agent_keeps_serving_with_the_kms_and_the_agent_gone() {
    let mut c = Cluster::start(1);
    let e = Env::new();
    add_kmip(&e, &c, "kms", &[&c.servers[0]], &["--timeout", "5"]);
    let plain = e.raw_image("d.img", 4 * MIB);
    let mut agent = AgentProc::start(&e);
    let via = ["--agent", agent.sock()];
    e.ok(&[
        &via[..],
        &["encrypt", "d.img", "--output", "e.img", "--provider", "kms"],
    ]
    .concat());

    // The KMS goes away; the server gets the key from the agent's cache.
    c.stop_server(0);
    let server = Served::start(&e, "e.img", &via);
    // Its key schedule is in locked memory: a CLI process locks nothing else.
    let locked = locked_kib(server.child.id());
    assert!(locked >= 4, "VmLck of the server: {locked} kB");

    // Then the agent goes away too: the served disk needs neither any more.
    let (code, log) = agent.stop();
    assert!(code.success(), "agent exit {code:?}: {log}");
    let mut model = std::fs::read(&plain).expect("plain");
    model[MIB as usize..MIB as usize + 65536].fill(0x5a);
    std::fs::write(e.path("model.img"), &model).expect("model");
    qemu_io(
        &server.uri(),
        &[
            "write -P 0x5a 1M 64k".to_string(),
            "flush".to_string(),
            "read -P 0x5a 1M 64k".to_string(),
        ],
    );
    let cmp = qemu_img(&[
        "compare",
        "-f",
        "raw",
        "-F",
        "raw",
        &server.uri(),
        e.path("model.img").to_str().expect("utf8"),
    ]);
    assert!(
        String::from_utf8_lossy(&cmp.stdout).contains("identical"),
        "{}",
        String::from_utf8_lossy(&cmp.stdout)
    );
    server.stop();

    // Offline, with the KMS and the agent gone, the key is out of reach: it was only in the
    // server's memory.
    let before = snapshot(e.dir.path());
    let o = e.run(&["decrypt", "e.img", "--output", "x.img"]);
    assert_eq!(o.status.code(), Some(3), "{}", stderr(&o));
    assert_eq!(
        snapshot(e.dir.path()),
        before,
        "a failed decrypt changed files"
    );
}

/// Issue 18's keys: an online deep rekey fetches the disk's KEK afresh before its first
/// window, so with the KMS down and no agent it fails to start (exit 3) and leaves the disk as
/// it was; with the agent holding the key, a job started, killed with kill -9 and taken up
/// again while the KMS is down the whole time ends well.
#[test]
fn an_online_rekey_needs_its_key_at_start_and_an_agent_held_key_outlives_a_kms_outage() {
    const LEN: u64 = 8 * MIB;
    let mut c = Cluster::start(1);
    let e = Env::new();
    add_kmip(&e, &c, "kms", &[&c.servers[0]], &["--timeout", "3"]);
    let agent = AgentProc::start(&e);
    let via = ["--agent", agent.sock()];
    let plain = e.raw_image("d.img", LEN);
    let mut model = std::fs::read(&plain).expect("plain");
    // Encrypted through the agent: it holds the KEK from here on.
    e.ok(&[
        &via[..],
        &["encrypt", "d.img", "--output", "e.img", "--provider", "kms"],
    ]
    .concat());

    // 1. Served without the agent (the KMS is up while the server opens the disk), then the
    // KMS goes away: the rekey cannot fetch the key afresh.
    let server = Served::start(&e, "e.img", &[]);
    c.stop_server(0);
    let inspect_before = e.ok(&["--json", "inspect", "e.img"]);
    let o = e.run(&["rekey", "e.img", "--deep"]);
    let err = stderr(&o);
    assert_eq!(o.status.code(), Some(3), "{err}");
    assert!(err.contains("kms"), "names the provider: {err}");
    assert_eq!(e.ok(&["--json", "inspect", "e.img"]), inspect_before);
    assert!(!e.path("e.img.vmcrypt-journal").exists(), "no journal");
    // The disk is served on.
    qemu_io(
        &server.uri(),
        &["write -P 7 4096 8192".into(), "read -P 7 4096 8192".into()],
    );
    model[4096..12288].fill(7);
    server.stop();

    // 2. Served through the agent while the KMS is down: the agent holds the key, so the job
    // starts, survives kill -9 of its server and is finished by the next one.
    let server = Served::start(&e, "e.img", &via);
    let r = e
        .command(&["--json", "rekey", "e.img", "--deep", "--rate", "4"], &[])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn rekey");
    let until = Instant::now() + Duration::from_secs(30);
    while json(&e.ok(&["--json", "jobs", "e.img"]))["job"]["done"]
        .as_u64()
        .unwrap_or(0)
        < 2 * MIB
    {
        assert!(Instant::now() < until, "the job never got going");
        std::thread::sleep(Duration::from_millis(50));
    }
    server.signal("-KILL");
    let mut child = server.child;
    child.wait().expect("wait");
    let out = r.wait_with_output().expect("rekey");
    assert_ne!(out.status.code(), Some(0), "its server died");
    std::fs::remove_file(e.path("e.img.sock")).expect("stale socket");
    // Without the agent the disk cannot even be opened now.
    let o = e.run(&["serve", "e.img", "--nbd", "x.sock"]);
    assert_eq!(o.status.code(), Some(3), "{}", stderr(&o));
    let server = Served::start(&e, "e.img", &via);
    let follow = e.run(&["jobs", "e.img", "--follow"]);
    assert_eq!(follow.status.code(), Some(0), "{}", stderr(&follow));
    server.stop();
    let meta = json(&e.ok(&["--json", "inspect", "e.img"]));
    assert_eq!(meta["key_generation"], 2, "{meta}");
    assert_eq!(meta["state"], "encrypted", "{meta}");
    e.ok(&[&via[..], &["decrypt", "e.img", "--output", "back.img"]].concat());
    assert!(
        std::fs::read(e.path("back.img")).expect("back") == model,
        "the disk decrypts to what was written"
    );
}
