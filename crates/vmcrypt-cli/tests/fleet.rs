//! Fleets: `vm encrypt` and `vm rekey` of many VMs in one command, with bounded parallelism,
//! one JSON line per VM, failures that do not stop the others, a non-zero exit when any VM
//! failed, and `--results FILE` to resume where a run stopped.

mod common;

use common::*;
use serde_json::Value;

const KIB: u64 = 1024;

/// `n` VMs, each in its own folder with a VMX and one small VMDK; the list file.
fn fleet(e: &Env, n: usize) -> Vec<String> {
    fleet_of(e, n, 64 * KIB)
}

/// `n` VMs with a disk of `size` bytes each; the list file.
fn fleet_of(e: &Env, n: usize, size: u64) -> Vec<String> {
    let mut vmxs = Vec::new();
    for i in 0..n {
        let dir = format!("vm{i}");
        std::fs::create_dir_all(e.path(&dir)).expect("vm dir");
        e.vmdk(&format!("{dir}/disk.vmdk"), size);
        let vmx = format!("{dir}/vm{i}.vmx");
        std::fs::write(
            e.path(&vmx),
            format!("displayName = \"vm{i}\"\nscsi0:0.fileName = \"disk.vmdk\"\n"),
        )
        .expect("vmx");
        vmxs.push(vmx);
    }
    let list = vmxs.iter().map(|v| format!("{v}\n")).collect::<String>();
    std::fs::write(e.path("fleet.txt"), format!("# the fleet\n{list}\n")).expect("list");
    vmxs
}

fn lines(stdout: &[u8]) -> Vec<Value> {
    String::from_utf8_lossy(stdout)
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("not a JSON line ({e}): {l}")))
        .collect()
}

fn by_result<'a>(lines: &'a [Value], result: &str) -> Vec<&'a Value> {
    lines.iter().filter(|l| l["result"] == result).collect()
}

#[test]
fn a_fleet_is_encrypted_and_rekeyed_past_a_failure_and_resumed_from_its_results() {
    let e = Env::new();
    e.ok(&["provider", "add-native", "n"]);
    let vmxs = fleet(&e, 6);
    // Encrypt: a list and one more named; --parallel 3; every VM one ok line.
    let o = e.run(&[
        "vm",
        "encrypt",
        "--from-file",
        "fleet.txt",
        "--parallel",
        "3",
        "--provider",
        "n",
    ]);
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    let enc = lines(&o.stdout);
    assert_eq!(enc.len(), 6, "{enc:?}");
    for l in &enc {
        assert_eq!(l["operation"], "encrypt");
        assert_eq!(l["result"], "ok", "{l}");
        assert_eq!(l["provider"], "n");
        assert_eq!(l["generation"], 1);
        assert_eq!(l["disks"], 1);
        assert!(l["vmx"].as_str().is_some_and(|p| p.starts_with('/')), "{l}");
    }
    assert!(stderr(&o).contains("6 ok, 0 failed"), "{}", stderr(&o));
    // One VM is broken (its disk is gone): its line says why, the others go on, exit 1.
    std::fs::rename(e.path("vm2/disk-flat.vmdk"), e.path("vm2-flat.away")).expect("break vm2");
    let rekey = [
        "vm",
        "rekey",
        "--shallow",
        "--from-file",
        "fleet.txt",
        "--parallel",
        "2",
        "--results",
        "rotation.jsonl",
    ];
    let o = e.run(&rekey);
    assert_eq!(o.status.code(), Some(1), "{}", stderr(&o));
    let first = lines(&o.stdout);
    assert_eq!(first.len(), 6);
    let failed = by_result(&first, "error");
    assert_eq!(failed.len(), 1, "{first:?}");
    assert!(
        failed[0]["vmx"]
            .as_str()
            .is_some_and(|p| p.ends_with("vm2/vm2.vmx"))
    );
    assert!(
        failed[0]["error"]["message"]
            .as_str()
            .is_some_and(|m| !m.is_empty())
    );
    assert!(
        failed[0]["error"]["exit_code"]
            .as_u64()
            .is_some_and(|c| c > 0)
    );
    assert_eq!(by_result(&first, "ok").len(), 5);
    assert!(stderr(&o).contains("5 ok, 1 failed"), "{}", stderr(&o));
    // The results file holds the same lines.
    let recorded = lines(&std::fs::read(e.path("rotation.jsonl")).expect("results"));
    assert_eq!(recorded.len(), 6);
    // Mended, the same command again does only what is left.
    std::fs::rename(e.path("vm2-flat.away"), e.path("vm2/disk-flat.vmdk")).expect("mend vm2");
    let o = e.run(&rekey);
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    let second = lines(&o.stdout);
    assert_eq!(by_result(&second, "skipped").len(), 5, "{second:?}");
    let redone = by_result(&second, "ok");
    assert_eq!(redone.len(), 1);
    assert!(
        redone[0]["vmx"]
            .as_str()
            .is_some_and(|p| p.ends_with("vm2/vm2.vmx"))
    );
    // Every VM was rekeyed once: generation 2, consistent.
    for v in &vmxs {
        let i = json(&e.ok(&["--json", "vm", "inspect", v]));
        assert_eq!(i["key_generation"], 2, "{v}: {i}");
        assert_eq!(i["consistent"], true, "{v}: {i}");
    }
    // A third run skips everything.
    let o = e.run(&rekey);
    assert_eq!(o.status.code(), Some(0));
    assert_eq!(by_result(&lines(&o.stdout), "skipped").len(), 6);
}

