//! Whole VMs: a realistic VMX with three disks made by qemu-img; encrypt, inspect, shallow
//! rekey (twice, once to another provider), decrypt; tamper cases; a crash at every step of a
//! shallow rekey.

mod common;

use std::path::Path;

use common::*;

const MIB: u64 = 1024 * 1024;

const VMX: &str = "\
.encoding = \"UTF-8\"\r
config.version = \"8\"\r
virtualHW.version = \"19\"\r
displayName = \"web01\"\r
guestOS = \"ubuntu-64\"\r
memSize = \"4096\"\r
numvcpus = \"2\"\r
annotation = \"billing: team-blue|0Aowner: alice\"\r
uuid.bios = \"56 4d 8a 3b 2c 11 2e 7a-0d 5e 29 7b 1c 9f 44 a0\"\r
uuid.location = \"56 4d 8a 3b 2c 11 2e 7a-0d 5e 29 7b 1c 9f 44 a0\"\r
scsi0.present = \"TRUE\"\r
scsi0.virtualDev = \"pvscsi\"\r
scsi0:0.present = \"TRUE\"\r
scsi0:0.fileName = \"web01.vmdk\"\r
sata0.present = \"TRUE\"\r
sata0:1.present = \"TRUE\"\r
sata0:1.fileName = \"web01_data.vmdk\"\r
nvme0.present = \"TRUE\"\r
nvme0:0.present = \"TRUE\"\r
nvme0:0.fileName = \"web01_logs.vmdk\"\r
ide1:0.present = \"TRUE\"\r
ide1:0.deviceType = \"cdrom-image\"\r
ide1:0.fileName = \"ubuntu-24.04.iso\"\r
ethernet0.present = \"TRUE\"\r
ethernet0.virtualDev = \"vmxnet3\"\r
ethernet0.addressType = \"generated\"\r
ethernet0.generatedAddress = \"00:0c:29:9f:44:a0\"\r
guestinfo.metadata = \"c2VjcmV0LWNsb3VkLWluaXQ=\"\r
tools.syncTime = \"FALSE\"\r
# hand-written comment kept as is\r
sched.mem.min = \"1024\"";

const DISKS: [&str; 3] = ["web01.vmdk", "web01_data.vmdk", "web01_logs.vmdk"];

fn flat(name: &str) -> String {
    format!("{}-flat.vmdk", name.trim_end_matches(".vmdk"))
}

/// A VM directory: the VMX, three disks, pristine copies of the disks for comparison.
fn vm_env() -> Env {
    let e = Env::new();
    std::fs::write(e.path("web01.vmx"), VMX).expect("vmx");
    for (i, d) in DISKS.iter().enumerate() {
        e.vmdk(d, (i as u64 + 1) * MIB);
        std::fs::create_dir_all(e.path("orig")).expect("orig dir");
        std::fs::copy(e.path(d), e.path(&format!("orig/{d}"))).expect("copy");
        std::fs::copy(e.path(&flat(d)), e.path(&format!("orig/{}", flat(d)))).expect("copy");
    }
    e.ok(&["provider", "add-native", "native"]);
    e
}

fn flats(e: &Env) -> Vec<Vec<u8>> {
    DISKS
        .iter()
        .map(|d| std::fs::read(e.path(&flat(d))).expect("flat"))
        .collect()
}

fn assert_restored(e: &Env) {
    assert_eq!(
        std::fs::read_to_string(e.path("web01.vmx")).expect("vmx"),
        VMX,
        "VMX not restored byte for byte"
    );
    for d in DISKS {
        assert_identical(&e.path(&format!("orig/{d}")), &e.path(d));
        assert_eq!(
            std::fs::read_to_string(e.path(d)).expect("descriptor"),
            std::fs::read_to_string(e.path(&format!("orig/{d}"))).expect("descriptor"),
            "{d}: descriptor not restored"
        );
    }
}

fn inspect(e: &Env) -> serde_json::Value {
    json(&e.ok(&["--json", "vm", "inspect", "web01.vmx"]))
}

