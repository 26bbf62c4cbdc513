//! One owner per disk: two jobs on one disk, a job beside QEMU, QEMU beside a job.
//!
//! Each pair of mutating commands runs with the first held just after it took its locks (the
//! `locked` pause point), in both orders: the second exits 5 and changes nothing, the first
//! finishes, and the data then reads back as the original bit for bit. A race loop runs pairs
//! at the same instant with no pause. Real qemu-io, qemu-nbd and qemu-storage-daemon hold
//! images open as a running VM's QEMU would.

mod common;

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use common::*;

const MIB: u64 = 1024 * 1024;

fn code(o: &Output) -> Option<i32> {
    o.status.code()
}

/// The file holding a disk's payload: the image, or a VMDK's flat extent.
fn payload_of(e: &Env, disk: &str) -> PathBuf {
    match disk.strip_suffix(".vmdk") {
        Some(stem) => e.path(&format!("{stem}-flat.vmdk")),
        None => e.path(disk),
    }
}

/// The plaintext payload of a disk as it is now: its own when plain, else decrypted into a
/// new disk.
fn plaintext_of(e: &Env, disk: &str) -> PathBuf {
    let info = json(&e.ok(&["--json", "inspect", disk]));
    if info["encrypted"] == serde_json::Value::Bool(true) {
        if info["state"] != "encrypted" {
            e.ok(&["resume", disk]);
        }
        let out = format!("plain-{disk}");
        for f in [e.path(&out), payload_of(e, &out)] {
            let _ = std::fs::remove_file(f);
        }
        e.ok(&["decrypt", disk, "--output", &out]);
        payload_of(e, &out)
    } else {
        payload_of(e, disk)
    }
}

fn assert_plaintext(e: &Env, disk: &str, original: &Path) {
    let now = plaintext_of(e, disk);
    let a = std::fs::read(&now).expect("read");
    let b = std::fs::read(original).expect("read");
    assert!(a == b, "{disk} does not read back as the original");
}

/// An environment with a native provider, a plain raw image `d.img`, an encrypted copy
/// `e.img`, a VM `vm.vmx` with two plain VMDKs, and pristine copies of all plaintexts.
fn template() -> Env {
    let e = Env::new();
    e.ok(&["provider", "add-native", "native"]);
    e.raw_image("d.img", 4 * MIB);
    std::fs::copy(e.path("d.img"), e.path("d.orig")).expect("copy");
    e.raw_image("e.img", 4 * MIB);
    std::fs::copy(e.path("e.img"), e.path("e.orig")).expect("copy");
    e.ok(&["encrypt", "e.img", "--in-place"]);
    e.vmdk("a.vmdk", 2 * MIB);
    e.vmdk("b.vmdk", MIB);
    for d in ["a", "b"] {
        std::fs::copy(
            e.path(&format!("{d}-flat.vmdk")),
            e.path(&format!("{d}.orig")),
        )
        .expect("copy");
    }
    std::fs::write(
        e.path("vm.vmx"),
        ".encoding = \"UTF-8\"\nconfig.version = \"8\"\ndisplayName = \"t\"\nmemSize = \"512\"\n\
         scsi0.present = \"TRUE\"\nscsi0:0.present = \"TRUE\"\nscsi0:0.fileName = \"a.vmdk\"\n\
         scsi0:1.present = \"TRUE\"\nscsi0:1.fileName = \"b.vmdk\"\n",
    )
    .expect("vmx");
    // An interrupted in-place encryption of a copy: `i.img`, to be resumed.
    std::fs::copy(e.path("d.img"), e.path("i.img")).expect("copy");
    let o = e.run_env(
        &["encrypt", "i.img", "--in-place"],
        &[("VMCRYPT_FAILPOINT", "inplace-job-recorded")],
    );
    assert_ne!(code(&o), Some(0), "the failpoint stops the job");
    e
}

