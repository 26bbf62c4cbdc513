//! Bad input gets a clear error, the documented exit code, and changes nothing on disk.

mod common;

use common::*;

const MIB: u64 = 1024 * 1024;

/// Runs a command that must fail with `code` and a message containing `needle`, and checks
/// that no file in the test directory changed.
fn refused(e: &Env, args: &[&str], code: i32, needle: &str) {
    let before = snapshot(e.dir.path());
    let o = e.run(args);
    let err = stderr(&o);
    assert_eq!(o.status.code(), Some(code), "vmcrypt {args:?}: {err}");
    assert!(err.contains("error: "), "{err}");
    assert!(
        err.contains(needle),
        "vmcrypt {args:?}: expected {needle:?} in {err}"
    );
    assert!(!err.contains("panicked"), "{err}");
    assert_eq!(
        snapshot(e.dir.path()),
        before,
        "vmcrypt {args:?} changed files"
    );
}

/// An environment with two encrypted raw disks and one encrypted VMDK.
fn setup() -> Env {
    let e = Env::new();
    e.raw_image("a.img", MIB);
    e.raw_image("b.img", MIB);
    e.vmdk("v.vmdk", MIB);
    e.ok(&["encrypt", "a.img", "--in-place"]);
    e.ok(&["encrypt", "b.img", "--in-place"]);
    e.ok(&["encrypt", "v.vmdk", "--in-place"]);
    e
}

fn edit(e: &Env, file: &str, f: impl FnOnce(String) -> String) {
    let p = e.path(file);
    let t = std::fs::read_to_string(&p).expect("read");
    std::fs::write(&p, f(t)).expect("write");
}

fn keysafe_value(text: &str) -> String {
    text.lines()
        .find(|l| l.starts_with("encryptionKeys"))
        .and_then(|l| l.split('"').nth(1))
        .expect("keySafe")
        .to_string()
}

#[test]
fn flipped_bit_in_keysafe_exit_4() {
    let e = setup();
    // Flip one bit of the wrapped data by changing one base64 character (not padding).
    edit(&e, "a.img.vmcrypt", |t| {
        let ks = keysafe_value(&t);
        let pos = ks.rfind("GCM,").expect("pair") + 10;
        t.replace(&ks, &flip_base64_char(&ks, pos))
    });
    refused(&e, &["decrypt", "a.img", "--in-place"], 4, "did not unwrap");
    refused(
        &e,
        &["decrypt", "a.img", "--output", "out.img"],
        4,
        "did not unwrap",
    );
    refused(
        &e,
        &["recover", "dm-table", "a.img", "--reveal-key"],
        4,
        "did not unwrap",
    );
}

#[test]
fn keysafe_copied_from_another_disk_exit_4() {
    let e = setup();
    let b = keysafe_value(&std::fs::read_to_string(e.path("b.img.vmcrypt")).expect("read"));
    edit(&e, "a.img.vmcrypt", |t| {
        let a = keysafe_value(&t);
        t.replace(&a, &b)
    });
    refused(&e, &["decrypt", "a.img", "--in-place"], 4, "did not unwrap");
    // Into the VMDK descriptor too.
    edit(&e, "v.vmdk", |t| {
        let v = keysafe_value(&t);
        t.replace(&v, &b)
    });
    refused(
        &e,
        &["decrypt", "v.vmdk", "--in-place"],
        4,
        "did not unwrap",
    );
}

#[test]
fn edited_identity_or_generation_exit_4() {
    let e = setup();
    edit(&e, "a.img.vmcrypt", |t| {
        t.replace(
            "vmcrypt.keyGeneration = \"1\"",
            "vmcrypt.keyGeneration = \"2\"",
        )
    });
    refused(&e, &["decrypt", "a.img", "--in-place"], 4, "did not unwrap");
    let e = setup();
    edit(&e, "a.img.vmcrypt", |t| {
        t.replace(
            "vmcrypt.sectorSize = \"4096\"",
            "vmcrypt.sectorSize = \"512\"",
        )
    });
    refused(&e, &["decrypt", "a.img", "--in-place"], 4, "did not unwrap");
}

