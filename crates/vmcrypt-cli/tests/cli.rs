//! End-to-end tests of every command, on images made by qemu-img.

mod common;

use common::*;

const MIB: u64 = 1024 * 1024;

#[test]
fn help_usage_and_version() {
    let e = Env::new();
    let help = e.ok(&["--help"]);
    for verb in ["provider", "encrypt", "decrypt", "inspect", "recover"] {
        assert!(help.contains(verb), "help lacks {verb}");
    }
    assert!(help.contains("Exit codes"));
    // Neither --in-place nor --output: a usage error, exit 2.
    let o = e.run(&["encrypt", "x.img"]);
    assert_eq!(o.status.code(), Some(2));
    let o = e.run(&["encrypt", "x.img", "--in-place", "--output", "y"]);
    assert_eq!(o.status.code(), Some(2));
    let o = e.run(&["recover", "dm-table", "x.img"]);
    assert_eq!(
        o.status.code(),
        Some(2),
        "recover without --reveal-key must be refused"
    );
    assert!(e.ok(&["--version"]).contains("vmcrypt"));
}

#[test]
fn first_use_creates_native_provider_and_raw_round_trip() {
    let e = Env::new();
    let img = e.raw_image("disk.img", 3 * MIB);
    let o = e.run(&["encrypt", "disk.img", "--output", "disk.enc"]);
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    let err = stderr(&o);
    assert!(err.contains("created the native key provider"), "{err}");
    assert!(err.contains("provider backup native"), "{err}");
    assert!(e.path("disk.enc.vmcrypt").exists());
    assert!(e.path("cfg/keystores/native.keystore").exists());
    let enc = std::fs::read(e.path("disk.enc")).expect("read");
    assert_ne!(
        enc,
        std::fs::read(&img).expect("read"),
        "payload not encrypted"
    );
    // Every 4096-byte unit differs from the plaintext (no sector left in clear).
    let plain = std::fs::read(&img).expect("read");
    assert!(
        enc.chunks(4096)
            .zip(plain.chunks(4096))
            .all(|(a, b)| a != b)
    );

    e.ok(&["decrypt", "disk.enc", "--output", "disk.dec"]);
    assert_identical(&img, &e.path("disk.dec"));
    assert!(!e.path("disk.dec.vmcrypt").exists());

    // In place both ways.
    e.ok(&["encrypt", "disk.img", "--in-place", "--sector-size", "512"]);
    let j = json(&e.ok(&["inspect", "disk.img", "--json"]));
    assert_eq!(j["encrypted"], true);
    assert_eq!(j["sector_size"], 512);
    e.ok(&["decrypt", "disk.img", "--in-place"]);
    assert!(!e.path("disk.img.vmcrypt").exists());
    assert_identical(&e.path("disk.img"), &e.path("disk.dec"));
}

#[test]
fn vmdk_round_trip_to_output_and_in_place() {
    let e = Env::new();
    let d = e.vmdk("vm.vmdk", 4 * MIB);
    let original_descriptor = std::fs::read_to_string(&d).expect("read");
    e.ok(&["encrypt", "vm.vmdk", "--output", "enc.vmdk"]);
    let desc = std::fs::read_to_string(e.path("enc.vmdk")).expect("read");
    assert!(desc.contains("RW 8192 FLAT \"enc-flat.vmdk\" 0"), "{desc}");
    assert!(
        desc.contains("encryptionKeys=\"vmware:key/list/(pair/(fqid/<VMWARE-NULL>/native/"),
        "{desc}"
    );
    // The descriptor's original lines are all still there, in order.
    let kept: Vec<&str> = original_descriptor
        .lines()
        .filter(|l| !l.starts_with("RW "))
        .collect();
    let mut it = desc.lines();
    for l in kept {
        assert!(it.any(|d| d == l), "line {l:?} lost or reordered");
    }
    let j = json(&e.ok(&["--json", "inspect", "enc.vmdk"]));
    assert_eq!(j["format"], "vmdk-flat");
    assert_eq!(j["keys"][0]["provider"], "native");
    assert_eq!(j["version"], 1);

    e.ok(&["decrypt", "enc.vmdk", "--output", "dec.vmdk"]);
    assert_identical(&d, &e.path("dec.vmdk"));
    let dec_desc = std::fs::read_to_string(e.path("dec.vmdk")).expect("read");
    assert_eq!(
        dec_desc,
        original_descriptor.replace("vm-flat.vmdk", "dec-flat.vmdk")
    );

    e.ok(&["encrypt", "vm.vmdk", "--in-place"]);
    e.ok(&["decrypt", "vm.vmdk", "--in-place"]);
    assert_eq!(
        std::fs::read_to_string(&d).expect("read"),
        original_descriptor,
        "descriptor not restored byte for byte"
    );
    assert_identical(&d, &e.path("dec.vmdk"));
}