/// Every file's digest but the plaintext copies made by `plaintext_of`.
fn state(e: &Env) -> Vec<(String, u64, u32)> {
    snapshot(e.dir.path())
        .into_iter()
        .filter(|(n, _, _)| !n.starts_with("plain-"))
        .collect()
}

/// The disks a pair touches and their originals, to check afterwards.
const CHECKS: &[(&str, &str)] = &[
    ("d.img", "d.orig"),
    ("e.img", "e.orig"),
    ("i.img", "d.orig"),
    ("a.vmdk", "a.orig"),
    ("b.vmdk", "b.orig"),
];

fn run_pair(t: &Env, first: &[&str], second: &[&str]) {
    let e = Env::copy_of(t);
    let held = hold(&e, first);
    let before = state(&e);
    let o = e.run(second);
    let err = stderr(&o);
    assert_eq!(
        code(&o),
        Some(5),
        "{second:?} beside {first:?} must be refused as in use: {err}"
    );
    assert!(
        err.contains("in use by another vmcrypt job (pid") && err.contains(first[0]),
        "the message names the other job: {err}"
    );
    assert_eq!(state(&e), before, "{second:?} changed something");
    let done = release(held);
    assert_eq!(
        code(&done),
        Some(0),
        "{first:?} finishes: {}",
        String::from_utf8_lossy(&done.stderr)
    );
    for (disk, orig) in CHECKS {
        let orig = e.path(orig);
        assert_plaintext(&e, disk, &orig);
    }
}

#[test]
fn every_pair_of_jobs_on_one_disk_exclude_each_other_in_both_orders() {
    let t = template();
    let pairs: &[(&[&str], &[&str])] = &[
        (
            &["encrypt", "d.img", "--in-place"],
            &["encrypt", "d.img", "--in-place"],
        ),
        (&["resume", "i.img"], &["resume", "i.img"]),
        (&["vm", "encrypt", "vm.vmx"], &["vm", "encrypt", "vm.vmx"]),
        (
            &["vm", "encrypt", "vm.vmx"],
            &["encrypt", "a.vmdk", "--in-place"],
        ),
        (
            &["rekey", "e.img", "--deep"],
            &["decrypt", "e.img", "--in-place"],
        ),
        (
            &["rekey", "e.img", "--shallow"],
            &["rekey", "e.img", "--deep"],
        ),
        (
            &["decrypt", "e.img", "--output", "out.img"],
            &["decrypt", "e.img", "--in-place"],
        ),
        (
            &["encrypt", "d.img", "--output", "out.img"],
            &["encrypt", "d.img", "--in-place"],
        ),
    ];
    let mut runs = 0;
    for (a, b) in pairs {
        run_pair(&t, a, b);
        if a != b {
            run_pair(&t, b, a);
            runs += 1;
        }
        runs += 1;
    }
    assert_eq!(runs, 13);
}

#[test]
fn an_in_use_error_in_json_has_its_kind_and_code() {
    let t = template();
    let e = Env::copy_of(&t);
    let held = hold(&e, &["encrypt", "d.img", "--in-place"]);
    let o = e.run(&["--json", "encrypt", "d.img", "--in-place"]);
    assert_eq!(code(&o), Some(5));
    let doc = json(&String::from_utf8_lossy(&o.stdout));
    assert_eq!(doc["error"]["kind"], "in_use");
    assert_eq!(doc["error"]["exit_code"], 5);
    assert!(
        doc["error"]["message"]
            .as_str()
            .is_some_and(|m| m.contains("d.img"))
    );
    // inspect takes no lock and is not blocked.
    e.ok(&["inspect", "d.img"]);
    assert_eq!(code(&release(held)), Some(0));
}

/// Starts two commands at the same instant and waits for both.
fn race(e: &Env, a: &[&str], b: &[&str]) -> (Output, Output) {
    let spawn = |args: &[&str]| {
        e.command(args, &[])
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn")
    };
    let (ca, cb) = (spawn(a), spawn(b));
    (
        ca.wait_with_output().expect("wait"),
        cb.wait_with_output().expect("wait"),
    )
}