#[test]
fn wrong_or_missing_keystore() {
    let e = setup();
    let ks = e.path("cfg/keystores/native.keystore");
    let saved = std::fs::read(&ks).expect("keystore");
    // Another keystore under the same name: the KEK differs, the unwrap fails.
    std::fs::remove_file(&ks).expect("remove");
    let other = Env::new();
    other.raw_image("x.img", MIB);
    other.ok(&["encrypt", "x.img", "--in-place"]);
    std::fs::copy(other.path("cfg/keystores/native.keystore"), &ks).expect("copy");
    refused(&e, &["decrypt", "a.img", "--in-place"], 4, "did not unwrap");
    // Missing keystore: a clear error naming it.
    std::fs::remove_file(&ks).expect("remove");
    refused(&e, &["decrypt", "a.img", "--in-place"], 1, "not found");
    // Keystore readable by others: refused.
    std::fs::write(&ks, &saved).expect("restore");
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(&ks, std::fs::Permissions::from_mode(0o644)).expect("chmod");
    refused(&e, &["decrypt", "a.img", "--in-place"], 1, "chmod 600");
    std::fs::set_permissions(&ks, std::fs::Permissions::from_mode(0o600)).expect("chmod");
    e.ok(&["decrypt", "a.img", "--output", "a.dec"]);
}

#[test]
fn truncated_image_exit_4() {
    let e = setup();
    let f = std::fs::OpenOptions::new()
        .write(true)
        .open(e.path("a.img"))
        .expect("open");
    f.set_len(MIB - 4096).expect("truncate");
    drop(f);
    refused(
        &e,
        &["decrypt", "a.img", "--in-place"],
        4,
        "does not match its metadata",
    );
    let f = std::fs::OpenOptions::new()
        .write(true)
        .open(e.path("v-flat.vmdk"))
        .expect("open");
    f.set_len(MIB / 2).expect("truncate");
    drop(f);
    refused(
        &e,
        &["decrypt", "v.vmdk", "--output", "o.vmdk"],
        4,
        "does not match its metadata",
    );
}

#[test]
fn not_whole_units_and_empty() {
    let e = Env::new();
    std::fs::write(e.path("odd.img"), vec![1u8; 4096 + 512]).expect("write");
    refused(
        &e,
        &["encrypt", "odd.img", "--in-place"],
        1,
        "use --sector-size 512",
    );
    std::fs::write(e.path("odd2.img"), vec![1u8; 1000]).expect("write");
    refused(
        &e,
        &["encrypt", "odd2.img", "--in-place", "--sector-size", "512"],
        1,
        "not a whole number",
    );
    std::fs::write(e.path("empty.img"), b"").expect("write");
    refused(
        &e,
        &["encrypt", "empty.img", "--output", "x"],
        1,
        "no payload",
    );
    // 512-byte units work for the first one.
    e.ok(&["encrypt", "odd.img", "--in-place", "--sector-size", "512"]);
}

