//! The guest side of benches/guest-compare.sh: one QEMU guest (TCG, 2 vCPUs) on the same
//! 1 GiB image behind (a) qemu-storage-daemon's vhost-user-blk export of the raw image, (b) the
//! same daemon with LUKS (aes-xts-plain64), (c) `vmcrypt serve --vhost-user`. In the guest:
//! 256 MiB sequential read and write in 1 MiB O_DIRECT requests, then 4 KiB random O_DIRECT
//! reads with 1 and 16 threads. Prints MiB/s (IOPS for random reads), the ratios, each
//! backend's CPU seconds per GiB moved, and its peak RSS, all from one run.
//!
//! Usage (the script does this): guest_compare DIR VMCRYPT_BINARY GBENCH_BINARY

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use vmcrypt_testkit::guest::{Kit, run_guest};

const SCRIPT: &str = r#"
/gbench seqread /dev/vda 256
/gbench seqwrite /dev/vda 256
/gbench randread /dev/vda 1 2000
/gbench randread /dev/vda 16 250
"#;

/// A backend's results: kind, (case, MiB/s, IOPS) per case, CPU s/GiB, peak RSS MiB.
type Row = (String, Vec<(String, f64, f64)>, f64, f64);

fn ticks(pid: u32) -> f64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    let after = stat.rsplit_once(')').map_or("", |(_, r)| r);
    let f: Vec<&str> = after.split_whitespace().collect();
    let t = |i: usize| f.get(i).and_then(|v| v.parse::<f64>().ok()).unwrap_or(0.0);
    // utime and stime are fields 14 and 15 of stat, 12 and 13 after the command.
    (t(11) + t(12)) / 100.0
}

fn hwm_mib(pid: u32) -> f64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.split_whitespace().next()?.parse::<f64>().ok())
        .map_or(0.0, |kb| kb / 1024.0)
}

fn wait_socket(p: &Path) {
    let until = Instant::now() + Duration::from_secs(30);
    while !p.exists() {
        assert!(Instant::now() < until, "no socket {}", p.display());
        std::thread::sleep(Duration::from_millis(20));
    }
}