#[test]
fn jobs_started_at_the_same_instant_one_wins_the_other_is_refused() {
    let t = Env::new();
    t.ok(&["provider", "add-native", "native"]);
    t.raw_image("big.img", 128 * MIB);
    std::fs::copy(t.path("big.img"), t.path("big.orig")).expect("copy");
    t.vmdk("a.vmdk", 64 * MIB);
    t.vmdk("b.vmdk", 32 * MIB);
    for d in ["a", "b"] {
        std::fs::copy(
            t.path(&format!("{d}-flat.vmdk")),
            t.path(&format!("{d}.orig")),
        )
        .expect("copy");
    }
    std::fs::write(
        t.path("vm.vmx"),
        ".encoding = \"UTF-8\"\nscsi0.present = \"TRUE\"\nscsi0:0.fileName = \"a.vmdk\"\nscsi0:1.fileName = \"b.vmdk\"\n",
    )
    .expect("vmx");
    let enc = ["encrypt", "big.img", "--in-place"];
    let deep = ["rekey", "big.img", "--deep"];
    let dec = ["decrypt", "big.img", "--in-place"];
    let resume = ["resume", "big.img"];
    let vm = ["vm", "encrypt", "vm.vmx"];
    let disk = ["encrypt", "a.vmdk", "--in-place"];
    // (first, second, how the disk starts: plain, encrypted, or mid-encryption)
    let rounds: &[(&[&str], &[&str], &str)] = &[
        (&enc, &enc, "plain"),
        (&enc, &enc, "plain"),
        (&deep, &dec, "encrypted"),
        (&dec, &deep, "encrypted"),
        (&resume, &resume, "interrupted"),
        (&vm, &vm, "plain"),
        (&vm, &disk, "plain"),
        (&disk, &vm, "plain"),
    ];
    for (a, b, start) in rounds {
        let e = Env::copy_of(&t);
        match *start {
            "encrypted" => {
                e.ok(&enc);
            }
            "interrupted" => {
                let o = e.run_env(&enc, &[("VMCRYPT_FAILPOINT", "inplace-job-recorded")]);
                assert_eq!(code(&o), None, "the failpoint aborts: {}", stderr(&o));
            }
            _ => {}
        }
        let (oa, ob) = race(&e, a, b);
        let mut codes = [code(&oa), code(&ob)];
        codes.sort();
        assert_eq!(
            codes,
            [Some(0), Some(5)],
            "{a:?} and {b:?} at once: {}\n{}",
            stderr(&oa),
            stderr(&ob)
        );
        assert_plaintext(&e, "big.img", &e.path("big.orig"));
        for d in ["a", "b"] {
            assert_plaintext(&e, &format!("{d}.vmdk"), &e.path(&format!("{d}.orig")));
        }
    }
}