#[test]
fn json_output_and_no_key_material() {
    let e = Env::new();
    e.raw_image("a.img", MIB);
    let j = json(&e.ok(&["--json", "encrypt", "a.img", "--output", "a.enc"]));
    assert_eq!(j["operation"], "encrypted");
    assert_eq!(j["bytes"], MIB);
    let ks = std::fs::read_to_string(e.path("cfg/keystores/native.keystore")).expect("keystore");
    let kdk = ks
        .lines()
        .find(|l| l.contains("kdk"))
        .and_then(|l| l.split('"').nth(1))
        .expect("kdk line")
        .to_string();
    for out in [
        e.ok(&["--json", "inspect", "a.enc"]),
        e.ok(&["inspect", "a.enc"]),
        std::fs::read_to_string(e.path("a.enc.vmcrypt")).expect("sidecar"),
    ] {
        assert!(!out.contains(&kdk));
    }
    let o = e.run(&["--json", "decrypt", "a.img", "--output", "x"]);
    assert_eq!(o.status.code(), Some(1));
    let j = json(&String::from_utf8_lossy(&o.stdout));
    assert_eq!(j["error"]["kind"], "invalid_input");
}

#[test]
fn provider_commands() {
    let e = Env::new();
    e.ok(&["provider", "add-native", "site-a"]);
    e.ok(&[
        "provider",
        "add-native",
        "site-b",
        "--keystore",
        "b.keystore",
    ]);
    let list = e.ok(&["provider", "list"]);
    assert!(list.contains("* site-a"), "{list}");
    assert!(list.contains("NOT BACKED UP"), "{list}");
    e.ok(&["provider", "default", "site-b"]);
    let j = json(&e.ok(&["--json", "provider", "list"]));
    assert_eq!(j["providers"][1]["default"], true);
    e.expect(&["provider", "default", "nope"], 1);
    e.expect(&["provider", "add-native", "site-a"], 1);
    e.expect(&["provider", "add-native", "bad name"], 1);

    // Encrypt under site-b, back it up, lose it, restore it under the same name, decrypt.
    let img = e.raw_image("d.img", MIB);
    e.ok(&[
        "encrypt",
        "d.img",
        "--output",
        "d.enc",
        "--provider",
        "site-b",
    ]);
    std::fs::write(e.path("pass"), "correct horse battery staple\n").expect("write");
    e.ok(&[
        "provider",
        "backup",
        "site-b",
        "--out",
        "b.backup",
        "--passphrase-file",
        "pass",
    ]);
    assert!(e.ok(&["provider", "list"]).contains("ok, backed up"));
    // The backup holds no key in clear.
    let ks = std::fs::read_to_string(e.path("b.keystore")).expect("keystore");
    let kdk = ks
        .lines()
        .find(|l| l.contains("kdk"))
        .and_then(|l| l.split('"').nth(1))
        .expect("kdk")
        .to_string();
    assert!(
        !std::fs::read_to_string(e.path("b.backup"))
            .expect("backup")
            .contains(&kdk)
    );

    e.ok(&["provider", "remove", "site-b"]);
    std::fs::remove_file(e.path("b.keystore")).expect("lose keystore");
    e.expect(&["decrypt", "d.enc", "--output", "d.dec"], 1);
    // Wrong passphrase: exit 4, nothing created.
    let o = e.run_env(
        &[
            "provider",
            "restore",
            "b.backup",
            "--name",
            "site-b",
            "--keystore",
            "b2.keystore",
        ],
        &[("VMCRYPT_PASSPHRASE", "wrong")],
    );
    assert_eq!(o.status.code(), Some(4), "{}", stderr(&o));
    assert!(!e.path("b2.keystore").exists());
    // No passphrase and no terminal: a clear error.
    let o = e.run(&["provider", "restore", "b.backup", "--name", "site-b"]);
    assert_eq!(o.status.code(), Some(1));
    assert!(stderr(&o).contains("VMCRYPT_PASSPHRASE"), "{}", stderr(&o));
    let o = e.run_env(
        &[
            "provider",
            "restore",
            "b.backup",
            "--name",
            "site-b",
            "--keystore",
            "b2.keystore",
        ],
        &[("VMCRYPT_PASSPHRASE", "correct horse battery staple")],
    );
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    e.ok(&["decrypt", "d.enc", "--output", "d.dec"]);
    assert_identical(&img, &e.path("d.dec"));
}