fn run(cmd: &mut Command) {
    let out = cmd.output().expect("run");
    assert!(
        out.status.success(),
        "{cmd:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

fn backend(kind: &str, dir: &Path, vmcrypt: &Path, sock: &Path) -> Child {
    let _ = std::fs::remove_file(sock);
    let export = format!(
        "type=vhost-user-blk,id=e,node-name={},addr.type=unix,addr.path={},writable=on,num-queues=2",
        if kind == "luks" { "l" } else { "f" },
        sock.display()
    );
    let file = |name: &str| {
        format!(
            "driver=file,node-name=f,filename={}",
            dir.join(name).display()
        )
    };
    let mut c = match kind {
        "raw" => {
            let mut c = Command::new("qemu-storage-daemon");
            c.args(["--blockdev", &file("raw.img"), "--export", &export]);
            c
        }
        "luks" => {
            let mut c = Command::new("qemu-storage-daemon");
            c.args(["--object", "secret,id=s,data=bench-only"])
                .args(["--blockdev", &file("luks.img")])
                .args(["--blockdev", "driver=luks,node-name=l,file=f,key-secret=s"])
                .args(["--export", &export]);
            c
        }
        _ => {
            let mut c = Command::new(vmcrypt);
            c.arg("--config")
                .arg(dir.join("cfg.toml"))
                .args(["serve", "-q"])
                .arg(dir.join("enc.img"))
                .arg("--vhost-user")
                .arg(sock)
                .args(["--queues", "2"]);
            c
        }
    };
    let child = c
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("start the backend");
    wait_socket(sock);
    child
}

fn main() {
    let args: Vec<PathBuf> = std::env::args_os().skip(1).map(PathBuf::from).collect();
    let [dir, vmcrypt, gbench] = &args[..] else {
        panic!("usage: guest_compare DIR VMCRYPT_BINARY GBENCH_BINARY");
    };
    std::fs::create_dir_all(dir).expect("dir");
    let kit = Kit::get();
    let gbench = std::fs::read(gbench).expect("gbench");
    let raw = dir.join("raw.img");
    run(Command::new("sh")
        .arg("-c")
        .arg(format!("head -c 1G /dev/urandom > {}", raw.display())));
    let cfg = dir.join("cfg.toml");
    let _ = std::fs::remove_file(dir.join("enc.img"));
    run(Command::new(vmcrypt)
        .arg("--config")
        .arg(&cfg)
        .args(["encrypt", "-q"])
        .arg(&raw)
        .arg("--output")
        .arg(dir.join("enc.img")));
    let luks = dir.join("luks.img");
    run(Command::new("qemu-img")
        .args([
            "create",
            "-q",
            "-f",
            "luks",
            "--object",
            "secret,id=s,data=bench-only",
            "-o",
            "key-secret=s",
        ])
        .arg(&luks)
        .arg("1G"));
    run(Command::new("qemu-img")
        .args([
            "convert",
            "-n",
            "--object",
            "secret,id=s,data=bench-only",
            "--target-image-opts",
            "-f",
            "raw",
        ])
        .arg(&raw)
        .arg(format!(
            "driver=luks,file.filename={},key-secret=s",
            luks.display()
        )));
    run(&mut Command::new("sync"));

    let mut rows: Vec<Row> = Vec::new();
    for kind in ["raw", "luks", "vmcrypt"] {
        let sock = dir.join(format!("{kind}.vhost"));
        let mut b = backend(kind, dir, vmcrypt, &sock);
        let log = dir.join(format!("{kind}.log"));
        let initrd = kit.initrd_with(dir, SCRIPT, &[("gbench", &gbench)]);
        let mut q = kit.qemu(&initrd, &log, 512);
        q.args(["-chardev", &format!("socket,id=c0,path={}", sock.display())])
            .args(["-device", "vhost-user-blk-pci,chardev=c0,num-queues=2"]);
        let c0 = ticks(b.id());
        let console = run_guest(q, &log, Duration::from_secs(600));
        let cpu = ticks(b.id()) - c0;
        let rss = hwm_mib(b.id());
        let _ = Command::new("kill")
            .args(["-TERM", &b.id().to_string()])
            .status();
        let _ = b.wait();
        let results: Vec<(String, f64, f64)> = console
            .lines()
            .filter_map(|l| {
                let mut f = l.trim().strip_prefix("RESULT ")?.split_whitespace();
                Some((
                    f.next()?.to_string(),
                    f.next()?.parse().ok()?,
                    f.next()?.parse().ok()?,
                ))
            })
            .collect();
        assert_eq!(results.len(), 4, "{kind}: {console}");
        // GiB moved: 256 MiB each way, plus 4 KiB x (2000 + 16 x 250) random reads.
        let gib = (512.0 + 6000.0 * 4096.0 / 1048576.0) / 1024.0;
        rows.push((kind.to_string(), results, cpu / gib, rss));
    }
    let cpu = std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
    let model = cpu
        .lines()
        .find_map(|l| l.strip_prefix("model name"))
        .map_or("?", |m| m.trim_start_matches([' ', '\t', ':']));
    println!(
        "CPU: {model}; guest: 2 vCPUs under TCG, 512 MiB; 1 GiB image; vhost-user-blk, 2 queues; one run"
    );
    println!(
        "{:<14} {:>12} {:>12} {:>12} {:>7} {:>7}",
        "case", "raw", "luks", "vmcrypt", "/raw", "/luks"
    );
    for i in 0..4 {
        let name = &rows[0].1[i].0;
        let unit = if name.starts_with("rand") { 2 } else { 1 };
        let v = |r: usize| {
            if unit == 2 {
                rows[r].1[i].2
            } else {
                rows[r].1[i].1
            }
        };
        let label = if unit == 2 {
            format!("{name} IOPS")
        } else {
            format!("{name} MiB/s")
        };
        println!(
            "{label:<14} {:>12.0} {:>12.0} {:>12.0} {:>7.2} {:>7.2}",
            v(0),
            v(1),
            v(2),
            v(2) / v(0),
            v(2) / v(1)
        );
    }
    println!(
        "backend CPU s/GiB: raw {:.2}, luks {:.2}, vmcrypt {:.2} ({:.2}x raw); peak RSS MiB: raw {:.0}, luks {:.0}, vmcrypt {:.0}",
        rows[0].2,
        rows[1].2,
        rows[2].2,
        rows[2].2 / rows[0].2,
        rows[0].3,
        rows[1].3,
        rows[2].3
    );
}