/// Waits until `pid` holds a lock on some file (its /proc fdinfo lists one).
fn wait_for_lock(pid: u32) {
    let until = Instant::now() + Duration::from_secs(30);
    loop {
        let locked = std::fs::read_dir(format!("/proc/{pid}/fdinfo"))
            .into_iter()
            .flatten()
            .flatten()
            .any(|f| {
                std::fs::read_to_string(f.path())
                    .is_ok_and(|t| t.lines().any(|l| l.starts_with("lock:")))
            });
        if locked {
            return;
        }
        assert!(Instant::now() < until, "pid {pid} never locked its image");
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// Starts a QEMU tool with `args`, waits until it holds its image, and checks that each of
/// `cmds` exits 5 naming the tool and that nothing changed; then stops the tool.
fn refused_beside(e: &Env, tool: &str, args: &[&str], cmds: &[Vec<&str>]) {
    let mut q = qemu_tool(tool, args);
    wait_for_lock(q.id());
    let before = state(e);
    for c in cmds {
        let o = e.run(c);
        assert_eq!(code(&o), Some(5), "{c:?} beside {tool}: {}", stderr(&o));
        assert!(
            stderr(&o).contains(tool),
            "names the holder: {}",
            stderr(&o)
        );
    }
    assert_eq!(state(e), before, "nothing changed beside {tool}");
    // qemu-io ends when its stdin closes; the servers are stopped.
    drop(q.stdin.take());
    if tool != "qemu-io" {
        q.kill().expect("stop the tool");
    }
    q.wait().expect("the tool ends");
}

fn qemu_tool(name: &str, args: &[&str]) -> Child {
    Command::new(name)
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| {
            panic!("{name} is needed by this test and could not be run ({e}); install it with `apt-get install qemu-utils`")
        })
}

#[test]
fn an_image_qemu_io_or_qemu_nbd_has_open_is_refused_by_every_mutating_command() {
    let t = template();
    let e = Env::copy_of(&t);
    let p = |name: &str| e.path(name).to_str().expect("utf8").to_string();
    // qemu-io holds a raw image open for writing until its stdin closes, as QEMU does.
    for (image, cmds) in [
        (
            "d.img",
            vec![
                vec!["encrypt", "d.img", "--in-place"],
                vec!["encrypt", "d.img", "--output", "x.img"],
            ],
        ),
        (
            "e.img",
            vec![
                vec!["decrypt", "e.img", "--in-place"],
                vec!["decrypt", "e.img", "--output", "x.img"],
                vec!["rekey", "e.img", "--deep"],
                vec!["rekey", "e.img", "--shallow"],
            ],
        ),
        ("i.img", vec![vec!["resume", "i.img"]]),
    ] {
        refused_beside(&e, "qemu-io", &["-f", "raw", &p(image)], &cmds);
    }
    // qemu-nbd serving a VMDK (descriptor and flat extent) as a storage daemon would.
    let (sock, a) = (p("nbd.sock"), p("a.vmdk"));
    refused_beside(
        &e,
        "qemu-nbd",
        &["-f", "vmdk", "--socket", &sock, &a],
        &[
            vec!["encrypt", "a.vmdk", "--in-place"],
            vec!["vm", "encrypt", "vm.vmx"],
        ],
    );
    // qemu-nbd serving a disk of an encrypted VM: every VM job on it is refused too.
    e.ok(&["vm", "encrypt", "vm.vmx"]);
    let (sock, b) = (p("nbd2.sock"), p("b.vmdk"));
    refused_beside(
        &e,
        "qemu-nbd",
        &["-f", "vmdk", "--socket", &sock, &b],
        &[
            vec!["vm", "decrypt", "vm.vmx"],
            vec!["vm", "rekey", "vm.vmx", "--shallow"],
            vec!["vm", "rekey", "vm.vmx", "--deep"],
            vec!["resume", "vm.vmx"],
        ],
    );
    e.ok(&["vm", "decrypt", "vm.vmx"]);
    // qemu-storage-daemon exporting a raw image, as a hypervisor's storage daemon would.
    let blockdev = format!("driver=file,filename={},node-name=disk0", p("d.img"));
    let server = format!("addr.type=unix,addr.path={}", p("qsd.sock"));
    refused_beside(
        &e,
        "qemu-storage-daemon",
        &[
            "--blockdev",
            &blockdev,
            "--nbd-server",
            &server,
            "--export",
            "type=nbd,id=e0,node-name=disk0,writable=on",
        ],
        &[vec!["encrypt", "d.img", "--in-place"]],
    );
    // Once QEMU let go, the same job runs.
    e.ok(&["encrypt", "a.vmdk", "--in-place"]);
    assert_plaintext(&e, "a.vmdk", &e.path("a.orig"));
}

#[test]
fn qemu_refuses_an_image_while_vmcrypt_holds_it() {
    let t = template();
    let e = Env::copy_of(&t);
    let held = hold(&e, &["encrypt", "d.img", "--in-place"]);
    let img = e.path("d.img");
    let img = img.to_str().expect("utf8");
    let copy = e.path("copy.img").to_str().expect("utf8").to_string();
    for (tool, args) in [
        (
            "qemu-io",
            vec!["-f", "raw", "-c", "write -P 0x33 0 4096", img],
        ),
        (
            "qemu-img",
            vec!["convert", "-f", "raw", "-O", "raw", img, &copy],
        ),
    ] {
        let o = Command::new(tool)
            .args(&args)
            .output()
            .expect("run qemu tool");
        let err = String::from_utf8_lossy(&o.stderr);
        assert!(
            !o.status.success() && err.contains("lock"),
            "{tool} {args:?} must be refused while vmcrypt holds the image: {err}"
        );
    }
    assert_eq!(code(&release(held)), Some(0));
    assert_plaintext(&e, "d.img", &e.path("d.orig"));
}

#[test]
fn two_jobs_racing_for_one_output_never_remove_each_others_file() {
    let t = Env::new();
    t.ok(&["provider", "add-native", "native"]);
    t.raw_image("a.img", 32 * MIB);
    t.raw_image("bb.img", 32 * MIB);
    for round in 0..6 {
        let e = Env::copy_of(&t);
        let (a, b) = (
            ["encrypt", "a.img", "--output", "o.img"],
            ["encrypt", "bb.img", "--output", "o.img"],
        );
        let (oa, ob) = if round % 2 == 0 {
            race(&e, &a, &b)
        } else {
            race(&e, &b, &a)
        };
        let won: Vec<&Output> = [&oa, &ob]
            .into_iter()
            .filter(|o| code(o) == Some(0))
            .collect();
        assert_eq!(
            won.len(),
            1,
            "round {round}: {}\n{}",
            stderr(&oa),
            stderr(&ob)
        );
        // The winner's output is whole and decrypts to the winner's source.
        let src = if code(&oa) == Some(0) {
            if round % 2 == 0 { "a.img" } else { "bb.img" }
        } else if round % 2 == 0 {
            "bb.img"
        } else {
            "a.img"
        };
        e.ok(&["decrypt", "o.img", "--output", "back.img"]);
        assert!(
            std::fs::read(e.path("back.img")).expect("read")
                == std::fs::read(e.path(src)).expect("read"),
            "round {round}: the output is not {src}'s"
        );
    }
}

#[test]
fn two_provider_commands_at_once_never_drop_each_others_change() {
    for round in 0..8 {
        let e = Env::new();
        e.ok(&["provider", "add-native", "base"]);
        let (a, b) = (
            ["provider", "add-native", "one"],
            ["provider", "add-native", "two"],
        );
        let (oa, ob) = if round % 2 == 0 {
            race(&e, &a, &b)
        } else {
            race(&e, &b, &a)
        };
        let list = e.ok(&["--json", "provider", "list"]);
        let names: Vec<String> = json(&list)["providers"]
            .as_array()
            .expect("providers")
            .iter()
            .map(|p| p["name"].as_str().expect("name").to_string())
            .collect();
        let (first, second) = if round % 2 == 0 {
            ("one", "two")
        } else {
            ("two", "one")
        };
        for (o, name) in [(&oa, first), (&ob, second)] {
            match code(o) {
                Some(0) => assert!(
                    names.iter().any(|n| n == name),
                    "round {round}: {name} reported added but lost: {names:?}"
                ),
                Some(1) => assert!(
                    stderr(o).contains("changed by another command"),
                    "round {round}: {}",
                    stderr(o)
                ),
                c => panic!("round {round}: {name}: exit {c:?}: {}", stderr(o)),
            }
        }
        assert!(names.iter().any(|n| n == "base"), "{names:?}");
    }
}
