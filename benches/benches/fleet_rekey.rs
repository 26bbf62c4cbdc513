//! Fleet rotation: a shallow rekey of many VMs with one command, `vmcrypt vm rekey --shallow
//! --from-file LIST --parallel N`, the real binary end to end, with the native provider and
//! against a local PyKMIP cluster of three servers. Each VM has a VMX and one small VMDK; a
//! shallow rekey creates a KEK (a KMS Create, Activate and Get), fetches the old one, and
//! re-wraps every keySafe of the VM, crash-safely.
//!
//! Rows (one run): encrypt of the fleet, then shallow rekeys at `--parallel` 1 and 8, in VMs per
//! second. `cargo bench -p vmcrypt-benches --bench fleet_rekey` (VMS=1000 by default).
//! Without `--bench` (`cargo test --benches`) it runs 6 VMs so the target stays working.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Instant;

use vmcrypt_testkit::pykmip::Cluster;

/// The release binary, built now if it is missing or stale.
fn vmcrypt() -> PathBuf {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let ok = Command::new(env!("CARGO"))
        .args(["build", "--release", "-q", "-p", "vmcrypt-cli"])
        .current_dir(&root)
        .status()
        .expect("run cargo build");
    assert!(ok.success(), "cargo build --release -p vmcrypt-cli failed");
    let target = std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| root.join("target"));
    let bin = target.join("release/vmcrypt");
    assert!(bin.exists(), "no {} after the build", bin.display());
    bin
}

/// `n` VMs under `dir`, each a VMX and one monolithicFlat VMDK of 64 KiB; the list file.
fn make_fleet(dir: &Path, n: usize) -> PathBuf {
    let template = dir.join("template.vmdk");
    let made = Command::new("qemu-img")
        .args([
            "create",
            "-q",
            "-f",
            "vmdk",
            "-o",
            "subformat=monolithicFlat",
        ])
        .arg(&template)
        .arg("65536")
        .status()
        .expect("qemu-img is needed: apt-get install qemu-utils");
    assert!(made.success());
    let descriptor = std::fs::read_to_string(&template).expect("descriptor");
    let mut list = String::new();
    for i in 0..n {
        let vm = dir.join(format!("vm{i:04}"));
        std::fs::create_dir(&vm).expect("vm dir");
        std::fs::write(
            vm.join("disk.vmdk"),
            descriptor.replace("template-flat.vmdk", "disk-flat.vmdk"),
        )
        .expect("descriptor");
        std::fs::write(vm.join("disk-flat.vmdk"), vec![i as u8; 65536]).expect("flat");
        let vmx = vm.join(format!("vm{i:04}.vmx"));
        std::fs::write(
            &vmx,
            format!("displayName = \"vm{i:04}\"\nscsi0:0.fileName = \"disk.vmdk\"\n"),
        )
        .expect("vmx");
        list.push_str(&format!("{}\n", vmx.display()));
    }
    let path = dir.join("fleet.txt");
    std::fs::write(&path, list).expect("list");
    path
}

/// Runs `vmcrypt --config CFG ARGS`, which must succeed; the seconds it took.
fn timed(bin: &Path, cfg: &Path, args: &[&str]) -> f64 {
    let t = Instant::now();
    let o = Command::new(bin)
        .arg("--config")
        .arg(cfg)
        .args(args)
        .output()
        .expect("vmcrypt");
    let secs = t.elapsed().as_secs_f64();
    assert!(
        o.status.success(),
        "vmcrypt {args:?}: {}",
        String::from_utf8_lossy(&o.stderr)
    );
    let lines = String::from_utf8_lossy(&o.stdout);
    assert!(
        args[0] != "vm" || lines.lines().all(|l| l.contains("\"result\":\"ok\"")),
        "a VM failed: {lines}"
    );
    secs
}

fn row(what: &str, n: usize, secs: f64) {
    println!("{what:<58} {n:>6} {secs:>9.2} {:>9.1}", n as f64 / secs);
}

fn main() {
    let quick = !std::env::args().any(|a| a == "--bench");
    let n: usize = std::env::var("VMS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(if quick { 6 } else { 1000 });
    let bin = vmcrypt();
    let dir = tempfile::tempdir().expect("tempdir");
    println!(
        "fleet rotation: {n} VMs (a VMX and one 64 KiB VMDK each), the vmcrypt binary end to end"
    );
    println!("{:<58} {:>6} {:>9} {:>9}", "run", "VMs", "seconds", "VMs/s");

    // The native provider, then a PyKMIP cluster of three servers tried in order.
    let native = dir.path().join("native");
    rows("native", &bin, &native, n, None);
    let c = Cluster::start(3);
    rows("PyKMIP x3", &bin, &dir.path().join("kms"), n, Some(&c));
}

/// A fleet of `n` VMs in `dir` encrypted under the native provider or, given one, the
/// cluster's; then the rekey rows.
fn rows(label: &str, bin: &Path, dir: &Path, n: usize, kms: Option<&Cluster>) {
    std::fs::create_dir(dir).expect("dir");
    let list = make_fleet(dir, n);
    let cfg = dir.join("config.toml");
    let l = list.to_str().expect("utf8");
    if let Some(c) = kms {
        let mut add = vec!["provider", "add-kmip", "kms"];
        for s in &c.servers {
            add.extend(["--server", s.as_str()]);
        }
        let (ca, cert, key) = (
            c.pki.ca.to_str().expect("utf8"),
            c.pki.client_cert.to_str().expect("utf8"),
            c.pki.client_key.to_str().expect("utf8"),
        );
        add.extend(["--ca", ca, "--cert", cert, "--key", key, "--timeout", "30"]);
        timed(bin, &cfg, &add);
    }
    let s = timed(
        bin,
        &cfg,
        &["vm", "encrypt", "--from-file", l, "--parallel", "8"],
    );
    row(&format!("{label}: vm encrypt --parallel 8"), n, s);
    for p in ["1", "8"] {
        let args = [
            "vm",
            "rekey",
            "--shallow",
            "--from-file",
            l,
            "--parallel",
            p,
        ];
        let s = timed(bin, &cfg, &args);
        row(&format!("{label}: vm rekey --shallow --parallel {p}"), n, s);
    }
}
