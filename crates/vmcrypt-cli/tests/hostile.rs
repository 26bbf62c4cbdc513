//! Hostile neighbours and permissions: a FIFO or /dev/zero where metadata belongs, symlinks
//! (followed for metadata, refused out of the folder for payloads), the same disk twice in a
//! VMX, private outputs, folders and keystores, no secret in an error, reserved output names,
//! no core dumps, bounded Argon2 parameters.

mod common;

use std::os::unix::fs::symlink;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::process::{Output, Stdio};
use std::time::{Duration, Instant};

use common::*;

const MIB: u64 = 1024 * 1024;

fn code(o: &Output) -> Option<i32> {
    o.status.code()
}

/// Runs vmcrypt and fails the test if it takes more than 10 s (a hang on a FIFO).
fn run_bounded(e: &Env, args: &[&str]) -> Output {
    let mut child = e
        .command(args, &[])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn");
    let until = Instant::now() + Duration::from_secs(10);
    while child.try_wait().expect("wait").is_none() {
        if Instant::now() > until {
            let _ = child.kill();
            panic!("vmcrypt {args:?} hung");
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    child.wait_with_output().expect("output")
}

fn mkfifo(p: &std::path::Path) {
    let o = std::process::Command::new("mkfifo")
        .arg(p)
        .output()
        .expect("mkfifo");
    assert!(o.status.success());
}

#[test]
fn a_fifo_or_dev_zero_beside_an_image_is_an_error_at_once() {
    let e = Env::new();
    e.ok(&["provider", "add-native", "native"]);
    e.raw_image("d.img", MIB);
    let side = e.path("d.img.vmcrypt");
    for hostile in ["fifo", "zero"] {
        let _ = std::fs::remove_file(&side);
        match hostile {
            "fifo" => mkfifo(&side),
            _ => symlink("/dev/zero", &side).expect("symlink"),
        }
        for args in [
            vec!["inspect", "d.img"],
            vec!["encrypt", "d.img", "--in-place"],
            vec!["decrypt", "d.img", "--in-place"],
            vec!["rekey", "d.img", "--deep"],
            vec!["resume", "d.img"],
        ] {
            let o = run_bounded(&e, &args);
            assert_eq!(code(&o), Some(1), "{hostile}: {args:?}: {}", stderr(&o));
            assert!(
                stderr(&o).contains("not a regular file"),
                "{hostile}: {}",
                stderr(&o)
            );
        }
    }
    // A FIFO where the journal goes, and as a VMX or descriptor.
    std::fs::remove_file(&side).expect("rm");
    mkfifo(&e.path("d.img.vmcrypt-journal"));
    mkfifo(&e.path("x.vmx"));
    mkfifo(&e.path("x.vmdk"));
    for args in [
        vec!["encrypt", "d.img", "--in-place"],
        vec!["vm", "inspect", "x.vmx"],
        vec!["vm", "encrypt", "x.vmx"],
        vec!["inspect", "x.vmdk"],
    ] {
        let o = run_bounded(&e, &args);
        assert_ne!(code(&o), Some(0), "{args:?}");
    }
}

#[test]
fn symlinked_metadata_is_followed_and_payloads_outside_the_folder_are_refused() {
    let e = Env::new();
    e.ok(&["provider", "add-native", "native"]);
    std::fs::create_dir(e.path("store")).expect("mkdir");
    let real = e.vmdk("store/real.vmdk", MIB);
    std::fs::copy(e.path("store/real-flat.vmdk"), e.path("orig.flat")).expect("copy");
    // A descriptor that is a symlink, beside the symlinked flat extent of the same name.
    symlink(&real, e.path("link.vmdk")).expect("symlink");
    symlink(e.path("store/real-flat.vmdk"), e.path("real-flat.vmdk")).expect("symlink");
    // Its extent resolves into store/, outside the folder of link.vmdk: refused.
    let o = e.run(&["encrypt", "link.vmdk", "--in-place"]);
    assert_eq!(code(&o), Some(1), "{}", stderr(&o));
    assert!(
        stderr(&o).contains("--allow-outside-folder"),
        "{}",
        stderr(&o)
    );
    // Allowed when the operator says so: the target is rewritten, the link stays a link.
    e.ok(&[
        "--allow-outside-folder",
        "encrypt",
        "link.vmdk",
        "--in-place",
    ]);
    assert!(
        std::fs::symlink_metadata(e.path("link.vmdk"))
            .expect("stat")
            .file_type()
            .is_symlink()
    );
    let desc = std::fs::read_to_string(&real).expect("descriptor");
    assert!(desc.contains("encryptionKeys"), "the target holds the keys");
    // The same disk through its real name: no flag needed, and it decrypts.
    e.ok(&["decrypt", "store/real.vmdk", "--in-place"]);
    assert_eq!(
        std::fs::read(e.path("store/real-flat.vmdk")).expect("read"),
        std::fs::read(e.path("orig.flat")).expect("read")
    );
}

const VMX_HEAD: &str = ".encoding = \"UTF-8\"\nconfig.version = \"8\"\ndisplayName = \"t\"\nscsi0.present = \"TRUE\"\n";

#[test]
fn a_vmx_naming_one_disk_twice_or_a_disk_elsewhere_is_refused() {
    let e = Env::new();
    e.ok(&["provider", "add-native", "native"]);
    e.vmdk("a.vmdk", MIB);
    std::fs::create_dir(e.path("elsewhere")).expect("mkdir");
    let other = e.vmdk("elsewhere/b.vmdk", MIB);
    symlink(e.path("a.vmdk"), e.path("alias.vmdk")).expect("symlink");
    let abs = e.path("a.vmdk");
    for (name, second) in [
        ("same", "a.vmdk".to_string()),
        ("dot", "./a.vmdk".to_string()),
        ("absolute", abs.display().to_string()),
        ("symlink", "alias.vmdk".to_string()),
    ] {
        let vmx = e.path(&format!("{name}.vmx"));
        std::fs::write(
            &vmx,
            format!("{VMX_HEAD}scsi0:0.fileName = \"a.vmdk\"\nscsi0:1.fileName = \"{second}\"\n"),
        )
        .expect("vmx");
        let before = snapshot(e.dir.path());
        for cmd in ["encrypt", "inspect"] {
            let o = e.run(&["vm", cmd, vmx.to_str().expect("utf8")]);
            assert_ne!(code(&o), Some(0), "{name}: vm {cmd}");
            assert!(
                stderr(&o).contains("name the same disk"),
                "{name}: {}",
                stderr(&o)
            );
        }
        assert_eq!(snapshot(e.dir.path()), before);
    }
    let vmx = e.path("far.vmx");
    std::fs::write(
        &vmx,
        format!("{VMX_HEAD}scsi0:0.fileName = \"{}\"\n", other.display()),
    )
    .expect("vmx");
    let o = e.run(&["vm", "encrypt", "far.vmx"]);
    assert_eq!(code(&o), Some(1));
    assert!(stderr(&o).contains("outside"), "{}", stderr(&o));
    e.ok(&["--allow-outside-folder", "vm", "encrypt", "far.vmx"]);
}

/// Runs vmcrypt under `umask 000`.
fn run_umask0(e: &Env, args: &str) -> Output {
    std::process::Command::new("sh")
        .arg("-c")
        .arg(format!(
            "umask 000; exec '{}' --config '{}' {args}",
            env!("CARGO_BIN_EXE_vmcrypt"),
            e.config().display()
        ))
        .current_dir(e.dir.path())
        .output()
        .expect("sh")
}

fn mode(p: &std::path::Path) -> u32 {
    std::fs::metadata(p).expect("stat").permissions().mode() & 0o7777
}

#[test]
fn plaintext_outputs_folders_and_keystores_are_private_whatever_the_umask() {
    let e = Env::new();
    let o = run_umask0(&e, "provider add-native native");
    assert!(o.status.success(), "{}", stderr(&o));
    assert_eq!(mode(&e.path("cfg")), 0o700, "config folder");
    assert_eq!(mode(&e.path("cfg/keystores")), 0o700, "keystore folder");
    assert_eq!(mode(&e.path("cfg/keystores/native.keystore")), 0o600);
    assert_eq!(mode(&e.config()), 0o600);
    e.raw_image("d.img", MIB);
    std::fs::set_permissions(e.path("d.img"), std::fs::Permissions::from_mode(0o644))
        .expect("chmod");
    e.ok(&["encrypt", "d.img", "--in-place"]);
    let o = run_umask0(&e, "decrypt d.img --output plain.img");
    assert!(o.status.success(), "{}", stderr(&o));
    assert_eq!(mode(&e.path("plain.img")), 0o600, "0644 source: 0600");
    std::fs::set_permissions(e.path("d.img"), std::fs::Permissions::from_mode(0o400))
        .expect("chmod");
    let o = run_umask0(&e, "decrypt d.img --output plain2.img");
    assert!(o.status.success(), "{}", stderr(&o));
    assert_eq!(mode(&e.path("plain2.img")), 0o400, "0400 source: 0400");
}

#[test]
fn a_keystore_others_control_is_refused() {
    let e = Env::new();
    e.ok(&["provider", "add-native", "native"]);
    e.raw_image("d.img", MIB);
    let ks = e.path("cfg/keystores/native.keystore");
    let folder = e.path("cfg/keystores");
    // A folder anyone can write: anyone could swap the keystore.
    std::fs::set_permissions(&folder, std::fs::Permissions::from_mode(0o777)).expect("chmod");
    let o = e.run(&["encrypt", "d.img", "--output", "x.img"]);
    assert_eq!(code(&o), Some(1));
    assert!(
        stderr(&o).contains("can be written by others"),
        "{}",
        stderr(&o)
    );
    std::fs::set_permissions(&folder, std::fs::Permissions::from_mode(0o700)).expect("chmod");
    // A keystore owned by another user (nobody).
    std::os::unix::fs::chown(&ks, Some(65534), None).expect("chown (the suite runs as root)");
    let o = e.run(&["encrypt", "d.img", "--output", "x.img"]);
    assert_eq!(code(&o), Some(1));
    assert!(stderr(&o).contains("not by this user"), "{}", stderr(&o));
    assert_eq!(std::fs::metadata(&ks).expect("stat").uid(), 65534);
    std::os::unix::fs::chown(&ks, Some(0), None).expect("chown back");
    e.ok(&["encrypt", "d.img", "--output", "x.img"]);
}

#[test]
fn a_malformed_keystore_line_is_reported_without_its_value() {
    let e = Env::new();
    e.ok(&["provider", "add-native", "native"]);
    e.raw_image("d.img", MIB);
    let ks = e.path("cfg/keystores/native.keystore");
    let text = std::fs::read_to_string(&ks).expect("keystore");
    let kdk = text
        .lines()
        .find_map(|l| l.strip_prefix("vmcrypt.keystore.kdk = \""))
        .and_then(|v| v.strip_suffix('"'))
        .expect("kdk line")
        .to_string();
    assert!(kdk.ends_with('='), "base64 of 32 bytes ends in padding");
    let line = format!("vmcrypt.keystore.kdk = \"{kdk}\"");
    // The KDK's line mangled as a bad merge or an editor would: its key and quotes lost
    // (`BASE64=`, where a '+' or '/' makes the text before '=' an invalid key), its '=' lost,
    // its closing quote lost, a stray quote.
    let mangled = [
        kdk.clone(),
        format!("+{kdk}"),
        format!("vmcrypt.keystore.kdk \"{kdk}\""),
        format!("vmcrypt.keystore.kdk = \"{kdk}"),
        format!("vmcrypt.keystore.kdk = {kdk}\""),
    ];
    for m in &mangled {
        std::fs::write(&ks, text.replace(&line, m)).expect("write");
        for json in [false, true] {
            let mut args = vec!["encrypt", "d.img", "--output", "x.img"];
            if json {
                args.insert(0, "--json");
            }
            let o = e.run(&args);
            assert_eq!(code(&o), Some(1), "{m}");
            let all = format!("{}{}", String::from_utf8_lossy(&o.stdout), stderr(&o));
            assert!(all.contains("keystore"), "{all}");
            let stem = kdk.trim_end_matches('=');
            for w in stem.as_bytes().windows(8) {
                let w = std::str::from_utf8(w).expect("ascii");
                assert!(!all.contains(w), "the error shows part of the key: {all}");
            }
        }
    }
}

#[test]
fn outputs_cannot_take_the_names_of_the_inputs_own_files() {
    let e = Env::new();
    e.ok(&["provider", "add-native", "native"]);
    e.raw_image("d.img", MIB);
    let before = snapshot(e.dir.path());
    for out in [
        "d.img.vmcrypt",
        "d.img.vmcrypt-journal",
        "./d.img",
        "../$DIR/d.img",
    ] {
        let dir = e
            .dir
            .path()
            .file_name()
            .expect("name")
            .to_str()
            .expect("utf8");
        let out = out.replace("$DIR", dir);
        let o = e.run(&["encrypt", "d.img", "--output", &out]);
        assert_eq!(code(&o), Some(1), "{out}: {}", stderr(&o));
    }
    assert_eq!(snapshot(e.dir.path()), before);
    e.vmdk("v.vmdk", MIB);
    // The output's flat file would be the input's extent.
    let o = e.run(&["encrypt", "v.vmdk", "--output", "v-flat.vmdk"]);
    assert_eq!(code(&o), Some(1), "{}", stderr(&o));
}

#[test]
fn a_running_job_cannot_dump_core() {
    let e = Env::new();
    e.ok(&["provider", "add-native", "native"]);
    e.raw_image("d.img", MIB);
    let held = hold(&e, &["encrypt", "d.img", "--in-place"]);
    let limits =
        std::fs::read_to_string(format!("/proc/{}/limits", held.child.id())).expect("limits");
    let core = limits
        .lines()
        .find(|l| l.starts_with("Max core file size"))
        .expect("core line");
    assert_eq!(core.split_whitespace().nth(4), Some("0"), "{core}");
    assert_eq!(core.split_whitespace().nth(5), Some("0"), "{core}");
    assert!(release(held).status.success());
}

#[test]
fn a_backup_asking_for_more_memory_than_allowed_is_refused() {
    let e = Env::new();
    e.ok(&["provider", "add-native", "native"]);
    let o = e.run_env(
        &["provider", "backup", "native", "--out", "b.backup"],
        &[("VMCRYPT_PASSPHRASE", "correct horse")],
    );
    assert_eq!(code(&o), Some(0), "{}", stderr(&o));
    let text = std::fs::read_to_string(e.path("b.backup")).expect("backup");
    let line = text
        .lines()
        .find(|l| l.contains("memoryKiB"))
        .expect("memory line")
        .to_string();
    let huge = line
        .split('"')
        .enumerate()
        .map(|(i, p)| if i == 1 { "33554432" } else { p })
        .collect::<Vec<_>>()
        .join("\"");
    std::fs::write(e.path("b.backup"), text.replace(&line, &huge)).expect("write");
    let o = e.run_env(
        &["provider", "restore", "b.backup", "--name", "again"],
        &[("VMCRYPT_PASSPHRASE", "correct horse")],
    );
    assert_eq!(code(&o), Some(1), "{}", stderr(&o));
    assert!(stderr(&o).contains("out of range"), "{}", stderr(&o));
}

#[test]
fn a_symlink_in_the_journals_place_is_never_written_or_removed() {
    let e = Env::new();
    e.ok(&["provider", "add-native", "native"]);
    e.raw_image("d.img", MIB);
    std::fs::write(e.path("victim.txt"), b"precious").expect("victim");
    let journal = e.path("d.img.vmcrypt-journal");
    symlink(e.path("victim.txt"), &journal).expect("symlink");
    let o = e.run(&["encrypt", "d.img", "--in-place"]);
    assert_eq!(code(&o), Some(1), "{}", stderr(&o));
    assert!(stderr(&o).contains("not a regular file"), "{}", stderr(&o));
    // An interrupted job whose journal was swapped for a symlink: resume refuses.
    std::fs::remove_file(&journal).expect("rm");
    let o = e.run_env(
        &["encrypt", "d.img", "--in-place"],
        &[("VMCRYPT_FAILPOINT", "inplace-job-recorded")],
    );
    assert_eq!(code(&o), None, "the failpoint aborts");
    std::fs::rename(&journal, e.path("real-journal")).expect("mv");
    symlink(e.path("victim.txt"), &journal).expect("symlink");
    let o = e.run(&["resume", "d.img"]);
    assert_ne!(code(&o), Some(0), "{}", stderr(&o));
    assert_eq!(
        std::fs::read(e.path("victim.txt")).expect("victim"),
        b"precious"
    );
    assert!(
        std::fs::symlink_metadata(&journal)
            .expect("link")
            .file_type()
            .is_symlink()
    );
    // With the real journal back, the job finishes.
    std::fs::remove_file(&journal).expect("rm");
    std::fs::rename(e.path("real-journal"), &journal).expect("mv");
    e.ok(&["resume", "d.img"]);
    e.ok(&["decrypt", "d.img", "--in-place"]);
}