#[test]
fn settings_files_that_are_not_settings() {
    let e = setup();
    std::fs::write(e.path("a.img.vmcrypt"), b"\x00\x01binary junk\xff").expect("write");
    refused(
        &e,
        &["decrypt", "a.img", "--in-place"],
        1,
        "not a settings file",
    );
    refused(&e, &["inspect", "a.img"], 1, "not a settings file");
    std::fs::write(e.path("a.img.vmcrypt"), "hello, this is a letter\n").expect("write");
    refused(&e, &["encrypt", "a.img", "--in-place"], 1, "line 1");
    edit(&e, "b.img.vmcrypt", |t| {
        t.lines()
            .filter(|l| !l.contains("diskUuid"))
            .collect::<Vec<_>>()
            .join("\n")
    });
    refused(
        &e,
        &["decrypt", "b.img", "--in-place"],
        1,
        "missing vmcrypt.diskUuid",
    );
    edit(&e, "v.vmdk", |t| format!("{t}encryptionKeys=\"again\"\n"));
    refused(&e, &["decrypt", "v.vmdk", "--in-place"], 1, "appears twice");
    std::fs::write(
        e.path("c.vmdk"),
        "# Disk DescriptorFile\ncreateType=\"monolithicFlat\"\nRW 8 FLAT \"../../etc/passwd\" 0\n",
    )
    .expect("write");
    refused(
        &e,
        &["encrypt", "c.vmdk", "--in-place"],
        1,
        "plain file name",
    );
    std::fs::write(e.path("sparse.vmdk"), b"KDMV\x01\x00\x00\x00rest").expect("write");
    refused(
        &e,
        &["encrypt", "sparse.vmdk", "--in-place"],
        1,
        "sparse VMDK",
    );
    refused(
        &e,
        &["encrypt", "a.img.vmcrypt", "--in-place"],
        1,
        "metadata",
    );
}

#[test]
fn wrong_state_and_outputs() {
    let e = setup();
    refused(
        &e,
        &["encrypt", "a.img", "--in-place"],
        1,
        "already encrypted",
    );
    e.raw_image("p.img", MIB);
    refused(&e, &["decrypt", "p.img", "--in-place"], 1, "not encrypted");
    refused(
        &e,
        &["encrypt", "p.img", "--output", "a.img"],
        1,
        "already exists",
    );
    refused(
        &e,
        &["encrypt", "p.img", "--output", "p.img"],
        1,
        "same file",
    );
    refused(
        &e,
        &["decrypt", "v.vmdk", "--output", "out.raw"],
        1,
        "ending in .vmdk",
    );
    refused(
        &e,
        &["encrypt", "missing.img", "--in-place"],
        1,
        "missing.img",
    );
    refused(
        &e,
        &["encrypt", "p.img", "--in-place", "--provider", "nope"],
        1,
        "not configured",
    );
    edit(&e, "b.img.vmcrypt", |t| {
        t.replace("state = \"encrypted\"", "state = \"encrypting\"")
    });
    refused(&e, &["decrypt", "b.img", "--in-place"], 1, "interrupted");
}

#[test]
fn a_full_or_capped_output_is_a_clear_error_and_leaves_nothing_behind() {
    // RLIMIT_FSIZE (`ulimit -f`, with SIGXFSZ ignored) makes writes past 2 MiB fail, as a full
    // file system would: the job stops with a clear error, the partial output is removed, and
    // an in-place job fails while it makes room to move the payload, before its journal
    // exists, and gives the room back: the disk is untouched.
    let e = Env::new();
    e.raw_image("big.img", 8 * MIB);
    e.ok(&["provider", "add-native", "native"]);
    let capped = |args: &str| {
        std::process::Command::new("bash")
            .arg("-c")
            .arg(format!(
                "ulimit -f 2048; trap '' XFSZ; exec {} --config {} {args}",
                env!("CARGO_BIN_EXE_vmcrypt"),
                e.config().display()
            ))
            .current_dir(e.dir.path())
            .output()
            .expect("bash is needed for this test")
    };
    let before = snapshot(e.dir.path());
    let o = capped("encrypt big.img --output out.img");
    assert_eq!(o.status.code(), Some(1), "{}", stderr(&o));
    // The output is given its full size first (so that holes stay holes): the cap refuses
    // that, as it would refuse a write.
    assert!(
        stderr(&o).contains("cannot size out.img") && stderr(&o).contains("File too large"),
        "{}",
        stderr(&o)
    );
    assert_eq!(snapshot(e.dir.path()), before, "partial output left behind");
    let o = capped("encrypt big.img --in-place");
    assert_eq!(o.status.code(), Some(1), "{}", stderr(&o));
    assert!(
        stderr(&o).contains("cannot write big.img"),
        "{}",
        stderr(&o)
    );
    assert_eq!(
        snapshot(e.dir.path()),
        before,
        "an in-place job that could not start changed files"
    );
}
