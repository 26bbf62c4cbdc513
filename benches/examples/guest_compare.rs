//! The guest side of benches/guest-compare.sh: one QEMU guest (TCG, 2 vCPUs) on the same
//! 1 GiB image behind (a) qemu-storage-daemon's vhost-user-blk export of the raw image, (b) the
//! same daemon with LUKS (aes-xts-plain64), (c) `vmcrypt serve --vhost-user`. In the guest:
//! 256 MiB sequential read and write in 1 MiB O_DIRECT requests, then 4 KiB random O_DIRECT
//! reads with 1 and 16 threads. Prints MiB/s (IOPS for random reads), the ratios, each
//! backend's CPU seconds per GiB moved, and its peak RSS, all from one run.
//!
//! The machines are shared: other tenants take CPU time ("steal") in bursts that last longer
//! than one guest boot, so one boot per backend compares luck as much as backends. A run is
//! therefore ROUNDS rounds (default 3) of one boot per backend, in a rotating order, and the
//! table gives each case's median; the steal share of the run is printed with it. The images
//! live on tmpfs (/dev/shm) when it has room, so no backend is measured at the speed of the
//! host's disk (qemu-storage-daemon's export shows the guest a write-through cache and is sent
//! no flushes; vmcrypt's shows write-back and fdatasyncs on the guest's flush).
//!
//! Usage (the script does this): guest_compare DIR VMCRYPT_BINARY GBENCH_BINARY [ROUNDS]
//!
//! With `GUEST_COMPARE_ALT="ARGS"` in the environment a fourth backend, `alt`, joins every
//! round: `vmcrypt serve` with those extra arguments (e.g. `--io-threads 0`), so a change of
//! settings is measured against the default in the same run.

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