#[test]
fn recover_dm_table_line() {
    let e = Env::new();
    e.raw_image("r.img", MIB);
    e.ok(&["encrypt", "r.img", "--output", "r.enc"]);
    let line = e.ok(&["recover", "dm-table", "r.enc", "--reveal-key"]);
    let f: Vec<&str> = line.split_whitespace().collect();
    assert_eq!(f.len(), 10, "{line}");
    assert_eq!(&f[..4], ["0", "2048", "crypt", "aes-xts-plain64"]);
    assert_eq!(f[4].len(), 128);
    assert!(f[4].bytes().all(|b| b.is_ascii_hexdigit()));
    assert_eq!(f[5], "0");
    assert!(f[6].ends_with("r.enc"));
    assert_eq!(&f[7..], ["0", "1", "sector_size:4096"]);
}

#[test]
fn readme_main_job_on_the_committed_sample() {
    // The README's first command encrypts testdata/images/sample.vmdk; keep that sample valid.
    let e = Env::new();
    let sample = std::path::PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../testdata/images");
    for f in ["sample.vmdk", "sample-flat.vmdk"] {
        std::fs::copy(sample.join(f), e.path(f)).expect("copy sample");
    }
    let out = e.ok(&[
        "encrypt",
        "sample.vmdk",
        "--output",
        "sample-encrypted.vmdk",
    ]);
    assert!(out.contains("encrypted sample-encrypted.vmdk"), "{out}");
    let enc = std::fs::read(e.path("sample-encrypted-flat.vmdk")).expect("read");
    assert!(
        !enc.windows(14).any(|w| w == b"vmcrypt sample"),
        "plaintext left in the encrypted extent"
    );
    e.ok(&["decrypt", "sample-encrypted.vmdk", "--output", "back.vmdk"]);
    assert_identical(&e.path("sample.vmdk"), &e.path("back.vmdk"));
}

/// A bad environment variable or a typo in the configuration stops the command before it
/// does anything, with an error naming the variable or the key; the disk is untouched.
#[test]
fn bad_environment_and_config_typos_are_errors_that_name_them() {
    let e = Env::new();
    let disk = e.raw_image("d.img", 4 * MIB);
    let before = std::fs::read(&disk).expect("read disk");
    let enc = ["encrypt", "d.img", "--in-place"];
    let o = e.run_env(&enc, &[("VMCRYPT_CHUNK_BYTES", "banana")]);
    assert_eq!(o.status.code(), Some(1));
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(err.contains("VMCRYPT_CHUNK_BYTES=\"banana\""), "{err}");
    let o = e.run_env(&["provider", "list", "--json"], &[("RUST_LOG", "chatty")]);
    assert_eq!(o.status.code(), Some(1));
    let doc: serde_json::Value = serde_json::from_slice(&o.stdout).expect("one JSON document");
    assert_eq!(doc["error"]["kind"], "invalid_input");
    assert!(
        doc["error"]["message"]
            .as_str()
            .is_some_and(|m| m.contains("RUST_LOG"))
    );
    // A secret's value never shows.
    let o = e.run_env(&["provider", "list"], &[("VMCRYPT_PASSPHRASE", "")]);
    assert_eq!(o.status.code(), Some(1));
    // A typo in a variable's name is a warning with the name it may have meant.
    let o = e.run_env(&["provider", "list"], &[("VMCRYPT_CONFG", "x")]);
    assert_eq!(o.status.code(), Some(0));
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(err.contains("did you mean VMCRYPT_CONFIG"), "{err}");
    // Now a configuration with a typo'd key, then a bad value.
    e.ok(&["provider", "add-native", "n"]);
    let cfg = std::fs::read_to_string(e.config()).expect("config");
    std::fs::write(e.config(), cfg.replace("keystore =", "keystor =")).expect("write");
    let err = String::from_utf8_lossy(&e.run(&enc).stderr).into_owned();
    assert!(err.contains("providers.n.keystor"), "{err}");
    assert!(err.contains("line "), "{err}");
    std::fs::write(e.config(), cfg.replace("keystore = ", "keystore = 7 #")).expect("write");
    let o = e.run(&enc);
    assert_eq!(o.status.code(), Some(1));
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(err.contains("providers.n.keystore: invalid type"), "{err}");
    assert!(
        std::fs::read(&disk).expect("read disk") == before,
        "the disk was changed"
    );
    assert!(!e.path("d.img.vmcrypt").exists());
}