#[test]
fn encrypt_inspect_rekey_twice_decrypt() {
    let e = vm_env();
    let j = inspect(&e);
    assert_eq!(j["encrypted"], false);
    assert_eq!(
        j["disks"].as_array().expect("disks").len(),
        3,
        "the CD image is not a disk: {j}"
    );

    e.ok(&["vm", "encrypt", "web01.vmx"]);
    let vmx = std::fs::read_to_string(e.path("web01.vmx")).expect("vmx");
    for secret in [
        "team-blue",
        "00:0c:29:9f:44:a0",
        "c2VjcmV0LWNsb3VkLWluaXQ=",
        "sched.mem.min",
        "memSize",
    ] {
        assert!(!vmx.contains(secret), "{secret} left in clear:\n{vmx}");
    }
    for kept in [
        "displayName = \"web01\"",
        "scsi0:0.fileName = \"web01.vmdk\"",
        "# hand-written comment kept as is",
        "encryption.keySafe = \"vmware:key/list/(pair/(fqid/<VMWARE-NULL>/native/",
    ] {
        assert!(vmx.contains(kept), "{kept} missing:\n{vmx}");
    }
    let j = inspect(&e);
    assert_eq!(
        (
            j["encrypted"].clone(),
            j["state"].clone(),
            j["key_generation"].clone(),
            j["consistent"].clone()
        ),
        (true.into(), "encrypted".into(), 1.into(), true.into())
    );
    let vm_key = j["keys"][0]["key_id"].clone();
    for d in j["disks"].as_array().expect("disks") {
        assert_eq!(
            (d["encrypted"].clone(), d["belongs_to_vm"].clone()),
            (true.into(), true.into()),
            "{d}"
        );
        assert_eq!(
            d["keys"][0]["key_id"], vm_key,
            "every disk under the VM's KEK"
        );
    }
    let ciphertext = flats(&e);
    for (c, d) in ciphertext.iter().zip(DISKS) {
        assert_ne!(
            c,
            &std::fs::read(e.path(&format!("orig/{}", flat(d)))).expect("orig")
        );
    }

    // Shallow rekey: new KEK, generation 2, not one data byte rewritten.
    let out = json(&e.ok(&["--json", "vm", "rekey", "web01.vmx", "--shallow"]));
    println!(
        "shallow rekey of a VM with 3 disks: {:.4} s",
        out["seconds"].as_f64().expect("seconds")
    );
    let j = inspect(&e);
    assert_eq!(j["key_generation"], 2);
    assert_ne!(j["keys"][0]["key_id"], vm_key);
    assert_eq!(j["consistent"], true);
    assert_eq!(flats(&e), ciphertext, "a shallow rekey rewrote data");

    // Again, to another provider.
    e.ok(&["provider", "add-native", "other"]);
    let out = json(&e.ok(&[
        "--json",
        "vm",
        "rekey",
        "web01.vmx",
        "--shallow",
        "--provider",
        "other",
    ]));
    println!(
        "shallow rekey to another provider: {:.4} s",
        out["seconds"].as_f64().expect("seconds")
    );
    let j = inspect(&e);
    assert_eq!(
        (
            j["key_generation"].clone(),
            j["keys"][0]["provider"].clone()
        ),
        (3.into(), "other".into())
    );
    for d in j["disks"].as_array().expect("disks") {
        assert_eq!(d["keys"][0]["provider"], "other");
        assert_eq!(d["key_generation"], 3);
    }
    assert_eq!(flats(&e), ciphertext);

    e.ok(&["vm", "decrypt", "web01.vmx"]);
    assert_restored(&e);
    assert_eq!(inspect(&e)["encrypted"], false);
}

fn refused(e: &Env, args: &[&str], code: i32) -> String {
    let before = snapshot(e.dir.path());
    let o = e.run(args);
    let err = stderr(&o);
    assert_eq!(o.status.code(), Some(code), "vmcrypt {args:?}: {err}");
    assert_eq!(
        snapshot(e.dir.path()),
        before,
        "vmcrypt {args:?} changed files"
    );
    err
}

fn edit(p: &Path, f: impl FnOnce(String) -> String) {
    let t = std::fs::read_to_string(p).expect("read");
    std::fs::write(p, f(t)).expect("write");
}

fn value_of(text: &str, key: &str) -> String {
    text.lines()
        .find(|l| l.starts_with(key))
        .and_then(|l| l.split('"').nth(1))
        .unwrap_or_else(|| panic!("no {key}"))
        .to_string()
}

