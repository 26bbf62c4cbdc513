//! Independent oracle: OpenSSL, through Python `cryptography` installed by this test under
//! target/, decrypts vmcrypt's output with the key from `recover dm-table` and must get the
//! original bytes back, for 512- and 4096-byte data units.

mod common;

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use common::*;

const CRYPTOGRAPHY: &str = "cryptography==44.0.3";

/// Installs the pinned `cryptography` into target/tmp/oracle-py once (the tests of this file
/// run in parallel: one installs, the others wait); fails loudly without python3 or pip.
fn python_deps() -> PathBuf {
    static DEPS: std::sync::OnceLock<PathBuf> = std::sync::OnceLock::new();
    DEPS.get_or_init(install_python_deps).clone()
}

fn install_python_deps() -> PathBuf {
    let dir = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("oracle-py");
    let marker = dir.join(format!(".installed-{CRYPTOGRAPHY}"));
    if marker.exists() {
        return dir;
    }
    let o = Command::new("python3")
        .args([
            "-m",
            "pip",
            "install",
            "--quiet",
            "--disable-pip-version-check",
            "--no-warn-script-location",
            "--target",
        ])
        .arg(&dir)
        .arg(CRYPTOGRAPHY)
        .output()
        .unwrap_or_else(|e| {
            panic!("python3 is needed for the OpenSSL oracle test ({e}); install python3 and pip")
        });
    assert!(
        o.status.success(),
        "pip install {CRYPTOGRAPHY} failed (needs PyPI access): {}",
        String::from_utf8_lossy(&o.stderr)
    );
    std::fs::write(&marker, b"").expect("marker");
    dir
}

fn oracle_decrypt(
    deps: &Path,
    payload: &Path,
    unit: usize,
    key_hex: &str,
    out: &Path,
    offset_sectors: &str,
) {
    let script =
        PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../testdata/oracle/xts_decrypt.py");
    let mut child = Command::new("python3")
        .arg(&script)
        .arg(payload)
        .arg(unit.to_string())
        .arg(out)
        .arg(offset_sectors)
        .env("PYTHONPATH", deps)
        .stdin(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("run python3");
    child
        .stdin
        .take()
        .expect("stdin")
        .write_all(format!("{key_hex}\n").as_bytes())
        .expect("key to stdin");
    let o = child.wait_with_output().expect("wait");
    assert!(
        o.status.success(),
        "oracle failed: {}",
        String::from_utf8_lossy(&o.stderr)
    );
}

#[test]
fn openssl_decrypts_vmcrypt_sectors() {
    let deps = python_deps();
    let e = Env::new();
    for (unit, name) in [(512usize, "u512"), (4096, "u4096")] {
        let img = e.raw_image(&format!("{name}.img"), 2 * 1024 * 1024 + 3 * 4096);
        let enc = format!("{name}.enc");
        e.ok(&[
            "encrypt",
            &format!("{name}.img"),
            "--output",
            &enc,
            "--sector-size",
            &unit.to_string(),
        ]);
        let line = e.ok(&["recover", "dm-table", &enc, "--reveal-key"]);
        let f: Vec<&str> = line.split_whitespace().collect();
        let (key_hex, device) = (f[4], f[6]);
        assert_eq!(f[7], "0", "a new output file starts its payload at 0");
        let dec = e.path(&format!("{name}.oracle"));
        assert!(Path::new(device).is_absolute(), "{device}");
        oracle_decrypt(&deps, Path::new(device), unit, key_hex, &dec, f[7]);
        assert_eq!(
            std::fs::read(&dec).expect("oracle output"),
            std::fs::read(&img).expect("original"),
            "{unit}-byte units"
        );
    }
}

#[test]
fn openssl_decrypts_a_payload_moved_by_an_in_place_job() {
    let deps = python_deps();
    let e = Env::new();
    for (unit, name) in [(512usize, "m512"), (4096, "m4096")] {
        // 5 MiB + 3 units with 1 MiB windows: the payload moves up by 1 MiB.
        let img = e.raw_image(&format!("{name}.img"), 5 * 1024 * 1024 + 3 * 4096);
        let original = std::fs::read(&img).expect("original");
        let o = e.run_env(
            &[
                "encrypt",
                &format!("{name}.img"),
                "--in-place",
                "--sector-size",
                &unit.to_string(),
            ],
            &[("VMCRYPT_CHUNK_BYTES", "1048576")],
        );
        assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
        let line = e.ok(&[
            "recover",
            "dm-table",
            &format!("{name}.img"),
            "--reveal-key",
        ]);
        let f: Vec<&str> = line.split_whitespace().collect();
        assert_eq!(f[7], "2048", "moved by 1 MiB = 2048 sectors: {line}");
        let dec = e.path(&format!("{name}.oracle"));
        oracle_decrypt(&deps, Path::new(f[6]), unit, f[4], &dec, f[7]);
        assert_eq!(
            std::fs::read(&dec).expect("oracle output"),
            original,
            "{unit}-byte units"
        );
        // The bytes the payload moved away from hold zeros, not plaintext.
        let file = std::fs::read(&img).expect("image");
        assert!(file[..1 << 20].iter().all(|b| *b == 0));
        assert_eq!(file.len(), original.len() + (1 << 20));
    }
}