/// Backups: a new passphrase has at least 12 characters unless the operator says otherwise;
/// a backup records its provider's name, restored by default and warned about when another is
/// given; a wrong passphrase says so (exit 4) and creates nothing.
#[test]
fn backup_passphrases_names_and_wrong_passphrases() {
    let e = Env::new();
    e.ok(&["provider", "add-native", "site-a"]);
    e.raw_image("d.img", MIB);
    e.ok(&[
        "encrypt",
        "d.img",
        "--output",
        "d.enc",
        "--provider",
        "site-a",
    ]);
    let backup = ["provider", "backup", "site-a", "--out", "a.backup"];
    let o = e.run_env(&backup, &[("VMCRYPT_PASSPHRASE", "xq7zv")]);
    assert_eq!(o.status.code(), Some(1));
    assert!(
        stderr(&o).contains("has 5 characters; use at least 12"),
        "{}",
        stderr(&o)
    );
    assert!(!stderr(&o).contains("xq7zv"), "the passphrase was echoed");
    assert!(!e.path("a.backup").exists());
    let mut weak = backup.to_vec();
    weak.push("--allow-short-passphrase");
    let o = e.run_env(&weak, &[("VMCRYPT_PASSPHRASE", "xq7zv")]);
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    std::fs::remove_file(e.path("a.backup")).expect("rm");
    let o = e.run_env(&backup, &[("VMCRYPT_PASSPHRASE", "correct horse battery")]);
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    assert!(
        std::fs::read_to_string(e.path("a.backup"))
            .expect("backup")
            .contains("site-a")
    );
    // The keystore is lost; a wrong passphrase says so and creates nothing.
    e.ok(&["provider", "remove", "site-a"]);
    let restore = [
        "provider",
        "restore",
        "a.backup",
        "--keystore",
        "r.keystore",
    ];
    let o = e.run_env(
        &restore,
        &[("VMCRYPT_PASSPHRASE", "correct horse battery!")],
    );
    assert_eq!(o.status.code(), Some(4), "{}", stderr(&o));
    assert!(
        stderr(&o).contains("wrong passphrase for the backup"),
        "{}",
        stderr(&o)
    );
    assert!(!e.path("r.keystore").exists());
    // Under another name: restored, with a warning that names both.
    let mut other = restore.to_vec();
    other.extend(["--name", "site-b"]);
    let o = e.run_env(&other, &[("VMCRYPT_PASSPHRASE", "correct horse battery")]);
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    assert!(
        stderr(&o).contains("is a backup of provider \"site-a\", restored as \"site-b\""),
        "{}",
        stderr(&o)
    );
    e.ok(&["provider", "remove", "site-b"]);
    std::fs::remove_file(e.path("r.keystore")).expect("rm");
    // No --name: the recorded one, and the disk decrypts again.
    let o = e.run_env(&restore, &[("VMCRYPT_PASSPHRASE", "correct horse battery")]);
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    assert!(!stderr(&o).contains("restored as"), "{}", stderr(&o));
    assert!(e.ok(&["provider", "list"]).contains("site-a"));
    e.ok(&["decrypt", "d.enc", "--output", "d.dec"]);
    assert_identical(&e.path("d.img"), &e.path("d.dec"));
}