#[test]
fn tampering_is_refused_with_exit_4() {
    let base = vm_env();
    base.ok(&["vm", "encrypt", "web01.vmx"]);
    // A second VM under the same provider, for cross-VM swaps.
    let other = Env::copy_of(&base);
    other.ok(&["vm", "decrypt", "web01.vmx"]);
    other.ok(&["vm", "encrypt", "web01.vmx"]);

    // Disk keySafes swapped between two disks of the VM.
    let e = Env::copy_of(&base);
    let a = value_of(
        &std::fs::read_to_string(e.path(DISKS[0])).expect("read"),
        "encryptionKeys",
    );
    let b = value_of(
        &std::fs::read_to_string(e.path(DISKS[1])).expect("read"),
        "encryptionKeys",
    );
    edit(&e.path(DISKS[0]), |t| t.replace(&a, &b));
    refused(&e, &["vm", "decrypt", "web01.vmx"], 4);
    refused(&e, &["vm", "rekey", "web01.vmx", "--shallow"], 4);

    // The VM keySafe (and its uuid) taken from another VM.
    let e = Env::copy_of(&base);
    let theirs = std::fs::read_to_string(other.path("web01.vmx")).expect("read");
    edit(&e.path("web01.vmx"), |t| {
        let t = t.replace(
            &value_of(&t, "encryption.keySafe"),
            &value_of(&theirs, "encryption.keySafe"),
        );
        t.replace(
            &value_of(&t, "vmcrypt.vmUuid"),
            &value_of(&theirs, "vmcrypt.vmUuid"),
        )
    });
    refused(&e, &["vm", "decrypt", "web01.vmx"], 4);

    // A flipped bit in the VM keySafe.
    let e = Env::copy_of(&base);
    edit(&e.path("web01.vmx"), |t| {
        let ks = value_of(&t, "encryption.keySafe");
        let pos = ks.find("GCM,").expect("pair") + 12;
        t.replace(&ks, &flip_base64_char(&ks, pos))
    });
    refused(&e, &["vm", "decrypt", "web01.vmx"], 4);

    // An altered encryption.data.
    let e = Env::copy_of(&base);
    edit(&e.path("web01.vmx"), |t| {
        let d = value_of(&t, "encryption.data");
        let mut b = d.clone().into_bytes();
        b[20] = if b[20] == b'A' { b'B' } else { b'A' };
        t.replace(&d, std::str::from_utf8(&b).expect("ascii"))
    });
    refused(&e, &["vm", "decrypt", "web01.vmx"], 4);
    refused(&e, &["vm", "rekey", "web01.vmx", "--shallow"], 4);

    // A disk descriptor rolled back to before a rekey.
    let e = Env::copy_of(&base);
    let saved = std::fs::read(e.path(DISKS[2])).expect("read");
    e.ok(&["vm", "rekey", "web01.vmx", "--shallow"]);
    std::fs::write(e.path(DISKS[2]), &saved).expect("roll back");
    let err = refused(&e, &["vm", "decrypt", "web01.vmx"], 4);
    assert!(err.contains("key generation"), "{err}");
    let j = json(&e.expect(&["--json", "vm", "inspect", "web01.vmx"], 4));
    assert_eq!(j["consistent"], false);
    assert!(
        j["problems"][0]
            .as_str()
            .is_some_and(|p| p.contains("generations")),
        "{j}"
    );

    // A disk of this VM swapped in from the other VM.
    let e = Env::copy_of(&base);
    for f in [DISKS[1].to_string(), flat(DISKS[1])] {
        std::fs::copy(other.path(&f), e.path(&f)).expect("swap disk");
    }
    let err = refused(&e, &["vm", "decrypt", "web01.vmx"], 4);
    assert!(err.contains("another VM"), "{err}");

    // The untouched one still decrypts.
    base.ok(&["vm", "decrypt", "web01.vmx"]);
    assert_restored(&base);
}