#[test]
fn fleet_arguments_are_checked() {
    let e = Env::new();
    fleet(&e, 2);
    // Neither VMX nor --from-file: usage.
    assert_eq!(e.run(&["vm", "rekey", "--shallow"]).status.code(), Some(2));
    assert_eq!(
        e.run(&["vm", "rekey", "--shallow", "vm0/vm0.vmx", "--parallel", "0"])
            .status
            .code(),
        Some(2)
    );
    // A list that does not exist: exit 1, nothing run.
    let o = e.run(&["vm", "encrypt", "--from-file", "nope.txt"]);
    assert_eq!(o.status.code(), Some(1), "{}", stderr(&o));
    assert!(o.stdout.is_empty());
    // --deep with --provider is refused before any VM is touched.
    let o = e.run(&[
        "vm",
        "rekey",
        "--deep",
        "--provider",
        "x",
        "vm0/vm0.vmx",
        "vm1/vm1.vmx",
    ]);
    assert_eq!(o.status.code(), Some(1));
    assert!(o.stdout.is_empty());
    // Not encrypted: each VM fails on its own line, exit 1.
    let o = e.run(&["vm", "rekey", "--deep", "vm0/vm0.vmx", "vm1/vm1.vmx"]);
    assert_eq!(o.status.code(), Some(1), "{}", stderr(&o));
    let l = lines(&o.stdout);
    assert_eq!(by_result(&l, "error").len(), 2, "{l:?}");
    assert!(l.iter().all(|l| l["operation"] == "rekey-deep"));
}

/// A fleet's deep rekey cut off in the middle of a VM (an abort at a sync point, as kill -9
/// or a power cut would leave it), after three VMs were done: the same command again skips the
/// three the results file records, finishes the one that was cut, and does the rest. Every VM
/// ends consistent, and its data decrypts back to what it was.
#[test]
fn a_fleet_cut_off_in_the_middle_of_a_vm_is_finished_by_the_same_command() {
    let e = Env::new();
    e.ok(&["provider", "add-native", "n"]);
    let vmxs = fleet_of(&e, 8, 1024 * KIB);
    let flats: Vec<Vec<u8>> = (0..vmxs.len())
        .map(|i| std::fs::read(e.path(&format!("vm{i}/disk-flat.vmdk"))).expect("flat"))
        .collect();
    e.ok(&[
        "vm",
        "encrypt",
        "--from-file",
        "fleet.txt",
        "--parallel",
        "4",
    ]);
    let results = ["--results", "deep.jsonl"];
    let mut first = vec!["vm", "rekey", "--deep", &vmxs[0], &vmxs[1], &vmxs[2]];
    first.extend(results);
    e.ok(&first);
    let mut rekey = vec![
        "vm",
        "rekey",
        "--deep",
        "--from-file",
        "fleet.txt",
        "--parallel",
        "1",
    ];
    rekey.extend(results);
    let o = e.run_env(
        &rekey,
        &[
            ("VMCRYPT_FAILPOINT", "reencrypt-chunk-synced"),
            ("VMCRYPT_CHUNK_BYTES", "262144"),
        ],
    );
    assert_eq!(
        o.status.code(),
        None,
        "the failpoint aborts: {}",
        stderr(&o)
    );
    assert_eq!(by_result(&lines(&o.stdout), "skipped").len(), 3);
    let cut = json(&e.ok(&["--json", "vm", "inspect", &vmxs[3]]));
    assert_eq!(
        cut["rekey_generation"], 2,
        "vm3 is cut in the middle: {cut}"
    );
    // The same command again.
    let o = e.run(&rekey);
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    let second = lines(&o.stdout);
    assert_eq!(by_result(&second, "skipped").len(), 3, "{second:?}");
    assert_eq!(by_result(&second, "ok").len(), vmxs.len() - 3);
    for v in &vmxs {
        let i = json(&e.ok(&["--json", "vm", "inspect", v]));
        assert_eq!(i["consistent"], true, "{v}: {i}");
        assert_eq!(i["key_generation"], 2, "{v}: {i}");
        assert_eq!(i["rekey_generation"], Value::Null, "{v}: {i}");
    }
    for (i, want) in flats.iter().enumerate() {
        e.ok(&["vm", "decrypt", &format!("vm{i}/vm{i}.vmx")]);
        let got = std::fs::read(e.path(&format!("vm{i}/disk-flat.vmdk"))).expect("flat");
        assert!(
            got == *want,
            "vm{i}: the data did not survive the cut and the rerun"
        );
    }
}