fn backend(kind: &str, dir: &Path, vmcrypt: &Path, sock: &Path, alt: &[String]) -> Child {
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
            if kind == "alt" {
                c.args(alt);
            }
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

/// Steal ticks (time other tenants took from this machine's CPUs) and all ticks, system-wide.
fn steal() -> (f64, f64) {
    let stat = std::fs::read_to_string("/proc/stat").unwrap_or_default();
    let f: Vec<f64> = stat
        .lines()
        .next()
        .unwrap_or("")
        .split_whitespace()
        .skip(1)
        .filter_map(|v| v.parse().ok())
        .collect();
    (f.get(7).copied().unwrap_or(0.0), f.iter().sum())
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    if v.is_empty() { 0.0 } else { v[v.len() / 2] }
}

/// Where the images go: tmpfs when it has room for the three 1 GiB images, else `dir`.
fn image_dir(dir: &Path) -> PathBuf {
    let shm = Path::new("/dev/shm");
    let free = df_avail(shm);
    if free > 4 << 30 {
        let d = shm.join(format!("vmcrypt-guest-bench-{}", std::process::id()));
        std::fs::create_dir_all(&d).expect("tmpfs dir");
        d
    } else {
        dir.to_path_buf()
    }
}

fn df_avail(p: &Path) -> u64 {
    let out = Command::new("df")
        .args(["--output=avail", "-B1"])
        .arg(p)
        .output();
    out.ok()
        .and_then(|o| {
            String::from_utf8_lossy(&o.stdout)
                .lines()
                .nth(1)?
                .trim()
                .parse()
                .ok()
        })
        .unwrap_or(0)
}

fn main() {
    let args: Vec<PathBuf> = std::env::args_os().skip(1).map(PathBuf::from).collect();
    let (dir, vmcrypt, gbench) = match &args[..] {
        [d, v, g] | [d, v, g, _] => (d, v, g),
        _ => panic!("usage: guest_compare DIR VMCRYPT_BINARY GBENCH_BINARY [ROUNDS]"),
    };
    let rounds: usize = args
        .get(3)
        .map(|r| r.to_string_lossy().parse().expect("ROUNDS is a number"))
        .unwrap_or(3)
        .max(1);
    std::fs::create_dir_all(dir).expect("dir");
    let images = image_dir(dir);
    let kit = Kit::get();
    let gbench = std::fs::read(gbench).expect("gbench");
    let raw = images.join("raw.img");
    run(Command::new("sh")
        .arg("-c")
        .arg(format!("head -c 1G /dev/urandom > {}", raw.display())));
    let cfg = images.join("cfg.toml");
    let _ = std::fs::remove_file(images.join("enc.img"));
    run(Command::new(vmcrypt)
        .arg("--config")
        .arg(&cfg)
        .args(["encrypt", "-q"])
        .arg(&raw)
        .arg("--output")
        .arg(images.join("enc.img")));
    let luks = images.join("luks.img");
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

    // raw, luks, vmcrypt: the ratios are of the third (and of `alt`) to the first two.
    let alt: Vec<String> = std::env::var("GUEST_COMPARE_ALT")
        .map(|a| a.split_whitespace().map(str::to_string).collect())
        .unwrap_or_default();
    let mut kinds = vec!["raw", "luks", "vmcrypt"];
    if !alt.is_empty() {
        kinds.push("alt");
    }
    let n = kinds.len();
    // rows[k] = the rounds of backend k.
    let mut rows: Vec<Vec<Row>> = vec![Vec::new(); n];
    let (steal0, all0) = steal();
    for round in 0..rounds {
        for i in 0..n {
            let k = (i + round) % n;
            rows[k].push(boot(kinds[k], dir, &images, vmcrypt, kit, &gbench, &alt));
        }
    }
    let (steal1, all1) = steal();
    if images != *dir {
        let _ = std::fs::remove_dir_all(&images);
    }
    let cpu = std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
    let model = cpu
        .lines()
        .find_map(|l| l.strip_prefix("model name"))
        .map_or("?", |m| m.trim_start_matches([' ', '\t', ':']));
    println!(
        "CPU: {model}; guest: 2 vCPUs under TCG, 512 MiB; 1 GiB image on {}; vhost-user-blk, 2 queues",
        if images == *dir {
            "the bench directory"
        } else {
            "tmpfs"
        }
    );
    println!(
        "one run: {rounds} rounds of one boot per backend (rotating order), medians; CPU time stolen by other tenants during the run: {:.0}%",
        100.0 * (steal1 - steal0) / (all1 - all0).max(1.0)
    );
    if !alt.is_empty() {
        println!("alt: vmcrypt serve ... {}", alt.join(" "));
    }
    let mut head = format!("{:<22}", "case");
    for k in &kinds {
        head.push_str(&format!(" {k:>10}"));
    }
    head.push_str(&format!(" {:>7} {:>7}", "/raw", "/luks"));
    if !alt.is_empty() {
        head.push_str(&format!(" {:>9}", "alt/raw"));
    }
    println!("{head}");
    let cases: Vec<String> = rows[0][0].1.iter().map(|c| c.0.clone()).collect();
    let value = |r: &Row, i: usize| {
        if cases[i].starts_with("rand") {
            r.1[i].2
        } else {
            r.1[i].1
        }
    };
    for (i, name) in cases.iter().enumerate() {
        let med = |k: usize| median(rows[k].iter().map(|r| value(r, i)).collect());
        let unit = if name.starts_with("rand") {
            "IOPS"
        } else {
            "MiB/s"
        };
        let mut line = format!("{:<22}", format!("{name} {unit}"));
        for k in 0..n {
            line.push_str(&format!(" {:>10.0}", med(k)));
        }
        line.push_str(&format!(
            " {:>7.2} {:>7.2}",
            med(2) / med(0),
            med(2) / med(1)
        ));
        if n > 3 {
            line.push_str(&format!(" {:>9.2}", med(3) / med(0)));
        }
        println!("{line}");
    }
    let cpu_med = |k: usize| median(rows[k].iter().map(|r| r.2).collect());
    let rss_max = |k: usize| rows[k].iter().map(|r| r.3).fold(0.0, f64::max);
    let mut line = String::from("backend CPU s/GiB (median):");
    for (k, kind) in kinds.iter().enumerate() {
        line.push_str(&format!(" {kind} {:.2}", cpu_med(k)));
        if k >= 2 {
            line.push_str(&format!(" ({:.2}x raw)", cpu_med(k) / cpu_med(0)));
        }
        line.push(if k + 1 < n { ',' } else { ';' });
    }
    line.push_str(" peak RSS MiB:");
    for (k, kind) in kinds.iter().enumerate() {
        line.push_str(&format!(" {kind} {:.0}", rss_max(k)));
    }
    println!("{line}");
    for (round, raw) in rows[0].iter().enumerate() {
        for k in 2..n {
            let ratios: Vec<String> = (0..cases.len())
                .map(|i| format!("{:.2}", value(&rows[k][round], i) / value(raw, i)))
                .collect();
            println!(
                "round {}: {}/raw per case {}",
                round + 1,
                kinds[k],
                ratios.join(" ")
            );
        }
    }
}

/// One guest boot on one backend: the four cases, the backend's CPU s/GiB and peak RSS.
fn boot(
    kind: &str,
    dir: &Path,
    images: &Path,
    vmcrypt: &Path,
    kit: &Kit,
    gbench: &[u8],
    alt: &[String],
) -> Row {
    let sock = dir.join(format!("{kind}.vhost"));
    let mut b = backend(kind, images, vmcrypt, &sock, alt);
    let log = dir.join(format!("{kind}.log"));
    let initrd = kit.initrd_with(dir, SCRIPT, &[("gbench", gbench)]);
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
    (kind.to_string(), results, cpu / gib, rss)
}