#[test]
fn crash_at_every_step_of_a_shallow_rekey() {
    let base = vm_env();
    base.ok(&["vm", "encrypt", "web01.vmx"]);
    let ciphertext = flats(&base);
    // 3 disks staged, the VMX staged, 3 disks committed: a crash after each of these 7 writes.
    for step in 0..7 {
        let e = Env::copy_of(&base);
        let fp = format!("vm-rekey-{step}");
        let o = e.run_env(
            &["vm", "rekey", "web01.vmx", "--shallow"],
            &[("VMCRYPT_FAILPOINT", &fp)],
        );
        assert_eq!(
            o.status.code(),
            None,
            "step {step}: the failpoint did not crash the process: {}",
            stderr(&o)
        );
        assert!(stderr(&o).contains(&fp), "step {step}: {}", stderr(&o));
        assert_eq!(flats(&e), ciphertext, "step {step}: data rewritten");
        // The VM still opens: decrypt a copy.
        let copy = Env::copy_of(&e);
        copy.ok(&["vm", "decrypt", "web01.vmx"]);
        assert_restored(&copy);
        // Running the rekey again completes it.
        let out = json(&e.ok(&["--json", "vm", "rekey", "web01.vmx", "--shallow"]));
        assert_eq!(out["resumed"], true, "step {step}: {out}");
        let j = inspect(&e);
        assert_eq!(
            (
                j["key_generation"].clone(),
                j["rekey_generation"].clone(),
                j["consistent"].clone()
            ),
            (2.into(), serde_json::Value::Null, true.into()),
            "step {step}: {j}"
        );
        for d in j["disks"].as_array().expect("disks") {
            assert_eq!(
                (
                    d["key_generation"].clone(),
                    d["keys"].as_array().map(Vec::len)
                ),
                (2.into(), Some(1)),
                "step {step}: {d}"
            );
        }
        e.ok(&["vm", "decrypt", "web01.vmx"]);
        assert_restored(&e);
    }
}

#[test]
fn disk_shallow_rekey_and_refusals() {
    let e = Env::new();
    e.raw_image("d.img", 2 * MIB);
    std::fs::copy(e.path("d.img"), e.path("d.orig")).expect("copy");
    e.ok(&["encrypt", "d.img", "--in-place"]);
    let ct = std::fs::read(e.path("d.img")).expect("read");
    let before = json(&e.ok(&["--json", "inspect", "d.img"]));
    let r = json(&e.ok(&["--json", "rekey", "d.img", "--shallow"]));
    assert_eq!(r["generation"], 2);
    let after = json(&e.ok(&["--json", "inspect", "d.img"]));
    assert_ne!(after["keys"][0]["key_id"], before["keys"][0]["key_id"]);
    assert_eq!(after["key_generation"], 2);
    assert_eq!(
        std::fs::read(e.path("d.img")).expect("read"),
        ct,
        "shallow rekey rewrote data"
    );
    // Deep: a new DEK, every sector rewritten, generation 3.
    let r = json(&e.ok(&["--json", "rekey", "d.img", "--deep"]));
    assert_eq!(r["generation"], 3);
    let deep = std::fs::read(e.path("d.img")).expect("read");
    assert!(
        deep.chunks(4096).zip(ct.chunks(4096)).all(|(a, b)| a != b),
        "a sector kept its old ciphertext"
    );
    let o = e.run(&["rekey", "d.img", "--deep", "--provider", "native"]);
    assert_eq!(o.status.code(), Some(1), "{}", stderr(&o));
    e.ok(&["decrypt", "d.img", "--in-place"]);
    assert_eq!(
        std::fs::read(e.path("d.img")).expect("read"),
        std::fs::read(e.path("d.orig")).expect("read")
    );

    // A VM's disk is rekeyed with its VM, not alone.
    let v = vm_env();
    v.ok(&["vm", "encrypt", "web01.vmx"]);
    let o = v.run(&["rekey", DISKS[0], "--shallow"]);
    assert_eq!(o.status.code(), Some(1));
    assert!(stderr(&o).contains("belongs to a VM"), "{}", stderr(&o));
    let o = v.run(&["vm", "encrypt", "web01.vmx"]);
    assert_eq!(o.status.code(), Some(1), "encrypting twice");
}

#[test]
fn deep_rekey_of_a_vm_with_a_crash_in_the_middle() {
    let e = vm_env();
    e.ok(&["vm", "encrypt", "web01.vmx"]);
    let before = flats(&e);
    // Crash once the first chunk of the first disk is rewritten.
    let o = e.run_env(
        &["vm", "rekey", "web01.vmx", "--deep"],
        &[
            ("VMCRYPT_FAILPOINT", "reencrypt-chunk-synced"),
            ("VMCRYPT_CHUNK_BYTES", "262144"),
        ],
    );
    assert_eq!(o.status.code(), None, "{}", stderr(&o));
    let j = inspect(&e);
    assert_eq!(j["rekey_generation"], 2, "{j}");
    assert_eq!(
        j["consistent"], true,
        "mid-rekey the VM stays consistent: {j}"
    );
    // Running it again finishes the interrupted disk job and the rest.
    let r = json(&e.ok(&["--json", "vm", "rekey", "web01.vmx", "--deep"]));
    assert_eq!(r["resumed"], true);
    let j = inspect(&e);
    assert_eq!(
        (
            j["key_generation"].clone(),
            j["rekey_generation"].clone(),
            j["consistent"].clone()
        ),
        (2.into(), serde_json::Value::Null, true.into()),
        "{j}"
    );
    for (b, a) in before.iter().zip(flats(&e)) {
        assert!(
            b.chunks(4096).zip(a.chunks(4096)).all(|(x, y)| x != y),
            "a sector kept its old ciphertext"
        );
    }
    e.ok(&["vm", "decrypt", "web01.vmx"]);
    assert_restored(&e);
}

#[test]
fn vm_encrypt_and_decrypt_killed_mid_disk_are_resumed() {
    let e = vm_env();
    let crash = [
        ("VMCRYPT_FAILPOINT", "reencrypt-chunk-synced"),
        ("VMCRYPT_CHUNK_BYTES", "262144"),
    ];
    let o = e.run_env(&["vm", "encrypt", "web01.vmx"], &crash);
    assert_eq!(o.status.code(), None, "{}", stderr(&o));
    assert_eq!(inspect(&e)["state"], "encrypting");
    let o = e.run(&["vm", "decrypt", "web01.vmx"]);
    assert_ne!(
        o.status.code(),
        Some(0),
        "a VM with a disk mid-job must not be decrypted blindly"
    );
    e.ok(&["resume", "web01.vmx"]);
    let j = inspect(&e);
    assert_eq!(
        (j["state"].clone(), j["consistent"].clone()),
        ("encrypted".into(), true.into()),
        "{j}"
    );
    for d in j["disks"].as_array().expect("disks") {
        assert_eq!(d["state"], "encrypted", "{d}");
    }
    let o = e.run_env(&["vm", "decrypt", "web01.vmx"], &crash);
    assert_eq!(o.status.code(), None, "{}", stderr(&o));
    assert_eq!(inspect(&e)["state"], "decrypting");
    e.ok(&["resume", "web01.vmx"]);
    assert_restored(&e);
    assert!(e.ok(&["resume", "web01.vmx"]).contains("nothing to resume"));
}

#[test]
fn lone_jobs_on_a_disk_of_an_encrypted_vm_are_refused_with_a_hint() {
    let e = vm_env();
    e.ok(&["vm", "encrypt", "web01.vmx"]);
    for (args, hint) in [
        (vec!["decrypt", DISKS[0], "--in-place"], "vm decrypt"),
        (vec!["rekey", DISKS[0], "--shallow"], "vm rekey"),
        (vec!["rekey", DISKS[0], "--deep"], "vm rekey"),
    ] {
        let err = refused(&e, &args, 1);
        assert!(err.contains(hint), "{args:?}: {err}");
    }
    // A decrypted copy elsewhere leaves the VM as it is.
    e.ok(&["decrypt", DISKS[1], "--output", "copy.vmdk"]);
    assert_identical(&e.path(&format!("orig/{}", DISKS[1])), &e.path("copy.vmdk"));
    // A plain disk of a VM whose encryption was cut short: the VM's job owns it.
    let p = vm_env();
    let o = p.run_env(
        &["vm", "encrypt", "web01.vmx"],
        &[
            ("VMCRYPT_FAILPOINT", "reencrypt-chunk-synced"),
            ("VMCRYPT_CHUNK_BYTES", "262144"),
        ],
    );
    assert_eq!(o.status.code(), None, "{}", stderr(&o));
    let plain = inspect_any(&p)["disks"]
        .as_array()
        .expect("disks")
        .iter()
        .filter(|d| d["encrypted"] == false)
        .map(|d| d["path"].as_str().expect("path").to_string())
        .next_back()
        .expect("a disk not reached yet");
    let err = refused(&p, &["encrypt", &plain, "--in-place"], 1);
    assert!(
        err.contains("vm encrypt") && err.contains("web01.vmx"),
        "{err}"
    );
    p.ok(&["resume", "web01.vmx"]);
    p.ok(&["vm", "decrypt", "web01.vmx"]);
    assert_restored(&p);
}

/// `vm inspect --json` whatever its exit code.
fn inspect_any(e: &Env) -> serde_json::Value {
    json(&String::from_utf8_lossy(
        &e.run(&["--json", "vm", "inspect", "web01.vmx"]).stdout,
    ))
}

#[test]
fn vm_inspect_fails_for_a_missing_or_plain_disk_and_resume_repairs_a_lone_decrypt() {
    let base = vm_env();
    base.ok(&["vm", "encrypt", "web01.vmx"]);
    // A missing disk.
    let e = Env::copy_of(&base);
    std::fs::remove_file(e.path(&flat(DISKS[2]))).expect("rm");
    let o = e.run(&["vm", "inspect", "web01.vmx"]);
    assert_eq!(o.status.code(), Some(4), "{}", stderr(&o));
    let text = String::from_utf8_lossy(&o.stdout);
    assert!(
        text.contains("consistent:   NO") && text.contains("cannot be read"),
        "{text}"
    );
    // A disk decrypted on its own, as an earlier version allowed: replace its files by a
    // decrypted copy, which is what a lone in-place decrypt left.
    let e = Env::copy_of(&base);
    e.ok(&["decrypt", DISKS[1], "--output", "lone.vmdk"]);
    std::fs::rename(e.path("lone-flat.vmdk"), e.path(&flat(DISKS[1]))).expect("mv");
    std::fs::copy(e.path(&format!("orig/{}", DISKS[1])), e.path(DISKS[1])).expect("cp");
    let j = json(&e.expect(&["--json", "vm", "inspect", "web01.vmx"], 4));
    assert!(
        j["problems"]
            .as_array()
            .expect("problems")
            .iter()
            .any(|p| p.as_str().is_some_and(|p| p.contains("not encrypted"))),
        "{j}"
    );
    e.expect(&["vm", "decrypt", "web01.vmx"], 4);
    // resume VMX repairs it: the disk is encrypted again under the VM's key and generation.
    let r = json(&e.ok(&["--json", "resume", "web01.vmx"]));
    assert_eq!(r["resumed"], true, "{r}");
    assert_eq!(inspect(&e)["consistent"], true);
    e.ok(&["vm", "decrypt", "web01.vmx"]);
    assert_restored(&e);
}

#[test]
fn a_forged_rekey_generation_is_refused_before_commit() {
    let e = Env::new();
    e.ok(&["provider", "add-native", "native"]);
    e.raw_image("d.img", MIB);
    let orig = std::fs::read(e.path("d.img")).expect("read");
    e.ok(&["encrypt", "d.img", "--in-place"]);
    edit(&e.path("d.img.vmcrypt"), |t| {
        format!("{t}vmcrypt.rekeyGeneration = \"5\"\n")
    });
    let err = refused(&e, &["rekey", "d.img", "--shallow"], 4);
    assert!(err.contains("rekeyGeneration 5"), "{err}");
    e.ok(&["decrypt", "d.img", "--output", "back.img"]);
    assert_eq!(std::fs::read(e.path("back.img")).expect("read"), orig);
    // The same on a VM: its VMX and every descriptor claim a staged rekey to generation 2
    // (the next one, so every generation check passes) that no keySafe holds.
    let v = vm_env();
    v.ok(&["vm", "encrypt", "web01.vmx"]);
    edit(&v.path("web01.vmx"), |t| {
        format!("{t}\r\nvmcrypt.rekeyGeneration = \"2\"")
    });
    for d in DISKS {
        edit(&v.path(d), |t| {
            format!("{t}ddb.vmcrypt.rekeyGeneration = \"2\"\n")
        });
    }
    let err = refused(&v, &["vm", "rekey", "web01.vmx", "--shallow"], 4);
    assert!(err.contains("rekeyGeneration 2"), "{err}");
    // And a target that skips a generation is refused as well.
    let v = vm_env();
    v.ok(&["vm", "encrypt", "web01.vmx"]);
    edit(&v.path("web01.vmx"), |t| {
        format!("{t}\r\nvmcrypt.rekeyGeneration = \"7\"")
    });
    refused(&v, &["vm", "rekey", "web01.vmx", "--shallow"], 4);
}

#[test]
fn an_interrupted_vm_job_names_the_vmx_to_resume() {
    let e = vm_env();
    let held = hold(&e, &["vm", "encrypt", "web01.vmx"]);
    interrupt(&held);
    let o = release(held);
    assert_eq!(o.status.code(), Some(130), "{}", stderr(&o));
    let err = stderr(&o);
    assert!(err.contains("resume") && err.contains("web01.vmx"), "{err}");
    assert!(
        !DISKS
            .iter()
            .any(|d| err.contains(&format!("resume {}", e.path(d).display()))),
        "the hint names the VMX, not a disk: {err}"
    );
    e.ok(&["resume", "web01.vmx"]);
    e.ok(&["vm", "decrypt", "web01.vmx"]);
    assert_restored(&e);
}
